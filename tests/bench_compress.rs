//! COMPRESS=DEFLATE on a slow link (issue 15): a cold `cat` of 10,000 text messages through
//! a mount, with compression and without, beside the raw client (uncompressed, the cheapest
//! possible IMAP client) and beside the link's own limit for the uncompressed bytes, all
//! through one proxy with a 20 ms round trip and 50 Mbit/s each way (BENCH_RTT_MS,
//! BENCH_MBIT, BENCH_MESSAGES). Dovecot with its imap_zlib plugin, implicit TLS. The goal:
//! imapfs with compression faster than the raw client's wire limit.
//!
//! Run by scripts/bench_compress.sh (`cargo test --release --test bench_compress -- --ignored
//! --nocapture`). Prints figures and ratios; asserts only that every mount read everything.

mod common;
// Only the proxy, the raw client and the timer are used here.
#[allow(dead_code, unused_imports)]
#[path = "bench/tools.rs"]
mod tools;

use std::time::Duration;

use common::{fill_folder, Dovecot, MountOptions, Seed};
use tools::{env_or, mount_listed, raw, timed, DelayProxy};

/// Dovecot offering COMPRESS=DEFLATE (as tests/compress.rs).
const ZLIB: &str = "mail_plugins = $mail_plugins zlib\n\
                    protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n";

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "meeting", "report",
    "budget", "project", "release", "server", "invoice", "schedule", "customer", "review",
    "please", "thanks", "attached", "question", "tomorrow", "monday", "update", "quarter",
    "numbers", "draft", "contract", "team", "office", "travel", "agenda", "notes",
];

/// A text message like a person's: headers a server adds, then prose of 1-12 KB.
fn text_message(uid: u32) -> (Vec<u8>, i64) {
    let mut m = format!(
        "Return-Path: <sender{s}@example.org>\r\n\
         Received: from mx{r}.example.org (mx{r}.example.org [192.0.2.{r}])\r\n\
         \tby mail.example.net with ESMTPS id {uid:08x}\r\n\
         \tfor <me@example.net>; Tue, 14 Nov 2023 22:13:20 +0000\r\n\
         From: Sender {s} <sender{s}@example.org>\r\nTo: me@example.net\r\n\
         Subject: project update {uid}\r\nMessage-ID: <m{uid}@example.org>\r\n\
         Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n",
        s = uid % 97,
        r = uid % 250,
    )
    .into_bytes();
    let mut x = uid.wrapping_mul(2_654_435_761) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let target = 1_000 + (next() % 11_000) as usize;
    let mut line = 0;
    while m.len() < target {
        let w = WORDS[next() as usize % WORDS.len()];
        m.extend_from_slice(w.as_bytes());
        line += w.len() + 1;
        if line > 68 {
            m.extend_from_slice(b"\r\n");
            line = 0;
        } else {
            m.push(b' ');
        }
    }
    m.extend_from_slice(b"\r\n");
    (m, 1_700_000_000 + i64::from(uid))
}

/// A cold `cat` of every message through a fresh mount (fresh cache: nothing on disk) with
/// `args`: its time, and the server's bytes through the proxy.
fn cold_cat(d: &Dovecot, proxy: &DelayProxy, args: &[&str]) -> (Duration, u64, String) {
    let cache = common::unique_temp_dir("bench-compress-cache");
    let url = format!("imaps://{}@127.0.0.1:{}", d.user, proxy.port);
    let mount = mount_listed(MountOptions::new(d).url(url).cache_home(&cache).args(args));
    let dir = mount.join("Text");
    timed("ls", &format!("ls '{}' > /dev/null", dir.display()));
    let before = proxy.bytes_down();
    let took = timed(
        "cat",
        &format!("cat '{}'/*.eml | wc -c > /dev/null", dir.display()),
    );
    let down = proxy.bytes_down() - before;
    let stat = |key: &str| mount.stat(key).unwrap_or_else(|| "?".into());
    let line = format!(
        "compress={} bytes_on_wire={} bytes_saved={}",
        stat("compress"),
        stat("bytes_on_wire"),
        stat("bytes_saved"),
    );
    drop(mount);
    let _ = std::fs::remove_dir_all(&cache);
    (took, down, line)
}

#[test]
#[ignore = "benchmark: run scripts/bench_compress.sh"]
fn bench_compress() {
    let n = env_or("BENCH_MESSAGES", 10_000) as u32;
    let rtt = env_or("BENCH_RTT_MS", 20);
    let mbit = env_or("BENCH_MBIT", 50);
    let rate = mbit * 1_000_000 / 8;
    let mut seed = Seed::new();
    seed.folder_mut("Text");
    let d = Dovecot::start_with(&seed, ZLIB);
    fill_folder(&d.mail_dir, "Text", n, &text_message);
    let total: u64 = (1..=n).map(|u| text_message(u).0.len() as u64).sum();
    // Dovecot indexes the folder once, untimed, and the kernel caches its files.
    raw(&d, d.imaps_port, "Text", "body");
    let proxy = DelayProxy::limited(d.imaps_port, Duration::from_millis(rtt / 2), rate);

    let before = proxy.bytes_down();
    let raw_time = raw(&d, proxy.port, "Text", "body");
    let raw_down = proxy.bytes_down() - before;
    let (on, on_down, on_stats) = cold_cat(&d, &proxy, &[]);
    let (off, off_down, off_stats) = cold_cat(&d, &proxy, &["-o", "compress=no"]);
    let wire_limit = Duration::from_secs_f64(total as f64 / rate as f64);

    println!(
        "{n} text messages, {:.1} MB; link {rtt} ms round trip, {mbit} Mbit/s; TLS",
        total as f64 / 1e6
    );
    println!(
        "  wire limit of the uncompressed bytes: {:.2} s",
        wire_limit.as_secs_f64()
    );
    println!(
        "  raw client (uncompressed):   {:.2} s, {:.1} MB down",
        raw_time.as_secs_f64(),
        raw_down as f64 / 1e6
    );
    println!(
        "  imapfs, compress=no:         {:.2} s, {:.1} MB down ({off_stats})",
        off.as_secs_f64(),
        off_down as f64 / 1e6
    );
    println!(
        "  imapfs, COMPRESS=DEFLATE:    {:.2} s, {:.1} MB down ({on_stats})",
        on.as_secs_f64(),
        on_down as f64 / 1e6
    );
    println!(
        "  ratios: compressed / wire limit {:.2}x (goal < 1), compressed / raw {:.2}x, \
         bytes down compressed / raw {:.2}",
        on.as_secs_f64() / wire_limit.as_secs_f64(),
        on.as_secs_f64() / raw_time.as_secs_f64(),
        on_down as f64 / raw_down.max(1) as f64
    );
    assert!(on_stats.starts_with("compress=on"), "{on_stats}");
    assert!(off_stats.starts_with("compress=off"), "{off_stats}");
}
