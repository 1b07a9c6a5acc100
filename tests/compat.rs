//! Other real IMAP servers than Dovecot (GNU mailutils imap4d, Courier-IMAP, Cyrus IMAP): the
//! harness of tests/common/servers.rs starts each and its oracle sees exactly the seed, and one
//! test per client-relevant quirk pins what Debian's package does today (docs/compatibility.md
//! lists them), so a change in a package is noticed.
//!
//! A server this machine cannot run (not installed by scripts/servers.sh, or not root) is
//! skipped with a `SKIPPED: <test> (<why>)` line on stderr (`common::servers::skip`), which
//! scripts/test.sh counts as a skip, never as a pass; under `IMAPFS_REQUIRE_COMPAT=1` (CI) it
//! fails the test instead.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::servers::{start_or_skip, Exchange, ImapServer, ServerKind};
use common::{days_from_civil, run, sha256_hex, within, MountOptions, Seed, Subject, TextMessage};

/// A seed message: subject and flags.
type SeedLine<'a> = (Subject<'a>, &'a [&'a str]);

/// A small seed with what tells servers apart: flags, hierarchy, a child without its parent,
/// an empty folder, names that need quoting and modified UTF-7.
fn compat_seed() -> Seed {
    let mut seed = Seed::new();
    let base = days_from_civil(2024, 3, 1) * 86_400 + 9 * 3600;
    let folders: [(&str, &[SeedLine]); 7] = [
        (
            "INBOX",
            &[
                (Subject::Plain("Welcome"), &["\\Seen"]),
                (Subject::Base64("Grüße aus Köln"), &["\\Flagged", "\\Seen"]),
                (Subject::Plain("Unread"), &[]),
                (Subject::Plain("Answered draft"), &["\\Answered", "\\Draft"]),
            ],
        ),
        ("Archive", &[(Subject::Plain("Old invoice"), &["\\Seen"])]),
        (
            "Archive.2024",
            &[
                (Subject::Plain("January report"), &[]),
                (Subject::Plain("February report"), &["\\Seen"]),
            ],
        ),
        ("Empty", &[]),
        ("Lists.rust", &[(Subject::Plain("[rust] TWiR"), &[])]),
        ("R&D", &[(Subject::Quoted("Prototype résumé"), &["\\Seen"])]),
        (
            "Ünïcødé Folder",
            &[(Subject::Base64("Привет, мир"), &["\\Flagged"])],
        ),
    ];
    let mut n = 0;
    for (folder, messages) in folders {
        for (subject, flags) in messages.iter() {
            n += 1;
            let message = TextMessage {
                from: "Alice Example <alice@example.org>",
                to: "Test User <tester@example.org>",
                subject: *subject,
                date: base + n * 3600,
                message_id: format!("<compat.{n}@imapfs.test>"),
                body_lines: vec![
                    format!("Message {n} in {folder}."),
                    String::new(),
                    "Ünïcødé body line: Grüße, déjà vu.".to_string(),
                ],
            };
            seed.folder_mut(folder).push_text(&message, flags);
        }
        seed.folder_mut(folder);
    }
    seed
}

/// Starts `kind` with the compat seed, or prints why it is skipped.
fn start(kind: ServerKind) -> Option<(ImapServer, Seed)> {
    let seed = compat_seed();
    let server = start_or_skip(kind, &seed)?;
    eprintln!(
        "{} on port {}:\n{}",
        kind.name(),
        server.port,
        kind.versions()
    );
    Some((server, seed))
}

// ---------------------------------------------------------------------------------------------
// The harness: every server starts and its oracle sees exactly the seed
// ---------------------------------------------------------------------------------------------

