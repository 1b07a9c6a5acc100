//! Telling the kernel what it must forget.
//!
//! The kernel caches entries (name -> inode), attributes and pages. When the account changes
//! (our own writes, a refresh that found other clients' changes), those caches must be
//! corrected. The notifier may not be called from a FUSE callback or while holding a lock a
//! callback needs (it deadlocks), so one dedicated thread does it: it receives the store's
//! [`Change`]s and the filesystem's own [`Invalidation`]s, maps changes to inode numbers
//! under the tree lock, releases the lock, and only then calls the notifier.

use std::ffi::OsString;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::inode::Ino;
use crate::fs::inode::{sub_ino, Sub};
use crate::fs::tree::{message_file_name, Tree};
use crate::store::Change;

/// A cache entry the kernel must drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The name `name` in directory `parent` (it may now stand for something else).
    Entry { parent: Ino, name: OsString },
    /// The attributes and pages of an inode.
    Inode(Ino),
    /// Only the attributes of an inode (a message's flags or size changed; its bytes did not,
    /// so the kernel keeps its pages).
    Attr(Ino),
}

/// What the invalidation thread works on.
#[derive(Debug)]
pub enum Work {
    Kernel(Invalidation),
    Store(Change),
}

/// The sending side, held by the filesystem.
#[derive(Default)]
pub struct Invalidator(Mutex<Option<Sender<Work>>>);

impl Invalidator {
    pub fn connect(&self, tx: Sender<Work>) {
        *self.0.lock() = Some(tx);
    }

    pub fn send(&self, inv: Invalidation) {
        if let Some(tx) = &*self.0.lock() {
            let _ = tx.send(Work::Kernel(inv));
        }
    }
}

/// Forward invalidations to the kernel until every sender is gone.
pub fn run(rx: Receiver<Work>, tree: Arc<Mutex<Tree>>, notifier: fuser::Notifier) {
    for work in rx {
        let invs = match work {
            Work::Kernel(inv) => vec![inv],
            Work::Store(change) => translate(&tree, &change),
        };
        for inv in invs {
            let r = match &inv {
                Invalidation::Entry { parent, name } => {
                    notifier.inval_entry((*parent).into(), name)
                }
                Invalidation::Inode(ino) => notifier.inval_inode((*ino).into(), 0, 0),
                Invalidation::Attr(ino) => notifier.inval_inode((*ino).into(), -1, 0),
            };
            if let Err(e) = r {
                // ENOENT: the kernel no longer knows it; nothing to drop.
                log::debug!("invalidating {inv:?}: {e}");
            }
        }
    }
}

/// The kernel entries a store change makes stale.
fn translate(tree: &Mutex<Tree>, change: &Change) -> Vec<Invalidation> {
    let mut tree = tree.lock();
    match change {
        // The tree is rebuilt by the change thread, which sends what that removed.
        Change::Mailboxes(_) => Vec::new(),
        // A name that was absent may be cached as absent.
        Change::Added { mailbox, uids, .. } => {
            let Some(dir) = tree.dir_of(*mailbox) else {
                return Vec::new();
            };
            let mut out = vec![Invalidation::Inode(dir)];
            out.extend(maildir_dirs(dir));
            out.extend(uids.iter().map(|uid| Invalidation::Entry {
                parent: dir,
                name: message_file_name(*uid).into(),
            }));
            out
        }
        Change::Removed { .. } | Change::Reset { .. } => {
            let Some((mailbox, validity, uids)) = change.messages() else {
                return Vec::new();
            };
            let Some(dir) = tree.dir_of(mailbox) else {
                return Vec::new();
            };
            // The names go, and so do the inodes' attributes and pages: no byte of a gone
            // message (or of an old generation) is served from the kernel's cache.
            let generation = tree.generation(mailbox, validity);
            let mut out = vec![Invalidation::Inode(dir)];
            out.extend(maildir_dirs(dir));
            for uid in uids {
                out.push(Invalidation::Entry {
                    parent: dir,
                    name: message_file_name(*uid).into(),
                });
                out.push(Invalidation::Inode(Ino::message(generation, *uid)));
            }
            out
        }
        Change::Changed {
            mailbox,
            validity,
            uids,
        } => {
            let generation = tree.generation(*mailbox, *validity);
            let mut out: Vec<Invalidation> = uids
                .iter()
                .map(|u| Invalidation::Attr(Ino::message(generation, *u)))
                .collect();
            // Flags are in Maildir names: the directories' times change.
            if let Some(dir) = tree.dir_of(*mailbox) {
                out.extend(maildir_dirs(dir));
            }
            out
        }
    }
}

/// The attributes (times) of a folder's `cur/` and `new/` in the Maildir layout; in the
/// default layout the kernel knows no such inodes and the invalidations do nothing.
fn maildir_dirs(dir: Ino) -> impl Iterator<Item = Invalidation> {
    [Sub::Cur, Sub::New]
        .into_iter()
        .filter_map(move |s| sub_ino(dir, s))
        .map(Invalidation::Attr)
}
