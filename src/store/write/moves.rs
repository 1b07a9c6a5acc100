//! Moving messages between folders, in batches: UID MOVE, or UID COPY then the removal of
//! the sources; after a broken connection, what the server did is found out first.
//!
//! Each queued move's `done` hears the outcome (where the message is now) after the server
//! answered and before the index shows the message in its target, so the filesystem can name
//! it first (`fs/aliases.rs`); a new message's MODSEQ in the target is unknown until asked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::Retry;
use crate::imap::session::{Access, Completed};
use crate::imap::types::{
    fetch_uid, Code, FetchItem, SequenceSet, Status, Uid, UidValidity, Untagged,
};
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::index::{IndexChange, MessageMeta};
use crate::store::write::message_id;
use crate::store::write::proof::{Proof, Wanted};
use crate::store::Account;

/// A move waiting in the batch.
pub struct QueuedMove {
    pub msg: MessageRef,
    pub target: MailboxId,
    /// Told the outcome once the server answered, before the index shows the message in
    /// the target (so a caller can name it first): where the message is now, when the server
    /// said (COPYUID); `Ok(None)`: moved, new UID unknown.
    pub done: Box<dyn FnOnce(Result<Option<MessageRef>>) + Send>,
}

/// Moves queued for the next batch, and whether a thread is sending one.
#[derive(Default)]
pub struct MoveQueue {
    state: Mutex<MoveState>,
    changed: Condvar,
}

#[derive(Default)]
struct MoveState {
    queued: Vec<QueuedMove>,
    /// Mailboxes touched by the batch being sent.
    in_flight: Vec<MailboxId>,
    /// The messages of the batch being sent.
    moving: Vec<MessageRef>,
    flushing: bool,
    last_queued: Option<Instant>,
}

/// A burst of moves ends when none arrives for this long.
const MOVE_QUIET: Duration = Duration::from_millis(5);

/// ... or when the first queued move has waited this long.
const MOVE_MAX_WAIT: Duration = Duration::from_millis(200);

/// ... or at this many.
const MOVE_MAX_BATCH: usize = 2000;

impl Account {
    /// Queue a move of a message to another mailbox; sent with the rest of its burst. The
    /// caller may flush right after with [`Account::flush_moves`].
    pub fn queue_move(&self, mv: QueuedMove) -> Result<()> {
        if mv.msg.mailbox == mv.target {
            return Err(Error::NotPermitted(
                "a message cannot move within its folder".into(),
            ));
        }
        let caps = self.capabilities()?;
        if !caps.moves && !caps.uidplus {
            log::warn!(
                "not moving: the server has neither MOVE nor UIDPLUS, so the source could \
                 only be removed by a plain EXPUNGE"
            );
            return Err(Error::NotPermitted(
                "the server can neither MOVE nor expunge a single message".into(),
            ));
        }
        let mut st = self.moves.state.lock();
        st.queued.push(mv);
        st.last_queued = Some(Instant::now());
        drop(st);
        self.moves.changed.notify_all();
        Ok(())
    }

    /// Send queued moves unless another thread already does. Returns when the queue is
    /// empty or another thread has taken over.
    pub fn flush_moves(&self) {
        let mut st = self.moves.state.lock();
        if st.flushing {
            return;
        }
        st.flushing = true;
        while !st.queued.is_empty() {
            // Wait for the burst to end.
            let first = Instant::now();
            loop {
                let quiet_since = st.last_queued.unwrap_or(first);
                let now = Instant::now();
                if st.queued.len() >= MOVE_MAX_BATCH
                    || now >= first + MOVE_MAX_WAIT
                    || now >= quiet_since + MOVE_QUIET
                {
                    break;
                }
                let until = (quiet_since + MOVE_QUIET).min(first + MOVE_MAX_WAIT);
                self.moves.changed.wait_until(&mut st, until);
            }
            let batch = std::mem::take(&mut st.queued);
            st.in_flight = batch
                .iter()
                .flat_map(|m| [m.msg.mailbox, m.target])
                .collect();
            st.moving = batch.iter().map(|m| m.msg).collect();
            drop(st);
            self.send_moves(batch);
            st = self.moves.state.lock();
            st.in_flight.clear();
            st.moving.clear();
            self.moves.changed.notify_all();
        }
        st.flushing = false;
        drop(st);
        self.moves.changed.notify_all();
    }

