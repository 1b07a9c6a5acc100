//! End-to-end tests of the Maildir layout (issue 18): `cur/`, `new/`, `tmp/` in every folder,
//! flags by rename, delivery from `tmp/`, moves by rename, directory times, and real Maildir
//! clients (mblaze, notmuch) through the mount. Every change is checked against the server by
//! the harness's independent oracle.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::{run, wait_for, within, Dovecot, Mount, Seed, Subject, TextMessage};

const QUICK: Duration = Duration::from_secs(30);

/// INBOX: 1 unseen, 2 seen, 3 seen+flagged, 4 unseen+answered; Archive and Archive.2024 empty
/// but for one seen message in Archive.
fn seed() -> Seed {
    let mut seed = Seed::new();
    let flags: [&[&str]; 4] = [&[], &["\\Seen"], &["\\Flagged", "\\Seen"], &["\\Answered"]];
    for (i, f) in flags.iter().enumerate() {
        seed.folder_mut("INBOX")
            .push_text(&message(i as u32 + 1), f);
    }
    seed.folder_mut("Archive")
        .push_text(&message(9), &["\\Seen"]);
    seed.folder_mut("Archive.2024");
    seed
}

fn message(n: u32) -> TextMessage<'static> {
    TextMessage {
        from: "Alice Example <alice@example.org>",
        to: "bob@example.net",
        subject: Subject::Plain("maildir test"),
        date: 1_700_000_000 + i64::from(n) * 60,
        message_id: format!("<maildir-{n}@example.org>"),
        body_lines: vec![format!("message number {n}"), "token zebracorn".into()],
    }
}

struct Fixture {
    mount: Mount,
    dovecot: Dovecot,
}

fn mounted(args: &[&str]) -> Fixture {
    let dovecot = Dovecot::start(&seed());
    let mount = Mount::start(&dovecot, args).unwrap_or_else(|failure| panic!("{failure}"));
    Fixture { mount, dovecot }
}

fn maildir() -> Fixture {
    mounted(&["-o", "maildir"])
}

/// The names in a directory, read under a deadline.
fn names(dir: PathBuf) -> BTreeSet<String> {
    within("readdir", QUICK, move || {
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    })
}

fn validity(f: &Fixture, folder: &str) -> u32 {
    f.dovecot.oracle_status(folder).uidvalidity
}

fn name(validity: u32, uid: u32, letters: &str) -> String {
    format!("{validity}.{uid}.imapfs:2,{letters}")
}

