//! New files: *drafts*, spooled to an unlinked temporary file while they are written and
//! APPENDed when closed.
//!
//! A draft has its own inode range ([`Ino::draft`]). It is shown under the name it was created
//! with until it is APPENDed; then its name disappears and the message shows under its new
//! UID's name. Flags set with `setfattr` and an mtime set with `touch -d`/`cp -p` before the
//! close become the APPEND's flags and INTERNALDATE. The spool file is streamed to the
//! server, never read into memory whole.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, TimeOrNow};

use crate::error::{Error, Result};
use crate::fs::inode::{Ino, InoKind};
use crate::fs::invalidate::Invalidation;
use crate::fs::read::unix_time;
use crate::fs::ImapFs;
use crate::imap::types::Flag;
use crate::store::{FlagEdit, MailboxId, MessageBody, NewMessage};

/// Largest new message accepted (servers refuse far smaller ones).
const MAX_DRAFT: u64 = 1 << 30;

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
    /// Open file handles (the creator's, and every `open` since): only the last release
    /// may act, so a reader's open and close of a file being written sends nothing.
    opens: u32,
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
            opens: 1,
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

    /// `open` of a draft (a reader, or another writer): one more handle to release.
    pub(crate) fn open_draft(&self, ino: Ino) -> Result<()> {
        let mut drafts = self.drafts.lock();
        let d = drafts
            .by_ino
            .get_mut(&ino)
            .ok_or_else(|| Error::NoEntry("draft".into()))?;
        d.opens = d.opens.saturating_add(1);
        Ok(())
    }

    /// `release` of one handle. Only the last one acts: a draft never flushed by its
    /// writer's process (a descriptor passed to another process) is sent now, its errors
    /// only logged; then the draft is gone. Earlier releases (a reader's) change nothing.
    pub(crate) fn release_draft(&self, ino: Ino) {
        if !matches!(ino.kind(), InoKind::Draft(_)) {
            return;
        }
        {
            let mut drafts = self.drafts.lock();
            let Some(d) = drafts.by_ino.get_mut(&ino) else {
                return;
            };
            d.opens = d.opens.saturating_sub(1);
            if d.opens > 0 {
                return;
            }
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
                d.dirty = false;
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
            d.mailbox = mailbox;
            d.name = Some(newname.to_string());
        }
        Ok(true)
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
