//! The views: `.search` (server-side search as directories) and `.parts` (a message's MIME
//! parts as files). Both are read-only and never listed: `readdir` of a folder does not show
//! them, so `ls`, `find` and `grep -r` never wander in, but `lookup` resolves them.
//!
//! # `.search`
//!
//! Every folder (and the root) has a `.search` directory; any name under it is search
//! criteria ([`parse_criteria`]: IMAP's syntax, or `key:value`), run as `UID SEARCH` when the
//! name is looked up. Invalid criteria fail the lookup with EINVAL before anything is sent
//! (the reason is logged). The result is a directory of symlinks, one per match:
//! `<UID>.eml -> ../../<UID>.eml` in a folder, `<FOLDER>-<UID>.eml -> ../../<FOLDER>/<UID>.eml`
//! at the root (which searches every selectable folder; `/` in the folder's path is shown as
//! `%2F` in the link's name). So `cat`, `grep`, `cp -L` and `getfattr` work on results.
//!
//! A result is trusted for `dir_ttl` and while no change was heard about its folder (the
//! store's change epochs); after that, the next lookup or listing runs the search again. Each
//! run's links get inode numbers of their own (run number, index), so a link never changes
//! its target under the kernel; the names a new run no longer has are invalidated.
//!
//! The table of results and runs is bounded ([`MAX_RESULTS`], [`MAX_RUNS`]); an evicted
//! result is simply searched again at its next lookup.
//!
//! # `.parts`
//!
//! Every folder that holds messages has a `.parts` directory, listing one directory per
//! message (`.parts/<UID>/`); what is in it comes from the store's [`PartTree`] (fetched when
//! first needed, see [`crate::store::mime`]): `header`, `text`, one file per leaf part
//! (`<section>-<filename>` or `<section>.<ext>`) and one directory per attached message. A
//! part's inode is computed from the message's generation, its UID and the entry's index in
//! the tree, so nothing is stored per part here. Part files have their exact decoded size in
//! `stat`, are opened with `FOPEN_KEEP_CACHE` (they never change) and carry
//! `user.mime.type`, `user.mime.charset` and `user.mime.filename`.
//!
//! [`parse_criteria`]: crate::imap::codec::parse_criteria
//! [`PartTree`]: crate::store::PartTree

use std::collections::HashMap;
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use fuser::{FileAttr, FileType, FopenFlags, OpenFlags};
use lru::LruCache;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::fs::inode::{Ino, InoKind, ViewIno, ROOT};
use crate::fs::invalidate::Invalidation;
use crate::fs::listing::{LazyEntries, Listing};
use crate::fs::read::unix_time;
use crate::fs::tree::{message_file_name, parse_message_file_name};
use crate::fs::{DirEntry, ImapFs};
use crate::imap::codec::{parse_criteria, SearchKey};
use crate::imap::types::{Uid, UidValidity};
use crate::store::{MailboxId, MessageRef, PartKind, PartTree};

mod search;

use search::{LinkWalk, SearchTable};

/// The name of the search view in every folder and at the root.
pub const SEARCH_DIR: &str = ".search";
/// The name of the parts view in every folder that holds messages.
pub const PARTS_DIR: &str = ".parts";

/// Search result directories kept (least recently used out first).
pub const MAX_RESULTS: usize = 1024;
/// Search runs kept, each with its links (a kernel may still hold the links of an old run).
pub const MAX_RUNS: usize = 256;

// A message's parts tree and the inode numbering agree on how many entries there can be.
const _: () =
    assert!(crate::store::mime::MAX_PART_NODES == crate::fs::inode::MAX_PART_ENTRIES as usize);

/// Attribute lifetime of the views' directories.
const VIEW_DIR_TTL: Duration = Duration::from_secs(1);

/// What the views keep between requests.
pub struct Views {
    search: Mutex<SearchTable>,
}

impl Default for Views {
    fn default() -> Views {
        Views {
            search: Mutex::new(SearchTable {
                results: LruCache::new(NonZeroUsize::new(MAX_RESULTS).expect("non-zero")),
                by_key: HashMap::new(),
                next_result: 0,
                runs: LruCache::new(NonZeroUsize::new(MAX_RUNS).expect("non-zero")),
                next_run: 0,
            }),
        }
    }
}

impl ImapFs {
    /// Lookups that belong to the views: a name in a view directory, or a view's own name
    /// in a folder. `None`: not a view matter, the ordinary lookup goes on.
    pub(crate) fn view_lookup(
        &self,
        parent: Ino,
        name: &str,
    ) -> Option<Result<(FileAttr, Duration)>> {
        match parent.kind() {
            InoKind::View(v) => Some(self.lookup_in_view(v, name)),
            InoKind::Dir if name == SEARCH_DIR && self.search_root_exists(parent) => {
                Some(self.view_attr(ViewIno::SearchRoot(parent)))
            }
            InoKind::Dir if name == PARTS_DIR && self.selectable_mailbox(parent).is_some() => {
                Some(self.view_attr(ViewIno::PartsRoot(parent)))
            }
            _ => None,
        }
    }

