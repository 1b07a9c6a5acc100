//! The session pool against scripted servers: retries, wake-ups, outages and back-off,
//! counters. (tests/engine.rs has the pool against a real Dovecot.)

mod common;
mod script;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use imapfs::imap::auth::Security;
use imapfs::imap::codec::Command;
use imapfs::imap::pool::{Pool, Retry};
use script::{Script, Wire};

const CAPS: &str = "IMAP4rev1 AUTH=PLAIN SASL-IR LITERAL+";

/// A server that answers one NOOP per connection, then says BYE and closes it (as a server
/// reaping connections the moment they go idle would): every session given back to the pool
/// is, or is about to be, dead.
fn one_noop_per_connection() -> Script {
    Script::start(Wire::Tls, |c| {
        c.send(format!("* OK [CAPABILITY {CAPS}] hi\r\n").as_bytes());
        while let Some(cmd) = c.command() {
            if cmd.verb != "NOOP" {
                c.answer_basic(&cmd, CAPS);
                continue;
            }
            c.send(format!("{} OK done\r\n", cmd.tag).as_bytes());
            c.send(b"* BYE going away\r\n");
            c.close();
            return;
        }
    })
}

#[test]
fn a_retry_never_stalls_while_sessions_come_back_to_the_pool() {
    // Issue 8, defect 7: the single retry waited for the count of open connections to drop
    // (never, while others kept theirs) and notify_one could wake a waiter that could not use
    // what was given back: 30 s stalls ending in EIO with healthy idle sessions in the pool.
    let server = one_noop_per_connection();
    let pool = Arc::new(Pool::new(script::config(&server, Security::Tls), 2, None));
    let started = Instant::now();
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let pool = pool.clone();
            thread::spawn(move || {
                for i in 0..15 {
                    let op = Instant::now();
                    pool.with_session(None, Retry::Idempotent, |s| s.run(Command::Noop))
                        .unwrap_or_else(|e| {
                            panic!("worker {w}, op {i}: {e} after {:?}", op.elapsed())
                        });
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// A server that answers NOOP; a LIST gets a BYE with terminal escapes instead, and the
/// connection is closed.
fn noop_server(listener: Option<std::net::TcpListener>) -> Script {
    let script = |c: &mut script::Conn| {
        c.send(format!("* OK [CAPABILITY {CAPS}] hi\r\n").as_bytes());
        while let Some(cmd) = c.command() {
            if cmd.verb == "NOOP" {
                c.send(format!("{} OK done\r\n", cmd.tag).as_bytes());
            } else if cmd.verb == "LIST" {
                c.send(b"* BYE \x1b[2Jshutting down\r\n");
                c.close();
                return;
            } else {
                c.answer_basic(&cmd, CAPS);
            }
        }
    };
    match listener {
        Some(l) => Script::start_on(l, Wire::Tls, script),
        None => Script::start(Wire::Tls, script),
    }
}

/// The command timeout of the unreachable-server test.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn an_unreachable_server_fails_requests_fast_and_is_retried_with_back_off() {
    // Issue 8 ("survive the real world"): with the server unreachable, requests queued and
    // every one of them tried to connect; now the first failure starts a back-off during which
    // requests fail at once, the outage and the recovery are logged once each.
    script::capture_logs();
    // Held for the whole test: refused until the server listens on it, and nobody else's.
    let reserved = common::ports::RefusingPort::new();
    let port = reserved.port;
    let dir = common::unique_temp_dir("pool");
    let ca_file = dir.join("cert.pem");
    std::fs::write(&ca_file, common::self_signed_certificate().0).expect("cert");
    let mut cfg = script::config_at(port, &ca_file, Security::Tls);
    cfg.timeouts.command = COMMAND_TIMEOUT; // a queued request would wait this long
    let pool = Pool::new(cfg, 2, None);
    let noop = |s: &mut imapfs::imap::session::Session| s.run(Command::Noop).map(drop);

    // "Fast" is against the command timeout (10 s), the wait of a request that queued for a
    // connection: half of it is a margin any loaded machine meets. That no request after the
    // first tried to connect is what `connect_failures` says below.
    let fast = COMMAND_TIMEOUT / 2;
    let started = Instant::now();
    let first = pool.with_session(None, Retry::Idempotent, noop);
    match &first {
        Err(imapfs::Error::Io { source, .. }) => assert_eq!(
            source.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{first:?}"
        ),
        other => panic!("the first request: {other:?}"),
    }
    assert!(started.elapsed() < fast, "{:?}", started.elapsed());
    for i in 0..20 {
        let started = Instant::now();
        match pool.with_session(None, Retry::Idempotent, noop) {
            Err(e @ imapfs::Error::Unavailable { .. }) => {
                assert_eq!(e.errno(), libc::EIO);
                assert!(e.to_string().contains(&format!("{port}")), "{e}");
            }
            other => panic!("request {i} during the back-off: {other:?}"),
        }
        assert!(
            started.elapsed() < fast,
            "request {i} waited {:?}",
            started.elapsed()
        );
    }
    let stats = pool.stats();
    assert_eq!(stats.connect_failures, 1, "{stats:?}");
    assert_eq!(stats.errors, 21, "{stats:?}");
    assert!(stats.unreachable_for.is_some(), "{stats:?}");

    // The server comes up on the port: once the back-off has passed, a request connects.
    let server = noop_server(Some(reserved.listen()));
    common::wait_for(
        "a request to succeed again",
        Duration::from_secs(10),
        || pool.with_session(None, Retry::Idempotent, noop).ok(),
    );
    assert_eq!(
        server.accepted(),
        1,
        "requests during the back-off reached the server"
    );
    let stats = pool.stats();
    assert_eq!(stats.connections_opened, 1, "{stats:?}");
    assert!(stats.unreachable_for.is_none(), "{stats:?}");

    let lines: Vec<_> = script::logged(&format!("127.0.0.1:{port}"))
        .into_iter()
        .filter(|(level, _)| *level <= log::Level::Info)
        .collect();
    let warned = lines.iter().filter(|(l, _)| *l == log::Level::Warn).count();
    let recovered = lines
        .iter()
        .filter(|(l, m)| *l == log::Level::Info && m.contains("again"))
        .count();
    assert_eq!((warned, recovered), (1, 1), "{lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pool_stats_count_what_the_pool_did() {
    let server = noop_server(None);
    let pool = Pool::new(script::config(&server, Security::Tls), 1, None);
    for _ in 0..3 {
        pool.with_session(None, Retry::Idempotent, |s| s.run(Command::Noop))
            .expect("noop");
    }
    let stats = pool.stats();
    assert_eq!(stats.connections_opened, 1, "{stats:?}");
    assert_eq!(stats.round_trips, 3, "{stats:?}");
    assert_eq!(
        stats.bytes_read,
        3 * "A9 OK done\r\n".len() as u64,
        "{stats:?}"
    );
    assert_eq!((stats.errors, stats.last_error.as_deref()), (0, None));
    assert_eq!((stats.open, stats.idle), (1, 1));
    // A request the server breaks off: counted, its text kept printable.
    let r = pool.with_session(None, Retry::Never, |s| {
        s.run(Command::List {
            reference: Vec::new(),
            pattern: b"*".to_vec(),
        })
    });
    match &r {
        Err(imapfs::Error::Bye(text)) => assert!(text.contains("shutting down"), "{text:?}"),
        other => panic!("LIST answered with BYE: {other:?}"),
    }
    let stats = pool.stats();
    assert_eq!(stats.errors, 1, "{stats:?}");
    let last = stats.last_error.expect("last error");
    assert!(last.contains("shutting down"), "{last}");
    assert!(!last.contains('\x1b'), "{last:?}");
    assert_eq!((stats.open, stats.idle), (0, 0));
}
