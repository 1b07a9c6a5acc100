//! End-to-end tests of the read-only mount (issue 2) through a real FUSE mount of a real
//! Dovecot, checked against an independent client (the harness's Python oracle).
//!
//! The user-visible contract under test: the mount root holds one directory per top-level
//! mailbox and the hierarchy follows the server's delimiter; names are UTF-8; every message is
//! a regular file `<UID>.eml`, mode 0444, size RFC822.SIZE, mtime INTERNALDATE, content exactly
//! `BODY[]`; xattrs carry flags, UID, UIDVALIDITY and decoded headers; reading never sets
//! `\Seen`; start-up failures exit non-zero with one line naming the cause; an expunged message
//! disappears without hanging anyone; unmounting ends the process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{
    run, wait_for, within, Dovecot, Mount, MountFailure, MountOptions, Rng, Seed, PASSWORD, PHRASE,
    USER,
};

/// Deadline for one external command or one batch of filesystem calls on the mount.
const SLOW: Duration = Duration::from_secs(120);
/// Deadline for a single small operation.
const QUICK: Duration = Duration::from_secs(20);

// --- (a) layout -------------------------------------------------------------------------------

#[test]
fn tree_mirrors_the_server_list() {
    let fx = mounted();
    let list = fx.dovecot.oracle_list();
    let expected_dirs: BTreeSet<PathBuf> =
        list.iter().map(|e| common::mailbox_path(&e.name)).collect();
    for name in [
        "Archive/2024",
        "Ünïcødé Folder",
        "Old Projects",
        "R&D",
        "Lists/rust",
    ] {
        assert!(
            expected_dirs.contains(Path::new(name)),
            "oracle lacks {name}"
        );
    }

    let found = run(
        &[
            "find",
            &fx.mount.path().to_string_lossy(),
            "-mindepth",
            "1",
            "-type",
            "d",
            "-printf",
            "%P\\n",
        ],
        SLOW,
    );
    assert!(
        found.status.success(),
        "find: {}",
        String::from_utf8_lossy(&found.stderr)
    );
    let found_dirs: BTreeSet<PathBuf> = String::from_utf8(found.stdout)
        .expect("UTF-8 names")
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(found_dirs, expected_dirs, "directories seen by find(1)");

    let tree = walk(fx.mount.path());
    assert_eq!(tree.dirs, expected_dirs, "directories seen by readdir");
    assert!(
        tree.files.keys().all(|f| f.parent() != Some(Path::new(""))),
        "the root holds only mailbox directories"
    );

    for entry in &list {
        let dir = common::mailbox_path(&entry.name);
        let files: BTreeMap<&PathBuf, &Entry> = tree
            .files
            .iter()
            .filter(|(path, _)| path.parent() == Some(&dir))
            .collect();
        if entry
            .attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case("\\Noselect"))
        {
            assert!(files.is_empty(), "\\Noselect {} shows files", entry.name);
            continue;
        }
        let meta = fx.dovecot.oracle_meta(&entry.name);
        let expected_names: BTreeSet<PathBuf> = meta
            .keys()
            .map(|uid| dir.join(format!("{uid}.eml")))
            .collect();
        let names: BTreeSet<PathBuf> = files.keys().map(|p| p.to_path_buf()).collect();
        assert_eq!(names, expected_names, "files of {}", entry.name);
        for (uid, m) in &meta {
            let path = dir.join(format!("{uid}.eml"));
            let file = files[&path];
            assert!(file.is_file, "{} is a regular file", path.display());
            assert_eq!(file.mode & 0o7777, 0o644, "mode of {}", path.display());
            assert_eq!(
                file.len,
                m.size,
                "size of {} is RFC822.SIZE",
                path.display()
            );
            assert_eq!(
                file.mtime,
                m.internal_date,
                "mtime of {} is INTERNALDATE",
                path.display()
            );
        }
    }

    // A mailbox with children shows its messages and its child directories side by side.
    let archive: BTreeSet<String> = list_names(&fx.mount.join("Archive"));
    assert!(
        archive.contains("2024") && archive.contains("1.eml"),
        "{archive:?}"
    );
}

// --- (b) contents -----------------------------------------------------------------------------

