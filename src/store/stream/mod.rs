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
//! Several readers may walk one folder at once, each at its own place (`ls | xargs -P4 cat`:
//! each `cat` walks its own stretch of names). Each walker is told apart by its last message:
//! a start that follows it (in either order) continues that walk. Each walker gets a stream of
//! its own, on its own connection, steered by that walker's starts only; a stream that a
//! new walker starts ahead of, in its plan, ends where the new one starts, and a stream does
//! not ask for a message another stream of the folder has asked for, so no message is fetched
//! twice. Readers of different folders get streams on different connections the same way.
//!
//! Bounds: each stream stays at most a quarter of the cache ahead of its reader (in bytes of
//! first blocks), so that little it fetched is evicted before it is read; a stream ends
//! when it reaches the end of its plan (or where another walker's begins), when its reader
//! stops for [`STALL`], or when the mailbox changes generation. Fewer streams than pool
//! connections, so that other requests always find a connection; a walker without a stream
//! reads with its own walk prefetch (`read`). The walks and streams tables are never held
//! while the index is read: plans are made before the table is locked.
//!
//! Rest of a message over [`WHOLE_MAX`]: its first block comes with the stream, the others
//! with the reader's own sequential readahead (`read`), on another connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::imap::types::{Uid, UidValidity};
use crate::store::blocks::BlockKey;
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::Account;

mod fetch;
mod plan;

pub(super) use fetch::land;
use fetch::run;
pub(crate) use plan::walk_next;
use plan::{next_messages, walk_plan};

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

/// How many messages past its reader's last one a message may be and still continue that
/// reader's walk (a reader that skips a few names, e.g. of messages gone meanwhile).
const STEP: usize = 8;

/// Most message starts remembered per folder, the candidates a next start may continue (one
/// per reader that walks it, and a few more).
const WALKERS: usize = 16;

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
    /// The messages started lately in each folder, and when, oldest first: the last message
    /// of each reader walking it, which the reader's next start follows.
    walks: Mutex<HashMap<MailboxId, Vec<(Uid, Instant)>>>,
    /// Each folder's streams, one per walker that has one; their unfetched ranges do not
    /// overlap (a stream ends where another walker's stream starts, see [`Stream::end`]).
    active: Mutex<HashMap<MailboxId, Vec<Arc<Stream>>>>,
    /// Signalled whenever a stream puts a block in the cache or ends.
    landed: Condvar,
    landed_lock: Mutex<()>,
    /// Streams started so far (for `user.imapfs.stats`).
    started: AtomicU64,
    /// Most streams running at once so far (for `user.imapfs.stats`).
    most: AtomicUsize,
}

/// One walker's stream.
struct Stream {
    validity: UidValidity,
    /// The message whose start began the stream; the plan starts after it.
    start: Uid,
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
    /// Plan positions from this one on belong to another walker, whose stream started there
    /// (or whose reader is there): this stream does not fetch them, and ends when it gets
    /// there.
    end: AtomicUsize,
    alive: AtomicBool,
    /// All of the plan was asked for and answered, and the thread has given its connection
    /// back, while the reader is still on its way through what it brought: the stream holds
    /// no slot but still counts in the budgets' shares ([`sharing`]) until its reader is at
    /// its end or stops (see [`running`]).
    draining: AtomicBool,
    reader_moved: Mutex<Instant>,
}

impl Stream {
    /// The stream of a walker that started `msg`, over `plan` (the messages after it, of
    /// listed `sizes`).
    fn new(msg: MessageRef, plan: Vec<Uid>, sizes: &[u64], block_size: u64) -> Stream {
        let whole_max = WHOLE_MAX.max(block_size);
        let whole: Vec<bool> = sizes.iter().map(|&size| size <= whole_max).collect();
        let ahead = std::iter::once(0)
            .chain(sizes.iter().scan(0, |total, &size| {
                *total += if size <= whole_max { size } else { block_size };
                Some(*total)
            }))
            .collect();
        Stream {
            validity: msg.validity,
            start: msg.uid,
            pos_of: plan.iter().enumerate().map(|(i, u)| (*u, i)).collect(),
            end: AtomicUsize::new(plan.len()),
            plan,
            ahead,
            whole,
            reader: AtomicUsize::new(usize::MAX),
            sent: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            alive: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            reader_moved: Mutex::new(Instant::now()),
        }
    }

