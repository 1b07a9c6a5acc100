//! The FUSE adapter: kernel requests in, store questions out, errno values back.
//!
//! [`ImapFs`] implements `fuser::Filesystem`; this file only dispatches each request to the
//! part that owns it and maps errors to errno ([`crate::Error::errno`]):
//!
//! - [`inode`]: what an inode number names (directory, message, draft);
//! - [`tree`]: directories from the mailbox list, names and their escaping;
//! - [`read`]: lookup, attributes, listings, open and read;
//! - [`write`](mod@write): rm, mv, mkdir, rmdir, setattr;
//! - [`aliases`]: the names moves gave, until their folder is listed again, and where a
//!   moved inode's message is now;
//! - [`shared`]: one inode for a Gmail message in several folders (hard links);
//! - [`drafts`]: new files, spooled and APPENDed when a writer closes them;
//! - [`xattr`]: flags, headers and folder status as extended attributes;
//! - [`layout`]: the seam where a layout ([`maildir`]: `cur/`, `new/`, `tmp/`) claims the
//!   requests it answers differently, before the default way;
//! - [`views`]: the read-only, unlisted `.search` and `.parts` directories;
//! - [`invalidate`]: the thread that tells the kernel what to forget.
//!
//! Message files never change content, so they are opened with `FOPEN_KEEP_CACHE` and long
//! attribute TTLs and the kernel's page cache serves repeated reads; listings are trusted for
//! `dir_ttl`, and every change we make or hear of is pushed to the kernel as an invalidation.

pub mod aliases;
pub(crate) mod caller;
pub mod drafts;
pub mod inode;
pub mod invalidate;
pub mod layout;
pub(crate) mod listing;
pub mod maildir;
pub mod read;
pub mod shared;
pub mod tree;
pub mod views;
pub mod write;
pub mod xattr;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

use crate::error::Error;
use crate::store::{Account, MailboxInfo};
use inode::Ino;
use invalidate::{Invalidation, Invalidator, Work};
use listing::Listing;
pub use listing::ReaddirPlus;
use tree::Tree;

/// Attribute and entry lifetimes handed to the kernel, and what the mount allows.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// How long a listing (mailboxes, messages) is trusted.
    pub dir_ttl: Duration,
    /// How long a message file's attributes are trusted (content never changes).
    pub message_ttl: Duration,
    /// Every change is refused with EROFS.
    pub read_only: bool,
    /// Show only subscribed folders (and their parents).
    pub subscribed_only: bool,
    /// Other clients' changes are pushed by the store's watcher: while it covers a folder,
    /// the kernel keeps its entries and attributes for [`read::LIVE_TTL`] instead of
    /// `dir_ttl` / `message_ttl`.
    pub idle: bool,
    /// How folders show their messages.
    pub layout: layout::Layout,
    /// When listings come with attributes ([`kernel_init`]).
    pub readdirplus: ReaddirPlus,
}

impl Default for FsOptions {
    fn default() -> FsOptions {
        FsOptions {
            dir_ttl: Duration::from_secs(10),
            message_ttl: Duration::from_secs(60),
            read_only: false,
            subscribed_only: false,
            idle: true,
            layout: layout::Layout::Eml,
            readdirplus: ReaddirPlus::Always,
        }
    }
}

/// One entry of a directory listing, with what readdirplus hands the kernel.
pub(crate) struct DirEntry {
    pub ino: Ino,
    pub kind: FileType,
    pub name: OsString,
    pub attr: FileAttr,
    /// Entry and attribute lifetime (readdirplus has one for both).
    pub ttl: Duration,
}

