//! Indexes kept on disk between mounts, so that a remount shows a known folder after one
//! incremental refresh (QRESYNC or CONDSTORE) instead of a full listing.
//!
//! Where: `$XDG_CACHE_HOME/imapfs` (else `~/.cache/imapfs`), one directory per account
//! (`user@host:port`) and one file per folder, both named by an MD5 of the key (names only:
//! the full key is inside the file and checked on load). Directories are 0700, files 0600.
//! A save writes a new temporary file (O_EXCL, O_NOFOLLOW) in the account directory, fsyncs
//! it, renames it into place and fsyncs the directory: a crash leaves the old file or the new
//! one, whole. Both read and write open the account directory with O_NOFOLLOW and check it
//! (a private directory of ours) on its fd, and reach the file relative to that fd.
//!
//! What: a folder's generation and listing as of one refresh: UIDVALIDITY, UIDNEXT,
//! HIGHESTMODSEQ and, per message, UID, RFC822.SIZE, INTERNALDATE, MODSEQ, flags and the ids
//! that name it across folders (X-GM-MSGID / X-GM-THRID, EMAILID / THREADID). The
//! format has a field for the verified body length, but it is always written empty and
//! ignored on load: after a server restore a saved length would cut reads short, so a length
//! is only ever learned from the server's bytes in this mount. Format (little-endian):
//! `IMAPFSIX`, a version, the account and the raw folder name, UIDVALIDITY, UIDNEXT,
//! HIGHESTMODSEQ, the table of the distinct flag sets the messages carry (each flag as text,
//! parsed once per set on load), then per message, in ascending UID order: UID, RFC822.SIZE,
//! INTERNALDATE, MODSEQ, the index of its flag set in the table and its ids; and last a
//! CRC-32 of everything before it. A remount's listing waits for the load, so the format is
//! made for decoding: no per-message text to parse, a checksum at memory speed (MD5 was 15%
//! of a remount's `ls -l`), and a map built from sorted entries instead of one insert each.
//!
//! Trust: none. A file that is not ours (another owner, a symlink, a loose mode, in a
//! directory that is not private), of another version, for another account or folder,
//! truncated, oversized or failing its checksum is discarded (and removed when damaged); the
//! checks are made on the open fd and the bytes read from that same fd. A loaded index is
//! only ever the starting point of a refresh (never installed before one from it succeeded):
//! its UIDVALIDITY and HIGHESTMODSEQ go into the QRESYNC SELECT, and a sample of its messages
//! is checked against the server in the same round trip (`store/sync/verify.rs`); a mismatch
//! lists the folder afresh.
//!
//! When: an index is saved after its first listing in this mount, then at most once a
//! [`SAVE_EVERY`] as refreshes change it, and at unmount ([`Account::close`]). Saves are
//! written by one saving thread, in the order they were asked: the snapshot, the fsync and
//! the rename leave the FUSE thread whose listing refreshed the index (on a remount of a big
//! folder they cost more than the listing itself); the unmount waits until all are on disk.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use parking_lot::Mutex;

use crate::imap::types::{Flag, MailboxName, ModSeq, Uid, UidValidity};
use crate::store::ids::MailboxId;
use crate::store::index::{Index, MessageMeta, ObjectId, ObjectIds, SharedIndex};
use crate::store::Account;

const MAGIC: &[u8; 8] = b"IMAPFSIX";
/// 2: each message also carries its [`ObjectIds`] (version 1 files are listed afresh: their
/// messages would lack the ids that make one message one inode). 3: flag sets in a table, no
/// verified-length field, CRC-32 instead of MD5 (older files are listed afresh).
const VERSION: u32 = 3;
/// Largest file read back (a listing of millions of messages stays below).
const MAX_FILE: u64 = 512 << 20;
/// Longest pause between two saves of a changing index.
pub const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Where indexes are kept, and for which account.
#[derive(Debug, Clone)]
pub struct PersistOptions {
    /// The cache directory (`$XDG_CACHE_HOME/imapfs`).
    pub dir: PathBuf,
    /// `user@host:port`: which account the files belong to.
    pub account: String,
}

impl PersistOptions {
    /// `$XDG_CACHE_HOME/imapfs`, else `$HOME/.cache/imapfs`; `None` if neither is set.
    pub fn default_dir() -> Option<PathBuf> {
        let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => {
                PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache")
            }
        };
        base.is_absolute().then(|| base.join("imapfs"))
    }
}

