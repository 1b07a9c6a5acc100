//! rm, trash mode, flag values and panics on server replies (issue 13 items 2, 3, 4, 11, 13).
//!
//! Scripted servers ([`crate::script::writes`]) stand in where a real server will not misbehave
//! on demand (an expunge answered OK that expunges nothing, a refused expunge, `[MODIFIED]` to a
//! flag delta); Dovecot and Courier for everything else, checked by the independent oracle.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imapfs::imap::auth::Security;
use imapfs::imap::codec::Command;
use imapfs::imap::pool::{Pool, Retry};

use crate::common::servers::{start_or_skip, ServerKind};
use crate::common::{
    self, days_from_civil, run, set_xattr, try_run, Dovecot, Mount, MountOptions, Seed, Subject,
    TextMessage,
};
use crate::script::writes::{Expunge, Store, WriteServer};

/// Deadline for one external command.
const QUICK: Duration = Duration::from_secs(30);

/// Folders with `count` messages each; message `i` of `folder` has the body token
/// `token <folder> <i>` and Message-ID `<r.<folder>.<i>@imapfs.test>`.
fn seed(folders: &[(&str, u32)]) -> Seed {
    let mut seed = Seed::new();
    let base = days_from_civil(2025, 6, 1) * 86_400;
    for &(folder, count) in folders {
        let f = seed.folder_mut(folder);
        for i in 1..=count {
            let message = TextMessage {
                from: "Alice Example <alice@example.org>",
                to: "Test User <tester@example.org>",
                subject: Subject::Plain("removal"),
                date: base + i64::from(i) * 60,
                message_id: format!("<r.{folder}.{i}@imapfs.test>"),
                body_lines: vec![format!("token {folder} {i}")],
            };
            f.push_text(&message, &["\\Seen"]);
        }
    }
    seed
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A command that must fail with `errno_text` (e.g. "Operation not permitted").
fn fails_with(cmd: &[&str], errno_text: &str) {
    let out = run(cmd, QUICK);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{cmd:?} succeeded");
    assert!(
        err.contains(errno_text),
        "{cmd:?}: expected {errno_text:?}, got {err}"
    );
}

fn succeeds(cmd: &[&str], mount: &Mount) {
    let out = run(cmd, QUICK);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        common::tail(&mount.log(), 30)
    );
}

fn has_deleted(flags: &[String]) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted"))
}

fn mount_script(server: &WriteServer, args: &[&str]) -> Mount {
    MountOptions::custom(server.url(), server.script.ca_file.clone(), "secret")
        .args(args)
        .start()
        .unwrap_or_else(|e| panic!("mount failed: {e}"))
}

fn mount_dovecot(dovecot: &Dovecot, args: &[&str]) -> Mount {
    Mount::start(dovecot, args).unwrap_or_else(|f| panic!("{f}"))
}

// --- item 2: flag values ------------------------------------------------------------------------

/// Issue 13 item 2: `setfattr -v '+'` (a sign with no flag) cleared every flag.
#[test]
fn item_2_a_sign_without_a_flag_is_einval_and_changes_nothing() {
    let mut seed = seed(&[("INBOX", 1)]);
    let message = TextMessage {
        from: "a@example.org",
        to: "b@example.org",
        subject: Subject::Plain("flagged"),
        date: days_from_civil(2025, 6, 2) * 86_400,
        message_id: "<r.flags@imapfs.test>".into(),
        body_lines: vec!["flags".into()],
    };
    seed.folder_mut("INBOX")
        .push_text(&message, &["\\Seen", "\\Flagged"]);
    let dovecot = Dovecot::start(&seed);
    dovecot.oracle_store("INBOX", 2, "+FLAGS", &["$Work"]);
    let mount = mount_dovecot(&dovecot, &[]);
    let file = mount.join("INBOX/2.eml");
    let before = dovecot.oracle_flags("INBOX", 2);
    assert_eq!(before.len(), 3, "{before:?}");
    for value in ["+", "-", "+ -", "- +", " + ", "+ \\Seen", "\\Seen -"] {
        fails_with(
            &["setfattr", "-n", "user.imap.flags", "-v", value, &p(&file)],
            "Invalid argument",
        );
        assert_eq!(dovecot.oracle_flags("INBOX", 2), before, "after {value:?}");
    }
    // A value that says something still does it; an empty one still clears.
    succeeds(
        &[
            "setfattr",
            "-n",
            "user.imap.flags",
            "-v",
            "-$Work",
            &p(&file),
        ],
        &mount,
    );
    assert_eq!(
        dovecot.oracle_flags("INBOX", 2),
        vec!["\\Flagged".to_string(), "\\Seen".to_string()]
    );
    set_xattr(&file, "user.imap.flags", b"").expect("an empty value clears");
    assert!(dovecot.oracle_flags("INBOX", 2).is_empty());
}