fn flags(f: &Fixture, folder: &str, uid: u32) -> BTreeSet<String> {
    f.dovecot
        .oracle_flags(folder, uid)
        .into_iter()
        .filter(|f| f != "\\Recent")
        .collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn rename(from: PathBuf, to: PathBuf) -> std::io::Result<()> {
    within("rename", QUICK, move || fs::rename(from, to))
}

#[test]
fn layout_has_cur_new_tmp_and_mbsync_placement() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let root = names(f.mount.path().to_path_buf());
    assert!(
        root.contains("INBOX") && root.contains("Archive"),
        "{root:?}"
    );
    assert_eq!(
        names(f.mount.join("INBOX")),
        set(&["cur", "new", "tmp"]),
        "a folder holds its three directories and no message files"
    );
    assert_eq!(
        names(f.mount.join("Archive")),
        set(&["2024", "cur", "new", "tmp"])
    );
    // Unseen in new/, seen in cur/ (as mbsync delivers).
    assert_eq!(
        names(f.mount.join("INBOX/new")),
        BTreeSet::from([name(v, 1, ""), name(v, 4, "R")])
    );
    assert_eq!(
        names(f.mount.join("INBOX/cur")),
        BTreeSet::from([name(v, 2, "S"), name(v, 3, "FS")])
    );
    assert!(names(f.mount.join("INBOX/tmp")).is_empty());
    // The bytes are the server's, and the xattrs work on these files.
    let path = f.mount.join("INBOX/cur").join(name(v, 3, "FS"));
    let bytes = within("read", QUICK, move || fs::read(path)).expect("read");
    assert_eq!(bytes, f.dovecot.oracle_fetch("INBOX", 3));
    let out = run(
        &[
            "getfattr",
            "--only-values",
            "-n",
            "user.imap.uid",
            &f.mount
                .join("INBOX/cur")
                .join(name(v, 3, "FS"))
                .to_string_lossy(),
        ],
        QUICK,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3");
    // A name with other letters than the message's flags names nothing, nor an eml name.
    assert!(!f.mount.join("INBOX/cur").join(name(v, 3, "S")).exists());
    assert!(!f.mount.join("INBOX/3.eml").exists());
    // Directories are not dated 1970.
    let mtime = fs::metadata(f.mount.join("INBOX/cur"))
        .expect("stat")
        .mtime();
    assert!(mtime > 1_600_000_000, "{mtime}");
}

#[test]
fn the_default_layout_is_unchanged() {
    let f = mounted(&[]);
    let inbox = names(f.mount.join("INBOX"));
    assert!(
        inbox.contains("1.eml") && !inbox.contains("cur"),
        "{inbox:?}"
    );
    // Folder directories are dated by the mount's start, not 1970 (issue 18).
    let mtime = fs::metadata(f.mount.join("INBOX")).expect("stat").mtime();
    assert!(mtime > 1_600_000_000, "{mtime}");
}

#[test]
fn flags_by_rename_store_exactly_the_letters() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let cur = f.mount.join("INBOX/cur");
    // Flag a seen message in cur/.
    rename(cur.join(name(v, 2, "S")), cur.join(name(v, 2, "FS"))).expect("flag");
    assert_eq!(flags(&f, "INBOX", 2), set(&["\\Flagged", "\\Seen"]));
    assert!(cur.join(name(v, 2, "FS")).exists());
    assert!(!cur.join(name(v, 2, "S")).exists());
    // Unflag and mark unseen (it stays in cur/: a client moved it there).
    rename(cur.join(name(v, 3, "FS")), cur.join(name(v, 3, ""))).expect("unflag");
    assert_eq!(flags(&f, "INBOX", 3), set(&[]));
    assert!(cur.join(name(v, 3, "")).exists());
    // The T letter is \Deleted only; the message stays.
    rename(cur.join(name(v, 2, "FS")), cur.join(name(v, 2, "FST"))).expect("trash flag");
    assert_eq!(
        flags(&f, "INBOX", 2),
        set(&["\\Flagged", "\\Seen", "\\Deleted"])
    );
    assert_eq!(f.dovecot.oracle_status("INBOX").messages, 4);
    // user.imap.flags works on the same files, and renames them.
    common::set_xattr(
        &cur.join(name(v, 2, "FST")),
        "user.imap.flags",
        b"-\\Deleted",
    )
    .expect("setxattr");
    assert_eq!(flags(&f, "INBOX", 2), set(&["\\Flagged", "\\Seen"]));
    assert!(cur.join(name(v, 2, "FS")).exists());
    // Another unique part within the folder is refused.
    let e = rename(cur.join(name(v, 2, "FS")), cur.join(name(v, 9, "FS"))).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
}

#[test]
fn new_to_cur_with_the_same_flags_changes_nothing_on_the_server() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let before = f.dovecot.oracle_meta("INBOX");
    let new = f.mount.join("INBOX/new");
    let cur = f.mount.join("INBOX/cur");
    let cur_mtime = fs::metadata(&cur).expect("stat").modified().expect("mtime");
    rename(new.join(name(v, 1, "")), cur.join(name(v, 1, ""))).expect("new -> cur");
    assert!(cur.join(name(v, 1, "")).exists());
    assert!(!new.join(name(v, 1, "")).exists());
    assert_eq!(
        f.dovecot.oracle_meta("INBOX"),
        before,
        "no change on the server"
    );
    // The directories' times moved forward.
    let after = fs::metadata(&cur).expect("stat").modified().expect("mtime");
    assert!(after > cur_mtime, "{after:?} <= {cur_mtime:?}");
    // new/ -> cur/ with S (notmuch's -unread): \Seen.
    rename(new.join(name(v, 4, "R")), cur.join(name(v, 4, "RS"))).expect("read");
    assert_eq!(flags(&f, "INBOX", 4), set(&["\\Answered", "\\Seen"]));
}

