//! Changing mail: flags, removal, moves between folders, and new messages.
//!
//! Every change goes to a read-write SELECT of the mailbox after checking that its UIDVALIDITY
//! is the one the caller named, so a change can only ever touch the message the user named.
//! Rules that keep mail safe:
//!
//! - Removal is `UID STORE +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE` of that UID alone
//!   (UIDPLUS). Never a plain EXPUNGE, which would also remove messages another client marked
//!   `\Deleted`: without UIDPLUS a message is moved to the `\Trash` folder (MOVE), and where that
//!   is impossible the removal is refused (EPERM).
//! - A move is `UID MOVE`, or `UID COPY` then the removal above of the source only after the
//!   copy succeeded; without MOVE and UIDPLUS it is refused before anything is sent.
//! - Commands that are not idempotent (APPEND, COPY, MOVE, EXPUNGE) are never re-sent blindly
//!   ([`Retry::Never`]). After a broken connection the store finds out on a new connection
//!   what the server did (is the UID still there? is a message with this Message-ID in the
//!   target?) and only then completes or reports. The worst outcome is a duplicate, never a
//!   loss.
//! - Flags: `+FLAGS`/`-FLAGS` are deltas the server applies atomically, so they cannot undo
//!   another client's change; a replacing `FLAGS` goes with `UNCHANGEDSINCE` where the server
//!   has CONDSTORE, and losing that race is an error (EAGAIN), not a silent overwrite.
//!
//! Moves are batched: [`Account::queue_move`] returns at once and the caller's thread (or the
//! one already flushing) sends every queued move of a burst as one `UID MOVE` per (source,
//! target) pair; [`Account::settle`] waits until nothing queued touches a mailbox, so a
//! listing after `mv` is exact.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::imap::codec::{imap_date_time, Command, FetchAttr, SearchKey, StoreMode};
use crate::imap::pool::Retry;
use crate::imap::session::{Completed, Session};
use crate::imap::types::{
    Code, FetchItem, Flag, MailboxName, SequenceSet, Status, Uid, UidValidity, Untagged,
};
use crate::store::changes::Change;
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::index::{IndexChange, MessageMeta};
use crate::store::Account;

/// What `rm` of a message does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeleteMode {
    /// Expunge it (UIDPLUS), or move it to Trash where the server cannot expunge one UID.
    #[default]
    Expunge,
    /// Move it to the `\Trash` folder; in Trash itself, expunge.
    Trash,
}

/// A change to a message's flags, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagEdit {
    /// Exactly these flags (`\Seen \Flagged`; empty clears them).
    Replace(Vec<Flag>),
    /// Add some and remove others (`+\Flagged -\Seen`).
    Delta { add: Vec<Flag>, remove: Vec<Flag> },
}

impl FlagEdit {
    /// Parse an xattr value: words separated by white space. Without signs the words replace
    /// the flags; a `+` or `-` before a word adds or removes it, and holds for the words that
    /// follow until the next sign. Mixing both forms, `\Recent`, `\*` or a word that is no
    /// flag is invalid.
    pub fn parse(value: &str) -> Result<FlagEdit> {
        let mut replace = Vec::new();
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        let mut sign: Option<bool> = None;
        for word in value.split_whitespace() {
            let (s, w) = match word.as_bytes()[0] {
                b'+' => (Some(true), &word[1..]),
                b'-' => (Some(false), &word[1..]),
                _ => (None, word),
            };
            if s.is_some() {
                sign = s;
            }
            if w.is_empty() {
                continue;
            }
            let flag = Flag::parse(w)
                .filter(|f| !matches!(f, Flag::Recent | Flag::MayCreate))
                .ok_or_else(|| Error::InvalidInput(format!("`{w}` is not a flag one can set")))?;
            match sign {
                None => replace.push(flag),
                Some(true) => add.push(flag),
                Some(false) => remove.push(flag),
            }
        }
        match (replace.is_empty(), add.is_empty() && remove.is_empty()) {
            (false, false) => Err(Error::InvalidInput(
                "flags: either a list that replaces, or +/- changes, not both".into(),
            )),
            (true, false) => Ok(FlagEdit::Delta { add, remove }),
            _ => Ok(FlagEdit::Replace(replace)),
        }
    }

