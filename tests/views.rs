//! End-to-end tests of the views (issue 10): `.search` directories whose names are IMAP
//! search criteria, and `.parts` directories holding each message's MIME parts as files. Every
//! answer is checked against an independent client: the harness's Python oracle (imaplib's
//! `UID SEARCH`, and Python's `email` package for decoding parts).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{days_from_civil, rfc5322_date, run, within, Dovecot, Mount, Seed};

/// Deadline for one command or filesystem call.
const QUICK: Duration = Duration::from_secs(60);

fn sh(cmd: &[&str]) -> Output {
    run(cmd, QUICK)
}

fn ok(cmd: &[&str]) -> Output {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `read_dir` under a deadline: the names, or the errno.
fn list(path: PathBuf) -> Result<BTreeSet<String>, i32> {
    within("read_dir", QUICK, move || {
        let entries = fs::read_dir(&path).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
        Ok(entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect())
    })
}

/// `user.imapfs.stats` of the mount as (key, number) pairs.
fn stat_counter(mount: &Mount, key: &str) -> u64 {
    let stats = ok(&[
        "getfattr",
        "--absolute-names",
        "--only-values",
        "-n",
        "user.imapfs.stats",
        &p(mount.path()),
    ])
    .stdout;
    let stats = String::from_utf8(stats).expect("UTF-8");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {stats:?}"))
}

// --- the seed ----------------------------------------------------------------------------------

/// Unix time of a day at noon UTC.
fn noon(y: i64, m: i64, d: i64) -> i64 {
    days_from_civil(y, m, d) * 86_400 + 12 * 3600
}

struct Mail<'a> {
    from: &'a str,
    to: &'a str,
    /// The Subject header as written (may be RFC 2047 encoded).
    subject: &'a str,
    date: i64,
    flags: &'a [&'a str],
    extra_headers: &'a [&'a str],
    body: String,
}

fn compose(m: &Mail<'_>, id: &str) -> Vec<u8> {
    let mut out = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{id}@views.test>\r\n",
        m.from,
        m.to,
        m.subject,
        rfc5322_date(m.date)
    );
    for h in m.extra_headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n");
    out.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
    out.push_str(&m.body);
    out.into_bytes()
}

/// INBOX with messages that tell the search keys apart, and `Archive.2024` with a few more
/// (for the root's search over every folder).
fn search_seed() -> Seed {
    let mut seed = Seed::new();
    let inbox = [
        Mail {
            from: "Alice <alice@example.org>",
            to: "bob@example.org",
            subject: "Quarterly numbers",
            date: noon(2026, 10, 28),
            flags: &["\\Seen"],
            extra_headers: &["X-Project: apollo"],
            body: "The invoice is attached.\r\n".into(),
        },
        Mail {
            from: "bob@example.org",
            to: "Alice <alice@example.org>",
            subject: "Re: Quarterly numbers",
            date: noon(2026, 11, 1),
            flags: &[],
            extra_headers: &[],
            body: "The numbers look fine.\r\n".into(),
        },
        Mail {
            from: "carol@example.org",
            to: "team@example.org",
            subject: "Lunch",
            date: noon(2026, 11, 1),
            flags: &["\\Flagged", "\\Seen"],
            extra_headers: &[],
            body: "Pizza at noon?\r\n".into(),
        },
        Mail {
            from: "Alice <alice@example.org>",
            to: "team@example.org",
            subject: "=?UTF-8?Q?M=C3=BCller=27s_report?=",
            date: noon(2026, 11, 5),
            flags: &[],
            extra_headers: &[],
            body: "Grüße aus München.\r\n".into(),
        },
        Mail {
            from: "dave@example.org",
            to: "bob@example.org",
            subject: "Big one",
            date: noon(2026, 11, 10),
            flags: &["\\Seen"],
            extra_headers: &[],
            body: "filler line for size\r\n".repeat(1000),
        },
        Mail {
            from: "Alice <alice@example.org>",
            to: "carol@example.org",
            subject: "Plans",
            date: noon(2026, 11, 15),
            flags: &["\\Flagged"],
            extra_headers: &["X-Project: gemini"],
            body: "Let us meet.\r\n".into(),
        },
        Mail {
            from: "eve@example.org",
            to: "bob@example.org",
            subject: "invoice 7731",
            date: noon(2026, 11, 20),
            flags: &["\\Answered", "\\Seen"],
            extra_headers: &[],
            body: "Please pay.\r\n".into(),
        },
        Mail {
            from: "bob@example.org",
            to: "Alice <alice@example.org>",
            subject: "weekend",
            date: noon(2026, 12, 1),
            flags: &[],
            extra_headers: &["X-Project: apollo"],
            body: "Hiking?\r\n".into(),
        },
    ];
    let folder = seed.folder_mut("INBOX");
    for (i, m) in inbox.iter().enumerate() {
        let bytes = compose(m, &format!("inbox.{i}"));
        folder.push(bytes, m.flags, m.subject, m.from, "", m.date, m.date + 37);
    }
    let archive = [Mail {
        from: "Alice <alice@example.org>",
        to: "bob@example.org",
        subject: "Old numbers",
        date: noon(2024, 3, 3),
        flags: &["\\Seen"],
        extra_headers: &[],
        body: "Last year's invoice.\r\n".into(),
    }];
    let folder = seed.folder_mut("Archive.2024");
    for (i, m) in archive.iter().enumerate() {
        let bytes = compose(m, &format!("archive.{i}"));
        folder.push(bytes, m.flags, m.subject, m.from, "", m.date, m.date + 37);
    }
    seed.folder_mut("Empty");
    seed
}

