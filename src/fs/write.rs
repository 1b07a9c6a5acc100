//! The writing half of the filesystem: `rm`, `mv`, `mkdir`, `rmdir`, new files, setattr.
//!
//! - `rm` of a message asks the store to remove exactly that UID ([`Account::delete_message`]).
//! - `mv` of a message to another folder is queued ([`Account::queue_move`]) and answered at
//!   once; the thread that answered then sends the whole burst as one `UID MOVE` per folder
//!   pair. The name `mv` gave stays the moved message's name (an alias, `fs/aliases.rs`)
//!   until the target is listed again, shadowing a message of the target with that UID
//!   name; the message shows under its new UID's name after that listing. A rename replaces
//!   nothing on the server. A rename within a folder is refused (EPERM): a message's name is
//!   its UID.
//! - `mkdir`, `rmdir` and `mv` of a directory are CREATE, DELETE and RENAME; INBOX can be
//!   neither removed nor renamed, and a name holding a control character or the hierarchy
//!   delimiter is refused (EINVAL). rmdir and a folder rename first wait for the moves queued
//!   into or out of the folder and every folder below it; rmdir then asks the server whether
//!   the folder is empty ([`Account::delete_mailbox_if_empty`]), never our index.
//! - New files are drafts (`fs/drafts.rs`); `unlink`, `rename` and `setattr` of a draft are
//!   handed to it.
//!
//! [`Account::delete_message`]: crate::store::Account::delete_message
//! [`Account::queue_move`]: crate::store::Account::queue_move
//! [`Account::delete_mailbox_if_empty`]: crate::store::Account::delete_mailbox_if_empty

use std::sync::Arc;
use std::time::Duration;

use fuser::{FileAttr, RenameFlags, TimeOrNow};

use crate::error::{Error, Result};
use crate::fs::inode::{Ino, InoKind};
use crate::fs::invalidate::{Invalidation, Invalidator};
use crate::fs::tree::unescape_component;
use crate::fs::ImapFs;
use crate::imap::types::MailboxName;
use crate::store::QueuedMove;

/// How a rename went.
pub enum Renamed {
    Done,
    /// A message move was queued: the caller replies, then flushes the queue.
    Queued,
}

impl ImapFs {
    /// `setattr`: a draft can be truncated and dated; a message or folder changes in no way
    /// a setattr can express (EPERM), but a no-op is fine.
    pub(crate) fn set_attr(
        &self,
        ino: Ino,
        mode: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
    ) -> Result<(FileAttr, Duration)> {
        // Hook: fs::maildir.
        if let Some(r) = self.maildir_touch(ino, mode, size, mtime) {
            return r;
        }
        if let InoKind::Draft(_) = ino.kind() {
            return Ok((self.set_draft_attr(ino, size, mtime)?, Duration::ZERO));
        }
        let (attr, ttl) = self.attr_of(ino)?;
        let same_size = size.is_none_or(|s| s == attr.size);
        let same_mode = mode.is_none_or(|m| m & 0o7777 == u32::from(attr.perm));
        if !same_size || !same_mode || mtime.is_some() {
            self.refuse_if_read_only()?;
            return Err(Error::NotPermitted(
                "messages and folders keep their size, mode and times".into(),
            ));
        }
        Ok((attr, ttl))
    }

    /// `mkdir`: CREATE.
    pub(crate) fn make_dir(&self, parent: Ino, name: &str) -> Result<(FileAttr, Duration)> {
        self.refuse_if_read_only()?;
        self.sync_tree()?;
        if self
            .tree
            .lock()
            .dir(parent)
            .is_some_and(|n| n.children.contains_key(name))
        {
            return Err(Error::AlreadyExists(name.into()));
        }
        let full = self.child_mailbox_name(parent, name)?;
        self.account.create_mailbox(&full)?;
        self.sync_tree()?;
        let child = self
            .tree
            .lock()
            .dir(parent)
            .and_then(|n| n.children.get(name).copied())
            .ok_or_else(|| Error::BadReply {
                command: "LIST",
                what: format!("{full} was created but the server does not list it"),
            })?;
        Ok((self.dir_attr(child), Duration::from_secs(1)))
    }

