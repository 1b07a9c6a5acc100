//! The memory of a big folder's cold listing (issue 17), run by
//! `scripts/bench_listing_memory.sh` (ignored by `cargo test`): a folder of
//! BENCH_LISTING_MESSAGES (300,000) messages written straight into the test Dovecot's maildir,
//! then, for each imapfs binary named in BENCH_LISTING_BINARIES (`:`-separated; the one this
//! tree built when unset) in turn, twice: a fresh mount with an empty cache, `ls` of the root
//! (the fixed part: the daemon's RSS before the folder is listed), then a cold `ls -l` of the
//! folder; printed are the daemon's peak RSS (VmHWM) and the bytes a message beyond the fixed
//! part. Several binaries in one run give before/after figures from the same session. Nothing
//! is asserted about memory here (tests/scale.rs bounds it at 100,000).
//!
//! BENCH_LISTING_WRAP names a program to run instead of each binary, the binary in its
//! environment as BENCH_LISTING_BINARY (a script running `heaptrack -o FILE
//! "$BENCH_LISTING_BINARY" "$@"`, say); then the RSS figures are the wrapper's.

mod common;
// Only `timed` and `env_or` are used here.
#[allow(dead_code)]
#[path = "bench/tools.rs"]
mod tools;

use std::path::PathBuf;
use std::time::Instant;

use common::{big_folder_message, fill_folder, vm_rss_kb, Dovecot, MountOptions, Seed};
use tools::{env_or, raw, timed, vm_hwm_kb};

#[test]
#[ignore = "benchmark: run scripts/bench_listing_memory.sh"]
fn bench_listing_memory() {
    let n = env_or("BENCH_LISTING_MESSAGES", 300_000) as u32;
    let binaries: Vec<PathBuf> = match std::env::var("BENCH_LISTING_BINARIES") {
        Ok(list) if !list.is_empty() => list.split(':').map(PathBuf::from).collect(),
        _ => vec![env!("CARGO_BIN_EXE_imapfs").into()],
    };
    let wrap = std::env::var("BENCH_LISTING_WRAP").ok();
    let mut seed = Seed::new();
    seed.folder_mut("Big");
    let d = Dovecot::start_with(&seed, "default_vsz_limit = 4G");
    let t = Instant::now();
    fill_folder(&d.mail_dir, "Big", n, &big_folder_message);
    println!("wrote {n} messages in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    raw(&d, d.imaps_port, "Big", "meta");
    println!("Dovecot indexed them in {:.1} s", t.elapsed().as_secs_f64());
    for round in 1..=env_or("BENCH_LISTING_ROUNDS", 2) {
        for binary in &binaries {
            let cache = common::unique_temp_dir("listing-cache");
            let mut options = MountOptions::new(&d).cache_home(&cache).quiet();
            options = match &wrap {
                Some(w) => options
                    .binary(w)
                    .env("BENCH_LISTING_BINARY", &binary.to_string_lossy()),
                None => options.binary(binary),
            };
            let mount = options.start().unwrap_or_else(|e| panic!("{e}"));
            timed(
                "ls root",
                &format!("ls '{}' > /dev/null", mount.path().display()),
            );
            let fixed = vm_rss_kb(mount.pid());
            let took = timed(
                "cold ls -l",
                &format!("ls -l '{}' > /dev/null", mount.join("Big").display()),
            );
            let peak = vm_hwm_kb(mount.pid());
            let after = vm_rss_kb(mount.pid());
            println!(
                "round {round} {}: {n} messages, cold ls -l {:.2} s, RSS before {:.0} MiB, \
                 peak {:.0} MiB, after {:.0} MiB, {:.0} bytes a message beyond the fixed part",
                binary.display(),
                took.as_secs_f64(),
                fixed as f64 / 1024.0,
                peak as f64 / 1024.0,
                after as f64 / 1024.0,
                (peak.saturating_sub(fixed) * 1024) as f64 / f64::from(n),
            );
            drop(mount);
            let _ = std::fs::remove_dir_all(&cache);
        }
    }
}
