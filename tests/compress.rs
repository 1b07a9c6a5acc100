//! COMPRESS=DEFLATE (RFC 4978, issue 15): against Dovecot with its `imap_zlib` plugin (reads
//! byte-identical, bytes saved counted in `user.imapfs.stats`, `-o compress=no` honoured),
//! and against a scripted server whose compressed stream is corrupt or cut short (a clear
//! error, no panic, the next request on a new connection).

mod common;
mod script;

use std::collections::BTreeMap;
use std::process::Command as Process;
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use imapfs::imap::auth::{connect, Security};
use imapfs::imap::codec::Command;
use imapfs::imap::pool::{Pool, Retry};
use imapfs::Error;

use common::{Dovecot, Mount, Seed};
use script::{Conn, Script, Wire};

/// Dovecot offering COMPRESS=DEFLATE (Debian's dovecot-core ships lib30_imap_zlib_plugin).
const ZLIB: &str = "mail_plugins = $mail_plugins zlib\n\
                    protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n";

/// `key=value` lines of the mount's `user.imapfs.stats`.
fn stats(mount: &Mount) -> BTreeMap<String, String> {
    let out = Process::new("getfattr")
        .args(["--only-values", "-n", "user.imapfs.stats"])
        .arg(mount.path())
        .output()
        .expect("getfattr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn number(stats: &BTreeMap<String, String>, key: &str) -> u64 {
    stats
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {stats:?}"))
}

#[test]
fn the_engine_compresses_where_dovecot_offers_it() {
    let d = Dovecot::start_with(Seed::standard(), ZLIB);
    let mut session = connect(&d.server_config(Security::Tls)).expect("connect");
    assert!(session.wire().compressed, "COMPRESS=DEFLATE not started");
    for _ in 0..3 {
        session
            .run(Command::Noop)
            .expect("a command after COMPRESS");
    }
    let mut off = d.server_config(Security::Tls);
    off.compress = false;
    let plain = connect(&off).expect("connect without compression");
    assert!(!plain.wire().compressed);
}

#[test]
fn reads_through_a_compressed_mount_are_byte_identical_and_the_saving_is_counted() {
    let d = Dovecot::start_with(Seed::standard(), ZLIB);
    let mount = Mount::start(&d, &[]).expect("mount");
    for (folder, take) in [("INBOX", usize::MAX), ("Big", 4)] {
        for (uid, body) in d.oracle_fetch_all(folder).into_iter().take(take) {
            let got = std::fs::read(mount.join(format!("{folder}/{uid}.eml"))).expect("read");
            assert!(got == body, "{folder}/{uid}.eml differs from the server's");
        }
    }
    let s = stats(&mount);
    assert_eq!(s.get("compress").map(String::as_str), Some("on"), "{s:?}");
    let (read, wire, saved) = (
        number(&s, "bytes_read"),
        number(&s, "bytes_on_wire"),
        number(&s, "bytes_saved"),
    );
    assert!(wire < read && saved > 0, "{s:?}");
    // Counted per request; bytes taken in between requests (a check of an idle connection)
    // may fall on either side, so the two counts agree to within a few bytes.
    assert!((read - wire).abs_diff(saved) < read / 1000, "{s:?}");
    println!(
        "compression ratio {:.2} ({read} bytes for {wire} on the wire)",
        read as f64 / wire as f64
    );
    drop(mount);
    // Turned off, nothing is saved and nothing is compressed.
    let mount = Mount::start(&d, &["-o", "compress=no"]).expect("mount");
    let (uid, body) = d
        .oracle_fetch_all("INBOX")
        .into_iter()
        .next()
        .expect("mail");
    assert_eq!(
        std::fs::read(mount.join(format!("INBOX/{uid}.eml"))).expect("read"),
        body
    );
    let s = stats(&mount);
    assert_eq!(s.get("compress").map(String::as_str), Some("off"), "{s:?}");
    assert_eq!(number(&s, "bytes_saved"), 0, "{s:?}");
    assert_eq!(number(&s, "bytes_on_wire"), number(&s, "bytes_read"));
}

const CAPS: &str = "IMAP4rev1 AUTH=PLAIN SASL-IR COMPRESS=DEFLATE";

/// How the first connection's compressed replies go wrong.
#[derive(Clone, Copy)]
enum Damage {
    /// Bytes that are no deflate stream at all.
    Corrupt,
    /// The first half of a valid reply, then the connection closes.
    Truncated,
}

/// The server's side of a compressed conversation.
struct Zlib {
    inflate: Decompress,
    deflate: Compress,
    plain: Vec<u8>,
}

impl Zlib {
    fn new() -> Zlib {
        Zlib {
            inflate: Decompress::new(false),
            deflate: Compress::new(Compression::default(), false),
            plain: Vec::new(),
        }
    }

    fn seal(&mut self, reply: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(reply.len() + 1024);
        self.deflate
            .compress_vec(reply, &mut out, FlushCompress::Sync)
            .expect("compress");
        out
    }

    /// The next command line the client sent, decompressed.
    fn command(&mut self, c: &mut Conn) -> Option<String> {
        loop {
            if let Some(i) = self.plain.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.plain.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            let raw = c.read_raw()?;
            let mut out = Vec::with_capacity(raw.len() * 8 + 1024);
            self.inflate
                .decompress_vec(&raw, &mut out, FlushDecompress::None)
                .expect("the client's stream");
            self.plain.extend_from_slice(&out);
        }
    }
}

/// A server that offers COMPRESS; on its first connection the first reply after COMPRESS is
/// damaged as `damage` says, later connections are served properly (compressed).
fn damaging_server(damage: Damage, served: Arc<Mutex<Vec<String>>>) -> Script {
    Script::start(Wire::Tls, move |c| {
        c.send(format!("* OK [CAPABILITY {CAPS}] hi\r\n").as_bytes());
        while let Some(cmd) = c.command() {
            if cmd.verb != "COMPRESS" {
                c.answer_basic(&cmd, CAPS);
                continue;
            }
            c.send(format!("{} OK DEFLATE active\r\n", cmd.tag).as_bytes());
            let mut z = Zlib::new();
            while let Some(line) = z.command(c) {
                served.lock().unwrap().push(line.clone());
                let tag = line.split(' ').next().unwrap_or("*").to_string();
                let reply = z.seal(format!("* 3 EXISTS\r\n{tag} OK done\r\n").as_bytes());
                match (c.index, damage) {
                    (0, Damage::Corrupt) => c.send(&[0xff; 64]),
                    (0, Damage::Truncated) => {
                        c.send(&reply[..reply.len() / 2]);
                        c.close();
                        return;
                    }
                    _ => c.send(&reply),
                }
            }
            return;
        }
    })
}

fn damaged_stream(damage: Damage) -> (Result<(), Error>, Pool, Script) {
    let served = Arc::new(Mutex::new(Vec::new()));
    let server = damaging_server(damage, served.clone());
    let pool = Pool::new(script::config(&server, Security::Tls), 2, None);
    let first = pool.with_session(None, Retry::Never, |s| {
        assert!(s.wire().compressed, "COMPRESS was not started");
        s.run(Command::Noop).map(drop)
    });
    // The next request: a new connection, compressed and working.
    pool.with_session(None, Retry::Idempotent, |s| s.run(Command::Noop).map(drop))
        .expect("the request after the damaged stream");
    assert!(
        served.lock().unwrap().iter().any(|l| l.ends_with(" NOOP")),
        "the server never decompressed a command"
    );
    (first, pool, server)
}

#[test]
fn a_corrupt_compressed_stream_is_a_clear_error_and_the_next_request_reconnects() {
    let (first, pool, server) = damaged_stream(Damage::Corrupt);
    match first {
        Err(Error::Protocol(words)) => assert!(words.contains("compressed stream"), "{words}"),
        other => panic!("a corrupt stream gave {other:?}"),
    }
    assert_eq!(
        server.accepted(),
        2,
        "no new connection after the corrupt one"
    );
    assert_eq!(pool.stats().open, 1);
}

#[test]
fn a_compressed_stream_cut_short_is_a_dropped_connection_and_the_next_request_reconnects() {
    let (first, _pool, server) = damaged_stream(Damage::Truncated);
    assert!(
        matches!(first, Err(Error::Bye(_) | Error::Io { .. })),
        "a cut stream gave {first:?}"
    );
    assert_eq!(server.accepted(), 2);
}
