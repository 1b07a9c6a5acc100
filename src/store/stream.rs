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
    message_bodies, MailboxName, SequenceSet, Tag, Uid, UidValidity, Untagged,
};
use crate::store::blocks::BlockKey;
use crate::store::disk_cache::Origin;
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::index::UidMap;
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

/// Most messages one stream plans: more than it can be ahead of the reader in a cache of
/// 128 MiB of small messages; a longer walk gets the next stream where this one ends.
const PLAN_MESSAGES: usize = 16_384;

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
        let slots = self.pool.capacity().saturating_sub(1);
        let busy = |active: &mut HashMap<MailboxId, Arc<Stream>>| {
            active.retain(|_, s| s.alive.load(Ordering::Relaxed));
            active.len() >= slots
        };
        // No plan is made for a stream that could not start anyway.
        if busy(&mut streams.active.lock()) {
            return false;
        }
        let Some((order, plan)) = self.walk_plan(msg, prev) else {
            return false;
        };
        let mut active = streams.active.lock();
        if busy(&mut active) || plan.is_empty() || self.me.upgrade().is_none() {
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

    /// If `msg` follows `prev` in UID order or in file name order, that order and the next
    /// [`PLAN_MESSAGES`] messages after `msg` in it. Proportional to what it returns, not to
    /// the folder: a few range lookups in the index per plan (a reader that walks past the
    /// end of one plan starts the next stream there).
    fn walk_plan(&self, msg: MessageRef, prev: Uid) -> Option<(Order, Vec<Uid>)> {
        let ix = self.indexes.get(msg.mailbox)?;
        let ix = ix.read();
        if ix.validity() != msg.validity {
            return None;
        }
        let messages = ix.messages();
        let next_by_uid = messages.range(prev..).nth(1).map(|(u, _)| *u);
        if next_by_uid == Some(msg.uid) {
            let plan = messages
                .range(msg.uid..)
                .skip(1)
                .take(PLAN_MESSAGES)
                .map(|(u, _)| *u)
                .collect();
            return Some((Order::Uid, plan));
        }
        if names_after(messages, prev, 1) != [msg.uid] {
            return None;
        }
        Some((Order::Name, names_after(messages, msg.uid, PLAN_MESSAGES)))
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
                if let Err(e) = land(&a, mailbox, stream.validity, u, Origin::Stream) {
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
    by: Origin,
) -> Result<()> {
    let Some((uid, bodies)) = message_bodies(u) else {
        return Ok(());
    };
    let bs = a.opts.block_size;
    let msg = MessageRef {
        mailbox,
        validity,
        uid,
    };
    for (origin, data) in bodies {
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
            a.keep_block(key, Arc::from(b), by);
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

/// Up to `limit` UIDs of `messages` after `after` in file name order (`<uid>.eml` in byte
/// order: decimal strings, a prefix first), found without looking at the others. UIDs of one
/// digit count are in the same order by number and by name, so the name order is a merge
/// of at most ten ranges of the map, one per digit count, each starting at its first name
/// after `after`'s.
fn names_after<V>(messages: &UidMap<V>, after: Uid, limit: usize) -> Vec<Uid> {
    let x = u64::from(after.get());
    let len = digits(x);
    let mut runs: Vec<_> = (1..=10u32)
        .filter_map(|d| {
            let first = match d.cmp(&len) {
                // Same length: a greater number.
                std::cmp::Ordering::Equal => x + 1,
                // Longer: its first `len` digits at least `after`'s.
                std::cmp::Ordering::Greater => x * 10u64.pow(d - len),
                // Shorter: greater than `after`'s first `d` digits (equal is a prefix).
                std::cmp::Ordering::Less => x / 10u64.pow(len - d) + 1,
            };
            let lo = first.max(10u64.pow(d - 1));
            let hi = (10u64.pow(d) - 1).min(u64::from(u32::MAX));
            let (lo, hi) = (Uid::new(u32::try_from(lo).ok()?)?, Uid::new(hi as u32)?);
            (lo <= hi).then(|| messages.range(lo..=hi).map(|(u, _)| *u).peekable())
        })
        .collect();
    let mut out = Vec::with_capacity(limit.min(messages.len()));
    while out.len() < limit {
        let next = runs
            .iter_mut()
            .filter_map(|r| r.peek().copied())
            .min_by(|a, b| name_order(a.get(), b.get()));
        let Some(next) = next else {
            break;
        };
        for r in &mut runs {
            r.next_if_eq(&next);
        }
        out.push(next);
    }
    out
}

/// Decimal digits of `n` (1 for 0).
fn digits(mut n: u64) -> u32 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// `a.eml` against `b.eml` in byte order: compared as decimal strings padded with zeros to
/// one length, the shorter first on a tie (it is a prefix, and `.` sorts before digits).
fn name_order(a: u32, b: u32) -> std::cmp::Ordering {
    let (a, b) = (u64::from(a), u64::from(b));
    let (da, db) = (digits(a), digits(b));
    let width = da.max(db);
    (a * 10u64.pow(width - da))
        .cmp(&(b * 10u64.pow(width - db)))
        .then(da.cmp(&db))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle: every name made and sorted.
    fn by_sorting(uids: &[u32], after: u32, limit: usize) -> Vec<u32> {
        let mut names: Vec<String> = uids.iter().map(|u| format!("{u}.eml")).collect();
        names.sort();
        let after = format!("{after}.eml");
        names
            .into_iter()
            .filter(|n| *n > after)
            .take(limit)
            .map(|n| n.trim_end_matches(".eml").parse().unwrap())
            .collect()
    }

    #[test]
    fn issue_17_name_order_plans_match_sorted_names() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            // Dense small folders, sparse ones, and UIDs of every length up to u32::MAX.
            let span = [30u64, 1_000, 100_000, u64::from(u32::MAX)][round % 4];
            let n = 1 + (rand() % 300) as usize;
            let mut uids: Vec<u32> = (0..n).map(|_| 1 + (rand() % span) as u32).collect();
            uids.extend([1, 9, 10, 99, 100]);
            uids.sort_unstable();
            uids.dedup();
            let map: UidMap<()> = uids.iter().map(|&u| (Uid::new(u).unwrap(), ())).collect();
            for _ in 0..5 {
                // A UID of the folder, or one that is not (a message gone meanwhile).
                let after = match rand() % 2 {
                    0 => uids[(rand() % uids.len() as u64) as usize],
                    _ => 1 + (rand() % span) as u32,
                };
                let limit = 1 + (rand() % 400) as usize;
                let got: Vec<u32> = names_after(&map, Uid::new(after).unwrap(), limit)
                    .into_iter()
                    .map(Uid::get)
                    .collect();
                assert_eq!(
                    got,
                    by_sorting(&uids, after, limit),
                    "after {after} in {uids:?}"
                );
            }
        }
    }
}
