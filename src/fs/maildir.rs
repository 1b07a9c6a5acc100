//! The Maildir layout (`-o layout=maildir`): every Maildir mail client, straight on the server.
//!
//! In this layout a folder directory holds `cur/`, `new/` and `tmp/` beside its subfolders
//! (mbsync's "Verbatim" `SubFolders` layout), and no message files of its own. The three
//! are not in the tree: their inode numbers are computed from the folder's
//! ([`sub_ino`], see [`crate::fs::inode`]), and each FUSE request on them reaches this module
//! through a hook at the top of the request's usual handler.
//!
//! - **Names.** A message is `UIDVALIDITY.UID.imapfs:2,LETTERS`: the unique part names the
//!   message for as long as it exists (flag changes and restarts keep it), the letters are its
//!   flags in ASCII order (`D` \Draft, `F` \Flagged, `P` $Forwarded, `R` \Answered, `S` \Seen,
//!   `T` \Deleted). A name whose letters are not the message's current flags names nothing,
//!   so names in `cur/` and `new/` are handed to the kernel with no entry lifetime.
//! - **new/ or cur/.** As mbsync delivers them, a message without \Seen is in `new/`, a seen
//!   one in `cur/`; a client that renames an unseen message from `new/` to `cur/` (mutt's
//!   sync, notmuch) moves it there for the life of the mount, with no change on the server.
//! - **Flags by rename** within a folder are one `UID STORE` of the letters that changed,
//!   answered after the server; **unlink** is the `rm` of the default layout (`delete=`).
//! - **Delivery.** A file created in `tmp/` is a draft that neither close nor fsync sends;
//!   its rename into `new/` or `cur/` of any folder is the APPEND, flags from the new name.
//!   A rename of a message into another folder's `cur/` or `new/` is a MOVE (its new name's
//!   unique part is the client's and is not kept). Either way the message is listed under its
//!   server name; the name the client gave is found by lookup for a minute (`notmuch insert`
//!   opens it), and the draft's inode reads as the message (the kernel holds the new name with
//!   it until our invalidation arrives). `link()` is refused (EPERM), so mutt falls back to
//!   rename; `utime()` on a message is accepted and changes nothing (mutt fails a save if it
//!   cannot date the file).
//! - **Directory times.** Clients poll the mtime of `cur/` and `new/`. Every folder has a
//!   clock: when the store's count of changes to the folder ([`Account::change_epoch`]) or
//!   this module's own count (moves between `new/` and `cur/`) differs from what the clock last
//!   saw, its time becomes now (and never goes backwards). A stat of `cur/` or `new/` first
//!   refreshes the folder if its listing is older than `dir_ttl`, so other clients' changes
//!   show without IDLE too.
//!
//! [`Account::change_epoch`]: crate::store::Account::change_epoch

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use fuser::{FileAttr, FileType};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::fs::inode::Ino;
use crate::fs::invalidate::Invalidation;
use crate::fs::write::Renamed;
use crate::fs::{DirEntry, ImapFs};
use crate::imap::types::{Flag, Uid, UidValidity};
use crate::store::{FlagEdit, MailboxId, MessageBody, MessageMeta, MessageRef, NewMessage};

/// How folders show their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// `UID.eml` files in the folder's directory.
    #[default]
    Eml,
    /// `cur/`, `new/` and `tmp/` in every folder directory.
    Maildir,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Layout, String> {
        match s.to_ascii_lowercase().as_str() {
            "eml" => Ok(Layout::Eml),
            "maildir" => Ok(Layout::Maildir),
            _ => Err(format!(
                "`{}` is not eml or maildir",
                crate::printable::printable(s)
            )),
        }
    }
}

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

/// The high half of the first sub directory's inode number (see [`crate::fs::inode`]).
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

/// The flags a name's letters stand for, in letter order.
const LETTERS: [(char, &str); 6] = [
    ('D', "\\Draft"),
    ('F', "\\Flagged"),
    ('P', "$Forwarded"),
    ('R', "\\Answered"),
    ('S', "\\Seen"),
    ('T', "\\Deleted"),
];

fn letter_of(flag: &Flag) -> Option<char> {
    LETTERS
        .iter()
        .find(|(_, f)| f.eq_ignore_ascii_case(flag.as_str()))
        .map(|(c, _)| *c)
}

