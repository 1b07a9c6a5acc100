//! Fuzz-like robustness of the response decoder, within `cargo test` (no nightly, no extra
//! crate): realistic Dovecot transcripts, split at every byte, then thousands of mutants
//! (truncated, spliced, byte-flipped, literal lengths changed, random bytes) from a fixed-seed
//! xorshift generator.
//!
//! What must hold for every input: no panic; every call returns; errors are `DecodeError`
//! values and only the unrecoverable ones stop the stream; the decoder's buffer never grows
//! beyond what was fed (no allocation proportional to an announced literal); and a valid
//! transcript decodes the same however it is split.

use imapfs::imap::codec::{DecodeError, Limits, ResponseDecoder};
use imapfs::imap::types::Response;

// ----- realistic server output (Dovecot 2.3) -----

const GREETING: &str = "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n\
A1 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE] Logged in\r\n\
* ID (\"name\" \"Dovecot\")\r\n\
A2 OK ID completed (0.001 + 0.000 secs).\r\n\
* NAMESPACE ((\"\" \".\")) NIL NIL\r\n\
A3 OK Namespace completed (0.001 + 0.000 secs).\r\n\
* ENABLED QRESYNC\r\n\
A4 OK Enabled (0.001 + 0.000 secs).\r\n";

const LIST: &str = "* LIST (\\HasNoChildren) \".\" INBOX\r\n\
* LIST (\\HasNoChildren \\Sent) \".\" Sent\r\n\
* LIST (\\HasChildren) \".\" Archive\r\n\
* LIST (\\HasNoChildren) \".\" Archive.2024\r\n\
* LIST (\\HasNoChildren) \".\" \"&ANw-n&AO8-c&APg-d&AOk- Folder\"\r\n\
* LIST (\\HasNoChildren) \".\" \"~peter.&U,BTFw-.&ZeVnLIqe-\"\r\n\
* LIST (\\HasNoChildren \\Trash) \".\" Trash\r\n\
* LIST (\\HasNoChildren) \".\" {11}\r\nquo\"ted {1}\r\n\
* STATUS INBOX (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 1700000000 HIGHESTMODSEQ 9)\r\n\
A5 OK List completed (0.001 + 0.000 secs).\r\n";

const EXAMINE: &str = "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)\r\n\
* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n\
* 3 EXISTS\r\n\
* 0 RECENT\r\n\
* OK [UIDVALIDITY 1700000000] UIDs valid\r\n\
* OK [UIDNEXT 4] Predicted next UID\r\n\
* OK [HIGHESTMODSEQ 9] Highest\r\n\
A6 OK [READ-ONLY] Examine completed (0.001 + 0.000 secs).\r\n";

const FETCH_META: &str = "* 1 FETCH (UID 1 RFC822.SIZE 512 FLAGS (\\Seen) INTERNALDATE \"03-Mar-2020 09:12:00 +0100\" MODSEQ (3))\r\n\
* 2 FETCH (UID 2 RFC822.SIZE 20331 FLAGS () INTERNALDATE \"03-Mar-2020 11:40:00 +0100\" MODSEQ (5))\r\n\
* 3 FETCH (UID 3 RFC822.SIZE 77 FLAGS (\\Seen \\Flagged $Forwarded) INTERNALDATE \" 4-Mar-2020 00:00:01 +0000\" MODSEQ (9))\r\n\
A7 OK Fetch completed (0.001 + 0.000 secs).\r\n";

/// A message whose lines look like protocol: only literal framing keeps them apart.
const MESSAGE: &str = "Return-Path: <ann@example.org>\r\n\
From: Ann <ann@example.org>\r\n\
To: Bob <bob@example.net>\r\n\
Subject: Re: Quarterly numbers {5}\r\n\
Date: Tue, 03 Mar 2020 11:40:00 +0100\r\n\
Message-ID: <q1@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
A8 OK not the end\r\n\
* BYE not a bye ~{3}\r\n\
)\r\n\
--b1--\r\n";

fn fetch_bodies() -> String {
    format!(
        "* 1 FETCH (UID 1 BODY[] {{{}}}\r\n{MESSAGE})\r\n\
         * 2 FETCH (UID 2 BODY[]<0> {{16}}\r\nReturn-Path: <an)\r\n\
         * 2 FETCH (UID 2 BINARY[1] ~{{4}}\r\n\x00\x01\x02\x03 BINARY.SIZE[1] 4)\r\n\
         * 3 FETCH (UID 3 ENVELOPE (\"Tue, 03 Mar 2020 11:40:00 +0100\" \"Re: Quarterly numbers\" ((\"Ann\" NIL \"ann\" \"example.org\")) ((\"Ann\" NIL \"ann\" \"example.org\")) ((\"Ann\" NIL \"ann\" \"example.org\")) ((\"Bob\" NIL \"bob\" \"example.net\")) NIL NIL NIL \"<q1@example.org>\") BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 41 3 NIL NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 300 (NIL \"inner\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 5 1) 12 NIL (\"attachment\" (\"filename\" \"a.eml\")) NIL NIL) \"mixed\" (\"boundary\" \"b1\") NIL NIL NIL))\r\n\
         A8 OK Fetch completed (0.002 + 0.000 + 0.001 secs).\r\n",
        MESSAGE.len()
    )
}

