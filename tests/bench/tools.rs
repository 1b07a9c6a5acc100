//! Helpers shared by the benchmarks (tests/bench.rs, tests/bench_scale.rs,
//! tests/bench_compress.rs): timing a shell line, peak RSS, environment knobs, the raw client
//! (the cheapest possible IMAP client) and a proxy that delays (and limits) the link.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, run, Dovecot, Mount, MountOptions, Rng};

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Mount quietly and list the root (the folder list is loaded before anything is timed).
pub fn mount_listed(options: MountOptions) -> Mount {
    let mount = options.quiet().start().unwrap_or_else(|e| panic!("{e}"));
    timed(
        "ls root",
        &format!("ls '{}' > /dev/null", mount.path().display()),
    );
    mount
}

/// Run a shell command line, return how long it took; panics if it fails.
pub fn timed(what: &str, line: &str) -> Duration {
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

/// [`timed`], with process `pid` (the imapfs daemon) sampled by `perf record` (cpu-clock,
/// call graphs) into `$BENCH_PERF/<label>.data` when BENCH_PERF names a directory: read the
/// profile with `perf report -i FILE --no-children`.
pub fn profiled(label: &str, pid: u32, line: &str) -> Duration {
    let Some(dir) = std::env::var_os("BENCH_PERF") else {
        return timed(label, line);
    };
    let out = std::path::Path::new(&dir).join(format!("{}.data", label.replace(' ', "-")));
    let mut perf = std::process::Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("perf (apt-get install linux-perf)");
    // perf attaches within a moment; what it misses of the start is a few ms.
    std::thread::sleep(Duration::from_millis(300));
    let took = timed(label, line);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    let _ = perf.wait();
    took
}

/// The CPU time (user + system) a process has used so far, in ms (clock ticks of 10 ms).
pub fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / hz
}

/// The raw searcher: over implicit TLS, after its login, an EXAMINE and `UID SEARCH
/// [RETURN (ALL)] criteria` pipelined (one round trip), timed from sending them to the
/// search's completion; the answer is read, not parsed. Credentials through the environment.
const RAW_SEARCH: &str = r#"
import os, socket, ssl, sys, time
port, folder, ret, criteria = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port)), server_hostname='localhost')
buf = b''
def line():
    global buf
    while b'\r\n' not in buf:
        d = s.recv(1 << 20)
        if not d: sys.exit('eof')
        buf += d
    l, buf = buf.split(b'\r\n', 1)
    return l
line()
s.sendall(('a LOGIN %s %s\r\n' % (os.environ['RAW_USER'], os.environ['RAW_PASS'])).encode())
while not line().startswith(b'a '):
    pass
start = time.monotonic()
s.sendall(('b EXAMINE "%s"\r\nc UID SEARCH %s%s\r\n' % (folder, ret, criteria)).encode())
while True:
    l = line()
    if l.startswith(b'c '):
        if not l.startswith(b'c OK'): sys.exit(l.decode())
        break
print('%.6f' % (time.monotonic() - start))
s.sendall(b'z LOGOUT\r\n')
"#;

/// The raw client's EXAMINE + `UID SEARCH criteria` of `folder` (with `RETURN (ALL)`, ESEARCH,
/// when `esearch`): its time from sending them to the answer's end, after the login.
pub fn raw_search(d: &Dovecot, port: u16, folder: &str, criteria: &str, esearch: bool) -> Duration {
    let ret = if esearch { "RETURN (ALL) " } else { "" };
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", RAW_SEARCH, &port.to_string(), folder, ret, criteria])
        .env("RAW_USER", &d.user)
        .env("RAW_PASS", &d.password);
    let out = common::run_command(cmd, None, Duration::from_secs(1200)).expect("raw searcher");
    assert!(
        out.status.success(),
        "raw searcher ({folder} {criteria}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a time");
    Duration::from_secs_f64(secs)
}

/// The peak resident memory of a process, in kB.
pub use crate::common::vm_hwm_kb;

/// The raw client: over one implicit TLS connection (Python `ssl`, literals skipped by length),
/// for each job (a folder and a UID set) an EXAMINE and one pipelined `UID FETCH set` of
/// `what`, all sent at once. Credentials through the environment, never argv.
const RAW_CLIENT: &str = r#"
import os, re, socket, ssl, sys
port, what, jobs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
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
cmds = 'a LOGIN %s %s\r\n' % (os.environ['RAW_USER'], os.environ['RAW_PASS'])
for i in range(0, len(jobs), 2):
    cmds += 'b%d EXAMINE "%s"\r\nc%d UID FETCH %s (%s)\r\n' % (i, jobs[i], i, jobs[i + 1], item)
