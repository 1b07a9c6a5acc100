//! End-to-end tests of changing mail through the mount (issue 6): flags, rm, mv, new files,
//! folders, folder xattrs and quota, each change checked by an independent client (the
//! harness's Python oracle) against a real Dovecot.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::proxy::CuttingProxy;
use common::{run, run_ok, set_xattr, wait_for, Dovecot, Mount, MountOptions, Seed};

/// Deadline for one external command.
const QUICK: Duration = Duration::from_secs(30);
const SLOW: Duration = Duration::from_secs(300);

struct Fixture {
    mount: Mount,
    dovecot: Dovecot,
}

fn mounted_with(extra_conf: &str, args: &[&str]) -> Fixture {
    let dovecot = Dovecot::start_with(Seed::standard(), extra_conf);
    let mount = Mount::start(&dovecot, args).unwrap_or_else(|failure| panic!("{failure}"));
    Fixture { mount, dovecot }
}

fn mounted() -> Fixture {
    mounted_with("", &[])
}

/// A temporary directory removed when the test ends, whatever way it ends.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(kind: &str) -> TempDir {
        TempDir(common::unique_temp_dir(kind))
    }
    fn join(&self, name: impl AsRef<Path>) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Dovecot with a Trash folder marked `\Trash` and a storage quota.
const TRASH_AND_QUOTA: &str = "namespace inbox {\n  inbox = yes\n  separator = .\n  \
    mailbox Trash {\n    special_use = \\Trash\n    auto = create\n  }\n}\n\
    mail_plugins = $mail_plugins quota\n\
    protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n\
    plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=20M\n}\n";

fn sh(cmd: &[&str]) -> Output {
    run(cmd, QUICK)
}

/// A command that must fail with `errno_text` (e.g. "Operation not permitted") in its stderr.
fn fails_with(cmd: &[&str], errno_text: &str) {
    let out = sh(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{cmd:?} succeeded");
    assert!(
        err.contains(errno_text),
        "{cmd:?}: expected {errno_text:?}, got {err}"
    );
}

fn xattr(path: &Path, name: &str) -> String {
    let value = common::getfattr_bytes(path, name)
        .unwrap_or_else(|e| panic!("getfattr -n {name} {}: {e}", path.display()));
    String::from_utf8(value).expect("UTF-8")
}

fn sorted_words(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

/// The names in a directory.
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The message files in a directory.
fn messages(dir: &Path) -> BTreeSet<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".eml"))
        .collect()
}

fn uid_names(uids: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    uids.into_iter().map(|u| format!("{u}.eml")).collect()
}

// --- flags --------------------------------------------------------------------------------------

#[test]
fn setfattr_replaces_adds_and_removes_flags_as_the_server_sees_them() {
    let fx = mounted();
    let path = fx.mount.join("INBOX/3.eml");
    let p = path.to_string_lossy();
    run_ok(&[
        "setfattr",
        "-n",
        "user.imap.flags",
        "-v",
        "\\Seen \\Flagged",
        &p,
    ]);
    assert_eq!(fx.dovecot.oracle_flags("INBOX", 3), ["\\Flagged", "\\Seen"]);
    assert_eq!(
        sorted_words(&xattr(&path, "user.imap.flags")),
        ["\\Flagged", "\\Seen"]
    );

    run_ok(&["setfattr", "-n", "user.imap.flags", "-v", "+$Junk work", &p]);
    run_ok(&["setfattr", "-n", "user.imap.flags", "-v", "-\\Seen", &p]);
    let want = ["$Junk", "\\Flagged", "work"];
    assert_eq!(fx.dovecot.oracle_flags("INBOX", 3), want);
    assert_eq!(sorted_words(&xattr(&path, "user.imap.flags")), want);

    // A delta never undoes another client's change made meanwhile.
    fx.dovecot
        .oracle_store("INBOX", 3, "+FLAGS", &["\\Answered"]);
    run_ok(&["setfattr", "-n", "user.imap.flags", "-v", "+\\Draft", &p]);
    assert_eq!(
        fx.dovecot.oracle_flags("INBOX", 3),
        ["$Junk", "\\Answered", "\\Draft", "\\Flagged", "work"]
    );

    run_ok(&["setfattr", "-x", "user.imap.flags", &p]);
    assert!(fx.dovecot.oracle_flags("INBOX", 3).is_empty());
    assert_eq!(xattr(&path, "user.imap.flags"), "");

    // Invalid values change nothing.
    for bad in ["\\Seen +\\Flagged", "\\Recent", "a(b", "\\*"] {
        fails_with(
            &["setfattr", "-n", "user.imap.flags", "-v", bad, &p],
            "Invalid argument",
        );
    }
    fails_with(
        &["setfattr", "-n", "user.mail.subject", "-v", "x", &p],
        "Operation not permitted",
    );
    assert!(fx.dovecot.oracle_flags("INBOX", 3).is_empty());
    // Reading still never adds \Seen.
    fs::read(&path).unwrap();
    assert!(fx.dovecot.oracle_flags("INBOX", 3).is_empty());
}

