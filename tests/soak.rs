//! A soak run, driven by `scripts/soak.sh` (ignored by `cargo test`): concurrent readers on a
//! mount for minutes while another client appends, expunges and re-flags on the same Dovecot.
//!
//! Every byte read is compared with what the server holds (the seed, checked once against the
//! oracle's SHA-256, and each appended message as appended); a message expunged meanwhile may
//! give ENOENT, nothing else may fail. imapfs's RSS is sampled throughout and printed, with
//! the counts of what readers and writer did. Readers drop the kernel's page cache of each
//! file before reading it, and the folder is larger than imapfs's block cache (16 MB), so
//! reads keep reaching imapfs and the server. Knobs (environment): `SOAK_SECS` (default 180,
//! at most 3600), `SOAK_READERS` (8), `SOAK_MESSAGES` (200 at the start).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Dovecot, MountOptions, Rng, Seed};

const FOLDER: &str = "Soak";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A message of `len` bytes: headers, then numbered lines, so that a misplaced block shows.
fn message(tag: &str, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = format!(
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: soak {tag}\r\n\
         Message-ID: <{tag}@soak.example.org>\r\n\r\n"
    )
    .into_bytes();
    while out.len() < len {
        out.extend_from_slice(
            format!("{tag} {:010} {:016x}\r\n", out.len(), rng.next_u64()).as_bytes(),
        );
    }
    out
}

/// Mostly small messages, some of several blocks (1 MiB each).
fn size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => rng.range(2_000, 50_000),
        80..=95 => rng.range(100_000, 900_000),
        _ => rng.range(1_500_000, 3_500_000),
    }
}

/// What the server holds, as far as the readers must know: UID -> bytes, and the UIDs that
/// are being or have been expunged (ENOENT is fine for them).
#[derive(Default)]
struct Truth {
    bodies: HashMap<u32, Arc<Vec<u8>>>,
    expunged: HashSet<u32>,
}

#[derive(Default)]
struct Counts {
    reads: AtomicU64,
    partial_reads: AtomicU64,
    bytes: AtomicU64,
    listings: AtomicU64,
    xattrs: AtomicU64,
    gone: AtomicU64,
    appended: AtomicU64,
    expunged: AtomicU64,
    flagged: AtomicU64,
}

