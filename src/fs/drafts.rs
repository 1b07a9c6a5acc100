//! New files: *drafts*, spooled to an unlinked temporary file while they are written and
//! APPENDed when a writer closes them.
//!
//! A draft has its own inode range ([`Ino::draft`]) and counts its open file handles (from
//! `create` and `open`), each one known to read only or to write. The rules keep one promise:
//! after the writer's last close the server holds exactly one message with exactly the bytes
//! written, or the writer saw an error (from write, fsync or close), and no partial version
//! stays on the server.
//!
//! - Only `flush` (a close) or `fsync` of a *writing* handle sends the draft, and only if it
//!   changed since the version the server holds. A reader's open, read, close or fsync never
//!   sends anything. A flush is the last moment an error can reach the writer, so the APPEND's
//!   error is close()'s (or fsync()'s): `cp` and `mv` into the mount fail when it fails.
//! - FUSE cannot tell which flush is the last (another writer, or a copy of the descriptor
//!   after fork or dup, may write on), so more bytes may follow a flush. The next writing
//!   flush then APPENDs the new version and `UID EXPUNGE`s the one it supersedes, by its UID
//!   (APPENDUID, or proved; see `store::write::proof`). A version that cannot be placed by UID
//!   cannot be replaced, so writes after it fail (EPERM). A failed APPEND withdraws the version
//!   before it too: a file whose last close failed leaves nothing behind.
//! - A close by a process other than the handle's opener (a descriptor inherited through
//!   fork) sends nothing until a version was sent or the opener closed its own copy.
//! - A flush from a process that a signal is killing sends nothing (/proc/TID/status: a
//!   fatal signal pending): a killed `cp` leaves no partial message.
//! - Nothing is sent at `release`: its error could reach no one. At the last release a draft
//!   still changed since its last sent version was written after its writers' last close (a
//!   killed writer): it is dropped with a warning, and a partial version already sent is
//!   withdrawn.
//!
//! Locking: [`Drafts`] sits behind one mutex that is never held across a server call or a
//! kernel notification. Two writing flushes of one draft take turns (`Draft::sending`, waited
//! for on `ImapFs::drafts_turn`, which releases the mutex), so a replacement always knows
//! which UID it replaces; reads, writes, getattr and a reader's flush or release never wait
//! for an APPEND. Who flushes is read from `/proc/TID/status` only: an earlier attempt read
//! `/proc/TID/stat`, which waits for the exec lock of a process in execve, and such a process
//! (a child closing its inherited descriptor on exec) holds that lock while it waits for the
//! reply to its FLUSH of this very file, so both hung in D state.
//!
//! A draft is shown under the name it was created with until its first APPEND is tried; the
//! message then shows under its UID's name. Flags set with `setfattr` and an mtime set with
//! `touch -d`/`cp -p` before a close become the APPEND's flags and INTERNALDATE. The spool
//! file is streamed to the server, never read into memory whole.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, OpenAccMode, OpenFlags, TimeOrNow};

use crate::error::{Error, Result};
use crate::fs::caller::Caller;
use crate::fs::inode::{Ino, InoKind};
use crate::fs::read::unix_time;
use crate::fs::ImapFs;
use crate::imap::types::Flag;
use crate::store::{FlagEdit, MailboxId, MessageRef};

mod send;

/// Largest new message accepted (servers refuse far smaller ones).
const MAX_DRAFT: u64 = 1 << 30;

/// New files being written, by inode.
#[derive(Default)]
pub struct Drafts {
    by_ino: HashMap<Ino, Draft>,
    next: u32,
}

struct Draft {
    /// Open file handles.
    handles: HashMap<u64, Handle>,
    parent: Ino,
    mailbox: MailboxId,
    /// Its name until its first APPEND is tried; `None` from then on, or once unlinked.
    name: Option<String>,
    /// Unlinked by name before it was sent: never sent.
    discarded: bool,
    file: Arc<File>,
    len: u64,
    flags: Vec<Flag>,
    mtime: Option<i64>,
    /// Bumped by every change of bytes, length, flags, date or folder.
    version: u64,
    /// What the server holds of this draft.
    stored: Stored,
    /// Versions a newer one replaced whose expunge failed: withdrawn at the next chance.
    superseded: Vec<MessageRef>,
    /// A flush is sending this draft (APPEND, then withdrawing what it replaces).
    sending: bool,
    created: SystemTime,
}

/// One open file handle of a draft.
#[derive(Debug, Clone, Copy)]
struct Handle {
    writes: bool,
    /// The process (thread group) that opened it; `None` if /proc could not tell.
    opener: Option<u32>,
    /// The opener has closed a descriptor of it.
    opener_closed: bool,
}

