//! One eviction pass: list every entry, set the byte estimate from the listing, and past the
//! bound remove the least recently used entries (oldest mtime first) down to [`LOW_WATER`]
//! of it. Also removes temporary files a crashed writer left and directories left empty.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use super::DiskCache;

/// An eviction pass goes down to this share of the bound (in percent), so that passes are
/// rare.
pub const LOW_WATER: u64 = 90;

/// A temporary file older than this was left by a writer that died.
const STALE_TMP: Duration = Duration::from_secs(600);

struct Entry {
    path: PathBuf,
    used: SystemTime,
    size: u64,
}

/// Run a pass (after the one under way, if any).
pub(super) fn pass(cache: &DiskCache) {
    let _turn = cache.evicting.lock();
    let mut entries = Vec::new();
    let mut dirs = Vec::new();
    list(&cache.root, 0, &mut entries, &mut dirs);
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    if total > cache.bound {
        entries.sort_by_key(|e| e.used);
        let target = cache.bound / 100 * LOW_WATER;
        let mut removed = 0u64;
        for e in &entries {
            if total <= target {
                break;
            }
            if fs::remove_file(&e.path).is_ok() {
                total -= e.size;
                removed += 1;
            }
        }
        cache.stats.evicted.fetch_add(removed, Relaxed);
        log::debug!("disk cache: evicted {removed} entries, {total} bytes left");
        // Deepest first: a generation's directory before its folder's.
        for d in dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
    cache.bytes.store(total, Relaxed);
}

/// Collect the entries under `dir` (folder / generation / entry: three levels).
fn list(dir: &std::path::Path, depth: u32, entries: &mut Vec<Entry>, dirs: &mut Vec<PathBuf>) {
    let Ok(read) = fs::read_dir(dir) else {
        return;
    };
    for item in read.flatten() {
        let Ok(meta) = item.metadata() else {
            continue;
        };
        let path = item.path();
        if meta.is_dir() && depth < 2 {
            dirs.push(path.clone());
            list(&path, depth + 1, entries, dirs);
        } else if meta.is_file() && depth == 2 {
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let tmp = item.file_name().as_encoded_bytes().ends_with(b".tmp");
            if tmp {
                if used.elapsed().is_ok_and(|age| age > STALE_TMP) {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            entries.push(Entry {
                path,
                used,
                size: meta.len(),
            });
        }
    }
}
