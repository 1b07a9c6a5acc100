//! The mailbox list and the commands that change it: LIST (with LSUB for subscriptions),
//! CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, STATUS and the quota.
//!
//! [`Mailboxes`] caches the last listing for a caller-chosen age and gives every mailbox name
//! a [`MailboxId`] on first sight, stable for the life of the mount. Commands that change the
//! list are never re-sent blindly: after a broken connection the list is read again to learn
//! whether the server did it (a CREATE that went through is a success, not an error).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, ListReturn};
use crate::imap::pool::Retry;
use crate::imap::session::Capability;
use crate::imap::types::{MailboxName, StatusItem, UidValidity, Untagged};
use crate::store::ids::MailboxId;
use crate::store::Account;

/// One mailbox as the server listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxInfo {
    pub name: MailboxName,
    pub delimiter: Option<char>,
    /// `\Noselect` or `\NonExistent`: a directory with no messages.
    pub noselect: bool,
    /// The LIST attributes as sent (`\HasChildren`, `\Trash`, ...).
    pub attributes: Vec<String>,
    /// Listed by LSUB.
    pub subscribed: bool,
}

/// How long a STATUS answer serves folder xattrs, unless the store heard of a change to the
/// mailbox meanwhile.
const STATUS_TTL: Duration = Duration::from_secs(1);

/// The special uses of RFC 6154.
const SPECIAL_USES: &[&str] = &[
    "\\All",
    "\\Archive",
    "\\Drafts",
    "\\Flagged",
    "\\Junk",
    "\\Sent",
    "\\Trash",
];

impl MailboxInfo {
    /// The RFC 6154 special uses of the mailbox (`\Sent`, `\Trash`, ...).
    pub fn special_uses(&self) -> Vec<&'static str> {
        SPECIAL_USES
            .iter()
            .copied()
            .filter(|u| self.attributes.iter().any(|a| a.eq_ignore_ascii_case(u)))
            .collect()
    }
}

/// Whether the user's `folder` (a path in the mount with `/` between levels, or the server's
/// own name) names this mailbox.
fn names_folder(m: &MailboxInfo, folder: &str) -> bool {
    let name = m.name.as_str();
    if name == folder || (name == "INBOX" && folder.eq_ignore_ascii_case("INBOX")) {
        return true;
    }
    match m.delimiter {
        Some(d) => name.split(d).eq(folder.split('/')),
        None => false,
    }
}

/// STATUS of a mailbox, for directory xattrs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxStatus {
    pub messages: Option<u32>,
    pub unseen: Option<u32>,
    pub uidnext: Option<u32>,
    pub uidvalidity: Option<UidValidity>,
}

/// Storage quota in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub used: u64,
    pub limit: u64,
}

/// The last list, and when it was read (`None`: no longer trusted, but still what a new
/// list is compared with).
type CachedList = (Arc<Vec<MailboxInfo>>, Option<Instant>);

/// The cached list and the name <-> id table.
#[derive(Default)]
pub struct Mailboxes {
    list: Mutex<Option<CachedList>>,
    /// Moves on (under the `list` lock) with each folder change of ours: a listing asked
    /// under an older generation may show the state before that change and is not installed.
    generation: AtomicU64,
    /// The last STATUS of each mailbox, with when it was asked and the mailbox's change epoch
    /// then (`getfattr -d` on a folder reads four attributes from one STATUS).
    status: Mutex<HashMap<MailboxId, (Instant, u64, MailboxStatus)>>,
    /// One LIST at a time: the others wait and take its result.
    turn: Mutex<()>,
    names: Mutex<Names>,
}

/// The generation a listing was asked under ([`Account::list_generation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListGeneration(u64);

#[derive(Default)]
struct Names {
    by_raw: HashMap<Vec<u8>, MailboxId>,
    by_id: Vec<MailboxName>,
}

