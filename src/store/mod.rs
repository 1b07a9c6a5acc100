//! What the filesystem believes about the account, and the one place that asks the server.
//!
//! [`Account`] is a thin facade, the only type the filesystem sees. It asks questions in the
//! filesystem's terms (a mailbox id, a [`MessageRef`], a byte range) and gets bytes or
//! metadata back; every IMAP detail (EXAMINE before FETCH, BODY.PEEK so nothing turns `\Seen`,
//! pipelining, UIDVALIDITY checks, what to do after a broken connection) stays here and below.
//! Each concern has its own file, each adding methods to `Account`:
//!
//! - [`mailboxes`]: the LIST cache, mailbox ids, CREATE / DELETE / RENAME / SUBSCRIBE, STATUS,
//!   quota;
//! - [`index`]: one mailbox's messages, changed only through one door ([`index::Indexes`]),
//!   which sends the matching [`Change`]s itself;
//! - [`sync`]: listing a mailbox and refreshing its index incrementally (QRESYNC, CONDSTORE,
//!   or a UID and flags diff);
//! - [`watch`]: the watcher connection (NOTIFY, else IDLE and STATUS polling) that turns other
//!   clients' changes into refreshes, so they reach the filesystem within a second or two;
//! - [`persist`]: indexes and the folder list saved under the user's cache directory, so a
//!   remount starts from them with one incremental refresh instead of a full listing;
//! - [`link`]: online or offline; what is served without the server (read-only), and the
//!   resync when it answers again;
//! - [`read`]: open, blocks, readahead, folder walks, over the body cache ([`bodies`]: the
//!   memory [`blocks`] first, then the [`disk_cache`] shared by every mount of the account);
//! - [`stream`]: a folder's messages fetched in the background ahead of a reader walking it;
//! - [`prefetch`]: chosen folders' bodies fetched into the disk cache for offline use, at low
//!   priority within a daily budget ([`daily`]: bytes downloaded today, across mounts);
//! - [`write`](mod@write): flags, expunge, move / copy, append;
//! - [`headers`]: decoded headers for xattrs;
//! - [`search`]: `UID SEARCH` in one mailbox (the `.search` view);
//! - [`mime`]: a message's MIME parts from BODYSTRUCTURE, fetched and decoded part by part
//!   (the `.parts` view);
//! - [`changes`]: the feed of [`Change`]s that the filesystem turns into kernel
//!   invalidations (the store never calls the filesystem).
//!
//! A read or write names the UIDVALIDITY it expects; if the server's differs, it fails instead
//! of touching another message, and the cache keys make old blocks unreachable.

pub mod blocks;
pub mod bodies;
pub mod changes;
pub mod daily;
pub mod disk_cache;
pub mod headers;
pub mod ids;
pub mod index;
pub mod labels;
pub mod link;
pub mod mailboxes;
pub mod mime;
pub mod persist;
pub mod prefetch;
pub mod read;
pub mod refetch;
pub mod search;
pub mod stream;
pub mod sync;
pub mod watch;
pub mod write;

use parking_lot::Mutex;

use crate::imap::pool::Pool;
pub use changes::{Change, ChangeFeed, ListChange};
pub use headers::{decode_headers, Headers};
pub use ids::{MailboxId, MessageRef};
pub use index::{Index, IndexChange, MessageMeta, ObjectId, ObjectIds, SharedIndex};
pub use mailboxes::{MailboxInfo, MailboxStatus, Quota};
pub use mime::{PartInfo, PartKind, PartNode, PartTree};
pub use persist::PersistOptions;
pub use search::SearchHits;
pub use write::{DeleteMode, FlagEdit, MessageBody, NewMessage, QueuedMove};

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Bytes of message content kept in memory.
    pub cache_size: u64,
    /// Unit of fetching and caching; a message up to this size is fetched whole.
    pub block_size: u64,
    /// Blocks fetched ahead of a sequential reader, in the same round trip, at first; the
    /// window doubles while the reader stays sequential, up to `max_readahead_blocks`.
    pub readahead_blocks: u64,
    pub max_readahead_blocks: u64,
    /// Messages fetched ahead, in the same round trip, when a reader walks a folder's
    /// messages one after another (`grep -r`, `cat *`), at first; the window doubles while
    /// the walk goes on, up to `max_prefetch_messages` and a quarter of the cache in bytes.
    pub prefetch_messages: usize,
    pub max_prefetch_messages: usize,
    /// What removing a message does.
    pub delete: DeleteMode,
    /// The trash folder named by the user (`trash=`), as a path in the mount (`INBOX/Trash`)
    /// or the server's name; `None`: found by [`Account::trash_mailbox`]'s rule.
    pub trash: Option<String>,
    /// Watch for other clients' changes on a connection of its own ([`watch`]), once
    /// [`Account::start_watcher`] runs.
    pub idle: bool,
    /// Keep indexes on disk between mounts ([`persist`]); `None`: never.
    pub persist: Option<persist::PersistOptions>,
    /// Keep message bodies on disk between mounts ([`disk_cache`]); `None`: never.
    pub disk: Option<disk_cache::DiskOptions>,
    /// Fetch chosen folders' bodies into the disk cache in the background ([`prefetch`]).
    pub prefetch: Option<prefetch::PrefetchOptions>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            cache_size: 256 << 20,
            block_size: 1 << 20,
            readahead_blocks: 2,
            max_readahead_blocks: 16,
            prefetch_messages: 16,
            max_prefetch_messages: 256,
            delete: DeleteMode::Expunge,
            trash: None,
            idle: true,
            persist: None,
            disk: None,
            prefetch: None,
        }
    }
}