// --- items 3 and 11: rm is true or fails, and a failure leaves no \Deleted ----------------------

/// Issue 13 item 3: Dovecot answered a pipelined `UID EXPUNGE` with OK and kept the message
/// (flagged `\Deleted`), and `rm` reported success.
#[test]
fn item_3_rm_fails_when_the_server_answers_ok_but_keeps_the_message() {
    let server = WriteServer::start(&[(1, &["\\Seen"]), (2, &[])]);
    let mount = mount_script(&server, &["--timeout", "5"]);
    let file = mount.join("INBOX/1.eml");
    assert!(file.exists());
    server.set_expunge(Expunge::KeepOk);
    fails_with(&["rm", &p(&file)], "Input/output error");
    assert_eq!(server.uids(), vec![1, 2]);
    assert_eq!(
        server.flags(1),
        Some(vec!["\\Seen".to_string()]),
        "the \\Deleted this rm set must be taken back"
    );
    let expunges = server
        .commands()
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("UID EXPUNGE"))
        .count();
    assert!(
        expunges >= 2,
        "a kept UID is expunged again: {expunges} UID EXPUNGE"
    );
    assert!(mount.log().contains("kept"), "{}", mount.log());
    // The file is still there, and an expunge that works is a success.
    assert!(file.exists());
    server.set_expunge(Expunge::Normal);
    succeeds(&["rm", &p(&file)], &mount);
    assert_eq!(server.uids(), vec![2]);
}

/// Issue 13 item 11: a failed `UID EXPUNGE` after `STORE +FLAGS (\Deleted)` left the message
/// `\Deleted` while rm reported an error; the next EXPUNGE by any client deleted it.
#[test]
fn item_11_a_refused_expunge_takes_back_only_its_own_deleted_mark() {
    // UID 2 was marked `\Deleted` by another client, who means to expunge it: not ours to undo.
    let server = WriteServer::start(&[(1, &["\\Seen"]), (2, &["\\Deleted"]), (3, &[])]);
    let mount = mount_script(&server, &["--timeout", "5"]);
    server.set_expunge(Expunge::Refuse);
    fails_with(&["rm", &p(&mount.join("INBOX/1.eml"))], "");
    assert_eq!(server.flags(1), Some(vec!["\\Seen".to_string()]));
    fails_with(&["rm", &p(&mount.join("INBOX/2.eml"))], "");
    assert_eq!(server.flags(2), Some(vec!["\\Deleted".to_string()]));
    assert_eq!(server.uids(), vec![1, 2, 3]);
}

