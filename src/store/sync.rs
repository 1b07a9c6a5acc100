//! Keeping indexes current: listing a mailbox, and refreshing what we hold by asking only what
//! changed.
//!
//! A mailbox seen for the first time (or under a new UIDVALIDITY) is listed whole: EXAMINE with
//! one pipelined `UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE [MODSEQ])`, one round trip.
//! Afterwards a refresh asks for the difference, in one round trip too, by the best means the
//! server offers:
//!
//! 1. QRESYNC (RFC 7162, enabled at login): `EXAMINE name (QRESYNC (uidvalidity modseq))`; the
//!    server answers with `VANISHED (EARLIER)` for what was expunged and a FETCH of the flags of
//!    every message changed since, and a pipelined `UID FETCH uidnext:*` lists the new ones.
//! 2. CONDSTORE: EXAMINE, `UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE modseq)`, the new
//!    messages, and `UID SEARCH ALL` (ESEARCH where offered: a few ranges) for the expunges.
//! 3. Otherwise: EXAMINE, the new messages and `UID FETCH 1:* (UID FLAGS)`: the flags of all,
//!    which also says which UIDs are still there.
//!
//! The refresh always EXAMINEs afresh (a NOOP on an old selection would not reveal that the
//! mailbox was deleted and recreated under a new UIDVALIDITY); a new UIDVALIDITY means a full
//! listing. The result is applied to the index in place ([`Indexes`]), keeping the body lengths
//! learned by reading, and the differences go to the change feed. A UID the server reports
//! that the index lacks (appended below the UIDNEXT we knew, or learned only by its flags) is
//! listed right away on the same session, whose view includes it (it has just EXAMINEd);
//! that is the only way a refresh takes two round trips. HIGHESTMODSEQ and UIDNEXT advance
//! only once every reported UID is in the index (`delta`).
//!
//! A saved index is checked before it is believed ([`verify`]): its first refresh lists a
//! sample of it in the same round trip, and a mismatch (same UIDVALIDITY, other messages)
//! lists the folder afresh, as a new UIDVALIDITY would.
//!
//! Freshness: an index is trusted for the caller's `max_age`, or indefinitely while the
//! watcher ([`crate::store::watch`]) reports every change to it; see [`Account::index`].
//! Offline, the index held is served however old ([`crate::store::link`]).
//!
//! [`Indexes`]: crate::store::index::Indexes

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr, QResync, SearchKey, SearchReturn, SelectSync};
use crate::imap::pool::Retry;
use crate::imap::session::{Capability, Completed, Session};
use crate::imap::types::{
    FetchItem, Flag, MailboxName, ModSeq, SequenceSet, Uid, UidValidity, Untagged,
};
use crate::store::changes::Change;
use crate::store::ids::MailboxId;
use crate::store::index::{
    without_recent, Delta, Index, Listing, MessageMeta, ObjectId, ObjectIds, SharedIndex, UidMap,
};
use crate::store::Account;

mod status;
mod verify;

/// What a refresh starts from: the part of the index the server is asked about.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub validity: UidValidity,
    pub highest_modseq: Option<ModSeq>,
    pub uidnext: Option<Uid>,
    /// Messages to compare with the server (RFC822.SIZE, INTERNALDATE) in the same round
    /// trip: a sample of a saved index ([`verify`]); empty otherwise.
    pub check: Vec<(Uid, u64, i64)>,
}

impl Base {
    fn of(ix: &Index, check: Vec<(Uid, u64, i64)>) -> Base {
        Base {
            validity: ix.validity(),
            highest_modseq: ix.highest_modseq(),
            uidnext: ix.uidnext(),
            check,
        }
    }
}

/// What a refresh learned from the server.
#[derive(Debug)]
pub(crate) enum Learned {
    /// A whole listing: first sight, a new UIDVALIDITY, or no way to ask for less.
    Full(Index),
    /// What changed since the [`Base`].
    Delta(Delta),
    /// A whole listing because the [`Base`] failed its check: the server holds other
    /// messages under the same UIDVALIDITY.
    Replaced(Index),
}

/// Counts of the refreshes done, for `user.imapfs.stats`.
#[derive(Default)]
pub struct SyncStats {
    pub full: std::sync::atomic::AtomicU64,
    pub incremental: std::sync::atomic::AtomicU64,
    /// Refreshes a STATUS alone answered: the folder had not changed.
    pub unchanged: std::sync::atomic::AtomicU64,
}

