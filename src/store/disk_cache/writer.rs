//! The disk cache's writes, off the threads that read and stream: [`DiskCache::put`] hands
//! a block (the `Arc<[u8]>` the memory level keeps: no copy) to a bounded queue and returns;
//! the `disk-cache-write` thread ([`DiskCache::run_writer`]) writes the entries one at a time.
//! Creating files is what costs (ext4 allocates an inode under the directory's lock): one
//! writer keeps the FUSE and stream threads out of it, and out of each other's way.
//!
//! - **Full queue** ([`QUEUE_BYTES`], [`QUEUE_JOBS`]): a block a read fetched on a FUSE
//!   thread ([`Origin::Read`]) is not written (`disk_cache_queue_full`; it is still in memory,
//!   and a later read that misses fetches it again); a stream's block ([`Origin::Stream`])
//!   and the prefetch's ([`Origin::Prefetch`]) wait for room. Streams carry nearly every
//!   block of a folder read through, and skipping theirs left 27-43% of a first `grep -r`
//!   unwritten under load (scripts/bench_cache.sh): waiting slows only the read-ahead to what
//!   the disk takes, never a FUSE thread, and what the prefetch fetched for offline use must
//!   reach the disk.
//! - **Queued is held**: a job stays in the queue until its file is in place, and
//!   [`DiskCache::get`] and [`DiskCache::contains`] look in the queue before the disk, so a
//!   block is never missed between hand-over and rename, whether or not memory still has it.
//! - **Generations end in the queue too**: [`DiskCache::drop_folder`] removes the folder's
//!   queued jobs, then removes the directory only after a write under way ends
//!   ([`Writes::gate`]); the writer takes its job's bytes from the queue under that gate, so
//!   a job it took before the drop is written before the directory goes, and one removed by
//!   the drop is not written at all. No entry queued before a generation ended is written
//!   after its directory went (a reused UIDVALIDITY never finds old bytes on disk).
//! - **Fewer system calls**: the writer keeps an open descriptor of each generation's
//!   directory (created once, not a recursive mkdir per block) and writes an entry with
//!   `openat` (O_EXCL, O_NOFOLLOW, 0600), one `writev` (header and block, no assembled
//!   copy), `close` and `renameat` into place.
//! - **Unmount** ([`DiskCache::stop_writer`]) waits, bounded by [`DRAIN_WAIT`], until the
//!   queue is written, before the last eviction pass.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use parking_lot::{Condvar, Mutex, RwLock};

use super::{DiskCache, DiskKey, Stamp, HEADER, SLACK};

/// Most bytes of blocks queued for writing.
pub const QUEUE_BYTES: u64 = 32 << 20;
/// Most blocks queued for writing.
pub const QUEUE_JOBS: usize = 4096;
/// Longest wait at unmount for the queue to be written.
pub const DRAIN_WAIT: Duration = Duration::from_secs(30);
/// Most generation directories the writer keeps open.
const OPEN_DIRS: usize = 64;

/// Who hands a block over: what a full queue does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A read's own fetch, on a FUSE thread: not written when the queue is full (counted).
    Read,
    /// A folder stream's landing (read-ahead, on its own thread): waits for room.
    Stream,
    /// The prefetch for offline use: waits for room.
    Prefetch,
}

/// The queue of blocks to write, shared by those who hand them over and the writer.
#[derive(Default)]
pub(super) struct Writes {
    queue: Mutex<Queue>,
    /// Wakes the writer: a job queued, or stop.
    work: Condvar,
    /// Wakes those waiting for room, and for the queue to empty.
    room: Condvar,
    /// Jobs queued (read without the lock: most lookups find the queue empty).
    queued: std::sync::atomic::AtomicUsize,
    /// Held (shared) by the writer while it writes an entry; [`DiskCache::drop_folder`] takes
    /// it alone, so that its directory goes after any write under way, never before.
    pub(super) gate: RwLock<()>,
}

