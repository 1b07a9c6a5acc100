//! Mounts without the server (issue 16, the offline half): a mount that starts from what an
//! earlier mount saved when the server cannot be reached, serves it read-only, and turns live
//! and writable by itself once the server answers; a mount that loses its server keeps
//! serving what it holds. The server is the harness's Dovecot, stopped and started again
//! ([`Dovecot::kill_server`], [`Dovecot::start_again`]); every wait is on a condition with a
//! deadline.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{set_xattr, unique_temp_dir, wait_for, within, Dovecot, Mount, MountOptions, Seed};

/// Deadline for one filesystem call expected to answer at once.
const QUICK: Duration = Duration::from_secs(20);
/// `--timeout` of the mounts here: "fails fast" means well within it.
const TIMEOUT_SECS: u64 = 8;

/// INBOX (5 messages, UID 2 seen), `Other` (3 messages): small text messages.
fn seed() -> Seed {
    let mut seed = Seed::new();
    for (folder, count) in [("INBOX", 5u32), ("Other", 3)] {
        let f = seed.folder_mut(folder);
        for i in 1..=count {
            let body = format!(
                "From: a@example.org\r\nTo: b@example.org\r\nSubject: {folder} {i}\r\n\
                 Message-ID: <{folder}-{i}@example.org>\r\n\
                 Date: Tue, 05 Mar 2024 09:12:00 +0000\r\n\r\nMessage {i} of {folder}.\r\n{}",
                "offline text line\r\n".repeat(i as usize * 7)
            );
            let flags: &[&str] = if folder == "INBOX" && i == 2 {
                &["\\Seen"]
            } else {
                &[]
            };
            f.push(
                body.into_bytes(),
                flags,
                &format!("{folder} {i}"),
                "a@example.org",
                &format!("<{folder}-{i}@example.org>"),
                1_709_629_920,
                1_709_629_957,
            );
        }
    }
    seed
}

/// An `XDG_CACHE_HOME` shared by the mounts of one test (what one mount saves, the next
/// starts from); removed at the end, panics included. Never a mount point.
struct CacheHome(PathBuf);

impl CacheHome {
    fn new() -> CacheHome {
        CacheHome(unique_temp_dir("offline-cache"))
    }
}

impl Drop for CacheHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mount_with(dovecot: &Dovecot, cache: &CacheHome, args: &[&str]) -> Mount {
    let timeout = TIMEOUT_SECS.to_string();
    let mut all = vec!["--timeout", &timeout];
    all.extend_from_slice(args);
    MountOptions::new(dovecot)
        .cache_home(&cache.0)
        .args(&all)
        .rust_log("info")
        .start()
        .unwrap_or_else(|e| panic!("mount failed: {e}"))
}

/// Mount once online and look at both folders, so that their listings and the folder list
/// are saved; unmount.
fn save_a_copy(dovecot: &Dovecot, cache: &CacheHome) {
    assert_names_and_unmount(mount_with(dovecot, cache, &[]));
}

/// The names in a directory, sorted, within [`QUICK`].
fn names(dir: &Path) -> std::io::Result<Vec<String>> {
    let d = dir.to_path_buf();
    within(&format!("ls {}", dir.display()), QUICK, move || {
        let mut v: Vec<String> = std::fs::read_dir(&d)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        v.sort();
        Ok(v)
    })
}

fn read(path: &Path) -> (std::io::Result<Vec<u8>>, Duration) {
    let p = path.to_path_buf();
    within(&format!("read {}", path.display()), QUICK, move || {
        let started = Instant::now();
        (std::fs::read(&p), started.elapsed())
    })
}

/// One line of `user.imapfs.stats`.
fn stat(mount: &Mount, key: &str) -> String {
    mount
        .stat(key)
        .unwrap_or_else(|| panic!("no {key} in stats"))
}

/// getfattr(1)'s value, `None` when it fails.
fn getfattr_ok(path: &Path, name: &str) -> Option<String> {
    common::getfattr(path, name).ok()
}

fn errno_of<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> i32 {
    match r {
        Err(e) => e.raw_os_error().unwrap_or(0),
        Ok(v) => panic!("{what}: succeeded ({v:?})"),
    }
}

/// A change through the mount, run under a deadline.
type Change = Box<dyn FnOnce() -> std::io::Result<()> + Send>;