/// What is saved when.
#[derive(Default)]
pub struct Saved {
    /// Mailboxes whose index changed since its last save.
    dirty: Mutex<HashMap<MailboxId, Option<Instant>>>,
    /// The folder list saved last ([`list`]); its lock serialises the saves.
    list: Mutex<Option<std::sync::Arc<Vec<crate::store::MailboxInfo>>>>,
    /// The saving thread's queue, once started.
    saver: Mutex<Option<mpsc::Sender<SaveJob>>>,
}

/// Work for the saving thread.
enum SaveJob {
    /// Snapshot an index and write it (fsync, rename).
    Write {
        account: String,
        name: MailboxName,
        index: SharedIndex,
        path: PathBuf,
    },
    /// Write bytes encoded already (the folder list, `list`).
    File {
        what: &'static str,
        path: PathBuf,
        bytes: Vec<u8>,
    },
    /// Everything queued before is on disk (or failed and was logged).
    Barrier(mpsc::Sender<()>),
}

impl SaveJob {
    fn run(self) {
        match self {
            SaveJob::Write {
                account,
                name,
                index,
                path,
            } => {
                // A consistent snapshot, taken under the lock; the disk is written after.
                let bytes = encode(&account, &name, &index.read());
                if let Err(e) = write_private(&path, &bytes) {
                    log::warn!("saving the index of {name} to {}: {e}", path.display());
                }
            }
            SaveJob::File { what, path, bytes } => {
                if let Err(e) = write_private(&path, &bytes) {
                    log::warn!("saving {what} to {}: {e}", path.display());
                }
            }
            SaveJob::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl Saved {
    /// Queue a job for the saving thread (started on first use); run it here if the thread
    /// cannot be started.
    fn queue(&self, job: SaveJob) {
        let mut saver = self.saver.lock();
        if saver.is_none() {
            let (tx, rx) = mpsc::channel::<SaveJob>();
            let started = std::thread::Builder::new()
                .name("save-index".into())
                .spawn(move || rx.into_iter().for_each(SaveJob::run));
            match started {
                Ok(_) => *saver = Some(tx),
                Err(e) => log::warn!("starting the index saving thread: {e}"),
            }
        }
        let job = match saver.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        drop(saver);
        job.run();
    }

    /// Wait (bounded) until every save queued before is written.
    fn wait_written(&self) {
        let (tx, rx) = mpsc::channel();
        self.queue(SaveJob::Barrier(tx));
        if rx.recv_timeout(SAVE_WAIT).is_err() {
            log::warn!("index saves still not written after {SAVE_WAIT:?}");
        }
    }
}

/// Longest wait at unmount for the saving thread.
const SAVE_WAIT: Duration = Duration::from_secs(60);

impl Account {
    /// The index saved by an earlier mount, if there is a sound one (always marked stale).
    pub(crate) fn load_saved_index(&self, _id: MailboxId, name: &MailboxName) -> Option<Index> {
        let p = self.opts.persist.as_ref()?;
        let path = file_for(p, name);
        match load(&path, &p.account, name) {
            Ok(Some(ix)) => {
                log::debug!(
                    "{name}: starting from the saved index ({} messages)",
                    ix.messages().len()
                );
                Some(ix)
            }
            Ok(None) => None,
            Err(why) => {
                log::info!("{}: discarded ({why})", path.display());
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// A refresh changed an index: save it now if it was never saved in this mount or not
    /// for [`SAVE_EVERY`], else at the next occasion.
    pub(crate) fn index_changed(&self, id: MailboxId) {
        if self.opts.persist.is_none() {
            return;
        }
        let due = {
            let mut dirty = self.saved.dirty.lock();
            let last = dirty.entry(id).or_insert(None);
            last.is_none_or(|at| at.elapsed() >= SAVE_EVERY)
        };
        if due {
            self.save_index(id);
        }
    }

    /// Save every index that changed since its last save (at unmount).
    pub(crate) fn save_indexes(&self) {
        if self.opts.persist.is_none() {
            return;
        }
        let ids: Vec<MailboxId> = self.saved.dirty.lock().keys().copied().collect();
        for id in ids {
            self.save_index(id);
        }
        self.saved.wait_written();
    }

    fn save_index(&self, id: MailboxId) {
        let (Some(p), Some(name), Some(ix)) = (
            self.opts.persist.as_ref(),
            self.mailbox_name(id),
            self.indexes.get(id),
        ) else {
            return;
        };
        let path = file_for(p, &name);
        self.saved.dirty.lock().insert(id, Some(Instant::now()));
        self.saved.queue(SaveJob::Write {
            account: p.account.clone(),
            name,
            index: ix,
            path,
        });
    }
}

impl Account {
    /// A small file kept beside a folder's saved index (`<folder>.<kind>`, `kind` a fixed
    /// lowercase word), private like it; `None` without a cache directory or if there is
    /// none. One that is not a private file of ours is discarded.
    pub(crate) fn load_beside(&self, id: MailboxId, kind: &str) -> Option<Vec<u8>> {
        let path = beside(self.opts.persist.as_ref()?, &self.mailbox_name(id)?, kind);
        read_private(&path).unwrap_or_else(|why| {
            log::info!("{}: discarded ({why})", path.display());
            let _ = fs::remove_file(&path);
            None
        })
    }

    /// Replace the file [`Account::load_beside`] reads (written as an index is: whole or not
    /// at all, 0600 in a 0700 directory). Nothing without a cache directory.
    pub(crate) fn save_beside(&self, id: MailboxId, kind: &str, bytes: &[u8]) {
        let (Some(p), Some(name)) = (self.opts.persist.as_ref(), self.mailbox_name(id)) else {
            return;
        };
        let path = beside(p, &name, kind);
        if let Err(e) = write_private(&path, bytes) {
            log::warn!("saving {}: {e}", path.display());
        }
    }
}

/// The file `kind` beside a folder's index.
fn beside(p: &PersistOptions, name: &MailboxName, kind: &str) -> PathBuf {
    file_for(p, name).with_extension(kind)
}

/// The file of a folder's index.
fn file_for(p: &PersistOptions, name: &MailboxName) -> PathBuf {
    p.dir
        .join(hex_md5(p.account.as_bytes()))
        .join(format!("{}.idx", hex_md5(name.raw())))
}

fn hex_md5(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Write `bytes` to `path` so that a crash leaves either the old file or the new one, whole:
/// a new temporary file in the same directory (O_EXCL, O_NOFOLLOW), written and fsynced,
/// renamed over `path`, then the directory fsynced. The directory is created private if
/// missing, and opened without following a symlink; the file is made relative to that fd.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (dir, file) = split(path)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let dirfd = open_private_dir(dir)?;
    let tmp = format!("{}.tmp{}", file.to_string_lossy(), std::process::id());
    let tmp = cstr(std::ffi::OsStr::new(&tmp))?;
    let name = cstr(file)?;
    // SAFETY: openat with a valid directory fd and a NUL-terminated name; the fd returned is
    // owned by the File below.
    let fd = unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let unlink_tmp = || {
        // SAFETY: unlinkat with a valid directory fd and a NUL-terminated name.
        unsafe { libc::unlinkat(dirfd.as_raw_fd(), tmp.as_ptr(), 0) };
    };
    if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()) {
        unlink_tmp();
        return Err(e);
    }
    drop(f);
    // SAFETY: renameat within one directory fd, NUL-terminated names.
    let r = unsafe {
        libc::renameat(
            dirfd.as_raw_fd(),
            tmp.as_ptr(),
            dirfd.as_raw_fd(),
            name.as_ptr(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        unlink_tmp();
        return Err(e);
    }
    dirfd.sync_all()
}

/// The directory and file name of `path`.
fn split(path: &Path) -> std::io::Result<(&Path, &std::ffi::OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(file)) => Ok((dir, file)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no directory and file name",
        )),
    }
}

fn cstr(s: &std::ffi::OsStr) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(s.as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// Open a directory that must be ours and private (0700 or stricter), refusing a symlink;
/// the checks are made on the open fd, so nothing can be swapped in after them.
fn open_private_dir(dir: &Path) -> std::io::Result<fs::File> {
    let d = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    let meta = d.metadata()?;
    if !meta.is_dir() || meta.uid() != euid() || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is not a private directory of ours", dir.display()),
        ));
    }
    Ok(d)
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Serialise an index (see the module documentation for the layout).
fn encode(account: &str, name: &MailboxName, ix: &Index) -> Vec<u8> {
    let mut w = Vec::with_capacity(64 + ix.messages().len() * 40);
    w.extend_from_slice(MAGIC);
    put_u32(&mut w, VERSION);
    put_bytes(&mut w, account.as_bytes());
    put_bytes(&mut w, name.raw());
    put_u32(&mut w, ix.validity().get());
    put_opt(&mut w, ix.uidnext().map(|u| u64::from(u.get())));
    put_opt(&mut w, ix.highest_modseq().map(|m| m.0));
    // Each distinct flag set once (a folder has a handful); messages name theirs by number.
    let mut sets: HashMap<&[Flag], u32> = HashMap::new();
    let mut table: Vec<&[Flag]> = Vec::new();
    let set_of: Vec<u32> = ix
        .messages()
        .values()
        .map(|m| {
            *sets.entry(m.flags.as_slice()).or_insert_with(|| {
                table.push(&m.flags);
                table.len() as u32 - 1
            })
        })
        .collect();
    put_u32(&mut w, table.len() as u32);
    for set in &table {
        put_u32(&mut w, set.len() as u32);
        for f in *set {
            put_bytes(&mut w, f.as_str().as_bytes());
        }
    }
    put_u32(&mut w, ix.messages().len() as u32);
    for ((uid, m), set) in ix.messages().iter().zip(set_of) {
        put_u32(&mut w, uid.get());
        w.extend_from_slice(&m.listed_size.to_le_bytes());
        // The verified length is not saved: it would be trusted over the server's bytes
        // after a restore (see the module documentation).
        w.extend_from_slice(&m.internal_date.to_le_bytes());
        put_opt(&mut w, m.modseq.map(|m| m.0));
        put_u32(&mut w, set);
        match m.ids.as_deref() {
            None => w.push(0),
            Some(ids) => {
                put_object_id(&mut w, &ids.message);
                match &ids.thread {
                    None => w.push(0),
                    Some(t) => put_object_id(&mut w, t),
                }
            }
        }
    }
    seal(w)
}

/// End a file's bytes with the CRC-32 of everything before it (damage, not forgery, is what
/// it catches: the file is private to its owner, and a loaded index is checked against the
/// server before it is used).
fn seal(mut w: Vec<u8>) -> Vec<u8> {
    let sum = crc32fast::hash(&w);
    w.extend_from_slice(&sum.to_le_bytes());
    w
}

/// Check a sealed file's magic, version and checksum; a reader of what follows them.
fn open_sealed<'a>(data: &'a [u8], magic: &[u8; 8], version: u32) -> Result<Reader<'a>, String> {
    if data.len() < magic.len() + 8 || &data[..magic.len()] != magic {
        return Err("not a file of ours".into());
    }
    let mut r = Reader(&data[magic.len()..]);
    if r.u32()? != version {
        return Err("another version".into());
    }
    let (body, sum) = data.split_at(data.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != sum {
        return Err("checksum mismatch".into());
    }
    Ok(Reader(&body[magic.len() + 4..]))
}

/// Tag 1 and a u64 for Gmail's ids, tag 2 and bytes for RFC 8474's (0 is "none").
fn put_object_id(w: &mut Vec<u8>, id: &ObjectId) {
    match id {
        ObjectId::Gmail(n) => {
            w.push(1);
            w.extend_from_slice(&n.to_le_bytes());
        }
        ObjectId::Rfc8474(s) => {
            w.push(2);
            put_bytes(w, s.as_bytes());
        }
    }
}

fn put_u32(w: &mut Vec<u8>, n: u32) {
    w.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_u32(w, b.len() as u32);
    w.extend_from_slice(b);
}

fn put_opt(w: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            w.push(1);
            w.extend_from_slice(&v.to_le_bytes());
        }
        None => w.push(0),
    }
}

