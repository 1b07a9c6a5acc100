//! Tests of the end-to-end harness itself, without imapfs: the private Dovecot starts and stops
//! cleanly, the maildir seeding yields exactly the folders, UIDs, bytes, flags and dates the
//! `Seed` describes, and the oracle client sees and changes what the server holds.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Dovecot, Seed, PHRASE};

#[test]
fn encoders_match_known_values() {
    assert_eq!(
        common::mutf7_encode("Ünïcødé Folder"),
        "&ANw-n&AO8-c&APg-d&AOk- Folder"
    );
    assert_eq!(common::mutf7_encode("R&D"), "R&-D");
    assert_eq!(common::mutf7_encode("Old Projects"), "Old Projects");
    assert_eq!(common::mutf7_encode("日本語"), "&ZeVnLIqe-");
    let friday = common::days_from_civil(2024, 3, 1) * 86_400 + 9 * 3600 + 7;
    assert_eq!(
        common::rfc5322_date(friday),
        "Fri, 01 Mar 2024 09:00:07 +0000"
    );
    assert_eq!(common::rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
}

#[test]
fn standard_seed_has_the_promised_shape() {
    let started = Instant::now();
    let seed = Seed::standard();
    eprintln!(
        "standard seed: {} bytes built in {:?}",
        seed.total_bytes(),
        started.elapsed()
    );
    let big = seed.folder("Big");
    assert!(big.messages.len() >= 200);
    let sizes: Vec<usize> = big.messages.iter().map(|m| m.bytes.len()).collect();
    assert!(sizes.iter().any(|&s| s < 4_000), "a message of a few KB");
    assert!(
        sizes.iter().filter(|&&s| s > 5 * 1024 * 1024).count() >= 2,
        "messages over 5 MB"
    );
    for (i, message) in big.messages.iter().enumerate() {
        assert_eq!(message.uid as usize, i + 1);
        let bare_lf = message
            .bytes
            .windows(2)
            .any(|w| w[1] == b'\n' && w[0] != b'\r');
        assert!(!bare_lf, "uid {} has a bare LF", message.uid);
    }
    let hits = seed.phrase_hits();
    assert_eq!(hits.len(), 15, "{hits:?}");
    assert!(hits.iter().all(|(folder, _)| folder == "Big"));
    let huge_hit = big.message(200);
    assert!(huge_hit.has_phrase && huge_hit.bytes.len() > 5 * 1024 * 1024);
    let tail = &huge_hit.bytes[huge_hit.bytes.len() - 200..];
    assert!(
        common::contains(tail, PHRASE.as_bytes()),
        "phrase at the very end of uid 200"
    );
}

#[test]
fn server_starts_greets_on_both_ports_and_stops_cleanly() {
    let started = Instant::now();
    let dovecot = Dovecot::start(Seed::standard());
    let start_time = started.elapsed();
    let greeting = dovecot.greeting();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    assert!(greeting.contains("STARTTLS"), "{greeting}");
    let tls = dovecot.tls_greeting();
    assert!(tls.starts_with("* OK"), "{tls}");
    let caps = dovecot.starttls_capabilities();
    for cap in [
        "IMAP4rev1",
        "UIDPLUS",
        "MOVE",
        "CONDSTORE",
        "QRESYNC",
        "IDLE",
        "LITERAL+",
    ] {
        assert!(caps.iter().any(|c| c == cap), "{cap} missing from {caps:?}");
    }

    let dir = dovecot.dir.clone();
    let pid = dovecot.pid();
    let port = dovecot.imap_port;
    let stopping = Instant::now();
    drop(dovecot);
    let stop_time = stopping.elapsed();
    eprintln!("dovecot with standard seed: start {start_time:?}, stop {stop_time:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!Path::new(&format!("/proc/{pid}/cmdline")).exists() || proc_is_zombie(pid));
    match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("port {port} still open"),
    }
}

#[test]
fn oracle_lists_the_seeded_folders() {
    let seed = Seed::standard();
    let dovecot = Dovecot::start(seed);
    let list = dovecot.oracle_list();
    let names: BTreeSet<String> = list.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, seed.expected_mailboxes());
    for name in [
        "Ünïcødé Folder",
        "Old Projects",
        "R&D",
        "Archive.2024",
        "Lists.rust",
        "Lists",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    for entry in &list {
        assert_eq!(entry.delimiter, Some('.'), "{entry:?}");
    }
    let attributes = |name: &str| {
        list.iter()
            .find(|e| e.name == name)
            .map(|e| e.attributes.clone())
            .unwrap_or_default()
    };
    // A maildir++ child without a parent directory: Dovecot invents the parent as \Noselect.
    assert_eq!(attributes("Lists"), ["\\Noselect", "\\HasChildren"]);
    assert_eq!(attributes("Archive"), ["\\HasChildren"]);
    assert_eq!(attributes("Archive.2024"), ["\\HasNoChildren"]);
}

#[test]
fn seeded_uids_bytes_flags_and_dates_match_the_seed() {
    let seed = Seed::standard();
    let dovecot = Dovecot::start(seed);

    let big = seed.folder("Big");
    let started = Instant::now();
    let oracle = dovecot.oracle_sha256_all("Big");
    eprintln!("oracle sha256 of Big: {:?}", started.elapsed());
    let bodies: Vec<&[u8]> = big.messages.iter().map(|m| &m.bytes[..]).collect();
    let expected = common::sha256_hex_many(&bodies);
    assert_eq!(oracle.len(), big.messages.len());
    for (message, sha) in big.messages.iter().zip(&expected) {
        assert_eq!(
            oracle.get(&message.uid),
            Some(sha),
            "Big uid {}",
            message.uid
        );
    }

    for folder in seed.folders() {
        let meta = dovecot.oracle_meta(&folder.name);
        let uids: Vec<u32> = meta.keys().copied().collect();
        let expected_uids: Vec<u32> = folder.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, expected_uids, "{}", folder.name);
        for message in &folder.messages {
            let m = &meta[&message.uid];
            let what = format!("{} uid {}", folder.name, message.uid);
            assert_eq!(m.size, message.bytes.len() as u64, "RFC822.SIZE of {what}");
            assert_eq!(
                m.internal_date, message.internal_date,
                "INTERNALDATE of {what}"
            );
            assert_eq!(m.flags, message.flags, "flags of {what}");
        }
    }

    let inbox = seed.folder("INBOX");
    assert_eq!(dovecot.oracle_fetch("INBOX", 2), inbox.message(2).bytes);
    let unicode = seed.folder("Ünïcødé Folder");
    assert_eq!(
        dovecot.oracle_fetch("Ünïcødé Folder", 3),
        unicode.message(3).bytes
    );
    let all = dovecot.oracle_fetch_all("R&D");
    assert_eq!(all.len(), 2);
    assert_eq!(all[&1], seed.folder("R&D").message(1).bytes);
    assert_eq!(all[&2], seed.folder("R&D").message(2).bytes);

    // Reading through the oracle (EXAMINE + BODY.PEEK) never marks anything \Seen.
    let meta = dovecot.oracle_meta("Big");
    for message in &big.messages {
        assert_eq!(meta[&message.uid].flags, message.flags);
    }
}

