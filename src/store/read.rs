//! Reading messages: open, blocks, readahead, folder walks. The FETCHes that bring blocks
//! (one pipeline per read, and its retry) are [`fetch`].
//!
//! A message's bytes are fetched in blocks of `block_size` with `BODY.PEEK[]<offset.len>` and
//! kept in the [`BlockCache`], keyed on (mailbox, UIDVALIDITY, UID, block). A small message is
//! one block, fetched whole in one round trip; a big one is read block after block, with a
//! readahead window that doubles while the reader stays sequential; a reader that opens one
//! message after another (`cat *`, `grep -r`) has the next messages' first blocks fetched in
//! the same round trip (the walk window also doubles). All blocks of one read go out as one
//! pipeline. What all readers together fetch ahead of need is bounded by one shared budget (an
//! eighth of the cache): parallel readers share it instead of each holding a window of its
//! own beside the cache.
//!
//! Lengths: the listed RFC822.SIZE is a claim. A read whose block comes back short has found
//! the end of the body: the real length goes into the index ([`IndexChange::BodyLength`]) and
//! the filesystem hears of it if it differs from what it showed (an empty block proves it only
//! right after a full one: a reader that jumped past the end learns nothing). Until the length
//! is known, a read is never cut at the listed size: it ends where the body does. A known
//! length is always one learned from the server's bytes in this mount (a saved index carries
//! none: see [`crate::store::persist`]), so no saved size ever cuts a read short.
//!
//! A folder walk is also streamed in the background on a connection of its own
//! ([`crate::store::stream`]); while a stream serves a folder, a read whose first block is on
//! its way waits for it, and no walk prefetch is added to the reader's own fetches.
//!
//! A message with copies in other folders (Gmail labels, RFC 8474 EMAILID) is read from the
//! copy whose body is at hand ([`Account::body_home`]), and a walk skips a message whose
//! body is at hand under another copy: its body crosses the wire once.
//!
//! Every fetch runs on a session selected at the message's generation
//! ([`crate::imap::session::Session::select_at`]): a mailbox recreated since it was listed
//! is ENOENT, never another message's bytes.
//!
//! Failures: every block a read covers must arrive, or the read fails (EIO): a short read
//! would look like the end of the file. Blocks fetched only ahead of need may fail quietly.
//! A `NIL` body is never an empty block. Dovecot sends one for a message that another client
//! expunged since the session's last sync point, so for the block a read needs it is treated
//! like no answer (sync, ask again: nothing then means gone, ENOENT); NIL again after the
//! sync is a server fault (EIO). A NIL for a block fetched ahead is simply not kept.
//! A FETCH that returns nothing for a UID is not taken as proof that the message is gone until
//! the session has synced (NOOP) and asked again: a session whose view predates another
//! client's APPEND knows nothing of the new UID.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::imap::types::Uid;
use crate::store::blocks::{BlockCache, BlockKey};
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::index::{IndexChange, MessageMeta};
use crate::store::refetch::{FetchLog, Fetcher};
use crate::store::Account;

mod fetch;

/// A block fetched from the server: (UID, block number) and its bytes.
pub(crate) type FetchedBlock = ((Uid, u64), Arc<[u8]>);

/// The bytes of a read: a range of one cached block, handed out as it is (a read within a
/// block, the common case: no copy before the reply), or the bytes of several blocks joined.
#[derive(Debug, Default)]
pub struct ReadBytes(Joined);

#[derive(Debug, Default)]
enum Joined {
    #[default]
    Empty,
    Shared(Arc<[u8]>, std::ops::Range<usize>),
    Owned(Vec<u8>),
}

impl ReadBytes {
    /// Append `block[range]` (a range within the block).
    fn push(&mut self, block: Arc<[u8]>, range: std::ops::Range<usize>) {
        self.0 = match std::mem::take(&mut self.0) {
            Joined::Empty => Joined::Shared(block, range),
            Joined::Shared(first, r) => Joined::Owned([&first[r], &block[range]].concat()),
            Joined::Owned(mut v) => {
                v.extend_from_slice(&block[range]);
                Joined::Owned(v)
            }
        };
    }
}