fn flag_of(letter: char) -> Option<Flag> {
    LETTERS
        .iter()
        .find(|(c, _)| *c == letter)
        .and_then(|(_, f)| Flag::parse(f))
}

/// A message's Maildir file name.
pub fn message_name(validity: UidValidity, uid: Uid, flags: &[Flag]) -> String {
    let mut letters: Vec<char> = flags.iter().filter_map(letter_of).collect();
    letters.sort_unstable();
    letters.dedup();
    let letters: String = letters.into_iter().collect();
    format!("{validity}.{uid}.imapfs:2,{letters}")
}

/// A Maildir file name taken apart: the message its unique part names (if it is one of
/// ours) and the flags its letters stand for (unknown letters are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    pub message: Option<(UidValidity, Uid)>,
    pub flags: Vec<Flag>,
}

pub fn parse_name(name: &str) -> ParsedName {
    let (unique, info) = match name.split_once(":2,") {
        Some((u, i)) => (u, i),
        None => (name, ""),
    };
    let message = unique
        .strip_suffix(".imapfs")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(v, u)| {
            let number = |s: &str| {
                (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<u32>().ok())
                    .flatten()
            };
            Some((UidValidity::new(number(v)?)?, Uid::new(number(u)?)?))
        });
    let flags = info.chars().filter_map(flag_of).collect();
    ParsedName { message, flags }
}

/// What the layout remembers while mounted.
#[derive(Default)]
pub struct MaildirState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Unseen messages a client moved from `new/` to `cur/`.
    in_cur: HashSet<MessageRef>,
    /// Per folder: moves between `new/` and `cur/` made here (no server change).
    local: HashMap<MailboxId, u64>,
    clocks: HashMap<MailboxId, Clock>,
    /// The names clients gave messages they delivered or moved (`dir`, name): found by
    /// lookup for [`GIVEN_FOR`], never listed (`notmuch insert` opens the name it renamed
    /// to, after opening the directory to fsync it).
    given: HashMap<(Ino, String), (MessageRef, Instant)>,
    /// Drafts delivered by a rename, and the message each became: the kernel holds the new
    /// name with the draft's inode until our invalidation reaches it, so that inode reads as
    /// the message.
    delivered: HashMap<Ino, MessageRef>,
}

/// How long a name a client gave is found.
const GIVEN_FOR: Duration = Duration::from_secs(60);

/// Most names kept in [`Inner::given`].
const MAX_GIVEN: usize = 4096;

struct Clock {
    seen: (u64, u64),
    time: SystemTime,
}

impl ImapFs {
    pub(crate) fn is_maildir(&self) -> bool {
        self.opts.layout == Layout::Maildir
    }

    /// The folder mailbox behind a sub directory.
    fn sub_mailbox(&self, ino: Ino) -> Option<(Ino, Sub, MailboxId)> {
        let (folder, sub) = sub_of(ino)?;
        Some((folder, sub, self.maildir_folder(folder)?))
    }

    /// The mailbox of a folder directory that shows `cur/`, `new/`, `tmp/`.
    fn maildir_folder(&self, dir: Ino) -> Option<MailboxId> {
        if !self.is_maildir() {
            return None;
        }
        self.selectable_mailbox(dir)
    }

    /// Whether an unseen message is shown in `new/`.
    fn in_new(&self, msg: MessageRef, meta: &MessageMeta) -> bool {
        !meta.flags.contains(&Flag::Seen) && !self.maildir.inner.lock().in_cur.contains(&msg)
    }

    fn note_local_change(&self, mailbox: MailboxId) {
        *self.maildir.inner.lock().local.entry(mailbox).or_default() += 1;
    }

    /// Hook of `lookup`: `cur`/`new`/`tmp` of a folder, and the messages in them.
    pub(crate) fn maildir_lookup(
        &self,
        parent: Ino,
        name: &str,
    ) -> Option<Result<(FileAttr, Duration, Duration)>> {
        if !self.is_maildir() {
            return None;
        }
        if let Some((_, sub, mb)) = self.sub_mailbox(parent) {
            return Some(self.message_in(parent, sub, mb, name).map(|(_, _, attr)| {
                // Names carry flags: the kernel asks again every time.
                (attr, Duration::from_secs(1), Duration::ZERO)
            }));
        }
        if sub_of(parent).is_some() {
            return Some(Err(Error::NoEntry(name.into())));
        }
        if let Some(sub) = Sub::named(name) {
            if self.maildir_folder(parent).is_some() {
                let ino = sub_ino(parent, sub)?;
                return Some(Ok((
                    self.sub_attr(ino),
                    Duration::from_secs(1),
                    self.opts.dir_ttl,
                )));
            }
        }
        // Subfolders are found as usual; a folder directory holds no message files.
        self.sync_tree().ok()?;
        let child = self
            .tree
            .lock()
            .dir(parent)
            .is_some_and(|n| n.children.contains_key(name));
        (!child && self.selectable_mailbox(parent).is_some())
            .then(|| Err(Error::NoEntry(name.into())))
    }

