//! The reading half of the filesystem: names, attributes, listings, open and read.
//!
//! Directories come from the mailbox list ([`ImapFs::sync_tree`] rebuilds the tree when the
//! store's list is newer), message files from each mailbox's index. Before a mailbox is
//! listed, moves still queued for it are sent ([`Account::settle`]), so a listing right after
//! `mv` is exact; a lookup does not wait (the kernel looks up the target name of every
//! rename) but treats a message queued to move away as gone.
//!
//! Names after a move (see [`crate::fs::aliases`]): a lookup finds a name a rename gave
//! before any UID name (with no entry lifetime, so the kernel asks again once it ends), and
//! does not find a message that arrived by a move under its UID name while an alias names
//! it; a listing of a settled folder ends its aliases. Operations on an inode act on where
//! its message is now ([`ImapFs::message_of`]), waiting for its queued move first.
//!
//! [`Account::settle`]: crate::store::Account::settle

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, FopenFlags, OpenAccMode, OpenFlags};

use crate::error::{Error, Result};
use crate::fs::aliases::Named;
use crate::fs::inode::{Ino, InoKind, ROOT};
use crate::fs::invalidate::Invalidation;
use crate::fs::listing::{LazyEntries, Listing, MessageRun};
use crate::fs::shared;
use crate::fs::tree::{parse_message_file_name, Tree};
use crate::fs::{DirEntry, ImapFs};
use crate::imap::types::Uid;
use crate::store::read::ReadBytes;
use crate::store::{MailboxId, MailboxInfo, MessageMeta, MessageRef};

/// Attribute lifetime of directories (their contents are trusted for `dir_ttl`).
const DIR_ATTR_TTL: Duration = Duration::from_secs(1);

/// Entry and attribute lifetime handed to the kernel where the store's watcher pushes every
/// change as an invalidation: long, since nothing goes stale unannounced.
pub const LIVE_TTL: Duration = Duration::from_secs(3600);

