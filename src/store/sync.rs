//! Keeping indexes current: listing a mailbox and refreshing what we hold.
//!
//! A refresh EXAMINEs the mailbox afresh (a NOOP on an old selection would not reveal that
//! the mailbox was deleted and recreated under a new UIDVALIDITY) with the metadata FETCH
//! pipelined behind it: one round trip. The new listing replaces the old one in place,
//! keeping the body lengths learned by reading; the differences go to the change feed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::Retry;
use crate::imap::session::Session;
use crate::imap::types::{FetchItem, MailboxName, SequenceSet, Untagged};
use crate::store::changes::Change;
use crate::store::ids::MailboxId;
use crate::store::index::{Index, MessageMeta, SharedIndex};
use crate::store::Account;

impl Account {
    /// The index of a mailbox, refreshed from the server if older than `max_age`.
    pub fn index(&self, id: MailboxId, max_age: Duration) -> Result<SharedIndex> {
        let fresh = || {
            self.indexes
                .get(id)
                .filter(|ix| ix.read().fetched_at.elapsed() < max_age)
        };
        if let Some(ix) = fresh() {
            return Ok(ix);
        }
        // One refresh per mailbox at a time: the others wait and take its result.
        let _turn = self.refresh_turns[id.get() as usize % self.refresh_turns.len()].lock();
        if let Some(ix) = fresh() {
            return Ok(ix);
        }
        self.refresh(id)
    }

    /// The index we have, however old, without asking the server.
    pub fn cached_index(&self, id: MailboxId) -> Option<SharedIndex> {
        self.indexes.get(id)
    }

    fn refresh(&self, id: MailboxId) -> Result<SharedIndex> {
        let name = self.require_name(id)?;
        let condstore = std::cell::Cell::new(false);
        let index = self
            .pool
            .with_session(Some(&name), Retry::Idempotent, |s| {
                condstore.set(s.has_capability("CONDSTORE"));
                fetch_index(s, &name, condstore.get())
            })?;
        let (shared, changes) = self.indexes.install(id, index);
        for c in &changes {
            if let Change::Reset { .. } = c {
                log::warn!("UIDVALIDITY of {name} changed: dropping its cached content");
                self.reading.blocks.forget_mailbox(id);
            }
        }
        self.changes.send(changes);
        Ok(shared)
    }

    /// Drop everything held about a mailbox (deleted or renamed away).
    pub(crate) fn forget_mailbox_content(&self, id: MailboxId) {
        self.indexes.remove(id);
        self.reading.blocks.forget_mailbox(id);
    }
}

/// EXAMINE a mailbox and list its messages' metadata in one FETCH.
pub(crate) fn fetch_index(s: &mut Session, name: &MailboxName, condstore: bool) -> Result<Index> {
    let mut attrs = vec![
        FetchAttr::Uid,
        FetchAttr::Flags,
        FetchAttr::Rfc822Size,
        FetchAttr::InternalDate,
    ];
    if condstore {
        attrs.push(FetchAttr::ModSeq);
    }
    let list = Command::Fetch {
        uid: true,
        set: SequenceSet::from(1),
        attrs,
        changed_since: None,
    };
    let listed = s.reselect_then(name, true, Some(list))?;
    let sel = s
        .selected()
        .ok_or_else(|| Error::Protocol("mailbox not selected".into()))?;
    let validity = sel
        .uidvalidity
        .ok_or_else(|| Error::Protocol(format!("no UIDVALIDITY for {name}")))?;
    let (uidnext, exists, highest_modseq) = (sel.uidnext, sel.exists, sel.highest_modseq);
    let permanent_flags = sel.permanent_flags.clone();
    let done = match listed {
        Some(Ok(done)) => Some(done),
        // `UID FETCH 1:*` in an empty mailbox: some servers answer BAD or NO.
        Some(Err(Error::Bad { .. } | Error::No { .. })) if exists == 0 => None,
        Some(Err(e)) => return Err(e),
        None => return Err(Error::Protocol("no reply to the listing FETCH".into())),
    };
    let mut messages = BTreeMap::new();
    for u in done.map(|d| d.untagged).unwrap_or_default() {
        let Untagged::Fetch { items, .. } = u else {
            continue;
        };
        let (mut uid, mut size, mut date, mut flags, mut modseq) = (None, None, None, None, None);
        for item in items {
            match item {
                FetchItem::Uid(u) => uid = Some(u),
                FetchItem::Rfc822Size(n) => size = Some(n),
                FetchItem::InternalDate(d) => date = Some(d),
                FetchItem::Flags(f) => flags = Some(f),
                FetchItem::ModSeq(m) => modseq = Some(m),
                _ => {}
            }
        }
        // An unsolicited FETCH (flags only) is not a listing entry.
        let (Some(uid), Some(size)) = (uid, size) else {
            continue;
        };
        messages.insert(
            uid,
            MessageMeta {
                listed_size: size,
                body_len: None,
                internal_date: date.unwrap_or(0),
                flags: flags.unwrap_or_default(),
                modseq,
            },
        );
    }
    Ok(Index {
        validity,
        uidnext,
        highest_modseq,
        permanent_flags,
        messages,
        fetched_at: Instant::now(),
    })
}