    fn flags_set(&self) -> impl Iterator<Item = &Flag> {
        let (a, b): (&[Flag], &[Flag]) = match self {
            FlagEdit::Replace(f) => (f, &[]),
            FlagEdit::Delta { add, .. } => (add, &[]),
        };
        a.iter().chain(b)
    }
}

/// A new message to add to a mailbox.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message (RFC 5322); bare LF line ends are sent as CRLF.
    pub bytes: Vec<u8>,
    pub flags: Vec<Flag>,
    /// INTERNALDATE, seconds since the epoch; the server's clock when `None`.
    pub date: Option<i64>,
}

/// A move waiting in the batch.
pub struct QueuedMove {
    pub msg: MessageRef,
    pub target: MailboxId,
    /// Told the outcome: the message's UID in the target, when the server said.
    pub done: Box<dyn FnOnce(Result<Option<Uid>>) + Send>,
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
    /// Change a message's flags. Returns the flags it has afterwards.
    pub fn set_flags(&self, msg: MessageRef, edit: &FlagEdit) -> Result<Vec<Flag>> {
        let name = self.require_name(msg.mailbox)?;
        let known = self.indexes.meta(msg);
        let set = SequenceSet::single(msg.uid.get());
        let flags = self.pool.with_session(Some(&name), Retry::Idempotent, |s| {
            let sel = select_rw(s, &name, msg.validity)?;
            check_permanent(sel.permanent_flags.as_deref(), edit)?;
            let condstore = sel.highest_modseq.is_some();
            let cmds: Vec<Command> = match edit {
                FlagEdit::Replace(flags) => vec![Command::Store {
                    uid: true,
                    set: set.clone(),
                    mode: StoreMode::Replace,
                    silent: false,
                    flags: flags.clone(),
                    unchanged_since: known.as_ref().and_then(|m| m.modseq).filter(|_| condstore),
                }],
                FlagEdit::Delta { add, remove } => {
                    [(StoreMode::Add, add), (StoreMode::Remove, remove)]
                        .into_iter()
                        .filter(|(_, f)| !f.is_empty())
                        .map(|(mode, flags)| Command::Store {
                            uid: true,
                            set: set.clone(),
                            mode,
                            silent: false,
                            flags: flags.clone(),
                            unchanged_since: None,
                        })
                        .collect()
                }
            };
            let mut modified = false;
            let mut latest = None;
            for r in s.pipeline(&cmds)? {
                let done = r?;
                modified |= matches!(done.text.code, Some(Code::Modified(_)));
                latest = flags_of(&done.untagged, msg.uid).or(latest);
            }
            if modified || latest.is_none() {
                // Lost a race, or the server sent no FETCH: ask what the flags are now.
                let mut attrs = vec![FetchAttr::Uid, FetchAttr::Flags];
                if condstore {
                    attrs.push(FetchAttr::ModSeq);
                }
                let now = s.run(Command::Fetch {
                    uid: true,
                    set: set.clone(),
                    attrs,
                    changed_since: None,
                })?;
                latest = flags_of(&now.untagged, msg.uid);
            }
            let Some((flags, modseq)) = latest else {
                return Err(Error::NoMessage(format!("UID {} in {name}", msg.uid)));
            };
            if modified {
                let wanted = match edit {
                    FlagEdit::Replace(f) => f,
                    FlagEdit::Delta { .. } => unreachable!("deltas carry no UNCHANGEDSINCE"),
                };
                if !same_flags(&flags, wanted) {
                    self.apply_flags(msg, flags, modseq);
                    return Err(Error::Conflict(format!(
                        "flags of UID {} changed meanwhile; read them and try again",
                        msg.uid
                    )));
                }
            }
            Ok((flags, modseq))
        });
        let (flags, modseq) = match flags {
            Err(Error::NoMessage(m)) => {
                self.forget_message(msg);
                return Err(Error::NoMessage(m));
            }
            other => other?,
        };
        self.apply_flags(msg, flags.clone(), modseq);
        Ok(flags)
    }