/// Stripes of the per-mailbox refresh locks.
const REFRESH_STRIPES: usize = 64;

/// How `--cache-size` is shared: (message blocks, decoded MIME parts of the `.parts` view).
/// The parts get an eighth, at least two blocks and at most half; the message blocks the rest
/// (at least one block), so that the two caches together stay within `--cache-size` (issue
/// 17: the parts had a quarter on top of it).
pub fn cache_shares(opts: &StoreOptions) -> (u64, u64) {
    let parts = (opts.cache_size / 8)
        .max(2 * opts.block_size)
        .min(opts.cache_size / 2);
    let blocks = (opts.cache_size - parts).max(opts.block_size.min(opts.cache_size));
    (blocks, parts)
}

/// The account as the filesystem sees it.
pub struct Account {
    pool: Pool,
    opts: StoreOptions,
    mailboxes: mailboxes::Mailboxes,
    indexes: index::Indexes,
    reading: read::ReadState,
    /// The body cache's second level, if on.
    disk: Option<std::sync::Arc<disk_cache::DiskCache>>,
    /// Bytes downloaded today, all mounts of the account ([`daily`]).
    daily: daily::Daily,
    /// The prefetch thread's progress ([`prefetch`]).
    prefetch: prefetch::PrefetchState,
    headers: headers::HeaderCache,
    /// Where changes go: the indexes send theirs ([`index::Indexes`]), the mailbox list its.
    changes: std::sync::Arc<ChangeFeed>,
    moves: write::MoveQueue,
    /// Locks that serialise index refreshes per mailbox (striped by mailbox).
    refresh_turns: Vec<Mutex<()>>,
    watch: watch::Watch,
    link_state: link::LinkState,
    sync_stats: sync::SyncStats,
    saved: persist::Saved,
    /// The account itself, once shared ([`Account::shared`]): what background threads (the
    /// streams of [`stream`]) hold on to.
    me: std::sync::Weak<Account>,
    /// Parts trees and decoded parts (the `.parts` view).
    parts: mime::PartState,
    /// Searches run (views; for statistics).
    searches: std::sync::atomic::AtomicU64,
}