/// Every change through the mount fails with EROFS.
fn assert_changes_are_erofs(mount: &Mount) {
    let inbox = mount.join("INBOX");
    assert_eq!(
        set_xattr(&inbox.join("1.eml"), "user.imap.flags", b"+\\Flagged"),
        Err(libc::EROFS),
        "setfattr"
    );
    let calls: Vec<(&str, Change)> = vec![
        ("rm", {
            let p = inbox.join("1.eml");
            Box::new(move || std::fs::remove_file(p))
        }),
        ("mv", {
            let (a, b) = (inbox.join("1.eml"), mount.join("Other/1.eml"));
            Box::new(move || std::fs::rename(a, b))
        }),
        ("cp", {
            let p = inbox.join("new.eml");
            Box::new(move || std::fs::write(p, b"From: x@example.org\r\n\r\nhi\r\n"))
        }),
        ("mkdir", {
            let p = mount.join("Made");
            Box::new(move || std::fs::create_dir(p))
        }),
        ("rmdir", {
            let p = mount.join("Other");
            Box::new(move || std::fs::remove_dir(p))
        }),
        ("rename", {
            let (a, b) = (mount.join("Other"), mount.join("Renamed"));
            Box::new(move || std::fs::rename(a, b))
        }),
    ];
    for (what, call) in calls {
        let r = within(what, QUICK, call);
        assert_eq!(errno_of(what, r), libc::EROFS, "{what}");
    }
}

#[test]
fn offline_start_serves_the_saved_copy_read_only() {
    let seed = seed();
    let mut dovecot = Dovecot::start(&seed);
    let cache = CacheHome::new();
    save_a_copy(&dovecot, &cache);
    dovecot.kill_server();

    let started = Instant::now();
    let mount = mount_with(&dovecot, &cache, &[]);
    eprintln!("offline start took {:?}", started.elapsed());
    let log = mount.log();
    assert!(
        log.contains("serving the copy saved by an earlier mount, read-only"),
        "{log}"
    );
    assert_eq!(stat(&mount, "link"), "offline");

    // The tree, the listings, sizes and xattrs come from what was saved.
    assert_eq!(names(mount.path()).unwrap(), ["INBOX", "Other"]);
    let inbox = mount.join("INBOX");
    assert_eq!(
        names(&inbox).unwrap(),
        ["1.eml", "2.eml", "3.eml", "4.eml", "5.eml"]
    );
    for m in &seed.folder("INBOX").messages {
        let meta = std::fs::metadata(inbox.join(m.file_name())).unwrap();
        assert_eq!(meta.len(), m.bytes.len() as u64, "size of {}", m.uid);
    }
    assert_eq!(
        getfattr_ok(&inbox.join("2.eml"), "user.imap.flags").unwrap(),
        "\\Seen"
    );
    assert_eq!(
        getfattr_ok(&inbox.join("4.eml"), "user.imap.uid").unwrap(),
        "4"
    );
    assert_eq!(getfattr_ok(&inbox, "user.imap.messages").unwrap(), "5");
    assert_eq!(getfattr_ok(&inbox, "user.imap.unseen").unwrap(), "4");

    // A body never cached: EIO, at once, and one line in the log naming it.
    let (r, took) = read(&inbox.join("3.eml"));
    assert_eq!(errno_of("cat 3.eml", r), libc::EIO);
    assert!(took < Duration::from_secs(TIMEOUT_SECS), "took {took:?}");
    wait_for("the log line of the uncached read", QUICK, || {
        mount
            .log()
            .lines()
            .any(|l| l.contains("INBOX/3") && l.contains("not cached"))
            .then_some(())
    });

    // .search needs the server.
    let r = names(&inbox.join(".search").join("FROM a"));
    assert_eq!(errno_of(".search", r), libc::EIO);

    assert_changes_are_erofs(&mount);
    drop(mount);

    // Nothing reached the server meanwhile.
    dovecot.start_again();
    assert_eq!(dovecot.oracle_meta("INBOX").len(), 5);
    assert_eq!(dovecot.oracle_meta("Other").len(), 3);
    assert!(dovecot.oracle_flags("INBOX", 1).is_empty());
}

