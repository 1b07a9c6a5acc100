//! The message content cache: fixed-size blocks of `BODY[]`, least recently used out first,
//! bounded in bytes.
//!
//! A key names the mailbox, its UIDVALIDITY, the UID and the block number, so a block can only
//! ever be served for the message it was read from: when UIDVALIDITY changes, every old key
//! simply stops being asked for and ages out. Blocks are shared as `Arc<[u8]>`, so a reader
//! holds its block while the cache evicts it.
//!
//! The cache is generic over its key: the decoded MIME parts of [`crate::store::mime`] keep
//! their blocks in a second instance, keyed by part.

use std::hash::Hash;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::imap::types::{Uid, UidValidity};

/// Names one block of one message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The mailbox's identity for the life of the mount (see `store::MailboxId`).
    pub mailbox: crate::store::ids::MailboxId,
    pub validity: UidValidity,
    pub uid: Uid,
    pub block: u64,
}

/// A byte-bounded LRU cache of blocks.
pub struct BlockCache<K: Hash + Eq = BlockKey> {
    inner: Mutex<Inner<K>>,
    capacity: u64,
}

struct Inner<K: Hash + Eq> {
    lru: LruCache<K, Arc<[u8]>>,
    bytes: u64,
}

impl<K: Hash + Eq> BlockCache<K> {
    pub fn new(capacity: u64) -> BlockCache<K> {
        BlockCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
        }
    }

    pub fn get(&self, key: &K) -> Option<Arc<[u8]>> {
        self.inner.lock().lru.get(key).cloned()
    }

    /// Make a block the first to go (a reader has read it through; the kernel keeps its
    /// pages): blocks fetched ahead and not yet read stay longer.
    pub fn demote(&self, key: &K) {
        self.inner.lock().lru.demote(key);
    }

    /// Whether a block is cached (without making it recently used).
    pub fn contains(&self, key: &K) -> bool {
        self.inner.lock().lru.contains(key)
    }

    /// Insert a block, evicting the least recently used ones beyond the capacity. A block
    /// larger than the whole capacity is not kept.
    pub fn insert(&self, key: K, data: Arc<[u8]>) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        // The blocks pushed out are freed after the lock is released (a big one is an munmap).
        let mut out = Vec::new();
        let mut inner = self.inner.lock();
        if let Some(old) = inner.lru.put(key, data) {
            inner.bytes -= old.len() as u64;
            out.push(old);
        }
        inner.bytes += len;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, old)) => {
                    inner.bytes -= old.len() as u64;
                    out.push(old);
                }
                None => break,
            }
        }
        drop(inner);
        drop(out);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().bytes
    }
}

impl BlockCache<BlockKey> {
    /// Drop every block of one mailbox (its UIDVALIDITY changed, or it was deleted).
    pub fn forget_mailbox(&self, mailbox: crate::store::ids::MailboxId) {
        let mut inner = self.inner.lock();
        let keys: Vec<BlockKey> = inner
            .lru
            .iter()
            .filter(|(k, _)| k.mailbox == mailbox)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(old) = inner.lru.pop(&k) {
                inner.bytes -= old.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: u32, block: u64) -> BlockKey {
        BlockKey {
            mailbox: crate::store::ids::MailboxId::new(1).unwrap(),
            validity: UidValidity::new(7).unwrap(),
            uid: Uid::new(uid).unwrap(),
            block,
        }
    }

    #[test]
    fn stays_within_capacity_and_evicts_oldest() {
        let c: BlockCache = BlockCache::new(100);
        for i in 0..10 {
            c.insert(key(1, i), Arc::from(vec![0u8; 30]));
            assert!(c.bytes() <= 100);
        }
        assert!(c.get(&key(1, 9)).is_some());
        assert!(c.get(&key(1, 0)).is_none());
        c.insert(key(2, 0), Arc::from(vec![0u8; 500]));
        assert!(c.get(&key(2, 0)).is_none());
    }

    #[test]
    fn issue_17_a_block_read_through_goes_before_blocks_fetched_ahead() {
        // Blocks 0 and 1 read, 2 and 3 fetched ahead and not read yet: the next block in
        // evicts what was read through, not what the reader needs next.
        let c: BlockCache = BlockCache::new(120);
        for i in 0..4 {
            c.insert(key(1, i), Arc::from(vec![0u8; 30]));
        }
        for i in 0..2 {
            // The read makes it most recently used, then it is read through.
            assert!(c.get(&key(1, i)).is_some());
            c.demote(&key(1, i));
        }
        c.insert(key(1, 4), Arc::from(vec![0u8; 30]));
        c.insert(key(1, 5), Arc::from(vec![0u8; 30]));
        assert!(c.contains(&key(1, 2)) && c.contains(&key(1, 3)));
        assert!(!c.contains(&key(1, 0)) && !c.contains(&key(1, 1)));
    }

    #[test]
    fn validity_is_part_of_the_key() {
        let c: BlockCache = BlockCache::new(100);
        c.insert(key(1, 0), Arc::from(vec![1u8; 3]));
        let mut other = key(1, 0);
        other.validity = UidValidity::new(8).unwrap();
        assert!(c.get(&other).is_none());
        c.forget_mailbox(crate::store::ids::MailboxId::new(1).unwrap());
        assert_eq!(c.bytes(), 0);
    }
}
