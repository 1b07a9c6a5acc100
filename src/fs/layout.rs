//! The seam between the FUSE callbacks and how folders show their messages.
//!
//! A [`Layout`] is a presentation of the same store, inodes and caches, chosen at mount:
//! `<UID>.eml` files in each folder directory (the default), or the Maildir layout
//! ([`crate::fs::maildir`]). What differs is naming and what a write means (a rename is a
//! move, a flag change or a delivery). The callbacks in `fs/mod.rs` call one method here per
//! request that the layouts answer differently; each method lets the Maildir layout claim the
//! request first (its hooks answer `None` for anything that is not theirs, and always in the
//! default layout) and otherwise goes the default way. Reads (lookup, getattr, listings) and
//! renames have their hook at the top of their handler in `fs/read.rs` and `fs/write.rs`.

use std::time::Duration;

use fuser::{FileAttr, FopenFlags, OpenFlags};

use crate::error::Result;
use crate::fs::drafts::FlushKind;
use crate::fs::inode::{Ino, InoKind};
use crate::fs::ImapFs;

/// How folders show their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// `UID.eml` files in the folder's directory.
    #[default]
    Eml,
    /// `cur/`, `new/` and `tmp/` in every folder directory.
    Maildir,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Layout, String> {
        match s.to_ascii_lowercase().as_str() {
            "eml" => Ok(Layout::Eml),
            "maildir" => Ok(Layout::Maildir),
            _ => Err(format!(
                "`{}` is not eml or maildir",
                crate::printable::printable(s)
            )),
        }
    }
}

impl ImapFs {
    /// `mkdir`.
    pub(crate) fn mkdir_entry(&self, parent: Ino, name: &str) -> Result<(FileAttr, Duration)> {
        match self.maildir_mkdir(parent, name) {
            Some(r) => r,
            None => self.make_dir(parent, name),
        }
    }

    /// `unlink`.
    pub(crate) fn unlink_entry(&self, parent: Ino, name: &str) -> Result<()> {
        match self.maildir_unlink(parent, name) {
            Some(r) => r,
            None => self.remove_file(parent, name),
        }
    }

    /// `rmdir`.
    pub(crate) fn rmdir_entry(&self, parent: Ino, name: &str) -> Result<()> {
        match self.maildir_rmdir(parent, name) {
            Some(e) => Err(e),
            None => self.remove_dir(parent, name),
        }
    }

    /// `create`: a new file (a draft), with its handle.
    pub(crate) fn create_entry(
        &self,
        parent: Ino,
        name: &str,
        pid: u32,
    ) -> Result<(FileAttr, u64)> {
        match self.maildir_create(parent, name, pid) {
            Some(r) => r,
            None => self.create_draft(parent, name, pid),
        }
    }

    /// `open`: a handle number and the open flags for the kernel.
    pub(crate) fn open_entry(
        &self,
        ino: Ino,
        flags: OpenFlags,
        pid: u32,
    ) -> Result<(u64, FopenFlags)> {
        // A draft's handles are counted: only a writing one's close sends it. A draft that a
        // rename delivered (Maildir) opens as the message it became.
        if matches!(ino.kind(), InoKind::Draft(_)) && self.delivered_as(ino).is_none() {
            return Ok((self.open_draft(ino, flags, pid)?, FopenFlags::empty()));
        }
        Ok((0, self.open_file(ino, flags)?))
    }

    /// `flush` and `fsync`: a draft's close or fsync sends it, except in a Maildir `tmp/`,
    /// where its rename does.
    pub(crate) fn flush_entry(&self, ino: Ino, fh: u64, pid: u32, kind: FlushKind) -> Result<()> {
        if self.waits_for_rename(ino) {
            return Ok(());
        }
        self.flush_draft(ino, fh, pid, kind)
    }

    /// `release`. The kernel does not wait for its reply to return from close(2); a release
    /// may withdraw a partial version on the server (see [`crate::fs::drafts`]).
    pub(crate) fn release_entry(&self, ino: Ino, fh: u64) {
        if self.waits_for_rename(ino) {
            self.close_draft_handle(ino, fh);
        } else {
            self.release_draft(ino, fh);
        }
    }
}