#[test]
fn oracle_changes_the_mailbox_like_another_client() {
    let mut seed = Seed::new();
    let folder = seed.folder_mut("INBOX");
    for i in 0..3 {
        let message = common::TextMessage {
            from: "a@example.org",
            to: "b@example.org",
            subject: common::Subject::Plain("hello"),
            date: 1_700_000_000 + i,
            message_id: format!("<m{i}@imapfs.test>"),
            body_lines: vec!["line".to_string()],
        };
        folder.push_text(&message, &[]);
    }
    let dovecot = Dovecot::start(&seed);
    let before = dovecot.oracle_status("INBOX");
    assert_eq!((before.messages, before.uidnext), (3, 4));

    dovecot.oracle_expunge("INBOX", 2);
    let uids: Vec<u32> = dovecot.oracle_meta("INBOX").keys().copied().collect();
    assert_eq!(uids, [1, 3]);

    dovecot.oracle_store("INBOX", 3, "+FLAGS", &["\\Flagged", "\\Seen"]);
    assert_eq!(dovecot.oracle_flags("INBOX", 3), ["\\Flagged", "\\Seen"]);

    let appended = b"Subject: new\r\n\r\nbody\r\n";
    let uid = dovecot.oracle_append("INBOX", appended);
    assert_eq!(uid, 4);
    assert_eq!(dovecot.oracle_fetch("INBOX", 4), appended);

    dovecot.oracle_create("Fresh.Child");
    let names: BTreeSet<String> = dovecot.oracle_list().into_iter().map(|e| e.name).collect();
    assert!(names.contains("Fresh.Child"), "{names:?}");
    dovecot.oracle_delete("Fresh.Child");

    let after = dovecot.oracle_status("INBOX");
    assert_eq!(after.uidvalidity, before.uidvalidity);
}

#[test]
fn extra_config_restricts_capabilities() {
    let dovecot = Dovecot::start_with(&Seed::new(), "imap_capability = IMAP4rev1 LITERAL+");
    let caps = dovecot.starttls_capabilities();
    assert_eq!(caps, ["IMAP4rev1", "LITERAL+"]);
    assert_eq!(dovecot.oracle_status("INBOX").messages, 0);
}

/// The two hash helpers the oracle comparisons rest on (`sha256sum`, Python's hashlib) give
/// the FIPS 180-2 answers, and `sha256_hex_many` keeps items apart (an empty one, and bytes
/// that look like its length framing).
#[test]
fn sha256_helpers_give_the_known_answers() {
    let known: [(&[u8], &str); 3] = [
        (
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            b"",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ];
    for (data, hex) in known {
        assert_eq!(common::sha256_hex(data), hex, "{data:?}");
    }
    let framed: &[u8] = b"3\nabc";
    let many = common::sha256_hex_many(&[known[0].0, known[1].0, framed, known[2].0]);
    assert_eq!(
        many,
        [
            known[0].1.to_string(),
            known[1].1.to_string(),
            common::sha256_hex(framed),
            known[2].1.to_string(),
        ]
    );
    assert_ne!(many[2], known[0].1);
}

#[test]
fn run_enforces_its_deadline() {
    let started = Instant::now();
    let err = common::try_run(&["sleep", "30"], Duration::from_millis(300)).unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let out = common::run(
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        Duration::from_secs(5),
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}

#[test]
fn a_listener_is_told_apart_from_another_process_and_from_a_bound_port() {
    use common::ports::{listener_belongs_to, RefusingPort};
    let held = RefusingPort::new();
    let port = held.port;
    // Bound but not listening: nobody's listener.
    assert!(!listener_belongs_to(port, std::process::id()));
    let listener = held.listen();
    assert!(listener_belongs_to(port, std::process::id()));
    // A child of ours does not hold it (sockets are close-on-exec), so it is not the child's.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let childs = listener_belongs_to(port, child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(!childs, "the listener counted as the child's");
    drop(listener);
    assert!(!listener_belongs_to(port, std::process::id()));
}

fn proc_is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}