impl From<Vec<u8>> for ReadBytes {
    fn from(v: Vec<u8>) -> ReadBytes {
        ReadBytes(Joined::Owned(v))
    }
}

impl std::ops::Deref for ReadBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Joined::Empty => &[],
            Joined::Shared(block, range) => &block[range.clone()],
            Joined::Owned(v) => v,
        }
    }
}

const FETCH_STRIPES: usize = 64;

/// Longest gap between two message starts that still counts as walking a folder.
const WALK_PAUSE: Duration = Duration::from_secs(1);

/// What reading keeps between requests.
pub struct ReadState {
    pub(crate) blocks: BlockCache,
    /// Next block each recently read message is expected to need (sequential detection),
    /// and its readahead window in blocks.
    next_block: Mutex<LruCache<(MailboxId, Uid), (u64, u64)>>,
    /// The message whose start was last read, per mailbox (folder walk detection), and the
    /// prefetch window in messages.
    last_started: Mutex<HashMap<MailboxId, (Uid, usize, Instant)>>,
    /// Locks that serialise fetching per message (striped by mailbox and UID).
    fetch_turns: Vec<Mutex<()>>,
    /// Folder walks and the streams that fetch ahead of them.
    pub(crate) streams: crate::store::stream::Streams,
    /// Messages read to their end in this mount (the kernel was then told their exact length
    /// and keeps their pages): a stream does not fetch them again.
    pub(crate) read_through: Mutex<std::collections::HashSet<MessageRef>>,
    /// Messages a reader's walk prefetch is fetching the first block of now. A stream asks
    /// for none of them, and a walk prefetch for none a stream has asked for: both decide
    /// under this lock (the stream until its `sent` moves past them), so no message is
    /// fetched twice when a stream starts while its reader is still fetching ahead itself.
    pub(crate) walk_claims: Mutex<std::collections::HashSet<MessageRef>>,
    /// Bytes of blocks on their way ahead of need (readahead and walk prefetch), all
    /// readers together: at most `ReadState::ahead_budget`, so that what parallel readers
    /// hold in flight beside the cache is bounded whatever their number (issue 17).
    ahead: std::sync::atomic::AtomicU64,
    /// Blocks fetched from the server, to count those fetched twice.
    pub(crate) fetched: FetchLog,
    /// Blocks that reads found in the cache, and that they had to fetch.
    pub(crate) hits: std::sync::atomic::AtomicU64,
    pub(crate) misses: std::sync::atomic::AtomicU64,
}

impl ReadState {
    pub fn new(cache_size: u64) -> ReadState {
        ReadState {
            blocks: BlockCache::new(cache_size),
            next_block: Mutex::new(LruCache::new(
                NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            )),
            last_started: Mutex::new(HashMap::new()),
            fetch_turns: (0..FETCH_STRIPES).map(|_| Mutex::new(())).collect(),
            streams: crate::store::stream::Streams::default(),
            read_through: Mutex::new(std::collections::HashSet::new()),
            walk_claims: Mutex::new(std::collections::HashSet::new()),
            ahead: Default::default(),
            fetched: FetchLog::default(),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    /// Keep the longest prefix of `optional` (blocks and their cost in bytes) that fits in
    /// what is left of the shared budget for blocks fetched ahead; the guard gives the
    /// bytes back when the fetch is over.
    fn reserve_ahead(&self, optional: &mut Vec<((Uid, u64), u64)>, budget: u64) -> Ahead<'_> {
        let mut current = self.ahead.load(Ordering::Relaxed);
        loop {
            let room = budget.saturating_sub(current);
            let (mut bytes, mut kept) = (0, 0);
            for (_, cost) in optional.iter() {
                if bytes + cost > room {
                    break;
                }
                bytes += cost;
                kept += 1;
            }
            match self.ahead.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    optional.truncate(kept);
                    return Ahead {
                        counter: &self.ahead,
                        bytes,
                    };
                }
                Err(now) => current = now,
            }
        }
    }

    fn turn(&self, msg: MessageRef) -> &Mutex<()> {
        let i = (msg.mailbox.get() as usize)
            .wrapping_mul(31)
            .wrapping_add(msg.uid.get() as usize)
            % FETCH_STRIPES;
        &self.fetch_turns[i]
    }
}

