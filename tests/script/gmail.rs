//! A scripted Gmail, faithful to what is publicly known of its IMAP side (issue 15): labels
//! are folders, and one message shows in INBOX (label `\Inbox`), in each folder of a user
//! label it carries and in `[Gmail]/All Mail` (`\All`), with a UID of each folder's own and
//! the same `X-GM-MSGID` everywhere. Flags belong to the message, so they are the same in
//! every folder.
//!
//! - [`GmailServer::start`]: messages as [`Seed`]s; implicit TLS on a loopback port.
//! - What it does as Gmail does: `X-GM-MSGID`, `X-GM-THRID`, `X-GM-LABELS` in FETCH; `UID STORE
//!   [+|-]X-GM-LABELS`; `UID EXPUNGE` in a label folder removes that label (in INBOX the
//!   `\Inbox` label), in All Mail or Trash deletes the message; `UID MOVE` to Trash trashes it
//!   (out of every label folder and All Mail), to a label folder swaps the labels; `X-GM-RAW`
//!   in SEARCH (`has:attachment` and a word, nothing more); more than [`MAX_CONNECTIONS`] at
//!   once are refused at login with `NO [ALERT] Too many simultaneous connections.`;
//!   CONDSTORE with one MODSEQ counter for the account; ESEARCH.
//! - What the test can ask: [`GmailServer::body_fetches`] (every body FETCH: X-GM-MSGID and
//!   bytes sent), [`GmailServer::labels`], [`GmailServer::exists`], [`GmailServer::commands`].
//!
//! The capability line is the one the issue records after login, with the words Gmail also
//! sends (`IMAP4rev1 UNSELECT IDLE ID CHILDREN`); tests mount with `compress=no` (this server
//! does not deflate). The wire side is in [`wire`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Script, Wire};

mod wire;

/// Capabilities after login (issue 15), plus the usual words Gmail sends with them.
pub const CAPS: &str = "IMAP4rev1 UNSELECT IDLE ID CHILDREN X-GM-EXT-1 UIDPLUS \
    COMPRESS=DEFLATE ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS \
    LITERAL- SPECIAL-USE APPENDLIMIT=35651584 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR";

/// Gmail refuses the 16th simultaneous connection.
pub const MAX_CONNECTIONS: usize = 15;

pub const ALL_MAIL: &str = "[Gmail]/All Mail";
pub const TRASH: &str = "[Gmail]/Trash";

/// One message to start with: its X-GM-MSGID, X-GM-THRID, body and labels (wire form:
/// `\Inbox`, `Work`, `My Label`, modified UTF-7 for non-ASCII).
#[derive(Debug, Clone)]
pub struct Seed {
    pub msgid: u64,
    pub thrid: u64,
    pub body: Vec<u8>,
    pub labels: Vec<String>,
}

/// A message of the account.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub msgid: u64,
    pub thrid: u64,
    pub body: Arc<Vec<u8>>,
    pub labels: BTreeSet<String>,
    pub flags: BTreeSet<String>,
    pub trashed: bool,
    pub deleted_forever: bool,
    pub modseq: u64,
}

/// What a folder shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Inbox,
    Label(String),
    All,
    Trash,
    /// `[Gmail]`: no messages.
    Parent,
}

/// A folder: its wire name, what it shows, and its UIDs (assigned when a message first
/// shows in it, never reused).
#[derive(Debug)]
pub(crate) struct Folder {
    pub name: String,
    pub kind: Kind,
    pub uids: BTreeMap<u32, usize>,
    pub uid_of: HashMap<usize, u32>,
    pub uidnext: u32,
}

/// The account, shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub msgs: Vec<Msg>,
    pub folders: Vec<Folder>,
    pub modseq: u64,
    /// Every body FETCH answered: (X-GM-MSGID, bytes of body sent).
    pub body_fetches: Vec<(u64, usize)>,
    /// Every command line (tag removed), for tests that check what was sent.
    pub commands: Vec<String>,
    /// Logins refused for too many connections.
    pub refused: usize,
}

impl State {
    /// Bring a folder's UID map up to date with the messages' labels.
    pub fn sync(&mut self, f: usize) {
        let members: Vec<usize> = (0..self.msgs.len())
            .filter(|&m| shows(&self.folders[f].kind, &self.msgs[m]))
            .collect();
        let folder = &mut self.folders[f];
        folder.uids.retain(|_, m| members.contains(m));
        folder.uid_of.retain(|m, _| members.contains(m));
        for m in members {
            if !folder.uid_of.contains_key(&m) {
                let uid = folder.uidnext;
                folder.uidnext += 1;
                folder.uids.insert(uid, m);
                folder.uid_of.insert(m, uid);
            }
        }
    }

