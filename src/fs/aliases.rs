//! Names that moves gave, until their folder is listed again.
//!
//! A message's file name is its UID, and a move gives it a new UID in its target. After
//! `mv A/3.eml B/` the kernel holds `B/3.eml` for the moved message, with the source's inode
//! number (it keeps the renamed inode), while B may hold a message of its own with UID 3 and
//! the moved one arrives as, say, UID 6. The rule:
//!
//! - The name a rename gave is an [`Alias`] of the moved message, in its target folder, until
//!   that folder's next listing after its queued moves are sent. It shadows a message of the
//!   folder whose UID name is the same: every lookup of the name finds the moved message.
//! - Meanwhile the moved message's own UID name (`6.eml`) is hidden (shadowed), so a message
//!   that arrived by a move has exactly one name at a time: its alias, then its UID name.
//! - An alias whose message went away by name (`rm`, `mv` on), or whose move failed, is a
//!   tombstone until the listing: the name is absent, and still shadows the folder's own.
//! - The listing ends every settled alias of the folder: names are UIDs again. Nothing is ever
//!   deleted for a name: the shadowed message reappears under its name then.
//!
//! Operations on the kernel's inode (read, getattr, xattrs) are forwarded to where the
//! message is now: [`Aliases::location`] maps an inode that moved to its current
//! (mailbox, UIDVALIDITY, UID), for as long as an alias holds it and a while after (open
//! files), since UIDs are never reused within a generation and an old number cannot come to
//! name another message.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;

use crate::fs::inode::Ino;
use crate::store::{MailboxId, MessageRef};

/// Moved inodes remembered after their alias ended (for files still open).
const RECENT: usize = 4096;

/// What a name a move gave stands for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AliasState {
    /// The move is queued or being sent.
    Pending,
    /// The message is in the target under this UID.
    Arrived(MessageRef),
    /// The name names nothing (removed, moved on, or the move failed).
    Gone,
}

/// One name a rename gave, with the inode the kernel holds for it.
#[derive(Debug, Clone, Copy)]
struct Alias {
    ino: Ino,
    state: AliasState,
}

/// What a lookup of a name finds in the alias table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// The message the kernel knows as this inode.
    Message(Ino),
    /// Nothing, whatever message the folder has under that UID name.
    Gone,
}

/// Every folder's aliases, the messages they hide, and where moved inodes are now.
pub struct Aliases {
    folders: HashMap<MailboxId, HashMap<String, Alias>>,
    /// Messages that arrived by a move and have an alias: hidden under their UID name.
    shadowed: HashSet<MessageRef>,
    /// Where an inode that moved is now, while an alias holds it.
    moved: HashMap<Ino, MessageRef>,
    /// ... and after, for a while.
    recent: lru::LruCache<Ino, MessageRef>,
}

impl Default for Aliases {
    fn default() -> Aliases {
        Aliases {
            folders: HashMap::new(),
            shadowed: HashSet::new(),
            moved: HashMap::new(),
            recent: lru::LruCache::new(NonZeroUsize::new(RECENT).unwrap_or(NonZeroUsize::MIN)),
        }
    }
}

impl Aliases {
    /// A rename gave `ino` the name `name` in `folder`; its move is queued. A previous alias
    /// of that name is replaced (its message keeps its place on the server and shows under
    /// its UID name).
    pub fn begin(&mut self, folder: MailboxId, name: &str, ino: Ino) {
        let alias = Alias {
            ino,
            state: AliasState::Pending,
        };
        let old = self
            .folders
            .entry(folder)
            .or_default()
            .insert(name.to_string(), alias);
        if let Some(old) = old {
            self.release(old);
        }
    }

    /// The queued rename could not be queued after all: the name goes as if never given.
    pub fn abandon(&mut self, folder: MailboxId, name: &str, ino: Ino) {
        let Some(names) = self.folders.get_mut(&folder) else {
            return;
        };
        if names.get(name).is_some_and(|a| a.ino == ino) {
            names.remove(name);
        }
    }

    /// The move that gave `ino` the name `name` in `folder` is done: `Ok(Some(at))` the
    /// message is at `at`; otherwise it is not known to be in the folder, and the name
    /// names nothing.
    pub fn arrived(
        &mut self,
        folder: MailboxId,
        name: &str,
        ino: Ino,
        outcome: Result<Option<MessageRef>, ()>,
    ) {
        let at = outcome.ok().flatten();
        let alias = self
            .folders
            .get_mut(&folder)
            .and_then(|names| names.get_mut(name))
            .filter(|a| a.ino == ino && a.state == AliasState::Pending);
        match (alias, at) {
            (Some(alias), Some(at)) => {
                alias.state = AliasState::Arrived(at);
                self.shadowed.insert(at);
                self.moved.insert(ino, at);
            }
            (Some(alias), None) => {
                alias.state = AliasState::Gone;
                self.retire(ino);
            }
            // The name was given to another message meanwhile.
            (None, Some(at)) => {
                self.moved.remove(&ino);
                self.recent.put(ino, at);
            }
            (None, None) => self.retire(ino),
        }
    }

