//! A scripted server holding one mailbox (INBOX), for tests that go through a real mount: it
//! lists each message with an RFC822.SIZE the test chooses (which may differ from the body it
//! serves, as Exchange, Gmail and hMailServer do), answers partial `BODY.PEEK[]<offset.len>`
//! FETCHes block by block, and fails the blocks the test names ([`Fault`]).
//!
//! - [`MailboxServer::start`]: messages as (UID, listed size, body); implicit TLS on a loopback
//!   port, trusting [`Script::ca_file`](super::Script).
//! - [`MailboxServer::fault`] / [`MailboxServer::clear`]: from now on answer FETCHes of one
//!   message starting at one offset with a fault, or normally again.
//! - [`MailboxServer::fetched`], [`MailboxServer::faults_served`], [`MailboxServer::listings`]:
//!   what the client asked, so a test can prove that the case it wants did happen.
//!
//! The server speaks just enough IMAP for imapfs: CAPABILITY (no IDLE, so no watcher), login,
//! LIST, EXAMINE / SELECT, the listing FETCH `1:*` and single-UID body FETCHes; anything else
//! is answered BAD.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{Conn, Script, Wire};

/// Capabilities of the mailbox server.
const CAPS: &str = "IMAP4rev1 AUTH=PLAIN SASL-IR LITERAL+";

/// Capabilities in Yahoo's manner ([`MailboxServer::start_yahoo`]): Yahoo's line after login
/// (issue 15) with a login mechanism.
const YAHOO_CAPS: &str = "IMAP4rev1 ID MOVE NAMESPACE XYMHIGHESTMODSEQ UIDPLUS LITERAL+ \
                          CHILDREN X-MSG-EXT UNSELECT OBJECTID AUTH=PLAIN SASL-IR";

/// Longest body section the Yahoo manner sends as a quoted string (when it can be quoted).
const YAHOO_QUOTED_UP_TO: usize = 256;

const UIDVALIDITY: u32 = 7;

/// How the server answers a FETCH of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `* n FETCH (UID u BODY[]<o> NIL)` and OK (Mail.ru sends NIL where a string belongs).
    Nil,
    /// `NO` for the command, no data.
    No,
    /// `OK` without any FETCH data.
    Missing,
    /// `* BYE` and the connection closed, nothing answered (a provider that closes after
    /// refusing, as Microsoft 365 does after its second throttle).
    Bye,
}

/// What the server holds and how it misbehaves; shared with the connection threads.
#[derive(Default)]
struct State {
    /// UID -> (listed RFC822.SIZE, body).
    messages: BTreeMap<u32, (u64, Arc<Vec<u8>>)>,
    faults: HashMap<(u32, u64), Fault>,
    /// Every body FETCH received: (UID, offset).
    fetched: Vec<(u32, u64)>,
    /// Faults served: (UID, offset, fault).
    served: Vec<(u32, u64, Fault)>,
    /// Listing FETCHes (`UID FETCH 1:*`) answered.
    listings: usize,
    /// Yahoo's manners: its capabilities, EMAILID/THREADID in listings, small body sections
    /// as quoted strings.
    yahoo: bool,
    /// Body sections sent as quoted strings.
    quoted: usize,
}

/// A running mailbox server; see the module documentation. `Drop` stops it.
pub struct MailboxServer {
    pub script: Script,
    state: Arc<Mutex<State>>,
}

impl MailboxServer {
    pub fn start(messages: &[(u32, u64, Vec<u8>)]) -> MailboxServer {
        MailboxServer::start_with(messages, false)
    }

    /// A server in Yahoo's manner: Yahoo's capability line (OBJECTID, no IDLE, no
    /// CONDSTORE), `EMAILID (Y<uid>) THREADID (T<uid>)` in listings, and a body section of up
    /// to 256 bytes without CR, LF or 8-bit bytes sent as a quoted string (`"` and `\`
    /// escaped) instead of a literal, as Yahoo does.
    pub fn start_yahoo(messages: &[(u32, u64, Vec<u8>)]) -> MailboxServer {
        MailboxServer::start_with(messages, true)
    }

