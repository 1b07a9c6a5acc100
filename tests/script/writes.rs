//! A scripted server holding one read-write mailbox (INBOX), for write-path tests through a
//! real mount that need replies no real server gives on demand: a `UID EXPUNGE` answered OK
//! that expunges nothing, one answered NO, a flag STORE answered `OK [MODIFIED ...]`.
//!
//! - [`WriteServer::start`]: messages as (UID, flags); implicit TLS on a loopback port,
//!   trusting [`Script::ca_file`](super::Script). Capabilities: UIDPLUS, no MOVE, no IDLE (so
//!   no watcher connection), no CONDSTORE.
//! - [`WriteServer::set_expunge`] / [`WriteServer::set_store`]: how the next `UID EXPUNGE`s and
//!   `UID STORE`s are answered ([`Expunge`], [`Store`]).
//! - [`WriteServer::flags`], [`WriteServer::uids`], [`WriteServer::commands`]: what the server
//!   holds, and every command line it was sent, for the test to check.
//!
//! Everything else a mount sends is answered as [`super::mailbox`] does (LIST, SELECT,
//! `UID FETCH` of flags, sizes and dates); bodies are not served.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Conn, Script, Wire};

/// Capabilities of the write server.
const CAPS: &str = "IMAP4rev1 AUTH=PLAIN SASL-IR LITERAL+ UIDPLUS";

const UIDVALIDITY: u32 = 9;

/// How `UID EXPUNGE` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expunge {
    /// Expunge the named messages that are `\Deleted`, with `* n EXPUNGE` for each.
    Normal,
    /// `OK` and nothing expunged (what Dovecot once did under a concurrent move).
    KeepOk,
    /// `NO`, nothing expunged.
    Refuse,
}

/// How `UID STORE` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Apply it; a STORE without `.SILENT` reports the new flags.
    Normal,
    /// `OK [MODIFIED <uids>]`, nothing changed (even without UNCHANGEDSINCE).
    Modified,
}

struct State {
    /// UID -> flags, as sent on the wire (`\Seen`, `$Work`).
    messages: BTreeMap<u32, Vec<String>>,
    expunge: Expunge,
    store: Store,
    commands: Vec<String>,
}

/// A running write server; see the module documentation. `Drop` stops it.
pub struct WriteServer {
    pub script: Script,
    state: Arc<Mutex<State>>,
}

impl WriteServer {
    pub fn start(messages: &[(u32, &[&str])]) -> WriteServer {
        let state = Arc::new(Mutex::new(State {
            messages: messages
                .iter()
                .map(|(uid, flags)| (*uid, flags.iter().map(|f| f.to_string()).collect()))
                .collect(),
            expunge: Expunge::Normal,
            store: Store::Normal,
            commands: Vec::new(),
        }));
        let shared = state.clone();
        let script = Script::start(Wire::Tls, move |c| serve(c, &shared));
        WriteServer { script, state }
    }

    /// `imaps://tester@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("imaps://tester@127.0.0.1:{}", self.script.port)
    }

    pub fn set_expunge(&self, how: Expunge) {
        self.lock().expunge = how;
    }

    pub fn set_store(&self, how: Store) {
        self.lock().store = how;
    }

    /// The flags of `uid`, or `None` once it is expunged.
    pub fn flags(&self, uid: u32) -> Option<Vec<String>> {
        self.lock().messages.get(&uid).cloned()
    }

    /// The UIDs the mailbox holds.
    pub fn uids(&self) -> Vec<u32> {
        self.lock().messages.keys().copied().collect()
    }

    /// Every command line received (tag removed), in order.
    pub fn commands(&self) -> Vec<String> {
        self.lock().commands.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn serve(c: &mut Conn, state: &Mutex<State>) {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    c.send(format!("* OK [CAPABILITY {CAPS}] write server ready\r\n").as_bytes());
    while let Some(cmd) = c.command() {
        lock()
            .commands
            .push(format!("{} {}", cmd.verb, cmd.rest).trim_end().to_string());
        if c.answer_basic(&cmd, CAPS) {
            continue;
        }
        let tag = &cmd.tag;
        let rest = cmd.rest.to_ascii_uppercase();
        let reply = match cmd.verb.as_str() {
            "LIST" => format!("* LIST (\\HasNoChildren) \"/\" INBOX\r\n{tag} OK done\r\n"),
            "EXAMINE" | "SELECT" => {
                let st = lock();
                let next = st.messages.keys().next_back().map_or(1, |u| u + 1);
                let access = if cmd.verb == "SELECT" {
                    "READ-WRITE"
                } else {
                    "READ-ONLY"
                };
                format!(
                    "* {} EXISTS\r\n* FLAGS (\\Seen \\Flagged \\Deleted \\Answered \\Draft)\r\n\
                     * OK [PERMANENTFLAGS (\\Seen \\Flagged \\Deleted \\Answered \\Draft \\*)] \
                     ok\r\n* OK [UIDVALIDITY {UIDVALIDITY}] ok\r\n* OK [UIDNEXT {next}] ok\r\n\
                     {tag} OK [{access}] done\r\n",
                    st.messages.len()
                )
            }
            "UID" if rest.starts_with("FETCH ") => fetch(&lock(), tag, &cmd.rest[6..]),
            "UID" if rest.starts_with("STORE ") => store(&mut lock(), tag, &cmd.rest[6..]),
            "UID" if rest.starts_with("EXPUNGE ") => expunge(&mut lock(), tag, &cmd.rest[8..]),
            _ => format!("{tag} BAD unknown command\r\n"),
        };
        c.send(reply.as_bytes());
    }
}

/// The numbers of a sequence set (`1`, `2:4,7`, `5:*`) among `known`.
fn in_set(set: &str, known: impl Iterator<Item = u32>) -> Vec<u32> {
    let ranges: Vec<(u32, u32)> = set
        .split(',')
        .filter_map(|part| {
            let num = |s: &str| {
                if s == "*" {
                    Some(u32::MAX)
                } else {
                    s.parse().ok()
                }
            };
            match part.split_once(':') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    Some((a.min(b), a.max(b)))
                }
                None => num(part).map(|n| (n, n)),
            }
        })
        .collect();
    known
        .filter(|n| ranges.iter().any(|&(a, b)| (a..=b).contains(n)))
        .collect()
}