#[test]
fn a_replace_that_lost_a_race_is_ebusy_not_a_silent_overwrite() {
    // Without the watcher: with it, the mount would hear of the other client's change first
    // and the replace would be an informed one.
    let fx = mounted_with("", &["-o", "idle=no"]);
    let path = fx.mount.join("INBOX/6.eml");
    let p = path.to_string_lossy();
    // The mount learns the message's MODSEQ, then another client changes the flags.
    assert_eq!(xattr(&path, "user.imap.flags"), "");
    fx.dovecot
        .oracle_store("INBOX", 6, "+FLAGS", &["\\Answered"]);
    assert_eq!(
        set_xattr(&path, "user.imap.flags", b"\\Seen"),
        Err(libc::EBUSY)
    );
    assert_eq!(fx.dovecot.oracle_flags("INBOX", 6), ["\\Answered"]);
    // ... and the mount now shows the other client's flags, so a retry is informed.
    assert_eq!(xattr(&path, "user.imap.flags"), "\\Answered");
    run_ok(&["setfattr", "-n", "user.imap.flags", "-v", "\\Seen", &p]);
    assert_eq!(fx.dovecot.oracle_flags("INBOX", 6), ["\\Seen"]);
}

// --- rm -------------------------------------------------------------------------------------------

#[test]
fn rm_expunges_exactly_the_named_message() {
    let fx = mounted();
    let seed = Seed::standard();
    // Another client marks a message \Deleted without expunging it: it must survive our rm.
    fx.dovecot
        .oracle_store("INBOX", 2, "+FLAGS", &["\\Deleted"]);
    run_ok(&["rm", &fx.mount.join("INBOX/5.eml").to_string_lossy()]);
    let left: BTreeSet<u32> = fx.dovecot.oracle_meta("INBOX").keys().copied().collect();
    let expected: BTreeSet<u32> = seed
        .folder("INBOX")
        .messages
        .iter()
        .map(|m| m.uid)
        .filter(|&u| u != 5)
        .collect();
    assert_eq!(left, expected);
    assert!(left.contains(&2));
    // The listing right after is exact, and the file is gone.
    assert_eq!(names(&fx.mount.join("INBOX")), uid_names(expected));
    assert!(!fx.mount.join("INBOX/5.eml").exists());
    fails_with(
        &["rm", &fx.mount.join("INBOX/5.eml").to_string_lossy()],
        "No such file",
    );
}

