//! Which of a folder's messages are in `new/` and which in `cur/`.
//!
//! A message no client has placed follows mbsync, which stores a message it pulls in `new/`
//! when it has no \Seen and in `cur/` when it has. Where a client puts a message (a rename
//! into `new/` or `cur/`: neomutt's sync and notmuch move what they have looked at from
//! `new/` to `cur/` with the same letters; `mflag -S` renames within `new/`) it stays, as in
//! a local Maildir, whatever its flags become. That is no change on the server (IMAP has
//! nothing to say it with: \Recent is the server's), so the choice is remembered here, per
//! message of one generation.
//!
//! The choices that differ from the rule are kept beside the folder's saved index
//! ([`crate::store::persist`]), a file `<folder>.cur` of `new|cur UIDVALIDITY UID` lines,
//! private (0600) like the index: after a remount a message a client moved to `cur/` unseen
//! is still in `cur/`, not in `new/` where the client would take it for new mail. The file
//! is rewritten when a choice changes and read on the first look at the folder. Without a
//! cache directory the choices last for the mount.

use std::collections::{HashMap, HashSet};

use crate::fs::inode::Sub;
use crate::fs::ImapFs;
use crate::imap::types::{Flag, Uid, UidValidity};
use crate::store::{MailboxId, MessageMeta, MessageRef};

/// The kind of the file beside a saved index.
const BESIDE: &str = "cur";

/// Most entries read back from a file (a folder of millions of unread messages stays below).
const MAX_ENTRIES: usize = 1 << 22;

/// Where clients put messages.
#[derive(Default)]
pub(super) struct Placement {
    chosen: HashMap<MessageRef, Sub>,
    /// Folders whose saved file was read (or found missing).
    loaded: HashSet<MailboxId>,
}

/// Where mbsync puts a message.
fn by_rule(meta: &MessageMeta) -> Sub {
    if meta.flags.contains(&Flag::Seen) {
        Sub::Cur
    } else {
        Sub::New
    }
}

impl Placement {
    /// Where `msg` is shown: where a client put it, else by the rule.
    fn sub(&self, msg: &MessageRef, meta: &MessageMeta) -> Sub {
        self.chosen
            .get(msg)
            .copied()
            .unwrap_or_else(|| by_rule(meta))
    }
}

impl ImapFs {
    /// Whether a message is shown in `new/` (else in `cur/`).
    pub(super) fn in_new(&self, msg: MessageRef, meta: &MessageMeta) -> bool {
        self.with_placement(msg.mailbox, |p| p.sub(&msg, meta) == Sub::New)
    }

    /// Which of a folder's `messages` (of generation `validity`) a listing of `sub` shows:
    /// one look at the placement for the whole listing.
    pub(super) fn shown_in<'m>(
        &self,
        mb: MailboxId,
        validity: UidValidity,
        sub: Sub,
        messages: impl IntoIterator<Item = (&'m Uid, &'m MessageMeta)>,
    ) -> Vec<(Uid, &'m MessageMeta)> {
        self.with_placement(mb, |p| {
            messages
                .into_iter()
                .filter(|&(&uid, meta)| {
                    let msg = MessageRef {
                        mailbox: mb,
                        validity,
                        uid,
                    };
                    p.sub(&msg, meta) == sub
                })
                .map(|(&uid, meta)| (uid, meta))
                .collect()
        })
    }

    /// `f` on the placement with folder `mb`'s saved choices read, under one lock (two when
    /// the saved file is read first).
    fn with_placement<R>(&self, mb: MailboxId, f: impl FnOnce(&Placement) -> R) -> R {
        {
            let inner = self.maildir.inner.lock();
            if inner.placement.loaded.contains(&mb) {
                return f(&inner.placement);
            }
        }
        self.load_placement(mb);
        f(&self.maildir.inner.lock().placement)
    }

    /// A client put `msg` in `sub` (`cur/` or `new/`); `was` is the message it was before, if
    /// another (a move to another folder).
    pub(super) fn place(&self, msg: MessageRef, sub: Sub, was: Option<MessageRef>) {
        self.load_placement(msg.mailbox);
        let (changed, was_changed) = {
            let mut inner = self.maildir.inner.lock();
            let p = &mut inner.placement;
            let changed = p.chosen.insert(msg, sub) != Some(sub);
            (changed, was.is_some_and(|w| p.chosen.remove(&w).is_some()))
        };
        if let Some(was) = was.filter(|w| was_changed && w.mailbox != msg.mailbox) {
            self.save_placement(was.mailbox);
        }
        if changed || was_changed {
            self.save_placement(msg.mailbox);
        }
    }

    /// Read a folder's saved placement once per mount.
    fn load_placement(&self, mb: MailboxId) {
        if self.maildir.inner.lock().placement.loaded.contains(&mb) {
            return;
        }
        // Read without the lock; two first looks may both read, and both add the same.
        let saved = self.account.load_beside(mb, BESIDE).unwrap_or_default();
        let entries = parse(&saved);
        let mut inner = self.maildir.inner.lock();
        if inner.placement.loaded.insert(mb) {
            for (sub, validity, uid) in entries {
                let msg = MessageRef {
                    mailbox: mb,
                    validity,
                    uid,
                };
                inner.placement.chosen.entry(msg).or_insert(sub);
            }
        }
    }

    /// Write a folder's choices that differ from the rule (or whose message is not known).
    fn save_placement(&self, mb: MailboxId) {
        let entries: Vec<(MessageRef, Sub)> = {
            let inner = self.maildir.inner.lock();
            inner
                .placement
                .chosen
                .iter()
                .filter(|(m, _)| m.mailbox == mb)
                .map(|(m, s)| (*m, *s))
                .collect()
        };
        let mut text = String::new();
        for (m, sub) in entries {
            let rule = self.account.message_meta(m).map(|meta| by_rule(&meta));
            if rule != Some(sub) {
                text.push_str(&format!("{} {} {}\n", sub.name(), m.validity, m.uid));
            }
        }
        self.account.save_beside(mb, BESIDE, text.as_bytes());
    }
}

/// `new|cur UIDVALIDITY UID` lines; anything else is skipped.
fn parse(bytes: &[u8]) -> Vec<(Sub, UidValidity, Uid)> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            let sub = Sub::named(words.next()?).filter(|s| *s != Sub::Tmp)?;
            let validity = UidValidity::new(words.next()?.parse().ok()?)?;
            let uid = Uid::new(words.next()?.parse().ok()?)?;
            words.next().is_none().then_some((sub, validity, uid))
        })
        .take(MAX_ENTRIES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_lines_parse_and_junk_is_skipped() {
        let got = parse(b"cur 17 4\nnew 17 x\ncur 0 3\n\nnew 18 9\ntmp 1 1\ncur 1 2 3\ngarbage\n");
        let want: Vec<(Sub, UidValidity, Uid)> = [(Sub::Cur, 17, 4), (Sub::New, 18, 9)]
            .into_iter()
            .map(|(s, v, u)| (s, UidValidity::new(v).unwrap(), Uid::new(u).unwrap()))
            .collect();
        assert_eq!(got, want);
    }
}