#[test]
fn every_big_message_reads_back_exactly() {
    let fx = mounted();
    let seed = Seed::standard();
    let big_dir = fx.mount.join("Big");
    let oracle = fx.dovecot.oracle_sha256_all("Big");
    assert!(oracle.len() >= 200);

    // The real sha256sum(1) reads every file through the mount, in one process.
    let mut command = vec!["sha256sum".to_string()];
    command.extend(
        oracle
            .keys()
            .map(|uid| big_dir.join(format!("{uid}.eml")).display().to_string()),
    );
    let out = run(&command, SLOW);
    assert!(
        out.status.success(),
        "sha256sum: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sums = common::parse_sha256sum(&out.stdout);
    for (uid, sha) in &oracle {
        let path = big_dir.join(format!("{uid}.eml"));
        assert_eq!(sums.get(&path), Some(sha), "content of {}", path.display());
    }

    let bodies = Arc::new(fx.dovecot.oracle_fetch_all("Big"));
    for uid in [1, 37, 200] {
        let out = run(
            &["cat", &big_dir.join(format!("{uid}.eml")).to_string_lossy()],
            SLOW,
        );
        assert!(out.status.success(), "cat {uid}.eml");
        assert!(
            out.stdout == bodies[&uid],
            "cat {uid}.eml differs from BODY[]"
        );
    }

    // Random ranges, including ones that run past the end, read with seek + read.
    let mut rng = Rng::new(0x5eed_0ff5_e7e7);
    let uids: Vec<u32> = bodies.keys().copied().collect();
    let mut ranges = Vec::new();
    for i in 0..200 {
        let uid = uids[rng.below(uids.len() as u64) as usize];
        let size = bodies[&uid].len();
        let len = match i % 4 {
            0 => 1 + rng.range(0, 4096),
            1 => rng.range(4096, 300_000),
            2 => rng.range(1, 2 * 1024 * 1024),
            _ => 1 + rng.range(0, 64),
        };
        let offset = if i % 10 == 9 {
            size.saturating_sub(len / 2)
        } else {
            rng.range(0, size)
        };
        ranges.push((uid, offset as u64, len));
    }
    let dir = big_dir.clone();
    let expected = Arc::clone(&bodies);
    let mismatches = within("200 ranged reads", SLOW, move || {
        let mut bad = Vec::new();
        for (uid, offset, len) in ranges {
            let body = &expected[&uid];
            let end = (offset as usize + len).min(body.len());
            let want = &body[offset as usize..end];
            let mut file = fs::File::open(dir.join(format!("{uid}.eml"))).expect("open");
            file.seek(SeekFrom::Start(offset)).expect("seek");
            let mut got = Vec::with_capacity(len);
            file.take(len as u64).read_to_end(&mut got).expect("read");
            if got != want {
                bad.push((uid, offset, len, got.len()));
            }
        }
        bad
    });
    assert!(
        mismatches.is_empty(),
        "ranged reads differ (uid, offset, len, got): {mismatches:?}"
    );

    // And the same through dd(1), which reads with its own block size.
    for _ in 0..10 {
        let uid = uids[rng.below(uids.len() as u64) as usize];
        let body = &bodies[&uid];
        let offset = rng.range(0, body.len());
        let len = rng.range(1, 500_000);
        let path = big_dir.join(format!("{uid}.eml"));
        let out = run(
            &[
                "dd".to_string(),
                format!("if={}", path.display()),
                "iflag=skip_bytes,count_bytes".to_string(),
                format!("skip={offset}"),
                format!("count={len}"),
                "bs=65536".to_string(),
                "status=none".to_string(),
            ],
            QUICK,
        );
        assert!(
            out.status.success(),
            "dd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let end = (offset + len).min(body.len());
        assert!(
            out.stdout == body[offset..end],
            "dd of uid {uid} at {offset}+{len}"
        );
    }

    assert_flags_unchanged(&fx.dovecot, seed, &["Big"]);
}

// --- (c) grep ---------------------------------------------------------------------------------

#[test]
fn grep_finds_exactly_the_seeded_messages() {
    let fx = mounted();
    let seed = Seed::standard();
    let out = run(
        &["grep", "-rl", PHRASE, &fx.mount.path().to_string_lossy()],
        SLOW,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "grep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: BTreeSet<PathBuf> = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(PathBuf::from)
        .collect();
    let expected: BTreeSet<PathBuf> = seed
        .phrase_hits()
        .into_iter()
        .map(|(folder, uid)| {
            fx.mount
                .join(common::mailbox_path(&folder))
                .join(format!("{uid}.eml"))
        })
        .collect();
    assert_eq!(found, expected);

    // grep read every message of every folder: still nobody gained \Seen.
    let folders: Vec<&str> = seed.folders().iter().map(|f| f.name.as_str()).collect();
    assert_flags_unchanged(&fx.dovecot, seed, &folders);
}

// --- (d) xattrs -------------------------------------------------------------------------------

#[test]
fn xattrs_show_flags_ids_and_decoded_headers() {
    let fx = mounted();
    let seed = Seed::standard();
    let uidvalidity = fx.dovecot.oracle_status("INBOX").uidvalidity;

    for message in &seed.folder("INBOX").messages {
        let path = fx.mount.join("INBOX").join(message.file_name());
        let mut flags = words(&xattr(&path, "user.imap.flags"));
        flags.sort();
        assert_eq!(
            flags,
            fx.dovecot.oracle_flags("INBOX", message.uid),
            "{}",
            path.display()
        );
        assert_eq!(flags, message.flags, "{}", path.display());
        assert_eq!(xattr_text(&path, "user.imap.uid"), message.uid.to_string());
        assert_eq!(
            xattr_text(&path, "user.imap.uidvalidity"),
            uidvalidity.to_string()
        );
        assert_eq!(
            xattr_text(&path, "user.mail.subject"),
            message.subject,
            "{}",
            path.display()
        );
    }

    let flagged = fx.mount.join("INBOX/2.eml");
    assert_eq!(words(&xattr(&flagged, "user.imap.flags")).len(), 2);
    let dump = run(
        &[
            "getfattr",
            "--absolute-names",
            "-d",
            "-m",
            "-",
            &flagged.to_string_lossy(),
        ],
        QUICK,
    );
    assert!(
        dump.status.success(),
        "getfattr -d: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    for name in [
        "user.imap.flags=",
        "user.imap.uid=\"2\"",
        "user.imap.uidvalidity=",
        "user.mail.subject=",
    ] {
        assert!(
            dump.contains(name),
            "{name} missing from getfattr -d:\n{dump}"
        );
    }

    // Encoded words decode to UTF-8 in other folders too.
    let cases = [
        ("Big", 5),
        ("Big", 6),
        ("Ünïcødé Folder", 2),
        ("Archive.2024", 3),
    ];
    for (folder, uid) in cases {
        let path = fx
            .mount
            .join(common::mailbox_path(folder))
            .join(format!("{uid}.eml"));
        let subject = &seed.folder(folder).message(uid).subject;
        assert_eq!(
            &xattr_text(&path, "user.mail.subject"),
            subject,
            "{}",
            path.display()
        );
    }
    let from = xattr_text(&fx.mount.join("INBOX/3.eml"), "user.mail.from");
    assert!(
        from.contains("Jörg Müller") && from.contains("joerg@example.de"),
        "{from:?}"
    );
    let id = xattr_text(&fx.mount.join("INBOX/3.eml"), "user.mail.message-id");
    assert!(id.contains("inbox.3@imapfs.test"), "{id:?}");

    // Reading the whole INBOX afterwards changes no flag either.
    let out = run(
        &[
            "sh",
            "-c",
            "cat \"$0\"/*.eml > /dev/null",
            &fx.mount.join("INBOX").to_string_lossy(),
        ],
        SLOW,
    );
    assert!(out.status.success());
    assert_flags_unchanged(&fx.dovecot, seed, &["INBOX"]);
}

// --- (e) start-up failures --------------------------------------------------------------------

#[test]
fn wrong_password_fails_with_one_line() {
    let dovecot = Dovecot::start(&Seed::new());
    let wrong = "not-the-password-93";
    let failure = expect_failure(MountOptions::new(&dovecot).password(Some(wrong)).quiet());
    let line = one_line_error(&failure);
    let lower = line.to_lowercase();
    assert!(
        lower.contains("authentication") || lower.contains("login"),
        "{line:?}"
    );
    assert!(
        !failure.stderr.contains(wrong) && !failure.stderr.contains(PASSWORD),
        "{line:?}"
    );
}

#[test]
fn unreachable_server_fails_with_one_line() {
    let dovecot = Dovecot::start(&Seed::new());
    let refusing = common::ports::RefusingPort::new();
    let url = format!("imaps://{USER}@127.0.0.1:{}", refusing.port);
    let failure = expect_failure(MountOptions::new(&dovecot).url(url).quiet());
    let line = one_line_error(&failure);
    assert!(
        line.contains("cannot connect") && line.contains("refused"),
        "{line:?}"
    );
}

#[test]
fn unverifiable_certificate_fails_with_one_line() {
    let dovecot = Dovecot::start(&Seed::new());
    let failure = expect_failure(MountOptions::new(&dovecot).without_ca_file().quiet());
    let line = one_line_error(&failure);
    assert!(line.to_lowercase().contains("certificate"), "{line:?}");
}

// --- (f) expunge by another client ------------------------------------------------------------

#[test]
fn message_expunged_elsewhere_disappears_without_hanging() {
    let fx = mounted();
    let dir = fx.mount.join("Big");
    assert!(list_names(&dir).contains("5.eml"));
    fx.dovecot.oracle_expunge("Big", 5);
    let path = dir.join("5.eml");

    // Every attempt must finish within QUICK (run panics otherwise); the message must stop
    // being readable within the overall deadline, with ENOENT.
    let failed = wait_for(
        "read of the expunged message to fail",
        Duration::from_secs(30),
        || {
            let out = run(&["cat", &path.to_string_lossy()], QUICK);
            (!out.status.success()).then_some(out)
        },
    );
    let stderr = String::from_utf8_lossy(&failed.stderr).to_lowercase();
    assert!(
        stderr.contains("no such file"),
        "cat of an expunged message: {stderr}"
    );

    wait_for("a listing without 5.eml", Duration::from_secs(30), || {
        (!list_names(&dir).contains("5.eml")).then_some(())
    });
    let stat_path = path.clone();
    let stat = within("stat", QUICK, move || fs::metadata(stat_path).map(|_| ()));
    assert_eq!(
        stat.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::NotFound)
    );

    // Its neighbours are untouched.
    let out = run(&["cat", &dir.join("4.eml").to_string_lossy()], QUICK);
    assert!(out.status.success() && out.stdout == Seed::standard().folder("Big").message(4).bytes);
}

// --- (g) unmount ------------------------------------------------------------------------------

#[test]
fn unmount_ends_the_process() {
    let Fixture { mount, dovecot } = mounted();
    assert!(!list_names(&mount.join("INBOX")).is_empty());
    let pid = mount.pid();
    let path = mount.path().to_path_buf();
    let status = mount.unmount();
    assert!(
        status.success(),
        "imapfs exited with {status} after fusermount3 -u"
    );
    assert!(!common::is_mounted(&path));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "imapfs {pid} still exists"
    );
    drop(dovecot);
}

/// FIELD-NOTES: a directly mounted process killed by SIGTERM must unmount, not leave a dead
/// mount ("Transport endpoint is not connected") behind.
#[test]
fn sigterm_unmounts_and_exits() {
    let Fixture { mut mount, dovecot } = mounted();
    assert!(!list_names(&mount.join("INBOX")).is_empty());
    let out = run(&["kill", "-TERM", &mount.pid().to_string()], QUICK);
    assert!(out.status.success());
    let status = mount.wait_exit(Duration::from_secs(15));
    assert!(status.is_some(), "imapfs did not exit on SIGTERM");
    assert!(!mount.is_mounted(), "SIGTERM left the mount behind");
    drop(mount);
    drop(dovecot);
}

// --- helpers ----------------------------------------------------------------------------------

/// A server with the standard seed and a mount of it; fields drop in order (mount first).
struct Fixture {
    mount: Mount,
    dovecot: Dovecot,
}

fn mounted() -> Fixture {
    let dovecot = Dovecot::start(Seed::standard());
    let mount = Mount::start(&dovecot, &[]).unwrap_or_else(|failure| panic!("{failure}"));
    Fixture { mount, dovecot }
}

fn expect_failure(options: MountOptions<'_>) -> MountFailure {
    match options.start() {
        Ok(mount) => {
            let log = mount.log();
            drop(mount);
            panic!("imapfs mounted although it should have failed:\n{log}");
        }
        Err(failure) => failure,
    }
}

/// Checks the failure contract shared by all start-up errors and returns the line.
fn one_line_error(failure: &MountFailure) -> String {
    let status = failure.status.unwrap_or_else(|| panic!("{failure}"));
    assert!(!status.success(), "{failure}");
    assert!(!failure.left_mounted, "a failed start left a mount behind");
    let lines: Vec<&str> = failure
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "stderr should be one line:\n{}",
        failure.stderr
    );
    eprintln!("imapfs said: {}", lines[0]);
    lines[0].to_string()
}