fn oracle_sees_the_seed(kind: ServerKind) {
    let Some((server, seed)) = start(kind) else {
        return;
    };
    let names: BTreeSet<String> = server.oracle_list().into_iter().map(|e| e.name).collect();
    for folder in seed.folders() {
        let name = server.mailbox(&folder.name);
        assert!(names.contains(&name), "{name:?} not listed: {names:?}");
        let bodies = server.oracle_fetch_all(&name);
        let meta = server.oracle_meta(&name);
        assert_eq!(bodies.len(), folder.messages.len(), "{name}");
        for message in &folder.messages {
            assert_eq!(
                bodies[&message.uid], message.bytes,
                "{name} uid {}",
                message.uid
            );
            let m = &meta[&message.uid];
            assert_eq!(m.flags, message.flags, "{name} uid {}", message.uid);
            // mailutils takes INTERNALDATE from the Date header (quirk test below).
            let internal_date = if kind == ServerKind::Mailutils {
                message.date
            } else {
                message.internal_date
            };
            assert_eq!(m.internal_date, internal_date, "{name} uid {}", message.uid);
        }
        let status = server.oracle_status(&name);
        assert_eq!(status.messages as usize, folder.messages.len(), "{name}");
    }

    // The oracle changes what the server holds: flags, append, expunge, create, delete.
    let inbox = "INBOX";
    server.oracle_store(inbox, 3, "+FLAGS", &["\\Flagged"]);
    assert_eq!(server.oracle_flags(inbox, 3), ["\\Flagged"]);
    server.oracle_store(inbox, 3, "-FLAGS", &["\\Flagged"]);
    assert!(server.oracle_flags(inbox, 3).is_empty());
    let new = b"From: x@example.org\r\nSubject: appended\r\n\r\nhello\r\n";
    // (mailutils drops APPEND's flags: appended without, flagged by STORE.)
    let uid = server.oracle_append(inbox, new);
    assert!(uid >= 5, "appended uid {uid}");
    assert_eq!(server.oracle_fetch(inbox, uid), new);
    server.oracle_store(inbox, uid, "+FLAGS", &["\\Seen"]);
    assert_eq!(server.oracle_flags(inbox, uid), ["\\Seen"]);
    server.oracle_expunge(inbox, uid);
    assert!(!server.oracle_meta(inbox).contains_key(&uid));
    server.plant_deleted(inbox, 1);
    assert_eq!(server.oracle_flags(inbox, 1), ["\\Deleted", "\\Seen"]);
    let scratch = server.mailbox("Scratch");
    server.oracle_create(&scratch);
    assert!(server.oracle_list().iter().any(|e| e.name == scratch));
    server.oracle_delete(&scratch);
    assert!(!server.oracle_list().iter().any(|e| e.name == scratch));
}

#[test]
fn mailutils_starts_and_oracle_sees_the_seed() {
    oracle_sees_the_seed(ServerKind::Mailutils);
}

#[test]
fn courier_starts_and_oracle_sees_the_seed() {
    oracle_sees_the_seed(ServerKind::Courier);
}

#[test]
fn cyrus_starts_and_oracle_sees_the_seed() {
    oracle_sees_the_seed(ServerKind::Cyrus);
}

// ---------------------------------------------------------------------------------------------
// Quirks: one test each, asserting what Debian's package does (see docs/compatibility.md)
// ---------------------------------------------------------------------------------------------

/// Runs `commands` in one session on a fresh `kind` holding the compat seed; `None` if skipped.
fn session(kind: ServerKind, commands: &[&str]) -> Option<(ImapServer, Vec<Exchange>)> {
    let (server, _) = start(kind)?;
    let exchanges = server.oracle_session(commands);
    assert_eq!(exchanges.len(), commands.len(), "{exchanges:#?}");
    Some((server, exchanges))
}

/// `(status, first word of the text or response code)` of each exchange, for compact asserts.
fn outcomes(exchanges: &[Exchange]) -> Vec<(&str, &str)> {
    exchanges
        .iter()
        .map(|e| (e.status.as_str(), e.text.split(' ').next().unwrap_or("")))
        .collect()
}

const MAILUTILS_CAPABILITY: &str = "IMAP4rev1 NAMESPACE ID IDLE LITERAL+ UNSELECT AUTH=GSSAPI \
    AUTH=ANONYMOUS AUTH=EXTERNAL AUTH=LOGIN AUTH=PLAIN AUTH=SECURID AUTH=DIGEST-MD5 AUTH=CRAM-MD5 \
    AUTH=SCRAM-SHA-1 AUTH=SCRAM-SHA-1-PLUS AUTH=SCRAM-SHA-256 AUTH=SCRAM-SHA-256-PLUS \
    AUTH=SAML20 AUTH=OPENID20 AUTH=GSSAPI AUTH=GS2-KRB5";
const COURIER_CAPABILITY: &str = "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT \
    THREAD=REFERENCES SORT QUOTA IDLE ACL ACL2=UNION ENABLE UTF8=ACCEPT";
