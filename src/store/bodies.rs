//! The body cache's two levels behind one interface: memory blocks first
//! ([`crate::store::blocks`]), then the disk ([`crate::store::disk_cache`]), same keys plus
//! the folder's raw name.
//!
//! Reads ask [`Account::cached_block`]: memory, else disk (a disk hit goes into memory too);
//! every block fetched from the server goes through [`Account::keep_block`] into both.
//! A message the server names across folders (Gmail's X-GM-MSGID, RFC 8474's EMAILID) has
//! one body whatever folder it is read through: [`Account::body_home`] sends a read to the
//! copy whose blocks are at hand, and walks do not fetch a copy whose body is at hand
//! elsewhere ([`Account::body_elsewhere`]). A
//! disk entry is written with the message's RFC822.SIZE and INTERNALDATE as the index lists
//! them and served only while the index still lists the same, so a server that reused a
//! UIDVALIDITY for other messages gets no old bytes served even where the sample check of a
//! saved index ([`crate::store::sync`]) did not look. When a folder's generation ends (new
//! UIDVALIDITY, a saved index that does not match, deleted or renamed away) its entries on
//! disk go with its blocks in memory ([`Account::drop_cached_folder`]).

use std::sync::Arc;

use crate::store::blocks::BlockKey;
use crate::store::disk_cache::{DiskCache, DiskKey, Origin, Stamp};
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::refetch::Fetcher;
use crate::store::Account;

impl Account {
    /// A block from memory, else from disk.
    pub(crate) fn cached_block(&self, key: &BlockKey) -> Option<Arc<[u8]>> {
        if let Some(b) = self.reading.blocks.get(key) {
            return Some(b);
        }
        let disk = self.disk.as_ref()?;
        let (name, stamp) = self.disk_identity(key)?;
        let data = disk.get(disk_key(&name, key), stamp, self.opts.block_size)?;
        self.reading.blocks.insert(key.clone(), data.clone());
        Some(data)
    }

    /// Where the body of `msg` is read from: `msg` itself, unless it is at hand only under
    /// another copy of the same message (the same X-GM-MSGID or EMAILID in another folder
    /// we hold the index of): then that copy, so that a message in INBOX, two labels and
    /// All Mail is fetched and cached once. A server that gives no ids costs one look at
    /// the message's metadata.
    pub(crate) fn body_home(&self, msg: MessageRef) -> MessageRef {
        self.other_copies(msg)
            .into_iter()
            .flatten()
            .find(|c| self.body_at_hand(*c))
            .unwrap_or(msg)
    }

    /// Whether a copy of `msg` other than itself has its body at hand, or a stream has asked
    /// for it (a walk or a stream need not fetch it: a read of it is served from that copy,
    /// after waiting for the stream, see [`Account::body_on_the_way`]).
    pub(crate) fn body_elsewhere(&self, msg: MessageRef) -> bool {
        self.other_copies(msg)
            .into_iter()
            .flatten()
            .any(|c| self.body_at_hand(c) || self.streams_asked(c.mailbox).contains(c))
    }

    /// A copy of `msg` other than itself that a running stream has asked for, while `msg`
    /// is not at hand: a read of `msg` waits for that stream ([`Account::wait_for_stream`])
    /// rather than fetch the same body through another folder (`grep -r` reading INBOX/4
    /// while All Mail's stream brings its copy). A stream's "asked" includes what it passed
    /// over because another copy was asked for, so when both copies count as asked the wait
    /// ends once that stream's answers pass it, and the read then finds the body wherever
    /// it landed.
    pub(crate) fn body_on_the_way(&self, msg: MessageRef) -> Option<MessageRef> {
        self.other_copies(msg)?
            .into_iter()
            .find(|c| self.streams_asked(c.mailbox).contains(*c))
    }

    /// The other copies of `msg` (same object id, folders whose index we hold) when its
    /// body may come from one of them: the server gives ids and `msg`'s own is not at hand.
    fn other_copies(&self, msg: MessageRef) -> Option<Vec<MessageRef>> {
        let ids = self.indexes.object_ids(msg)?;
        if self.body_at_hand(msg) {
            return None;
        }
        let mut copies = self.indexes.copies(&ids.message);
        copies.retain(|c| *c != msg);
        Some(copies)
    }

    /// Whether the first block of `msg` is in memory or on disk.
    fn body_at_hand(&self, msg: MessageRef) -> bool {
        self.has_block(&BlockKey {
            mailbox: msg.mailbox,
            validity: msg.validity,
            uid: msg.uid,
            block: 0,
        })
    }

