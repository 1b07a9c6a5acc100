//! The sans-I/O codec: server bytes in, [`Response`] values out; [`Command`] values in, bytes out.
//!
//! Decoding happens in two steps, after the "check, then parse" pattern. The
//! [`ResponseDecoder`] frames the byte stream: it finds where a response ends by scanning lines
//! and skipping literals (`{n}`, `~{n}`) by their announced length, never scanning them for
//! CRLF, and it resumes where it stopped when more bytes arrive, so a 50 MB literal costs one
//! pass. Only a complete frame reaches the recursive-descent parser in [`parse`], which therefore
//! never has to deal with missing input. A frame that does not parse is reported and dropped:
//! framing is still known, so the stream stays usable.
//!
//! Hard limits (line length, literal size, size of one whole response, nesting depth) belong
//! to the decoder: a hostile server cannot make it allocate beyond them, and exceeding one is a
//! [`DecodeError`]. All of them are in bytes (see [`Limits`]); the session adds one more, the
//! bytes of responses it holds for one command ([`Limits::backlog_cap`]).
//!
//! Search criteria typed by a user are parsed into [`SearchKey`] values by [`search`].
//!
//! Encoding lives in [`encode`]: a [`Command`] becomes one or more byte chunks; between two chunks
//! the client waits for the server's continuation request (synchronising literals), unless
//! LITERAL+ lets it send them at once.

pub mod encode;
pub mod parse;
pub mod search;

pub use encode::{
    append_prefix, imap_date_time, AString, Command, EncodeError, Encoded, FetchAttr, ListReturn,
    Literals, NotifyEvent, NotifyFilter, QResync, SearchDate, SearchKey, SearchReturn, SelectSync,
    StoreMode, LITERAL_MINUS_MAX,
};
pub use search::{parse_criteria, CriteriaError};

/// Kept at its old path: modified UTF-7 lives beside the types that use it.
pub use crate::imap::mutf7;

use crate::error::printable;
use crate::imap::types::Response;

/// Bounds that keep a hostile or broken server from exhausting memory or stack.
///
/// Memory per connection is bounded in bytes at two levels: one response (a frame: its lines
/// and literals together, [`Limits::response_cap`]) while it is being received, and all the
/// responses held for one command until it completes ([`Limits::backlog_cap`]). A response
/// over its cap is a fatal [`DecodeError`] (the stream cannot be followed without holding it);
/// a command whose responses exceed the backlog fails with
/// [`Error::TooLarge`](crate::error::Error::TooLarge) and the connection goes on.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line (the text between two literals or CRLFs) accepted.
    pub max_line: usize,
    /// Largest literal accepted.
    pub max_literal: u64,
    /// Deepest nesting of parenthesised lists accepted.
    pub max_depth: usize,
    /// Largest response (all its lines and literals) accepted; `None`: two literals of
    /// `max_literal` and a line.
    pub max_response: Option<u64>,
    /// Most bytes of responses held for one command; `None`: 1 GiB (a listing of a million
    /// messages needs about 600 MiB by the count of [`Limits::held_cost`]). Never below one
    /// response.
    pub max_backlog: Option<u64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line: 1 << 20,
            // imapfs asks for bodies in blocks of 1 MiB and headers; nothing it requests comes
            // near this, so a larger literal is a broken or hostile server.
            max_literal: 64 << 20,
            max_depth: 64,
            max_response: None,
            max_backlog: None,
        }
    }
}

impl Limits {
    /// The largest response accepted, in bytes.
    pub fn response_cap(&self) -> u64 {
        self.max_response.unwrap_or_else(|| {
            self.max_literal
                .saturating_mul(2)
                .saturating_add(self.max_line as u64)
        })
    }

    /// The most bytes of responses held for one command, as counted by [`Limits::held_cost`].
    pub fn backlog_cap(&self) -> u64 {
        self.max_backlog
            .unwrap_or(1 << 30)
            .max(Limits::held_cost(self.response_cap()))
    }

    /// What holding a decoded response of `frame_len` bytes on the wire costs: its bytes plus
    /// the decoded values around them (enum, item vectors, small strings), which dominate for
    /// the small responses of a listing.
    pub fn held_cost(frame_len: u64) -> u64 {
        frame_len.saturating_add(512)
    }
}

/// Why the byte stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A line longer than [`Limits::max_line`]; the stream cannot be resynchronised.
    LineTooLong { limit: usize },
    /// A literal larger than [`Limits::max_literal`]; the stream cannot be resynchronised.
    LiteralTooLarge { announced: u64, limit: u64 },
    /// A response larger than [`Limits::response_cap`]; the stream cannot be resynchronised.
    ResponseTooLarge { limit: u64 },
    /// A complete frame that is not a valid response. It was dropped; the stream goes on.
    Malformed { reason: String, excerpt: String },
}

