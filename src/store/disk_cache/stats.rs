//! Counters of the disk cache: this mount's (for `user.imapfs.stats`), and the account's
//! running totals over every mount (a small text file beside the entries, for
//! `imapfs cache --stats`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::store::persist::{read_private, with_dir_locked, write_private};

/// Name of the totals file in the bodies directory.
pub const TOTALS_FILE: &str = "totals";

/// This mount's counters.
#[derive(Default)]
pub struct DiskStats {
    pub hits: AtomicU64,
    pub hit_bytes: AtomicU64,
    pub misses: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub evicted: AtomicU64,
    /// Entries removed because a check failed (damaged, foreign, another message's).
    pub discarded: AtomicU64,
    /// Blocks not written: the cache was past its bound and the eviction thread behind.
    pub skipped: AtomicU64,
    /// Blocks a read fetched (on a FUSE thread) that were not written: the writer's queue
    /// was full.
    pub queue_full: AtomicU64,
}

/// Counters summed over mounts, as kept in the totals file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub hits: u64,
    pub hit_bytes: u64,
    pub misses: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub evicted: u64,
    pub discarded: u64,
}

impl Totals {
    const NAMES: [&'static str; 7] = [
        "hits",
        "hit_bytes",
        "misses",
        "writes",
        "write_bytes",
        "evicted",
        "discarded",
    ];

    fn fields(&mut self) -> [&mut u64; 7] {
        [
            &mut self.hits,
            &mut self.hit_bytes,
            &mut self.misses,
            &mut self.writes,
            &mut self.write_bytes,
            &mut self.evicted,
            &mut self.discarded,
        ]
    }

    /// Read the totals file of a bodies directory (missing, unreadable or not a private
    /// file of ours: zeros).
    pub fn load(bodies: &Path) -> Totals {
        let mut t = Totals::default();
        let path = bodies.join(TOTALS_FILE);
        let bytes = match read_private(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return t,
            Err(why) => {
                log::warn!("{}: {why}", path.display());
                return t;
            }
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return t;
        };
        for line in text.lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let Ok(v) = value.trim().parse::<u64>() else {
                continue;
            };
            if let Some(i) = Totals::NAMES.iter().position(|n| *n == name) {
                *t.fields()[i] = v;
            }
        }
        t
    }

    fn render(mut self) -> String {
        let mut out = String::new();
        for (name, v) in Totals::NAMES.iter().zip(self.fields()) {
            out.push_str(&format!("{name} {v}\n"));
        }
        out
    }
}

impl DiskStats {
    pub fn snapshot(&self) -> Totals {
        Totals {
            hits: self.hits.load(Relaxed),
            hit_bytes: self.hit_bytes.load(Relaxed),
            misses: self.misses.load(Relaxed),
            writes: self.writes.load(Relaxed),
            write_bytes: self.write_bytes.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            discarded: self.discarded.load(Relaxed),
        }
    }
}

/// Add a mount's counters to the totals file, under the bodies directory's lock (mounts of
/// the account that unmount together lose none of each other's counts); the file is
/// replaced whole.
pub(super) fn add_totals(bodies: &Path, stats: &DiskStats) {
    let added = with_dir_locked(bodies, || {
        let mut t = Totals::load(bodies);
        let mut now = stats.snapshot();
        for (sum, v) in t.fields().into_iter().zip(now.fields()) {
            *sum = sum.saturating_add(*v);
        }
        write_private(&bodies.join(TOTALS_FILE), t.render().as_bytes())
    });
    if let Err(e) = added {
        log::debug!("disk cache totals: {e}");
    }
}
