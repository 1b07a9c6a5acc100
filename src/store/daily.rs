//! Bytes downloaded from the server today (UTC), per account, across mounts: how close the
//! account is to a provider's daily cap (Google Workspace: 2,500 MB a day of IMAP
//! downloads), and the budget of [`crate::store::prefetch`].
//!
//! What is counted: the pool's `bytes_read` (every IMAP response byte its sessions received,
//! after TLS and after decompression, so a compressed link counts the full size: the
//! cautious side of a cap that is not published in detail). The watcher's own connection
//! (IDLE, NOTIFY) is not counted: it carries no bodies.
//!
//! Where: `download-today` in the account's directory of the cache (beside the saved
//! indexes), 0600 in the 0700 directory, three text lines (`imapfs-daily 1`, `day N` in days
//! since 1970 UTC, `bytes N`). Every mount of the account adds what it received to the same
//! file: [`Daily::flush`] locks the account directory (flock), reads the file, adds the bytes
//! received since its last flush (a file of an earlier day counts as 0), and replaces the
//! file atomically (a new file renamed over it). Flushes run on the link thread at most once a
//! [`FLUSH_EVERY`] when something was received, and at unmount; never on a FUSE thread.
//! Bytes received across midnight count for the new day. [`Daily::today`] (for
//! `user.imapfs.stats`) adds the bytes not flushed yet to what the file said at the last
//! flush, without I/O.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Name of the file in the account directory.
pub const DAILY_FILE: &str = "download-today";
/// Longest time bytes received stay unflushed while a mount runs.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
const MAGIC: &str = "imapfs-daily 1";

/// The account's download count for today.
pub struct Daily {
    /// The account directory (`None`: no cache directory; the count lives in memory).
    dir: Option<PathBuf>,
    state: Mutex<State>,
    /// One flush at a time (the file is read, added to and replaced).
    flushing: Mutex<()>,
}

#[derive(Clone, Copy)]
struct State {
    /// The UTC day `base` is for.
    day: u64,
    /// Today's bytes as of the last flush (this mount's and other mounts').
    base: u64,
    /// The pool's `bytes_read` at the last flush.
    counted: u64,
    flushed_at: Instant,
}

impl Daily {
    /// The count of the account whose directory is `dir`, as the file says now.
    pub fn open(dir: Option<PathBuf>) -> Daily {
        let day = utc_day(SystemTime::now());
        let base = dir
            .as_ref()
            .and_then(|d| read_file(&d.join(DAILY_FILE)))
            .filter(|(d, _)| *d == day)
            .map_or(0, |(_, bytes)| bytes);
        Daily {
            dir,
            state: Mutex::new(State {
                day,
                base,
                counted: 0,
                flushed_at: Instant::now(),
            }),
            flushing: Mutex::new(()),
        }
    }

    /// Bytes received today, all mounts of the account, given the pool's `bytes_read` now.
    pub fn today(&self, bytes_read: u64) -> u64 {
        let st = *self.state.lock();
        let new = bytes_read.saturating_sub(st.counted);
        if utc_day(SystemTime::now()) == st.day {
            st.base.saturating_add(new)
        } else {
            new
        }
    }

    /// Flush if bytes were received and the last flush is [`FLUSH_EVERY`] old.
    pub fn flush_if_due(&self, bytes_read: u64) {
        let st = *self.state.lock();
        if bytes_read > st.counted && st.flushed_at.elapsed() >= FLUSH_EVERY {
            self.flush(bytes_read);
        }
    }

    /// Add the bytes received since the last flush to the account's file.
    pub fn flush(&self, bytes_read: u64) {
        let _turn = self.flushing.lock();
        let st = *self.state.lock();
        let new = bytes_read.saturating_sub(st.counted);
        let day = utc_day(SystemTime::now());
        let Some(dir) = &self.dir else {
            let base = if day == st.day { st.base } else { 0 };
            self.set(day, base.saturating_add(new), bytes_read);
            return;
        };
        match add_to_file(dir, day, new) {
            Ok(total) => self.set(day, total, bytes_read),
            Err(e) => {
                log::debug!("daily download count in {}: {e}", dir.display());
                let base = if day == st.day { st.base } else { 0 };
                self.set(day, base.saturating_add(new), bytes_read);
            }
        }
    }

    fn set(&self, day: u64, base: u64, counted: u64) {
        *self.state.lock() = State {
            day,
            base,
            counted,
            flushed_at: Instant::now(),
        };
    }
}

/// Days since 1970-01-01, UTC.
pub fn utc_day(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400
}

/// Under the directory's lock: the file's count for `day` (0 if it is of another day or
/// missing) plus `new`, written back. Returns the new count.
fn add_to_file(dir: &std::path::Path, day: u64, new: u64) -> std::io::Result<u64> {
    super::persist::with_dir_locked(dir, || {
        let path = dir.join(DAILY_FILE);
        let old = read_file(&path)
            .filter(|(d, _)| *d == day)
            .map_or(0, |(_, b)| b);
        let total = old.saturating_add(new);
        if new > 0 || old == 0 {
            let text = format!("{MAGIC}\nday {day}\nbytes {total}\n");
            super::persist::write_private(&path, text.as_bytes())?;
        }
        Ok(total)
    })
}

/// `(day, bytes)` from the file, if it is there, a private file of ours and well formed.
fn read_file(path: &std::path::Path) -> Option<(u64, u64)> {
    let bytes = super::persist::read_private(path).unwrap_or_else(|why| {
        log::warn!("{}: {why}", path.display());
        None
    })?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let mut field = |name: &str| {
        lines
            .next()?
            .strip_prefix(name)?
            .strip_prefix(' ')?
            .parse::<u64>()
            .ok()
    };
    let day = field("day")?;
    let bytes = field("bytes")?;
    Some((day, bytes))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    use super::*;

    fn private_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "imapfs-daily-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        dir
    }

    #[test]
    fn counts_add_up_across_mounts_and_survive_a_remount() {
        let dir = private_dir();
        let a = Daily::open(Some(dir.clone()));
        let b = Daily::open(Some(dir.clone()));
        assert_eq!(a.today(1000), 1000);
        a.flush(1000);
        b.flush(500);
        assert_eq!(b.today(500), 1500);
        a.flush(1200);
        assert_eq!(a.today(1200), 1700);
        let again = Daily::open(Some(dir.clone()));
        assert_eq!(again.today(0), 1700);
        let mode = fs::metadata(dir.join(DAILY_FILE)).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_days_file_counts_as_zero() {
        let dir = private_dir();
        let path = dir.join(DAILY_FILE);
        let yesterday = utc_day(SystemTime::now()) - 1;
        let text = format!("{MAGIC}\nday {yesterday}\nbytes 99999\n");
        crate::store::persist::write_private(&path, text.as_bytes()).unwrap();
        let d = Daily::open(Some(dir.clone()));
        assert_eq!(d.today(10), 10);
        d.flush(10);
        assert_eq!(read_file(&path).unwrap().1, 10);
        crate::store::persist::write_private(&path, b"garbage").unwrap();
        assert_eq!(Daily::open(Some(dir.clone())).today(0), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_private_is_not_believed() {
        let dir = private_dir();
        let path = dir.join(DAILY_FILE);
        let today = utc_day(SystemTime::now());
        let text = format!("{MAGIC}\nday {today}\nbytes 99999\n");
        crate::store::persist::write_private(&path, text.as_bytes()).unwrap();
        assert_eq!(Daily::open(Some(dir.clone())).today(0), 99999);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(Daily::open(Some(dir.clone())).today(0), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
