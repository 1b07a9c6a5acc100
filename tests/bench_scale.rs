//! Benchmark at scale, run by `scripts/bench_scale.sh` (ignored by `cargo test`): a folder of
//! 100,000 messages (and 1,000,000 with `BENCH_SCALE_MILLION=1`) listed through imapfs and
//! through the FUSE floor (tests/bench/floor.rs: the same names, sizes, times and bytes from
//! memory, imapfs's own session settings), over implicit TLS on loopback. Every figure is
//! printed beside the floor's with the ratio and the goal (issue 17); nothing about time is
//! asserted.
//!
//! The folders are written straight into the test Dovecot's maildir ([`common::fill_folder`])
//! and indexed by Dovecot once, untimed, before anything is measured. Then, per folder size:
//!
//! - cold `ls -l` (fresh mount, empty index cache) against floor + the raw metadata fetch;
//! - warm `ls -l`, and `find -printf '%s %T@ %f'` (a listing without xattr probes);
//! - remount listing: `ls -l` on a new mount from the saved index;
//! - the second `cat` of a 10,000-message folder (`Cat`), after a first one;
//! - peak RSS of imapfs and of the floor (the benchmark process);
//! - each "ask the kernel for less" experiment on the floor, one knob at a time, with the
//!   requests that still reached the filesystem.
//!
//! Then `.search` (issue 17): `ls` of a result directory matching half the folder
//! (`LARGER 1100`) and one matching 4 messages (`SMALLER 422`), each beside a raw client's
//! EXAMINE + `UID SEARCH` of the same criteria over TLS, with `RETURN (ALL)` (ESEARCH) and
//! without; and the refresh of the unchanged folder (`-o idle=no,dir_ttl=0`, a `stat` each):
//! its round trips and the daemon's CPU, the remount's first one (saved index) apart.
//!
//! Knobs: BENCH_SCALE_MESSAGES (100000), BENCH_SCALE_MILLION (1 adds the 1,000,000 run),
//! BENCH_PERF (a directory: each imapfs figure is also a `perf record` profile there),
//! BENCH_SCALE_KNOBS (0 skips the floor experiments), BENCH_SCALE_LISTING (0 skips the
//! listing and `cat` figures), BENCH_SCALE_RDPLUS (1: the `FUSE_READDIRPLUS_AUTO` floor
//! experiment, [`bench_readdirplus_auto`], first), BENCH_RTT_MS (20: cold and remount
//! listings behind a delay proxy; 0 skips them).

mod common;
#[path = "bench/floor.rs"]
mod floor;
// `bytes_down` is for the compression benchmark.
#[allow(dead_code)]
#[path = "bench/tools.rs"]
mod tools;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use common::{fill_folder, Dovecot, MountOptions, Seed};
use floor::{Content, Floor, Knobs};
use tools::{
    cpu_ms, env_or, mount_listed, profiled, raw, raw_search, timed, vm_hwm_kb, DelayProxy,
};

/// Messages of the `Cat` folder (the second-`cat` figure).
const CAT_MESSAGES: u32 = 10_000;

