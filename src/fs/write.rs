//! The writing half of the filesystem: `rm`, `mv`, `mkdir`, `rmdir`, new files, setattr.
//!
//! - `rm` of a message asks the store to remove exactly that UID ([`Account::delete_message`]).
//! - `mv` of a message to another folder is queued ([`Account::queue_move`]) and answered at
//!   once; the thread that answered then sends the whole burst as one `UID MOVE` per folder
//!   pair. The kernel's entry for the new name is dropped once the move is done, since the
//!   message shows in its new folder under the UID the server gave it. A rename within a
//!   folder is refused (EPERM): a message's name is its UID.
//! - `mkdir`, `rmdir` and `mv` of a directory are CREATE, DELETE and RENAME; INBOX can be
//!   neither removed nor renamed, and a name holding a control character or the hierarchy
//!   delimiter is refused (EINVAL).
//! - A new file is a *draft*: spooled to an unlinked temporary file while it is written, and
//!   APPENDed when it is closed (flush), with the flags set on it by `setfattr` and the mtime
//!   set by `touch -d`/`cp -p` as INTERNALDATE; the spool file is streamed to the server, never
//!   read into memory whole. The APPEND's error is `close()`'s error, and a draft that failed
//!   is gone. Afterwards the message shows under its new UID's name.
//!
//! [`Account::delete_message`]: crate::store::Account::delete_message
//! [`Account::queue_move`]: crate::store::Account::queue_move

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, RenameFlags, TimeOrNow};

use crate::error::{Error, Result};
use crate::fs::inode::{Ino, InoKind};
use crate::fs::invalidate::{Invalidation, Invalidator};
use crate::fs::read::unix_time;
use crate::fs::tree::{parse_message_file_name, unescape_component};
use crate::fs::ImapFs;
use crate::imap::types::{Flag, MailboxName};
use crate::store::{FlagEdit, MailboxId, MessageBody, NewMessage, QueuedMove};

/// Largest new message accepted (servers refuse far smaller ones).
const MAX_DRAFT: u64 = 1 << 30;

/// How a rename went.
pub enum Renamed {
    Done,
    /// A message move was queued: the caller replies, then flushes the queue.
    Queued,
}

/// New files being written, by inode.
#[derive(Default)]
pub struct Drafts {
    by_ino: HashMap<Ino, Draft>,
    next: u32,
}

struct Draft {
    /// The process that created it: only its closes send the message. A child that
    /// inherited the descriptor (fork, then exec closing it) also flushes.
    owner: Option<u32>,
    /// APPENDed: no more writes.
    sealed: bool,
    parent: Ino,
    mailbox: MailboxId,
    /// Its name while it is being written; `None` once APPENDed or failed (hidden).
    name: Option<String>,
    file: Arc<File>,
    len: u64,
    flags: Vec<Flag>,
    mtime: Option<i64>,
    dirty: bool,
    created: SystemTime,
}

impl ImapFs {
    pub(crate) fn draft_by_name(&self, parent: Ino, name: &str) -> Option<FileAttr> {
        let drafts = self.drafts.lock();
        let (ino, d) = drafts
            .by_ino
            .iter()
            .find(|(_, d)| d.parent == parent && d.name.as_deref() == Some(name))?;
        Some(self.draft_attr_of(*ino, d))
    }

    pub(crate) fn draft_attr(&self, ino: Ino) -> Option<FileAttr> {
        let drafts = self.drafts.lock();
        drafts.by_ino.get(&ino).map(|d| self.draft_attr_of(ino, d))
    }

    fn draft_attr_of(&self, ino: Ino, d: &Draft) -> FileAttr {
        let t = d.mtime.map(unix_time).unwrap_or(d.created);
        self.attr(ino, FileType::RegularFile, 0o644, d.len, t)
    }

    /// The drafts shown in a directory listing.
    pub(crate) fn drafts_in(&self, dir: Ino) -> Vec<(Ino, FileType, OsString)> {
        let drafts = self.drafts.lock();
        drafts
            .by_ino
            .iter()
            .filter(|(_, d)| d.parent == dir)
            .filter_map(|(i, d)| Some((*i, FileType::RegularFile, d.name.clone()?.into())))
            .collect()
    }

    /// `create`: a new draft in a folder that holds messages.
    pub(crate) fn create_draft(&self, parent: Ino, name: &str, pid: u32) -> Result<FileAttr> {
        self.refuse_if_read_only()?;
        let Some(mailbox) = self.selectable_mailbox(parent) else {
            return Err(Error::NotPermitted(
                "new files can only be messages in a folder that holds messages".into(),
            ));
        };
        if name.contains('\0') {
            return Err(Error::InvalidInput("name holds a NUL".into()));
        }
        let file = spool_file()?;
        let mut drafts = self.drafts.lock();
        drafts.next = drafts.next.wrapping_add(1).max(1);
        let ino = Ino::draft(drafts.next);
        let d = Draft {
            owner: thread_group(pid),
            sealed: false,
            parent,
            mailbox,
            name: Some(name.to_string()),
            file: Arc::new(file),
            len: 0,
            flags: Vec::new(),
            mtime: None,
            dirty: true,
            created: SystemTime::now(),
        };
        let attr = self.draft_attr_of(ino, &d);
        drafts.by_ino.insert(ino, d);
        Ok(attr)
    }

