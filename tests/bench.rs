//! Benchmarks, run by `scripts/bench.sh` (ignored by `cargo test`): they print figures side by
//! side and assert nothing about time.
//!
//! A private Dovecot (implicit TLS) holds `Bench`, 10,000 messages with a realistic size mix
//! (most a few KB, a tail up to 4 MB; about 75 KB on average), and `Huge`, a few messages of
//! 20 to 50 MB. Measured on plain loopback and behind a proxy that adds a round-trip delay
//! (default 20 ms, like a real provider), each time beside:
//!
//! - the cheapest possible client: one pipelined `UID FETCH 1:*` over `ssl` in Python,
//!   literals skipped by length (metadata for `ls -l`, `BODY.PEEK[]` for `cat`);
//! - `mbsync` (Debian isync) pulling the folder into a local maildir, a real peer;
//! - the FUSE floor: a trivial in-memory fuser filesystem holding the same names, sizes and
//!   bytes (readdirplus, kept page cache), so what FUSE itself costs is visible;
//! - `cat` of Dovecot's own maildir files (the warm target: the page cache of a local disk).
//!
//! Environment knobs: BENCH_MESSAGES (10000), BENCH_BIG_MB (comma-separated sizes, "20,35,50"),
//! BENCH_RTT_MS (20; 0 skips the delayed run).

mod common;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{run, vm_hwm_kb, Dovecot, MountOptions, Rng, Seed};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A message size drawn from a mix like a real mailbox's: most are short, a few are large.
fn realistic_size(rng: &mut Rng) -> usize {
    let r = rng.below(1000);
    let (lo, hi) = match r {
        0..620 => (2_000, 10_000),
        620..870 => (10_000, 60_000),
        870..960 => (60_000, 300_000),
        960..995 => (300_000, 1_500_000),
        _ => (1_500_000, 4_000_000),
    };
    lo + rng.below((hi - lo) as u64) as usize
}

/// A message of about `len` bytes: headers, then 76-character lines taken from `filler`.
fn message(i: usize, len: usize, filler: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut m = format!(
        "From: a{i}@example.org\r\nTo: b@example.org\r\nSubject: bench {i}\r\n\
         Message-ID: <b{i}@example.org>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\n"
    )
    .into_bytes();
    m.reserve(len.saturating_sub(m.len()) + 80);
    let mut at = rng.below((filler.len() - 80) as u64) as usize;
    while m.len() < len {
        if at + 76 > filler.len() {
            at = 0;
        }
        m.extend_from_slice(&filler[at..at + 76]);
        m.extend_from_slice(b"\r\n");
        at += 76;
    }
    m
}

fn bench_seed() -> Seed {
    let mut seed = Seed::new();
    seed.size_hints = true;
    let mut rng = Rng::new(7);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let filler: Vec<u8> = (0..4 << 20)
        .map(|_| alphabet[rng.below(64) as usize])
        .collect();
    let n = env_or("BENCH_MESSAGES", 10_000) as usize;
    let folder = seed.folder_mut("Bench");
    for i in 0..n {
        let len = realistic_size(&mut rng);
        let body = message(i, len, &filler, &mut rng);
        let t = 1_700_000_000 + i as i64;
        folder.push(body, &["\\Seen"], "bench", "a@example.org", "<b@x>", t, t);
    }
    let bigs = std::env::var("BENCH_BIG_MB").unwrap_or_else(|_| "20,35,50".into());
    let huge = seed.folder_mut("Huge");
    for (i, mb) in bigs
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
        .enumerate()
    {
        let body = message(100_000 + i, mb << 20, &filler, &mut rng);
        huge.push(
            body,
            &[],
            "big",
            "a@example.org",
            "<big@x>",
            1_700_000_000,
            1_700_000_000,
        );
    }
    seed
}

/// A TCP proxy on loopback that delays every chunk by `one_way` in each direction.
struct DelayProxy {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    fn start(target: u16, one_way: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                client.set_nodelay(true).ok();
                server.set_nodelay(true).ok();
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    one_way,
                );
                pipe(server, client, one_way);
            }
        });
        DelayProxy { port, stop }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Chunks waiting to be forwarded, each with the time it is due; `None` marks the end.
type ChunkQueue = (Mutex<VecDeque<Option<(Instant, Vec<u8>)>>>, Condvar);

