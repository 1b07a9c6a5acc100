//! The Maildir layout (`-o layout=maildir`): every Maildir mail client, straight on the server.
//!
//! In this layout a folder directory holds `cur/`, `new/` and `tmp/` beside its subfolders
//! (mbsync's "Verbatim" `SubFolders` layout), and no message files of its own. The three
//! are not in the tree: their inode numbers are computed from the folder's
//! ([`sub_ino`], see [`crate::fs::inode`]), and each FUSE request on them reaches this module
//! through a hook at the top of the request's usual handler.
//!
//! - [`naming`]: file names, `UIDVALIDITY.UID.imapfs:2,LETTERS`, and the STORE a rename's
//!   letters ask for;
//! - [`placement`]: which messages are in `new/` and which in `cur/` (as mbsync), and the
//!   memory of a client's moves from `new/` to `cur/`, kept across remounts;
//! - [`dirs`]: the three directories, their listings and their times (clients poll mtimes);
//! - [`ops`]: creating in `tmp/`, renames (flags, delivery = APPEND, moves = MOVE), unlink;
//! - this file: the layout's state, lookup of names, and the names clients gave.
//!
//! A name whose letters are not the message's current flags names nothing, so names in
//! `cur/` and `new/` are handed to the kernel with no entry lifetime. A subfolder named
//! `cur`, `new` or `tmp` is shown escaped (`%63ur`, `%6Eew`, `%74mp`, see
//! [`crate::fs::tree`]), so it never meets the three directories.

pub mod dirs;
pub mod naming;
mod ops;
mod placement;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fuser::FileAttr;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::fs::inode::Ino;
use crate::fs::ImapFs;
use crate::store::{MailboxId, MessageRef};

pub use crate::fs::inode::{sub_ino, sub_of, Sub};
pub use naming::{message_name, parse_name, ParsedName};

/// What the layout remembers while mounted.
#[derive(Default)]
pub struct MaildirState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Unseen messages a client moved from `new/` to `cur/` ([`placement`]).
    placement: placement::Placement,
    /// Per folder: moves between `new/` and `cur/` made here (no server change).
    local: HashMap<MailboxId, u64>,
    clocks: HashMap<MailboxId, dirs::Clock>,
    /// The names clients gave messages they delivered or moved (`dir`, name): found by
    /// lookup for [`GIVEN_FOR`], never listed (`notmuch insert` opens the name it renamed
    /// to, after opening the directory to fsync it).
    given: HashMap<(Ino, String), (MessageRef, Instant)>,
    /// Drafts delivered by a rename, and the message each became: the kernel holds the new
    /// name with the draft's inode until our invalidation reaches it, so that inode reads as
    /// the message.
    delivered: HashMap<Ino, MessageRef>,
}

/// How long a name a client gave is found.
const GIVEN_FOR: Duration = Duration::from_secs(60);

/// Most names kept in [`Inner::given`].
const MAX_GIVEN: usize = 4096;

impl ImapFs {
    pub(crate) fn is_maildir(&self) -> bool {
        self.opts.layout == crate::fs::layout::Layout::Maildir
    }

    /// The folder mailbox behind a sub directory.
    fn sub_mailbox(&self, ino: Ino) -> Option<(Ino, Sub, MailboxId)> {
        let (folder, sub) = sub_of(ino)?;
        Some((folder, sub, self.maildir_folder(folder)?))
    }

    /// The mailbox of a folder directory that shows `cur/`, `new/`, `tmp/`.
    fn maildir_folder(&self, dir: Ino) -> Option<MailboxId> {
        if !self.is_maildir() {
            return None;
        }
        self.selectable_mailbox(dir)
    }

    /// A change to the folder's `cur/` or `new/` that the server does not see (moves between
    /// them): it moves the directories' clock ([`dirs`]).
    fn note_local_change(&self, mailbox: MailboxId) {
        *self.maildir.inner.lock().local.entry(mailbox).or_default() += 1;
    }

    /// A draft delivered by a rename became `msg`.
    fn note_delivered(&self, draft: Ino, msg: MessageRef) {
        let mut inner = self.maildir.inner.lock();
        if inner.delivered.len() >= MAX_GIVEN {
            inner.delivered.clear();
        }
        inner.delivered.insert(draft, msg);
    }