#[test]
#[ignore = "benchmark: run scripts/bench_scale.sh"]
fn bench_scale() {
    let mut sizes = vec![("Scale", env_or("BENCH_SCALE_MESSAGES", 100_000) as u32)];
    if env_or("BENCH_SCALE_MILLION", 0) == 1 {
        sizes.push(("Million", 1_000_000));
    }
    let mut seed = Seed::new();
    seed.folder_mut("Cat");
    for (name, _) in &sizes {
        seed.folder_mut(name);
    }
    // Dovecot's imap processes are limited to 256 MB by default: too little for a SELECT of
    // 1,000,000 messages ("block_alloc: Out of memory").
    let d = Dovecot::start_with(&seed, "default_vsz_limit = 4G");
    let t = Instant::now();
    fill_folder(&d.mail_dir, "Cat", CAT_MESSAGES, &scale_message);
    for &(name, n) in &sizes {
        fill_folder(&d.mail_dir, name, n, &scale_message);
    }
    println!("wrote the maildirs in {:.1} s", t.elapsed().as_secs_f64());
    // Dovecot indexes every folder once, and the kernel caches its files, untimed.
    let t = Instant::now();
    raw(&d, d.imaps_port, "Cat", "body");
    for &(name, _) in &sizes {
        raw(&d, d.imaps_port, name, "meta");
    }
    println!("Dovecot indexed them in {:.1} s", t.elapsed().as_secs_f64());
    if env_or("BENCH_SCALE_KNOBS", 1) == 1 {
        knob_experiments(sizes[0].1);
    }
    for &(name, n) in &sizes {
        if env_or("BENCH_SCALE_LISTING", 1) == 1 {
            measure(&d, name, n);
        }
        measure_search(&d, name, n);
        measure_refresh(&d, name, n);
    }
    let rtt = env_or("BENCH_RTT_MS", 20);
    if rtt > 0 {
        let proxy = DelayProxy::start(d.imaps_port, Duration::from_millis(rtt / 2));
        for &(name, n) in &sizes {
            measure_delayed(&d, name, n, proxy.port, rtt);
        }
    }
}

/// Message `uid` of a generated folder: CRLF bytes of 0.6 to 2 KB, and its INTERNALDATE.
fn scale_message(uid: u32) -> (Vec<u8>, i64) {
    let mut m = format!(
        "From: a{uid}@example.org\r\nTo: b@example.org\r\nSubject: scale {uid}\r\n\
         Message-ID: <s{uid}@example.org>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\n"
    )
    .into_bytes();
    let lines = 4 + (uid.wrapping_mul(7919) % 20) as usize;
    let mut x = uid.wrapping_mul(2_654_435_761) | 1;
    for _ in 0..lines {
        for _ in 0..70 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            m.push(b'a' + (x % 26) as u8);
        }
        m.extend_from_slice(b"\r\n");
    }
    (m, 1_700_000_000 + i64::from(uid))
}

/// A generated folder as the floor serves it: sizes kept, bytes made again on each read.
struct Generated {
    sizes: Vec<u32>,
}

impl Generated {
    fn boxed(n: u32) -> Box<dyn Content> {
        let sizes = (1..=n)
            .map(|uid| scale_message(uid).0.len() as u32)
            .collect();
        Box::new(Generated { sizes })
    }
}

impl Content for Generated {
    fn len(&self) -> u32 {
        self.sizes.len() as u32
    }
    fn size(&self, uid: u32) -> u64 {
        u64::from(self.sizes[uid as usize - 1])
    }
    fn time(&self, uid: u32) -> i64 {
        1_700_000_000 + i64::from(uid)
    }
    fn bytes(&self, uid: u32) -> Cow<'_, [u8]> {
        Cow::Owned(scale_message(uid).0)
    }
}

fn floor_of(name: &str, n: u32, knobs: Knobs) -> Floor {
    Floor::mount(
        vec![
            (name.to_string(), Generated::boxed(n)),
            ("Cat".to_string(), Generated::boxed(CAT_MESSAGES)),
        ],
        knobs,
    )
}

fn ls_l(dir: &std::path::Path) -> String {
    format!("LC_ALL=C ls -l '{}' > /dev/null", dir.display())
}

fn find_printf(dir: &std::path::Path) -> String {
    format!(
        "LC_ALL=C find '{}' -printf '%s %T@ %f\\n' > /dev/null",
        dir.display()
    )
}

fn cat_all(dir: &std::path::Path) -> String {
    // printf is a shell builtin: no argument list limit; xargs batches the cat calls.
    format!(
        "cd '{}' && LC_ALL=C printf '%s\\0' *.eml | xargs -0 cat > /dev/null",
        dir.display()
    )
}

/// The figures of one listing-sized folder, imapfs and floor.
#[derive(Default)]
struct Figures {
    cold: Duration,
    warm: Duration,
    find: Duration,
    remount: Duration,
    cat1: Duration,
    cat2: Duration,
    rss_kb: u64,
}