/// The filesystem.
pub struct ImapFs {
    account: Arc<Account>,
    opts: FsOptions,
    tree: Arc<Mutex<Tree>>,
    /// The mailbox list the tree was last built from.
    built_from: Mutex<Option<Arc<Vec<MailboxInfo>>>>,
    invalidator: Arc<Invalidator>,
    dir_handles: Mutex<HashMap<u64, Arc<Listing>>>,
    listings_served: listing::ListingCounts,
    drafts: Mutex<drafts::Drafts>,
    /// Signalled when a draft's send ends (see [`drafts`]: writers' flushes take turns).
    drafts_turn: parking_lot::Condvar,
    views: views::Views,
    /// Attributes of messages just moved away, for the `stat` a program does right after
    /// `rename` (the source inode is gone from its folder once the move is sent).
    departed: Mutex<lru::LruCache<Ino, fuser::FileAttr>>,
    /// Names moves gave, and where moved inodes are now (shared with the moves' callbacks).
    aliases: Arc<Mutex<aliases::Aliases>>,
    /// The inodes of messages shown in several folders (Gmail).
    shared: Arc<Mutex<shared::SharedInodes>>,
    next_fh: AtomicU64,
    owner: (u32, u32),
    /// What the Maildir layout remembers (unused in the default layout).
    maildir: maildir::MaildirState,
    /// When the mount started: the time of folder directories (not 1970).
    started: SystemTime,
}

