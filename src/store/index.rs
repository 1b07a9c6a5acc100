//! What we know about one mailbox's messages: its generation (UIDVALIDITY) and each message's
//! metadata, and the table of every mailbox's index with its one door.
//!
//! An [`Index`] is built whole from one pipelined `UID FETCH 1:* (UID FLAGS RFC822.SIZE
//! INTERNALDATE [MODSEQ])` (never one command per message) and afterwards changed only through
//! [`Indexes`], the door ([`door`]): [`Indexes::apply`] takes [`IndexChange`]s (a flag update,
//! an expunge, a new message, a body length learned from reading), [`Indexes::apply_delta`]
//! a refresh's findings ([`Delta`]), [`Indexes::install`] a whole listing. Each edits the
//! index in place under the mailbox's lock and sends the matching [`Change`]s to the feed
//! itself, so an edit and its notification can never disagree or be forgotten. `Index`'s
//! fields are private: the rest of the store and the filesystem only read them.
//!
//! Invariant: a message's `body_len`, once known, is the exact length of its `BODY[]` and
//! survives refreshes of the same generation ([`Index::inherit`]); RFC822.SIZE is only the
//! server's claim (Exchange, Gmail and hMailServer are known to lie).
//!
//! [`Change`]: crate::store::changes::Change

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::imap::types::{Flag, ModSeq, Uid, UidValidity};

mod delta;
mod door;
mod flag_set;
mod uid_map;

pub(crate) use delta::Delta;
pub(crate) use door::Listing;
pub use door::{Indexes, SharedIndex};
pub use flag_set::FlagSet;
pub use uid_map::UidMap;

/// Metadata of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageMeta {
    /// RFC822.SIZE as the server listed it.
    pub listed_size: u64,
    /// The real length of `BODY[]`, once a read reached its end.
    pub body_len: Option<u64>,
    /// INTERNALDATE, seconds since the epoch.
    pub internal_date: i64,
    /// Without `\Recent` ([`without_recent`]); one shared copy per common set.
    pub flags: FlagSet,
    /// The message's MODSEQ (CONDSTORE servers).
    pub modseq: Option<ModSeq>,
    /// Who the message is across folders (Gmail, RFC 8474 OBJECTID), where the server says.
    pub ids: Option<Arc<ObjectIds>>,
}

/// A server's name for a message's content or its thread, the same in every folder that
/// holds a copy: Gmail's `X-GM-MSGID` / `X-GM-THRID`, or RFC 8474's `EMAILID` / `THREADID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectId {
    Gmail(u64),
    Rfc8474(Box<str>),
}

/// A message's ids across folders: one message, one inode, one cached body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectIds {
    pub message: ObjectId,
    pub thread: Option<ObjectId>,
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectId::Gmail(n) => write!(f, "{n}"),
            ObjectId::Rfc8474(s) => f.write_str(s),
        }
    }
}

/// `flags` without `\Recent`, which is never kept in an index. It is per-session state
/// (Dovecot shows it to one session only, and a read-write SELECT by any client takes it
/// away), not a property of the mail, and IMAP4rev2 (RFC 9051) dropped it: kept, it made an
/// unchanged folder look changed from one mount to the next (attributes invalidated, the
/// saved index written again). Nothing shows it (`user.imap.flags` never did).
///
/// Also the door of every flag list into an index, so it gives back the spare capacity a
/// decoded list has (room for 4 flags, 128 bytes, where most messages have one: about 90
/// bytes a message, 90 MB of a folder of 1,000,000; issue 17).
pub(crate) fn without_recent(mut flags: Vec<Flag>) -> Vec<Flag> {
    flags.retain(|f| *f != Flag::Recent);
    flags.shrink_to_fit();
    flags
}

impl MessageMeta {
    /// The size to show: the verified length when known, else the listed one.
    pub fn size(&self) -> u64 {
        self.body_len.unwrap_or(self.listed_size)
    }
}