fn measure_floor(name: &str, n: u32) -> Figures {
    let mounted = floor_of(name, n, Knobs::IMAPFS);
    let dir = mounted.path().join(name);
    let cat = mounted.path().join("Cat");
    let mut f = Figures {
        cold: timed("floor ls -l", &ls_l(&dir)),
        warm: timed("floor ls -l", &ls_l(&dir)),
        find: timed("floor find", &find_printf(&dir)),
        ..Figures::default()
    };
    timed("floor ls -l Cat", &ls_l(&cat));
    f.cat1 = timed("floor cat", &cat_all(&cat));
    f.cat2 = timed("floor cat", &cat_all(&cat));
    drop(mounted);
    // The floor's remount listing is its cold listing: it has nothing to load.
    let mounted = floor_of(name, n, Knobs::IMAPFS);
    f.remount = timed("floor ls -l", &ls_l(&mounted.path().join(name)));
    f.rss_kb = vm_hwm_kb(std::process::id());
    f
}

fn measure_imapfs(d: &Dovecot, name: &str) -> Figures {
    let cache = common::unique_temp_dir("scale-cache");
    let start = || mount_listed(MountOptions::new(d).cache_home(&cache));
    let mount = start();
    let dir = mount.join(name);
    let cat = mount.join("Cat");
    let mut f = Figures {
        cold: profiled("cold ls -l", mount.pid(), &ls_l(&dir)),
        ..Figures::default()
    };
    let cold_rss = vm_hwm_kb(mount.pid());
    f.warm = profiled("warm ls -l", mount.pid(), &ls_l(&dir));
    f.find = profiled("find", mount.pid(), &find_printf(&dir));
    timed("ls -l Cat", &ls_l(&cat));
    f.cat1 = profiled("first cat", mount.pid(), &cat_all(&cat));
    f.cat2 = profiled("second cat", mount.pid(), &cat_all(&cat));
    f.rss_kb = vm_hwm_kb(mount.pid());
    println!(
        "imapfs peak RSS after the cold listing {:.0} MiB",
        cold_rss as f64 / 1024.0
    );
    drop(mount);
    let mount = start();
    f.remount = profiled("remount ls -l", mount.pid(), &ls_l(&mount.join(name)));
    drop(mount);
    let _ = std::fs::remove_dir_all(&cache);
    f
}

fn measure(d: &Dovecot, name: &str, n: u32) {
    let raw_meta = raw(d, d.imaps_port, name, "meta");
    let fl = measure_floor(name, n);
    let im = measure_imapfs(d, name);
    println!("\n== {n} messages ({name}), loopback, implicit TLS ==");
    println!(
        "{:<44} {:>9} {:>9} {:>7} {:>6}",
        "", "imapfs", "floor", "ratio", "goal"
    );
    let s = |d: Duration| d.as_secs_f64();
    let row = |what: &str, imapfs: Duration, floor: Duration, goal: Option<f64>| {
        println!(
            "{what:<44} {:>7.3} s {:>7.3} s {:>6.2}x {:>6}",
            s(imapfs),
            s(floor),
            s(imapfs) / s(floor).max(1e-9),
            goal.map_or("-".into(), |g| format!("{g:.1}x"))
        );
    };
    row(
        "ls -l, cold (floor column: floor + raw fetch)",
        im.cold,
        fl.cold + raw_meta,
        Some(1.3),
    );
    row("ls -l, warm", im.warm, fl.warm, Some(1.3));
    row("find -printf '%s %T@ %f'", im.find, fl.find, Some(1.3));
    row(
        "ls -l, remount (saved index)",
        im.remount,
        fl.remount,
        Some(1.2),
    );
    row("cat of 10,000 (Cat), first", im.cat1, fl.cat1, None);
    row("cat of 10,000 (Cat), second", im.cat2, fl.cat2, Some(1.2));
    println!(
        "raw metadata fetch {:.3} s; floor ls -l cold alone {:.3} s",
        s(raw_meta),
        s(fl.cold)
    );
    println!(
        "peak RSS: imapfs {:.0} MiB, floor (benchmark process) {:.0} MiB",
        im.rss_kb as f64 / 1024.0,
        fl.rss_kb as f64 / 1024.0
    );
}

