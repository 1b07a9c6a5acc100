//! What writes mean in the Maildir layout: creating in `tmp/`, renames, unlink.
//!
//! - **Flags by rename** within a folder are one `UID STORE` of the letters that changed,
//!   answered after the server; `T` alone is \Deleted, nothing more.
//! - **Delivery.** A file created in `tmp/` is a draft that neither close nor fsync sends
//!   (mblaze's `mdeliver` fsyncs before its rename); its rename into `new/` or `cur/` of any
//!   folder is the APPEND, flags from the new name's letters.
//! - **Moves.** A rename of a message into another folder's `cur/` or `new/` is a MOVE (its
//!   new name's unique part is the client's and is not kept, so it never collides).
//! - **Unlink** is the `rm` of the default layout (`delete=`); in `tmp/` it drops a draft.
//!
//! Either way the message is then listed under its server name; the name the client gave is
//! found by lookup for a minute (`notmuch insert` opens it, see [`super`]).

use std::time::Duration;

use fuser::FileAttr;

use crate::error::{Error, Result};
use crate::fs::inode::Ino;
use crate::fs::inode::{sub_of, Sub};
use crate::fs::invalidate::Invalidation;
use crate::fs::maildir::naming::{letter_edit, letter_of, parse_name};
use crate::fs::write::Renamed;
use crate::fs::ImapFs;
use crate::store::{MailboxId, MessageBody, MessageRef, NewMessage};

impl ImapFs {
    /// Hook of `create`: only `tmp/` takes new files (drafts, sent by their rename).
    pub(crate) fn maildir_create(
        &self,
        parent: Ino,
        name: &str,
        pid: u32,
    ) -> Option<Result<(FileAttr, u64)>> {
        if !self.is_maildir() {
            return None;
        }
        if let Err(e) = self.refuse_if_read_only() {
            return Some(Err(e));
        }
        Some(match self.sub_mailbox(parent) {
            Some((_, Sub::Tmp, mb)) => self.create_draft_in(parent, mb, name, pid),
            _ => Err(Error::NotPermitted(
                "in the Maildir layout new messages are written to tmp/ and renamed into new/ or cur/"
                    .into(),
            )),
        })
    }

    /// Hook of `setattr`: a time set on a message (mutt dates the file it saved with
    /// `utime`, and fails the save if that fails) is accepted and changes nothing: a message's
    /// mtime is its INTERNALDATE. Anything else goes the usual way.
    pub(crate) fn maildir_touch(
        &self,
        ino: Ino,
        mode: Option<u32>,
        size: Option<u64>,
        mtime: Option<fuser::TimeOrNow>,
    ) -> Option<Result<(FileAttr, Duration)>> {
        let is_message = matches!(ino.kind(), crate::fs::inode::InoKind::Message { .. })
            || self.delivered_as(ino).is_some();
        if !self.is_maildir() || !is_message || mtime.is_none() || mode.is_some() || size.is_some()
        {
            return None;
        }
        Some(self.attr_of(ino))
    }

    /// Whether closes and fsyncs of a draft must not send it (it waits in `tmp/` for its
    /// rename).
    pub(crate) fn waits_for_rename(&self, ino: Ino) -> bool {
        self.is_maildir()
            && self
                .draft_parent(ino)
                .and_then(sub_of)
                .is_some_and(|(_, sub)| sub == Sub::Tmp)
    }

    /// Hook of `unlink`: a file in `tmp/` is dropped unsent; a message is removed as `rm`
    /// removes it in the default layout.
    pub(crate) fn maildir_unlink(&self, parent: Ino, name: &str) -> Option<Result<()>> {
        let (_, sub, mb) = self.sub_mailbox(parent)?;
        if let Err(e) = self.refuse_if_read_only() {
            return Some(Err(e));
        }
        if sub == Sub::Tmp {
            let Some(attr) = self.draft_by_name(parent, name) else {
                return Some(Err(Error::NoEntry(name.into())));
            };
            self.discard_draft(parent, name);
            self.forget_idle_draft(Ino(attr.ino.0));
            return Some(Ok(()));
        }
        Some(
            self.message_in(parent, sub, mb, name)
                .and_then(|(_, msg, _)| self.account.delete_message(msg))
                .map(|()| self.invalidate(Invalidation::Inode(parent))),
        )
    }

