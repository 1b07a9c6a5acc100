//! Benchmarks, run by `scripts/bench.sh` (ignored by `cargo test`): they print figures and
//! ratios, and assert nothing about time.
//!
//! A private Dovecot holds a folder of many small messages and one big message. imapfs is
//! measured on plain loopback and behind a proxy that adds a round-trip delay (default 20 ms,
//! like a real provider), against the cheapest possible client: one pipelined
//! `UID FETCH 1:* BODY.PEEK[]` by Python's imaplib over the same path.

mod common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{run, Dovecot, MountOptions, Rng, Seed};

const SMALL: usize = 1000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_seed() -> Seed {
    let mut seed = Seed::new();
    let mut rng = Rng::new(7);
    let small = env_or("BENCH_MESSAGES", SMALL as u64) as usize;
    let folder = seed.folder_mut("Bench");
    for i in 0..small {
        let len = 2_000 + rng.below(30_000) as usize;
        let mut body = format!(
            "From: a@example.org\r\nTo: b@example.org\r\nSubject: bench {i}\r\nMessage-ID: <b{i}@x>\r\n\r\n"
        )
        .into_bytes();
        while body.len() < len {
            body.extend_from_slice(
                format!("line {} of message {i} {}\r\n", body.len(), rng.next_u64()).as_bytes(),
            );
        }
        folder.push(
            body,
            &[],
            &format!("bench {i}"),
            "a@example.org",
            &format!("<b{i}@x>"),
            1_700_000_000,
            1_700_000_000,
        );
    }
    let big_mb = env_or("BENCH_BIG_MB", 50) as usize;
    let mut big = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    while big.len() < big_mb << 20 {
        big.extend_from_slice(format!("{:076}\r\n", rng.next_u64()).as_bytes());
    }
    seed.folder_mut("Huge").push(
        big,
        &[],
        "big",
        "a@example.org",
        "<big@x>",
        1_700_000_000,
        1_700_000_000,
    );
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

fn timed(what: &str, cmd: &[&str]) -> Duration {
    let t = Instant::now();
    let out = run(
        &cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        Duration::from_secs(600),
    );
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn baseline(d: &Dovecot, port: u16, folder: &str) -> Duration {
    let script = format!(
        "import imaplib,ssl,sys\n\
         c=ssl.create_default_context(cafile=sys.argv[1]); c.check_hostname=False\n\
         m=imaplib.IMAP4_SSL('127.0.0.1',{port},ssl_context=c); m.login(sys.argv[2],sys.argv[3])\n\
         m.select('\"{folder}\"',readonly=True); t,d=m.uid('FETCH','1:*','(BODY.PEEK[])'); m.logout()\n"
    );
    let t = Instant::now();
    let out = run(
        &[
            "python3".to_string(),
            "-c".into(),
            script,
            d.ca_file.display().to_string(),
            d.user.clone(),
            d.password.clone(),
        ],
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "baseline: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn measure(d: &Dovecot, seed: &Seed, label: &str, port: u16) {
    let url = format!("imaps://{}@127.0.0.1:{port}", d.user);
    let total: usize = seed
        .folder("Bench")
        .messages
        .iter()
        .map(|m| m.bytes.len())
        .sum();
    let big = seed.folder("Huge").messages[0].bytes.len();
    let n = seed.folder("Bench").messages.len();
    let mb = |b: usize| b as f64 / 1048576.0;

    let mount = MountOptions::new(d)
        .url(url.clone())
        .quiet()
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = mount.join("Bench");
    let dir = dir.to_str().unwrap();
    let t_ls = timed(
        "ls -l",
        &["sh", "-c", &format!("ls -l '{dir}' > /dev/null")],
    );
    let t_cat = timed(
        "cat",
        &["sh", "-c", &format!("cat '{dir}'/*.eml > /dev/null")],
    );
    let t_cat_warm = timed(
        "cat warm",
        &["sh", "-c", &format!("cat '{dir}'/*.eml > /dev/null")],
    );
    let huge = mount.join("Huge/1.eml");
    let t_big = timed(
        "cat big",
        &["sh", "-c", &format!("cat '{}' > /dev/null", huge.display())],
    );
    let hwm = vm_hwm_kb(mount.pid());
    drop(mount);

    let mount = MountOptions::new(d)
        .url(url)
        .quiet()
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = mount.join("Bench");
    let t_grep = timed(
        "grep",
        &[
            "sh",
            "-c",
            &format!(
                "grep -rl 'line 1000 of message 7 ' '{}' > /dev/null; true",
                dir.display()
            ),
        ],
    );
    drop(mount);

    let t_base = baseline(d, port, "Bench");
    let t_base_big = baseline(d, port, "Huge");
    println!("\n== {label} ==");
    println!(
        "ls -l {n} messages (cold)        {:8.3} s",
        t_ls.as_secs_f64()
    );
    println!(
        "cat {n} messages, {:.1} MB (cold) {:8.3} s  {:7.0} msg/s  {:6.1} MB/s",
        mb(total),
        t_cat.as_secs_f64(),
        n as f64 / t_cat.as_secs_f64(),
        mb(total) / t_cat.as_secs_f64()
    );
    println!(
        "cat again (page cache)           {:8.3} s",
        t_cat_warm.as_secs_f64()
    );
    println!(
        "grep -r (fresh mount)            {:8.3} s",
        t_grep.as_secs_f64()
    );
    println!(
        "cat {:.0} MB message               {:8.3} s  {:6.1} MB/s",
        mb(big),
        t_big.as_secs_f64(),
        mb(big) / t_big.as_secs_f64()
    );
    println!(
        "baseline: one UID FETCH 1:* of the folder (python imaplib) {:8.3} s",
        t_base.as_secs_f64()
    );
    println!(
        "baseline: one FETCH of the big message                     {:8.3} s",
        t_base_big.as_secs_f64()
    );
    println!(
        "ratio imapfs/baseline: folder cat {:.2}x, grep {:.2}x, big message {:.2}x",
        t_cat.as_secs_f64() / t_base.as_secs_f64(),
        t_grep.as_secs_f64() / t_base.as_secs_f64(),
        t_big.as_secs_f64() / t_base_big.as_secs_f64()
    );
    println!(
        "imapfs peak RSS {:.1} MB (cache limit 256 MB)",
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
        "cat '{}'/*.eml '{}' > /dev/null",
        mount.join("Bench").display(),
        mount.join("Huge/1.eml").display()
    );
    let t = timed("cat all", &["sh", "-c", &all]);
    let hwm = vm_hwm_kb(mount.pid());
    println!("\n== --cache-size {cache} ==\nread the folder and the big message in {:.3} s; imapfs peak RSS {:.1} MB", t.as_secs_f64(), hwm as f64 / 1024.0);
}

#[test]
#[ignore = "benchmark: run scripts/bench.sh"]
fn bench() {
    let seed = bench_seed();
    let d = Dovecot::start(&seed);
    measure(&d, &seed, "loopback", d.imaps_port);
    measure_memory(&d, "16M");
    let rtt = env_or("BENCH_RTT_MS", 20);
    if rtt > 0 {
        let proxy = DelayProxy::start(d.imaps_port, Duration::from_millis(rtt / 2));
        measure(
            &d,
            &seed,
            &format!("{rtt} ms round trip (delay proxy)"),
            proxy.port,
        );
    }
}
