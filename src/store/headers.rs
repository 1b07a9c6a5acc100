//! Decoded headers of messages, shown as `user.mail.*` xattrs.
//!
//! The header comes from the message's cached first block when it holds the whole header,
//! else from one `BODY.PEEK[HEADER]` FETCH; the decoded result (RFC 2047 words, address lists,
//! via mail-parser) is kept in a small LRU keyed like the blocks, on (mailbox, UIDVALIDITY,
//! UID).

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::Retry;
use crate::imap::session::Access;
use crate::imap::types::{FetchItem, SequenceSet, Untagged};
use crate::store::blocks::BlockKey;
use crate::store::ids::MessageRef;
use crate::store::Account;

/// Decoded headers shown as `user.mail.*` xattrs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers {
    pub subject: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub date: Option<String>,
    pub message_id: Option<String>,
}

/// Decoded headers by message.
pub struct HeaderCache(Mutex<LruCache<MessageRef, Arc<Headers>>>);

impl Default for HeaderCache {
    fn default() -> HeaderCache {
        HeaderCache(Mutex::new(LruCache::new(
            NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
        )))
    }
}

impl Account {
    /// The decoded headers of a message.
    pub fn headers(&self, msg: MessageRef) -> Result<Arc<Headers>> {
        if let Some(h) = self.headers.0.lock().get(&msg) {
            return Ok(h.clone());
        }
        // The first block, if cached, usually holds the whole header.
        let cached = self.cached_block(&BlockKey {
            mailbox: msg.mailbox,
            validity: msg.validity,
            uid: msg.uid,
            block: 0,
        });
        let in_cache = cached.and_then(|b| find_header_end(&b).map(|end| b[..end].to_vec()));
        let raw = match in_cache {
            Some(header) => header,
            None => self.fetch_header(msg)?,
        };
        let h = Arc::new(decode_headers(&raw));
        self.headers.0.lock().put(msg, h.clone());
        Ok(h)
    }

    fn fetch_header(&self, msg: MessageRef) -> Result<Vec<u8>> {
        let name = self.require_name(msg.mailbox)?;
        let fetch = Command::Fetch {
            uid: true,
            set: SequenceSet::single(msg.uid.get()),
            attrs: vec![
                FetchAttr::Uid,
                FetchAttr::BodyPeek {
                    section: "HEADER".into(),
                    partial: None,
                },
            ],
            changed_since: None,
        };
        let header = self
            .pool
            .with_session(Some(&name), Retry::Idempotent, |s| {
                s.select_at(&name, msg.validity, Access::Read)?;
                if let Some(h) = header_of(s.run(fetch.clone())?.untagged, msg) {
                    return Ok(Some(h));
                }
                // Not proof of absence before the session has synced (see store::read).
                s.run(Command::Noop)?;
                Ok(header_of(s.run(fetch.clone())?.untagged, msg))
            })?;
        match header {
            Some(h) => Ok(h),
            None => {
                self.forget_message(msg);
                Err(Error::NoMessage(format!("UID {} in {name}", msg.uid)))
            }
        }
    }
}

fn header_of(untagged: Vec<Untagged>, msg: MessageRef) -> Option<Vec<u8>> {
    untagged.into_iter().find_map(|u| {
        let Untagged::Fetch { items, .. } = u else {
            return None;
        };
        if !items.contains(&FetchItem::Uid(msg.uid)) {
            return None;
        }
        items.into_iter().find_map(|i| match i {
            FetchItem::Body { data: Some(d), .. } => Some(d),
            _ => None,
        })
    })
}

/// Where the header block ends (after its blank line), if it does within `b`.
pub fn find_header_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Decode the headers shown as xattrs (RFC 2047 words, address lists) with mail-parser.
pub fn decode_headers(raw: &[u8]) -> Headers {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Headers::default();
    };
    let addresses = |a: Option<&mail_parser::Address>| {
        a.map(|a| {
            a.iter()
                .map(|x| match (&x.name, &x.address) {
                    (Some(n), Some(ad)) => format!("{n} <{ad}>"),
                    (None, Some(ad)) => ad.to_string(),
                    (Some(n), None) => n.to_string(),
                    (None, None) => String::new(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    Headers {
        subject: msg.subject().map(str::to_string),
        from: addresses(msg.from()),
        to: addresses(msg.to()),
        date: msg.date().map(|d| d.to_rfc3339()),
        message_id: msg.message_id().map(|id| format!("<{id}>")),
    }
}
