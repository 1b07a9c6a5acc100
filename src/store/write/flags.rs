//! Flags: replacing STOREs with UNCHANGEDSINCE, deltas without; the index learns the result.
//! A change succeeds only if the flags the server reports afterwards are what was asked
//! ([`FlagEdit::holds_for`]); otherwise (a lost race, `[MODIFIED]` from any server to any
//! STORE, a flag dropped silently) it is EBUSY and the index holds what the server said.

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr, StoreMode};
use crate::imap::pool::Retry;
use crate::imap::session::Access;
use crate::imap::types::{Code, FetchItem, Flag, ModSeq, SequenceSet, Uid, Untagged};
use crate::store::ids::MessageRef;
use crate::store::index::IndexChange;
use crate::store::write::FlagEdit;
use crate::store::Account;

impl Account {
    /// Change a message's flags. Returns the flags it has afterwards.
    pub fn set_flags(&self, msg: MessageRef, edit: &FlagEdit) -> Result<Vec<Flag>> {
        let name = self.require_name(msg.mailbox)?;
        let known = self.indexes.meta(msg);
        let set = SequenceSet::single(msg.uid.get());
        let flags = self.pool.with_session(Some(&name), Retry::Idempotent, |s| {
            let sel = s.select_at(&name, msg.validity, Access::Write)?;
            check_permanent(sel.permanent_flags.as_deref(), edit)?;
            let condstore = sel.highest_modseq.is_some();
            let mut since = known.as_ref().and_then(|m| m.modseq).filter(|_| condstore);
            if condstore && since.is_none() && matches!(edit, FlagEdit::Replace(_)) {
                // MODSEQ unknown (the message arrived by a move or APPEND): ask for it, and
                // refuse if the flags are no longer those the user was shown.
                let now = s.run(Command::Fetch {
                    uid: true,
                    set: set.clone(),
                    attrs: vec![FetchAttr::Uid, FetchAttr::Flags, FetchAttr::ModSeq],
                    changed_since: None,
                })?;
                let Some((flags, modseq)) = flags_of(&now.untagged, msg.uid) else {
                    return Err(Error::NoMessage(format!("UID {} in {name}", msg.uid)));
                };
                if edit.holds_for(&flags) {
                    // Already what was asked (an earlier try of this STORE whose connection
                    // was cut did it, or another client did): nothing to send, and a yes is
                    // true.
                    return Ok((flags, modseq));
                }
                if known
                    .as_ref()
                    .is_some_and(|k| !same_flags(&flags, &k.flags))
                {
                    self.apply_flags(msg, flags, modseq);
                    return Err(Error::Conflict(format!(
                        "flags of UID {} changed meanwhile; read them and try again",
                        msg.uid
                    )));
                }
                since = modseq;
            }
            let cmds: Vec<Command> = match edit {
                FlagEdit::Replace(flags) => vec![Command::Store {
                    uid: true,
                    set: set.clone(),
                    mode: StoreMode::Replace,
                    silent: false,
                    flags: flags.clone(),
                    unchanged_since: since,
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
            // A yes means the flags are now what was asked: after a lost race (`[MODIFIED]`,
            // also from a server that sends it to a delta, which carries no UNCHANGEDSINCE),
            // or a server that dropped a flag silently, they may not be.
            if !edit.holds_for(&flags) {
                self.apply_flags(msg, flags, modseq);
                return Err(Error::Conflict(format!(
                    "flags of UID {} are not what was asked (changed meanwhile, or not kept \
                     by the server); read them and try again",
                    msg.uid
                )));
            }
            Ok((flags, modseq))
        });
        let (flags, modseq) = match flags {
            Err(e @ (Error::NoMessage(_) | Error::ValidityChanged { .. })) => {
                self.forget_message(msg);
                return Err(e);
            }
            other => other?,
        };
        self.apply_flags(msg, flags.clone(), modseq);
        Ok(flags)
    }

    fn apply_flags(&self, msg: MessageRef, flags: Vec<Flag>, modseq: Option<ModSeq>) {
        let change = IndexChange::Flags {
            uid: msg.uid,
            flags,
            modseq,
        };
        self.indexes.apply(msg.mailbox, msg.validity, [change]);
    }
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
fn flags_of(untagged: &[Untagged], uid: Uid) -> Option<(Vec<Flag>, Option<ModSeq>)> {
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

impl FlagEdit {
    /// Whether `flags` are what this edit asked for.
    fn holds_for(&self, flags: &[Flag]) -> bool {
        match self {
            FlagEdit::Replace(wanted) => same_flags(flags, wanted),
            FlagEdit::Delta { add, remove } => {
                add.iter().all(|f| flags.contains(f)) && !remove.iter().any(|f| flags.contains(f))
            }
        }
    }
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