const CYRUS_CAPABILITY: &str = "IMAP4rev1 LITERAL+ ID ENABLE ACL ANNOTATE-EXPERIMENT-1 BINARY \
    CATENATE CHILDREN CONDSTORE CREATE-SPECIAL-USE ESEARCH ESORT LIST-EXTENDED LIST-MYRIGHTS \
    LIST-STATUS MAILBOX-REFERRALS METADATA MOVE MULTIAPPEND NAMESPACE OBJECTID PREVIEW QRESYNC \
    QUOTA RIGHTS=kxten SAVEDATE SEARCH=FUZZY SORT SORT=DISPLAY SPECIAL-USE STATUS=SIZE \
    THREAD=ORDEREDSUBJECT THREAD=REFERENCES UIDPLUS UNSELECT URLAUTH URLAUTH=BINARY WITHIN \
    DIGEST=SHA1 LIST-METADATA NO_ATOMIC_RENAME SCAN SORT=MODSEQ SORT=UID THREAD=REFS \
    X-CREATEDMODSEQ X-REPLICATION X-SIEVE-MAILBOX XLIST XMOVE LOGINDISABLED COMPRESS=DEFLATE \
    X-QUOTA=STORAGE X-QUOTA=MESSAGE X-QUOTA=X-ANNOTATION-STORAGE X-QUOTA=X-NUM-FOLDERS IDLE \
    APPENDLIMIT=4294967295";

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn capabilities_are_debians() {
    for (kind, expected) in [
        (ServerKind::Mailutils, MAILUTILS_CAPABILITY),
        (ServerKind::Courier, COURIER_CAPABILITY),
        (ServerKind::Cyrus, CYRUS_CAPABILITY),
    ] {
        let Some((server, _)) = start(kind) else {
            continue;
        };
        let caps = server.oracle_capabilities();
        assert_eq!(caps.after_login, one_line(expected), "{}", kind.name());
        let has = |c: &str| caps.has(c);
        let extensions = [
            "UIDPLUS",
            "MOVE",
            "CONDSTORE",
            "QRESYNC",
            "IDLE",
            "QUOTA",
            "LITERAL+",
            "ENABLE",
        ];
        let present: Vec<&str> = extensions.into_iter().filter(|c| has(c)).collect();
        let expected: &[&str] = match kind {
            ServerKind::Mailutils => &["IDLE", "LITERAL+"],
            ServerKind::Courier => &["UIDPLUS", "IDLE", "QUOTA", "ENABLE"],
            ServerKind::Cyrus => &[
                "UIDPLUS",
                "MOVE",
                "CONDSTORE",
                "QRESYNC",
                "IDLE",
                "QUOTA",
                "LITERAL+",
                "ENABLE",
            ],
        };
        assert_eq!(present, expected, "{}", kind.name());
    }
}

/// Cyrus: the LOGIN response's CAPABILITY code (and CAPABILITY afterwards) lists LOGINDISABLED
/// although the session is already logged in; its greeting lists only a short pre-login set.
#[test]
fn cyrus_lists_logindisabled_after_login() {
    let Some((server, _)) = start(ServerKind::Cyrus) else {
        return;
    };
    let caps = server.oracle_capabilities();
    assert!(caps.has("LOGINDISABLED"), "{caps:?}");
    assert!(
        caps.login_text.starts_with("[CAPABILITY IMAP4rev1 "),
        "{caps:?}"
    );
    assert!(caps.greeting.starts_with(
        "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE AUTH=PLAIN AUTH=LOGIN SASL-IR] "
    ));
    assert!(!caps.before_login.split(' ').any(|c| c == "LOGINDISABLED"));
}

#[test]
fn namespace_delimiter_and_inbox() {
    for kind in ServerKind::ALL {
        let Some((server, ex)) = session(kind, &["NAMESPACE"]) else {
            continue;
        };
        let expected = match kind {
            ServerKind::Mailutils => "* NAMESPACE ((\"\" \"/\")) NIL NIL",
            ServerKind::Courier => {
                "* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"#shared.\" \".\")(\"shared.\" \".\"))"
            }
            ServerKind::Cyrus => {
                "* NAMESPACE ((\"INBOX.\" \".\")) ((\"user.\" \".\")) ((\"\" \".\"))"
            }
        };
        assert_eq!(ex[0].untagged, [expected], "{}", kind.name());
        let inbox = server
            .oracle_list()
            .into_iter()
            .find(|e| e.name == "INBOX")
            .expect("INBOX listed");
        let (delimiter, attributes): (Option<char>, &[&str]) = match kind {
            // mailutils: INBOX has no hierarchy at all (NIL delimiter, \NoInferiors).
            ServerKind::Mailutils => (None, &["\\NoInferiors"]),
            ServerKind::Courier => (Some('.'), &["\\Marked", "\\HasChildren"]),
            ServerKind::Cyrus => (Some('.'), &["\\HasChildren"]),
        };
        assert_eq!(inbox.delimiter, delimiter, "{}", kind.name());
        assert_eq!(inbox.attributes, attributes, "{}", kind.name());
        for entry in server.oracle_list() {
            if entry.name != "INBOX" {
                assert_eq!(entry.delimiter, Some(kind.delimiter()), "{entry:?}");
                assert!(entry.name.starts_with(kind.prefix()), "{entry:?}");
            }
        }
    }
}

