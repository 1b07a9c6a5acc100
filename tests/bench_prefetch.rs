//! Prefetch figures (issues 15 and 16), run by `scripts/bench_prefetch.sh` (ignored by
//! `cargo test`): how long `prefetch=INBOX` takes to bring a folder onto disk beside a cold
//! `cat` of the same folder through a mount, `cat` of it offline afterwards, and how a reader
//! fares while a prefetch of another folder runs (it should yield). Prints figures only:
//! nothing about time is asserted.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{run, unique_temp_dir, wait_for, Dovecot, Mount, MountOptions, Seed};

/// Messages per folder (`BENCH_PREFETCH_MESSAGES` overrides).
const MESSAGES: u32 = 2000;

fn seed(count: u32) -> Seed {
    let mut seed = Seed::new();
    for folder in ["INBOX", "Other"] {
        let f = seed.folder_mut(folder);
        for i in 1..=count {
            let body = format!(
                "From: a@example.org\r\nSubject: {folder} {i}\r\nMessage-ID: <{folder}{i}@x>\r\n\r\n{}",
                format!("line {i} of {folder}, a message to keep for the train\r\n").repeat(80)
            );
            f.push(
                body.into_bytes(),
                &[],
                &format!("{folder} {i}"),
                "a@example.org",
                &format!("<{folder}{i}@x>"),
                1_709_629_920,
                1_709_629_957,
            );
        }
    }
    seed
}

fn mount(dovecot: &Dovecot, cache: &Path, args: &[&str]) -> Mount {
    let all: Vec<&str> = ["--timeout", "10"].iter().chain(args).copied().collect();
    let options = MountOptions::new(dovecot).cache_home(cache).args(&all);
    options
        .rust_log("warn")
        .start()
        .unwrap_or_else(|e| panic!("mount: {e}"))
}

fn number(m: &Mount, key: &str) -> u64 {
    m.stat(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Seconds `cat FOLDER/*` takes through the mount.
fn cat_all(m: &Mount, folder: &str) -> Duration {
    let script = format!("cat {}/* > /dev/null", m.join(folder).display());
    let started = Instant::now();
    let out = run(&["sh", "-c", &script], Duration::from_secs(600));
    assert!(out.status.success(), "cat {folder}: {out:?}");
    started.elapsed()
}

#[test]
#[ignore = "benchmark: scripts/bench_prefetch.sh"]
fn bench_prefetch() {
    let n = std::env::var("BENCH_PREFETCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    let mut dovecot = Dovecot::start(&seed(n));
    let cache = unique_temp_dir("bench-prefetch");
    let folder_bytes: u64 = dovecot
        .oracle_fetch_all("INBOX")
        .values()
        .map(|b| b.len() as u64)
        .sum();
    let mb = folder_bytes as f64 / 1e6;
    println!("folder: {n} messages, {mb:.1} MB");

    // A cold cat through a mount without prefetch (its own cache directory).
    let cold_cache = unique_temp_dir("bench-prefetch-cold");
    let cold = mount(&dovecot, &cold_cache, &[]);
    let cold_cat = cat_all(&cold, "INBOX");
    cold.unmount();
    let _ = std::fs::remove_dir_all(&cold_cache);
    println!(
        "cold cat INBOX/* (no prefetch):     {:7.2} s  {:6.1} MB/s",
        cold_cat.as_secs_f64(),
        mb / cold_cat.as_secs_f64()
    );

    let started = Instant::now();
    let m = mount(&dovecot, &cache, &["-o", "prefetch=INBOX"]);
    wait_for("prefetch=done", Duration::from_secs(600), || {
        (m.stat("prefetch").as_deref() == Some("done")).then_some(())
    });
    let took = started.elapsed();
    println!(
        "prefetch=INBOX, mount to done:      {:7.2} s  {:6.1} MB/s  prefetch_bytes {}  bytes_today {}",
        took.as_secs_f64(),
        mb / took.as_secs_f64(),
        number(&m, "prefetch_bytes"),
        number(&m, "bytes_today")
    );
    m.unmount();

    dovecot.kill_server();
    let offline = mount(&dovecot, &cache, &[]);
    let offline_cat = cat_all(&offline, "INBOX");
    println!(
        "offline cat INBOX/* after it:       {:7.2} s  {:6.1} MB/s",
        offline_cat.as_secs_f64(),
        mb / offline_cat.as_secs_f64()
    );
    offline.unmount();
    dovecot.start_again();

    // A reader of Other while INBOX is prefetched (fresh cache: INBOX is fetched again).
    let _ = std::fs::remove_dir_all(&cache);
    let both = mount(&dovecot, &cache, &["-o", "prefetch=INBOX"]);
    wait_for("prefetch running", Duration::from_secs(60), || {
        (number(&both, "prefetch_total") > 0).then_some(())
    });
    let before = number(&both, "prefetch_done");
    let reader = cat_all(&both, "Other");
    let during = number(&both, "prefetch_done") - before;
    println!(
        "cat Other/* while INBOX prefetches: {:7.2} s  {:6.1} MB/s  ({during} INBOX messages \
         prefetched meanwhile, {before} before)",
        reader.as_secs_f64(),
        mb / reader.as_secs_f64()
    );
    println!(
        "ratios: prefetch / cold cat {:.2}; cat during prefetch / cold cat {:.2}",
        took.as_secs_f64() / cold_cat.as_secs_f64(),
        reader.as_secs_f64() / cold_cat.as_secs_f64()
    );
    both.unmount();
    let _ = std::fs::remove_dir_all(&cache);
}
