//! The chaos server (issue 13): a scripted IMAP server over a small model mailbox set that
//! answers every command validly but, at random, adversarially.
//!
//! - [`World`]: the model, the only truth: folders ([`Folder`]: UIDVALIDITY, UIDNEXT, messages
//!   by UID) and messages ([`Msg`]: flags, body). Every change a command makes is made here,
//!   under one lock, before anything is sent; so after a call on the mount returns, the test
//!   compares the call's claim with this model. UIDs are never reused and a folder's
//!   UIDVALIDITY never changes, so (folder, UID) names one message for good.
//! - [`ChaosServer::start`]: serve a world on a loopback port (implicit TLS). Each connection
//!   has its own [`Rng`], seeded from the run's seed and the connection's number, that picks
//!   a [`Fault`] for every command after login ([`ChaosServer::set_chaos`] turns faults on and
//!   off; `rate` is the percentage of commands that get one).
//! - Faults: NO, BAD, BYE, a cut before or after the command was carried out (after: with no
//!   answer, or half of it), a slow reply or one in two halves (well within the client's
//!   `--timeout`), noise (untagged EXPUNGE, EXISTS of a new message or a FETCH FLAGS, of
//!   *victim* messages only, before the command's own answer), and per
//!   command: `OK [MODIFIED]` to a STORE (nothing changed), `NO [TRYCREATE]` to COPY, MOVE and
//!   APPEND, FETCH answered with no data or without the asked items, `UID EXPUNGE` answered OK
//!   with nothing expunged.
//! - Not served: a `UID EXPUNGE` answered OK that kept its messages followed at once by a
//!   FETCH without data (two lies that agree; see `serve`).
//! - Victims are messages whose token starts with `V`: the chaos may expunge, deliver and
//!   re-flag them at any time, and the test never operates on them. Every other message
//!   changes only by a command the mount sent.
//! - Two profiles ([`ChaosServer::start`]'s `modseq`): plain IMAP4rev1 with UIDPLUS and MOVE,
//!   or with CONDSTORE and QRESYNC too (MODSEQs, `UNCHANGEDSINCE` that really loses races,
//!   `CHANGEDSINCE`, `SELECT (QRESYNC ...)` with `VANISHED (EARLIER)`, and expunges reported as
//!   `VANISHED` to a client that enabled QRESYNC).
//!
//! Each connection keeps its own view (sequence number -> UID) of its selected folder and
//! learns other connections' changes at the start of each command's answer (EXPUNGE, EXISTS),
//! as a real server does at its sync points. A connection whose selected folder was deleted
//! or renamed under it gets BYE, as Dovecot does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::common::Rng;
use crate::script::{Conn, Script, Wire};

const CAPS: &str = "IMAP4rev1 AUTH=PLAIN SASL-IR LITERAL+ UIDPLUS MOVE UNSELECT ID NAMESPACE";
/// Capabilities of the CONDSTORE/QRESYNC profile.
const CAPS_MODSEQ: &str = "IMAP4rev1 AUTH=PLAIN SASL-IR LITERAL+ UIDPLUS MOVE UNSELECT ID \
                           NAMESPACE ENABLE CONDSTORE QRESYNC";
const SYSTEM_FLAGS: [&str; 6] = [
    "\\Seen",
    "\\Answered",
    "\\Flagged",
    "\\Deleted",
    "\\Draft",
    "\\Recent",
];
const JOURNAL: usize = 200_000;

/// One message of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub flags: BTreeSet<String>,
    pub body: Vec<u8>,
    /// CONDSTORE's MODSEQ: the folder's HIGHESTMODSEQ when it last changed.
    pub modseq: u64,
}

impl Msg {
    /// The `X-Chaos-Token:` header of the body.
    pub fn token(&self) -> String {
        token_of(&self.body).unwrap_or_default()
    }
}

/// One folder of the model.
#[derive(Clone, Debug)]
pub struct Folder {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub msgs: BTreeMap<u32, Msg>,
    pub highest: u64,
    /// Expunged UID -> the MODSEQ of its expunge (for QRESYNC's VANISHED (EARLIER)).
    pub expunged: BTreeMap<u32, u64>,
}

impl Folder {
    /// Insert a message under `uid` with a new MODSEQ.
    fn put(&mut self, uid: u32, mut m: Msg) {
        self.highest += 1;
        m.modseq = self.highest;
        self.msgs.insert(uid, m);
    }

    /// Remove a message, remembering its expunge's MODSEQ.
    fn take(&mut self, uid: u32) -> Option<Msg> {
        let m = self.msgs.remove(&uid)?;
        self.highest += 1;
        self.expunged.insert(uid, self.highest);
        Some(m)
    }
}

/// The model mailbox set; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub folders: BTreeMap<String, Folder>,
    next_validity: u32,
    next_victim: u64,
    /// What the server did and what it was asked, newest last (bounded).
    pub journal: VecDeque<String>,
    /// Non-victim tokens deleted with their folder (DELETE of a folder holding them).
    pub lost_with_folder: Vec<(String, String)>,
    /// Every (folder, UID) the server ever held, with its body (victims that came and went
    /// within one operation too; a renamed folder's messages under both names).
    pub ever: BTreeMap<(String, u32), Vec<u8>>,
}

impl World {
    pub fn new() -> World {
        World {
            next_validity: 100,
            ..World::default()
        }
    }

    /// Create `name` (empty) if it is not there.
    pub fn create(&mut self, name: &str) {
        if !self.folders.contains_key(name) {
            self.next_validity += 1;
            self.folders.insert(
                name.to_string(),
                Folder {
                    uidvalidity: self.next_validity,
                    uidnext: 1,
                    msgs: BTreeMap::new(),
                    highest: 1,
                    expunged: BTreeMap::new(),
                },
            );
        }
    }

    /// Add a message to `folder` (created if needed); returns its UID.
    pub fn add(&mut self, folder: &str, body: Vec<u8>, flags: &[&str]) -> u32 {
        self.create(folder);
        let Some(f) = self.folders.get_mut(folder) else {
            return 0;
        };
        let uid = f.uidnext;
        f.uidnext += 1;
        self.ever.insert((folder.to_string(), uid), body.clone());
        f.put(
            uid,
            Msg {
                flags: flags.iter().map(|s| s.to_string()).collect(),
                body,
                modseq: 0,
            },
        );
        uid
    }

