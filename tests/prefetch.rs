//! Daily download accounting (issue 15) and prefetch for offline use (issue 16) through real
//! mounts of a real Dovecot: `bytes_today` grows with reads and survives a remount; a mount
//! with `prefetch=INBOX` caches INBOX's bodies without any read, serves them byte-identical
//! once the server is gone (while another folder's uncached body is EIO), and a budget smaller
//! than the folder stops the prefetch at the budget. Every wait is on a condition with a
//! deadline.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::counting_proxy::CountingProxy;
use common::{
    unique_temp_dir, wait_for, within, Dovecot, Mount, MountOptions, Seed, Subject, TextMessage,
};

/// Deadline for one filesystem call or one wait expected to end quickly.
const QUICK: Duration = Duration::from_secs(20);

/// INBOX and `Other`, `n` text messages each of a few KB.
fn seed(n: usize) -> Seed {
    let mut seed = Seed::new();
    for folder in ["INBOX", "Other"] {
        let f = seed.folder_mut(folder);
        for i in 1..=n {
            f.push_text(
                &TextMessage {
                    from: "Seed <seed@example.org>",
                    to: "tester@example.org",
                    subject: Subject::Plain("prefetched"),
                    date: 1_709_629_920 + i as i64,
                    message_id: format!("<{folder}-{i}@imapfs.test>"),
                    body_lines: (0..40 + i * 3)
                        .map(|l| format!("{folder} message {i} line {l} ...................."))
                        .collect(),
                },
                &[],
            );
        }
    }
    seed
}

/// An `XDG_CACHE_HOME` shared by the mounts of one test; removed at the end, panics included.
struct CacheHome(PathBuf);

impl CacheHome {
    fn new() -> CacheHome {
        CacheHome(unique_temp_dir("prefetch-cache"))
    }

    /// Every file named `name` under the cache.
    fn find(&self, name: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        find(&self.0, name, &mut out);
        out
    }
}

impl Drop for CacheHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            find(&p, name, out);
        } else if p.file_name().is_some_and(|n| n == name) {
            out.push(p);
        }
    }
}

fn mount(dovecot: &Dovecot, cache: &CacheHome, args: &[&str]) -> Mount {
    mount_via(dovecot, cache, None, args)
}

/// [`mount`] at another address of the server (a proxy).
fn mount_via(dovecot: &Dovecot, cache: &CacheHome, url: Option<&str>, args: &[&str]) -> Mount {
    let all: Vec<&str> = ["--timeout", "8"].iter().chain(args).copied().collect();
    let mut options = MountOptions::new(dovecot).cache_home(&cache.0).args(&all);
    if let Some(url) = url {
        options = options.url(url);
    }
    let started = options.rust_log("info").start();
    started.unwrap_or_else(|e| panic!("mount failed: {e}"))
}

/// A numeric `user.imapfs.stats` value.
fn stat(m: &Mount, key: &str) -> u64 {
    let v = m
        .stat(key)
        .unwrap_or_else(|| panic!("no {key} in user.imapfs.stats"));
    v.parse()
        .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
}

/// Read a file through the mount under a deadline.
fn read(path: PathBuf) -> std::io::Result<Vec<u8>> {
    within("read", QUICK, move || std::fs::read(path))
}

