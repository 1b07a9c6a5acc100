//! Server-side search: `UID SEARCH` over one mailbox or all of them.
//!
//! Criteria arrive as [`SearchKey`] values (parsed from user text by
//! [`crate::imap::codec::parse_criteria`]); the encoder sends every string as an AString,
//! adds `CHARSET UTF-8` when one is not ASCII (unless UTF8=ACCEPT is on), and asks for
//! `ESEARCH` (`RETURN (ALL)`, a compact UID set) where the server offers it.
//!
//! The SEARCH is pipelined behind a fresh EXAMINE, so one round trip answers it and the
//! server's view is current (a session that selected the mailbox long ago would not see
//! messages other clients added since). The hits are UIDs of the generation the EXAMINE
//! reported; if some are not in our index yet, or the generation is not the one we hold, the
//! index is refreshed before the hits are returned, so every hit names a message the
//! filesystem can show. A search the server rejects (BAD, `[BADCHARSET]`) is invalid input,
//! not an I/O error.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, SearchKey, SearchReturn};
use crate::imap::pool::Retry;
use crate::imap::session::Capability;
use crate::imap::types::{Code, Uid, UidValidity, Untagged};
use crate::store::ids::MailboxId;
use crate::store::index::UidMap;
use crate::store::Account;

/// Most UIDs taken from one answer (a hostile server cannot make us hold more).
const MAX_HITS: usize = 10_000_000;

/// The messages of one mailbox generation that match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHits {
    pub mailbox: MailboxId,
    pub validity: UidValidity,
    /// Ascending, each in the mailbox's index when returned.
    pub uids: Vec<Uid>,
}

impl Account {
    /// `UID SEARCH criteria` in one mailbox.
    pub fn search(&self, mailbox: MailboxId, criteria: &[SearchKey]) -> Result<SearchHits> {
        let name = self.require_name(mailbox)?;
        self.searches.fetch_add(1, Ordering::Relaxed);
        let (validity, mut uids) = self
            .pool
            .with_session(Some(&name), Retry::Idempotent, |s| {
                let esearch = s.supports(Capability::Esearch);
                if !s.supports(Capability::GmExt) && criteria.iter().any(SearchKey::uses_gmail) {
                    return Err(Error::Unsupported(
                        "X-GM-RAW: the server has no X-GM-EXT-1 (Gmail)".into(),
                    ));
                }
                let cmd = Command::Search {
                    uid: true,
                    criteria: criteria.to_vec(),
                    ret: if esearch {
                        vec![SearchReturn::All]
                    } else {
                        Vec::new()
                    },
                    utf8: s.utf8(),
                };
                let done = s
                    .reselect_then(&name, true, Some(cmd))?
                    .ok_or(Error::Internal("a pipeline without a reply to its SEARCH"))?;
                let (_, validity) = s.just_selected(&name)?;
                Ok((validity, hits(done.map_err(refused)?.untagged)))
            })?;
        uids.sort_unstable();
        uids.dedup();
        let known = |uids: &[Uid]| {
            self.cached_index(mailbox).is_some_and(|ix| {
                let ix = ix.read();
                ix.validity() == validity && all_known(ix.messages(), uids)
            })
        };
        if !known(&uids) {
            // New mail since our listing, or a new generation: list again first.
            let index = self.index(mailbox, Duration::ZERO)?;
            let ix = index.read();
            if ix.validity() != validity {
                return Err(Error::NoMailbox(format!(
                    "{name} changed generation during the search"
                )));
            }
            uids.retain(|u| ix.messages().contains_key(u));
        }
        Ok(SearchHits {
            mailbox,
            validity,
            uids,
        })
    }

    /// Searches run so far (for the mount's statistics).
    pub fn searches_run(&self) -> u64 {
        self.searches.load(Ordering::Relaxed)
    }
}

/// Whether every UID of `uids` (ascending, distinct) is a key of `messages`: one lookup each
/// when they are few, else one walk of the index alongside them (half of 1,000,000 messages
/// is 500,000 tree descents otherwise).
fn all_known<V>(messages: &UidMap<V>, uids: &[Uid]) -> bool {
    let (Some(&first), Some(&last)) = (uids.first(), uids.last()) else {
        return true;
    };
    if uids.len().saturating_mul(8) < messages.len() {
        return uids.iter().all(|u| messages.contains_key(u));
    }
    let mut keys = messages.range(first..=last).map(|(k, _)| *k);
    uids.iter().all(|&u| keys.find(|&k| k >= u) == Some(u))
}

/// The UIDs of `* SEARCH` and `* ESEARCH ... UID ALL` answers.
fn hits(untagged: Vec<Untagged>) -> Vec<Uid> {
    let mut out = Vec::new();
    for u in untagged {
        match u {
            Untagged::Search { nums, .. } => out.extend(nums.into_iter().filter_map(Uid::new)),
            // Only UID SEARCH is sent, so the numbers are UIDs even if `UID` is missing.
            Untagged::ESearch(e) => {
                if let Some(all) = e.all {
                    out.extend(all.iter_capped(u32::MAX - 1, MAX_HITS).filter_map(Uid::new));
                }
            }
            _ => {}
        }
        if out.len() > MAX_HITS {
            out.truncate(MAX_HITS);
            break;
        }
    }
    out
}

/// A search the server refused is invalid criteria (EINVAL), with the server's reason.
fn refused(e: Error) -> Error {
    let clean = |t: &str| t.chars().filter(|c| !c.is_control()).collect::<String>();
    match e {
        Error::Bad { text, .. } => Error::InvalidInput(format!(
            "the server rejected the search: {}",
            clean(&text.text)
        )),
        Error::No { text, .. } if matches!(text.code, Some(Code::BadCharset(_))) => {
            Error::InvalidInput(format!(
                "the server cannot search in UTF-8: {}",
                clean(&text.text)
            ))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_known_by_lookup_and_by_walk() {
        let uid = |n: u32| Uid::new(n).unwrap();
        let index: UidMap<()> = (1..=100)
            .filter(|n| n % 10 != 0)
            .map(|n| (uid(n), ()))
            .collect();
        let check =
            |hits: &[u32]| all_known(&index, &hits.iter().map(|&n| uid(n)).collect::<Vec<_>>());
        // Few hits: lookups; many: the walk. Both must agree.
        assert!(check(&[]));
        assert!(check(&[1, 55]));
        assert!(!check(&[1, 50]));
        assert!(!check(&[101]));
        let many: Vec<u32> = (1..=100).filter(|n| n % 10 != 0).collect();
        assert!(check(&many));
        assert!(check(&many[3..60]));
        let mut gap = many.clone();
        gap.push(120);
        assert!(!check(&gap));
        let mut missing = many.clone();
        missing[40] = 50;
        missing.sort_unstable();
        missing.dedup();
        assert!(!check(&missing));
    }
}