/// mailutils answers `UID FETCH <uid>` for a UID above the highest with the *last message*
/// (as if it were `<uid>:*`), a different UID from the one asked for. Courier and Cyrus answer
/// with nothing, as RFC 3501 says.
#[test]
fn uid_fetch_of_a_missing_uid() {
    for kind in ServerKind::ALL {
        let Some((_server, ex)) = session(kind, &["EXAMINE INBOX", "UID FETCH 99 (FLAGS)"]) else {
            continue;
        };
        assert_eq!(ex[1].status, "OK", "{}", kind.name());
        match kind {
            ServerKind::Mailutils => assert_eq!(
                ex[1].untagged,
                ["* 4 FETCH (UID 4 FLAGS (\\\\Answered \\\\Draft))"]
            ),
            _ => assert!(ex[1].untagged.is_empty(), "{}: {:?}", kind.name(), ex[1]),
        }
    }
}

/// `UID FETCH 1:*` on an empty mailbox is OK with no data everywhere; a sequence-number
/// `FETCH 1:*` is NO on Cyrus ("No matching messages").
#[test]
fn fetch_on_an_empty_mailbox() {
    for kind in ServerKind::ALL {
        let examine = format!("EXAMINE \"{}\"", mailbox_of(kind, "Empty"));
        let Some((_server, ex)) = session(
            kind,
            &[&examine, "UID FETCH 1:* (FLAGS)", "FETCH 1:* (FLAGS)"],
        ) else {
            continue;
        };
        assert_eq!(ex[1].status, "OK", "{}", kind.name());
        assert!(ex[1].untagged.is_empty());
        let sequence = if kind == ServerKind::Cyrus {
            "NO"
        } else {
            "OK"
        };
        assert_eq!(ex[2].status, sequence, "{}: {:?}", kind.name(), ex[2]);
    }
}

fn mailbox_of(kind: ServerKind, seed_name: &str) -> String {
    format!(
        "{}{}",
        kind.prefix(),
        seed_name.replace('.', &kind.delimiter().to_string())
    )
}

/// UID EXPUNGE and UID MOVE: mailutils has neither (BAD), Courier has UID EXPUNGE but answers
/// UID MOVE with NO, Cyrus has both (and a MOVE of a missing UID is OK).
#[test]
fn uid_expunge_and_uid_move() {
    for kind in ServerKind::ALL {
        let archive = mailbox_of(kind, "Archive");
        let commands = [
            "SELECT INBOX".to_string(),
            "UID STORE 4 +FLAGS.SILENT (\\Deleted)".to_string(),
            "UID EXPUNGE 4".to_string(),
            format!("UID MOVE 3 \"{archive}\""),
            "UID FETCH 1:* (UID)".to_string(),
        ];
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        let Some((_server, ex)) = session(kind, &commands) else {
            continue;
        };
        let (expunge, moved) = match kind {
            ServerKind::Mailutils => ("BAD", "BAD"),
            ServerKind::Courier => ("OK", "NO"),
            ServerKind::Cyrus => ("OK", "OK"),
        };
        assert_eq!(ex[2].status, expunge, "{}: {:?}", kind.name(), ex[2]);
        assert_eq!(ex[3].status, moved, "{}: {:?}", kind.name(), ex[3]);
        let left = ex[4].untagged.len();
        let expected = match kind {
            ServerKind::Mailutils => 4,
            ServerKind::Courier => 3,
            ServerKind::Cyrus => 2,
        };
        assert_eq!(left, expected, "{}: {:?}", kind.name(), ex[4]);
    }
}