    fn apply_flags(
        &self,
        msg: MessageRef,
        flags: Vec<Flag>,
        modseq: Option<crate::imap::types::ModSeq>,
    ) {
        let change = IndexChange::Flags {
            uid: msg.uid,
            flags,
            modseq,
        };
        if self.indexes.apply(msg.mailbox, msg.validity, change) {
            self.changes.send([Change::Changed {
                mailbox: msg.mailbox,
                validity: msg.validity,
                uids: vec![msg.uid],
            }]);
        }
    }

    /// Remove a message, by the rules of [`DeleteMode`] and the server's capabilities.
    pub fn delete_message(&self, msg: MessageRef) -> Result<()> {
        let name = self.require_name(msg.mailbox)?;
        let trash = self.special_use_mailbox("\\Trash")?.filter(|t| *t != name);
        let caps = self.capabilities()?;
        let to_trash = match self.opts.delete {
            DeleteMode::Trash => trash.is_some(),
            DeleteMode::Expunge if caps.uidplus => false,
            DeleteMode::Expunge => {
                if trash.is_none() || !caps.moves {
                    log::warn!(
                        "not removing UID {} from {name}: the server has no UIDPLUS, so only a \
                         plain EXPUNGE could remove it, which would also remove every message \
                         another client marked \\Deleted; and there is no Trash folder to move \
                         it to",
                        msg.uid
                    );
                    return Err(Error::NotPermitted(
                        "the server cannot expunge a single message (no UIDPLUS)".into(),
                    ));
                }
                log::info!(
                    "server has no UIDPLUS: moving UID {} to Trash instead",
                    msg.uid
                );
                true
            }
        };
        if let Some(trash) = trash.filter(|_| to_trash) {
            let target = self.mailbox_id(&trash);
            return self
                .move_now(msg.mailbox, msg.validity, &[msg.uid], target)
                .map(drop);
        }
        if !caps.uidplus {
            return Err(Error::NotPermitted(
                "the server cannot expunge a single message (no UIDPLUS)".into(),
            ));
        }
        self.expunge_uids(msg.mailbox, msg.validity, &[msg.uid])
    }