#[test]
fn the_server_back_makes_the_mount_live_and_writable_without_a_remount() {
    let seed = seed();
    let mut dovecot = Dovecot::start(&seed);
    let cache = CacheHome::new();
    save_a_copy(&dovecot, &cache);
    dovecot.kill_server();
    let mount = mount_with(&dovecot, &cache, &[]);
    let inbox = mount.join("INBOX");
    assert_eq!(names(&inbox).unwrap().len(), 5);
    assert_eq!(stat(&mount, "link"), "offline");

    // Another client changes things while the mount is offline.
    dovecot.start_again();
    let extra = b"From: c@example.org\r\nSubject: while offline\r\n\r\nhello\r\n";
    assert_eq!(dovecot.oracle_append("INBOX", extra), 6);
    dovecot.oracle_store("INBOX", 3, "+FLAGS", &["\\Answered"]);
    dovecot.oracle_expunge("Other", 2);
    dovecot.oracle_create("Fresh");

    wait_for("the link online again", Duration::from_secs(40), || {
        (stat(&mount, "link") == "online").then_some(())
    });
    assert_eq!(stat(&mount, "resyncs"), "1");
    wait_for("the other client's changes", QUICK, || {
        let listed = names(&inbox).ok()?;
        let other = names(&mount.join("Other")).ok()?;
        let root = names(mount.path()).ok()?;
        let flags = getfattr_ok(&inbox.join("3.eml"), "user.imap.flags")?;
        (listed.len() == 6
            && other == ["1.eml", "3.eml"]
            && root.contains(&"Fresh".to_string())
            && flags.contains("\\Answered"))
        .then_some(())
    });
    let (r, _) = read(&inbox.join("6.eml"));
    assert_eq!(r.unwrap(), extra);

    // Writable again: a flag change reaches the server.
    set_xattr(&inbox.join("1.eml"), "user.imap.flags", b"+\\Flagged").expect("setfattr");
    assert_eq!(dovecot.oracle_flags("INBOX", 1), ["\\Flagged"]);
}

#[test]
fn losing_the_server_mid_mount_keeps_cached_reads_and_comes_back() {
    let seed = seed();
    let mut dovecot = Dovecot::start(&seed);
    let cache = CacheHome::new();
    let mount = mount_with(&dovecot, &cache, &["--dir-ttl", "1"]);
    let inbox = mount.join("INBOX");
    assert_eq!(names(&inbox).unwrap().len(), 5);
    let one = &seed.folder("INBOX").message(1).bytes;
    assert_eq!(&read(&inbox.join("1.eml")).0.unwrap(), one);

    dovecot.kill_server();
    // The watcher's connection ends; its attempt to reconnect finds the server gone.
    wait_for("the link offline", Duration::from_secs(20), || {
        (stat(&mount, "link") == "offline").then_some(())
    });
    // Cached: read as before. Listings held: listed (past dir_ttl). Uncached: EIO, fast.
    assert_eq!(&read(&inbox.join("1.eml")).0.unwrap(), one);
    assert_eq!(names(&inbox).unwrap().len(), 5);
    let (r, took) = read(&inbox.join("4.eml"));
    assert_eq!(errno_of("cat 4.eml", r), libc::EIO);
    assert!(took < Duration::from_secs(TIMEOUT_SECS), "took {took:?}");
    assert_eq!(
        set_xattr(&inbox.join("2.eml"), "user.imap.flags", b"+\\Flagged"),
        Err(libc::EROFS)
    );

    dovecot.start_again();
    wait_for("the link online again", Duration::from_secs(40), || {
        (stat(&mount, "link") == "online").then_some(())
    });
    assert_eq!(
        &read(&inbox.join("4.eml")).0.unwrap(),
        &seed.folder("INBOX").message(4).bytes
    );
    set_xattr(&inbox.join("2.eml"), "user.imap.flags", b"+\\Flagged").expect("setfattr");
    assert_eq!(dovecot.oracle_flags("INBOX", 2), ["\\Flagged", "\\Seen"]);
}