    /// Where each token is: token -> [(folder, UID, flags)].
    pub fn placement(&self) -> BTreeMap<String, Vec<(String, u32, BTreeSet<String>)>> {
        let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (name, f) in &self.folders {
            for (uid, m) in &f.msgs {
                out.entry(m.token())
                    .or_default()
                    .push((name.clone(), *uid, m.flags.clone()));
            }
        }
        out
    }

    /// The message at `folder`/`uid`, if the server holds it.
    pub fn message(&self, folder: &str, uid: u32) -> Option<&Msg> {
        self.folders.get(folder)?.msgs.get(&uid)
    }

    /// Add a line to the journal (the test marks its operations there too).
    pub fn note(&mut self, what: String) {
        if self.journal.len() >= JOURNAL {
            self.journal.pop_front();
        }
        self.journal.push_back(what);
    }

    fn victim(&mut self) -> Vec<u8> {
        self.next_victim += 1;
        message(
            &format!("V{:06}", self.next_victim),
            "a victim of the chaos",
        )
    }
}

/// A message body carrying `token`.
pub fn message(token: &str, text: &str) -> Vec<u8> {
    format!(
        "From: chaos@imapfs.test\r\nTo: you@imapfs.test\r\nSubject: chaos {token}\r\n\
         Date: Tue, 05 Mar 2024 09:12:00 +0000\r\nMessage-ID: <{token}@chaos.imapfs.test>\r\n\
         X-Chaos-Token: {token}\r\n\r\n{text}\r\nbody of {token}\r\n"
    )
    .into_bytes()
}

/// The token in a message's `X-Chaos-Token:` header.
pub fn token_of(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().find(|l| l.starts_with("X-Chaos-Token: "))?;
    Some(line["X-Chaos-Token: ".len()..].trim().to_string())
}

/// What the server does to one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Correct,
    /// Correct, after this many milliseconds.
    Slow(u64),
    /// Correct, with untagged noise about victims first.
    Noise,
    No,
    Bad,
    Bye,
    /// Closed as soon as the command arrived: nothing done.
    CutBefore,
    /// Carried out, then closed without an answer.
    CutAfter,
    /// Carried out, half the answer sent (mid-line or mid-literal), then closed.
    CutMid,
    /// The answer in two halves, this many milliseconds apart.
    Split(u64),
    /// `OK [MODIFIED set]` to a STORE, nothing changed.
    Modified,
    /// `NO [TRYCREATE]` to COPY, MOVE or APPEND of an existing folder.
    TryCreate,
    /// FETCH answered OK with no data.
    Missing,
    /// FETCH answered with the UIDs only, without the asked items.
    Partial,
    /// `UID EXPUNGE` answered OK, nothing expunged.
    KeepOk,
    /// A MOVE carried out (untagged COPYUID, VANISHED/EXPUNGE of the sources) and then
    /// refused with `NO [EXPUNGEISSUED]`, as Dovecot answers when another client expunged
    /// one message of the set meanwhile.
    MovedNo,
}

struct Forced {
    after: Option<String>,
    text: String,
    fault: Fault,
}

struct Shared {
    world: Mutex<World>,
    chaos: AtomicBool,
    rate: u64,
    seed: u64,
    faults: Mutex<BTreeMap<String, u64>>,
    /// The CONDSTORE/QRESYNC profile: MODSEQs, `UNCHANGEDSINCE`, `VANISHED`.
    modseq: bool,
    /// Faults a test forces: once armed (a command containing the first text was seen, or
    /// at once without one), the next command whose line contains the second text gets the
    /// fault.
    forced: Mutex<Vec<Forced>>,
}

/// A running chaos server; see the module documentation. `Drop` stops it.
pub struct ChaosServer {
    pub script: Script,
    shared: Arc<Shared>,
}

impl ChaosServer {
    /// `modseq`: advertise CONDSTORE and QRESYNC (and report expunges as VANISHED to a
    /// client that enabled QRESYNC).
    pub fn start(world: World, seed: u64, rate: u64, modseq: bool) -> ChaosServer {
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            chaos: AtomicBool::new(false),
            rate,
            seed,
            faults: Mutex::new(BTreeMap::new()),
            forced: Mutex::new(Vec::new()),
            modseq,
        });
        let s = shared.clone();
        let script = Script::start(Wire::Tls, move |c| serve(c, &s));
        ChaosServer { script, shared }
    }

    /// `imaps://tester@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("imaps://tester@127.0.0.1:{}", self.script.port)
    }

    pub fn set_chaos(&self, on: bool) {
        self.shared.chaos.store(on, Ordering::SeqCst);
    }

    /// Answer the next command whose line (without its tag) contains `text` with `fault`,
    /// chaos or not. Forced faults are used in the order given.
    pub fn force(&self, text: &str, fault: Fault) {
        self.push_forced(None, text, fault);
    }

    /// [`ChaosServer::force`], armed only once a command containing `after` arrived (on any
    /// connection).
    pub fn force_after(&self, after: &str, text: &str, fault: Fault) {
        self.push_forced(Some(after), text, fault);
    }

    /// Forget the forced faults not served yet.
    pub fn clear_forced(&self) {
        self.shared
            .forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn push_forced(&self, after: Option<&str>, text: &str, fault: Fault) {
        self.shared
            .forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Forced {
                after: after.map(str::to_string),
                text: text.to_string(),
                fault,
            });
    }

    /// The world under its lock (hold it briefly: every connection waits for it).
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.shared.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many times each fault was served, by command.
    pub fn faults(&self) -> BTreeMap<String, u64> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

// --- commands as read ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Tok {
    Atom(String),
    Str(Vec<u8>),
    List(Vec<Tok>),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Atom(s) => s.clone(),
            Tok::Str(b) => String::from_utf8_lossy(b).into_owned(),
            Tok::List(_) => String::new(),
        }
    }
    fn upper(&self) -> String {
        self.text().to_ascii_uppercase()
    }
    fn items(&self) -> Vec<Tok> {
        match self {
            Tok::List(l) => l.clone(),
            other => vec![other.clone()],
        }
    }
}

struct Command {
    tag: String,
    /// Upper case; `UID FETCH` etc. for UID commands.
    verb: String,
    args: Vec<Tok>,
    line: String,
}

