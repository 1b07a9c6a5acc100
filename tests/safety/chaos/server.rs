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

#[path = "server/commands.rs"]
mod commands;
#[path = "server/view.rs"]
mod view;
#[path = "server/wire.rs"]
mod wire;

use commands::execute;
use wire::{read_command, Command, Tok};

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

    /// Where one token is: [(folder, UID, flags)] (empty: nowhere).
    pub fn places(&self, token: &str) -> Vec<(String, u32, BTreeSet<String>)> {
        let mut out = Vec::new();
        for (name, f) in &self.folders {
            for (uid, m) in &f.msgs {
                if m.token() == token {
                    out.push((name.clone(), *uid, m.flags.clone()));
                }
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

impl Session {
    /// The selected folder's name ("" when none is selected).
    fn folder(&self) -> String {
        self.selected
            .as_ref()
            .map(|x| x.name.clone())
            .unwrap_or_default()
    }
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
