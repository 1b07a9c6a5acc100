//! Removing messages: UID EXPUNGE of exactly the named UIDs, or a move to Trash; never a
//! plain EXPUNGE.
//!
//! A removal is a success only when the server shows the UID gone. One round trip sends
//! `UID FETCH (FLAGS)` (which of the UIDs another client had marked `\Deleted` already),
//! `UID STORE +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE`; a second one, after the expunge
//! completed, a check `UID FETCH`: it runs on a session that has just synced (the expunge is
//! a sync point), so a UID it does not return is gone, whatever the expunge's reply said. Dovecot has answered OK to a
//! `UID EXPUNGE` and kept the message (while another connection moved messages out of the
//! folder), so kept UIDs are expunged again, a bounded number of times
//! ([`EXPUNGE_ATTEMPTS`]). Whatever is still there after that, or after a refusal, gets its
//! `\Deleted` taken away again, unless another client had set it before our STORE, and the
//! caller gets an error: a message the user was told is still there must not vanish at the
//! next client's EXPUNGE.
//!
//! Trash mode (`delete=trash`) never expunges outside the trash folder: without a trash folder
//! (see [`Account::trash_mailbox`]) `rm` is refused (EPERM).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr, StoreMode};
use crate::imap::pool::Retry;
use crate::imap::session::{Access, Session};
use crate::imap::types::{
    fetch_uid, Code, FetchItem, Flag, MailboxName, SequenceSet, Uid, UidValidity, Untagged,
};
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::write::DeleteMode;
use crate::store::Account;

/// Rounds of `UID EXPUNGE` for UIDs the server keeps (or after a broken connection) before
/// the removal fails.
const EXPUNGE_ATTEMPTS: u32 = 3;

impl Account {
    /// Remove a message, by the rules of [`DeleteMode`] and the server's capabilities.
    pub fn delete_message(&self, msg: MessageRef) -> Result<()> {
        let name = self.require_name(msg.mailbox)?;
        let caps = self.capabilities()?;
        let trash = match self.opts.delete {
            DeleteMode::Expunge if caps.uidplus => {
                return self.expunge_uids(msg.mailbox, msg.validity, &[msg.uid]);
            }
            DeleteMode::Expunge => {
                let trash = self.trash_mailbox()?.filter(|t| *t != name);
                match trash {
                    Some(t) if caps.moves => {
                        log::info!(
                            "server has no UIDPLUS: moving UID {} to {t} instead",
                            msg.uid
                        );
                        t
                    }
                    _ => {
                        log::warn!(
                            "not removing UID {} from {name}: the server has no UIDPLUS, so \
                             only a plain EXPUNGE could remove it, which would also remove \
                             every message another client marked \\Deleted; and there is no \
                             Trash folder to move it to",
                            msg.uid
                        );
                        return Err(Error::NotPermitted(
                            "the server cannot expunge a single message (no UIDPLUS)".into(),
                        ));
                    }
                }
            }
            DeleteMode::Trash => {
                let Some(trash) = self.trash_mailbox()? else {
                    log::warn!(
                        "not removing UID {} from {name}: delete=trash, and the server has no \
                         trash folder (no \\Trash special use, no folder named Trash); name \
                         one with -o trash=FOLDER",
                        msg.uid
                    );
                    return Err(Error::NotPermitted(
                        "delete=trash and no trash folder (see -o trash=FOLDER)".into(),
                    ));
                };
                if trash == name {
                    // In the trash itself, rm means for good.
                    if !caps.uidplus {
                        return Err(Error::NotPermitted(
                            "the server cannot expunge a single message (no UIDPLUS)".into(),
                        ));
                    }
                    return self.expunge_uids(msg.mailbox, msg.validity, &[msg.uid]);
                }
                if !caps.moves && !caps.uidplus {
                    log::warn!(
                        "not moving UID {} from {name} to {trash}: the server has neither \
                         MOVE nor UIDPLUS, so the source could only be removed by a plain \
                         EXPUNGE",
                        msg.uid
                    );
                    return Err(Error::NotPermitted(
                        "the server can neither MOVE nor expunge a single message".into(),
                    ));
                }
                trash
            }
        };
        let target = self.mailbox_id(&trash);
        self.move_now(msg.mailbox, msg.validity, &[msg.uid], target)
            .map(drop)
    }