/// One change to an index, as the store learned it from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexChange {
    Added(Uid, MessageMeta),
    Removed(Uid),
    Flags {
        uid: Uid,
        flags: Vec<Flag>,
        modseq: Option<ModSeq>,
    },
    BodyLength {
        uid: Uid,
        len: u64,
    },
}

/// A mailbox's messages, at one UIDVALIDITY. Read it through its accessors; change it
/// through [`Indexes`].
#[derive(Debug, Clone)]
pub struct Index {
    validity: UidValidity,
    uidnext: Option<Uid>,
    highest_modseq: Option<ModSeq>,
    /// PERMANENTFLAGS of the last SELECT/EXAMINE, if the server sent them.
    permanent_flags: Option<Vec<Flag>>,
    messages: UidMap<MessageMeta>,
    /// The messages the server gave an id across folders, by that id ([`ObjectIds`]);
    /// empty on a server that gives none. Kept with `messages` by every edit.
    by_object: HashMap<ObjectId, Uid>,
    /// When the listing was last checked against the server.
    fetched_at: Instant,
    /// The next question about the mailbox must ask the server, however recent `fetched_at`
    /// (our own change made the listing doubtful, or it was loaded from disk).
    stale: bool,
    /// Loaded from disk and not yet checked against the server: its first refresh checks a
    /// sample of it (`store/sync/verify.rs`). Only an offline mount holds such an index.
    unverified: bool,
}

impl Index {
    /// A whole listing, just fetched from the server.
    pub(crate) fn listed(
        validity: UidValidity,
        uidnext: Option<Uid>,
        highest_modseq: Option<ModSeq>,
        permanent_flags: Option<Vec<Flag>>,
        messages: impl Into<UidMap<MessageMeta>>,
    ) -> Index {
        let messages = messages.into();
        let by_object = messages
            .iter()
            .filter_map(|(uid, m)| Some((m.ids.as_ref()?.message.clone(), *uid)))
            .collect();
        Index {
            validity,
            uidnext,
            highest_modseq,
            permanent_flags,
            messages,
            by_object,
            fetched_at: Instant::now(),
            stale: false,
            unverified: false,
        }
    }

    /// An index saved by an earlier mount: only a starting point, so it is stale.
    pub(crate) fn saved(
        validity: UidValidity,
        uidnext: Option<Uid>,
        highest_modseq: Option<ModSeq>,
        messages: impl Into<UidMap<MessageMeta>>,
    ) -> Index {
        Index {
            stale: true,
            unverified: true,
            ..Index::listed(validity, uidnext, highest_modseq, None, messages)
        }
    }

    pub fn validity(&self) -> UidValidity {
        self.validity
    }

    pub fn uidnext(&self) -> Option<Uid> {
        self.uidnext
    }

    pub fn highest_modseq(&self) -> Option<ModSeq> {
        self.highest_modseq
    }

    /// PERMANENTFLAGS of the last SELECT/EXAMINE, if the server sent them.
    pub fn permanent_flags(&self) -> Option<&[Flag]> {
        self.permanent_flags.as_deref()
    }

    /// The messages by UID.
    pub fn messages(&self) -> &UidMap<MessageMeta> {
        &self.messages
    }

    /// The UID of the message the server calls `id` (X-GM-MSGID, EMAILID), if this folder
    /// holds one.
    pub fn uid_of(&self, id: &ObjectId) -> Option<Uid> {
        self.by_object.get(id).copied()
    }

    /// When the listing was last checked against the server.
    pub fn fetched_at(&self) -> Instant {
        self.fetched_at
    }

    /// Whether the next question about the mailbox must ask the server.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Whether the index was loaded from disk and never checked against the server (an
    /// offline mount serves it; its first refresh checks it).
    pub fn is_unverified(&self) -> bool {
        self.unverified
    }