/// Forward `from` to `to`, each chunk no earlier than `delay` after it arrived.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let queue: Arc<ChunkQueue> = Arc::default();
    let q = queue.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            let item = (n > 0).then(|| (Instant::now() + delay, buf[..n].to_vec()));
            let end = item.is_none();
            q.0.lock().unwrap().push_back(item);
            q.1.notify_one();
            if end {
                return;
            }
        }
    });
    thread::spawn(move || loop {
        let item = {
            let mut g = queue.0.lock().unwrap();
            loop {
                if let Some(i) = g.pop_front() {
                    break i;
                }
                g = queue.1.wait(g).unwrap();
            }
        };
        let Some((due, data)) = item else {
            let _ = to.shutdown(Shutdown::Write);
            return;
        };
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if to.write_all(&data).is_err() {
            return;
        }
    });
}

/// Run a shell command line, return how long it took; panics if it fails.
fn timed(what: &str, line: &str) -> Duration {
    let t = Instant::now();
    let out = run(&["sh", "-c", line], Duration::from_secs(1200));
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

/// The raw client: one pipelined `UID FETCH 1:*` of `what` over implicit TLS (Python `ssl`,
/// literals skipped by length). Credentials through the environment, never argv.
const RAW_CLIENT: &str = r#"
import os, re, socket, ssl, sys
port, folder, what = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port)), server_hostname='localhost')
buf, pos = b'', 0
def fill():
    global buf, pos
    d = s.recv(1 << 20)
    if not d: sys.exit('eof')
    buf, pos = buf[pos:] + d, 0
def line():
    global pos
    while True:
        j = buf.find(b'\r\n', pos)
        if j >= 0:
            l = buf[pos:j]; pos = j + 2; return l
        fill()
def skip(n):
    global buf, pos
    while len(buf) - pos < n:
        n -= len(buf) - pos; buf, pos = b'', 0
        d = s.recv(1 << 20)
        if not d: sys.exit('eof')
        buf = d
    pos += n
line()
item = 'BODY.PEEK[]' if what == 'body' else 'FLAGS RFC822.SIZE INTERNALDATE'
s.sendall(('a LOGIN %s %s\r\nb EXAMINE "%s"\r\nc UID FETCH 1:* (%s)\r\nd LOGOUT\r\n'
           % (os.environ['RAW_USER'], os.environ['RAW_PASS'], folder, item)).encode())
lit, n = re.compile(rb'\{(\d+)\}$'), 0
while True:
    l = line()
    m = lit.search(l)
    if m:
        skip(int(m.group(1))); n += 1; continue
    if l.startswith(b'c '):
        if not l.startswith(b'c OK'): sys.exit(l.decode())
        break
print(n)
"#;

fn raw(d: &Dovecot, port: u16, folder: &str, what: &str) -> Duration {
    // One retry: a loaded machine sometimes drops a fresh connection during TLS setup.
    std::panic::catch_unwind(|| raw_once(d, port, folder, what))
        .unwrap_or_else(|_| raw_once(d, port, folder, what))
}

