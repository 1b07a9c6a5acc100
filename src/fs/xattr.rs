//! Extended attributes of message files: IMAP metadata and decoded headers.
//!
//! `user.imap.*` come from the mailbox index (no round trip); `user.mail.*` need the header,
//! fetched once per message with `BODY.PEEK[HEADER]` (or taken from a cached first block) and
//! then cached. Values are UTF-8 text without a trailing newline.

use crate::error::Result;
use crate::imap::types::Flag;
use crate::store::{Headers, MessageMeta};

/// The attribute names a message file has, in listing order.
pub const NAMES: &[&str] = &[
    "user.imap.flags",
    "user.imap.uid",
    "user.imap.uidvalidity",
    "user.mail.subject",
    "user.mail.from",
    "user.mail.to",
    "user.mail.date",
    "user.mail.message-id",
];

/// Whether an attribute needs the message header.
pub fn needs_headers(name: &str) -> bool {
    name.starts_with("user.mail.")
}

/// The value of attribute `name`, `None` if the message has no such attribute. `headers` is
/// called only for `user.mail.*` names.
pub fn value(
    name: &str,
    meta: &MessageMeta,
    uid: u32,
    validity: u32,
    headers: impl FnOnce() -> Result<std::sync::Arc<Headers>>,
) -> Result<Option<Vec<u8>>> {
    let text = match name {
        "user.imap.flags" => {
            // \Recent is per-session state (and gone in IMAP4rev2): not a property of the mail.
            let flags = meta.flags.iter().filter(|f| **f != Flag::Recent);
            Some(flags.map(Flag::as_str).collect::<Vec<_>>().join(" "))
        }
        "user.imap.uid" => Some(uid.to_string()),
        "user.imap.uidvalidity" => Some(validity.to_string()),
        n if needs_headers(n) => {
            let h = headers()?;
            match n {
                "user.mail.subject" => h.subject.clone(),
                "user.mail.from" => h.from.clone(),
                "user.mail.to" => h.to.clone(),
                "user.mail.date" => h.date.clone(),
                "user.mail.message-id" => h.message_id.clone(),
                _ => None,
            }
        }
        _ => None,
    };
    Ok(text.map(String::into_bytes))
}

/// The NUL-separated list of names, as listxattr returns it.
pub fn list() -> Vec<u8> {
    let mut out = Vec::new();
    for n in NAMES {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}
