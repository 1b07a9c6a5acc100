//! The three directories of a Maildir folder: `cur/`, `new/`, `tmp/`, and their times.
//!
//! They are not in the tree: their inode numbers are computed from the folder's ([`sub_ino`],
//! see [`crate::fs::inode`]). `cur/` and `new/` list the folder's messages (which one a
//! message is in: [`super::placement`]); `tmp/` lists the drafts written there.
//!
//! **Directory times.** Clients poll the mtime of `cur/` and `new/` (notmuch rescans only
//! directories whose mtime changed, mutt's `mail_check`). Every folder has a clock: when the
//! store's count of changes to the folder ([`Account::change_epoch`]: this mount's writes and
//! other clients' changes seen by IDLE/NOTIFY or a refresh) or this layout's own count (moves
//! between `new/` and `cur/`) differs from what the clock last saw, its time becomes now,
//! and it never goes backwards. mtime and ctime are that time. A stat of `cur/` or `new/`
//! first refreshes the folder if its listing is older than `dir_ttl`, so other clients'
//! changes show without IDLE too.
//!
//! [`Account::change_epoch`]: crate::store::Account::change_epoch

use std::time::{Duration, SystemTime};

use fuser::{FileAttr, FileType};

use crate::error::{Error, Result};
use crate::fs::inode::Ino;
use crate::fs::inode::{sub_ino, sub_of, Sub};
use crate::fs::maildir::naming::message_name;
use crate::fs::{DirEntry, ImapFs};
use crate::store::MailboxId;

pub(super) struct Clock {
    seen: (u64, u64),
    time: SystemTime,
}

impl ImapFs {
    /// Hook of `getattr`.
    pub(crate) fn maildir_attr(&self, ino: Ino) -> Option<Result<(FileAttr, Duration)>> {
        if let Some(msg) = self.delivered_as(ino) {
            return Some(
                self.given_message(msg)
                    .map(|(_, _, attr)| {
                        (
                            FileAttr {
                                ino: ino.into(),
                                ..attr
                            },
                            Duration::ZERO,
                        )
                    })
                    .ok_or_else(|| Error::NoEntry(format!("UID {}", msg.uid))),
            );
        }
        let (folder, _) = sub_of(ino)?;
        if self.maildir_folder(folder).is_none() {
            return Some(Err(Error::NoEntry(format!("directory {:#x}", ino.0))));
        }
        Some(Ok((self.sub_attr(ino), Duration::from_secs(1))))
    }

    /// The attributes of a sub directory, with its clock's time.
    pub(super) fn sub_attr(&self, ino: Ino) -> FileAttr {
        let time = match self.sub_mailbox(ino) {
            Some((_, sub, mb)) => {
                if sub != Sub::Tmp {
                    if let Err(e) = self.account.index(mb, self.opts.dir_ttl) {
                        log::debug!("refreshing for a directory time: {e}");
                    }
                }
                self.clock(mb)
            }
            None => SystemTime::now(),
        };
        let mut attr = self.attr(ino, FileType::Directory, 0o755, 0, time);
        attr.atime = SystemTime::now();
        attr
    }

    /// A folder's directory time: now if it changed since last asked, never backwards.
    pub(super) fn clock(&self, mb: MailboxId) -> SystemTime {
        let epoch = self.account.change_epoch(Some(mb));
        let now = SystemTime::now();
        let mut inner = self.maildir.inner.lock();
        let seen = (epoch, inner.local.get(&mb).copied().unwrap_or(0));
        let clock = inner.clocks.entry(mb).or_insert(Clock { seen, time: now });
        if clock.seen != seen {
            clock.seen = seen;
            clock.time = now.max(clock.time + Duration::from_nanos(1));
        }
        clock.time
    }

    /// Hook of `opendir`'s listing: a sub directory's entries.
    pub(crate) fn maildir_listing(&self, ino: Ino) -> Option<Result<Vec<DirEntry>>> {
        let (folder, sub) = sub_of(ino)?;
        Some(self.sub_listing(ino, folder, sub))
    }