impl Account {
    /// The index of a mailbox, refreshed from the server if older than `max_age` and not
    /// kept current by the watcher.
    pub fn index(&self, id: MailboxId, max_age: Duration) -> Result<SharedIndex> {
        self.note_use(id);
        self.index_unnoted(id, max_age)
    }

    /// [`Account::index`] for background work (prefetch): the mailbox does not become the
    /// one in use, which the watcher follows.
    pub(crate) fn index_unnoted(&self, id: MailboxId, max_age: Duration) -> Result<SharedIndex> {
        let fresh = || {
            self.indexes.get(id).filter(|ix| {
                let ix = ix.read();
                !ix.is_stale()
                    && (ix.fetched_at().elapsed() < max_age
                        || self.watched_since(id, ix.fetched_at()))
            })
        };
        if let Some(ix) = fresh() {
            return Ok(ix);
        }
        if self.is_offline() {
            // Nothing to ask: what we hold, or what an earlier mount saved (store/link.rs).
            return self.offline_index(id);
        }
        // One refresh per mailbox at a time: the others wait and take its result.
        let _turn = self.refresh_turns[id.get() as usize % self.refresh_turns.len()].lock();
        if let Some(ix) = fresh() {
            return Ok(ix);
        }
        match self.refresh(id, true) {
            // The server went away under this refresh.
            Err(e) if self.is_offline() => self.offline_index(id).map_err(|_| e),
            other => other,
        }
    }

    /// The index we have, however old, without asking the server.
    pub fn cached_index(&self, id: MailboxId) -> Option<SharedIndex> {
        self.indexes.get(id)
    }

    /// Refresh a mailbox's index now if we hold one (the watcher heard of a change). Waits
    /// for a refresh already under way instead of starting a second. Returns whether the
    /// mailbox turned out to have a new UIDVALIDITY.
    pub(crate) fn refresh_held(&self, id: MailboxId) -> Result<bool> {
        let Some(before) = self.indexes.get(id).map(|ix| ix.read().validity()) else {
            return Ok(false);
        };
        let _turn = self.refresh_turns[id.get() as usize % self.refresh_turns.len()].lock();
        // Something changed (the watcher heard so): no STATUS first.
        let after = self.refresh(id, false)?.read().validity();
        Ok(after != before)
    }

