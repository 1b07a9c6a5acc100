//! The second level of the body cache: message blocks kept on local disk between mounts.
//!
//! A message's bytes never change under (mailbox, UIDVALIDITY, UID), so an entry written
//! once is valid for as long as that generation lives, with no revalidation. The memory
//! [`crate::store::blocks::BlockCache`] stays the first level; this one is asked when a
//! block is not in memory, and gets every block that arrives from the server, as it arrives.
//!
//! Where: `<cache dir>/<md5(user@host:port)>/bodies/<md5(raw folder name)>/<UIDVALIDITY>/
//! <UID>.<block>` (the account directory also holds the saved indexes of
//! [`crate::store::persist`]), shared by every mount of the account. A message up to one
//! block (1 MiB) is one file; bigger messages are sparse: only the
//! blocks read are kept. Directories are 0700, files 0600; the account and bodies
//! directories are checked to be ours and private when the cache opens, or it stays off.
//!
//! An entry is a [`HEADER`]-byte header and the block's bytes. The header holds a digest of
//! the full key (account, folder, UIDVALIDITY, UID, block), the message's RFC822.SIZE and
//! INTERNALDATE when it was written, the length, and a CRC-32 of all of it. An entry is
//! served only if every check holds on the bytes read from one open file: ours and private,
//! the key digest (a foreign file, a name collision), the length, the checksum (damage), and
//! the size and date the index lists now (a server that reused a UIDVALIDITY for other
//! messages). Anything else is removed and counts as a miss: the block is fetched again.
//! The bytes are read with one `preadv` straight into the `Arc<[u8]>` both levels then share
//! (header into the stack, block into a fresh allocation: no copy after the read).
//!
//! Writes ([`writer`]): [`DiskCache::put`] queues the block for the writer thread and returns;
//! a queued block is served from the queue. An entry is a temporary file (O_EXCL, O_NOFOLLOW,
//! 0600) renamed into place, so a reader sees an old entry or a whole new one; no fsync (a
//! torn entry fails its checksum). Bound: the writer keeps a running estimate of the bytes
//! held; past the bound it wakes the
//! eviction thread ([`DiskCache::run_evictor`]), whose pass ([`evict`]) lists every entry and
//! removes the least recently used ones (by mtime, which a hit moves forward at most once a
//! [`TOUCH_EVERY`]) down to 90% of the bound. No reader or writer waits for a pass; past the
//! bound by [`SLACK`] (the thread is behind) blocks are not written. The estimate is set from
//! each listing, so mounts sharing the cache correct each other.

mod evict;
mod stats;
mod writer;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use parking_lot::{Condvar, Mutex};

use crate::store::persist::{account_dir, euid, hex_md5};

pub use stats::{DiskStats, Totals};
pub use writer::{Origin, DRAIN_WAIT, QUEUE_BYTES, QUEUE_JOBS};

const MAGIC: &[u8; 8] = b"IMAPFSB1";
/// Bytes before the block's own: magic, key digest (16), RFC822.SIZE, INTERNALDATE, length
/// (8 each), CRC-32 (4).
pub const HEADER: usize = 8 + 16 + 8 + 8 + 8 + 4;
/// A hit moves an entry's mtime (its place in the LRU order) at most this often.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// How far past the bound (in percent) writes go on while the eviction thread catches up;
/// beyond, blocks are not written.
pub const SLACK: u64 = 5;
/// Name of the file in the account directory that says whose it is (for `imapfs cache`).
pub const ACCOUNT_FILE: &str = "account";

/// Where the disk cache lives and how big it may grow.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// The cache directory (`$XDG_CACHE_HOME/imapfs` or `--cache-dir`).
    pub dir: PathBuf,
    /// `user@host:port`.
    pub account: String,
    /// Most bytes of entries (headers included).
    pub bound: u64,
}

/// One block of one message, named as on disk.
#[derive(Debug, Clone, Copy)]
pub struct DiskKey<'a> {
    /// The folder's raw (wire) name.
    pub folder: &'a [u8],
    pub validity: u32,
    pub uid: u32,
    pub block: u64,
}

/// What the index says of the message: an entry written under another pair is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub listed_size: u64,
    pub internal_date: i64,
}

/// What the eviction thread is asked to do.
#[derive(Default)]
struct Evictor {
    /// A write took the cache past its bound.
    due: bool,
    stop: bool,
}

/// The disk cache of one account.
pub struct DiskCache {
    /// `<dir>/<md5(account)>/bodies`.
    root: PathBuf,
    account: String,
    bound: u64,
    /// Bytes believed held (set by each eviction pass, added to by each write).
    bytes: AtomicU64,
    /// One eviction pass at a time.
    evicting: Mutex<()>,
    /// Wakes the eviction thread ([`DiskCache::run_evictor`]).
    evictor: Mutex<Evictor>,
    evictor_wake: Condvar,
    /// Distinguishes this process's temporary files.
    tmp_counter: AtomicU64,
    /// Blocks queued for the writer thread ([`DiskCache::run_writer`]).
    writes: writer::Writes,
    pub stats: DiskStats,
}

