//! Counting blocks fetched from the server a second time in one mount (`blocks_refetched` in
//! `user.imapfs.stats`): what fetching ahead wasted, because a block was evicted before its
//! reader got there or because two fetchers asked for it at once.
//!
//! Every block that comes from the server passes [`crate::store::Account::keep_block`], which
//! notes it here. Memory is fixed whatever the mount reads (1,000,000 messages included): a
//! direct-mapped table of [`SLOTS`] fingerprints of 64 bits (512 KiB, allocated zeroed, so
//! untouched pages cost nothing), one per block key hash, the last block fetched into each
//! slot. A block fetched again is counted when its slot still holds it: a lower bound (a slot
//! another block took since forgets the first), never an overcount but for a 61-bit
//! fingerprint collision. Blocks fetched again while the first copy was still in the memory
//! cache (two fetches in flight at once, or a fetch of a block already there) are counted
//! apart (`blocks_refetched_cached`): that is a race, the rest an eviction.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::blocks::BlockKey;

/// Slots in the table (a power of two).
const SLOTS: usize = 1 << 16;

/// Who fetched a block: kept in a slot's low bits, so that a refetch says who came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetcher {
    /// A read, for the blocks it needs.
    Read,
    /// A read's readahead in the same message, or its walk prefetch of the next messages.
    Ahead,
    /// A folder stream (`store::stream`).
    Stream,
    /// The prefetch for offline use (`store::prefetch`).
    Prefetch,
}

impl Fetcher {
    const ALL: [Fetcher; 4] = [
        Fetcher::Read,
        Fetcher::Ahead,
        Fetcher::Stream,
        Fetcher::Prefetch,
    ];

    fn bits(self) -> u64 {
        // 0 is an empty slot.
        match self {
            Fetcher::Read => 1,
            Fetcher::Ahead => 2,
            Fetcher::Stream => 3,
            Fetcher::Prefetch => 4,
        }
    }

    fn from_bits(bits: u64) -> Option<Fetcher> {
        Fetcher::ALL.into_iter().find(|f| f.bits() == bits)
    }
}

/// The table of blocks fetched lately and the counts of those fetched again.
pub(crate) struct FetchLog {
    slots: Box<[AtomicU64]>,
    refetched: AtomicU64,
    refetched_cached: AtomicU64,
}

impl Default for FetchLog {
    fn default() -> FetchLog {
        FetchLog {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            refetched: AtomicU64::new(0),
            refetched_cached: AtomicU64::new(0),
        }
    }
}

impl FetchLog {
    /// Note that `by` fetched `key` from the server; `cached`: the memory cache still held
    /// it. Returns who fetched it before, if this is a second fetch the table remembers.
    pub(crate) fn note(&self, key: &BlockKey, by: Fetcher, cached: bool) -> Option<Fetcher> {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        let slot = &self.slots[(hash as usize) & (SLOTS - 1)];
        let print = hash & !7;
        let old = slot.swap(print | by.bits(), Ordering::Relaxed);
        if old & !7 != print {
            return None;
        }
        self.refetched.fetch_add(1, Ordering::Relaxed);
        if cached {
            self.refetched_cached.fetch_add(1, Ordering::Relaxed);
        }
        Fetcher::from_bits(old & 7)
    }

    /// Blocks fetched again, and of those, the ones the memory cache still held.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.refetched.load(Ordering::Relaxed),
            self.refetched_cached.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::types::{Uid, UidValidity};
    use crate::store::ids::MailboxId;

    fn key(uid: u32, block: u64) -> BlockKey {
        BlockKey {
            mailbox: MailboxId::new(1).unwrap(),
            validity: UidValidity::new(7).unwrap(),
            uid: Uid::new(uid).unwrap(),
            block,
        }
    }

    #[test]
    fn counts_a_block_fetched_again_and_says_who_came_first() {
        let log = FetchLog::default();
        assert_eq!(log.note(&key(1, 0), Fetcher::Stream, false), None);
        assert_eq!(log.note(&key(1, 1), Fetcher::Read, false), None);
        assert_eq!(log.note(&key(2, 0), Fetcher::Ahead, false), None);
        assert_eq!(
            log.note(&key(1, 0), Fetcher::Read, false),
            Some(Fetcher::Stream)
        );
        assert_eq!(
            log.note(&key(1, 0), Fetcher::Ahead, true),
            Some(Fetcher::Read)
        );
        assert_eq!(log.counts(), (2, 1));
    }

    #[test]
    fn never_counts_distinct_blocks() {
        // Far more blocks than slots: collisions forget, they never count.
        let log = FetchLog::default();
        for uid in 1..=200_000 {
            assert_eq!(log.note(&key(uid, 0), Fetcher::Stream, false), None);
        }
        assert_eq!(log.counts(), (0, 0));
    }
}
