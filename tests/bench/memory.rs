//! Issue 17's memory goal, run by `scripts/bench_memory.sh` (ignored by `cargo test`): the
//! daemon's resident memory stays within `--cache-size` + 64 MiB whatever is read.
//!
//! `Bench` (10,000 messages, a tail up to 4 MB) and `Huge` (20 to 50 MB each) from
//! [`super::bench_seed`], implicit TLS on loopback, `--cache-size 128M` (BENCH_MEMORY_CACHE
//! sets another, in MiB). Each read pattern runs on a fresh mount with an empty disk cache
//! (so the bytes come from the server and the kernel holds none of them), then all of them
//! run again one after the other on one mount (what a long-lived mount accumulates). The
//! daemon's VmRSS is sampled every 20 ms from /proc and its VmHWM reset before each pattern
//! (`clear_refs` 5, as root); printed per pattern: the peak, and the steady RSS (after the
//! pattern, once the RSS stops moving), each against the bound. Nothing is asserted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{self, vm_rss_kb, Dovecot, Mount, MountOptions, Rng, Seed};
use crate::tools::{env_or, mount_listed, timed};

/// One read pattern: a name and a shell line over the mount's root (`$M`).
struct Pattern {
    name: &'static str,
    line: String,
}

fn patterns(seed: &Seed) -> Vec<Pattern> {
    // Random parts of the big messages (the Huge folder and Bench's biggest): dd with skip.
    let mut rng = Rng::new(17);
    let mut bigs: Vec<(String, usize)> = seed
        .folder("Huge")
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("Huge/{}.eml", i + 1), m.bytes.len()))
        .collect();
    let mut bench: Vec<(usize, usize)> = seed
        .folder("Bench")
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| (i + 1, m.bytes.len()))
        .collect();
    bench.sort_by_key(|&(_, len)| std::cmp::Reverse(len));
    bigs.extend(
        bench
            .iter()
            .take(20)
            .map(|&(uid, len)| (format!("Bench/{uid}.eml"), len)),
    );
    let mut dd = String::new();
    for _ in 0..300 {
        let (name, len) = &bigs[rng.below(bigs.len() as u64) as usize];
        let blocks = (len >> 16).max(1) as u64;
        dd.push_str(&format!(
            "dd if=\"$M/{name}\" of=/dev/null bs=64k count=4 skip={} status=none\n",
            rng.below(blocks)
        ));
    }
    let p = |name, line: &str| Pattern {
        name,
        line: line.to_string(),
    };
    vec![
        p("ls -l", "ls -l \"$M/Bench\" > /dev/null"),
        p("cat, name order", "cat \"$M\"/Bench/*.eml > /dev/null"),
        p(
            "grep -r",
            "grep -rl 'no such phrase here' \"$M/Bench\" > /dev/null; true",
        ),
        p(
            "ls | xargs -P4 cat",
            "cd \"$M/Bench\" && ls | xargs -P4 -n 200 cat > /dev/null",
        ),
        Pattern {
            name: "dd parts of big ones",
            line: dd,
        },
        p(
            ".search + cat",
            "cat \"$M/Bench/.search/LARGER 100000\"/* > /dev/null",
        ),
        p(
            ".parts of 500 + Huge",
            "cd \"$M/Bench/.parts\" && for u in $(seq 1 500); do cat $u/*; done > /dev/null; \
             cat \"$M\"/Huge/.parts/*/* > /dev/null",
        ),
        p(
            "two folders at once",
            "cat \"$M\"/Bench/*.eml > /dev/null & cat \"$M\"/Huge/*.eml > /dev/null; wait",
        ),
    ]
}

/// The daemon's memory, sampled from /proc while a pattern runs.
struct Sampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    max_kb: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        // Resets VmHWM to the current RSS (root only; the sampled peak stands in otherwise).
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let stop = Arc::new(AtomicBool::new(false));
        let max_kb = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max_kb.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(vm_rss_kb(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler {
            pid,
            stop,
            max_kb,
            thread: Some(thread),
        }
    }

    /// The peak since `start`, in kB.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max_kb
            .load(Ordering::Relaxed)
            .max(common::vm_hwm_kb(self.pid))
    }
}

