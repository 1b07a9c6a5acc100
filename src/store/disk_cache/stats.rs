//! Counters of the disk cache: this mount's (for `user.imapfs.stats`), and the account's
//! running totals over every mount (a small text file beside the entries, for
//! `imapfs cache --stats`).

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

    /// Read the totals file of a bodies directory (missing or unreadable: zeros).
    pub fn load(bodies: &Path) -> Totals {
        let mut t = Totals::default();
        let Ok(text) = fs::read_to_string(bodies.join(TOTALS_FILE)) else {
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

/// Add a mount's counters to the totals file (written whole, then renamed into place).
pub(super) fn add_totals(bodies: &Path, stats: &DiskStats) {
    let mut t = Totals::load(bodies);
    let mut now = stats.snapshot();
    for (sum, v) in t.fields().into_iter().zip(now.fields()) {
        *sum = sum.saturating_add(*v);
    }
    let tmp = format!(".{TOTALS_FILE}.{}.tmp", std::process::id());
    let _ = fs::remove_file(bodies.join(&tmp));
    let written = super::write_new(bodies, &tmp, t.render().as_bytes())
        .and_then(|_| fs::rename(bodies.join(&tmp), bodies.join(TOTALS_FILE)));
    if let Err(e) = written {
        log::debug!("disk cache totals: {e}");
    }
}
