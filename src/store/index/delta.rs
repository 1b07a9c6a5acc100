//! A refresh's findings ([`Delta`], gathered by [`crate::store::sync`]) and how the door
//! ([`Indexes::apply_delta`]) applies them to an index in place.
//!
//! Invariant: an index's HIGHESTMODSEQ and UIDNEXT mean "everything the server had up to
//! here is in this index". [`Index::apply_delta`] advances them only when no UID the server
//! reported is missing from the index; otherwise it keeps the old ones and marks the index
//! stale, so the next refresh asks again for what changed since then (issue 13, item 6).
//!
//! [`Indexes::apply_delta`]: crate::store::index::Indexes::apply_delta

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::imap::types::{Flag, ModSeq, Uid};
use crate::store::index::{Effects, Index, IndexChange, MessageMeta};

/// The changes since a refresh's base ([`crate::store::sync`]), as the server reported them.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    pub uidnext: Option<Uid>,
    pub highest_modseq: Option<ModSeq>,
    pub permanent_flags: Option<Vec<Flag>>,
    /// Expunged (QRESYNC `VANISHED`): ranges that may cover UIDs never known.
    pub vanished: Vec<(u32, u32)>,
    /// Every UID the mailbox holds, where the server was asked (UID SEARCH ALL, or the flags
    /// of every message); a known UID below `uidnext` missing from it was expunged.
    pub present: Option<BTreeSet<Uid>>,
    /// Flags (and MODSEQ) of messages: the changed ones, or all of them.
    pub flags: Vec<(Uid, Vec<Flag>, Option<ModSeq>)>,
    /// Whole metadata of messages listed (the new ones).
    pub listed: BTreeMap<Uid, MessageMeta>,
}

impl Index {
    /// Apply a refresh's findings, noting what they did in `effects`; returns the UIDs the
    /// server has that the index lacks (to be listed). The caller (the door) has checked
    /// that the index is at the delta's UIDVALIDITY.
    pub(super) fn apply_delta(&mut self, delta: Delta, effects: &mut Effects) -> Vec<Uid> {
        let mut removed = Vec::new();
        for (a, b) in delta.vanished {
            let (lo, hi) = (a.min(b), a.max(b));
            let (Some(lo), Some(hi)) = (Uid::new(lo.max(1)), Uid::new(hi)) else {
                continue;
            };
            removed.extend(self.messages.range(lo..=hi).map(|(u, _)| *u));
        }
        if let Some(present) = &delta.present {
            // A message added to the index after the server answered (a move of ours) has
            // a UID at or above the UIDNEXT of that answer: only older ones can be judged.
            let limit = delta.uidnext.map_or(u32::MAX, Uid::get);
            removed.extend(
                self.messages
                    .keys()
                    .filter(|u| u.get() < limit && !present.contains(u))
                    .copied(),
            );
        }
        removed.sort_unstable();
        removed.dedup();
        for u in &removed {
            self.apply(IndexChange::Removed(*u), effects);
        }
        let mut unknown = BTreeSet::new();
        for (uid, mut meta) in delta.listed {
            if removed.binary_search(&uid).is_ok() {
                continue;
            }
            if meta.flags.contains(&Flag::Recent) {
                meta.flags = super::without_recent(meta.flags.to_vec()).into();
            }
            if self
                .messages
                .get(&uid)
                .is_some_and(|m| m.flags != meta.flags || m.listed_size != meta.listed_size)
            {
                effects.touch(self, uid);
                effects.attributes(uid);
            } else if self
                .messages
                .get(&uid)
                .is_some_and(|m| meta.modseq.is_some() && m.modseq != meta.modseq)
            {
                // Not news for the filesystem, but the index changed.
                effects.touch(self, uid);
            }
            match self.messages.get_mut(&uid) {
                Some(m) => {
                    m.flags = meta.flags;
                    m.modseq = meta.modseq.or(m.modseq);
                    m.listed_size = meta.listed_size;
                }
                None => {
                    self.apply(IndexChange::Added(uid, meta), effects);
                }
            }
        }
        for (uid, flags, modseq) in delta.flags {
            if removed.binary_search(&uid).is_ok() {
                continue;
            }
            if self.messages.contains_key(&uid) {
                self.apply(IndexChange::Flags { uid, flags, modseq }, effects);
            } else {
                unknown.insert(uid);
            }
        }
        if let Some(present) = &delta.present {
            unknown.extend(
                present
                    .iter()
                    .filter(|u| !self.messages.contains_key(u))
                    .copied(),
            );
        }
        // HIGHESTMODSEQ and UIDNEXT say "everything up to here is in the index": only true
        // once no UID the server reported is missing from it. Otherwise the old ones stay,
        // and the next refresh asks again for what changed since them.
        let complete = unknown.is_empty();
        if let Some(n) = delta.uidnext.filter(|_| complete) {
            if self.uidnext.is_none_or(|old| old < n) {
                self.uidnext = Some(n);
            }
        }
        if complete && delta.highest_modseq.is_some() {
            self.highest_modseq = delta.highest_modseq;
        }
        if delta.permanent_flags.is_some() {
            self.permanent_flags = delta.permanent_flags;
        }
        self.fetched_at = Instant::now();
        self.stale = !complete;
        // The delta was asked with a sample check of an unverified index, which passed.
        self.unverified = false;
        unknown.into_iter().collect()
    }
}