fn raw_once(d: &Dovecot, port: u16, folder: &str, what: &str) -> Duration {
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", RAW_CLIENT, &port.to_string(), folder, what])
        .env("RAW_USER", &d.user)
        .env("RAW_PASS", &d.password);
    let t = Instant::now();
    let out = common::run_command(cmd, None, Duration::from_secs(1200)).expect("raw client");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "raw client ({folder} {what}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// `mbsync` pulling `folder` into a fresh local maildir; the time, or `None` without mbsync.
fn mbsync(d: &Dovecot, port: u16, folder: &str) -> Option<Duration> {
    if run(&["sh", "-c", "command -v mbsync"], Duration::from_secs(10))
        .status
        .code()
        != Some(0)
    {
        return None;
    }
    let dir = common::unique_temp_dir("mbsync");
    let conf = dir.join("mbsyncrc");
    let local = dir.join("mail");
    std::fs::create_dir(&local).unwrap();
    let text = format!(
        "FSync no\n\nIMAPAccount bench\nHost 127.0.0.1\nPort {port}\nUser {}\nPass {}\n\
         SSLType IMAPS\nCertificateFile {}\nAuthMechs LOGIN\n\nIMAPStore remote\nAccount bench\n\n\
         MaildirStore local\nPath {}/\nInbox {}/INBOX\n\n\
         Channel bench\nFar :remote:\nNear :local:\nPatterns {folder}\nCreate Near\nSync Pull\n\
         SyncState *\n",
        d.user,
        d.password,
        d.ca_file.display(),
        local.display(),
        local.display()
    );
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&conf)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
    let t = Instant::now();
    let out = run(
        &["mbsync", "-q", "-c", &conf.to_string_lossy(), "bench"],
        Duration::from_secs(1200),
    );
    let took = t.elapsed();
    let got = std::fs::read_dir(local.join(folder).join("cur"))
        .map(|r| r.count())
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() || got == 0 {
        println!(
            "mbsync failed ({} messages): {}",
            got,
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(took)
}

/// One row of figures: imapfs beside its peers.
struct Row {
    what: &'static str,
    imapfs: Option<Duration>,
    raw: Option<Duration>,
    mbsync: Option<Duration>,
    floor: Option<Duration>,
    local: Option<Duration>,
    note: String,
}

fn print_rows(title: &str, rows: &[Row]) {
    let f =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.3} s", d.as_secs_f64()));
    println!("\n== {title} ==");
    println!(
        "{:<32} {:>10} {:>11} {:>10} {:>11} {:>11}",
        "", "imapfs", "raw client", "mbsync", "FUSE floor", "maildir cat"
    );
    for r in rows {
        println!(
            "{:<32} {:>10} {:>11} {:>10} {:>11} {:>11}  {}",
            r.what,
            f(r.imapfs),
            f(r.raw),
            f(r.mbsync),
            f(r.floor),
            f(r.local),
            r.note
        );
    }
}

fn stat(mount: &common::Mount, key: &str) -> u64 {
    let out = run(
        &[
            "getfattr",
            "--only-values",
            "-n",
            "user.imapfs.stats",
            &mount.path().to_string_lossy(),
        ],
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

/// imapfs beside its peers over one path (`port`: Dovecot's, or the delay proxy's).
fn measure(d: &Dovecot, seed: &Seed, label: &str, port: u16, floor: &Floor) {
    let url = format!("imaps://{}@127.0.0.1:{port}", d.user);
    let bench = seed.folder("Bench");
    let n = bench.messages.len();
    let total: usize = bench.messages.iter().map(|m| m.bytes.len()).sum();
    let huge: usize = seed
        .folder("Huge")
        .messages
        .iter()
        .map(|m| m.bytes.len())
        .sum();
    let mb = |b: usize| b as f64 / 1e6;
    let cache = common::unique_temp_dir("bench-cache");

    let raw_meta = raw(d, port, "Bench", "meta");
    let raw_body = raw(d, port, "Bench", "body");
    let raw_huge = raw(d, port, "Huge", "body");
    let mbsync_body = mbsync(d, port, "Bench");

    let mount = MountOptions::new(d)
        .url(url.clone())
        .cache_home(&cache)
        .quiet()
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = mount.join("Bench");
    let dir = dir.display();
    timed(
        "ls root",
        &format!("ls '{}' > /dev/null", mount.path().display()),
    );
    let t_ls = timed("ls -l", &format!("ls -l '{dir}' > /dev/null"));
    let rt_ls = stat(&mount, "round_trips");
    let t_cat = timed("cat", &format!("cat '{dir}'/*.eml > /dev/null"));
    let rt_cat = stat(&mount, "round_trips") - rt_ls;
    let t_warm = timed("cat warm", &format!("cat '{dir}'/*.eml > /dev/null"));
    let t_ls_warm = timed("ls -l warm", &format!("ls -l '{dir}' > /dev/null"));
    let t_huge = timed(
        "cat huge",
        &format!("cat '{}'/*.eml > /dev/null", mount.join("Huge").display()),
    );
    let hwm = vm_hwm_kb(mount.pid());
    drop(mount);

    // A remount of the known folder: the saved index and one incremental round trip.
    let mount = MountOptions::new(d)
        .url(url.clone())
        .cache_home(&cache)
        .quiet()
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    timed(
        "ls root",
        &format!("ls '{}' > /dev/null", mount.path().display()),
    );
    let rt0 = stat(&mount, "round_trips");
    let t_remount = timed(
        "remount ls -l",
        &format!("ls -l '{}' > /dev/null", mount.join("Bench").display()),
    );
    let rt_remount = stat(&mount, "round_trips") - rt0;
    let incremental = stat(&mount, "listings_incremental");
    drop(mount);

    // grep -r walks in readdir (UID) order, on a fresh mount.
    let mount = MountOptions::new(d)
        .url(url)
        .quiet()
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let t_grep = timed(
        "grep -r",
        &format!(
            "grep -rl 'no such phrase here' '{}' > /dev/null; true",
            mount.join("Bench").display()
        ),
    );
    drop(mount);
    let _ = std::fs::remove_dir_all(&cache);

    let rate = |d: Duration, bytes: usize| format!("{:.0} MB/s", mb(bytes) / d.as_secs_f64());
    let rows = [
        Row {
            what: "ls -l, cold",
            imapfs: Some(t_ls),
            raw: Some(raw_meta),
            mbsync: None,
            floor: Some(floor.ls),
            local: None,
            note: format!("imapfs {rt_ls} round trips from mount"),
        },
        Row {
            what: "ls -l, remount (saved index)",
            imapfs: Some(t_remount),
            raw: None,
            mbsync: None,
            floor: None,
            local: None,
            note: format!("{rt_remount} round trip(s), {incremental} incremental refresh"),
        },
        Row {
            what: "ls -l, warm",
            imapfs: Some(t_ls_warm),
            raw: None,
            mbsync: None,
            floor: Some(floor.ls_warm),
            local: None,
            note: String::new(),
        },
        Row {
            what: "cat *.eml, cold",
            imapfs: Some(t_cat),
            raw: Some(raw_body),
            mbsync: mbsync_body,
            floor: Some(floor.cat),
            local: None,
            note: format!(
                "{n} msgs, {:.0} MB: imapfs {}, raw {}; {rt_cat} round trips",
                mb(total),
                rate(t_cat, total),
                rate(raw_body, total)
            ),
        },
        Row {
            what: "cat *.eml, warm",
            imapfs: Some(t_warm),
            raw: None,
            mbsync: None,
            floor: Some(floor.cat_warm),
            local: Some(floor.maildir),
            note: format!(
                "{:.2}x maildir cat",
                t_warm.as_secs_f64() / floor.maildir.as_secs_f64()
            ),
        },
        Row {
            what: "grep -r, fresh mount",
            imapfs: Some(t_grep),
            raw: Some(raw_body),
            mbsync: None,
            floor: None,
            local: None,
            note: String::new(),
        },
        Row {
            what: "cat of the big messages",
            imapfs: Some(t_huge),
            raw: Some(raw_huge),
            mbsync: None,
            floor: None,
            local: None,
            note: format!("{:.0} MB: imapfs {}", mb(huge), rate(t_huge, huge)),
        },
    ];
    print_rows(label, &rows);
    println!(
        "imapfs peak RSS {:.0} MB (cache 256 MB)",
        hwm as f64 / 1024.0
    );
}

/// Memory stays bounded by --cache-size whatever is read.
fn measure_memory(d: &Dovecot, cache: &str) {
    let mount = MountOptions::new(d)
        .args(&["--cache-size", cache])
        .quiet()
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let all = format!(
        "cat '{}'/*.eml '{}'/*.eml > /dev/null",
        mount.join("Bench").display(),
        mount.join("Huge").display()
    );
    let t = timed("cat all", &all);
    let hwm = vm_hwm_kb(mount.pid());
    println!(
        "\n== --cache-size {cache} ==\nread both folders in {:.3} s; imapfs peak RSS {:.0} MB",
        t.as_secs_f64(),
        hwm as f64 / 1024.0
    );
}

#[test]
#[ignore = "benchmark: run scripts/bench.sh"]
fn bench() {
    let t = Instant::now();
    let seed = bench_seed();
    let d = Dovecot::start(&seed);
    println!(
        "seeded {} messages in {:.1} s",
        seed.folder("Bench").messages.len(),
        t.elapsed().as_secs_f64()
    );
    // Dovecot builds its indexes and the kernel caches the maildir before anything is timed.
    raw(&d, d.imaps_port, "Bench", "meta");
    raw(&d, d.imaps_port, "Bench", "body");
    raw(&d, d.imaps_port, "Huge", "body");
    let floor = Floor::measure(&seed, &d.mail_dir.join(".Bench/cur"));
    measure(&d, &seed, "loopback, implicit TLS", d.imaps_port, &floor);
    measure_memory(&d, "16M");
    let rtt = env_or("BENCH_RTT_MS", 20);
    if rtt > 0 {
        let proxy = DelayProxy::start(d.imaps_port, Duration::from_millis(rtt / 2));
        measure(
            &d,
            &seed,
            &format!("{rtt} ms round trip (delay proxy), implicit TLS"),
            proxy.port,
            &floor,
        );
    }
}

// --- the FUSE floor -----------------------------------------------------------------------------

/// What FUSE itself costs: the same names, sizes and bytes served from memory by a trivial
/// fuser filesystem (readdirplus, long TTLs, kept page cache), and `cat` of the maildir.
struct Floor {
    ls: Duration,
    ls_warm: Duration,
    cat: Duration,
    cat_warm: Duration,
    maildir: Duration,
}

impl Floor {
    fn measure(seed: &Seed, maildir: &Path) -> Floor {
        let dir = common::unique_temp_dir("floor");
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let files: Vec<(String, Arc<[u8]>)> = seed
            .folder("Bench")
            .messages
            .iter()
            .map(|m| (m.file_name(), Arc::from(&m.bytes[..])))
            .collect();
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            fuser::MountOption::RO,
            fuser::MountOption::FSName("floor".into()),
        ];
        cfg.n_threads = Some(4);
        let session = fuser::Session::new(MemFs { files }, &mnt, &cfg).expect("mount the floor");
        let bg = session.spawn().expect("serve the floor");
        let m = mnt.display();
        let ls = timed("floor ls -l", &format!("ls -l '{m}' > /dev/null"));
        let ls_warm = timed("floor ls -l", &format!("ls -l '{m}' > /dev/null"));
        let cat = timed("floor cat", &format!("cat '{m}'/*.eml > /dev/null"));
        let cat_warm = timed("floor cat", &format!("cat '{m}'/*.eml > /dev/null"));
        let _ = bg.umount_and_join();
        let _ = std::fs::remove_dir(&mnt);
        let _ = std::fs::remove_dir(&dir);
        let md = maildir.display();
        timed("maildir cat", &format!("cat '{md}'/* > /dev/null"));
        let maildir = timed("maildir cat", &format!("cat '{md}'/* > /dev/null"));
        Floor {
            ls,
            ls_warm,
            cat,
            cat_warm,
            maildir,
        }
    }
}

/// Files `i.eml` in the root directory; inode `i + 2` is `files[i]`.
struct MemFs {
    files: Vec<(String, Arc<[u8]>)>,
}

const TTL: Duration = Duration::from_secs(3600);

impl MemFs {
    fn attr(&self, ino: u64) -> Option<fuser::FileAttr> {
        let (kind, size, perm) = if ino == 1 {
            (fuser::FileType::Directory, 0, 0o555)
        } else {
            let (_, data) = self.files.get(usize::try_from(ino).ok()?.checked_sub(2)?)?;
            (fuser::FileType::RegularFile, data.len() as u64, 0o444)
        };
        Some(fuser::FileAttr {
            ino: fuser::INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl fuser::Filesystem for MemFs {
    fn init(
        &mut self,
        _req: &fuser::Request,
        config: &mut fuser::KernelConfig,
    ) -> std::io::Result<()> {
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(
        &self,
        _req: &fuser::Request,
        _parent: fuser::INodeNo,
        name: &OsStr,
        reply: fuser::ReplyEntry,
    ) {
        let found = name
            .to_str()
            .and_then(|n| self.files.iter().position(|(f, _)| f == n))
            .and_then(|i| self.attr(i as u64 + 2));
        match found {
            Some(a) => reply.entry(&TTL, &a, fuser::Generation(0)),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn getattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn open(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _flags: fuser::OpenFlags,
        reply: fuser::ReplyOpen,
    ) {
        reply.opened(fuser::FileHandle(0), fuser::FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyData,
    ) {
        let Some((_, data)) = (ino.0 as usize)
            .checked_sub(2)
            .and_then(|i| self.files.get(i))
        else {
            return reply.error(fuser::Errno::ENOENT);
        };
        let from = (offset as usize).min(data.len());
        let to = (from + size as usize).min(data.len());
        reply.data(&data[from..to]);
    }

    fn readdir(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectory,
    ) {
        for (i, (name, _)) in self.files.iter().enumerate().skip(offset as usize) {
            if reply.add(
                fuser::INodeNo(i as u64 + 2),
                i as u64 + 1,
                fuser::FileType::RegularFile,
                name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        for (i, (name, _)) in self.files.iter().enumerate().skip(offset as usize) {
            let Some(a) = self.attr(i as u64 + 2) else {
                break;
            };
            if reply.add(
                fuser::INodeNo(i as u64 + 2),
                i as u64 + 1,
                name,
                &TTL,
                &a,
                fuser::Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(fuser::Errno::NO_XATTR);
    }
}