#[test]
fn without_an_offline_start_the_mount_fails_with_its_own_exit_code() {
    let seed = seed();
    let mut dovecot = Dovecot::start(&seed);
    let cache = CacheHome::new();

    // A wrong password is never taken for an unreachable server, saved copy or not.
    save_a_copy(&dovecot, &cache);
    let failure = MountOptions::new(&dovecot)
        .cache_home(&cache.0)
        .password(Some("not-the-password"))
        .start()
        .err()
        .expect("mounted with a wrong password");
    assert_eq!(failure.status.and_then(|s| s.code()), Some(77), "{failure}");

    dovecot.kill_server();
    let failure = MountOptions::new(&dovecot)
        .cache_home(&cache.0)
        .args(&["-o", "offline=no"])
        .quiet()
        .start()
        .err()
        .expect("mounted offline despite offline=no");
    assert_eq!(failure.status.and_then(|s| s.code()), Some(75), "{failure}");
    assert!(failure.stderr.contains("offline=no"), "{failure}");
    assert!(!failure.left_mounted);

    // Nothing saved: nothing to serve.
    let empty = CacheHome::new();
    let failure = MountOptions::new(&dovecot)
        .cache_home(&empty.0)
        .quiet()
        .start()
        .err()
        .expect("mounted offline with nothing saved");
    assert_eq!(failure.status.and_then(|s| s.code()), Some(75), "{failure}");
    assert!(failure.stderr.contains("no copy saved"), "{failure}");
}

#[test]
fn the_saved_folder_list_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let seed = seed();
    let dovecot = Dovecot::start(&seed);
    let cache = CacheHome::new();
    save_a_copy(&dovecot, &cache);
    let account_dir = std::fs::read_dir(cache.0.join("imapfs"))
        .unwrap()
        .next()
        .expect("an account directory")
        .unwrap()
        .path();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&account_dir), 0o700);
    let list = account_dir.join("mailboxes.lst");
    assert_eq!(mode(&list), 0o600);
    let names: Vec<String> = std::fs::read_dir(&account_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".tmp")),
        "a temporary file was left: {names:?}"
    );
}

#[test]
fn a_silent_server_starts_the_mount_offline_after_a_short_wait() {
    // SIGSTOP: the kernel accepts connections, nobody greets. With a saved copy the first
    // attempt waits at most 5 s (--timeout is 8 here), then the mount serves the copy; once
    // the server answers again it goes live.
    let seed = seed();
    let dovecot = Dovecot::start(&seed);
    let cache = CacheHome::new();
    save_a_copy(&dovecot, &cache);
    let paused = dovecot.pause();
    let started = Instant::now();
    let mount = mount_with(&dovecot, &cache, &[]);
    let took = started.elapsed();
    eprintln!("offline start against a silent server took {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(stat(&mount, "link"), "offline");
    assert_eq!(names(&mount.join("Other")).unwrap().len(), 3);
    paused.resume();
    wait_for("the link online", Duration::from_secs(40), || {
        (stat(&mount, "link") == "online").then_some(())
    });
}

/// Issue 16, both halves: bodies read by an earlier mount are on disk, so an offline mount
/// serves them byte for byte as the server sent them, while a body never read is EIO.
#[test]
fn an_offline_mount_serves_disk_cached_bodies_byte_identical() {
    let mut dovecot = Dovecot::start(&seed());
    let cache = CacheHome::new();
    let wanted = [("INBOX", 1u32), ("INBOX", 4), ("Other", 2)];
    let server: Vec<Vec<u8>> = wanted
        .iter()
        .map(|(f, uid)| dovecot.oracle_fetch(f, *uid))
        .collect();
    let mount = mount_with(&dovecot, &cache, &[]);
    for (f, uid) in wanted {
        let (r, _) = read(&mount.join(format!("{f}/{uid}.eml")));
        r.expect("read online");
    }
    assert_names_and_unmount(mount);
    dovecot.kill_server();

    let mount = mount_with(&dovecot, &cache, &[]);
    assert_eq!(stat(&mount, "link"), "offline");
    for ((f, uid), bytes) in wanted.iter().zip(&server) {
        let (r, _) = read(&mount.join(format!("{f}/{uid}.eml")));
        let got = r.unwrap_or_else(|e| panic!("{f}/{uid}.eml offline: {e}"));
        assert!(
            got == *bytes,
            "{f}/{uid}.eml differs from the server's bytes"
        );
    }
    let (r, _) = read(&mount.join("INBOX/3.eml"));
    assert_eq!(errno_of("cat INBOX/3.eml", r), libc::EIO);
    assert!(stat(&mount, "disk_cache_hits").parse::<u64>().unwrap() >= 3);
    drop(mount);
}

/// Both folders listed (so that the folder list and indexes are saved), then unmounted.
fn assert_names_and_unmount(mount: Mount) {
    assert_eq!(names(&mount.join("INBOX")).expect("ls INBOX").len(), 5);
    assert_eq!(names(&mount.join("Other")).expect("ls Other").len(), 3);
    assert!(mount.unmount().success());
}