    /// `rmdir`: DELETE, refused while the folder holds messages or folders.
    pub(crate) fn remove_dir(&self, parent: Ino, name: &str) -> Result<()> {
        self.refuse_if_read_only()?;
        self.sync_tree()?;
        let node = {
            let tree = self.tree.lock();
            tree.dir(parent)
                .and_then(|n| n.children.get(name).copied())
                .and_then(|c| tree.dir(c).cloned())
        }
        .ok_or_else(|| Error::NoEntry(name.into()))?;
        if !node.children.is_empty() {
            return Err(Error::NotEmpty(format!("{name} holds folders")));
        }
        let Some((id, selectable)) = node.mailbox else {
            return Err(Error::NoEntry(name.into()));
        };
        let mailbox = self.account.require_name(id)?;
        if mailbox.as_str() == "INBOX" {
            return Err(Error::NotPermitted("INBOX cannot be removed".into()));
        }
        // Moves queued into or out of it (or below it) go first; then the server, not our
        // index, says whether it is empty, on the session that deletes it.
        self.settle_below(id);
        self.account.delete_mailbox_if_empty(id, selectable)?;
        self.resync_after(&format!("deleted {mailbox}"));
        Ok(())
    }

    /// Read the folder list again after a change the server made: a failure there leaves the
    /// tree to the next listing and is logged, never reported as the change's failure (the
    /// change happened; an error would send `mv` looking for a folder that moved).
    fn resync_after(&self, change: &str) {
        if let Err(e) = self.sync_tree() {
            log::warn!("{change}, but the folder list could not be read again: {e}");
        }
    }

    /// Wait for every queued move touching the folder `id` or a folder below it.
    fn settle_below(&self, id: crate::store::MailboxId) {
        let folders = {
            let tree = self.tree.lock();
            let top = tree.dir_of(id).and_then(|d| tree.path(d));
            tree.selectable_folders()
                .into_iter()
                .filter(|(m, path)| *m == id || top.as_ref().is_some_and(|t| path.starts_with(t)))
                .map(|(m, _)| m)
                .collect::<Vec<_>>()
        };
        self.account.settle(id);
        for m in folders {
            self.account.settle(m);
        }
    }

    /// `unlink`: remove a message (or discard a draft).
    pub(crate) fn remove_file(&self, parent: Ino, name: &str) -> Result<()> {
        self.refuse_if_read_only()?;
        if self.discard_draft(parent, name) {
            return Ok(());
        }
        // A name a move gave (an alias) or a UID name, as lookup finds it.
        let (ino, msg) = self.message_named(parent, name)?;
        self.account.delete_message(msg)?;
        if let Some(mb) = self.selectable_mailbox(parent) {
            let mut aliases = self.aliases.lock();
            aliases.name_left(mb, name);
            aliases.forget(ino);
        }
        Ok(())
    }

