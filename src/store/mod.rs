//! What the filesystem believes about the account, and the one place that asks the server.
//!
//! [`Account`] holds the pool of sessions, the mailbox list, a per-mailbox [`Index`] keyed on
//! UIDVALIDITY, the block cache and decoded headers. The filesystem asks it questions in its
//! own terms (mailbox id, UID, byte range) and gets bytes or metadata back; every IMAP detail
//! (EXAMINE before FETCH, BODY.PEEK so nothing turns `\Seen`, pipelining blocks into one round
//! trip, UIDVALIDITY checks) stays here and below.
//!
//! Mailboxes get a [`MailboxId`] for the life of the mount. A read names the UIDVALIDITY it
//! expects; if the server's differs, the read fails instead of returning another message's
//! bytes, and the cache keys make old blocks unreachable.

pub mod blocks;
pub mod mailbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::{Pool, Retry};
use crate::imap::session::Session;
use crate::imap::types::{FetchItem, MailboxName, SequenceSet, Uid, UidValidity, Untagged};
use blocks::{BlockCache, BlockKey};
pub use mailbox::{Index, MailboxInfo, MessageMeta};

/// A block fetched from the server: (UID, block number) and its bytes.
type FetchedBlock = ((Uid, u64), Arc<[u8]>);

/// A mailbox's number for the life of the mount.
pub type MailboxId = u32;

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
        }
    }
}

/// What opening a message learned of its real length. `BODY[]` can differ from RFC822.SIZE
/// (Exchange, Gmail, hMailServer); the file must hold the body, to the byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// The listed size is right, or was not checked (a message larger than a block, whose end
    /// is not read yet; a difference is learned when it is).
    AsListed,
    /// The body has this many bytes, not the listed number; the index now says so.
    Corrected(u64),
    /// The body is longer than one block and than the listed size: its length is known only
    /// once it has been read to the end.
    Longer,
}

/// Decoded headers shown as `user.mail.*` xattrs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers {
    pub subject: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub date: Option<String>,
    pub message_id: Option<String>,
}

/// The account as the filesystem sees it.
pub struct Account {
    pool: Pool,
    opts: StoreOptions,
    list: Mutex<Option<(Arc<Vec<MailboxInfo>>, Instant)>>,
    list_turn: Mutex<()>,
    names: Mutex<MailboxNames>,
    indexes: Mutex<HashMap<MailboxId, Arc<Index>>>,
    blocks: BlockCache,
    headers: Mutex<LruCache<(MailboxId, UidValidity, Uid), Arc<Headers>>>,
    /// Next block each recently read message is expected to need (sequential detection),
    /// and its readahead window in blocks.
    next_block: Mutex<LruCache<(MailboxId, Uid), (u64, u64)>>,
    /// The message whose start was last read, per mailbox (folder walk detection), and the
    /// prefetch window in messages.
    last_started: Mutex<HashMap<MailboxId, (Uid, usize, Instant)>>,
    /// Locks that serialise fetching per message (striped by mailbox and UID).
    fetch_turns: Vec<Mutex<()>>,
    /// Locks that serialise index refreshes per mailbox (striped by mailbox).
    refresh_turns: Vec<Mutex<()>>,
}

const FETCH_STRIPES: usize = 64;

/// Longest gap between two message starts that still counts as walking a folder.
const WALK_PAUSE: Duration = Duration::from_secs(1);

fn stripe(id: MailboxId, uid: Uid) -> usize {
    (id as usize)
        .wrapping_mul(31)
        .wrapping_add(uid.get() as usize)
        % FETCH_STRIPES
}

#[derive(Default)]
struct MailboxNames {
    by_raw: HashMap<Vec<u8>, MailboxId>,
    by_id: Vec<MailboxName>,
}

