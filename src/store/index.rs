//! What we know about one mailbox's messages: its generation (UIDVALIDITY) and each message's
//! metadata, and the table of every mailbox's index.
//!
//! An [`Index`] is built whole from one pipelined `UID FETCH 1:* (UID FLAGS RFC822.SIZE
//! INTERNALDATE [MODSEQ])` (never one command per message) and afterwards changed only by
//! [`Index::apply`] with an [`IndexChange`]: a flag update, an expunge, a new message, a body
//! length learned from reading. Edits happen in place under the mailbox's lock, so an edit
//! costs what it changes, not a copy of the whole listing.
//!
//! Invariant: a message's `body_len`, once known, is the exact length of its `BODY[]` and
//! survives refreshes of the same generation ([`Index::inherit`]); RFC822.SIZE is only the
//! server's claim (Exchange, Gmail and hMailServer are known to lie).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::imap::types::{Flag, ModSeq, Uid, UidValidity};
use crate::store::changes::Change;
use crate::store::ids::{MailboxId, MessageRef};

/// Metadata of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageMeta {
    /// RFC822.SIZE as the server listed it.
    pub listed_size: u64,
    /// The real length of `BODY[]`, once a read reached its end.
    pub body_len: Option<u64>,
    /// INTERNALDATE, seconds since the epoch.
    pub internal_date: i64,
    pub flags: Vec<Flag>,
    /// The message's MODSEQ (CONDSTORE servers).
    pub modseq: Option<ModSeq>,
}

impl MessageMeta {
    /// The size to show: the verified length when known, else the listed one.
    pub fn size(&self) -> u64 {
        self.body_len.unwrap_or(self.listed_size)
    }
}

/// One change to an index.
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

/// A mailbox's messages, at one UIDVALIDITY.
#[derive(Debug, Clone)]
pub struct Index {
    pub validity: UidValidity,
    pub uidnext: Option<Uid>,
    pub highest_modseq: Option<ModSeq>,
    /// PERMANENTFLAGS of the last SELECT/EXAMINE, if the server sent them.
    pub permanent_flags: Option<Vec<Flag>>,
    pub messages: BTreeMap<Uid, MessageMeta>,
    /// When the listing was last checked against the server.
    pub fetched_at: Instant,
    /// The next question about the mailbox must ask the server, however recent `fetched_at`
    /// (our own change made the listing doubtful, or it was loaded from disk).
    pub stale: bool,
}

impl Index {
    /// Apply one change; returns whether anything changed.
    pub fn apply(&mut self, change: IndexChange) -> bool {
        match change {
            IndexChange::Added(uid, meta) => {
                if self.uidnext.is_none_or(|n| n <= uid) {
                    self.uidnext = Uid::new(uid.get().saturating_add(1));
                }
                self.messages.insert(uid, meta).is_none()
            }
            IndexChange::Removed(uid) => self.messages.remove(&uid).is_some(),
            IndexChange::Flags { uid, flags, modseq } => match self.messages.get_mut(&uid) {
                Some(m) if m.flags != flags || (modseq.is_some() && m.modseq != modseq) => {
                    m.flags = flags;
                    if modseq.is_some() {
                        m.modseq = modseq;
                    }
                    true
                }
                _ => false,
            },
            IndexChange::BodyLength { uid, len } => match self.messages.get_mut(&uid) {
                Some(m) if m.body_len != Some(len) => {
                    m.body_len = Some(len);
                    true
                }
                _ => false,
            },
        }
    }

    /// Make the next question about the mailbox ask the server.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Keep what `old` learned that a listing does not tell (verified body lengths), if it
    /// is of the same generation.
    pub fn inherit(&mut self, old: &Index) {
        if old.validity != self.validity {
            return;
        }
        for (uid, m) in &mut self.messages {
            if m.body_len.is_none() {
                m.body_len = old.messages.get(uid).and_then(|o| o.body_len);
            }
        }
    }
}

/// A mailbox's index, shared between the store's threads.
pub type SharedIndex = Arc<RwLock<Index>>;

/// Every mailbox's index we hold.
#[derive(Default)]
pub struct Indexes {
    map: Mutex<HashMap<MailboxId, SharedIndex>>,
    /// Edits of ours to each mailbox's messages (added, removed, flags), counted under the
    /// index's write lock: a refresh whose server answer was asked before one of them may be
    /// older than what the index shows (a moved message listed again in its source), and
    /// is asked again instead of applied (`sync.rs`). Body lengths learned by reading do
    /// not count: no listing contradicts them.
    edits: Mutex<HashMap<MailboxId, u64>>,
}

impl Indexes {
    pub fn get(&self, id: MailboxId) -> Option<SharedIndex> {
        self.map.lock().get(&id).cloned()
    }

    /// The metadata of a message of the generation it names, from what we hold (no I/O).
    pub fn meta(&self, msg: MessageRef) -> Option<MessageMeta> {
        let ix = self.get(msg.mailbox)?;
        let ix = ix.read();
        if ix.validity != msg.validity {
            return None;
        }
        ix.messages.get(&msg.uid).cloned()
    }

    /// Apply a change to the index of `mailbox` if it is still at `validity`. Returns
    /// whether anything changed.
    pub fn apply(&self, mailbox: MailboxId, validity: UidValidity, change: IndexChange) -> bool {
        let Some(ix) = self.get(mailbox) else {
            return false;
        };
        let mut ix = ix.write();
        if ix.validity != validity {
            return false;
        }
        if !matches!(change, IndexChange::BodyLength { .. }) {
            *self.edits.lock().entry(mailbox).or_default() += 1;
        }
        ix.apply(change)
    }

