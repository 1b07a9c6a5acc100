//! Prefetch for offline use: the bodies of chosen folders (`prefetch=INBOX,Work/*` or `all`)
//! downloaded into the disk body cache in the background, so that they can be read when the
//! server cannot be reached.
//!
//! One thread ([`Account::start_prefetch`]) makes passes. A pass lists the matching folders
//! (their indexes refreshed at most once a [`RELIST_EVERY`], without making them the folder
//! in use that the watcher follows), counts their messages (`prefetch_total`) and those
//! whose every block is on disk already (`prefetch_done`: skipped), and fetches the rest,
//! folder by folder in UID order: messages up to one block whole, several to a `UID FETCH`,
//! bigger ones block by block (`BODY.PEEK[]<offset.block>`, only the blocks missing). What
//! arrives goes through the stream's landing ([`super::stream`]) into both cache levels.
//!
//! Low priority:
//! - **One connection at most**: each batch borrows one pool session for one round trip
//!   ([`BATCH_BYTES`], [`BATCH_MESSAGES`]), so a user request waits at most for one batch,
//!   and the pool's `--connections` bound holds.
//! - **Yields to users**: before each batch the thread waits while anyone else used the
//!   server or the cache within the last [`QUIET`] (the pool's round trips not its own: reads,
//!   listings, streams; the block cache's lookups: reads served from memory or disk) or every
//!   pool connection is in use.
//! - **Daily budget**: a batch is sent only if the account's bytes downloaded today
//!   ([`super::daily`], every mount's, reads included) plus the batch's size stay within
//!   `prefetch_budget`; otherwise the pass stops (`prefetch=budget`) until the next UTC day.
//! - **Offline**: passes wait while the server cannot be reached or the mount is resyncing
//!   (`prefetch=offline`); a batch the outage interrupts is tried again after.
//! - **Disk bound**: a pass stops when the chosen folders' bytes on disk would pass 80% of
//!   `--disk-cache-size` (`prefetch=full`): past that it would evict what it just fetched, and
//!   every later pass would fetch it again.
//!
//! A message in several folders (Gmail's labels, RFC 8474 EMAILID) is fetched through the
//! first folder of the pass that has it, and not at all where its body is at hand under
//! another copy ([`Account::body_elsewhere`]): reads through any copy find it there.
//!
//! After a complete pass (`prefetch=done`) the thread makes another after [`RELIST_EVERY`],
//! or sooner (at most every [`EARLY_GAP`]) when the change feed moved (the watcher heard of
//! new mail), which fetches what arrived meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::Retry;
use crate::imap::session::{Access, Session};
use crate::imap::types::{FetchItem, MailboxName, SequenceSet, Uid, UidValidity, Untagged};
use crate::store::blocks::BlockKey;
use crate::store::daily::utc_day;
use crate::store::ids::MailboxId;
use crate::store::refetch::Fetcher;
use crate::store::{Account, MailboxInfo, ObjectId};

/// Most body bytes one batch asks for (one round trip that a user request may wait behind).
const BATCH_BYTES: u64 = 2 << 20;
/// Most messages one batch asks for.
const BATCH_MESSAGES: usize = 64;
/// The filesystem read nothing for this long: the prefetch may send a batch.
const QUIET: Duration = Duration::from_millis(200);
/// How often a finished prefetch looks for new messages (and refreshes the folders' indexes).
pub const RELIST_EVERY: Duration = Duration::from_secs(60);
/// Allowance per message for the FETCH response around its bytes, in the budget check.
const FRAMING: u64 = 128;
/// Shortest time between the start of a completed pass and one started early because the
/// watcher heard of changes (new mail).
const EARLY_GAP: Duration = Duration::from_secs(5);
/// Longest wait between two looks at the stop flag.
const POLL: Duration = Duration::from_millis(500);

/// What to prefetch and how much a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchOptions {
    pub folders: FolderPatterns,
    /// Most bytes the account downloads in a UTC day for prefetching to go on.
    pub budget: u64,
}

/// Default `prefetch_budget`: a fifth of Gmail's 2,500 MB daily cap.
pub const DEFAULT_BUDGET: u64 = 500 << 20;

/// Folder names with `*` wildcards, or every folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderPatterns(Vec<String>);

