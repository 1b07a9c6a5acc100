//! The watcher: one connection of its own that hears about other clients' changes as they
//! happen, so that the mount shows them within a second or two instead of after a TTL.
//!
//! The watcher thread holds a session the pool never lends to readers
//! ([`Pool::dedicated_session`]) and runs, by what the server offers:
//!
//! - NOTIFY (RFC 5465): `NOTIFY SET (PERSONAL (MessageNew MessageExpunge FlagChange
//!   MailboxName SubscriptionChange))`, then IDLE. Every mailbox of the personal namespace
//!   is covered (NAMESPACE says which are not: other users' and shared ones, which stay on
//!   their TTL): a change to one arrives as `* STATUS name (...)`, a created, deleted or
//!   renamed folder as `* LIST`.
//!   Folder events are only hints (Dovecot 2.3 loses renames and deletions made by other
//!   connections), so IDLE is also broken every [`POLL`] to read the folder list again.
//! - IDLE alone: IDLE on the most recently used mailbox (EXAMINEd on the watcher's
//!   connection), broken every [`POLL`] to read the folder list and ask the STATUS of every
//!   other mailbox we hold an index for (pipelined: one round trip).
//! - Neither: the same polling without IDLE.
//!
//! An event is never applied from its own data: it names a mailbox, whose index is then
//! refreshed incrementally on a pool session ([`Account::refresh_held`], usually one round
//! trip), and the refresh's differences go to the change feed like any other. A folder list
//! event makes the list be read again.
//!
//! Freshness: [`Account::watched_since`] tells [`Account::index`] whether an index fetched
//! at a given time is kept current by the watcher (the connection has been reporting since
//! before that time and covers the mailbox); such an index is not refreshed on a TTL. When
//! the connection drops, coverage ends at once; after reconnecting the watcher refreshes every
//! index held (changes may have been missed meanwhile). A connection that stops answering
//! without closing (a NAT or proxy that dropped it silently; a server that never sends IDLE's
//! `+`) is only found out after `--timeout`: so coverage is also claimed only while the
//! watcher's latest round trip, with the refreshes its events asked for, is younger than
//! [`LIVENESS`]. The loop makes one each [`POLL`]; a silent connection turns the mount back
//! to its TTL within [`LIVENESS`], not after `--timeout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, NotifyEvent, NotifyFilter};
use crate::imap::pool::Pool;
use crate::imap::session::{Capability, MailboxEvent, Session};
use crate::imap::types::{StatusItem, Untagged};
use crate::store::ids::MailboxId;
use crate::store::mailboxes::{list_all, ListGeneration, MailboxInfo};
use crate::store::Account;

/// How often the watcher polls what IDLE does not report (and checks that it should go on).
pub const POLL: Duration = Duration::from_secs(1);

/// How often, under NOTIFY, the STATUS of every held mailbox is asked anyway.
const NOTIFY_STATUS_POLL: Duration = Duration::from_secs(30);

/// Longest wait before reconnecting after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How old the watcher's latest completed round trip may be for its coverage to count (it
/// makes one each [`POLL`]; the rest is slack for the refreshes events ask for, on a loaded
/// machine).
pub const LIVENESS: Duration = Duration::from_secs(5);

/// What the watcher covers, for [`Account::watched_since`].
#[derive(Default)]
pub struct Watch {
    state: Mutex<Coverage>,
    /// When the latest round trip that completed on the watcher's connection began (its
    /// events handled): every change the server reported before then has been applied.
    heard: Mutex<Option<Instant>>,
    stop: AtomicBool,
    /// The mailbox whose index was last asked for (IDLE mode watches it).
    recent: Mutex<Option<MailboxId>>,
}