    /// The message `name` in `cur/` or `new/` (`sub`) of mailbox `mb`.
    fn message_in(
        &self,
        dir: Ino,
        sub: Sub,
        mb: MailboxId,
        name: &str,
    ) -> Result<(Ino, MessageRef, FileAttr)> {
        let missing = || Error::NoEntry(name.into());
        if sub == Sub::Tmp {
            return Err(missing());
        }
        let given = self
            .maildir
            .inner
            .lock()
            .given
            .get(&(dir, name.to_string()))
            .filter(|(_, at)| at.elapsed() < GIVEN_FOR)
            .map(|(msg, _)| *msg);
        if let Some(msg) = given {
            return self.given_message(msg).ok_or_else(missing);
        }
        let (validity, uid) = parse_name(name).message.ok_or_else(missing)?;
        let index = self.account.index(mb, self.opts.dir_ttl)?;
        let meta = {
            let ix = index.read();
            if ix.validity() != validity {
                return Err(missing());
            }
            ix.messages().get(&uid).cloned().ok_or_else(missing)?
        };
        let msg = MessageRef {
            mailbox: mb,
            validity,
            uid,
        };
        if self.account.is_moving(msg)
            || message_name(validity, uid, &meta.flags) != name
            || self.in_new(msg, &meta) != (sub == Sub::New)
        {
            return Err(missing());
        }
        let generation = self.tree.lock().generation(mb, validity);
        let ino = Ino::message(generation, uid);
        Ok((ino, msg, self.message_attr(ino, &meta)))
    }

    /// A message under the name a client gave it, asking the server if the index is older.
    fn given_message(&self, msg: MessageRef) -> Option<(Ino, MessageRef, FileAttr)> {
        let meta = self.account.message_meta(msg).or_else(|| {
            self.account.index(msg.mailbox, Duration::ZERO).ok()?;
            self.account.message_meta(msg)
        })?;
        let generation = self.tree.lock().generation(msg.mailbox, msg.validity);
        let ino = Ino::message(generation, msg.uid);
        Some((ino, msg, self.message_attr(ino, &meta)))
    }

    /// Hook of the `.search` view: a message's path below its folder directory
    /// (`cur/NAME` or `new/NAME`) in the Maildir layout.
    pub(crate) fn maildir_path_of(&self, msg: MessageRef) -> Option<String> {
        if !self.is_maildir() {
            return None;
        }
        let meta = self.account.message_meta(msg)?;
        let sub = if self.in_new(msg, &meta) {
            Sub::New
        } else {
            Sub::Cur
        };
        Some(format!(
            "{}/{}",
            sub.name(),
            message_name(msg.validity, msg.uid, &meta.flags)
        ))
    }

    /// Hook of getattr, open and read of a draft: the message a delivered draft became.
    pub(crate) fn delivered_as(&self, ino: Ino) -> Option<MessageRef> {
        if !matches!(ino.kind(), crate::fs::inode::InoKind::Draft(_)) {
            return None;
        }
        self.maildir.inner.lock().delivered.get(&ino).copied()
    }

