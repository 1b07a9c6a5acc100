use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("imapfs-disk-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn open(dir: &Path, bound: u64) -> DiskCache {
    DiskCache::open(&DiskOptions {
        dir: dir.to_path_buf(),
        account: "me@example.org:993".into(),
        bound,
    })
    .expect("cache opens")
}

fn key(uid: u32) -> DiskKey<'static> {
    DiskKey {
        folder: b"INBOX",
        validity: 7,
        uid,
        block: 0,
    }
}

const STAMP: Stamp = Stamp {
    listed_size: 5,
    internal_date: 1_700_000_000,
};

#[test]
fn an_entry_comes_back_only_under_its_key_and_stamp() {
    let dir = temp_dir("key");
    let c = open(&dir, 1 << 20);
    c.put(key(1), STAMP, b"hello");
    assert_eq!(
        c.get(key(1), STAMP, 1 << 20).as_deref(),
        Some(&b"hello"[..])
    );
    assert!(c.get(key(2), STAMP, 1 << 20).is_none());
    let other = Stamp {
        listed_size: 6,
        ..STAMP
    };
    // Another message under the same UID (a reused UIDVALIDITY): dropped, never served.
    assert!(c.get(key(1), other, 1 << 20).is_none());
    assert!(!c.contains(key(1)));
    assert_eq!(c.stats.discarded.load(Relaxed), 1);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_entry_is_removed_and_files_are_private() {
    let dir = temp_dir("damage");
    let c = open(&dir, 1 << 20);
    c.put(key(1), STAMP, b"hello");
    let path = c.path(key(1));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(c.get(key(1), STAMP, 1 << 20).is_none());
    assert!(!path.exists());
    let _ = fs::remove_dir_all(&dir);
}

/// Wait (with a deadline) until `done` holds.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn the_eviction_thread_keeps_the_bound_and_the_oldest_go_first() {
    let dir = temp_dir("bound");
    let c = std::sync::Arc::new(open(&dir, 40_000));
    let evictor = {
        let c = c.clone();
        std::thread::spawn(move || c.run_evictor())
    };
    let block = vec![7u8; 1000];
    for uid in 1..=100 {
        c.put(key(uid), STAMP, &block);
        wait_for("the eviction thread", || c.bytes() <= 40_000);
    }
    c.stop_evictor();
    evictor.join().unwrap();
    assert!(c.contains(key(100)));
    assert!(!c.contains(key(1)));
    assert!(c.stats.evicted.load(Relaxed) > 0);
    assert_eq!(c.stats.skipped.load(Relaxed), 0);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn writes_stop_past_the_slack_while_no_pass_runs_and_a_scan_restores_the_bound() {
    let dir = temp_dir("slack");
    let c = open(&dir, 40_000);
    let block = vec![7u8; 1000];
    for uid in 1..=100 {
        c.put(key(uid), STAMP, &block);
    }
    assert!(c.bytes() <= 40_000 / 100 * (100 + SLACK), "{}", c.bytes());
    assert!(c.stats.skipped.load(Relaxed) > 0);
    assert!(!c.contains(key(100)));
    c.scan();
    assert!(c.bytes() <= 40_000, "{}", c.bytes());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn dropping_a_folder_drops_its_entries() {
    let dir = temp_dir("drop");
    let c = open(&dir, 1 << 20);
    c.put(key(1), STAMP, b"hello");
    c.drop_folder(b"INBOX");
    assert!(c.get(key(1), STAMP, 1 << 20).is_none());
    c.save_totals();
    let t = Totals::load(&c.root);
    assert_eq!((t.writes, t.misses), (1, 1));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_truncated_an_extended_or_an_oversized_entry_is_removed() {
    let dir = temp_dir("lengths");
    let c = open(&dir, 1 << 20);
    let path = c.path(key(1));
    let whole = |c: &DiskCache| {
        c.put(key(1), STAMP, b"hello");
        fs::read(&path).unwrap()
    };
    // Shorter than its header says, shorter than a header, longer than its header says.
    let bytes = whole(&c);
    for damaged in [
        bytes[..bytes.len() - 1].to_vec(),
        bytes[..HEADER - 1].to_vec(),
        [&bytes[..], b"!"].concat(),
    ] {
        let _ = fs::remove_file(&path);
        fs::write(&path, &damaged).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            c.get(key(1), STAMP, 1 << 20).is_none(),
            "{} bytes",
            damaged.len()
        );
        assert!(!path.exists());
    }
    // Sound, but longer than a block may be: not served, removed.
    whole(&c);
    assert!(c.get(key(1), STAMP, 4).is_none());
    assert!(!path.exists());
    whole(&c);
    assert_eq!(c.get(key(1), STAMP, 5).as_deref(), Some(&b"hello"[..]));
    assert_eq!(c.stats.discarded.load(Relaxed), 4);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn totals_added_at_once_by_several_mounts_lose_no_count() {
    let dir = temp_dir("totals");
    let c = std::sync::Arc::new(open(&dir, 1 << 20));
    c.stats.hits.store(1, Relaxed);
    let adders: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    c.save_totals();
                }
            })
        })
        .collect();
    for a in adders {
        a.join().unwrap();
    }
    assert_eq!(Totals::load(&c.root).hits, 40);
    let _ = fs::remove_dir_all(&dir);
}
