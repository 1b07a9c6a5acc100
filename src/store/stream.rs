//! Background streaming of a folder's messages ahead of a reader that walks it.
//!
//! When a reader starts one message after another of the same folder (`cat *.eml`,
//! `grep -r`), in UID order (readdir order) or in file name order (a shell glob), a stream
//! thread takes a pool connection and fetches the next messages in that order into the block
//! cache: whole (`UID FETCH set (UID BODY.PEEK[])`) up to [`WHOLE_MAX`], so that their exact
//! length is known before they are opened and the kernel may keep their pages, and the first
//! block (`BODY.PEEK[]<0.block>`) of bigger ones. Two batches are in flight, and each response
//! goes into the cache as soon as it is decoded. So the
//! network, TLS decryption and parsing (stream thread) overlap with the copies to the kernel
//! (FUSE threads): the reader finds its blocks waiting, or waits for one already on its way
//! ([`Account::wait_for_stream`]) instead of asking for it again.
//!
//! Bounds: the stream stays at most a quarter of the cache ahead of the reader (in bytes of
//! first blocks), so nothing it fetched is evicted before it is read; it ends when it reaches
//! the end of its plan, when the reader leaves the plan or stops for [`STALL`], or when the
//! mailbox changes generation. At most one stream per folder, and fewer streams than pool
//! connections, so that other requests always find a connection; readers of different folders
//! get streams on different connections.
//!
//! Rest of a message over [`WHOLE_MAX`]: its first block comes with the stream, the others
//! with the reader's own sequential readahead (`read`), on another connection.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::Retry;
use crate::imap::session::{Access, Session};
use crate::imap::types::{
    fetch_uid, FetchItem, MailboxName, SequenceSet, Tag, Uid, UidValidity, Untagged,
};
use crate::store::blocks::BlockKey;
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::Account;

/// A reader that starts no message for this long has stopped walking: its stream ends.
pub const STALL: Duration = Duration::from_secs(3);

/// Longest gap between two message starts that still counts as a walk.
const WALK_GAP: Duration = Duration::from_secs(1);

/// Longest a reader waits for a block a stream has on its way before asking itself.
const READER_WAIT: Duration = Duration::from_secs(10);

/// Messages up to this size are streamed whole (bigger ones: their first block).
pub const WHOLE_MAX: u64 = 4 << 20;

/// Most bytes one streamed batch asks for; two batches are in flight.
const BATCH_BYTES: u64 = 8 << 20;

/// Most messages one streamed batch asks for.
const BATCH_MESSAGES: usize = 512;

/// In which order a reader walks a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// UID order: `readdir` order, `grep -r`, `find`.
    Uid,
    /// File names in byte order: a shell glob (`cat *.eml`) in the C locale.
    Name,
}

/// Walks under way and their streams.
#[derive(Default)]
pub struct Streams {
    /// The last message started in each folder, and when.
    walks: Mutex<HashMap<MailboxId, (Uid, Instant)>>,
    active: Mutex<HashMap<MailboxId, Arc<Stream>>>,
    /// Signalled whenever a stream puts a block in the cache or ends.
    landed: Condvar,
    landed_lock: Mutex<()>,
    /// Streams started so far (for `user.imapfs.stats`).
    started: std::sync::atomic::AtomicU64,
}

/// One folder's stream.
struct Stream {
    validity: UidValidity,
    /// The messages in the reader's order, from the one after its start.
    plan: Vec<Uid>,
    /// Position of each planned message.
    pos_of: HashMap<Uid, usize>,
    /// `ahead[i]`: bytes the stream fetches for `plan[..i]`.
    ahead: Vec<u64>,
    /// Whether `plan[i]` is fetched whole (else its first block).
    whole: Vec<bool>,
    /// Plan position of the message the reader started last (`usize::MAX`: none yet).
    reader: AtomicUsize,
    /// Plan positions below this have been asked for (or skipped).
    sent: AtomicUsize,
    /// Plan positions below this have been answered.
    answered: AtomicUsize,
    alive: AtomicBool,
    reader_moved: Mutex<Instant>,
}