#[test]
fn rm_with_delete_trash_moves_to_trash_and_rm_in_trash_expunges() {
    let fx = mounted_with(TRASH_AND_QUOTA, &["-o", "delete=trash"]);
    let original = fx.dovecot.oracle_fetch("INBOX", 4);
    run_ok(&["rm", &fx.mount.join("INBOX/4.eml").to_string_lossy()]);
    assert!(!fx.dovecot.oracle_meta("INBOX").contains_key(&4));
    let trash = fx.dovecot.oracle_fetch_all("Trash");
    assert_eq!(trash.len(), 1);
    let (&uid, bytes) = trash.iter().next().unwrap();
    assert_eq!(bytes, &original);
    let in_trash = fx.mount.join(format!("Trash/{uid}.eml"));
    assert_eq!(fs::read(&in_trash).unwrap(), original);
    run_ok(&["rm", &in_trash.to_string_lossy()]);
    assert!(fx.dovecot.oracle_fetch_all("Trash").is_empty());
}

// --- mv -------------------------------------------------------------------------------------------

#[test]
fn mv_moves_messages_between_folders_byte_for_byte() {
    let fx = mounted();
    let inbox = fx.dovecot.oracle_fetch_all("INBOX");
    let before_archive: BTreeSet<u32> = fx.dovecot.oracle_meta("Archive").keys().copied().collect();
    let flags7 = fx.dovecot.oracle_flags("INBOX", 7);
    run_ok(&[
        "mv",
        &fx.mount.join("INBOX/7.eml").to_string_lossy(),
        &fx.mount.join("INBOX/8.eml").to_string_lossy(),
        &fx.mount.join("Archive").to_string_lossy(),
    ]);
    // The listing right after is exact on both sides.
    let archive_now = fx.dovecot.oracle_fetch_all("Archive");
    assert_eq!(
        messages(&fx.mount.join("Archive")),
        uid_names(archive_now.keys().copied())
    );
    let new: Vec<u32> = archive_now
        .keys()
        .copied()
        .filter(|u| !before_archive.contains(u))
        .collect();
    assert_eq!(new.len(), 2, "{archive_now:?}");
    let mut moved: Vec<&Vec<u8>> = new.iter().map(|u| &archive_now[u]).collect();
    moved.sort();
    let mut originals = vec![&inbox[&7], &inbox[&8]];
    originals.sort();
    assert_eq!(moved, originals);
    assert!(!fx.dovecot.oracle_meta("INBOX").contains_key(&7));
    assert!(!names(&fx.mount.join("INBOX")).contains("7.eml"));
    // Content and flags through the mount, under the new names.
    for u in &new {
        let path = fx.mount.join(format!("Archive/{u}.eml"));
        assert_eq!(&fs::read(&path).unwrap(), &archive_now[u]);
    }
    let moved7 = new.iter().find(|u| archive_now[u] == inbox[&7]).unwrap();
    assert_eq!(fx.dovecot.oracle_flags("Archive", *moved7), flags7);

    // A message's name is its UID: renaming within a folder is refused.
    fails_with(
        &[
            "mv",
            &fx.mount.join("INBOX/1.eml").to_string_lossy(),
            &fx.mount.join("INBOX/99.eml").to_string_lossy(),
        ],
        "Operation not permitted",
    );
    assert!(fx.dovecot.oracle_meta("INBOX").contains_key(&1));
}

// --- new files ------------------------------------------------------------------------------------