/// APPENDUID and COPYUID (UIDPLUS) from Courier and Cyrus; mailutils reports neither.
#[test]
fn append_and_copy_report_uids() {
    let message = b"From: x@example.org\r\nSubject: appended\r\n\r\nhello\r\n";
    for kind in ServerKind::ALL {
        let Some((server, _)) = start(kind) else {
            continue;
        };
        let append = server.oracle_append_exchange("INBOX", &[], message);
        assert_eq!(append.status, "OK");
        let copy = format!("UID COPY 2 \"{}\"", server.mailbox("Archive"));
        let ex = server.oracle_session(&["SELECT INBOX", &copy]);
        assert_eq!(ex[1].status, "OK");
        match kind {
            ServerKind::Mailutils => {
                assert_eq!(append.text, "APPEND Completed");
                assert_eq!(ex[1].text, "UID COPY Completed");
            }
            _ => {
                assert!(append.text.starts_with("[APPENDUID "), "{append:?}");
                assert!(append.text.contains(" 5] "), "{append:?}");
                assert!(ex[1].text.starts_with("[COPYUID "), "{:?}", ex[1]);
                assert!(ex[1].text.contains(" 2 2] "), "{:?}", ex[1]);
            }
        }
    }
}

/// mailutils' maildir ignores APPEND's flags and date: the message arrives in `new/` with no
/// flags, INTERNALDATE is the time of delivery, and until a read-write SELECT moves it to
/// `cur/` an EXAMINE may give it a new UID (seen in most runs, not all).
#[test]
fn mailutils_append_drops_flags_and_date_and_renumbers() {
    let Some((server, _)) = start(ServerKind::Mailutils) else {
        return;
    };
    let message = b"From: x@example.org\r\nSubject: appended\r\n\r\nhello\r\n";
    let append = server.oracle_append_exchange("Empty", &["\\Seen", "\\Flagged"], message);
    assert_eq!(append.status, "OK");
    let uids = |ex: &[Exchange]| ex[1].untagged.clone();
    let first = server.oracle_session(&["EXAMINE \"Empty\"", "UID FETCH 1:* (UID FLAGS)"]);
    // The flags asked for are gone. (Whether the next EXAMINE renumbers the message depends
    // on timing: seen both ways here, so it is not asserted.)
    let listed = uids(&first);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].ends_with("FLAGS (\\\\Recent))"), "{listed:?}");
    // A read-write SELECT settles it.
    let settled = server.oracle_session(&["SELECT \"Empty\"", "UID FETCH 1:* (UID)"]);
    let again = server.oracle_session(&["EXAMINE \"Empty\"", "UID FETCH 1:* (UID)"]);
    assert_eq!(uids(&settled), uids(&again));
    // A keyword in APPEND or STORE is refused outright.
    let keyword = server.oracle_append_exchange("Empty", &["$Junk"], message);
    assert_eq!(
        (keyword.status.as_str(), keyword.text.as_str()),
        ("BAD", "APPEND Unrecognized flag")
    );
}

/// mailutils takes INTERNALDATE from the Date header (the file's mtime and APPEND's date are
/// not used); the others keep the date given to APPEND.
#[test]
fn internaldate_source() {
    for kind in ServerKind::ALL {
        let Some((server, seed)) = start(kind) else {
            continue;
        };
        let message = seed.folder("INBOX").message(1);
        let meta = server.oracle_meta("INBOX");
        let expected = if kind == ServerKind::Mailutils {
            message.date
        } else {
            message.internal_date
        };
        assert_eq!(meta[&1].internal_date, expected, "{}", kind.name());
        assert_ne!(message.date, message.internal_date);
    }
}

/// Keywords: mailutils refuses any (BAD), Courier and Cyrus take `$Forwarded` and `Custom1`
/// and then list them in FLAGS and PERMANENTFLAGS (which has `\*` there).
#[test]
fn keywords_and_permanentflags() {
    for kind in ServerKind::ALL {
        let Some((_server, ex)) = session(
            kind,
            &[
                "SELECT INBOX",
                "UID STORE 3 +FLAGS ($Forwarded Custom1)",
                "UID FETCH 3 (FLAGS)",
            ],
        ) else {
            continue;
        };
        let permanent: Vec<&String> = ex[0]
            .untagged
            .iter()
            .filter(|l| l.contains("[PERMANENTFLAGS"))
            .collect();
        let expected = match kind {
            ServerKind::Mailutils => "* OK [PERMANENTFLAGS (\\\\Answered \\\\Flagged \\\\Deleted \\\\Seen \\\\Draft)] Permanent flags",
            ServerKind::Courier => "* OK [PERMANENTFLAGS (\\\\* \\\\Draft \\\\Answered \\\\Flagged \\\\Deleted \\\\Seen)] Limited",
            ServerKind::Cyrus => "* OK [PERMANENTFLAGS (\\\\Answered \\\\Flagged \\\\Draft \\\\Deleted \\\\Seen \\\\*)] Ok",
        };
        assert_eq!(permanent, [expected], "{}", kind.name());
        match kind {
            ServerKind::Mailutils => {
                assert_eq!(outcomes(&ex[1..2]), [("BAD", "UID")]);
                assert_eq!(ex[2].untagged, ["* 3 FETCH (UID 3 FLAGS ())"]);
            }
            _ => {
                assert_eq!(ex[1].status, "OK");
                assert!(
                    ex[2].untagged[0].contains("$Forwarded Custom1"),
                    "{:?}",
                    ex[2]
                );
            }
        }
    }
}

