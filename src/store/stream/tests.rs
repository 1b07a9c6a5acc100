//! The walkers' bookkeeping ([`Streams::note_start`]) against a model of what each walker
//! must find fetched ahead: a start is told "a stream brings your next message" (no walk
//! prefetch of its own) only when a running stream has asked for that very message.

use crate::store::index::UidMap;
use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::plan::{next_messages, walk_plan};
use super::{asked_by, Order, Start, Stream, Streams, Walked};
use crate::imap::types::{Uid, UidValidity};
use crate::store::ids::{MailboxId, MessageRef};

const BLOCK: u64 = 1 << 20;

struct Folder {
    streams: Streams,
    messages: UidMap<()>,
    /// Every stream started, in order.
    started: Vec<Arc<Stream>>,
    slots: usize,
}

impl Folder {
    fn new(uids: impl IntoIterator<Item = u32>, slots: usize) -> Folder {
        Folder {
            streams: Streams::default(),
            messages: uids.into_iter().map(|u| (uid(u), ())).collect(),
            started: Vec::new(),
            slots,
        }
    }

    /// A reader starts `u` (its first block not at hand): whether it is told a stream has
    /// asked for its next message.
    fn start(&mut self, u: u32) -> bool {
        let model = Model {
            messages: &self.messages,
            msg: msg(u),
            spawned: RefCell::new(None),
        };
        let start = Start {
            msg: msg(u),
            missing: true,
            slots: self.slots,
        };
        let covered = self.streams.note_start(start, &model);
        self.started.extend(model.spawned.into_inner());
        covered
    }

    /// One batch of `n` messages out on a running stream (what `stream_on` asks for next:
    /// from past its reader, up to where it stops; there it ends, or drains while its
    /// reader is still on its way).
    fn step(&self, i: usize, n: usize) {
        let s = &self.started[i];
        if !s.alive.load(Ordering::Relaxed) {
            return;
        }
        let r = s.reader.load(Ordering::Relaxed);
        let base = if r == usize::MAX { 0 } else { r + 1 };
        let from = s.sent.load(Ordering::Relaxed).max(base);
        let to = (from + n).min(s.stop());
        s.sent.store(to.max(from), Ordering::Relaxed);
        if to >= s.stop() {
            s.plan_asked();
        }
    }

    fn asked(&self, u: u32) -> bool {
        asked_by(self.started.iter(), uid(u))
    }

    /// Streams holding a slot (draining ones hold none).
    fn running(&self) -> usize {
        super::running(&mut self.streams.active.lock())
    }

    /// Streams sharing the budget: running or draining.
    fn sharing(&self) -> usize {
        super::sharing(&mut self.streams.active.lock())
    }
}

/// The folder of one start in the model: plans from the map of messages, streams of small
/// messages, threads not started (the test moves the streams itself).
struct Model<'a> {
    messages: &'a UidMap<()>,
    msg: MessageRef,
    spawned: RefCell<Option<Arc<Stream>>>,
}

impl Walked for Model<'_> {
    fn plan(&self, recent: &[Uid]) -> Option<(Order, Uid, Vec<Uid>)> {
        walk_plan(self.messages, self.msg.uid, recent)
    }

    fn nexts(&self) -> [Option<Uid>; 2] {
        next_messages(self.messages, self.msg.uid)
    }

    fn build(&self, plan: Vec<Uid>) -> Stream {
        let sizes = vec![5_000; plan.len()];
        Stream::new(self.msg, plan, &sizes, BLOCK)
    }

    fn spawn(&self, stream: Arc<Stream>) -> bool {
        *self.spawned.borrow_mut() = Some(stream);
        true
    }
}

fn uid(u: u32) -> Uid {
    Uid::new(u).unwrap()
}

fn msg(u: u32) -> MessageRef {
    MessageRef {
        mailbox: MailboxId::new(1).unwrap(),
        validity: UidValidity::new(7).unwrap(),
        uid: uid(u),
    }
}

#[test]
fn issue_17_a_lone_walker_walks_ahead_by_itself_until_its_stream_has_asked() {
    // tests/hostile.rs defect_4: after reads of 1 and 5, a reader reads 2 then 3. The start
    // of 2 continues the walk from 1 and starts a stream; until that stream has asked for the
    // reader's next message (it is still connecting) the reader must fetch ahead itself.
    let mut f = Folder::new(1..=20, 3);
    assert!(!f.start(1));
    assert!(!f.start(5));
    assert!(
        !f.start(2),
        "told 3 is on its way before any stream asked for it"
    );
    assert_eq!(f.started.len(), 1, "the start of 2 after 1 is a walk");
    assert!(
        !f.start(3),
        "told 4 is on its way before any stream asked for it"
    );
    // The stream asks for 4 and 5: now the reader leaves its walk ahead to it.
    f.step(0, 2);
    assert!(f.asked(5));
    assert!(f.start(4));
    assert!(
        !f.start(5),
        "told 6 is on its way before the stream asked for it"
    );
    // A stream that failed brings nothing: the reader walks ahead by itself again.
    f.step(0, 3);
    assert!(f.start(6));
    f.started[0].alive.store(false, Ordering::Relaxed);
    assert!(!f.start(7), "told 8 is on its way by a stream that failed");
}