    /// Whether a message is queued to move away (or moving now): it is no longer in its
    /// folder as far as names go.
    pub fn is_moving(&self, msg: MessageRef) -> bool {
        let st = self.moves.state.lock();
        st.queued.iter().any(|m| m.msg == msg) || st.moving.contains(&msg)
    }

    /// Wait until no queued or running move touches `mailbox`.
    pub fn settle(&self, mailbox: MailboxId) {
        self.wait_for_moves(|st| {
            st.in_flight.contains(&mailbox)
                || st
                    .queued
                    .iter()
                    .any(|m| m.msg.mailbox == mailbox || m.target == mailbox)
        });
    }

    /// Wait until every queued move is sent (unmount).
    pub fn settle_all(&self) {
        self.wait_for_moves(|st| !st.queued.is_empty() || st.flushing);
    }

    /// Wait while `busy` says so, flushing the queue when no other thread does.
    fn wait_for_moves(&self, busy: impl Fn(&MoveState) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut st = self.moves.state.lock();
        while busy(&st) {
            if !st.flushing {
                drop(st);
                self.flush_moves();
                st = self.moves.state.lock();
                continue;
            }
            if self.moves.changed.wait_until(&mut st, deadline).timed_out() {
                log::warn!("gave up waiting for {} queued moves", st.queued.len());
                return;
            }
        }
    }

    /// Send one batch: one move per (source, generation, target).
    fn send_moves(&self, batch: Vec<QueuedMove>) {
        let mut groups: BTreeMap<(MailboxId, UidValidity, MailboxId), Vec<QueuedMove>> =
            BTreeMap::new();
        for m in batch {
            groups
                .entry((m.msg.mailbox, m.msg.validity, m.target))
                .or_default()
                .push(m);
        }
        for ((src, validity, target), moves) in groups {
            let uids: Vec<Uid> = moves.iter().map(|m| m.msg.uid).collect();
            let metas = self.source_metas(src, validity, &uids);
            match self.move_on_server(src, validity, &uids, target, &metas) {
                Ok(map) => {
                    // Callers hear first, the index second: a name for the new UID never
                    // exists before the caller knows the message arrived there.
                    let tv = self.indexes.get(target).map(|ix| ix.read().validity());
                    for m in moves {
                        let new = map
                            .get(&m.msg.uid)
                            .zip(tv)
                            .map(|(&uid, validity)| MessageRef {
                                mailbox: target,
                                validity,
                                uid,
                            });
                        (m.done)(Ok(new));
                    }
                    self.moved(src, validity, metas, target, &map);
                }
                Err(e) => {
                    log::warn!("moving {} message(s): {e}", uids.len());
                    let e = Arc::new(e);
                    for m in moves {
                        (m.done)(Err(Error::Shared(e.clone())));
                    }
                }
            }
        }
    }

    /// Move `uids` from `src` (at `validity`) to `target` now. Returns the new UIDs the
    /// server reported (COPYUID).
    pub fn move_now(
        &self,
        src: MailboxId,
        validity: UidValidity,
        uids: &[Uid],
        target: MailboxId,
    ) -> Result<BTreeMap<Uid, Uid>> {
        let metas = self.source_metas(src, validity, uids);
        let map = self.move_on_server(src, validity, uids, target, &metas)?;
        self.moved(src, validity, metas, target, &map);
        Ok(map)
    }