impl ImapFs {
    pub fn new(account: Arc<Account>, opts: FsOptions) -> ImapFs {
        // SAFETY: getuid/getgid cannot fail.
        let owner = unsafe { (libc::getuid(), libc::getgid()) };
        let tree = Tree::new(opts.layout == layout::Layout::Maildir);
        ImapFs {
            account,
            opts,
            tree: Arc::new(Mutex::new(tree)),
            built_from: Mutex::new(None),
            invalidator: Arc::new(Invalidator::default()),
            dir_handles: Mutex::new(HashMap::new()),
            listings_served: listing::ListingCounts::default(),
            drafts: Mutex::new(drafts::Drafts::default()),
            drafts_turn: parking_lot::Condvar::new(),
            views: views::Views::default(),
            departed: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(4096).expect("non-zero"),
            )),
            aliases: Arc::new(Mutex::new(aliases::Aliases::default())),
            shared: Arc::new(Mutex::new(shared::SharedInodes::default())),
            next_fh: AtomicU64::new(1),
            owner,
            maildir: maildir::MaildirState::default(),
            started: SystemTime::now(),
        }
    }

    /// Start feeding the invalidation thread: returns what [`invalidate::run`] needs once the
    /// session runs (the notifier exists only then). Store changes are forwarded to it too.
    pub fn invalidation_channel(
        &self,
    ) -> std::io::Result<(std::sync::mpsc::Receiver<Work>, Arc<Mutex<Tree>>)> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.invalidator.connect(tx.clone());
        let changes = self.account.subscribe();
        let tree = self.tree.clone();
        let shared = self.shared.clone();
        let subscribed_only = self.opts.subscribed_only;
        std::thread::Builder::new()
            .name("changes".into())
            .spawn(move || {
                for c in changes {
                    if let crate::store::Change::Mailboxes(listed) = &c {
                        // Folders another client deleted or renamed: their names go now,
                        // not when a TTL runs out (the tree itself is rebuilt on next use).
                        for inv in read::gone_dirs(&listed.list, &tree, subscribed_only) {
                            if tx.send(Work::Kernel(inv)).is_err() {
                                return;
                            }
                        }
                    }
                    // A change to one copy of a message with several links (fs::shared).
                    let links = shared::link_changes(&c, &tree, &shared);
                    if tx.send(Work::Store(c)).is_err() {
                        break;
                    }
                    for inv in links {
                        if tx.send(Work::Kernel(inv)).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok((rx, self.tree.clone()))
    }

    fn invalidate(&self, inv: Invalidation) {
        self.invalidator.send(inv);
    }

    /// EROFS for a change: on a read-only mount, and while the mount is offline or
    /// resyncing after an outage (`store/link.rs`).
    fn refuse_if_read_only(&self) -> Result<(), Error> {
        if self.opts.read_only {
            Err(Error::ReadOnly)
        } else if !self.account.is_writable() {
            Err(Error::OfflineReadOnly)
        } else {
            Ok(())
        }
    }

    /// The errno of a failed open or read of a message: offline, a body that is not cached
    /// is one line in the log naming it (the outage itself was told once, by the pool).
    fn body_errno(&self, op: &str, ino: Ino, e: &Error) -> Errno {
        if !matches!(e, Error::Unavailable { .. }) || !self.account.is_offline() {
            return errno(op, e);
        }
        let what = match self.message_at(ino, false) {
            Ok((msg, _)) => match self.account.mailbox_name(msg.mailbox) {
                Some(name) => format!("{name}/{}", msg.uid),
                None => format!("UID {}", msg.uid),
            },
            Err(_) => format!("inode {:#x}", ino.0),
        };
        let offline = self.account.link().since.elapsed().unwrap_or_default();
        log::info!(
            "{op} {what}: not cached, and the server cannot be reached (offline for {} s)",
            offline.as_secs()
        );
        Errno::EIO
    }
}

/// What imapfs asks of the kernel when the session starts. Public so that the benchmark's
/// in-memory floor asks the same (see [`crate::mount::fuse_config`]).
pub fn kernel_init(config: &mut KernelConfig, readdirplus: ReaddirPlus) {
    let _ = config.set_max_readahead(1 << 20);
    // `ls -l` in one pass: entries come with their attributes (no lookup per file).
    if let Err(e) = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS) {
        log::info!("the kernel has no readdirplus ({e:?})");
    } else if readdirplus == ReaddirPlus::Auto {
        if let Err(e) = config.add_capabilities(fuser::InitFlags::FUSE_READDIRPLUS_AUTO) {
            log::info!("the kernel has no readdirplus=auto ({e:?})");
        }
    }
}

/// Log an error with its context and turn it into an errno. A missing entry is routine, an
/// outage was told once by the pool when it began, and a change refused offline is what the
/// user was told at mount (or by the pool): none is a warning per request.
fn errno(op: &str, e: &Error) -> Errno {
    let n = e.errno();
    if n == libc::ENOENT
        || matches!(
            e,
            Error::Unavailable { .. } | Error::OfflineReadOnly | Error::Offline(_)
        )
    {
        log::debug!("{op}: {e}");
    } else {
        log::warn!("{op}: {e}");
    }
    Errno::from_i32(n)
}

/// A name from the kernel as UTF-8 (mailbox and message names always are).
fn utf8(name: &OsStr) -> Result<&str, Error> {
    name.to_str()
        .ok_or_else(|| Error::NoEntry(format!("{name:?} is not UTF-8")))
}

impl Filesystem for ImapFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        kernel_init(config, self.opts.readdirplus);
        Ok(())
    }

    fn destroy(&mut self) {
        // Moves answered but still queued are sent before the mount goes away.
        self.account.settle_all();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match utf8(name).and_then(|n| self.lookup_entry(parent.into(), n)) {
            Ok((attr, ttl, entry_ttl)) => {
                reply.entry_with_ttls(&ttl, &entry_ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(errno("lookup", &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino.into()) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.set_attr(ino.into(), mode, size, mtime) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(errno("setattr", &e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = utf8(name).and_then(|n| {
            self.refuse_in_views(parent.into(), n)?; // hook: fs::views
            self.mkdir_entry(parent.into(), n)
        });
        match r {
            Ok((attr, ttl)) => {
                reply.entry_with_ttls(&ttl, &self.opts.dir_ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(errno("mkdir", &e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = utf8(name).and_then(|n| {
            self.refuse_in_views(parent.into(), n)?; // hook: fs::views
            self.unlink_entry(parent.into(), n)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", &e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = utf8(name).and_then(|n| {
            self.refuse_in_views(parent.into(), n)?; // hook: fs::views
            self.rmdir_entry(parent.into(), n)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", &e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let names = utf8(name).and_then(|a| {
            let b = utf8(newname)?;
            // Hook: fs::views.
            self.refuse_in_views(parent.into(), a)?;
            self.refuse_in_views(newparent.into(), b)?;
            Ok((a, b))
        });
        let r = names
            .and_then(|(a, b)| self.rename_entry(parent.into(), a, newparent.into(), b, flags));
        match r {
            Ok(write::Renamed::Done) => reply.ok(),
            Ok(write::Renamed::Queued) => {
                reply.ok();
                // The reply is out: this thread now sends the burst of moves it belongs to.
                self.account.flush_moves();
            }
            Err(e) => reply.error(errno("rename", &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // A message has one name; mutt falls back to rename on EPERM.
        reply.error(Errno::EPERM);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        // Hook: the search results' symlinks (fs::views).
        match self.view_readlink(ino.into()) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno("readlink", &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_entry(ino.into(), flags, req.pid()) {
            Ok((fh, fopen)) => reply.opened(FileHandle(fh), fopen),
            Err(e) => reply.error(self.body_errno("open", ino.into(), &e)),
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
        match self.read_file(ino.into(), offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(self.body_errno("read", ino.into(), &e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_draft(ino.into(), offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", &e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.flush_entry(ino.into(), fh.0, req.pid(), drafts::FlushKind::Close) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("close", &e)),
        }
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.flush_entry(ino.into(), fh.0, req.pid(), drafts::FlushKind::Fsync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsync", &e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Maildir clients fsync the directory after a rename: moves still queued are sent
        // first; every other change is on the server before its request is answered.
        self.account.settle_all();
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_entry(ino.into(), fh.0);
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let r = utf8(name).and_then(|n| {
            self.refuse_in_views(parent.into(), n)?; // hook: fs::views
            self.create_entry(parent.into(), n, req.pid())
        });
        match r {
            Ok((attr, fh)) => reply.created(
                &Duration::ZERO,
                &attr,
                Generation(0),
                FileHandle(fh),
                fuser::FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno("create", &e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let ino = Ino::from(ino);
        if !ino.is_dir() && !ino.is_view() {
            return reply.error(Errno::ENOTDIR);
        }
        match self.listing(ino) {
            Ok(entries) => {
                let fh = self
                    .next_fh
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.dir_handles.lock().insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), fuser::FopenFlags::empty());
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
        self.listings_served.served(false);
        entries.walk(self, offset, |next, e| {
            reply.add(e.ino.into(), next, e.kind, &e.name)
        });
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // Each entry handed over counts as a lookup for the kernel; inodes here need no
        // forget accounting (directories live as long as the mount, messages are computed).
        let Some(entries) = self.dir_handles.lock().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        self.listings_served.served(true);
        entries.walk(self, offset, |next, e| {
            reply.add(e.ino.into(), next, &e.name, &e.ttl, &e.attr, Generation(0))
        });
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dir_handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BSIZE: u64 = 4096;
        let (blocks, free) = match self.account.quota() {
            Ok(Some(q)) => (q.limit / BSIZE, q.limit.saturating_sub(q.used) / BSIZE),
            Ok(None) => (0, 0),
            Err(e) => {
                log::debug!("statfs: {e}");
                (0, 0)
            }
        };
        reply.statfs(blocks, free, free, 0, 0, BSIZE as u32, 255, BSIZE as u32);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // Namespaces imapfs has no handler for (`security.*`, `system.*`, `trusted.*`) are
        // EOPNOTSUPP, as the VFS answers for a filesystem without them, with no lock and no
        // I/O. Not ENODATA: `ls -l` probes `security.selinux` and `system.posix_acl_access`
        // on every file, and on EOPNOTSUPP it stops probing for the rest of the device (two
        // requests per listing instead of two per file; docs/architecture.md, Performance).
        let Some(name) = name.to_str().filter(|n| n.starts_with("user.")) else {
            return reply.error(Errno::EOPNOTSUPP);
        };
        match self.xattr_value(ino.into(), name) {
            Ok(Some(v)) => reply_xattr(reply, size, &v),
            Ok(None) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.xattr_names(ino.into()) {
            Ok(names) => reply_xattr(reply, size, &names),
            Err(e) => reply.error(errno("listxattr", &e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.set_xattr(ino.into(), name, Some(value)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("setxattr", &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.set_xattr(ino.into(), name, None) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("removexattr", &e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if self.opts.read_only && mask.contains(fuser::AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        reply.ok();
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
