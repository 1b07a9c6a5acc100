//! Inode numbers of the mount, as a type that says what it names.
//!
//! - Directories get numbers below 2^32 from the tree (root is 1), stable for the life of the
//!   mount and carried along when a folder is renamed.
//! - A message's number is `generation << 32 | uid`, where the generation (1 to 2^31 - 1)
//!   names a (mailbox, UIDVALIDITY) pair: a message inode changes when UIDVALIDITY does and
//!   can never point at another message, so `forget` has nothing to free.
//! - A new file being written (a draft, APPENDed when closed) gets generation 2^32 - 1 and a
//!   counter in the low half.
//! - Views (`.search` and `.parts`, see [`crate::fs::views`]) have bit 63 set (so they meet
//!   neither directories nor messages) and a high half other than the drafts'. Bits 32-62,
//!   `high`, say what the low half is:
//!   - `high` = 1: the `.search` directory of directory `low`; 2: the `.parts` directory of
//!     directory `low`; 3: search result directory number `low`;
//!   - 16 <= `high` < 2^30: link number `low` of search run `high - 16`;
//!   - `high` >= 2^30 (bit 62): entry `high & 0x7ff` of the parts of message `low` (a UID)
//!     of generation `(high >> 11) & 0x7ffff` (entry 0 is `.parts/<UID>` itself). Generation
//!     0x7ffff is never used, so the drafts' high half (0x7fffffff) is not a part.
//!
//!   High halves 0xfffffff0 to 0xfffffff2 (a part of generation 0x7ffff, so never a view)
//!   are the `cur/`, `new/` and `tmp/` directories of folder directory `low` in the Maildir
//!   layout ([`crate::fs::maildir`]); [`Ino::kind`] calls them directories.
//!
//!   A part's number is computed, not stored: it names the same part for as long as the
//!   message exists. Search results and runs are numbered by the view table.

use crate::imap::types::Uid;

/// An inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

/// The root directory.
pub const ROOT: Ino = Ino(1);

/// The generation reserved for drafts.
const DRAFT_GENERATION: u32 = u32::MAX;

/// Largest generation a message can have: above it (bit 63) are the views.
pub const MAX_MESSAGE_GENERATION: u32 = (1 << 31) - 1;

/// Largest generation whose messages have a `.parts` view (19 bits, 0x7ffff excluded).
pub const MAX_PARTS_GENERATION: u32 = 0x7fffe;

/// Most entries in one message's `.parts` tree, the directory itself included (11 bits).
pub const MAX_PART_ENTRIES: u16 = 0x800;

const VIEW: u64 = 1 << 63;
const PARTS: u32 = 1 << 30;
const LINK_BASE: u32 = 16;

/// What an inode number stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InoKind {
    Dir,
    Message { generation: u32, uid: Uid },
    Draft(u32),
    View(ViewIno),
}

/// The inodes of the views (see the module documentation for their numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViewIno {
    /// `DIR/.search`.
    SearchRoot(Ino),
    /// `DIR/.parts`.
    PartsRoot(Ino),
    /// `.search/<criteria>`, by its number in the view table.
    SearchResult(u32),
    /// A symlink in a search result: entry `index` of run `run`.
    SearchLink { run: u32, index: u32 },
    /// Entry `index` of the parts of a message (0: `.parts/<UID>` itself).
    Part {
        generation: u32,
        uid: Uid,
        index: u16,
    },
}

impl Ino {
    pub fn message(generation: u32, uid: Uid) -> Ino {
        debug_assert!(generation != 0 && generation <= MAX_MESSAGE_GENERATION);
        Ino((u64::from(generation) << 32) | u64::from(uid.get()))
    }

    /// The number of a view inode; `None` if it has none (a generation or index beyond the
    /// bits reserved, a run number that wrapped).
    pub fn view(v: ViewIno) -> Option<Ino> {
        let (high, low) = match v {
            ViewIno::SearchRoot(dir) => (1, u32::try_from(dir.0).ok()?),
            ViewIno::PartsRoot(dir) => (2, u32::try_from(dir.0).ok()?),
            ViewIno::SearchResult(n) => (3, n),
            ViewIno::SearchLink { run, index } => {
                (run.checked_add(LINK_BASE).filter(|h| *h < PARTS)?, index)
            }
            ViewIno::Part {
                generation,
                uid,
                index,
            } => {
                if generation == 0 || generation > MAX_PARTS_GENERATION || index >= MAX_PART_ENTRIES
                {
                    return None;
                }
                (PARTS | generation << 11 | u32::from(index), uid.get())
            }
        };
        Some(Ino(VIEW | u64::from(high) << 32 | u64::from(low)))
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
            (g, _) if g > MAX_MESSAGE_GENERATION => match view_kind(g & !(1 << 31), low) {
                Some(v) => InoKind::View(v),
                // Not a number we hand out: a directory number nobody has.
                None => InoKind::Dir,
            },
            (g, Some(uid)) => InoKind::Message { generation: g, uid },
            // uid 0 is no message: treat as a directory number nobody has.
            (_, None) => InoKind::Dir,
        }
    }

    /// Whether the inode is a view's (`.search`, `.parts` and what is below them).
    pub fn is_view(self) -> bool {
        matches!(self.kind(), InoKind::View(_))
    }

    pub fn is_dir(self) -> bool {
        self.kind() == InoKind::Dir
    }
}