    /// The server's half of [`Account::move_now`]: the index is not told. `metas` (the
    /// sources' metadata from before) name the messages a cut command moved (see
    /// [`Account::identify_cut_moves`]).
    fn move_on_server(
        &self,
        src: MailboxId,
        validity: UidValidity,
        uids: &[Uid],
        target: MailboxId,
        metas: &[(Uid, Option<MessageMeta>)],
    ) -> Result<BTreeMap<Uid, Uid>> {
        let name = self.require_name(src)?;
        let to = self.require_name(target)?;
        let caps = self.capabilities()?;
        let mut remaining: Vec<Uid> = uids.to_vec();
        let mut map = BTreeMap::new();
        let mut tries = 0;
        // The target's UIDNEXT before the first attempt: what a cut command moved lies above.
        let floor = self.index_floor(target);
        let mut cut = false;
        while !remaining.is_empty() {
            tries += 1;
            let set = SequenceSet::from_numbers(remaining.iter().map(|u| u.get()));
            let r = self.pool.with_session(Some(&name), Retry::Never, |s| {
                s.select_at(&name, validity, Access::Write)?;
                let cmd = if caps.moves {
                    Command::Move {
                        uid: true,
                        set: set.clone(),
                        mailbox: to.clone(),
                    }
                } else {
                    Command::Copy {
                        uid: true,
                        set: set.clone(),
                        mailbox: to.clone(),
                    }
                };
                let done = s.run(cmd)?;
                Ok(copy_uids(&done))
            });
            match r {
                Ok(pairs) => {
                    map.extend(pairs);
                    if !caps.moves {
                        // The copy is safe in the target: now remove the sources.
                        self.expunge_uids(src, validity, &remaining)?;
                    }
                    remaining.clear();
                }
                Err(e) if e.is_fatal_to_connection() && tries < 3 => {
                    log::warn!("connection lost while moving from {name} to {to} ({e}): checking");
                    cut = true;
                    remaining = self.find_unmoved(src, validity, &remaining, target, caps.moves)?;
                }
                Err(e) => {
                    // The refusal may come with VANISHED/EXPUNGE of the source's messages
                    // (Dovecot's `NO [EXPUNGEISSUED]`): both folders are listed again before
                    // they are next shown.
                    self.touch(src);
                    self.touch(target);
                    let gone = matches!(
                        &e,
                        Error::No { text, .. } if text.code == Some(Code::ExpungeIssued)
                    );
                    if cut && caps.moves && gone {
                        // After a cut, the messages the re-sent MOVE no longer found may be
                        // the ones the cut command moved: a yes only if every one of them is
                        // found in the target.
                        self.identify_cut_moves(target, floor, metas, &mut map);
                        if uids.iter().all(|u| map.contains_key(u)) {
                            log::info!("the cut move from {name} to {to} had moved them all");
                            return Ok(map);
                        }
                    }
                    return Err(e);
                }
            }
        }
        if cut && caps.moves && map.len() < uids.len() {
            self.identify_cut_moves(target, floor, metas, &mut map);
        }
        Ok(map)
    }

    /// After a cut `UID MOVE` that was sent again, the messages the cut command moved have
    /// new UIDs nobody told us (its COPYUID was lost). Each is looked for among the target's
    /// messages at or above `floor` (its UIDNEXT before the move) that no other message of
    /// ours took: a MOVE keeps RFC822.SIZE and INTERNALDATE, so a candidate with both equal to
    /// the source's, and the only one, is taken as its new UID, so that the name `mv` gave
    /// names it. Anything less than exactly one match in both directions stays unknown (the
    /// name is ENOENT until the folder is listed), never a guess. This only names a message
    /// the server already confirmed moved; nothing is sent on the strength of it.
    fn identify_cut_moves(
        &self,
        target: MailboxId,
        floor: Option<(UidValidity, Uid)>,
        metas: &[(Uid, Option<MessageMeta>)],
        map: &mut BTreeMap<Uid, Uid>,
    ) {
        let Some((tv, floor)) = floor else { return };
        let Ok(to) = self.require_name(target) else {
            return;
        };
        let missing: Vec<(Uid, &MessageMeta)> = metas
            .iter()
            .filter(|(u, _)| !map.contains_key(u))
            .filter_map(|(u, m)| Some((*u, m.as_ref()?)))
            .collect();
        if missing.is_empty() {
            return;
        }
        let listed = self.pool.with_session(Some(&to), Retry::Idempotent, |s| {
            s.select_at(&to, tv, Access::Read)?;
            let done = s.run(Command::Fetch {
                uid: true,
                set: SequenceSet::from(floor.get()),
                attrs: vec![
                    FetchAttr::Uid,
                    FetchAttr::Rfc822Size,
                    FetchAttr::InternalDate,
                    FetchAttr::Flags,
                ],
                changed_since: None,
            })?;
            Ok(crate::store::sync::parse_listing(done.untagged))
        });
        let listed = match listed {
            Ok(l) => l,
            Err(e) => {
                log::debug!("cannot look for the messages a cut move moved: {e}");
                return;
            }
        };
        let taken: Vec<Uid> = map.values().copied().collect();
        let free: Vec<(Uid, &MessageMeta)> = listed
            .iter()
            .filter(|(u, _)| **u >= floor && !taken.contains(u))
            .map(|(u, m)| (*u, m))
            .collect();
        let same = |a: &MessageMeta, b: &MessageMeta| {
            a.listed_size == b.listed_size && a.internal_date == b.internal_date
        };
        for (uid, meta) in &missing {
            let candidates: Vec<Uid> = free
                .iter()
                .filter(|(_, m)| same(m, meta))
                .map(|(u, _)| *u)
                .collect();
            let rivals = missing.iter().filter(|(_, m)| same(m, meta)).count();
            if let ([new], 1) = (candidates.as_slice(), rivals) {
                map.insert(*uid, *new);
            }
        }
        log::info!(
            "after a cut move, {} of {} moved message(s) named in the target",
            missing.iter().filter(|(u, _)| map.contains_key(u)).count(),
            missing.len()
        );
    }