impl Mailboxes {
    /// The id of a mailbox, assigned on first sight.
    pub fn id(&self, name: &MailboxName) -> MailboxId {
        let mut names = self.names.lock();
        if let Some(&id) = names.by_raw.get(name.raw()) {
            return id;
        }
        let id = MailboxId::nth(names.by_id.len());
        names.by_id.push(name.clone());
        names.by_raw.insert(name.raw().to_vec(), id);
        id
    }

    /// The id of a mailbox seen before (none is assigned).
    pub fn known_id(&self, name: &MailboxName) -> Option<MailboxId> {
        self.names.lock().by_raw.get(name.raw()).copied()
    }

    pub fn name(&self, id: MailboxId) -> Option<MailboxName> {
        self.names.lock().by_id.get(id.get() as usize - 1).cloned()
    }

    /// Stop trusting the cached list: the next question asks the server, and no listing
    /// asked before now is installed any more.
    pub fn invalidate(&self) {
        let mut list = self.list.lock();
        if let Some((_, at)) = list.as_mut() {
            *at = None;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The list held now, however old.
    pub(crate) fn current(&self) -> Option<Arc<Vec<MailboxInfo>>> {
        self.list.lock().as_ref().map(|(list, _)| list.clone())
    }

    /// Hold a list saved by an earlier mount, untrusted (the first question that can reach
    /// the server asks it), unless a list is held already. For an offline mount.
    pub(crate) fn hold_saved(&self, list: Vec<MailboxInfo>) -> Arc<Vec<MailboxInfo>> {
        self.list
            .lock()
            .get_or_insert_with(|| (Arc::new(list), None))
            .0
            .clone()
    }

    fn fresh(&self, max_age: Duration) -> Option<Arc<Vec<MailboxInfo>>> {
        match &*self.list.lock() {
            Some((list, Some(at))) if at.elapsed() < max_age => Some(list.clone()),
            _ => None,
        }
    }
}

impl Account {
    /// The mailbox list, asking the server if ours is older than `max_age`.
    pub fn mailboxes(&self, max_age: Duration) -> Result<Arc<Vec<MailboxInfo>>> {
        let mb = &self.mailboxes;
        if let Some(list) = mb.fresh(max_age) {
            return Ok(list);
        }
        if self.is_offline() {
            return self.offline_mailboxes();
        }
        match self.list_mailboxes(max_age) {
            // The server went away under this listing.
            Err(e) if self.is_offline() => self.offline_mailboxes().map_err(|_| e),
            other => other,
        }
    }

    /// The mailbox list from the server (or from a listing that ran meanwhile).
    fn list_mailboxes(&self, max_age: Duration) -> Result<Arc<Vec<MailboxInfo>>> {
        let mb = &self.mailboxes;
        let _turn = mb.turn.lock();
        // A listing overtaken by a folder change of ours is asked again; after a few tries
        // (changes in a tight loop) the last one answers this question without being cached.
        let mut tries = 0;
        loop {
            if let Some(list) = mb.fresh(max_age) {
                return Ok(list);
            }
            let asked = self.list_generation();
            let list = self.pool.with_session(None, Retry::Idempotent, list_all)?;
            match self.install_mailbox_list(list, asked) {
                Ok((list, _)) => return Ok(list),
                Err(list) if tries >= 2 => return Ok(Arc::new(list)),
                Err(_) => tries += 1,
            }
        }
    }

    /// The generation to pass to [`Account::install_mailbox_list`] with a listing asked now
    /// (read before the LIST is sent).
    pub(crate) fn list_generation(&self) -> ListGeneration {
        let _list = self.mailboxes.list.lock();
        ListGeneration(self.mailboxes.generation.load(Ordering::SeqCst))
    }

    /// Take a fresh listing (from the pool or the watcher's connection), asked under
    /// `asked`, as the cached one; watchers hear what changed if it differs from the last
    /// (then the flag returned is true). The one place the list changes, and the one place
    /// that tells of it. A listing that a folder change of ours overtook (the generation
    /// moved on since it was asked) may show the state before that change: it is given back
    /// (`Err`), not installed.
    pub(crate) fn install_mailbox_list(
        &self,
        list: Vec<MailboxInfo>,
        asked: ListGeneration,
    ) -> std::result::Result<(Arc<Vec<MailboxInfo>>, bool), Vec<MailboxInfo>> {
        let mut cached = self.mailboxes.list.lock();
        if self.mailboxes.generation.load(Ordering::SeqCst) != asked.0 {
            log::debug!("a folder list asked before a folder change of ours: dropped");
            return Err(list);
        }
        let now = Some(Instant::now());
        let installed = match cached.as_mut() {
            // The same as before: keep the old one (the tree built from it stays valid).
            Some((old, at)) if **old == list => {
                *at = now;
                (old.clone(), false)
            }
            Some((old, at)) => {
                let before = std::mem::replace(old, Arc::new(list));
                let list = old.clone();
                *at = now;
                // Sent under the lock: watchers hear of lists in the order they came.
                self.changes.mailboxes_listed(&before, &list);
                (list, true)
            }
            None => {
                let list = Arc::new(list);
                *cached = Some((list.clone(), now));
                (list, false)
            }
        };
        drop(cached);
        // Kept on disk for an offline start (only when it differs from what was saved).
        self.save_mailbox_list();
        Ok(installed)
    }

    /// The list changed by a command of ours (or may have): read it again now, so that
    /// watchers hear what changed. A failure leaves it untrusted: the next use asks.
    fn relist(&self) {
        self.mailboxes.invalidate();
        if let Err(e) = self.mailboxes(Duration::ZERO) {
            log::debug!("reading the folder list after a change: {e}");
        }
    }

    /// The id of a mailbox, assigned on first sight.
    pub fn mailbox_id(&self, name: &MailboxName) -> MailboxId {
        self.mailboxes.id(name)
    }

    pub fn mailbox_name(&self, id: MailboxId) -> Option<MailboxName> {
        self.mailboxes.name(id)
    }

    pub(crate) fn require_name(&self, id: MailboxId) -> Result<MailboxName> {
        self.mailbox_name(id)
            .ok_or_else(|| Error::NoMailbox(format!("{id}")))
    }

    /// A mailbox name typed by the user, encoded as this server wants names (UTF-8 where
    /// UTF8=ACCEPT is enabled, else modified UTF-7).
    pub fn new_mailbox_name(&self, name: &str) -> Result<MailboxName> {
        let utf8 = self
            .pool
            .with_session(None, Retry::Idempotent, |s| Ok(s.utf8()))?;
        Ok(MailboxName::from_utf8(name, utf8))
    }

    /// The mailbox with a special use (`\Trash`, ...), if the server names one.
    pub fn special_use_mailbox(&self, usage: &str) -> Result<Option<MailboxName>> {
        let list = self.mailboxes(Duration::from_secs(60))?;
        Ok(list
            .iter()
            .find(|m| !m.noselect && m.special_uses().contains(&usage))
            .map(|m| m.name.clone()))
    }

    /// The trash folder (`delete=trash`, and removal on servers without UIDPLUS), by this
    /// rule: the folder the `trash=` option names (as a path in the mount, `INBOX/Trash`, or
    /// as the server's name, `INBOX.Trash`); else the folder with the `\Trash` special use;
    /// else a folder named `Trash` (any case) at the top level; else one right under INBOX.
    /// `None` when there is none; a `trash=` folder that does not exist is an error (EPERM),
    /// never a reason to fall back to another.
    pub fn trash_mailbox(&self) -> Result<Option<MailboxName>> {
        let list = self.mailboxes(Duration::from_secs(60))?;
        let selectable = || list.iter().filter(|m| !m.noselect);
        if let Some(wanted) = &self.opts.trash {
            return match selectable().find(|m| names_folder(m, wanted)) {
                Some(m) => Ok(Some(m.name.clone())),
                None => {
                    log::warn!(
                        "the trash folder `{}` (option trash=) does not exist on the server",
                        crate::error::printable(wanted)
                    );
                    Err(Error::NotPermitted(format!(
                        "the trash folder {wanted} does not exist"
                    )))
                }
            };
        }
        let special = selectable().find(|m| m.special_uses().contains(&"\\Trash"));
        let top = || selectable().find(|m| m.name.as_str().eq_ignore_ascii_case("Trash"));
        let under_inbox = || {
            selectable().find(|m| {
                let Some(d) = m.delimiter else {
                    return false;
                };
                let name = m.name.as_str();
                name.split_once(d).is_some_and(|(parent, child)| {
                    parent.eq_ignore_ascii_case("INBOX") && child.eq_ignore_ascii_case("Trash")
                })
            })
        };
        Ok(special
            .or_else(top)
            .or_else(under_inbox)
            .map(|m| m.name.clone()))
    }

    /// CREATE. A broken connection is followed by a LIST to learn whether it happened.
    pub fn create_mailbox(&self, name: &MailboxName) -> Result<()> {
        let r = self.pool.with_session(None, Retry::Never, |s| {
            s.run(Command::Create(name.clone())).map(drop)
        });
        self.after_list_change(r, || self.exists(name))
    }

    /// DELETE, only if the server says, right before, that the mailbox holds no message
    /// (STATUS MESSAGES, unless `selectable` is false) and no child folder (LIST of
    /// `name<delimiter>%`), asked in one round trip on the session that then deletes it.
    ///
    /// IMAP has no conditional DELETE: a message delivered between that answer and the
    /// DELETE (one round trip) is deleted with the folder. That window is the whole risk;
    /// no index of ours, however fresh it looks, is asked instead.
    pub fn delete_mailbox_if_empty(&self, id: MailboxId, selectable: bool) -> Result<()> {
        let name = self.require_name(id)?;
        let delimiter = self
            .mailboxes(Duration::from_secs(60))?
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.delimiter);
        let r = self.pool.with_session(Some(&name), Retry::Never, |s| {
            leave(s, &name)?;
            refuse_unless_empty(s, &name, selectable, delimiter)?;
            s.run(Command::Delete(name.clone())).map(drop)
        });
        let r = self.after_list_change(r, || self.exists(&name).map(|e| !e));
        if r.is_ok() {
            self.forget_mailbox_content(id);
        }
        r
    }

    /// DELETE.
    pub fn delete_mailbox(&self, id: MailboxId) -> Result<()> {
        let name = self.require_name(id)?;
        let r = self.pool.with_session(Some(&name), Retry::Never, |s| {
            leave(s, &name)?;
            s.run(Command::Delete(name.clone())).map(drop)
        });
        let r = self.after_list_change(r, || self.exists(&name).map(|e| !e));
        if r.is_ok() {
            self.forget_mailbox_content(id);
        }
        r
    }

    /// RENAME; the children follow on the server.
    pub fn rename_mailbox(&self, id: MailboxId, to: &MailboxName) -> Result<()> {
        let from = self.require_name(id)?;
        let r = self.pool.with_session(Some(&from), Retry::Never, |s| {
            leave(s, &from)?;
            s.run(Command::Rename {
                from: from.clone(),
                to: to.clone(),
            })
            .map(drop)
        });
        let r = self.after_list_change(r, || Ok(self.exists(to)? && !self.exists(&from)?));
        if r.is_ok() {
            self.forget_mailbox_content(id);
        }
        r
    }

    /// SUBSCRIBE or UNSUBSCRIBE (both idempotent).
    pub fn set_subscribed(&self, id: MailboxId, on: bool) -> Result<()> {
        let name = self.require_name(id)?;
        self.pool.with_session(None, Retry::Idempotent, |s| {
            let cmd = if on {
                Command::Subscribe(name.clone())
            } else {
                Command::Unsubscribe(name.clone())
            };
            s.run(cmd).map(drop)
        })?;
        self.relist();
        Ok(())
    }

    /// STATUS (MESSAGES UNSEEN UIDNEXT UIDVALIDITY).
    pub fn status(&self, id: MailboxId) -> Result<MailboxStatus> {
        if self.is_offline() {
            return self.offline_status(id);
        }
        let epoch = self.changes.epoch(Some(id));
        if let Some(&(at, e, st)) = self.mailboxes.status.lock().get(&id) {
            if e == epoch && at.elapsed() < STATUS_TTL {
                return Ok(st);
            }
        }
        let name = self.require_name(id)?;
        let done = self.pool.with_session(None, Retry::Idempotent, |s| {
            s.run(Command::Status {
                mailbox: name.clone(),
                items: vec!["MESSAGES", "UNSEEN", "UIDNEXT", "UIDVALIDITY"],
            })
        })?;
        let mut st = MailboxStatus::default();
        for u in done.untagged {
            let Untagged::StatusData { items, .. } = u else {
                continue;
            };
            for item in items {
                match item {
                    StatusItem::Messages(n) => st.messages = Some(n),
                    StatusItem::Unseen(n) => st.unseen = Some(n),
                    StatusItem::UidNext(n) => st.uidnext = Some(n.get()),
                    StatusItem::UidValidity(v) => st.uidvalidity = Some(v),
                    _ => {}
                }
            }
        }
        self.mailboxes
            .status
            .lock()
            .insert(id, (Instant::now(), epoch, st));
        Ok(st)
    }

    /// The STORAGE quota of INBOX's quota root, if the server has QUOTA and a limit.
    pub fn quota(&self) -> Result<Option<Quota>> {
        self.pool.with_session(None, Retry::Idempotent, |s| {
            if !s.supports(Capability::Quota) {
                return Ok(None);
            }
            let done = s.run(Command::GetQuotaRoot(MailboxName::from_utf8(
                "INBOX", false,
            )))?;
            Ok(done.untagged.iter().find_map(|u| match u {
                Untagged::Quota { resources, .. } => resources
                    .iter()
                    .find(|r| r.name.eq_ignore_ascii_case("STORAGE"))
                    .map(|r| Quota {
                        used: r.usage.saturating_mul(1024),
                        limit: r.limit.saturating_mul(1024),
                    }),
                _ => None,
            }))
        })
    }

    /// Whether the server lists `name` now.
    fn exists(&self, name: &MailboxName) -> Result<bool> {
        self.mailboxes.invalidate();
        let list = self.mailboxes(Duration::ZERO)?;
        Ok(list.iter().any(|m| &m.name == name && !m.noselect))
    }

    /// The end of a command that changed the list: the list is read again (by `done`, asked
    /// on a new connection when a broken one left us in doubt whether it happened, else
    /// right away), and watchers hear what changed.
    fn after_list_change(&self, r: Result<()>, done: impl Fn() -> Result<bool>) -> Result<()> {
        let (r, listed) = match r {
            Err(e) if e.is_fatal_to_connection() => {
                log::warn!("connection lost during a folder change ({e}): checking the result");
                // The server's half of the dead connection may still be running the command
                // (a cut CREATE showed up after a first LIST had not listed it): "not done"
                // counts only when a second look, a moment later, agrees.
                let done = match done() {
                    Ok(false) => {
                        std::thread::sleep(crate::store::write::CUT_SETTLE);
                        done()
                    }
                    other => other,
                };
                match done {
                    Ok(true) => (Ok(()), true),
                    Ok(false) => (Err(e), true),
                    Err(check) => {
                        log::warn!("could not check: {check}");
                        (Err(e), false)
                    }
                }
            }
            other => (other, false),
        };
        if !listed {
            self.relist();
        }
        r
    }
}

/// Fail with [`Error::NotEmpty`] unless the server reports `name` without messages and
/// without children: STATUS and LIST pipelined, one round trip.
fn refuse_unless_empty(
    s: &mut crate::imap::session::Session,
    name: &MailboxName,
    selectable: bool,
    delimiter: Option<char>,
) -> Result<()> {
    let mut cmds = Vec::new();
    if selectable {
        cmds.push(Command::Status {
            mailbox: name.clone(),
            items: vec!["MESSAGES"],
        });
    }
    if let Some(d) = delimiter {
        let mut pattern = name.raw().to_vec();
        pattern.extend_from_slice(d.to_string().as_bytes());
        pattern.push(b'%');
        cmds.push(Command::List {
            reference: Vec::new(),
            pattern,
        });
    }
    let mut counted = !selectable;
    for reply in s.pipeline(&cmds)? {
        for u in reply?.untagged {
            match u {
                Untagged::StatusData { mailbox, items } if &mailbox == name => {
                    counted = true;
                    let n = items.iter().find_map(|i| match i {
                        StatusItem::Messages(n) => Some(*n),
                        _ => None,
                    });
                    match n {
                        Some(0) => {}
                        Some(n) => {
                            return Err(Error::NotEmpty(format!("{name} holds {n} messages")))
                        }
                        None => {
                            return Err(Error::BadReply {
                                command: "STATUS",
                                what: format!("{name} without MESSAGES"),
                            })
                        }
                    }
                }
                Untagged::List(item) if &item.name != name => {
                    return Err(Error::NotEmpty(format!("{name} holds folders")));
                }
                _ => {}
            }
        }
    }
    if !counted {
        return Err(Error::BadReply {
            command: "STATUS",
            what: format!("nothing about {name}"),
        });
    }
    Ok(())
}

/// Make sure `s` does not have `name` open (a DELETE or RENAME of it follows).
fn leave(s: &mut crate::imap::session::Session, name: &MailboxName) -> Result<()> {
    if s.selected().is_some_and(|sel| &sel.mailbox == name) {
        s.unselect()?;
    }
    Ok(())
}

/// LIST "" "*" (with special-use attributes where the server has them) and LSUB, in one
/// round trip.
pub(crate) fn list_all(s: &mut crate::imap::session::Session) -> Result<Vec<MailboxInfo>> {
    let list = if s.supports(Capability::SpecialUse) && s.supports(Capability::ListExtended) {
        Command::ListExtended {
            reference: Vec::new(),
            pattern: b"*".to_vec(),
            ret: ListReturn {
                special_use: true,
                ..ListReturn::default()
            },
        }
    } else {
        Command::List {
            reference: Vec::new(),
            pattern: b"*".to_vec(),
        }
    };
    let lsub = Command::Lsub {
        reference: Vec::new(),
        pattern: b"*".to_vec(),
    };
    let mut replies = s.pipeline(&[list, lsub])?.into_iter();
    let listed = replies
        .next()
        .ok_or(Error::Internal("a pipeline without a reply to its LIST"))??;
    // A server without LSUB (IMAP4rev2 only) still lists; nothing is subscribed then.
    let subscribed: Vec<MailboxName> = match replies.next() {
        Some(Ok(done)) => done
            .untagged
            .into_iter()
            .filter_map(|u| match u {
                Untagged::Lsub(item) => Some(item.name),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut list: Vec<MailboxInfo> = listed
        .untagged
        .into_iter()
        .filter_map(|u| match u {
            Untagged::List(item) => Some(MailboxInfo {
                noselect: item.is_noselect(),
                delimiter: item.delimiter,
                subscribed: subscribed.contains(&item.name),
                attributes: item.attributes,
                name: item.name,
            }),
            _ => None,
        })
        .collect();
    list.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    list.dedup_by(|a, b| a.name == b.name);
    Ok(list)
}