/// A job's name in the queue: the folder's MD5 (as on disk), UIDVALIDITY, UID and block.
type JobKey = ([u8; 16], u32, u32, u64);

#[derive(Default)]
struct Queue {
    jobs: HashMap<JobKey, Job>,
    /// Jobs not yet taken by the writer, oldest first, with their [`Job::seq`] (a job
    /// replaced since is skipped here: its replacement comes later in the order).
    order: VecDeque<(JobKey, u64)>,
    /// Numbers the jobs.
    next_seq: u64,
    /// Bytes of the blocks in `jobs`.
    bytes: u64,
    /// Folder drops so far (the writer's open directories may be gone after one).
    drops: u64,
    /// The writer ended (unmount): nothing more is queued.
    stopped: bool,
}

struct Job {
    folder: Arc<[u8]>,
    stamp: Stamp,
    data: Arc<[u8]>,
    /// Which job this is: the writer removes the job it wrote, not one queued since.
    seq: u64,
}

impl Queue {
    fn full(&self, size: u64) -> bool {
        !self.jobs.is_empty() && (self.bytes + size > QUEUE_BYTES || self.jobs.len() >= QUEUE_JOBS)
    }

    /// Remove the job under `key` (only if it is job `seq`, when given).
    fn remove(&mut self, key: &JobKey, seq: Option<u64>) {
        if seq.is_some_and(|s| self.jobs.get(key).is_none_or(|j| j.seq != s)) {
            return;
        }
        if let Some(job) = self.jobs.remove(key) {
            self.bytes -= job.data.len() as u64;
        }
    }
}

fn job_key(key: DiskKey<'_>) -> JobKey {
    (
        Md5::digest(key.folder).into(),
        key.validity,
        key.uid,
        key.block,
    )
}

impl DiskCache {
    /// Keep a block: queue it for the writer thread. A block bigger than a quarter of the
    /// bound is not kept; past the bound the eviction thread is woken, and past it by
    /// [`SLACK`] (the thread is behind) the block is not written (`skipped`). A full queue
    /// skips a read's block (`queue_full`) and makes a stream or the prefetch wait.
    pub fn put(&self, key: DiskKey<'_>, stamp: Stamp, data: Arc<[u8]>, origin: Origin) {
        let size = (HEADER + data.len()) as u64;
        if size > self.bound / 4 {
            return;
        }
        let w = &self.writes;
        let mut q = w.queue.lock();
        if self.bytes.load(Relaxed) + q.bytes + size > self.bound + self.bound / 100 * SLACK {
            drop(q);
            self.stats.skipped.fetch_add(1, Relaxed);
            self.wake_evictor();
            return;
        }
        while q.full(size) && origin != Origin::Read && !q.stopped {
            w.room.wait(&mut q);
        }
        if q.full(size) || q.stopped {
            self.stats.queue_full.fetch_add(1, Relaxed);
            return;
        }
        let jk = job_key(key);
        q.next_seq += 1;
        let job = Job {
            folder: Arc::from(key.folder),
            stamp,
            data,
            seq: q.next_seq,
        };
        q.bytes += job.data.len() as u64;
        q.order.push_back((jk, job.seq));
        // The same block again (a read and a stream raced): the newer job replaces it.
        if let Some(old) = q.jobs.insert(jk, job) {
            q.bytes -= old.data.len() as u64;
        }
        w.queued.store(q.jobs.len(), Relaxed);
        drop(q);
        w.work.notify_one();
    }

    /// A queued block for `key` written under `stamp`, if there is one.
    pub(super) fn queued(&self, key: DiskKey<'_>, stamp: Stamp) -> Option<Arc<[u8]>> {
        if self.writes.queued.load(Relaxed) == 0 {
            return None;
        }
        let q = self.writes.queue.lock();
        let job = q.jobs.get(&job_key(key))?;
        (*job.folder == *key.folder && job.stamp == stamp).then(|| job.data.clone())
    }