    /// After a broken connection during a move: which of `uids` must still be sent. With
    /// MOVE, all of them: a `UID MOVE` of a UID no longer in the source does nothing, so it is
    /// safe to send again, and its OK is the server's own word that none of them is left in
    /// the source (the new UIDs of those the cut command moved stay unknown: the target is
    /// marked stale). Absence from a FETCH is not inferred from: a server may leave FETCH
    /// data out (the chaos server does), and a message read as moved would vanish from its
    /// folder's listing while the server still holds it there. With COPY, those in the source with no proven copy in
    /// the target (`proof`: UID floor, size, digest); proven ones get their source removed
    /// now, and where it cannot be told the move fails and the source stays.
    fn find_unmoved(
        &self,
        src: MailboxId,
        validity: UidValidity,
        uids: &[Uid],
        target: MailboxId,
        moves: bool,
    ) -> Result<Vec<Uid>> {
        if moves {
            return Ok(uids.to_vec());
        }
        let name = self.require_name(src)?;
        let to = self.require_name(target)?;
        let set = SequenceSet::from_numbers(uids.iter().map(|u| u.get()));
        let present: Vec<(Uid, Option<String>)> =
            self.pool
                .with_session(Some(&name), Retry::Idempotent, |s| {
                    s.select_at(&name, validity, Access::Write)?;
                    let done = s.run(Command::Fetch {
                        uid: true,
                        set: set.clone(),
                        attrs: vec![
                            FetchAttr::Uid,
                            FetchAttr::BodyPeek {
                                section: "HEADER.FIELDS (MESSAGE-ID)".into(),
                                partial: None,
                            },
                        ],
                        changed_since: None,
                    })?;
                    Ok(done
                        .untagged
                        .iter()
                        .filter_map(|u| match u {
                            Untagged::Fetch { items, .. } => {
                                let uid = fetch_uid(items)?;
                                let mid = items.iter().find_map(|i| match i {
                                    FetchItem::Body { data: Some(d), .. } => message_id(d),
                                    _ => None,
                                });
                                Some((uid, mid))
                            }
                            _ => None,
                        })
                        .collect())
                })?;
        let present: Vec<(Uid, Option<String>)> = present
            .into_iter()
            .filter(|(u, _)| uids.contains(u))
            .collect();
        // COPY: a source counts as copied only if the target holds a message with its exact
        // bytes above the target's UIDNEXT from before (see `proof`); a matching Message-ID
        // alone proves nothing. When that cannot be told, the source stays and the move fails.
        let floor = self.index_floor(target);
        let ids: Vec<Uid> = present.iter().map(|(u, _)| *u).collect();
        let prints = self
            .pool
            .with_session(Some(&name), Retry::Idempotent, |s| {
                s.select_at(&name, validity, Access::Write)?;
                Account::fingerprints(s, &ids)
            })?;
        let (mut copied, mut unsent, mut unsure) = (Vec::new(), Vec::new(), Vec::new());
        let mut claimed: Vec<Uid> = Vec::new();
        for (uid, mid) in present {
            let Some((_, size, digest)) = prints.iter().find(|(u, _, _)| *u == uid) else {
                unsure.push(uid);
                continue;
            };
            let wanted = Wanted {
                size: *size,
                digest: digest.clone(),
                message_id: mid,
            };
            match self.prove_stored(&to, &wanted, floor)? {
                // Two identical sources cannot both be proved by one copy.
                Proof::Stored(_, copy) if !claimed.contains(&copy) => {
                    claimed.push(copy);
                    copied.push(uid);
                }
                Proof::Absent => unsent.push(uid),
                Proof::Stored(..) | Proof::Unsure => unsure.push(uid),
            }
        }
        if !copied.is_empty() {
            self.expunge_uids(src, validity, &copied)?;
        }
        if !unsure.is_empty() {
            self.touch(target);
            log::warn!(
                "after a cut COPY from {name} to {to}: whether {} message(s) were copied \
                 cannot be told; they stay in {name}",
                unsure.len()
            );
            return Err(Error::io(
                "moving messages",
                std::io::Error::other("the connection broke and the copy could not be confirmed"),
            ));
        }
        Ok(unsent)
    }

