//! `imapfs check`: connect, log in and report what the server offers, using the protocol
//! engine alone (no store, no mount).
//!
//! [`check`] returns a [`Report`]; `main.rs` prints it. The greeting is read on a first,
//! short connection (the engine keeps only its capabilities), which also proves that the
//! server is reachable and its certificate verifies; the login then goes through
//! [`crate::imap::auth::connect`], exactly as a mount's, so a failure is the same one line.
//! The account counts as usable when login, LIST and a STATUS of INBOX succeed.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::imap::auth::{connect, Security, ServerConfig};
use crate::imap::codec::Command;
use crate::imap::profile::Profile;
use crate::imap::session::Session;
use crate::imap::transport::Transport;
use crate::imap::types::{MailboxName, QuotaResource, StatusItem, Untagged};

/// The extensions imapfs uses when offered, and what for.
pub const USED_EXTENSIONS: &[(&str, &str)] = &[
    ("IDLE", "live updates"),
    ("QRESYNC", "quick resync after reconnecting"),
    ("CONDSTORE", "incremental flag changes"),
    ("MOVE", "mv between folders in one step"),
    (
        "UIDPLUS",
        "rm expunges only that message; new files learn their UID",
    ),
    ("NOTIFY", "changes in every folder on one connection"),
];

/// STATUS commands sent in one pipelined batch.
const STATUS_BATCH: usize = 100;

/// What `imapfs check` found.
#[derive(Debug)]
pub struct Report {
    /// The greeting line, control characters removed (`None` through a tunnel).
    pub greeting: Option<String>,
    /// After login.
    pub capabilities: Vec<String>,
    /// The quota roots of INBOX and their resources (when the server has QUOTA).
    pub quota: Vec<(String, Vec<QuotaResource>)>,
    /// Mailboxes LIST returned, and how many of them hold messages (not `\Noselect`).
    pub folders: usize,
    pub selectable: usize,
    /// Sum of STATUS MESSAGES over the selectable mailboxes.
    pub messages: u64,
    /// Mailboxes whose STATUS failed, with the server's words.
    pub status_failures: Vec<(String, String)>,
    /// Whether INBOX answered STATUS.
    pub inbox_ok: bool,
}

impl Report {
    /// Whether imapfs can use this account.
    pub fn usable(&self) -> bool {
        self.inbox_ok
    }

    /// The provider this server looks like, from its capabilities and greeting.
    pub fn profile(&self) -> Profile {
        Profile::detect(&self.capabilities, self.greeting.as_deref())
    }

    /// Whether the server offers `cap` (case-insensitive).
    pub fn has(&self, cap: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(cap))
    }
}

/// Connect, log in, and gather the report.
pub fn check(server: &ServerConfig) -> Result<Report> {
    let greeting = match server.tunnel {
        Some(_) => None,
        None => Some(read_greeting(server)?),
    };
    let mut session = connect(server)?;
    let capabilities = session.capabilities()?.to_vec();
    let has = |cap: &str| capabilities.iter().any(|c| c.eq_ignore_ascii_case(cap));
    let quota = if has("QUOTA") {
        quota_of_inbox(&mut session)?
    } else {
        Vec::new()
    };
    let mut report = Report {
        greeting,
        capabilities: capabilities.clone(),
        quota,
        folders: 0,
        selectable: 0,
        messages: 0,
        status_failures: Vec::new(),
        inbox_ok: false,
    };
    count_messages(&mut session, &mut report)?;
    session.logout();
    Ok(report)
}

/// Open a connection as `connect` does and read the greeting line.
fn read_greeting(server: &ServerConfig) -> Result<String> {
    let timeout = server.timeouts.inactivity;
    let mut transport = Transport::connect(&server.host, server.port, timeout)?;
    let deadline = Instant::now() + timeout;
    if server.security == Security::Tls {
        transport = transport.start_tls(server.tls.clone(), &server.host, deadline)?;
    }
    let mut line = Vec::new();
    let mut buf = [0u8; 1024];
    while !line.ends_with(b"\r\n") && !line.ends_with(b"\n") && line.len() < 8192 {
        match transport.read(&mut buf, deadline)? {
            0 => return Err(Error::Bye("closed before its greeting".into())),
            n => line.extend_from_slice(&buf[..n]),
        }
    }
    transport.shutdown();
    let first = line.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(first)
        .chars()
        .filter(|c| !c.is_control())
        .collect())
}

fn quota_of_inbox(session: &mut Session) -> Result<Vec<(String, Vec<QuotaResource>)>> {
    let inbox = MailboxName::from_utf8("INBOX", false);
    let done = match session.run(Command::GetQuotaRoot(inbox)) {
        Ok(done) => done,
        // A server may refuse it (no quota configured): no quota to show.
        Err(e) if !e.is_fatal_to_connection() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(done
        .untagged
        .into_iter()
        .filter_map(|u| match u {
            Untagged::Quota { root, resources } => {
                Some((String::from_utf8_lossy(&root).into_owned(), resources))
            }
            _ => None,
        })
        .collect())
}

/// LIST every mailbox, then STATUS (MESSAGES) of each selectable one, pipelined.
fn count_messages(session: &mut Session, report: &mut Report) -> Result<()> {
    let listed = session.run(Command::List {
        reference: Vec::new(),
        pattern: b"*".to_vec(),
    })?;
    let names: Vec<(MailboxName, bool)> = listed
        .untagged
        .into_iter()
        .filter_map(|u| match u {
            Untagged::List(item) => {
                let selectable = !item.is_noselect();
                Some((item.name, selectable))
            }
            _ => None,
        })
        .collect();
    report.folders = names.len();
    let selectable: Vec<MailboxName> = names
        .into_iter()
        .filter(|(_, selectable)| *selectable)
        .map(|(name, _)| name)
        .collect();
    report.selectable = selectable.len();
    for batch in selectable.chunks(STATUS_BATCH) {
        let commands: Vec<Command> = batch
            .iter()
            .map(|name| Command::Status {
                mailbox: name.clone(),
                items: vec!["MESSAGES"],
            })
            .collect();
        for (name, result) in batch.iter().zip(session.pipeline(&commands)?) {
            match result {
                Ok(done) => {
                    let count = done.untagged.iter().find_map(|u| match u {
                        Untagged::StatusData { items, .. } => {
                            items.iter().find_map(|item| match item {
                                StatusItem::Messages(n) => Some(*n),
                                _ => None,
                            })
                        }
                        _ => None,
                    });
                    report.messages += u64::from(count.unwrap_or(0));
                    if name.raw() == b"INBOX" {
                        report.inbox_ok = true;
                    }
                }
                Err(e) => report
                    .status_failures
                    .push((name.as_str().to_string(), e.to_string())),
            }
        }
    }
    Ok(())
}
