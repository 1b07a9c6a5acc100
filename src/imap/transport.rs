//! A blocking byte stream to the server: TCP, optionally wrapped in TLS (rustls), where every
//! read and write waits at most until a deadline.
//!
//! The transport moves bytes and nothing else; framing and meaning belong to the codec and the
//! session. TLS is either implicit (`imaps://`, the handshake right after connect) or started
//! later with [`Transport::start_tls`] (STARTTLS). A certificate that does not verify is reported
//! as such ([`Error::Tls`] with `certificate: true`), so the CLI can say so in one line.
//! Which certificates are trusted is decided in [`crate::imap::tls`].

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::error::{Error, Result};
use crate::imap::compress::Deflate;
use crate::imap::tls::certificate_problem;
pub use crate::imap::tls::{tls_config, tls_config_pinned, Fingerprint};

enum Stream {
    Plain(TcpStream),
    Tls(Box<Tls>),
    Tunnel(Box<Tunnel>),
}

/// A TLS connection driven by hand (`read_tls` / `process_new_packets` / `write_tls`), one
/// socket call at a time, so that the deadline is checked before every call. (rustls's
/// `Stream` loops over socket calls internally, each with a fresh socket timeout: a peer
/// sending one byte of a record now and then could hold it indefinitely.)
struct Tls {
    conn: ClientConnection,
    tcp: TcpStream,
}

/// A command whose stdin and stdout carry the IMAP stream (`ssh host /usr/lib/dovecot/imap`).
struct Tunnel {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connected byte stream with deadlines.
///
/// Invariant: no call returns later than the deadline it was given (give or take one
/// scheduling delay). Every blocking socket call is made with the time left until the
/// deadline as its timeout, and the deadline is checked again before the next call, so a
/// peer that trickles bytes cannot stretch a read, a write or a TLS handshake.
pub struct Transport {
    stream: Stream,
    peer: String,
    /// Bytes handed to the reader so far (IMAP bytes, after TLS and decompression).
    bytes_read: u64,
    /// COMPRESS=DEFLATE once started ([`Transport::compress`]).
    deflate: Option<Box<Deflate>>,
}

/// What crossed the wire compared with what it stood for (see [`Transport::wire`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireBytes {
    /// Bytes received from the socket (after TLS; compressed when compression is on).
    pub received: u64,
    /// Bytes saved by compression on the way in: plaintext minus what was received for it.
    pub saved: u64,
    /// Whether COMPRESS=DEFLATE is on.
    pub compressed: bool,
}

