//! What the Maildir layout's tests share (`tests/maildir.rs`, `maildir_clients.rs`,
//! `maildir_tty.rs`): the seeded account, a mount of it in the Maildir layout, and [`Side`],
//! where a client script runs: the mount, or the control, a plain local Maildir holding the
//! same messages, so that a failing client script is told apart from a failing mount.
//!
//! The account: INBOX holds 1 unseen, 2 seen, 3 seen+flagged, 4 unseen+answered; Archive one
//! seen message (9); Archive.2024 is empty. Every message's body has the token `zebracorn`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{
    self, compose_text, run, within, Dovecot, Mount, MountOptions, Seed, Subject, TextMessage,
};

pub const QUICK: Duration = Duration::from_secs(30);

/// A folder's seeded messages: (number, flags).
pub type Messages = &'static [(u32, &'static [&'static str])];

/// The seeded messages per folder; INBOX's number is its UID.
pub const ACCOUNT: [(&str, Messages); 3] = [
    (
        "INBOX",
        &[
            (1, &[]),
            (2, &["\\Seen"]),
            (3, &["\\Flagged", "\\Seen"]),
            (4, &["\\Answered"]),
        ],
    ),
    ("Archive", &[(9, &["\\Seen"])]),
    ("Archive.2024", &[]),
];

pub fn seed() -> Seed {
    let mut seed = Seed::new();
    for (folder, messages) in ACCOUNT {
        let f = seed.folder_mut(folder);
        for (n, flags) in messages {
            f.push_text(&message(*n), flags);
        }
    }
    seed
}

/// Message number `n` (its date orders it: later numbers are newer).
pub fn message(n: u32) -> TextMessage<'static> {
    TextMessage {
        from: "Alice Example <alice@example.org>",
        to: "bob@example.net",
        subject: Subject::Plain("maildir test"),
        date: 1_700_000_000 + i64::from(n) * 60,
        message_id: format!("<maildir-{n}@example.org>"),
        body_lines: vec![format!("message number {n}"), "token zebracorn".into()],
    }
}

/// The message another client delivers while a client runs: its subject tells it apart.
pub fn other_clients_message(n: u32) -> Vec<u8> {
    let mut m = message(n);
    m.subject = Subject::Plain("from the other client");
    compose_text(&m)
}

pub struct Fixture {
    pub mount: Mount,
    pub dovecot: Dovecot,
    /// The cache directory the mount keeps its indexes in (kept for a remount).
    pub cache: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.cache);
    }
}

pub fn mounted(args: &[&str]) -> Fixture {
    mounted_seed(&seed(), args)
}

pub fn mounted_seed(seed: &Seed, args: &[&str]) -> Fixture {
    let dovecot = Dovecot::start(seed);
    let cache = common::unique_temp_dir("maildir-cache");
    let mount = mount_with_cache(&dovecot, args, &cache);
    Fixture {
        mount,
        dovecot,
        cache,
    }
}

pub fn mount_with_cache(dovecot: &Dovecot, args: &[&str], cache: &Path) -> Mount {
    MountOptions::new(dovecot)
        .args(args)
        .cache_home(cache)
        .start()
        .unwrap_or_else(|failure| panic!("{failure}"))
}

pub fn maildir() -> Fixture {
    mounted(&["-o", "maildir"])
}

impl Fixture {
    /// Unmount and mount again with the same cache directory.
    pub fn remount(&mut self, args: &[&str]) {
        let status = self.mount_replace(args);
        assert!(status.success(), "imapfs exited with {status}");
    }

    fn mount_replace(&mut self, args: &[&str]) -> std::process::ExitStatus {
        let fresh = mount_with_cache(&self.dovecot, args, &self.cache);
        std::mem::replace(&mut self.mount, fresh).unmount()
    }
}

/// The names in a directory, read under a deadline.
pub fn names(dir: PathBuf) -> BTreeSet<String> {
    within("readdir", QUICK, move || {
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    })
}

pub fn validity(f: &Fixture, folder: &str) -> u32 {
    f.dovecot.oracle_status(folder).uidvalidity
}

/// A message's name on the mount.
pub fn name(validity: u32, uid: u32, letters: &str) -> String {
    format!("{validity}.{uid}.imapfs:2,{letters}")
}

/// A message's flags on the server, without \Recent.
pub fn flags(f: &Fixture, folder: &str, uid: u32) -> BTreeSet<String> {
    f.dovecot
        .oracle_flags(folder, uid)
        .into_iter()
        .filter(|f| f != "\\Recent")
        .collect()
}

pub fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub fn rename(from: PathBuf, to: PathBuf) -> std::io::Result<()> {
    within("rename", QUICK, move || fs::rename(from, to))
}

/// Whether a program is on PATH. A client test whose client is missing fails (scripts/setup.sh
/// installs them all) unless `IMAPFS_SKIP_CLIENTS=1` says to skip, loudly.
pub fn client_present(programs: &[&str]) -> bool {
    let missing: Vec<&&str> = programs.iter().filter(|p| !has(p)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("IMAPFS_SKIP_CLIENTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: {missing:?} not installed (IMAPFS_SKIP_CLIENTS=1)");
        return false;
    }
    panic!("{missing:?} not installed: run scripts/setup.sh (or set IMAPFS_SKIP_CLIENTS=1)");
}

