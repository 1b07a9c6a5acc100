//! Proof that a cut APPEND or COPY happened, or did not.
//!
//! When the connection breaks before the server's answer to an APPEND or COPY, the store
//! looks in the target on a new connection. A message with the same Message-ID proves
//! nothing (an older copy of the same mail may be there), so a message counts as the one we
//! sent only if all of these hold ([`Account::prove_stored`]):
//!
//! - its UID is at or above a *floor*: the target's UIDNEXT from before the command
//!   (STATUS pipelined with the APPEND), or, when that answer was lost too, the UIDNEXT our
//!   index of the target knew (older, so lower: still below every message we sent since);
//! - its size (RFC822.SIZE) is the size we sent;
//! - the SHA-256 of its whole body (fetched in blocks, never held whole) is the digest of
//!   the bytes we sent; candidates are found by Message-ID, or by UID above the floor.
//!
//! The answer is a [`Proof`]: `Stored` (that UID), `Absent` (no message anywhere in the
//! target has those bytes, or none at or above the floor does: sending again cannot make a
//! second copy of ours), or `Unsure` (a message with exactly those bytes exists but there is
//! no floor to tell whether it is ours). Callers treat `Unsure` as an error and never as a
//! success: the user gets EIO, and for a move the source stays.

use ring::digest::{Context, Digest, SHA256};

use crate::error::Result;
use crate::imap::codec::{Command, FetchAttr, SearchKey};
use crate::imap::pool::Retry;
use crate::imap::session::Session;
use crate::imap::types::{
    fetch_uid, FetchItem, MailboxName, SequenceSet, Uid, UidValidity, Untagged,
};
use crate::store::ids::MailboxId;
use crate::store::Account;

/// The message we are looking for.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    /// Its length on the wire (CRLF line ends): RFC822.SIZE.
    pub size: u64,
    /// SHA-256 of those bytes.
    pub digest: Vec<u8>,
    pub message_id: Option<String>,
}

/// What the target says about a message we may have sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proof {
    Stored(UidValidity, Uid),
    Absent,
    Unsure,
}

/// How long after a cut a command's absence is looked for once more (see
/// [`Account::prove_stored_after_cut`]).
pub(crate) const CUT_SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Blocks in which a candidate's body is fetched to compute its digest.
const DIGEST_BLOCK: u32 = 1 << 20;

