//! Fetching a stream's plan on its own connection, and landing what comes back in the cache.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{running, Stream, BATCH_BYTES, BATCH_MESSAGES, STALL, WHOLE_MAX};
use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::Retry;
use crate::imap::session::{Access, Session};
use crate::imap::types::{
    message_bodies, MailboxName, SequenceSet, Tag, Uid, UidValidity, Untagged,
};
use crate::store::blocks::BlockKey;
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::refetch::Fetcher;
use crate::store::Account;

/// The stream thread: one pool session for the whole walk.
pub(super) fn run(account: Weak<Account>, mailbox: MailboxId, stream: Arc<Stream>) {
    let result = (|| -> Result<()> {
        let a = account.upgrade().ok_or(crate::Error::ReadOnly)?;
        let name = a.require_name(mailbox)?;
        let pool = &a.pool;
        pool.with_session(Some(&name), Retry::Idempotent, |s| {
            stream_on(&account, s, &name, mailbox, &stream)
        })
    })();
    match result {
        Err(e) => {
            log::debug!("{mailbox}: stream ended: {e}");
            stream.alive.store(false, Ordering::Relaxed);
        }
        // Drains while its reader reads what it brought (see `Stream::draining`).
        Ok(()) if stream.draining.load(Ordering::Relaxed) => {}
        Ok(()) => stream.alive.store(false, Ordering::Relaxed),
    }
    if let Some(a) = account.upgrade() {
        let streams = &a.reading.streams;
        running(&mut streams.active.lock());
        streams.landed.notify_all();
    }
}

/// How far ahead of its reader one stream may be, in bytes: a quarter of the cache, and no
/// more than its share of half the cache among the streams running now (all folders), so
/// that streams and the readers' walk prefetches together stay within the cache and what a
/// stream brings is read before it is evicted; at least one whole message.
pub(super) fn stream_budget(cache_size: u64, running: usize) -> u64 {
    let share = cache_size / 2 / running.max(1) as u64;
    share.min(cache_size / 4).max(WHOLE_MAX)
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
        let budget = stream_budget(
            a.opts.cache_size,
            super::sharing(&mut a.reading.streams.active.lock()),
        );
        let alive = stream.alive.load(Ordering::Relaxed);
        // Messages the reader already passed are not fetched any more.
        let reader = stream.reader.load(Ordering::Relaxed);
        let base = if reader == usize::MAX { 0 } else { reader + 1 };
        let from = stream.sent.load(Ordering::Relaxed).max(base);
        let (to, whole, first) = if alive && in_flight.len() < 4 {
            let others: Vec<Arc<Stream>> = (a.reading.streams.active.lock().get(&mailbox))
                .into_iter()
                .flatten()
                .filter(|o| !std::ptr::eq(&***o, stream))
                .cloned()
                .collect();
            // Decided and published under the walk prefetch's claims (see `walk_claims`).
            let claims = a.reading.walk_claims.lock();
            let batch = next_batch(
                &a,
                stream,
                Taken {
                    others: &others,
                    claimed: &claims,
                },
                mailbox,
                from,
                base,
                budget,
            );
            stream.sent.store(batch.0, Ordering::Relaxed);
            batch
        } else {
            stream.sent.store(from, Ordering::Relaxed);
            (from, Vec::new(), Vec::new())
        };
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
        if sent && in_flight.len() < 3 && to < stream.stop() {
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
                if let Err(e) = land(&a, mailbox, stream.validity, u, Fetcher::Stream) {
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
        if !alive {
            return Ok(());
        }
        if to >= stream.stop() {
            stream.plan_asked();
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
pub(in crate::store) fn land(
    a: &Account,
    mailbox: MailboxId,
    validity: UidValidity,
    u: Untagged,
    by: Fetcher,
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

/// What others are bringing already: the folder's other streams, and the messages readers'
/// walk prefetches claimed (`ReadState::walk_claims`).
struct Taken<'a> {
    others: &'a [Arc<Stream>],
    claimed: &'a std::collections::HashSet<MessageRef>,
}

/// The next messages to ask for from plan position `from`: those not cached, not asked for
/// by another stream of the folder and not claimed by a walk prefetch (`taken`), within the
/// budget ahead of the reader (whose next message is at `base`) and one batch's bounds.
/// Returns the position after the batch, the messages to fetch whole and those to fetch the
/// first block of.
fn next_batch(
    a: &Account,
    stream: &Stream,
    taken: Taken<'_>,
    mailbox: MailboxId,
    from: usize,
    base: usize,
    budget: u64,
) -> (usize, Vec<Uid>, Vec<Uid>) {
    let mut to = from;
    let (mut whole, mut first) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    while to < stream.stop() && whole.len() + first.len() < BATCH_MESSAGES {
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
        if !taken.others.iter().any(|o| o.asked(uid).is_some())
            && !taken.claimed.contains(&msg)
            && !a.reading.read_through.lock().contains(&msg)
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