/// Bytes reserved in [`ReadState::ahead`], given back on drop.
struct Ahead<'a> {
    counter: &'a std::sync::atomic::AtomicU64,
    bytes: u64,
}

impl Drop for Ahead<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Account {
    /// Prepare a message for reading. Returns its exact length when known: from an earlier
    /// read (no I/O at all), or, for a message listed as one block or less, by fetching that
    /// block now (the read that follows needs it anyway). `None`: the length is not known
    /// yet (a big message not read to its end, or a body longer than listed); reads then end
    /// where the body does.
    pub fn open_message(&self, msg: MessageRef) -> Result<Option<u64>> {
        let (msg, meta) = self.read_from(msg)?;
        let bs = self.opts.block_size;
        // Opening is where a walk shows first (a stream steers by it). A body at hand in
        // memory or on disk (after a remount: nothing read through yet) needs no stream. Its
        // first block is loaded now (from disk into memory): the read that follows needs it,
        // and a small message's length is then known.
        let read_through = self.reading.read_through.lock().contains(&msg);
        let first = match read_through {
            true => None,
            false => self.cached_block(&BlockKey {
                mailbox: msg.mailbox,
                validity: msg.validity,
                uid: msg.uid,
                block: 0,
            }),
        };
        self.note_message_start(msg, !read_through && first.is_none());
        if let Some(len) = meta.body_len {
            return Ok(Some(len));
        }
        if meta.listed_size > bs {
            // A stream may be bringing it whole: then its length is known in a moment.
            if self.wait_for_stream(msg) {
                return Ok(self.indexes.meta(msg).and_then(|m| m.body_len));
            }
            return Ok(self.length_at_hand(msg, &meta));
        }
        match first {
            // A short first block is the whole body (no copy of it is made here).
            Some(block) => {
                self.reading.hits.fetch_add(1, Ordering::Relaxed);
                if (block.len() as u64) < bs {
                    self.learn_length(msg, meta.size(), block.len() as u64);
                }
            }
            None => {
                self.read(msg, 0, bs)?;
            }
        }
        Ok(self.indexes.meta(msg).and_then(|m| m.body_len))
    }

    /// The length of a message bigger than a block, if the cache (memory, or the disk after
    /// a remount) holds the block its listed size ends in and the body ends in that block
    /// (a short block, not empty: the server's own bytes say where the body ends). Then the
    /// kernel can be told the length at open and keep the pages; otherwise reads end where
    /// the body does. Never asks the server.
    fn length_at_hand(&self, msg: MessageRef, meta: &MessageMeta) -> Option<u64> {
        let bs = self.opts.block_size;
        let last = meta.listed_size.checked_sub(1)? / bs;
        let block = self.cached_block(&BlockKey {
            mailbox: msg.mailbox,
            validity: msg.validity,
            uid: msg.uid,
            block: last,
        })?;
        if block.is_empty() || block.len() as u64 >= bs {
            return None;
        }
        let len = last * bs + block.len() as u64;
        self.learn_length(msg, meta.size(), len);
        Some(len)
    }