impl FolderPatterns {
    /// Parse `prefetch=` items: folder names as in the mount (`Work/Projects`) or as the
    /// server names them, `*` matching any run of characters (`/` included), or `all`.
    pub fn parse<'a>(
        items: impl IntoIterator<Item = &'a str>,
    ) -> std::result::Result<Self, String> {
        let mut patterns = Vec::new();
        for item in items {
            let p = item.trim().trim_matches('/');
            if p.is_empty() {
                return Err("needs folder names (INBOX,Work/*) or all".into());
            }
            if p.chars().any(char::is_control) {
                return Err("a folder name with a control character".into());
            }
            if p.eq_ignore_ascii_case("all") {
                patterns.push("*".to_string());
            } else {
                patterns.push(p.to_string());
            }
        }
        if patterns.is_empty() {
            return Err("needs folder names (INBOX,Work/*) or all".into());
        }
        Ok(FolderPatterns(patterns))
    }

    /// Whether a folder is chosen: its path in the mount (delimiter shown as `/`) or its
    /// server name matches a pattern (`INBOX` in any case).
    pub fn matches(&self, folder: &MailboxInfo) -> bool {
        let name = folder.name.as_str();
        let path = match folder.delimiter {
            Some(d) if d != '/' => name.replace(d, "/"),
            _ => name.to_string(),
        };
        self.0.iter().any(|p| {
            [name, path.as_str()].iter().any(|n| {
                glob(p.as_bytes(), n.as_bytes())
                    || (p.eq_ignore_ascii_case("INBOX") && n.eq_ignore_ascii_case("INBOX"))
            })
        })
    }
}

/// `*` matches any run of bytes; everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// The prefetch's progress, for `user.imapfs.stats`.
#[derive(Default)]
pub struct PrefetchState {
    stop: AtomicBool,
    /// Messages in the chosen folders, as of the current pass.
    total: AtomicU64,
    /// Of those, on disk.
    done: AtomicU64,
    /// Body bytes the prefetch downloaded in this mount.
    bytes: AtomicU64,
    /// Round trips the prefetch made (the pool's others are someone else's).
    own_trips: AtomicU64,
    phase: Mutex<Phase>,
}

/// What the prefetch thread is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Off,
    Running,
    Done,
    Budget,
    Offline,
    Full,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Off => "off",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Budget => "budget",
            Phase::Offline => "offline",
            Phase::Full => "full",
        }
    }
}

/// A message to fetch: whole, or the blocks listed.
struct Want {
    uid: Uid,
    /// Blocks missing (all of them for a message up to one block).
    blocks: Vec<u64>,
    whole: bool,
    cost: u64,
}

/// How a pass ended.
enum PassEnd {
    Done,
    Budget,
    Offline,
    Full,
    Stopped,
}

