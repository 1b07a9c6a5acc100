//! One message, one inode: a Gmail message in several folders is one file with several names.
//!
//! Gmail shows a message in INBOX, in each of its label folders and in All Mail, with a UID
//! of each folder's own and the same `X-GM-MSGID`. The mount gives every such name one inode
//! ([`SharedInodes`]): the number of the first copy it handed out (`generation << 32 | uid`,
//! [`crate::fs::inode`]), kept for the life of the mount, and `st_nlink` is the number of
//! folders the mount holds a listing of that have the message ([`crate::store::Account::copies`]).
//! The kernel then sees hard links: one set of attributes and one page cache, and the store
//! reads the body once whatever name it is read through ([`crate::store::Account::body_home`]).
//!
//! Invariants:
//! - The number is only ever handed out for that message: it is its first copy's, and a UID
//!   is never reused within a generation. When that copy goes (rm in that folder, another
//!   client), the inode resolves to any copy still held ([`ImapFs::message_at`](crate::fs::ImapFs::message_at)).
//! - Whatever acts on a *name* acts on that folder's copy: `rm Work/7.eml` removes the copy
//!   in Work (on Gmail: the label), never the copy the inode is numbered after
//!   ([`ImapFs::message_named`](crate::fs::ImapFs::message_named)). Whatever acts on the inode (read, getattr, xattrs) acts on
//!   the copy it is numbered after: on Gmail flags and labels belong to the message, so every
//!   copy answers the same.
//! - Only Gmail's ids share an inode, and only in the default layout. RFC 8474's EMAILID says
//!   that copies have the same content, not the same flags (Dovecot and Cyrus keep flags per
//!   mailbox): one inode would show one copy's flags under every name, and a flag written
//!   through one name would change a copy the user did not name. Such copies keep their own
//!   inodes and share only the body. The Maildir layout numbers its files its own way.
//!
//! Changes: the table also maps each other copy's own number to the shared inode
//! ([`link_changes`]), so that the store's news about that copy (removed, flags changed)
//! reaches the kernel as news about the shared inode.
//!
//! Cost: nothing for a server without ids (no entry is made); a Gmail message costs one entry
//! in each direction (about 100 bytes) once it has been looked up or listed, and one more per
//! other copy handed out.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::fs::inode::Ino;
use crate::fs::invalidate::Invalidation;
use crate::fs::tree::Tree;
use crate::store::{Change, MessageMeta, ObjectId};

/// The inode of each message shown under several names, and back.
#[derive(Default)]
pub struct SharedInodes {
    by_object: HashMap<ObjectId, Ino>,
    objects: HashMap<Ino, ObjectId>,
    /// The shared inode of each other copy handed out, by the copy's own number: a change
    /// the store announces for that copy is news about the shared inode.
    links: HashMap<Ino, Ino>,
}

impl SharedInodes {
    /// The inode of message `id` for its copy numbered `own`: the number of the first copy
    /// handed out (`own` if this is the first).
    pub fn ino(&mut self, id: &ObjectId, own: Ino) -> Ino {
        if let Some(&ino) = self.by_object.get(id) {
            if ino != own {
                self.links.insert(own, ino);
            }
            return ino;
        }
        self.by_object.insert(id.clone(), own);
        self.objects.insert(own, id.clone());
        own
    }

    /// The message a shared inode stands for (`None`: an inode of one folder's copy).
    pub fn object(&self, ino: Ino) -> Option<&ObjectId> {
        self.objects.get(&ino)
    }
}