/// The view a high half (bit 63 removed) and low half stand for.
fn view_kind(high: u32, low: u32) -> Option<ViewIno> {
    Some(match high {
        1 if low != 0 => ViewIno::SearchRoot(Ino(u64::from(low))),
        2 if low != 0 => ViewIno::PartsRoot(Ino(u64::from(low))),
        3 => ViewIno::SearchResult(low),
        h if (LINK_BASE..PARTS).contains(&h) => ViewIno::SearchLink {
            run: h - LINK_BASE,
            index: low,
        },
        h if h & PARTS != 0 => {
            let generation = (h >> 11) & 0x7ffff;
            if generation == 0 || generation > MAX_PARTS_GENERATION {
                return None;
            }
            ViewIno::Part {
                generation,
                uid: Uid::new(low)?,
                index: (h & 0x7ff) as u16,
            }
        }
        _ => return None,
    })
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

// Maildir layout (`crate::fs::maildir`): a folder's `cur/`, `new/` and `tmp/` are not in the
// tree; their numbers are computed from the folder's, here with the rest of the numbering, so
// that what only needs the numbers (invalidation) does not depend on the layout.

/// One of a Maildir folder's three directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sub {
    Cur,
    New,
    Tmp,
}

impl Sub {
    pub const ALL: [Sub; 3] = [Sub::Cur, Sub::New, Sub::Tmp];

    pub fn name(self) -> &'static str {
        match self {
            Sub::Cur => "cur",
            Sub::New => "new",
            Sub::Tmp => "tmp",
        }
    }

    pub fn named(name: &str) -> Option<Sub> {
        Sub::ALL.into_iter().find(|s| s.name() == name)
    }

    fn index(self) -> u64 {
        match self {
            Sub::Cur => 0,
            Sub::New => 1,
            Sub::Tmp => 2,
        }
    }
}

/// The high half of the first sub directory's inode number.
const SUB_HIGH: u64 = 0xffff_fff0;

/// The inode of `folder/sub` (folder directories have numbers below 2^32).
pub fn sub_ino(folder: Ino, sub: Sub) -> Option<Ino> {
    let low = u32::try_from(folder.0).ok()?;
    Some(Ino((SUB_HIGH + sub.index()) << 32 | u64::from(low)))
}

/// The folder directory and sub directory an inode number names, if it is one of them.
pub fn sub_of(ino: Ino) -> Option<(Ino, Sub)> {
    let high = ino.0 >> 32;
    let folder = Ino(ino.0 & 0xffff_ffff);
    let sub = match high.checked_sub(SUB_HIGH)? {
        0 => Sub::Cur,
        1 => Sub::New,
        2 => Sub::Tmp,
        _ => return None,
    };
    (folder.0 != 0).then_some((folder, sub))
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

    #[test]
    fn views_round_trip_and_meet_nothing_else() {
        let uid = Uid::new(u32::MAX).unwrap();
        let views = [
            ViewIno::SearchRoot(ROOT),
            ViewIno::SearchRoot(Ino(u64::from(u32::MAX))),
            ViewIno::PartsRoot(Ino(7)),
            ViewIno::SearchResult(0),
            ViewIno::SearchResult(u32::MAX),
            ViewIno::SearchLink { run: 0, index: 0 },
            ViewIno::SearchLink {
                run: PARTS - LINK_BASE - 1,
                index: u32::MAX,
            },
            ViewIno::Part {
                generation: 1,
                uid,
                index: 0,
            },
            ViewIno::Part {
                generation: MAX_PARTS_GENERATION,
                uid,
                index: MAX_PART_ENTRIES - 1,
            },
        ];
        for v in views {
            let ino = Ino::view(v).unwrap();
            assert_eq!(ino.kind(), InoKind::View(v), "{v:?} -> {:#x}", ino.0);
            assert!(ino.0 >= 1 << 63);
            assert_ne!(ino.0 >> 32, u64::from(DRAFT_GENERATION));
        }
        // The highest message and the drafts stay what they are.
        let top = Ino::message(MAX_MESSAGE_GENERATION, uid);
        assert_eq!(
            top.kind(),
            InoKind::Message {
                generation: MAX_MESSAGE_GENERATION,
                uid
            }
        );
        assert_eq!(Ino::draft(u32::MAX).kind(), InoKind::Draft(u32::MAX));
        // Beyond the reserved bits there is no number.
        assert_eq!(
            Ino::view(ViewIno::Part {
                generation: MAX_PARTS_GENERATION + 1,
                uid,
                index: 0
            }),
            None
        );
        assert_eq!(
            Ino::view(ViewIno::SearchLink {
                run: PARTS - LINK_BASE,
                index: 0
            }),
            None
        );
        assert_eq!(Ino::view(ViewIno::SearchRoot(Ino(1 << 32))), None);
    }
}