    pub(crate) fn write_draft(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<u32> {
        if !matches!(ino.kind(), InoKind::Draft(_)) {
            return Err(Error::NotPermitted("messages are immutable".into()));
        }
        let mut drafts = self.drafts.lock();
        let d = drafts
            .by_ino
            .get_mut(&ino)
            .ok_or_else(|| Error::NoEntry("draft".into()))?;
        if d.sealed {
            return Err(Error::NotPermitted(
                "the message was stored when the file was closed; it is immutable now".into(),
            ));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > MAX_DRAFT {
            return Err(Error::InvalidInput(format!(
                "a message of more than {MAX_DRAFT} bytes"
            )));
        }
        d.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io("writing the spool file", e))?;
        d.len = d.len.max(end);
        d.dirty = true;
        Ok(data.len() as u32)
    }

    pub(crate) fn read_draft(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        let (file, len) = {
            let drafts = self.drafts.lock();
            let d = drafts
                .by_ino
                .get(&ino)
                .ok_or_else(|| Error::NoEntry("draft".into()))?;
            (d.file.clone(), d.len)
        };
        let n = u64::from(size).min(len.saturating_sub(offset)) as usize;
        let mut buf = vec![0; n];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io("reading the spool file", e))?;
        Ok(buf)
    }

    /// `flush` (a close) or `fsync` by process `pid`: APPEND a draft that has unsent content,
    /// if `pid` belongs to the process that created it (`None`: at release, whoever). The
    /// APPEND's error is close()'s.
    pub(crate) fn flush_draft(&self, ino: Ino, pid: Option<u32>) -> Result<()> {
        if !matches!(ino.kind(), InoKind::Draft(_)) {
            return Ok(());
        }
        let (file, len, mailbox, parent, name, flags, mtime) = {
            let mut drafts = self.drafts.lock();
            let Some(d) = drafts.by_ino.get_mut(&ino) else {
                return Ok(());
            };
            // An empty draft is not sent: a shell's `> file` opens, dup2()s and closes the
            // first descriptor (a flush) before anything is written.
            if !d.dirty || d.name.is_none() || d.sealed || d.len == 0 {
                return Ok(());
            }
            if let Some(pid) = pid {
                if d.owner.is_some() && thread_group(pid) != d.owner {
                    return Ok(());
                }
            }
            d.dirty = false;
            d.sealed = true;
            (
                d.file.clone(),
                d.len,
                d.mailbox,
                d.parent,
                d.name.take(),
                d.flags.clone(),
                d.mtime,
            )
        };
        let r = self.account.append(
            mailbox,
            NewMessage {
                body: MessageBody::File { file, len },
                flags,
                date: mtime,
            },
        );
        // Appended or failed, the draft's name is gone: the message shows under its UID.
        if let Some(name) = name {
            self.invalidate(Invalidation::Entry {
                parent,
                name: name.into(),
            });
        }
        self.invalidate(Invalidation::Inode(parent));
        r.map(drop)
    }

    /// `release`: the last close. A draft never flushed is sent now (errors only logged).
    pub(crate) fn release_draft(&self, ino: Ino) {
        if !matches!(ino.kind(), InoKind::Draft(_)) {
            return;
        }
        if let Err(e) = self.flush_draft(ino, None) {
            log::warn!("new message not stored: {e}");
        }
        self.drafts.lock().by_ino.remove(&ino);
    }