/// "Ask the kernel for less", measured on the floor one knob at a time: the figure each knob
/// is for, and the requests that still reached the filesystem.
fn knob_experiments(n: u32) {
    let experiments: [(&str, Knobs); 6] = [
        ("none (ENODATA, FLUSH, open)", Knobs::default()),
        (
            "xattr probes: EOPNOTSUPP",
            Knobs {
                probes_unsupported: true,
                ..Knobs::default()
            },
        ),
        (
            "FOPEN_NOFLUSH",
            Knobs {
                noflush: true,
                ..Knobs::default()
            },
        ),
        (
            "no open (FUSE_NO_OPEN_SUPPORT)",
            Knobs {
                no_open: true,
                ..Knobs::default()
            },
        ),
        (
            "FOPEN_CACHE_DIR + KEEP_CACHE",
            Knobs {
                cache_dir: true,
                ..Knobs::default()
            },
        ),
        ("imapfs's choices", Knobs::IMAPFS),
    ];
    println!("\n== asking the kernel for less: the floor, {n} + {CAT_MESSAGES} messages ==");
    for (what, knobs) in experiments {
        let mounted = floor_of("Scale", n, knobs);
        let dir = mounted.path().join("Scale");
        let cat = mounted.path().join("Cat");
        let cold = timed("ls -l", &ls_l(&dir));
        let cold_counts = mounted.counts.take();
        let warm = timed("ls -l", &ls_l(&dir));
        let warm_counts = mounted.counts.take();
        timed("cat", &cat_all(&cat));
        mounted.counts.take();
        let cat2 = timed("cat", &cat_all(&cat));
        let cat_counts = mounted.counts.take();
        println!(
            "{what:<32} ls -l cold {:.3} s, warm {:.3} s, 2nd cat {:.3} s",
            cold.as_secs_f64(),
            warm.as_secs_f64(),
            cat2.as_secs_f64()
        );
        println!("    requests, cold ls -l: {cold_counts}");
        println!("    requests, warm ls -l: {warm_counts}");
        println!("    requests, 2nd cat:    {cat_counts}");
    }
}

/// Behind a delay proxy (`rtt` ms round trip, like a real provider): the listings that wait
/// on the server, cold and from the saved index, beside the raw metadata fetch.
fn measure_delayed(d: &Dovecot, name: &str, n: u32, port: u16, rtt: u64) {
    let raw_meta = raw(d, port, name, "meta");
    let cache = common::unique_temp_dir("scale-cache");
    let url = format!("imaps://{}@127.0.0.1:{port}", d.user);
    let start = || mount_listed(MountOptions::new(d).url(url.clone()).cache_home(&cache));
    let mount = start();
    let cold = timed("ls -l", &ls_l(&mount.join(name)));
    drop(mount);
    let mount = start();
    let remount = timed("remount ls -l", &ls_l(&mount.join(name)));
    drop(mount);
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "\n== {n} messages ({name}), {rtt} ms round trip ==\n\
         ls -l cold {:.3} s (raw metadata fetch {:.3} s), remount {:.3} s",
        cold.as_secs_f64(),
        raw_meta.as_secs_f64(),
        remount.as_secs_f64()
    );
}

/// Criteria of the `.search` figures: half of a generated folder, and four of its messages
/// (the sizes come from [`scale_message`]; the server answers both from its cached sizes).
const SEARCHES: [(&str, &str); 2] = [("half", "LARGER 1100"), ("few", "SMALLER 422")];

