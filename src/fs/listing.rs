//! Directory listings as readdir hands them out. A listing is taken at `opendir` and walked by
//! offset; a folder of a million messages must not cost a million entries of memory, so its
//! messages are held as a snapshot of their UIDs (4 bytes each) and each entry (name,
//! attributes) is made only when readdir reaches it, from the index as it is then.
//!
//! Offsets are positions in the snapshot, so they stay valid whatever happens to the folder
//! while it is listed: a message removed since `opendir` is skipped (it is gone), one added
//! since shows in the next listing. Folders, `.`, `..` and drafts are few and kept as entries.
//! A `.search` result is walked the same way ([`LazyEntries`], `fs/views/search.rs`): its
//! links are made from the search run's UIDs as readdir reaches them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fuser::FileType;

use crate::fs::tree::message_file_name;
use crate::fs::{DirEntry, ImapFs};
use crate::imap::types::{Uid, UidValidity};
use crate::store::SharedIndex;

/// When the kernel asks for a listing with every entry's attributes (`readdirplus=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReaddirPlus {
    /// Always (`FUSE_DO_READDIRPLUS`): `ls -l`, `find`, `du` and `grep -r` get every entry's
    /// attributes with its name, so none of them costs a LOOKUP per file; a plain `ls` pays
    /// the kernel's inode and dentry per entry too.
    #[default]
    Always,
    /// The kernel decides (`FUSE_READDIRPLUS_AUTO`): attributes with the first chunk of a
    /// listing and then only while the entries are being looked at, as `ls -l` does chunk by
    /// chunk. A plain `ls` of a huge folder or `.search` result gets names alone (10x faster
    /// at 1,000,000 on the floor), but `find` and `du`, which read up to 100,000 names before
    /// looking at any, pay a LOOKUP per file (2.3-4x slower).
    Auto,
}

impl std::str::FromStr for ReaddirPlus {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<ReaddirPlus, String> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(ReaddirPlus::Always),
            "auto" => Ok(ReaddirPlus::Auto),
            _ => Err(format!(
                "`{}` is not always or auto",
                crate::printable::printable(s)
            )),
        }
    }
}

/// Listing requests served, by kind (`readdir_requests`, `readdirplus_requests` in
/// `user.imapfs.stats`): what [`ReaddirPlus`] made the kernel send.
#[derive(Debug, Default)]
pub(crate) struct ListingCounts {
    plain: AtomicU64,
    plus: AtomicU64,
}

impl ListingCounts {
    pub fn served(&self, plus: bool) {
        if plus { &self.plus } else { &self.plain }.fetch_add(1, Relaxed);
    }

    /// `(readdir, readdirplus)` requests so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.plain.load(Relaxed), self.plus.load(Relaxed))
    }
}

/// A directory listing, in readdir order: `before`, then the messages, then `after`.
#[derive(Default)]
pub(crate) struct Listing {
    pub before: Vec<DirEntry>,
    pub messages: Option<Box<dyn LazyEntries>>,
    pub after: Vec<DirEntry>,
}

/// Entries made only when readdir reaches them: a folder's messages ([`MessageRun`]), a
/// search result's links.
pub(crate) trait LazyEntries: Send + Sync {
    /// How many positions the entries take (some may be skipped when walked).
    fn len(&self) -> usize;

    /// Walk the entries from position `from`; `base` is the offset of the first. Returns
    /// whether `add` said the reply is full.
    fn walk(
        &self,
        fs: &ImapFs,
        from: usize,
        base: usize,
        add: &mut dyn FnMut(u64, &DirEntry) -> bool,
    ) -> bool;
}

/// A folder's messages as listed at `opendir`: their UIDs, and where to find the rest.
pub(crate) struct MessageRun {
    pub index: SharedIndex,
    /// The generation the UIDs belong to: a folder recreated since lists nothing here.
    pub validity: UidValidity,
    pub generation: u32,
    pub uids: Vec<Uid>,
    pub ttl: Duration,
}

impl From<Vec<DirEntry>> for Listing {
    fn from(before: Vec<DirEntry>) -> Listing {
        Listing {
            before,
            ..Listing::default()
        }
    }
}

impl Listing {
    /// Hand the entries at and after `offset` to `add` with the offset of the entry after
    /// each, until `add` says the reply is full (returns true).
    pub(crate) fn walk(
        &self,
        fs: &ImapFs,
        offset: u64,
        mut add: impl FnMut(u64, &DirEntry) -> bool,
    ) {
        let run_len = self.messages.as_ref().map_or(0, |m| m.len());
        let mut at = usize::try_from(offset).unwrap_or(usize::MAX);
        while at < self.before.len() {
            if add(at as u64 + 1, &self.before[at]) {
                return;
            }
            at += 1;
        }
        if let Some(run) = &self.messages {
            let from = at - self.before.len();
            if from < run_len && run.walk(fs, from, self.before.len(), &mut add) {
                return;
            }
        }
        let base = self.before.len() + run_len;
        for (i, e) in self.after.iter().enumerate().skip(at.saturating_sub(base)) {
            if add((base + i) as u64 + 1, e) {
                return;
            }
        }
    }
}

impl LazyEntries for MessageRun {
    fn len(&self) -> usize {
        self.uids.len()
    }

    fn walk(
        &self,
        fs: &ImapFs,
        from: usize,
        base: usize,
        add: &mut dyn FnMut(u64, &DirEntry) -> bool,
    ) -> bool {
        let ix = self.index.read();
        if ix.validity() != self.validity {
            return false;
        }
        for (i, &uid) in self.uids.iter().enumerate().skip(from) {
            // Removed since opendir: gone, so not listed.
            let Some(meta) = ix.messages().get(&uid) else {
                continue;
            };
            let ino = fs.message_ino(self.generation, uid, meta);
            let entry = DirEntry {
                ino,
                kind: FileType::RegularFile,
                name: message_file_name(uid).into(),
                attr: fs.message_attr(ino, meta),
                ttl: self.ttl,
            };
            if add((base + i) as u64 + 1, &entry) {
                return true;
            }
        }
        false
    }
}