    /// Ask the server and bring the index up to date. Callers hold the mailbox's refresh turn.
    ///
    /// A saved index ([`crate::store::persist`]) is only a starting point: it is never
    /// installed before a refresh from it succeeded, and that first refresh checks a sample
    /// of it against the server ([`verify`]); a mismatch means the server holds other
    /// messages under the same UIDVALIDITY (a restored backup), and the folder is listed
    /// afresh as if its UIDVALIDITY had changed.
    ///
    /// Edits of ours made while the server is asked are applied again on top of its answer
    /// (a [`crate::store::index::Listing`] is open): an answer that predates them
    /// cannot undo them.
    ///
    /// With `probe`, an index held and believed asks first whether anything changed at all
    /// ([`Account::unchanged_by_status`]): one STATUS instead of the EXAMINE, which costs the
    /// server a pass over a big folder (Dovecot: 2 s at 1,000,000 messages).
    fn refresh(&self, id: MailboxId, probe: bool) -> Result<SharedIndex> {
        let name = self.require_name(id)?;
        let listing = self.indexes.begin_listing(id);
        let held = self.indexes.get(id);
        if let Some(ix) = held.as_ref().filter(|_| probe) {
            // An error here (the folder is gone, the link is down) is the refresh's to find.
            if matches!(self.unchanged_by_status(&name, ix), Ok(true)) {
                let validity = ix.read().validity();
                // Nothing learned but that the index is current: it is marked so, and our
                // edits made meanwhile are kept (the open listing).
                let unchanged =
                    self.indexes
                        .apply_delta(id, validity, Delta::default(), &listing, None);
                if let Some((shared, unknown, _)) = unchanged {
                    if unknown.is_empty() {
                        self.sync_stats.unchanged.fetch_add(1, Ordering::Relaxed);
                        return Ok(shared);
                    }
                }
            }
        }
        // An index an offline mount loaded from disk is checked like a saved one; a copy is
        // kept for announcing its reset if the server does not match it.
        let unverified = held
            .as_ref()
            .map(|ix| ix.read())
            .filter(|ix| ix.is_unverified())
            .map(|ix| ix.clone());
        let saved = match held {
            Some(_) => None,
            None => self.load_saved_index(id, &name),
        };
        let base = match (&held, &saved) {
            (Some(ix), _) => {
                let ix = ix.read();
                let check = match ix.is_unverified() {
                    true => verify::sample(&ix),
                    false => Vec::new(),
                };
                Some(Base::of(&ix, check))
            }
            (None, Some(ix)) => Some(Base::of(ix, verify::sample(ix))),
            (None, None) => None,
        };
        let known = |uid: Uid| match (&held, &saved) {
            (Some(ix), _) => ix.read().messages().contains_key(&uid),
            (None, Some(ix)) => ix.messages().contains_key(&uid),
            (None, None) => false,
        };
        let attempt = || {
            self.pool.with_session(Some(&name), Retry::Idempotent, |s| {
                sync_with_ids_or_without(s, &name, base.as_ref(), &known)
            })
        };
        let learned = match attempt() {
            // A session whose selected mailbox another client deleted can refuse the next
            // EXAMINE before it says BYE (Dovecot: "Mailbox was deleted under us"); the
            // mailbox may well exist again. Ask once more before believing it gone.
            Err(e @ Error::No { .. }) => {
                log::debug!("{name}: {e}; asking again");
                attempt()?
            }
            other => other?,
        };
        let shared = match learned {
            Learned::Full(index) => {
                if base
                    .as_ref()
                    .is_some_and(|b| b.validity != index.validity())
                {
                    // A new generation: the old one's bodies can never be asked for again.
                    self.drop_cached_folder(id);
                }
                self.install_full(id, &name, index, &listing, None)
            }
            Learned::Replaced(index) => {
                log::warn!(
                    "{name}: the saved index does not match the server (same UIDVALIDITY, \
                     other messages): listing it afresh"
                );
                let disowned = saved.as_ref().or(unverified.as_ref());
                if disowned.is_some() {
                    self.drop_cached_folder(id);
                }
                if unverified.is_some() {
                    // Installed afresh: the old copy's lengths and names must not carry over.
                    self.indexes.remove(id);
                }
                self.install_full(id, &name, index, &listing, disowned)
            }
            Learned::Delta(delta) => {
                self.sync_stats.incremental.fetch_add(1, Ordering::Relaxed);
                let no_index = || Error::Internal("an incremental refresh without an index");
                let validity = base.as_ref().map(|b| b.validity).ok_or_else(no_index)?;
                // `saved` is there only when no index was held: it goes in with the delta.
                let (shared, unknown, changed) = self
                    .indexes
                    .apply_delta(id, validity, delta, &listing, saved)
                    .ok_or_else(no_index)?;
                if !unknown.is_empty() {
                    // The index stays stale and keeps its old HIGHESTMODSEQ and UIDNEXT: the
                    // next question asks again for what changed since then.
                    log::warn!(
                        "{name}: the server reported {} messages it would not list",
                        unknown.len()
                    );
                }
                if !changed {
                    // The same index as before (on a remount: as the file on disk), so
                    // nothing to save; a change still unsaved is saved with the next one,
                    // or at unmount.
                    return Ok(shared);
                }
                shared
            }
        };
        self.index_changed(id);
        Ok(shared)
    }

    /// Install a whole listing (first sight, a new UIDVALIDITY, a saved index that did not
    /// match); the door tells the filesystem what changed.
    fn install_full(
        &self,
        id: MailboxId,
        name: &MailboxName,
        index: Index,
        listing: &Listing<'_>,
        disowned: Option<&Index>,
    ) -> SharedIndex {
        self.sync_stats.full.fetch_add(1, Ordering::Relaxed);
        let (shared, changes) = self.indexes.install(id, index, listing, disowned);
        if disowned.is_none() && changes.iter().any(|c| matches!(c, Change::Reset { .. })) {
            log::warn!("UIDVALIDITY of {name} changed: dropping its cached content");
            self.drop_cached_folder(id);
        }
        shared
    }