/// `ls` of a `.search` result directory (a fresh search each time: another spelling of the
/// criteria is another result) beside the raw client's `UID SEARCH`, ESEARCH and plain.
fn measure_search(d: &Dovecot, name: &str, n: u32) {
    let cache = common::unique_temp_dir("scale-cache");
    let mount = mount_listed(MountOptions::new(d).cache_home(&cache));
    let dir = mount.join(name);
    // The folder's index is held, as it is once the folder was looked at.
    timed("ls -l", &ls_l(&dir));
    println!("\n== .search in {n} messages ({name}), loopback, implicit TLS ==");
    println!(
        "{:<26} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>9} {:>12}",
        "",
        "hits",
        "imapfs",
        "raw ALL",
        "raw plain",
        "/ALL",
        "/plain",
        "CPU",
        "floor ls",
        "/(ALL+floor)"
    );
    for (label, criteria) in SEARCHES {
        for (round, spelling) in [criteria.to_string(), criteria.to_lowercase()]
            .iter()
            .enumerate()
        {
            let raw_all = raw_search(d, d.imaps_port, name, criteria, true);
            let raw_plain = raw_search(d, d.imaps_port, name, criteria, false);
            let result = dir.join(".search").join(spelling);
            let line = format!("LC_ALL=C ls '{}' > /dev/null", result.display());
            let cpu = cpu_ms(mount.pid());
            let took = profiled(&format!("search {label} {round}"), mount.pid(), &line);
            let cpu = cpu_ms(mount.pid()) - cpu;
            let hits = std::fs::read_dir(&result).map_or(0, |r| r.count());
            let floor = floor_ls(hits as u32);
            let s = |d: Duration| d.as_secs_f64();
            println!(
                "{:<26} {hits:>8} {:>7.3} s {:>7.3} s {:>7.3} s {:>7.2}x {:>7.2}x {cpu:>4} ms \
                 {:>7.3} s {:>11.2}x",
                format!("ls .search/{spelling}"),
                s(took),
                s(raw_all),
                s(raw_plain),
                s(took) / s(raw_all).max(1e-9),
                s(took) / s(raw_plain).max(1e-9),
                s(floor),
                s(took) / (s(raw_all) + s(floor)).max(1e-9),
            );
        }
    }
    println!(
        "goal: 2x the raw UID SEARCH (ESEARCH where offered); floor ls: the floor's plain `ls` \
         of a fresh folder of as many entries (readdirplus: an inode and a dentry each)"
    );
    drop(mount);
    let _ = std::fs::remove_dir_all(&cache);
}

/// The floor's plain `ls` of a folder of `n` entries on a fresh mount: what the kernel's
/// readdirplus of a result directory costs by itself (each run of a search has inodes of its
/// own, so the kernel makes new ones, as here).
fn floor_ls(n: u32) -> Duration {
    let mounted = floor_of("Hits", n, Knobs::IMAPFS);
    let dir = mounted.path().join("Hits");
    timed(
        "floor ls",
        &format!("LC_ALL=C ls '{}' > /dev/null", dir.display()),
    )
}