    /// Read up to `len` bytes at `offset`. Shorter only at the end of the body. Bytes within
    /// one block are handed out as a range of the cached block, not copied.
    pub fn read(&self, msg: MessageRef, offset: u64, len: u64) -> Result<ReadBytes> {
        let (msg, meta) = self.read_from(msg)?;
        let end = offset.saturating_add(len);
        let end = meta.body_len.map_or(end, |l| end.min(l));
        if offset >= end {
            return Ok(ReadBytes::default());
        }
        // How far readahead may go: the known length, else the listed one.
        let known_end = meta.body_len.unwrap_or(meta.listed_size);
        let bs = self.opts.block_size;
        let (first, last) = (offset / bs, (end - 1) / bs);
        let rs = &self.reading;
        let key = |block| BlockKey {
            mailbox: msg.mailbox,
            validity: msg.validity,
            uid: msg.uid,
            block,
        };
        let mut have: Vec<Option<Arc<[u8]>>> =
            (first..=last).map(|b| self.cached_block(&key(b))).collect();
        let streaming = offset == 0 && self.note_message_start(msg, have[0].is_none());
        if first == 0 && have[0].is_none() && self.wait_for_stream(msg) {
            // A stream was bringing the first block: take what it brought.
            for (i, b) in (first..=last).enumerate() {
                if have[i].is_none() {
                    have[i] = rs.blocks.get(&key(b));
                }
            }
        }
        let cached = have.iter().filter(|h| h.is_some()).count() as u64;
        rs.hits.fetch_add(cached, Ordering::Relaxed);
        rs.misses
            .fetch_add(have.len() as u64 - cached, Ordering::Relaxed);
        let cached_all = cached == have.len() as u64;
        let readahead = self.readahead_window(msg, first, last, cached_all);
        if !cached_all {
            // Readers of one message take turns fetching (the kernel sends several reads of
            // a file at once): the second finds in the cache what the first fetched.
            let _turn = rs.turn(msg).lock();
            for (i, b) in (first..=last).enumerate() {
                if have[i].is_none() {
                    have[i] = rs.blocks.get(&key(b));
                }
            }
            let required: Vec<(Uid, u64)> = (first..=last)
                .zip(&have)
                .filter(|(_, h)| h.is_none())
                .map(|(b, _)| (msg.uid, b))
                .collect();
            if !required.is_empty() {
                let mut optional = Vec::new();
                let last_block = known_end.max(1).saturating_sub(1) / bs;
                for b in last + 1..=(last + readahead).min(last_block) {
                    if !self.has_block(&key(b)) {
                        optional.push(((msg.uid, b), bs));
                    }
                }
                let mut claimed = WalkClaims {
                    set: &rs.walk_claims,
                    msgs: Vec::new(),
                };
                if first == 0 && !streaming {
                    let walk = self.walk_prefetch(msg);
                    claimed.msgs = walk
                        .iter()
                        .map(|((uid, _), _)| MessageRef { uid: *uid, ..msg })
                        .collect();
                    optional.extend(walk);
                }
                let _ahead = rs.reserve_ahead(&mut optional, self.ahead_budget());
                let optional: Vec<(Uid, u64)> = optional.into_iter().map(|(b, _)| b).collect();
                let fetched = self.fetch_blocks(msg, &required, &optional)?;
                for ((u, b), data) in &fetched {
                    if *u == msg.uid {
                        if let Some(slot) =
                            b.checked_sub(first).and_then(|i| have.get_mut(i as usize))
                        {
                            *slot = Some(data.clone());
                        }
                    }
                }
                for ((uid, block), data) in fetched {
                    let by = match required.contains(&(uid, block)) {
                        true => Fetcher::Read,
                        false => Fetcher::Ahead,
                    };
                    let key = BlockKey {
                        mailbox: msg.mailbox,
                        validity: msg.validity,
                        uid,
                        block,
                    };
                    self.keep_block(key, data, by);
                }
            }
        }
        let mut out = ReadBytes::default();
        for (i, block) in have.into_iter().enumerate() {
            let b = first + i as u64;
            let block_start = b * bs;
            let Some(data) = block else {
                return Err(Error::BadReply {
                    command: "FETCH",
                    what: format!("no data for block {b} of UID {}", msg.uid),
                });
            };
            let data_len = data.len() as u64;
            let from = offset.max(block_start) - block_start;
            let to = (end - block_start).min(data_len);
            if from < to {
                if to == data_len {
                    // Read through: the kernel has it now; what is fetched ahead stays.
                    rs.blocks.demote(&key(b));
                }
                out.push(data, from as usize..to as usize);
            }
            if data_len < bs {
                // The message ends in this block: its real length is known now, unless the
                // block is empty and the reader jumped here: then the body may have ended
                // in an earlier block, and only a full block just before proves where.
                let proven = b == 0
                    || data_len > 0
                    || rs
                        .blocks
                        .get(&key(b - 1))
                        .is_some_and(|d| d.len() as u64 == bs);
                if proven {
                    self.learn_length(msg, meta.size(), block_start + data_len);
                }
                break;
            }
        }
        Ok(out)
    }