    /// Drop everything held about a mailbox (deleted or renamed away).
    pub(crate) fn forget_mailbox_content(&self, id: MailboxId) {
        self.drop_cached_folder(id);
        self.indexes.remove(id);
    }
}

/// The metadata a listing asks for.
/// With the ids that make one message one inode where the server has them (Gmail's
/// X-GM-MSGID, else OBJECTID's EMAILID), each only if advertised.
pub(crate) fn listing_attrs(s: &mut Session) -> Vec<FetchAttr> {
    let mut attrs = vec![
        FetchAttr::Uid,
        FetchAttr::Flags,
        FetchAttr::Rfc822Size,
        FetchAttr::InternalDate,
    ];
    if s.supports(Capability::CondStore) {
        attrs.push(FetchAttr::ModSeq);
    }
    if s.supports(Capability::GmExt) {
        attrs.extend([FetchAttr::GmMsgId, FetchAttr::GmThrId]);
    } else if s.supports(Capability::ObjectId) {
        attrs.extend([FetchAttr::EmailId, FetchAttr::ThreadId]);
    }
    attrs
}

/// [`sync_mailbox`], and again without the cross-folder ids if the server answered BAD to
/// them: a server can advertise OBJECTID or X-GM-EXT-1 and not know EMAILID or X-GM-MSGID
/// (Dovecot 2.3 told to advertise Yahoo's line does). The ids are then not used on that
/// connection (a message in two folders is two files), logged once per connection.
fn sync_with_ids_or_without(
    s: &mut Session,
    name: &MailboxName,
    base: Option<&Base>,
    known: &dyn Fn(Uid) -> bool,
) -> Result<Learned> {
    let ids = [Capability::GmExt, Capability::ObjectId];
    match sync_mailbox(s, name, base, known) {
        Err(e @ Error::Bad { .. }) if ids.iter().any(|c| s.supports(*c)) => {
            log::warn!(
                "{name}: the server refused the message ids it advertises ({e}); listing without them"
            );
            for cap in ids {
                s.withdraw(cap);
            }
            sync_mailbox(s, name, base, known)
        }
        other => other,
    }
}

