//! The one door into the indexes: every edit of an [`Index`] goes through [`Indexes`], which
//! sends the matching [`Change`]s to the feed itself.
//!
//! Three kinds of edit come in: [`Indexes::apply`] (what a read, a flag change, an append, a
//! move or an expunge of ours learned from the server), [`Indexes::apply_delta`] (what a
//! refresh learned) and [`Indexes::install`] (a whole listing). Each takes the mailbox's
//! lock once, edits in place, and sends what the edits did on net ([`Effects`]; a listing
//! is compared with the index it replaces), still under the lock, so notifications come in
//! the order of the edits.
//!
//! A refresh is slower than the edits of our own writes, and its answer may predate one of
//! them: a listing fetched before a move was confirmed still holds the moved message, and
//! installed after the move's edit it would bring the message back (issue 14; found by
//! tests/safety/model.rs). So a refresh opens a [`Listing`] before it asks the server, and
//! while one is open the door journals every edit of the mailbox; when the refresh's answer
//! goes in, the edits made since the listing began are applied again on top of it:
//!
//! - a removal always (a UID never comes back);
//! - an addition only if the answer's UIDNEXT says the server had not given out that UID
//!   yet (else the answer is the newer word: another client removed the message since);
//! - a flag change only if its MODSEQ is newer than the answer's, or, when either MODSEQ is
//!   unknown, always, and the index is marked stale so that the next question asks again;
//! - a body length always; a "stale" mark always.
//!
//! The journal lives only while a listing is open: no refresh, no cost.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::imap::types::{Uid, UidValidity};
use crate::store::changes::{Change, ChangeFeed};
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::index::{Delta, Effects, Index, IndexChange, MessageMeta, ObjectId, ObjectIds};

/// A mailbox's index, shared between the store's threads and the filesystem: readable by
/// all, changed only by [`Indexes`].
#[derive(Debug, Clone)]
pub struct SharedIndex(Arc<RwLock<Index>>);

impl SharedIndex {
    /// A read of the index. Recursive: a thread that already holds a read (a walk over the
    /// messages asking the caches about each) gets another even while a writer waits, where a
    /// plain parking_lot read would queue behind the writer, which waits for the first read:
    /// every thread of the mount stuck (seen: a folder walk's prefetch against a stream
    /// landing blocks). Reads are short, so the writer waits for them only briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.0.read_recursive()
    }
}

/// Every mailbox's index we hold, and the door through which they change.
pub struct Indexes {
    map: Mutex<HashMap<MailboxId, SharedIndex>>,
    /// Edits made while a refresh of the mailbox is under way (see the module's story).
    journal: Mutex<HashMap<MailboxId, Journal>>,
    feed: Arc<ChangeFeed>,
}

#[derive(Default)]
struct Journal {
    /// Listings open on the mailbox.
    open: usize,
    edits: Vec<Edit>,
}

#[derive(Debug, Clone)]
enum Edit {
    Change(UidValidity, IndexChange),
    Stale,
}

/// A refresh under way: edits made to its mailbox from now on are applied again on top of
/// its answer ([`Indexes::install`], [`Indexes::apply_delta`]). Open it before asking the
/// server.
pub(crate) struct Listing<'a> {
    indexes: &'a Indexes,
    mailbox: MailboxId,
    /// Journal entries before this listing began.
    from: usize,
}

impl Drop for Listing<'_> {
    fn drop(&mut self) {
        let mut journal = self.indexes.journal.lock();
        if let Some(j) = journal.get_mut(&self.mailbox) {
            j.open = j.open.saturating_sub(1);
            if j.open == 0 {
                journal.remove(&self.mailbox);
            }
        }
    }
}

impl Indexes {
    /// Indexes whose changes go to `feed`.
    pub fn new(feed: Arc<ChangeFeed>) -> Indexes {
        Indexes {
            map: Mutex::new(HashMap::new()),
            journal: Mutex::new(HashMap::new()),
            feed,
        }
    }

    pub fn get(&self, id: MailboxId) -> Option<SharedIndex> {
        self.map.lock().get(&id).cloned()
    }

    /// The metadata of a message of the generation it names, from what we hold (no I/O).
    /// A recursive read: callers may hold an index's lock (a walk over a folder asking
    /// whether a block is cached).
    pub fn meta(&self, msg: MessageRef) -> Option<MessageMeta> {
        let ix = self.get(msg.mailbox)?;
        let ix = ix.0.read_recursive();
        if ix.validity != msg.validity {
            return None;
        }
        ix.messages.get(&msg.uid).cloned()
    }