const MISC: &str = "* ESEARCH (TAG \"A9\") UID MIN 1 MAX 3 COUNT 3 ALL 1:3 MODSEQ 9\r\n\
A9 OK Search completed (0.001 + 0.000 secs).\r\n\
A10 NO [NONEXISTENT] Mailbox doesn't exist: Nope\r\n\
A11 BAD Error in IMAP command UID: Invalid arguments.\r\n\
* STATUS \"&ANw-n&AO8-c&APg-d&AOk- Folder\" (MESSAGES 0 UIDNEXT 1)\r\n\
A12 OK [CLOSED] Previous mailbox closed.\r\n\
* OK Searched 80% of the mailbox, ETA 0:01\r\n\
* VANISHED (EARLIER) 1:2\r\n\
* SEARCH 1 2 3 (MODSEQ 9)\r\n\
* QUOTAROOT INBOX User\r\n\
* QUOTA User (STORAGE 1024 1048576 MESSAGE 3 10000)\r\n\
A13 NO [ALREADYEXISTS] Mailbox already exists\r\n\
A14 OK [APPENDUID 1700000000 4] Append completed.\r\n\
+ idling\r\n\
* 4 EXISTS\r\n\
* 1 EXPUNGE\r\n\
* BYE Logging out\r\n\
A15 OK Logout completed (0.001 + 0.000 secs).\r\n";

fn transcripts() -> Vec<Vec<u8>> {
    vec![
        GREETING.as_bytes().to_vec(),
        LIST.as_bytes().to_vec(),
        EXAMINE.as_bytes().to_vec(),
        FETCH_META.as_bytes().to_vec(),
        fetch_bodies().into_bytes(),
        MISC.as_bytes().to_vec(),
    ]
}

// ----- driving the decoder -----

/// What one feeding produced: responses and recoverable errors in order, and the fatal
/// error that stopped the stream, if any.
#[derive(Debug, PartialEq)]
struct Outcome {
    items: Vec<Result<Response, DecodeError>>,
    fatal: Option<DecodeError>,
}

/// Feed `pieces` one after another, draining after each; check the invariants on the way.
fn run(pieces: &[&[u8]], limits: Limits) -> Outcome {
    let mut d = ResponseDecoder::new(limits);
    let mut out = Outcome {
        items: Vec::new(),
        fatal: None,
    };
    let mut fed = 0usize;
    'feed: for piece in pieces {
        d.feed(piece);
        fed += piece.len();
        // Each call that returns something consumes at least one byte: more calls than
        // bytes fed means the decoder is stuck.
        let mut calls = 0usize;
        loop {
            calls += 1;
            assert!(
                calls <= fed + 2,
                "no progress after {calls} calls on {fed} bytes"
            );
            match d.next_response() {
                Ok(Some(r)) => out.items.push(Ok(r)),
                Ok(None) => break,
                Err(e) if e.is_recoverable() => out.items.push(Err(e)),
                Err(e) => {
                    out.fatal = Some(e);
                    break 'feed;
                }
            }
            assert_invariants(&d, fed);
        }
        assert_invariants(&d, fed);
    }
    out
}

fn assert_invariants(d: &ResponseDecoder, fed: usize) {
    assert!(
        d.buffered() <= fed,
        "buffered {} of {fed} bytes fed",
        d.buffered()
    );
    // Vec growth at most doubles: anything beyond means an allocation from an announced
    // length instead of received bytes.
    assert!(
        d.buffer_capacity() <= 2 * fed + 64,
        "capacity {} after {fed} bytes fed",
        d.buffer_capacity()
    );
}

fn whole(wire: &[u8]) -> Outcome {
    run(&[wire], Limits::default())
}

// ----- a tiny deterministic PRNG (xorshift64*) -----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

// ----- the tests -----

#[test]
fn transcripts_are_valid() {
    for (i, t) in transcripts().iter().enumerate() {
        let o = whole(t);
        assert!(o.fatal.is_none(), "transcript {i}: {:?}", o.fatal);
        for (j, r) in o.items.iter().enumerate() {
            assert!(r.is_ok(), "transcript {i} response {j}: {r:?}");
        }
        assert!(o.items.len() >= 4, "transcript {i}");
    }
}

