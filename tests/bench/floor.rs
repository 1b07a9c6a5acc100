//! The FUSE floor: what FUSE itself costs, measured with the filesystem that does nothing else.
//!
//! [`MemFs`] already knows every folder, name, size, time and byte (a [`Content`] per folder)
//! and answers from memory: readdirplus with every entry's attributes, long TTLs, opens with
//! `FOPEN_KEEP_CACHE` so the page cache serves re-reads, and the `ls -l` xattr probes answered
//! at once. It mounts with imapfs's own session settings and init
//! ([`imapfs::mount::fuse_config`], [`imapfs::fs::kernel_init`]), so the two cannot drift: a
//! figure of imapfs divided by the floor's is imapfs's own cost.
//!
//! Layout, as imapfs shows a folder: `/<folder>/<uid>.eml`, uids 1..=n. Inodes: root 1,
//! folder k `2 + k`, message uid u of folder k `(k + 1) << 32 | u`.
//!
//! Like the tests' oracle, it shares no code with what it measures beyond those two settings
//! (its attributes and listings are its own, though shaped like imapfs's).
//!
//! [`Knobs`] switch one kernel request off at a time ("ask the kernel for less"), so each
//! one's gain is measured on the floor before imapfs adopts it.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyXattr, Request,
};

/// A folder's messages, uids 1..=len.
pub trait Content: Send + Sync + 'static {
    fn len(&self) -> u32;
    fn size(&self, uid: u32) -> u64;
    /// INTERNALDATE, seconds since the epoch.
    fn time(&self, uid: u32) -> i64;
    fn bytes(&self, uid: u32) -> Cow<'_, [u8]>;
}

/// Messages held in memory: (bytes, INTERNALDATE), uid = position + 1.
impl Content for Vec<(Arc<[u8]>, i64)> {
    fn len(&self) -> u32 {
        self.len() as u32
    }
    fn size(&self, uid: u32) -> u64 {
        self[uid as usize - 1].0.len() as u64
    }
    fn time(&self, uid: u32) -> i64 {
        self[uid as usize - 1].1
    }
    fn bytes(&self, uid: u32) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self[uid as usize - 1].0)
    }
}

/// How the floor answers what imapfs could answer differently: one experiment each.
/// `Knobs::default()` asks nothing of the kernel; [`Knobs::IMAPFS`] is what imapfs adopted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knobs {
    /// Answer `security.*` / `system.*` probes with EOPNOTSUPP (coreutils' `ls` then stops
    /// asking for the rest of the device) instead of ENODATA.
    pub probes_unsupported: bool,
    /// Open messages with `FOPEN_NOFLUSH`: `close` sends no FLUSH.
    pub noflush: bool,
    /// Answer `open` with ENOSYS: the kernel stops sending opens (and their releases) for the
    /// whole mount (`FUSE_NO_OPEN_SUPPORT`).
    pub no_open: bool,
    /// Open directories with `FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE`: the kernel keeps listings.
    pub cache_dir: bool,
    /// Ask for `FUSE_READDIRPLUS_AUTO`: the kernel uses readdirplus for a directory's first
    /// chunk and then only while its entries are being looked up (`ls -l`), plain readdir
    /// otherwise (`ls`).
    pub readdirplus_auto: bool,
}

impl Knobs {
    /// What imapfs does (src/fs/mod.rs getxattr, src/fs/read.rs open_file): the floor every
    /// imapfs figure is divided by.
    pub const IMAPFS: Knobs = Knobs {
        probes_unsupported: true,
        noflush: true,
        no_open: false,
        cache_dir: false,
        readdirplus_auto: false,
    };
}

/// A mounted floor; unmounted on drop.
pub struct Floor {
    session: Option<fuser::BackgroundSession>,
    dir: PathBuf,
    mnt: PathBuf,
    /// Requests served, by kind (see [`Counts`]).
    pub counts: Arc<Counts>,
}

impl Floor {
    /// Mount `folders` on a fresh temporary directory with imapfs's own session settings.
    pub fn mount(folders: Vec<(String, Box<dyn Content>)>, knobs: Knobs) -> Floor {
        let dir = crate::common::unique_temp_dir("floor");
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).expect("floor mount point");
        let counts = Arc::new(Counts::default());
        let fs = MemFs {
            folders,
            knobs,
            counts: counts.clone(),
            owner: unsafe { (libc::getuid(), libc::getgid()) },
        };
        // The same options, threads and init as `imapfs mount` with its defaults.
        let cfg = imapfs::mount::fuse_config("floor".into(), false, false, 4);
        let session = fuser::Session::new(fs, &mnt, &cfg).expect("mount the floor");
        let session = session.spawn().expect("serve the floor");
        Floor {
            session: Some(session),
            dir,
            mnt,
            counts,
        }
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if s.umount_and_join().is_err() {
                let _ = std::process::Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(&self.mnt)
                    .status();
            }
        }
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Requests that reached the floor, by kind: what the kernel still asks.
#[derive(Default, Debug)]
pub struct Counts {
    pub lookup: AtomicU64,
    pub getattr: AtomicU64,
    pub getxattr: AtomicU64,
    pub open: AtomicU64,
    pub flush: AtomicU64,
    pub release: AtomicU64,
    pub read: AtomicU64,
    pub opendir: AtomicU64,
    pub readdir: AtomicU64,
}