    /// Refuse a change in a view, or to a view's name (views are read-only).
    pub(crate) fn refuse_in_views(&self, parent: Ino, name: &str) -> Result<()> {
        if parent.is_view() || name == SEARCH_DIR || name == PARTS_DIR {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// The attributes of a view inode, with their lifetime.
    pub(crate) fn view_attr(&self, v: ViewIno) -> Result<(FileAttr, Duration)> {
        let ino = view_ino(v)?;
        match v {
            ViewIno::SearchRoot(dir) if self.search_root_exists(dir) => {
                Ok((self.view_dir_attr(ino), VIEW_DIR_TTL))
            }
            ViewIno::PartsRoot(dir) if self.selectable_mailbox(dir).is_some() => {
                Ok((self.view_dir_attr(ino), VIEW_DIR_TTL))
            }
            ViewIno::SearchResult(id) => {
                if self.views.search.lock().results.peek(&id).is_none() {
                    return Err(Error::NoEntry(format!("search result {id}")));
                }
                Ok((self.view_dir_attr(ino), VIEW_DIR_TTL))
            }
            ViewIno::SearchLink { run, index } => {
                let link = self.link(run, index)?;
                Ok((self.link_attr(ino, &link), self.opts.dir_ttl))
            }
            ViewIno::Part {
                generation,
                uid,
                index: 0,
            } => {
                self.part_message(generation, uid)?;
                Ok((self.view_dir_attr(ino), self.opts.message_ttl))
            }
            ViewIno::Part {
                generation,
                uid,
                index,
            } => {
                let (msg, tree) = self.part_tree(generation, uid)?;
                Ok((
                    self.part_attr(ino, msg, &tree, index)?,
                    self.opts.message_ttl,
                ))
            }
            _ => Err(Error::NoEntry(format!("view inode {:#x}", ino.0))),
        }
    }

    /// The entries of a view directory, with the attributes readdirplus hands the kernel:
    /// directories' without any I/O (a `.parts` folder lists one directory per message, whose
    /// tree is fetched only when entered), the others' from what the listing just used.
    pub(crate) fn view_listing(&self, v: ViewIno) -> Result<Listing> {
        if let ViewIno::SearchResult(id) = v {
            // The links are made as readdir reaches them, from the run's UIDs.
            let (dir, run) = self.fresh_run(id)?;
            let dot = |ino: Ino, name: &str| DirEntry {
                ino,
                kind: FileType::Directory,
                name: name.into(),
                attr: self.view_dir_attr(ino),
                ttl: VIEW_DIR_TTL,
            };
            return Ok(Listing {
                before: vec![
                    dot(view_ino(v)?, "."),
                    dot(view_ino(ViewIno::SearchRoot(dir))?, ".."),
                ],
                messages: Some(Box::new(LinkWalk {
                    run,
                    ttl: self.opts.dir_ttl,
                })),
                after: Vec::new(),
            });
        }
        let entries = self.view_entries(v)?;
        Ok(entries
            .into_iter()
            .filter_map(|(ino, kind, name)| {
                let (attr, ttl) = match (kind, ino.kind()) {
                    (FileType::Directory, InoKind::View(_)) => {
                        (self.view_dir_attr(ino), VIEW_DIR_TTL)
                    }
                    (FileType::Directory, _) => (self.dir_attr(ino), VIEW_DIR_TTL),
                    (_, InoKind::View(v)) => self.view_attr(v).ok()?,
                    _ => return None,
                };
                Some(DirEntry {
                    ino,
                    kind,
                    name,
                    attr,
                    ttl,
                })
            })
            .collect::<Vec<_>>()
            .into())
    }

    /// The entries of a view directory: inode, kind and name.
    fn view_entries(&self, v: ViewIno) -> Result<Vec<(Ino, FileType, OsString)>> {
        let ino = view_ino(v)?;
        let dot = |parent: Ino| {
            vec![
                (ino, FileType::Directory, OsString::from(".")),
                (parent, FileType::Directory, OsString::from("..")),
            ]
        };
        match v {
            ViewIno::SearchRoot(dir) if self.search_root_exists(dir) => Ok(dot(dir)),
            ViewIno::PartsRoot(dir) => {
                let mb = self
                    .selectable_mailbox(dir)
                    .ok_or_else(|| Error::NoEntry(PARTS_DIR.into()))?;
                self.account.settle(mb);
                let index = self.account.index(mb, self.opts.dir_ttl)?;
                let (validity, uids): (_, Vec<Uid>) = {
                    let ix = index.read();
                    (ix.validity(), ix.messages().keys().copied().collect())
                };
                let generation = self.tree.lock().generation(mb, validity);
                let mut out = dot(dir);
                for uid in uids {
                    if let Some(ino) = Ino::view(ViewIno::Part {
                        generation,
                        uid,
                        index: 0,
                    }) {
                        out.push((ino, FileType::Directory, OsString::from(uid.to_string())));
                    }
                }
                Ok(out)
            }
            ViewIno::Part {
                generation,
                uid,
                index,
            } => {
                let (msg, tree) = self.part_tree(generation, uid)?;
                let PartKind::Dir { children, .. } = &tree.node(index)?.kind else {
                    return Err(Error::InvalidInput("not a directory".into()));
                };
                let parent = if index == 0 {
                    let dir = self.tree.lock().dir_of(msg.mailbox);
                    view_ino(ViewIno::PartsRoot(dir.ok_or_else(|| {
                        Error::NoEntry(format!("folder of {}", msg.mailbox))
                    })?))?
                } else {
                    part_ino(generation, uid, tree.node(index)?.parent)?
                };
                let mut out = dot(parent);
                for &c in children {
                    let node = tree.node(c)?;
                    let kind = match node.kind {
                        PartKind::Dir { .. } => FileType::Directory,
                        _ => FileType::RegularFile,
                    };
                    out.push((
                        part_ino(generation, uid, c)?,
                        kind,
                        OsString::from(&node.name),
                    ));
                }
                Ok(out)
            }
            _ => Err(Error::InvalidInput("not a directory".into())),
        }
    }

    /// Open a view file (read-only).
    pub(crate) fn view_open(&self, v: ViewIno, flags: OpenFlags) -> Result<FopenFlags> {
        if flags.acc_mode() != fuser::OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Error::ReadOnly);
        }
        match v {
            ViewIno::Part {
                generation,
                uid,
                index,
            } if index > 0 => {
                let (_, tree) = self.part_tree(generation, uid)?;
                match tree.node(index)?.kind {
                    PartKind::Dir { .. } => Err(Error::NotPermitted("is a directory".into())),
                    // A part never changes: the kernel may keep its pages.
                    _ => Ok(FopenFlags::FOPEN_KEEP_CACHE),
                }
            }
            _ => Err(Error::NotPermitted("not a regular file".into())),
        }
    }