fn assert_flags_unchanged(dovecot: &Dovecot, seed: &Seed, folders: &[&str]) {
    for folder in folders {
        let meta = dovecot.oracle_meta(folder);
        for message in &seed.folder(folder).messages {
            assert_eq!(
                meta[&message.uid].flags, message.flags,
                "flags of {folder} uid {} changed by reading",
                message.uid
            );
        }
    }
}

struct Entry {
    is_file: bool,
    mode: u32,
    len: u64,
    mtime: i64,
}

struct Tree {
    /// Directories relative to the root.
    dirs: BTreeSet<PathBuf>,
    /// Everything else, relative to the root.
    files: BTreeMap<PathBuf, Entry>,
}

/// Walks the mount with readdir + lstat under a deadline.
fn walk(root: &Path) -> Tree {
    let root = root.to_path_buf();
    within("walking the mount", SLOW, move || {
        let mut tree = Tree {
            dirs: BTreeSet::new(),
            files: BTreeMap::new(),
        };
        let mut pending = vec![PathBuf::new()];
        while let Some(relative) = pending.pop() {
            for entry in fs::read_dir(root.join(&relative)).expect("read_dir") {
                let entry = entry.expect("dir entry");
                let path = relative.join(entry.file_name());
                let meta = fs::symlink_metadata(root.join(&path)).expect("lstat");
                if meta.is_dir() {
                    tree.dirs.insert(path.clone());
                    pending.push(path);
                } else {
                    let entry = Entry {
                        is_file: meta.is_file(),
                        mode: meta.mode(),
                        len: meta.len(),
                        mtime: meta.mtime(),
                    };
                    tree.files.insert(path, entry);
                }
            }
        }
        tree
    })
}

