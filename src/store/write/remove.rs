//! Removing messages: UID EXPUNGE of exactly the named UIDs, or a move to Trash; never a
//! plain EXPUNGE.

use crate::error::{Error, Result};
use crate::imap::codec::{Command, StoreMode};
use crate::imap::pool::Retry;
use crate::imap::session::Session;
use crate::imap::types::{Flag, SequenceSet, Uid, UidValidity};
use crate::store::ids::{MailboxId, MessageRef};
use crate::store::write::{select_rw, DeleteMode};
use crate::store::Account;

impl Account {
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
    pub(super) fn expunge_uids(
        &self,
        id: MailboxId,
        validity: UidValidity,
        uids: &[Uid],
    ) -> Result<()> {
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
}