s.sendall((cmds + 'z LOGOUT\r\n').encode())
lit, n = re.compile(rb'\{(\d+)\}$'), 0
while True:
    l = line()
    m = lit.search(l)
    if m:
        skip(int(m.group(1))); n += 1; continue
    if l[:1] in (b'a', b'b', b'c') and l.split(b' ')[1] != b'OK': sys.exit(l.decode())
    if l.startswith(b'z '):
        break
print(n)
"#;

/// The raw client fetching `what` (`body` or `meta`) of all of `folder` on one connection,
/// including its connect and login.
pub fn raw(d: &Dovecot, port: u16, folder: &str, what: &str) -> Duration {
    raw_parallel(d, port, what, &[vec![(folder, "1:*")]])
}

/// The raw client on `connections.len()` connections at once, each fetching its own jobs
/// (folder, UID set) of `what` one after another; the time until the last one is done.
pub fn raw_parallel(
    d: &Dovecot,
    port: u16,
    what: &str,
    connections: &[Vec<(&str, &str)>],
) -> Duration {
    // One retry: a loaded machine sometimes drops a fresh connection during TLS setup.
    std::panic::catch_unwind(|| raw_once(d, port, what, connections))
        .unwrap_or_else(|_| raw_once(d, port, what, connections))
}

fn raw_once(d: &Dovecot, port: u16, what: &str, connections: &[Vec<(&str, &str)>]) -> Duration {
    let t = Instant::now();
    thread::scope(|s| {
        let clients: Vec<_> = connections
            .iter()
            .map(|jobs| {
                s.spawn(move || {
                    let mut cmd = std::process::Command::new("python3");
                    cmd.args(["-c", RAW_CLIENT, &port.to_string(), what])
                        .args(jobs.iter().flat_map(|(f, set)| [*f, *set]))
                        .env("RAW_USER", &d.user)
                        .env("RAW_PASS", &d.password);
                    let out = common::run_command(cmd, None, Duration::from_secs(1200))
                        .expect("raw client");
                    assert!(
                        out.status.success(),
                        "raw client ({jobs:?} {what}): {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
    });
    t.elapsed()
}

/// A message size drawn from a mix like a real mailbox's: most are short, a few are large
/// (about 75 KB on average).
pub fn realistic_size(rng: &mut Rng) -> usize {
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
pub fn message(i: usize, len: usize, filler: &[u8], rng: &mut Rng) -> Vec<u8> {
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

/// A TCP proxy on loopback that delays every chunk by `one_way` in each direction.
pub struct DelayProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Bytes forwarded from the server to its clients (all connections).
    down: Arc<Link>,
}

/// One direction of the emulated link, shared by every connection through the proxy: the
/// bytes it carried, and (when its rate is limited) when it is next free.
struct Link {
    bytes: AtomicU64,
    /// Bytes a second; 0 is unlimited.
    rate: u64,
    free_at: Mutex<Instant>,
}

impl Link {
    fn new(rate: u64) -> Arc<Link> {
        Arc::new(Link {
            bytes: AtomicU64::new(0),
            rate,
            free_at: Mutex::new(Instant::now()),
        })
    }

    /// When `n` bytes that may leave at `due` have all arrived at the other end: the link
    /// carries one chunk at a time at its rate.
    fn arrival(&self, due: Instant, n: usize) -> Instant {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if self.rate == 0 {
            return due;
        }
        let mut free = self.free_at.lock().unwrap();
        let start = due.max(*free);
        *free = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
        *free
    }
}

impl DelayProxy {
    pub fn start(target: u16, one_way: Duration) -> DelayProxy {
        DelayProxy::limited(target, one_way, 0)
    }

    /// A proxy whose link also carries at most `rate` bytes a second in each direction,
    /// shared by all its connections (0: unlimited).
    pub fn limited(target: u16, one_way: Duration, rate: u64) -> DelayProxy {
        let (up, down) = (Link::new(rate), Link::new(rate));
        let down_seen = down.clone();
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
                    up.clone(),
                );
                pipe(server, client, one_way, down.clone());
            }
        });
        DelayProxy {
            port,
            stop,
            down: down_seen,
        }
    }

    /// Bytes the server sent through the proxy so far.
    pub fn bytes_down(&self) -> u64 {
        self.down.bytes.load(Ordering::Relaxed)
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
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration, link: Arc<Link>) {
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
        let due = link.arrival(due, data.len());
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if to.write_all(&data).is_err() {
            return;
        }
    });
}
