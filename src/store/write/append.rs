//! New messages: APPEND, with the message checked and its line ends made CRLF; after a broken
//! connection it is looked for by Message-ID before it is ever sent again.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::imap::codec::{imap_date_time, Command, SearchKey};
use crate::imap::pool::Retry;
use crate::imap::types::{Code, Flag, MailboxName, Uid, UidValidity, Untagged};
use crate::store::changes::Change;
use crate::store::ids::MailboxId;
use crate::store::index::{IndexChange, MessageMeta};
use crate::store::Account;

/// A new message to add to a mailbox.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message (RFC 5322); bare LF line ends are sent as CRLF.
    pub bytes: Vec<u8>,
    pub flags: Vec<Flag>,
    /// INTERNALDATE, seconds since the epoch; the server's clock when `None`.
    pub date: Option<i64>,
}

impl Account {
    /// APPEND a new message to a mailbox. Returns its UID when the server says (APPENDUID) or
    /// it can be found by its Message-ID.
    pub fn append(&self, target: MailboxId, msg: NewMessage) -> Result<Option<Uid>> {
        let name = self.require_name(target)?;
        let bytes = normalize_line_ends(msg.bytes);
        check_message(&bytes)?;
        let mid = message_id(&bytes);
        let len = bytes.len() as u64;
        let date = msg.date;
        let cmd = Command::Append {
            mailbox: name.clone(),
            flags: msg.flags.clone(),
            date: date.map(imap_date_time),
            message: bytes,
        };
        let r = self.pool.with_session(None, Retry::Never, |s| {
            let done = s.run_ref(&cmd)?;
            Ok(match done.text.code {
                Some(Code::AppendUid { validity, uids }) => uids
                    .0
                    .first()
                    .and_then(|&(a, _)| Uid::new(a))
                    .map(|u| (validity, u)),
                _ => None,
            })
        });
        let appended = match r {
            Ok(Some(v)) => Some(v),
            Ok(None) => self.find_appended(&name, mid.as_deref())?,
            Err(e) if e.is_fatal_to_connection() => {
                log::warn!("connection lost during APPEND to {name} ({e}): checking");
                match mid.as_deref() {
                    Some(id) => match self.find_appended(&name, Some(id))? {
                        Some(found) => Some(found),
                        None => {
                            log::info!("the message did not arrive: sending it again");
                            let Command::Append { message, .. } = cmd else {
                                unreachable!("cmd is an APPEND")
                            };
                            let again = NewMessage {
                                bytes: message,
                                flags: msg.flags,
                                date,
                            };
                            return self.append(target, again);
                        }
                    },
                    // Without a Message-ID it cannot be told apart: never send twice.
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let Some((validity, uid)) = appended else {
            self.touch(target);
            return Ok(None);
        };
        let meta = MessageMeta {
            listed_size: len,
            body_len: Some(len),
            internal_date: date.unwrap_or_else(now_secs),
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