#[test]
fn cp_of_a_file_appends_a_message_with_flags_date_and_crlf() {
    let fx = mounted();
    let dir = TempDir::new("cp-src");
    let src = dir.join("note.eml");
    // Bare LF line ends: sent as CRLF.
    fs::write(
        &src,
        b"From: a@example.org\nSubject: copied in\nMessage-ID: <cp.1@imapfs.test>\n\nhello\n",
    )
    .unwrap();
    run_ok(&[
        "touch",
        "-d",
        "2021-06-05 04:03:02 UTC",
        &src.to_string_lossy(),
    ]);
    let before: BTreeSet<u32> = fx.dovecot.oracle_meta("Archive").keys().copied().collect();
    run_ok(&[
        "cp",
        "-p",
        &src.to_string_lossy(),
        &fx.mount.join("Archive").to_string_lossy(),
    ]);
    let meta = fx.dovecot.oracle_meta("Archive");
    let new: Vec<u32> = meta
        .keys()
        .copied()
        .filter(|u| !before.contains(u))
        .collect();
    assert_eq!(new.len(), 1);
    let uid = new[0];
    let bytes = fx.dovecot.oracle_fetch("Archive", uid);
    assert_eq!(
        bytes,
        b"From: a@example.org\r\nSubject: copied in\r\nMessage-ID: <cp.1@imapfs.test>\r\n\r\nhello\r\n"
    );
    // cp -p set the mtime before close: it is the INTERNALDATE.
    let path = fx.mount.join(format!("Archive/{uid}.eml"));
    assert_eq!(fs::metadata(&path).unwrap().mtime(), 1622865782);
    assert_eq!(fs::read(&path).unwrap(), bytes);
    // The listing shows the new UID's name, not the name cp gave it.
    let listed = names(&fx.mount.join("Archive"));
    assert!(listed.contains(&format!("{uid}.eml")), "{listed:?}");
    assert!(!listed.contains("note.eml"), "{listed:?}");

    // Flags set with setfattr before close become the message's flags.
    let draft = fx.mount.join("Archive/draft.eml");
    let mut f = fs::File::create(&draft).unwrap();
    f.write_all(b"Subject: flagged\r\nMessage-ID: <cp.2@imapfs.test>\r\n\r\nx\r\n")
        .unwrap();
    run_ok(&[
        "setfattr",
        "-n",
        "user.imap.flags",
        "-v",
        "\\Flagged $Work",
        &draft.to_string_lossy(),
    ]);
    drop(f);
    let meta = fx.dovecot.oracle_meta("Archive");
    let (&uid2, _) = meta.iter().max_by_key(|(u, _)| **u).unwrap();
    assert!(uid2 > uid);
    assert_eq!(
        fx.dovecot.oracle_flags("Archive", uid2),
        ["$Work", "\\Flagged"]
    );
}

#[test]
fn a_new_file_that_is_no_message_fails_at_close_and_leaves_nothing() {
    let fx = mounted();
    let before = fx.dovecot.oracle_meta("Archive").len();
    let path = fx.mount.join("Archive/junk.txt");
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(b"this is not a mail message\n").unwrap();
    // close() reports the APPEND's fate: flush it explicitly to see the error.
    let err = f.sync_all().expect_err("a non-message must be refused");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    drop(f);
    assert_eq!(fx.dovecot.oracle_meta("Archive").len(), before);
    assert!(!names(&fx.mount.join("Archive")).contains("junk.txt"));
}

#[test]
fn existing_messages_are_immutable() {
    let fx = mounted();
    let path = fx.mount.join("INBOX/1.eml");
    let err = fs::OpenOptions::new().write(true).open(&path).unwrap_err();
    // The file is 0644 and ours, so the kernel lets the open through: imapfs refuses it.
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert_eq!(
        fs::read(&path).unwrap(),
        fx.dovecot.oracle_fetch("INBOX", 1)
    );
}

#[test]
fn an_append_over_quota_fails_at_close_with_edquot() {
    let fx = mounted_with(TRASH_AND_QUOTA, &[]);
    // df shows the quota.
    let df = run_ok(&["df", "-k", &fx.mount.path().to_string_lossy()]);
    let text = String::from_utf8_lossy(&df.stdout);
    let total: u64 = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(total, 20 * 1024, "{text}");
    let before = fx.dovecot.oracle_meta("Archive").len();
    let path = fx.mount.join("Archive/big.eml");
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(b"Subject: too big\r\n\r\n").unwrap();
    let line = vec![b'x'; 998];
    for _ in 0..25_000 {
        f.write_all(&line).unwrap();
        f.write_all(b"\r\n").unwrap();
    }
    let err = f.sync_all().expect_err("over quota");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    drop(f);
    assert_eq!(fx.dovecot.oracle_meta("Archive").len(), before);
}

