//! Writes through the mount on servers other than Dovecot (issue 6, "safety without the
//! extensions"): GNU mailutils imap4d (no UIDPLUS, no MOVE), Courier (UIDPLUS, no MOVE) and
//! Cyrus (both). On each, `rm` and `mv` either do exactly what was asked or are refused, and a
//! message another client marked `\Deleted` (but did not expunge) always survives. Each cell
//! prints a `MATRIX <server> <cell> pass|FAIL|refused` line for scripts/compat.sh.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::servers::{start_or_skip, ImapServer, ServerKind};
use common::{days_from_civil, run, Mount, MountOptions, Seed, Subject, TextMessage};

const QUICK: Duration = Duration::from_secs(60);

fn seed() -> Seed {
    let mut seed = Seed::new();
    let base = days_from_civil(2025, 5, 1) * 86_400;
    for (folder, count) in [("INBOX", 5), ("Archive", 1)] {
        for i in 1..=count {
            let message = TextMessage {
                from: "Alice Example <alice@example.org>",
                to: "Test User <tester@example.org>",
                subject: Subject::Plain("compat write"),
                date: base + i * 3600,
                message_id: format!("<w.{folder}.{i}@imapfs.test>"),
                body_lines: vec![format!("message {i} of {folder}")],
            };
            seed.folder_mut(folder).push_text(&message, &[]);
        }
    }
    seed
}

fn mount(server: &ImapServer) -> Mount {
    MountOptions::custom(server.url(), PathBuf::new(), &server.password)
        .without_ca_file()
        .args(&["--insecure"])
        .start()
        .unwrap_or_else(|f| panic!("{f}"))
}

/// The mount path of a seed folder on this server (`INBOX.Archive` -> `INBOX/Archive`).
fn dir(mount: &Mount, server: &ImapServer, kind: ServerKind, folder: &str) -> PathBuf {
    let name = server.mailbox(folder);
    let rel: PathBuf = name.split(kind.delimiter()).collect();
    mount.join(rel)
}

