//! A refresh's findings ([`Delta`]) and how they are applied to an index in place.
//!
//! Invariant: an index's HIGHESTMODSEQ and UIDNEXT mean "everything the server had up to
//! here is in this index". [`apply_delta`] advances them only when no UID the server reported
//! is missing from the index; otherwise it keeps the old ones and marks the index stale, so
//! the next refresh asks again for what changed since then (issue 13, item 6).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::imap::types::{Flag, ModSeq, Uid, UidValidity};
use crate::store::changes::Change;
use crate::store::ids::MailboxId;
use crate::store::index::{Index, IndexChange, MessageMeta};

/// The changes since a [`Base`], as the server reported them.
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

/// Apply a delta to an index at `validity`: returns the changes for the feed and the UIDs
/// the server has that the index lacks (to be listed).
pub(crate) fn apply_delta(
    mailbox: MailboxId,
    validity: UidValidity,
    ix: &mut Index,
    delta: Delta,
) -> (Vec<Change>, Vec<Uid>) {
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let mut changed = BTreeSet::new();
    if ix.validity != validity {
        // The index was replaced meanwhile; its next refresh starts over.
        ix.stale = true;
        return (Vec::new(), Vec::new());
    }
    for (a, b) in delta.vanished {
        let (lo, hi) = (a.min(b), a.max(b));
        let (Some(lo), Some(hi)) = (Uid::new(lo.max(1)), Uid::new(hi)) else {
            continue;
        };
        removed.extend(ix.messages.range(lo..=hi).map(|(u, _)| *u));
    }
    if let Some(present) = &delta.present {
        // A message added to the index after the server answered (a move of ours) has a UID
        // at or above the UIDNEXT of that answer: only older ones can be judged.
        let limit = delta.uidnext.map_or(u32::MAX, Uid::get);
        removed.extend(
            ix.messages
                .keys()
                .filter(|u| u.get() < limit && !present.contains(u))
                .copied(),
        );
    }
    removed.sort_unstable();
    removed.dedup();
    for u in &removed {
        ix.apply(IndexChange::Removed(*u));
    }
    let mut unknown = BTreeSet::new();
    for (uid, meta) in delta.listed {
        if removed.binary_search(&uid).is_ok() {
            continue;
        }
        match ix.messages.get_mut(&uid) {
            Some(m) => {
                if m.flags != meta.flags || m.listed_size != meta.listed_size {
                    changed.insert(uid);
                }
                m.flags = meta.flags;
                m.modseq = meta.modseq.or(m.modseq);
                m.listed_size = meta.listed_size;
            }
            None => {
                ix.apply(IndexChange::Added(uid, meta));
                added.push(uid);
            }
        }
    }
    for (uid, flags, modseq) in delta.flags {
        if removed.binary_search(&uid).is_ok() {
            continue;
        }
        if ix.messages.contains_key(&uid) {
            if ix.apply(IndexChange::Flags { uid, flags, modseq }) {
                changed.insert(uid);
            }
        } else {
            unknown.insert(uid);
        }
    }
    if let Some(present) = &delta.present {
        unknown.extend(
            present
                .iter()
                .filter(|u| !ix.messages.contains_key(u))
                .copied(),
        );
    }
    // HIGHESTMODSEQ and UIDNEXT say "everything up to here is in the index": only true once
    // no UID the server reported is missing from it. Otherwise the old ones stay, and the
    // next refresh asks again for what changed since them.
    let complete = unknown.is_empty();
    if let Some(n) = delta.uidnext.filter(|_| complete) {
        if ix.uidnext.is_none_or(|old| old < n) {
            ix.uidnext = Some(n);
        }
    }
    if complete && delta.highest_modseq.is_some() {
        ix.highest_modseq = delta.highest_modseq;
    }
    if delta.permanent_flags.is_some() {
        ix.permanent_flags = delta.permanent_flags;
    }
    ix.fetched_at = Instant::now();
    ix.stale = !complete;
    let changes = Change::of_diff(
        mailbox,
        validity,
        removed,
        added,
        changed.into_iter().collect(),
    );
    (changes, unknown.into_iter().collect())
}
