//! What the store tells the filesystem when the account changes under it.
//!
//! The store never calls the filesystem. When it learns that something changed (a refresh
//! found new or expunged messages, a write of ours moved a message, another client renamed a
//! folder), it sends a [`Change`] to every subscriber of its [`ChangeFeed`]; the filesystem's
//! invalidation thread turns each into kernel cache invalidations. Only two places send:
//! the door into the indexes ([`crate::store::index::Indexes`]), with every edit of an
//! index, and the installation of a new mailbox list ([`ChangeFeed::mailboxes_listed`]),
//! which says what the new list changed and carries it, so that the filesystem never has to
//! ask the store back.
//!
//! The feed also counts changes per mailbox ([`ChangeFeed::epoch`]): whoever derived
//! something from a mailbox (a search result) can tell whether it may be stale without
//! subscribing and draining a channel.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::imap::types::{MailboxName, Uid, UidValidity};
use crate::store::ids::MailboxId;
use crate::store::mailboxes::MailboxInfo;

/// A change to the account as the store sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The mailbox list changed (folders created, deleted, renamed, subscribed).
    Mailboxes(ListChange),
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
    /// The mailbox, generation and UIDs of a change about messages (`None`: the list).
    pub fn messages(&self) -> Option<(MailboxId, UidValidity, &[Uid])> {
        match self {
            Change::Mailboxes(_) => None,
            Change::Added {
                mailbox,
                validity,
                uids,
            }
            | Change::Removed {
                mailbox,
                validity,
                uids,
            }
            | Change::Changed {
                mailbox,
                validity,
                uids,
            }
            | Change::Reset {
                mailbox,
                old: validity,
                uids,
            } => Some((*mailbox, *validity, uids)),
        }
    }

    /// The mailbox the change is about (`None`: the mailbox list).
    pub fn mailbox(&self) -> Option<MailboxId> {
        match self {
            Change::Mailboxes(_) => None,
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

/// What a new mailbox list changed against the one before it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListChange {
    /// Names listed now and not before (created, or the new name of a rename).
    pub created: Vec<MailboxName>,
    /// Names listed before and not now (deleted, or the old name of a rename).
    pub deleted: Vec<MailboxName>,
    /// Names in both lists whose attributes or subscription changed.
    pub changed: Vec<MailboxName>,
    /// The new list, whole (what the filesystem's tree is built from).
    pub list: Arc<Vec<MailboxInfo>>,
}

impl ListChange {
    /// The difference from `before` to `after` (both as LIST gave them, names unique).
    pub fn between(before: &[MailboxInfo], after: Arc<Vec<MailboxInfo>>) -> ListChange {
        let old: HashMap<&[u8], &MailboxInfo> = before.iter().map(|m| (m.name.raw(), m)).collect();
        let new: HashMap<&[u8], &MailboxInfo> = after.iter().map(|m| (m.name.raw(), m)).collect();
        let mut created = Vec::new();
        let mut changed = Vec::new();
        for m in after.iter() {
            match old.get(m.name.raw()) {
                None => created.push(m.name.clone()),
                Some(o) if *o != m => changed.push(m.name.clone()),
                Some(_) => {}
            }
        }
        let deleted = before
            .iter()
            .filter(|m| !new.contains_key(m.name.raw()))
            .map(|m| m.name.clone())
            .collect();
        ListChange {
            created,
            deleted,
            changed,
            list: after,
        }
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

    /// Tell every subscriber; those that went away are dropped. Only the store's two doors
    /// call this: the indexes' ([`crate::store::index::Indexes`]) and the mailbox list's.
    pub(in crate::store) fn send(&self, changes: impl IntoIterator<Item = Change>) {
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

    /// A new mailbox list replaced `before`: subscribers hear what changed, with the list.
    pub(crate) fn mailboxes_listed(&self, before: &[MailboxInfo], after: &Arc<Vec<MailboxInfo>>) {
        self.send([Change::Mailboxes(ListChange::between(
            before,
            after.clone(),
        ))]);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(name: &str, subscribed: bool) -> MailboxInfo {
        MailboxInfo {
            name: MailboxName::from_utf8(name, false),
            delimiter: Some('.'),
            noselect: false,
            attributes: Vec::new(),
            subscribed,
        }
    }

    #[test]
    fn a_list_change_names_what_was_created_deleted_and_changed() {
        let before = vec![
            mailbox("INBOX", true),
            mailbox("Old", false),
            mailbox("Work", false),
        ];
        let after = Arc::new(vec![
            mailbox("INBOX", true),
            mailbox("New", false),
            mailbox("Work", true),
        ]);
        let c = ListChange::between(&before, after.clone());
        let names =
            |v: &[MailboxName]| v.iter().map(|n| n.as_str().to_string()).collect::<Vec<_>>();
        assert_eq!(names(&c.created), ["New"], "a rename is a creation...");
        assert_eq!(names(&c.deleted), ["Old"], "...and a deletion");
        assert_eq!(names(&c.changed), ["Work"], "subscribed now");
        assert!(Arc::ptr_eq(&c.list, &after), "the new list itself travels");
    }
}