    /// Whether a block is at hand in memory or on disk (the disk entry is not read).
    pub(crate) fn has_block(&self, key: &BlockKey) -> bool {
        self.reading.blocks.contains(key) || self.on_disk(key)
    }

    /// Whether a block is on disk (the entry is not read): what prefetch needs not fetch.
    /// Only the folder's name is needed to find the entry (its stamp is checked when it is
    /// read), so the index is not looked at, and nothing is done with the disk cache off.
    pub(crate) fn on_disk(&self, key: &BlockKey) -> bool {
        let Some(disk) = &self.disk else {
            return false;
        };
        self.mailbox_name(key.mailbox)
            .is_some_and(|name| disk.contains(disk_key(&name, key)))
    }

    /// Keep a block that came from the server, in memory and on disk (queued for the disk
    /// cache's writer; who fetched it, `by`, says whether it may wait for room there), and
    /// note it in the log of blocks fetched ([`crate::store::refetch`]).
    pub(crate) fn keep_block(&self, key: BlockKey, data: Arc<[u8]>, by: Fetcher) {
        let cached = self.reading.blocks.contains(&key);
        if let Some(first) = self.reading.fetched.note(&key, by, cached) {
            log::debug!(
                "{}: UID {} block {} fetched again by {by:?}, first by {first:?} ({})",
                key.mailbox,
                key.uid,
                key.block,
                if cached { "still in memory" } else { "evicted" }
            );
        }
        let origin = match by {
            Fetcher::Read | Fetcher::Ahead => Origin::Read,
            Fetcher::Stream => Origin::Stream,
            Fetcher::Prefetch => Origin::Prefetch,
        };
        if let Some(disk) = &self.disk {
            if let Some((name, stamp)) = self.disk_identity(&key) {
                disk.put(disk_key(&name, &key), stamp, data.clone(), origin);
            }
        }
        self.reading.blocks.insert(key, data);
    }

    /// A folder's generation ended: drop its blocks in memory and its entries on disk.
    pub(crate) fn drop_cached_folder(&self, id: MailboxId) {
        self.reading.blocks.forget_mailbox(id);
        if let (Some(disk), Some(name)) = (&self.disk, self.mailbox_name(id)) {
            disk.drop_folder(name.raw());
        }
    }

    /// The disk cache, if on.
    pub fn disk_cache(&self) -> Option<&DiskCache> {
        self.disk.as_deref()
    }

    /// `key=value` lines about the disk cache for `user.imapfs.stats`.
    pub fn disk_cache_lines(&self) -> Vec<String> {
        let Some(d) = &self.disk else {
            return vec!["disk_cache=off".into()];
        };
        let t = d.stats.snapshot();
        vec![
            "disk_cache=on".into(),
            format!("disk_cache_bytes={}", d.bytes()),
            format!("disk_cache_bound={}", d.bound()),
            format!("disk_cache_hits={}", t.hits),
            format!("disk_cache_hit_bytes={}", t.hit_bytes),
            format!("disk_cache_misses={}", t.misses),
            format!("disk_cache_writes={}", t.writes),
            format!("disk_cache_evicted={}", t.evicted),
            format!("disk_cache_discarded={}", t.discarded),
            format!(
                "disk_cache_skipped={}",
                d.stats.skipped.load(std::sync::atomic::Ordering::Relaxed)
            ),
            format!(
                "disk_cache_queue_full={}",
                d.stats
                    .queue_full
                    .load(std::sync::atomic::Ordering::Relaxed)
            ),
        ]
    }

    /// The folder's raw name and the message's stamp, as the index has them now.
    fn disk_identity(&self, key: &BlockKey) -> Option<(crate::imap::types::MailboxName, Stamp)> {
        let meta = self.indexes.meta(MessageRef {
            mailbox: key.mailbox,
            validity: key.validity,
            uid: key.uid,
        })?;
        let name = self.mailbox_name(key.mailbox)?;
        let stamp = Stamp {
            listed_size: meta.listed_size,
            internal_date: meta.internal_date,
        };
        Some((name, stamp))
    }
}

fn disk_key<'a>(name: &'a crate::imap::types::MailboxName, key: &BlockKey) -> DiskKey<'a> {
    DiskKey {
        folder: name.raw(),
        validity: key.validity.get(),
        uid: key.uid.get(),
        block: key.block,
    }
}