/// DELETE of a folder that has children (`Archive`, one message, child `Archive.2024`):
/// mailutils says NO *but has already removed the folder's messages* and left it \NoSelect;
/// Courier deletes it (OK), leaving a \Noselect placeholder; Cyrus refuses with [HASCHILDREN]
/// and changes nothing.
#[test]
fn delete_of_a_folder_with_children() {
    for kind in ServerKind::ALL {
        let Some((server, _)) = start(kind) else {
            continue;
        };
        let archive = server.mailbox("Archive");
        let ex = server.oracle_session(&[&format!("DELETE \"{archive}\"")]);
        let entry = server
            .oracle_list()
            .into_iter()
            .find(|e| e.name == archive)
            .expect("parent still listed");
        let child = server.mailbox("Archive.2024");
        assert_eq!(server.oracle_status(&child).messages, 2, "{}", kind.name());
        match kind {
            ServerKind::Mailutils => {
                assert_eq!(
                    (ex[0].status.as_str(), ex[0].text.as_str()),
                    ("NO", "DELETE Cannot remove")
                );
                assert_eq!(entry.attributes, ["\\NoSelect"]);
                // Its message is gone although the command failed.
                assert_eq!(server.oracle_status(&archive).messages, 0);
            }
            ServerKind::Courier => {
                assert_eq!(
                    (ex[0].status.as_str(), ex[0].text.as_str()),
                    ("OK", "Folder deleted.")
                );
                assert_eq!(entry.attributes, ["\\Noselect", "\\HasChildren"]);
            }
            ServerKind::Cyrus => {
                assert_eq!(ex[0].status, "NO");
                assert!(ex[0].text.starts_with("[HASCHILDREN]"), "{:?}", ex[0]);
                assert_eq!(entry.attributes, ["\\HasChildren"]);
                assert_eq!(server.oracle_status(&archive).messages, 1);
            }
        }
    }
}

/// A parent implied by `Lists.rust` but never created: \NoSelect on mailutils, \Noselect
/// \HasChildren on Courier (and DELETE of it is NO, "does not exist"); Cyrus creates a real,
/// selectable `INBOX.Lists` along with the child.
#[test]
fn list_of_an_implied_parent() {
    for kind in ServerKind::ALL {
        let Some((server, _)) = start(kind) else {
            continue;
        };
        let lists = server.mailbox("Lists");
        let entry = server
            .oracle_list()
            .into_iter()
            .find(|e| e.name == lists)
            .expect("parent listed");
        let expected: &[&str] = match kind {
            ServerKind::Mailutils => &["\\NoSelect"],
            ServerKind::Courier => &["\\Noselect", "\\HasChildren"],
            ServerKind::Cyrus => &["\\HasChildren"],
        };
        assert_eq!(entry.attributes, expected, "{}", kind.name());
        let ex = server.oracle_session(&[&format!("EXAMINE \"{lists}\"")]);
        // mailutils even EXAMINEs the \NoSelect directory as an empty mailbox.
        let examine = if kind == ServerKind::Courier {
            "NO"
        } else {
            "OK"
        };
        assert_eq!(ex[0].status, examine, "{}: {:?}", kind.name(), ex[0]);
    }
}

/// RFC822.SIZE equals the length of BODY[] on all three (mailutils stores LF and serves CRLF,
/// and counts the CRLF form).
#[test]
fn rfc822_size_is_the_body_length() {
    for kind in ServerKind::ALL {
        let Some((server, seed)) = start(kind) else {
            continue;
        };
        for folder in ["INBOX", "Archive.2024"] {
            let name = server.mailbox(folder);
            let meta = server.oracle_meta(&name);
            for message in &seed.folder(folder).messages {
                assert_eq!(
                    meta[&message.uid].size as usize,
                    message.bytes.len(),
                    "{}",
                    kind.name()
                );
            }
        }
    }
}

