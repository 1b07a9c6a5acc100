//! New messages: APPEND, with the message checked and its line ends made CRLF on the way, and
//! streamed in chunks from its spool file (one pass to scan, one to send: never held whole);
//! after a broken connection it is looked for by Message-ID before it is ever sent again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::imap::codec::{imap_date_time, Command, SearchKey};
use crate::imap::pool::Retry;
use crate::imap::session::Session;
use crate::imap::types::{Code, Flag, MailboxName, Uid, UidValidity, Untagged};
use crate::store::changes::Change;
use crate::store::ids::MailboxId;
use crate::store::index::{IndexChange, MessageMeta};
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

/// The most of a message's start kept to check its header and find its Message-ID.
const HEADER_SCAN: usize = 64 << 10;

/// What one pass over a message found.
struct Scan {
    /// Its length once every bare LF is CRLF: the literal's length.
    crlf_len: u64,
    /// Its first bytes (at most [`HEADER_SCAN`]), CRLF already.
    head: Vec<u8>,
}

/// Read a message once: refuse NUL bytes, count bare LFs, keep its start.
fn scan(body: &MessageBody) -> Result<Scan> {
    let mut buf = vec![0u8; CHUNK];
    let (mut pos, mut prev, mut bare) = (0u64, 0u8, 0u64);
    let mut head = Vec::new();
    loop {
        let n = body
            .read_at(&mut buf, pos)
            .map_err(|e| Error::io("reading the new message", e))?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == 0 {
                return Err(Error::InvalidInput(
                    "not an RFC 5322 message: it holds a NUL byte".into(),
                ));
            }
            if b == b'\n' && prev != b'\r' {
                bare += 1;
            }
            prev = b;
        }
        if head.len() < HEADER_SCAN {
            let take = n.min(HEADER_SCAN - head.len());
            head.extend_from_slice(&buf[..take]);
        }
        pos += n as u64;
    }
    Ok(Scan {
        crlf_len: pos + bare,
        head: normalize_line_ends(head),
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

/// How many times a message whose APPEND was cut off is sent again (each time only after a
/// search by Message-ID found it missing).
const MAX_RESENDS: usize = 2;

impl Account {
    /// APPEND a new message to a mailbox. Returns its UID when the server says (APPENDUID) or
    /// it can be found by its Message-ID.
    pub fn append(&self, target: MailboxId, msg: NewMessage) -> Result<Option<Uid>> {
        let name = self.require_name(target)?;
        let scan = scan(&msg.body)?;
        check_message(&scan.head)?;
        let mid = message_id(&scan.head);
        let len = scan.crlf_len;
        let date = msg.date.map(imap_date_time);
        let send = |s: &mut Session| {
            // Courier refuses an APPEND to the mailbox the session has EXAMINEd ("Current box
            // is selected READ-ONLY"); a pooled session may well have it open for reading.
            if s.selected()
                .is_some_and(|sel| sel.mailbox == name && sel.read_only)
            {
                s.unselect()?;
            }
            let mut chunks = crlf_chunks(&msg.body);
            let done = s.append_streamed(&name, &msg.flags, date.as_deref(), len, &mut chunks)?;
            Ok(match done.text.code {
                Some(Code::AppendUid { validity, uids }) => uids
                    .0
                    .first()
                    .and_then(|&(a, _)| Uid::new(a))
                    .map(|u| (validity, u)),
                _ => None,
            })
        };
        let mut resends = 0;
        let appended = loop {
            match self.pool.with_session(None, Retry::Never, send) {
                Ok(Some(v)) => break Some(v),
                Ok(None) => break self.find_appended(&name, mid.as_deref())?,
                Err(e) if e.is_fatal_to_connection() => {
                    log::warn!("connection lost during APPEND to {name} ({e}): checking");
                    // Without a Message-ID it cannot be told apart: never send twice.
                    let Some(id) = mid.as_deref() else {
                        return Err(e);
                    };
                    if let Some(found) = self.find_appended(&name, Some(id))? {
                        break Some(found);
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
            flags: msg.flags,
            modseq: None,
        };
        if self
            .indexes
            .apply(target, validity, IndexChange::Added(uid, meta))
        {
            self.changes.send([Change::Added {
                mailbox: target,
                validity,
                uids: vec![uid],
            }]);
        } else {
            self.touch(target);
        }
        Ok(Some(uid))
    }

    /// The newest message of `name` with this Message-ID, with the mailbox's UIDVALIDITY.
    fn find_appended(
        &self,
        name: &MailboxName,
        mid: Option<&str>,
    ) -> Result<Option<(UidValidity, Uid)>> {
        let Some(mid) = mid else { return Ok(None) };
        let found = self.search_message_id_validity(name, mid)?;
        Ok(found.and_then(|(v, uids)| uids.into_iter().max().map(|u| (v, u))))
    }

    pub(super) fn search_message_id(&self, name: &MailboxName, mid: &str) -> Result<Vec<Uid>> {
        Ok(self
            .search_message_id_validity(name, mid)?
            .map(|(_, u)| u)
            .unwrap_or_default())
    }

    /// `UID SEARCH HEADER Message-ID <id>` in `name` (freshly examined).
    fn search_message_id_validity(
        &self,
        name: &MailboxName,
        mid: &str,
    ) -> Result<Option<(UidValidity, Vec<Uid>)>> {
        self.pool.with_session(Some(name), Retry::Idempotent, |s| {
            let validity = s.reselect(name, true)?.uidvalidity;
            let done = s.run(Command::Search {
                uid: true,
                criteria: vec![SearchKey::Header {
                    field: b"Message-ID".to_vec(),
                    value: mid.as_bytes().to_vec(),
                }],
                ret: Vec::new(),
                utf8: false,
            })?;
            let uids: Vec<Uid> = done
                .untagged
                .iter()
                .flat_map(|u| match u {
                    Untagged::Search { nums, .. } => nums.clone(),
                    _ => Vec::new(),
                })
                .filter_map(Uid::new)
                .collect();
            Ok(validity.map(|v| (v, uids)))
        })
    }
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

/// Whether `bytes` looks like an RFC 5322 message: a header of `Name: value` fields (with
/// folded continuation lines), ended by an empty line or the end of the message.
fn check_message(bytes: &[u8]) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidInput(format!(
            "not an RFC 5322 message: {why}"
        )))
    };
    if bytes.is_empty() {
        return bad("empty");
    }
    if bytes.contains(&0) {
        return bad("it holds a NUL byte");
    }
    let mut fields = 0;
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if fields == 0 {
                return bad("it starts with a continuation line");
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return bad("a header line without a colon");
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            return bad("an invalid header field name");
        }
        fields += 1;
    }
    if fields == 0 {
        return bad("no header fields");
    }
    Ok(())
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