#[test]
fn unlink_expunges() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let path = f.mount.join("INBOX/cur").join(name(v, 2, "S"));
    within("unlink", QUICK, move || fs::remove_file(path)).expect("rm");
    let uids: Vec<u32> = f.dovecot.oracle_meta("INBOX").into_keys().collect();
    assert_eq!(uids, vec![1, 3, 4]);
}

#[test]
fn delivery_from_tmp_is_one_append_at_the_rename() {
    let f = maildir();
    let tmp = f.mount.join("Archive/tmp");
    let bytes = common::compose_text(&message(20));
    let file = tmp.join("1700000000.M1P2.host");
    let (file2, bytes2) = (file.clone(), bytes.clone());
    within("write in tmp/", QUICK, move || {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file2)?;
        out.write_all(&bytes2)?;
        out.sync_all()?; // mdeliver fsyncs: that must not APPEND
        Ok::<_, std::io::Error>(())
    })
    .expect("write");
    assert_eq!(
        f.dovecot.oracle_status("Archive").messages,
        1,
        "fsync/close sent nothing"
    );
    assert!(names(tmp.clone()).contains("1700000000.M1P2.host"));
    rename(file, f.mount.join("Archive/new/1700000000.M1P2.host:2,F")).expect("deliver");
    let meta = f.dovecot.oracle_meta("Archive");
    assert_eq!(meta.len(), 2, "exactly one APPEND");
    assert_eq!(f.dovecot.oracle_fetch("Archive", 2), bytes);
    assert_eq!(flags(&f, "Archive", 2), set(&["\\Flagged"]));
    let v = validity(&f, "Archive");
    assert_eq!(
        names(f.mount.join("Archive/new")),
        BTreeSet::from([name(v, 2, "F")]),
        "it carries its server name"
    );
    assert!(names(tmp.clone()).is_empty());
    // A file in tmp/ that is unlinked is never sent; creating outside tmp/ is refused.
    let junk = tmp.join("junk");
    let junk2 = junk.clone();
    within("write", QUICK, move || {
        fs::write(junk2, b"Subject: x\r\n\r\nx\r\n")
    })
    .expect("write");
    within("rm", QUICK, move || fs::remove_file(junk)).expect("rm");
    let e = within("create in cur", QUICK, {
        let p = f.mount.join("Archive/cur/x");
        move || fs::write(p, b"x")
    })
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert_eq!(f.dovecot.oracle_status("Archive").messages, 2);
    // link() is refused with EPERM (mutt then renames).
    let e = within("link", QUICK, {
        let (a, b) = (
            f.mount.join("Archive/new").join(name(v, 2, "F")),
            f.mount.join("Archive/cur/linked:2,S"),
        );
        move || fs::hard_link(a, b)
    })
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
}

#[test]
fn rename_into_another_folder_is_a_move() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let original = f.dovecot.oracle_fetch("INBOX", 3);
    rename(
        f.mount.join("INBOX/cur").join(name(v, 3, "FS")),
        f.mount
            .join("Archive/2024/cur/1700000000.mrefile.host:2,FS"),
    )
    .expect("move");
    let inbox: Vec<u32> = f.dovecot.oracle_meta("INBOX").into_keys().collect();
    assert_eq!(inbox, vec![1, 2, 4]);
    let target = f.dovecot.oracle_fetch_all("Archive.2024");
    assert_eq!(target.len(), 1, "exactly one copy");
    assert_eq!(target.values().next(), Some(&original));
    assert_eq!(flags(&f, "Archive.2024", 1), set(&["\\Flagged", "\\Seen"]));
    let v2 = validity(&f, "Archive.2024");
    assert_eq!(
        names(f.mount.join("Archive/2024/cur")),
        BTreeSet::from([name(v2, 1, "FS")])
    );
}