impl Account {
    pub fn new(pool: Pool, opts: StoreOptions) -> Account {
        let changes = std::sync::Arc::new(ChangeFeed::default());
        let disk = opts.disk.as_ref().and_then(disk_cache::DiskCache::open);
        let disk = disk.map(std::sync::Arc::new);
        if let Some(d) = &disk {
            // Learn what an earlier mount left (and trim it to the bound), then evict each
            // time writes take it past the bound: in the background, never on a reader's path.
            let evictor = d.clone();
            let _ = std::thread::Builder::new()
                .name("disk-cache-evict".into())
                .spawn(move || evictor.run_evictor());
            // Blocks are written by their own thread, off the readers' and streams' paths.
            let writer = d.clone();
            let spawned = std::thread::Builder::new()
                .name("disk-cache-write".into())
                .spawn(move || writer.run_writer());
            if spawned.is_err() {
                // Nothing would empty the queue, and streams would wait on it: no writes.
                log::warn!("disk cache: no writer thread, blocks are not written");
                d.stop_writer();
            }
        }
        let account_dir = opts
            .persist
            .as_ref()
            .map(|p| persist::account_dir(&p.dir, &p.account));
        Account {
            disk,
            daily: daily::Daily::open(account_dir),
            prefetch: prefetch::PrefetchState::default(),
            pool,
            mailboxes: mailboxes::Mailboxes::default(),
            indexes: index::Indexes::new(changes.clone()),
            reading: read::ReadState::new(cache_shares(&opts).0),
            headers: headers::HeaderCache::default(),
            changes,
            moves: write::MoveQueue::default(),
            refresh_turns: (0..REFRESH_STRIPES).map(|_| Mutex::new(())).collect(),
            watch: watch::Watch::default(),
            link_state: link::LinkState::default(),
            sync_stats: sync::SyncStats::default(),
            saved: persist::Saved::default(),
            me: std::sync::Weak::new(),
            searches: std::sync::atomic::AtomicU64::new(0),
            parts: mime::PartState::new(cache_shares(&opts).1),
            opts,
        }
    }

    /// Share the account between threads; background streaming ([`stream`]) works only for
    /// a shared account.
    pub fn shared(self) -> std::sync::Arc<Account> {
        std::sync::Arc::new_cyclic(|me| Account {
            me: me.clone(),
            ..self
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Hear about changes to the account (see [`Change`]).
    pub fn subscribe(&self) -> std::sync::mpsc::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Stop the watcher and the link thread, save the indexes and log out every connection (at unmount).
    pub fn close(&self) {
        self.stop_prefetch();
        self.stop_link();
        self.stop_watcher();
        self.save_indexes();
        self.daily.flush(self.pool.bytes_read());
        if let Some(d) = &self.disk {
            // Write what is queued (bounded), then leave the cache within its bound (after
            // the pass under way, if any).
            d.stop_writer();
            d.stop_evictor();
            d.scan();
            d.save_totals();
        }
        self.pool.close_all();
    }

    /// Refreshes done so far: (full listings, incremental, answered by a STATUS alone), for
    /// `user.imapfs.stats`.
    pub fn sync_counts(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.sync_stats.full.load(Relaxed),
            self.sync_stats.incremental.load(Relaxed),
            self.sync_stats.unchanged.load(Relaxed),
        )
    }

    /// A counter of the changes heard about `mailbox` (`None`: about anything); see
    /// [`ChangeFeed::epoch`].
    pub fn change_epoch(&self, mailbox: Option<MailboxId>) -> u64 {
        self.changes.epoch(mailbox)
    }

    /// Bytes of message content in the block cache, and the blocks reads found in it and
    /// had to fetch.
    pub fn cache_stats(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.reading.blocks.bytes(),
            self.reading.hits.load(Relaxed),
            self.reading.misses.load(Relaxed),
        )
    }

    /// Blocks fetched from the server again in this mount, and of those, the ones the memory
    /// cache still held then (see [`refetch`]).
    pub fn refetch_stats(&self) -> (u64, u64) {
        self.reading.fetched.counts()
    }

    /// Bytes received from the server today (UTC), by every mount of the account.
    pub fn bytes_today(&self) -> u64 {
        self.daily.today(self.pool.bytes_read())
    }

    /// The metadata of a message from what we hold (no I/O).
    pub fn message_meta(&self, msg: MessageRef) -> Option<MessageMeta> {
        self.indexes.meta(msg)
    }

    /// Every copy of the message the server calls `id` in the folders we hold a listing of
    /// (no I/O; safe while holding an index's read lock).
    pub fn copies(&self, id: &ObjectId) -> Vec<MessageRef> {
        self.indexes.copies(id)
    }

    /// How many of those copies there are ([`index::Indexes::copy_count`]: nothing collected).
    pub fn copy_count(&self, id: &ObjectId) -> usize {
        self.indexes.copy_count(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_caches_share_cache_size() {
        let shares = |cache_size| {
            cache_shares(&StoreOptions {
                cache_size,
                ..StoreOptions::default()
            })
        };
        assert_eq!(shares(128 << 20), (112 << 20, 16 << 20));
        assert_eq!(shares(16 << 20), (14 << 20, 2 << 20));
        // Below a few blocks: the parts at most half, the message blocks at least one block.
        assert_eq!(shares(1 << 20), (1 << 20, 512 << 10));
        assert_eq!(shares(0), (0, 0));
    }
}