impl Counts {
    /// One line, then every counter back to zero.
    pub fn take(&self) -> String {
        let all = [
            ("lookup", &self.lookup),
            ("getattr", &self.getattr),
            ("getxattr", &self.getxattr),
            ("open", &self.open),
            ("flush", &self.flush),
            ("release", &self.release),
            ("read", &self.read),
            ("opendir", &self.opendir),
            ("readdir", &self.readdir),
        ];
        all.iter()
            .map(|(name, n)| format!("{name} {}", n.swap(0, Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn bump(n: &AtomicU64) {
    n.fetch_add(1, Ordering::Relaxed);
}

struct MemFs {
    folders: Vec<(String, Box<dyn Content>)>,
    knobs: Knobs,
    counts: Arc<Counts>,
    owner: (u32, u32),
}

const TTL: Duration = Duration::from_secs(3600);
const ROOT: u64 = 1;

enum Node {
    Root,
    Folder(usize),
    Message(usize, u32),
}

impl MemFs {
    fn node(&self, ino: u64) -> Option<Node> {
        match ino {
            ROOT => Some(Node::Root),
            2..=0xffff_ffff => {
                let k = (ino - 2) as usize;
                (k < self.folders.len()).then_some(Node::Folder(k))
            }
            _ => {
                let k = (ino >> 32) as usize - 1;
                let uid = ino as u32;
                let (_, c) = self.folders.get(k)?;
                (uid >= 1 && uid <= c.len()).then_some(Node::Message(k, uid))
            }
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, time) = match self.node(ino)? {
            Node::Root | Node::Folder(_) => (FileType::Directory, 0o755, 0, UNIX_EPOCH),
            Node::Message(k, uid) => {
                let c = &self.folders[k].1;
                let t = UNIX_EPOCH + Duration::from_secs(c.time(uid).max(0) as u64);
                (FileType::RegularFile, 0o644, c.size(uid), t)
            }
        };
        Some(FileAttr {
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
        })
    }

    /// The entries of directory `ino` from `offset`: (inode, kind, name).
    fn entries(&self, ino: u64, offset: u64) -> Vec<(u64, FileType, String)> {
        // Enough for one reply buffer; the kernel asks again from the next offset.
        const BATCH: usize = 512;
        match self.node(ino) {
            Some(Node::Root) => self
                .folders
                .iter()
                .enumerate()
                .skip(offset as usize)
                .map(|(k, (name, _))| (k as u64 + 2, FileType::Directory, name.clone()))
                .collect(),
            Some(Node::Folder(k)) => {
                let n = self.folders[k].1.len() as u64;
                let base = (k as u64 + 1) << 32;
                (offset + 1..=n)
                    .take(BATCH)
                    .map(|uid| (base | uid, FileType::RegularFile, format!("{uid}.eml")))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    fn lookup_ino(&self, parent: u64, name: &str) -> Option<u64> {
        match self.node(parent)? {
            Node::Root => self
                .folders
                .iter()
                .position(|(n, _)| n == name)
                .map(|k| k as u64 + 2),
            Node::Folder(k) => {
                let uid: u32 = name.strip_suffix(".eml")?.parse().ok()?;
                let ino = (k as u64 + 1) << 32 | u64::from(uid);
                self.node(ino).map(|_| ino)
            }
            Node::Message(..) => None,
        }
    }
}

impl fuser::Filesystem for MemFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let readdirplus = if self.knobs.readdirplus_auto {
            imapfs::fs::ReaddirPlus::Auto
        } else {
            imapfs::fs::ReaddirPlus::Always
        };
        imapfs::fs::kernel_init(config, readdirplus);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        bump(&self.counts.lookup);
        let found = name
            .to_str()
            .and_then(|n| self.lookup_ino(parent.0, n))
            .and_then(|ino| self.attr(ino));
        match found {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        bump(&self.counts.getattr);
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        bump(&self.counts.open);
        if self.knobs.no_open {
            return reply.error(Errno::ENOSYS);
        }
        let mut flags = FopenFlags::FOPEN_KEEP_CACHE;
        if self.knobs.noflush {
            flags |= FopenFlags::FOPEN_NOFLUSH;
        }
        reply.opened(FileHandle(0), flags);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        bump(&self.counts.read);
        let Some(Node::Message(k, uid)) = self.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let data = self.folders[k].1.bytes(uid);
        let from = (offset as usize).min(data.len());
        let to = (from + size as usize).min(data.len());
        reply.data(&data[from..to]);
    }

    /// Like imapfs (which sends a draft when its writer closes it): FLUSH is answered, so the
    /// kernel keeps sending it unless the open said `FOPEN_NOFLUSH`.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        bump(&self.counts.flush);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        bump(&self.counts.release);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        bump(&self.counts.opendir);
        let flags = if self.knobs.cache_dir {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(0), flags);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        bump(&self.counts.readdir);
        for (i, (ino, kind, name)) in self.entries(ino.0, offset).into_iter().enumerate() {
            if reply.add(INodeNo(ino), offset + i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        bump(&self.counts.readdir);
        for (i, (ino, _, name)) in self.entries(ino.0, offset).into_iter().enumerate() {
            let Some(a) = self.attr(ino) else { break };
            let full = reply.add(
                INodeNo(ino),
                offset + i as u64 + 1,
                name,
                &TTL,
                &a,
                Generation(0),
            );
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, name: &OsStr, _size: u32, reply: ReplyXattr) {
        bump(&self.counts.getxattr);
        let foreign = !name.as_encoded_bytes().starts_with(b"user.");
        if foreign && self.knobs.probes_unsupported {
            reply.error(Errno::EOPNOTSUPP)
        } else {
            reply.error(Errno::NO_XATTR)
        }
    }
}