    /// What the source's index says of messages about to move, taken before the server is
    /// asked: once it moved them, a refresh of the source (the watcher hears the expunge
    /// before our MOVE's reply) may drop them from the index before [`Account::moved`] runs.
    fn source_metas(
        &self,
        src: MailboxId,
        validity: UidValidity,
        uids: &[Uid],
    ) -> Vec<(Uid, Option<MessageMeta>)> {
        uids.iter()
            .map(|&uid| {
                let msg = MessageRef {
                    mailbox: src,
                    validity,
                    uid,
                };
                (uid, self.indexes.meta(msg))
            })
            .collect()
    }

    /// A move is done: the sources leave, the copies arrive under the UIDs the server gave
    /// them, with the metadata the source had before the move (`metas`); the target is
    /// listed again when the server gave no UIDs or a message's metadata is unknown.
    fn moved(
        &self,
        src: MailboxId,
        validity: UidValidity,
        metas: Vec<(Uid, Option<MessageMeta>)>,
        target: MailboxId,
        map: &BTreeMap<Uid, Uid>,
    ) {
        let uids: Vec<Uid> = metas.iter().map(|(u, _)| *u).collect();
        self.removed(src, validity, &uids);
        let target_validity = self.indexes.get(target).map(|ix| ix.read().validity());
        if map.len() == uids.len() {
            if let Some(tv) = target_validity {
                let mut complete = true;
                let added: Vec<IndexChange> = metas
                    .into_iter()
                    .filter_map(|(u, meta)| {
                        let Some((&new, mut meta)) = map.get(&u).zip(meta) else {
                            complete = false;
                            return None;
                        };
                        // The source's MODSEQ means nothing in the target: unknown until
                        // asked (a replacing flag change asks first, see `flags.rs`).
                        meta.modseq = None;
                        Some(IndexChange::Added(new, meta))
                    })
                    .collect();
                self.indexes.apply(target, tv, added);
                if complete {
                    return;
                }
            }
        }
        self.touch(target);
    }
}

/// The source -> target UID pairs of a COPYUID code, in the tagged reply or (MOVE, RFC 6851)
/// an untagged OK before it.
fn copy_uids(done: &Completed) -> Vec<(Uid, Uid)> {
    let untagged_codes = done.untagged.iter().filter_map(|u| match u {
        Untagged::Status {
            status: Status::Ok,
            text,
        } => text.code.as_ref(),
        _ => None,
    });
    let mut out = Vec::new();
    for code in done.text.code.iter().chain(untagged_codes) {
        if let Code::CopyUid { source, dest, .. } = code {
            let src: Vec<u32> = source.iter_capped(u32::MAX - 1, 1_000_000).collect();
            let dst: Vec<u32> = dest.iter_capped(u32::MAX - 1, 1_000_000).collect();
            if src.len() == dst.len() {
                out.extend(
                    src.into_iter()
                        .zip(dst)
                        .filter_map(|(a, b)| Some((Uid::new(a)?, Uid::new(b)?))),
                );
            }
        }
    }
    out
}
