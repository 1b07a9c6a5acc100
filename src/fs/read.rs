//! The reading half of the filesystem: names, attributes, listings, open and read.
//!
//! Directories come from the mailbox list ([`ImapFs::sync_tree`] rebuilds the tree when the
//! store's list is newer), message files from each mailbox's index. Before a mailbox is
//! listed, moves still queued for it are sent ([`Account::settle`]), so a listing right after
//! `mv` is exact; a lookup does not wait (the kernel looks up the target name of every
//! rename) but treats a message queued to move away as gone.
//!
//! [`Account::settle`]: crate::store::Account::settle

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, FopenFlags, OpenAccMode, OpenFlags};

use crate::error::{Error, Result};
use crate::fs::inode::{Ino, InoKind, ROOT};
use crate::fs::invalidate::Invalidation;
use crate::fs::tree::{message_file_name, parse_message_file_name};
use crate::fs::{ImapFs, Listing};
use crate::store::{MailboxId, MessageMeta, MessageRef};

/// Attribute lifetime of directories (their contents are trusted for `dir_ttl`).
const DIR_ATTR_TTL: Duration = Duration::from_secs(1);

impl ImapFs {
    /// Refresh the directory tree from the server's LIST if it is older than the TTL.
    pub(crate) fn sync_tree(&self) -> Result<()> {
        let list = self.account.mailboxes(self.opts.dir_ttl)?;
        let mut built = self.built_from.lock();
        if built.as_ref().is_some_and(|b| Arc::ptr_eq(b, &list)) {
            return Ok(()); // the tree already reflects this listing
        }
        let shown: Vec<_> = if self.opts.subscribed_only {
            list.iter()
                .filter(|m| m.subscribed || m.name.as_str() == "INBOX")
                .cloned()
                .collect()
        } else {
            list.to_vec()
        };
        let mut tree = self.tree.lock();
        let before = tree.present_dirs();
        tree.rebuild(&shown, |mb| self.account.mailbox_id(&mb.name));
        let gone: Vec<_> = before
            .into_iter()
            .filter(|(ino, _, _)| tree.dir(*ino).is_none())
            .collect();
        drop(tree);
        *built = Some(list);
        for (_, parent, name) in gone {
            self.invalidate(Invalidation::Entry {
                parent,
                name: name.into(),
            });
        }
        Ok(())
    }

    /// The entry for `name` in directory `parent`, with its attribute TTL.
    pub(crate) fn lookup_entry(&self, parent: Ino, name: &str) -> Result<(FileAttr, Duration)> {
        // Hook: `.search`, `.parts` and everything below them (fs::views).
        if let Some(r) = self.view_lookup(parent, name) {
            return r;
        }
        if let Some(attr) = self.draft_by_name(parent, name) {
            return Ok((attr, Duration::ZERO));
        }
        self.sync_tree()?;
        let child = self
            .tree
            .lock()
            .dir(parent)
            .and_then(|n| n.children.get(name).copied());
        if let Some(child) = child {
            return Ok((self.dir_attr(child), DIR_ATTR_TTL));
        }
        let (Some(uid), Some(mb)) = (
            parse_message_file_name(name),
            self.selectable_mailbox(parent),
        ) else {
            return Err(Error::NoEntry(name.into()));
        };
        // No settle here: the kernel looks up the target name of every rename, and waiting
        // for queued moves would send them one by one.
        let index = self.account.index(mb, self.opts.dir_ttl)?;
        let (validity, meta) = {
            let ix = index.read();
            let meta = ix
                .messages
                .get(&uid)
                .cloned()
                .ok_or_else(|| Error::NoEntry(name.into()))?;
            (ix.validity, meta)
        };
        let msg = MessageRef {
            mailbox: mb,
            validity,
            uid,
        };
        if self.account.is_moving(msg) {
            return Err(Error::NoEntry(name.into()));
        }
        let generation = self.tree.lock().generation(mb, validity);
        let ino = Ino::message(generation, uid);
        Ok((self.message_attr(ino, &meta), self.opts.message_ttl))
    }

    /// The attributes of any inode.
    pub(crate) fn attr_of(&self, ino: Ino) -> Result<(FileAttr, Duration)> {
        match ino.kind() {
            InoKind::Dir => {
                if ino != ROOT && self.tree.lock().dir(ino).is_none() {
                    return Err(Error::NoEntry(format!("directory {}", ino.0)));
                }
                Ok((self.dir_attr(ino), DIR_ATTR_TTL))
            }
            InoKind::Message { .. } => match self.message_of(ino) {
                Ok((_, meta)) => Ok((self.message_attr(ino, &meta), self.opts.message_ttl)),
                Err(e) => match self.departed.lock().get(&ino) {
                    Some(attr) => Ok((*attr, Duration::ZERO)),
                    None => Err(e),
                },
            },
            InoKind::Draft(_) => self
                .draft_attr(ino)
                .map(|a| (a, Duration::ZERO))
                .ok_or_else(|| Error::NoEntry("draft".into())),
            // Hook: fs::views.
            InoKind::View(v) => self.view_attr(v),
        }
    }

