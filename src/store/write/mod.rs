//! Changing mail: flags, removal, moves between folders, and new messages.
//!
//! Every change goes to a read-write SELECT of the mailbox at the UIDVALIDITY the caller named
//! ([`Session::select_at`](crate::imap::session::Session::select_at) with `Access::Write`), so
//! a change can only ever touch the message the user named.
//! Rules that keep mail safe:
//!
//! - Removal is `UID STORE +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE` of that UID alone
//!   (UIDPLUS), a success only once a check on the same, just synced session shows the UID
//!   gone; a removal that fails takes its `\Deleted` back. Never a plain EXPUNGE, which would
//!   also remove messages another client marked `\Deleted`: without UIDPLUS a message is moved
//!   to the trash folder (MOVE), and where that is impossible the removal is refused (EPERM).
//!   `delete=trash` never expunges outside the trash folder; without one, rm is EPERM.
//! - A move is `UID MOVE`, or `UID COPY` then the removal above of the source only after the
//!   copy succeeded; without MOVE and UIDPLUS it is refused before anything is sent.
//! - Commands that are not idempotent (APPEND, COPY, MOVE, EXPUNGE) are never re-sent blindly
//!   ([`Retry::Never`]). After a broken connection the store finds out on a new connection
//!   what the server did (is the UID still there? is a message with the same size and body
//!   at or above the target's UIDNEXT from before, see `proof`?) and only then completes or
//!   reports. The worst outcome is a duplicate, never a
//!   loss.
//! - Flags: `+FLAGS`/`-FLAGS` are deltas the server applies atomically, so they cannot undo
//!   another client's change; a replacing `FLAGS` goes with `UNCHANGEDSINCE` where the server
//!   has CONDSTORE, and losing that race is an error (EBUSY), not a silent overwrite. Where the
//!   MODSEQ is unknown (a message that arrived by a move or APPEND) it is fetched first, and
//!   flags that differ from those shown are EBUSY too. A yes means the flags the server
//!   reports afterwards are the ones asked for.
//!
//! Moves are batched: [`Account::queue_move`] returns at once and the caller's thread (or the
//! one already flushing) sends every queued move of a burst as one `UID MOVE` per (source,
//! target) pair; [`Account::settle`] waits until nothing queued touches a mailbox, so a
//! listing after `mv` is exact.
//!
//! Files: `flags` (STORE), `remove` (expunge or Trash), `moves` (the batch queue, MOVE or
//! COPY + expunge), `append` (APPEND, message checks); this file holds what they share: the
//! read-write selection with its UIDVALIDITY check, the server's write capabilities, and the
//! index updates after a removal.

mod append;
mod flags;
mod moves;
mod proof;
mod remove;

pub(crate) use proof::CUT_SETTLE;

use crate::error::{Error, Result};
use crate::imap::pool::Retry;
use crate::imap::session::Capability;
use crate::imap::types::{Flag, Uid, UidValidity};
use crate::store::ids::MailboxId;
use crate::store::Account;
pub use append::{message_id, MessageBody, NewMessage};
pub use moves::{MoveQueue, QueuedMove};

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
    /// the flags (an empty value clears them all); a `+` or `-` before a word adds or removes
    /// it, and holds for the words that follow until the next sign. Mixing both forms, a sign
    /// with no flag after it (`+`, `-`, `+ -`), `\Recent`, `\*` or a word that is no flag is
    /// invalid: a value that names no change must never read as "clear every flag".
    pub fn parse(value: &str) -> Result<FlagEdit> {
        let mut replace = Vec::new();
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        let mut sign: Option<bool> = None;
        for word in value.split_whitespace() {
            let (s, w) = if let Some(w) = word.strip_prefix('+') {
                (Some(true), w)
            } else if let Some(w) = word.strip_prefix('-') {
                (Some(false), w)
            } else {
                (None, word)
            };
            if s.is_some() {
                sign = s;
            }
            if w.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "`{word}` is a sign with no flag (write `{word}\\Seen`, say)"
                )));
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

    pub(super) fn flags_set(&self) -> impl Iterator<Item = &Flag> {
        let (a, b): (&[Flag], &[Flag]) = match self {
            FlagEdit::Replace(f) => (f, &[]),
            FlagEdit::Delta { add, .. } => (add, &[]),
        };
        a.iter().chain(b)
    }
}

impl Account {
    /// Which write extensions the server has.
    pub(super) fn capabilities(&self) -> Result<WriteCaps> {
        self.pool.with_session(None, Retry::Idempotent, |s| {
            Ok(WriteCaps {
                uidplus: s.supports(Capability::UidPlus),
                moves: s.supports(Capability::Move),
            })
        })
    }

    /// Messages left a mailbox: out of the index, and the filesystem hears of it (even
    /// for UIDs the index no longer held: the kernel may still have them).
    pub(super) fn removed(&self, id: MailboxId, validity: UidValidity, uids: &[Uid]) {
        self.indexes.expunged(id, validity, uids);
    }

    /// Make the next question about a mailbox's messages ask the server.
    pub(super) fn touch(&self, id: MailboxId) {
        self.indexes.mark_stale(id);
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct WriteCaps {
    pub(super) uidplus: bool,
    pub(super) moves: bool,
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
        assert_eq!(FlagEdit::parse(" \t ").unwrap(), FlagEdit::Replace(vec![]));
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
            "+",
            "-",
            "+ -",
            " + ",
            "+ \\Seen",
            "\\Seen -",
        ] {
            assert!(FlagEdit::parse(bad).is_err(), "{bad}");
        }
    }
}