impl DiskCache {
    /// Open (creating if needed) the account's cache. `None` with a warning when the bound is
    /// 0 or the directories are not private directories of ours.
    pub fn open(opts: &DiskOptions) -> Option<DiskCache> {
        if opts.bound == 0 {
            return None;
        }
        let account_dir = account_dir(&opts.dir, &opts.account);
        let root = account_dir.join("bodies");
        let made = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .and_then(|_| check_private_dir(&account_dir))
            .and_then(|_| check_private_dir(&root));
        if let Err(e) = made {
            log::warn!("disk cache off: {}: {e}", root.display());
            return None;
        }
        let marker = account_dir.join(ACCOUNT_FILE);
        if !marker.exists() {
            if let Err(e) = write_new(&account_dir, ACCOUNT_FILE, opts.account.as_bytes()) {
                log::debug!("{}: {e}", marker.display());
            }
        }
        let cache = DiskCache {
            root,
            account: opts.account.clone(),
            bound: opts.bound,
            bytes: AtomicU64::new(0),
            evicting: Mutex::new(()),
            evictor: Mutex::new(Evictor::default()),
            evictor_wake: Condvar::new(),
            tmp_counter: AtomicU64::new(0),
            writes: writer::Writes::default(),
            stats: DiskStats::default(),
        };
        Some(cache)
    }

    /// Count what is held and evict past the bound (at unmount; waits for a pass under way).
    pub fn scan(&self) {
        evict::pass(self);
    }

    /// The eviction thread's body: a pass at once (learn what earlier mounts left, trim it to
    /// the bound), then one each time a write takes the cache past its bound, until
    /// [`DiskCache::stop_evictor`]. Readers and writers never run a pass themselves.
    pub fn run_evictor(&self) {
        evict::pass(self);
        loop {
            {
                let mut e = self.evictor.lock();
                while !e.due && !e.stop {
                    self.evictor_wake.wait(&mut e);
                }
                if e.stop {
                    return;
                }
                e.due = false;
            }
            evict::pass(self);
        }
    }

    /// End [`DiskCache::run_evictor`] (at unmount, before the last [`DiskCache::scan`]).
    pub fn stop_evictor(&self) {
        self.evictor.lock().stop = true;
        self.evictor_wake.notify_all();
    }

    fn wake_evictor(&self) {
        self.evictor.lock().due = true;
        self.evictor_wake.notify_all();
    }

    /// The bytes of an entry, if there is a sound one for `key` written under `stamp`.
    /// A block still queued for writing is served from the queue.
    pub fn get(&self, key: DiskKey<'_>, stamp: Stamp, max_len: u64) -> Option<Arc<[u8]>> {
        let path = self.path(key);
        let queued = self
            .queued(key, stamp)
            .filter(|d| d.len() as u64 <= max_len);
        let found = match queued
            .as_ref()
            .map_or_else(|| read_entry(&path, max_len), |_| Ok(None))
        {
            Ok(Some(entry)) => match self.check(key, stamp, &entry.header, &entry.data) {
                Ok(()) => {
                    touch(&entry.file, entry.modified);
                    Some(entry.data)
                }
                Err(why) => {
                    self.discard(&path, why);
                    None
                }
            },
            Ok(None) => queued,
            Err(why) => {
                self.discard(&path, why);
                None
            }
        };
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Relaxed);
        if let Some(d) = &found {
            self.stats.hit_bytes.fetch_add(d.len() as u64, Relaxed);
        }
        found
    }

    /// Whether an entry exists or is queued for `key` (not read, not checked: a reader will
    /// check it).
    pub fn contains(&self, key: DiskKey<'_>) -> bool {
        self.is_queued(key) || fs::symlink_metadata(self.path(key)).is_ok_and(|m| m.is_file())
    }

    /// Drop every entry of a folder (all its generations): it was deleted or renamed away,
    /// its UIDVALIDITY changed, or the server reused one for other messages.
    /// Its queued blocks go first, and the directory only after a write under way ended:
    /// nothing of it is written after (see [`writer`]).
    pub fn drop_folder(&self, folder: &[u8]) {
        self.cancel_queued(folder);
        let _gate = self.writes.gate.write();
        let dir = self.root.join(hex_md5(folder));
        match fs::remove_dir_all(&dir) {
            Ok(()) => log::info!("disk cache: dropped {}", dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("disk cache: dropping {}: {e}", dir.display()),
        }
    }

    /// Bytes held now (an estimate between eviction passes).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    pub fn bound(&self) -> u64 {
        self.bound
    }

    /// Add this mount's counters to the account's running totals (at unmount).
    pub fn save_totals(&self) {
        stats::add_totals(&self.root, &self.stats);
    }

    fn path(&self, key: DiskKey<'_>) -> PathBuf {
        self.root
            .join(hex_md5(key.folder))
            .join(key.validity.to_string())
            .join(format!("{}.{}", key.uid, key.block))
    }

    /// An entry's header for `data` under `key` and `stamp`.
    fn header(&self, key: DiskKey<'_>, stamp: Stamp, data: &[u8]) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..24].copy_from_slice(&self.key_digest(key));
        h[24..32].copy_from_slice(&stamp.listed_size.to_le_bytes());
        h[32..40].copy_from_slice(&stamp.internal_date.to_le_bytes());
        h[40..48].copy_from_slice(&(data.len() as u64).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[..HEADER - 4]);
        crc.update(data);
        h[HEADER - 4..].copy_from_slice(&crc.finalize().to_le_bytes());
        h
    }

    fn key_digest(&self, key: DiskKey<'_>) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(self.account.as_bytes());
        h.update([0]);
        h.update(key.folder);
        h.update([0]);
        h.update(key.validity.to_le_bytes());
        h.update(key.uid.to_le_bytes());
        h.update(key.block.to_le_bytes());
        h.finalize().into()
    }

    /// Every check an entry must pass before it is served.
    fn check(
        &self,
        key: DiskKey<'_>,
        stamp: Stamp,
        header: &[u8; HEADER],
        data: &[u8],
    ) -> Result<(), &'static str> {
        if &header[..8] != MAGIC {
            return Err("not an entry");
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let mut sum = [0u8; 4];
        sum.copy_from_slice(&header[HEADER - 4..]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[..HEADER - 4]);
        crc.update(data);
        if crc.finalize() != u32::from_le_bytes(sum) {
            return Err("checksum mismatch");
        }
        if header[8..24] != self.key_digest(key) {
            return Err("another key's entry");
        }
        if u64_at(40) != data.len() as u64 {
            return Err("length mismatch");
        }
        let written = Stamp {
            listed_size: u64_at(24),
            internal_date: u64_at(32) as i64,
        };
        if written != stamp {
            return Err("written for another message (size or date differ)");
        }
        Ok(())
    }

    fn discard(&self, path: &Path, why: &str) {
        log::warn!("disk cache: {} discarded: {why}", path.display());
        self.stats.discarded.fetch_add(1, Relaxed);
        let _ = fs::remove_file(path);
    }
}

