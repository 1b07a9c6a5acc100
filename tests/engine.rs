//! The protocol engine and the store against a real Dovecot, without FUSE: pipelining costs,
//! IDLE, and that hostile strings reach the server exactly or not at all.

mod common;

use std::time::Duration;

use common::{Dovecot, Seed};
use imapfs::imap::auth::{connect, AuthMethod, Credential, Secret, Security, ServerConfig};
use imapfs::imap::codec::{Command, Limits};
use imapfs::imap::pool::Pool;
use imapfs::imap::session::Access;
use imapfs::imap::types::{MailboxName, UidValidity, Untagged};
use imapfs::store::{Account, MessageRef, StoreOptions};
use imapfs::Error;

fn server(d: &Dovecot, security: Security) -> ServerConfig {
    d.server_config(security)
}

fn mailbox(name: &str) -> MailboxName {
    MailboxName::from_utf8(name, false)
}

fn list_names(s: &mut imapfs::imap::session::Session) -> Vec<Vec<u8>> {
    let done = s
        .run(Command::List {
            reference: Vec::new(),
            pattern: b"*".to_vec(),
        })
        .unwrap();
    done.untagged
        .into_iter()
        .filter_map(|u| match u {
            Untagged::List(l) => Some(l.name.raw().to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn starttls_and_implicit_tls_both_log_in() {
    let d = Dovecot::start(&Seed::new());
    for sec in [Security::Tls, Security::StartTls] {
        let mut s = connect(&server(&d, sec)).unwrap_or_else(|e| panic!("{sec:?}: {e}"));
        assert!(list_names(&mut s).iter().any(|n| n == b"INBOX"));
        s.logout();
    }
}

#[test]
fn reading_many_blocks_of_one_message_costs_one_round_trip() {
    let seed = Seed::standard();
    let d = Dovecot::start(seed);
    let big = seed.folder("Big");
    let msg = big.messages.iter().max_by_key(|m| m.bytes.len()).unwrap();
    assert!(msg.bytes.len() > 4 * 65536, "seed has no big message");
    let pool = Pool::new(server(&d, Security::Tls), 1, None);
    // Small blocks, so that the message spans many of them.
    let opts = StoreOptions {
        block_size: 65536,
        readahead_blocks: 0,
        ..StoreOptions::default()
    };
    let account = Account::new(pool, opts);
    let id = account.mailbox_id(&mailbox("Big"));
    let index = account.index(id, Duration::ZERO).unwrap();
    let uid = imapfs::imap::types::Uid::new(msg.uid).unwrap();
    let (size, validity) = {
        let ix = index.read();
        (ix.messages()[&uid].size(), ix.validity())
    };
    assert_eq!(size, msg.bytes.len() as u64);
    let m = MessageRef {
        mailbox: id,
        validity,
        uid,
    };

    let before = account.pool().round_trips();
    let len = 8 * 65536;
    let data = account.read(m, 0, len).unwrap();
    let trips = account.pool().round_trips() - before;
    assert_eq!(data[..], msg.bytes[..len as usize]);
    assert_eq!(trips, 1, "8 blocks took {trips} round trips");

    // The same range again comes from the cache: no round trip at all.
    let before = account.pool().round_trips();
    let again = account.read(m, 100, 5 * 65536).unwrap();
    assert_eq!(again[..], msg.bytes[100..100 + 5 * 65536]);
    assert_eq!(account.pool().round_trips(), before);
}

#[test]
fn idle_wakes_up_when_mail_arrives() {
    let d = Dovecot::start(&Seed::new());
    let mut s = connect(&server(&d, Security::Tls)).unwrap();
    s.select(&mailbox("INBOX"), true).unwrap();
    // Nothing happens: IDLE returns empty after its time and the session stays usable.
    let quiet = s.idle(Duration::from_millis(300)).unwrap();
    assert!(
        quiet.iter().all(|u| !matches!(u, Untagged::Exists(_))),
        "{quiet:?}"
    );
    assert!(!s.is_broken());
    // Another client appends while we idle.
    let appender = std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            d.oracle_append("INBOX", b"Subject: hi\r\n\r\nnew mail\r\n");
        });
        let got = s.idle(Duration::from_secs(20)).unwrap();
        h.join().unwrap();
        got
    });
    assert!(
        appender
            .iter()
            .any(|u| matches!(u, Untagged::Exists(n) if *n >= 1)),
        "{appender:?}"
    );
    s.run(Command::Noop).unwrap();
}

