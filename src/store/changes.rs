//! What the store tells the filesystem when the account changes under it.
//!
//! The store never calls the filesystem. When it learns that something changed (a refresh
//! found new or expunged messages, a write of ours moved a message, another client renamed a
//! folder), it sends a [`Change`] to every subscriber of its [`ChangeFeed`]; the filesystem's
//! invalidation thread turns each into kernel cache invalidations.

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
    /// The mailbox has a new UIDVALIDITY: every message of generation `old` is gone.
    Reset {
        mailbox: MailboxId,
        old: UidValidity,
    },
}

/// Subscribers of changes.
#[derive(Default)]
pub struct ChangeFeed {
    subscribers: Mutex<Vec<Sender<Change>>>,
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
            subs.retain(|s| s.send(c.clone()).is_ok());
        }
    }
}