    /// Hook of `rename`: delivery from `tmp/`, flags by rename, moves between folders.
    /// `None` when neither side is a sub directory.
    pub(crate) fn maildir_rename(
        &self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Option<Result<Renamed>> {
        if sub_of(parent).is_none() && sub_of(newparent).is_none() {
            return None;
        }
        if !self.is_maildir() {
            return Some(Err(Error::NoEntry(name.into())));
        }
        let from = self.sub_mailbox(parent);
        let to = self.sub_mailbox(newparent);
        let (Some((_, from_sub, from_mb)), Some((_, to_sub, to_mb))) = (from, to) else {
            return Some(Err(Error::NotPermitted(
                "messages move only between cur/, new/ and tmp/ directories".into(),
            )));
        };
        let r = match (from_sub, to_sub) {
            (_, Sub::Tmp) => Err(Error::NotPermitted(
                "files are renamed out of tmp/, not into it".into(),
            )),
            (Sub::Tmp, _) => self.deliver(parent, name, newparent, newname, to_mb, to_sub),
            _ => self.rename_message(
                (parent, from_sub, from_mb, name),
                (newparent, to_sub, to_mb, newname),
            ),
        };
        Some(r.map(|()| Renamed::Done))
    }

    /// `tmp/name` renamed into `cur/` or `new/` of `mb`: the APPEND.
    pub(super) fn deliver(
        &self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
        mb: MailboxId,
        to: Sub,
    ) -> Result<()> {
        let attr = self
            .draft_by_name(parent, name)
            .ok_or_else(|| Error::NoEntry(name.into()))?;
        let ino = Ino(attr.ino.0);
        let taken = self
            .take_draft(ino)
            .ok_or_else(|| Error::NoEntry(name.into()))?;
        let mut flags = parse_name(newname).flags;
        // Flags set with setfattr that no letter can say (keywords) are kept.
        flags.extend(taken.flags.into_iter().filter(|f| letter_of(f).is_none()));
        let r = self.account.append(
            mb,
            NewMessage {
                body: MessageBody::File {
                    file: taken.file,
                    len: taken.len,
                },
                flags: flags.clone(),
                date: taken.mtime,
            },
        );
        self.forget_idle_draft(ino);
        for (dir, n) in [(parent, name), (newparent, newname)] {
            self.invalidate(Invalidation::Entry {
                parent: dir,
                name: n.into(),
            });
        }
        if let Some(msg) = r? {
            // It stays where the client put it (see placement).
            self.place(msg, to, None);
            self.give_name(newparent, newname, msg);
            self.note_delivered(ino, msg);
        }
        self.note_local_change(mb);
        self.invalidate(Invalidation::Inode(newparent));
        Ok(())
    }

    /// A message renamed from `cur/` or `new/` into `cur/` or `new/`: flags (same folder) or
    /// a MOVE (another folder).
    pub(super) fn rename_message(
        &self,
        (parent, from_sub, from_mb, name): (Ino, Sub, MailboxId, &str),
        (newparent, to_sub, to_mb, newname): (Ino, Sub, MailboxId, &str),
    ) -> Result<()> {
        let (ino, msg, attr) = self.message_in(parent, from_sub, from_mb, name)?;
        let target = parse_name(newname);
        if from_mb == to_mb && target.message != Some((msg.validity, msg.uid)) {
            return Err(Error::NotPermitted(
                "within a folder only the flag letters of a name can change".into(),
            ));
        }
        let (_, meta) = self.message_of(ino)?;
        let edit = letter_edit(&meta.flags, &target.flags);
        if let Some(edit) = &edit {
            self.account.set_flags(msg, edit)?;
        }
        let at = if from_mb == to_mb {
            msg
        } else {
            self.departed.lock().put(ino, attr);
            let moved = self
                .account
                .move_now(msg.mailbox, msg.validity, &[msg.uid], to_mb)?;
            self.note_local_change(from_mb);
            let validity = self
                .account
                .cached_index(to_mb)
                .map(|i| i.read().validity());
            match (moved.get(&msg.uid), validity) {
                (Some(uid), Some(validity)) => {
                    let at = MessageRef {
                        mailbox: to_mb,
                        validity,
                        uid: *uid,
                    };
                    self.give_name(newparent, newname, at);
                    at
                }
                // No COPYUID: where it is in the target is not known; it shows there by the
                // rule (see placement).
                _ => msg,
            }
        };
        if at.mailbox == to_mb {
            self.place(at, to_sub, (at != msg).then_some(msg));
        }
        self.note_local_change(to_mb);
        for (dir, n) in [(parent, name), (newparent, newname)] {
            self.invalidate(Invalidation::Entry {
                parent: dir,
                name: n.into(),
            });
            self.invalidate(Invalidation::Inode(dir));
        }
        Ok(())
    }
}