#[test]
fn another_clients_changes_move_the_directory_times() {
    let f = mounted(&["-o", "maildir,dir_ttl=1"]);
    let v = validity(&f, "INBOX");
    let new = f.mount.join("INBOX/new");
    let cur = f.mount.join("INBOX/cur");
    let t0 = fs::metadata(&new).expect("stat").modified().expect("mtime");
    let c0 = fs::metadata(&cur).expect("stat").modified().expect("mtime");
    let uid = f
        .dovecot
        .oracle_append("INBOX", &common::compose_text(&message(30)));
    wait_for("new/ to change its time", QUICK, || {
        let t = fs::metadata(&new).ok()?.modified().ok()?;
        (t > t0).then_some(())
    });
    assert!(names(new.clone()).contains(&name(v, uid, "")));
    f.dovecot.oracle_store("INBOX", 2, "+FLAGS", &["\\Flagged"]);
    wait_for("cur/ to show the flag", QUICK, || {
        let t = fs::metadata(&cur).ok()?.modified().ok()?;
        (t > c0 && names(cur.clone()).contains(&name(v, 2, "FS"))).then_some(())
    });
    let now = SystemTime::now();
    let t = fs::metadata(&cur).expect("stat").modified().expect("mtime");
    assert!(t <= now + Duration::from_secs(1));
}

/// mblaze's tools through the mount, each change checked on the server.
#[test]
fn mblaze_lists_flags_refiles_and_delivers() {
    if !has("mlist") {
        eprintln!("mblaze is not installed (scripts/setup.sh installs it): skipped");
        return;
    }
    let f = maildir();
    let v = validity(&f, "INBOX");
    let inbox = f.mount.join("INBOX");
    let inbox_s = inbox.to_string_lossy().into_owned();
    let out = sh(&["mlist", &inbox_s]);
    assert_eq!(out.lines().count(), 4, "{out}");
    let out = sh(&[
        "mscan",
        &inbox.join("cur").join(name(v, 2, "S")).to_string_lossy(),
    ]);
    assert!(out.contains("maildir test"), "{out}");
    // mflag -F: \Flagged on the server.
    let out = sh(&[
        "mflag",
        "-F",
        &inbox.join("cur").join(name(v, 2, "S")).to_string_lossy(),
    ]);
    assert!(out.contains(&name(v, 2, "FS")), "{out}");
    assert_eq!(flags(&f, "INBOX", 2), set(&["\\Flagged", "\\Seen"]));
    // mflag -S on a message in new/: \Seen.
    sh(&[
        "mflag",
        "-S",
        &inbox.join("new").join(name(v, 1, "")).to_string_lossy(),
    ]);
    assert_eq!(flags(&f, "INBOX", 1), set(&["\\Seen"]));
    // mrefile: one copy in the target, bytes intact.
    let bytes = f.dovecot.oracle_fetch("INBOX", 3);
    let archive = f.mount.join("Archive/2024");
    sh(&[
        "mrefile",
        &inbox.join("cur").join(name(v, 3, "FS")).to_string_lossy(),
        &archive.to_string_lossy(),
    ]);
    let moved = f.dovecot.oracle_fetch_all("Archive.2024");
    assert_eq!(moved.into_values().collect::<Vec<_>>(), vec![bytes]);
    assert!(!f.dovecot.oracle_meta("INBOX").contains_key(&3));
    // mdeliver: one APPEND.
    let out = common::run_command(
        {
            let mut c = std::process::Command::new("mdeliver");
            c.arg(&archive);
            c
        },
        Some(&common::compose_text(&message(40))),
        QUICK,
    )
    .expect("mdeliver");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.dovecot.oracle_status("Archive.2024").messages, 2);
    // Another client's new mail shows on mlist's next look.
    assert_eq!(
        sh(&["mlist", &inbox_s]).lines().count(),
        3,
        "one refiled away"
    );
    f.dovecot
        .oracle_append("INBOX", &common::compose_text(&message(41)));
    wait_for("mlist to list the other client's message", QUICK, || {
        (sh(&["mlist", &inbox_s]).lines().count() == 4).then_some(())
    });
}