impl Account {
    /// Start the prefetch thread (once, after any fork), if `prefetch=` was given. Without a
    /// disk cache there is nowhere to keep what it would fetch: a warning, no thread.
    pub fn start_prefetch(self: &Arc<Account>) -> Result<()> {
        if self.opts.prefetch.is_none() {
            return Ok(());
        }
        if self.disk.is_none() {
            log::warn!("prefetch= needs the disk body cache (disk_cache_size above 0): off");
            return Ok(());
        }
        *self.prefetch.phase.lock() = Phase::Running;
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || run(weak))
            .map(drop)
            .map_err(|e| Error::io("starting the prefetch thread", e))
    }

    pub(crate) fn stop_prefetch(&self) {
        self.prefetch.stop.store(true, Relaxed);
    }

    /// `key=value` lines about the prefetch for `user.imapfs.stats`.
    pub fn prefetch_lines(&self) -> Vec<String> {
        let p = &self.prefetch;
        let mut lines = vec![format!("prefetch={}", p.phase.lock().as_str())];
        if let Some(o) = &self.opts.prefetch {
            lines.extend([
                format!("prefetch_done={}", p.done.load(Relaxed)),
                format!("prefetch_total={}", p.total.load(Relaxed)),
                format!("prefetch_bytes={}", p.bytes.load(Relaxed)),
                format!("prefetch_budget={}", o.budget),
            ]);
        }
        lines
    }

    fn set_phase(&self, phase: Phase) {
        let mut p = self.prefetch.phase.lock();
        if *p != phase {
            log::info!("prefetch: {}", phase.as_str());
            *p = phase;
        }
    }

    /// One pass over the chosen folders.
    fn prefetch_pass(&self, opts: &PrefetchOptions) -> Result<PassEnd> {
        let list = self.mailboxes(RELIST_EVERY)?;
        let chosen: Vec<&MailboxInfo> = list
            .iter()
            .filter(|m| !m.noselect && opts.folders.matches(m))
            .collect();
        // Count first, so that progress has its total from the start.
        let mut plans = Vec::new();
        let (mut total, mut done, mut held) = (0, 0, 0);
        // A message in several folders (Gmail labels, EMAILID) is fetched through one of them.
        let mut planned = HashSet::new();
        for folder in chosen {
            let id = self.mailbox_id(&folder.name);
            let ix = match self.index_unnoted(id, RELIST_EVERY) {
                Ok(ix) => ix,
                Err(e) if e.is_unreachable() || self.is_offline() => return Ok(PassEnd::Offline),
                Err(e) => {
                    log::info!("prefetch: listing {}: {e}", folder.name);
                    continue;
                }
            };
            // One read of the index for the plan and the counts, so that `wants` is a subset
            // of the messages counted (an expunge in between made `n - wants` underflow).
            let ix = ix.read();
            let (validity, wants) = self.missing(id, &ix, &mut planned);
            let n = ix.messages().len() as u64;
            let all: u64 = ix.messages().values().map(|m| m.size()).sum();
            held += all.saturating_sub(wants.iter().map(|w| w.cost).sum());
            total += n;
            done += n - wants.len() as u64;
            plans.push((folder.name.clone(), id, validity, wants));
        }
        let p = &self.prefetch;
        p.total.store(total, Relaxed);
        p.done.store(done, Relaxed);
        // The chosen folders' bytes on disk count too: a next pass must not evict the first
        // messages to fetch the last ones of a selection bigger than the cache.
        let bound = self.disk.as_ref().map_or(0, |d| d.bound());
        let disk_room = (bound / 10 * 8).saturating_sub(held);
        let mut fetched = 0;
        let mut seen = (self.others_activity(), Instant::now());
        for (name, id, validity, wants) in plans {
            let mut rest = &wants[..];
            while !rest.is_empty() {
                if p.stop.load(Relaxed) {
                    return Ok(PassEnd::Stopped);
                }
                if !self.is_writable() {
                    return Ok(PassEnd::Offline);
                }
                // The longest batch that keeps the day within the budget and the chosen
                // folders within their share of the disk.
                let budget_room = opts.budget.saturating_sub(self.bytes_today());
                let disk_left = disk_room.saturating_sub(fetched);
                let mut n = batch_len(rest);
                let cost = |n: usize| -> u64 { rest[..n].iter().map(|w| w.cost + FRAMING).sum() };
                while n > 0 && cost(n) > budget_room.min(disk_left) {
                    n -= 1;
                }
                if n == 0 {
                    let first = cost(1);
                    return Ok(if first > budget_room {
                        PassEnd::Budget
                    } else {
                        PassEnd::Full
                    });
                }
                self.yield_to_users(&mut seen);
                match self.prefetch_batch(&name, id, validity, &rest[..n]) {
                    Ok(bytes) => {
                        p.bytes.fetch_add(bytes, Relaxed);
                        fetched += bytes;
                    }
                    Err(e) if e.is_unreachable() || self.is_offline() => {
                        return Ok(PassEnd::Offline)
                    }
                    Err(e) => {
                        log::info!("prefetch: {name}: {e}");
                        break;
                    }
                }
                let landed = rest[..n]
                    .iter()
                    .filter(|w| self.all_on_disk(id, validity, w.uid))
                    .count();
                p.done.fetch_add(landed as u64, Relaxed);
                rest = &rest[n..];
            }
        }
        Ok(PassEnd::Done)
    }

    /// The messages of an index that are not wholly on disk, in UID order, but those whose
    /// body is at hand under another copy or that a copy in `planned` (object ids planned in
    /// this pass) brings.
    fn missing(
        &self,
        id: MailboxId,
        ix: &super::Index,
        planned: &mut HashSet<ObjectId>,
    ) -> (UidValidity, Vec<Want>) {
        let bs = self.opts.block_size;
        let validity = ix.validity();
        let mut wants = Vec::new();
        for (&uid, meta) in ix.messages() {
            if let Some(ids) = &meta.ids {
                let msg = super::MessageRef {
                    mailbox: id,
                    validity,
                    uid,
                };
                if !planned.insert(ids.message.clone()) || self.body_elsewhere(msg) {
                    continue;
                }
            }
            let size = meta.size();
            let n_blocks = size.div_ceil(bs).max(1);
            let key = |block| BlockKey {
                mailbox: id,
                validity,
                uid,
                block,
            };
            let blocks: Vec<u64> = (0..n_blocks).filter(|&b| !self.on_disk(&key(b))).collect();
            if blocks.is_empty() {
                continue;
            }
            let whole = n_blocks == 1;
            let cost = if whole {
                size
            } else {
                blocks.len() as u64 * bs
            };
            wants.push(Want {
                uid,
                blocks,
                whole,
                cost,
            });
        }
        (validity, wants)
    }

    fn all_on_disk(&self, id: MailboxId, validity: UidValidity, uid: Uid) -> bool {
        let Some(meta) = self.message_meta(super::MessageRef {
            mailbox: id,
            validity,
            uid,
        }) else {
            return false;
        };
        let bs = self.opts.block_size;
        (0..meta.size().div_ceil(bs).max(1)).all(|block| {
            self.on_disk(&BlockKey {
                mailbox: id,
                validity,
                uid,
                block,
            })
        })
    }

    /// Wait while others use the server or the cache: the pool's round trips other than the
    /// prefetch's own (listings, reads, streams; the watcher's connection is not the pool's)
    /// or the block cache's lookups (reads) moved within the last [`QUIET`], or every pool
    /// connection is in use. `seen`: that activity count as last looked at, and when it last
    /// moved (kept across batches).
    fn yield_to_users(&self, seen: &mut (u64, Instant)) {
        let lookups = || self.others_activity();
        loop {
            if self.prefetch.stop.load(Relaxed) {
                return;
            }
            let now = lookups();
            if now != seen.0 {
                *seen = (now, Instant::now());
            }
            let p = self.pool.stats();
            let busy = p.open >= self.pool.capacity() && p.idle == 0;
            if !busy && seen.1.elapsed() >= QUIET {
                return;
            }
            self.pool.wait_changed(QUIET / 4);
        }
    }

    /// A count that moves whenever anyone but the prefetch asks the pool or the block cache.
    fn others_activity(&self) -> u64 {
        let (_, hits, misses) = self.cache_stats();
        let own = self.prefetch.own_trips.load(Relaxed);
        (hits + misses).wrapping_add(self.pool.round_trips().wrapping_sub(own))
    }

    /// Fetch one batch on one pool session; returns the body bytes that arrived.
    fn prefetch_batch(
        &self,
        name: &MailboxName,
        id: MailboxId,
        validity: UidValidity,
        batch: &[Want],
    ) -> Result<u64> {
        let bs = self.opts.block_size;
        let whole: Vec<u32> = batch
            .iter()
            .filter(|w| w.whole)
            .map(|w| w.uid.get())
            .collect();
        let mut commands = Vec::new();
        if !whole.is_empty() {
            commands.push(fetch(SequenceSet::from_numbers(whole), vec![None]));
        }
        for w in batch.iter().filter(|w| !w.whole) {
            let ranges = w.blocks.iter().map(|b| Some((b * bs, bs))).collect();
            commands.push(fetch(SequenceSet::from_numbers([w.uid.get()]), ranges));
        }
        let mut own_trips = 0;
        let result = self.pool.with_session(Some(name), Retry::Idempotent, |s| {
            let trips = s.round_trips();
            let result = batch_on(s, self, name, id, validity, &commands);
            own_trips += s.round_trips() - trips;
            result
        });
        // Counted after the pool counted them, so that the two never disagree at a look.
        self.prefetch.own_trips.fetch_add(own_trips, Relaxed);
        result
    }
}