    pub(super) fn sub_listing(&self, ino: Ino, folder: Ino, sub: Sub) -> Result<Vec<DirEntry>> {
        let mb = self
            .maildir_folder(folder)
            .ok_or_else(|| Error::NoEntry(format!("directory {:#x}", ino.0)))?;
        let dir = |ino: Ino, name: &str, attr: FileAttr| DirEntry {
            ino,
            kind: FileType::Directory,
            name: name.into(),
            attr,
            ttl: Duration::from_secs(1),
        };
        let mut out = vec![
            dir(ino, ".", self.sub_attr(ino)),
            dir(folder, "..", self.dir_attr(folder)),
        ];
        if sub == Sub::Tmp {
            out.extend(self.draft_entries(ino));
            return Ok(out);
        }
        self.account.settle(mb);
        let index = self.account.index(mb, self.opts.dir_ttl)?;
        // The tree lock is never taken while the index is read (the default listing's order).
        let validity = index.read().validity();
        let generation = self.tree.lock().generation(mb, validity);
        let ix = index.read();
        if ix.validity() != validity {
            return Ok(out); // reset meanwhile: the next listing shows the new generation
        }
        for (uid, meta) in self.shown_in(mb, validity, sub, ix.messages()) {
            let ino = Ino::message(generation, uid);
            out.push(DirEntry {
                ino,
                kind: FileType::RegularFile,
                name: message_name(validity, uid, &meta.flags).into(),
                attr: self.message_attr(ino, meta),
                ttl: Duration::ZERO,
            });
        }
        Ok(out)
    }

    /// Hook of a folder directory's listing: `cur`, `new` and `tmp`.
    pub(crate) fn maildir_folder_entries(&self, folder: Ino) -> Vec<DirEntry> {
        if self.maildir_folder(folder).is_none() {
            return Vec::new();
        }
        Sub::ALL
            .into_iter()
            .filter_map(|sub| {
                let ino = sub_ino(folder, sub)?;
                Some(DirEntry {
                    ino,
                    kind: FileType::Directory,
                    name: sub.name().into(),
                    attr: self.sub_attr(ino),
                    ttl: self.opts.dir_ttl,
                })
            })
            .collect()
    }

    /// Hook of `mkdir`: `cur`, `new`, `tmp` of a folder exist already (mutt's mkdir of them
    /// after creating a folder succeeds); nothing is made inside them.
    pub(crate) fn maildir_mkdir(
        &self,
        parent: Ino,
        name: &str,
    ) -> Option<Result<(FileAttr, Duration)>> {
        if sub_of(parent).is_some() {
            return Some(Err(Error::NotPermitted(
                "no directories inside cur/, new/, tmp/".into(),
            )));
        }
        let sub = Sub::named(name)?;
        self.maildir_folder(parent)?;
        let ino = sub_ino(parent, sub)?;
        Some(Ok((self.sub_attr(ino), Duration::from_secs(1))))
    }

    /// Hook of `rmdir`: `cur`, `new` and `tmp` go with their folder only.
    pub(crate) fn maildir_rmdir(&self, parent: Ino, name: &str) -> Option<Error> {
        if sub_of(parent).is_some() {
            return Some(Error::NoEntry(name.into()));
        }
        Sub::named(name)?;
        self.maildir_folder(parent)?;
        Some(Error::NotPermitted(
            "cur/, new/ and tmp/ go when their folder is removed".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::inode::InoKind;

    #[test]
    pub(super) fn sub_inodes_are_directories_and_meet_nothing_else() {
        for folder in [Ino(1), Ino(2), Ino(u64::from(u32::MAX))] {
            for sub in Sub::ALL {
                let ino = sub_ino(folder, sub).unwrap();
                assert_eq!(ino.kind(), InoKind::Dir, "{ino:?}");
                assert_eq!(sub_of(ino), Some((folder, sub)));
            }
        }
        assert_eq!(sub_of(Ino(5)), None);
        assert_eq!(sub_of(Ino::draft(5)), None);
        assert_eq!(sub_ino(Ino(1 << 32), Sub::Cur), None);
    }
}