/// Issue 13 item 3, as first seen: rm and mv racing on one folder of a real Dovecot, each on
/// its own connection of the mount. Every rm that succeeded removed its message; every one
/// that failed left it in place without `\Deleted`; every move landed once.
#[test]
fn item_3_rm_and_mv_racing_on_one_folder_report_only_what_happened() {
    const N: u32 = 40;
    let seed = seed(&[("INBOX", 1), ("Race", N), ("Target", 0)]);
    let dovecot = Dovecot::start(&seed);
    let mount = mount_dovecot(&dovecot, &["--connections", "4"]);
    let race = mount.join("Race");
    let target = mount.join("Target");
    assert_eq!(
        std::fs::read_dir(&race).expect("ls Race").count(),
        N as usize
    );
    let removed: Arc<Mutex<Vec<(u32, bool)>>> = Arc::default();
    let movers: Vec<_> = (0..2)
        .map(|k| {
            let (race, target) = (race.clone(), target.clone());
            std::thread::spawn(move || {
                for uid in (1..=N / 2).filter(|u| u % 2 == k) {
                    let out = run(
                        &["mv", &p(&race.join(format!("{uid}.eml"))), &p(&target)],
                        QUICK,
                    );
                    assert!(out.status.success(), "mv {uid}: {out:?}");
                }
            })
        })
        .collect();
    let removers: Vec<_> = (0..2)
        .map(|k| {
            let (race, removed) = (race.clone(), removed.clone());
            std::thread::spawn(move || {
                for uid in (N / 2 + 1..=N).filter(|u| u % 2 == k) {
                    let out = run(&["rm", &p(&race.join(format!("{uid}.eml")))], QUICK);
                    removed.lock().unwrap().push((uid, out.status.success()));
                }
            })
        })
        .collect();
    for t in movers.into_iter().chain(removers) {
        t.join().expect("worker");
    }
    let left = dovecot.oracle_meta("Race");
    for &(uid, ok) in removed.lock().unwrap().iter() {
        match (ok, left.get(&uid)) {
            (true, None) => {}
            (true, Some(meta)) => panic!("rm {uid} succeeded but the message stayed: {meta:?}"),
            (false, Some(meta)) => assert!(
                !has_deleted(&meta.flags),
                "rm {uid} failed and left \\Deleted"
            ),
            (false, None) => panic!("rm {uid} failed but the message is gone"),
        }
    }
    let moved: BTreeSet<String> = dovecot
        .oracle_fetch_all("Target")
        .values()
        .map(|b| {
            let text = String::from_utf8_lossy(b);
            let line = text.lines().find(|l| l.starts_with("token ")).unwrap_or("");
            line.to_string()
        })
        .collect();
    let expected: BTreeSet<String> = (1..=N / 2).map(|i| format!("token Race {i}")).collect();
    assert_eq!(moved, expected, "each moved message in Target exactly once");
    assert_eq!(dovecot.oracle_fetch_all("Target").len(), (N / 2) as usize);
    for (uid, meta) in dovecot.oracle_meta("Race") {
        assert!(uid > N / 2, "moved UID {uid} still in Race");
        assert!(!has_deleted(&meta.flags), "UID {uid} left \\Deleted");
    }
}

// --- item 4: trash mode never expunges ----------------------------------------------------------

/// Issue 13 item 4, on Dovecot without SPECIAL-USE: `delete=trash` with no trash folder
/// expunged for good. It is refused; `trash=` names a folder; a folder named Trash is found.
#[test]
fn item_4_trash_mode_without_a_trash_folder_refuses_on_dovecot() {
    let seed = seed(&[("INBOX", 3), ("Archive", 1)]);
    let dovecot = Dovecot::start(&seed);
    {
        let mount = mount_dovecot(&dovecot, &["-o", "delete=trash"]);
        fails_with(
            &["rm", &p(&mount.join("INBOX/1.eml"))],
            "Operation not permitted",
        );
        let meta = dovecot.oracle_meta("INBOX");
        assert!(meta.contains_key(&1), "rm in trash mode expunged");
        assert!(!has_deleted(&meta[&1].flags));
        assert!(mount.log().contains("no trash folder"), "{}", mount.log());
        // A trash= folder that does not exist is no reason to expunge either.
        drop(mount);
        let mount = mount_dovecot(&dovecot, &["-o", "delete=trash,trash=Nowhere"]);
        fails_with(
            &["rm", &p(&mount.join("INBOX/1.eml"))],
            "Operation not permitted",
        );
        assert!(dovecot.oracle_meta("INBOX").contains_key(&1));
    }
    {
        // Named by the option.
        let mount = mount_dovecot(&dovecot, &["-o", "delete=trash,trash=Archive"]);
        succeeds(&["rm", &p(&mount.join("INBOX/1.eml"))], &mount);
        assert!(!dovecot.oracle_meta("INBOX").contains_key(&1));
        assert_eq!(dovecot.oracle_meta("Archive").len(), 2);
    }
    // Found by its name (no special use on this Dovecot).
    dovecot.oracle_create("Trash");
    let mount = mount_dovecot(&dovecot, &["--delete", "trash"]);
    succeeds(&["rm", &p(&mount.join("INBOX/2.eml"))], &mount);
    assert!(!dovecot.oracle_meta("INBOX").contains_key(&2));
    let trash = dovecot.oracle_fetch_all("Trash");
    assert_eq!(trash.len(), 1);
    assert!(String::from_utf8_lossy(&trash[&1]).contains("token INBOX 2"));
    // In the trash itself, rm is for good.
    succeeds(&["rm", &p(&mount.join("Trash/1.eml"))], &mount);
    assert!(dovecot.oracle_fetch_all("Trash").is_empty());
}

