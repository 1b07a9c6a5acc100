use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
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

/// The cache's writer thread, as a mount runs it.
fn start_writer(c: &Arc<DiskCache>) -> std::thread::JoinHandle<()> {
    let c = c.clone();
    std::thread::spawn(move || c.run_writer())
}

/// A cache with its writer running.
fn open_writing(dir: &Path, bound: u64) -> Arc<DiskCache> {
    let c = Arc::new(open(dir, bound));
    start_writer(&c);
    c
}

/// Queue a read's block and wait until it is written.
fn put(c: &DiskCache, key: DiskKey<'_>, data: &[u8]) {
    c.put(key, STAMP, Arc::from(data), Origin::Read);
    assert!(c.wait_written(Duration::from_secs(10)), "not written");
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
    let c = open_writing(&dir, 1 << 20);
    put(&c, key(1), b"hello");
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
    let c = open_writing(&dir, 1 << 20);
    put(&c, key(1), b"hello");
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
    let c = open_writing(&dir, 40_000);
    let evictor = {
        let c = c.clone();
        std::thread::spawn(move || c.run_evictor())
    };
    let block = vec![7u8; 1000];
    for uid in 1..=100 {
        put(&c, key(uid), &block);
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
    let c = open_writing(&dir, 40_000);
    let block = vec![7u8; 1000];
    for uid in 1..=100 {
        put(&c, key(uid), &block);
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
    let c = open_writing(&dir, 1 << 20);
    put(&c, key(1), b"hello");
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
    let c = open_writing(&dir, 1 << 20);
    let path = c.path(key(1));
    let whole = |c: &DiskCache| {
        put(c, key(1), b"hello");
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

fn folder_key(folder: &'static [u8], uid: u32) -> DiskKey<'static> {
    DiskKey { folder, ..key(uid) }
}

#[test]
fn a_full_queue_skips_a_reads_blocks_and_counts_them_and_queued_blocks_are_served() {
    let dir = temp_dir("full");
    // No writer yet: nothing leaves the queue.
    let c = Arc::new(open(&dir, 1 << 30));
    let extra = 10;
    for uid in 1..=QUEUE_JOBS as u32 + extra {
        c.put(key(uid), STAMP, Arc::from(&b"hello"[..]), Origin::Read);
    }
    assert_eq!(c.stats.queue_full.load(Relaxed), u64::from(extra));
    assert_eq!(c.stats.skipped.load(Relaxed), 0);
    // Queued, not on disk: found, served from the queue, and only under its stamp.
    assert!(!c.path(key(1)).exists());
    assert!(c.contains(key(1)));
    assert_eq!(
        c.get(key(1), STAMP, 1 << 20).as_deref(),
        Some(&b"hello"[..])
    );
    let other = Stamp {
        listed_size: 6,
        ..STAMP
    };
    assert!(c.get(key(2), other, 1 << 20).is_none());
    assert!(!c.contains(key(QUEUE_JOBS as u32 + 1)));
    start_writer(&c);
    assert!(c.wait_written(Duration::from_secs(60)));
    assert!(c.path(key(QUEUE_JOBS as u32)).exists());
    assert!(!c.path(key(QUEUE_JOBS as u32 + 1)).exists());
    assert_eq!(c.stats.writes.load(Relaxed), QUEUE_JOBS as u64);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn streams_and_the_prefetch_wait_for_room_in_a_full_queue_and_lose_no_block() {
    let dir = temp_dir("wait");
    let c = Arc::new(open(&dir, 1 << 30));
    for uid in 1..=QUEUE_JOBS as u32 {
        c.put(key(uid), STAMP, Arc::from(&b"hello"[..]), Origin::Read);
    }
    let prefetch = {
        let c = c.clone();
        std::thread::spawn(move || {
            for uid in 1..=100 {
                let k = folder_key(b"Archive", uid);
                let origin = [Origin::Stream, Origin::Prefetch][uid as usize % 2];
                c.put(k, STAMP, Arc::from(&b"kept"[..]), origin);
            }
        })
    };
    assert!(
        !prefetch.is_finished(),
        "the prefetch did not wait for room"
    );
    start_writer(&c);
    prefetch.join().unwrap();
    assert!(c.wait_written(Duration::from_secs(60)));
    assert_eq!(c.stats.queue_full.load(Relaxed), 0);
    for uid in 1..=100 {
        assert!(c.path(folder_key(b"Archive", uid)).exists(), "UID {uid}");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_dropped_folders_queued_blocks_are_never_written_nor_served() {
    let dir = temp_dir("dropq");
    let c = Arc::new(open(&dir, 1 << 30));
    for uid in 1..=50 {
        c.put(key(uid), STAMP, Arc::from(&b"old"[..]), Origin::Read);
        c.put(
            folder_key(b"Work", uid),
            STAMP,
            Arc::from(&b"w"[..]),
            Origin::Read,
        );
    }
    c.drop_folder(b"INBOX");
    assert!(c.get(key(1), STAMP, 1 << 20).is_none());
    assert!(!c.contains(key(1)));
    start_writer(&c);
    assert!(c.wait_written(Duration::from_secs(60)));
    assert!(!c.path(key(1)).parent().unwrap().exists());
    assert!(c.path(folder_key(b"Work", 50)).exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_drop_while_the_writer_writes_leaves_nothing_of_the_folder() {
    let dir = temp_dir("dropw");
    let c = open_writing(&dir, 1 << 30);
    let block: Arc<[u8]> = Arc::from(vec![1u8; 4096]);
    for round in 0..20 {
        for uid in 1..=200 {
            c.put(key(uid), STAMP, block.clone(), Origin::Read);
        }
        // The writer is in the middle of these (some written, one under way, more queued).
        wait_for("the writer to start", || {
            c.stats.writes.load(Relaxed) > round * 5
        });
        c.drop_folder(b"INBOX");
        assert!(c.wait_written(Duration::from_secs(60)));
        let gen = c.path(key(1));
        assert!(!gen.parent().unwrap().exists(), "round {round}");
        assert!(c.get(key(200), STAMP, 1 << 20).is_none());
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn unmount_writes_what_is_queued_and_nothing_is_queued_after() {
    let dir = temp_dir("drain");
    let c = open_writing(&dir, 1 << 30);
    for uid in 1..=500 {
        c.put(key(uid), STAMP, Arc::from(&b"hello"[..]), Origin::Read);
    }
    c.stop_writer();
    assert_eq!(c.stats.writes.load(Relaxed), 500);
    assert!(c.path(key(500)).exists());
    c.put(key(501), STAMP, Arc::from(&b"late"[..]), Origin::Prefetch);
    assert!(!c.contains(key(501)));
    assert_eq!(c.stats.queue_full.load(Relaxed), 1);
    let _ = fs::remove_dir_all(&dir);
}