#[derive(Debug, Clone, Default)]
enum Coverage {
    /// No watcher connection: indexes are refreshed on their TTL.
    #[default]
    Down,
    /// NOTIFY (PERSONAL): every mailbox of the personal namespace, since the instant given;
    /// mailboxes of other users' and shared namespaces are not reported, so not covered.
    All(Instant, Namespaces),
    /// IDLE on one mailbox since the instant given; the others are covered too (by STATUS
    /// polling) when the server reports HIGHESTMODSEQ, since `polled`.
    Idle {
        mailbox: Option<(MailboxId, Instant)>,
        polled: Option<Instant>,
    },
}

impl Account {
    /// Start the watcher thread (once, after any fork). It runs until [`Account::close`].
    pub fn start_watcher(self: &Arc<Account>) -> Result<()> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("watch".into())
            .spawn(move || run(weak))
            .map(drop)
            .map_err(|e| Error::io("starting the watcher thread", e))
    }

    /// Whether an index of `id` fetched at `fetched_at` is kept current by the watcher.
    pub(crate) fn watched_since(&self, id: MailboxId, fetched_at: Instant) -> bool {
        let name = self.mailbox_name(id);
        match &self.watch.coverage() {
            Coverage::Down => false,
            Coverage::All(since, ns) => {
                fetched_at >= *since && name.is_some_and(|n| ns.is_personal(n.raw()))
            }
            Coverage::Idle { mailbox, polled } => {
                mailbox.is_some_and(|(m, since)| m == id && fetched_at >= since)
                    || polled.is_some_and(|since| fetched_at >= since)
            }
        }
    }

    /// Whether the watcher is connected (so folder list changes are pushed).
    pub fn is_live(&self) -> bool {
        !matches!(self.watch.coverage(), Coverage::Down)
    }

    /// Whether every change to mailbox `id` is pushed to the filesystem (so the kernel may
    /// keep its entries long).
    pub fn is_watched(&self, id: MailboxId) -> bool {
        let name = self.mailbox_name(id);
        match &self.watch.coverage() {
            Coverage::Down => false,
            Coverage::All(_, ns) => name.is_some_and(|n| ns.is_personal(n.raw())),
            Coverage::Idle { mailbox, polled } => {
                polled.is_some() || mailbox.is_some_and(|(m, _)| m == id)
            }
        }
    }

    /// Remember that a mailbox is in use (the IDLE watcher follows the latest).
    pub(crate) fn note_use(&self, id: MailboxId) {
        let mut recent = self.watch.recent.lock();
        if *recent != Some(id) {
            *recent = Some(id);
        }
    }

    /// Stop the watcher (it notices within [`POLL`], or at the end of its IDLE).
    pub(crate) fn stop_watcher(&self) {
        self.watch.stop.store(true, Ordering::Relaxed);
        self.watch.set(Coverage::Down);
    }
}

impl Watch {
    /// What the watcher covers now: nothing while its latest round trip is older than
    /// [`LIVENESS`] (the connection may be dead without having said so).
    fn coverage(&self) -> Coverage {
        let heard = *self.heard.lock();
        if heard.is_none_or(|t| t.elapsed() > LIVENESS) {
            return Coverage::Down;
        }
        self.state.lock().clone()
    }

    /// A new coverage, heard from now (`Down`: never).
    fn set(&self, coverage: Coverage) {
        let down = matches!(coverage, Coverage::Down);
        *self.state.lock() = coverage;
        *self.heard.lock() = (!down).then(Instant::now);
    }

    /// A round trip begun at `at` completed and its events were handled.
    fn heard_from(&self, at: Instant) {
        let mut heard = self.heard.lock();
        if heard.is_some_and(|t| t < at) {
            *heard = Some(at);
        }
    }
}

/// Why a watch ended without a failure.
enum End {
    /// The account is closing.
    Stopped,
    /// The folder list changed under NOTIFY: start over on a new connection, whose NOTIFY
    /// covers the folders as they are now (Dovecot 2.3 stops reporting a folder created or
    /// recreated after NOTIFY SET, and a second NOTIFY SET on the same connection does not
    /// help).
    Renew,
}