/// The batch's commands on one session, pipelined; returns the body bytes that arrived.
fn batch_on(
    s: &mut Session,
    a: &Account,
    name: &MailboxName,
    id: MailboxId,
    validity: UidValidity,
    commands: &[Command],
) -> Result<u64> {
    s.select_at(name, validity, Access::Read)?;
    let tags = commands
        .iter()
        .map(|c| s.send(c))
        .collect::<Result<Vec<_>>>()?;
    let mut bytes = 0;
    let mut failed = None;
    for tag in tags {
        s.wait_each(&tag, "FETCH", |u| {
            bytes += body_bytes(&u);
            if let Err(e) = super::stream::land(a, id, validity, u, Fetcher::Prefetch) {
                failed.get_or_insert(e);
            }
        })?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(bytes),
    }
}

/// `UID FETCH set (UID BODY.PEEK[]...)`, one body item per range (`None`: whole).
fn fetch(set: SequenceSet, ranges: Vec<Option<(u64, u64)>>) -> Command {
    let mut attrs = vec![FetchAttr::Uid];
    for r in ranges {
        attrs.push(FetchAttr::BodyPeek {
            section: String::new(),
            partial: r.map(|(at, len)| (at, u32::try_from(len).unwrap_or(u32::MAX))),
        });
    }
    Command::Fetch {
        uid: true,
        set,
        attrs,
        changed_since: None,
    }
}