    /// The entries of a directory: `.`, `..`, child mailboxes, then messages by UID.
    pub(crate) fn listing(&self, ino: Ino) -> Result<Listing> {
        // Hook: fs::views.
        if let InoKind::View(v) = ino.kind() {
            return self.view_listing(v);
        }
        self.sync_tree()?;
        let (parent, children, mailbox) = {
            let tree = self.tree.lock();
            let node = tree
                .dir(ino)
                .ok_or_else(|| Error::NoEntry(format!("directory {}", ino.0)))?;
            (node.parent, node.children.clone(), node.mailbox)
        };
        let mut out = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in children {
            out.push((child, FileType::Directory, OsString::from(name)));
        }
        if let Some((mb, true)) = mailbox {
            self.account.settle(mb);
            let index = self.account.index(mb, self.opts.dir_ttl)?;
            let (validity, uids): (_, Vec<_>) = {
                let ix = index.read();
                (ix.validity, ix.messages.keys().copied().collect())
            };
            let generation = self.tree.lock().generation(mb, validity);
            out.extend(uids.into_iter().map(|uid| {
                (
                    Ino::message(generation, uid),
                    FileType::RegularFile,
                    OsString::from(message_file_name(uid)),
                )
            }));
        }
        out.extend(self.drafts_in(ino));
        Ok(out)
    }

    /// Open a file: messages for reading only; drafts as they are.
    pub(crate) fn open_file(&self, ino: Ino, flags: OpenFlags) -> Result<FopenFlags> {
        match ino.kind() {
            InoKind::Dir => Err(Error::NotPermitted("is a directory".into())),
            // Hook: fs::views.
            InoKind::View(v) => self.view_open(v, flags),
            InoKind::Draft(_) => {
                self.draft_attr(ino)
                    .ok_or_else(|| Error::NoEntry("draft".into()))?;
                Ok(FopenFlags::empty())
            }
            InoKind::Message { .. } => {
                if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                    self.refuse_if_read_only()?;
                    return Err(Error::NotPermitted("messages are immutable".into()));
                }
                let (msg, meta) = self.message_of(ino)?;
                // Where the body's length is not known to match what the kernel was told,
                // bypass its page cache (reads then end where the body does).
                match self.account.open_message(msg)? {
                    Some(len) if len == meta.listed_size => Ok(FopenFlags::FOPEN_KEEP_CACHE),
                    Some(_) => {
                        self.invalidate(Invalidation::Inode(ino));
                        Ok(FopenFlags::FOPEN_DIRECT_IO)
                    }
                    None => Ok(FopenFlags::FOPEN_DIRECT_IO),
                }
            }
        }
    }

    pub(crate) fn read_file(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        match ino.kind() {
            InoKind::Draft(_) => self.read_draft(ino, offset, size),
            InoKind::Message { .. } => {
                let (msg, _) = self.message_of(ino)?;
                self.account.read(msg, offset, u64::from(size))
            }
            InoKind::Dir => Err(Error::InvalidInput("a directory".into())),
            // Hook: fs::views.
            InoKind::View(v) => self.view_read(v, offset, size),
        }
    }

    /// The message an inode names and its metadata, from the cached index (no round trip).
    pub(crate) fn message_of(&self, ino: Ino) -> Result<(MessageRef, MessageMeta)> {
        let InoKind::Message { generation, uid } = ino.kind() else {
            return Err(Error::NoEntry(format!("inode {:#x}", ino.0)));
        };
        let (mailbox, validity) = self
            .tree
            .lock()
            .generation_info(generation)
            .ok_or_else(|| Error::NoEntry(format!("inode {:#x}", ino.0)))?;
        let msg = MessageRef {
            mailbox,
            validity,
            uid,
        };
        let meta = self
            .account
            .message_meta(msg)
            .ok_or_else(|| Error::NoMessage(format!("UID {uid}")))?;
        Ok((msg, meta))
    }

    /// The message named `name` in directory `parent`, looked up as `lookup` would.
    pub(crate) fn message_named(&self, parent: Ino, name: &str) -> Result<(Ino, MessageRef)> {
        let (attr, _) = self.lookup_entry(parent, name)?;
        let ino = Ino(attr.ino.0);
        let (msg, _) = self.message_of(ino)?;
        Ok((ino, msg))
    }

    /// The mailbox of a directory inode, if it can hold messages.
    pub(crate) fn selectable_mailbox(&self, dir: Ino) -> Option<MailboxId> {
        match self.tree.lock().dir(dir)?.mailbox {
            Some((id, true)) => Some(id),
            _ => None,
        }
    }

    pub(crate) fn dir_attr(&self, ino: Ino) -> FileAttr {
        self.attr(ino, FileType::Directory, 0o755, 0, UNIX_EPOCH)
    }

    pub(crate) fn message_attr(&self, ino: Ino, meta: &MessageMeta) -> FileAttr {
        let t = unix_time(meta.internal_date);
        let perm = if self.opts.read_only { 0o444 } else { 0o644 };
        self.attr(ino, FileType::RegularFile, perm, meta.size(), t)
    }

    pub(crate) fn attr(
        &self,
        ino: Ino,
        kind: FileType,
        perm: u16,
        size: u64,
        time: SystemTime,
    ) -> FileAttr {
        let perm = if self.opts.read_only {
            perm & 0o555
        } else {
            perm
        };
        FileAttr {
            ino: ino.into(),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

/// A time in seconds since the epoch (negative before it).
pub(crate) fn unix_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}