impl ImapFs {
    /// Refresh the directory tree from the server's LIST if it is older than the TTL.
    pub(crate) fn sync_tree(&self) -> Result<()> {
        // Taken before the list is read, so that two callers cannot rebuild out of order (the
        // one holding an older list last, undoing a folder change the other one showed).
        let mut built = self.built_from.lock();
        let list = self.account.mailboxes(self.opts.dir_ttl)?;
        if built.as_ref().is_some_and(|b| Arc::ptr_eq(b, &list)) {
            return Ok(()); // the tree already reflects this listing
        }
        let shown = shown_mailboxes(&list, self.opts.subscribed_only);
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

    /// The entry for `name` in directory `parent`, with its attribute and entry TTLs.
    pub(crate) fn lookup_entry(
        &self,
        parent: Ino,
        name: &str,
    ) -> Result<(FileAttr, Duration, Duration)> {
        let entry_ttl = || self.entry_ttl(parent);
        // Hook: `.search`, `.parts` and everything below them (fs::views).
        if let Some(r) = self.view_lookup(parent, name) {
            return r.map(|(attr, ttl)| (attr, ttl, entry_ttl()));
        }
        if let Some(attr) = self.draft_by_name(parent, name) {
            return Ok((attr, Duration::ZERO, entry_ttl()));
        }
        // Hook: fs::maildir.
        if let Some(r) = self.maildir_lookup(parent, name) {
            return r;
        }
        self.sync_tree()?;
        let child = self
            .tree
            .lock()
            .dir(parent)
            .and_then(|n| n.children.get(name).copied());
        if let Some(child) = child {
            return Ok((self.dir_attr(child), DIR_ATTR_TTL, entry_ttl()));
        }
        let Some(mb) = self.selectable_mailbox(parent) else {
            return Err(Error::NoEntry(name.into()));
        };
        // A name a move gave comes first, and is asked for again every time.
        let named = self.aliases.lock().named(mb, name);
        match named {
            Some(Named::Message(ino)) => {
                let (attr, _) = self.attr_of(ino)?;
                return Ok((attr, Duration::ZERO, Duration::ZERO));
            }
            Some(Named::Gone) => return Err(Error::NoEntry(name.into())),
            None => {}
        }
        let Some(uid) = parse_message_file_name(name) else {
            return Err(Error::NoEntry(name.into()));
        };
        // No settle here: the kernel looks up the target name of every rename, and waiting
        // for queued moves would send them one by one.
        let index = self.account.index(mb, self.opts.dir_ttl)?;
        let (validity, meta) = {
            let ix = index.read();
            let meta = ix
                .messages()
                .get(&uid)
                .cloned()
                .ok_or_else(|| Error::NoEntry(name.into()))?;
            (ix.validity(), meta)
        };
        let msg = MessageRef {
            mailbox: mb,
            validity,
            uid,
        };
        // Queued to move away, or arrived by a move and named by its alias until the listing.
        if self.account.is_moving(msg) || self.aliases.lock().is_shadowed(msg) {
            return Err(Error::NoEntry(name.into()));
        }
        let generation = self.tree.lock().generation(mb, validity);
        let ino = self.message_ino(generation, uid, &meta);
        Ok((
            self.message_attr(ino, &meta),
            self.message_ttl(mb),
            entry_ttl(),
        ))
    }

    /// How long the kernel may keep names under directory `parent`: long where the watcher
    /// pushes every change (the folder list and, for a folder of messages, its messages),
    /// else `dir_ttl`.
    pub(crate) fn entry_ttl(&self, parent: Ino) -> Duration {
        let live = self.opts.idle
            && self.account.is_live()
            && self
                .selectable_mailbox(parent)
                .is_none_or(|mb| self.account.is_watched(mb));
        if live {
            LIVE_TTL
        } else {
            self.opts.dir_ttl
        }
    }

    /// How long the kernel may keep a message's attributes (its size can be corrected, and
    /// the correction is pushed).
    fn message_ttl(&self, mailbox: MailboxId) -> Duration {
        if self.opts.idle && self.account.is_watched(mailbox) {
            LIVE_TTL
        } else {
            self.opts.message_ttl
        }
    }

    /// The attributes of any inode.
    pub(crate) fn attr_of(&self, ino: Ino) -> Result<(FileAttr, Duration)> {
        // Hook: fs::maildir.
        if let Some(r) = self.maildir_attr(ino) {
            return r;
        }
        match ino.kind() {
            InoKind::Dir => {
                if ino != ROOT && self.tree.lock().dir(ino).is_none() {
                    return Err(Error::NoEntry(format!("directory {}", ino.0)));
                }
                Ok((self.dir_attr(ino), DIR_ATTR_TTL))
            }
            // No wait for a queued move: `mv` stats each file right after its rename.
            InoKind::Message { .. } => match self.message_at(ino, false) {
                Ok((msg, meta)) => {
                    Ok((self.message_attr(ino, &meta), self.message_ttl(msg.mailbox)))
                }
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

    /// The entries of a directory with their attributes: `.`, `..`, child mailboxes, then
    /// messages by UID, then files being written.
    pub(crate) fn listing(&self, ino: Ino) -> Result<Listing> {
        // Hook: fs::views.
        if let InoKind::View(v) = ino.kind() {
            return self.view_listing(v);
        }
        // Hook: fs::maildir.
        if let Some(r) = self.maildir_listing(ino) {
            return r.map(Listing::from);
        }
        self.sync_tree()?;
        let (parent, children, mailbox) = {
            let tree = self.tree.lock();
            let node = tree
                .dir(ino)
                .ok_or_else(|| Error::NoEntry(format!("directory {}", ino.0)))?;
            (node.parent, node.children.clone(), node.mailbox)
        };
        let ttl = self.entry_ttl(ino);
        let dir = |ino: Ino, name: OsString| DirEntry {
            ino,
            kind: FileType::Directory,
            name,
            attr: self.dir_attr(ino),
            ttl,
        };
        let mut out = vec![dir(ino, ".".into()), dir(parent, "..".into())];
        for (name, child) in children {
            out.push(dir(child, name.into()));
        }
        if self.is_maildir() {
            // Hook: fs::maildir (subfolders named cur, new, tmp are shown escaped).
            out.extend(self.maildir_folder_entries(ino));
            return Ok(out.into());
        }
        let mut messages = None;
        if let Some((mb, true)) = mailbox {
            self.account.settle(mb);
            let index = self.account.index(mb, self.opts.dir_ttl)?;
            // The moves are sent: the names they gave end, UID names are exact again.
            let ended = self.aliases.lock().end_listing(mb);
            for name in ended {
                self.invalidate(Invalidation::Entry {
                    parent: ino,
                    name: name.into(),
                });
            }
            // The UIDs and their generation under one lock: a snapshot of 4 bytes a message.
            let (validity, uids) = {
                let ix = index.read();
                (ix.validity(), ix.messages().keys().copied().collect())
            };
            let generation = self.tree.lock().generation(mb, validity);
            let ttl = ttl.min(self.message_ttl(mb));
            messages = Some(Box::new(MessageRun {
                index,
                validity,
                generation,
                uids,
                ttl,
            }) as Box<dyn LazyEntries>);
        }
        Ok(Listing {
            before: out,
            messages,
            after: self.draft_entries(ino),
        })
    }

    /// Open a file: messages for reading only (drafts: [`ImapFs::open_draft`]).
    pub(crate) fn open_file(&self, ino: Ino, flags: OpenFlags) -> Result<FopenFlags> {
        match ino.kind() {
            InoKind::Dir => Err(Error::NotPermitted("is a directory".into())),
            // Hook: fs::views.
            InoKind::View(v) => self.view_open(v, flags),
            InoKind::Draft(_) => match self.delivered_as(ino) {
                // Hook: fs::maildir (a draft delivered by a rename reads as its message).
                Some(msg) => {
                    self.account.open_message(msg)?;
                    Ok(FopenFlags::FOPEN_DIRECT_IO)
                }
                // Opened with a handle of their own (`fs::drafts`), before this is reached.
                None => Err(Error::NotPermitted("a new file being written".into())),
            },
            InoKind::Message { .. } => {
                if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                    self.refuse_if_read_only()?;
                    return Err(Error::NotPermitted("messages are immutable".into()));
                }
                let (msg, meta) = self.message_of(ino)?;
                // Where the body's length is not known to match what the kernel was told,
                // bypass its page cache (reads then end where the body does).
                let cache = match self.account.open_message(msg)? {
                    Some(len) if len == meta.listed_size => FopenFlags::FOPEN_KEEP_CACHE,
                    Some(_) => {
                        self.invalidate(Invalidation::Inode(ino));
                        FopenFlags::FOPEN_DIRECT_IO
                    }
                    None => FopenFlags::FOPEN_DIRECT_IO,
                };
                // A message's close has nothing to do (a FLUSH of it is a no-op): the kernel
                // need not send one, a request fewer per file read.
                Ok(cache | FopenFlags::FOPEN_NOFLUSH)
            }
        }
    }

    pub(crate) fn read_file(&self, ino: Ino, offset: u64, size: u32) -> Result<ReadBytes> {
        match ino.kind() {
            InoKind::Draft(_) => match self.delivered_as(ino) {
                // Hook: fs::maildir.
                Some(msg) => self.account.read(msg, offset, u64::from(size)),
                None => self.read_draft(ino, offset, size).map(ReadBytes::from),
            },
            InoKind::Message { .. } => {
                let (msg, _) = self.message_of(ino)?;
                self.account.read(msg, offset, u64::from(size))
            }
            InoKind::Dir => Err(Error::InvalidInput("a directory".into())),
            // Hook: fs::views.
            InoKind::View(v) => self.view_read(v, offset, size).map(ReadBytes::from),
        }
    }

    /// The message an inode names and its metadata: where it is now if it moved (after its
    /// queued move is sent), else the one its number names.
    pub(crate) fn message_of(&self, ino: Ino) -> Result<(MessageRef, MessageMeta)> {
        self.message_at(ino, true)
    }

    /// [`ImapFs::message_of`], waiting for a queued move of the message or not (then it is
    /// still where it was, as far as the cached index goes). No round trip unless it waits.
    pub(crate) fn message_at(&self, ino: Ino, wait: bool) -> Result<(MessageRef, MessageMeta)> {
        let InoKind::Message { generation, uid } = ino.kind() else {
            return Err(Error::NoEntry(format!("inode {:#x}", ino.0)));
        };
        let (mailbox, validity) = self
            .tree
            .lock()
            .generation_info(generation)
            .ok_or_else(|| Error::NoEntry(format!("inode {:#x}", ino.0)))?;
        let numbered = MessageRef {
            mailbox,
            validity,
            uid,
        };
        // A few rounds: each wait lets a queued move finish, after which it may have moved.
        for _ in 0..4 {
            let moved = self.aliases.lock().location(ino);
            let msg = moved.unwrap_or(numbered);
            // A move that told us where the message went is still on its way into the
            // index (the caller hears first, the index second): wait for that too, or the
            // target's index does not list the new UID yet.
            let arriving = moved.is_some() && self.account.is_moving(numbered);
            if wait && (arriving || self.account.is_moving(msg)) {
                self.account.settle(msg.mailbox);
                continue;
            }
            if let Some(meta) = self.account.message_meta(msg) {
                return Ok((msg, meta));
            }
            if wait && moved.is_some() {
                // The target's index may be older than the move: ask it.
                self.account.index(msg.mailbox, self.opts.dir_ttl)?;
                if let Some(meta) = self.account.message_meta(msg) {
                    return Ok((msg, meta));
                }
            }
            if moved.is_none() {
                // One message, one inode (fs::shared): the copy it is numbered after went,
                // another copy still names it.
                if let Some(found) = self.other_copy(ino) {
                    return Ok(found);
                }
            }
            return Err(Error::NoMessage(format!("UID {}", msg.uid)));
        }
        Err(Error::NoMessage(format!("UID {uid} is still moving")))
    }

    /// The message named `name` in directory `parent`, looked up as `lookup` would. Of a
    /// message in several folders (one inode, fs::shared), the copy in `parent`: what acts on
    /// a name acts on that folder's copy only.
    pub(crate) fn message_named(&self, parent: Ino, name: &str) -> Result<(Ino, MessageRef)> {
        let (attr, _, _) = self.lookup_entry(parent, name)?;
        let ino = Ino(attr.ino.0);
        let (msg, _) = self.message_of(ino)?;
        if self.shared.lock().object(ino).is_none() {
            return Ok((ino, msg));
        }
        let mb = self.selectable_mailbox(parent);
        let uid = parse_message_file_name(name);
        let (Some(mb), Some(uid)) = (mb, uid) else {
            return Ok((ino, msg));
        };
        if mb == msg.mailbox || self.aliases.lock().named(mb, name).is_some() {
            // The inode's own copy, or a name a move gave (it names where the move went).
            return Ok((ino, msg));
        }
        let validity = self.account.index(mb, self.opts.dir_ttl)?.read().validity();
        let own = MessageRef {
            mailbox: mb,
            validity,
            uid,
        };
        match self.account.message_meta(own) {
            Some(_) => Ok((ino, own)),
            None => Err(Error::NoEntry(name.into())),
        }
    }

    /// The inode of message `uid` of `generation`: its own number, or, for a message the
    /// mount shows in several folders, the one inode they share (fs::shared).
    pub(crate) fn message_ino(&self, generation: u32, uid: Uid, meta: &MessageMeta) -> Ino {
        let own = Ino::message(generation, uid);
        match shared::sharing_id(meta) {
            Some(id) if !self.is_maildir() => self.shared.lock().ino(id, own),
            _ => own,
        }
    }

    /// A copy still held of the message a shared inode stands for, with its metadata.
    fn other_copy(&self, ino: Ino) -> Option<(MessageRef, MessageMeta)> {
        let id = self.shared.lock().object(ino)?.clone();
        self.account
            .copies(&id)
            .into_iter()
            .find_map(|c| Some((c, self.account.message_meta(c)?)))
    }

    /// The links of a message file: the folders the mount holds a listing of that have it,
    /// where it shares an inode (fs::shared); else 1.
    fn message_links(&self, meta: &MessageMeta) -> u32 {
        match shared::sharing_id(meta) {
            Some(id) if !self.is_maildir() => {
                let n = self.account.copy_count(id);
                u32::try_from(n).unwrap_or(u32::MAX).max(1)
            }
            _ => 1,
        }
    }

    /// The mailbox of a directory inode, if it can hold messages.
    pub(crate) fn selectable_mailbox(&self, dir: Ino) -> Option<MailboxId> {
        match self.tree.lock().dir(dir)?.mailbox {
            Some((id, true)) => Some(id),
            _ => None,
        }
    }

    pub(crate) fn dir_attr(&self, ino: Ino) -> FileAttr {
        self.attr(ino, FileType::Directory, 0o755, 0, self.started)
    }

    pub(crate) fn message_attr(&self, ino: Ino, meta: &MessageMeta) -> FileAttr {
        let t = unix_time(meta.internal_date);
        let perm = if self.opts.read_only { 0o444 } else { 0o644 };
        let mut attr = self.attr(ino, FileType::RegularFile, perm, meta.size(), t);
        attr.nlink = self.message_links(meta);
        attr
    }

    /// The entries of the drafts being written in directory `dir` (never cached: a draft's
    /// size changes as it is written).
    pub(crate) fn draft_entries(&self, dir: Ino) -> Vec<DirEntry> {
        self.drafts_in(dir)
            .into_iter()
            .filter_map(|(draft, kind, name)| {
                Some(DirEntry {
                    ino: draft,
                    kind,
                    name,
                    attr: self.draft_attr(draft)?,
                    ttl: Duration::ZERO,
                })
            })
            .collect()
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

/// The mailboxes the mount shows: all, or the subscribed ones and INBOX.
fn shown_mailboxes(list: &[MailboxInfo], subscribed_only: bool) -> Vec<MailboxInfo> {
    list.iter()
        .filter(|m| !subscribed_only || m.subscribed || m.name.as_str() == "INBOX")
        .cloned()
        .collect()
}

/// The directory names the kernel may hold that the server's new folder `list` (carried by
/// the store's change) no longer has: another client deleted or renamed them. Reads the
/// tree, changes it not: it is rebuilt on its next use.
pub(crate) fn gone_dirs(
    list: &[MailboxInfo],
    tree: &parking_lot::Mutex<Tree>,
    subscribed_only: bool,
) -> Vec<Invalidation> {
    let mut paths = std::collections::HashSet::new();
    let shown = Tree::new(tree.lock().maildir_names());
    for mb in shown_mailboxes(list, subscribed_only) {
        let path = shown.display_path(mb.name.as_str(), mb.delimiter);
        for depth in 1..=path.len() {
            paths.insert(path[..depth].to_vec());
        }
    }
    let tree = tree.lock();
    tree.present_dirs()
        .into_iter()
        .filter(|(ino, _, _)| tree.path(*ino).is_some_and(|p| !paths.contains(&p)))
        .map(|(_, parent, name)| Invalidation::Entry {
            parent,
            name: name.into(),
        })
        .collect()
}
