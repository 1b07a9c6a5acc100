//! The disk body cache (issue 16) through real mounts of a real Dovecot: a second mount reads
//! what the first read with almost no body bytes on the wire (counted by a proxy), the size
//! bound holds, a damaged entry is fetched again, a new or reused UIDVALIDITY serves no old
//! bytes, a big message read back from disk keeps its pages, and everything on disk is
//! private.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use common::counting_proxy::CountingProxy;
use common::{compose_text, run_ok, unique_temp_dir, Dovecot, Mount, MountOptions, Seed};

/// A folder of `n` text messages of about `lines` lines each (72 bytes a line).
fn seed(folder: &str, n: usize, lines: usize) -> Seed {
    let mut seed = Seed::new();
    let f = seed.folder_mut(folder);
    for i in 0..n {
        let tag = format!("{folder}-{i}");
        f.push(
            compose_text(&message(&tag, lines + i % 5, 1_700_000_000)),
            &[],
            &tag,
            "seed@example.org",
            &format!("<{tag}@imapfs.test>"),
            1_700_000_000 + i as i64,
            1_700_000_000 + i as i64,
        );
    }
    seed.folder_mut("INBOX");
    seed
}

fn message(token: &str, lines: usize, date: i64) -> common::TextMessage<'static> {
    common::TextMessage {
        from: "Seed <seed@example.org>",
        to: "tester@example.org",
        subject: common::Subject::Plain("cached"),
        date,
        message_id: format!("<{token}@imapfs.test>"),
        body_lines: (0..lines)
            .map(|l| format!("token {token} line {l} ........................................"))
            .collect(),
    }
}

/// A cache directory for several mounts, removed at the end.
struct CacheDir(PathBuf);

impl CacheDir {
    fn new() -> CacheDir {
        CacheDir(unique_temp_dir("disk-cache"))
    }

    /// Where imapfs keeps its files (`$XDG_CACHE_HOME/imapfs`).
    fn imapfs(&self) -> PathBuf {
        self.0.join("imapfs")
    }

    /// Every body entry file (path, size).
    fn entries(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        walk(&self.imapfs(), &mut |p, m| {
            let in_bodies = p.components().any(|c| c.as_os_str() == "bodies");
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if m.is_file() && in_bodies && name.contains('.') && !name.starts_with('.') {
                out.push((p.to_path_buf(), m.len()));
            }
        });
        out
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let m = fs::symlink_metadata(&p).unwrap();
        f(&p, &m);
        if m.is_dir() {
            walk(&p, f);
        }
    }
}

fn mount(dovecot: &Dovecot, cache: &CacheDir, url: Option<String>, args: &[&str]) -> Mount {
    let mut o = MountOptions::new(dovecot)
        .cache_home(&cache.0)
        .rust_log("info")
        .args(args);
    if let Some(url) = url {
        o = o.url(url);
    }
    o.start().unwrap_or_else(|f| panic!("{f}"))
}

/// Read every message of `folder` through the mount, checking each against the server's.
fn read_all(mount: &Mount, folder: &str, expected: &BTreeMap<u32, Vec<u8>>) {
    for (uid, bytes) in expected {
        let got = fs::read(mount.join(format!("{folder}/{uid}.eml"))).unwrap();
        assert!(
            got == *bytes,
            "{folder}/{uid}.eml differs from the server's"
        );
    }
}