#[test]
fn bytes_today_grows_with_reads_and_survives_a_remount() {
    let dovecot = Dovecot::start(&seed(12));
    let cache = CacheHome::new();
    let expected: BTreeMap<u32, Vec<u8>> = dovecot.oracle_fetch_all("INBOX");
    let body_bytes: u64 = expected.values().map(|b| b.len() as u64).sum();
    // Through a proxy that counts what the server sends (TLS included): the ground truth.
    let proxy = CountingProxy::start(dovecot.imaps_port);
    let url = format!("imaps://{}@127.0.0.1:{}", dovecot.user, proxy.port);
    let args = ["--disk-cache-size", "0", "-o", "compress=no"];

    let m = mount_via(&dovecot, &cache, Some(&url), &args);
    let before = stat(&m, "bytes_today");
    for (uid, bytes) in &expected {
        assert!(read(m.join(format!("INBOX/{uid}.eml"))).unwrap() == *bytes);
    }
    // A folder stream's bytes are counted when its command ends, which may be after the
    // reads it served returned: wait for them under a deadline.
    let after = wait_for(
        &format!("bytes_today to grow from {before} by the {body_bytes} bytes of bodies read"),
        QUICK,
        || {
            let now = stat(&m, "bytes_today");
            (now >= before + body_bytes).then_some(now)
        },
    );
    let wire = proxy.bytes_down();
    assert!(
        after <= wire && after >= wire / 2,
        "bytes_today={after} against {wire} bytes from the server on the wire"
    );
    m.unmount();

    let files = cache.find("download-today");
    assert_eq!(files.len(), 1, "one daily count per account: {files:?}");
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let again = mount_via(&dovecot, &cache, Some(&url), &args);
    let kept = stat(&again, "bytes_today");
    assert!(
        kept >= after,
        "bytes_today after the remount: {kept}, before it: {after}"
    );
    assert!(read(again.join("INBOX/1.eml")).unwrap() == expected[&1]);
    wait_for("bytes_today to count the read", QUICK, || {
        (stat(&again, "bytes_today") >= kept + expected[&1].len() as u64).then_some(())
    });
}

/// Every message of `folder` as the server has it, and their total size.
fn server_copy(dovecot: &Dovecot, folder: &str) -> (BTreeMap<u32, Vec<u8>>, u64) {
    let all = dovecot.oracle_fetch_all(folder);
    let bytes = all.values().map(|b| b.len() as u64).sum();
    (all, bytes)
}

/// Wait until the prefetch reaches `phase`; returns (done, total).
fn wait_phase(m: &Mount, phase: &str) -> (u64, u64) {
    wait_for(&format!("prefetch={phase}"), QUICK, || {
        (m.stat("prefetch").as_deref() == Some(phase))
            .then(|| (stat(m, "prefetch_done"), stat(m, "prefetch_total")))
    })
}

#[test]
fn prefetched_folder_reads_offline_and_cached_messages_are_skipped() {
    let mut dovecot = Dovecot::start(&seed(20));
    let cache = CacheHome::new();
    let (inbox, inbox_bytes) = server_copy(&dovecot, "INBOX");

    let m = mount(&dovecot, &cache, &["-o", "prefetch=INBOX"]);
    // List Other (names only, no body read) so that an offline mount knows its messages.
    let other = within("ls Other", QUICK, {
        let dir = m.join("Other");
        move || std::fs::read_dir(dir).unwrap().count()
    });
    assert_eq!(other, 20);
    let (done, total) = wait_phase(&m, "done");
    assert_eq!((done, total), (20, 20));
    assert!(
        stat(&m, "prefetch_bytes") >= inbox_bytes,
        "prefetch_bytes below the folder's {inbox_bytes} bytes"
    );
    assert_eq!(
        stat(&m, "cache_misses"),
        0,
        "nothing was read through the mount"
    );
    m.unmount();

    // A second mount finds everything on disk: nothing downloaded again.
    let again = mount(&dovecot, &cache, &["-o", "prefetch=INBOX"]);
    assert_eq!(wait_phase(&again, "done"), (20, 20));
    assert_eq!(stat(&again, "prefetch_bytes"), 0);
    again.unmount();

    // New mail while nothing is mounted, then the server goes.
    let new = b"From: c@example.org\r\nSubject: new\r\n\r\narrived while unmounted\r\n";
    let uid = dovecot.oracle_append("INBOX", new);
    dovecot.kill_server();
    let offline = mount(&dovecot, &cache, &["-o", "prefetch=INBOX"]);
    assert_eq!(offline.stat("link").as_deref(), Some("offline"));
    assert_eq!(offline.stat("prefetch").as_deref(), Some("offline"));
    for (uid, bytes) in &inbox {
        let got = read(offline.join(format!("INBOX/{uid}.eml")));
        assert!(
            got.as_ref().is_ok_and(|g| g == bytes),
            "INBOX/{uid}.eml offline: {:?}",
            got.map(|g| g.len())
        );
    }
    let uncached = read(offline.join("Other/1.eml")).unwrap_err();
    assert_eq!(uncached.raw_os_error(), Some(libc::EIO), "{uncached}");

    // The server back: the prefetch resumes by itself and fetches the new mail.
    let misses = stat(&offline, "cache_misses");
    dovecot.start_again();
    wait_for("the new message prefetched", QUICK, || {
        let phase = offline.stat("prefetch");
        let counts = (
            stat(&offline, "prefetch_done"),
            stat(&offline, "prefetch_total"),
        );
        (phase.as_deref() == Some("done") && counts == (21, 21)).then_some(())
    });
    assert!(stat(&offline, "prefetch_bytes") >= new.len() as u64);
    assert_eq!(stat(&offline, "cache_misses"), misses, "fetched by no read");
    assert!(read(offline.join(format!("INBOX/{uid}.eml"))).unwrap() == new);
}

