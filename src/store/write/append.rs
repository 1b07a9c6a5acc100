//! New messages: APPEND, with the message checked and its line ends made CRLF on the way, and
//! streamed in chunks from its spool file (one pass to scan, one to send: never held whole);
//! after a broken connection it is proven stored or absent (`proof`: UID floor, size, digest)
//! before it is ever sent again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::imap::codec::{imap_date_time, Command};
use crate::imap::pool::Retry;
use crate::imap::session::Completed;
use crate::imap::types::{Code, Flag, StatusItem, Uid, UidValidity, Untagged};
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::index::{IndexChange, MessageMeta};
use crate::store::write::proof::{digest_context, Proof, Wanted};
use crate::store::Account;

/// A new message to add to a mailbox.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message (RFC 5322); bare LF line ends are sent as CRLF.
    pub body: MessageBody,
    pub flags: Vec<Flag>,
    /// INTERNALDATE, seconds since the epoch; the server's clock when `None`.
    pub date: Option<i64>,
}

/// The bytes of a new message: in memory, or a spooled file that is streamed to the server
/// and never held whole.
#[derive(Debug, Clone)]
pub enum MessageBody {
    Bytes(Arc<[u8]>),
    File { file: Arc<File>, len: u64 },
}

impl MessageBody {
    fn len(&self) -> u64 {
        match self {
            MessageBody::Bytes(b) => b.len() as u64,
            MessageBody::File { len, .. } => *len,
        }
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.len().saturating_sub(pos)) as usize;
        match self {
            MessageBody::Bytes(b) => {
                let from = pos as usize;
                buf[..want].copy_from_slice(&b[from..from + want]);
                Ok(want)
            }
            MessageBody::File { file, .. } => file.read_at(&mut buf[..want], pos),
        }
    }
}

/// Unit of reading a message body for the scan and the upload.
const CHUNK: usize = 256 << 10;

/// The longest Message-ID field kept (a longer one is taken as no Message-ID).
const MAX_MESSAGE_ID_FIELD: usize = 16 << 10;

/// Read a message once, as it will be sent (CRLF): refuse NUL bytes, check its whole header
/// however long, find its Message-ID, and take its length and digest. Only the Message-ID
/// field is kept, never the header or the message.
fn scan(body: &MessageBody) -> Result<Wanted> {
    let mut chunks = crlf_chunks(body);
    let mut header = HeaderCheck::default();
    let mut digest = digest_context();
    let mut size = 0u64;
    while let Some(chunk) = chunks().map_err(|e| Error::io("reading the new message", e))? {
        if chunk.contains(&0) {
            return Err(not_a_message("it holds a NUL byte"));
        }
        header.feed(&chunk)?;
        digest.update(&chunk);
        size += chunk.len() as u64;
    }
    let message_id = header.finish()?;
    Ok(Wanted {
        size,
        digest: digest.finish().as_ref().to_vec(),
        message_id,
    })
}

/// The message in chunks with bare LFs made CRLF, for [`Session::append_streamed`].
///
/// [`Session::append_streamed`]: crate::imap::session::Session::append_streamed
fn crlf_chunks(body: &MessageBody) -> impl FnMut() -> std::io::Result<Option<Vec<u8>>> + '_ {
    let (mut pos, mut prev) = (0u64, 0u8);
    let mut buf = vec![0u8; CHUNK];
    move || {
        let n = body.read_at(&mut buf, pos)?;
        if n == 0 {
            return Ok(None);
        }
        pos += n as u64;
        let mut out = Vec::with_capacity(n + n / 16);
        for &b in &buf[..n] {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            prev = b;
        }
        Ok(Some(out))
    }
}

/// How many times a message whose APPEND was cut off is sent again (each time only after
/// the target was shown not to hold it).
const MAX_RESENDS: usize = 2;