/// `user.imapfs.stats` value of `key`.
fn stat(mount: &Mount, key: &str) -> u64 {
    let out = run_ok(&[
        "getfattr",
        "--absolute-names",
        "--only-values",
        "-n",
        "user.imapfs.stats",
        mount.path().to_str().unwrap(),
    ])
    .stdout;
    let text = String::from_utf8(out).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn a_second_mount_reads_2000_messages_with_under_2_percent_of_their_bytes_on_the_wire() {
    let dovecot = Dovecot::start(&seed("Bulk", 2000, 40));
    let bodies = dovecot.oracle_fetch_all("Bulk");
    let total: u64 = bodies.values().map(|b| b.len() as u64).sum();
    let cache = CacheDir::new();
    let proxy = CountingProxy::start(dovecot.imaps_port);
    let url = format!("imaps://{}@127.0.0.1:{}", dovecot.user, proxy.port);
    let first = mount(&dovecot, &cache, Some(url.clone()), &[]);
    read_all(&first, "Bulk", &bodies);
    assert!(first.unmount().success());
    let cold = proxy.bytes_down();
    assert!(
        cold >= total,
        "the first mount read {cold} bytes for {total}"
    );

    let second = mount(&dovecot, &cache, Some(url), &[]);
    read_all(&second, "Bulk", &bodies);
    let hits = stat(&second, "disk_cache_hits");
    assert!(second.unmount().success());
    let warm = proxy.bytes_down() - cold;
    eprintln!("{total} bytes of mail: first mount {cold} bytes from the server, second {warm}");
    assert!(hits >= 2000, "{hits} disk cache hits");
    assert!(
        warm * 50 < total,
        "the second mount read {warm} bytes from the server for {total} bytes of mail"
    );
}

/// A message bigger than a block, read back from the disk after a remount: its length is
/// known at open (its last block is on disk, and short), so the kernel keeps its pages: a
/// second read reaches no block at all. The bytes are the server's.
#[test]
fn a_big_message_read_back_from_disk_is_opened_with_its_length_and_keeps_its_pages() {
    let dovecot = Dovecot::start(&seed("Big", 2, 40_000));
    let bodies = dovecot.oracle_fetch_all("Big");
    assert!(bodies.values().all(|b| b.len() > 2 << 20));
    let cache = CacheDir::new();
    let first = mount(&dovecot, &cache, None, &[]);
    read_all(&first, "Big", &bodies);
    assert!(first.unmount().success());

    let second = mount(&dovecot, &cache, None, &[]);
    read_all(&second, "Big", &bodies);
    let blocks = stat(&second, "cache_hits") + stat(&second, "cache_misses");
    let disk = stat(&second, "disk_cache_hits");
    read_all(&second, "Big", &bodies);
    let again = stat(&second, "cache_hits") + stat(&second, "cache_misses");
    assert!(second.unmount().success());
    assert!(
        disk >= 6,
        "{disk} disk cache hits for 2 messages of 3 blocks"
    );
    assert_eq!(again, blocks, "the second read reached the daemon's blocks");
}

#[test]
fn the_bound_holds_after_reading_three_times_it_and_files_are_private() {
    let dovecot = Dovecot::start(&seed("Big", 400, 100));
    let bodies = dovecot.oracle_fetch_all("Big");
    let total: u64 = bodies.values().map(|b| b.len() as u64).sum();
    let bound: u64 = total / 3;
    let cache = CacheDir::new();
    let m = mount(
        &dovecot,
        &cache,
        None,
        &["--disk-cache-size", &bound.to_string()],
    );
    read_all(&m, "Big", &bodies);
    let held: u64 = cache.entries().iter().map(|(_, s)| s).sum();
    // While mounted, writers racing one eviction pass may overshoot by a few entries.
    assert!(
        held <= bound + bound / 10,
        "{held} bytes held, bound {bound}"
    );
    // Blocks are written by the cache's writer thread after the reads return.
    common::wait_for("an eviction pass", Duration::from_secs(30), || {
        (stat(&m, "disk_cache_evicted") > 0).then_some(())
    });
    assert!(m.unmount().success());
    let held: u64 = cache.entries().iter().map(|(_, s)| s).sum();
    eprintln!("read {total} bytes with a bound of {bound}: {held} held");
    assert!(
        held <= bound,
        "{held} bytes held after unmount, bound {bound}"
    );
    assert!(held > bound / 2, "the cache kept only {held} bytes");
    let mut loose = Vec::new();
    walk(&cache.imapfs(), &mut |p, m| {
        let mode = m.permissions().mode() & 0o777;
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        if mode != want || m.uid() != unsafe_euid() {
            loose.push(format!("{}: {mode:o}", p.display()));
        }
    });
    assert!(loose.is_empty(), "{loose:#?}");
}

#[test]
fn a_damaged_entry_is_fetched_again_never_served() {
    let dovecot = Dovecot::start(&seed("Dmg", 6, 30));
    let bodies = dovecot.oracle_fetch_all("Dmg");
    let cache = CacheDir::new();
    let m = mount(&dovecot, &cache, None, &[]);
    read_all(&m, "Dmg", &bodies);
    assert!(m.unmount().success());
    let entries = cache.entries();
    assert_eq!(entries.len(), 6, "{entries:#?}");
    // One with a flipped byte in its body, one cut short, one replaced by a stranger.
    let mut bytes = fs::read(&entries[0].0).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x20;
    fs::write(&entries[0].0, &bytes).unwrap();
    let cut = fs::read(&entries[1].0).unwrap();
    fs::write(&entries[1].0, &cut[..cut.len() / 2]).unwrap();
    fs::copy(&entries[3].0, &entries[2].0).unwrap();
    let m = mount(&dovecot, &cache, None, &[]);
    read_all(&m, "Dmg", &bodies);
    assert_eq!(stat(&m, "disk_cache_discarded"), 3);
    assert_eq!(stat(&m, "disk_cache_hits"), 3);
    assert!(m.unmount().success());

    // `imapfs cache` reports what is kept and the counters of both mounts, then clears.
    let cache_cmd = |extra: &[&str]| {
        let dir = cache.imapfs();
        let mut args = vec![env!("CARGO_BIN_EXE_imapfs"), "cache", "--cache-dir"];
        args.push(dir.to_str().unwrap());
        args.extend_from_slice(extra);
        String::from_utf8(run_ok(&args).stdout).unwrap()
    };
    let url = dovecot.url();
    let report = cache_cmd(&["--account", &url, "--stats"]);
    assert!(report.contains("6 messages in 1 folders"), "{report}");
    assert!(report.contains("hit rate: "), "{report}");
    assert!(report.contains("hits        3\n"), "{report}");
    assert!(report.contains("discarded   3"), "{report}");
    let cleared = cache_cmd(&["--clear"]);
    assert!(cleared.contains("removed 6 messages"), "{cleared}");
    assert!(cache.entries().is_empty());
}

#[test]
fn a_new_uidvalidity_serves_no_old_bytes_and_drops_the_old_entries() {
    let dovecot = Dovecot::start(&seed("Gen", 5, 20));
    let old = dovecot.oracle_fetch_all("Gen");
    let cache = CacheDir::new();
    let m = mount(&dovecot, &cache, None, &[]);
    read_all(&m, "Gen", &old);
    assert!(m.unmount().success());
    let old_entries = cache.entries();
    assert_eq!(old_entries.len(), 5);
    dovecot.oracle_delete("Gen");
    dovecot.oracle_create("Gen");
    for uid in 1..=5 {
        // The same sizes as before, other bytes.
        let mut bytes = old[&uid].clone();
        let at = bytes.len() - 5;
        bytes[at] = b'X';
        dovecot.oracle_append("Gen", &bytes);
    }
    let new = dovecot.oracle_fetch_all("Gen");
    let m = mount(&dovecot, &cache, None, &[]);
    read_all(&m, "Gen", &new);
    assert!(m.unmount().success());
    for (p, _) in old_entries {
        assert!(!p.exists(), "{} is still there", p.display());
    }
}

/// Issue 16 with the safety issue's item 15: a restored server keeps the folder's
/// UIDVALIDITY but its UIDs name other messages. The first refresh from the saved index
/// sees it, and the folder's entries on disk go too: no old byte is served.
#[test]
fn a_reused_uidvalidity_serves_no_old_bytes_from_the_disk_cache() {
    let mut dovecot = Dovecot::start(&seed("Restore", 20, 20));
    let before = dovecot.oracle_status("Restore");
    let old = dovecot.oracle_fetch_all("Restore");
    let cache = CacheDir::new();
    let m = mount(&dovecot, &cache, None, &[]);
    read_all(&m, "Restore", &old);
    assert!(m.unmount().success());
    assert_eq!(cache.entries().len(), 20);
    dovecot.kill_server();
    let folder = dovecot.mail_dir.join(".Restore");
    for (i, entry) in fs::read_dir(folder.join("cur")).unwrap().enumerate() {
        let path = entry.unwrap().path();
        let token = format!("restored-{i}");
        fs::write(&path, compose_text(&message(&token, 30 + i, 1_600_000_000))).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(1_600_000_000 + i as u64))
            .unwrap();
    }
    for entry in fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("dovecot.index")
        {
            fs::remove_file(&path).unwrap();
        }
    }
    dovecot.start_again();
    assert_eq!(
        dovecot.oracle_status("Restore").uidvalidity,
        before.uidvalidity
    );
    let new = dovecot.oracle_fetch_all("Restore");
    let m = mount(&dovecot, &cache, None, &[]);
    read_all(&m, "Restore", &new);
    assert_eq!(stat(&m, "disk_cache_hits"), 0);
    assert!(m.unmount().success());
}

fn unsafe_euid() -> u32 {
    fs::metadata("/proc/self").unwrap().uid()
}