/// Body bytes in one FETCH response.
fn body_bytes(u: &Untagged) -> u64 {
    let Untagged::Fetch { items, .. } = u else {
        return 0;
    };
    items
        .iter()
        .map(|i| match i {
            FetchItem::Body { data: Some(d), .. } => d.len() as u64,
            _ => 0,
        })
        .sum()
}

/// How many of `wants` go in the next batch: at least one, then within the bounds.
fn batch_len(wants: &[Want]) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for w in wants {
        if n > 0 && (bytes + w.cost > BATCH_BYTES || n >= BATCH_MESSAGES || !w.whole) {
            break;
        }
        bytes += w.cost;
        n += 1;
        if !w.whole {
            break;
        }
    }
    n
}

/// The prefetch thread: passes while online, pauses while offline or over the budget.
fn run(account: Weak<Account>) {
    let mut next_pass = Instant::now();
    let mut budget_day = None;
    // The change epoch and the time at the start of the last pass that completed.
    let mut completed: Option<(u64, Instant)> = None;
    loop {
        let Some(a) = account.upgrade() else { return };
        let Some(opts) = a.opts.prefetch.clone() else {
            return;
        };
        if a.prefetch.stop.load(Relaxed) {
            return;
        }
        let today = utc_day(std::time::SystemTime::now());
        if !a.is_writable() {
            a.set_phase(Phase::Offline);
            next_pass = Instant::now();
            a.pool.wait_changed(POLL);
            continue;
        }
        if budget_day == Some(today) {
            a.set_phase(Phase::Budget);
            a.pool.wait_changed(POLL);
            continue;
        }
        // New mail the watcher heard of starts a pass early (at most once an EARLY_GAP).
        let heard = completed
            .is_some_and(|(epoch, at)| a.change_epoch(None) != epoch && at.elapsed() >= EARLY_GAP);
        if Instant::now() < next_pass && !heard {
            a.pool.wait_changed(POLL);
            continue;
        }
        a.set_phase(Phase::Running);
        budget_day = None;
        let started = (a.change_epoch(None), Instant::now());
        let end = a.prefetch_pass(&opts);
        next_pass = Instant::now() + RELIST_EVERY;
        completed = None;
        match end {
            Ok(PassEnd::Done) => {
                a.set_phase(Phase::Done);
                completed = Some(started);
            }
            Ok(PassEnd::Budget) => {
                a.set_phase(Phase::Budget);
                budget_day = Some(today);
            }
            Ok(PassEnd::Full) => a.set_phase(Phase::Full),
            Ok(PassEnd::Offline) => {
                a.set_phase(Phase::Offline);
                next_pass = Instant::now();
            }
            Ok(PassEnd::Stopped) => return,
            Err(e) => {
                log::info!("prefetch: {e}");
                next_pass = Instant::now() + POLL * 4;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, delimiter: char) -> MailboxInfo {
        MailboxInfo {
            name: MailboxName::from_utf8(name, false),
            delimiter: Some(delimiter),
            noselect: false,
            attributes: Vec::new(),
            subscribed: true,
        }
    }

    #[test]
    fn patterns_match_mount_paths_and_server_names() {
        let p = FolderPatterns::parse(["INBOX", "Work/*"]).unwrap();
        assert!(p.matches(&folder("INBOX", '/')));
        assert!(p.matches(&folder("inbox", '.')));
        assert!(p.matches(&folder("Work.Projects", '.')));
        assert!(p.matches(&folder("Work/A/B", '/')));
        assert!(!p.matches(&folder("Work", '/')));
        assert!(!p.matches(&folder("Other", '/')));
        let all = FolderPatterns::parse(["all"]).unwrap();
        assert!(all.matches(&folder("Anything.at.all", '.')));
        assert!(FolderPatterns::parse([""]).is_err());
        assert!(FolderPatterns::parse(["/"]).is_err());
        assert!(FolderPatterns::parse(["a\u{1}b"]).is_err());
    }

    #[test]
    fn batches_hold_small_messages_together_and_big_ones_alone() {
        let want = |cost, whole| Want {
            uid: Uid::new(1).unwrap(),
            blocks: vec![0],
            whole,
            cost,
        };
        let small: Vec<Want> = (0..100).map(|_| want(1000, true)).collect();
        assert_eq!(batch_len(&small), BATCH_MESSAGES);
        let mixed = vec![want(1000, true), want(3 << 20, false), want(1000, true)];
        assert_eq!(batch_len(&mixed), 1);
        assert_eq!(batch_len(&mixed[1..]), 1);
    }
}