/// notmuch through the mount: new, search, tag with synchronize_flags, insert.
#[test]
fn notmuch_indexes_searches_and_syncs_flags() {
    if !has("notmuch") {
        eprintln!("notmuch is not installed (scripts/setup.sh installs it): skipped");
        return;
    }
    let f = maildir();
    let home = common::unique_temp_dir("notmuch");
    let config = home.join("notmuch-config");
    fs::write(
        &config,
        format!(
            "[database]\npath={}\nmail_root={}\n[new]\ntags=unread;inbox\n[maildir]\nsynchronize_flags=true\n",
            home.join("db").display(),
            f.mount.path().display()
        ),
    )
    .expect("config");
    let db = home.join("db");
    fs::create_dir_all(&db).expect("db dir");
    let nm = |args: &[&str]| -> String {
        let mut c = std::process::Command::new("notmuch");
        c.args(args)
            .env("NOTMUCH_CONFIG", &config)
            .env("HOME", &home);
        let out = common::run_command(c, None, Duration::from_secs(120)).expect("notmuch");
        assert!(
            out.status.success(),
            "notmuch {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    nm(&["new"]);
    let count: usize = nm(&["count", "--output=files", "*"])
        .trim()
        .parse()
        .expect("count");
    assert_eq!(count, 5, "every message of the account");
    let hits = nm(&[
        "search",
        "--output=files",
        "zebracorn",
        "and",
        "folder:INBOX",
    ]);
    assert_eq!(
        hits.lines().count(),
        f.dovecot
            .oracle_search("INBOX", "BODY zebracorn", None)
            .len()
    );
    // Another client's new mail is found by the next `notmuch new` (directory mtimes).
    f.dovecot
        .oracle_append("INBOX", &common::compose_text(&message(60)));
    wait_for(
        "notmuch new to find the other client's message",
        QUICK,
        || {
            nm(&["new"]);
            let n: usize = nm(&["count", "--output=files", "*"]).trim().parse().ok()?;
            (n == 6).then_some(())
        },
    );
    nm(&["tag", "+flagged", "id:maildir-2@example.org"]);
    assert_eq!(flags(&f, "INBOX", 2), set(&["\\Flagged", "\\Seen"]));
    nm(&["tag", "-unread", "id:maildir-1@example.org"]);
    assert_eq!(flags(&f, "INBOX", 1), set(&["\\Seen"]));
    let mut c = std::process::Command::new("notmuch");
    c.args(["insert", "--folder=Archive"])
        .env("NOTMUCH_CONFIG", &config)
        .env("HOME", &home);
    let out =
        common::run_command(c, Some(&common::compose_text(&message(50))), QUICK).expect("insert");
    if !out.status.success() {
        let log = f.mount.log();
        let tail: Vec<&str> = log.lines().filter(|l| !l.contains("TRACE")).collect();
        eprintln!(
            "imapfs log (end):\n{}",
            tail[tail.len().saturating_sub(80)..].join("\n")
        );
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        f.dovecot.oracle_status("Archive").messages,
        2,
        "delivered once"
    );
    drop(f);
    let _ = fs::remove_dir_all(&home);
}

fn has(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn sh(cmd: &[&str]) -> String {
    let out = run(cmd, QUICK);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn search_links_point_into_cur_and_new() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let results = f.mount.join("INBOX/.search/BODY zebracorn");
    let links = names(results.clone());
    assert_eq!(links.len(), 4, "{links:?}");
    let target = within("readlink", QUICK, {
        let p = results.join("1.eml");
        move || fs::read_link(p)
    })
    .expect("readlink");
    assert_eq!(
        target,
        PathBuf::from(format!("../../new/{}", name(v, 1, "")))
    );
    let bytes = within("read through the link", QUICK, {
        let p = results.join("3.eml");
        move || fs::read(p)
    })
    .expect("read");
    assert_eq!(bytes, f.dovecot.oracle_fetch("INBOX", 3));
}

/// neomutt in a tmux pty, driven by `push`: flag the first message, delete the second, save
/// the third to Archive, sync, quit. Returns once neomutt exited.
fn neomutt_session(root: &std::path::Path, work: &std::path::Path) {
    let rc = work.join("neomuttrc");
    fs::write(
        &rc,
        format!(
            "set mbox_type=Maildir\nset folder={}\nset spoolfile=+INBOX\nset sort=date\n\
             set confirmappend=no\nset delete=yes\nset quit=yes\nset move=no\nset mark_old=no\n\
             set maildir_trash=no\nset header_cache=\nset record=\nset wait_key=no\n\
             set resolve=no\n\
             push \"<first-entry><flag-message><next-entry><delete-message><next-entry>\
             <save-message>=Archive<enter><sync-mailbox><quit>\"\n",
            root.display()
        ),
    )
    .expect("muttrc");
    let done = work.join("done");
    let _ = fs::remove_file(&done);
    let socket = format!("imapfs-maildir-{}", std::process::id());
    let command = format!(
        "neomutt -n -d 2 -l '{}' -F '{}' 2>'{}'; echo $? > '{}'",
        work.join("neomutt.log").display(),
        rc.display(),
        work.join("stderr").display(),
        done.display()
    );
    let out = run(
        &[
            "tmux",
            "-L",
            &socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            &command,
        ],
        QUICK,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let finished = std::time::Instant::now() + Duration::from_secs(60);
    while !done.exists() && std::time::Instant::now() < finished {
        std::thread::sleep(Duration::from_millis(100));
    }
    let screen = run(&["tmux", "-L", &socket, "capture-pane", "-p"], QUICK);
    let _ = run(&["tmux", "-L", &socket, "kill-server"], QUICK);
    let status = fs::read_to_string(&done).unwrap_or_else(|_| {
        panic!(
            "neomutt did not finish; screen:\n{}",
            String::from_utf8_lossy(&screen.stdout)
        )
    });
    assert_eq!(status.trim(), "0", "neomutt failed");
}

/// Bare LF line ends as CRLF.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Every file below `root`, relative, for the local control run.
fn files_below(root: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for folder in ["INBOX", "Archive"] {
        for sub in ["cur", "new", "tmp"] {
            for e in fs::read_dir(root.join(folder).join(sub)).expect("read_dir") {
                let name = e.expect("entry").file_name().to_string_lossy().into_owned();
                out.insert(format!("{folder}/{sub}/{name}"));
            }
        }
    }
    out
}

#[test]
fn neomutt_flags_deletes_saves_and_syncs() {
    if !has("neomutt") || !has("tmux") {
        eprintln!("neomutt or tmux is not installed (scripts/setup.sh installs them): skipped");
        return;
    }
    // The same session on a plain local Maildir first: a failing script is told apart from a
    // failing mount.
    let work = common::unique_temp_dir("neomutt");
    let local = work.join("local");
    for folder in ["INBOX", "Archive"] {
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(local.join(folder).join(sub)).expect("mkdir");
        }
    }
    for (uid, place) in [
        (1, "new/1.x:2,"),
        (2, "cur/2.x:2,S"),
        (3, "cur/3.x:2,FS"),
        (4, "new/4.x:2,R"),
    ] {
        fs::write(
            local.join("INBOX").join(place),
            common::compose_text(&message(uid)),
        )
        .expect("seed");
    }
    neomutt_session(&local, &work);
    let files = files_below(&local);
    assert!(files.contains("INBOX/new/1.x:2,F"), "{files:?}");
    assert!(files.contains("INBOX/new/4.x:2,R"), "{files:?}");
    assert!(
        !files.iter().any(|f| f.contains("2.x") || f.contains("3.x")),
        "{files:?}"
    );
    let saved: Vec<&String> = files.iter().filter(|f| f.starts_with("Archive/")).collect();
    assert_eq!(saved.len(), 1, "{files:?}");
    // neomutt rewrites what it saves (a Content-Length header, bare LF): the server must hold
    // what it wrote to the local Maildir, with bare LF sent as CRLF (as every APPEND is).
    let saved_bytes = crlf(&fs::read(local.join(saved[0])).expect("saved message"));

    let f = maildir();
    neomutt_session(f.mount.path(), &work);
    let inbox = f.dovecot.oracle_meta("INBOX");
    if inbox.len() != 2 {
        let log = f.mount.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("TRACE") && !l.contains("capability") && !l.contains("rustls"))
            .collect();
        eprintln!(
            "imapfs log:\n{}",
            lines[lines.len().saturating_sub(120)..].join("\n")
        );
        eprintln!(
            "neomutt stderr: {}",
            fs::read_to_string(work.join("stderr")).unwrap_or_default()
        );
        eprintln!(
            "neomutt log: {}",
            fs::read_to_string(work.join("neomutt.log")).unwrap_or_default()
        );
    }
    assert_eq!(
        inbox.keys().copied().collect::<Vec<_>>(),
        vec![1, 4],
        "2 deleted, 3 saved away"
    );
    assert_eq!(flags(&f, "INBOX", 1), set(&["\\Flagged"]));
    assert_eq!(
        flags(&f, "INBOX", 4),
        set(&["\\Answered"]),
        "sync changed nothing else"
    );
    let archive = f.dovecot.oracle_fetch_all("Archive");
    assert_eq!(archive.len(), 2, "exactly one copy saved");
    assert_eq!(archive.get(&2), Some(&saved_bytes));
    assert_eq!(flags(&f, "Archive", 2), set(&["\\Flagged", "\\Seen"]));
    drop(f);
    let _ = fs::remove_dir_all(&work);
}

/// `notmuch new` over 10,000 messages through the mount (cold: fresh mount and database; warm:
/// again, nothing changed) beside `mbsync` pulling the folder into a local Maildir plus `notmuch
/// new` there. Prints figures, asserts only that both index every message. Ignored by
/// `cargo test`: `cargo test --test maildir -- --ignored bench --nocapture`
/// (MAILDIR_BENCH_MESSAGES sets the count).
#[test]
#[ignore]
fn bench_notmuch_new_through_the_mount_and_after_mbsync() {
    if !has("notmuch") || !has("mbsync") {
        eprintln!("needs notmuch and mbsync (Debian isync): skipped");
        return;
    }
    let n: u32 = std::env::var("MAILDIR_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut seed = Seed::new();
    seed.size_hints = true;
    for i in 0..n {
        let mut m = message(i + 1000);
        m.message_id = format!("<bench-{i}@example.org>");
        for line in 0..(i % 40) {
            m.body_lines
                .push(format!("line {line} of message {i}, word{}", i % 97));
        }
        seed.folder_mut("Bench").push_text(&m, &["\\Seen"]);
    }
    let dovecot = Dovecot::start(&seed);
    let work = common::unique_temp_dir("bench-notmuch");
    let notmuch = |root: &std::path::Path, db: &str, args: &[&str]| -> Duration {
        let config = work.join(format!("{db}.config"));
        let db = work.join(db);
        fs::create_dir_all(&db).expect("db");
        fs::write(
            &config,
            format!(
                "[database]\npath={}\nmail_root={}\n[new]\ntags=unread;inbox\n",
                db.display(),
                root.display()
            ),
        )
        .expect("config");
        let mut c = std::process::Command::new("notmuch");
        c.args(args)
            .env("NOTMUCH_CONFIG", &config)
            .env("HOME", &work);
        let t = std::time::Instant::now();
        let out = common::run_command(c, None, Duration::from_secs(1800)).expect("notmuch");
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    };
    let count = |root: &std::path::Path, db: &str| -> String {
        let config = work.join(format!("{db}.config"));
        let mut c = std::process::Command::new("notmuch");
        c.args(["count", "--output=files", "*"])
            .env("NOTMUCH_CONFIG", &config)
            .env("HOME", &work);
        let out = common::run_command(c, None, QUICK).expect("count");
        let _ = root;
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    // Through the mount.
    let mount = Mount::start(&dovecot, &["-o", "maildir"]).unwrap_or_else(|e| panic!("{e}"));
    let cold = notmuch(mount.path(), "mount-db", &["new", "--quiet"]);
    let warm = notmuch(mount.path(), "mount-db", &["new", "--quiet"]);
    assert_eq!(count(mount.path(), "mount-db"), n.to_string());
    drop(mount);

    // mbsync into a local Maildir, then notmuch there.
    let local = work.join("local");
    fs::create_dir_all(&local).expect("local");
    let conf = work.join("mbsyncrc");
    fs::write(
        &conf,
        format!(
            "IMAPAccount bench\nHost 127.0.0.1\nPort {}\nUser {}\nPass {}\nSSLType None\n\
             AuthMechs LOGIN\n\nIMAPStore remote\nAccount bench\n\n\
             MaildirStore local\nPath {}/\nInbox {}/INBOX\nSubFolders Verbatim\n\n\
             Channel bench\nFar :remote:\nNear :local:\nPatterns Bench\nCreate Near\n\
             Sync Pull\nSyncState *\n",
            dovecot.imap_port,
            dovecot.user,
            dovecot.password,
            local.display(),
            local.display()
        ),
    )
    .expect("mbsyncrc");
    let t = std::time::Instant::now();
    let out = run(
        &["mbsync", "-q", "-c", &conf.to_string_lossy(), "bench"],
        Duration::from_secs(1800),
    );
    let pull = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local_cold = notmuch(&local, "local-db", &["new", "--quiet"]);
    let local_warm = notmuch(&local, "local-db", &["new", "--quiet"]);
    assert_eq!(count(&local, "local-db"), n.to_string());
    println!("notmuch new over {n} messages (seconds):");
    println!("  through the mount, cold: {:8.2}", cold.as_secs_f64());
    println!("  through the mount, warm: {:8.2}", warm.as_secs_f64());
    println!(
        "  mbsync pull + notmuch new, cold: {:8.2} ({:.2} + {:.2})",
        (pull + local_cold).as_secs_f64(),
        pull.as_secs_f64(),
        local_cold.as_secs_f64()
    );
    println!(
        "  notmuch new on the local copy, warm: {:8.2}",
        local_warm.as_secs_f64()
    );
    drop(dovecot);
    let _ = fs::remove_dir_all(&work);
}

/// mu 1.8 through the mount: index and find (it has no `move` to change flags).
#[test]
fn mu_indexes_and_finds() {
    if !has("mu") {
        eprintln!("mu is not installed (Debian maildir-utils): skipped");
        return;
    }
    let f = maildir();
    let home = common::unique_temp_dir("mu");
    let muhome = format!("--muhome={}", home.display());
    let mu = |args: &[&str]| -> String {
        let mut c = std::process::Command::new("mu");
        c.args(args).arg(&muhome).env("HOME", &home);
        let out = common::run_command(c, None, Duration::from_secs(120)).expect("mu");
        assert!(
            out.status.success(),
            "mu {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    mu(&["init", &format!("--maildir={}", f.mount.path().display())]);
    mu(&["index", "--quiet"]);
    let found = mu(&["find", "--fields=l", "zebracorn"]);
    assert_eq!(found.lines().count(), 5, "{found}");
    // Flags read from the names: mu's unread messages are the server's unseen ones.
    let unread = mu(&["find", "--fields=l", "flag:unread"]);
    let unseen = f.dovecot.oracle_search("INBOX", "UNSEEN", None).len()
        + f.dovecot.oracle_search("Archive", "UNSEEN", None).len();
    assert_eq!(unread.lines().count(), unseen, "{unread}");
    drop(f);
    let _ = fs::remove_dir_all(&home);
}