impl Account {
    /// APPEND a new message to a mailbox. Returns its UID when the server says (APPENDUID) or
    /// it can be proved (see [`super::proof`]). `Ok` means the server holds the message;
    /// after a cut connection that could not be settled either way the error is the cut's.
    pub fn append(&self, target: MailboxId, msg: NewMessage) -> Result<Option<MessageRef>> {
        let name = self.require_name(target)?;
        let wanted = scan(&msg.body)?;
        let len = wanted.size;
        let date = msg.date.map(imap_date_time);
        let mut resends = 0;
        let appended = loop {
            // The target's UIDNEXT from before the APPEND (STATUS in the same round trip),
            // and whether the APPEND left at all.
            let mut before: Option<(UidValidity, Uid)> = None;
            let mut sent = false;
            let r = self.pool.with_session(None, Retry::Never, |s| {
                // Courier refuses an APPEND to the mailbox the session has EXAMINEd ("Current
                // box is selected READ-ONLY"); a pooled session may well have it open.
                if s.selected()
                    .is_some_and(|sel| sel.mailbox == name && sel.read_only)
                {
                    s.unselect()?;
                }
                let status = s.send(&Command::Status {
                    mailbox: name.clone(),
                    items: vec!["UIDNEXT", "UIDVALIDITY"],
                })?;
                sent = true;
                let mut chunks = crlf_chunks(&msg.body);
                let r = s.append_streamed(&name, &msg.flags, date.as_deref(), len, &mut chunks);
                // The STATUS answer came first: it is there even when the APPEND's is not.
                let st = s.wait(&status, "STATUS");
                before = uidnext_of(r.iter().chain(st.iter()));
                let done = r?;
                Ok(match done.text.code {
                    Some(Code::AppendUid { validity, uids }) => uids
                        .0
                        .first()
                        .and_then(|&(a, _)| Uid::new(a))
                        .map(|u| (validity, u)),
                    _ => None,
                })
            });
            let floor = before.or_else(|| self.index_floor(target));
            match r {
                Ok(Some(v)) => break Some(v),
                // Stored, but the server did not say where.
                Ok(None) => match self.prove_stored(&name, &wanted, floor)? {
                    Proof::Stored(v, u) => break Some((v, u)),
                    Proof::Absent | Proof::Unsure => break None,
                },
                Err(e) if e.is_fatal_to_connection() => {
                    log::warn!("connection lost during APPEND to {name} ({e}): checking");
                    if sent {
                        match self.prove_stored_after_cut(&name, &wanted, floor)? {
                            Proof::Stored(v, u) => break Some((v, u)),
                            Proof::Absent => {}
                            Proof::Unsure => {
                                log::warn!(
                                    "{name} holds a message with exactly these bytes, but \
                                     whether it is the one just sent cannot be told: not \
                                     sending it again; it may or may not be stored"
                                );
                                return Err(e);
                            }
                        }
                    }
                    if resends == MAX_RESENDS {
                        return Err(e);
                    }
                    resends += 1;
                    log::info!("the message did not arrive: sending it again");
                }
                Err(e) => return Err(e),
            }
        };
        let Some((validity, uid)) = appended else {
            self.touch(target);
            return Ok(None);
        };
        let meta = MessageMeta {
            listed_size: len,
            body_len: Some(len),
            internal_date: msg.date.unwrap_or_else(now_secs),
            flags: msg.flags.into(),
            modseq: None,
            // Not known until the next listing, which adds it (a new UID is listed whole).
            ids: None,
        };
        let added = IndexChange::Added(uid, meta);
        if !self.indexes.apply(target, validity, [added]) {
            self.touch(target);
        }
        Ok(Some(MessageRef {
            mailbox: target,
            validity,
            uid,
        }))
    }

    /// Remove a message this mount APPENDed that a newer version replaces, or that is a
    /// partial version of a new file (see `fs::drafts`): `UID EXPUNGE` of that UID alone,
    /// never to Trash, whatever `delete=` says. Without UIDPLUS a single message cannot be
    /// expunged: refused (EPERM).
    pub fn withdraw_appended(&self, msg: MessageRef) -> Result<()> {
        if !self.capabilities()?.uidplus {
            return Err(Error::NotPermitted(
                "the server cannot expunge one message (no UIDPLUS): a stored new message \
                 cannot be replaced"
                    .into(),
            ));
        }
        self.expunge_uids(msg.mailbox, msg.validity, &[msg.uid])
    }
}