/// Why a draft is being flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlushKind {
    /// `flush`: a close(2) of one descriptor of the handle.
    Close,
    /// `fsync`: an explicit request to store it.
    Fsync,
}

/// The server's copy of a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Nothing,
    /// Version `version` is the message `at`.
    At {
        version: u64,
        at: MessageRef,
    },
    /// Version `version` is stored, but where cannot be told (no APPENDUID, not provable).
    Unplaced {
        version: u64,
    },
}

impl Draft {
    /// Changed since the server's version (or never sent).
    fn changed(&self) -> bool {
        match self.stored {
            Stored::Nothing => true,
            Stored::At { version, .. } | Stored::Unplaced { version } => version != self.version,
        }
    }

    /// Whether a writer's flush has something to send: changed, not unlinked, and not an
    /// untouched empty file (a shell's `> file` opens, dup2()s and closes the first
    /// descriptor, a flush, before anything is written).
    fn worth_sending(&self) -> bool {
        !self.discarded && self.changed() && (self.len > 0 || self.stored != Stored::Nothing)
    }

    /// Refuse a change that could not be sent: the server holds a version this mount cannot
    /// replace (its UID is unknown).
    fn check_replaceable(&self) -> Result<()> {
        match self.stored {
            Stored::Unplaced { .. } => Err(Error::NotPermitted(
                "the new message was stored without a known UID, so it cannot be replaced by \
                 a changed version"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
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

    /// `create`: a new draft in a folder that holds messages, and its first (writing)
    /// handle.
    pub(crate) fn create_draft(
        &self,
        parent: Ino,
        name: &str,
        pid: u32,
    ) -> Result<(FileAttr, u64)> {
        self.refuse_if_read_only()?;
        let Some(mailbox) = self.selectable_mailbox(parent) else {
            return Err(Error::NotPermitted(
                "new files can only be messages in a folder that holds messages".into(),
            ));
        };
        self.create_draft_in(parent, mailbox, name, pid)
    }

    /// `create` of a draft for `mailbox` shown in directory `parent` (a folder, or a Maildir
    /// `tmp/`).
    pub(crate) fn create_draft_in(
        &self,
        parent: Ino,
        mailbox: MailboxId,
        name: &str,
        pid: u32,
    ) -> Result<(FileAttr, u64)> {
        if name.contains('\0') {
            return Err(Error::InvalidInput("name holds a NUL".into()));
        }
        let file = spool_file()?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let opener = Caller::of(pid).and_then(|c| c.tgid);
        let mut drafts = self.drafts.lock();
        drafts.next = drafts.next.wrapping_add(1).max(1);
        let ino = Ino::draft(drafts.next);
        let d = Draft {
            handles: HashMap::from([(
                fh,
                Handle {
                    writes: true,
                    opener,
                    opener_closed: false,
                },
            )]),
            parent,
            mailbox,
            name: Some(name.to_string()),
            discarded: false,
            file: Arc::new(file),
            len: 0,
            flags: Vec::new(),
            mtime: None,
            version: 0,
            stored: Stored::Nothing,
            superseded: Vec::new(),
            sending: false,
            created: SystemTime::now(),
        };
        let attr = self.draft_attr_of(ino, &d);
        drafts.by_ino.insert(ino, d);
        Ok((attr, fh))
    }

    /// `open` of a draft (a reader's `cat`, or another writer): a new handle.
    pub(crate) fn open_draft(&self, ino: Ino, flags: OpenFlags, pid: u32) -> Result<u64> {
        let writes = flags.acc_mode() != OpenAccMode::O_RDONLY;
        if writes {
            self.refuse_if_read_only()?;
        }
        let opener = Caller::of(pid).and_then(|c| c.tgid);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let mut drafts = self.drafts.lock();
        let d = drafts
            .by_ino
            .get_mut(&ino)
            .ok_or_else(|| Error::NoEntry("draft".into()))?;
        d.handles.insert(
            fh,
            Handle {
                writes,
                opener,
                opener_closed: false,
            },
        );
        Ok(fh)
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
        d.check_replaceable()?;
        let end = offset.saturating_add(data.len() as u64);
        if let Some(limit) = self.account.pool().append_limit() {
            // The server said it refuses larger messages (APPENDLIMIT): EFBIG now, before
            // the user waits for the rest of it to be written and sent.
            if end > limit {
                return Err(Error::MessageTooLarge { len: end, limit });
            }
        }
        if end > MAX_DRAFT {
            return Err(Error::InvalidInput(format!(
                "a message of more than {MAX_DRAFT} bytes"
            )));
        }
        // A local file write under the mutex: no server, no kernel round trip.
        d.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io("writing the spool file", e))?;
        d.len = d.len.max(end);
        d.version += 1;
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

    /// Flags set on a draft with setfattr before it is closed.
    pub(crate) fn edit_draft_flags(&self, ino: Ino, edit: &FlagEdit) -> Result<()> {
        let mut drafts = self.drafts.lock();
        let d = drafts
            .by_ino
            .get_mut(&ino)
            .ok_or_else(|| Error::NoEntry("draft".into()))?;
        d.check_replaceable()?;
        d.version += 1;
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

    /// `setattr` of a draft: truncate it, or date it (the APPEND's INTERNALDATE).
    pub(crate) fn set_draft_attr(
        &self,
        ino: Ino,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr> {
        let mut drafts = self.drafts.lock();
        let d = drafts
            .by_ino
            .get_mut(&ino)
            .ok_or_else(|| Error::NoEntry("draft".into()))?;
        if size.is_some_and(|s| s != d.len) || mtime.is_some() {
            d.check_replaceable()?;
        }
        if let Some(size) = size {
            if size > MAX_DRAFT {
                return Err(Error::InvalidInput("too large".into()));
            }
            d.file
                .set_len(size)
                .map_err(|e| Error::io("truncating the spool file", e))?;
            if size != d.len {
                d.version += 1;
            }
            d.len = size;
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
            d.version += 1;
        }
        Ok(self.draft_attr_of(ino, d))
    }

    /// `unlink` of a draft's name: it is dropped without being sent. Returns false if
    /// `name` is no draft.
    pub(crate) fn discard_draft(&self, parent: Ino, name: &str) -> bool {
        let mut drafts = self.drafts.lock();
        let found = drafts
            .by_ino
            .iter_mut()
            .find(|(_, d)| d.parent == parent && d.name.as_deref() == Some(name));
        match found {
            Some((_, d)) => {
                d.name = None;
                d.discarded = true;
                true
            }
            None => false,
        }
    }

    /// Rename a draft (an editor's save-as); returns false if `name` is no draft.
    pub(crate) fn rename_draft(
        &self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Result<bool> {
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
            if d.mailbox != mailbox {
                d.mailbox = mailbox;
                d.version += 1;
            }
            d.name = Some(newname.to_string());
        }
        Ok(true)
    }
}

/// What a draft holds, taken for an APPEND made elsewhere ([`ImapFs::take_draft`]).
pub(crate) struct TakenDraft {
    pub file: Arc<File>,
    pub len: u64,
    pub flags: Vec<Flag>,
    pub mtime: Option<i64>,
}

/// The drafts API of the Maildir layout (`fs/maildir.rs`): a file in `tmp/` is APPENDed by
/// its rename into `cur/` or `new/`, never by a close or an fsync.
impl ImapFs {
    /// The directory a draft is shown in.
    pub(crate) fn draft_parent(&self, ino: Ino) -> Option<Ino> {
        self.drafts.lock().by_ino.get(&ino).map(|d| d.parent)
    }

    /// Take a draft's content to send it: it is nameless after, and nothing else sends it.
    /// `None` if it is no draft, unlinked, or already (being) sent.
    pub(crate) fn take_draft(&self, ino: Ino) -> Option<TakenDraft> {
        let mut drafts = self.drafts.lock();
        let d = drafts.by_ino.get_mut(&ino)?;
        if d.name.is_none() || d.discarded || d.sending || d.stored != Stored::Nothing {
            return None;
        }
        d.name = None;
        d.discarded = true;
        Some(TakenDraft {
            file: d.file.clone(),
            len: d.len,
            flags: d.flags.clone(),
            mtime: d.mtime,
        })
    }

    /// Handle `fh` of a draft closed without sending anything; the draft is dropped once no
    /// handle is open and it has no name (sent or unlinked).
    pub(crate) fn close_draft_handle(&self, ino: Ino, fh: u64) {
        let mut drafts = self.drafts.lock();
        if let Some(d) = drafts.by_ino.get_mut(&ino) {
            d.handles.remove(&fh);
        }
        drop_if_idle(&mut drafts, ino);
    }

    /// Drop a draft that has no open handle and no name.
    pub(crate) fn forget_idle_draft(&self, ino: Ino) {
        drop_if_idle(&mut self.drafts.lock(), ino);
    }
}

fn drop_if_idle(drafts: &mut Drafts, ino: Ino) {
    if drafts
        .by_ino
        .get(&ino)
        .is_some_and(|d| d.handles.is_empty() && d.name.is_none())
    {
        drafts.by_ino.remove(&ino);
    }
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
