//! Inode numbers of the mount, as a type that says what it names.
//!
//! - Directories get numbers below 2^32 from the tree (root is 1), stable for the life of the
//!   mount and carried along when a folder is renamed.
//! - A message's number is `generation << 32 | uid`, where the generation (1 to 2^32 - 2)
//!   names a (mailbox, UIDVALIDITY) pair: a message inode changes when UIDVALIDITY does and
//!   can never point at another message, so `forget` has nothing to free.
//! - A new file being written (a draft, APPENDed when closed) gets generation 2^32 - 1 and a
//!   counter in the low half.

use crate::imap::types::Uid;

/// An inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

/// The root directory.
pub const ROOT: Ino = Ino(1);

/// The generation reserved for drafts.
const DRAFT_GENERATION: u32 = u32::MAX;

/// What an inode number stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InoKind {
    Dir,
    Message { generation: u32, uid: Uid },
    Draft(u32),
}

impl Ino {
    pub fn message(generation: u32, uid: Uid) -> Ino {
        debug_assert!(generation != 0 && generation != DRAFT_GENERATION);
        Ino((u64::from(generation) << 32) | u64::from(uid.get()))
    }

    pub fn draft(n: u32) -> Ino {
        Ino((u64::from(DRAFT_GENERATION) << 32) | u64::from(n))
    }

    pub fn kind(self) -> InoKind {
        let generation = (self.0 >> 32) as u32;
        let low = self.0 as u32;
        match (generation, Uid::new(low)) {
            (0, _) => InoKind::Dir,
            (DRAFT_GENERATION, _) => InoKind::Draft(low),
            (g, Some(uid)) => InoKind::Message { generation: g, uid },
            // uid 0 is no message: treat as a directory number nobody has.
            (_, None) => InoKind::Dir,
        }
    }

    pub fn is_dir(self) -> bool {
        self.kind() == InoKind::Dir
    }
}

impl From<fuser::INodeNo> for Ino {
    fn from(i: fuser::INodeNo) -> Ino {
        Ino(i.0)
    }
}

impl From<Ino> for fuser::INodeNo {
    fn from(i: Ino) -> fuser::INodeNo {
        fuser::INodeNo(i.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        let uid = Uid::new(77).unwrap();
        assert_eq!(
            Ino::message(3, uid).kind(),
            InoKind::Message { generation: 3, uid }
        );
        assert_eq!(Ino::draft(5).kind(), InoKind::Draft(5));
        assert_eq!(ROOT.kind(), InoKind::Dir);
        assert_eq!(Ino(42).kind(), InoKind::Dir);
    }
}