    /// The ids a message has across folders, if the server gave it any (no I/O).
    pub fn object_ids(&self, msg: MessageRef) -> Option<Arc<ObjectIds>> {
        let ix = self.get(msg.mailbox)?;
        let ix = ix.0.read_recursive();
        if ix.validity != msg.validity {
            return None;
        }
        ix.messages.get(&msg.uid)?.ids.clone()
    }

    /// Every copy of the message the server calls `id` in the folders we hold an index of,
    /// in mailbox order (no I/O). Safe to call while holding a read lock of an index: the
    /// locks are taken as recursive reads (never behind a waiting writer), and the table's
    /// own lock is never held while an index lock is awaited.
    pub fn copies(&self, id: &ObjectId) -> Vec<MessageRef> {
        let mut held = self.held();
        held.sort_unstable_by_key(|(m, _)| *m);
        held.into_iter()
            .filter_map(|(mailbox, ix)| {
                let ix = ix.0.read_recursive();
                Some(MessageRef {
                    mailbox,
                    validity: ix.validity,
                    uid: ix.uid_of(id)?,
                })
            })
            .collect()
    }

    /// How many folders we hold an index of hold the message `id` names: the length of
    /// [`Indexes::copies`] without ordering or collecting them (a Gmail message's link count,
    /// asked for every entry of a listing and every getattr).
    pub fn copy_count(&self, id: &ObjectId) -> usize {
        self.held()
            .into_iter()
            .filter(|(_, ix)| ix.0.read_recursive().uid_of(id).is_some())
            .count()
    }

    /// Every index we hold, with its mailbox (the table's lock is released on return, before
    /// any index lock is taken).
    fn held(&self) -> Vec<(MailboxId, SharedIndex)> {
        self.map
            .lock()
            .iter()
            .map(|(m, ix)| (*m, ix.clone()))
            .collect()
    }

    /// The mailboxes we hold an index for.
    pub fn ids(&self) -> Vec<MailboxId> {
        self.map.lock().keys().copied().collect()
    }

    /// Apply changes to the index of `mailbox` if it is still at `validity`, and tell the
    /// feed what they did. Returns whether the index changed.
    pub fn apply(
        &self,
        mailbox: MailboxId,
        validity: UidValidity,
        changes: impl IntoIterator<Item = IndexChange>,
    ) -> bool {
        self.pass(mailbox, validity, changes.into_iter().collect(), |net| {
            Change::of_diff(mailbox, validity, net.0, net.1, net.2)
        })
        .unwrap_or(false)
    }

    /// Messages left a mailbox by a command of ours (expunged, moved away): out of the
    /// index, and the feed hears of every one of them, even those the index no longer held
    /// (the kernel may still have their names).
    pub(crate) fn expunged(&self, mailbox: MailboxId, validity: UidValidity, uids: &[Uid]) {
        let changes = uids.iter().map(|&u| IndexChange::Removed(u)).collect();
        let held = self.pass(mailbox, validity, changes, |_| {
            vec![Change::Removed {
                mailbox,
                validity,
                uids: uids.to_vec(),
            }]
        });
        if held.is_none() {
            // No index at that generation: nothing to edit, but still news to the kernel.
            self.feed.send([Change::Removed {
                mailbox,
                validity,
                uids: uids.to_vec(),
            }]);
        }
    }

    /// Make the next question about a mailbox's messages ask the server.
    pub fn mark_stale(&self, id: MailboxId) {
        let shared = {
            let map = self.map.lock();
            match map.get(&id) {
                Some(ix) => ix.clone(),
                None => {
                    // A first listing may be under way: it is stale from the start.
                    self.note(id, || vec![Edit::Stale]);
                    return;
                }
            }
        };
        let mut ix = shared.0.write();
        ix.stale = true;
        self.note(id, || vec![Edit::Stale]);
    }

