//! Scripted IMAP servers for engine-level tests: the server's side of a conversation is a
//! closure, so a test can make it misbehave in exactly one way (inject replies before
//! STARTTLS, trickle bytes, flood a command, close connections) and talk to it with the
//! library directly, without a mount.
//!
//! - [`Script::start`]: listen on a loopback port (implicit TLS or plaintext) and run the
//!   closure for every connection, on its own thread, with a [`Conn`]. [`Script::start_on`]
//!   takes a listener the test bound itself (to know the port before the server exists).
//! - [`Conn`]: send bytes, read commands ([`Conn::command`]), upgrade to TLS
//!   ([`Conn::start_tls`]), answer the usual login-time commands ([`Conn::answer_basic`]),
//!   or produce TLS records without sending them ([`Conn::seal`]) to trickle them byte by byte.
//! - [`config`]: a [`ServerConfig`] for a script, with short timeouts.
//! - [`capture_logs`] / [`logged`]: the log lines the library wrote in this test binary.
//! - [`mailbox::MailboxServer`]: a script serving one mailbox to a real mount, with listed
//!   sizes that may lie and blocks that fail on demand.
//! - [`writes::WriteServer`]: a script serving one read-write mailbox to a real mount, whose
//!   expunges and flag stores misbehave on demand.
//!
//! `Drop` of a [`Script`] stops it: every connection thread checks the stop flag at least every
//! 100 ms and then closes its socket.

#![allow(dead_code)]

pub mod gmail;
pub mod mailbox;
pub mod writes;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use imapfs::imap::auth::{AuthMethod, Credential, Secret, Security, ServerConfig};
use imapfs::imap::codec::Limits;
use imapfs::imap::session::Timeouts;
use imapfs::imap::transport::tls_config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::common;

/// How a script's connections start.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wire {
    /// TLS from the first byte (imaps).
    Tls,
    /// Plaintext; the script may call [`Conn::start_tls`] (STARTTLS).
    Plain,
}

/// A running scripted server; see the module documentation.
pub struct Script {
    pub port: u16,
    pub ca_file: PathBuf,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    dir: PathBuf,
}

/// The server side of one connection.
pub struct Conn {
    stream: Stream,
    tls: Arc<rustls::ServerConfig>,
    stop: Arc<AtomicBool>,
    /// 0 for the first connection the script accepted, then 1, 2, ...
    pub index: usize,
    pending: Vec<u8>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
    Closed,
}

/// One command line the client sent.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub tag: String,
    /// Upper case.
    pub verb: String,
    /// The rest of the line after the verb.
    pub rest: String,
}

impl Script {
    pub fn start(wire: Wire, script: impl Fn(&mut Conn) + Send + Sync + 'static) -> Script {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Script::start_on(listener, wire, script)
    }