impl DecodeError {
    /// Whether the connection can go on after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, DecodeError::Malformed { .. })
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::LineTooLong { limit } => {
                write!(f, "server sent a line longer than {limit} bytes")
            }
            DecodeError::LiteralTooLarge { announced, limit } => {
                write!(
                    f,
                    "server announced a {announced}-byte literal (limit {limit})"
                )
            }
            DecodeError::ResponseTooLarge { limit } => {
                write!(f, "server sent a response larger than {limit} bytes")
            }
            DecodeError::Malformed { reason, excerpt } => {
                let (reason, excerpt) = (printable(reason), printable(excerpt));
                write!(f, "malformed server response ({reason}): {excerpt}")
            }
        }
    }
}

/// Incremental response decoder: feed it bytes, take complete responses out.
#[derive(Debug)]
pub struct ResponseDecoder {
    buf: Vec<u8>,
    /// Start of the frame being assembled.
    start: usize,
    /// Where scanning resumes; may lie beyond `buf.len()` while a literal is incomplete.
    scan: usize,
    /// Start of the line being scanned (for the line length limit).
    line_start: usize,
    limits: Limits,
    utf8: bool,
    /// Length of the last frame returned (or dropped as malformed).
    last_len: usize,
}

impl ResponseDecoder {
    pub fn new(limits: Limits) -> ResponseDecoder {
        ResponseDecoder {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            line_start: 0,
            limits,
            utf8: false,
            last_len: 0,
        }
    }

    /// Whether mailbox names are UTF-8 on the wire (after `ENABLE UTF8=ACCEPT`).
    pub fn utf8(&self) -> bool {
        self.utf8
    }

    pub fn set_utf8(&mut self, utf8: bool) {
        self.utf8 = utf8;
    }

    /// Append bytes received from the server.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet part of a returned response.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Take the bytes received but not yet decoded (after a switch of the stream's form:
    /// what follows the OK to COMPRESS is compressed).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        self.scan = 0;
        self.line_start = 0;
        rest
    }

    /// The length on the wire of the last response returned (or dropped as malformed).
    pub fn last_frame_len(&self) -> usize {
        self.last_len
    }

    /// Bytes the decoder holds allocated. It only ever grows with bytes fed (never with a
    /// length the server announced), so this stays within a small factor of the input.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next complete response, `Ok(None)` if more bytes are needed.
    pub fn next_response(&mut self) -> Result<Option<Response>, DecodeError> {
        loop {
            if self.scan > self.buf.len() {
                return Ok(None); // inside a literal
            }
            let Some(nl) = memchr(b'\n', &self.buf[self.scan..]) else {
                if self.buf.len() - self.line_start > self.limits.max_line {
                    return Err(DecodeError::LineTooLong {
                        limit: self.limits.max_line,
                    });
                }
                self.scan = self.buf.len();
                return Ok(None);
            };
            let eol = self.scan + nl; // index of '\n'
            if eol - self.line_start > self.limits.max_line {
                return Err(DecodeError::LineTooLong {
                    limit: self.limits.max_line,
                });
            }
            if (eol + 1 - self.start) as u64 > self.limits.response_cap() {
                return Err(DecodeError::ResponseTooLarge {
                    limit: self.limits.response_cap(),
                });
            }
            let first_line = self.line_start == self.start;
            let line = &self.buf[self.line_start..eol];
            let literal = if first_line && is_text_response(line) {
                None
            } else {
                trailing_literal(line)
            };
            match literal {
                Some(n) => {
                    if n > self.limits.max_literal {
                        return Err(DecodeError::LiteralTooLarge {
                            announced: n,
                            limit: self.limits.max_literal,
                        });
                    }
                    // Cannot overflow: n is bounded by max_literal.
                    let end = eol + 1 + n as usize;
                    // Refused when announced, before its bytes are buffered.
                    if (end - self.start) as u64 > self.limits.response_cap() {
                        return Err(DecodeError::ResponseTooLarge {
                            limit: self.limits.response_cap(),
                        });
                    }
                    self.scan = end;
                    self.line_start = self.scan;
                }
                None => {
                    let frame = &self.buf[self.start..=eol];
                    let result = parse::parse_response(frame, self.limits.max_depth, self.utf8);
                    self.last_len = frame.len();
                    self.start = eol + 1;
                    self.scan = self.start;
                    self.line_start = self.start;
                    self.compact();
                    return result.map(Some);
                }
            }
        }
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            // After a big literal, give the memory back: the buffer is sized by what the
            // next responses need, not by the largest message ever read.
            if self.buf.capacity() > 4 << 20 {
                self.buf.shrink_to(64 << 10);
            }
            self.start = 0;
            self.scan = 0;
            self.line_start = 0;
        } else if self.start > 64 * 1024 && self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.line_start -= self.start;
            self.start = 0;
        }
    }
}

