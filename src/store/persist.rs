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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use parking_lot::Mutex;

use crate::imap::types::MailboxName;
use crate::store::ids::MailboxId;
use crate::store::index::{Index, SharedIndex};
use crate::store::Account;

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

    /// The key an account's saved state is kept under, `user@host:port`: the mount and
    /// `imapfs cache --account` must build the same one.
    pub fn account_key(user: &str, host: &str, port: u16) -> String {
        format!("{user}@{host}:{port}")
    }
}

/// `<dir>/<md5(account)>`: an account's directory, which holds everything saved for it (the
/// indexes and the folder list here, the bodies of [`crate::store::disk_cache`], the daily
/// counts of [`crate::store::daily`]).
pub fn account_dir(dir: &Path, account: &str) -> PathBuf {
    dir.join(hex_md5(account.as_bytes()))
}

/// The name a key is kept under in the cache directory: its MD5 in hex (names only: the
/// files hold their full key and check it).
pub(crate) fn hex_md5(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
        let ix = load_private(&file_for(p, name), |data| decode(&data, &p.account, name))?;
        log::debug!(
            "{name}: starting from the saved index ({} messages)",
            ix.messages().len()
        );
        Some(ix)
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
        load_private(&path, |data| Ok(Some(data)))
    }

    /// Replace the file [`Account::load_beside`] reads (written as an index is: whole or not
    /// at all, 0600 in a 0700 directory), by the saving thread in the order asked (no fsync
    /// on the FUSE thread that asked; unmount waits for it). Nothing without a cache
    /// directory.
    pub(crate) fn save_beside(&self, id: MailboxId, kind: &str, bytes: &[u8]) {
        let (Some(p), Some(name)) = (self.opts.persist.as_ref(), self.mailbox_name(id)) else {
            return;
        };
        self.saved.queue(SaveJob::File {
            what: "a file beside a folder's index",
            path: beside(p, &name, kind),
            bytes: bytes.to_vec(),
        });
    }
}

/// The file `kind` beside a folder's index.
fn beside(p: &PersistOptions, name: &MailboxName, kind: &str) -> PathBuf {
    file_for(p, name).with_extension(kind)
}

/// The file of a folder's index.
fn file_for(p: &PersistOptions, name: &MailboxName) -> PathBuf {
    account_dir(&p.dir, &p.account).join(format!("{}.idx", hex_md5(name.raw())))
}

mod format;
mod list;
mod private;

use format::{decode, encode, open_sealed, put_bytes, put_opt, put_u32, seal};
pub use list::saved_mailbox_list;
use private::load_private;
pub(crate) use private::{euid, read_private, with_dir_locked, write_private};

#[cfg(test)]
mod tests;