    pub fn start_on(
        listener: TcpListener,
        wire: Wire,
        script: impl Fn(&mut Conn) + Send + Sync + 'static,
    ) -> Script {
        let dir = common::unique_temp_dir("script");
        let ca_file = dir.join("cert.pem");
        let (cert_pem, key_pem) = common::self_signed_certificate();
        std::fs::write(&ca_file, &cert_pem).expect("write cert");
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .map(|c| c.expect("cert"))
                .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config"),
        );
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let (st, acc) = (stop.clone(), accepted.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let index = acc.fetch_add(1, Ordering::SeqCst);
                        let (tls, st, script) = (tls.clone(), st.clone(), script.clone());
                        thread::spawn(move || {
                            tcp.set_nonblocking(false).ok();
                            tcp.set_nodelay(true).ok();
                            tcp.set_read_timeout(Some(Duration::from_millis(100))).ok();
                            let stream = match wire {
                                Wire::Plain => Stream::Plain(tcp),
                                Wire::Tls => {
                                    let conn = rustls::ServerConnection::new(tls.clone())
                                        .expect("server connection");
                                    Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
                                }
                            };
                            let mut conn = Conn {
                                stream,
                                tls,
                                stop: st,
                                index,
                                pending: Vec::new(),
                            };
                            script(&mut conn);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Script {
            port,
            ca_file,
            accepted,
            stop,
            dir,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Conn {
    /// Send bytes (ignoring errors: the client may be gone).
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = match &mut self.stream {
            Stream::Plain(s) => s.write_all(bytes).and_then(|_| s.flush()),
            Stream::Tls(s) => s.write_all(bytes).and_then(|_| s.flush()),
            Stream::Closed => Ok(()),
        };
    }

    /// The next command line, or `None` when the client closed or the script was stopped.
    pub fn command(&mut self) -> Option<Cmd> {
        let line = self.line()?;
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let mut words = text.splitn(3, ' ');
        Some(Cmd {
            tag: words.next().unwrap_or("*").to_string(),
            verb: words.next().unwrap_or("").to_ascii_uppercase(),
            rest: words.next().unwrap_or("").to_string(),
        })
    }

    /// The next bytes the client sent, whatever they are (a compressed stream has no lines),
    /// or `None` when the client closed or the script was stopped.
    pub fn read_raw(&mut self) -> Option<Vec<u8>> {
        if !self.pending.is_empty() {
            return Some(std::mem::take(&mut self.pending));
        }
        self.receive()
    }

    /// The next raw line the client sent (with its CRLF).
    pub fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                return Some(self.pending.drain(..=pos).collect());
            }
            let more = self.receive()?;
            self.pending.extend_from_slice(&more);
        }
    }

    /// One read from the socket (waiting through timeouts until the stop flag is raised).
    fn receive(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 4096];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                self.close();
                return None;
            }
            let r = match &mut self.stream {
                Stream::Plain(s) => s.read(&mut buf),
                Stream::Tls(s) => s.read(&mut buf),
                Stream::Closed => return None,
            };
            match r {
                Ok(0) => return None,
                Ok(n) => return Some(buf[..n].to_vec()),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return None,
            }
        }
    }

    /// Answer the commands every login needs (CAPABILITY with `caps`, AUTHENTICATE, LOGIN,
    /// NOOP, LOGOUT, ENABLE). Returns false for any other command, which is left to the script.
    pub fn answer_basic(&mut self, cmd: &Cmd, caps: &str) -> bool {
        let tag = &cmd.tag;
        match cmd.verb.as_str() {
            "CAPABILITY" => {
                self.send(format!("* CAPABILITY {caps}\r\n{tag} OK done\r\n").as_bytes())
            }
            "AUTHENTICATE" | "LOGIN" | "NOOP" | "ENABLE" => {
                self.send(format!("{tag} OK done\r\n").as_bytes())
            }
            "LOGOUT" => {
                self.send(format!("* BYE bye\r\n{tag} OK done\r\n").as_bytes());
                self.close();
            }
            _ => return false,
        }
        true
    }

    /// Upgrade a plaintext connection to TLS (after the script sent its STARTTLS OK).
    pub fn start_tls(&mut self) {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            panic!("start_tls on a connection that is not plaintext");
        };
        let conn = rustls::ServerConnection::new(self.tls.clone()).expect("server connection");
        self.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
        self.pending.clear();
    }

    /// The bytes of TLS records carrying `plaintext`, produced but not sent (for trickling).
    /// Only on a TLS connection whose handshake is done.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let Stream::Tls(s) = &mut self.stream else {
            panic!("seal on a connection without TLS");
        };
        s.conn
            .writer()
            .write_all(plaintext)
            .expect("buffer plaintext");
        let mut out = Vec::new();
        while s.conn.wants_write() {
            s.conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    /// The TCP socket under TLS or plaintext, for raw writes.
    pub fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
            Stream::Closed => panic!("connection closed"),
        }
    }

    /// The server's TLS configuration (to drive a handshake by hand).
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.clone()
    }

    /// Send `bytes` on the raw socket one at a time, `every` apart (a peer that trickles),
    /// until done, the client is gone or the script stops. Returns whether all were sent.
    pub fn trickle(&mut self, bytes: &[u8], every: Duration) -> bool {
        for b in bytes {
            if self.stopping() {
                return false;
            }
            let mut tcp = self.tcp();
            if tcp.write_all(&[*b]).is_err() {
                return false;
            }
            thread::sleep(every);
        }
        true
    }

    /// Whether the script is being stopped.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Close the connection (both directions).
    pub fn close(&mut self) {
        if let Stream::Plain(s) = &self.stream {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
            let _ = s.get_ref().shutdown(std::net::Shutdown::Both);
        }
        self.stream = Stream::Closed;
    }

    /// Keep the connection open and silent until the client goes away or the script stops.
    pub fn hold(&mut self) {
        while self.line().is_some() {}
    }
}

/// A configuration for logging in to `script` with short timeouts (1 s of silence, 4 s per
/// command), implicit TLS unless `security` says otherwise.
pub fn config(script: &Script, security: Security) -> ServerConfig {
    config_at(script.port, &script.ca_file, security)
}

/// [`config`] for a port where a script may not run (yet), trusting `ca_file`.
pub fn config_at(port: u16, ca_file: &std::path::Path, security: Security) -> ServerConfig {
    ServerConfig {
        host: "127.0.0.1".into(),
        port,
        security,
        tls: tls_config(Some(ca_file)).expect("tls config"),
        user: "tester".into(),
        credential: Credential::Secret(Secret::new(b"secret".to_vec())),
        timeouts: Timeouts {
            inactivity: Duration::from_secs(1),
            command: Duration::from_secs(4),
        },
        limits: Limits::default(),
        auth: AuthMethod::Auto,
        tunnel: None,
        compress: true,
    }
}

static LOGS: OnceLock<Mutex<Vec<(log::Level, String)>>> = OnceLock::new();

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Debug
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            if let Some(logs) = LOGS.get() {
                let line = record.args().to_string();
                logs.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((record.level(), line));
            }
        }
    }
    fn flush(&self) {}
}

/// Record the library's log lines (up to debug level) for [`logged`]. Idempotent.
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Debug);
        Mutex::new(Vec::new())
    });
}

/// The log lines recorded so far that contain `needle`, with their level.
pub fn logged(needle: &str) -> Vec<(log::Level, String)> {
    LOGS.get()
        .map(|l| {
            l.lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(_, line)| line.contains(needle))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}