/// Issue 13 item 4, as reproduced: a trash-mode rm on Courier (no SPECIAL-USE, no MOVE)
/// expunged for good.
#[test]
fn item_4_trash_mode_on_courier_never_expunges_outside_the_trash() {
    let seed = seed(&[("INBOX", 3)]);
    let Some(server) = start_or_skip(ServerKind::Courier, &seed) else {
        return;
    };
    let trash = server.mailbox("Trash");
    let mount_courier = |args: &[&str]| {
        MountOptions::custom(server.url(), PathBuf::new(), &server.password)
            .without_ca_file()
            .args(&[&["--insecure"], args].concat())
            .start()
            .unwrap_or_else(|f| panic!("{f}"))
    };
    let listed = |name: &str| server.oracle_list().iter().any(|e| e.name == name);
    if listed(&trash) {
        server.oracle_delete(&trash);
    }
    {
        let mount = mount_courier(&["-o", "delete=trash"]);
        fails_with(
            &["rm", &p(&mount.join("INBOX/1.eml"))],
            "Operation not permitted",
        );
        let meta = server.oracle_meta("INBOX");
        assert!(
            meta.contains_key(&1),
            "rm in trash mode expunged on Courier"
        );
        assert!(!has_deleted(&meta[&1].flags));
    }
    server.oracle_create(&trash);
    let mount = mount_courier(&["-o", "delete=trash"]);
    succeeds(&["rm", &p(&mount.join("INBOX/1.eml"))], &mount);
    let inbox = server.oracle_meta("INBOX");
    assert!(!inbox.contains_key(&1));
    assert_eq!(inbox.len(), 2);
    let in_trash = server.oracle_fetch_all(&trash);
    assert_eq!(in_trash.len(), 1, "the message is in {trash}");
    assert!(in_trash
        .values()
        .all(|b| String::from_utf8_lossy(b).contains("token INBOX 1")));
}

// --- item 13: no reply panics the daemon, and the pool keeps its connections ---------------------

/// Issue 13 item 13: `OK [MODIFIED ...]` to a `+FLAGS` STORE hit `unreachable!` in a FUSE
/// thread, and the pool lost that connection for good; a handful of them killed the mount.
#[test]
fn item_13_modified_to_a_flag_delta_is_an_errno_and_the_mount_lives() {
    let server = WriteServer::start(&[(1, &["\\Seen"]), (2, &[])]);
    let mount = mount_script(&server, &["--timeout", "5", "--connections", "2"]);
    let file = mount.join("INBOX/1.eml");
    assert!(file.exists());
    server.set_store(Store::Modified);
    for round in 0..10 {
        let value = if round % 2 == 0 {
            "+\\Flagged"
        } else {
            "-\\Seen"
        };
        let out = try_run(
            &["setfattr", "-n", "user.imap.flags", "-v", value, &p(&file)],
            QUICK,
        )
        .unwrap_or_else(|e| panic!("setfattr {round} hung: {e}\n{}", mount.log()));
        assert!(
            !out.status.success(),
            "setfattr {round} reported a change the server did not make"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Device or resource busy"),
            "{out:?}"
        );
    }
    assert_eq!(server.flags(1), Some(vec!["\\Seen".to_string()]));
    assert!(!mount.log().contains("panicked"), "{}", mount.log());
    // Still mounted and served, with its connections.
    server.set_store(Store::Normal);
    succeeds(
        &[
            "setfattr",
            "-n",
            "user.imap.flags",
            "-v",
            "+\\Flagged",
            &p(&file),
        ],
        &mount,
    );
    assert_eq!(
        server.flags(1),
        Some(vec!["\\Seen".to_string(), "\\Flagged".to_string()])
    );
    assert_eq!(
        std::fs::read_dir(mount.join("INBOX")).expect("ls").count(),
        2
    );
}

/// Issue 13 item 13: a panic while a session was lent (no drop guard in `Pool::lend`) kept its
/// slot counted forever; with one connection the next request waited for nothing.
#[test]
fn item_13_a_panic_while_a_session_is_lent_frees_its_connection() {
    let server = WriteServer::start(&[(1, &[])]);
    let pool = Pool::new(
        crate::script::config(&server.script, Security::Tls),
        1,
        None,
    );
    for _ in 0..3 {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            pool.with_session(None, Retry::Idempotent, |s| -> imapfs::Result<()> {
                s.run(Command::Noop)?;
                panic!("a bug in a caller");
            })
        }));
        assert!(r.is_err());
        assert_eq!(pool.stats().open, 0, "the panicked session's slot is freed");
    }
    pool.with_session(None, Retry::Idempotent, |s| s.run(Command::Noop).map(drop))
        .expect("the pool still serves");
    assert_eq!(pool.stats().open, 1);
}