    pub fn folder(&self, name: &str) -> Option<usize> {
        self.folders.iter().position(|f| {
            f.name == name || (f.kind == Kind::Inbox && name.eq_ignore_ascii_case("INBOX"))
        })
    }

    pub fn touch(&mut self, m: usize) {
        self.modseq += 1;
        self.msgs[m].modseq = self.modseq;
    }
}

/// Whether a folder of this kind shows the message.
fn shows(kind: &Kind, m: &Msg) -> bool {
    if m.deleted_forever {
        return false;
    }
    match kind {
        Kind::Inbox => !m.trashed && m.labels.contains("\\Inbox"),
        Kind::Label(l) => !m.trashed && m.labels.contains(l),
        Kind::All => !m.trashed,
        Kind::Trash => m.trashed,
        Kind::Parent => false,
    }
}

/// A running Gmail emulator; see the module documentation. `Drop` stops it.
pub struct GmailServer {
    pub script: Script,
    state: Arc<Mutex<State>>,
}

impl GmailServer {
    /// The account holds `seeds`; `labels` are the user labels that exist as folders (a
    /// label a seed carries is added).
    pub fn start(seeds: &[Seed], labels: &[&str]) -> GmailServer {
        let mut names: BTreeSet<String> = labels.iter().map(|l| l.to_string()).collect();
        for s in seeds {
            names.extend(s.labels.iter().filter(|l| !l.starts_with('\\')).cloned());
        }
        let mut folders = vec![
            folder("INBOX", Kind::Inbox),
            folder("[Gmail]", Kind::Parent),
            folder(ALL_MAIL, Kind::All),
            folder(TRASH, Kind::Trash),
        ];
        folders.extend(
            names
                .into_iter()
                .map(|n| folder(&n, Kind::Label(n.clone()))),
        );
        let mut st = State {
            folders,
            ..State::default()
        };
        for s in seeds {
            st.modseq += 1;
            st.msgs.push(Msg {
                msgid: s.msgid,
                thrid: s.thrid,
                body: Arc::new(s.body.clone()),
                labels: s.labels.iter().cloned().collect(),
                flags: BTreeSet::new(),
                trashed: false,
                deleted_forever: false,
                modseq: st.modseq,
            });
        }
        for f in 0..st.folders.len() {
            st.sync(f);
        }
        let state = Arc::new(Mutex::new(st));
        let shared = state.clone();
        let live = Arc::new(AtomicUsize::new(0));
        let script = Script::start(Wire::Tls, move |c| {
            live.fetch_add(1, Ordering::SeqCst);
            wire::serve(c, &shared, &live);
            live.fetch_sub(1, Ordering::SeqCst);
        });
        GmailServer { script, state }
    }

    /// `imaps://tester@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("imaps://tester@127.0.0.1:{}", self.script.port)
    }

    /// Every body FETCH answered: (X-GM-MSGID, bytes of body sent).
    pub fn body_fetches(&self) -> Vec<(u64, usize)> {
        self.lock().body_fetches.clone()
    }

    /// The labels of the message with this X-GM-MSGID (wire form).
    pub fn labels(&self, msgid: u64) -> Vec<String> {
        let st = self.lock();
        st.msgs
            .iter()
            .find(|m| m.msgid == msgid)
            .map(|m| m.labels.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the message exists (in All Mail or Trash), and whether it is in Trash.
    pub fn exists(&self, msgid: u64) -> Option<bool> {
        let st = self.lock();
        st.msgs
            .iter()
            .find(|m| m.msgid == msgid && !m.deleted_forever)
            .map(|m| m.trashed)
    }

    /// The UID of a message in a folder, if it shows there.
    pub fn uid(&self, folder: &str, msgid: u64) -> Option<u32> {
        let mut st = self.lock();
        let f = st.folder(folder)?;
        st.sync(f);
        let m = st.msgs.iter().position(|m| m.msgid == msgid)?;
        st.folders[f].uid_of.get(&m).copied()
    }

    /// Every command line received so far (without its tag).
    pub fn commands(&self) -> Vec<String> {
        self.lock().commands.clone()
    }

    /// Logins refused for too many connections.
    pub fn refused(&self) -> usize {
        self.lock().refused
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn folder(name: &str, kind: Kind) -> Folder {
    Folder {
        name: name.to_string(),
        kind,
        uids: BTreeMap::new(),
        uid_of: HashMap::new(),
        uidnext: 1,
    }
}