#[test]
fn hostile_mailbox_names_reach_the_server_exactly_or_not_at_all() {
    let d = Dovecot::start(&Seed::new());
    let mut s = connect(&server(&d, Security::Tls)).unwrap();
    // What must happen to each: created exactly, refused by the encoder before the wire
    // (NUL cannot be sent at all), or sent as a literal and refused by the server with NO
    // (Dovecot: a CR or LF is not valid modified UTF-7), never run as a second command.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Created,
        RefusedByEncoder,
        ServerSaysNo,
    }
    let hostile: &[(&[u8], Outcome)] = &[
        (b"evil\r\nA999 CREATE injected1", Outcome::ServerSaysNo),
        (b"quote\"d", Outcome::Created),
        (b"back\\slash", Outcome::Created),
        (b"brace{5}", Outcome::Created),
        (b"paren)", Outcome::Created),
        (b"lf\nA998 CREATE injected2", Outcome::ServerSaysNo),
        (b"nul\0A997 CREATE injected3", Outcome::RefusedByEncoder),
        (b"{5}\r\nA996 CREATE injected4", Outcome::ServerSaysNo),
    ];
    for (raw, expected) in hostile {
        let name = MailboxName::from_wire(raw.to_vec(), false);
        let what = String::from_utf8_lossy(raw);
        let outcome = match s.run(Command::Create(name)) {
            Ok(_) => {
                let names = list_names(&mut s);
                assert!(
                    names.iter().any(|n| n == raw),
                    "{what:?} created under another name"
                );
                Outcome::Created
            }
            Err(imapfs::Error::InvalidInput(_)) => Outcome::RefusedByEncoder,
            Err(imapfs::Error::No {
                command: "CREATE", ..
            }) => Outcome::ServerSaysNo,
            Err(e) => panic!("{what:?}: {e:?}"),
        };
        assert_eq!(&outcome, expected, "{what:?}");
        assert!(!s.is_broken(), "{what:?} broke the session");
    }
    let names = list_names(&mut s);
    for n in &names {
        assert!(
            !String::from_utf8_lossy(n).starts_with("injected"),
            "injection ran: {names:?}"
        );
    }
    // The server answered exactly the commands we sent: no completion for an injected tag.
    s.run(Command::Noop).unwrap();
    assert_eq!(
        s.unclaimed_completions(),
        0,
        "the server completed a command we never sent"
    );
    // Names that are merely awkward (no control characters) must exist exactly as meant.
    for raw in [&b"quote\"d"[..], b"back\\slash", b"brace{5}", b"paren)"] {
        assert!(
            names.iter().any(|n| n == raw),
            "{:?} missing from {names:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // The connection still works and INBOX is intact.
    assert!(names.iter().any(|n| n == b"INBOX"));
}

#[test]
fn wrong_password_is_an_auth_error_with_the_servers_words() {
    let d = Dovecot::start(&Seed::new());
    let mut cfg = server(&d, Security::Tls);
    cfg.credential = Credential::Secret(Secret::new(b"not-the-password".to_vec()));
    let e = match connect(&cfg) {
        Ok(_) => panic!("logged in with a wrong password"),
        Err(e) => e,
    };
    assert!(matches!(e, imapfs::Error::Auth(_)), "{e:?}");
    assert!(!e.to_string().contains("not-the-password"));
}

#[test]
fn walking_a_folder_prefetches_the_next_messages() {
    let seed = Seed::standard();
    let d = Dovecot::start(seed);
    let big = seed.folder("Big");
    let pool = Pool::new(server(&d, Security::Tls), 1, None);
    let account = Account::new(pool, StoreOptions::default());
    let id = account.mailbox_id(&mailbox("Big"));
    let validity = account.index(id, Duration::ZERO).unwrap().read().validity();
    let small: Vec<_> = big
        .messages
        .iter()
        .filter(|m| m.bytes.len() < 64 * 1024)
        .take(48)
        .collect();
    assert!(small.len() >= 32, "seed has too few small messages");
    let before = account.pool().round_trips();
    for m in &small {
        let uid = imapfs::imap::types::Uid::new(m.uid).unwrap();
        let msg = MessageRef {
            mailbox: id,
            validity,
            uid,
        };
        let data = account.read(msg, 0, 1 << 20).unwrap();
        assert_eq!(data[..], m.bytes[..], "UID {}", m.uid);
    }
    let trips = account.pool().round_trips() - before;
    eprintln!("{} messages walked in {trips} round trips", small.len());
    // One round trip per message would be 48; prefetching 16 at a time needs a handful
    // (4 here). A walk ends after a 1 s pause between two messages (store/read.rs), which a
    // loaded machine can make: each such break costs a round trip or two, hence the margin.
    assert!(
        trips <= small.len() as u64 / 3,
        "{} messages took {trips} round trips",
        small.len()
    );
}

#[test]
fn hostile_flag_values_are_refused_before_the_wire() {
    use imapfs::imap::codec::StoreMode;
    use imapfs::imap::types::{Flag, SequenceSet};
    let seed = Seed::standard();
    let d = Dovecot::start(seed);
    let mut s = connect(&server(&d, Security::Tls)).unwrap();
    s.select(&mailbox("INBOX"), false).unwrap();
    for bad in [
        "x\r\nA1 DELETE INBOX",
        "a)b",
        "q\"uote",
        "{5}",
        "nul\0x",
        "back\\slash",
        "sp ace",
    ] {
        // The parser of user input refuses them outright...
        assert_eq!(Flag::parse(bad), None, "{bad:?}");
        // ...and a hand-built keyword is refused by the encoder, without breaking the session.
        let cmd = Command::Store {
            uid: true,
            set: SequenceSet::single(1),
            mode: StoreMode::Add,
            silent: true,
            flags: vec![Flag::Keyword(bad.to_string())],
            unchanged_since: None,
        };
        let err = s.run(cmd).expect_err(bad);
        assert_eq!(err.errno(), libc::EINVAL, "{bad:?}: {err}");
        assert!(!s.is_broken());
    }
    // Nothing reached the server: INBOX is intact and message 1 has its seeded flags only.
    assert!(list_names(&mut s).iter().any(|n| n == b"INBOX"));
    let flags = d.oracle_flags("INBOX", 1);
    let seeded = &seed.folder("INBOX").messages[0].flags;
    let mut got: Vec<_> = flags.iter().filter(|f| *f != "\\Recent").cloned().collect();
    let mut want = seeded.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn preauth_tunnel_is_accepted() {
    let seed = Seed::standard();
    let d = Dovecot::start(seed);
    let mut cfg = server(&d, Security::Tls);
    cfg.tunnel = Some(format!(
        "exec doveadm -c '{}' exec imap -u '{}' 2>/dev/null",
        d.conf.display(),
        d.user
    ));
    let mut s = connect(&cfg).unwrap();
    assert!(list_names(&mut s).iter().any(|n| n == b"Big"));
    let sel = s.select(&mailbox("INBOX"), true).unwrap();
    assert_eq!(sel.exists as usize, seed.folder("INBOX").messages.len());
    s.logout();
    // A tunnel command that dies at once is an error, not a hang.
    cfg.tunnel = Some("exit 3".into());
    match connect(&cfg) {
        Err(imapfs::Error::Bye(_)) => {}
        Err(e) => panic!("a tunnel that exits is a closed connection (Bye), not {e:?}"),
        Ok(_) => panic!("connected through a tunnel that exited"),
    }
}

#[test]
fn every_password_mechanism_dovecot_offers_logs_in() {
    let d = Dovecot::start_with(
        &Seed::new(),
        "auth_mechanisms = plain login cram-md5\nauth_failure_delay = 0",
    );
    for method in [
        AuthMethod::Auto,
        AuthMethod::Login,
        AuthMethod::Plain,
        AuthMethod::CramMd5,
    ] {
        let mut cfg = server(&d, Security::Tls);
        cfg.auth = method;
        let mut s = connect(&cfg).unwrap_or_else(|e| panic!("{method:?}: {e}"));
        assert!(
            list_names(&mut s).iter().any(|n| n == b"INBOX"),
            "{method:?}"
        );
        s.logout();
        cfg.credential = Credential::Secret(Secret::new(b"wrong".to_vec()));
        match connect(&cfg) {
            Err(imapfs::Error::Auth(_)) => {}
            Err(e) => panic!("{method:?} with a wrong password: {e:?}"),
            Ok(_) => panic!("{method:?} logged in with a wrong password"),
        }
    }
}

#[test]
fn a_folder_listing_costs_one_round_trip() {
    let seed = Seed::standard();
    let d = Dovecot::start(seed);
    let pool = Pool::new(server(&d, Security::Tls), 1, None);
    let account = Account::new(pool, StoreOptions::default());
    for folder in ["Big", "Empty", "INBOX"] {
        let id = account.mailbox_id(&mailbox(folder));
        // Warm the connection first (login and capabilities are not the listing's cost).
        account.index(id, Duration::ZERO).unwrap();
        let before = account.pool().round_trips();
        let index = account.index(id, Duration::ZERO).unwrap();
        assert_eq!(account.pool().round_trips() - before, 1, "{folder}");
        assert_eq!(
            index.read().messages().len(),
            seed.folder(folder).messages.len(),
            "{folder}"
        );
    }
}

#[test]
fn non_ascii_names_decode_whether_or_not_utf8_accept_is_enabled() {
    let seed = Seed::standard();
    for extra in ["", "imap_capability = +UTF8=ACCEPT"] {
        let d = Dovecot::start_with(seed, extra);
        let mut s =
            connect(&server(&d, Security::Tls)).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        let done = s
            .run(Command::List {
                reference: Vec::new(),
                pattern: b"*".to_vec(),
            })
            .unwrap();
        let names: Vec<MailboxName> = done
            .untagged
            .iter()
            .filter_map(|u| match u {
                Untagged::List(l) => Some(l.name.clone()),
                _ => None,
            })
            .collect();
        let name = names
            .iter()
            .find(|n| n.as_str() == "\u{dc}n\u{ef}c\u{f8}d\u{e9} Folder")
            .unwrap_or_else(|| panic!("{extra:?}: {names:?}"));
        // The name as listed goes back to the server in a form it understands.
        let sel = s
            .select(name, true)
            .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert_eq!(
            sel.exists as usize,
            seed.folder("\u{dc}n\u{ef}c\u{f8}d\u{e9} Folder")
                .messages
                .len(),
            "{extra:?}"
        );
    }
}

#[test]
fn auto_login_uses_cram_md5_when_it_is_the_only_mechanism() {
    // Issue 8, defect 11: `--auth auto` against a server whose only mechanism is CRAM-MD5
    // (LOGIN disabled) failed instead of using CRAM-MD5.
    let d = Dovecot::start_with(
        &Seed::new(),
        "auth_mechanisms = cram-md5\nauth_failure_delay = 0",
    );
    for sec in [Security::Tls, Security::StartTls] {
        let cfg = server(&d, sec);
        // The premise: over TLS too, this server offers CRAM-MD5 and has disabled LOGIN.
        let mut probe = imapfs::imap::session::Session::start(
            imapfs::imap::transport::Transport::connect(
                "127.0.0.1",
                d.imaps_port,
                cfg.timeouts.inactivity,
            )
            .unwrap()
            .start_tls(
                cfg.tls.clone(),
                "127.0.0.1",
                std::time::Instant::now() + cfg.timeouts.inactivity,
            )
            .unwrap(),
            cfg.timeouts.clone(),
            Limits::default(),
        )
        .unwrap()
        .0;
        let caps = probe.capabilities().unwrap().to_vec();
        assert!(caps.iter().any(|c| c == "AUTH=CRAM-MD5"), "{caps:?}");
        assert!(caps.iter().any(|c| c == "LOGINDISABLED"), "{caps:?}");
        assert!(!caps.iter().any(|c| c == "AUTH=PLAIN"), "{caps:?}");

        let mut s = connect(&cfg).unwrap_or_else(|e| panic!("{sec:?}: {e}"));
        assert!(list_names(&mut s).iter().any(|n| n == b"INBOX"), "{sec:?}");
        s.logout();
        let mut wrong = cfg.clone();
        wrong.credential = Credential::Secret(Secret::new(b"wrong".to_vec()));
        match connect(&wrong) {
            Err(imapfs::Error::Auth(_)) => {}
            Err(e) => panic!("{sec:?} with a wrong password: {e:?}"),
            Ok(_) => panic!("{sec:?}: logged in with a wrong password"),
        }
    }
}

/// `Session::select_at` serves a mailbox only at the generation (UIDVALIDITY) the caller
/// names: a recreated mailbox is `ValidityChanged` (ENOENT), whatever the session held, and a
/// session that holds an older generation than the caller selects afresh.
#[test]
fn select_at_serves_only_the_generation_asked_for() {
    let d = Dovecot::start(&Seed::new());
    d.oracle_create("Gen");
    d.oracle_append("Gen", b"Subject: one\r\n\r\nold\r\n");
    let name = mailbox("Gen");
    let mut s = connect(&server(&d, Security::Tls)).unwrap();
    let first = UidValidity::new(d.oracle_status("Gen").uidvalidity).unwrap();
    let sel = s.select_at(&name, first, Access::Read).unwrap();
    assert_eq!(sel.uidvalidity, Some(first));
    assert!(sel.read_only, "a read is served by EXAMINE");
    let sel = s.select_at(&name, first, Access::Write).unwrap();
    assert!(!sel.read_only, "a write needs a read-write SELECT");

    // Another client recreates the mailbox while this session is elsewhere.
    s.select(&mailbox("INBOX"), true).unwrap();
    d.oracle_delete("Gen");
    d.oracle_create("Gen");
    d.oracle_append("Gen", b"Subject: two\r\n\r\nnew\r\n");
    let second = UidValidity::new(d.oracle_status("Gen").uidvalidity).unwrap();
    assert_ne!(
        second, first,
        "Dovecot gives a recreated mailbox a new UIDVALIDITY"
    );
    for access in [Access::Read, Access::Write] {
        let err = s.select_at(&name, first, access).unwrap_err();
        assert_eq!(err.errno(), libc::ENOENT, "{err}");
        match err {
            Error::ValidityChanged {
                expected, found, ..
            } => assert_eq!((expected, found), (first, second)),
            other => panic!("{access:?}: expected ValidityChanged, got {other}"),
        }
        assert!(!s.is_broken());
    }

    // This session holds the second generation; the caller already knows a third.
    d.oracle_delete("Gen");
    d.oracle_create("Gen");
    let third = UidValidity::new(d.oracle_status("Gen").uidvalidity).unwrap();
    assert_ne!(third, second);
    let sel = s.select_at(&name, third, Access::Write).unwrap();
    assert_eq!(sel.uidvalidity, Some(third));
    assert!(!sel.read_only);
    s.run(Command::Noop).unwrap();
}