    /// Whether `msg` continues this stream's walk (the reader's next message or one a few
    /// names on, or the same message again): then the stream follows the reader to it.
    fn follows(&self, msg: MessageRef) -> bool {
        if !self.alive.load(Ordering::Relaxed) || self.validity != msg.validity {
            return false;
        }
        let r = self.reader.load(Ordering::Relaxed);
        let Some(&p) = self.pos_of.get(&msg.uid) else {
            return r == usize::MAX && msg.uid == self.start;
        };
        if r != usize::MAX && p == r {
            return true;
        }
        let next = if r == usize::MAX { 0 } else { r + 1 };
        if p < next || p >= next + STEP || p >= self.end.load(Ordering::Relaxed) {
            return false;
        }
        // Forward only (`usize::MAX` is "none yet", below every position).
        let _ = self
            .reader
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r == usize::MAX || r < p).then_some(p)
            });
        *self.reader_moved.lock() = Instant::now();
        true
    }

    /// Whether this stream has asked for `uid` (or passed it over, cached or asked for by
    /// another stream), and its plan position.
    fn asked(&self, uid: Uid) -> Option<usize> {
        let p = *self.pos_of.get(&uid)?;
        (p < self.sent.load(Ordering::Relaxed)).then_some(p)
    }

    /// The message the reader is at (the start, until it reaches the plan).
    fn reader_at(&self) -> Uid {
        match self.reader.load(Ordering::Relaxed) {
            usize::MAX => self.start,
            r => self.plan[r],
        }
    }

    /// The first plan position not to fetch.
    fn stop(&self) -> usize {
        self.end.load(Ordering::Relaxed).min(self.plan.len())
    }

    /// Whether the reader has started the last message the stream asks for.
    fn reader_done(&self) -> bool {
        let stop = self.stop();
        match self.reader.load(Ordering::Relaxed) {
            usize::MAX => stop == 0,
            r => r + 1 >= stop,
        }
    }

    /// The thread has asked for all of the plan and is leaving: if the reader is still on its
    /// way through it, the stream drains (see [`Stream::draining`]); otherwise it ends.
    fn plan_asked(&self) {
        match self.reader_done() {
            true => self.alive.store(false, Ordering::Relaxed),
            false => self.draining.store(true, Ordering::Relaxed),
        }
    }
}

impl Streams {
    /// [`Account::note_message_start`] without the account: what it needs of the folder
    /// comes from `walked`.
    fn note_start(&self, start: Start, walked: &impl Walked) -> bool {
        let Start {
            msg,
            missing,
            slots,
        } = start;
        let streams = self;
        let folder = streams.active.lock().get(&msg.mailbox).cloned();
        // The walker's stream follows it.
        let steered = folder.iter().flatten().any(|s| s.follows(msg));
        // The reader walks in one order or the other: its next message is the next one
        // after `msg` by UID or by name, and both must have been asked for.
        let streamed = || {
            walked
                .nexts()
                .into_iter()
                .flatten()
                .all(|u| asked_by(folder.iter().flatten(), u))
        };
        // What was started lately, newest first: the messages a next start may follow.
        let (again, recent) = {
            let mut walks = streams.walks.lock();
            let w = walks.entry(msg.mailbox).or_default();
            w.retain(|(_, at)| at.elapsed() <= WALK_GAP);
            let again = w.iter().any(|(u, _)| *u == msg.uid);
            let recent: Vec<Uid> = w.iter().rev().map(|(u, _)| *u).collect();
            w.retain(|(u, _)| *u != msg.uid);
            w.push((msg.uid, Instant::now()));
            if w.len() > WALKERS {
                w.remove(0);
            }
            (again, recent)
        };
        // A walk that has a stream goes on; the same message again is no step. The reader
        // leaves its walk ahead to the streams only once one has asked for its next message:
        // not while its stream is still connecting, nor after it failed or fell behind.
        if steered {
            return streamed();
        }
        // Another reader is here, ahead of a stream's own: that stream leaves the rest to it.
        for s in folder.iter().flatten() {
            if let Some(&q) = s.pos_of.get(&msg.uid) {
                let r = s.reader.load(Ordering::Relaxed);
                if (r == usize::MAX && q >= STEP) || (r != usize::MAX && q > r + STEP) {
                    s.end.fetch_min(q, Ordering::Relaxed);
                }
            }
        }
        if again {
            return false;
        }
        if !missing || recent.is_empty() {
            return false;
        }
        // No plan is made for a stream that could not start anyway.
        if running(&mut streams.active.lock()) >= slots {
            return false;
        }
        let Some((order, prev, plan)) = walked.plan(&recent) else {
            return false;
        };
        if plan.is_empty() {
            return false;
        }
        // Another stream ran ahead into this walker's stretch: it brings the next messages
        // (the walker waits for them), and this walker's stream starts where it stops.
        if asked_by(folder.iter().flatten(), plan[0]) {
            return streamed();
        }
        // Built before the lock is taken: it reads the index.
        let stream = Arc::new(walked.build(plan));
        let mut active = streams.active.lock();
        // This walker's stream, which it left (for another order): of no use now.
        for other in active.get(&msg.mailbox).into_iter().flatten() {
            if other.reader_at() == prev {
                other.alive.store(false, Ordering::Relaxed);
            }
        }
        let now = running(&mut active);
        if now >= slots {
            return false;
        }
        let list = active.entry(msg.mailbox).or_default();
        for other in list.iter() {
            // This walker starts ahead of the other's reader, in its plan: the other stream
            // stops here, and this one where the other's reader is, if that is ahead of it:
            // no message is fetched by two streams.
            if let Some(&q) = other.pos_of.get(&msg.uid) {
                let r = other.reader.load(Ordering::Relaxed);
                if r == usize::MAX || q > r {
                    other.end.fetch_min(q, Ordering::Relaxed);
                }
            }
            if let Some(&q) = stream.pos_of.get(&other.reader_at()) {
                stream.end.fetch_min(q, Ordering::Relaxed);
            }
        }
        list.push(stream.clone());
        drop(active);
        streams.started.fetch_add(1, Ordering::Relaxed);
        streams.most.fetch_max(now + 1, Ordering::Relaxed);
        log::debug!(
            "{}: reader walks in {order:?} order from UID {}; streaming {} messages ({} streams)",
            msg.mailbox,
            msg.uid,
            stream.stop(),
            now + 1
        );
        if !walked.spawn(stream.clone()) {
            stream.alive.store(false, Ordering::Relaxed);
        }
        // The stream has asked for nothing yet: the reader's own walk prefetch brings its
        // next messages meanwhile (the stream skips what is cached by then).
        false
    }
}