/// The refresh of an unchanged folder: a mount that saved its index, then one with
/// `idle=no,dir_ttl=0` on which every `stat` of a message refreshes the folder. Round trips
/// (the mount's own count) and the daemon's CPU (/proc/PID/stat) per refresh.
fn measure_refresh(d: &Dovecot, name: &str, n: u32) {
    const REFRESHES: u64 = 40;
    let cache = common::unique_temp_dir("scale-cache");
    let mount = mount_listed(MountOptions::new(d).cache_home(&cache));
    timed("ls -l", &ls_l(&mount.join(name)));
    drop(mount);
    // The commands are logged (trace of the session), to say which ones a refresh sends.
    let mount = MountOptions::new(d)
        .cache_home(&cache)
        .args(&["--idle", "no", "--dir-ttl", "0"])
        .rust_log("warn,imapfs::imap::session=trace")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    timed(
        "ls root",
        &format!("ls '{}' > /dev/null", mount.path().display()),
    );
    let trips = || -> u64 {
        common::getfattr(mount.path(), "user.imapfs.stats")
            .expect("stats")
            .lines()
            .find_map(|l| l.strip_prefix("round_trips=")?.parse().ok())
            .expect("round_trips")
    };
    let stat = format!(
        "stat -c %s '{}' > /dev/null",
        mount.join(name).join("1.eml").display()
    );
    let sent = || -> Vec<String> {
        mount
            .log()
            .lines()
            .filter_map(|l| {
                let command = l.split_once("C: ")?.1;
                // The tag, then the command's name (and UID's).
                let mut words = command.split(' ').skip(1);
                let name = words.next()?.to_string();
                Some(match words.next() {
                    Some(w) if name == "UID" => format!("UID {w}"),
                    _ => name,
                })
            })
            .collect()
    };
    let (cpu0, trips0, sent0) = (cpu_ms(mount.pid()), trips(), sent().len());
    let first = profiled("first refresh", mount.pid(), &stat);
    let (cpu1, trips1, sent1) = (cpu_ms(mount.pid()), trips(), sent());
    let loop_line = format!("for i in $(seq {REFRESHES}); do {stat}; done");
    let took = profiled("unchanged refresh", mount.pid(), &loop_line);
    let (cpu2, trips2, sent2) = (cpu_ms(mount.pid()), trips(), sent());
    let tally = |commands: &[String]| {
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for c in commands {
            *counts.entry(c.as_str()).or_default() += 1;
        }
        counts
            .iter()
            .map(|(c, n)| format!("{c} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("\n== refresh of the unchanged folder of {n} messages ({name}) ==");
    println!(
        "remount's first refresh (saved index loaded, checked, delta): {} round trips, \
         {} ms CPU, {:.3} s; sent: {}",
        trips1 - trips0,
        cpu1 - cpu0,
        first.as_secs_f64(),
        tally(&sent1[sent0..])
    );
    println!(
        "sent by the {REFRESHES} stats: {}",
        tally(&sent2[sent1.len()..])
    );
    println!(
        "refresh of the unchanged folder ({REFRESHES}, a stat each): {:.2} round trips and \
         {:.1} ms of daemon CPU each, {:.1} ms each end to end (goal: 1 round trip, < 50 ms CPU)",
        (trips2 - trips1) as f64 / REFRESHES as f64,
        (cpu2 - cpu1) as f64 / REFRESHES as f64,
        took.as_secs_f64() * 1000.0 / REFRESHES as f64
    );
    drop(mount);
    let _ = std::fs::remove_dir_all(&cache);
}

/// `FUSE_READDIRPLUS_AUTO` on the floor (`scripts/bench_scale.sh` runs it with
/// `BENCH_SCALE_RDPLUS=1`): each listing on a fresh mount with and without the knob, so the
/// plain `ls` a `.search` result gets and the listings that look at every entry (`ls -l`,
/// `find -printf`) are measured in one run. Then `ls` of the folder after an `ls -l` (inodes
/// held: the case of a `.search` result whose messages were listed before).
#[test]
#[ignore = "benchmark: run scripts/bench_scale.sh with BENCH_SCALE_RDPLUS=1"]
fn bench_readdirplus_auto() {
    let n = env_or("BENCH_SCALE_MESSAGES", 100_000) as u32;
    let ls = |dir: &std::path::Path| format!("LC_ALL=C ls '{}' > /dev/null", dir.display());
    println!("\n== FUSE_READDIRPLUS_AUTO on the floor, {n} messages ==");
    for auto in [false, true] {
        let knobs = Knobs {
            readdirplus_auto: auto,
            ..Knobs::IMAPFS
        };
        let mut row = Vec::new();
        for (what, line) in [
            ("ls", &ls as &dyn Fn(&std::path::Path) -> String),
            ("ls -l", &ls_l),
            ("find -printf", &find_printf),
        ] {
            let mounted = floor_of("Scale", n, knobs);
            let dir = mounted.path().join("Scale");
            let cold = timed(what, &line(&dir));
            let counts = mounted.counts.take();
            row.push(format!("{what} cold {:.3} s", cold.as_secs_f64()));
            println!("    auto={auto} {what} cold: {counts}");
            if what == "ls -l" {
                let warm = timed(what, &ls_l(&dir));
                let again = timed("ls", &ls(&dir));
                println!("    auto={auto} ls after ls -l: {}", mounted.counts.take());
                row.push(format!(
                    "ls -l warm {:.3} s, ls after ls -l {:.3} s",
                    warm.as_secs_f64(),
                    again.as_secs_f64()
                ));
            }
        }
        println!("auto={auto}: {}", row.join(", "));
    }
}