/// What the kernel must forget about shared inodes after a store change: the attributes
/// (`st_nlink`, flags) of the inode a removed or changed copy shares, whose own number the
/// kernel does not know. A copy added by another client counts once its folder is listed
/// again (readdirplus hands the kernel the new count).
pub(crate) fn link_changes(
    change: &Change,
    tree: &Mutex<Tree>,
    shared: &Mutex<SharedInodes>,
) -> Vec<Invalidation> {
    if matches!(change, Change::Added { .. }) {
        return Vec::new();
    }
    let Some((mailbox, validity, uids)) = change.messages() else {
        return Vec::new();
    };
    // No shared inodes (a server without Gmail's ids): nothing to look up, and no
    // generation made for a folder only to find nothing under it.
    if shared.lock().links.is_empty() {
        return Vec::new();
    }
    // One lock at a time (the tree's, then the table's): nothing else nests them.
    let generation = tree.lock().generation(mailbox, validity);
    let shared = shared.lock();
    let mut out: Vec<Invalidation> = uids
        .iter()
        .filter_map(|uid| shared.links.get(&Ino::message(generation, *uid)))
        .map(|ino| Invalidation::Attr(*ino))
        .collect();
    out.dedup();
    out
}

/// The id that makes a message share its inode: Gmail's X-GM-MSGID (see the module's story).
pub fn sharing_id(meta: &MessageMeta) -> Option<&ObjectId> {
    let ids = meta.ids.as_deref()?;
    matches!(ids.message, ObjectId::Gmail(_)).then_some(&ids.message)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::ObjectIds;

    fn meta(message: Option<ObjectId>) -> MessageMeta {
        MessageMeta {
            listed_size: 1,
            body_len: None,
            internal_date: 0,
            flags: Default::default(),
            modseq: None,
            ids: message.map(|message| {
                Arc::new(ObjectIds {
                    message,
                    thread: None,
                })
            }),
        }
    }

    #[test]
    fn the_first_number_handed_out_stays() {
        let mut t = SharedInodes::default();
        let id = ObjectId::Gmail(7);
        assert_eq!(t.ino(&id, Ino(0x1_0000_0005)), Ino(0x1_0000_0005));
        assert_eq!(t.ino(&id, Ino(0x3_0000_0009)), Ino(0x1_0000_0005));
        assert_eq!(t.object(Ino(0x1_0000_0005)), Some(&id));
        assert_eq!(t.object(Ino(0x3_0000_0009)), None);
    }

    #[test]
    fn a_change_to_another_copy_is_news_about_the_shared_inode() {
        use crate::imap::types::{Uid, UidValidity};
        use crate::store::MailboxId;
        let mut tree = Tree::default();
        let v = UidValidity::new(9).unwrap();
        let (inbox, work) = (MailboxId::new(1).unwrap(), MailboxId::new(2).unwrap());
        let (gi, gw) = (tree.generation(inbox, v), tree.generation(work, v));
        let uid = |n| Uid::new(n).unwrap();
        let mut t = SharedInodes::default();
        let id = ObjectId::Gmail(7);
        let first = t.ino(&id, Ino::message(gi, uid(5)));
        assert_eq!(t.ino(&id, Ino::message(gw, uid(3))), first);
        let (tree, t) = (Mutex::new(tree), Mutex::new(t));
        let removed = |mailbox, n| Change::Removed {
            mailbox,
            validity: v,
            uids: vec![uid(n)],
        };
        // Work's copy went: the shared inode's count is stale.
        assert_eq!(
            link_changes(&removed(work, 3), &tree, &t),
            [Invalidation::Attr(first)]
        );
        // The numbered copy is the kernel's own number (fs::invalidate drops it); another
        // message's change is no news here.
        assert!(link_changes(&removed(inbox, 5), &tree, &t).is_empty());
        assert!(link_changes(&removed(work, 4), &tree, &t).is_empty());
    }

    #[test]
    fn only_gmail_ids_share_an_inode() {
        assert_eq!(
            sharing_id(&meta(Some(ObjectId::Gmail(1)))),
            Some(&ObjectId::Gmail(1))
        );
        assert_eq!(
            sharing_id(&meta(Some(ObjectId::Rfc8474("M1".into())))),
            None
        );
        assert_eq!(sharing_id(&meta(None)), None);
    }
}
