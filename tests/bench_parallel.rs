//! Benchmark of parallel readers (issue 17), run by `scripts/bench_parallel.sh` (ignored by
//! `cargo test`): it prints figures and ratios and asserts nothing about time.
//!
//! A private Dovecot (implicit TLS, loopback) holds `Par`, 10,000 messages of the realistic
//! size mix of tests/bench.rs (about 75 KB on average), and `P1` to `P8`, the same messages
//! split in eight folders. The folders are written straight into Dovecot's maildir
//! ([`common::fill_folder`]) and indexed by Dovecot once, untimed. Each round measures:
//!
//! - one reader, `ls | xargs cat` in `Par` on a fresh mount (what the others are held to);
//! - `ls | xargs -P4 -n 200 cat` in `Par` on a fresh mount (four readers of one folder,
//!   each at its own place in file name order);
//! - eight readers over eight folders (`cat *.eml` in each of `P1` to `P8` at once) on a
//!   fresh mount;
//! - beside each, the raw client (tests/bench/tools.rs) fetching the same bytes on one
//!   connection and on four (the UID range split in four, or two folders per connection).
//!
//! The mount runs with its default `--connections` (4). Knobs: BENCH_PARALLEL_MESSAGES
//! (10000), BENCH_PARALLEL_RUNS (2), BENCH_PARALLEL_BEFORE (the path of another imapfs
//! binary, e.g. one built from an older commit, measured in the same rounds), BENCH_PERF (a
//! directory: each imapfs figure is also a `perf record` profile of the daemon there),
//! BENCH_PARALLEL_ARGS (extra mount options for both builds, e.g. `--disk-cache-size 0`).

mod common;
// Not every helper is used by every benchmark binary.
#[allow(dead_code, unused_imports)]
#[path = "bench/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{fill_folder, Dovecot, MountOptions, Rng, Seed};
use tools::{env_or, message, mount_listed, profiled, raw_parallel, realistic_size};

/// Folders of the second workload, one reader each.
const FOLDERS: u32 = 8;