/// The next command, literals included (a synchronising literal is asked for with `+`).
fn read_command(c: &mut Conn) -> Option<Command> {
    let mut text = Vec::new();
    let mut literals = VecDeque::new();
    let mut next: Option<Vec<u8>> = None;
    loop {
        let line = match next.take() {
            Some(l) => l,
            None => c.line()?,
        };
        let mut end = line.len();
        while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
            end -= 1;
        }
        let line = &line[..end];
        match literal_suffix(line) {
            Some((start, len, plus)) => {
                text.extend_from_slice(&line[..start]);
                text.push(0);
                if !plus {
                    c.send(b"+ go on\r\n");
                }
                let mut buf = Vec::new();
                while buf.len() < len {
                    buf.extend(c.line()?);
                }
                let rest = buf.split_off(len);
                literals.push_back(buf);
                // The command line goes on after the literal (at least its CRLF).
                next = (!rest.is_empty()).then_some(rest);
            }
            None => {
                text.extend_from_slice(line);
                break;
            }
        }
    }
    let printable = String::from_utf8_lossy(&text).replace('\0', "{literal}");
    let mut pos = 0;
    let mut toks = tokens(&text, &mut pos, &mut literals);
    if toks.len() < 2 {
        return Some(Command {
            tag: toks.first().map_or("*".into(), Tok::text),
            verb: String::new(),
            args: Vec::new(),
            line: printable,
        });
    }
    let tag = toks.remove(0).text();
    let mut verb = toks.remove(0).upper();
    if verb == "UID" && !toks.is_empty() {
        verb = format!("UID {}", toks.remove(0).upper());
    }
    Some(Command {
        tag,
        verb,
        args: toks,
        line: printable,
    })
}

/// `{N}` or `{N+}` at the end of a line: (where it starts, N, non-synchronising).
fn literal_suffix(line: &[u8]) -> Option<(usize, usize, bool)> {
    if line.last() != Some(&b'}') {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'{')?;
    let inner = &line[open + 1..line.len() - 1];
    let (digits, plus) = match inner.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (inner, false),
    };
    let len = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((open, len, plus))
}

fn tokens(text: &[u8], pos: &mut usize, lits: &mut VecDeque<Vec<u8>>) -> Vec<Tok> {
    let mut out = Vec::new();
    while *pos < text.len() {
        match text[*pos] {
            b' ' => *pos += 1,
            b')' => {
                *pos += 1;
                return out;
            }
            b'(' => {
                *pos += 1;
                out.push(Tok::List(tokens(text, pos, lits)));
            }
            0 => {
                *pos += 1;
                out.push(Tok::Str(lits.pop_front().unwrap_or_default()));
            }
            b'"' => {
                *pos += 1;
                let mut s = Vec::new();
                while *pos < text.len() && text[*pos] != b'"' {
                    if text[*pos] == b'\\' && *pos + 1 < text.len() {
                        *pos += 1;
                    }
                    s.push(text[*pos]);
                    *pos += 1;
                }
                *pos += 1;
                out.push(Tok::Str(s));
            }
            _ => {
                let start = *pos;
                let mut depth = 0i32;
                while *pos < text.len() {
                    let b = text[*pos];
                    match b {
                        b'[' => depth += 1,
                        b']' => depth -= 1,
                        b' ' | b'(' | b')' if depth <= 0 => break,
                        _ => {}
                    }
                    *pos += 1;
                }
                out.push(Tok::Atom(
                    String::from_utf8_lossy(&text[start..*pos]).into_owned(),
                ));
            }
        }
    }
    out
}

// --- a connection -------------------------------------------------------------------------------

struct Selected {
    name: String,
    validity: u32,
    /// Sequence number - 1 -> UID, as this connection knows it.
    view: Vec<u32>,
    writable: bool,
}

struct Session {
    rng: Rng,
    /// The last command was a `UID EXPUNGE` answered OK that kept its messages.
    kept: bool,
    /// The client enabled QRESYNC (expunges are reported as VANISHED).
    qresync: bool,
    caps: &'static str,
    modseq: bool,
    selected: Option<Selected>,
    id: usize,
}