    /// Open a listing of `id` (see [`Listing`]).
    pub(crate) fn begin_listing(&self, id: MailboxId) -> Listing<'_> {
        let mut journal = self.journal.lock();
        let j = journal.entry(id).or_default();
        j.open += 1;
        Listing {
            indexes: self,
            mailbox: id,
            from: j.edits.len(),
        }
    }

    /// Install a whole listing, keeping what the old index verified and the edits made
    /// since `listing` began; the feed hears the differences from the old index (nothing
    /// for a first listing). `disowned`: a saved index the server turned out not to match,
    /// announced as a reset of its generation. Returns the changes sent.
    pub(crate) fn install(
        &self,
        id: MailboxId,
        mut new: Index,
        listing: &Listing<'_>,
        disowned: Option<&Index>,
    ) -> (SharedIndex, Vec<Change>) {
        let mut map = self.map.lock();
        let Some(shared) = map.get(&id).cloned() else {
            self.replay(&mut new, listing, &mut Effects::default());
            let shared = SharedIndex(Arc::new(RwLock::new(new)));
            map.insert(id, shared.clone());
            let changes: Vec<Change> = disowned
                .map(|old| Change::Reset {
                    mailbox: id,
                    old: old.validity,
                    uids: old.messages.keys().copied().collect(),
                })
                .into_iter()
                .collect();
            drop(map);
            self.feed.send(changes.clone());
            return (shared, changes);
        };
        drop(map);
        let mut guard = shared.0.write();
        new.inherit(&guard);
        self.replay(&mut new, listing, &mut Effects::default());
        let changes = diff(id, &guard, &new);
        *guard = new;
        self.feed.send(changes.clone());
        drop(guard);
        (shared, changes)
    }

    /// Apply a refresh's findings to the index of `id` at `validity`, with the edits made
    /// since `listing` began on top; `saved` is the saved index the refresh started from
    /// when none was held, installed with them. Returns the index, the UIDs the server has
    /// that it lacks and whether anything in the index changed (a saved index the refresh
    /// found unchanged need not be written again), or `None` when there is no index to apply
    /// them to.
    pub(crate) fn apply_delta(
        &self,
        id: MailboxId,
        validity: UidValidity,
        delta: Delta,
        listing: &Listing<'_>,
        saved: Option<Index>,
    ) -> Option<(SharedIndex, Vec<Uid>, bool)> {
        let map = self.map.lock();
        let (shared, map) = match (map.get(&id).cloned(), saved) {
            (Some(shared), _) => {
                drop(map);
                (shared, None)
            }
            (None, Some(ix)) => {
                // Installed now, edited before anyone else can take its lock.
                let shared = SharedIndex(Arc::new(RwLock::new(ix)));
                let mut map = map;
                map.insert(id, shared.clone());
                (shared, Some(map))
            }
            (None, None) => return None,
        };
        let mut ix = shared.0.write();
        drop(map);
        if ix.validity != validity {
            // The index was replaced meanwhile; its next refresh starts over.
            ix.stale = true;
            return Some((shared.clone(), Vec::new(), true));
        }
        let marks = |ix: &Index| (ix.uidnext, ix.highest_modseq);
        let before = marks(&ix);
        let mut effects = Effects::default();
        let unknown = ix.apply_delta(delta, &mut effects);
        self.replay(&mut ix, listing, &mut effects);
        let edited = !effects.touched.is_empty() || marks(&ix) != before;
        let (removed, added, changed) = effects.net(&ix);
        self.feed
            .send(Change::of_diff(id, validity, removed, added, changed));
        drop(ix);
        Some((shared, unknown, edited))
    }

    /// Hold an index loaded from disk while the server cannot be reached (an offline
    /// mount), unless one is held already: nothing is sent, the kernel has seen nothing of
    /// the mailbox yet. Its first refresh checks it ([`Index::is_unverified`]).
    pub(crate) fn install_saved(&self, id: MailboxId, saved: Index) -> SharedIndex {
        self.map
            .lock()
            .entry(id)
            .or_insert_with(|| SharedIndex(Arc::new(RwLock::new(saved))))
            .clone()
    }

    /// Forget a mailbox's index (it was deleted or renamed).
    pub fn remove(&self, id: MailboxId) {
        self.map.lock().remove(&id);
    }

    /// One pass of `changes` through the door: edit under the lock, journal for open
    /// listings, send what `announce` makes of the net effect (removed, added, changed).
    /// Returns whether the index changed, or `None` when there is no index at `validity`
    /// (nothing edited, nothing sent).
    fn pass(
        &self,
        mailbox: MailboxId,
        validity: UidValidity,
        changes: Vec<IndexChange>,
        announce: impl FnOnce((Vec<Uid>, Vec<Uid>, Vec<Uid>)) -> Vec<Change>,
    ) -> Option<bool> {
        let journaled = || {
            changes
                .iter()
                .map(|c| Edit::Change(validity, c.clone()))
                .collect()
        };
        let shared = {
            let map = self.map.lock();
            match map.get(&mailbox) {
                Some(ix) => ix.clone(),
                None => {
                    // A first listing may be under way: it takes these edits on top.
                    self.note(mailbox, journaled);
                    return None;
                }
            }
        };
        let mut ix = shared.0.write();
        self.note(mailbox, journaled);
        if ix.validity != validity {
            return None;
        }
        let mut effects = Effects::default();
        let mut edited = false;
        for c in changes {
            edited |= ix.apply(c, &mut effects);
        }
        let net = effects.net(&ix);
        self.feed.send(announce(net));
        Some(edited)
    }

    /// Journal edits of `id` if a listing of it is open.
    fn note(&self, id: MailboxId, edits: impl FnOnce() -> Vec<Edit>) {
        if let Some(j) = self.journal.lock().get_mut(&id) {
            j.edits.extend(edits());
        }
    }

    /// Apply again, on top of a refresh's answer, the edits made since its listing began.
    fn replay(&self, ix: &mut Index, listing: &Listing<'_>, effects: &mut Effects) {
        let edits: Vec<Edit> = match self.journal.lock().get(&listing.mailbox) {
            Some(j) => j.edits.get(listing.from..).unwrap_or_default().to_vec(),
            None => return,
        };
        for e in edits {
            match e {
                Edit::Stale => ix.stale = true,
                Edit::Change(v, c) if v == ix.validity => ix.replay(c, effects),
                Edit::Change(..) => {}
            }
        }
    }
}