impl Transport {
    /// Open a TCP connection, trying each address of `host` until `timeout` runs out.
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Transport> {
        let peer = format!("{host}:{port}");
        let deadline = Instant::now() + timeout;
        let addrs = resolve(host, port, timeout)?;
        let mut last = None;
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(tcp) => {
                    tcp.set_nodelay(true).ok();
                    return Ok(Transport {
                        stream: Stream::Plain(tcp),
                        peer,
                        bytes_read: 0,
                        deflate: None,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => Error::io(format!("cannot connect to {peer}"), e),
            None => Error::Timeout {
                what: format!("connecting to {peer}"),
            },
        })
    }

    /// Run `command` through `sh -c` and speak IMAP over its stdin and stdout. The tunnel
    /// itself is the protection (ssh, or a local process), so no TLS is layered on top.
    pub fn tunnel(command: &str) -> Result<Transport> {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::io("cannot start the tunnel command", e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(Error::Protocol("tunnel command has no pipes".into()));
        };
        set_nonblocking(stdin.as_raw_fd())?;
        Ok(Transport {
            stream: Stream::Tunnel(Box::new(Tunnel {
                child,
                stdin,
                stdout,
            })),
            peer: "the tunnel".into(),
            bytes_read: 0,
            deflate: None,
        })
    }

    /// Wrap the connection in TLS and complete the handshake before `deadline`.
    pub fn start_tls(
        self,
        config: Arc<ClientConfig>,
        host: &str,
        deadline: Instant,
    ) -> Result<Transport> {
        let Stream::Plain(tcp) = self.stream else {
            return Err(Error::Protocol("TLS is already active".into()));
        };
        if self.deflate.is_some() {
            return Err(Error::Protocol("TLS after COMPRESS".into()));
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| Error::Config(format!("`{host}` is not a valid TLS server name")))?;
        let conn = ClientConnection::new(config, name).map_err(|e| Error::Tls {
            message: e.to_string(),
            certificate: false,
        })?;
        let mut tls = Tls { conn, tcp };
        let during = |e: Error| match e {
            Error::Timeout { .. } => Error::Timeout {
                what: format!("the TLS handshake with {}", self.peer),
            },
            Error::Bye(_) => Error::Tls {
                message: format!(
                    "{} closed the connection during the TLS handshake",
                    self.peer
                ),
                certificate: false,
            },
            other => other,
        };
        while tls.conn.is_handshaking() {
            tls.flush(deadline, &self.peer).map_err(during)?;
            if tls.conn.is_handshaking() && tls.conn.wants_read() {
                tls.fill(deadline, &self.peer).map_err(during)?;
            }
        }
        // The client's last flight (TLS 1.3 Finished) goes out now, not with the first command.
        tls.flush(deadline, &self.peer).map_err(during)?;
        Ok(Transport {
            stream: Stream::Tls(Box::new(tls)),
            peer: self.peer,
            bytes_read: self.bytes_read,
            deflate: None,
        })
    }

    /// Compress both directions from now on (after the tagged OK to `COMPRESS DEFLATE`);
    /// `leftover` is what was read past that OK, already compressed.
    pub fn compress(&mut self, leftover: Vec<u8>) -> Result<()> {
        if self.deflate.is_some() {
            return Err(Error::Protocol("COMPRESS is already active".into()));
        }
        self.deflate = Some(Box::new(Deflate::new(leftover)));
        Ok(())
    }

    /// Bytes on the wire so far, and what compression saved.
    pub fn wire(&self) -> WireBytes {
        match &self.deflate {
            None => WireBytes {
                received: self.bytes_read,
                saved: 0,
                compressed: false,
            },
            Some(d) => {
                let before = self.bytes_read - d.plain_in;
                WireBytes {
                    received: before + d.wire_in,
                    saved: d.plain_in.saturating_sub(d.wire_in),
                    compressed: true,
                }
            }
        }
    }

    /// Read some bytes, waiting until `deadline` at most. `Ok(0)` means the server closed.
    pub fn read(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize> {
        let Some(mut deflate) = self.deflate.take() else {
            let n = self.read_raw(buf, deadline)?;
            self.bytes_read += n as u64;
            return Ok(n);
        };
        let result = self.read_inflated(&mut deflate, buf, deadline);
        self.deflate = Some(deflate);
        let n = result?;
        self.bytes_read += n as u64;
        Ok(n)
    }

    /// Plaintext from the compressed stream: socket reads until some arrive.
    fn read_inflated(
        &mut self,
        deflate: &mut Deflate,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<usize> {
        let mut raw = vec![0u8; buf.len().max(4096)];
        loop {
            let n = deflate.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if deflate.ended() {
                return Ok(0); // the server ended its stream: nothing more will come
            }
            let got = self.read_raw(&mut raw, deadline)?;
            if got == 0 {
                return Ok(0);
            }
            deflate.take_in(&raw[..got]);
        }
    }

    /// Bytes from the socket (after TLS, before decompression).
    fn read_raw(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize> {
        let n = match &mut self.stream {
            Stream::Plain(s) => {
                set_read_timeout(s, deadline, &self.peer)?;
                match s.read(buf) {
                    Ok(n) => n,
                    Err(e) => return Err(read_error(e, &self.peer)),
                }
            }
            Stream::Tls(t) => t.read(buf, deadline, &self.peer)?,
            Stream::Tunnel(t) => {
                wait_fd(t.stdout.as_raw_fd(), libc::POLLIN, deadline, &self.peer)?;
                match t.stdout.read(buf) {
                    Ok(n) => n,
                    Err(e) => return Err(read_error(e, &self.peer)),
                }
            }
        };
        Ok(n)
    }

    /// Write all of `data` before `deadline` (compressed, when compression is on).
    pub fn write_all(&mut self, data: &[u8], deadline: Instant) -> Result<()> {
        match self.deflate.as_mut() {
            None => self.write_raw(data, deadline),
            Some(d) => {
                let wire = d.compress(data)?;
                self.write_raw(&wire, deadline)
            }
        }
    }

    fn write_raw(&mut self, data: &[u8], deadline: Instant) -> Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => {
                let mut rest = data;
                while !rest.is_empty() {
                    set_write_timeout(s, deadline, &self.peer)?;
                    match s.write(rest) {
                        Ok(0) => return Err(Error::Bye(format!("{} stopped reading", self.peer))),
                        Ok(n) => rest = &rest[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::io(format!("sending to {}", self.peer), e)),
                    }
                }
                Ok(())
            }
            Stream::Tls(t) => t.write_all(data, deadline, &self.peer),
            Stream::Tunnel(t) => {
                let mut rest = data;
                while !rest.is_empty() {
                    wait_fd(t.stdin.as_raw_fd(), libc::POLLOUT, deadline, &self.peer)?;
                    match t.stdin.write(rest) {
                        Ok(0) => return Err(Error::Bye(format!("{} stopped reading", self.peer))),
                        Ok(n) => rest = &rest[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::io(format!("sending to {}", self.peer), e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether bytes (or the end of the stream) are waiting to be read right now, without
    /// blocking: a check on a connection that sat idle. TLS records that carry nothing to
    /// read (TLS 1.3 session tickets, key updates) are taken in and do not count.
    pub fn readable_now(&mut self) -> bool {
        let Some(mut deflate) = self.deflate.take() else {
            return self.raw_readable_now();
        };
        let readable = self.inflated_readable_now(&mut deflate);
        self.deflate = Some(deflate);
        readable
    }

    /// With compression, bytes on the socket may stand for nothing (a sync flush's empty
    /// block ends every server write): they are taken in and decompressed here, and only
    /// plaintext (or the end, or an error) counts as readable.
    fn inflated_readable_now(&mut self, deflate: &mut Deflate) -> bool {
        let mut raw = vec![0u8; 16 * 1024];
        for _ in 0..64 {
            if deflate.inflate_some().is_err() {
                return true; // the read will report the corrupt stream
            }
            if deflate.has_plain() || deflate.has_input() || deflate.ended() {
                return true; // plaintext, or an end the read will report
            }
            if !self.raw_readable_now() {
                return false;
            }
            // Readable, so this does not block; a moment's deadline all the same.
            let deadline = Instant::now() + Duration::from_millis(50);
            match self.read_raw(&mut raw, deadline) {
                Ok(0) | Err(_) => return true,
                Ok(n) => deflate.take_in(&raw[..n]),
            }
        }
        true
    }

    fn raw_readable_now(&mut self) -> bool {
        match &mut self.stream {
            Stream::Plain(s) => poll_readable(s.as_raw_fd()),
            Stream::Tunnel(t) => poll_readable(t.stdout.as_raw_fd()),
            Stream::Tls(t) => {
                // Bounded: a peer streaming empty records is "readable" after a while.
                for _ in 0..64 {
                    match t.conn.process_new_packets() {
                        Ok(io) if io.plaintext_bytes_to_read() == 0 && !io.peer_has_closed() => {}
                        _ => return true, // data, close_notify, or an error the read will report
                    }
                    if !poll_readable(t.tcp.as_raw_fd()) {
                        return false;
                    }
                    // The socket has bytes, so this read does not block.
                    match t.conn.read_tls(&mut t.tcp) {
                        Ok(0) | Err(_) => return true, // closed or failing: the read will tell
                        Ok(_) => {}
                    }
                }
                true
            }
        }
    }

    /// Whether the bytes are protected by TLS (or by a tunnel the user chose).
    pub fn is_protected(&self) -> bool {
        !matches!(self.stream, Stream::Plain(_))
    }

    /// Bytes read so far (the IMAP stream, after TLS).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Close the connection in both directions (used to abort a stuck connection).
    pub fn shutdown(&mut self) {
        match &mut self.stream {
            Stream::Plain(s) => drop(s.shutdown(std::net::Shutdown::Both)),
            Stream::Tls(t) => drop(t.tcp.shutdown(std::net::Shutdown::Both)),
            Stream::Tunnel(t) => drop(t.child.kill()),
        }
    }
}

impl Tls {
    /// Decrypted bytes into `buf`, reading records until some arrive or `deadline` passes.
    fn read(&mut self, buf: &mut [u8], deadline: Instant, peer: &str) -> Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the server sent close_notify
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // A peer that closes without close_notify: EOF, the session reports it.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(read_error(e, peer)),
            }
            // Alerts or key updates rustls wants to answer go out first.
            self.flush(deadline, peer)?;
            match self.fill(deadline, peer) {
                Ok(()) => {}
                Err(Error::Bye(_)) => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypt and send all of `data`, then everything rustls holds, before `deadline`.
    fn write_all(&mut self, data: &[u8], deadline: Instant, peer: &str) -> Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let n = self
                .conn
                .writer()
                .write(rest)
                .map_err(|e| Error::io(format!("sending to {peer}"), e))?;
            rest = &rest[n..];
            self.flush(deadline, peer)?;
        }
        self.flush(deadline, peer)
    }

    /// One socket read of TLS records (at most until `deadline`), then decrypt them.
    /// The end of the TCP stream is [`Error::Bye`].
    fn fill(&mut self, deadline: Instant, peer: &str) -> Result<()> {
        set_read_timeout(&self.tcp, deadline, peer)?;
        let n = loop {
            match self.conn.read_tls(&mut self.tcp) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e, peer)),
            }
        };
        let state = self.conn.process_new_packets();
        if let Err(e) = state {
            // Tell the peer why (best effort), then report the TLS error.
            let _ = self.flush(deadline, peer);
            return Err(tls_error(
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                peer,
            ));
        }
        if n == 0 {
            return Err(Error::Bye(format!("{peer} closed the connection")));
        }
        Ok(())
    }

    /// Send what rustls has queued, one socket write at a time, before `deadline`.
    fn flush(&mut self, deadline: Instant, peer: &str) -> Result<()> {
        while self.conn.wants_write() {
            set_write_timeout(&self.tcp, deadline, peer)?;
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(Error::Bye(format!("{peer} stopped reading"))),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("sending to {peer}"), e)),
            }
        }
        Ok(())
    }
}

fn read_error(e: std::io::Error, peer: &str) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return Error::Bye(format!("{peer} closed"));
    }
    if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
        return tls_error(e, peer);
    }
    Error::io(format!("reading from {peer}"), e)
}