impl Account {
    /// A reader starts reading `msg` (opens it, or reads at offset 0): follow its walk, steer
    /// the folder's stream, and start one if the reader needs the server (`missing`: the
    /// message is not at hand). Returns whether a stream is bringing the folder's messages
    /// (the caller then does no walk prefetch of its own).
    pub(crate) fn note_message_start(&self, msg: MessageRef, missing: bool) -> bool {
        let streams = &self.reading.streams;
        let previous = streams
            .walks
            .lock()
            .insert(msg.mailbox, (msg.uid, Instant::now()));
        let current = streams.active.lock().get(&msg.mailbox).cloned();
        if let Some(stream) = current {
            if stream.alive.load(Ordering::Relaxed) && stream.validity == msg.validity {
                match stream.pos_of.get(&msg.uid) {
                    Some(&p) => {
                        let r = stream.reader.load(Ordering::Relaxed);
                        if r == usize::MAX || p >= r {
                            stream.reader.store(p, Ordering::Relaxed);
                            *stream.reader_moved.lock() = Instant::now();
                            return true;
                        }
                    }
                    None if previous.is_some_and(|(u, _)| u == msg.uid) => return true,
                    None => {}
                }
            }
            // The reader left the plan (or went back): this stream is of no use now.
            log::debug!(
                "{}: the reader left its stream at UID {} (position {:?}, reader at {})",
                msg.mailbox,
                msg.uid,
                stream.pos_of.get(&msg.uid),
                stream.reader.load(Ordering::Relaxed)
            );
            stream.alive.store(false, Ordering::Relaxed);
            streams.active.lock().remove(&msg.mailbox);
        }
        let Some((prev, at)) = previous else {
            return false;
        };
        if !missing {
            return false;
        }
        if prev == msg.uid || at.elapsed() > WALK_GAP {
            return false;
        }
        let Some((order, plan)) = self.walk_plan(msg, prev) else {
            return false;
        };
        let slots = self.pool.capacity().saturating_sub(1);
        let mut active = streams.active.lock();
        active.retain(|_, s| s.alive.load(Ordering::Relaxed));
        if active.len() >= slots || plan.is_empty() || self.me.upgrade().is_none() {
            return false;
        }
        let stream = Arc::new(self.new_stream(msg, plan));
        active.insert(msg.mailbox, stream.clone());
        drop(active);
        streams.started.fetch_add(1, Ordering::Relaxed);
        log::debug!(
            "{}: reader walks in {order:?} order from UID {}; streaming {} messages",
            msg.mailbox,
            msg.uid,
            stream.plan.len()
        );
        let weak = self.me.clone();
        let started = std::thread::Builder::new()
            .name("stream".into())
            .spawn(move || run(weak, msg.mailbox, stream));
        if let Err(e) = started {
            log::warn!("cannot start a stream thread: {e}");
            self.reading.streams.active.lock().remove(&msg.mailbox);
            return false;
        }
        true
    }

    /// If `msg` follows `prev` in UID order or in file name order, that order and the messages
    /// after `msg` in it.
    fn walk_plan(&self, msg: MessageRef, prev: Uid) -> Option<(Order, Vec<Uid>)> {
        let ix = self.indexes.get(msg.mailbox)?;
        let ix = ix.read();
        if ix.validity() != msg.validity {
            return None;
        }
        let next_by_uid = ix.messages().range(prev..).nth(1).map(|(u, _)| *u);
        if next_by_uid == Some(msg.uid) {
            let plan = ix
                .messages()
                .range(msg.uid..)
                .skip(1)
                .map(|(u, _)| *u)
                .collect();
            return Some((Order::Uid, plan));
        }
        let name = |u: &Uid| u.to_string() + ".eml";
        let (prev_name, this_name) = (name(&prev), name(&msg.uid));
        let next_by_name = ix
            .messages()
            .keys()
            .map(name)
            .filter(|n| *n > prev_name)
            .min();
        if next_by_name.as_ref() != Some(&this_name) {
            return None;
        }
        let mut after: Vec<(String, Uid)> = ix
            .messages()
            .keys()
            .map(|u| (name(u), *u))
            .filter(|(n, _)| *n > this_name)
            .collect();
        after.sort_unstable();
        Some((Order::Name, after.into_iter().map(|(_, u)| u).collect()))
    }

    fn new_stream(&self, msg: MessageRef, plan: Vec<Uid>) -> Stream {
        let bs = self.opts.block_size;
        let whole_max = WHOLE_MAX.max(bs);
        let mut ahead = Vec::with_capacity(plan.len() + 1);
        let mut whole = Vec::with_capacity(plan.len());
        ahead.push(0u64);
        let mut total = 0;
        if let Some(ix) = self.indexes.get(msg.mailbox) {
            let ix = ix.read();
            for u in &plan {
                let size = ix.messages().get(u).map_or(0, |m| m.size());
                whole.push(size <= whole_max);
                total += if size <= whole_max { size } else { bs };
                ahead.push(total);
            }
        }
        ahead.resize(plan.len() + 1, total);
        whole.resize(plan.len(), false);
        Stream {
            validity: msg.validity,
            pos_of: plan.iter().enumerate().map(|(i, u)| (*u, i)).collect(),
            plan,
            ahead,
            whole,
            reader: AtomicUsize::new(usize::MAX),
            sent: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            alive: AtomicBool::new(true),
            reader_moved: Mutex::new(Instant::now()),
        }
    }