impl Index {
    /// Apply again an edit of ours made while a refresh was under way, on top of its answer
    /// (the rules are in the module's story).
    fn replay(&mut self, change: IndexChange, effects: &mut Effects) {
        match change {
            IndexChange::Added(uid, _) if self.messages.contains_key(&uid) => {}
            // The answer knew the UID and does not hold it: removed since, by another client.
            IndexChange::Added(uid, _) if self.uidnext.is_some_and(|n| n > uid) => {}
            IndexChange::Flags {
                uid,
                modseq: Some(ours),
                ..
            } if self
                .messages
                .get(&uid)
                .and_then(|m| m.modseq)
                .is_some_and(|theirs| theirs >= ours) => {}
            IndexChange::Flags {
                uid,
                modseq: Some(_),
                ..
            } if self.messages.get(&uid).is_some_and(|m| m.modseq.is_some()) => {
                self.apply(change, effects);
            }
            c @ IndexChange::Flags { .. } => {
                if self.apply(c, effects) {
                    // Which is newer, the answer or our edit, cannot be told: ask again.
                    self.stale = true;
                }
            }
            c => {
                self.apply(c, effects);
            }
        }
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
    use std::collections::BTreeMap;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    /// The deadlock of the folder walk (a thread holding a read asked for another while a
    /// writer waited): a read while another read is held must not queue behind the writer.
    #[test]
    fn a_read_never_queues_behind_a_writer_waiting_for_another_read() {
        let validity = UidValidity::new(1).expect("validity");
        let ix = Index::listed(validity, None, None, None, BTreeMap::new());
        let shared = SharedIndex(Arc::new(RwLock::new(ix)));
        let first = shared.read();
        let writer = {
            let s = shared.clone();
            std::thread::spawn(move || drop(s.0.write()))
        };
        // The writer has claimed the lock against new plain reads (it waits for `first`).
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.0.try_read().is_some() {
            assert!(Instant::now() < deadline, "the writer never queued");
            std::thread::yield_now();
        }
        let (tx, rx) = mpsc::channel();
        let reader = {
            let s = shared.clone();
            std::thread::spawn(move || {
                let _second = s.read();
                let _ = tx.send(());
            })
        };
        let second = rx.recv_timeout(Duration::from_secs(10));
        drop(first);
        writer.join().expect("writer");
        reader.join().expect("reader");
        assert!(
            second.is_ok(),
            "a second read waited for the writer: deadlock"
        );
    }
}