fn errno_of(cmd: &[&str]) -> Option<String> {
    let out = run(cmd, QUICK);
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn writes_are_safe(kind: ServerKind) {
    let seed = seed();
    let Some(server) = start_or_skip(kind, &seed) else {
        return;
    };
    let caps = server.oracle_capabilities();
    let (uidplus, moves) = (caps.has("UIDPLUS"), caps.has("MOVE"));
    let m = mount(&server);
    let inbox = dir(&m, &server, kind, "INBOX");
    let archive = dir(&m, &server, kind, "Archive");
    let archive_name = server.mailbox("Archive");
    let mut failures = Vec::new();
    let mut cell = |name: &str, result: Result<&str, String>| {
        let word = match &result {
            Ok(w) => *w,
            Err(_) => "FAIL",
        };
        eprintln!("MATRIX {} {name} {word}", kind.name());
        if let Err(why) = result {
            failures.push(format!("{name}: {why}"));
        }
    };

    // Another client marks UID 1 \Deleted and leaves it there.
    server.plant_deleted("INBOX", 1);

    // rm: expunges exactly UID 3 with UIDPLUS; refused (EPERM) without it.
    let rm = errno_of(&["rm", &p(&inbox.join("3.eml"))]);
    let left = server.oracle_meta("INBOX");
    cell(
        "rm",
        match (uidplus, rm) {
            (true, None) if !left.contains_key(&3) && left.len() == 4 => Ok("pass"),
            (false, Some(e)) if e.contains("Operation not permitted") && left.len() == 5 => {
                Ok("refused")
            }
            (u, r) => Err(format!("uidplus={u} rm={r:?} left={:?}", left.keys())),
        },
    );

    // mv: MOVE, or COPY then UID EXPUNGE; refused without either.
    let before = server.oracle_fetch_all(&archive_name).len();
    let original = server.oracle_fetch("INBOX", 4);
    let mv = errno_of(&["mv", &p(&inbox.join("4.eml")), &format!("{}/", p(&archive))]);
    let after = server.oracle_fetch_all(&archive_name);
    let still = server.oracle_meta("INBOX").contains_key(&4);
    cell(
        "mv",
        match (uidplus || moves, mv) {
            (true, None)
                if !still
                    && after.len() == before + 1
                    && after.values().any(|b| *b == original) =>
            {
                Ok("pass")
            }
            (false, Some(e)) if e.contains("Operation not permitted") && still => Ok("refused"),
            (can, r) => Err(format!(
                "can={can} mv={r:?} still={still} after={}",
                after.len()
            )),
        },
    );

    // The planted \Deleted message survived both.
    let planted = server.oracle_meta("INBOX").contains_key(&1);
    cell(
        "planted-deleted-survives",
        if planted {
            Ok("pass")
        } else {
            Err("UID 1 was expunged".into())
        },
    );

    // cp: APPEND works everywhere.
    let body = b"Subject: appended\r\nMessage-ID: <w.new@imapfs.test>\r\n\r\nnew\r\n";
    let before = server.oracle_fetch_all(&archive_name).len();
    let write = fs::write(archive.join("new.eml"), body);
    let after = server.oracle_fetch_all(&archive_name);
    cell(
        "append",
        match write {
            Ok(()) if after.len() == before + 1 && after.values().any(|b| b == body) => Ok("pass"),
            other => Err(format!("{other:?}, {} -> {}", before, after.len())),
        },
    );

    // Flags: add \Flagged to UID 2.
    let flagged = errno_of(&[
        "setfattr",
        "-n",
        "user.imap.flags",
        "-v",
        "+\\Flagged",
        &p(&inbox.join("2.eml")),
    ]);
    let flags = server.oracle_flags("INBOX", 2);
    let deferred = kind == ServerKind::Mailutils && flagged.is_none() && flags.is_empty();
    if !deferred {
        cell(
            "flags",
            match flagged {
                None if flags.iter().any(|f| f == "\\Flagged") => Ok("pass"),
                other => Err(format!("{other:?}, flags {flags:?}")),
            },
        );
    }

    // A keyword where PERMANENTFLAGS has none (mailutils keeps no keywords): EPERM, not a
    // silent success.
    if kind == ServerKind::Mailutils {
        let r = errno_of(&[
            "setfattr",
            "-n",
            "user.imap.flags",
            "-v",
            "+$Work",
            &p(&inbox.join("2.eml")),
        ]);
        cell(
            "keyword-refused",
            match r {
                Some(e) if e.contains("Operation not permitted") => Ok("refused"),
                other => Err(format!("{other:?}")),
            },
        );
    }

    // mkdir and rmdir of an empty folder.
    let newdir = archive.join("Fresh");
    let made = errno_of(&["mkdir", &p(&newdir)]);
    let listed = server
        .oracle_list()
        .iter()
        .any(|e| e.name == server.mailbox("Archive.Fresh"));
    let removed = errno_of(&["rmdir", &p(&newdir)]);
    let gone = !server
        .oracle_list()
        .iter()
        .any(|e| e.name == server.mailbox("Archive.Fresh"));
    cell(
        "mkdir-rmdir",
        match (made, listed, removed, gone) {
            (None, true, None, true) => Ok("pass"),
            other => Err(format!("{other:?}")),
        },
    );
    let log = m.log();
    drop(m);
    if deferred {
        // mailutils keeps flag changes in the session until it closes the mailbox (CHECK
        // does not write them either): another client sees them once imapfs logged out.
        let flags = server.oracle_flags("INBOX", 2);
        cell(
            "flags",
            if flags.iter().any(|f| f == "\\Flagged") {
                Ok("pass")
            } else {
                Err(format!("after logout: {flags:?}"))
            },
        );
    }
    if !failures.is_empty() {
        eprintln!("{}", common::tail(&log, 80));
    }
    assert!(failures.is_empty(), "{}: {failures:?}", kind.name());
}

#[test]
fn writes_on_mailutils_never_touch_unnamed_messages() {
    writes_are_safe(ServerKind::Mailutils);
}

#[test]
fn writes_on_courier_never_touch_unnamed_messages() {
    writes_are_safe(ServerKind::Courier);
}

#[test]
fn writes_on_cyrus_never_touch_unnamed_messages() {
    writes_are_safe(ServerKind::Cyrus);
}