/// Bring what `base` describes up to date on session `s`: a [`Learned::Delta`] in one round
/// trip where the server allows, a [`Learned::Full`] listing otherwise.
///
/// Every UID the server reports that `known` lacks is listed on the same session before this
/// returns (its view includes them: it has just EXAMINEd), so a delta never names a message
/// the index cannot hold.
pub(crate) fn sync_mailbox(
    s: &mut Session,
    name: &MailboxName,
    base: Option<&Base>,
    known: &dyn Fn(Uid) -> bool,
) -> Result<Learned> {
    let Some(base) = base else {
        return fetch_index(s, name).map(Learned::Full);
    };
    let condstore = s.supports(Capability::CondStore);
    let modseq = base.highest_modseq.filter(|_| condstore);
    let qresync = modseq.filter(|_| s.is_enabled("QRESYNC"));
    let new_ones = Command::Fetch {
        uid: true,
        set: SequenceSet::from(base.uidnext.map_or(1, Uid::get)),
        attrs: listing_attrs(s),
        changed_since: None,
    };
    let (sync, extra) = match (qresync, modseq) {
        (Some(m), _) => (
            SelectSync::QResync(QResync {
                uidvalidity: base.validity,
                modseq: m,
                known_uids: None,
                seq_match: None,
            }),
            vec![new_ones],
        ),
        (None, Some(m)) => {
            let ret = if s.supports(Capability::Esearch) {
                vec![SearchReturn::All]
            } else {
                Vec::new()
            };
            let changed = Command::Fetch {
                uid: true,
                set: SequenceSet::from(1),
                attrs: vec![FetchAttr::Uid, FetchAttr::Flags, FetchAttr::ModSeq],
                changed_since: Some(m),
            };
            let all = Command::Search {
                uid: true,
                criteria: vec![SearchKey::All],
                ret,
                utf8: false,
            };
            (SelectSync::CondStore, vec![new_ones, changed, all])
        }
        (None, None) => {
            let flags = Command::Fetch {
                uid: true,
                set: SequenceSet::from(1),
                attrs: vec![FetchAttr::Uid, FetchAttr::Flags],
                changed_since: None,
            };
            (s.select_sync(), vec![new_ones, flags])
        }
    };
    let mut extra = extra;
    if !base.check.is_empty() {
        extra.push(Command::Fetch {
            uid: true,
            set: SequenceSet::from_numbers(base.check.iter().map(|(u, _, _)| u.get())),
            attrs: listing_attrs(s),
            changed_since: None,
        });
    }
    let (selected, results) = s.select_with(name, true, sync, &extra)?;
    let (sel, validity) = s.just_selected(name)?;
    // A new generation, or a server that stopped keeping MODSEQs for it: the reply says
    // nothing reliable about changes. List it whole.
    if validity != base.validity || (modseq.is_some() && sel.highest_modseq.is_none()) {
        if validity != base.validity {
            log::info!("{name}: UIDVALIDITY {} -> {validity}", base.validity);
        }
        return fetch_index(s, name).map(Learned::Full);
    }
    let (exists, sel_highest, sel_uidnext) = (sel.exists, sel.highest_modseq, sel.uidnext);
    let mut delta = Delta {
        uidnext: sel.uidnext,
        highest_modseq: sel.highest_modseq,
        permanent_flags: sel.permanent_flags.clone(),
        ..Delta::default()
    };
    let mut untagged = selected.untagged;
    for r in results {
        match r {
            Ok(done) => untagged.extend(done.untagged),
            // `UID FETCH n:*` and `UID SEARCH` in an empty mailbox: some servers say BAD/NO.
            Err(Error::Bad { .. } | Error::No { .. }) if exists == 0 => {}
            // A server that knows only the plain listing: take that.
            Err(e @ (Error::Bad { .. } | Error::No { .. })) => {
                log::debug!("{name}: incremental refresh refused ({e}); listing it whole");
                return fetch_index(s, name).map(Learned::Full);
            }
            Err(e) => return Err(e),
        }
    }
    let asked_present = qresync.is_none();
    let mut present = BTreeSet::new();
    absorb(&mut delta, &mut present, untagged, modseq.is_none());
    if asked_present {
        present.extend(delta.listed.keys().copied());
        delta.present = Some(present.clone());
    }
    let unknown: Vec<u32> = delta
        .flags
        .iter()
        .map(|(u, _, _)| *u)
        .chain(present.iter().copied())
        .filter(|u| !delta.listed.contains_key(u) && !known(*u))
        .map(Uid::get)
        .collect();
    if !unknown.is_empty() {
        log::debug!("{name}: listing {} messages the index lacks", unknown.len());
        let attrs = listing_attrs(s);
        let done = s.run(Command::Fetch {
            uid: true,
            set: SequenceSet::from_numbers(unknown),
            attrs,
            changed_since: None,
        })?;
        let mut more = BTreeSet::new();
        absorb(&mut delta, &mut more, done.untagged, false);
    }
    if !verify::matches(name, base, &delta, sel_highest, sel_uidnext) {
        return fetch_index(s, name).map(Learned::Replaced);
    }
    Ok(Learned::Delta(delta))
}

/// Take a refresh's untagged responses into `delta`; with `all_flags`, a FETCH of flags
/// alone also says the message is there (`present`).
fn absorb(
    delta: &mut Delta,
    present: &mut BTreeSet<Uid>,
    untagged: Vec<Untagged>,
    all_flags: bool,
) {
    for u in untagged {
        match u {
            Untagged::Vanished { uids, .. } => delta.vanished.extend(uids.0),
            Untagged::Search { nums, .. } => present.extend(nums.into_iter().filter_map(Uid::new)),
            Untagged::ESearch(e) => {
                if let Some(all) = e.all {
                    let max = delta.uidnext.map_or(u32::MAX - 1, |n| n.get());
                    present.extend(all.iter_capped(max, usize::MAX).filter_map(Uid::new));
                }
            }
            Untagged::Fetch { items, .. } => match parse_fetch(items) {
                Some(Parsed::Listed(uid, meta)) => {
                    delta.listed.insert(uid, meta);
                }
                Some(Parsed::Flags(uid, flags, m)) => {
                    if all_flags {
                        // The flags of every message: also the list of what is there.
                        present.insert(uid);
                    }
                    delta.flags.push((uid, flags, m));
                }
                None => {}
            },
            _ => {}
        }
    }
}