fn has(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Runs a command under [`QUICK`]; its stdout, or a panic with its stderr.
pub fn sh(cmd: &[&str]) -> String {
    let out = run(cmd, QUICK);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bare LF line ends as CRLF (what an APPEND of a file with bare LF stores).
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Where a client script runs.
pub enum Side {
    /// The account through a Maildir-layout mount.
    Mount(Box<Fixture>),
    /// The control: a plain local Maildir with the same messages (removed on drop).
    Local(PathBuf),
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Side::Local(root) = self {
            let _ = fs::remove_dir_all(root);
        }
    }
}

impl Side {
    pub fn mount() -> Side {
        Side::Mount(Box::new(maildir()))
    }

    /// The control Maildir: the same folders (`Archive/2024` nested, as the mount shows
    /// them) and messages, placed as the mount places them (unseen in `new/`), named
    /// `N.control:2,LETTERS`.
    pub fn local() -> Side {
        let root = common::unique_temp_dir("maildir-control");
        for (folder, messages) in ACCOUNT {
            let dir = root.join(folder.replace('.', "/"));
            for sub in ["cur", "new", "tmp"] {
                fs::create_dir_all(dir.join(sub)).expect("mkdir");
            }
            for (n, flags) in messages {
                let seen = flags.contains(&"\\Seen");
                let sub = if seen { "cur" } else { "new" };
                let file = format!("{n}.control:2,{}", letters(flags));
                fs::write(dir.join(sub).join(file), compose_text(&message(*n))).expect("seed");
            }
        }
        Side::Local(root)
    }

    pub fn root(&self) -> &Path {
        match self {
            Side::Mount(f) => f.mount.path(),
            Side::Local(root) => root,
        }
    }

    pub fn is_mount(&self) -> bool {
        matches!(self, Side::Mount(_))
    }

    pub fn fixture(&self) -> &Fixture {
        match self {
            Side::Mount(f) => f,
            Side::Local(_) => panic!("the control has no server"),
        }
    }

    /// The directory of `folder` (`Archive/2024` style).
    pub fn folder(&self, folder: &str) -> PathBuf {
        self.root().join(folder)
    }

    /// The file of INBOX-style message `n` in `folder`, in `cur/` or `new/` (panics if none).
    pub fn file(&self, folder: &str, n: u32) -> PathBuf {
        let dir = self.folder(folder);
        for sub in ["cur", "new"] {
            for entry in names(dir.join(sub)) {
                let unique = entry.split(":2,").next().unwrap_or_default();
                let ours = match self {
                    Side::Mount(_) => unique.ends_with(&format!(".{n}.imapfs")),
                    Side::Local(_) => unique == format!("{n}.control"),
                };
                if ours {
                    return dir.join(sub).join(entry);
                }
            }
        }
        panic!("no message {n} in {}", dir.display());
    }

    /// Every file in `cur/` and `new/` of `folder`.
    pub fn files(&self, folder: &str) -> Vec<PathBuf> {
        let dir = self.folder(folder);
        let mut out = Vec::new();
        for sub in ["cur", "new"] {
            out.extend(
                names(dir.join(sub))
                    .into_iter()
                    .map(|n| dir.join(sub).join(n)),
            );
        }
        out
    }

    /// Another client delivers `bytes` to INBOX: an APPEND on the server, or a file written
    /// into the control's `new/` as a delivery agent writes it (tmp/, then rename).
    pub fn other_client_delivers(&self, bytes: &[u8]) {
        match self {
            Side::Mount(f) => {
                f.dovecot.oracle_append("INBOX", bytes);
            }
            Side::Local(root) => {
                let tmp = root.join("INBOX/tmp/other.control");
                fs::write(&tmp, bytes).expect("deliver");
                fs::rename(&tmp, root.join("INBOX/new/100.control:2,")).expect("deliver");
            }
        }
    }

    /// Another client sets \Flagged on INBOX message `n` (a STORE, or a rename in the
    /// control).
    pub fn other_client_flags(&self, n: u32) {
        self.other_client_sets(n, "\\Flagged", 'F');
    }

    /// Another client sets \Deleted on INBOX message `n` (a STORE, or a rename adding `T`
    /// in the control).
    pub fn other_client_trashes(&self, n: u32) {
        self.other_client_sets(n, "\\Deleted", 'T');
    }

    fn other_client_sets(&self, n: u32, flag: &str, letter: char) {
        match self {
            Side::Mount(f) => f.dovecot.oracle_store("INBOX", n, "+FLAGS", &[flag]),
            Side::Local(_) => {
                let from = self.file("INBOX", n);
                let name = from.file_name().unwrap().to_string_lossy().into_owned();
                let (unique, info) = name.split_once(":2,").expect("maildir name");
                let mut l: Vec<char> = info.chars().chain([letter]).collect();
                l.sort_unstable();
                l.dedup();
                let to = from
                    .parent()
                    .unwrap()
                    .join(format!("{unique}:2,{}", l.iter().collect::<String>()));
                fs::rename(from, to).expect("flag");
            }
        }
    }
}

/// Maildir letters for IMAP flags.
fn letters(flags: &[&str]) -> String {
    let mut l: Vec<char> = flags
        .iter()
        .filter_map(|f| match *f {
            "\\Draft" => Some('D'),
            "\\Flagged" => Some('F'),
            "$Forwarded" => Some('P'),
            "\\Answered" => Some('R'),
            "\\Seen" => Some('S'),
            "\\Deleted" => Some('T'),
            _ => None,
        })
        .collect();
    l.sort_unstable();
    l.into_iter().collect()
}