#[test]
#[ignore = "benchmark: run scripts/bench_parallel.sh"]
fn bench_parallel() {
    let n = env_or("BENCH_PARALLEL_MESSAGES", 10_000) as u32;
    let per = n / FOLDERS;
    let folders: Vec<String> = (1..=FOLDERS).map(|i| format!("P{i}")).collect();
    let mut seed = Seed::new();
    seed.folder_mut("Par");
    for f in &folders {
        seed.folder_mut(f);
    }
    // A mount just dropped may still count against Dovecot's 10 connections per user and
    // address while the raw client opens four.
    let d = Dovecot::start_with(
        &seed,
        "protocol imap {\n  mail_max_userip_connections = 100\n}\n",
    );
    let mut rng = Rng::new(7);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let filler: Vec<u8> = (0..4 << 20)
        .map(|_| alphabet[rng.below(64) as usize])
        .collect();
    let generate = |uid: u32| {
        let mut rng = Rng::new(u64::from(uid).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let len = realistic_size(&mut rng);
        let body = message(uid as usize, len, &filler, &mut rng);
        (body, 1_700_000_000 + i64::from(uid))
    };
    fill_folder(&d.mail_dir, "Par", n, &generate);
    for (i, f) in (0u32..).zip(&folders) {
        fill_folder(&d.mail_dir, f, per, &|uid| generate(i * per + uid));
    }
    let bytes: u64 = (1..=n).map(|u| generate(u).0.len() as u64).sum();
    // Dovecot indexes every folder once, and the kernel caches its files, untimed.
    let all: Vec<(&str, &str)> = folders.iter().map(|f| (f.as_str(), "1:*")).collect();
    raw_parallel(&d, d.imaps_port, "body", &[vec![("Par", "1:*")]]);
    raw_parallel(&d, d.imaps_port, "body", std::slice::from_ref(&all));

    let mut binaries: Vec<(String, Option<PathBuf>)> = vec![("imapfs".into(), None)];
    if let Some(before) = std::env::var_os("BENCH_PARALLEL_BEFORE") {
        binaries.push(("before".into(), Some(before.into())));
    }
    // The UID range of `Par` in four, and the eight folders two to a connection.
    let q = n / 4;
    let quarters: Vec<String> = (0..4)
        .map(|i| match i {
            3 => format!("{}:*", 3 * q + 1),
            _ => format!("{}:{}", i * q + 1, (i + 1) * q),
        })
        .collect();
    let par4: Vec<Vec<(&str, &str)>> = quarters.iter().map(|r| vec![("Par", r.as_str())]).collect();
    let folders4: Vec<Vec<(&str, &str)>> = all.chunks(2).map(<[_]>::to_vec).collect();
    println!(
        "\n== parallel readers: {n} messages, {:.0} MB, loopback, implicit TLS ==",
        bytes as f64 / 1e6
    );
    for round in 1..=env_or("BENCH_PARALLEL_RUNS", 2) {
        let load = loadavg();
        let raw1_one = raw_parallel(&d, d.imaps_port, "body", &[vec![("Par", "1:*")]]);
        let raw4_one = raw_parallel(&d, d.imaps_port, "body", &par4);
        let raw1_eight = raw_parallel(&d, d.imaps_port, "body", std::slice::from_ref(&all));
        let raw4_eight = raw_parallel(&d, d.imaps_port, "body", &folders4);
        println!("\n-- round {round}, load average before: {load} --");
        let s = |d: Duration| d.as_secs_f64();
        let mb_s = |d: Duration| bytes as f64 / 1e6 / s(d);
        println!(
            "raw client, Par: 1 connection {:.2} s ({:.0} MB/s), 4 connections {:.2} s ({:.0} MB/s)",
            s(raw1_one),
            mb_s(raw1_one),
            s(raw4_one),
            mb_s(raw4_one)
        );
        println!(
            "raw client, P1-P8: 1 connection {:.2} s ({:.0} MB/s), 4 connections {:.2} s ({:.0} MB/s)",
            s(raw1_eight),
            mb_s(raw1_eight),
            s(raw4_eight),
            mb_s(raw4_eight)
        );
        // Throughput ratios: above 1 is faster than the raw client.
        let row = |what: &str, t: Duration, raw1: Duration, raw4: Duration, streams: &str| {
            println!(
                "{what:<40} {:>6.2} s {:>5.0} MB/s  x raw4 {:.2}  x raw1 {:.2}  streams {streams}",
                s(t),
                mb_s(t),
                s(raw4) / s(t),
                s(raw1) / s(t),
            );
        };
        for (label, binary) in &binaries {
            let (t, streams) = on_fresh_mount(&d, binary, &format!("{label} one reader"), |m| {
                format!(
                    "cd '{}' && LC_ALL=C ls | xargs cat > /dev/null",
                    m.join("Par").display()
                )
            });
            row(
                &format!("{label}: one reader, ls | xargs cat"),
                t,
                raw1_one,
                raw4_one,
                &streams,
            );
            let (t, streams) = on_fresh_mount(&d, binary, &format!("{label} xargs"), |m| {
                format!(
                    "cd '{}' && LC_ALL=C ls | xargs -P4 -n 200 cat > /dev/null",
                    m.join("Par").display()
                )
            });
            row(
                &format!("{label}: ls | xargs -P4 -n 200 cat"),
                t,
                raw1_one,
                raw4_one,
                &streams,
            );
            let (t, streams) = on_fresh_mount(&d, binary, &format!("{label} 8 folders"), |m| {
                let dirs: Vec<String> = folders
                    .iter()
                    .map(|f| format!("'{}'", m.join(f).display()))
                    .collect();
                format!(
                    "pids=; for f in {}; do (cd \"$f\" && cat *.eml > /dev/null) & pids=\"$pids $!\"; \
                     done; for p in $pids; do wait $p || exit 1; done",
                    dirs.join(" ")
                )
            });
            row(
                &format!("{label}: 8 readers over 8 folders"),
                t,
                raw1_eight,
                raw4_eight,
                &streams,
            );
        }
        println!("load average after: {}", loadavg());
    }
}

/// Time the shell line `line(mountpoint)` on a fresh mount (root listed first) of `binary`
/// (this build's when `None`), with an empty cache; also the streams the mount started.
fn on_fresh_mount(
    d: &Dovecot,
    binary: &Option<PathBuf>,
    label: &str,
    line: impl Fn(&common::Mount) -> String,
) -> (Duration, String) {
    let cache = common::unique_temp_dir("parallel-cache");
    let mut options = MountOptions::new(d).cache_home(&cache);
    if let Some(b) = binary {
        options = options.binary(b);
    }
    // Extra mount options for both builds, e.g. `--disk-cache-size 0`.
    let extra = std::env::var("BENCH_PARALLEL_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    // The blocks fetched again, each a line (counted below), and nothing else.
    options = options
        .args(&extra)
        .env("RUST_LOG", "warn,imapfs::store::bodies=debug");
    let mount = mount_listed(options);
    let took = profiled(label, mount.pid(), &line(&mount));
    // A stream's bytes join `bytes_read` when its thread ends, which may be just after the
    // readers exit (a build without the stat: nothing to wait for).
    common::wait_for("the streams to end", Duration::from_secs(10), || {
        matches!(mount.stat("streams_running").as_deref(), None | Some("0")).then_some(())
    });
    // What came from the server (more than the folder's bytes: blocks fetched again).
    let read_mb = mount
        .stat("bytes_read")
        .and_then(|b| b.parse::<u64>().ok())
        .map_or("?".into(), |b| (b >> 20).to_string());
    let stat = |key| mount.stat(key).unwrap_or_else(|| "?".into());
    let streams = format!(
        "{} (at once: {}), from the server {read_mb} MiB, blocks fetched again {} ({} of them \
         still in memory)",
        stat("streams"),
        stat("streams_at_once"),
        stat("blocks_refetched"),
        stat("blocks_refetched_cached"),
    );
    // Who fetched the blocks fetched again, and who first (imapfs's debug log).
    let mut who: std::collections::BTreeMap<String, u32> = Default::default();
    for line in mount.log().lines() {
        if let Some((_, what)) = line.split_once(" fetched again by ") {
            *who.entry(what.to_string()).or_default() += 1;
        }
    }
    for (what, count) in who {
        println!("  {label}: {count} fetched again by {what}");
    }
    drop(mount);
    let _ = std::fs::remove_dir_all(&cache);
    (took, streams)
}

fn loadavg() -> String {
    std::fs::read_to_string(Path::new("/proc/loadavg"))
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