    /// Whether a block for `key` is queued (under any stamp: a reader checks it).
    pub(super) fn is_queued(&self, key: DiskKey<'_>) -> bool {
        self.writes.queued.load(Relaxed) > 0
            && self.writes.queue.lock().jobs.contains_key(&job_key(key))
    }

    /// Forget the queued jobs of a folder (the writer writes only what it finds queued).
    pub(super) fn cancel_queued(&self, folder: &[u8]) {
        let digest: [u8; 16] = Md5::digest(folder).into();
        let mut q = self.writes.queue.lock();
        q.drops += 1;
        let gone: Vec<JobKey> = q.jobs.keys().filter(|k| k.0 == digest).copied().collect();
        for k in &gone {
            q.remove(k, None);
        }
        q.order.retain(|(k, _)| k.0 != digest);
        self.writes.queued.store(q.jobs.len(), Relaxed);
        drop(q);
        self.writes.room.notify_all();
    }

    /// The writer thread's body: write queued entries, oldest first, until
    /// [`DiskCache::stop_writer`].
    pub fn run_writer(&self) {
        let mut dirs = Dirs::default();
        loop {
            let (jk, seq) = {
                let mut q = self.writes.queue.lock();
                loop {
                    if let Some(next) = q.order.pop_front() {
                        break next;
                    }
                    if q.stopped {
                        return;
                    }
                    self.writes.work.wait(&mut q);
                }
            };
            self.write_job(&jk, seq, &mut dirs);
            let mut q = self.writes.queue.lock();
            q.remove(&jk, Some(seq));
            self.writes.queued.store(q.jobs.len(), Relaxed);
            drop(q);
            self.writes.room.notify_all();
        }
    }

    /// Wait (at most `wait`) until every queued block is written; whether it was.
    pub fn wait_written(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut q = self.writes.queue.lock();
        while !q.jobs.is_empty() {
            if self.writes.room.wait_until(&mut q, deadline).timed_out() {
                return q.jobs.is_empty();
            }
        }
        true
    }

    /// At unmount, before the last eviction pass: let the writer write what is queued
    /// (bounded by [`DRAIN_WAIT`]), then end it; nothing is queued after.
    pub fn stop_writer(&self) {
        if !self.wait_written(DRAIN_WAIT) {
            log::warn!(
                "disk cache: {} blocks still not written after {DRAIN_WAIT:?}",
                self.writes.queue.lock().jobs.len()
            );
        }
        let mut q = self.writes.queue.lock();
        q.stopped = true;
        q.order.clear();
        drop(q);
        self.writes.work.notify_all();
        self.writes.room.notify_all();
    }

    /// Write one queued entry, if it is still queued (its folder not dropped since).
    fn write_job(&self, jk: &JobKey, seq: u64, dirs: &mut Dirs) {
        let _gate = self.writes.gate.read();
        let (folder, stamp, data) = {
            let q = self.writes.queue.lock();
            let Some(job) = q.jobs.get(jk).filter(|j| j.seq == seq) else {
                return;
            };
            if dirs.drops != q.drops {
                // A directory held open may be gone.
                dirs.open.clear();
                dirs.drops = q.drops;
            }
            (job.folder.clone(), job.stamp, job.data.clone())
        };
        let key = DiskKey {
            folder: &folder,
            validity: jk.1,
            uid: jk.2,
            block: jk.3,
        };
        match self.write_entry(key, stamp, &data, dirs) {
            Ok(()) => {
                let size = (HEADER + data.len()) as u64;
                self.stats.writes.fetch_add(1, Relaxed);
                self.stats.write_bytes.fetch_add(data.len() as u64, Relaxed);
                let now = self.bytes.fetch_add(size, Relaxed) + size;
                if now > self.bound {
                    self.wake_evictor();
                }
            }
            Err(e) => log::debug!("disk cache: writing {}: {e}", self.path(key).display()),
        }
    }