/// Courier's SELECT and EXAMINE send no `[UIDNEXT]` code (STATUS has it); the others do.
#[test]
fn uidnext_in_select() {
    for kind in ServerKind::ALL {
        let Some((_server, ex)) = session(kind, &["SELECT INBOX", "STATUS INBOX (UIDNEXT)"]) else {
            continue;
        };
        let has = ex[0].untagged_contains("[UIDNEXT ");
        assert_eq!(
            has,
            kind != ServerKind::Courier,
            "{}: {:?}",
            kind.name(),
            ex[0]
        );
        assert!(ex[1].untagged_contains("UIDNEXT 5"), "{:?}", ex[1]);
    }
}

/// GETQUOTAROOT with no quota configured: Courier sends `* QUOTA "ROOT"` with no resource list
/// at all (not even `()`), Cyrus `* QUOTA INBOX ()`; mailutils has no QUOTA (BAD).
#[test]
fn quota_with_no_limits() {
    for kind in ServerKind::ALL {
        let Some((_server, ex)) = session(kind, &["GETQUOTAROOT INBOX"]) else {
            continue;
        };
        match kind {
            ServerKind::Mailutils => assert_eq!(ex[0].status, "BAD"),
            ServerKind::Courier => assert_eq!(
                ex[0].untagged,
                ["* QUOTAROOT \"INBOX\" \"ROOT\"", "* QUOTA \"ROOT\""]
            ),
            ServerKind::Cyrus => {
                assert_eq!(
                    ex[0].untagged,
                    ["* QUOTAROOT INBOX INBOX", "* QUOTA INBOX ()"]
                )
            }
        }
    }
}

/// Cyrus answers `UID STORE ... +FLAGS.SILENT` with an untagged FETCH anyway (FLAGS before UID,
/// `\Recent` included); Courier and mailutils stay silent.
#[test]
fn store_silent_is_not_always_silent() {
    for kind in ServerKind::ALL {
        let Some((_server, ex)) = session(
            kind,
            &["SELECT INBOX", "UID STORE 3 +FLAGS.SILENT (\\Seen)"],
        ) else {
            continue;
        };
        assert_eq!(ex[1].status, "OK");
        if kind == ServerKind::Cyrus {
            assert_eq!(
                ex[1].untagged,
                ["* 3 FETCH (FLAGS (\\\\Recent \\\\Seen) UID 3)"]
            );
        } else {
            assert!(ex[1].untagged.is_empty(), "{}: {:?}", kind.name(), ex[1]);
        }
    }
}

/// CREATE with a trailing delimiter: mailutils and Cyrus create the folder without it
/// (mailutils as a \NoSelect directory), Courier says OK and creates nothing visible.
#[test]
fn create_with_a_trailing_delimiter() {
    for kind in ServerKind::ALL {
        let Some((server, _)) = start(kind) else {
            continue;
        };
        let name = server.mailbox("Trailing");
        let ex = server.oracle_session(&[&format!("CREATE \"{name}{}\"", kind.delimiter())]);
        assert_eq!(ex[0].status, "OK", "{}", kind.name());
        let entry = server.oracle_list().into_iter().find(|e| e.name == name);
        let attributes = entry.map(|e| e.attributes);
        let expected: Option<Vec<String>> = match kind {
            ServerKind::Mailutils => Some(vec!["\\NoSelect".into()]),
            ServerKind::Courier => None,
            ServerKind::Cyrus => Some(vec!["\\HasNoChildren".into()]),
        };
        assert_eq!(attributes, expected, "{}", kind.name());
    }
}

// ---------------------------------------------------------------------------------------------
// Reading through the real mount (needs `imapfs mount --insecure` for these plaintext servers)
// ---------------------------------------------------------------------------------------------