    fn start_with(messages: &[(u32, u64, Vec<u8>)], yahoo: bool) -> MailboxServer {
        let state = Arc::new(Mutex::new(State {
            messages: messages
                .iter()
                .map(|(uid, listed, body)| (*uid, (*listed, Arc::new(body.clone()))))
                .collect(),
            yahoo,
            ..State::default()
        }));
        let shared = state.clone();
        let script = Script::start(Wire::Tls, move |c| serve(c, &shared));
        MailboxServer { script, state }
    }

    /// `imaps://tester@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("imaps://tester@127.0.0.1:{}", self.script.port)
    }

    /// Answer FETCHes of `uid` at `offset` with `fault` from now on.
    pub fn fault(&self, uid: u32, offset: u64, fault: Fault) {
        self.lock().faults.insert((uid, offset), fault);
    }

    /// Answer every FETCH normally again.
    pub fn clear(&self) {
        self.lock().faults.clear();
    }

    /// Every body FETCH received so far: (UID, offset).
    pub fn fetched(&self) -> Vec<(u32, u64)> {
        self.lock().fetched.clone()
    }

    /// The faults served so far: (UID, offset, fault).
    pub fn faults_served(&self) -> Vec<(u32, u64, Fault)> {
        self.lock().served.clone()
    }

    /// Listing FETCHes answered so far (the first listing and every refresh).
    pub fn listings(&self) -> usize {
        self.lock().listings
    }

    /// Body sections sent as quoted strings so far (Yahoo's manner).
    pub fn quoted(&self) -> usize {
        self.lock().quoted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn serve(c: &mut Conn, state: &Mutex<State>) {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let yahoo = lock().yahoo;
    let caps = if yahoo { YAHOO_CAPS } else { CAPS };
    c.send(format!("* OK [CAPABILITY {caps}] mailbox server ready\r\n").as_bytes());
    while let Some(cmd) = c.command() {
        if c.answer_basic(&cmd, caps) {
            continue;
        }
        if yahoo && cmd.verb == "ID" {
            let tag = &cmd.tag;
            c.send(format!("* ID (\"name\" \"yahoo-like\")\r\n{tag} OK done\r\n").as_bytes());
            continue;
        }
        let tag = &cmd.tag;
        let rest = cmd.rest.to_ascii_uppercase();
        match cmd.verb.as_str() {
            "LIST" => c.send(
                format!("* LIST (\\HasNoChildren) \"/\" INBOX\r\n{tag} OK done\r\n").as_bytes(),
            ),
            "EXAMINE" | "SELECT" => {
                let (exists, next) = {
                    let st = lock();
                    let next = st.messages.keys().next_back().map_or(1, |u| u + 1);
                    (st.messages.len(), next)
                };
                c.send(
                    format!(
                        "* {exists} EXISTS\r\n* OK [UIDVALIDITY {UIDVALIDITY}] ok\r\n\
                         * OK [UIDNEXT {next}] ok\r\n{tag} OK [READ-ONLY] done\r\n"
                    )
                    .as_bytes(),
                );
            }
            "UID" if rest.starts_with("FETCH 1:*") => {
                let mut out = String::new();
                let mut st = lock();
                st.listings += 1;
                for (seq, (uid, (listed, _))) in st.messages.iter().enumerate() {
                    let ids = if st.yahoo {
                        format!(" EMAILID (Y{uid}) THREADID (T{uid})")
                    } else {
                        String::new()
                    };
                    out.push_str(&format!(
                        "* {} FETCH (UID {uid} FLAGS (\\Seen) RFC822.SIZE {listed} \
                         INTERNALDATE \"01-Jan-2024 00:00:00 +0000\"{ids})\r\n",
                        seq + 1
                    ));
                }
                drop(st);
                out.push_str(&format!("{tag} OK done\r\n"));
                c.send(out.as_bytes());
            }
            "UID" if rest.starts_with("FETCH ") => fetch_body(c, state, tag, &rest),
            _ => c.send(format!("{tag} BAD unknown command\r\n").as_bytes()),
        }
    }
}

/// Answer `UID FETCH <uid> (UID BODY.PEEK[]<offset.len>)`.
fn fetch_body(c: &mut Conn, state: &Mutex<State>, tag: &str, rest: &str) {
    let uid: Option<u32> = rest.split(' ').nth(1).and_then(|n| n.parse().ok());
    let range = rest
        .split_once("BODY.PEEK[]<")
        .and_then(|(_, r)| r.split_once('>'))
        .and_then(|(r, _)| r.split_once('.'))
        .and_then(|(o, l)| Some((o.parse::<u64>().ok()?, l.parse::<u64>().ok()?)));
    let (Some(uid), Some((offset, len))) = (uid, range) else {
        c.send(format!("{tag} BAD not a FETCH this server knows\r\n").as_bytes());
        return;
    };
    let (seq, body, fault, yahoo) = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.fetched.push((uid, offset));
        let Some(seq) = st.messages.keys().position(|u| *u == uid) else {
            drop(st);
            c.send(format!("{tag} OK nothing\r\n").as_bytes());
            return;
        };
        let body = st.messages[&uid].1.clone();
        let fault = st.faults.get(&(uid, offset)).copied();
        if let Some(f) = fault {
            st.served.push((uid, offset, f));
        }
        (seq + 1, body, fault, st.yahoo)
    };
    match fault {
        Some(Fault::Nil) => c.send(
            format!("* {seq} FETCH (UID {uid} BODY[]<{offset}> NIL)\r\n{tag} OK done\r\n")
                .as_bytes(),
        ),
        Some(Fault::No) => c.send(format!("{tag} NO [SERVERBUG] cannot read that\r\n").as_bytes()),
        Some(Fault::Missing) => c.send(format!("{tag} OK done\r\n").as_bytes()),
        Some(Fault::Bye) => {
            c.send(b"* BYE closing\r\n");
            c.close();
        }
        None => {
            let start = (offset as usize).min(body.len());
            let end = (offset.saturating_add(len) as usize).min(body.len());
            let data = &body[start..end];
            if yahoo
                && data.len() <= YAHOO_QUOTED_UP_TO
                && data.iter().all(|&b| (32..127).contains(&b))
            {
                let mut quoted = Vec::with_capacity(data.len() + 2);
                quoted.push(b'"');
                for &b in data {
                    if b == b'"' || b == b'\\' {
                        quoted.push(b'\\');
                    }
                    quoted.push(b);
                }
                quoted.push(b'"');
                state.lock().unwrap_or_else(|e| e.into_inner()).quoted += 1;
                let mut out = format!("* {seq} FETCH (UID {uid} BODY[]<{offset}> ").into_bytes();
                out.extend_from_slice(&quoted);
                out.extend_from_slice(format!(")\r\n{tag} OK done\r\n").as_bytes());
                c.send(&out);
                return;
            }
            let mut out = format!(
                "* {seq} FETCH (UID {uid} BODY[]<{offset}> {{{}}}\r\n",
                data.len()
            )
            .into_bytes();
            out.extend_from_slice(data);
            out.extend_from_slice(format!(")\r\n{tag} OK done\r\n").as_bytes());
            c.send(&out);
        }
    }
}

/// A message body of exactly `len` bytes: a header, then numbered text lines (CRLF), so that
/// a misplaced block shows in a diff.
pub fn body_of(uid: u32, len: usize) -> Vec<u8> {
    let mut out = format!("Subject: message {uid}\r\nFrom: a@example.org\r\n\r\n").into_bytes();
    let mut line = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("uid {uid} line {line:08} abcdefghijklmnopqrstuvwxyz\r\n").as_bytes(),
        );
        line += 1;
    }
    out.truncate(len);
    out
}
