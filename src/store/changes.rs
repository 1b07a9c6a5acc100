//! What the store tells the filesystem when the account changes under it.
//!
//! The store never calls the filesystem. When it learns that something changed (a refresh
//! found new or expunged messages, a write of ours moved a message, another client renamed a
//! folder), it sends a [`Change`] to every subscriber of its [`ChangeFeed`]; the filesystem's
//! invalidation thread turns each into kernel cache invalidations.
//!
//! The feed also counts changes per mailbox ([`ChangeFeed::epoch`]): whoever derived
//! something from a mailbox (a search result) can tell whether it may be stale without
//! subscribing and draining a channel.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};

use parking_lot::Mutex;

use crate::imap::types::{Uid, UidValidity};
use crate::store::ids::MailboxId;

/// A change to the account as the store sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The mailbox list changed (folders created, deleted, renamed, subscribed).
    Mailboxes,
    /// Messages appeared in a mailbox.
    Added {
        mailbox: MailboxId,
        validity: UidValidity,
        uids: Vec<Uid>,
    },
    /// Messages left a mailbox (expunged or moved away).
    Removed {
        mailbox: MailboxId,
        validity: UidValidity,
        uids: Vec<Uid>,
    },
    /// Flags or length of messages changed: their attributes are stale.
    Changed {
        mailbox: MailboxId,
        validity: UidValidity,
        uids: Vec<Uid>,
    },
    /// The mailbox has a new UIDVALIDITY: every message of generation `old` is gone (`uids`
    /// are those the old generation had, whose names the kernel may still hold).
    Reset {
        mailbox: MailboxId,
        old: UidValidity,
        uids: Vec<Uid>,
    },
}

impl Change {
    /// The mailbox the change is about (`None`: the mailbox list).
    pub fn mailbox(&self) -> Option<MailboxId> {
        match self {
            Change::Mailboxes => None,
            Change::Added { mailbox, .. }
            | Change::Removed { mailbox, .. }
            | Change::Changed { mailbox, .. }
            | Change::Reset { mailbox, .. } => Some(*mailbox),
        }
    }
}

impl Change {
    /// What a comparison of two listings found, as changes: `Removed`, `Added`, `Changed`,
    /// each only when it names a message.
    pub fn of_diff(
        mailbox: MailboxId,
        validity: UidValidity,
        removed: Vec<Uid>,
        added: Vec<Uid>,
        changed: Vec<Uid>,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        if !removed.is_empty() {
            out.push(Change::Removed {
                mailbox,
                validity,
                uids: removed,
            });
        }
        if !added.is_empty() {
            out.push(Change::Added {
                mailbox,
                validity,
                uids: added,
            });
        }
        if !changed.is_empty() {
            out.push(Change::Changed {
                mailbox,
                validity,
                uids: changed,
            });
        }
        out
    }
}

/// Subscribers of changes.
#[derive(Default)]
pub struct ChangeFeed {
    subscribers: Mutex<Vec<Sender<Change>>>,
    /// Changes sent so far, per mailbox and in all (see [`ChangeFeed::epoch`]).
    epochs: Mutex<(HashMap<MailboxId, u64>, u64)>,
}

impl ChangeFeed {
    pub fn subscribe(&self) -> Receiver<Change> {
        let (tx, rx) = channel();
        self.subscribers.lock().push(tx);
        rx
    }

    /// Tell every subscriber; those that went away are dropped.
    pub fn send(&self, changes: impl IntoIterator<Item = Change>) {
        let mut subs = self.subscribers.lock();
        for c in changes {
            log::debug!("change: {c:?}");
            {
                let mut epochs = self.epochs.lock();
                epochs.1 += 1;
                if let Some(m) = c.mailbox() {
                    *epochs.0.entry(m).or_default() += 1;
                }
            }
            subs.retain(|s| s.send(c.clone()).is_ok());
        }
    }

    /// How many changes were sent about `mailbox` (`None`: about anything, the mailbox list
    /// included). Equal epochs mean nothing changed in between.
    pub fn epoch(&self, mailbox: Option<MailboxId>) -> u64 {
        let epochs = self.epochs.lock();
        match mailbox {
            Some(m) => epochs.0.get(&m).copied().unwrap_or(0),
            None => epochs.1,
        }
    }
}