fn seq_of(st: &State, uid: u32) -> usize {
    st.messages
        .keys()
        .position(|u| *u == uid)
        .map_or(0, |p| p + 1)
}

/// `UID FETCH set (...)`: UID and FLAGS, with size and date for a listing.
fn fetch(st: &State, tag: &str, args: &str) -> String {
    let set = args.split(' ').next().unwrap_or("");
    let mut out = String::new();
    for uid in in_set(set, st.messages.keys().copied()) {
        let flags = st.messages[&uid].join(" ");
        out.push_str(&format!(
            "* {} FETCH (UID {uid} FLAGS ({flags}) RFC822.SIZE 100 \
             INTERNALDATE \"01-Jan-2024 00:00:00 +0000\")\r\n",
            seq_of(st, uid)
        ));
    }
    out.push_str(&format!("{tag} OK done\r\n"));
    out
}

/// `UID STORE set [+-]FLAGS[.SILENT] (flags)`.
fn store(st: &mut State, tag: &str, args: &str) -> String {
    let mut words = args.splitn(3, ' ');
    let (set, item, list) = (
        words.next().unwrap_or(""),
        words.next().unwrap_or("").to_ascii_uppercase(),
        words.next().unwrap_or(""),
    );
    let uids = in_set(set, st.messages.keys().copied());
    if st.store == Store::Modified {
        return format!("{tag} OK [MODIFIED {set}] nothing changed\r\n");
    }
    let flags: Vec<String> = list
        .trim_matches(|c| c == '(' || c == ')')
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut out = String::new();
    for uid in uids {
        let seq = seq_of(st, uid);
        let Some(have) = st.messages.get_mut(&uid) else {
            continue;
        };
        let same = |a: &String, b: &String| a.eq_ignore_ascii_case(b);
        if item.starts_with('+') {
            for f in &flags {
                if !have.iter().any(|h| same(h, f)) {
                    have.push(f.clone());
                }
            }
        } else if item.starts_with('-') {
            have.retain(|h| !flags.iter().any(|f| same(h, f)));
        } else {
            *have = flags.clone();
        }
        if !item.ends_with(".SILENT") {
            out.push_str(&format!(
                "* {seq} FETCH (UID {uid} FLAGS ({}))\r\n",
                have.join(" ")
            ));
        }
    }
    out.push_str(&format!("{tag} OK done\r\n"));
    out
}

/// `UID EXPUNGE set`, as [`Expunge`] says.
fn expunge(st: &mut State, tag: &str, set: &str) -> String {
    match st.expunge {
        Expunge::KeepOk => return format!("{tag} OK expunged\r\n"),
        Expunge::Refuse => return format!("{tag} NO [CANNOT] not today\r\n"),
        Expunge::Normal => {}
    }
    let mut out = String::new();
    for uid in in_set(set.trim(), st.messages.keys().copied()) {
        let deleted = st.messages[&uid]
            .iter()
            .any(|f| f.eq_ignore_ascii_case("\\Deleted"));
        if deleted {
            let seq = seq_of(st, uid);
            st.messages.remove(&uid);
            out.push_str(&format!("* {seq} EXPUNGE\r\n"));
        }
    }
    out.push_str(&format!("{tag} OK expunged\r\n"));
    out
}