    /// The first block of `msg` is missing from the cache: if a stream is bringing it, wait
    /// (at most [`READER_WAIT`]) until it lands or the stream gives up on it. Returns whether
    /// it waited at all.
    pub(crate) fn wait_for_stream(&self, msg: MessageRef) -> bool {
        let streams = &self.reading.streams;
        let Some(stream) = streams.active.lock().get(&msg.mailbox).cloned() else {
            return false;
        };
        let Some(&p) = stream.pos_of.get(&msg.uid) else {
            return false;
        };
        if stream.validity != msg.validity {
            return false;
        }
        let key = BlockKey {
            mailbox: msg.mailbox,
            validity: msg.validity,
            uid: msg.uid,
            block: 0,
        };
        let deadline = Instant::now() + READER_WAIT;
        let mut guard = streams.landed_lock.lock();
        loop {
            if self.reading.blocks.contains(&key)
                || !stream.alive.load(Ordering::Relaxed)
                || p < stream.answered.load(Ordering::Relaxed)
                || Instant::now() >= deadline
            {
                return true;
            }
            streams
                .landed
                .wait_for(&mut guard, Duration::from_millis(50));
        }
    }

    /// Streams started so far.
    pub fn streams_started(&self) -> u64 {
        self.reading.streams.started.load(Ordering::Relaxed)
    }

    /// Whether a stream is bringing `mailbox`'s messages now.
    pub(crate) fn is_streaming(&self, mailbox: MailboxId) -> bool {
        self.reading
            .streams
            .active
            .lock()
            .get(&mailbox)
            .is_some_and(|s| s.alive.load(Ordering::Relaxed))
    }
}

/// The stream thread: one pool session for the whole walk.
fn run(account: Weak<Account>, mailbox: MailboxId, stream: Arc<Stream>) {
    let result = (|| -> Result<()> {
        let a = account.upgrade().ok_or(crate::Error::ReadOnly)?;
        let name = a.require_name(mailbox)?;
        let pool = &a.pool;
        pool.with_session(Some(&name), Retry::Idempotent, |s| {
            stream_on(&account, s, &name, mailbox, &stream)
        })
    })();
    if let Err(e) = result {
        log::debug!("{mailbox}: stream ended: {e}");
    }
    stream.alive.store(false, Ordering::Relaxed);
    if let Some(a) = account.upgrade() {
        let streams = &a.reading.streams;
        let mut active = streams.active.lock();
        if active
            .get(&mailbox)
            .is_some_and(|s| Arc::ptr_eq(s, &stream))
        {
            active.remove(&mailbox);
        }
        drop(active);
        streams.landed.notify_all();
    }
}

