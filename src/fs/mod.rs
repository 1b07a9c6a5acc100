//! The FUSE adapter: kernel requests in, store questions out, errno values back.
//!
//! [`ImapFs`] implements `fuser::Filesystem`. Directories come from the mailbox list (see
//! [`tree`]), message files from each mailbox's index; reads go to
//! [`crate::store::Account::read`]. Message files are immutable, so they are opened with
//! `FOPEN_KEEP_CACHE` and long attribute TTLs and the kernel's page cache serves repeated
//! reads; listings are trusted for `dir_ttl`. A directory handle holds a snapshot of the
//! listing taken at `opendir`, so `readdir` offsets stay consistent while mail arrives.
//!
//! Errors are logged with their cause and mapped to errno by [`crate::Error::errno`].

pub mod tree;
pub mod xattr;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use parking_lot::Mutex;

use crate::error::Error;
use crate::imap::types::Uid;
use crate::store::{Account, BodyLength, MailboxId, MessageMeta};
use tree::{Tree, ROOT};

/// Attribute and entry lifetimes handed to the kernel.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// How long a listing (mailboxes, messages) is trusted.
    pub dir_ttl: Duration,
    /// How long a message file's attributes are trusted (content never changes).
    pub message_ttl: Duration,
}

impl Default for FsOptions {
    fn default() -> FsOptions {
        FsOptions {
            dir_ttl: Duration::from_secs(10),
            message_ttl: Duration::from_secs(60),
        }
    }
}

/// A directory listing: inode, kind and name of each entry, in readdir order.
type Listing = Vec<(u64, FileType, OsString)>;

/// The filesystem.
pub struct ImapFs {
    account: Arc<Account>,
    opts: FsOptions,
    tree: Mutex<Tree>,
    /// The mailbox list the tree was last built from.
    built_from: Mutex<Option<Arc<Vec<crate::store::MailboxInfo>>>>,
    /// Message inodes whose body is longer than listed and not yet read to the end.
    longer: Mutex<std::collections::HashSet<u64>>,
    /// Inodes whose kernel-cached attributes and pages must be dropped; a dedicated thread
    /// (see [`invalidation_thread`]) tells the kernel, never a FUSE callback itself.
    invalidations: Mutex<Option<std::sync::mpsc::Sender<u64>>>,
    dir_handles: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
    owner: (u32, u32),
}

impl ImapFs {
    pub fn new(account: Arc<Account>, opts: FsOptions) -> ImapFs {
        // SAFETY: getuid/getgid cannot fail.
        let owner = unsafe { (libc::getuid(), libc::getgid()) };
        ImapFs {
            account,
            opts,
            tree: Mutex::new(Tree::default()),
            built_from: Mutex::new(None),
            longer: Mutex::new(std::collections::HashSet::new()),
            invalidations: Mutex::new(None),
            dir_handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            owner,
        }
    }