    /// Apply one change, noting what it did in `effects` (only what it did: a pass over
    /// the flags of every message costs nothing for those that did not change); returns
    /// whether the index changed.
    fn apply(&mut self, change: IndexChange, effects: &mut Effects) -> bool {
        match change {
            IndexChange::Added(uid, mut meta) => {
                if meta.flags.contains(&Flag::Recent) {
                    meta.flags = without_recent(meta.flags.to_vec()).into();
                }
                effects.touch(self, uid);
                if self.uidnext.is_none_or(|n| n <= uid) {
                    self.uidnext = Uid::new(uid.get().saturating_add(1));
                }
                if let Some(ids) = &meta.ids {
                    self.by_object.insert(ids.message.clone(), uid);
                }
                self.messages.insert(uid, meta).is_none()
            }
            IndexChange::Removed(uid) => {
                if !self.messages.contains_key(&uid) {
                    return false;
                }
                effects.touch(self, uid);
                let removed = self.messages.remove(&uid);
                if let Some(ids) = removed.as_ref().and_then(|m| m.ids.as_ref()) {
                    if self.by_object.get(&ids.message) == Some(&uid) {
                        self.by_object.remove(&ids.message);
                    }
                }
                removed.is_some()
            }
            IndexChange::Flags { uid, flags, modseq } => {
                let flags = without_recent(flags);
                let differs =
                    |m: &MessageMeta| m.flags != flags || (modseq.is_some() && m.modseq != modseq);
                if !self.messages.get(&uid).is_some_and(differs) {
                    return false;
                }
                effects.touch(self, uid);
                effects.attributes(uid);
                if let Some(m) = self.messages.get_mut(&uid) {
                    m.flags = flags.into();
                    if modseq.is_some() {
                        m.modseq = modseq;
                    }
                }
                true
            }
            IndexChange::BodyLength { uid, len } => {
                let Some(size) = self
                    .messages
                    .get(&uid)
                    .filter(|m| m.body_len != Some(len))
                    .map(MessageMeta::size)
                else {
                    return false;
                };
                // Only a size the kernel was shown going stale is news to it.
                if size != len {
                    effects.touch(self, uid);
                    effects.attributes(uid);
                }
                if let Some(m) = self.messages.get_mut(&uid) {
                    m.body_len = Some(len);
                }
                true
            }
        }
    }

    /// Keep what `old` learned that a listing does not tell (verified body lengths), if it
    /// is of the same generation.
    fn inherit(&mut self, old: &Index) {
        if old.validity != self.validity {
            return;
        }
        for (uid, m) in self.messages.iter_mut() {
            if m.body_len.is_none() {
                m.body_len = old.messages.get(uid).and_then(|o| o.body_len);
            }
        }
    }
}

/// What the edits of one pass through the door did to each message they changed: whether
/// it was there before the first of them, and whether its attributes changed. Compared with
/// the index afterwards, this gives the net changes (a message added and removed again in
/// one pass is no news). Only messages an edit changed are noted.
#[derive(Debug, Default)]
struct Effects {
    touched: BTreeMap<Uid, (bool, bool)>,
}

impl Effects {
    /// Note `uid` before an edit changes it.
    fn touch(&mut self, ix: &Index, uid: Uid) {
        self.touched
            .entry(uid)
            .or_insert_with(|| (ix.messages.contains_key(&uid), false));
    }

    /// The attributes (flags, size) of `uid`, touched before, changed.
    fn attributes(&mut self, uid: Uid) {
        if let Some(t) = self.touched.get_mut(&uid) {
            t.1 = true;
        }
    }

    /// The net result, against the index after the edits: (removed, added, changed).
    fn net(self, ix: &Index) -> (Vec<Uid>, Vec<Uid>, Vec<Uid>) {
        let (mut removed, mut added, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        for (uid, (was, attrs)) in self.touched {
            match (was, ix.messages.contains_key(&uid)) {
                (true, false) => removed.push(uid),
                (false, true) => added.push(uid),
                (true, true) if attrs => changed.push(uid),
                _ => {}
            }
        }
        (removed, added, changed)
    }
}

#[cfg(test)]
mod tests;