    /// Remember the name a client gave a message it delivered or moved into `dir`.
    fn give_name(&self, dir: Ino, name: &str, msg: MessageRef) {
        let mut inner = self.maildir.inner.lock();
        if inner.given.len() >= MAX_GIVEN {
            inner.given.retain(|_, (_, at)| at.elapsed() < GIVEN_FOR);
            if inner.given.len() >= MAX_GIVEN {
                inner.given.clear();
            }
        }
        inner
            .given
            .insert((dir, name.to_string()), (msg, Instant::now()));
    }

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
    fn sub_attr(&self, ino: Ino) -> FileAttr {
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
    fn clock(&self, mb: MailboxId) -> SystemTime {
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

    fn sub_listing(&self, ino: Ino, folder: Ino, sub: Sub) -> Result<Vec<DirEntry>> {
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
            for (draft, kind, name) in self.drafts_in(ino) {
                if let Some(attr) = self.draft_attr(draft) {
                    out.push(DirEntry {
                        ino: draft,
                        kind,
                        name,
                        attr,
                        ttl: Duration::ZERO,
                    });
                }
            }
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
        for (&uid, meta) in ix.messages() {
            let msg = MessageRef {
                mailbox: mb,
                validity,
                uid,
            };
            if self.in_new(msg, meta) != (sub == Sub::New) {
                continue;
            }
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
    fn deliver(
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
            // Renamed into cur/ unseen: it stays in cur/.
            if to == Sub::Cur && !flags.contains(&Flag::Seen) {
                self.maildir.inner.lock().in_cur.insert(msg);
            }
            self.give_name(newparent, newname, msg);
            let mut inner = self.maildir.inner.lock();
            if inner.delivered.len() >= MAX_GIVEN {
                inner.delivered.clear();
            }
            inner.delivered.insert(ino, msg);
        }
        self.note_local_change(mb);
        self.invalidate(Invalidation::Inode(newparent));
        Ok(())
    }

    /// A message renamed from `cur/` or `new/` into `cur/` or `new/`: flags (same folder) or
    /// a MOVE (another folder).
    fn rename_message(
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
        let seen = target.flags.contains(&Flag::Seen);
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
                // rule for unseen messages.
                _ => msg,
            }
        };
        {
            let mut inner = self.maildir.inner.lock();
            if to_sub == Sub::Cur && !seen {
                inner.in_cur.insert(at);
            } else {
                inner.in_cur.remove(&at);
            }
            if at != msg {
                inner.in_cur.remove(&msg);
            }
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

/// The STORE that gives a message the flags a name's letters say, leaving flags no letter
/// stands for (keywords) alone; `None` if they are the same.
fn letter_edit(now: &[Flag], wanted: &[Flag]) -> Option<FlagEdit> {
    let has = |set: &[Flag], f: &Flag| {
        set.iter()
            .any(|g| g.as_str().eq_ignore_ascii_case(f.as_str()))
    };
    let add: Vec<Flag> = wanted.iter().filter(|f| !has(now, f)).cloned().collect();
    let remove: Vec<Flag> = now
        .iter()
        .filter(|f| letter_of(f).is_some() && !has(wanted, f))
        .cloned()
        .collect();
    (!add.is_empty() || !remove.is_empty()).then_some(FlagEdit::Delta { add, remove })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::inode::InoKind;

    fn flags(list: &[&str]) -> Vec<Flag> {
        list.iter().filter_map(|f| Flag::parse(f)).collect()
    }

    #[test]
    fn names_round_trip_with_sorted_letters() {
        let v = UidValidity::new(1700000000).unwrap();
        let uid = Uid::new(42).unwrap();
        let f = flags(&["\\Seen", "\\Flagged", "$Forwarded", "\\Answered", "Junk"]);
        let name = message_name(v, uid, &f);
        assert_eq!(name, "1700000000.42.imapfs:2,FPRS");
        let parsed = parse_name(&name);
        assert_eq!(parsed.message, Some((v, uid)));
        assert_eq!(parsed.flags.len(), 4);
        assert_eq!(message_name(v, uid, &[]), "1700000000.42.imapfs:2,");
        assert_eq!(parse_name("1700000000.042.imapfs:2,S").message, None);
        assert_eq!(parse_name("123.host:2,S").message, None);
        assert_eq!(
            parse_name("123.host:2,ST").flags,
            flags(&["\\Seen", "\\Deleted"])
        );
    }

    #[test]
    fn sub_inodes_are_directories_and_meet_nothing_else() {
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

    #[test]
    fn a_letter_edit_keeps_keywords() {
        let now = flags(&["\\Seen", "Junk"]);
        let wanted = flags(&["\\Flagged", "\\Seen"]);
        assert_eq!(
            letter_edit(&now, &wanted),
            Some(FlagEdit::Delta {
                add: flags(&["\\Flagged"]),
                remove: vec![]
            })
        );
        assert_eq!(letter_edit(&now, &flags(&["\\Seen"])), None);
    }
}