fn search_fixture() -> (Dovecot, Mount) {
    let dovecot = Dovecot::start(&search_seed());
    // Keywords are not part of the seed's maildir flags: set them as a client would.
    dovecot.oracle_store("INBOX", 2, "+FLAGS", &["$Label1"]);
    dovecot.oracle_store("INBOX", 6, "+FLAGS", &["$Label1"]);
    // A long dir_ttl and no IDLE: nothing talks to the server unless a test makes it.
    let mount = Mount::start(&dovecot, &["--dir-ttl", "600", "--idle", "no"])
        .unwrap_or_else(|f| panic!("{f}"));
    (dovecot, mount)
}

/// The UIDs a folder search result directory links to, checking each link's form.
fn result_uids(mount: &Mount, folder: &str, criteria: &str) -> Result<Vec<u32>, i32> {
    let dir = mount.join(folder).join(".search").join(criteria);
    let names = list(dir.clone())?;
    let mut uids = Vec::new();
    for name in names {
        let uid: u32 = name
            .strip_suffix(".eml")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{criteria}: unexpected entry {name:?}"));
        let target = fs::read_link(dir.join(&name)).expect("readlink");
        assert_eq!(
            target,
            PathBuf::from(format!("../../{uid}.eml")),
            "{criteria}"
        );
        uids.push(uid);
    }
    uids.sort_unstable();
    Ok(uids)
}

// --- .search ------------------------------------------------------------------------------------