    /// Flags set on a draft with setfattr before it is closed.
    pub(crate) fn edit_draft_flags(&self, ino: Ino, edit: &FlagEdit) -> Result<()> {
        let mut drafts = self.drafts.lock();
        let d = drafts
            .by_ino
            .get_mut(&ino)
            .ok_or_else(|| Error::NoEntry("draft".into()))?;
        match edit {
            FlagEdit::Replace(f) => d.flags = f.clone(),
            FlagEdit::Delta { add, remove } => {
                d.flags.retain(|f| !remove.contains(f));
                for f in add {
                    if !d.flags.contains(f) {
                        d.flags.push(f.clone());
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn draft_flags(&self, ino: Ino) -> Option<Vec<Flag>> {
        self.drafts.lock().by_ino.get(&ino).map(|d| d.flags.clone())
    }

    /// `setattr`: a draft can be truncated and dated; a message or folder changes in no way
    /// a setattr can express (EPERM), but a no-op is fine.
    pub(crate) fn set_attr(
        &self,
        ino: Ino,
        mode: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
    ) -> Result<(FileAttr, Duration)> {
        if let InoKind::Draft(_) = ino.kind() {
            let mut drafts = self.drafts.lock();
            let d = drafts
                .by_ino
                .get_mut(&ino)
                .ok_or_else(|| Error::NoEntry("draft".into()))?;
            if let Some(size) = size {
                if size > MAX_DRAFT {
                    return Err(Error::InvalidInput("too large".into()));
                }
                d.file
                    .set_len(size)
                    .map_err(|e| Error::io("truncating the spool file", e))?;
                d.len = size;
                d.dirty = true;
            }
            if let Some(t) = mtime {
                let t = match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                d.mtime = Some(match t.duration_since(UNIX_EPOCH) {
                    Ok(d) => d.as_secs() as i64,
                    Err(e) => -(e.duration().as_secs() as i64),
                });
            }
            let attr = self.draft_attr_of(ino, d);
            return Ok((attr, Duration::ZERO));
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
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "{full} was created but the server does not list it"
                ))
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
        if selectable {
            self.account.settle(id);
            let index = self.account.index(id, Duration::ZERO)?;
            let n = index.read().messages.len();
            if n > 0 {
                return Err(Error::NotEmpty(format!("{name} holds {n} messages")));
            }
        }
        self.account.delete_mailbox(id)?;
        self.sync_tree()
    }

    /// `unlink`: remove a message (or discard a draft).
    pub(crate) fn remove_file(&self, parent: Ino, name: &str) -> Result<()> {
        self.refuse_if_read_only()?;
        {
            let mut drafts = self.drafts.lock();
            let found = drafts
                .by_ino
                .iter_mut()
                .find(|(_, d)| d.parent == parent && d.name.as_deref() == Some(name));
            if let Some((_, d)) = found {
                d.name = None;
                d.dirty = false;
                return Ok(());
            }
        }
        if parse_message_file_name(name).is_none() {
            return Err(Error::NoEntry(name.into()));
        }
        let (_, msg) = self.message_named(parent, name)?;
        self.account.delete_message(msg)
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
        // RENAME_NOREPLACE needs no check: a move replaces nothing in the target. The
        // message arrives under its new UID's name; a message the target may have under
        // `newname` stays as it is.
        if let Ok((attr, _)) = self.attr_of(ino) {
            self.departed.lock().put(ino, attr);
        }
        let invalidator: Arc<Invalidator> = self.invalidator.clone();
        let stale = (newparent, newname.to_string());
        self.account.queue_move(QueuedMove {
            msg,
            target,
            done: Box::new(move |r| {
                if let Err(e) = &r {
                    log::warn!("moving UID {}: {e}", msg.uid);
                }
                // The kernel holds the name `mv` gave it; the message has its UID's name.
                invalidator.send(Invalidation::Entry {
                    parent: stale.0,
                    name: stale.1.into(),
                });
                invalidator.send(Invalidation::Inode(stale.0));
            }),
        })?;
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
        self.account.rename_mailbox(id, &to)?;
        self.tree.lock().rename_path(&old_path, &new_path);
        self.sync_tree()
    }

    /// Rename a draft (an editor's save-as); returns false if `name` is no draft.
    fn rename_draft(&self, parent: Ino, name: &str, newparent: Ino, newname: &str) -> Result<bool> {
        let is_draft = self
            .drafts
            .lock()
            .by_ino
            .values()
            .any(|d| d.parent == parent && d.name.as_deref() == Some(name));
        if !is_draft {
            return Ok(false);
        }
        let mailbox = self.selectable_mailbox(newparent).ok_or_else(|| {
            Error::NotPermitted(
                "new files can only be messages in a folder that holds messages".into(),
            )
        })?;
        let mut drafts = self.drafts.lock();
        if let Some(d) = drafts
            .by_ino
            .values_mut()
            .find(|d| d.parent == parent && d.name.as_deref() == Some(name))
        {
            d.parent = newparent;
            d.mailbox = mailbox;
            d.name = Some(newname.to_string());
        }
        Ok(true)
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

/// The thread group (process) of a thread id, from /proc.
fn thread_group(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// An unlinked temporary file to spool a new message to.
fn spool_file() -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let tmp = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir);
    match tmp {
        Ok(f) => Ok(f),
        Err(_) => {
            // No O_TMPFILE on this filesystem: a named file, unlinked at once.
            let path = dir.join(format!(
                "imapfs-draft-{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| Error::io("creating a spool file", e))?;
            let _ = std::fs::remove_file(&path);
            Ok(f)
        }
    }
}