/// Resolve `host` within `timeout`. getaddrinfo has no timeout of its own, so it runs on a
/// helper thread that is abandoned if the resolver hangs.
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<std::net::SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![std::net::SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    let resolver = std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send(
                (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>()),
            );
        })
        .map_err(|e| Error::io("starting the resolver thread", e))?;
    let answer = rx.recv_timeout(timeout);
    if answer.is_ok() {
        // It has answered and is about to end: wait for that, so that no thread is left
        // running when the mount daemonises (fork).
        let _ = resolver.join();
    }
    match answer {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(Error::Config(format!("{host} has no address"))),
        Ok(Err(e)) => Err(Error::Io {
            context: format!("cannot resolve {host}"),
            source: e,
        }),
        Err(_) => Err(Error::Timeout {
            what: format!("resolving {host}"),
        }),
    }
}

/// Whether `fd` is readable (or at its end, or in error) right now.
fn poll_readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n != 0 // ready, or poll itself failed: either way a read will tell
}

/// Wait until `fd` is ready for `events` or `deadline` passes.
fn wait_fd(fd: RawFd, events: libc::c_short, deadline: Instant, peer: &str) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: format!("waiting for {peer}"),
            });
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return Ok(()); // readable, writable, or hung up: the read or write will tell
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io(format!("waiting for {peer}"), e));
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) -> Result<()> {
    // SAFETY: fcntl on a valid fd owned by this process.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(Error::io(
            "configuring the tunnel",
            std::io::Error::last_os_error(),
        ))
    }
}