#[test]
#[ignore = "soak: run scripts/soak.sh"]
fn soak() {
    let secs = env_or("SOAK_SECS", 180).clamp(10, 3600);
    let readers = env_or("SOAK_READERS", 8).clamp(1, 64) as usize;
    let initial = env_or("SOAK_MESSAGES", 200).clamp(10, 10_000) as u32;

    let mut rng = Rng::new(42);
    let mut seed = Seed::new();
    let folder = seed.folder_mut(FOLDER);
    for i in 1..=initial {
        let len = size(&mut rng);
        let tag = format!("s{i}");
        folder.push(
            message(&tag, len, &mut rng),
            &[],
            &tag,
            "a@example.org",
            &format!("<{tag}@soak.example.org>"),
            1_700_000_000,
            1_700_000_000,
        );
    }
    let dovecot = Dovecot::start(&seed);
    // The seed is what the oracle (not our client) reads.
    let oracle = dovecot.oracle_sha256_all(FOLDER);
    let bodies: Vec<&[u8]> = seed
        .folder(FOLDER)
        .messages
        .iter()
        .map(|m| &m.bytes[..])
        .collect();
    let ours: BTreeMap<u32, String> = (1..=initial)
        .zip(common::sha256_hex_many(&bodies))
        .collect();
    assert_eq!(oracle, ours, "the seed differs from what the server holds");

    let truth = Mutex::new(Truth {
        bodies: seed
            .folder(FOLDER)
            .messages
            .iter()
            .map(|m| (m.uid, Arc::new(m.bytes.clone())))
            .collect(),
        ..Truth::default()
    });
    let mount = MountOptions::new(&dovecot)
        .args(&["--dir-ttl", "2", "--cache-size", "16M", "--timeout", "10"])
        .rust_log("info")
        .start()
        .unwrap_or_else(|e| panic!("mount failed: {e}"));
    let dir = mount.join(FOLDER);
    let counts = Counts::default();
    let failures = Mutex::new(Vec::<String>::new());
    let deadline = Instant::now() + Duration::from_secs(secs);
    println!(
        "soak: {secs} s, {readers} readers, {initial} messages ({:.1} MB) at the start",
        seed.total_bytes() as f64 / 1e6
    );

    // Readers on the mount, the writer through the oracle, and RSS samples every 10 s
    // until the deadline (the channel's timeout is the sampling period).
    let pid = mount.pid();
    let started = Instant::now();
    let mut samples = Vec::new();
    thread::scope(|scope| {
        for r in 0..readers {
            let (dir, truth, counts, failures) = (&dir, &truth, &counts, &failures);
            scope.spawn(move || reader(r as u64, dir, deadline, truth, counts, failures));
        }
        let (dovecot, truth, counts) = (&dovecot, &truth, &counts);
        scope.spawn(move || writer(dovecot, deadline, initial, truth, counts));
        let (_stop, tick) = mpsc::channel::<()>();
        loop {
            samples.push((started.elapsed().as_secs(), status_kb(pid, "VmRSS")));
            if Instant::now() >= deadline {
                break;
            }
            let wait = Duration::from_secs(10).min(deadline - Instant::now());
            let _ = tick.recv_timeout(wait);
        }
    });
    samples.push((started.elapsed().as_secs(), status_kb(pid, "VmRSS")));

    // The mount converges on what the server holds.
    let want: Vec<String> = {
        let meta = dovecot.oracle_meta(FOLDER);
        meta.keys().map(|u| format!("{u}.eml")).collect()
    };
    common::wait_for(
        "the listing to match the server",
        Duration::from_secs(30),
        || {
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort_by_key(|n| n.trim_end_matches(".eml").parse::<u32>().unwrap_or(0));
            (names == want).then_some(())
        },
    );

    let hwm = status_kb(pid, "VmHWM");
    let stats = String::from_utf8_lossy(
        &common::run(
            &[
                "getfattr",
                "--only-values",
                "-n",
                "user.imapfs.stats",
                &mount.path().to_string_lossy(),
            ],
            Duration::from_secs(20),
        )
        .stdout,
    )
    .into_owned();
    let c = &counts;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "readers: {} whole reads, {} partial reads, {:.1} MB compared, {} listings, {} xattr reads, \
         {} ENOENT (expunged meanwhile)",
        n(&c.reads),
        n(&c.partial_reads),
        n(&c.bytes) as f64 / 1e6,
        n(&c.listings),
        n(&c.xattrs),
        n(&c.gone)
    );
    println!(
        "writer: {} appended, {} expunged, {} flag changes; {} messages at the end",
        n(&c.appended),
        n(&c.expunged),
        n(&c.flagged),
        want.len()
    );
    let rss: Vec<String> = samples
        .iter()
        .map(|(t, kb)| format!("{t}s:{:.1}", *kb as f64 / 1024.0))
        .collect();
    println!("imapfs RSS (MB) every 10 s: {}", rss.join(" "));
    let (first, last) = (
        samples[1.min(samples.len() - 1)].1,
        samples[samples.len() - 1].1,
    );
    println!(
        "RSS after the first 10 s {:.1} MB, at the end {:.1} MB, peak {:.1} MB (cache limit 16 MB)",
        first as f64 / 1024.0,
        last as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!("imapfs stats:\n{stats}");
    let log = mount.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    println!("imapfs warnings: {}", warnings.len());
    for w in warnings.iter().take(20) {
        println!("  {w}");
    }
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        failures.is_empty(),
        "{} failures, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// One reader: until the deadline, list the folder and read messages whole, in runs of
/// consecutive UIDs (a folder walk), or in pieces at random offsets; read xattrs.
fn reader(
    id: u64,
    dir: &Path,
    deadline: Instant,
    truth: &Mutex<Truth>,
    counts: &Counts,
    failures: &Mutex<Vec<String>>,
) {
    let mut rng = Rng::new(1000 + id);
    let fail = |what: String| {
        let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < 1000 {
            f.push(what);
        }
    };
    while Instant::now() < deadline {
        let mut uids: Vec<u32> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".eml")?.parse().ok())
                .collect(),
            Err(e) => {
                fail(format!("reader {id}: ls: {e}"));
                continue;
            }
        };
        counts.listings.fetch_add(1, Ordering::Relaxed);
        uids.sort();
        if uids.is_empty() {
            continue;
        }
        let start = rng.below(uids.len() as u64) as usize;
        let picked: Vec<u32> = match rng.below(3) {
            0 => uids[start..].iter().take(10).copied().collect(),
            _ => vec![uids[start]],
        };
        let partial = rng.below(3) == 0;
        for uid in picked {
            let (want, expunged) = {
                let t = truth.lock().unwrap_or_else(|e| e.into_inner());
                (t.bodies.get(&uid).cloned(), t.expunged.contains(&uid))
            };
            // A message appended a moment ago, not yet recorded by the writer.
            let Some(want) = want else { continue };
            let path = dir.join(format!("{uid}.eml"));
            let result = if partial {
                let offset = rng.below(want.len() as u64);
                let len = rng.range(1, 3 << 20);
                read_at(&path, offset, len).map(|got| {
                    counts.partial_reads.fetch_add(1, Ordering::Relaxed);
                    let end = (offset as usize + len).min(want.len());
                    (got, &want[offset as usize..end])
                })
            } else {
                read_whole(&path).map(|got| {
                    counts.reads.fetch_add(1, Ordering::Relaxed);
                    (got, &want[..])
                })
            };
            match result {
                Ok((got, expected)) => {
                    counts.bytes.fetch_add(got.len() as u64, Ordering::Relaxed);
                    if got != expected {
                        fail(format!(
                            "reader {id}: UID {uid}: wrong bytes ({} read, {} expected{})",
                            got.len(),
                            expected.len(),
                            if partial { ", partial" } else { "" }
                        ));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && expunged => {
                    counts.gone.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // The writer may have started expunging it since we looked.
                    let now_expunged = truth
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .expunged
                        .contains(&uid);
                    if e.raw_os_error() == Some(libc::ENOENT) && now_expunged {
                        counts.gone.fetch_add(1, Ordering::Relaxed);
                    } else {
                        fail(format!("reader {id}: UID {uid}: {e}"));
                    }
                }
            }
            if rng.below(4) == 0 {
                match xattr(&path, "user.imap.flags") {
                    Ok(_) => {
                        counts.xattrs.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => fail(format!("reader {id}: xattr of UID {uid}: {e}")),
                }
            }
        }
    }
}

/// Drop the kernel's cached pages of `f`, so that the next read asks imapfs (message files
/// are opened with FOPEN_KEEP_CACHE: otherwise most reads never leave the page cache).
fn drop_page_cache(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an open descriptor; the call only advises the kernel.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

fn read_whole(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    drop_page_cache(&f);
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// `len` bytes at `offset` (fewer only at the end of the file), in as many preads as needed.
fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    drop_page_cache(&f);
    let mut buf = vec![0u8; len];
    let mut have = 0;
    while have < len {
        let n = f.read_at(&mut buf[have..], offset + have as u64)?;
        if n == 0 {
            break;
        }
        have += n;
    }
    buf.truncate(have);
    Ok(buf)
}

fn xattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the length given.
    let r = unsafe {
        libc::getxattr(
            p.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// The other client: appends, expunges and re-flags until the deadline, keeping the folder
/// between half and twice its initial size.
fn writer(
    dovecot: &Dovecot,
    deadline: Instant,
    initial: u32,
    truth: &Mutex<Truth>,
    counts: &Counts,
) {
    let mut rng = Rng::new(7);
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let live: Vec<u32> = {
            let t = truth.lock().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<u32> = t
                .bodies
                .keys()
                .filter(|u| !t.expunged.contains(u))
                .copied()
                .collect();
            v.sort();
            v
        };
        let choice = rng.below(3);
        if (choice == 0 || live.len() < initial as usize / 2) && live.len() < 2 * initial as usize {
            let len = size(&mut rng);
            let bytes = message(&format!("w{n}"), len, &mut rng);
            let uid = dovecot.oracle_append(FOLDER, &bytes);
            truth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bodies
                .insert(uid, Arc::new(bytes));
            counts.appended.fetch_add(1, Ordering::Relaxed);
        } else if choice == 1 && !live.is_empty() {
            let uid = live[rng.below(live.len() as u64) as usize];
            // Recorded first: from now on a reader may meet ENOENT for it.
            truth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .expunged
                .insert(uid);
            dovecot.oracle_expunge(FOLDER, uid);
            counts.expunged.fetch_add(1, Ordering::Relaxed);
        } else if !live.is_empty() {
            let uid = live[rng.below(live.len() as u64) as usize];
            let op = if rng.below(2) == 0 {
                "+FLAGS"
            } else {
                "-FLAGS"
            };
            dovecot.oracle_store(FOLDER, uid, op, &["\\Flagged", "\\Seen"]);
            counts.flagged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A `/proc/PID/status` field in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
