//! Checking a saved index against the server before believing it.
//!
//! A server restored from a backup, or rebuilt, can keep a folder's UIDVALIDITY while its
//! UIDs name other messages. A saved index would then show old sizes and dates (and, were its
//! lengths trusted, cut reads short). So the first refresh from a saved index lists a sample
//! of it in the same round trip: the newest [`NEWEST`] UIDs and [`RANDOM`] others chosen at
//! random. Any sampled message whose RFC822.SIZE or INTERNALDATE differs, a sampled UID that
//! the server neither lists nor reports expunged, a HIGHESTMODSEQ or UIDNEXT lower than the
//! saved ones: the saved index is another mailbox's, and the folder is listed afresh as under
//! a new UIDVALIDITY. A sample cannot prove that every message matches, which is why saved
//! body lengths are never trusted at all (see [`crate::store::persist`]).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::imap::types::{MailboxName, ModSeq, Uid};
use crate::store::index::{Index, MessageMeta};
use crate::store::sync::{Base, Delta};

/// The newest messages sampled.
pub(crate) const NEWEST: usize = 100;
/// Other messages sampled at random.
pub(crate) const RANDOM: usize = 100;

/// The sample of a saved index: (UID, RFC822.SIZE, INTERNALDATE). O(sample × log n), not
/// O(n): a remount of 1,000,000 messages must not walk them all to pick 200. The random ones
/// are the first message at or above a UID drawn at random below the newest [`NEWEST`], so
/// a message after a gap in the UIDs is likelier to be drawn; any message can be.
pub(crate) fn sample(ix: &Index) -> Vec<(Uid, u64, i64)> {
    let messages = ix.messages();
    let entry = |(u, m): (&Uid, &MessageMeta)| (*u, m.listed_size, m.internal_date);
    let mut out: Vec<(Uid, u64, i64)> = messages.iter().rev().take(NEWEST).map(entry).collect();
    out.reverse();
    let older = messages.len() - out.len();
    let (Some(&(newest, _, _)), Some(first)) = (out.first(), messages.keys().next()) else {
        return out;
    };
    if older <= RANDOM {
        out.extend(messages.range(..newest).map(entry));
        return out;
    }
    let (lo, span) = (
        u64::from(first.get()),
        u64::from(newest.get() - first.get()),
    );
    let random = RandomState::new();
    let mut picked = std::collections::BTreeSet::new();
    // Draws that land on a message drawn before are drawn again, a bounded number of times.
    for i in 0..RANDOM as u64 * 16 {
        if picked.len() == RANDOM {
            break;
        }
        let at = Uid::new((lo + random.hash_one(i) % span) as u32).unwrap_or(*first);
        if let Some(m) = messages.range(at..newest).next() {
            picked.insert(entry(m));
        }
    }
    out.extend(picked);
    out
}

/// Whether the server's answer agrees with the sample in `base` (true when there is none).
pub(crate) fn matches(
    name: &MailboxName,
    base: &Base,
    delta: &Delta,
    highest_modseq: Option<ModSeq>,
    uidnext: Option<Uid>,
) -> bool {
    if base.check.is_empty() {
        return true;
    }
    let mismatch = |why: String| {
        log::info!("{name}: the saved index does not match: {why}");
        false
    };
    if let (Some(saved), Some(now)) = (base.highest_modseq, highest_modseq) {
        if now < saved {
            return mismatch(format!(
                "HIGHESTMODSEQ went back from {} to {}",
                saved.0, now.0
            ));
        }
    }
    if let (Some(saved), Some(now)) = (base.uidnext, uidnext) {
        if now < saved {
            return mismatch(format!("UIDNEXT went back from {saved} to {now}"));
        }
    }
    let vanished = |u: Uid| {
        delta
            .vanished
            .iter()
            .any(|&(a, b)| a.min(b) <= u.get() && u.get() <= a.max(b))
            || delta.present.as_ref().is_some_and(|p| !p.contains(&u))
    };
    for &(uid, size, date) in &base.check {
        match delta.listed.get(&uid) {
            Some(m) if m.listed_size == size && m.internal_date == date => {}
            Some(m) => {
                return mismatch(format!(
                    "UID {uid} was {size} bytes at {date}, is {} at {}",
                    m.listed_size, m.internal_date
                ))
            }
            None if vanished(uid) => {}
            None => return mismatch(format!("UID {uid} is neither listed nor expunged")),
        }
    }
    true
}