#[test]
fn search_results_match_an_independent_clients_uid_search() {
    let (dovecot, mount) = search_fixture();
    // (criteria typed on the mount, what the oracle sends, its non-ASCII literal)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("FROM alice", "FROM alice", None),
        ("TO bob", "TO bob", None),
        ("SUBJECT numbers", "SUBJECT numbers", None),
        (
            "SUBJECT \"Quarterly numbers\"",
            "SUBJECT \"Quarterly numbers\"",
            None,
        ),
        ("BODY pizza", "BODY pizza", None),
        ("TEXT invoice", "TEXT invoice", None),
        ("SINCE 1-Nov-2026", "SINCE 1-Nov-2026", None),
        ("BEFORE 1-Nov-2026", "BEFORE 1-Nov-2026", None),
        ("ON 1-Nov-2026", "ON 1-Nov-2026", None),
        ("SEEN", "SEEN", None),
        ("UNSEEN", "UNSEEN", None),
        ("FLAGGED", "FLAGGED", None),
        ("ANSWERED", "ANSWERED", None),
        ("LARGER 10000", "LARGER 10000", None),
        ("SMALLER 400", "SMALLER 400", None),
        ("HEADER X-Project apollo", "HEADER X-Project apollo", None),
        ("KEYWORD $Label1", "KEYWORD $Label1", None),
        ("UNKEYWORD $Label1", "UNKEYWORD $Label1", None),
        ("UID 2:4,7", "UID 2:4,7", None),
        ("OR FROM carol FROM dave", "OR FROM carol FROM dave", None),
        ("NOT FROM alice", "NOT FROM alice", None),
        ("NOT (SEEN FLAGGED)", "NOT (SEEN FLAGGED)", None),
        ("SUBJECT Müller", "SUBJECT", Some("Müller")),
        ("BODY München", "BODY", Some("München")),
        (
            "SINCE 1-Nov-2026 BEFORE 16-Nov-2026",
            "SINCE 1-Nov-2026 BEFORE 16-Nov-2026",
            None,
        ),
        (
            "from:alice since:2026-11-01 unseen",
            "FROM alice SINCE 1-Nov-2026 UNSEEN",
            None,
        ),
        ("SENTSINCE 2026-11-15", "SENTSINCE 15-Nov-2026", None),
        ("ALL", "ALL", None),
    ];
    let mut distinct = BTreeSet::new();
    for (criteria, oracle, literal) in cases {
        let expected = dovecot.oracle_search("INBOX", oracle, *literal);
        let got = result_uids(&mount, "INBOX", criteria)
            .unwrap_or_else(|e| panic!("{criteria}: errno {e}"));
        assert_eq!(got, expected, "criteria {criteria:?}");
        distinct.insert(got);
    }
    // The seed tells the keys apart: the answers are not all alike.
    assert!(distinct.len() >= 15, "{distinct:?}");
}

#[test]
fn search_results_are_links_that_read_the_messages() {
    let (dovecot, mount) = search_fixture();
    let dir = mount.join("INBOX/.search/FROM eve");
    let out = ok(&["cat", &p(&dir.join("7.eml"))]);
    assert_eq!(out.stdout, dovecot.oracle_fetch("INBOX", 7));
    let grep = ok(&["grep", "-l", "pay", &p(&dir.join("7.eml"))]);
    assert!(!grep.stdout.is_empty());
    let copy = common::unique_temp_dir("views-cp").join("7.eml");
    ok(&["cp", "-L", &p(&dir.join("7.eml")), &p(&copy)]);
    assert_eq!(fs::read(&copy).unwrap(), dovecot.oracle_fetch("INBOX", 7));
    let _ = fs::remove_file(&copy);
    let _ = fs::remove_dir(copy.parent().unwrap());
    let attr = ok(&[
        "getfattr",
        "--only-values",
        "-n",
        "user.imap.uid",
        &p(&dir.join("7.eml")),
    ]);
    assert_eq!(attr.stdout, b"7");
    // `ls -l` shows symlinks.
    let ls = ok(&["ls", "-l", &p(&dir)]);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(text.contains("7.eml -> ../../7.eml"), "{text}");
}

#[test]
fn the_roots_search_covers_every_folder() {
    let (dovecot, mount) = search_fixture();
    let dir = mount.join(".search/FROM alice");
    let names = list(dir.clone()).expect("root search");
    let mut expected = BTreeSet::new();
    for uid in dovecot.oracle_search("INBOX", "FROM alice", None) {
        expected.insert(format!("INBOX-{uid}.eml"));
    }
    for uid in dovecot.oracle_search("Archive.2024", "FROM alice", None) {
        expected.insert(format!("Archive%2F2024-{uid}.eml"));
    }
    assert_eq!(names, expected);
    let target = fs::read_link(dir.join("Archive%2F2024-1.eml")).unwrap();
    assert_eq!(target, PathBuf::from("../../Archive/2024/1.eml"));
    assert_eq!(
        fs::read(dir.join("Archive%2F2024-1.eml")).unwrap(),
        dovecot.oracle_fetch("Archive.2024", 1)
    );
    // A folder with nothing to find adds nothing.
    assert_eq!(
        list(mount.join("Empty/.search/ALL")).unwrap(),
        BTreeSet::new()
    );
}