/// An entry as read from its file, not yet checked.
struct Entry {
    header: [u8; HEADER],
    /// The block's bytes, read straight into the buffer the caches share (no copy after).
    data: Arc<[u8]>,
    /// The file they were read from, and its mtime then (for [`touch`]).
    file: fs::File,
    modified: Option<SystemTime>,
}

/// Read an entry: `Ok(None)` if there is none, `Err` if the file must go. The checks of
/// type, owner and mode are made on the fd the bytes are read from. Four system calls: open,
/// fstat (the checks, the length, the mtime), one `preadv` of the header, the block and a
/// byte past it (there must be none: the file ends where its length said), close.
fn read_entry(path: &Path, max_len: u64) -> Result<Option<Entry>, &'static str> {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Ok(None);
    };
    // SAFETY: open with a NUL-terminated path; the fd returned is owned by the File below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(None),
            _ => Err("cannot be opened"),
        };
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let file = unsafe { fs::File::from_raw_fd(fd) };
    let meta = file.metadata().map_err(|_| "cannot be read")?;
    if !meta.is_file() || meta.uid() != euid() || meta.mode() & 0o077 != 0 {
        return Err("not a private file of ours");
    }
    let Some(len) = meta.len().checked_sub(HEADER as u64) else {
        return Err("not an entry");
    };
    if len > max_len {
        return Err("too large");
    }
    let len = len as usize;
    let mut header = [0u8; HEADER];
    let mut past = [0u8; 1];
    // The block's bytes land where the caches keep them; no memset first: the buffer is
    // taken as initialised only once the read filled all of it.
    let mut data = Arc::<[u8]>::new_uninit_slice(len);
    let buf = Arc::get_mut(&mut data).ok_or("cannot be read")?;
    let iov = [
        libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: HEADER,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        },
        libc::iovec {
            iov_base: past.as_mut_ptr().cast(),
            iov_len: 1,
        },
    ];
    // SAFETY: preadv into three buffers that are live, writable and as long as stated.
    let n = unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), 3, 0) };
    let Ok(n) = usize::try_from(n) else {
        return Err("cannot be read");
    };
    // Shorter: cut since the fstat; longer: grown. A regular file's read stops short only at
    // its end.
    if n != HEADER + len {
        return Err("length mismatch");
    }
    // SAFETY: the read filled all `len` bytes of the block's buffer.
    let data = unsafe { data.assume_init() };
    Ok(Some(Entry {
        header,
        data,
        file,
        modified: meta.modified().ok(),
    }))
}

/// Move a hit entry forward in the LRU order, at most once a [`TOUCH_EVERY`]: `modified` is
/// its mtime when it was read.
fn touch(f: &fs::File, modified: Option<SystemTime>) {
    let recent = modified
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < TOUCH_EVERY);
    if !recent {
        // SAFETY: futimens on an open fd; a null times pointer means "now".
        unsafe { libc::futimens(f.as_raw_fd(), std::ptr::null()) };
    }
}

/// Create `dir/name` (it must not exist; never through a symlink), 0600, holding `bytes`.
fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(name))?;
    f.write_all(bytes)
}

/// A directory of ours, private, not a symlink.
fn check_private_dir(dir: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != euid() || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a private directory of ours",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