#[test]
fn issue_17_a_walker_is_told_its_next_message_is_asked_for_only_when_it_is() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let (mut told, mut claims) = (0, 0);
    for round in 0..400 {
        let n = 20 + rand(300);
        // Dense UIDs, or with gaps (messages gone), of up to 4 digits (name and UID order
        // disagree past 9, 99, 999).
        let uids: Vec<u32> = match round % 2 {
            0 => (1..=n as u32).collect(),
            _ => (1..=n as u32 * 3).filter(|_| rand(3) == 0).collect(),
        };
        if uids.len() < 4 {
            continue;
        }
        let mut f = Folder::new(uids.iter().copied(), 1 + rand(3));
        // Each walker reads its own stretch of one order, as `xargs -n` hands out names, or
        // the whole folder; a few stray starts come between (another reader's odd file).
        let by_name = rand(2) == 0;
        let mut order = uids.clone();
        if by_name {
            order.sort_by_key(|u| u.to_string());
        }
        let walkers = 1 + rand(5);
        let per = order.len().div_ceil(walkers);
        let mut walks: Vec<(Vec<u32>, usize)> =
            order.chunks(per).map(|c| (c.to_vec(), 0)).collect();
        for _ in 0..(order.len() * 3) {
            match rand(10) {
                0..=5 => {
                    let w = rand(walks.len());
                    let (seq, at) = &mut walks[w];
                    let Some(&u) = seq.get(*at) else {
                        continue;
                    };
                    *at += 1;
                    let next = seq.get(*at).copied();
                    if f.start(u) {
                        claims += 1;
                        // The model: the walker's own next message, in its own order.
                        if let Some(next) = next {
                            if !f.asked(next) {
                                for s in &f.started {
                                    eprintln!(
                                        "start {} plan {:?} reader {} sent {} end {} alive {}",
                                        s.start,
                                        &s.plan[..s.plan.len().min(12)],
                                        s.reader.load(Ordering::Relaxed) as isize,
                                        s.sent.load(Ordering::Relaxed),
                                        s.end.load(Ordering::Relaxed),
                                        s.alive.load(Ordering::Relaxed)
                                    );
                                }
                            }
                            assert!(
                                f.asked(next),
                                "round {round}: walker {w} at {u} told {next} is on its way; \
                                 no stream asked for it"
                            );
                            told += 1;
                        }
                    }
                }
                6..=8 if !f.started.is_empty() => {
                    let i = rand(f.started.len());
                    f.step(i, 1 + rand(6));
                }
                _ => {
                    f.start(uids[rand(uids.len())]);
                }
            }
            assert!(
                f.running() <= f.slots,
                "round {round}: more streams than slots"
            );
        }
    }
    // The streams do serve walkers (not only the walk prefetch).
    assert!(
        told > 1000,
        "only {told} of {claims} starts found their next message asked"
    );
}

/// Streams share half the cache ahead of their readers, a quarter at most each and at least
/// one whole message, so that three streams and the walking readers beside them stay within
/// the cache (issue 17: eight readers over eight folders had streamed blocks evicted unread).
#[test]
fn issue_17_streams_share_half_the_cache_ahead() {
    use super::fetch::stream_budget;
    use super::WHOLE_MAX;
    let cache = 256 << 20;
    assert_eq!(stream_budget(cache, 0), cache / 4);
    assert_eq!(stream_budget(cache, 1), cache / 4);
    assert_eq!(stream_budget(cache, 2), cache / 4);
    assert_eq!(stream_budget(cache, 3), cache / 6);
    assert!(
        (1..=64).all(|n| stream_budget(cache, n) * n as u64 <= cache / 2 + WHOLE_MAX * n as u64)
    );
    assert_eq!(stream_budget(1 << 20, 3), WHOLE_MAX);
}

#[test]
fn issue_17_a_stream_that_asked_for_its_plan_drains_until_its_reader_has_read_it() {
    // Eight readers over eight folders: a stream that had asked for all of its plan ended
    // and handed its slot to another folder while its reader was halfway through what it
    // brought; three such leftovers, three new streams and five walks overran the cache.
    // Now it gives its slot back but still shares the budget until its reader is through.
    let mut f = Folder::new(1..=20, 1);
    assert!(!f.start(1));
    assert!(!f.start(2));
    assert_eq!(f.started.len(), 1, "the start of 2 after 1 is a walk");
    f.step(0, 100);
    assert!(f.asked(20), "the whole plan is asked for");
    assert_eq!(
        (f.running(), f.sharing()),
        (0, 1),
        "drains, its reader at 2 of 20"
    );
    for u in 3..=19 {
        f.start(u);
        assert_eq!(
            (f.running(), f.sharing()),
            (0, 1),
            "drains, its reader at {u}"
        );
        assert!(
            f.asked(20),
            "what it asked for stays asked for while it drains"
        );
    }
    f.start(20);
    assert_eq!(
        (f.running(), f.sharing()),
        (0, 0),
        "its reader is at the end"
    );
    assert!(!f.asked(20));
}