#[test]
fn invalid_criteria_give_einval_and_send_nothing() {
    let (_dovecot, mount) = search_fixture();
    // Resolve the directories first, so that only the bad names remain to look up.
    list(mount.join("INBOX")).unwrap();
    assert_eq!(list(mount.join("INBOX/.search")).unwrap(), BTreeSet::new());
    let sent = stat_counter(&mount, "bytes_sent");
    for bad in [
        "FROM a\r\nA1 DELETE INBOX",
        "FROM a\nX",
        "SUBJECT {5}",
        "SUBJECT {5+}",
        "SUBJECT \"unbalanced",
        "SUBJECT x\"",
        "(FROM a",
        "FROM a)",
        "FROMX alice",
        "SINCE yesterday",
        "KEYWORD \"\\\\Seen\"",
    ] {
        let r = list(mount.join("INBOX/.search").join(bad));
        assert_eq!(r, Err(libc::EINVAL), "{bad:?}");
    }
    assert_eq!(
        stat_counter(&mount, "bytes_sent"),
        sent,
        "something was sent"
    );
    let log = mount.log();
    assert!(log.contains("unbalanced quote"), "the reason is logged");
}

#[test]
fn views_are_never_listed_and_grep_reads_no_more() {
    let (dovecot, mount) = search_fixture();
    for dir in ["", "INBOX", "Archive", "Archive/2024"] {
        let ls = ok(&["ls", "-a", &p(&mount.join(dir))]);
        let text = String::from_utf8_lossy(&ls.stdout);
        assert!(
            !text.contains(".search") && !text.contains(".parts"),
            "{text}"
        );
    }
    // The views exist all the same.
    assert!(mount.join("INBOX/.search").is_dir());
    assert!(mount.join("INBOX/.parts").is_dir());
    assert!(mount.join(".search").is_dir());
    let find = ok(&["find", &p(mount.path())]);
    let text = String::from_utf8_lossy(&find.stdout);
    assert!(
        !text.contains(".search") && !text.contains(".parts"),
        "{text}"
    );
    let before = stat_counter(&mount, "bytes_received");
    let grep = ok(&["grep", "-r", "-l", "e", &p(mount.path())]);
    let received = stat_counter(&mount, "bytes_received") - before;
    let text = String::from_utf8_lossy(&grep.stdout);
    assert!(
        !text.contains(".search") && !text.contains(".parts"),
        "{text}"
    );
    // grep read every message once and nothing else: the bodies plus FETCH framing.
    let mut bodies = 0;
    let mut messages = 0;
    for folder in ["INBOX", "Archive.2024"] {
        for body in dovecot.oracle_fetch_all(folder).values() {
            bodies += body.len() as u64;
            messages += 1;
        }
    }
    assert!(
        received >= bodies && received < bodies + 1000 * messages + 16384,
        "grep -r made imapfs receive {received} bytes for {bodies} bytes of mail"
    );
    assert_eq!(stat_counter(&mount, "searches"), 0);
}

#[test]
fn a_change_reruns_the_search() {
    let (_dovecot, mount) = search_fixture();
    let flagged = |m: &Mount| result_uids(m, "INBOX", "FLAGGED").unwrap();
    assert_eq!(flagged(&mount), vec![3, 6]);
    ok(&[
        "setfattr",
        "-n",
        "user.imap.flags",
        "-v",
        "+\\Flagged",
        &p(&mount.join("INBOX/8.eml")),
    ]);
    assert_eq!(flagged(&mount), vec![3, 6, 8]);
    ok(&["rm", &p(&mount.join("INBOX/3.eml"))]);
    assert_eq!(flagged(&mount), vec![6, 8]);
    // The views refuse changes.
    let out = sh(&["mkdir", &p(&mount.join("INBOX/.search/ALL/x"))]);
    assert!(!out.status.success());
    let out = sh(&["rm", &p(&mount.join("INBOX/.search/FLAGGED/6.eml"))]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only"),
        "{out:?}"
    );
    assert!(mount.join("INBOX/6.eml").exists());
}
