//! The engine's decoding speed, without Dovecot: a loopback peer sends canned replies and the
//! session decodes them. Ignored by `cargo test`; run it with
//! `cargo test --release --test decode_bench -- --ignored --nocapture` and compare the figures
//! before and after a change to the engine. It prints and asserts nothing about time.
//!
//! - a 10,000-message `UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE MODSEQ)` listing,
//!   handed over one response at a time ([`Session::wait_each`]);
//! - one 50 MB literal (`BODY[]`), collected whole ([`Session::run`]).
//!
//! Each is measured through the session (socket reads, decoding, dispatch) and through the
//! bare [`ResponseDecoder`] fed from memory, the best of five runs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use imapfs::imap::codec::{Command, FetchAttr, Limits, ResponseDecoder};
use imapfs::imap::session::{Session, Timeouts};
use imapfs::imap::transport::Transport;
use imapfs::imap::types::{FetchItem, SequenceSet, Untagged};

const MESSAGES: u32 = 10_000;
const LITERAL: usize = 50 << 20;
const RUNS: usize = 5;

fn listing() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=MESSAGES {
        out.extend_from_slice(
            format!(
                "* {i} FETCH (UID {} FLAGS (\\Seen $Label{}) RFC822.SIZE {} \
                 INTERNALDATE \"05-Dec-2026 09:{:02}:{:02} +0000\" MODSEQ ({}))\r\n",
                i + 100,
                i % 7,
                1000 + i * 13,
                i % 60,
                (i / 60) % 60,
                5000 + i
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"A1 OK Fetch completed.\r\n");
    out
}

fn literal() -> Vec<u8> {
    let mut out = format!("* 1 FETCH (UID 7 BODY[] {{{LITERAL}}}\r\n").into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    let body: Vec<u8> = line.iter().copied().cycle().take(LITERAL).collect();
    out.extend_from_slice(&body);
    out.extend_from_slice(b")\r\nA1 OK Fetch completed.\r\n");
    out
}

/// A peer that greets, then answers the first command line it reads with `reply`, then LOGOUT.
fn serve(reply: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n")
            .unwrap();
        read_line(&mut s);
        s.write_all(&reply).unwrap();
        read_line(&mut s);
        let _ = s.write_all(b"* BYE\r\nA2 OK bye\r\n");
    });
    port
}

fn read_line(s: &mut TcpStream) {
    let mut b = [0u8; 1];
    while s.read(&mut b).map(|n| n == 1).unwrap_or(false) && b[0] != b'\n' {}
}

fn session(port: u16) -> Session {
    let t = Transport::connect("127.0.0.1", port, Duration::from_secs(5)).unwrap();
    let timeouts = Timeouts {
        inactivity: Duration::from_secs(30),
        command: Duration::from_secs(120),
    };
    let limits = Limits {
        max_backlog: Some(4 << 30),
        ..Limits::default()
    };
    Session::start(t, timeouts, limits).unwrap().0
}

fn fetch_all(attrs: Vec<FetchAttr>) -> Command {
    Command::Fetch {
        uid: true,
        set: SequenceSet::from(1),
        attrs,
        changed_since: None,
    }
}

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| f()).min().unwrap_or_default()
}

fn decoder_only(wire: &[u8]) -> Duration {
    best(|| {
        let mut d = ResponseDecoder::new(Limits::default());
        let t = Instant::now();
        for chunk in wire.chunks(64 * 1024) {
            d.feed(chunk);
            while let Some(r) = d.next_response().unwrap() {
                std::hint::black_box(r);
            }
        }
        t.elapsed()
    })
}

fn report(what: &str, bytes: usize, d: Duration) {
    println!(
        "{what:<44} {:>9.1} ms {:>8.0} MB/s",
        d.as_secs_f64() * 1e3,
        bytes as f64 / d.as_secs_f64() / 1e6
    );
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture, in release mode"]
fn decode_speed() {
    let list = listing();
    let big = literal();

    let through_session = best(|| {
        let mut s = session(serve(list.clone()));
        let t = Instant::now();
        let tag = s
            .send(&fetch_all(vec![
                FetchAttr::Uid,
                FetchAttr::Flags,
                FetchAttr::Rfc822Size,
                FetchAttr::InternalDate,
                FetchAttr::ModSeq,
            ]))
            .unwrap();
        let mut n = 0;
        s.wait_each(&tag, "FETCH", |u| {
            if let Untagged::Fetch { .. } = u {
                n += 1;
            }
        })
        .unwrap();
        let d = t.elapsed();
        assert_eq!(n, MESSAGES);
        s.logout();
        d
    });
    report(
        "listing, 10,000 messages, session",
        list.len(),
        through_session,
    );
    report(
        "listing, 10,000 messages, decoder",
        list.len(),
        decoder_only(&list),
    );

    let through_session = best(|| {
        let mut s = session(serve(big.clone()));
        let t = Instant::now();
        let done = s
            .run(fetch_all(vec![FetchAttr::BodyPeek {
                section: String::new(),
                partial: None,
            }]))
            .unwrap();
        let d = t.elapsed();
        let len = done.untagged.iter().find_map(|u| match u {
            Untagged::Fetch { items, .. } => items.iter().find_map(|i| match i {
                FetchItem::Body { data, .. } => data.as_ref().map(Vec::len),
                _ => None,
            }),
            _ => None,
        });
        assert_eq!(len, Some(LITERAL));
        s.logout();
        d
    });
    report("one 50 MB literal, session", big.len(), through_session);
    report("one 50 MB literal, decoder", big.len(), decoder_only(&big));
}