impl Account {
    /// Look in `name` for the message `wanted` sent with UIDs at or above `floor` (at its
    /// UIDVALIDITY). Read-only: EXAMINE, SEARCH, FETCH.
    pub(super) fn prove_stored(
        &self,
        name: &MailboxName,
        wanted: &Wanted,
        floor: Option<(UidValidity, Uid)>,
    ) -> Result<Proof> {
        self.pool.with_session(Some(name), Retry::Idempotent, |s| {
            let Some(validity) = s.reselect(name, true)?.uidvalidity else {
                return Ok(Proof::Unsure);
            };
            // A floor of another UIDVALIDITY says nothing about this mailbox.
            let floor = floor.filter(|(v, _)| *v == validity).map(|(_, u)| u);
            let criteria = match (&wanted.message_id, floor) {
                (Some(mid), _) => SearchKey::Header {
                    field: b"Message-ID".to_vec(),
                    value: mid.as_bytes().to_vec(),
                },
                (None, Some(f)) => SearchKey::Uid(SequenceSet::from(f.get())),
                (None, None) => return Ok(Proof::Unsure),
            };
            let done = s.run(Command::Search {
                uid: true,
                criteria: vec![criteria],
                ret: Vec::new(),
                utf8: false,
            })?;
            let mut candidates: Vec<Uid> = done
                .untagged
                .iter()
                .flat_map(|u| match u {
                    Untagged::Search { nums, .. } => nums.clone(),
                    _ => Vec::new(),
                })
                .filter_map(Uid::new)
                .collect();
            candidates.sort();
            candidates.dedup();
            let mut matching = Vec::new();
            let sized = sizes(s, &candidates)?;
            // A candidate the server found but then sent no size or bytes for may be ours: its
            // silence is no proof of absence (sending again could store a second copy).
            let mut unknown = candidates
                .iter()
                .any(|c| !sized.iter().any(|(u, _)| u == c));
            for (uid, size) in sized {
                if size != wanted.size {
                    continue;
                }
                match body_digest(s, uid, size)? {
                    Some(d) if d.as_ref() == wanted.digest => matching.push(uid),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            if unknown && floor.is_none_or(|f| matching.iter().all(|u| *u < f)) {
                return Ok(Proof::Unsure);
            }
            Ok(match floor {
                Some(f) => match matching.into_iter().find(|u| *u >= f) {
                    Some(u) => Proof::Stored(validity, u),
                    None => Proof::Absent,
                },
                None if matching.is_empty() => Proof::Absent,
                None => Proof::Unsure,
            })
        })
    }

    /// [`Account::prove_stored`] after the connection broke under the command: the server's
    /// half of the dead connection may still be running it (Dovecot finishes a command whose
    /// bytes it has, then notices the close; on a loaded machine a cut APPEND was stored
    /// after a first check had found nothing, and sending it again made two copies). So
    /// `Absent` counts only when a second look, [`CUT_SETTLE`] later, agrees. A heuristic
    /// window, not a proof: no IMAP command tells when another connection's command ended.
    pub(super) fn prove_stored_after_cut(
        &self,
        name: &MailboxName,
        wanted: &Wanted,
        floor: Option<(UidValidity, Uid)>,
    ) -> Result<Proof> {
        match self.prove_stored(name, wanted, floor)? {
            Proof::Absent => {
                std::thread::sleep(CUT_SETTLE);
                self.prove_stored(name, wanted, floor)
            }
            other => Ok(other),
        }
    }

    /// The lowest UID a message added to `mailbox` from now on can have, as far as our index
    /// knows (its UIDNEXT, else one past its highest UID): a floor that is never above the
    /// server's UIDNEXT, since UIDs only grow at one UIDVALIDITY.
    pub(super) fn index_floor(&self, mailbox: MailboxId) -> Option<(UidValidity, Uid)> {
        let ix = self.indexes.get(mailbox)?;
        let ix = ix.read();
        let next = ix.uidnext().or_else(|| {
            let last = ix.messages().keys().next_back()?;
            Uid::new(last.get().saturating_add(1))
        })?;
        Some((ix.validity(), next))
    }

    /// Size and digest of messages of the mailbox `s` has selected (rare path: a cut COPY).
    pub(super) fn fingerprints(s: &mut Session, uids: &[Uid]) -> Result<Vec<(Uid, u64, Vec<u8>)>> {
        let mut out = Vec::new();
        for (uid, size) in sizes(s, uids)? {
            // Bytes that did not come back: no fingerprint (the caller keeps the source).
            if let Some(d) = body_digest(s, uid, size)? {
                out.push((uid, size, d.as_ref().to_vec()));
            }
        }
        Ok(out)
    }
}

/// SHA-256 of a byte stream, as [`Wanted::digest`] holds it.
pub(super) fn digest_context() -> Context {
    Context::new(&SHA256)
}

/// RFC822.SIZE of `uids` in the selected mailbox (those that exist).
fn sizes(s: &mut Session, uids: &[Uid]) -> Result<Vec<(Uid, u64)>> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let done = s.run(Command::Fetch {
        uid: true,
        set: SequenceSet::from_numbers(uids.iter().map(|u| u.get())),
        attrs: vec![FetchAttr::Uid, FetchAttr::Rfc822Size],
        changed_since: None,
    })?;
    let mut out: Vec<(Uid, u64)> = done
        .untagged
        .iter()
        .filter_map(|u| match u {
            Untagged::Fetch { items, .. } => {
                let uid = fetch_uid(items)?;
                let size = items.iter().find_map(|i| match i {
                    FetchItem::Rfc822Size(n) => Some(*n),
                    _ => None,
                })?;
                Some((uid, size))
            }
            _ => None,
        })
        .filter(|(u, _)| uids.contains(u))
        .collect();
    out.sort();
    out.dedup_by_key(|(u, _)| *u);
    Ok(out)
}

/// SHA-256 of a message's whole body of `size` bytes (its RFC822.SIZE), fetched block by
/// block; `None` if a block before the end did not come back (the server left the data out:
/// the digest of the rest would match nothing, and "matches nothing" must not read as
/// "absent"). A body shorter than its size ends the digest early (it then matches nothing,
/// rightly: those are not the bytes we sent).
fn body_digest(s: &mut Session, uid: Uid, size: u64) -> Result<Option<Digest>> {
    let mut ctx = digest_context();
    let mut pos = 0u64;
    while pos < size {
        let done = s.run(Command::Fetch {
            uid: true,
            set: SequenceSet::single(uid.get()),
            attrs: vec![FetchAttr::BodyPeek {
                section: String::new(),
                partial: Some((pos, DIGEST_BLOCK)),
            }],
            changed_since: None,
        })?;
        let data = done.untagged.into_iter().find_map(|u| match u {
            Untagged::Fetch { items, .. } => items.into_iter().find_map(|i| match i {
                FetchItem::Body { data: Some(d), .. } => Some(d),
                _ => None,
            }),
            _ => None,
        });
        let Some(data) = data else {
            return Ok(None);
        };
        ctx.update(&data);
        pos += data.len() as u64;
        if data.len() < DIGEST_BLOCK as usize {
            break;
        }
    }
    Ok(Some(ctx.finish()))
}