// --- folders --------------------------------------------------------------------------------------

#[test]
fn mkdir_rmdir_and_mv_of_folders() {
    let fx = mounted();
    let list = || -> BTreeSet<String> {
        fx.dovecot
            .oracle_list()
            .into_iter()
            .map(|e| e.name)
            .collect()
    };
    run_ok(&["mkdir", &fx.mount.join("Projects").to_string_lossy()]);
    run_ok(&[
        "mkdir",
        &fx.mount.join("Projects/Ünïcødé 2026").to_string_lossy(),
    ]);
    assert!(list().contains("Projects"));
    assert!(list().contains("Projects.Ünïcødé 2026"), "{:?}", list());
    fails_with(
        &["mkdir", &fx.mount.join("Projects").to_string_lossy()],
        "File exists",
    );
    fails_with(
        &["mkdir", &fx.mount.join("bad\nname").to_string_lossy()],
        "Invalid argument",
    );
    fails_with(
        &["mkdir", &fx.mount.join("a.b").to_string_lossy()],
        "Invalid argument",
    );

    // A folder with children or messages is not removed.
    fails_with(
        &["rmdir", &fx.mount.join("Projects").to_string_lossy()],
        "not empty",
    );
    fails_with(
        &["rmdir", &fx.mount.join("Archive").to_string_lossy()],
        "not empty",
    );
    fails_with(
        &["rmdir", &fx.mount.join("INBOX").to_string_lossy()],
        "Operation not permitted",
    );
    assert!(list().contains("INBOX"));

    // Rename: children follow, the renamed directory stays usable.
    run_ok(&[
        "mv",
        &fx.mount.join("Projects").to_string_lossy(),
        &fx.mount.join("Lists/Work").to_string_lossy(),
    ]);
    let now = list();
    assert!(now.contains("Lists.Work"), "{now:?}");
    assert!(now.contains("Lists.Work.Ünïcødé 2026"), "{now:?}");
    assert!(!now.contains("Projects"), "{now:?}");
    assert!(names(&fx.mount.join("Lists/Work")).contains("Ünïcødé 2026"));
    fails_with(
        &[
            "mv",
            &fx.mount.join("INBOX").to_string_lossy(),
            &fx.mount.join("Inbox2").to_string_lossy(),
        ],
        "Operation not permitted",
    );

    run_ok(&[
        "rmdir",
        &fx.mount.join("Lists/Work/Ünïcødé 2026").to_string_lossy(),
    ]);
    run_ok(&["rmdir", &fx.mount.join("Lists/Work").to_string_lossy()]);
    run_ok(&["rmdir", &fx.mount.join("Empty").to_string_lossy()]);
    let now = list();
    assert!(!now.iter().any(|n| n.starts_with("Lists.Work")), "{now:?}");
    assert!(!now.contains("Empty"));
    assert!(!names(fx.mount.path()).contains("Empty"));
}

#[test]
fn folder_xattrs_show_status_special_use_and_subscription() {
    let fx = mounted_with(TRASH_AND_QUOTA, &[]);
    let inbox = fx.mount.join("INBOX");
    let st = fx.dovecot.oracle_status("INBOX");
    assert_eq!(xattr(&inbox, "user.imap.messages"), st.messages.to_string());
    assert_eq!(xattr(&inbox, "user.imap.uidnext"), st.uidnext.to_string());
    assert_eq!(
        xattr(&inbox, "user.imap.uidvalidity"),
        st.uidvalidity.to_string()
    );
    let unseen = fx
        .dovecot
        .oracle_meta("INBOX")
        .values()
        .filter(|m| !m.flags.iter().any(|f| f == "\\Seen"))
        .count();
    assert_eq!(xattr(&inbox, "user.imap.unseen"), unseen.to_string());
    assert_eq!(
        xattr(&fx.mount.join("Trash"), "user.imap.special-use"),
        "\\Trash"
    );

    let archive = fx.mount.join("Archive");
    assert_eq!(xattr(&archive, "user.imap.subscribed"), "0");
    run_ok(&[
        "setfattr",
        "-n",
        "user.imap.subscribed",
        "-v",
        "1",
        &archive.to_string_lossy(),
    ]);
    assert_eq!(xattr(&archive, "user.imap.subscribed"), "1");
    run_ok(&[
        "setfattr",
        "-n",
        "user.imap.subscribed",
        "-v",
        "0",
        &archive.to_string_lossy(),
    ]);
    assert_eq!(xattr(&archive, "user.imap.subscribed"), "0");
}