#[test]
fn prefetch_stops_at_the_daily_budget() {
    let dovecot = Dovecot::start(&seed(30));
    let cache = CacheHome::new();
    let (_, inbox_bytes) = server_copy(&dovecot, "INBOX");
    let budget = inbox_bytes / 2;
    let option = format!("prefetch=INBOX,prefetch_budget={budget}");
    let m = mount(&dovecot, &cache, &["-o", &option]);
    let (done, total) = wait_phase(&m, "budget");
    assert_eq!(total, 30);
    assert!(
        done > 0 && done < total,
        "{done} of {total} messages prefetched under a budget of half the folder"
    );
    let fetched = stat(&m, "prefetch_bytes");
    assert!(
        fetched <= budget,
        "prefetch_bytes={fetched} over the budget {budget}"
    );
    // The day's whole count stays within it too (an EXAMINE answer or so of slack).
    let today = stat(&m, "bytes_today");
    assert!(
        today <= budget + 2048,
        "bytes_today={today}, budget {budget}"
    );
    assert_eq!(
        stat(&m, "prefetch_done"),
        done,
        "no progress past the budget"
    );
}

#[test]
fn prefetch_bigger_than_the_disk_cache_stops_and_is_not_fetched_again() {
    let dovecot = Dovecot::start(&seed(30));
    let cache = CacheHome::new();
    let (_, inbox_bytes) = server_copy(&dovecot, "INBOX");
    let bound = inbox_bytes / 2;
    let size = bound.to_string();
    let args = ["--disk-cache-size", &size, "-o", "prefetch=INBOX"];
    let m = mount(&dovecot, &cache, &args);
    let (done, total) = wait_phase(&m, "full");
    assert!(
        done > 0 && done < total,
        "{done} of {total} under a bound of half the folder"
    );
    assert_eq!(
        stat(&m, "disk_cache_evicted"),
        0,
        "the prefetch evicted its own messages"
    );
    m.unmount();

    // The next mount counts what is held: it fetches nothing more, so evicts nothing.
    let again = mount(&dovecot, &cache, &args);
    assert_eq!(wait_phase(&again, "full"), (done, total));
    assert_eq!(stat(&again, "prefetch_bytes"), 0);
}

#[test]
fn new_mail_the_watcher_hears_of_is_prefetched_without_waiting_a_minute() {
    let dovecot = Dovecot::start(&seed(5));
    let cache = CacheHome::new();
    let m = mount(&dovecot, &cache, &["-o", "prefetch=INBOX"]);
    assert_eq!(wait_phase(&m, "done"), (5, 5));
    wait_for("the watcher", QUICK, || {
        (m.stat("watching").as_deref() == Some("1")).then_some(())
    });
    let new = b"From: d@example.org\r\nSubject: fresh\r\n\r\nnew mail\r\n";
    let uid = dovecot.oracle_append("INBOX", new);
    wait_for("the new message prefetched", QUICK, || {
        let counts = (stat(&m, "prefetch_done"), stat(&m, "prefetch_total"));
        (m.stat("prefetch").as_deref() == Some("done") && counts == (6, 6)).then_some(())
    });
    assert_eq!(stat(&m, "cache_misses"), 0, "fetched by no read");
    assert!(read(m.join(format!("INBOX/{uid}.eml"))).unwrap() == new);
}