impl Account {
    /// A reader starts reading `msg` (opens it, or reads at offset 0): follow its walk, steer
    /// its stream, and start one if the reader needs the server (`missing`: the message is
    /// not at hand). Several readers may walk one folder, each at its own place (`ls | xargs
    /// -P4 cat`): each walker gets a stream of its own while there are connections for it.
    /// Returns whether a stream has asked for this walker's next message (the caller then
    /// does no walk prefetch of its own; until then, and if the stream fails or falls
    /// behind, the reader walks ahead by itself as a lone reader does).
    pub(crate) fn note_message_start(&self, msg: MessageRef, missing: bool) -> bool {
        let slots = self.pool.capacity().saturating_sub(1);
        let start = Start {
            msg,
            missing,
            slots,
        };
        (self.reading.streams).note_start(start, &AccountFolder { a: self, msg })
    }

    /// The first block of `msg` is missing from the cache: if a stream has asked for it,
    /// wait (at most [`READER_WAIT`]) until it lands or the stream gives up on it. Returns
    /// whether it waited at all. A message no stream has asked for yet is not waited for:
    /// its stream may be held back by its own reader, elsewhere in the folder.
    pub(crate) fn wait_for_stream(&self, msg: MessageRef) -> bool {
        let streams = &self.reading.streams;
        let folder = streams.active.lock().get(&msg.mailbox).cloned();
        let Some((stream, p)) = folder.into_iter().flatten().find_map(|s| {
            let p = s.asked(msg.uid)?;
            (s.validity == msg.validity && s.alive.load(Ordering::Relaxed)).then_some((s, p))
        }) else {
            return false;
        };
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

    /// What the streams of `mailbox` have asked for now (the reader's walk prefetch leaves
    /// those messages to them).
    pub(crate) fn streams_asked(&self, mailbox: MailboxId) -> Asked {
        Asked(self.reading.streams.active.lock().get(&mailbox).cloned())
    }

    /// Streams started so far.
    pub fn streams_started(&self) -> u64 {
        self.reading.streams.started.load(Ordering::Relaxed)
    }

    /// Streams running now (a stream's bytes join `bytes_read` when it ends).
    pub fn streams_running(&self) -> usize {
        running(&mut self.reading.streams.active.lock())
    }

    /// Most streams that ran at once so far.
    pub fn streams_at_once(&self) -> usize {
        self.reading.streams.most.load(Ordering::Relaxed)
    }
}

/// A start of a message ([`Streams::note_start`]): `missing` whether the reader needs the
/// server for it, `slots` how many streams may run at once.
struct Start {
    msg: MessageRef,
    missing: bool,
    slots: usize,
}

/// What a start asks of the folder it is in ([`Streams::note_start`]): the account's index
/// and threads, or a model in the tests.
trait Walked {
    /// The walk's order, the message it continues and its plan, if the started message
    /// continues one of `recent` (started lately, newest first).
    fn plan(&self, recent: &[Uid]) -> Option<(Order, Uid, Vec<Uid>)>;
    /// The messages after the started one, by UID and by file name.
    fn nexts(&self) -> [Option<Uid>; 2];
    /// The stream of `plan`.
    fn build(&self, plan: Vec<Uid>) -> Stream;
    /// Start `stream`'s thread (false: it could not).
    fn spawn(&self, stream: Arc<Stream>) -> bool;
}

/// The folder of a start of `msg` on the account.
struct AccountFolder<'a> {
    a: &'a Account,
    msg: MessageRef,
}

