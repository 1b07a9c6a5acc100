//! `imapfs cache`: what the cache directory holds per account (message bodies, folder
//! indexes, hit rates summed over every mount), and clearing it. Works on the files alone,
//! with no server and no mount.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::disk_cache::{Totals, ACCOUNT_FILE};
use crate::store::persist;

/// One account's part of the cache directory.
#[derive(Debug, Clone)]
pub struct AccountCache {
    /// `user@host:port`, or the directory's name when it does not say.
    pub account: String,
    pub dir: PathBuf,
    /// Folders with bodies, messages with at least one block, block files, their bytes.
    pub folders: u64,
    pub messages: u64,
    pub entries: u64,
    pub body_bytes: u64,
    /// Saved folder indexes and their bytes.
    pub indexes: u64,
    pub index_bytes: u64,
    /// Counters summed over the mounts that ended.
    pub totals: Totals,
}

impl AccountCache {
    /// Disk cache hits per hundred lookups over every mount, if any lookup was made.
    pub fn hit_rate(&self) -> Option<f64> {
        let asked = self.totals.hits + self.totals.misses;
        (asked > 0).then(|| 100.0 * self.totals.hits as f64 / asked as f64)
    }
}

/// The accounts in `dir` (only `account`, a `user@host:port`, when given).
pub fn report(dir: &Path, account: Option<&str>) -> Result<Vec<AccountCache>> {
    let mut out = Vec::new();
    let dirs: Vec<PathBuf> = match account {
        Some(a) => vec![persist::account_dir(dir, a)],
        None => match fs::read_dir(dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("reading the cache directory", e)),
        },
    };
    for d in dirs {
        if !d.is_dir() {
            continue;
        }
        out.push(account_report(&d, account));
    }
    out.sort_by(|a, b| a.account.cmp(&b.account));
    Ok(out)
}

/// Delete what [`report`] finds (bodies and indexes); returns what was there.
pub fn clear(dir: &Path, account: Option<&str>) -> Result<Vec<AccountCache>> {
    let found = report(dir, account)?;
    for a in &found {
        fs::remove_dir_all(&a.dir)
            .map_err(|e| Error::io(format!("removing {}", a.dir.display()), e))?;
    }
    Ok(found)
}

fn account_report(d: &Path, account: Option<&str>) -> AccountCache {
    let named = fs::read_to_string(d.join(ACCOUNT_FILE)).ok();
    let account = named
        .map(|s| s.trim().to_string())
        .or(account.map(str::to_string))
        .unwrap_or_else(|| d.file_name().unwrap_or_default().to_string_lossy().into());
    let bodies = d.join("bodies");
    let mut r = AccountCache {
        account,
        dir: d.to_path_buf(),
        folders: 0,
        messages: 0,
        entries: 0,
        body_bytes: 0,
        indexes: 0,
        index_bytes: 0,
        totals: Totals::load(&bodies),
    };
    for e in fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "idx") {
            r.indexes += 1;
            r.index_bytes += e.metadata().map_or(0, |m| m.len());
        }
    }
    for folder in fs::read_dir(&bodies).into_iter().flatten().flatten() {
        if !folder.path().is_dir() {
            continue;
        }
        r.folders += 1;
        for generation in fs::read_dir(folder.path()).into_iter().flatten().flatten() {
            for entry in fs::read_dir(generation.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                r.entries += 1;
                r.body_bytes += entry.metadata().map_or(0, |m| m.len());
                if name.ends_with(".0") {
                    r.messages += 1;
                }
            }
        }
    }
    r
}