/// The watcher thread: connect, watch until the connection fails, reconnect with backoff.
fn run(account: Weak<Account>) {
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    loop {
        let Some(a) = account.upgrade() else { return };
        if a.watch.stop.load(Ordering::Relaxed) {
            return;
        }
        if a.is_offline() {
            // The link thread probes the server; the watcher follows once it answers.
            drop(a);
            if !sleep_unless_stopped(&account, POLL) {
                return;
            }
            continue;
        }
        let pool: &Pool = a.pool();
        let session = match pool.dedicated_session() {
            Ok(s) => s,
            Err(e) => {
                // The pool tells of an outage once; the watcher's own tries stay quiet.
                log::debug!("watcher: cannot connect ({e}); retrying in {backoff:?}");
                drop(a);
                if !sleep_unless_stopped(&account, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        drop(a);
        let end = watch(&account, session, first);
        if let Some(a) = account.upgrade() {
            a.watch.set(Coverage::Down);
        }
        first = false;
        backoff = Duration::from_secs(1);
        match end {
            Ok(End::Stopped) => return,
            Ok(End::Renew) => log::debug!("watcher: the folder list changed; renewing NOTIFY"),
            Err(e) => {
                log::info!("watcher: {e}; reconnecting");
                if !sleep_unless_stopped(&account, backoff) {
                    return;
                }
            }
        }
    }
}

/// Sleep up to `d`; false if the account is gone or stopping.
fn sleep_unless_stopped(account: &Weak<Account>, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        match account.upgrade() {
            Some(a) if !a.watch.stop.load(Ordering::Relaxed) => {}
            _ => return false,
        }
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
    true
}

/// Watch on `s` until the account stops, the folder list changes under NOTIFY, or the
/// connection fails (Err).
fn watch(account: &Weak<Account>, mut s: Session, first: bool) -> Result<End> {
    let notify = s.supports(Capability::Notify) && {
        let events = vec![
            NotifyEvent::MessageNew,
            NotifyEvent::MessageExpunge,
            NotifyEvent::FlagChange,
            NotifyEvent::MailboxName,
            NotifyEvent::SubscriptionChange,
        ];
        match s.run(Command::Notify(vec![(NotifyFilter::Personal, events)])) {
            Ok(_) => true,
            Err(e) if e.is_fatal_to_connection() => return Err(e),
            Err(e) => {
                log::info!("watcher: NOTIFY refused ({e}); watching with IDLE");
                false
            }
        }
    };
    let namespaces = if notify {
        namespaces(&mut s)?
    } else {
        Namespaces::default()
    };
    let idle = s.supports(Capability::Idle);
    let modseq = s.supports(Capability::CondStore);
    log::info!(
        "watcher: {}",
        match (notify, idle) {
            (true, _) => "NOTIFY on every folder",
            (false, true) => "IDLE on the folder in use, STATUS polling of the others",
            (false, false) => "STATUS polling (the server has neither NOTIFY nor IDLE)",
        }
    );
    let mut watcher = Watcher {
        account: account.clone(),
        idled: None,
        last_poll: Instant::now(),
        last_status_poll: Instant::now(),
        last_list: None,
        list_generation: None,
        renew: false,
        recheck: Default::default(),
        modseq,
    };
    watcher.poll(&mut s, false)?;
    {
        let Some(a) = account.upgrade() else {
            return Ok(End::Stopped);
        };
        let now = Instant::now();
        a.watch.set(if notify {
            Coverage::All(now, namespaces)
        } else {
            Coverage::Idle {
                mailbox: None,
                polled: modseq.then_some(now),
            }
        });
        if !first {
            // Changes made while the watcher was away were reported to nobody.
            catch_up(&a);
        }
    }
    loop {
        let Some(a) = account.upgrade() else {
            s.logout();
            return Ok(End::Stopped);
        };
        if a.watch.stop.load(Ordering::Relaxed) {
            drop(a);
            s.logout();
            return Ok(End::Stopped);
        }
        drop(a);
        let began = Instant::now();
        if !notify {
            watcher.follow_recent(&mut s)?;
        }
        let events = if idle && (notify || watcher.idled.is_some()) {
            s.idle(POLL)?
        } else {
            std::thread::sleep(POLL);
            match s.run(Command::Noop) {
                Ok(done) => done.untagged,
                Err(e) if e.is_fatal_to_connection() => return Err(e),
                // A server that refuses NOOP still answers the polls.
                Err(_) => Vec::new(),
            }
        };
        let idled = watcher.idled.as_ref().map(|(id, _)| *id);
        let list_event = watcher.handle(&events, idled);
        if list_event || watcher.last_poll.elapsed() >= POLL {
            // Without NOTIFY every held mailbox's STATUS, each time; with it, now and then,
            // in case the server lost track of one.
            let statuses = !notify || watcher.last_status_poll.elapsed() >= NOTIFY_STATUS_POLL;
            watcher.poll(&mut s, statuses)?;
        }
        if notify && watcher.renew {
            s.logout();
            return Ok(End::Renew);
        }
        if let Some(a) = account.upgrade() {
            a.watch.heard_from(began);
        }
    }
}

/// The prefixes of the namespaces NOTIFY (PERSONAL) does not cover.
#[derive(Debug, Clone, Default)]
struct Namespaces {
    personal: Vec<Vec<u8>>,
    foreign: Vec<Vec<u8>>,
}

impl Namespaces {
    /// Whether a mailbox belongs to the personal namespace: INBOX always; another name
    /// unless the longest namespace prefix it starts with is another user's or shared. A
    /// prefix is compared without its trailing delimiter, so the namespace's own root counts
    /// as foreign too (a doubt costs a refresh on the TTL, never a missed change).
    fn is_personal(&self, name: &[u8]) -> bool {
        if name.eq_ignore_ascii_case(b"INBOX") {
            return true;
        }
        let longest = |prefixes: &[Vec<u8>]| {
            prefixes
                .iter()
                .filter(|p| name.starts_with(p))
                .map(Vec::len)
                .max()
        };
        match longest(&self.foreign) {
            None => true,
            Some(f) => longest(&self.personal).is_some_and(|p| p > f),
        }
    }
}

/// Ask NAMESPACE (RFC 2342) where offered: without it the server has one namespace, the
/// personal one.
fn namespaces(s: &mut Session) -> Result<Namespaces> {
    if !s.supports(Capability::Namespace) {
        return Ok(Namespaces::default());
    }
    let done = match s.run(Command::Namespace) {
        Ok(done) => done,
        Err(e) if e.is_fatal_to_connection() => return Err(e),
        Err(e) => {
            // Unknown namespaces: cover nothing but INBOX rather than claim too much.
            log::info!("watcher: NAMESPACE refused ({e}); only INBOX counts as watched");
            return Ok(Namespaces {
                personal: Vec::new(),
                foreign: vec![Vec::new()],
            });
        }
    };
    let trim = |(p, d): (Vec<u8>, Option<char>)| {
        let mut p = p;
        if let Some(d) = d.filter(|d| d.is_ascii()) {
            if p.last() == Some(&(d as u8)) {
                p.pop();
            }
        }
        p
    };
    let mut out = Namespaces::default();
    for u in done.untagged {
        if let Untagged::Namespace(ns) = u {
            out.personal.extend(ns.personal.into_iter().map(trim));
            out.foreign
                .extend(ns.other.into_iter().chain(ns.shared).map(trim));
        }
    }
    Ok(out)
}

/// Refresh every index held (after the watcher was away).
fn catch_up(a: &Account) {
    for id in a.indexes.ids() {
        if let Err(e) = a.refresh_held(id) {
            log::debug!("watcher: refreshing {id}: {e}");
        }
    }
}

/// The watcher's state between events.
struct Watcher {
    account: Weak<Account>,
    /// The mailbox EXAMINEd on the watcher's connection (IDLE mode).
    idled: Option<(MailboxId, crate::imap::types::MailboxName)>,
    last_poll: Instant,
    last_status_poll: Instant,
    /// The folder list as last read here.
    last_list: Option<Arc<Vec<MailboxInfo>>>,
    /// The folder list's generation at the last poll: it moves with every folder change of
    /// ours, also one the polls never saw (`mkdir X; mv X Y; rmdir Y` between two of them).
    /// Dovecot 2.3's NOTIFY can go silent for every folder after a rename by another
    /// connection, and tells nothing: under NOTIFY any such change starts a new connection.
    list_generation: Option<ListGeneration>,
    /// The folder list changed, or a mailbox turned out recreated: under NOTIFY, start over.
    renew: bool,
    /// Mailboxes refreshed after an event, whose STATUS the next poll checks again.
    recheck: std::collections::BTreeSet<MailboxId>,
    modseq: bool,
}

impl Watcher {
    /// Turn a batch of untagged responses into refreshes: of the mailboxes named by STATUS,
    /// of `selected` on any message event. Returns whether the folder list changed (LIST).
    fn handle(&mut self, events: &[Untagged], selected: Option<MailboxId>) -> bool {
        let Some(a) = self.account.upgrade() else {
            return false;
        };
        let mut mailboxes = Vec::new();
        let mut list = false;
        if !events.is_empty() {
            log::debug!("watcher: {} events", events.len());
        }
        for e in events {
            match e {
                Untagged::StatusData { mailbox, .. } => {
                    if let Some(id) = a.mailboxes.known_id(mailbox) {
                        mailboxes.push(id);
                    }
                }
                Untagged::List(_) | Untagged::Lsub(_) => list = true,
                u if MailboxEvent::of(u).is_some_and(|m| m.is_message_change()) => {
                    mailboxes.extend(selected)
                }
                _ => {}
            }
        }
        mailboxes.sort_unstable();
        mailboxes.dedup();
        for id in mailboxes {
            self.renew |= refresh(&a, id);
            // The event may have come before the change was visible to other connections:
            // the next poll checks the STATUS once more.
            self.recheck.insert(id);
        }
        list
    }

    /// IDLE mode: EXAMINE the mailbox in use on the watcher's connection if it changed.
    fn follow_recent(&mut self, s: &mut Session) -> Result<()> {
        let Some(a) = self.account.upgrade() else {
            return Ok(());
        };
        let recent = *a.watch.recent.lock();
        let Some(id) = recent else { return Ok(()) };
        if self.idled.as_ref().is_some_and(|(m, _)| *m == id) {
            return Ok(());
        }
        let Some(name) = a.mailbox_name(id) else {
            return Ok(());
        };
        let sync = s.select_sync();
        match s.select_with(&name, true, sync, &[]) {
            Ok(_) => {
                let since = Instant::now();
                self.idled = Some((id, name));
                if let Coverage::Idle { mailbox, .. } = &mut *a.watch.state.lock() {
                    *mailbox = Some((id, since));
                }
                Ok(())
            }
            Err(e) if e.is_fatal_to_connection() => Err(e),
            Err(e) => {
                log::debug!("watcher: cannot examine {name}: {e}");
                self.idled = None;
                Ok(())
            }
        }
    }

    /// Read the folder list again on the watcher's connection (NOTIFY's folder events are
    /// only hints: Dovecot 2.3 misses renames and deletions by other connections) and, with
    /// `statuses`, ask the STATUS of every other mailbox we hold an index for, all in one
    /// pipeline; refresh those that changed.
    fn poll(&mut self, s: &mut Session, statuses: bool) -> Result<()> {
        self.last_poll = Instant::now();
        let Some(a) = self.account.upgrade() else {
            return Ok(());
        };
        let asked = a.list_generation();
        if self.list_generation.is_some_and(|g| g != asked) {
            self.renew = true;
        }
        self.list_generation = Some(asked);
        match list_all(s) {
            // A listing that a folder change of ours overtook is dropped: the next poll
            // reads the list again.
            Ok(list) => {
                if let Ok((list, _)) = a.install_mailbox_list(list, asked) {
                    if self.last_list.as_ref().is_some_and(|l| **l != *list) {
                        self.renew = true;
                    }
                    self.last_list = Some(list);
                }
            }
            Err(e) if e.is_fatal_to_connection() => return Err(e),
            Err(e) => log::debug!("watcher: reading the folder list: {e}"),
        }
        let recheck = std::mem::take(&mut self.recheck);
        let ids = if statuses {
            self.last_status_poll = Instant::now();
            a.indexes.ids()
        } else {
            recheck.into_iter().collect()
        };
        // STATUS of the selected mailbox is not asked (RFC 3501 advises against it): IDLE
        // reports its changes.
        let idled = self.idled.as_ref().map(|(id, _)| *id);
        let held: Vec<(MailboxId, crate::imap::types::MailboxName)> = ids
            .into_iter()
            .filter(|id| Some(*id) != idled)
            .filter_map(|id| Some((id, a.mailbox_name(id)?)))
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        let mut items = vec!["MESSAGES", "UIDNEXT", "UIDVALIDITY"];
        if self.modseq {
            items.push("HIGHESTMODSEQ");
        }
        let cmds: Vec<Command> = held
            .iter()
            .map(|(_, name)| Command::Status {
                mailbox: name.clone(),
                items: items.clone(),
            })
            .collect();
        let replies = s.pipeline(&cmds)?;
        for ((id, _), reply) in held.iter().zip(replies) {
            let Ok(done) = reply else { continue };
            let Some(items) = done.untagged.into_iter().find_map(|u| match u {
                Untagged::StatusData { items, .. } => Some(items),
                _ => None,
            }) else {
                continue;
            };
            if differs(&a, *id, &items) {
                self.renew |= refresh(&a, *id);
            }
        }
        Ok(())
    }
}

/// Whether a STATUS answer disagrees with the index we hold (then it needs a refresh).
fn differs(a: &Account, id: MailboxId, items: &[StatusItem]) -> bool {
    let Some(ix) = a.indexes.get(id) else {
        return false;
    };
    let ix = ix.read();
    items.iter().any(|item| match *item {
        StatusItem::Messages(n) => n as usize != ix.messages().len(),
        StatusItem::UidNext(n) => ix.uidnext().is_none_or(|u| u < n),
        StatusItem::UidValidity(v) => ix.validity() != v,
        StatusItem::HighestModSeq(m) => ix.highest_modseq().is_none_or(|h| h < m),
        _ => false,
    })
}

/// Refresh a held index after an event; a mailbox that is gone loses its index. Returns
/// whether the mailbox was deleted or recreated.
fn refresh(a: &Account, id: MailboxId) -> bool {
    match a.refresh_held(id) {
        Ok(recreated) => recreated,
        Err(Error::No { .. }) => {
            log::debug!("watcher: {id} is gone");
            a.forget_mailbox_content(id);
            true
        }
        Err(e) => {
            log::warn!("watcher: refreshing {id}: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_personal_covers_no_shared_or_other_users_folder() {
        let ns = Namespaces {
            personal: vec![Vec::new()],
            foreign: vec![b"shared".to_vec(), b"#users".to_vec()],
        };
        assert!(ns.is_personal(b"INBOX"));
        assert!(ns.is_personal(b"Archive.2024"));
        assert!(!ns.is_personal(b"shared.Team"));
        assert!(!ns.is_personal(b"#users.bob.INBOX"));
        assert!(Namespaces::default().is_personal(b"anything"));
        let unknown = Namespaces {
            personal: Vec::new(),
            foreign: vec![Vec::new()],
        };
        assert!(unknown.is_personal(b"INBOX") && !unknown.is_personal(b"Sent"));
    }
}