    /// `rename`: a message to another folder (MOVE), a folder (RENAME), or a draft.
    pub(crate) fn rename_entry(
        &self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
        flags: RenameFlags,
    ) -> Result<Renamed> {
        self.refuse_if_read_only()?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Error::InvalidInput("exchange and whiteout renames".into()));
        }
        // Hook: fs::maildir.
        if let Some(r) = self.maildir_rename(parent, name, newparent, newname) {
            return r;
        }
        if self.rename_draft(parent, name, newparent, newname)? {
            return Ok(Renamed::Done);
        }
        self.sync_tree()?;
        let dir = self
            .tree
            .lock()
            .dir(parent)
            .and_then(|n| n.children.get(name).copied());
        if let Some(dir) = dir {
            self.rename_dir(dir, newparent, newname, flags)?;
            return Ok(Renamed::Done);
        }
        let (ino, msg) = self.message_named(parent, name)?;
        if newparent == parent {
            return Err(Error::NotPermitted(
                "a message's name is its UID: it cannot be renamed within its folder".into(),
            ));
        }
        let target = self.selectable_mailbox(newparent).ok_or_else(|| {
            Error::NotPermitted("messages can only move into a folder that holds messages".into())
        })?;
        if self.draft_by_name(newparent, newname).is_some() {
            return Err(Error::AlreadyExists(format!(
                "{newname} is a new file being written"
            )));
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE)
            && self.lookup_entry(newparent, newname).is_ok()
        {
            return Err(Error::AlreadyExists(newname.into()));
        }
        // A move replaces nothing on the server: `newname` becomes an alias of the moved
        // message until the target is listed, and a message the target has under that name
        // stays, hidden until then.
        if let Ok((attr, _)) = self.attr_of(ino) {
            self.departed.lock().put(ino, attr);
        }
        self.aliases.lock().begin(target, newname, ino);
        let aliases = self.aliases.clone();
        let invalidator: Arc<Invalidator> = self.invalidator.clone();
        let given = (newparent, newname.to_string());
        let queued = self.account.queue_move(QueuedMove {
            msg,
            target,
            done: Box::new(move |r| {
                if let Err(e) = &r {
                    log::warn!("moving UID {}: {e}", msg.uid);
                }
                aliases.lock().arrived(
                    target,
                    &given.1,
                    ino,
                    r.as_ref().map(|at| *at).map_err(drop),
                );
                // The kernel holds the name `mv` gave with the entry lifetime of the old
                // name: from now on it asks (the alias, or nothing if the move failed).
                invalidator.send(Invalidation::Entry {
                    parent: given.0,
                    name: given.1.into(),
                });
                invalidator.send(Invalidation::Inode(given.0));
            }),
        });
        if let Err(e) = queued {
            self.aliases.lock().abandon(target, newname, ino);
            return Err(e);
        }
        // The old name names nothing now (if it was an alias, until its folder's listing).
        if let Some(source) = self.selectable_mailbox(parent) {
            self.aliases.lock().name_left(source, name);
        }
        Ok(Renamed::Queued)
    }

    /// RENAME a folder; its directory keeps its inode under the new name.
    fn rename_dir(
        &self,
        dir: Ino,
        newparent: Ino,
        newname: &str,
        flags: RenameFlags,
    ) -> Result<()> {
        let (id, old_path) = {
            let tree = self.tree.lock();
            let node = tree
                .dir(dir)
                .ok_or_else(|| Error::NoEntry("directory".into()))?;
            (node.mailbox, tree.path(dir))
        };
        let old_path = old_path.ok_or_else(|| Error::NoEntry("directory".into()))?;
        let Some((id, _)) = id else {
            return Err(Error::NotPermitted(
                "this directory is implied by its folders and has no name on the server".into(),
            ));
        };
        let from = self.account.require_name(id)?;
        if from.as_str() == "INBOX" {
            return Err(Error::NotPermitted("INBOX cannot be renamed".into()));
        }
        let exists = self
            .tree
            .lock()
            .dir(newparent)
            .is_some_and(|n| n.children.contains_key(newname));
        if exists {
            return Err(if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                Error::AlreadyExists(newname.into())
            } else {
                Error::NotEmpty(format!("{newname} exists"))
            });
        }
        let to = self.child_mailbox_name(newparent, newname)?;
        let mut new_path = self
            .tree
            .lock()
            .path(newparent)
            .ok_or_else(|| Error::NoEntry("directory".into()))?;
        new_path.push(newname.to_string());
        if new_path.starts_with(&old_path) {
            return Err(Error::InvalidInput(
                "a folder cannot move into itself".into(),
            ));
        }
        // Moves queued into B (or below it) would otherwise run after the RENAME and fail, or
        // land in a B created anew: they go first.
        self.settle_below(id);
        self.account.rename_mailbox(id, &to)?;
        self.tree.lock().rename_path(&old_path, &new_path);
        self.resync_after(&format!("renamed {from} to {to}"));
        Ok(())
    }

    /// The server name of a new folder `component` under directory `parent`.
    fn child_mailbox_name(&self, parent: Ino, component: &str) -> Result<MailboxName> {
        let plain = unescape_component(component);
        if plain.is_empty() || plain.chars().any(char::is_control) {
            return Err(Error::InvalidInput(format!(
                "folder name {component:?} is empty or holds a control character"
            )));
        }
        let (path, delimiter) = {
            let tree = self.tree.lock();
            let path = tree
                .path(parent)
                .ok_or_else(|| Error::NoEntry("directory".into()))?;
            (path, tree.delimiter_under(parent))
        };
        if let Some(d) = delimiter {
            if plain.contains(d) {
                return Err(Error::InvalidInput(format!(
                    "folder name {component:?} holds the hierarchy delimiter {d:?}"
                )));
            }
        }
        let mut parts: Vec<String> = path.iter().map(|c| unescape_component(c)).collect();
        if !parts.is_empty() && delimiter.is_none() {
            return Err(Error::NotPermitted(
                "the server has no folder hierarchy".into(),
            ));
        }
        parts.push(plain);
        let full = parts.join(&delimiter.map(String::from).unwrap_or_default());
        self.account.new_mailbox_name(&full)
    }
}