/// The names in one directory of the mount.
fn list_names(dir: &Path) -> BTreeSet<String> {
    let dir = dir.to_path_buf();
    within("listing a directory", QUICK, move || {
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    })
}

/// One xattr's raw value, read with getfattr(1).
fn xattr(path: &Path, name: &str) -> Vec<u8> {
    common::getfattr_bytes(path, name)
        .unwrap_or_else(|e| panic!("getfattr -n {name} {}: {e}", path.display()))
}

fn xattr_text(path: &Path, name: &str) -> String {
    String::from_utf8(xattr(path, name)).unwrap_or_else(|e| panic!("{name} is not UTF-8: {e}"))
}

fn words(value: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(value)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

// --- credentials ------------------------------------------------------------------------------

#[test]
fn the_password_is_nowhere_to_be_seen() {
    let dovecot = Dovecot::start(Seed::standard());
    let dir = common::unique_temp_dir("logfile");
    let log_file = dir.join("imapfs.log");
    let mount = MountOptions::new(&dovecot)
        .args(&["--log-file", log_file.to_str().unwrap()])
        .start()
        .unwrap_or_else(|failure| panic!("{failure}"));
    // Some traffic, so the log has something to say.
    let out = run(&["ls", "-R", &mount.path().to_string_lossy()], SLOW);
    assert!(out.status.success());
    let pid = mount.pid();
    for what in ["environ", "cmdline"] {
        let bytes = fs::read(format!("/proc/{pid}/{what}")).unwrap();
        assert!(
            !common::contains(&bytes, PASSWORD.as_bytes()),
            "the password is readable in /proc/{pid}/{what}"
        );
    }
    let log = fs::read(&log_file).unwrap();
    assert!(!log.is_empty(), "--log-file stayed empty");
    assert!(
        !common::contains(&log, PASSWORD.as_bytes()),
        "the password is in the log file"
    );
    assert!(
        !common::contains(mount.log().as_bytes(), PASSWORD.as_bytes()),
        "the password is on stderr"
    );
    drop(mount);
    let _ = fs::remove_dir_all(dir);
}