/// UIDNEXT and UIDVALIDITY from a STATUS answer among these completions.
fn uidnext_of<'a>(done: impl Iterator<Item = &'a Completed>) -> Option<(UidValidity, Uid)> {
    let (mut next, mut validity) = (None, None);
    for u in done.flat_map(|d| d.untagged.iter()) {
        if let Untagged::StatusData { items, .. } = u {
            for item in items {
                match item {
                    StatusItem::UidNext(n) => next = Some(*n),
                    StatusItem::UidValidity(v) => validity = Some(*v),
                    _ => {}
                }
            }
        }
    }
    Some((validity?, next?))
}

/// Bare LF line ends become CRLF (IMAP messages are CRLF).
fn normalize_line_ends(bytes: Vec<u8>) -> Vec<u8> {
    let bare = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
    if !bare {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    let mut prev = 0u8;
    for b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn not_a_message(why: &str) -> Error {
    Error::InvalidInput(format!("not an RFC 5322 message: {why}"))
}

/// Checks, as the message streams by, that it starts with an RFC 5322 header: `Name: value`
/// fields (with folded continuation lines), ended by an empty line or the end of the
/// message; and keeps the first Message-ID field. A header of any length is checked whole.
#[derive(Default)]
struct HeaderCheck {
    state: LineState,
    /// Bytes seen so far (only whether there were any matters).
    any: bool,
    fields: u64,
    /// The current field's name, while it is short enough to be `Message-ID`.
    name: Vec<u8>,
    /// The Message-ID field being read (`None` when not in it).
    capture: Option<Vec<u8>>,
    /// The first complete Message-ID field; `Some(empty)` if it was too long to keep.
    message_id: Option<Vec<u8>>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// At the start of a header line.
    #[default]
    Start,
    /// A CR at the start of a line: the empty line that ends the header, or an error.
    StartCr,
    /// In a field name.
    Name,
    /// In a field's value (or a continuation line).
    Value,
    /// The header ended: the body follows, unchecked.
    Body,
}

impl HeaderCheck {
    fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        self.any |= !bytes.is_empty();
        for &b in bytes {
            match self.state {
                LineState::Body => return Ok(()),
                LineState::Start => match b {
                    b'\n' => self.end_of_field(LineState::Body),
                    b'\r' => self.state = LineState::StartCr,
                    b' ' | b'\t' => {
                        if self.fields == 0 {
                            return Err(not_a_message("it starts with a continuation line"));
                        }
                        self.keep(b);
                        self.state = LineState::Value;
                    }
                    b':' => return Err(not_a_message("an invalid header field name")),
                    33..=126 => {
                        self.end_of_field(LineState::Name);
                        self.name.clear();
                        self.name.push(b);
                    }
                    _ => return Err(not_a_message("an invalid header field name")),
                },
                LineState::StartCr => match b {
                    b'\n' => self.end_of_field(LineState::Body),
                    _ => return Err(not_a_message("an invalid header field name")),
                },
                LineState::Name => match b {
                    b':' => {
                        self.fields += 1;
                        if self.message_id.is_none()
                            && self.name.eq_ignore_ascii_case(b"message-id")
                        {
                            self.capture = Some(b"Message-ID:".to_vec());
                        }
                        self.state = LineState::Value;
                    }
                    33..=126 => {
                        if self.name.len() <= 16 {
                            self.name.push(b);
                        }
                    }
                    b'\r' | b'\n' => return Err(not_a_message("a header line without a colon")),
                    _ => return Err(not_a_message("an invalid header field name")),
                },
                LineState::Value => {
                    self.keep(b);
                    if b == b'\n' {
                        self.state = LineState::Start;
                    }
                }
            }
        }
        Ok(())
    }

    /// The end of the message: the header must have been complete. Returns the Message-ID.
    fn finish(mut self) -> Result<Option<String>> {
        if !self.any {
            return Err(not_a_message("empty"));
        }
        if self.state == LineState::Name {
            return Err(not_a_message("a header line without a colon"));
        }
        self.end_of_field(LineState::Body);
        if self.fields == 0 {
            return Err(not_a_message("no header fields"));
        }
        let Some(mut field) = self.message_id.filter(|f| !f.is_empty()) else {
            return Ok(None);
        };
        field.extend_from_slice(b"\r\n\r\n");
        Ok(message_id(&normalize_line_ends(field)))
    }

    /// A byte of the Message-ID field, if we are in it.
    fn keep(&mut self, b: u8) {
        if let Some(c) = &mut self.capture {
            if c.len() < MAX_MESSAGE_ID_FIELD {
                c.push(b);
            } else {
                // Too long to be a real one: remember that there was one, keep nothing.
                c.clear();
                self.message_id = Some(Vec::new());
                self.capture = None;
            }
        }
    }

    /// A new field starts, or the header ends: the Message-ID field read so far is complete.
    fn end_of_field(&mut self, next: LineState) {
        if let Some(mut c) = self.capture.take() {
            while c.last().is_some_and(|b| matches!(b, b'\r' | b'\n')) {
                c.pop();
            }
            self.message_id = Some(c);
        }
        self.state = next;
    }
}

/// Whether `bytes` is a whole message that [`HeaderCheck`] accepts (tests).
#[cfg(test)]
fn check_message(bytes: &[u8]) -> Result<Option<String>> {
    let mut h = HeaderCheck::default();
    h.feed(bytes)?;
    h.finish()
}

/// The Message-ID of a message or header block, as written (`<...>`).
pub fn message_id(bytes: &[u8]) -> Option<String> {
    let end = crate::store::headers::find_header_end(bytes).unwrap_or(bytes.len());
    let parsed = mail_parser::MessageParser::default().parse_headers(&bytes[..end])?;
    parsed.message_id().map(|id| format!("<{id}>"))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(
            normalize_line_ends(b"a\nb\r\nc\n".to_vec()),
            b"a\r\nb\r\nc\r\n"
        );
        assert_eq!(normalize_line_ends(b"a\r\n".to_vec()), b"a\r\n");
    }

    #[test]
    fn messages_are_checked() {
        assert!(check_message(b"Subject: x\r\nX-A: b\r\n c\r\n\r\nbody").is_ok());
        assert!(check_message(b"Subject: only a header").is_ok());
        assert!(check_message(b"hello world\n").is_err());
        assert!(check_message(b"").is_err());
        assert!(check_message(b"\r\nbody").is_err());
        assert!(check_message(b"Bad Name: x\r\n\r\n").is_err());
        assert!(check_message(b"Subject: x\r\nno colon here\r\n\r\nbody").is_err());
        assert!(check_message(b"Subject: x\r\nTrailing").is_err());
        assert!(check_message(b"Subject: x\r\n\r\nno colon in the body\r\n").is_ok());
    }

    #[test]
    fn item_12_a_header_longer_than_64_kib_is_checked_whole_in_any_split() {
        let mut msg = Vec::new();
        for i in 0..3000 {
            msg.extend_from_slice(format!("Received: from host{i} by relay; x\r\n").as_bytes());
        }
        assert!(msg.len() > 100 << 10);
        msg.extend_from_slice(b"Message-ID:\r\n <late@x>\r\n\r\nbody\r\n");
        for split in [1, 7, 4096, msg.len() - 3] {
            let mut h = HeaderCheck::default();
            for part in msg.chunks(split) {
                h.feed(part).unwrap();
            }
            assert_eq!(h.finish().unwrap().as_deref(), Some("<late@x>"), "{split}");
        }
        // A bad line deep in a long header is still found.
        let end = msg.windows(11).position(|w| w == b"Message-ID:").unwrap();
        let mut bad = msg[..end].to_vec();
        bad.extend_from_slice(b"not a field\r\n\r\n");
        assert!(check_message(&bad).is_err());
    }

    #[test]
    fn message_ids_are_found() {
        assert_eq!(
            message_id(b"Subject: a\r\nMessage-ID: <x@y>\r\n\r\nb").as_deref(),
            Some("<x@y>")
        );
        assert_eq!(message_id(b"Subject: a\r\n\r\n"), None);
    }
}