fn serve(c: &mut Conn, shared: &Shared) {
    let mut s = Session {
        rng: Rng::new(
            shared
                .seed
                .wrapping_add((c.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        ),
        selected: None,
        id: c.index,
        kept: false,
        qresync: false,
        caps: if shared.modseq { CAPS_MODSEQ } else { CAPS },
        modseq: shared.modseq,
    };
    c.send(format!("* OK [CAPABILITY {}] chaos server ready\r\n", s.caps).as_bytes());
    while let Some(cmd) = read_command(c) {
        let mut fault = forced(shared, &cmd).unwrap_or_else(|| choose(shared, &mut s, &cmd.verb));
        // A server that keeps messages after an OK to their expunge and then leaves them out
        // of the next FETCH tells two consistent lies: no client can see through them without
        // sequence-number bookkeeping (the check after rm would read "gone"). One of the two.
        if s.kept && fault == Fault::Missing {
            fault = Fault::Partial;
        }
        s.kept = fault == Fault::KeepOk;
        if fault != Fault::Correct {
            *shared
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(format!("{} {}", fault_name(fault), cmd.verb))
                .or_default() += 1;
        }
        let lock = || shared.world.lock().unwrap_or_else(|e| e.into_inner());
        lock().note(format!("c{} {} -> {fault:?}", s.id, cmd.line));
        match fault {
            Fault::CutBefore => {
                c.close();
                return;
            }
            Fault::Bye => {
                c.send(b"* BYE chaos says goodbye\r\n");
                c.close();
                return;
            }
            Fault::Slow(ms) => std::thread::sleep(Duration::from_millis(ms)),
            _ => {}
        }
        let tag = cmd.tag.clone();
        let out = {
            let mut w = lock();
            if let Some(sel) = &s.selected {
                if w.folders.get(&sel.name).map(|f| f.uidvalidity) != Some(sel.validity) {
                    drop(w);
                    c.send(b"* BYE mailbox was deleted under us\r\n");
                    c.close();
                    return;
                }
            }
            match fault {
                Fault::No => {
                    if matches!(cmd.verb.as_str(), "SELECT" | "EXAMINE") {
                        s.selected = None;
                    }
                    format!("{tag} NO [UNAVAILABLE] chaos says no\r\n").into_bytes()
                }
                Fault::Bad => {
                    if matches!(cmd.verb.as_str(), "SELECT" | "EXAMINE") {
                        s.selected = None;
                    }
                    format!("{tag} BAD chaos says bad\r\n").into_bytes()
                }
                _ => execute(&mut w, &mut s, &cmd, fault),
            }
        };
        match fault {
            Fault::CutAfter => {
                c.close();
                return;
            }
            Fault::CutMid => {
                c.send(&out[..out.len() / 2]);
                c.close();
                return;
            }
            Fault::Split(ms) => {
                c.send(&out[..out.len() / 2]);
                std::thread::sleep(Duration::from_millis(ms));
                c.send(&out[out.len() / 2..]);
            }
            _ => c.send(&out),
        }
        if cmd.verb == "LOGOUT" {
            c.close();
            return;
        }
    }
}

fn forced(shared: &Shared, cmd: &Command) -> Option<Fault> {
    let mut forced = shared.forced.lock().unwrap_or_else(|e| e.into_inner());
    let line = cmd.line.split_once(' ').map_or("", |(_, l)| l);
    let i = forced
        .iter()
        .position(|f| f.after.is_none() && line.contains(f.text.as_str()));
    for f in forced.iter_mut() {
        if f.after.as_deref().is_some_and(|a| line.contains(a)) {
            f.after = None;
        }
    }
    Some(forced.remove(i?).fault)
}

fn fault_name(f: Fault) -> String {
    match f {
        Fault::Slow(_) => "Slow".into(),
        Fault::Split(_) => "Split".into(),
        other => format!("{other:?}"),
    }
}

/// The fault for one command (none for login-time commands: a connection that fails to log
/// in makes the client back off for seconds, and the run would test only the back-off).
fn choose(shared: &Shared, s: &mut Session, verb: &str) -> Fault {
    if !shared.chaos.load(Ordering::SeqCst)
        || matches!(
            verb,
            "CAPABILITY" | "LOGIN" | "AUTHENTICATE" | "ENABLE" | "ID" | "LOGOUT" | ""
        )
    {
        return Fault::Correct;
    }
    if s.rng.below(100) >= shared.rate {
        return if shared.rate > 0 && s.rng.below(8) == 0 {
            Fault::Noise
        } else {
            Fault::Correct
        };
    }
    let special = match verb {
        "STORE" | "UID STORE" => Some(Fault::Modified),
        "MOVE" | "UID MOVE" if s.rng.below(2) == 0 => Some(Fault::MovedNo),
        "COPY" | "UID COPY" | "MOVE" | "UID MOVE" | "APPEND" => Some(Fault::TryCreate),
        "FETCH" | "UID FETCH" if s.rng.below(2) == 0 => Some(Fault::Missing),
        "FETCH" | "UID FETCH" => Some(Fault::Partial),
        "UID EXPUNGE" | "EXPUNGE" => Some(Fault::KeepOk),
        _ => None,
    };
    match s.rng.below(100) {
        0..=14 => Fault::No,
        15..=24 => Fault::Bad,
        25..=34 => Fault::Bye,
        35..=44 => Fault::CutBefore,
        45..=52 => Fault::CutAfter,
        53..=59 => Fault::CutMid,
        60..=67 => Fault::Slow(50 + s.rng.below(700)),
        68..=74 => Fault::Split(20 + s.rng.below(500)),
        75..=84 => Fault::Noise,
        _ => special.unwrap_or(Fault::Noise),
    }
}

fn mailbox_name(t: Option<&Tok>) -> String {
    let name = t.map(Tok::text).unwrap_or_default();
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        name
    }
}

fn canonical_flag(f: &str) -> String {
    SYSTEM_FLAGS
        .iter()
        .find(|s| s.eq_ignore_ascii_case(f))
        .map_or_else(|| f.to_string(), |s| s.to_string())
}

fn flag_list(flags: &BTreeSet<String>) -> String {
    flags.iter().cloned().collect::<Vec<_>>().join(" ")
}

fn execute(w: &mut World, s: &mut Session, cmd: &Command, fault: Fault) -> Vec<u8> {
    let tag = &cmd.tag;
    let a = &cmd.args;
    let mut out: Vec<u8> = Vec::new();
    let push = |out: &mut Vec<u8>, t: String| out.extend_from_slice(t.as_bytes());
    // Sync points: every command but the sequence-number FETCH, STORE and SEARCH.
    let silent_verbs = matches!(cmd.verb.as_str(), "FETCH" | "STORE" | "SEARCH");
    if !silent_verbs {
        sync(w, s, &mut out);
        if fault == Fault::Noise {
            noise(w, s, &mut out);
        }
    }
    let ok = |t: &str| format!("{tag} OK {t}\r\n");
    let reply = match cmd.verb.as_str() {
        "CAPABILITY" => format!("* CAPABILITY {}\r\n{}", s.caps, ok("done")),
        "ENABLE" => {
            let wanted = a.iter().any(|t| t.upper() == "QRESYNC");
            if s.modseq && wanted {
                s.qresync = true;
                format!("* ENABLED QRESYNC\r\n{}", ok("done"))
            } else {
                ok("done")
            }
        }
        "LOGIN" | "AUTHENTICATE" | "SUBSCRIBE" | "UNSUBSCRIBE" => ok("done"),
        "ID" => format!("* ID NIL\r\n{}", ok("done")),
        "NAMESPACE" => format!("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n{}", ok("done")),
        "NOOP" | "CHECK" => ok("done"),
        "LOGOUT" => format!("* BYE bye\r\n{}", ok("done")),
        "LIST" | "LSUB" => {
            let kind = if cmd.verb == "LIST" { "LIST" } else { "LSUB" };
            let pattern = format!(
                "{}{}",
                a.first().map(Tok::text).unwrap_or_default(),
                a.get(1).map(Tok::text).unwrap_or_default()
            );
            let mut r = String::new();
            if pattern.is_empty() && kind == "LIST" {
                r.push_str("* LIST (\\Noselect) \"/\" \"\"\r\n");
            }
            for name in w.folders.keys() {
                if matches(pattern.as_bytes(), name.as_bytes()) {
                    r.push_str(&format!("* {kind} (\\HasNoChildren) \"/\" \"{name}\"\r\n"));
                }
            }
            r + &ok("done")
        }
        "STATUS" => {
            let name = mailbox_name(a.first());
            match w.folders.get(&name) {
                None => format!("{tag} NO [NONEXISTENT] no such folder\r\n"),
                Some(f) => {
                    let mut items = Vec::new();
                    for item in a.get(1).map(Tok::items).unwrap_or_default() {
                        let v = match item.upper().as_str() {
                            "MESSAGES" => f.msgs.len() as u64,
                            "UIDNEXT" => u64::from(f.uidnext),
                            "UIDVALIDITY" => u64::from(f.uidvalidity),
                            "RECENT" => 0,
                            "UNSEEN" => f
                                .msgs
                                .values()
                                .filter(|m| !m.flags.contains("\\Seen"))
                                .count() as u64,
                            "SIZE" => f.msgs.values().map(|m| m.body.len() as u64).sum(),
                            "HIGHESTMODSEQ" if s.modseq => f.highest,
                            _ => continue,
                        };
                        items.push(format!("{} {v}", item.upper()));
                    }
                    format!(
                        "* STATUS \"{name}\" ({})\r\n{}",
                        items.join(" "),
                        ok("done")
                    )
                }
            }
        }
        "CREATE" => {
            let name = mailbox_name(a.first());
            if w.folders.contains_key(&name) {
                format!("{tag} NO [ALREADYEXISTS] exists\r\n")
            } else if name.is_empty() || name.contains('/') {
                format!("{tag} NO [CANNOT] not here\r\n")
            } else {
                w.create(&name);
                w.note(format!("created {name}"));
                ok("created")
            }
        }
        "DELETE" => {
            let name = mailbox_name(a.first());
            if name == "INBOX" {
                format!("{tag} NO [CANNOT] not INBOX\r\n")
            } else if let Some(f) = w.folders.remove(&name) {
                for m in f.msgs.values() {
                    let t = m.token();
                    if !t.starts_with('V') {
                        w.lost_with_folder.push((name.clone(), t));
                    }
                }
                w.note(format!("deleted {name} with {} messages", f.msgs.len()));
                ok("deleted")
            } else {
                format!("{tag} NO [NONEXISTENT] no such folder\r\n")
            }
        }
        "RENAME" => {
            let (from, to) = (mailbox_name(a.first()), mailbox_name(a.get(1)));
            if from == "INBOX" || to.is_empty() || to.contains('/') {
                format!("{tag} NO [CANNOT] not that\r\n")
            } else if w.folders.contains_key(&to) {
                format!("{tag} NO [ALREADYEXISTS] exists\r\n")
            } else if let Some(f) = w.folders.remove(&from) {
                for (uid, m) in &f.msgs {
                    w.ever.insert((to.clone(), *uid), m.body.clone());
                }
                w.folders.insert(to.clone(), f);
                w.note(format!("renamed {from} to {to}"));
                ok("renamed")
            } else {
                format!("{tag} NO [NONEXISTENT] no such folder\r\n")
            }
        }
        "SELECT" | "EXAMINE" => {
            s.selected = None;
            let name = mailbox_name(a.first());
            match w.folders.get(&name) {
                None => format!("{tag} NO [NONEXISTENT] no such folder\r\n"),
                Some(f) => {
                    let writable = cmd.verb == "SELECT";
                    s.selected = Some(Selected {
                        name: name.clone(),
                        validity: f.uidvalidity,
                        view: f.msgs.keys().copied().collect(),
                        writable,
                    });
                    let perm = if writable {
                        "\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*"
                    } else {
                        ""
                    };
                    let mut extra = String::new();
                    if s.modseq {
                        extra.push_str(&format!("* OK [HIGHESTMODSEQ {}] ok\r\n", f.highest));
                    }
                    if let Some((v, since)) = qresync_param(a.get(1)) {
                        if s.qresync && v == f.uidvalidity {
                            let gone: Vec<String> = f
                                .expunged
                                .iter()
                                .filter(|(_, m)| **m > since)
                                .map(|(u, _)| u.to_string())
                                .collect();
                            if !gone.is_empty() {
                                extra.push_str(&format!(
                                    "* VANISHED (EARLIER) {}\r\n",
                                    gone.join(",")
                                ));
                            }
                            for (i, (u, m)) in f.msgs.iter().enumerate() {
                                if m.modseq > since {
                                    extra.push_str(&format!(
                                        "* {} FETCH (UID {u} FLAGS ({}) MODSEQ ({}))\r\n",
                                        i + 1,
                                        flag_list(&m.flags),
                                        m.modseq
                                    ));
                                }
                            }
                        }
                    }
                    format!(
                        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
                         * OK [PERMANENTFLAGS ({perm})] ok\r\n* {} EXISTS\r\n* 0 RECENT\r\n\
                         * OK [UIDVALIDITY {}] ok\r\n* OK [UIDNEXT {}] ok\r\n{extra}\
                         {tag} OK [{}] done\r\n",
                        f.msgs.len(),
                        f.uidvalidity,
                        f.uidnext,
                        if writable { "READ-WRITE" } else { "READ-ONLY" }
                    )
                }
            }
        }
        "UNSELECT" => {
            s.selected = None;
            ok("done")
        }
        "CLOSE" => {
            if s.selected.as_ref().is_some_and(|x| x.writable) {
                let uids = selected_uids(w, s);
                expunge(w, s, &uids, fault, &mut String::new());
            }
            s.selected = None;
            ok("closed")
        }
        "APPEND" => append(w, tag, a, fault),
        verb => match &s.selected {
            None => format!("{tag} BAD no mailbox selected\r\n"),
            Some(_) => selected_command(w, s, verb, cmd, fault),
        },
    };
    push(&mut out, reply);
    out
}

/// Commands that need a selected folder.
fn selected_command(
    w: &mut World,
    s: &mut Session,
    verb: &str,
    cmd: &Command,
    fault: Fault,
) -> String {
    let tag = &cmd.tag;
    let a = &cmd.args;
    let uid_mode = verb.starts_with("UID ");
    let set = || a.first().map(Tok::text).unwrap_or_default();
    let writable = s.selected.as_ref().is_some_and(|x| x.writable);
    let mut out = String::new();
    match verb {
        "EXPUNGE" | "UID EXPUNGE" => {
            if !writable {
                return format!("{tag} NO [READ-ONLY] examined\r\n");
            }
            if fault == Fault::KeepOk {
                return format!("{tag} OK expunged\r\n");
            }
            let uids = if verb == "EXPUNGE" {
                selected_uids(w, s)
            } else {
                resolve(w, s, &set(), true)
            };
            expunge(w, s, &uids, fault, &mut out);
            out + &format!("{tag} OK expunged\r\n")
        }
        "FETCH" | "UID FETCH" => {
            let mut uids = resolve(w, s, &set(), uid_mode);
            let mut items = a.get(1).map(Tok::items).unwrap_or_default();
            if let Some(since) = modifier(a.get(2), "CHANGEDSINCE") {
                let name = s
                    .selected
                    .as_ref()
                    .map(|x| x.name.clone())
                    .unwrap_or_default();
                uids.retain(|u| w.message(&name, *u).is_some_and(|m| m.modseq > since));
                items.push(Tok::Atom("MODSEQ".into()));
            }
            if fault == Fault::Missing {
                return format!("{tag} OK done\r\n");
            }
            let Some(sel) = &s.selected else {
                return format!("{tag} BAD no mailbox selected\r\n");
            };
            let name = sel.name.clone();
            for uid in uids {
                let Some(seq) = seq_of(s, uid) else { continue };
                let Some(m) = w.folders.get_mut(&name).and_then(|f| f.msgs.get_mut(&uid)) else {
                    continue;
                };
                let mut parts: Vec<Vec<u8>> = vec![format!("UID {uid}").into_bytes()];
                if fault != Fault::Partial {
                    for item in &items {
                        if item.upper() == "MODSEQ" {
                            parts.push(format!("MODSEQ ({})", m.modseq).into_bytes());
                        } else if let Some(p) = fetch_item(m, &item.text(), writable) {
                            parts.push(p);
                        }
                    }
                }
                let mut line = format!("* {seq} FETCH (").into_bytes();
                line.extend(parts.join(&b' '));
                line.extend_from_slice(b")\r\n");
                out.push_str(&String::from_utf8_lossy(&line));
                // Literals may hold non-UTF-8 bytes: bodies here are ASCII.
            }
            out + &format!("{tag} OK done\r\n")
        }
        "STORE" | "UID STORE" => {
            if !writable {
                return format!("{tag} NO [READ-ONLY] examined\r\n");
            }
            if fault == Fault::Modified {
                return format!("{tag} OK [MODIFIED {}] nothing changed\r\n", set());
            }
            let uids = resolve(w, s, &set(), uid_mode);
            let mut rest = a.get(1..).unwrap_or_default().to_vec();
            let mut unchanged_since = None;
            if matches!(rest.first(), Some(Tok::List(_))) {
                unchanged_since = modifier(rest.first(), "UNCHANGEDSINCE");
                rest.remove(0);
            }
            let mut modified = Vec::new();
            let item = rest.first().map(Tok::upper).unwrap_or_default();
            let flags: BTreeSet<String> = rest
                .get(1..)
                .unwrap_or_default()
                .iter()
                .flat_map(Tok::items)
                .map(|t| canonical_flag(&t.text()))
                .filter(|f| !f.is_empty())
                .collect();
            let name = s
                .selected
                .as_ref()
                .map(|x| x.name.clone())
                .unwrap_or_default();
            for uid in uids {
                let Some(f) = w.folders.get_mut(&name) else {
                    continue;
                };
                let Some(m) = f.msgs.get_mut(&uid) else {
                    continue;
                };
                if unchanged_since.is_some_and(|u| m.modseq > u) {
                    modified.push(uid.to_string());
                    continue;
                }
                f.highest += 1;
                m.modseq = f.highest;
                if item.starts_with('+') {
                    m.flags.extend(flags.iter().cloned());
                } else if item.starts_with('-') {
                    m.flags.retain(|f| !flags.contains(f));
                } else {
                    m.flags = flags.clone();
                }
                let now = flag_list(&m.flags);
                let token = m.token();
                let modseq = if s.modseq {
                    format!(" MODSEQ ({})", m.modseq)
                } else {
                    String::new()
                };
                if !item.ends_with(".SILENT") || unchanged_since.is_some() {
                    if let Some(seq) = seq_of(s, uid) {
                        out.push_str(&format!(
                            "* {seq} FETCH (UID {uid} FLAGS ({now}){modseq})\r\n"
                        ));
                    }
                }
                w.note(format!("{name}/{uid} {token} flags now ({now})"));
            }
            if modified.is_empty() {
                out + &format!("{tag} OK stored\r\n")
            } else {
                out + &format!(
                    "{tag} OK [MODIFIED {}] changed since\r\n",
                    modified.join(",")
                )
            }
        }
        "COPY" | "UID COPY" | "MOVE" | "UID MOVE" => {
            let moving = verb.ends_with("MOVE");
            if moving && !writable {
                return format!("{tag} NO [READ-ONLY] examined\r\n");
            }
            let target = mailbox_name(a.get(1));
            if fault == Fault::TryCreate || !w.folders.contains_key(&target) {
                return format!("{tag} NO [TRYCREATE] no such folder\r\n");
            }
            let uids = resolve(w, s, &set(), uid_mode);
            let name = s
                .selected
                .as_ref()
                .map(|x| x.name.clone())
                .unwrap_or_default();
            let (mut from, mut to) = (Vec::new(), Vec::new());
            for uid in &uids {
                let Some(m) = w.message(&name, *uid).cloned() else {
                    continue;
                };
                let token = m.token();
                let Some(t) = w.folders.get_mut(&target) else {
                    continue;
                };
                let new = t.uidnext;
                t.uidnext += 1;
                w.ever.insert((target.clone(), new), m.body.clone());
                let Some(t) = w.folders.get_mut(&target) else {
                    continue;
                };
                t.put(new, m);
                from.push(uid.to_string());
                to.push(new.to_string());
                w.note(format!("{verb} {name}/{uid} {token} -> {target}/{new}"));
            }
            let validity = w.folders.get(&target).map_or(0, |f| f.uidvalidity);
            let code = if from.is_empty() {
                String::new()
            } else {
                format!("[COPYUID {validity} {} {}] ", from.join(","), to.join(","))
            };
            if moving {
                if !code.is_empty() {
                    out.push_str(&format!("* OK {code}moved\r\n"));
                }
                let moved: Vec<u32> = from.iter().filter_map(|u| u.parse().ok()).collect();
                let mut gone = String::new();
                if let Some(f) = w.folders.get_mut(&name) {
                    for uid in &moved {
                        f.take(*uid);
                    }
                }
                for uid in moved {
                    gone.push_str(&report_gone(s, uid));
                }
                if fault == Fault::MovedNo {
                    return out
                        + &gone
                        + &format!("{tag} NO [EXPUNGEISSUED] some messages no longer exist\r\n");
                }
                out + &gone + &format!("{tag} OK done\r\n")
            } else {
                out + &format!("{tag} OK {code}done\r\n")
            }
        }
        "SEARCH" | "UID SEARCH" => {
            let name = s
                .selected
                .as_ref()
                .map(|x| x.name.clone())
                .unwrap_or_default();
            let mut hits = selected_uids(w, s);
            let mut i = 0;
            while i < a.len() {
                let key = a[i].upper();
                match key.as_str() {
                    "ALL" => {}
                    "UID" => {
                        let set = a.get(i + 1).map(Tok::text).unwrap_or_default();
                        let within = resolve(w, s, &set, true);
                        hits.retain(|u| within.contains(u));
                        i += 1;
                    }
                    "HEADER" => {
                        let field = a.get(i + 1).map(Tok::text).unwrap_or_default();
                        let value = a.get(i + 2).map(Tok::text).unwrap_or_default();
                        hits.retain(|u| {
                            w.message(&name, *u)
                                .is_some_and(|m| header_has(&m.body, &field, &value))
                        });
                        i += 2;
                    }
                    "CHARSET" => i += 1,
                    _ => return format!("{tag} BAD search key {key} unknown here\r\n"),
                }
                i += 1;
            }
            let nums: Vec<String> = hits
                .iter()
                .filter_map(|u| {
                    if uid_mode {
                        Some(u.to_string())
                    } else {
                        seq_of(s, *u).map(|q| q.to_string())
                    }
                })
                .collect();
            let sep = if nums.is_empty() { "" } else { " " };
            format!("* SEARCH{sep}{}\r\n{tag} OK done\r\n", nums.join(" "))
        }
        _ => format!("{tag} BAD unknown command\r\n"),
    }
}

fn append(w: &mut World, tag: &str, a: &[Tok], fault: Fault) -> String {
    let name = mailbox_name(a.first());
    let Some(Tok::Str(body)) = a.last() else {
        return format!("{tag} BAD no message\r\n");
    };
    if fault == Fault::TryCreate || !w.folders.contains_key(&name) {
        return format!("{tag} NO [TRYCREATE] no such folder\r\n");
    }
    let flags: Vec<String> = match a.get(1) {
        Some(Tok::List(l)) => l.iter().map(|t| canonical_flag(&t.text())).collect(),
        _ => Vec::new(),
    };
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let uid = w.add(&name, body.clone(), &refs);
    let validity = w.folders.get(&name).map_or(0, |f| f.uidvalidity);
    let token = token_of(body).unwrap_or_default();
    w.note(format!(
        "APPEND {name}/{uid} {token} ({} bytes)",
        body.len()
    ));
    format!("{tag} OK [APPENDUID {validity} {uid}] appended\r\n")
}

/// Tell this connection what other connections changed in its folder (EXPUNGE, EXISTS).
fn sync(w: &World, s: &mut Session, out: &mut Vec<u8>) {
    let Some(sel) = s.selected.as_mut() else {
        return;
    };
    let Some(f) = w.folders.get(&sel.name) else {
        return;
    };
    let mut i = 0;
    let mut vanished = Vec::new();
    while i < sel.view.len() {
        if f.msgs.contains_key(&sel.view[i]) {
            i += 1;
        } else if s.qresync {
            vanished.push(sel.view.remove(i).to_string());
        } else {
            out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
            sel.view.remove(i);
        }
    }
    if !vanished.is_empty() {
        out.extend_from_slice(format!("* VANISHED {}\r\n", vanished.join(",")).as_bytes());
    }
    let last = sel.view.last().copied().unwrap_or(0);
    let before = sel.view.len();
    sel.view.extend(f.msgs.keys().filter(|u| **u > last));
    if sel.view.len() != before {
        out.extend_from_slice(format!("* {} EXISTS\r\n", sel.view.len()).as_bytes());
    }
}

/// Untagged news of victims in the selected folder: one expunged, one delivered or one
/// re-flagged, really done in the model.
fn noise(w: &mut World, s: &mut Session, out: &mut Vec<u8>) {
    let Some(name) = s.selected.as_ref().map(|x| x.name.clone()) else {
        return;
    };
    let victims: Vec<u32> = w
        .folders
        .get(&name)
        .map(|f| {
            f.msgs
                .iter()
                .filter(|(_, m)| m.token().starts_with('V'))
                .map(|(u, _)| *u)
                .collect()
        })
        .unwrap_or_default();
    let pick = (!victims.is_empty()).then(|| victims[s.rng.below(victims.len() as u64) as usize]);
    match (s.rng.below(3), pick) {
        (0, Some(uid)) => {
            if let Some(f) = w.folders.get_mut(&name) {
                f.take(uid);
            }
            out.extend_from_slice(report_gone(s, uid).as_bytes());
            w.note(format!("noise: expunged victim {name}/{uid}"));
        }
        (1, Some(uid)) => {
            let flag = ["\\Seen", "\\Flagged", "$Chaos"][s.rng.below(3) as usize];
            let now = w.folders.get_mut(&name).and_then(|f| {
                let m = f.msgs.get_mut(&uid)?;
                if !m.flags.remove(flag) {
                    m.flags.insert(flag.to_string());
                }
                f.highest += 1;
                m.modseq = f.highest;
                Some(flag_list(&m.flags))
            });
            if let (Some(now), Some(seq)) = (now, seq_of(s, uid)) {
                out.extend_from_slice(format!("* {seq} FETCH (FLAGS ({now}))\r\n").as_bytes());
            }
        }
        _ => {
            let body = w.victim();
            let uid = w.add(&name, body, &[]);
            w.note(format!("noise: delivered victim {name}/{uid}"));
            sync(w, s, out);
        }
    }
}

fn expunge(w: &mut World, s: &mut Session, uids: &[u32], _fault: Fault, out: &mut String) {
    let name = s
        .selected
        .as_ref()
        .map(|x| x.name.clone())
        .unwrap_or_default();
    for uid in uids {
        let deleted = w
            .message(&name, *uid)
            .is_some_and(|m| m.flags.contains("\\Deleted"));
        if !deleted {
            continue;
        }
        let token = w.message(&name, *uid).map(Msg::token).unwrap_or_default();
        if let Some(f) = w.folders.get_mut(&name) {
            f.take(*uid);
        }
        out.push_str(&report_gone(s, *uid));
        w.note(format!("expunged {name}/{uid} {token}"));
    }
}

/// The report of `uid`'s expunge to this connection (`* n EXPUNGE`, or `* VANISHED uid` once
/// QRESYNC is enabled), taking it out of the connection's view.
fn report_gone(s: &mut Session, uid: u32) -> String {
    let Some(seq) = seq_of(s, uid) else {
        return String::new();
    };
    if let Some(sel) = s.selected.as_mut() {
        sel.view.remove(seq - 1);
    }
    if s.qresync {
        format!("* VANISHED {uid}\r\n")
    } else {
        format!("* {seq} EXPUNGE\r\n")
    }
}

/// `(NAME n)` (a FETCH or STORE modifier): n.
fn modifier(t: Option<&Tok>, name: &str) -> Option<u64> {
    let items = match t? {
        Tok::List(l) => l.clone(),
        _ => return None,
    };
    let i = items.iter().position(|x| x.upper() == name)?;
    items.get(i + 1)?.text().parse().ok()
}

/// `(QRESYNC (uidvalidity modseq ...))` of a SELECT: (uidvalidity, modseq).
fn qresync_param(t: Option<&Tok>) -> Option<(u32, u64)> {
    let items = match t? {
        Tok::List(l) => l.clone(),
        _ => return None,
    };
    let i = items.iter().position(|x| x.upper() == "QRESYNC")?;
    let Tok::List(p) = items.get(i + 1)? else {
        return None;
    };
    Some((
        p.first()?.text().parse().ok()?,
        p.get(1)?.text().parse().ok()?,
    ))
}

fn seq_of(s: &Session, uid: u32) -> Option<usize> {
    s.selected
        .as_ref()?
        .view
        .iter()
        .position(|u| *u == uid)
        .map(|p| p + 1)
}

fn selected_uids(w: &World, s: &Session) -> Vec<u32> {
    let Some(sel) = &s.selected else {
        return Vec::new();
    };
    let Some(f) = w.folders.get(&sel.name) else {
        return Vec::new();
    };
    sel.view
        .iter()
        .copied()
        .filter(|u| f.msgs.contains_key(u))
        .collect()
}

/// The UIDs a set names (UIDs or sequence numbers) among the folder's messages in view.
fn resolve(w: &World, s: &Session, set: &str, uid_mode: bool) -> Vec<u32> {
    let known = selected_uids(w, s);
    let Some(sel) = &s.selected else {
        return Vec::new();
    };
    let top = if uid_mode {
        known.last().copied().unwrap_or(0)
    } else {
        sel.view.len() as u32
    };
    let num = |x: &str| -> Option<u32> {
        if x == "*" {
            Some(top)
        } else {
            x.parse().ok()
        }
    };
    let ranges: Vec<(u32, u32)> = set
        .split(',')
        .filter_map(|part| match part.split_once(':') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                Some((a.min(b), a.max(b)))
            }
            None => num(part).map(|n| (n, n)),
        })
        .collect();
    let inside = |n: u32| ranges.iter().any(|&(a, b)| (a..=b).contains(&n));
    if uid_mode {
        known.into_iter().filter(|u| inside(*u)).collect()
    } else {
        sel.view
            .iter()
            .enumerate()
            .filter(|(i, u)| inside(*i as u32 + 1) && known.contains(u))
            .map(|(_, u)| *u)
            .collect()
    }
}