/// A status response or continuation request ends in free text, where `{n}` is not a literal.
fn is_text_response(line: &[u8]) -> bool {
    if line.first() == Some(&b'+') {
        return true;
    }
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let _tag = words.next();
    let Some(word) = words.next() else {
        return false;
    };
    let word = word.strip_suffix(b"\r").unwrap_or(word);
    ["OK", "NO", "BAD", "BYE", "PREAUTH"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k.as_bytes()))
}

/// The length of the literal announced at the end of a line (`{n}`, `{n+}`, `~{n}`), if any.
fn trailing_literal(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::types::{FetchItem, Response, Status, Untagged};

    fn all(bytes: &[u8]) -> Vec<Response> {
        let mut d = ResponseDecoder::new(Limits::default());
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(r) = d.next_response().unwrap() {
            out.push(r);
        }
        assert_eq!(d.buffered(), 0);
        out
    }

    #[test]
    fn literal_is_skipped_not_scanned() {
        let wire = b"* 1 FETCH (UID 7 BODY[] {10}\r\nab\r\n\r\ncd\r\n)\r\nA1 OK done\r\n";
        let rs = all(wire);
        assert_eq!(rs.len(), 2);
        let Response::Untagged(Untagged::Fetch { items, .. }) = &rs[0] else {
            panic!()
        };
        assert!(items.contains(&FetchItem::Body {
            section: String::new(),
            origin: None,
            data: Some(b"ab\r\n\r\ncd\r\n".to_vec())
        }));
    }

    #[test]
    fn every_split_point_gives_the_same_responses() {
        let wire: &[u8] = b"* OK [CAPABILITY IMAP4rev1] hi\r\n* 3 FETCH (BODY[]<0> {5}\r\nhello FLAGS (\\Seen))\r\n+ go\r\nA2 NO [ALERT] x {5}\r\n";
        let whole = all(wire);
        assert_eq!(whole.len(), 4);
        for cut in 0..wire.len() {
            let mut d = ResponseDecoder::new(Limits::default());
            let mut got = Vec::new();
            d.feed(&wire[..cut]);
            while let Some(r) = d.next_response().unwrap() {
                got.push(r);
            }
            d.feed(&wire[cut..]);
            while let Some(r) = d.next_response().unwrap() {
                got.push(r);
            }
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn text_ending_in_braces_is_not_a_literal() {
        let rs = all(b"A1 NO no such mailbox foo{5}\r\nA2 OK fine\r\n");
        assert_eq!(rs.len(), 2);
        let Response::Tagged(t) = &rs[0] else {
            panic!()
        };
        assert_eq!(t.status, Status::No);
    }

    #[test]
    fn huge_literal_is_refused_without_allocating() {
        let mut d = ResponseDecoder::new(Limits::default());
        d.feed(b"* 1 FETCH (BODY[] {4294967296}\r\nxx");
        assert!(matches!(
            d.next_response(),
            Err(DecodeError::LiteralTooLarge { .. })
        ));
    }

    #[test]
    fn a_response_of_many_literals_is_refused_when_it_outgrows_its_cap() {
        let limits = Limits {
            max_literal: 100,
            max_response: Some(250),
            ..Limits::default()
        };
        let mut d = ResponseDecoder::new(limits);
        // Two literals of 100 bytes fit; the third is refused when announced.
        d.feed(b"* 1 FETCH (BODY[1] {100}\r\n");
        d.feed(&[b'a'; 100]);
        d.feed(b" BODY[2] {100}\r\n");
        d.feed(&[b'b'; 100]);
        assert_eq!(d.next_response(), Ok(None));
        d.feed(b" BODY[3] {100}\r\n");
        assert_eq!(
            d.next_response(),
            Err(DecodeError::ResponseTooLarge { limit: 250 })
        );
        assert_eq!(Limits::default().response_cap(), (128 << 20) + (1 << 20));
        assert_eq!(Limits::default().backlog_cap(), 1 << 30);
    }

    #[test]
    fn endless_line_is_refused() {
        let limits = Limits {
            max_line: 100,
            ..Limits::default()
        };
        let mut d = ResponseDecoder::new(limits);
        d.feed(&[b'a'; 101]);
        assert!(matches!(
            d.next_response(),
            Err(DecodeError::LineTooLong { .. })
        ));
    }

    #[test]
    fn garbage_frame_is_dropped_and_stream_goes_on() {
        let mut d = ResponseDecoder::new(Limits::default());
        d.feed(b"\x00\xff garbage (((\r\nA1 OK ok\r\n");
        assert!(matches!(
            d.next_response(),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(d.next_response(), Ok(Some(Response::Tagged(_)))));
    }
}
