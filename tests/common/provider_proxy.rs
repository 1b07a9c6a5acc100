//! A proxy in front of a plaintext server that plays a provider's manners: it records every
//! command line the client sends (so a test can check that nothing outside the advertised
//! capabilities was used) and can throttle reads the way Microsoft 365 does (a tagged
//! `NO Request is throttled. Suggested Backoff Time: N milliseconds` instead of the answer,
//! and after every second throttle on a connection, `* BYE` and a closed connection).
//!
//! A throttled command is never forwarded: the proxy answers it itself. It only intercepts a
//! read that arrived alone in one segment (a pipelined batch passes untouched), which is how
//! the client sends single reads. A command that comes less than the suggested time after a
//! throttle reply on the same connection is counted as `impatient`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// See the module documentation.
pub struct ProviderProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    /// Every command line seen (without its CRLF; literals are not lines).
    lines: Mutex<Vec<String>>,
    /// Throttle every `every`-th single read (0: never).
    every: usize,
    wait: Duration,
    reads: AtomicUsize,
    throttled: AtomicUsize,
    impatient: AtomicUsize,
    stop: AtomicBool,
}

impl ProviderProxy {
    /// A recording proxy to `server_port` that never throttles.
    pub fn recording(server_port: u16) -> ProviderProxy {
        ProviderProxy::start(server_port, 0, Duration::ZERO)
    }

    /// A proxy that answers every `every`-th single `UID FETCH` of a body with a throttle
    /// reply suggesting `wait`.
    pub fn throttling(server_port: u16, every: usize, wait: Duration) -> ProviderProxy {
        ProviderProxy::start(server_port, every, wait)
    }

    fn start(server_port: u16, every: usize, wait: Duration) -> ProviderProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            lines: Mutex::new(Vec::new()),
            every,
            wait,
            reads: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
            impatient: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    return;
                };
                let to_client = Arc::new(Mutex::new(client.try_clone().expect("clone")));
                let (s2, c2, sh2) = (
                    server.try_clone().expect("clone"),
                    to_client.clone(),
                    sh.clone(),
                );
                std::thread::spawn(move || client_side(client, s2, c2, &sh2));
                std::thread::spawn(move || server_side(server, &to_client));
            }
        });
        ProviderProxy { port, shared }
    }

    /// Every command line the client sent so far.
    pub fn lines(&self) -> Vec<String> {
        self.shared.lines.lock().expect("lines").clone()
    }

    /// Throttle replies sent so far.
    pub fn throttled(&self) -> usize {
        self.shared.throttled.load(Ordering::SeqCst)
    }

    /// Commands that came sooner than the suggested wait after a throttle reply.
    pub fn impatient(&self) -> usize {
        self.shared.impatient.load(Ordering::SeqCst)
    }
}

impl Drop for ProviderProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn client_side(
    mut client: TcpStream,
    mut server: TcpStream,
    to_client: Arc<Mutex<TcpStream>>,
    sh: &Shared,
) {
    let mut buf = vec![0u8; 65536];
    let mut partial: Vec<u8> = Vec::new();
    let mut skip = 0usize;
    let mut throttled_at: Option<Instant> = None;
    let mut throttles_here = 0u32;
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &buf[..n];
        let lines = split_lines(data, &mut partial, &mut skip);
        if let Some(at) = throttled_at.take() {
            if at.elapsed() < sh.wait && !lines.is_empty() {
                sh.impatient.fetch_add(1, Ordering::SeqCst);
            }
        }
        sh.lines
            .lock()
            .expect("lines")
            .extend(lines.iter().cloned());
        // A single body read, alone in this segment?
        let single_read = lines.len() == 1
            && partial.is_empty()
            && data.ends_with(b"\r\n")
            && is_body_read(&lines[0]);
        if sh.every > 0 && single_read {
            let k = sh.reads.fetch_add(1, Ordering::SeqCst) + 1;
            if k.is_multiple_of(sh.every) {
                let tag = lines[0].split(' ').next().unwrap_or("*").to_string();
                let mut reply = format!(
                    "{tag} NO Request is throttled. Suggested Backoff Time: {} milliseconds\r\n",
                    sh.wait.as_millis()
                );
                sh.throttled.fetch_add(1, Ordering::SeqCst);
                throttles_here += 1;
                let bye = throttles_here.is_multiple_of(2);
                if bye {
                    reply.push_str("* BYE Connection is closed. 15\r\n");
                }
                let mut c = to_client.lock().expect("client");
                let _ = c.write_all(reply.as_bytes());
                drop(c);
                if bye {
                    break;
                }
                throttled_at = Some(Instant::now());
                continue;
            }
        }
        if server.write_all(data).is_err() {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
}

fn server_side(mut server: TcpStream, to_client: &Mutex<TcpStream>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut c = to_client.lock().expect("client");
        if c.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if let Ok(c) = to_client.lock() {
        let _ = c.shutdown(Shutdown::Both);
    }
}

fn is_body_read(line: &str) -> bool {
    let upper = line.to_ascii_uppercase();
    upper.contains(" UID FETCH ") && upper.contains("BODY.PEEK[")
}

/// The command lines completed by `data` (literal bytes skipped by their announced length).
fn split_lines(mut data: &[u8], partial: &mut Vec<u8>, skip: &mut usize) -> Vec<String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if *skip > 0 {
            let n = (*skip).min(data.len());
            *skip -= n;
            data = &data[n..];
            continue;
        }
        match data.iter().position(|&b| b == b'\n') {
            None => {
                partial.extend_from_slice(data);
                data = &[];
            }
            Some(i) => {
                partial.extend_from_slice(&data[..=i]);
                data = &data[i + 1..];
                let line = std::mem::take(partial);
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if text.ends_with('}') {
                    if let Some(open) = text.rfind('{') {
                        let n = text[open + 1..text.len() - 1].trim_end_matches(['+', '-']);
                        *skip = n.parse().unwrap_or(0);
                    }
                }
                out.push(text);
            }
        }
    }
    out
}