fn set_read_timeout(tcp: &TcpStream, deadline: Instant, peer: &str) -> Result<()> {
    tcp.set_read_timeout(Some(time_left(deadline, peer)?))
        .map_err(|e| Error::io("setting a socket timeout", e))
}

fn set_write_timeout(tcp: &TcpStream, deadline: Instant, peer: &str) -> Result<()> {
    tcp.set_write_timeout(Some(time_left(deadline, peer)?))
        .map_err(|e| Error::io("setting a socket timeout", e))
}

/// The time until `deadline`, or [`Error::Timeout`] if it has passed.
fn time_left(deadline: Instant, peer: &str) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout {
            what: format!("waiting for {peer}"),
        });
    }
    // Below a microsecond the kernel would round the timeout to 0, which means "forever".
    Ok(left.max(Duration::from_micros(1)))
}

fn tls_error(e: std::io::Error, peer: &str) -> Error {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        let certificate = matches!(
            tls,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        );
        let message = match tls {
            rustls::Error::InvalidCertificate(c) => certificate_problem(c, peer),
            other => format!("{other} (server {peer})"),
        };
        return Error::Tls {
            message,
            certificate,
        };
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Tls {
            message: format!("{peer} closed the connection during the TLS handshake"),
            certificate: false,
        },
        _ => Error::io(format!("TLS handshake with {peer}"), e),
    }
}