    /// A channel whose receiving end should go to [`invalidation_thread`] once the session
    /// runs (the notifier exists only then).
    pub fn invalidation_channel(&self) -> std::sync::mpsc::Receiver<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.invalidations.lock() = Some(tx);
        rx
    }

    /// Ask the kernel (through the invalidation thread) to forget what it cached of `ino`.
    fn invalidate(&self, ino: u64) {
        if let Some(tx) = &*self.invalidations.lock() {
            let _ = tx.send(ino);
        }
    }

    /// Refresh the directory tree from the server's LIST if it is older than the TTL.
    fn sync_tree(&self) -> Result<(), Error> {
        let list = self.account.mailboxes(self.opts.dir_ttl)?;
        let mut built = self.built_from.lock();
        if built.as_ref().is_some_and(|b| Arc::ptr_eq(b, &list)) {
            return Ok(()); // the tree already reflects this listing
        }
        self.tree
            .lock()
            .rebuild(&list, |mb| self.account.mailbox_id(&mb.name));
        *built = Some(list);
        Ok(())
    }

    fn dir_attr(&self, ino: u64) -> FileAttr {
        self.attr(ino, FileType::Directory, 0o755, 0, UNIX_EPOCH)
    }

    fn message_attr(&self, ino: u64, meta: &MessageMeta) -> FileAttr {
        let t = if meta.internal_date >= 0 {
            UNIX_EPOCH + Duration::from_secs(meta.internal_date as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(meta.internal_date.unsigned_abs())
        };
        self.attr(ino, FileType::RegularFile, 0o444, meta.size, t)
    }

    fn attr(&self, ino: u64, kind: FileType, perm: u16, size: u64, time: SystemTime) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
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

    /// The mailbox of a directory inode, if it can hold messages.
    fn selectable_mailbox(&self, dir: u64) -> Option<MailboxId> {
        match self.tree.lock().dir(dir)?.mailbox {
            Some((id, true)) => Some(id),
            _ => None,
        }
    }

    /// Metadata of a message inode from the cached index (no round trip).
    fn message_meta(&self, ino: u64) -> Result<(MailboxId, u32, Uid, MessageMeta), Errno> {
        let (mb, validity, uid) = self.tree.lock().message(ino).ok_or(Errno::ENOENT)?;
        let index = self.account.cached_index(mb).ok_or(Errno::ENOENT)?;
        if index.validity != validity {
            return Err(Errno::ENOENT);
        }
        let meta = index.messages.get(&uid).ok_or(Errno::ENOENT)?.clone();
        Ok((mb, validity.get(), uid, meta))
    }

    /// Look up a message file by name in a mailbox directory.
    fn lookup_message(&self, mb: MailboxId, uid: Uid) -> Result<(u64, MessageMeta), Error> {
        let index = self.account.index(mb, self.opts.dir_ttl)?;
        let meta = index
            .messages
            .get(&uid)
            .ok_or_else(|| Error::NotFound(format!("UID {uid}")))?;
        let generation = self.tree.lock().generation(mb, index.validity);
        Ok((tree::message_ino(generation, uid), meta.clone()))
    }

    /// The entries of a directory: `.`, `..`, child mailboxes, then messages by UID.
    fn listing(&self, ino: u64) -> Result<Listing, Error> {
        self.sync_tree()?;
        let (parent, children, mailbox) = {
            let tree = self.tree.lock();
            let node = tree
                .dir(ino)
                .ok_or_else(|| Error::NotFound("directory".into()))?;
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
            let index = self.account.index(mb, self.opts.dir_ttl)?;
            let generation = self.tree.lock().generation(mb, index.validity);
            for uid in index.messages.keys() {
                out.push((
                    tree::message_ino(generation, *uid),
                    FileType::RegularFile,
                    OsString::from(tree::message_file_name(*uid)),
                ));
            }
        }
        Ok(out)
    }
}

/// Log an error with its context and turn it into an errno.
fn errno(op: &str, e: &Error) -> Errno {
    let n = e.errno();
    if n == libc::ENOENT {
        log::debug!("{op}: {e}");
    } else {
        log::warn!("{op}: {e}");
    }
    Errno::from_i32(n)
}