/// One FETCH item's data (`NAME value`), or `None` for an item this server does not know.
fn fetch_item(m: &mut Msg, item: &str, writable: bool) -> Option<Vec<u8>> {
    let upper = item.to_ascii_uppercase();
    let body = m.body.clone();
    let split = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len(), |p| p + 4);
    let literal = |key: String, data: &[u8]| {
        let mut v = format!("{key} {{{}}}\r\n", data.len()).into_bytes();
        v.extend_from_slice(data);
        v
    };
    match upper.as_str() {
        "UID" => None, // always sent first
        "FLAGS" => Some(format!("FLAGS ({})", flag_list(&m.flags)).into_bytes()),
        "RFC822.SIZE" => Some(format!("RFC822.SIZE {}", body.len()).into_bytes()),
        "INTERNALDATE" => Some(b"INTERNALDATE \"05-Mar-2024 09:12:00 +0000\"".to_vec()),
        "ENVELOPE" => Some(b"ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)".to_vec()),
        "BODYSTRUCTURE" | "BODY" => Some(
            format!(
                "{upper} (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" {} {})",
                body.len() - split,
                body[split..].iter().filter(|b| **b == b'\n').count()
            )
            .into_bytes(),
        ),
        "RFC822" | "RFC822.HEADER" | "RFC822.TEXT" => {
            if upper == "RFC822" && writable {
                m.flags.insert("\\Seen".into());
            }
            let data = match upper.as_str() {
                "RFC822" => &body[..],
                "RFC822.HEADER" => &body[..split],
                _ => &body[split..],
            };
            Some(literal(upper.clone(), data))
        }
        _ => {
            let (peek, rest) = if let Some(r) = upper.strip_prefix("BODY.PEEK[") {
                (true, r)
            } else if let Some(r) = upper.strip_prefix("BODY[") {
                (false, r)
            } else if let Some(r) = upper.strip_prefix("BINARY.PEEK[") {
                (true, r)
            } else {
                return None;
            };
            let close = rest.rfind(']')?;
            let section = &rest[..close];
            let partial = &rest[close + 1..];
            if !peek && writable {
                m.flags.insert("\\Seen".into());
            }
            let data: Vec<u8> = match section {
                "" => body.clone(),
                "HEADER" => body[..split].to_vec(),
                "TEXT" | "1" => body[split..].to_vec(),
                s if s.starts_with("HEADER.FIELDS") => {
                    let not = s.starts_with("HEADER.FIELDS.NOT");
                    let names: Vec<String> = s
                        .split_once('(')
                        .map(|(_, l)| l.trim_end_matches(')'))
                        .unwrap_or("")
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    header_fields(&body[..split], &names, not)
                }
                _ => Vec::new(),
            };
            let kind = if upper.starts_with("BINARY") {
                "BINARY"
            } else {
                "BODY"
            };
            let (origin, data) = match partial
                .strip_prefix('<')
                .and_then(|p| p.strip_suffix('>'))
                .and_then(|p| p.split_once('.'))
                .and_then(|(o, l)| Some((o.parse::<usize>().ok()?, l.parse::<usize>().ok()?)))
            {
                Some((o, l)) => {
                    let start = o.min(data.len());
                    let end = o.saturating_add(l).min(data.len());
                    (format!("<{o}>"), data[start..end].to_vec())
                }
                None => (String::new(), data),
            };
            Some(literal(format!("{kind}[{section}]{origin}"), &data))
        }
    }
}

fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(header);
    let mut out = String::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        let name = line.split(':').next().unwrap_or("").to_ascii_uppercase();
        if names.iter().any(|n| n == &name) != not {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn header_has(body: &[u8], field: &str, value: &str) -> bool {
    let text = String::from_utf8_lossy(body);
    text.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\r\n")
        .any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                n.eq_ignore_ascii_case(field)
                    && v.to_ascii_lowercase().contains(&value.to_ascii_lowercase())
            })
        })
}

/// IMAP LIST wildcards: `*` anything, `%` anything but the delimiter.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| matches(rest, &name[i..])),
        Some((b'%', rest)) => (0..=name.len())
            .take_while(|i| *i == 0 || name[i - 1] != b'/')
            .any(|i| matches(rest, &name[i..])),
        Some((c, rest)) => name
            .split_first()
            .is_some_and(|(n, tail)| n.eq_ignore_ascii_case(c) && matches(rest, tail)),
    }
}
