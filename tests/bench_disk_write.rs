//! The disk body cache's writes alone (issue 17): BENCH_DISK_BLOCKS (10,000) blocks of about
//! BENCH_DISK_SIZE (75,000) bytes, as `scripts/bench_parallel.sh`'s folder holds, handed to
//! `DiskCache::put` as a stream hands them over, with the `disk-cache-write` and
//! `disk-cache-evict` threads running as a mount runs them; then the queue is drained and the
//! writer stopped. Prints the writer thread's CPU time (getrusage RUSAGE_THREAD), the process's,
//! and wall time, each per block; then reads every block back (each must come back whole) and
//! prints the reads' cost too. The cache lives under BENCH_DISK_DIR (the temporary directory),
//! on the filesystem a user's cache would be on.
//!
//! `cargo test --release --test bench_disk_write -- --ignored --nocapture`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imapfs::store::disk_cache::{DiskCache, DiskKey, DiskOptions, Origin, Stamp};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User and system CPU time of `who` (RUSAGE_SELF or RUSAGE_THREAD).
fn cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, v.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}

fn key(uid: u32) -> DiskKey<'static> {
    DiskKey {
        folder: b"INBOX",
        validity: 1,
        uid,
        block: 0,
    }
}

fn stamp(len: usize) -> Stamp {
    Stamp {
        listed_size: len as u64,
        internal_date: 1_700_000_000,
    }
}

#[test]
#[ignore]
fn bench_disk_write() {
    let blocks = env_or("BENCH_DISK_BLOCKS", 10_000) as u32;
    let size = env_or("BENCH_DISK_SIZE", 75_000) as usize;
    let base = std::env::var_os("BENCH_DISK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("imapfs-bench-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = Arc::new(
        DiskCache::open(&DiskOptions {
            dir: dir.clone(),
            account: "bench@127.0.0.1:993".into(),
            bound: 1 << 30,
        })
        .expect("cache opens"),
    );
    // A few distinct blocks of sizes around `size` (the bytes' content costs nothing here).
    let datas: Vec<Arc<[u8]>> = (0..16)
        .map(|i| {
            let len = size - size / 8 + i * size / 64;
            Arc::from((0..len).map(|b| (b * 31 + i) as u8).collect::<Vec<u8>>())
        })
        .collect();
    let writer = {
        let c = cache.clone();
        std::thread::spawn(move || {
            c.run_writer();
            cpu(libc::RUSAGE_THREAD)
        })
    };
    let evictor = {
        let c = cache.clone();
        std::thread::spawn(move || c.run_evictor())
    };
    let (cpu0, t0) = (cpu(libc::RUSAGE_SELF), Instant::now());
    for uid in 1..=blocks {
        let d = &datas[uid as usize % datas.len()];
        cache.put(key(uid), stamp(d.len()), d.clone(), Origin::Stream);
    }
    cache.stop_writer();
    let writer_cpu = writer.join().unwrap();
    let (cpu1, t1) = (cpu(libc::RUSAGE_SELF), Instant::now());
    cache.stop_evictor();
    evictor.join().unwrap();
    let written = cache
        .stats
        .writes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(written, u64::from(blocks), "every block written");
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(blocks);
    println!(
        "write {blocks} blocks of ~{size} B: writer thread CPU {:.1} us/block, process CPU \
         {:.1} us/block, wall {:.1} us/block ({:.2} s)",
        per(writer_cpu),
        per(cpu1 - cpu0),
        per(t1 - t0),
        (t1 - t0).as_secs_f64()
    );
    let (cpu2, t2) = (cpu(libc::RUSAGE_SELF), Instant::now());
    for uid in 1..=blocks {
        let d = &datas[uid as usize % datas.len()];
        let got = cache.get(key(uid), stamp(d.len()), 1 << 20);
        assert_eq!(got.as_deref(), Some(&d[..]), "UID {uid} comes back whole");
    }
    let (cpu3, t3) = (cpu(libc::RUSAGE_SELF), Instant::now());
    println!(
        "read back: process CPU {:.1} us/block, wall {:.1} us/block",
        per(cpu3 - cpu2),
        per(t3 - t2)
    );
    let t4 = Instant::now();
    cache.scan();
    println!(
        "eviction pass (listing, nothing to evict): {:.1} ms",
        t4.elapsed().as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