/// One FETCH response of a listing or a change report.
enum Parsed {
    /// A listing entry: the whole metadata.
    Listed(Uid, MessageMeta),
    /// Flags only (a change report, or an unsolicited update).
    Flags(Uid, Vec<Flag>, Option<ModSeq>),
}

fn parse_fetch(items: Vec<FetchItem>) -> Option<Parsed> {
    let (mut uid, mut size, mut date, mut flags, mut modseq) = (None, None, None, None, None);
    let (mut message, mut thread) = (None, None);
    for item in items {
        match item {
            FetchItem::GmMsgId(n) => message = Some(ObjectId::Gmail(n)),
            FetchItem::GmThrId(n) => thread = Some(ObjectId::Gmail(n)),
            // NIL (no id for this message) comes as an empty string.
            FetchItem::EmailId(s) if !s.is_empty() => {
                message = Some(ObjectId::Rfc8474(s.into_boxed_str()))
            }
            FetchItem::ThreadId(s) if !s.is_empty() => {
                thread = Some(ObjectId::Rfc8474(s.into_boxed_str()))
            }
            FetchItem::Uid(u) => uid = Some(u),
            FetchItem::Rfc822Size(n) => size = Some(n),
            FetchItem::InternalDate(d) => date = Some(d),
            FetchItem::Flags(f) => flags = Some(without_recent(f)),
            FetchItem::ModSeq(m) => modseq = Some(m),
            _ => {}
        }
    }
    let uid = uid?;
    match size {
        Some(size) => Some(Parsed::Listed(
            uid,
            MessageMeta {
                listed_size: size,
                body_len: None,
                internal_date: date.unwrap_or(0),
                flags: flags.unwrap_or_default().into(),
                modseq,
                ids: message.map(|message| std::sync::Arc::new(ObjectIds { message, thread })),
            },
        )),
        None => Some(Parsed::Flags(uid, flags?, modseq)),
    }
}

/// The listing entries among untagged responses (unsolicited flag updates are not).
pub(crate) fn parse_listing(untagged: Vec<Untagged>) -> BTreeMap<Uid, MessageMeta> {
    let mut messages = BTreeMap::new();
    for u in untagged {
        if let Untagged::Fetch { items, .. } = u {
            if let Some(Parsed::Listed(uid, meta)) = parse_fetch(items) {
                messages.insert(uid, meta);
            }
        }
    }
    messages
}

/// The most messages a listing may hold: a sanity cap far above any real folder (Gmail's All
/// Mail holds a few million at most), so that a server that never stops sending FETCH
/// responses cannot grow the index without end.
pub(crate) const MAX_LISTING: usize = 50_000_000;

/// EXAMINE a mailbox and list its messages' metadata in one FETCH, each response put into
/// the index as it is decoded (a listing is never held whole as responses).
pub(crate) fn fetch_index(s: &mut Session, name: &MailboxName) -> Result<Index> {
    let list = Command::Fetch {
        uid: true,
        set: SequenceSet::from(1),
        attrs: listing_attrs(s),
        changed_since: None,
    };
    // Packed as it comes (`UidMap`): a listing's UIDs come ascending.
    let mut messages = UidMap::new();
    let mut over = false;
    let mut take = |u: Untagged| {
        if let Untagged::Fetch { items, .. } = u {
            if let Some(Parsed::Listed(uid, meta)) = parse_fetch(items) {
                if messages.len() < MAX_LISTING {
                    messages.insert(uid, meta);
                } else {
                    over = true;
                }
            }
        }
    };
    let listed = s.reselect_each(name, true, &list, &mut take)?;
    let done: Option<Completed> = match listed {
        Ok(done) => Some(done),
        // `UID FETCH 1:*` in an empty mailbox: some servers answer BAD or NO.
        Err(Error::Bad { .. } | Error::No { .. })
            if s.just_selected(name).is_ok_and(|(sel, _)| sel.exists == 0) =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    for u in done.map(|d| d.untagged).unwrap_or_default() {
        take(u);
    }
    if over {
        return Err(Error::TooManyMessages { limit: MAX_LISTING });
    }
    let (sel, validity) = s.just_selected(name)?;
    Ok(Index::listed(
        validity,
        sel.uidnext,
        sel.highest_modseq,
        sel.permanent_flags.clone(),
        messages,
    ))
}

#[cfg(test)]
mod tests;