    /// `UID STORE +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE` of exactly `uids`, in one round
    /// trip; after a broken connection, checked and finished on a new one.
    fn expunge_uids(&self, id: MailboxId, validity: UidValidity, uids: &[Uid]) -> Result<()> {
        let name = self.require_name(id)?;
        let set = SequenceSet::from_numbers(uids.iter().map(|u| u.get()));
        let cmds = [
            Command::Store {
                uid: true,
                set: set.clone(),
                mode: StoreMode::Add,
                silent: true,
                flags: vec![Flag::Deleted],
                unchanged_since: None,
            },
            Command::UidExpunge(set.clone()),
        ];
        let run = |s: &mut Session| -> Result<()> {
            select_rw(s, &name, validity)?;
            for r in s.pipeline(&cmds)? {
                r?;
            }
            Ok(())
        };
        let mut r = self.pool.with_session(Some(&name), Retry::Never, run);
        if let Err(e) = &r {
            if e.is_fatal_to_connection() {
                log::warn!("connection lost while expunging from {name} ({e}): checking");
                // Both commands name these UIDs only: running them again is safe once we
                // know the mailbox is still the same generation.
                r = self.pool.with_session(Some(&name), Retry::Never, run);
            }
        }
        r?;
        self.removed(id, validity, uids);
        Ok(())
    }

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
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut st = self.moves.state.lock();
        loop {
            let busy = st.in_flight.contains(&mailbox)
                || st
                    .queued
                    .iter()
                    .any(|m| m.msg.mailbox == mailbox || m.target == mailbox);
            if !busy {
                return;
            }
            if !st.flushing {
                drop(st);
                self.flush_moves();
                st = self.moves.state.lock();
                continue;
            }
            if self.moves.changed.wait_until(&mut st, deadline).timed_out() {
                return;
            }
        }
    }

    /// Send one batch: one move per (source, generation, target).
    fn send_moves(&self, batch: Vec<QueuedMove>) {
        let mut groups: BTreeMap<(MailboxId, u32, MailboxId), Vec<QueuedMove>> = BTreeMap::new();
        for m in batch {
            groups
                .entry((m.msg.mailbox, m.msg.validity.get(), m.target))
                .or_default()
                .push(m);
        }
        for ((src, _, target), moves) in groups {
            let validity = moves[0].msg.validity;
            let uids: Vec<Uid> = moves.iter().map(|m| m.msg.uid).collect();
            match self.move_now(src, validity, &uids, target) {
                Ok(map) => {
                    for m in moves {
                        let new = map.get(&m.msg.uid).copied();
                        (m.done)(Ok(new));
                    }
                }
                Err(e) => {
                    log::warn!("moving {} message(s): {e}", uids.len());
                    let text = e.to_string();
                    for m in moves {
                        (m.done)(Err(Error::Protocol(text.clone())));
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
        let name = self.require_name(src)?;
        let to = self.require_name(target)?;
        let caps = self.capabilities()?;
        let mut remaining: Vec<Uid> = uids.to_vec();
        let mut map = BTreeMap::new();
        let mut tries = 0;
        while !remaining.is_empty() {
            tries += 1;
            let set = SequenceSet::from_numbers(remaining.iter().map(|u| u.get()));
            let r = self.pool.with_session(Some(&name), Retry::Never, |s| {
                select_rw(s, &name, validity)?;
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
                    remaining = self.find_unmoved(src, validity, &remaining, target, caps.moves)?;
                }
                Err(e) => {
                    self.touch(target);
                    return Err(e);
                }
            }
        }
        self.moved(src, validity, uids, target, &map);
        Ok(map)
    }

    /// After a broken connection during a move: which of `uids` must still be sent. With
    /// MOVE, those still in the source. With COPY, those in the source whose Message-ID is
    /// not yet in the target (the ones that are get their source removed now).
    fn find_unmoved(
        &self,
        src: MailboxId,
        validity: UidValidity,
        uids: &[Uid],
        target: MailboxId,
        moves: bool,
    ) -> Result<Vec<Uid>> {
        let name = self.require_name(src)?;
        let to = self.require_name(target)?;
        let set = SequenceSet::from_numbers(uids.iter().map(|u| u.get()));
        let present: Vec<(Uid, Option<String>)> =
            self.pool
                .with_session(Some(&name), Retry::Idempotent, |s| {
                    select_rw(s, &name, validity)?;
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
                                let uid = items.iter().find_map(|i| match i {
                                    FetchItem::Uid(u) => Some(*u),
                                    _ => None,
                                })?;
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
        if moves {
            return Ok(present.into_iter().map(|(u, _)| u).collect());
        }
        let mut copied = Vec::new();
        let mut unsent = Vec::new();
        for (uid, mid) in present {
            let found = match &mid {
                Some(id) => !self.search_message_id(&to, id)?.is_empty(),
                None => false,
            };
            if found {
                copied.push(uid);
            } else {
                unsent.push(uid);
            }
        }
        if !copied.is_empty() {
            self.expunge_uids(src, validity, &copied)?;
        }
        Ok(unsent)
    }

    /// APPEND a new message to a mailbox. Returns its UID when the server says (APPENDUID) or
    /// it can be found by its Message-ID.
    pub fn append(&self, target: MailboxId, msg: NewMessage) -> Result<Option<Uid>> {
        let name = self.require_name(target)?;
        let bytes = normalize_line_ends(msg.bytes);
        check_message(&bytes)?;
        let mid = message_id(&bytes);
        let len = bytes.len() as u64;
        let date = msg.date;
        let cmd = Command::Append {
            mailbox: name.clone(),
            flags: msg.flags.clone(),
            date: date.map(imap_date_time),
            message: bytes,
        };
        let r = self.pool.with_session(None, Retry::Never, |s| {
            let done = s.run(cmd.clone())?;
            Ok(match done.text.code {
                Some(Code::AppendUid { validity, uids }) => uids
                    .0
                    .first()
                    .and_then(|&(a, _)| Uid::new(a))
                    .map(|u| (validity, u)),
                _ => None,
            })
        });
        let appended = match r {
            Ok(Some(v)) => Some(v),
            Ok(None) => self.find_appended(&name, mid.as_deref())?,
            Err(e) if e.is_fatal_to_connection() => {
                log::warn!("connection lost during APPEND to {name} ({e}): checking");
                match mid.as_deref() {
                    Some(id) => match self.find_appended(&name, Some(id))? {
                        Some(found) => Some(found),
                        None => {
                            log::info!("the message did not arrive: sending it again");
                            let Command::Append { message, .. } = cmd else {
                                unreachable!("cmd is an APPEND")
                            };
                            let again = NewMessage {
                                bytes: message,
                                flags: msg.flags,
                                date,
                            };
                            return self.append(target, again);
                        }
                    },
                    // Without a Message-ID it cannot be told apart: never send twice.
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let Some((validity, uid)) = appended else {
            self.touch(target);
            return Ok(None);
        };
        let meta = MessageMeta {
            listed_size: len,
            body_len: Some(len),
            internal_date: date.unwrap_or_else(now_secs),
            flags: msg.flags,
            modseq: None,
        };
        if self
            .indexes
            .apply(target, validity, IndexChange::Added(uid, meta))
        {
            self.changes.send([Change::Added {
                mailbox: target,
                validity,
                uids: vec![uid],
            }]);
        } else {
            self.touch(target);
        }
        Ok(Some(uid))
    }

    /// The newest message of `name` with this Message-ID, with the mailbox's UIDVALIDITY.
    fn find_appended(
        &self,
        name: &MailboxName,
        mid: Option<&str>,
    ) -> Result<Option<(UidValidity, Uid)>> {
        let Some(mid) = mid else { return Ok(None) };
        let found = self.search_message_id_validity(name, mid)?;
        Ok(found.and_then(|(v, uids)| uids.into_iter().max().map(|u| (v, u))))
    }

    fn search_message_id(&self, name: &MailboxName, mid: &str) -> Result<Vec<Uid>> {
        Ok(self
            .search_message_id_validity(name, mid)?
            .map(|(_, u)| u)
            .unwrap_or_default())
    }

    /// `UID SEARCH HEADER Message-ID <id>` in `name` (freshly examined).
    fn search_message_id_validity(
        &self,
        name: &MailboxName,
        mid: &str,
    ) -> Result<Option<(UidValidity, Vec<Uid>)>> {
        self.pool.with_session(Some(name), Retry::Idempotent, |s| {
            let validity = s.reselect(name, true)?.uidvalidity;
            let done = s.run(Command::Search {
                uid: true,
                criteria: vec![SearchKey::Header {
                    field: b"Message-ID".to_vec(),
                    value: mid.as_bytes().to_vec(),
                }],
                ret: Vec::new(),
                utf8: false,
            })?;
            let uids: Vec<Uid> = done
                .untagged
                .iter()
                .flat_map(|u| match u {
                    Untagged::Search { nums, .. } => nums.clone(),
                    _ => Vec::new(),
                })
                .filter_map(Uid::new)
                .collect();
            Ok(validity.map(|v| (v, uids)))
        })
    }

    /// Which write extensions the server has.
    fn capabilities(&self) -> Result<WriteCaps> {
        self.pool.with_session(None, Retry::Idempotent, |s| {
            Ok(WriteCaps {
                uidplus: s.has_capability("UIDPLUS"),
                moves: s.has_capability("MOVE"),
            })
        })
    }

    /// Messages left a mailbox: out of the index, and the filesystem hears of it.
    fn removed(&self, id: MailboxId, validity: UidValidity, uids: &[Uid]) {
        let mut gone = Vec::new();
        for &u in uids {
            if self.indexes.apply(id, validity, IndexChange::Removed(u)) {
                gone.push(u);
            }
        }
        self.changes.send([Change::Removed {
            mailbox: id,
            validity,
            uids: uids.to_vec(),
        }]);
        let _ = gone;
    }

    /// A move is done: the sources leave, the copies arrive under the UIDs the server gave
    /// them (or the target is listed again when it gave none).
    fn moved(
        &self,
        src: MailboxId,
        validity: UidValidity,
        uids: &[Uid],
        target: MailboxId,
        map: &BTreeMap<Uid, Uid>,
    ) {
        let metas: Vec<(Uid, Option<MessageMeta>)> = uids
            .iter()
            .map(|&u| {
                let msg = MessageRef {
                    mailbox: src,
                    validity,
                    uid: u,
                };
                (u, self.indexes.meta(msg))
            })
            .collect();
        self.removed(src, validity, uids);
        let target_validity = self.indexes.get(target).map(|ix| ix.read().validity);
        let mut added = Vec::new();
        if map.len() == uids.len() {
            if let Some(tv) = target_validity {
                for (u, meta) in metas {
                    if let (Some(&new), Some(meta)) = (map.get(&u), meta) {
                        if self
                            .indexes
                            .apply(target, tv, IndexChange::Added(new, meta))
                        {
                            added.push(new);
                        }
                    }
                }
                if !added.is_empty() {
                    self.changes.send([Change::Added {
                        mailbox: target,
                        validity: tv,
                        uids: added,
                    }]);
                }
                return;
            }
        }
        self.touch(target);
    }

    /// Make the next question about a mailbox's messages ask the server.
    fn touch(&self, id: MailboxId) {
        if let Some(ix) = self.indexes.get(id) {
            ix.write().fetched_at = Instant::now() - Duration::from_secs(3600 * 24 * 365);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct WriteCaps {
    uidplus: bool,
    moves: bool,
}

/// SELECT `name` read-write (unless it is) and check that it is still at `validity`.
fn select_rw<'a>(
    s: &'a mut Session,
    name: &MailboxName,
    validity: UidValidity,
) -> Result<&'a crate::imap::session::Selected> {
    let mut current = s.select(name, false)?.uidvalidity;
    if current.is_some_and(|v| v != validity) {
        current = s.reselect(name, false)?.uidvalidity;
    }
    match current {
        Some(v) if v == validity => {}
        Some(_) => {
            return Err(Error::NoMessage(format!(
                "{name} was recreated (UIDVALIDITY changed)"
            )))
        }
        None => return Err(Error::Protocol(format!("no UIDVALIDITY for {name}"))),
    }
    let sel = s
        .selected()
        .ok_or_else(|| Error::Protocol("mailbox not selected".into()))?;
    if sel.read_only {
        return Err(Error::NotPermitted(format!(
            "{name} is read-only on the server"
        )));
    }
    Ok(sel)
}

/// Refuse flags the server would not keep (outside PERMANENTFLAGS).
fn check_permanent(permanent: Option<&[Flag]>, edit: &FlagEdit) -> Result<()> {
    let Some(permanent) = permanent else {
        return Ok(());
    };
    let may_create = permanent.contains(&Flag::MayCreate);
    for f in edit.flags_set() {
        let ok = permanent.contains(f) || (may_create && matches!(f, Flag::Keyword(_)));
        if !ok {
            return Err(Error::NotPermitted(format!(
                "the server does not keep the flag {f} (PERMANENTFLAGS)"
            )));
        }
    }
    Ok(())
}

/// The flags (and MODSEQ) a FETCH reported for `uid`.
fn flags_of(
    untagged: &[Untagged],
    uid: Uid,
) -> Option<(Vec<Flag>, Option<crate::imap::types::ModSeq>)> {
    untagged.iter().rev().find_map(|u| {
        let Untagged::Fetch { items, .. } = u else {
            return None;
        };
        if !items.contains(&FetchItem::Uid(uid)) {
            return None;
        }
        let flags = items.iter().find_map(|i| match i {
            FetchItem::Flags(f) => Some(f.clone()),
            _ => None,
        })?;
        let modseq = items.iter().find_map(|i| match i {
            FetchItem::ModSeq(m) => Some(*m),
            _ => None,
        });
        Some((flags, modseq))
    })
}

fn same_flags(a: &[Flag], b: &[Flag]) -> bool {
    let clean = |f: &[Flag]| {
        let mut v: Vec<Flag> = f.iter().filter(|f| **f != Flag::Recent).cloned().collect();
        v.sort();
        v.dedup();
        v
    };
    clean(a) == clean(b)
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

/// Bare LF line ends become CRLF (IMAP messages are CRLF).
fn normalize_line_ends(bytes: Vec<u8>) -> Vec<u8> {
    let bare = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
    if !bare {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    let mut prev = 0u8;
    for b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Whether `bytes` looks like an RFC 5322 message: a header of `Name: value` fields (with
/// folded continuation lines), ended by an empty line or the end of the message.
fn check_message(bytes: &[u8]) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidInput(format!(
            "not an RFC 5322 message: {why}"
        )))
    };
    if bytes.is_empty() {
        return bad("empty");
    }
    if bytes.contains(&0) {
        return bad("it holds a NUL byte");
    }
    let mut fields = 0;
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if fields == 0 {
                return bad("it starts with a continuation line");
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return bad("a header line without a colon");
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            return bad("an invalid header field name");
        }
        fields += 1;
    }
    if fields == 0 {
        return bad("no header fields");
    }
    Ok(())
}

/// The Message-ID of a message or header block, as written (`<...>`).
pub fn message_id(bytes: &[u8]) -> Option<String> {
    let end = crate::store::headers::find_header_end(bytes).unwrap_or(bytes.len());
    let parsed = mail_parser::MessageParser::default().parse_headers(&bytes[..end])?;
    parsed.message_id().map(|id| format!("<{id}>"))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_edits_parse() {
        assert_eq!(
            FlagEdit::parse("\\Seen  \\Flagged").unwrap(),
            FlagEdit::Replace(vec![Flag::Seen, Flag::Flagged])
        );
        assert_eq!(FlagEdit::parse("").unwrap(), FlagEdit::Replace(vec![]));
        assert_eq!(
            FlagEdit::parse("+\\Flagged work -\\Seen").unwrap(),
            FlagEdit::Delta {
                add: vec![Flag::Flagged, Flag::Keyword("work".into())],
                remove: vec![Flag::Seen]
            }
        );
        for bad in [
            "\\Seen +\\Flagged",
            "+\\Recent",
            "\\*",
            "a(b",
            "\\",
            "+\\Se\"en",
        ] {
            assert!(FlagEdit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(
            normalize_line_ends(b"a\nb\r\nc\n".to_vec()),
            b"a\r\nb\r\nc\r\n"
        );
        assert_eq!(normalize_line_ends(b"a\r\n".to_vec()), b"a\r\n");
    }

    #[test]
    fn messages_are_checked() {
        assert!(check_message(b"Subject: x\r\nX-A: b\r\n c\r\n\r\nbody").is_ok());
        assert!(check_message(b"Subject: only a header").is_ok());
        assert!(check_message(b"hello world\n").is_err());
        assert!(check_message(b"").is_err());
        assert!(check_message(b"\r\nbody").is_err());
        assert!(check_message(b"Bad Name: x\r\n\r\n").is_err());
    }

    #[test]
    fn message_ids_are_found() {
        assert_eq!(
            message_id(b"Subject: a\r\nMessage-ID: <x@y>\r\n\r\nb").as_deref(),
            Some("<x@y>")
        );
        assert_eq!(message_id(b"Subject: a\r\n\r\n"), None);
    }
}