    /// The message named `name` in `folder` went away by that name (`rm`, or `mv` on): if
    /// the name is an alias, it names nothing until the listing.
    pub fn name_left(&mut self, folder: MailboxId, name: &str) {
        let Some(alias) = self.folders.get_mut(&folder).and_then(|n| n.get_mut(name)) else {
            return;
        };
        if let AliasState::Arrived(at) = alias.state {
            self.shadowed.remove(&at);
        }
        alias.state = AliasState::Gone;
    }

    /// The message the kernel knows as `ino` was removed from the server.
    pub fn forget(&mut self, ino: Ino) {
        self.moved.remove(&ino);
        self.recent.pop(&ino);
    }

    /// What `name` in `folder` stands for, if a move gave it.
    pub fn named(&self, folder: MailboxId, name: &str) -> Option<Named> {
        let alias = self.folders.get(&folder)?.get(name)?;
        Some(match alias.state {
            AliasState::Gone => Named::Gone,
            _ => Named::Message(alias.ino),
        })
    }

    /// Whether a message is hidden under its UID name (an alias names it).
    pub fn is_shadowed(&self, msg: MessageRef) -> bool {
        self.shadowed.contains(&msg)
    }

    /// Where the message the kernel knows as `ino` is now, if it moved.
    pub fn location(&mut self, ino: Ino) -> Option<MessageRef> {
        match self.moved.get(&ino) {
            Some(at) => Some(*at),
            None => self.recent.get(&ino).copied(),
        }
    }

    /// `folder` is being listed and has no queued moves: its settled aliases end (names are
    /// UIDs again). Returns the names that ended, for the kernel to forget.
    pub fn end_listing(&mut self, folder: MailboxId) -> Vec<String> {
        let Some(names) = self.folders.get_mut(&folder) else {
            return Vec::new();
        };
        let ended: Vec<(String, Alias)> = names
            .iter()
            .filter(|(_, a)| a.state != AliasState::Pending)
            .map(|(n, a)| (n.clone(), *a))
            .collect();
        for (n, _) in &ended {
            names.remove(n);
        }
        if names.is_empty() {
            self.folders.remove(&folder);
        }
        ended
            .into_iter()
            .map(|(n, a)| {
                self.release(a);
                n
            })
            .collect()
    }

    /// An alias no longer names its message: the message shows under its UID name, and
    /// its inode is remembered only for a while.
    fn release(&mut self, alias: Alias) {
        if let AliasState::Arrived(at) = alias.state {
            self.shadowed.remove(&at);
            if self.moved.get(&alias.ino) == Some(&at) {
                self.moved.remove(&alias.ino);
                self.recent.put(alias.ino, at);
            }
        }
    }

    /// An inode's move failed: where it was stays remembered only for a while.
    fn retire(&mut self, ino: Ino) {
        if let Some(at) = self.moved.remove(&ino) {
            self.recent.put(ino, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::types::{Uid, UidValidity};

    fn msg(mb: u32, uid: u32) -> MessageRef {
        MessageRef {
            mailbox: MailboxId::new(mb).unwrap(),
            validity: UidValidity::new(1).unwrap(),
            uid: Uid::new(uid).unwrap(),
        }
    }

    #[test]
    fn an_alias_shadows_until_the_listing() {
        let mut a = Aliases::default();
        let b = MailboxId::new(2).unwrap();
        let x = Ino((1 << 32) | 3);
        a.begin(b, "3.eml", x);
        assert_eq!(a.named(b, "3.eml"), Some(Named::Message(x)));
        // Pending aliases survive a listing.
        assert!(a.end_listing(b).is_empty());
        a.arrived(b, "3.eml", x, Ok(Some(msg(2, 6))));
        assert!(a.is_shadowed(msg(2, 6)));
        assert_eq!(a.location(x), Some(msg(2, 6)));
        assert_eq!(a.end_listing(b), vec!["3.eml".to_string()]);
        assert_eq!(a.named(b, "3.eml"), None);
        assert!(!a.is_shadowed(msg(2, 6)));
        // Open files still find it.
        assert_eq!(a.location(x), Some(msg(2, 6)));
    }

    #[test]
    fn failed_removed_and_replaced_aliases_name_nothing() {
        let mut a = Aliases::default();
        let b = MailboxId::new(2).unwrap();
        let (x, y) = (Ino((1 << 32) | 3), Ino((3 << 32) | 3));
        a.begin(b, "3.eml", x);
        a.arrived(b, "3.eml", x, Err(()));
        assert_eq!(a.named(b, "3.eml"), Some(Named::Gone));
        assert_eq!(a.location(x), None);
        a.begin(b, "4.eml", x);
        a.arrived(b, "4.eml", x, Ok(Some(msg(2, 7))));
        a.name_left(b, "4.eml");
        assert_eq!(a.named(b, "4.eml"), Some(Named::Gone));
        assert!(!a.is_shadowed(msg(2, 7)));
        // A second rename onto an alias's name: the first message shows by its UID.
        a.begin(b, "5.eml", x);
        a.arrived(b, "5.eml", x, Ok(Some(msg(2, 8))));
        a.begin(b, "5.eml", y);
        assert!(!a.is_shadowed(msg(2, 8)));
        assert_eq!(a.named(b, "5.eml"), Some(Named::Message(y)));
        a.arrived(b, "5.eml", y, Ok(Some(msg(2, 9))));
        assert!(a.is_shadowed(msg(2, 9)));
    }
}
