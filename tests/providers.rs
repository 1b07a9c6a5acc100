//! Provider behaviour (issue 15) against a real Dovecot configured like the provider: connection
//! caps, capability lines. (Scripted emulators of Gmail, Microsoft 365 and Yahoo are in
//! tests/providers_script.rs.)

mod common;
mod script;

use std::process::Command as Process;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::provider_proxy::ProviderProxy;
use common::{Dovecot, Mount, MountOptions, Seed};
use imapfs::imap::auth::{connect, Security, ServerConfig};
use imapfs::imap::codec::Command;
use imapfs::imap::pool::{Pool, Retry};
use imapfs::imap::types::MailboxName;
use imapfs::Error;
use script::mailbox::{body_of, MailboxServer};

/// Dovecot 2.3 refusing a user's fourth connection from one address, as a busy account at a
/// provider does (`NO [LIMIT] Maximum number of connections from user+IP exceeded`).
const THREE_CONNECTIONS: &str = "protocol imap {\n  mail_max_userip_connections = 3\n}\n";

fn server(d: &Dovecot, security: Security) -> ServerConfig {
    d.server_config(security)
}

#[test]
fn a_login_refused_for_the_number_of_connections_is_its_own_error() {
    let d = Dovecot::start_with(Seed::standard(), THREE_CONNECTIONS);
    let cfg = server(&d, Security::Tls);
    let held: Vec<_> = (0..3)
        .map(|i| connect(&cfg).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    match connect(&cfg) {
        Err(Error::TooManyConnections(words)) => {
            assert!(words.contains("Maximum number of connections"), "{words}")
        }
        Err(e) => panic!("a fourth connection: {e:?}, not TooManyConnections"),
        Ok(_) => panic!("Dovecot allowed a fourth connection: the test server is not capped"),
    }
    // The error maps to "try again", not to "permission denied" (EACCES is a wrong password).
    assert_eq!(
        Error::TooManyConnections(String::new()).errno(),
        libc::EAGAIN
    );
    drop(held);
}

#[test]
fn a_pool_larger_than_the_server_allows_shrinks_and_serves_every_request() {
    // Issue 15: with a limit of 3 and `--connections 8`, one or two of 300 parallel reads
    // failed with EACCES or EIO. Now the refused login shrinks the pool.
    let d = Dovecot::start_with(Seed::standard(), THREE_CONNECTIONS);
    let pool = Arc::new(Pool::new(server(&d, Security::Tls), 8, None));
    let inbox = MailboxName::from_utf8("INBOX", false);
    let workers: Vec<_> = (0..12)
        .map(|w| {
            let pool = pool.clone();
            let inbox = inbox.clone();
            thread::spawn(move || {
                for i in 0..25 {
                    pool.with_session(Some(&inbox), Retry::Idempotent, |s| {
                        s.run(Command::Status {
                            mailbox: inbox.clone(),
                            items: vec!["MESSAGES"],
                        })?;
                        s.run(Command::Noop)
                    })
                    .unwrap_or_else(|e| panic!("worker {w}, request {i}: {e:?}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let stats = pool.stats();
    assert!(stats.open <= 3, "{stats:?}");
    assert!(
        stats.connect_failures == 0,
        "a refused connection counted as a failure: {stats:?}"
    );
}

#[test]
fn parallel_reads_through_a_mount_at_a_connection_cap_all_succeed() {
    let d = Dovecot::start_with(Seed::standard(), THREE_CONNECTIONS);
    let mount = Mount::start(&d, &["--connections", "8"]).expect("mount");
    let want = d.oracle_fetch_all("Big");
    let dir = mount.join("Big");
    let names: Vec<String> = want.keys().map(|uid| format!("{uid}.eml")).collect();
    // 16 readers at once: far more than 3 connections.
    let out = Process::new("sh")
        .arg("-c")
        .arg("printf '%s\\n' \"$@\" | xargs -P 16 -n 4 sha256sum")
        .arg("sh")
        .args(&names)
        .current_dir(&dir)
        .output()
        .expect("xargs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "readers failed: {stderr}");
    let sums: std::collections::HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, name)| (name.to_string(), sum.to_string()))
        .collect();
    let bodies: Vec<&[u8]> = want.values().map(Vec::as_slice).collect();
    let expected = common::sha256_hex_many(&bodies);
    for (uid, sum) in want.keys().zip(&expected) {
        let name = format!("{uid}.eml");
        assert_eq!(sums.get(&name), Some(sum), "{name}");
    }
}

/// Microsoft 365's capability line after login (without AUTH=XOAUTH2: the test logs in with
/// a password).
const M365_CAPS: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN \
                         IDLE NAMESPACE LITERAL+";
/// Yahoo's.
const YAHOO_CAPS: &str = "IMAP4rev1 ID MOVE NAMESPACE XYMHIGHESTMODSEQ UIDPLUS LITERAL+ \
                          CHILDREN X-MSG-EXT UNSELECT OBJECTID";

/// Words in a command line that only an extension allows, by the capability that allows them.
const EXTENSION_WORDS: &[(&str, &[&str])] = &[
    (
        "CONDSTORE",
        &["CONDSTORE", "MODSEQ", "CHANGEDSINCE", "UNCHANGEDSINCE"],
    ),
    ("QRESYNC", &["QRESYNC", "VANISHED"]),
    (
        "ESEARCH",
        &["RETURN (MIN", "RETURN (ALL", "RETURN (COUNT", "RETURN ()"],
    ),
    (
        "LIST-EXTENDED",
        &["(SUBSCRIBED", "(SPECIAL-USE", "RETURN (CHILDREN"],
    ),
    ("LIST-STATUS", &["RETURN (STATUS"]),
    ("SPECIAL-USE", &["SPECIAL-USE"]),
    ("NOTIFY", &[" NOTIFY "]),
    ("COMPRESS=DEFLATE", &[" COMPRESS "]),
    ("ENABLE", &[" ENABLE "]),
    ("UTF8=ACCEPT", &["UTF8=ACCEPT"]),
    ("BINARY", &["BINARY[", "BINARY.PEEK["]),
    ("MOVE", &[" MOVE "]),
    ("ID", &[" ID "]),
    ("UNSELECT", &[" UNSELECT"]),
    ("IDLE", &[" IDLE"]),
    ("ESORT", &[" SORT "]),
    ("OBJECTID", &["EMAILID", "THREADID"]),
    ("X-GM-EXT-1", &["X-GM-"]),
];

/// The command lines that use an extension not in `caps`.
fn unadvertised(caps: &str, lines: &[String]) -> Vec<String> {
    let caps: Vec<&str> = caps.split_whitespace().collect();
    lines
        .iter()
        .filter(|line| {
            let upper = format!("{} ", line.to_ascii_uppercase());
            EXTENSION_WORDS.iter().any(|(cap, words)| {
                !caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
                    && words.iter().any(|w| upper.contains(w))
            })
        })
        .cloned()
        .collect()
}

fn mount_through(d: &Dovecot, port: u16, args: &[&str]) -> Mount {
    let mut all = vec!["--insecure"];
    all.extend_from_slice(args);
    MountOptions::new(d)
        .url(format!("imap://{}@127.0.0.1:{port}", d.user))
        .args(&all)
        .start()
        .unwrap_or_else(|f| panic!("{f}"))
}

fn run_ok(args: &[&str]) -> String {
    let out = Process::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A day of use on a server that advertises only `caps` (Dovecot told to advertise that
/// line; it would still serve CONDSTORE, QRESYNC and ESEARCH if asked, which is why the
/// commands are checked on the wire): reads byte-identical, flags, rm, mv, mkdir, search.
fn only_what_is_advertised(caps: &str) {
    let d = Dovecot::start_with(Seed::standard(), &format!("imap_capability = {caps}"));
    let proxy = ProviderProxy::recording(d.imap_port);
    let mount = mount_through(&d, proxy.port, &[]);
    let want = d.oracle_fetch_all("INBOX");
    for (uid, body) in &want {
        let got = std::fs::read(mount.join(format!("INBOX/{uid}.eml"))).expect("read");
        assert!(got == *body, "INBOX/{uid}.eml differs from the server's");
    }
    let first = want.keys().next().copied().expect("INBOX has mail");
    let last = want.keys().last().copied().expect("INBOX has mail");
    let file = mount.join(format!("INBOX/{first}.eml"));
    let file = file.to_string_lossy();
    run_ok(&[
        "setfattr",
        "-n",
        "user.imap.flags",
        "-v",
        "+\\Flagged",
        &file,
    ]);
    run_ok(&["ls", "-l", &mount.join("Archive").to_string_lossy()]);
    run_ok(&[
        "mv",
        &mount.join(format!("INBOX/{last}.eml")).to_string_lossy(),
        &mount.join("Archive/").to_string_lossy(),
    ]);
    run_ok(&["rm", &file]);
    run_ok(&["mkdir", &mount.join("Made").to_string_lossy()]);
    run_ok(&["ls", &mount.join(".search").to_string_lossy()]);
    let lines = proxy.lines();
    assert!(lines.len() > 10, "the proxy saw too little: {lines:?}");
    // ID where offered, naming imapfs (Google asks clients to).
    if caps.split_whitespace().any(|c| c == "ID") {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(" ID (\"name\" \"imapfs\" \"version\" ")),
            "no ID naming imapfs: {lines:#?}"
        );
    }
    let bad = unadvertised(caps, &lines);
    assert!(bad.is_empty(), "commands outside {caps}: {bad:#?}");
    // The moved and removed messages are really gone from INBOX.
    let now = d.oracle_meta("INBOX");
    assert!(!now.contains_key(&first) && !now.contains_key(&last));
}

#[test]
fn on_microsoft_365s_capabilities_nothing_unadvertised_is_sent() {
    only_what_is_advertised(M365_CAPS);
}

#[test]
fn check_names_the_provider_from_its_capabilities() {
    let gmail = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID CHILDREN X-GM-EXT-1 UIDPLUS ENABLE \
                 MOVE CONDSTORE ESEARCH LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE";
    for (caps, name, note) in [
        (M365_CAPS, "Microsoft 365", "throttled requests wait"),
        (YAHOO_CAPS, "Yahoo", "no CONDSTORE"),
        (gmail, "Gmail", "one inode"),
        ("", "standard IMAP", ""),
    ] {
        let setting = if caps.is_empty() {
            String::new()
        } else {
            format!("imap_capability = {caps}")
        };
        let d = Dovecot::start_with(Seed::standard(), &setting);
        let config_home = common::unique_temp_dir("check-profile");
        let mut command = common::imapfs_command(&config_home);
        command
            .args(["check", "--ca-file"])
            .arg(&d.ca_file)
            .arg(format!("imaps://{}@127.0.0.1:{}", d.user, d.imaps_port))
            .env("IMAPFS_PASSWORD", &d.password);
        let out = common::finish(command, Duration::from_secs(60));
        let _ = std::fs::remove_dir_all(&config_home);
        assert_eq!(out.code(), 0, "{out:?}");
        let stdout = &out.stdout;
        let profile = format!("profile:       {name}\n");
        assert!(stdout.contains(&profile), "{caps}: {stdout}");
        assert!(stdout.contains(note), "{caps}: {stdout}");
    }
}

/// Another client's append and flag change in the folder in use show through the mount on a
/// server with only `caps` (Microsoft 365: IDLE but no CONDSTORE or NOTIFY; Yahoo: neither
/// IDLE nor CONDSTORE), long before the listing's TTL (an hour here) would have shown them:
/// the watcher's IDLE or NOOP on the folder in use and its STATUS polls did it. The times are
/// printed (the goal is 2 s); the deadline only bounds a loaded machine.
fn other_clients_changes_show_in_the_folder_in_use(caps: &str) {
    let d = Dovecot::start_with(Seed::standard(), &format!("imap_capability = {caps}"));
    let mount = mount_through(&d, d.imap_port, &["--dir-ttl", "3600"]);
    let inbox = mount.join("INBOX");
    let listed = |name: &str| {
        std::fs::read_dir(&inbox)
            .map(|rd| rd.filter_map(|e| e.ok()).any(|e| e.file_name() == name))
            .unwrap_or(false)
    };
    let first = *d
        .oracle_meta("INBOX")
        .keys()
        .next()
        .expect("INBOX has mail");
    assert!(listed(&format!("{first}.eml")));
    let flags_of = |uid: u32| {
        common::getfattr(&inbox.join(format!("{uid}.eml")), "user.imap.flags").unwrap_or_default()
    };
    assert!(!flags_of(first).contains("\\Flagged"));
    let limit = Duration::from_secs(20);

    let uid = d.oracle_append("INBOX", b"Subject: from elsewhere\r\n\r\nhello\r\n");
    let started = std::time::Instant::now();
    common::wait_for("the other client's message", limit, || {
        listed(&format!("{uid}.eml")).then_some(())
    });
    eprintln!("{caps}: append shown after {:?}", started.elapsed());

    d.oracle_store("INBOX", first, "+FLAGS", &["\\Flagged"]);
    let started = std::time::Instant::now();
    common::wait_for("the other client's flag", limit, || {
        flags_of(first).contains("\\Flagged").then_some(())
    });
    eprintln!("{caps}: flag shown after {:?}", started.elapsed());
}

#[test]
fn other_clients_changes_show_on_microsoft_365s_capabilities() {
    other_clients_changes_show_in_the_folder_in_use(M365_CAPS);
}

#[test]
fn other_clients_changes_show_on_yahoos_capabilities() {
    other_clients_changes_show_in_the_folder_in_use(YAHOO_CAPS);
}

#[test]
fn on_yahoos_capabilities_nothing_unadvertised_is_sent() {
    only_what_is_advertised(YAHOO_CAPS);
}

#[test]
fn unadvertised_words_are_seen() {
    // The checker itself: a CONDSTORE select on a server without it is caught.
    let lines = vec![
        "a1 SELECT INBOX (CONDSTORE)".to_string(),
        "a2 NOOP".to_string(),
    ];
    assert_eq!(unadvertised(M365_CAPS, &lines), vec![lines[0].clone()]);
    assert!(unadvertised("IMAP4rev1 CONDSTORE", &lines).is_empty());
}

#[test]
fn throttled_reads_wait_as_asked_and_succeed() {
    let d = Dovecot::start_with(Seed::standard(), &format!("imap_capability = {M365_CAPS}"));
    let wait = Duration::from_millis(300);
    let proxy = ProviderProxy::throttling(d.imap_port, 2, wait);
    let mount = mount_through(&d, proxy.port, &[]);
    let want = d.oracle_fetch_all("INBOX");
    // Newest first: not a walk, so no stream and no walk prefetch pipelines other messages
    // with a read; each read goes out alone, as the proxy throttles them.
    for (uid, body) in want.iter().rev() {
        let got = std::fs::read(mount.join(format!("INBOX/{uid}.eml")))
            .unwrap_or_else(|e| panic!("INBOX/{uid}.eml: {e} (throttled reads must succeed)"));
        assert!(got == *body, "INBOX/{uid}.eml differs from the server's");
    }
    let reads: Vec<String> = proxy
        .lines()
        .into_iter()
        .filter(|l| l.contains("BODY.PEEK["))
        .collect();
    assert!(
        proxy.throttled() >= 2,
        "the proxy throttled {} reads: the test did not test; reads: {reads:#?}",
        proxy.throttled()
    );
    assert_eq!(
        proxy.impatient(),
        0,
        "a request came before the suggested wait"
    );
}

/// Dovecot refusing messages over 4 KiB (its quota plugin) and saying so (APPENDLIMIT).
const APPENDLIMIT_4K: &str = "mail_plugins = $mail_plugins quota\n\
    protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n\
    plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=1G\n  \
    quota_max_mail_size = 4k\n}\n\
    imap_capability = +APPENDLIMIT=4096\n";

fn message(size: usize, subject: &str) -> Vec<u8> {
    let mut body =
        format!("Subject: {subject}\r\nMessage-ID: <{subject}@imapfs.test>\r\n\r\n").into_bytes();
    while body.len() + 2 < size {
        body.extend_from_slice(
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n",
        );
    }
    body.truncate(size - 2);
    body.extend_from_slice(b"\r\n");
    body
}

#[test]
fn a_message_over_the_appendlimit_is_efbig_before_any_byte_is_sent() {
    let d = Dovecot::start_with(Seed::standard(), APPENDLIMIT_4K);
    let proxy = ProviderProxy::recording(d.imap_port);
    let mount = mount_through(&d, proxy.port, &[]);
    let before = d.oracle_meta("Archive").len();
    let big = message(20_000, "too-big");
    let err = std::fs::write(mount.join("Archive/big.eml"), &big)
        .expect_err("a message over APPENDLIMIT was accepted");
    assert_eq!(err.raw_os_error(), Some(libc::EFBIG), "{err}");
    let appends: Vec<String> = proxy
        .lines()
        .into_iter()
        .filter(|l| l.to_ascii_uppercase().contains(" APPEND "))
        .collect();
    assert!(appends.is_empty(), "APPEND sent anyway: {appends:?}");
    assert_eq!(d.oracle_meta("Archive").len(), before);
    // A message under the limit goes through.
    std::fs::write(mount.join("Archive/small.eml"), message(2_000, "small")).expect("small");
    // (The APPEND may follow close(2) by a moment: drafts send at release.)
    common::wait_for(
        "the small message on the server",
        Duration::from_secs(20),
        || (d.oracle_meta("Archive").len() == before + 1).then_some(()),
    );
}

#[test]
fn literal_minus_sends_only_small_literals_without_waiting() {
    let d = Dovecot::start_with(
        Seed::standard(),
        "imap_capability = IMAP4rev1 LITERAL- UIDPLUS MOVE IDLE ID",
    );
    let proxy = ProviderProxy::recording(d.imap_port);
    let mount = mount_through(&d, proxy.port, &[]);
    let small = message(1_000, "lit-small");
    let large = message(10_000, "lit-large");
    std::fs::write(mount.join("Archive/small.eml"), &small).expect("small");
    std::fs::write(mount.join("Archive/large.eml"), &large).expect("large");
    let appends: Vec<String> = common::wait_for("both APPENDs", Duration::from_secs(20), || {
        let appends: Vec<String> = proxy
            .lines()
            .into_iter()
            .filter(|l| l.to_ascii_uppercase().contains(" APPEND "))
            .collect();
        (appends.len() >= 2).then_some(appends)
    });
    assert!(
        appends.iter().any(|l| l.ends_with("{1000+}")),
        "the small message did not go as a non-synchronising literal: {appends:?}"
    );
    assert!(
        appends.iter().any(|l| l.ends_with("{10000}")),
        "the large message was not sent as a synchronising literal: {appends:?}"
    );
    assert!(
        !appends.iter().any(|l| l.ends_with("{10000+}")),
        "{appends:?}"
    );
    let bodies = d.oracle_fetch_all("Archive");
    assert!(bodies.values().any(|b| *b == small) && bodies.values().any(|b| *b == large));
}

/// Yahoo (issue 15): small body sections come back as quoted strings, not literals, and the
/// listing carries OBJECTID's EMAILID and THREADID. Through a mount of a server in Yahoo's
/// manner every message reads byte-identical: a whole small message sent quoted, and a
/// message whose last block (its tail after the first MiB, holding `"` and `\`) is quoted.
#[test]
fn yahoo_quoted_body_sections_read_byte_identical_and_objectids_show() {
    const BLOCK: usize = 1 << 20;
    let small = b"Subject: short \"quoted\" note with a \\ backslash".to_vec();
    let mut long = body_of(2, BLOCK);
    long.extend_from_slice(b"tail: \"quotes\", a \\ and the end");
    let messages = vec![
        (1, small.len() as u64, small.clone()),
        (2, long.len() as u64, long.clone()),
        (3, 5_000, body_of(3, 5_000)),
    ];
    let server = MailboxServer::start_yahoo(&messages);
    let mount = MountOptions::custom(server.url(), server.script.ca_file.clone(), "secret")
        .start()
        .unwrap_or_else(|e| panic!("mount failed: {e}"));
    for (uid, _, body) in &messages {
        let got = common::within("read", Duration::from_secs(30), {
            let path = mount.join(format!("INBOX/{uid}.eml"));
            move || std::fs::read(&path)
        })
        .expect("read");
        assert!(
            got == *body,
            "UID {uid}: {} bytes read, {} served",
            got.len(),
            body.len()
        );
    }
    assert!(
        server.quoted() >= 2,
        "the server quoted {} sections: the case under test did not happen",
        server.quoted()
    );
    assert_eq!(
        common::getfattr(&mount.join("INBOX/2.eml"), "user.imap.emailid").as_deref(),
        Ok("Y2")
    );
}