impl Account {
    pub fn new(pool: Pool, opts: StoreOptions) -> Account {
        let blocks = BlockCache::new(opts.cache_size);
        Account {
            pool,
            opts,
            list: Mutex::new(None),
            list_turn: Mutex::new(()),
            names: Mutex::new(MailboxNames::default()),
            indexes: Mutex::new(HashMap::new()),
            blocks,
            headers: Mutex::new(LruCache::new(std::num::NonZeroUsize::new(4096).unwrap())),
            next_block: Mutex::new(LruCache::new(std::num::NonZeroUsize::new(1024).unwrap())),
            last_started: Mutex::new(HashMap::new()),
            fetch_turns: (0..FETCH_STRIPES).map(|_| Mutex::new(())).collect(),
            refresh_turns: (0..FETCH_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The mailbox list, asking the server if ours is older than `max_age`.
    pub fn mailboxes(&self, max_age: Duration) -> Result<Arc<Vec<MailboxInfo>>> {
        let fresh = || match &*self.list.lock() {
            Some((list, at)) if at.elapsed() < max_age => Some(list.clone()),
            _ => None,
        };
        if let Some(list) = fresh() {
            return Ok(list);
        }
        // One LIST at a time: the others wait and take its result.
        let _turn = self.list_turn.lock();
        if let Some(list) = fresh() {
            return Ok(list);
        }
        let done = self.pool.with_session(None, Retry::Idempotent, |s| {
            s.run(Command::List {
                reference: Vec::new(),
                pattern: b"*".to_vec(),
            })
        })?;
        let mut list: Vec<MailboxInfo> = done
            .untagged
            .into_iter()
            .filter_map(|u| match u {
                Untagged::List(item) => Some(MailboxInfo {
                    noselect: item.is_noselect(),
                    delimiter: item.delimiter,
                    name: item.name,
                }),
                _ => None,
            })
            .collect();
        list.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        list.dedup_by(|a, b| a.name == b.name);
        let list = Arc::new(list);
        *self.list.lock() = Some((list.clone(), Instant::now()));
        Ok(list)
    }

    /// The id of a mailbox, assigned on first sight.
    pub fn mailbox_id(&self, name: &MailboxName) -> MailboxId {
        let mut names = self.names.lock();
        if let Some(&id) = names.by_raw.get(name.raw()) {
            return id;
        }
        let id = names.by_id.len() as MailboxId + 1;
        names.by_id.push(name.clone());
        names.by_raw.insert(name.raw().to_vec(), id);
        id
    }

    pub fn mailbox_name(&self, id: MailboxId) -> Option<MailboxName> {
        self.names
            .lock()
            .by_id
            .get((id as usize).checked_sub(1)?)
            .cloned()
    }

    /// The index of a mailbox, refreshed from the server if older than `max_age`.
    pub fn index(&self, id: MailboxId, max_age: Duration) -> Result<Arc<Index>> {
        let fresh = || {
            self.indexes
                .lock()
                .get(&id)
                .filter(|ix| ix.fetched_at.elapsed() < max_age)
                .cloned()
        };
        if let Some(ix) = fresh() {
            return Ok(ix);
        }
        // One refresh per mailbox at a time: the others wait and take its result.
        let _turn = self.refresh_turns[id as usize % FETCH_STRIPES].lock();
        if let Some(ix) = fresh() {
            return Ok(ix);
        }
        self.refresh(id)
    }

    /// The index we have, however old, without asking the server.
    pub fn cached_index(&self, id: MailboxId) -> Option<Arc<Index>> {
        self.indexes.lock().get(&id).cloned()
    }

    fn refresh(&self, id: MailboxId) -> Result<Arc<Index>> {
        let name = self
            .mailbox_name(id)
            .ok_or_else(|| Error::NotFound("mailbox".into()))?;
        let index = self
            .pool
            .with_session(Some(&name), Retry::Idempotent, |s| fetch_index(s, &name))?;
        let index = Arc::new(index);
        let old = self.indexes.lock().insert(id, index.clone());
        if old.is_some_and(|o| o.validity != index.validity) {
            log::warn!("UIDVALIDITY of {name} changed: dropping its cached content");
            self.blocks.forget_mailbox(id);
            self.headers.lock().clear();
        }
        Ok(index)
    }

    /// Forget a message the server no longer has.
    fn forget_message(&self, id: MailboxId, validity: UidValidity, uid: Uid) {
        let mut indexes = self.indexes.lock();
        if let Some(ix) = indexes.get_mut(&id) {
            if ix.validity == validity && ix.messages.contains_key(&uid) {
                let mut copy = (**ix).clone();
                copy.messages.remove(&uid);
                *ix = Arc::new(copy);
            }
        }
    }

    /// Prepare a message for reading: fetch its first block (the read that follows needs it
    /// anyway, and for most messages it is the whole body) and compare the body's length with
    /// the listed size.
    pub fn open_message(
        &self,
        id: MailboxId,
        validity: UidValidity,
        uid: Uid,
        listed: u64,
    ) -> Result<BodyLength> {
        let bs = self.opts.block_size;
        if listed > bs {
            return Ok(BodyLength::AsListed);
        }
        // The whole first block, as far as the body goes: a read of unknown length (which
        // also corrects the index when the body ends short of the listed size).
        let len = self.read(id, validity, uid, u64::MAX, 0, bs)?.len() as u64;
        if len == listed {
            Ok(BodyLength::AsListed)
        } else if len < bs {
            log::info!("message {uid}: RFC822.SIZE {listed} but BODY[] has {len} bytes");
            Ok(BodyLength::Corrected(len))
        } else {
            log::info!("message {uid}: RFC822.SIZE {listed} but BODY[] is longer than {len}");
            Ok(BodyLength::Longer)
        }
    }

    /// The widest readahead window: `max_readahead_blocks`, and at most a quarter of the
    /// cache, so that memory stays bounded by `--cache-size` however big the message.
    fn readahead_cap(&self) -> u64 {
        (self.opts.cache_size / 4 / self.opts.block_size)
            .clamp(1, self.opts.max_readahead_blocks.max(1))
    }

    /// Keep fetched blocks in the cache.
    fn cache_fetched(&self, id: MailboxId, validity: UidValidity, fetched: Vec<FetchedBlock>) {
        for ((uid, block), data) in fetched {
            self.blocks.insert(
                BlockKey {
                    mailbox: id,
                    validity,
                    uid,
                    block,
                },
                data,
            );
        }
    }

    /// Record a message's real length in the index.
    fn correct_size(&self, id: MailboxId, validity: UidValidity, uid: Uid, size: u64) {
        let mut indexes = self.indexes.lock();
        if let Some(ix) = indexes.get_mut(&id) {
            if ix.validity == validity && ix.messages.get(&uid).is_some_and(|m| m.size != size) {
                let mut copy = (**ix).clone();
                if let Some(m) = copy.messages.get_mut(&uid) {
                    m.size = size;
                }
                *ix = Arc::new(copy);
            }
        }
    }

    /// Read `len` bytes at `offset` of a message of `size` bytes (as listed; `u64::MAX` when
    /// the length is unknown: the read then ends where the body does).
    pub fn read(
        &self,
        id: MailboxId,
        validity: UidValidity,
        uid: Uid,
        size: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let bs = self.opts.block_size;
        let (first, last) = (offset / bs, (end - 1) / bs);
        let key = |block| BlockKey {
            mailbox: id,
            validity,
            uid,
            block,
        };
        let mut have: Vec<Option<Arc<[u8]>>> =
            (first..=last).map(|b| self.blocks.get(&key(b))).collect();
        let missing: Vec<u64> = (first..=last)
            .zip(&have)
            .filter(|(_, h)| h.is_none())
            .map(|(b, _)| b)
            .collect();
        let readahead = {
            let mut nb = self.next_block.lock();
            let ahead = match nb.get(&(id, uid)) {
                // Sequential: widen the window if this read needs the server.
                Some(&(next, w)) if next == first => {
                    if missing.is_empty() {
                        w
                    } else {
                        (w * 2).min(self.readahead_cap())
                    }
                }
                Some(_) => 0,
                None if first == 0 => self.opts.readahead_blocks,
                None => 0,
            };
            nb.put((id, uid), (last + 1, ahead.max(self.opts.readahead_blocks)));
            ahead
        };
        // Readers of one message take turns fetching (the kernel sends several reads of a
        // file at once): the second finds in the cache what the first fetched.
        let _turn = (!missing.is_empty()).then(|| self.fetch_turns[stripe(id, uid)].lock());
        let missing: Vec<u64> = missing
            .into_iter()
            .filter(|&b| match self.blocks.get(&key(b)) {
                Some(data) => {
                    have[(b - first) as usize] = Some(data);
                    false
                }
                None => true,
            })
            .collect();
        if !missing.is_empty() {
            let mut wanted: Vec<(Uid, u64)> = missing.iter().map(|&b| (uid, b)).collect();
            if readahead > 0 {
                let last_block = (size.max(1) - 1) / bs;
                for b in last + 1..=(last + readahead).min(last_block) {
                    if self.blocks.get(&key(b)).is_none() {
                        wanted.push((uid, b));
                    }
                }
            }
            if first == 0 {
                wanted.extend(self.walk_prefetch(id, validity, uid));
            }
            if size == u64::MAX {
                // Unknown length: no readahead past what the server may not have.
                wanted.retain(|&(u, b)| u != uid || b <= last);
            }
            let fetched = self.fetch_blocks(id, validity, &wanted)?;
            for ((u, b), data) in &fetched {
                if *u == uid {
                    if let Some(slot) = b.checked_sub(first).and_then(|i| have.get_mut(i as usize))
                    {
                        *slot = Some(data.clone());
                    }
                }
            }
            self.cache_fetched(id, validity, fetched);
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, block) in have.iter().enumerate() {
            let b = first + i as u64;
            let Some(data) = block else { break };
            let block_start = b * bs;
            let from = offset.max(block_start) - block_start;
            let to = (end - block_start).min(data.len() as u64);
            if from >= to {
                break;
            }
            out.extend_from_slice(&data[from as usize..to as usize]);
            if (data.len() as u64) < bs {
                // The message ends in this block: its real length is known now.
                let real = block_start + data.len() as u64;
                if size != u64::MAX && real != size {
                    log::info!("message {uid}: listed as {size} bytes, BODY[] has {real}");
                }
                if size == u64::MAX || real != size {
                    self.correct_size(id, validity, uid, real);
                }
                break;
            }
        }
        Ok(out)
    }

    /// When a reader starts message `uid` right after starting another of the same mailbox,
    /// it is walking the folder: the first blocks of the next messages (in UID order) not yet
    /// cached, to fetch in the same round trip. The window doubles with every round trip of
    /// the walk, so a long walk costs a logarithmic number of them.
    fn walk_prefetch(&self, id: MailboxId, validity: UidValidity, uid: Uid) -> Vec<(Uid, u64)> {
        let window = {
            let mut last = self.last_started.lock();
            // A walk opens the next message right after the last one; a pause ends it.
            let window = match last.get(&id) {
                Some(&(prev, _, _)) if prev == uid => return Vec::new(),
                Some(&(_, w, at)) if at.elapsed() < WALK_PAUSE => w,
                _ => 0,
            };
            let next = if window == 0 {
                self.opts.prefetch_messages
            } else {
                (window * 2).min(self.opts.max_prefetch_messages)
            };
            last.insert(id, (uid, next, Instant::now()));
            window
        };
        if window == 0 {
            return Vec::new();
        }
        let Some(index) = self.cached_index(id).filter(|ix| ix.validity == validity) else {
            return Vec::new();
        };
        let budget = (self.opts.cache_size / 4).max(self.opts.block_size);
        let mut bytes = 0;
        let mut out = Vec::new();
        for (&next, meta) in index.messages.range(uid..).skip(1) {
            if out.len() >= window || bytes + meta.size.min(self.opts.block_size) > budget {
                break;
            }
            let key = BlockKey {
                mailbox: id,
                validity,
                uid: next,
                block: 0,
            };
            if self.blocks.get(&key).is_none() {
                bytes += meta.size.min(self.opts.block_size);
                out.push((next, 0));
            }
        }
        out
    }

    /// Fetch blocks in one round trip (pipelined partial FETCHes). The first wanted block is
    /// the one the caller needs: if the server has no body for it, the message is gone. The
    /// others are prefetches; what the server does not return is simply not cached.
    fn fetch_blocks(
        &self,
        id: MailboxId,
        validity: UidValidity,
        wanted: &[(Uid, u64)],
    ) -> Result<Vec<FetchedBlock>> {
        let name = self
            .mailbox_name(id)
            .ok_or_else(|| Error::NotFound("mailbox".into()))?;
        let (uid, first_block) = wanted[0];
        let bs = self.opts.block_size;
        let block_len = u32::try_from(bs).unwrap_or(u32::MAX);
        let cmds: Vec<Command> = wanted
            .iter()
            .map(|&(u, b)| Command::Fetch {
                uid: true,
                set: SequenceSet::single(u.get()),
                attrs: vec![
                    FetchAttr::Uid,
                    FetchAttr::BodyPeek {
                        section: String::new(),
                        partial: Some((b * bs, block_len)),
                    },
                ],
                changed_since: None,
            })
            .collect();
        let untagged = self.pool.with_session(Some(&name), Retry::Idempotent, |s| {
            check_validity(s, &name, validity)?;
            let mut all = Vec::new();
            for (i, r) in s.pipeline(&cmds)?.into_iter().enumerate() {
                match r {
                    Ok(done) => all.extend(done.untagged),
                    Err(e) if i == 0 => return Err(e),
                    Err(e) => log::debug!("prefetch failed: {e}"),
                }
            }
            Ok(all)
        });
        let untagged = match untagged {
            Err(Error::NotFound(what)) => {
                self.forget_message(id, validity, uid);
                return Err(Error::NotFound(what));
            }
            other => other?,
        };
        let mut out = Vec::new();
        for u in untagged {
            let Untagged::Fetch { items, .. } = u else {
                continue;
            };
            let Some(msg_uid) = items.iter().find_map(|i| match i {
                FetchItem::Uid(u) => Some(*u),
                _ => None,
            }) else {
                continue;
            };
            if !wanted.iter().any(|(u, _)| *u == msg_uid) {
                continue;
            }
            for item in items {
                if let FetchItem::Body {
                    section,
                    origin,
                    data,
                } = item
                {
                    if !section.is_empty() {
                        continue;
                    }
                    let origin = origin.unwrap_or(0);
                    if origin % bs != 0 {
                        return Err(Error::Protocol(format!(
                            "FETCH answered at origin {origin}"
                        )));
                    }
                    let data = data.unwrap_or_default();
                    if data.len() as u64 > bs {
                        return Err(Error::Protocol("FETCH returned more than was asked".into()));
                    }
                    out.push(((msg_uid, origin / bs), Arc::from(data)));
                }
            }
        }
        if !out.iter().any(|(k, _)| *k == (uid, first_block)) {
            // No body for the first wanted block: the message is gone.
            self.forget_message(id, validity, uid);
            return Err(Error::NotFound(format!("message {uid} in {name}")));
        }
        Ok(out)
    }

    /// The decoded headers of a message, for `user.mail.*` xattrs.
    pub fn headers(&self, id: MailboxId, validity: UidValidity, uid: Uid) -> Result<Arc<Headers>> {
        if let Some(h) = self.headers.lock().get(&(id, validity, uid)) {
            return Ok(h.clone());
        }
        // The first block, if cached, usually holds the whole header.
        let cached = self.blocks.get(&BlockKey {
            mailbox: id,
            validity,
            uid,
            block: 0,
        });
        let in_cache = cached.and_then(|b| find_header_end(&b).map(|end| b[..end].to_vec()));
        let raw = match in_cache {
            Some(header) => header,
            None => self.fetch_header(id, validity, uid)?,
        };
        let h = Arc::new(decode_headers(&raw));
        self.headers.lock().put((id, validity, uid), h.clone());
        Ok(h)
    }

    fn fetch_header(&self, id: MailboxId, validity: UidValidity, uid: Uid) -> Result<Vec<u8>> {
        let name = self
            .mailbox_name(id)
            .ok_or_else(|| Error::NotFound("mailbox".into()))?;
        let done = self
            .pool
            .with_session(Some(&name), Retry::Idempotent, |s| {
                check_validity(s, &name, validity)?;
                s.run(Command::Fetch {
                    uid: true,
                    set: SequenceSet::single(uid.get()),
                    attrs: vec![
                        FetchAttr::Uid,
                        FetchAttr::BodyPeek {
                            section: "HEADER".into(),
                            partial: None,
                        },
                    ],
                    changed_since: None,
                })
            })?;
        for u in done.untagged {
            let Untagged::Fetch { items, .. } = u else {
                continue;
            };
            if !items.contains(&FetchItem::Uid(uid)) {
                continue;
            }
            for item in items {
                if let FetchItem::Body { data, .. } = item {
                    return Ok(data.unwrap_or_default());
                }
            }
        }
        self.forget_message(id, validity, uid);
        Err(Error::NotFound(format!("message {uid} in {name}")))
    }
}

/// EXAMINE `name` (unless selected) and make sure its UIDVALIDITY is `validity`. A session
/// that selected the mailbox long ago may hold an older generation than the caller: then it
/// examines afresh before concluding that the caller's generation is gone.
fn check_validity(s: &mut Session, name: &MailboxName, validity: UidValidity) -> Result<()> {
    let mut current = s.select(name, true)?.uidvalidity;
    if current.is_some_and(|v| v != validity) {
        current = s.reselect(name, true)?.uidvalidity;
    }
    match current {
        Some(v) if v == validity => Ok(()),
        Some(_) => Err(Error::NotFound(format!(
            "{name} was recreated (UIDVALIDITY changed)"
        ))),
        None => Err(Error::Protocol(format!("no UIDVALIDITY for {name}"))),
    }
}

/// EXAMINE a mailbox and list its messages' metadata in one FETCH.
fn fetch_index(s: &mut Session, name: &MailboxName) -> Result<Index> {
    // Always EXAMINE afresh: a NOOP on an old selection would not reveal that the mailbox
    // was deleted and recreated (new UIDVALIDITY) by another client. The listing FETCH goes
    // in the same round trip.
    let list = Command::Fetch {
        uid: true,
        set: SequenceSet::from(1),
        attrs: vec![
            FetchAttr::Uid,
            FetchAttr::Flags,
            FetchAttr::Rfc822Size,
            FetchAttr::InternalDate,
        ],
        changed_since: None,
    };
    let listed = s.reselect_then(name, true, Some(list))?;
    let sel = s
        .selected()
        .ok_or_else(|| Error::Protocol("mailbox not selected".into()))?;
    let validity = sel
        .uidvalidity
        .ok_or_else(|| Error::Protocol(format!("no UIDVALIDITY for {name}")))?;
    let uidnext = sel.uidnext;
    let exists = sel.exists;
    let mut messages = std::collections::BTreeMap::new();
    let done = match listed {
        Some(Ok(done)) => Some(done),
        // `UID FETCH 1:*` in an empty mailbox: some servers answer BAD or NO.
        Some(Err(Error::Bad { .. } | Error::No { .. })) if exists == 0 => None,
        Some(Err(e)) => return Err(e),
        None => return Err(Error::Protocol("no reply to the listing FETCH".into())),
    };
    if let Some(done) = done {
        for u in done.untagged {
            let Untagged::Fetch { items, .. } = u else {
                continue;
            };
            let (mut uid, mut size, mut date, mut flags) = (None, None, None, None);
            for item in items {
                match item {
                    FetchItem::Uid(u) => uid = Some(u),
                    FetchItem::Rfc822Size(n) => size = Some(n),
                    FetchItem::InternalDate(d) => date = Some(d),
                    FetchItem::Flags(f) => flags = Some(f),
                    _ => {}
                }
            }
            // An unsolicited FETCH (flags only) is not a listing entry.
            let (Some(uid), Some(size)) = (uid, size) else {
                continue;
            };
            messages.insert(
                uid,
                MessageMeta {
                    size,
                    internal_date: date.unwrap_or(0),
                    flags: flags.unwrap_or_default(),
                },
            );
        }
    }
    Ok(Index {
        validity,
        uidnext,
        messages,
        fetched_at: Instant::now(),
    })
}

fn find_header_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Decode the headers shown as xattrs (RFC 2047 words, address lists) with mail-parser.
pub fn decode_headers(raw: &[u8]) -> Headers {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Headers::default();
    };
    let addresses = |a: Option<&mail_parser::Address>| {
        a.map(|a| {
            a.iter()
                .map(|x| match (&x.name, &x.address) {
                    (Some(n), Some(ad)) => format!("{n} <{ad}>"),
                    (None, Some(ad)) => ad.to_string(),
                    (Some(n), None) => n.to_string(),
                    (None, None) => String::new(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    Headers {
        subject: msg.subject().map(str::to_string),
        from: addresses(msg.from()),
        to: addresses(msg.to()),
        date: msg.date().map(|d| d.to_rfc3339()),
        message_id: msg.message_id().map(|id| format!("<{id}>")),
    }
}