/// Mounts `kind` and checks, cell by cell, what scripts/compat.sh prints as its matrix:
/// `login` (the mount comes up), `list` (directories = the oracle's LIST, split at the
/// server's delimiter), `read bytes` (sha256 of every `<uid>.eml` = the oracle's BODY[]),
/// `flags xattr` (`user.imap.flags` = the oracle's FLAGS). Each cell prints a `MATRIX` line;
/// the test fails if any cell does. These servers speak plaintext only, so an imapfs without
/// `mount --insecure` fails here (it cannot mount them), it is not a skip.
fn mount_reads(kind: ServerKind) {
    let help = run(
        &[env!("CARGO_BIN_EXE_imapfs"), "mount", "--help"],
        Duration::from_secs(30),
    );
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--insecure"),
        "imapfs mount has no --insecure, so it cannot mount {} (plaintext only)",
        kind.name()
    );
    let Some((server, _)) = start(kind) else {
        return;
    };
    let mut failures = Vec::new();
    let mut cell = |name: &str, check: &mut dyn FnMut() -> Result<(), String>| {
        let result = check();
        eprintln!(
            "MATRIX {} {name} {}",
            kind.name(),
            if result.is_ok() { "pass" } else { "FAIL" }
        );
        if let Err(why) = result {
            failures.push(format!("{name}: {why}"));
        }
    };

    let mut mount = None;
    cell("login", &mut || {
        let started = MountOptions::custom(server.url(), PathBuf::new(), &server.password)
            .without_ca_file()
            .args(&["--insecure"])
            .start()
            .map_err(|e| e.to_string())?;
        mount = Some(started);
        Ok(())
    });
    let Some(mount) = mount else {
        for name in ["list", "read-bytes", "flags-xattr"] {
            eprintln!("MATRIX {} {name} FAIL", kind.name());
        }
        panic!("{}: {failures:?}", kind.name());
    };
    let list = server.oracle_list();
    let selectable: Vec<String> = list
        .iter()
        .filter(|e| {
            !e.attributes
                .iter()
                .any(|a| a.eq_ignore_ascii_case("\\Noselect"))
        })
        .map(|e| e.name.clone())
        .collect();
    let path_of = |name: &str| -> PathBuf { name.split(kind.delimiter()).collect() };

    cell("list", &mut || {
        let root = mount.path().to_path_buf();
        let found = within("find on the mount", Duration::from_secs(60), move || {
            let out = run(
                &[
                    "find",
                    &root.to_string_lossy(),
                    "-mindepth",
                    "1",
                    "-type",
                    "d",
                    "-printf",
                    "%P\\n",
                ],
                Duration::from_secs(60),
            );
            // A folder find could not read (EIO on its listing) still prints its own name:
            // the exit status says so.
            let dirs = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(PathBuf::from)
                .collect::<BTreeSet<PathBuf>>();
            (
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
                dirs,
            )
        });
        let (status, stderr, found) = found;
        if !status.success() {
            return Err(format!("find on the mount: {status}: {}", stderr.trim()));
        }
        let expected: BTreeSet<PathBuf> = list.iter().map(|e| path_of(&e.name)).collect();
        if found == expected {
            Ok(())
        } else {
            Err(format!("mount has {found:?}, server lists {expected:?}"))
        }
    });

    cell("read-bytes", &mut || {
        for name in &selectable {
            let dir = mount.join(path_of(name));
            for (uid, hex) in server.oracle_sha256_all(name) {
                let file = dir.join(format!("{uid}.eml"));
                let bytes = within("read a message", Duration::from_secs(60), {
                    let file = file.clone();
                    move || std::fs::read(&file)
                })
                .map_err(|e| format!("{}: {e}", file.display()))?;
                if sha256_hex(&bytes) != hex {
                    return Err(format!("{} differs from BODY[]", file.display()));
                }
            }
        }
        Ok(())
    });

    cell("flags-xattr", &mut || {
        for name in &selectable {
            let dir = mount.join(path_of(name));
            for (uid, meta) in server.oracle_meta(name) {
                let file = dir.join(format!("{uid}.eml"));
                let out = run(
                    &[
                        "getfattr",
                        "--absolute-names",
                        "--only-values",
                        "-n",
                        "user.imap.flags",
                        &file.to_string_lossy(),
                    ],
                    Duration::from_secs(30),
                );
                if !out.status.success() {
                    return Err(format!(
                        "getfattr {}: {}",
                        file.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                let mut flags: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                flags.sort();
                if flags != meta.flags {
                    return Err(format!("{}: {flags:?} != {:?}", file.display(), meta.flags));
                }
            }
        }
        Ok(())
    });
    drop(mount);
    assert!(failures.is_empty(), "{}: {failures:#?}", kind.name());
}

#[test]
fn mailutils_mount_reads() {
    mount_reads(ServerKind::Mailutils);
}

#[test]
fn courier_mount_reads() {
    mount_reads(ServerKind::Courier);
}

#[test]
fn cyrus_mount_reads() {
    mount_reads(ServerKind::Cyrus);
}