    /// The copy a read of `msg` reads ([`Account::body_home`]) and its metadata; `msg` itself,
    /// with no further look, where the server gives no ids.
    fn read_from(&self, msg: MessageRef) -> Result<(MessageRef, MessageMeta)> {
        let meta = |m: MessageRef| {
            self.indexes
                .meta(m)
                .ok_or_else(|| Error::NoMessage(format!("UID {} in {}", m.uid, m.mailbox)))
        };
        let own = meta(msg)?;
        if own.ids.is_none() {
            return Ok((msg, own));
        }
        let mut home = self.body_home(msg);
        // Another folder's stream brings this body: wait for it, then read from whichever
        // copy has it (this one, if that stream gave up on it).
        if home == msg && (self.body_on_the_way(msg)).is_some_and(|c| self.wait_for_stream(c)) {
            home = self.body_home(msg);
        }
        match home {
            home if home == msg => Ok((msg, own)),
            home => Ok((home, meta(home)?)),
        }
    }

    /// Record a message's real length; the filesystem hears of it if its size changes.
    pub(crate) fn learn_length(&self, msg: MessageRef, shown: u64, real: u64) {
        self.reading.read_through.lock().insert(msg);
        let change = IndexChange::BodyLength {
            uid: msg.uid,
            len: real,
        };
        if self.indexes.apply(msg.mailbox, msg.validity, [change]) && real != shown {
            log::info!(
                "UID {}: listed as {shown} bytes, BODY[] has {real}",
                msg.uid
            );
        }
    }

    /// The readahead window for a read of blocks `first..=last`: it opens at the start of a
    /// message and doubles while the reader stays sequential and needs the server.
    fn readahead_window(&self, msg: MessageRef, first: u64, last: u64, cached: bool) -> u64 {
        let o = &self.opts;
        let cap = (o.cache_size / 4 / o.block_size.max(1)).clamp(1, o.max_readahead_blocks.max(1));
        let mut nb = self.reading.next_block.lock();
        let ahead = match nb.get(&(msg.mailbox, msg.uid)) {
            Some(&(next, w)) if next == first => {
                if cached {
                    w
                } else {
                    (w * 2).min(cap)
                }
            }
            Some(_) => 0,
            None if first == 0 => o.readahead_blocks,
            None => 0,
        };
        nb.put(
            (msg.mailbox, msg.uid),
            (last + 1, ahead.max(o.readahead_blocks)),
        );
        ahead
    }

    /// Most bytes all readers together fetch ahead of need at a time: an eighth of the cache
    /// (16 MiB of a 128 MiB cache, the most one sequential reader's window grows to anyway).
    fn ahead_budget(&self) -> u64 {
        (self.opts.cache_size / 8).max(self.opts.block_size)
    }