impl Walked for AccountFolder<'_> {
    fn plan(&self, recent: &[Uid]) -> Option<(Order, Uid, Vec<Uid>)> {
        let ix = self.a.indexes.get(self.msg.mailbox)?;
        let ix = ix.read();
        if ix.validity() != self.msg.validity || self.a.me.upgrade().is_none() {
            return None;
        }
        walk_plan(ix.messages(), self.msg.uid, recent)
    }

    fn nexts(&self) -> [Option<Uid>; 2] {
        let Some(ix) = self.a.indexes.get(self.msg.mailbox) else {
            return [None, None];
        };
        let ix = ix.read();
        next_messages(ix.messages(), self.msg.uid)
    }

    fn build(&self, plan: Vec<Uid>) -> Stream {
        let sizes: Vec<u64> = match self.a.indexes.get(self.msg.mailbox) {
            Some(ix) => {
                let ix = ix.read();
                let size = |u| ix.messages().get(u).map_or(0, |m| m.size());
                plan.iter().map(size).collect()
            }
            None => vec![0; plan.len()],
        };
        Stream::new(self.msg, plan, &sizes, self.a.opts.block_size)
    }

    fn spawn(&self, stream: Arc<Stream>) -> bool {
        let (weak, mailbox) = (self.a.me.clone(), self.msg.mailbox);
        let started = std::thread::Builder::new()
            .name("stream".into())
            .spawn(move || run(weak, mailbox, stream));
        if let Err(e) = &started {
            log::warn!("cannot start a stream thread: {e}");
        }
        started.is_ok()
    }
}

/// The streams of one folder at one moment ([`Account::streams_asked`]).
pub(crate) struct Asked(Option<Vec<Arc<Stream>>>);

impl Asked {
    /// Whether one of them has asked for `msg`.
    pub(crate) fn contains(&self, msg: MessageRef) -> bool {
        self.0.iter().flatten().any(|s| {
            s.validity == msg.validity
                && s.alive.load(Ordering::Relaxed)
                && s.asked(msg.uid).is_some()
        })
    }
}

/// Whether one of `streams`, running, has asked for `uid`.
fn asked_by<'a>(mut streams: impl Iterator<Item = &'a Arc<Stream>>, uid: Uid) -> bool {
    streams.any(|s| s.alive.load(Ordering::Relaxed) && s.asked(uid).is_some())
}

/// Streams running now, in all folders: each holds a connection (a slot). Ended ones are
/// forgotten on the way, and a draining stream ends once its reader is at its end or has
/// stopped for [`STALL`].
fn running(active: &mut HashMap<MailboxId, Vec<Arc<Stream>>>) -> usize {
    active.retain(|_, list| {
        list.retain(|s| {
            if s.draining.load(Ordering::Relaxed)
                && (s.reader_done() || s.reader_moved.lock().elapsed() > STALL)
            {
                s.alive.store(false, Ordering::Relaxed);
            }
            s.alive.load(Ordering::Relaxed)
        });
        !list.is_empty()
    });
    (active.values().flatten())
        .filter(|s| !s.draining.load(Ordering::Relaxed))
        .count()
}

/// Streams whose fetched-ahead bytes wait for their readers: the running ones and the
/// draining ones. What one stream may fetch ahead is its share of half the cache among
/// these ([`fetch::stream_budget`]), so that what a stream that gave its slot to another
/// folder left behind still counts: ending at the plan's end used to hand the slot on
/// while up to a budget of this folder waited unread, and three such leftovers, three new
/// streams and five walk prefetches overran the cache (issue 17, 8 readers over 8 folders).
fn sharing(active: &mut HashMap<MailboxId, Vec<Arc<Stream>>>) -> usize {
    running(active);
    active.values().map(Vec::len).sum()
}

#[cfg(test)]
mod tests;