// --- many at once -------------------------------------------------------------------------------------

fn stat_round_trips(mount: &Mount) -> u64 {
    let stats = xattr(mount.path(), "user.imapfs.stats");
    stats
        .lines()
        .find_map(|l| l.strip_prefix("round_trips="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no round_trips in {stats:?}"))
}

#[test]
fn cp_and_mv_of_a_thousand_messages() {
    let fx = mounted();
    let n = 1000;
    let dir = TempDir::new("many");
    for i in 0..n {
        fs::write(
            dir.join(format!("m{i:04}.eml")),
            format!(
                "From: bulk@example.org\r\nSubject: bulk {i}\r\nMessage-ID: <bulk.{i}@imapfs.test>\r\n\r\nunique-token-{i:04}\r\n"
            ),
        )
        .unwrap();
    }
    run_ok(&["mkdir", &fx.mount.join("Bulk").to_string_lossy()]);
    run_ok(&["mkdir", &fx.mount.join("Moved").to_string_lossy()]);
    let src: Vec<String> = (0..n)
        .map(|i| {
            dir.join(format!("m{i:04}.eml"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut cp = vec!["cp".to_string()];
    cp.extend(src.iter().cloned());
    cp.push(fx.mount.join("Bulk").to_string_lossy().into_owned());
    let out = run(&cp, SLOW);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bulk = fx.dovecot.oracle_fetch_all("Bulk");
    assert_eq!(bulk.len(), n);
    // grep -l finds each through the mount.
    let out = run(
        &[
            "grep",
            "-rl",
            "unique-token-",
            &fx.mount.join("Bulk").to_string_lossy(),
        ],
        SLOW,
    );
    // 0: every file read and matched (1 would be no match, 2 a read error).
    assert_eq!(
        out.status.code(),
        Some(0),
        "grep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), n);

    let before = stat_round_trips(&fx.mount);
    let script = format!(
        "mv {}/*.eml {}/",
        fx.mount.join("Bulk").to_string_lossy(),
        fx.mount.join("Moved").to_string_lossy()
    );
    let out = run(&["sh", "-c", &script], SLOW);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = names(&fx.mount.join("Moved"));
    let trips = stat_round_trips(&fx.mount) - before;
    let moved = fx.dovecot.oracle_fetch_all("Moved");
    assert_eq!(moved.len(), n);
    assert!(fx.dovecot.oracle_fetch_all("Bulk").is_empty());
    assert_eq!(listed, uid_names(moved.keys().copied()));
    let mut a: Vec<&Vec<u8>> = bulk.values().collect();
    let mut b: Vec<&Vec<u8>> = moved.values().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "bytes changed in the move");
    eprintln!("moving {n} messages took {trips} round trips");
    assert!(
        trips < n as u64 / 10,
        "moving {n} messages took {trips} round trips"
    );
    wait_for("the mount to stay up", QUICK, || {
        fx.mount.is_mounted().then_some(())
    });
}

// --- read-only and subscribed views ---------------------------------------------------------------

#[test]
fn a_read_only_mount_refuses_every_change_with_erofs() {
    let fx = mounted_with("", &["-o", "ro"]);
    let m = |p: &str| fx.mount.join(p).to_string_lossy().into_owned();
    let file = fx.mount.join("INBOX/1.eml");
    assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o444);
    for cmd in [
        vec!["rm".to_string(), m("INBOX/1.eml")],
        vec!["mv".into(), m("INBOX/1.eml"), m("Archive/")],
        vec!["mkdir".into(), m("New")],
        vec!["rmdir".into(), m("Empty")],
        vec![
            "setfattr".into(),
            "-n".into(),
            "user.imap.flags".into(),
            "-v".into(),
            "\\Seen".into(),
            m("INBOX/1.eml"),
        ],
        vec!["touch".into(), m("INBOX/new.eml")],
    ] {
        let out = run(&cmd, QUICK);
        assert!(!out.status.success(), "{cmd:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Read-only file system"), "{cmd:?}: {err}");
    }
    assert_eq!(fx.dovecot.oracle_meta("INBOX").len(), 10);
    assert_eq!(fx.dovecot.oracle_flags("INBOX", 1), ["\\Seen"]);
}

#[test]
fn the_subscribed_option_shows_only_subscribed_folders_and_their_parents() {
    let dovecot = Dovecot::start(Seed::standard());
    let plain = Mount::start(&dovecot, &[]).unwrap_or_else(|f| panic!("{f}"));
    for dir in ["Lists/rust", "Archive"] {
        let p = plain.join(dir);
        run_ok(&[
            "setfattr",
            "-n",
            "user.imap.subscribed",
            "-v",
            "1",
            &p.to_string_lossy(),
        ]);
    }
    drop(plain);
    let mount = Mount::start(&dovecot, &["-o", "subscribed"]).unwrap_or_else(|f| panic!("{f}"));
    let top = names(mount.path());
    assert_eq!(
        top,
        ["Archive", "INBOX", "Lists"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(
        names(&mount.join("Lists")),
        ["rust".to_string()].into_iter().collect()
    );
    assert!(!names(&mount.join("Archive")).contains("2024"));
}

// --- cut connections --------------------------------------------------------------------------------

fn mount_through(dovecot: &Dovecot, proxy: &CuttingProxy) -> Mount {
    MountOptions::new(dovecot)
        .url(format!("imap://{}@127.0.0.1:{}", dovecot.user, proxy.port))
        .args(&["--insecure"])
        .start()
        .unwrap_or_else(|f| panic!("{f}"))
}

#[test]
fn a_cut_between_copy_and_the_removal_of_the_source_loses_nothing() {
    // No MOVE advertised: the mount moves with UID COPY, then removes the source.
    let dovecot = Dovecot::start_with(
        Seed::standard(),
        "imap_capability = IMAP4rev1 LITERAL+ UIDPLUS CONDSTORE IDLE",
    );
    let proxy = CuttingProxy::start(dovecot.imap_port, b"UID COPY");
    let mount = mount_through(&dovecot, &proxy);
    let original = dovecot.oracle_fetch("INBOX", 9);
    let before = dovecot.oracle_fetch_all("Archive").len();
    run_ok(&[
        "mv",
        &mount.join("INBOX/9.eml").to_string_lossy(),
        &mount.join("Archive/").to_string_lossy(),
    ]);
    // The listing waits for the move: afterwards the server has exactly one copy.
    let listed = messages(&mount.join("Archive"));
    assert_eq!(proxy.cuts(), 1, "the proxy never cut the COPY");
    let archive = dovecot.oracle_fetch_all("Archive");
    assert_eq!(archive.len(), before + 1, "{listed:?}");
    assert_eq!(archive.values().filter(|b| **b == original).count(), 1);
    assert!(!dovecot.oracle_meta("INBOX").contains_key(&9));
    assert_eq!(listed, uid_names(archive.keys().copied()));
}

#[test]
fn a_cut_after_append_reached_the_server_stores_it_once() {
    let dovecot = Dovecot::start(Seed::standard());
    let proxy = CuttingProxy::start(dovecot.imap_port, b"APPEND");
    let mount = mount_through(&dovecot, &proxy);
    let before = dovecot.oracle_fetch_all("Archive").len();
    let message = b"Subject: cut\r\nMessage-ID: <cut.1@imapfs.test>\r\n\r\nbody\r\n";
    let path = mount.join("Archive/cut.eml");
    fs::write(&path, message).expect("close after a cut APPEND succeeds once checked");
    assert_eq!(proxy.cuts(), 1, "the proxy never cut the APPEND");
    let archive = dovecot.oracle_fetch_all("Archive");
    assert_eq!(archive.len(), before + 1);
    assert_eq!(
        archive.values().filter(|b| b.as_slice() == message).count(),
        1
    );
}

#[test]
fn without_uidplus_rm_moves_to_trash_and_never_expunges_others() {
    // UIDPLUS hidden (Dovecot still has MOVE and a \Trash folder): no UID EXPUNGE, so the
    // only removal that cannot hit other messages is a MOVE to Trash.
    let conf = format!(
        "{TRASH_AND_QUOTA}imap_capability = IMAP4rev1 LITERAL+ MOVE CONDSTORE SPECIAL-USE LIST-EXTENDED IDLE\n"
    );
    let fx = mounted_with(&conf, &[]);
    fx.dovecot
        .oracle_store("INBOX", 2, "+FLAGS", &["\\Deleted"]);
    let original = fx.dovecot.oracle_fetch("INBOX", 6);
    run_ok(&["rm", &fx.mount.join("INBOX/6.eml").to_string_lossy()]);
    let inbox = fx.dovecot.oracle_meta("INBOX");
    assert!(!inbox.contains_key(&6));
    assert!(
        inbox.contains_key(&2),
        "a message another client marked \\Deleted was expunged"
    );
    let trash = fx.dovecot.oracle_fetch_all("Trash");
    assert_eq!(trash.values().filter(|b| **b == original).count(), 1);
    // In Trash itself there is nowhere safer to go: refused, and the log says why.
    let (&uid, _) = trash.iter().next().unwrap();
    fails_with(
        &[
            "rm",
            &fx.mount.join(format!("Trash/{uid}.eml")).to_string_lossy(),
        ],
        "Operation not permitted",
    );
    assert!(fx.mount.log().contains("no UIDPLUS"), "{}", fx.mount.log());
    assert_eq!(fx.dovecot.oracle_fetch_all("Trash").len(), 1);
}

#[test]
fn a_large_new_message_is_streamed_byte_exact_without_literal_plus() {
    // No LITERAL+: the APPEND waits for the server's `+` before the streamed message.
    let fx = mounted_with(
        "imap_capability = IMAP4rev1 UIDPLUS MOVE CONDSTORE IDLE",
        &[],
    );
    let dir = TempDir::new("big-src");
    let src = dir.join("big.eml");
    let mut body = b"Subject: big\nMessage-ID: <big.1@imapfs.test>\n\n".to_vec();
    let mut rng = common::Rng::new(7);
    while body.len() < 12 << 20 {
        let n = rng.range(10, 200);
        body.extend((0..n).map(|_| b'a' + rng.below(26) as u8));
        body.push(b'\n');
    }
    fs::write(&src, &body).unwrap();
    run_ok(&[
        "cp",
        &src.to_string_lossy(),
        &fx.mount.join("Archive").to_string_lossy(),
    ]);
    let expected: Vec<u8> = body
        .iter()
        .flat_map(|&b| {
            if b == b'\n' {
                vec![b'\r', b'\n']
            } else {
                vec![b]
            }
        })
        .collect();
    let archive = fx.dovecot.oracle_fetch_all("Archive");
    let found: Vec<&u32> = archive
        .iter()
        .filter(|(_, b)| **b == expected)
        .map(|(u, _)| u)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "the 12 MB message did not arrive byte for byte"
    );
    let path = fx.mount.join(format!("Archive/{}.eml", found[0]));
    assert_eq!(fs::metadata(&path).unwrap().len(), expected.len() as u64);
}