    pub(crate) fn view_read(&self, v: ViewIno, offset: u64, size: u32) -> Result<Vec<u8>> {
        match v {
            ViewIno::Part {
                generation,
                uid,
                index,
            } => {
                let (msg, tree) = self.part_tree(generation, uid)?;
                self.account
                    .read_part(msg, &tree, index, offset, u64::from(size))
            }
            _ => Err(Error::InvalidInput("not a regular file".into())),
        }
    }

    /// The target of a symlink.
    pub(crate) fn view_readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        match ino.kind() {
            InoKind::View(ViewIno::SearchLink { run, index }) => {
                Ok(self.link(run, index)?.target.into_bytes())
            }
            _ => Err(Error::InvalidInput("not a symlink".into())),
        }
    }

    /// An extended attribute of a view inode: `user.mime.*` of part files.
    pub(crate) fn view_xattr(&self, v: ViewIno, name: &str) -> Result<Option<String>> {
        let ViewIno::Part {
            generation,
            uid,
            index,
        } = v
        else {
            return Ok(None);
        };
        if index == 0 || !PART_XATTRS.contains(&name) {
            return Ok(None);
        }
        let (_, tree) = self.part_tree(generation, uid)?;
        let Some(info) = tree.info(index) else {
            return Ok(None);
        };
        Ok(match name {
            "user.mime.type" => Some(info.mime_type),
            "user.mime.charset" => info.charset,
            _ => info
                .filename
                .map(|f| f.chars().filter(|c| !c.is_control()).collect()),
        })
    }

    /// The extended attribute names of a view inode.
    pub(crate) fn view_xattr_names(&self, v: ViewIno) -> Result<Vec<&'static str>> {
        let ViewIno::Part {
            generation,
            uid,
            index,
        } = v
        else {
            return Ok(Vec::new());
        };
        if index == 0 {
            return Ok(Vec::new());
        }
        let (_, tree) = self.part_tree(generation, uid)?;
        let Some(info) = tree.info(index) else {
            return Ok(Vec::new());
        };
        let mut names = vec!["user.mime.type"];
        if info.charset.is_some() {
            names.push("user.mime.charset");
        }
        if info.filename.is_some() {
            names.push("user.mime.filename");
        }
        Ok(names)
    }

    // ----- search -----

    fn lookup_in_view(&self, v: ViewIno, name: &str) -> Result<(FileAttr, Duration)> {
        match v {
            ViewIno::SearchRoot(dir) => self.lookup_search(dir, name),
            ViewIno::SearchResult(id) => {
                let (_, run) = self.fresh_run(id)?;
                let (index, link) = run
                    .find(name)
                    .and_then(|i| Some((i, run.link(i)?)))
                    .ok_or_else(|| Error::NoEntry(name.into()))?;
                let ino = view_ino(ViewIno::SearchLink { run: run.id, index })?;
                Ok((self.link_attr(ino, &link), self.opts.dir_ttl))
            }
            ViewIno::PartsRoot(dir) => self.lookup_parts_message(dir, name),
            ViewIno::Part {
                generation,
                uid,
                index,
            } => {
                let (msg, tree) = self.part_tree(generation, uid)?;
                let child = tree
                    .child(index, name)
                    .ok_or_else(|| Error::NoEntry(name.into()))?;
                let ino = part_ino(generation, uid, child)?;
                Ok((
                    self.part_attr(ino, msg, &tree, child)?,
                    self.opts.message_ttl,
                ))
            }
            _ => Err(Error::NoEntry(name.into())),
        }
    }

    // ----- parts -----

    /// `DIR/.parts/<UID>`: the message must be in the folder; nothing is fetched yet.
    fn lookup_parts_message(&self, dir: Ino, name: &str) -> Result<(FileAttr, Duration)> {
        let mb = self
            .selectable_mailbox(dir)
            .ok_or_else(|| Error::NoEntry(PARTS_DIR.into()))?;
        let uid = parse_message_file_name(&format!("{name}.eml"))
            .ok_or_else(|| Error::NoEntry(name.into()))?;
        self.account.settle(mb);
        let index = self.account.index(mb, self.opts.dir_ttl)?;
        let validity = {
            let ix = index.read();
            if !ix.messages().contains_key(&uid) {
                return Err(Error::NoEntry(name.into()));
            }
            ix.validity()
        };
        let generation = self.tree.lock().generation(mb, validity);
        let ino = part_ino(generation, uid, 0)?;
        Ok((self.view_dir_attr(ino), self.opts.message_ttl))
    }

    /// The message of a part inode (from the cached index: no round trip).
    fn part_message(&self, generation: u32, uid: Uid) -> Result<MessageRef> {
        let (mailbox, validity) = self
            .tree
            .lock()
            .generation_info(generation)
            .ok_or_else(|| Error::NoEntry(format!("generation {generation}")))?;
        let msg = MessageRef {
            mailbox,
            validity,
            uid,
        };
        if self.account.message_meta(msg).is_none() {
            return Err(Error::NoMessage(format!("UID {uid}")));
        }
        Ok(msg)
    }

    /// The message of a part inode and its parts (fetched when first needed).
    fn part_tree(&self, generation: u32, uid: Uid) -> Result<(MessageRef, Arc<PartTree>)> {
        let msg = self.part_message(generation, uid)?;
        Ok((msg, self.account.message_parts(msg)?))
    }

    /// A view directory: read-only, like everything in the views.
    fn view_dir_attr(&self, ino: Ino) -> FileAttr {
        self.attr(ino, FileType::Directory, 0o555, 0, UNIX_EPOCH)
    }

    fn part_attr(
        &self,
        ino: Ino,
        msg: MessageRef,
        tree: &PartTree,
        index: u16,
    ) -> Result<FileAttr> {
        let time = self
            .account
            .message_meta(msg)
            .map_or(UNIX_EPOCH, |m| unix_time(m.internal_date));
        Ok(match tree.node(index)?.kind {
            PartKind::Dir { .. } => self.attr(ino, FileType::Directory, 0o555, 0, time),
            _ => {
                let size = self.account.part_size(msg, tree, index)?;
                self.attr(ino, FileType::RegularFile, 0o444, size, time)
            }
        })
    }
}

/// The attribute names of part files.
const PART_XATTRS: &[&str] = &["user.mime.type", "user.mime.charset", "user.mime.filename"];

/// The inode of entry `index` of a message's parts.
fn part_ino(generation: u32, uid: Uid, index: u16) -> Result<Ino> {
    Ino::view(ViewIno::Part {
        generation,
        uid,
        index,
    })
    .ok_or_else(|| {
        Error::Unsupported(format!(
            "parts of UID {uid}: generation {generation} or entry {index} beyond the inode numbering"
        ))
    })
}

/// The number of a view inode; an error if it has none (see [`Ino::view`]).
fn view_ino(v: ViewIno) -> Result<Ino> {
    Ino::view(v).ok_or_else(|| Error::NoEntry(format!("no inode number for {v:?}")))
}