/// The RSS once it stops moving (two samples 250 ms apart within 1 MiB), at most 5 s after
/// the pattern ended: background work (streams, the disk cache's writes) settles first.
fn steady_kb(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = vm_rss_kb(pid);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = vm_rss_kb(pid);
        if now.abs_diff(last) < 1024 || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// One pattern on `mount`: its time, peak and steady RSS in kB.
fn run_pattern(mount: &Mount, p: &Pattern) -> (Duration, u64, u64) {
    let sampler = Sampler::start(mount.pid());
    let line = format!("M='{}'\n{}", mount.path().display(), p.line);
    let took = timed(p.name, &line);
    let peak = sampler.finish();
    let steady = steady_kb(mount.pid());
    if env_or("BENCH_MEMORY_TRIM", 0) == 1 {
        // Diagnosis: what the block cache holds, and what the allocator gives back when
        // asked (the rest of the RSS is live or fragmented heap).
        let cache = mount.stat("cache_bytes").unwrap_or_default();
        let trim = format!(
            "gdb -p {} -batch -ex 'call (int)malloc_trim(0)'",
            mount.pid()
        );
        common::run(&["sh", "-c", &trim], Duration::from_secs(60));
        println!(
            "    cache_bytes {cache}, RSS after malloc_trim {} MiB",
            vm_rss_kb(mount.pid()) >> 10
        );
    }
    (took, peak, steady)
}

fn mount(d: &Dovecot, cache_mb: u64, home: &std::path::Path) -> Mount {
    mount_listed(
        MountOptions::new(d)
            .cache_home(home)
            .args(&["--cache-size", &format!("{cache_mb}M")]),
    )
}

#[test]
#[ignore = "benchmark: run scripts/bench_memory.sh"]
fn memory_bound() {
    let seed = super::bench_seed();
    let d = Dovecot::start(&seed);
    // Dovecot builds its indexes and the kernel caches the maildir before anything is measured.
    crate::tools::raw(&d, d.imaps_port, "Bench", "body");
    crate::tools::raw(&d, d.imaps_port, "Huge", "body");
    let cache_mb = env_or("BENCH_MEMORY_CACHE", 128);
    let bound_kb = (cache_mb + 64) << 10;
    let patterns = patterns(&seed);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n== daemon RSS, --cache-size {cache_mb}M, bound {} MiB (load {}) ==",
        bound_kb >> 10,
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "{:<26} {:>9} {:>10} {:>8} {:>11} {:>8}",
        "pattern", "time", "peak MiB", "/bound", "steady MiB", "/bound"
    );
    let row = |label: &str, (took, peak, steady): (Duration, u64, u64)| {
        println!(
            "{:<26} {:>7.2} s {:>10.0} {:>7.2}x {:>11.0} {:>7.2}x",
            label,
            took.as_secs_f64(),
            peak as f64 / 1024.0,
            peak as f64 / bound_kb as f64,
            steady as f64 / 1024.0,
            steady as f64 / bound_kb as f64,
        );
    };
    for p in &patterns {
        let home = common::unique_temp_dir("bench-memory");
        let m = mount(&d, cache_mb, &home);
        if p.name != "ls -l" {
            timed(
                "ls -l",
                &format!("ls -l '{}' > /dev/null", m.join("Bench").display()),
            );
        }
        row(p.name, run_pattern(&m, p));
        drop(m);
        let _ = std::fs::remove_dir_all(&home);
    }
    println!("-- all of them on one mount, in order --");
    let home = common::unique_temp_dir("bench-memory");
    let m = mount(&d, cache_mb, &home);
    let mut peak = 0;
    for p in &patterns {
        let figures = run_pattern(&m, p);
        peak = peak.max(figures.1);
        row(p.name, figures);
    }
    println!("peak over the whole mount: {:.0} MiB", peak as f64 / 1024.0);
    drop(m);
    let _ = std::fs::remove_dir_all(&home);
}
