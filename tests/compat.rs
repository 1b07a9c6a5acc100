//! Other real IMAP servers than Dovecot (GNU mailutils imap4d, Courier-IMAP, Cyrus IMAP): the
//! harness of tests/common/servers.rs starts each and its oracle sees exactly the seed, and one
//! test per client-relevant quirk pins what Debian's package does today (docs/compatibility.md
//! lists them), so a change in a package is noticed.
//!
//! A server this machine cannot run (not installed by scripts/servers.sh, or not root) is
//! skipped with a `SKIP` line on stderr naming the reason.

mod common;

use std::collections::BTreeSet;

use common::servers::{start_or_skip, ImapServer, ServerKind};
use common::{days_from_civil, Seed, Subject, TextMessage};

/// A small seed with what tells servers apart: flags, hierarchy, a child without its parent,
/// an empty folder, names that need quoting and modified UTF-7.
fn compat_seed() -> Seed {
    let mut seed = Seed::new();
    let base = days_from_civil(2024, 3, 1) * 86_400 + 9 * 3600;
    let folders: [(&str, &[(Subject, &[&str])]); 7] = [
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