impl Filesystem for ImapFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        if let Err(e) = self.sync_tree() {
            return reply.error(errno("lookup", &e));
        }
        let child = self
            .tree
            .lock()
            .dir(parent.0)
            .and_then(|n| n.children.get(name).copied());
        if let Some(child) = child {
            return reply.entry_with_ttls(
                &Duration::from_secs(1),
                &self.opts.dir_ttl,
                &self.dir_attr(child),
                Generation(0),
            );
        }
        let (Some(uid), Some(mb)) = (
            tree::parse_message_file_name(name),
            self.selectable_mailbox(parent.0),
        ) else {
            return reply.error(Errno::ENOENT);
        };
        match self.lookup_message(mb, uid) {
            Ok((ino, meta)) => reply.entry_with_ttls(
                &self.opts.message_ttl,
                &self.opts.dir_ttl,
                &self.message_attr(ino, &meta),
                Generation(0),
            ),
            Err(e) => reply.error(errno("lookup", &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if !tree::is_message_ino(ino.0) {
            if ino.0 != ROOT && self.tree.lock().dir(ino.0).is_none() {
                return reply.error(Errno::ENOENT);
            }
            return reply.attr(&Duration::from_secs(1), &self.dir_attr(ino.0));
        }
        match self.message_meta(ino.0) {
            Ok((.., meta)) => reply.attr(&self.opts.message_ttl, &self.message_attr(ino.0, &meta)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if !tree::is_message_ino(ino.0) {
            return reply.error(Errno::EISDIR);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let (mb, validity, uid, meta) = match self.message_meta(ino.0) {
            Ok(m) => m,
            Err(e) => return reply.error(e),
        };
        let Some(validity) = crate::imap::types::UidValidity::new(validity) else {
            return reply.error(Errno::EIO);
        };
        // Where the body's length differs from the listed size, the kernel's idea of the file
        // size is wrong: bypass its page cache (reads then end where the body does) and have
        // it forget the attributes.
        match self.account.open_message(mb, validity, uid, meta.size) {
            Ok(BodyLength::AsListed) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(BodyLength::Corrected(_)) => {
                self.invalidate(ino.0);
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
            }
            Ok(BodyLength::Longer) => {
                self.longer.lock().insert(ino.0);
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(errno("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (mb, validity, uid, meta) = match self.message_meta(ino.0) {
            Ok(m) => m,
            Err(e) => return reply.error(e),
        };
        let Some(validity) = crate::imap::types::UidValidity::new(validity) else {
            return reply.error(Errno::EIO);
        };
        match self
            .account
            .read(mb, validity, uid, meta.size, offset, u64::from(size))
        {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno("read", &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if tree::is_message_ino(ino.0) {
            return reply.error(Errno::ENOTDIR);
        }
        match self.listing(ino.0) {
            Ok(entries) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.dir_handles.lock().insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = self.dir_handles.lock().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: fuser::ReplyEmpty,
    ) {
        self.dir_handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !tree::is_message_ino(ino.0) {
            return reply.error(Errno::NO_XATTR);
        }
        let (mb, validity, uid, meta) = match self.message_meta(ino.0) {
            Ok(m) => m,
            Err(e) => return reply.error(e),
        };
        let Some(name) = name.to_str() else {
            return reply.error(Errno::NO_XATTR);
        };
        let headers = || {
            let v = crate::imap::types::UidValidity::new(validity)
                .ok_or_else(|| Error::Protocol("UIDVALIDITY 0".into()))?;
            self.account.headers(mb, v, uid)
        };
        match xattr::value(name, &meta, uid.get(), validity, headers) {
            Ok(Some(v)) => reply_xattr(reply, size, &v),
            Ok(None) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !tree::is_message_ino(ino.0) {
            return reply_xattr(reply, size, &[]);
        }
        if let Err(e) = self.message_meta(ino.0) {
            return reply.error(e);
        }
        reply_xattr(reply, size, &xattr::list());
    }

    fn access(
        &self,
        _req: &Request,
        ino: INodeNo,
        mask: fuser::AccessFlags,
        reply: fuser::ReplyEmpty,
    ) {
        let _ = ino;
        if mask.contains(fuser::AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        reply.ok();
    }
}

/// Forward invalidations to the kernel until the filesystem goes away. Runs on its own thread:
/// calling the notifier from a FUSE callback would deadlock.
pub fn invalidation_thread(rx: std::sync::mpsc::Receiver<u64>, notifier: fuser::Notifier) {
    for ino in rx {
        if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0) {
            // ENOENT: the kernel no longer knows the inode, nothing to drop.
            log::debug!("invalidating inode {ino:#x}: {e}");
        }
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
