//! One message, one inode: a Gmail message in several folders is one file with several names.
//!
//! Gmail shows a message in INBOX, in each of its label folders and in All Mail, with a UID
//! of each folder's own and the same `X-GM-MSGID`. The mount gives every such name one inode
//! ([`SharedInodes`]): the number of the first copy it handed out (`generation << 32 | uid`,
//! [`crate::fs::inode`]), kept for the life of the mount, and `st_nlink` is the number of
//! folders the mount holds a listing of that have the message ([`crate::store::Indexes::copies`]).
//! The kernel then sees hard links: one set of attributes and one page cache, and the store
//! reads the body once whatever name it is read through ([`crate::store::Account::body_home`]).
//!
//! Invariants:
//! - The number is only ever handed out for that message: it is its first copy's, and a UID
//!   is never reused within a generation. When that copy goes (rm in that folder, another
//!   client), the inode resolves to any copy still held ([`ImapFs::message_at`]).
//! - Whatever acts on a *name* acts on that folder's copy: `rm Work/7.eml` removes the copy
//!   in Work (on Gmail: the label), never the copy the inode is numbered after
//!   ([`ImapFs::message_named`]). Whatever acts on the inode (read, getattr, xattrs) acts on
//!   the copy it is numbered after: on Gmail flags and labels belong to the message, so every
//!   copy answers the same.
//! - Only Gmail's ids share an inode, and only in the default layout. RFC 8474's EMAILID says
//!   that copies have the same content, not the same flags (Dovecot and Cyrus keep flags per
//!   mailbox): one inode would show one copy's flags under every name, and a flag written
//!   through one name would change a copy the user did not name. Such copies keep their own
//!   inodes and share only the body. The Maildir layout numbers its files its own way.
//!
//! Cost: nothing for a server without ids (no entry is made); a Gmail message costs one entry
//! in each direction (about 100 bytes) once it has been looked up or listed.

use std::collections::HashMap;

use crate::fs::inode::Ino;
use crate::store::{MessageMeta, ObjectId};

/// The inode of each message shown under several names, and back.
#[derive(Default)]
pub struct SharedInodes {
    by_object: HashMap<ObjectId, Ino>,
    objects: HashMap<Ino, ObjectId>,
}

impl SharedInodes {
    /// The inode of message `id`; `first` (its copy's own number) if it has none yet.
    pub fn ino(&mut self, id: &ObjectId, first: Ino) -> Ino {
        if let Some(&ino) = self.by_object.get(id) {
            return ino;
        }
        self.by_object.insert(id.clone(), first);
        self.objects.insert(first, id.clone());
        first
    }

    /// The message a shared inode stands for (`None`: an inode of one folder's copy).
    pub fn object(&self, ino: Ino) -> Option<&ObjectId> {
        self.objects.get(&ino)
    }
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
            flags: Vec::new(),
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
