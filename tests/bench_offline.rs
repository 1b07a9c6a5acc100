//! Offline figures (issue 16), run by `scripts/bench_offline.sh` (ignored by `cargo test`):
//! how long an offline start takes, what an offline `ls -l` and cached `cat` cost beside the
//! same online, how fast an uncached read fails, and how long the mount takes to come back
//! once the server answers. Prints figures only: nothing about time is asserted.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{run, unique_temp_dir, wait_for, Dovecot, Mount, MountOptions, Seed};

/// Messages in the folder read (`BENCH_OFFLINE_MESSAGES` overrides).
const MESSAGES: u32 = 2000;

fn seed(count: u32) -> Seed {
    let mut seed = Seed::new();
    let f = seed.folder_mut("INBOX");
    for i in 1..=count {
        let body = format!(
            "From: a@example.org\r\nSubject: bench {i}\r\nMessage-ID: <b{i}@example.org>\r\n\r\n{}",
            format!("line {i} of a message read offline\r\n").repeat(100)
        );
        f.push(
            body.into_bytes(),
            &[],
            &format!("bench {i}"),
            "a@example.org",
            &format!("<b{i}@example.org>"),
            1_709_629_920,
            1_709_629_957,
        );
    }
    seed
}

fn mount(dovecot: &Dovecot, cache: &Path) -> (Mount, Duration) {
    let started = Instant::now();
    let m = MountOptions::new(dovecot)
        .cache_home(cache)
        .args(&["--timeout", "10", "--cache-size", "512M"])
        .rust_log("warn")
        .start()
        .unwrap_or_else(|e| panic!("mount: {e}"));
    (m, started.elapsed())
}

/// Seconds a shell command takes through the mount.
fn timed(what: &str, script: &str) -> Duration {
    let started = Instant::now();
    let out = run(&["sh", "-c", script], Duration::from_secs(600));
    let took = started.elapsed();
    assert!(out.status.success(), "{what}: {out:?}");
    took
}

fn link(mount: &Mount) -> String {
    mount.stat("link").unwrap_or_default()
}

fn row(what: &str, d: Duration, extra: &str) {
    println!("{what:<58} {:>9.3} s  {extra}", d.as_secs_f64());
}

#[test]
#[ignore = "benchmark: run scripts/bench_offline.sh"]
fn bench_offline() {
    let count = std::env::var("BENCH_OFFLINE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    let seed = seed(count);
    let bytes: usize = seed
        .folder("INBOX")
        .messages
        .iter()
        .map(|m| m.bytes.len())
        .sum();
    let mb = bytes as f64 / 1e6;
    let mut dovecot = Dovecot::start(&seed);
    let cache = unique_temp_dir("bench-offline");
    println!("INBOX: {count} messages, {mb:.1} MB");

    // Online: the reference figures, and a saved copy.
    let (m, took) = mount(&dovecot, &cache);
    row("mount, online", took, "");
    let inbox = m.join("INBOX").to_string_lossy().into_owned();
    let ls = format!("ls -l '{inbox}' > /dev/null");
    let cat = format!("cat '{inbox}'/*.eml > /dev/null");
    row("ls -l, online, first listing", timed("ls", &ls), "");
    let cold = timed("cat", &cat);
    row(
        "cat *.eml, online, cold",
        cold,
        &format!("{:.0} MB/s", mb / cold.as_secs_f64()),
    );
    let warm = timed("cat", &cat);
    row(
        "cat *.eml, online, warm",
        warm,
        &format!("{:.0} MB/s", mb / warm.as_secs_f64()),
    );

    // The server goes away under the mount: cached reads go on.
    dovecot.kill_server();
    let lost = Instant::now();
    wait_for("link=offline", Duration::from_secs(30), || {
        (link(&m) == "offline").then_some(())
    });
    row("server killed -> link=offline", lost.elapsed(), "");
    row("ls -l, offline (held listing)", timed("ls", &ls), "");
    let cached = timed("cat", &cat);
    row(
        "cat *.eml, offline, cached",
        cached,
        &format!(
            "{:.0} MB/s, {:.2}x the online warm read",
            mb / cached.as_secs_f64(),
            cached.as_secs_f64() / warm.as_secs_f64()
        ),
    );
    drop(m);

    // An offline start from the saved copy.
    let (m, took) = mount(&dovecot, &cache);
    row(
        "mount, offline start (saved copy)",
        took,
        "goal: a few seconds",
    );
    let inbox = m.join("INBOX").to_string_lossy().into_owned();
    let ls = format!("ls -l '{inbox}' > /dev/null");
    row("ls -l, offline start (saved index)", timed("ls", &ls), "");
    let one = format!("! cat '{inbox}/1.eml' > /dev/null 2>&1");
    row(
        "cat of an uncached message fails (EIO)",
        timed("eio", &one),
        "",
    );

    // The server back: live and writable without a remount.
    dovecot.start_again();
    let back = Instant::now();
    wait_for("link=online", Duration::from_secs(60), || {
        (link(&m) == "online").then_some(())
    });
    row(
        "server back -> link=online (resynced)",
        back.elapsed(),
        "back-off included",
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&cache);
}