/// Fetch the plan's messages on `s`, two batches deep, within the budget ahead of the
/// reader, until the plan ends, the reader stalls or leaves, or the account goes.
fn stream_on(
    account: &Weak<Account>,
    s: &mut Session,
    name: &MailboxName,
    mailbox: MailboxId,
    stream: &Stream,
) -> Result<()> {
    s.select_at(name, stream.validity, Access::Read)?;
    // Commands out, each with the plan position answered once it completes.
    let mut in_flight: VecDeque<(Tag, usize)> = VecDeque::new();
    loop {
        let Some(a) = account.upgrade() else {
            return Ok(());
        };
        let bs = a.opts.block_size;
        let budget = (a.opts.cache_size / 4).max(WHOLE_MAX);
        let alive = stream.alive.load(Ordering::Relaxed);
        // Messages the reader already passed are not fetched any more.
        let reader = stream.reader.load(Ordering::Relaxed);
        let base = if reader == usize::MAX { 0 } else { reader + 1 };
        let from = stream.sent.load(Ordering::Relaxed).max(base);
        let (to, whole, first) = if alive && in_flight.len() < 4 {
            next_batch(&a, stream, mailbox, from, base, budget)
        } else {
            (from, Vec::new(), Vec::new())
        };
        stream.sent.store(to, Ordering::Relaxed);
        let sent = !whole.is_empty() || !first.is_empty();
        for (uids, partial) in [(whole, None), (first, Some(bs))] {
            if uids.is_empty() {
                continue;
            }
            let cmd = Command::Fetch {
                uid: true,
                set: SequenceSet::from_numbers(uids.iter().map(|u| u.get())),
                attrs: vec![
                    FetchAttr::Uid,
                    FetchAttr::BodyPeek {
                        section: String::new(),
                        partial: partial.map(|bs| (0, u32::try_from(bs).unwrap_or(u32::MAX))),
                    },
                ],
                changed_since: None,
            };
            in_flight.push_back((s.send(&cmd)?, to));
        }
        if sent && in_flight.len() < 3 && to < stream.plan.len() {
            continue; // the next batch out before waiting for this one
        }
        if !sent && to > from {
            // Everything in this stretch was cached already.
            if in_flight.is_empty() {
                stream.answered.fetch_max(to, Ordering::Relaxed);
                a.reading.streams.landed.notify_all();
            }
            continue;
        }
        if let Some((tag, end)) = in_flight.pop_front() {
            let streams = &a.reading.streams;
            let mut failed = None;
            let done = s.wait_each(&tag, "FETCH", |u| {
                if let Err(e) = land(&a, mailbox, stream.validity, u) {
                    failed.get_or_insert(e);
                }
            });
            stream.answered.fetch_max(end, Ordering::Relaxed);
            streams.landed.notify_all();
            if let Some(e) = failed {
                return Err(e);
            }
            done?;
            continue;
        }
        if !alive || to >= stream.plan.len() {
            return Ok(());
        }
        // A whole budget ahead of the reader: wait for it to move on.
        drop(a);
        if stream.reader_moved.lock().elapsed() > STALL {
            log::debug!("{mailbox}: the reader stopped; its stream ends");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Put what one streamed (or prefetched) FETCH response brought into the cache: a whole body
/// as blocks (its length learned first, so that a reader who sees the blocks also knows it),
/// or one block (which gives the length too when it is short).
pub(super) fn land(
    a: &Account,
    mailbox: MailboxId,
    validity: UidValidity,
    u: Untagged,
) -> Result<()> {
    let Untagged::Fetch { items, .. } = u else {
        return Ok(());
    };
    let Some(uid) = fetch_uid(&items) else {
        return Ok(());
    };
    let bs = a.opts.block_size;
    let msg = MessageRef {
        mailbox,
        validity,
        uid,
    };
    for item in items {
        let FetchItem::Body {
            section,
            origin,
            data,
        } = item
        else {
            continue;
        };
        if !section.is_empty() {
            continue;
        }
        let Some(data) = data else {
            log::warn!("server answered NIL for the body of UID {uid}");
            continue;
        };
        // A whole body, or one block at a block boundary (prefetch asks for any block).
        let (first, blocks): (u64, Vec<&[u8]>) = match origin {
            None if data.is_empty() => (0, vec![&data[..]]),
            None => (0, data.chunks(bs as usize).collect()),
            Some(at) if at % bs == 0 && data.len() as u64 <= bs => (at / bs, vec![&data[..]]),
            Some(_) => {
                return Err(Error::BadReply {
                    command: "FETCH",
                    what: "another part of the body than was asked".into(),
                })
            }
        };
        let complete = origin.is_none() || (data.len() as u64) < bs;
        if complete {
            if let Some(meta) = a.indexes.meta(msg) {
                let length = origin.unwrap_or(0) + data.len() as u64;
                a.learn_length(msg, meta.size(), length);
            }
        }
        for (i, b) in blocks.into_iter().enumerate() {
            let key = BlockKey {
                mailbox,
                validity,
                uid,
                block: first + i as u64,
            };
            a.keep_block(key, Arc::from(b));
        }
        a.reading.streams.landed.notify_all();
    }
    Ok(())
}

/// The next messages to ask for from plan position `from`: those not cached, within the
/// budget ahead of the reader (whose next message is at `base`) and one batch's bounds.
/// Returns the position after the batch, the messages to fetch whole and those to fetch the
/// first block of.
fn next_batch(
    a: &Account,
    stream: &Stream,
    mailbox: MailboxId,
    from: usize,
    base: usize,
    budget: u64,
) -> (usize, Vec<Uid>, Vec<Uid>) {
    let mut to = from;
    let (mut whole, mut first) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    while to < stream.plan.len() && whole.len() + first.len() < BATCH_MESSAGES {
        let cost = stream.ahead[to + 1] - stream.ahead[to];
        let ahead = stream.ahead[to + 1] - stream.ahead[base.min(to)];
        if ahead > budget || (bytes > 0 && bytes + cost > BATCH_BYTES) {
            break;
        }
        let uid = stream.plan[to];
        let key = BlockKey {
            mailbox,
            validity: stream.validity,
            uid,
            block: 0,
        };
        let msg = MessageRef {
            mailbox,
            validity: stream.validity,
            uid,
        };
        if !a.reading.read_through.lock().contains(&msg)
            && !a.has_block(&key)
            && !a.body_elsewhere(msg)
        {
            if stream.whole[to] {
                whole.push(uid);
            } else {
                first.push(uid);
            }
            bytes += cost;
        }
        to += 1;
    }
    (to, whole, first)
}