/// Read a saved index: `Ok(None)` if there is none or it belongs to another key, `Err` with
/// the reason if it must be discarded.
fn load(path: &Path, account: &str, name: &MailboxName) -> Result<Option<Index>, String> {
    match read_private(path)? {
        Some(data) => decode(&data, account, name),
        None => Ok(None),
    }
}

/// The bytes of a private file of ours: `Ok(None)` if there is none, `Err` with the reason
/// if it is not ours or too large. The file is opened once, without following a symlink (in
/// a private directory opened the same way); its type, owner, mode and size are checked on
/// that fd, and the bytes are read from it: what was checked is what is read.
fn read_private(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let (dir, file) = split(path).map_err(|e| e.to_string())?;
    let dirfd = match open_private_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let file = cstr(file).map_err(|e| e.to_string())?;
    // SAFETY: openat with a valid directory fd and a NUL-terminated name; the fd returned is
    // owned by the File below.
    let fd = unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            file.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(e.to_string());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.uid() != euid() || meta.mode() & 0o077 != 0 {
        return Err("not a private file of ours".into());
    }
    if meta.len() > MAX_FILE {
        return Err("too large".into());
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    Read::take(&mut f, MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > MAX_FILE {
        return Err("too large".into());
    }
    Ok(Some(data))
}

/// Parse a saved index, checking everything.
fn decode(data: &[u8], account: &str, name: &MailboxName) -> Result<Option<Index>, String> {
    let mut r = open_sealed(data, MAGIC, VERSION)?;
    if r.bytes()? != account.as_bytes() || r.bytes()? != name.raw() {
        // Another account's or folder's (a name hash collision): not for us.
        return Ok(None);
    }
    let validity = UidValidity::new(r.u32()?).ok_or("UIDVALIDITY 0")?;
    let uidnext = match r.opt()? {
        Some(n) => Some(
            u32::try_from(n)
                .ok()
                .and_then(Uid::new)
                .ok_or("bad UIDNEXT")?,
        ),
        None => None,
    };
    let highest_modseq = r.opt()?.map(ModSeq);
    let nsets = r.u32()? as usize;
    let mut sets = Vec::with_capacity(nsets.min(r.0.len() / 4));
    for _ in 0..nsets {
        let n = r.u32()? as usize;
        let mut set = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let f = std::str::from_utf8(r.bytes()?).map_err(|_| "flag not UTF-8")?;
            set.push(Flag::parse(f).ok_or("bad flag")?);
        }
        sets.push(set);
    }
    let count = r.u32()? as usize;
    // Bounded by what the bytes can hold, not by what they claim.
    let mut messages = Vec::with_capacity(count.min(r.0.len() / MIN_MESSAGE));
    let mut last: Option<Uid> = None;
    for _ in 0..count {
        let uid = Uid::new(r.u32()?).ok_or("UID 0")?;
        if last.is_some_and(|l| l >= uid) {
            return Err("UIDs out of order".into());
        }
        last = Some(uid);
        let listed_size = r.u64()?;
        let internal_date = r.u64()? as i64;
        let modseq = r.opt()?.map(ModSeq);
        let flags = sets.get(r.u32()? as usize).ok_or("bad flag set")?.clone();
        let ids = match r.object_id()? {
            None => None,
            Some(message) => Some(std::sync::Arc::new(ObjectIds {
                message,
                thread: r.object_id()?,
            })),
        };
        let meta = MessageMeta {
            listed_size,
            // Never trusted from disk: a length is learned again from the server's bytes.
            body_len: None,
            internal_date,
            flags,
            modseq,
            ids,
        };
        messages.push((uid, meta));
    }
    if !r.is_empty() {
        return Err("trailing bytes".into());
    }
    // Ascending and distinct (checked above): the map is built in one pass.
    let messages: BTreeMap<Uid, MessageMeta> = messages.into_iter().collect();
    Ok(Some(Index::saved(
        validity,
        uidnext,
        highest_modseq,
        messages,
    )))
}

/// The fewest bytes a saved message takes (UID, size, date, no MODSEQ, flag set, no ids).
const MIN_MESSAGE: usize = 4 + 8 + 8 + 1 + 4 + 1;

/// A bounds-checked cursor.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn flag(&mut self) -> Result<bool, String> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("bad flag byte".into()),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn object_id(&mut self) -> Result<Option<ObjectId>, String> {
        Ok(match self.take(1)?[0] {
            0 => None,
            1 => Some(ObjectId::Gmail(self.u64()?)),
            2 => {
                let s = std::str::from_utf8(self.bytes()?).map_err(|_| "id not UTF-8")?;
                Some(ObjectId::Rfc8474(s.into()))
            }
            _ => return Err("bad id tag".into()),
        })
    }

    fn opt(&mut self) -> Result<Option<u64>, String> {
        match self.take(1)?[0] {
            0 => Ok(None),
            1 => self.u64().map(Some),
            _ => Err("bad option tag".into()),
        }
    }
}

mod list;
pub use list::saved_mailbox_list;

#[cfg(test)]
mod tests;