    /// The entry's file, through a temporary file in its directory renamed into place.
    fn write_entry(
        &self,
        key: DiskKey<'_>,
        stamp: Stamp,
        data: &[u8],
        dirs: &mut Dirs,
    ) -> std::io::Result<()> {
        let header = self.header(key, stamp, data);
        let name = CString::new(format!("{}.{}", key.uid, key.block))?;
        let n = self.tmp_counter.fetch_add(1, Relaxed);
        let tmp = CString::new(format!(
            ".{}.{}.{}.{n}.tmp",
            key.uid,
            key.block,
            std::process::id()
        ))?;
        let dir_key = (jk_folder(key), key.validity);
        // A directory held open may have been removed since (an eviction pass removes
        // empty ones): opened (created) again, once.
        for attempt in 0..2 {
            let dir = dirs.get(self, dir_key.0, key)?;
            match write_at(dir, &tmp, &name, &header, data) {
                Err(e) if attempt == 0 && e.raw_os_error() == Some(libc::ENOENT) => {
                    dirs.open.remove(&dir_key);
                }
                r => return r,
            }
        }
        Ok(())
    }
}

fn jk_folder(key: DiskKey<'_>) -> [u8; 16] {
    Md5::digest(key.folder).into()
}

/// Generation directories the writer holds open, by folder MD5 and UIDVALIDITY.
#[derive(Default)]
struct Dirs {
    open: HashMap<([u8; 16], u32), OwnedFd>,
    /// `Queue::drops` when they were opened.
    drops: u64,
}

impl Dirs {
    /// The directory of `key`'s generation, created if missing (0700).
    fn get(
        &mut self,
        cache: &DiskCache,
        folder: [u8; 16],
        key: DiskKey<'_>,
    ) -> std::io::Result<&OwnedFd> {
        let k = (folder, key.validity);
        if !self.open.contains_key(&k) {
            if self.open.len() >= OPEN_DIRS {
                self.open.clear();
            }
            let path = cache.path(key);
            let dir = path.parent().unwrap_or(&cache.root);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            let c = CString::new(dir.as_os_str().as_encoded_bytes())?;
            // SAFETY: open with a NUL-terminated path; the fd is owned by the OwnedFd.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor nobody else owns.
            self.open.insert(k, unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok(&self.open[&k])
    }
}

/// Create `tmp` in `dir` (O_EXCL, never through a symlink, 0600), write header and block
/// with one `writev` (more if the kernel wrote less), and rename it to `name`.
fn write_at(
    dir: &OwnedFd,
    tmp: &CString,
    name: &CString,
    header: &[u8; HEADER],
    data: &[u8],
) -> std::io::Result<()> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat on a live directory fd with a NUL-terminated name; the fd returned is
    // owned by the File below.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), tmp.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    let written = write_both(&file, header, data).and_then(|()| {
        // SAFETY: renameat within one live directory fd, NUL-terminated names.
        let r = unsafe {
            libc::renameat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    });
    drop(file);
    if written.is_err() {
        // SAFETY: unlinkat within a live directory fd, NUL-terminated name.
        unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
    }
    written
}

/// `header` then `data` to `file`: one `writev`, then plain writes for any rest.
fn write_both(file: &std::fs::File, header: &[u8], data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let iov = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        },
    ];
    // SAFETY: writev from two live buffers as long as stated (the kernel only reads them).
    let n = unsafe { libc::writev(file.as_raw_fd(), iov.as_ptr(), 2) };
    let Ok(n) = usize::try_from(n) else {
        return Err(std::io::Error::last_os_error());
    };
    let mut f = file;
    if n < header.len() {
        f.write_all(&header[n..])?;
        f.write_all(data)
    } else {
        f.write_all(&data[n - header.len()..])
    }
}