#[test]
fn every_split_point_gives_the_unsplit_parse() {
    for t in transcripts() {
        let expected = whole(&t);
        for cut in 0..=t.len() {
            let got = run(&[&t[..cut], &t[cut..]], Limits::default());
            assert_eq!(got, expected, "cut at {cut}");
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = t.chunks(1).collect();
        assert_eq!(run(&bytes, Limits::default()), expected, "byte by byte");
    }
}

#[test]
fn truncated_at_every_boundary() {
    for t in transcripts() {
        let full = whole(&t);
        for cut in 0..=t.len() {
            let got = whole(&t[..cut]);
            // A prefix yields a prefix of the responses: never a different or an extra one.
            assert!(got.fatal.is_none(), "cut at {cut}: {:?}", got.fatal);
            assert!(got.items.len() <= full.items.len());
            assert_eq!(got.items[..], full.items[..got.items.len()], "cut at {cut}");
        }
    }
}

#[test]
fn huge_and_wrong_literal_lengths() {
    let t = fetch_bodies().into_bytes();
    let spots = literal_spots(&t);
    assert!(spots.len() >= 3);
    for &(start, end) in &spots {
        for len in [
            "0",
            "1",
            "15",
            "17",
            "1000",
            "268435456",
            "268435457",
            "4294967296",
            "18446744073709551615",
            "99999999999999999999",
            "",
        ] {
            let mut m = t[..start].to_vec();
            m.extend_from_slice(len.as_bytes());
            m.extend_from_slice(&t[end..]);
            let o = whole(&m);
            if let Some(e) = &o.fatal {
                assert!(
                    matches!(e, DecodeError::LiteralTooLarge { .. }),
                    "{len}: {e}"
                );
            }
        }
    }
}

#[test]
fn mutants_never_panic_nor_allocate_from_announced_lengths() {
    let ts = transcripts();
    let all: Vec<u8> = ts.concat();
    // A longer run: IMAPFS_MUTATION_CASES=1000000 IMAPFS_MUTATION_SEED=7 cargo test --release.
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seed = env("IMAPFS_MUTATION_SEED").unwrap_or(0x9e37_79b9_7f4a_7c15) | 1;
    let cases = env("IMAPFS_MUTATION_CASES").map_or(20_000, |n| n as usize);
    let mut rng = Rng(seed);
    let small = Limits {
        max_line: 4096,
        max_literal: 64 << 10,
        max_depth: 16,
        ..Limits::default()
    };
    let mut outcomes = [0usize; 3]; // clean ends, recoverable errors seen, fatal errors
    for case in 0..cases {
        let base = if rng.chance(8) {
            &all
        } else {
            &ts[rng.below(ts.len())]
        };
        let mut m = base.clone();
        let ops = 1 + rng.below(4);
        for _ in 0..ops {
            mutate(&mut m, &ts, &mut rng);
        }
        // Feed in random pieces so framing resumes at arbitrary points.
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < m.len() {
            let max = if rng.chance(4) { 8 } else { 512 };
            let n = 1 + rng.below(max);
            let end = (at + n).min(m.len());
            pieces.push(&m[at..end]);
            at = end;
        }
        let limits = if case % 3 == 0 {
            small
        } else {
            Limits::default()
        };
        let o = run(&pieces, limits);
        if o.fatal.is_some() {
            outcomes[2] += 1;
        } else if o.items.iter().any(|r| r.is_err()) {
            outcomes[1] += 1;
        } else {
            outcomes[0] += 1;
        }
    }
    // The mutants must reach every kind of ending, or the test proves little.
    assert!(outcomes.iter().all(|&n| n > cases / 100), "{outcomes:?}");
}

#[test]
fn random_bytes() {
    let mut rng = Rng(42);
    let alphabet = b"* ()[]{}~+\"\\\r\n0123456789NILOKFETCHBODY<>.:,";
    for _ in 0..2_000 {
        let len = rng.below(600);
        let m: Vec<u8> = (0..len)
            .map(|_| {
                if rng.chance(2) {
                    alphabet[rng.below(alphabet.len())]
                } else {
                    rng.next() as u8
                }
            })
            .collect();
        let pieces: Vec<&[u8]> = m.chunks(1 + rng.below(64)).collect();
        run(&pieces, Limits::default());
    }
}

#[test]
fn deep_nesting_from_the_wire_is_bounded() {
    for prefix in [
        &b"* 1 FETCH (BODYSTRUCTURE "[..],
        b"* 1 FETCH (X-UNKNOWN ",
        b"* LIST () \"/\" INBOX (\"X\" ",
        b"* ESEARCH UID X-NEW ",
        b"* NAMESPACE ((\"\" \"/\" \"X\" ",
    ] {
        let mut m = prefix.to_vec();
        m.extend(std::iter::repeat_n(b'(', 100_000));
        m.extend(std::iter::repeat_n(b')', 100_000));
        m.extend_from_slice(b")\r\nA1 OK done\r\n");
        let o = whole(&m);
        let what = String::from_utf8_lossy(prefix);
        assert!(o.fatal.is_none(), "{what:?}: {:?}", o.fatal);
        assert_eq!(o.items.len(), 2, "{what:?}");
        // Dropped for its depth (the default limit), and the stream goes on.
        match &o.items[0] {
            Err(DecodeError::Malformed { reason, .. }) => {
                assert!(
                    reason.ends_with("nesting deeper than 64"),
                    "{what:?}: {reason}"
                )
            }
            other => panic!("{what:?}: {other:?}"),
        }
        assert!(o.items[1].is_ok(), "{what:?}: {:?}", o.items[1]);
    }
}

#[test]
fn long_streams_stay_compact() {
    // 1 MiB of small responses in 4 KiB reads that end mid-response: the consumed prefix is
    // dropped as it goes, so the buffer stays far below the total.
    let one: &[u8] = b"* 3 FETCH (UID 7 FLAGS (\\Seen))\r\n";
    let stream: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 30_000)
        .collect();
    let mut d = ResponseDecoder::new(Limits::default());
    let mut n = 0;
    for piece in stream.chunks(4093) {
        d.feed(piece);
        while let Some(r) = d.next_response().unwrap() {
            assert!(matches!(r, Response::Untagged(_)));
            n += 1;
        }
        assert!(
            d.buffer_capacity() < 512 << 10,
            "capacity {}",
            d.buffer_capacity()
        );
    }
    assert_eq!(n, 30_000);
    // A big literal, then small responses: the memory is given back.
    let mut d = ResponseDecoder::new(Limits::default());
    let big = 8 << 20;
    d.feed(format!("* 1 FETCH (BODY[] {{{big}}}\r\n").as_bytes());
    d.feed(&vec![b'x'; big]);
    d.feed(b")\r\n");
    assert!(d.next_response().unwrap().is_some());
    assert!(d.buffer_capacity() <= 64 << 10);
}

