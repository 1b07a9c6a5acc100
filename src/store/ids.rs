//! Names for things the store keeps: [`MailboxId`] for a mailbox for the life of the mount, and
//! [`MessageRef`] for one message of one generation of a mailbox.
//!
//! A `MessageRef` carries the UIDVALIDITY it was learned under, so every question about a
//! message (its bytes, its flags) is asked of that generation only: if the server's
//! UIDVALIDITY differs, the answer is "not found", never another message's data.

use std::num::NonZeroU32;

use crate::imap::types::{Uid, UidValidity};

/// A mailbox's number for the life of the mount, assigned on first sight of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId(NonZeroU32);

impl MailboxId {
    pub fn new(n: u32) -> Option<MailboxId> {
        NonZeroU32::new(n).map(MailboxId)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The id of the `n`-th mailbox seen (from 0): `n + 1`.
    pub fn nth(n: usize) -> MailboxId {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        MailboxId(NonZeroU32::MIN.saturating_add(n))
    }
}

impl std::fmt::Display for MailboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One message: its mailbox, the mailbox's generation and its UID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageRef {
    pub mailbox: MailboxId,
    pub validity: UidValidity,
    pub uid: Uid,
}
