//! What we know about one mailbox: its generation (UIDVALIDITY) and its messages' metadata.
//!
//! An [`Index`] is an immutable snapshot, replaced whole on refresh, so readers never see a
//! half-updated listing. Metadata comes from one pipelined `UID FETCH 1:* (UID FLAGS
//! RFC822.SIZE INTERNALDATE)`, never one command per message.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::imap::types::{Flag, MailboxName, Uid, UidValidity};

/// One mailbox as the server listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxInfo {
    pub name: MailboxName,
    pub delimiter: Option<char>,
    /// `\Noselect` or `\NonExistent`: a directory with no messages.
    pub noselect: bool,
}

/// Metadata of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageMeta {
    /// RFC822.SIZE as the server reported it (corrected once the body is known).
    pub size: u64,
    /// INTERNALDATE, seconds since the epoch.
    pub internal_date: i64,
    pub flags: Vec<Flag>,
}

/// A snapshot of a mailbox's messages.
#[derive(Debug, Clone)]
pub struct Index {
    pub validity: UidValidity,
    pub uidnext: Option<Uid>,
    pub messages: BTreeMap<Uid, MessageMeta>,
    pub fetched_at: Instant,
}