// ----- mutations -----

/// Where literal lengths are written: the digits between `{` and `}` (or `+}`).
fn literal_spots(t: &[u8]) -> Vec<(usize, usize)> {
    let mut spots = Vec::new();
    for (i, &b) in t.iter().enumerate() {
        if b != b'{' {
            continue;
        }
        let digits = t[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && t.get(i + 1 + digits) == Some(&b'}') {
            spots.push((i + 1, i + 1 + digits));
        }
    }
    spots
}

fn mutate(m: &mut Vec<u8>, ts: &[Vec<u8>], rng: &mut Rng) {
    const INTERESTING: &[u8] = b"(){}[]<>\"\\ \r\n~*+%:,.0123456789NIL\x00\xff";
    let len = m.len();
    match rng.below(9) {
        // Flip bits of one byte.
        0 if len > 0 => {
            let i = rng.below(len);
            m[i] ^= 1 << rng.below(8);
        }
        // Replace a byte with a syntactically interesting one.
        1 if len > 0 => {
            let i = rng.below(len);
            m[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        // Splice: a random chunk of some transcript inserted anywhere.
        2 => {
            let other = &ts[rng.below(ts.len())];
            let a = rng.below(other.len());
            let b = (a + 1 + rng.below(200)).min(other.len());
            let at = rng.below(len + 1);
            m.splice(at..at, other[a..b].iter().copied());
        }
        // Delete a range.
        3 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            m.drain(a..b);
        }
        // Truncate.
        4 => m.truncate(rng.below(len + 1)),
        // Change a literal length: bigger, smaller, huge.
        5 => {
            let spots = literal_spots(m);
            if spots.is_empty() {
                return;
            }
            let (a, b) = spots[rng.below(spots.len())];
            let old: u64 = std::str::from_utf8(&m[a..b])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let new = match rng.below(6) {
                0 => old.saturating_add(1 + rng.below(100) as u64),
                1 => old.saturating_sub(1 + rng.below(100) as u64),
                2 => 4294967296,
                3 => u64::MAX,
                4 => 256 << 20,
                _ => rng.next() % 100_000,
            };
            m.splice(a..b, new.to_string().into_bytes());
        }
        // Duplicate a range in place.
        6 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(100)).min(len);
            let chunk = m[a..b].to_vec();
            m.splice(b..b, chunk);
        }
        // Insert random bytes.
        7 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            m.splice(at..at, bytes);
        }
        // Turn a CRLF into a bare LF or a bare CR.
        _ => {
            if len == 0 {
                return;
            }
            let start = rng.below(len);
            if let Some(off) = m[start..].iter().position(|&b| b == b'\r') {
                let i = start + off;
                if rng.chance(2) {
                    m.remove(i);
                } else if m.get(i + 1) == Some(&b'\n') {
                    m.remove(i + 1);
                }
            }
        }
    }
}