    /// Expunge exactly `uids` (see the module documentation): `Ok` only when the server shows
    /// every one of them gone. Otherwise the ones it kept lose the `\Deleted` mark this call
    /// set, and the error says why; the ones that did go leave the index either way.
    pub(super) fn expunge_uids(
        &self,
        id: MailboxId,
        validity: UidValidity,
        uids: &[Uid],
    ) -> Result<()> {
        let name = self.require_name(id)?;
        // Marked `\Deleted` by someone else before our STORE: the index's word until the
        // server's (the first round's FETCH) replaces it.
        let mut marked_before: BTreeSet<Uid> = uids
            .iter()
            .copied()
            .filter(|&uid| {
                let msg = MessageRef {
                    mailbox: id,
                    validity,
                    uid,
                };
                self.indexes
                    .meta(msg)
                    .is_some_and(|m| m.flags.contains(&Flag::Deleted))
            })
            .collect();
        let mut left: Vec<Uid> = uids.to_vec();
        let mut gone = Vec::new();
        let mut failure = None;
        // Whether a STORE may have reached the server (a round ran, or broke on the way).
        let mut sent = false;
        for attempt in 1..=EXPUNGE_ATTEMPTS {
            if attempt > 1 {
                // Give whatever held the server back (another connection's move) a moment.
                std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
            }
            let first = attempt == 1;
            let r = self.pool.with_session(Some(&name), Retry::Never, |s| {
                expunge_round(s, &name, validity, &left, first)
            });
            let round = match r {
                Ok(round) => {
                    sent = true;
                    round
                }
                Err(e) if e.is_fatal_to_connection() => {
                    sent = true;
                    // Both commands name these UIDs only: running them again is safe once we
                    // know the mailbox is still the same generation.
                    log::warn!("connection lost while expunging from {name} ({e}): checking");
                    failure = Some(e);
                    continue;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            if let Some(before) = round.marked_before {
                // Messages the FETCH did not return keep the index's word.
                marked_before.retain(|u| !before.contains_key(u));
                marked_before.extend(before.into_iter().filter(|(_, m)| *m).map(|(u, _)| u));
            }
            // A check without a UID proves it gone only if the STORE and the expunge were
            // both accepted: after a refusal, the silence of a server that omits FETCH data
            // would be taken for an expunge (seen with the chaos server, tests/safety/chaos.rs).
            let now_gone: Vec<Uid> = match &round.present {
                Some(present) if round.refused.is_none() => left
                    .iter()
                    .copied()
                    .filter(|u| !present.contains(u))
                    .collect(),
                _ => left
                    .iter()
                    .copied()
                    .filter(|u| round.vanished.contains(u))
                    .collect(),
            };
            left.retain(|u| !now_gone.contains(u));
            gone.extend(now_gone);
            if left.is_empty() {
                failure = None;
                break;
            }
            match round.refused {
                Some(e) => {
                    failure = Some(e);
                    break;
                }
                None => {
                    log::warn!(
                        "{name}: the server answered UID EXPUNGE but kept {} of the UIDs \
                         (attempt {attempt} of {EXPUNGE_ATTEMPTS})",
                        left.len()
                    );
                    failure = Some(Error::Unconfirmed(format!(
                        "the server kept {} message(s) of {name} it was asked to expunge",
                        left.len()
                    )));
                }
            }
        }
        if !gone.is_empty() {
            self.removed(id, validity, &gone);
        }
        if left.is_empty() {
            return Ok(());
        }
        let unmark: Vec<Uid> = left
            .iter()
            .copied()
            .filter(|u| !marked_before.contains(u))
            .collect();
        let failure = failure.unwrap_or_else(|| {
            Error::Unconfirmed(format!("expunge of {} message(s) of {name}", left.len()))
        });
        if sent && !unmark.is_empty() {
            self.unmark_deleted(&name, validity, &unmark);
        }
        self.touch(id);
        Err(failure)
    }

    /// Take away the `\Deleted` mark this store set on messages it could not expunge. Failing
    /// here leaves the mark; that is logged, as the caller's error is what the user sees.
    fn unmark_deleted(&self, name: &MailboxName, validity: UidValidity, uids: &[Uid]) {
        let set = SequenceSet::from_numbers(uids.iter().map(|u| u.get()));
        let r = self.pool.with_session(Some(name), Retry::Idempotent, |s| {
            s.select_at(name, validity, Access::Write)?;
            s.run(Command::Store {
                uid: true,
                set: set.clone(),
                mode: StoreMode::Remove,
                silent: true,
                flags: vec![Flag::Deleted],
                unchanged_since: None,
            })
            .map(drop)
        });
        match r {
            Ok(()) => log::info!(
                "{name}: took \\Deleted off the {} message(s) that were not expunged",
                uids.len()
            ),
            Err(e) => log::error!(
                "{name}: could not take \\Deleted off {} message(s) that were not expunged \
                 ({e}); the next EXPUNGE by any client removes them",
                uids.len()
            ),
        }
    }
}

/// What one round of [`expunge_round`] learnt.
struct Round {
    /// First round only: for each UID the first FETCH returned, whether it was `\Deleted`.
    marked_before: Option<BTreeMap<Uid, bool>>,
    /// The UIDs the check after the expunge returned; `None` if that check failed.
    present: Option<BTreeSet<Uid>>,
    /// UIDs the server reported expunged (VANISHED) during the round.
    vanished: BTreeSet<Uid>,
    /// The STORE's or the expunge's refusal (NO, BAD).
    refused: Option<Error>,
}

/// One round: `UID STORE +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE` pipelined (behind a
/// `UID FETCH (UID FLAGS)` in the first round), then, once the expunge has completed,
/// `UID FETCH (UID)` as the check; all naming exactly `uids`.
///
/// The check is not pipelined behind the expunge: Dovecot runs pipelined commands side by
/// side and may send every command's untagged data before the first completion, so data
/// cannot be told apart by the completion it arrived with (the check's FETCH was once taken
/// for the first FETCH's, and a kept message for a gone one). For the same reason the
/// pipeline's untagged data is read as one stream, in arrival order.
fn expunge_round(
    s: &mut Session,
    name: &MailboxName,
    validity: UidValidity,
    uids: &[Uid],
    first: bool,
) -> Result<Round> {
    s.select_at(name, validity, Access::Write)?;
    let set = SequenceSet::from_numbers(uids.iter().map(|u| u.get()));
    let fetch = |attrs: Vec<FetchAttr>| Command::Fetch {
        uid: true,
        set: set.clone(),
        attrs,
        changed_since: None,
    };
    let mut cmds = Vec::with_capacity(3);
    if first {
        cmds.push(fetch(vec![FetchAttr::Uid, FetchAttr::Flags]));
    }
    cmds.push(Command::Store {
        uid: true,
        set: set.clone(),
        mode: StoreMode::Add,
        silent: true,
        flags: vec![Flag::Deleted],
        unchanged_since: None,
    });
    cmds.push(Command::UidExpunge(set.clone()));
    let mut round = Round {
        marked_before: None,
        present: None,
        vanished: BTreeSet::new(),
        refused: None,
    };
    let mut stream = Vec::new();
    let mut before_known = first;
    for (i, reply) in s.pipeline(&cmds)?.into_iter().enumerate() {
        match reply {
            // `[MODIFIED]` to the STORE: those UIDs were not marked, so the expunge left them.
            Ok(done) if matches!(done.text.code, Some(Code::Modified(_))) => {
                round.refused.get_or_insert(Error::Unconfirmed(format!(
                    "the server did not mark UIDs of {name} \\Deleted ([MODIFIED])"
                )));
                stream.extend(done.untagged);
            }
            Ok(done) => stream.extend(done.untagged),
            // The first FETCH failing only costs its knowledge (the index's word stands).
            Err(_) if first && i == 0 => before_known = false,
            Err(e) => {
                round.refused.get_or_insert(e);
            }
        }
    }
    round.vanished.extend(vanished(&stream, uids));
    if before_known {
        // The first FLAGS for each UID: the FETCH was sent before the STORE, and a server
        // applies commands on one message in order.
        round.marked_before = Some(
            fetched(&stream, uids)
                .into_iter()
                .map(|(u, flags)| (u, flags.is_some_and(|f| f.contains(&Flag::Deleted))))
                .collect(),
        );
    }
    match s.run(fetch(vec![FetchAttr::Uid])) {
        Ok(done) => {
            round.vanished.extend(vanished(&done.untagged, uids));
            round.present = Some(fetched(&done.untagged, uids).into_keys().collect());
        }
        Err(e) if e.is_fatal_to_connection() => return Err(e),
        Err(_) => {}
    }
    Ok(round)
}

/// The UIDs of `uids` that FETCH responses in `untagged` name, with the first flags sent
/// for each.
fn fetched(untagged: &[Untagged], uids: &[Uid]) -> BTreeMap<Uid, Option<Vec<Flag>>> {
    let mut out = BTreeMap::new();
    for u in untagged {
        let Untagged::Fetch { items, .. } = u else {
            continue;
        };
        let Some(uid) = fetch_uid(items) else {
            continue;
        };
        if !uids.contains(&uid) {
            continue;
        }
        let flags = items.iter().find_map(|i| match i {
            FetchItem::Flags(f) => Some(f.clone()),
            _ => None,
        });
        let entry = out.entry(uid).or_insert(None);
        if entry.is_none() {
            *entry = flags;
        }
    }
    out
}

/// The UIDs of `uids` that VANISHED responses in `done` name.
fn vanished(untagged: &[Untagged], uids: &[Uid]) -> Vec<Uid> {
    let mut out = Vec::new();
    for u in untagged {
        if let Untagged::Vanished { uids: set, .. } = u {
            out.extend(uids.iter().copied().filter(|u| set.contains(u.get())));
        }
    }
    out
}