    /// When a reader starts message `uid` right after starting another of the same mailbox,
    /// it is walking the folder: the first blocks of the next messages (in UID order) not yet
    /// cached, to fetch in the same round trip. The window doubles with every round trip of
    /// the walk, so a long walk costs a logarithmic number of them.
    /// Each comes with its cost in bytes (its size, at most a block). Messages a stream has
    /// asked for are left to it.
    fn walk_prefetch(&self, msg: MessageRef) -> Vec<((Uid, u64), u64)> {
        let (window, prev) = {
            let mut last = self.reading.last_started.lock();
            // A walk opens the next message right after the last one; a pause ends it.
            let (window, prev) = match last.get(&msg.mailbox) {
                Some(&(prev, _, _)) if prev == msg.uid => return Vec::new(),
                Some(&(prev, w, at)) if at.elapsed() < WALK_PAUSE => (w, prev),
                _ => (0, msg.uid),
            };
            let next = if window == 0 {
                self.opts.prefetch_messages
            } else {
                (window * 2).min(self.opts.max_prefetch_messages)
            };
            last.insert(msg.mailbox, (msg.uid, next, Instant::now()));
            (window, prev)
        };
        if window == 0 {
            return Vec::new();
        }
        let Some(index) = self.indexes.get(msg.mailbox) else {
            return Vec::new();
        };
        let index = index.read();
        if index.validity() != msg.validity {
            return Vec::new();
        }
        let bs = self.opts.block_size;
        // A reach, not a count of blocks to fetch: the next `window` messages and at most
        // `walk_reach` bytes of them, cached or not, so that a walk never runs further ahead
        // of its reader than that (see `walk_reach`).
        let reach = walk_reach(self.opts.cache_size, bs);
        let mut ahead = 0;
        let mut out = Vec::new();
        // In the walk's order (a `cat *.eml` walks by name): what it opens next.
        let nexts = crate::store::stream::walk_next(index.messages(), prev, msg.uid, window);
        for next in nexts {
            let Some(meta) = index.messages().get(&next) else {
                continue;
            };
            let cost = meta.size().min(bs);
            if ahead + cost > reach {
                break;
            }
            ahead += cost;
            let key = BlockKey {
                mailbox: msg.mailbox,
                validity: msg.validity,
                uid: next,
                block: 0,
            };
            let elsewhere =
                || meta.ids.is_some() && self.body_elsewhere(MessageRef { uid: next, ..msg });
            if !self.has_block(&key) && !elsewhere() {
                out.push(((next, 0), cost));
            }
        }
        drop(index);
        // Leave to the streams what they asked for, and claim the rest (see `walk_claims`).
        let mut claims = self.reading.walk_claims.lock();
        let asked = self.streams_asked(msg.mailbox);
        out.retain(|((uid, _), _)| {
            let m = MessageRef { uid: *uid, ..msg };
            !asked.contains(m) && claims.insert(m)
        });
        out
    }

    /// Forget a message the server no longer has.
    pub(crate) fn forget_message(&self, msg: MessageRef) {
        let gone = IndexChange::Removed(msg.uid);
        self.indexes.apply(msg.mailbox, msg.validity, [gone]);
    }
}

/// How far ahead of its reader a walk prefetch reaches, in bytes of the next messages' first
/// blocks, cached or not: a sixteenth of the cache (16 MiB of the default 256 MiB, 80 ms of
/// reading at 200 MB/s), and at least a block. Counting only the blocks still to fetch (up
/// to a quarter of the cache) let every start fetch a whole window past what the last ones
/// brought, so five walking readers ran ever further ahead until what they fetched evicted
/// what they had fetched before, unread (issue 17: eight readers over eight folders).
fn walk_reach(cache_size: u64, block_size: u64) -> u64 {
    (cache_size / 16).max(block_size)
}

/// The messages a walk prefetch claimed ([`ReadState::walk_claims`]), given back when its
/// fetch ends, whether it brought them or failed.
struct WalkClaims<'a> {
    set: &'a Mutex<std::collections::HashSet<MessageRef>>,
    msgs: Vec<MessageRef>,
}

impl Drop for WalkClaims<'_> {
    fn drop(&mut self) {
        if !self.msgs.is_empty() {
            let mut set = self.set.lock();
            for m in &self.msgs {
                set.remove(m);
            }
        }
    }
}
