//! Asking whether a folder changed at all, by one STATUS, before refreshing it.
//!
//! A refresh EXAMINEs the folder, which costs the server a pass over a big one (Dovecot: 2 s
//! at 1,000,000 messages) even when nothing changed. An index held and believed first asks
//! STATUS for UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and MESSAGES: all four equal to the index's
//! mean nothing changed since its last refresh. The comparison is exact, stricter than the
//! watcher's (`store/watch.rs` `differs`, which asks only whether the server is ahead): a
//! server that went back is refreshed too.

use crate::error::Result;
use crate::imap::codec::Command;
use crate::imap::pool::Retry;
use crate::imap::session::Capability;
use crate::imap::types::{MailboxName, StatusItem, Untagged};
use crate::store::index::SharedIndex;
use crate::store::Account;

impl Account {
    /// Whether the folder is exactly as `ix` holds it, by one STATUS: the same UIDVALIDITY,
    /// UIDNEXT, HIGHESTMODSEQ and number of messages. With CONDSTORE every flag change and
    /// every expunge moves HIGHESTMODSEQ (RFC 7162 section 3.1), and every new message
    /// UIDNEXT, so the four equal mean nothing changed since the index's last refresh. False
    /// (ask with EXAMINE) for an index that is stale, unverified (loaded from disk) or has no
    /// HIGHESTMODSEQ, and on a server without CONDSTORE.
    pub(super) fn unchanged_by_status(&self, name: &MailboxName, ix: &SharedIndex) -> Result<bool> {
        let held = {
            let ix = ix.read();
            match (ix.uidnext(), ix.highest_modseq()) {
                (Some(next), Some(modseq)) if !ix.is_stale() && !ix.is_unverified() => {
                    (ix.validity(), next, modseq, ix.messages().len())
                }
                _ => return Ok(false),
            }
        };
        let done = self.pool.with_session(None, Retry::Idempotent, |s| {
            if !s.supports(Capability::CondStore) {
                return Ok(None);
            }
            let status = Command::Status {
                mailbox: name.clone(),
                items: vec!["MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ"],
            };
            if s.selected().is_none_or(|sel| sel.mailbox != *name) {
                return s.run(status).map(Some);
            }
            // A STATUS of the selected mailbox answers from the session's view, which is
            // not current (Dovecot: `[CLIENTBUG]`, and changes made by others are missing;
            // RFC 9051 6.3.11: SHOULD NOT). Leave it first, in the same round trip; the
            // refresh's EXAMINE would have replaced the selection anyway.
            if !s.supports(Capability::Unselect) {
                return Ok(None);
            }
            let mut done = s.pipeline(&[Command::Unselect, status])?.into_iter();
            done.next().transpose()?;
            done.next().transpose()
        })?;
        let Some(done) = done else {
            return Ok(false);
        };
        let (mut validity, mut next, mut modseq, mut count) = (None, None, None, None);
        for u in done.untagged {
            let Untagged::StatusData { items, .. } = u else {
                continue;
            };
            for item in items {
                match item {
                    StatusItem::UidValidity(v) => validity = Some(v),
                    StatusItem::UidNext(n) => next = Some(n),
                    StatusItem::HighestModSeq(m) => modseq = Some(m),
                    StatusItem::Messages(n) => count = Some(n as usize),
                    _ => {}
                }
            }
        }
        Ok((validity, next, modseq, count)
            == (Some(held.0), Some(held.1), Some(held.2), Some(held.3)))
    }
}