    /// Hook of `lookup`: `cur`/`new`/`tmp` of a folder, and the messages in them.
    pub(crate) fn maildir_lookup(
        &self,
        parent: Ino,
        name: &str,
    ) -> Option<Result<(FileAttr, Duration, Duration)>> {
        if !self.is_maildir() {
            return None;
        }
        if let Some((_, sub, mb)) = self.sub_mailbox(parent) {
            return Some(self.message_in(parent, sub, mb, name).map(|(_, _, attr)| {
                // Names carry flags: the kernel asks again every time.
                (attr, Duration::from_secs(1), Duration::ZERO)
            }));
        }
        if sub_of(parent).is_some() {
            return Some(Err(Error::NoEntry(name.into())));
        }
        if let Some(sub) = Sub::named(name) {
            if self.maildir_folder(parent).is_some() {
                let ino = sub_ino(parent, sub)?;
                return Some(Ok((
                    self.sub_attr(ino),
                    Duration::from_secs(1),
                    self.opts.dir_ttl,
                )));
            }
        }
        // Subfolders are found as usual; a folder directory holds no message files.
        self.sync_tree().ok()?;
        let child = self
            .tree
            .lock()
            .dir(parent)
            .is_some_and(|n| n.children.contains_key(name));
        (!child && self.selectable_mailbox(parent).is_some())
            .then(|| Err(Error::NoEntry(name.into())))
    }

    /// The message `name` in `cur/` or `new/` (`sub`) of mailbox `mb`.
    fn message_in(
        &self,
        dir: Ino,
        sub: Sub,
        mb: MailboxId,
        name: &str,
    ) -> Result<(Ino, MessageRef, FileAttr)> {
        let missing = || Error::NoEntry(name.into());
        if sub == Sub::Tmp {
            return Err(missing());
        }
        let given = self
            .maildir
            .inner
            .lock()
            .given
            .get(&(dir, name.to_string()))
            .filter(|(_, at)| at.elapsed() < GIVEN_FOR)
            .map(|(msg, _)| *msg);
        if let Some(msg) = given {
            return self.given_message(msg).ok_or_else(missing);
        }
        let (validity, uid) = parse_name(name).message.ok_or_else(missing)?;
        let index = self.account.index(mb, self.opts.dir_ttl)?;
        let meta = {
            let ix = index.read();
            if ix.validity() != validity {
                return Err(missing());
            }
            ix.messages().get(&uid).cloned().ok_or_else(missing)?
        };
        let msg = MessageRef {
            mailbox: mb,
            validity,
            uid,
        };
        if self.account.is_moving(msg)
            || message_name(validity, uid, &meta.flags) != name
            || self.in_new(msg, &meta) != (sub == Sub::New)
        {
            return Err(missing());
        }
        let generation = self.tree.lock().generation(mb, validity);
        let ino = Ino::message(generation, uid);
        Ok((ino, msg, self.message_attr(ino, &meta)))
    }

    /// A message under the name a client gave it, asking the server if the index is older.
    fn given_message(&self, msg: MessageRef) -> Option<(Ino, MessageRef, FileAttr)> {
        let meta = self.account.message_meta(msg).or_else(|| {
            self.account.index(msg.mailbox, Duration::ZERO).ok()?;
            self.account.message_meta(msg)
        })?;
        let generation = self.tree.lock().generation(msg.mailbox, msg.validity);
        let ino = Ino::message(generation, msg.uid);
        Some((ino, msg, self.message_attr(ino, &meta)))
    }

    /// Hook of the `.search` view: a message's path below its folder directory
    /// (`cur/NAME` or `new/NAME`) in the Maildir layout.
    pub(crate) fn maildir_path_of(&self, msg: MessageRef) -> Option<String> {
        if !self.is_maildir() {
            return None;
        }
        let meta = self.account.message_meta(msg)?;
        let sub = if self.in_new(msg, &meta) {
            Sub::New
        } else {
            Sub::Cur
        };
        Some(format!(
            "{}/{}",
            sub.name(),
            message_name(msg.validity, msg.uid, &meta.flags)
        ))
    }

    /// Hook of getattr, open and read of a draft: the message a delivered draft became.
    pub(crate) fn delivered_as(&self, ino: Ino) -> Option<MessageRef> {
        if !matches!(ino.kind(), crate::fs::inode::InoKind::Draft(_)) {
            return None;
        }
        self.maildir.inner.lock().delivered.get(&ino).copied()
    }

    /// Remember the name a client gave a message it delivered or moved into `dir`.
    fn give_name(&self, dir: Ino, name: &str, msg: MessageRef) {
        let mut inner = self.maildir.inner.lock();
        if inner.given.len() >= MAX_GIVEN {
            inner.given.retain(|_, (_, at)| at.elapsed() < GIVEN_FOR);
            if inner.given.len() >= MAX_GIVEN {
                inner.given.clear();
            }
        }
        inner
            .given
            .insert((dir, name.to_string()), (msg, Instant::now()));
    }
}