    /// How many edits of ours [`Indexes::apply`] made to `mailbox` (see `edits`). Compared
    /// while holding the index's lock, equal counts mean no edit came in between.
    pub fn local_edits(&self, mailbox: MailboxId) -> u64 {
        self.edits.lock().get(&mailbox).copied().unwrap_or(0)
    }

    /// Install a freshly listed index, keeping what the old one verified. Returns the changes
    /// a watcher of the mailbox should hear about (nothing for a first listing). With
    /// `unless_edited_since`, an index we hold that was edited since that count
    /// ([`Indexes::local_edits`]) is kept and `None` returned: the listing may predate the edit.
    pub fn install(
        &self,
        id: MailboxId,
        mut new: Index,
        unless_edited_since: Option<u64>,
    ) -> Option<(SharedIndex, Vec<Change>)> {
        let old = self.get(id);
        let Some(old) = old else {
            let shared = Arc::new(RwLock::new(new));
            self.map.lock().insert(id, shared.clone());
            return Some((shared, Vec::new()));
        };
        let mut guard = old.write();
        if unless_edited_since.is_some_and(|n| n != self.local_edits(id)) {
            return None;
        }
        new.inherit(&guard);
        let changes = diff(id, &guard, &new);
        *guard = new;
        drop(guard);
        Some((old, changes))
    }

    /// The mailboxes we hold an index for.
    pub fn ids(&self) -> Vec<MailboxId> {
        self.map.lock().keys().copied().collect()
    }

    /// Forget a mailbox's index (it was deleted or renamed).
    pub fn remove(&self, id: MailboxId) {
        self.map.lock().remove(&id);
    }
}

/// What changed between two listings of a mailbox.
fn diff(mailbox: MailboxId, old: &Index, new: &Index) -> Vec<Change> {
    if old.validity != new.validity {
        return vec![Change::Reset {
            mailbox,
            old: old.validity,
            uids: old.messages.keys().copied().collect(),
        }];
    }
    let validity = new.validity;
    let removed: Vec<Uid> = old
        .messages
        .keys()
        .filter(|u| !new.messages.contains_key(u))
        .copied()
        .collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for (uid, m) in &new.messages {
        match old.messages.get(uid) {
            None => added.push(*uid),
            Some(o) if o.flags != m.flags || o.size() != m.size() => changed.push(*uid),
            Some(_) => {}
        }
    }
    Change::of_diff(mailbox, validity, removed, added, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> MessageMeta {
        MessageMeta {
            listed_size: size,
            body_len: None,
            internal_date: 0,
            flags: Vec::new(),
            modseq: None,
        }
    }

    fn index(v: u32, uids: &[u32]) -> Index {
        Index {
            validity: UidValidity::new(v).unwrap(),
            uidnext: None,
            highest_modseq: None,
            permanent_flags: None,
            messages: uids
                .iter()
                .map(|&u| (Uid::new(u).unwrap(), meta(10)))
                .collect(),
            fetched_at: Instant::now(),
            stale: false,
        }
    }

    fn uid(n: u32) -> Uid {
        Uid::new(n).unwrap()
    }

    #[test]
    fn body_lengths_survive_a_refresh_of_the_same_generation() {
        let ix = Indexes::default();
        let id = MailboxId::new(1).unwrap();
        ix.install(id, index(7, &[1, 2]), None);
        let v = UidValidity::new(7).unwrap();
        assert!(ix.apply(
            id,
            v,
            IndexChange::BodyLength {
                uid: uid(2),
                len: 99
            }
        ));
        let (_, changes) = ix.install(id, index(7, &[2, 3]), None).unwrap();
        let msg = MessageRef {
            mailbox: id,
            validity: v,
            uid: uid(2),
        };
        assert_eq!(ix.meta(msg).unwrap().size(), 99);
        assert!(changes.contains(&Change::Removed {
            mailbox: id,
            validity: v,
            uids: vec![uid(1)]
        }));
        assert!(changes.contains(&Change::Added {
            mailbox: id,
            validity: v,
            uids: vec![uid(3)]
        }));
        // A new generation learns nothing from the old one.
        let (_, changes) = ix.install(id, index(8, &[2]), None).unwrap();
        assert_eq!(
            changes,
            vec![Change::Reset {
                mailbox: id,
                old: v,
                uids: vec![uid(2), uid(3)]
            }]
        );
        let msg = MessageRef {
            validity: UidValidity::new(8).unwrap(),
            ..msg
        };
        assert_eq!(ix.meta(msg).unwrap().size(), 10);
    }

    #[test]
    fn changes_apply_in_place_and_only_to_their_generation() {
        let ix = Indexes::default();
        let id = MailboxId::new(1).unwrap();
        ix.install(id, index(7, &[1]), None);
        let wrong = UidValidity::new(6).unwrap();
        assert!(!ix.apply(id, wrong, IndexChange::Removed(uid(1))));
        let v = UidValidity::new(7).unwrap();
        let flags = vec![Flag::Seen];
        assert!(ix.apply(
            id,
            v,
            IndexChange::Flags {
                uid: uid(1),
                flags: flags.clone(),
                modseq: Some(ModSeq(5))
            }
        ));
        assert!(ix.apply(id, v, IndexChange::Added(uid(9), meta(1))));
        assert_eq!(ix.get(id).unwrap().read().uidnext, Some(uid(10)));
        assert!(ix.apply(id, v, IndexChange::Removed(uid(1))));
        assert!(!ix.apply(id, v, IndexChange::Removed(uid(1))));
    }
}
