//! The shared end-to-end harness: a private Dovecot, a seeded mail store, an independent oracle
//! client and a real `imapfs` mount.
//!
//! Every integration test binary that needs a server says `mod common;` and uses:
//!
//! - [`Seed`]: folders and messages described in memory, deterministic byte for byte
//!   ([`Seed::standard`] is the fixture most tests share). A message's UID is its 1-based
//!   position in its folder.
//! - [`Dovecot`]: a throwaway Dovecot running as a child of the test, listening on two random
//!   loopback ports (`imap` with STARTTLS, `imaps`), with a fresh self-signed certificate that is
//!   also the CA file. The seed is written as maildir++ files *before* the server starts, so
//!   seeding costs a file write, not an APPEND per message. `Drop` stops the server and removes
//!   its directory, also when the test panics.
//! - The oracle (`Dovecot::oracle_*`): Python's `imaplib` on the plaintext port, a client that is
//!   not ours, so it can tell what the server really holds.
//! - [`other_client::OtherClient`]: a long-lived imaplib process (another client that appends
//!   and re-flags, and reads the whole account in one go), for tests/safety/model.rs.
//! - [`Mount`]: `imapfs mount -f` on a fresh mountpoint, waited for until the kernel lists the
//!   mount; `Drop` unmounts and reaps the process. [`MountOptions`] varies URL, password and CA
//!   file to provoke the start-up failures.
//! - Faults (`Dovecot::kick`, `pause`, `kill_server` / `start_again`, `imap_processes`):
//!   `doveadm kick`, SIGSTOP of every server process (SIGCONT when the [`Paused`] guard
//!   drops), and a restart on the same ports and maildir, for tests/resilience.rs.
//! - [`run`] / [`within`] / [`wait_for`]: every external command and every filesystem access
//!   that could hang runs under a deadline, so a hung mount fails a test instead of the run.
//!
//! Invariants: nothing here sleeps to synchronise, it polls a condition with a deadline; no
//! directory is removed recursively while something may still be mounted below it.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod other_client;
pub mod ports;
pub mod provider_proxy;
pub mod proxy;
pub mod servers;

/// The account every test server has.
pub const USER: &str = "tester";
/// Distinctive, so a test can assert it never appears in output or logs.
pub const PASSWORD: &str = "Pw-4Kq9-zN7u";
/// A phrase placed in a known subset of the `Big` folder's messages (see [`Seed::phrase_hits`]).
pub const PHRASE: &str = "ZEBRA-INVOICE-7731";
/// The hierarchy delimiter of Dovecot's default maildir++ layout.
pub const DELIMITER: char = '.';

const POLL: Duration = Duration::from_millis(20);
/// The `XDG_CACHE_HOME` a mount gets unless the test names one (under the mount's directory).
const OWN_CACHE: &str = "xdg-cache";
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);
const MOUNT_TIMEOUT: Duration = Duration::from_secs(15);
const ORACLE_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Seed: what the server holds when it starts
// ---------------------------------------------------------------------------------------------

/// Folders and their messages, in memory. Folder names are IMAP names in UTF-8 with `.` as the
/// hierarchy delimiter (`Archive.2024` is `Archive/2024` on the mount).
#[derive(Debug, Clone, Default)]
pub struct Seed {
    folders: Vec<SeedFolder>,
    /// Name message files as Dovecot names what it delivers, with `,S=size,W=vsize`: then
    /// a new session's first access to a big folder need not look at every file (the
    /// benchmark wants this; tests keep the plain names).
    pub size_hints: bool,
}

#[derive(Debug, Clone)]
pub struct SeedFolder {
    /// IMAP name, UTF-8, `.`-delimited. `INBOX` is the maildir root.
    pub name: String,
    /// In UID order: `messages[i].uid == i + 1`.
    pub messages: Vec<SeedMessage>,
}

#[derive(Debug, Clone)]
pub struct SeedMessage {
    pub uid: u32,
    /// Exactly what `BODY[]` returns (CRLF line endings throughout).
    pub bytes: Vec<u8>,
    /// System flags as IMAP spells them (`\Seen`, `\Flagged`, ...), sorted.
    pub flags: Vec<String>,
    /// The Subject header, RFC 2047-decoded.
    pub subject: String,
    /// The From header, RFC 2047-decoded.
    pub from: String,
    /// The Message-ID header value, with angle brackets.
    pub message_id: String,
    /// Unix time of the Date header.
    pub date: i64,
    /// Unix time the server reports as INTERNALDATE (the maildir file's mtime); deliberately
    /// 37 s after `date` so a test can tell the two apart.
    pub internal_date: i64,
    /// Whether [`PHRASE`] occurs in `bytes`.
    pub has_phrase: bool,
}

/// Where a composed message's Subject comes from and how it is encoded on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Plain(&'a str),
    /// RFC 2047 `=?UTF-8?B?...?=`.
    Base64(&'a str),
    /// RFC 2047 `=?UTF-8?Q?...?=`.
    Quoted(&'a str),
}

/// The parts of a simple text/plain message for [`compose_text`].
#[derive(Debug, Clone)]
pub struct TextMessage<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub subject: Subject<'a>,
    pub date: i64,
    pub message_id: String,
    /// Lines without line endings; joined with CRLF.
    pub body_lines: Vec<String>,
}

impl Seed {
    pub fn new() -> Seed {
        Seed::default()
    }

    /// The fixture: INBOX (10 messages, mixed flags, encoded subjects), `Archive` with child
    /// `Archive.2024`, `Big` (220 messages from 2 KB to over 6 MB, [`PHRASE`] in 15 of them),
    /// `Empty`, `Lists.rust` without a `Lists` folder (Dovecot lists `Lists` as
    /// `\Noselect \HasChildren`), `Old Projects`, `R&D` and `Ünïcødé Folder`.
    /// Built once per test binary.
    pub fn standard() -> &'static Seed {
        static STANDARD: OnceLock<Seed> = OnceLock::new();
        STANDARD.get_or_init(build_standard_seed)
    }

    /// The folder named `name`, created empty if it is new.
    pub fn folder_mut(&mut self, name: &str) -> &mut SeedFolder {
        if let Some(i) = self.folders.iter().position(|f| f.name == name) {
            return &mut self.folders[i];
        }
        self.folders.push(SeedFolder {
            name: name.to_string(),
            messages: Vec::new(),
        });
        self.folders.last_mut().expect("just pushed")
    }

    pub fn folders(&self) -> &[SeedFolder] {
        &self.folders
    }

    /// The folder named `name`; panics if the seed has none.
    pub fn folder(&self, name: &str) -> &SeedFolder {
        self.folders
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("seed has no folder {name:?}"))
    }

    /// Every mailbox the server lists: the seeded folders, INBOX, and the parents they imply.
    pub fn expected_mailboxes(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::from(["INBOX".to_string()]);
        for folder in &self.folders {
            let mut prefix = String::new();
            for part in folder.name.split(DELIMITER) {
                if !prefix.is_empty() {
                    prefix.push(DELIMITER);
                }
                prefix.push_str(part);
                names.insert(prefix.clone());
            }
        }
        names
    }

    /// (folder, uid) of every message that contains [`PHRASE`].
    pub fn phrase_hits(&self) -> Vec<(String, u32)> {
        let mut hits = Vec::new();
        for folder in &self.folders {
            for message in &folder.messages {
                if message.has_phrase {
                    hits.push((folder.name.clone(), message.uid));
                }
            }
        }
        hits
    }

    /// Total bytes of all messages.
    pub fn total_bytes(&self) -> usize {
        self.folders
            .iter()
            .flat_map(|f| &f.messages)
            .map(|m| m.bytes.len())
            .sum()
    }
}

impl SeedFolder {
    /// The folder's directory relative to the mount root (`Archive.2024` -> `Archive/2024`).
    pub fn path(&self) -> PathBuf {
        mailbox_path(&self.name)
    }

    /// The message with `uid`; panics if there is none.
    pub fn message(&self, uid: u32) -> &SeedMessage {
        self.messages
            .iter()
            .find(|m| m.uid == uid)
            .unwrap_or_else(|| panic!("folder {:?} has no uid {uid}", self.name))
    }

    /// Appends a message; its UID is the next position. `internal_date` becomes INTERNALDATE.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        bytes: Vec<u8>,
        flags: &[&str],
        subject: &str,
        from: &str,
        message_id: &str,
        date: i64,
        internal_date: i64,
    ) -> &SeedMessage {
        let uid = self.messages.len() as u32 + 1;
        let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        flags.sort();
        for flag in &flags {
            maildir_flag_letter(flag);
        }
        let has_phrase = contains(&bytes, PHRASE.as_bytes());
        self.messages.push(SeedMessage {
            uid,
            bytes,
            flags,
            subject: subject.to_string(),
            from: from.to_string(),
            message_id: message_id.to_string(),
            date,
            internal_date,
            has_phrase,
        });
        self.messages.last().expect("just pushed")
    }

    /// Composes a text/plain message and appends it.
    pub fn push_text(&mut self, message: &TextMessage<'_>, flags: &[&str]) -> &SeedMessage {
        let bytes = compose_text(message);
        let subject = subject_text(message.subject);
        let from = decode_display(message.from);
        self.push(
            bytes,
            flags,
            &subject,
            &from,
            &message.message_id,
            message.date,
            message.date + 37,
        )
    }
}

impl SeedMessage {
    /// The message's file name on the mount.
    pub fn file_name(&self) -> String {
        format!("{}.eml", self.uid)
    }
}

/// A mailbox's directory relative to the mount root: the name split at the delimiter.
pub fn mailbox_path(name: &str) -> PathBuf {
    name.split(DELIMITER).collect()
}

/// RFC 5322 bytes of a text/plain UTF-8 message, CRLF line endings.
pub fn compose_text(message: &TextMessage<'_>) -> Vec<u8> {
    let mut out = String::new();
    push_common_headers(
        &mut out,
        message.from,
        message.to,
        message.subject,
        message.date,
    );
    out.push_str(&format!("Message-ID: {}\r\n", message.message_id));
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    out.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
    for line in &message.body_lines {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

fn push_common_headers(out: &mut String, from: &str, to: &str, subject: Subject<'_>, date: i64) {
    out.push_str(&format!("From: {from}\r\n"));
    out.push_str(&format!("To: {to}\r\n"));
    out.push_str(&format!("Subject: {}\r\n", subject_header(subject)));
    out.push_str(&format!("Date: {}\r\n", rfc5322_date(date)));
}

fn subject_header(subject: Subject<'_>) -> String {
    let encoded = match subject {
        Subject::Plain(text) => return text.to_string(),
        Subject::Base64(text) => format!(
            "=?UTF-8?B?{}?=",
            base64(text.as_bytes(), STD_ALPHABET, true)
        ),
        Subject::Quoted(text) => format!("=?UTF-8?Q?{}?=", q_encode(text)),
    };
    assert!(encoded.len() <= 75, "encoded word too long: {encoded}");
    encoded
}

fn subject_text(subject: Subject<'_>) -> String {
    match subject {
        Subject::Plain(text) | Subject::Base64(text) | Subject::Quoted(text) => text.to_string(),
    }
}

/// The decoded form of the few encoded From headers the seed uses.
fn decode_display(from: &str) -> String {
    from.replace("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=", "Jörg Müller")
}

fn q_encode(text: &str) -> String {
    let mut out = String::new();
    for &b in text.as_bytes() {
        match b {
            b' ' => out.push('_'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("={b:02X}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The standard seed
// ---------------------------------------------------------------------------------------------

const BIG_COUNT: u32 = 220;
/// The `Big` UIDs that carry [`PHRASE`]; 37 and 200 are the two messages over 5 MB (in 200 the
/// phrase sits after the attachment, so only a reader that reaches the end finds it).
const PHRASE_UIDS: [u32; 15] = [
    3, 17, 29, 37, 48, 62, 75, 90, 104, 121, 139, 156, 170, 188, 200,
];
const HUGE: [(u32, usize); 2] = [(37, 5_300_000), (200, 6_100_000)];

const ADDRESSES: [&str; 6] = [
    "Alice Example <alice@example.org>",
    "Bob Builder <bob@example.net>",
    "=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>",
    "Carol <carol@example.com>",
    "\"Dave, the reviewer\" <dave@example.org>",
    "ops@example.com",
];

const WORDS: [&str; 48] = [
    "account",
    "budget",
    "quarter",
    "review",
    "meeting",
    "schedule",
    "numbers",
    "draft",
    "please",
    "attached",
    "report",
    "server",
    "mailbox",
    "folder",
    "update",
    "thanks",
    "regards",
    "team",
    "project",
    "deadline",
    "notes",
    "agenda",
    "invoice",
    "payment",
    "customer",
    "release",
    "version",
    "tested",
    "minor",
    "major",
    "change",
    "request",
    "approved",
    "pending",
    "monday",
    "friday",
    "tomorrow",
    "yesterday",
    "office",
    "remote",
    "coffee",
    "lunch",
    "plan",
    "issue",
    "fixed",
    "merged",
    "branch",
    "summary",
];

fn build_standard_seed() -> Seed {
    let mut seed = Seed::new();
    let mut rng = Rng::new(0x1a2b_3c4d_5e6f_7788);
    let me = "Test User <tester@example.org>";

    let inbox: [(Subject, &[&str]); 10] = [
        (Subject::Plain("Welcome to imapfs"), &["\\Seen"]),
        (Subject::Base64("Grüße aus Köln"), &["\\Flagged", "\\Seen"]),
        (Subject::Quoted("Café menu – déjà vu"), &[]),
        (
            Subject::Plain("Re: Quarterly numbers"),
            &["\\Answered", "\\Seen"],
        ),
        (Subject::Base64("日本語の件名"), &["\\Flagged"]),
        (Subject::Plain("Meeting notes 2024-03-05"), &[]),
        (Subject::Base64("Ünïcødé and emoji 🚀"), &["\\Seen"]),
        (Subject::Plain("Draft: plans"), &["\\Draft"]),
        (Subject::Plain("Lunch?"), &["\\Seen"]),
        (
            Subject::Plain("A subject that is fairly long but still fits on one header line"),
            &[],
        ),
    ];
    let base = days_from_civil(2024, 3, 1) * 86_400 + 9 * 3600;
    for (i, (subject, flags)) in inbox.into_iter().enumerate() {
        let uid = i as i64 + 1;
        let count = 5 + rng.below(30) as usize;
        let mut body_lines = text_lines(&mut rng, count);
        if uid == 7 {
            body_lines.push("Ünïcødé body line: Grüße, déjà vu, 日本語.".to_string());
        }
        let message = TextMessage {
            from: ADDRESSES[i % ADDRESSES.len()],
            to: me,
            subject,
            date: base + uid * 7200,
            message_id: format!("<inbox.{uid}@imapfs.test>"),
            body_lines,
        };
        seed.folder_mut("INBOX").push_text(&message, flags);
    }

    let small_folders: [(&str, &[Subject]); 7] = [
        (
            "Archive",
            &[
                Subject::Plain("Old invoice"),
                Subject::Plain("Holiday photos"),
                Subject::Plain("Contract signed"),
            ],
        ),
        (
            "Archive.2024",
            &[
                Subject::Plain("January report"),
                Subject::Plain("February report"),
                Subject::Base64("März Bericht"),
                Subject::Plain("April report"),
            ],
        ),
        ("Empty", &[]),
        (
            "Lists.rust",
            &[
                Subject::Plain("[rust] This week in Rust"),
                Subject::Plain("[rust] RFC discussion"),
                Subject::Plain("[rust] Release notes"),
            ],
        ),
        (
            "Old Projects",
            &[
                Subject::Plain("Project X kickoff"),
                Subject::Plain("Project X retro"),
            ],
        ),
        (
            "R&D",
            &[
                Subject::Plain("R&D budget"),
                Subject::Quoted("Prototype résumé"),
            ],
        ),
        (
            "Ünïcødé Folder",
            &[
                Subject::Base64("Ünïcødé subject one"),
                Subject::Base64("Привет, мир"),
                Subject::Plain("plain ascii in a unicode folder"),
            ],
        ),
    ];
    for (f, (name, subjects)) in small_folders.into_iter().enumerate() {
        let folder = seed.folder_mut(name);
        let base = days_from_civil(2023, 1 + f as i64, 10) * 86_400;
        for (i, subject) in subjects.iter().enumerate() {
            let uid = i as i64 + 1;
            let count = 3 + rng.below(20) as usize;
            let flags: &[&str] = if i % 2 == 0 { &["\\Seen"] } else { &[] };
            let message = TextMessage {
                from: ADDRESSES[(i + f) % ADDRESSES.len()],
                to: me,
                subject: *subject,
                date: base + uid * 86_400,
                message_id: format!("<f{f}.{uid}@imapfs.test>"),
                body_lines: text_lines(&mut rng, count),
            };
            folder.push_text(&message, flags);
        }
    }

    let base = days_from_civil(2024, 1, 1) * 86_400;
    let mut date = base;
    for uid in 1..=BIG_COUNT {
        date += 3 * 3600 + rng.below(3600) as i64;
        let target = match HUGE.iter().find(|(u, _)| *u == uid) {
            Some(&(_, size)) => size,
            None => match rng.below(100) {
                0..=74 => rng.range(2_000, 16_000),
                75..=91 => rng.range(16_000, 128_000),
                92..=98 => rng.range(128_000, 1_000_000),
                _ => rng.range(1_000_000, 2_500_000),
            },
        };
        let phrase = if uid == 200 {
            PhrasePlace::AfterAttachment
        } else if PHRASE_UIDS.contains(&uid) {
            PhrasePlace::InText
        } else {
            PhrasePlace::Nowhere
        };
        let decoded_subject;
        let subject = match uid % 5 {
            0 => {
                decoded_subject = format!("Rechnung Nr. {uid} – Grüße");
                Subject::Base64(&decoded_subject)
            }
            1 => {
                decoded_subject = format!("Café order {uid}");
                Subject::Quoted(&decoded_subject)
            }
            _ => {
                decoded_subject = format!(
                    "Report {uid}: {} {}",
                    WORDS[rng.below(WORDS.len() as u64) as usize],
                    WORDS[rng.below(WORDS.len() as u64) as usize]
                );
                Subject::Plain(&decoded_subject)
            }
        };
        let from = ADDRESSES[uid as usize % ADDRESSES.len()];
        let message_id = format!("<big.{uid}@imapfs.test>");
        let bytes = big_message(
            &mut rng,
            uid,
            from,
            me,
            subject,
            date,
            &message_id,
            target,
            phrase,
        );
        let mut flags = Vec::new();
        if uid % 3 == 0 {
            flags.push("\\Seen");
        }
        if uid % 7 == 0 {
            flags.push("\\Flagged");
        }
        if uid % 11 == 0 {
            flags.push("\\Answered");
        }
        let pushed = seed.folder_mut("Big").push(
            bytes,
            &flags,
            &decoded_subject,
            &decode_display(from),
            &message_id,
            date,
            date + 37,
        );
        assert_eq!(
            pushed.has_phrase,
            phrase != PhrasePlace::Nowhere,
            "phrase leak in uid {uid}"
        );
    }
    seed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhrasePlace {
    Nowhere,
    InText,
    AfterAttachment,
}

/// A `Big` message of about `target` bytes: text/plain below 256 KiB, otherwise a
/// multipart/mixed with a text part and a base64 attachment of pseudo-random bytes.
#[allow(clippy::too_many_arguments)]
fn big_message(
    rng: &mut Rng,
    uid: u32,
    from: &str,
    to: &str,
    subject: Subject<'_>,
    date: i64,
    message_id: &str,
    target: usize,
    phrase: PhrasePlace,
) -> Vec<u8> {
    let mut out = String::with_capacity(target + 1024);
    push_common_headers(&mut out, from, to, subject, date);
    out.push_str(&format!("Message-ID: {message_id}\r\n"));
    out.push_str("MIME-Version: 1.0\r\n");
    let phrase_line = format!("Please pay {PHRASE} by Friday.");
    if target < 256 * 1024 {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
        let mut lines = Vec::new();
        let mut len = out.len();
        while len < target {
            let line = text_line(rng);
            len += line.len() + 2;
            lines.push(line);
        }
        if phrase == PhrasePlace::InText {
            let at = rng.below(lines.len() as u64 + 1) as usize;
            lines.insert(at, phrase_line);
        }
        for line in lines {
            out.push_str(&line);
            out.push_str("\r\n");
        }
        return out.into_bytes();
    }

    let boundary = format!("=_imapfs_{uid}_boundary");
    out.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str("This is a multi-part message in MIME format.\r\n");
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    let mut lines = text_lines(rng, 20);
    if phrase == PhrasePlace::InText {
        lines.insert(7, phrase_line.clone());
    }
    for line in lines {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: application/octet-stream; name=\"data-{uid}.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"data-{uid}.bin\"\r\n\r\n"
    ));
    // Base64 text drawn straight from the PRNG (10 digits per u64), 76 per line: valid base64
    // of pseudo-random bytes, never repeating, and cheap in an unoptimised test build.
    let lines = target.saturating_sub(out.len() + 200) / 78;
    let mut line = [0u8; 80];
    for _ in 0..lines {
        for digits in line.chunks_mut(10) {
            let mut bits = rng.next_u64();
            for digit in digits {
                *digit = STD_ALPHABET[(bits & 63) as usize];
                bits >>= 6;
            }
        }
        out.push_str(std::str::from_utf8(&line[..76]).expect("ASCII"));
        out.push_str("\r\n");
    }
    if phrase == PhrasePlace::AfterAttachment {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{phrase_line}\r\n"
        ));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out.into_bytes()
}

fn text_lines(rng: &mut Rng, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            if i % 6 == 5 {
                String::new()
            } else {
                text_line(rng)
            }
        })
        .collect()
}

fn text_line(rng: &mut Rng) -> String {
    let mut line = String::new();
    let words = 6 + rng.below(7);
    for i in 0..words {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    line.push('.');
    line
}

// ---------------------------------------------------------------------------------------------
// Dovecot
// ---------------------------------------------------------------------------------------------

/// A private Dovecot instance; see the module documentation.
pub struct Dovecot {
    pub imap_port: u16,
    pub imaps_port: u16,
    pub user: String,
    pub password: String,
    /// The server's self-signed certificate, which is also the CA file a client must trust.
    pub ca_file: PathBuf,
    /// The instance's own directory (config, certificate, maildir, logs, runtime sockets).
    pub dir: PathBuf,
    /// The maildir++ root (INBOX; other folders are `.Name` below it).
    pub mail_dir: PathBuf,
    /// Dovecot's log file.
    pub log_file: PathBuf,
    pub conf: PathBuf,
    child: Child,
    oracle_script: PathBuf,
}

/// One entry of the oracle's `LIST "" "*"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Decoded from modified UTF-7.
    pub name: String,
    pub delimiter: Option<char>,
    /// As the server sent them, e.g. `\HasChildren`, `\Noselect`.
    pub attributes: Vec<String>,
}

/// What the oracle's `UID FETCH (FLAGS RFC822.SIZE INTERNALDATE)` reports for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleMeta {
    pub size: u64,
    /// INTERNALDATE as Unix time.
    pub internal_date: i64,
    /// Sorted, without the session flag `\Recent`.
    pub flags: Vec<String>,
}

/// One leaf part as the oracle decoded it (transfer encoding undone, charset untouched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OraclePart {
    /// The IMAP section number (`1`, `2.1`, `3.1.2`).
    pub section: String,
    /// `type/subtype`, lower case.
    pub content_type: String,
    pub charset: Option<String>,
    /// `get_filename()`: RFC 2231 and RFC 2047 decoded.
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// What the oracle says about a message's parts. Keys are the section of the message the
/// header or text belongs to: `""` for the message itself, `"3"` for a message/rfc822 at 3.
#[derive(Debug, Clone, Default)]
pub struct OracleParts {
    pub leaves: Vec<OraclePart>,
    /// `BODY[HEADER]` / `BODY[n.HEADER]`.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// The first text/plain (or else text/html) part that is not an attachment, outside
    /// nested messages: its content type and `get_content()` as UTF-8.
    pub texts: BTreeMap<String, (String, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OracleStatus {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub messages: u32,
}

impl Dovecot {
    /// Starts a server holding `seed`; panics (with the server log) if it cannot.
    pub fn start(seed: &Seed) -> Dovecot {
        Dovecot::start_with(seed, "")
    }

    /// Like [`Dovecot::start`], with `extra_conf` appended to dovecot.conf (later settings win),
    /// e.g. `imap_capability = IMAP4rev1 LITERAL+` to hide extensions.
    pub fn start_with(seed: &Seed, extra_conf: &str) -> Dovecot {
        let mut last_error = String::new();
        // Ports are picked free but handed to Dovecot only later: another process can take one
        // in between, so a bind failure is retried with new ports.
        for _ in 0..5 {
            match Dovecot::try_start(seed, extra_conf) {
                Ok(dovecot) => return dovecot,
                Err((error, retry)) if retry => last_error = error,
                Err((error, _)) => panic!("{error}"),
            }
        }
        panic!("{last_error}");
    }

    fn try_start(seed: &Seed, extra_conf: &str) -> Result<Dovecot, (String, bool)> {
        let dir = unique_temp_dir("dovecot");
        let mail_dir = dir.join("mail");
        let home = dir.join("home");
        let log_file = dir.join("dovecot.log");
        let conf = dir.join("dovecot.conf");
        let ca_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        for sub in ["run", "state", "home"] {
            fs::create_dir(dir.join(sub)).expect("create dovecot dir");
        }

        let (cert_pem, key_pem) = self_signed_certificate();
        fs::write(&ca_file, cert_pem).expect("write cert");
        fs::write(&key_file, key_pem).expect("write key");

        let owner = MailOwner::for_this_process();
        write_maildir(&mail_dir, seed);
        chown_tree(&mail_dir, owner.uid, owner.gid);
        chown_tree(&home, owner.uid, owner.gid);

        let passwd = dir.join("passwd");
        fs::write(
            &passwd,
            format!(
                "{USER}:{{PLAIN}}{PASSWORD}:{}:{}::{}::\n",
                owner.uid,
                owner.gid,
                home.display()
            ),
        )
        .expect("write passwd");

        let imap_port = free_port();
        let imaps_port = loop {
            let port = free_port();
            if port != imap_port {
                break port;
            }
        };
        let d = dir.display();
        let mut text = format!(
            "# Generated by tests/common/mod.rs for one test.\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = imapfs-test-{unique}\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             ssl = yes\n\
             ssl_cert = <{d}/cert.pem\n\
             ssl_key = <{d}/key.pem\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             log_path = {d}/dovecot.log\n\
             first_valid_uid = 1\n\
             first_valid_gid = 1\n\
             mail_fsync = never\n\
             mail_location = maildir:{d}/mail\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/passwd\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = username_format=%u {d}/passwd\n}}\n\
             service imap-login {{\n\
             \x20 inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap_port}\n  }}\n\
             \x20 inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes\n  }}\n\
             }}\n",
            unique = dir.file_name().unwrap_or_default().to_string_lossy(),
        );
        if let Some(name) = &owner.unprivileged_user {
            // Not root: every Dovecot process runs as us.
            text.push_str(&format!(
                "default_login_user = {name}\ndefault_internal_user = {name}\n"
            ));
        }
        text.push_str(extra_conf);
        text.push('\n');
        fs::write(&conf, text).expect("write dovecot.conf");

        let oracle_script = dir.join("oracle.py");
        fs::write(&oracle_script, ORACLE_PY).expect("write oracle.py");

        let stderr = fs::File::create(dir.join("dovecot.stderr")).expect("create stderr file");
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("clone file"))
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dovecot (run scripts/setup.sh): {e}"));

        let mut dovecot = Dovecot {
            imap_port,
            imaps_port,
            user: USER.to_string(),
            password: PASSWORD.to_string(),
            ca_file,
            dir,
            mail_dir,
            log_file,
            conf,
            child,
            oracle_script,
        };
        match dovecot.wait_ready() {
            Ok(()) => Ok(dovecot),
            Err(why) => {
                let logs = dovecot.logs();
                let retry = logs.contains("Address already in use");
                Err((format!("dovecot did not start: {why}\n{logs}"), retry))
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("dovecot exited with {status}"));
            }
            if read_greeting(self.imap_port).is_ok()
                && TcpStream::connect((Ipv4Addr::LOCALHOST, self.imaps_port)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not accepting after {SERVER_START_TIMEOUT:?}"));
            }
            thread::sleep(POLL);
        }
    }

    /// `imaps://tester@127.0.0.1:<imaps_port>`.
    pub fn url(&self) -> String {
        format!("imaps://{}@127.0.0.1:{}", self.user, self.imaps_port)
    }

    /// The master process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The untagged greeting on the plaintext port (`* OK [CAPABILITY ...] ...`).
    pub fn greeting(&self) -> String {
        read_greeting(self.imap_port).unwrap_or_else(|e| panic!("greeting: {e}"))
    }

    /// The greeting on the implicit-TLS port, read by Python's ssl module trusting only
    /// `ca_file` (so it also proves the certificate verifies for 127.0.0.1).
    pub fn tls_greeting(&self) -> String {
        let port = self.imaps_port.to_string();
        let ca = self.ca_file.to_string_lossy().into_owned();
        String::from_utf8_lossy(&self.oracle(&["greeting-tls", &ca, &port], None)).into_owned()
    }

    /// Capabilities after STARTTLS and LOGIN on the plaintext port.
    pub fn starttls_capabilities(&self) -> Vec<String> {
        let ca = self.ca_file.to_string_lossy().into_owned();
        let out = self.oracle(&["starttls", &ca], None);
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Dovecot's log and stderr, for failure messages.
    pub fn logs(&self) -> String {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir.join("dovecot.stderr")).unwrap_or_default();
        format!(
            "--- {} ---\n{log}--- dovecot stderr ---\n{stderr}",
            self.log_file.display()
        )
    }

    // --- the oracle -----------------------------------------------------------------------

    /// `LIST "" "*"`, names decoded from modified UTF-7.
    pub fn oracle_list(&self) -> Vec<ListEntry> {
        let out = self.oracle(&["list"], None);
        String::from_utf8(out)
            .expect("oracle output is UTF-8")
            .lines()
            .map(|line| {
                let mut fields = line.split('\t');
                let name = hex_decode(fields.next().expect("name"));
                let delimiter = fields.next().expect("delimiter").chars().next();
                let attributes = fields
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                ListEntry {
                    name: String::from_utf8(name).expect("UTF-8 name"),
                    delimiter,
                    attributes,
                }
            })
            .collect()
    }

    /// `BODY.PEEK[]` of one message.
    pub fn oracle_fetch(&self, folder: &str, uid: u32) -> Vec<u8> {
        let mut all = self.fetch_frames(folder, &uid.to_string());
        all.remove(&uid)
            .unwrap_or_else(|| panic!("oracle: {folder:?} has no uid {uid}"))
    }

    /// `BODY.PEEK[]` of every message of `folder`, by UID.
    pub fn oracle_fetch_all(&self, folder: &str) -> BTreeMap<u32, Vec<u8>> {
        self.fetch_frames(folder, "1:*")
    }

    /// SHA-256 (lower-case hex) of every message's `BODY[]` in `folder`, by UID.
    pub fn oracle_sha256_all(&self, folder: &str) -> BTreeMap<u32, String> {
        let out = self.oracle(&["sha256", &hex_encode(folder.as_bytes())], None);
        parse_pairs(&out)
            .into_iter()
            .map(|(uid, hex)| (uid.parse().expect("uid"), hex))
            .collect()
    }

    /// Flags of every message in `folder`, size and INTERNALDATE, by UID.
    pub fn oracle_meta(&self, folder: &str) -> BTreeMap<u32, OracleMeta> {
        let out = self.oracle(&["meta", &hex_encode(folder.as_bytes())], None);
        String::from_utf8(out)
            .expect("oracle output is UTF-8")
            .lines()
            .map(|line| {
                let mut fields = line.split('\t');
                let mut next = || fields.next().expect("meta field");
                let uid = next().parse().expect("uid");
                let size = next().parse().expect("size");
                let internal_date = next().parse().expect("date");
                let mut flags: Vec<String> =
                    next().split_whitespace().map(str::to_string).collect();
                flags.sort();
                (
                    uid,
                    OracleMeta {
                        size,
                        internal_date,
                        flags,
                    },
                )
            })
            .collect()
    }

    /// Flags of one message, sorted, without `\Recent`.
    pub fn oracle_flags(&self, folder: &str, uid: u32) -> Vec<String> {
        self.oracle_meta(folder)
            .remove(&uid)
            .unwrap_or_else(|| panic!("oracle: {folder:?} has no uid {uid}"))
            .flags
    }

    /// `STATUS folder (UIDVALIDITY UIDNEXT MESSAGES)`.
    pub fn oracle_status(&self, folder: &str) -> OracleStatus {
        let out = self.oracle(&["status", &hex_encode(folder.as_bytes())], None);
        let text = String::from_utf8(out).expect("UTF-8");
        let numbers: Vec<u32> = text
            .split_whitespace()
            .map(|n| n.parse().expect("number"))
            .collect();
        OracleStatus {
            uidvalidity: numbers[0],
            uidnext: numbers[1],
            messages: numbers[2],
        }
    }

    /// Removes one message as another client would: `UID STORE +FLAGS.SILENT (\Deleted)`, then
    /// `UID EXPUNGE` of that UID alone.
    pub fn oracle_expunge(&self, folder: &str, uid: u32) {
        self.oracle(
            &["expunge", &hex_encode(folder.as_bytes()), &uid.to_string()],
            None,
        );
    }

    /// `UID STORE uid <op> (flags)` with `op` one of `+FLAGS`, `-FLAGS`, `FLAGS`.
    pub fn oracle_store(&self, folder: &str, uid: u32, op: &str, flags: &[&str]) {
        let list = flags.join(" ");
        self.oracle(
            &[
                "store",
                &hex_encode(folder.as_bytes()),
                &uid.to_string(),
                op,
                &list,
            ],
            None,
        );
    }

    /// APPENDs `bytes` to `folder`; returns the new UID (from APPENDUID).
    pub fn oracle_append(&self, folder: &str, bytes: &[u8]) -> u32 {
        self.oracle_append_with_flags(folder, bytes, &[])
    }

    pub fn oracle_append_with_flags(&self, folder: &str, bytes: &[u8], flags: &[&str]) -> u32 {
        let list = flags.join(" ");
        let out = self.oracle(
            &["append", &hex_encode(folder.as_bytes()), &list],
            Some(bytes),
        );
        String::from_utf8_lossy(&out)
            .trim()
            .parse()
            .expect("APPENDUID uid")
    }

    /// `UID SEARCH criteria` as Python's imaplib sends it: `criteria` is IMAP syntax sent as
    /// it is; `literal`, if given, is appended as a literal after `CHARSET UTF-8 criteria`
    /// (for a non-ASCII term, which must then come last). The UIDs, ascending.
    pub fn oracle_search(&self, folder: &str, criteria: &str, literal: Option<&str>) -> Vec<u32> {
        let mut args = vec![
            "search".to_string(),
            hex_encode(folder.as_bytes()),
            hex_encode(criteria.as_bytes()),
        ];
        if let Some(l) = literal {
            args.push(hex_encode(l.as_bytes()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.oracle(&args, None);
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .map(|n| n.parse().expect("uid"))
            .collect()
    }

    /// The MIME parts of one message, decoded by Python's `email` package (policy `default`)
    /// from the `BODY[]` imaplib fetched: see [`OracleParts`].
    pub fn oracle_parts(&self, folder: &str, uid: u32) -> OracleParts {
        let out = self.oracle(
            &["parts", &hex_encode(folder.as_bytes()), &uid.to_string()],
            None,
        );
        let mut parts = OracleParts::default();
        for line in String::from_utf8(out).expect("UTF-8").lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let section = if f[1] == "-" {
                String::new()
            } else {
                f[1].to_string()
            };
            match f[0] {
                "leaf" => parts.leaves.push(OraclePart {
                    section,
                    content_type: f[2].to_string(),
                    charset: (f[3] != "-").then(|| f[3].to_string()),
                    filename: (f[4] != "-")
                        .then(|| String::from_utf8(hex_decode(f[4])).expect("UTF-8 filename")),
                    data: hex_decode(f[5]),
                }),
                "header" => {
                    parts.headers.insert(section, hex_decode(f[2]));
                }
                "text" => {
                    parts
                        .texts
                        .insert(section, (f[2].to_string(), hex_decode(f[3])));
                }
                other => panic!("oracle parts: unknown line kind {other:?}"),
            }
        }
        parts
    }

    /// `CREATE folder`.
    pub fn oracle_create(&self, folder: &str) {
        self.oracle(&["create", &hex_encode(folder.as_bytes())], None);
    }

    /// `DELETE folder`.
    pub fn oracle_delete(&self, folder: &str) {
        self.oracle(&["delete", &hex_encode(folder.as_bytes())], None);
    }

    /// `RENAME from to`.
    pub fn oracle_rename(&self, from: &str, to: &str) {
        self.oracle(
            &[
                "rename",
                &hex_encode(from.as_bytes()),
                &hex_encode(to.as_bytes()),
            ],
            None,
        );
    }

    fn fetch_frames(&self, folder: &str, uids: &str) -> BTreeMap<u32, Vec<u8>> {
        let out = self.oracle(&["fetch", &hex_encode(folder.as_bytes()), uids], None);
        let mut frames = BTreeMap::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let newline = rest.iter().position(|&b| b == b'\n').expect("frame header");
            let header = std::str::from_utf8(&rest[..newline]).expect("frame header");
            let (uid, len) = header.split_once(' ').expect("uid len");
            let len: usize = len.parse().expect("len");
            let body = &rest[newline + 1..newline + 1 + len];
            frames.insert(uid.parse().expect("uid"), body.to_vec());
            rest = &rest[newline + 1 + len..];
        }
        frames
    }

    /// Runs one oracle command; panics with its stderr and the server log if it fails.
    fn oracle(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let mut command = Command::new("python3");
        command
            .arg(&self.oracle_script)
            .args(args)
            .env("ORACLE_PORT", self.imap_port.to_string())
            .env("ORACLE_USER", &self.user)
            .env("ORACLE_PASSWORD", &self.password);
        let output = run_command(command, stdin, ORACLE_TIMEOUT)
            .unwrap_or_else(|e| panic!("oracle {args:?}: {e}"));
        if !output.status.success() {
            panic!(
                "oracle {args:?} failed ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                self.logs()
            );
        }
        output.stdout
    }

    /// Kills the instance: master first (so it restarts nothing), then every process it had
    /// started. SIGKILL rather than SIGTERM because the master's graceful shutdown takes over a
    /// second, per test, and nothing in the throwaway directory needs a clean close.
    fn stop(&mut self) {
        let family = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = wait_child(&mut self.child, Duration::from_secs(10));
        for pid in family {
            if is_dovecot_process(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Faults: kicking sessions, pausing, stopping and restarting the server (tests/resilience.rs)
// ---------------------------------------------------------------------------------------------

/// The server's processes stopped with SIGSTOP; dropping this sends SIGCONT (also when the
/// test panics), see [`Dovecot::pause`].
pub struct Paused {
    pids: Vec<u32>,
}

impl Paused {
    /// Sends SIGCONT now (instead of at drop).
    pub fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        for &pid in &self.pids {
            signal(pid, libc::SIGCONT);
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid of a process this test started; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

impl Dovecot {
    /// Every process of this instance: the master and what it started.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        pids.extend(
            descendants(self.child.id())
                .into_iter()
                .filter(|&p| is_dovecot_process(p)),
        );
        pids
    }

    /// The `imap` processes that serve logged-in sessions (not `imap-login`).
    pub fn imap_processes(&self) -> Vec<u32> {
        self.processes()
            .into_iter()
            .filter(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let first = cmdline
                    .split(|&b| b == 0 || b == b' ')
                    .next()
                    .unwrap_or(&[]);
                first.ends_with(b"/imap")
            })
            .collect()
    }

    /// `doveadm kick USER`: the server says BYE on every session of the test user and closes
    /// it. Panics if doveadm fails.
    pub fn kick(&self) {
        let conf = self.conf.to_string_lossy().into_owned();
        let out = run(
            &["doveadm", "-c", &conf, "kick", &self.user],
            Duration::from_secs(20),
        );
        assert!(
            out.status.success(),
            "doveadm kick: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGSTOP every process of the instance: connections stay open (the kernel even accepts
    /// new ones) but nothing answers, until the returned guard is dropped.
    pub fn pause(&self) -> Paused {
        let pids = self.processes();
        for &pid in &pids {
            signal(pid, libc::SIGSTOP);
        }
        Paused { pids }
    }

    /// Kills the whole instance, as [`Drop`] does, but keeps its directory: the ports refuse
    /// connections until [`Dovecot::start_again`].
    pub fn kill_server(&mut self) {
        self.stop();
        // A process killed while it held a maildir's dotlock (dovecot-uidlist.lock) leaves the
        // lock behind, and the restarted server would wait minutes for it to turn stale. Every
        // process of this instance is gone, so no lock is held: remove them.
        remove_lock_files(&self.mail_dir);
    }

    /// Starts the instance again after [`Dovecot::kill_server`]: same config, ports, certificate
    /// and maildir (so the same UIDVALIDITY and UIDs). Panics if it does not come up.
    pub fn start_again(&mut self) {
        let stderr = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("dovecot.stderr"))
            .expect("open stderr file");
        self.child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("clone file"))
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dovecot: {e}"));
        if let Err(why) = self.wait_ready() {
            panic!("dovecot did not start again: {why}\n{}", self.logs());
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", tail(&self.logs(), 60));
        }
        self.stop();
        if std::env::var_os("IMAPFS_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Reads the server greeting on a plaintext port.
fn read_greeting(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            Ok(_) => return Err("connection closed before greeting".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    if line.starts_with("* OK") {
        let _ = stream.write_all(b"a LOGOUT\r\n");
        Ok(line)
    } else {
        Err(format!("unexpected greeting {line:?}"))
    }
}

/// Who owns the mail files and runs the mail processes. Dovecot refuses mail access as root
/// ("Mail access not allowed for root", whatever `first_valid_uid` says), so as root the mail
/// belongs to `nobody`; otherwise to the current user.
struct MailOwner {
    uid: u32,
    gid: u32,
    /// Set when not root: Dovecot's login/internal processes must run as this user too.
    unprivileged_user: Option<String>,
}

impl MailOwner {
    fn for_this_process() -> MailOwner {
        let me = fs::metadata("/proc/self").expect("/proc/self");
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        let entries: Vec<Vec<&str>> = passwd.lines().map(|l| l.split(':').collect()).collect();
        if me.uid() == 0 {
            let nobody = entries.iter().find(|e| e.len() > 3 && e[0] == "nobody");
            let (uid, gid) = nobody
                .map(|e| (e[2].parse().unwrap_or(65534), e[3].parse().unwrap_or(65534)))
                .unwrap_or((65534, 65534));
            MailOwner {
                uid,
                gid,
                unprivileged_user: None,
            }
        } else {
            let name = entries
                .iter()
                .find(|e| e.len() > 2 && e[2] == me.uid().to_string())
                .map(|e| e[0].to_string())
                .expect("current user in /etc/passwd");
            MailOwner {
                uid: me.uid(),
                gid: me.gid(),
                unprivileged_user: Some(name),
            }
        }
    }
}

/// Writes `seed` as Dovecot's default maildir++ layout under `root`: INBOX is `root` itself,
/// folder `A.B` is `root/.A.B` (each name in modified UTF-7), each with `cur/ new/ tmp/` and,
/// for non-INBOX folders, a `maildirfolder` marker. Messages go to `cur/` as
/// `<secs>.M<uid>P1.imapfs-seed:2,<flags>` with mtime = INTERNALDATE. Dovecot assigns UIDs to
/// new files in the order of the time stamp in their names, so UID = position in the folder
/// (tests/harness.rs checks this).
fn write_maildir(root: &Path, seed: &Seed) {
    fs::create_dir_all(root).expect("create maildir");
    let mut folders: Vec<&SeedFolder> = seed.folders.iter().collect();
    if !folders.iter().any(|f| f.name == "INBOX") {
        folders.push(EMPTY_INBOX.get_or_init(|| SeedFolder {
            name: "INBOX".to_string(),
            messages: Vec::new(),
        }));
    }
    for folder in folders {
        let dir = if folder.name == "INBOX" {
            root.to_path_buf()
        } else {
            root.join(format!(".{}", mutf7_encode(&folder.name)))
        };
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(sub)).expect("create maildir folder");
        }
        if folder.name != "INBOX" {
            fs::write(dir.join("maildirfolder"), b"").expect("maildirfolder");
        }
        for message in &folder.messages {
            let letters: String = {
                let mut l: Vec<char> = message
                    .flags
                    .iter()
                    .map(|f| maildir_flag_letter(f))
                    .collect();
                l.sort_unstable();
                l.into_iter().collect()
            };
            let hints = if seed.size_hints {
                let bare_lf = message
                    .bytes
                    .iter()
                    .enumerate()
                    .filter(|&(i, &b)| b == b'\n' && (i == 0 || message.bytes[i - 1] != b'\r'))
                    .count();
                let len = message.bytes.len();
                format!(",S={len},W={}", len + bare_lf)
            } else {
                String::new()
            };
            let name = format!(
                "{}.M{:06}P1.imapfs-seed{hints}:2,{letters}",
                1_500_000_000 + u64::from(message.uid),
                message.uid
            );
            let path = dir.join("cur").join(name);
            let file = fs::File::create(&path).expect("create message file");
            let mut writer = std::io::BufWriter::new(&file);
            writer.write_all(&message.bytes).expect("write message");
            writer.flush().expect("flush message");
            drop(writer);
            let mtime = UNIX_EPOCH + Duration::from_secs(message.internal_date as u64);
            file.set_modified(mtime).expect("set mtime");
        }
    }
}

static EMPTY_INBOX: OnceLock<SeedFolder> = OnceLock::new();

fn maildir_flag_letter(flag: &str) -> char {
    match flag {
        "\\Draft" => 'D',
        "\\Flagged" => 'F',
        "\\Answered" => 'R',
        "\\Seen" => 'S',
        "\\Deleted" => 'T',
        other => panic!("seed supports only system flags, not {other:?}"),
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if fs::symlink_metadata(path)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        for entry in fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), uid, gid);
        }
    }
}

/// A self-signed certificate for `localhost` / `127.0.0.1`, made once per test binary.
/// `CA:FALSE`, so that it passes plain WebPKI rules too (which reject an end-entity
/// certificate marked as a CA, `openssl req -x509`'s default; imapfs accepts that one only as
/// an exact pin from --ca-file). Shared with the scripted servers of tests/hostile.rs.
pub fn self_signed_certificate() -> (String, String) {
    static PAIR: OnceLock<(String, String)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = unique_temp_dir("cert");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let (cert_s, key_s) = (cert.to_string_lossy(), key.to_string_lossy());
        let output = run(
            &[
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=localhost",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                &key_s,
                "-out",
                &cert_s,
            ],
            Duration::from_secs(60),
        );
        assert!(
            output.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let pair = (
            fs::read_to_string(&cert).expect("cert"),
            fs::read_to_string(&key).expect("key"),
        );
        let _ = fs::remove_dir_all(&dir);
        pair
    })
    .clone()
}

/// Every process whose parent chain leads to `root`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(entry.path().join("stat")) {
                // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
                if let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                    if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok())
                    {
                        parent_of.push((pid, ppid));
                    }
                }
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn is_dovecot_process(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| contains(&cmdline, b"dovecot"))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Mount
// ---------------------------------------------------------------------------------------------

/// A running `imapfs mount -f`; see the module documentation.
pub struct Mount {
    child: Child,
    dir: PathBuf,
    mountpoint: PathBuf,
    log: PathBuf,
    finished: bool,
}

/// Why [`MountOptions::start`] returned without a mount.
#[derive(Debug)]
pub struct MountFailure {
    /// The exit status, or `None` if imapfs neither mounted nor exited within the deadline
    /// (it was killed).
    pub status: Option<ExitStatus>,
    /// Everything imapfs wrote to stderr.
    pub stderr: String,
    /// Whether the mountpoint was still mounted after imapfs exited (it must not be).
    pub left_mounted: bool,
    /// Time from spawn to exit.
    pub elapsed: Duration,
}

impl fmt::Display for MountFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "imapfs exited with {status} after {:?}", self.elapsed)?,
            None => write!(f, "imapfs neither mounted nor exited in {:?}", self.elapsed)?,
        }
        write!(f, "; stderr:\n{}", self.stderr)
    }
}

/// How to run `imapfs mount`: defaults are the server's URL, its password in
/// `IMAPFS_PASSWORD`, `--ca-file` with its certificate, and `RUST_LOG=debug`.
pub struct MountOptions<'a> {
    /// The server's certificate, URL and password (from a Dovecot, or given).
    ca_path: PathBuf,
    default_url: String,
    default_password: String,
    _dovecot: std::marker::PhantomData<&'a Dovecot>,
    extra_args: Vec<String>,
    url: Option<String>,
    password: Option<Option<String>>,
    ca_file: bool,
    rust_log: Option<String>,
    cache_home: Option<PathBuf>,
}

impl<'a> MountOptions<'a> {
    pub fn new(dovecot: &'a Dovecot) -> MountOptions<'a> {
        MountOptions::custom(dovecot.url(), dovecot.ca_file.clone(), &dovecot.password)
    }

    /// Options for a server that is not a harness Dovecot (e.g. a scripted fake server).
    pub fn custom(url: String, ca_file: PathBuf, password: &str) -> MountOptions<'a> {
        MountOptions {
            ca_path: ca_file,
            default_url: url,
            default_password: password.to_string(),
            _dovecot: std::marker::PhantomData,
            extra_args: Vec::new(),
            url: None,
            password: None,
            ca_file: true,
            rust_log: Some("debug,imapfs::imap::session=trace".to_string()),
            cache_home: None,
        }
    }

    /// `XDG_CACHE_HOME` for imapfs (where it keeps indexes between mounts); the caller owns
    /// the directory. By default each mount gets a fresh one of its own, removed with it, so
    /// no test reads or writes the user's real cache.
    pub fn cache_home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_home = Some(dir.into());
        self
    }

    /// Arguments placed after `--ca-file` and before the URL.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Replaces the account URL (e.g. a port nobody listens on).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Replaces the password; `None` leaves `IMAPFS_PASSWORD` unset.
    pub fn password(mut self, password: Option<&str>) -> Self {
        self.password = Some(password.map(str::to_string));
        self
    }

    /// Omits `--ca-file`, so the self-signed certificate does not verify.
    pub fn without_ca_file(mut self) -> Self {
        self.ca_file = false;
        self
    }

    /// Runs without `RUST_LOG`, so stderr holds only what imapfs prints for the user.
    pub fn quiet(mut self) -> Self {
        self.rust_log = None;
        self
    }

    /// Spawns imapfs and waits until the mountpoint is mounted or imapfs exits.
    pub fn start(self) -> Result<Mount, MountFailure> {
        let dir = unique_temp_dir("mount");
        let mountpoint = dir.join("mnt");
        fs::create_dir(&mountpoint).expect("create mountpoint");
        let log = dir.join("imapfs.log");

        let mut command = Command::new(env!("CARGO_BIN_EXE_imapfs"));
        command.arg("mount").arg("-f");
        if self.ca_file {
            command.arg("--ca-file").arg(&self.ca_path);
        }
        command
            .args(&self.extra_args)
            .arg(self.url.unwrap_or(self.default_url))
            .arg(&mountpoint)
            .env_remove("IMAPFS_PASSWORD")
            .env_remove("RUST_LOG")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env(
                "XDG_CACHE_HOME",
                self.cache_home
                    .clone()
                    .unwrap_or_else(|| dir.join(OWN_CACHE)),
            )
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("imapfs.stdout")).expect("stdout file"))
            .stderr(fs::File::create(&log).expect("log file"));
        match self.password {
            None => {
                command.env("IMAPFS_PASSWORD", &self.default_password);
            }
            Some(Some(password)) => {
                command.env("IMAPFS_PASSWORD", password);
            }
            Some(None) => {}
        }
        if let Some(level) = &self.rust_log {
            command.env("RUST_LOG", level);
        }

        let started = Instant::now();
        let child = command.spawn().expect("spawn imapfs");
        let mut mount = Mount {
            child,
            dir,
            mountpoint,
            log,
            finished: false,
        };
        let deadline = started + MOUNT_TIMEOUT;
        loop {
            if let Ok(Some(status)) = mount.child.try_wait() {
                return Err(mount.failed(Some(status), started.elapsed()));
            }
            if is_mounted(&mount.mountpoint) {
                return Ok(mount);
            }
            if Instant::now() >= deadline {
                let _ = mount.child.kill();
                let _ = mount.child.wait();
                return Err(mount.failed(None, started.elapsed()));
            }
            thread::sleep(POLL);
        }
    }
}

impl Mount {
    /// `imapfs mount -f --ca-file CERT [extra_args] URL MOUNTPOINT` against `dovecot`.
    pub fn start(dovecot: &Dovecot, extra_args: &[&str]) -> Result<Mount, MountFailure> {
        MountOptions::new(dovecot).args(extra_args).start()
    }

    /// The mount point (an absolute path without symlinks).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// `path()` joined with a path relative to the mount root.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.mountpoint.join(relative)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// imapfs's stderr (with `RUST_LOG=debug` unless [`MountOptions::quiet`]).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts with `fusermount3 -u` and waits for imapfs to exit; returns its exit status.
    /// Panics if it does not exit within the deadline (it is killed then).
    pub fn unmount(mut self) -> ExitStatus {
        let status = self.shutdown();
        status.unwrap_or_else(|| {
            panic!(
                "imapfs did not exit after unmount\n{}",
                tail(&self.log(), 60)
            )
        })
    }

    /// Waits for imapfs to exit by itself (after a signal, say); `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// Whether the kernel still lists the mount.
    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mountpoint)
    }

    fn failed(mut self, status: Option<ExitStatus>, elapsed: Duration) -> MountFailure {
        self.finished = true;
        let left_mounted = is_mounted(&self.mountpoint);
        if left_mounted {
            force_unmount(&self.mountpoint);
        }
        let failure = MountFailure {
            status,
            stderr: self.log(),
            left_mounted,
            elapsed,
        };
        self.remove_files();
        failure
    }

    /// Unmounts, reaps the process, removes the files; `None` if imapfs had to be killed.
    fn shutdown(&mut self) -> Option<ExitStatus> {
        if self.finished {
            return None;
        }
        self.finished = true;
        if is_mounted(&self.mountpoint) {
            let mp = self.mountpoint.to_string_lossy().into_owned();
            let _ = try_run(&["fusermount3", "-u", &mp], Duration::from_secs(10));
            if is_mounted(&self.mountpoint) {
                let _ = try_run(&["umount", "-l", &mp], Duration::from_secs(10));
            }
        }
        let status = wait_child(&mut self.child, Duration::from_secs(10));
        if status.is_none() {
            let _ = self.child.kill();
            let _ = wait_child(&mut self.child, Duration::from_secs(5));
        }
        if is_mounted(&self.mountpoint) {
            force_unmount(&self.mountpoint);
        }
        self.remove_files();
        status
    }

    /// Removes the mountpoint and logs one by one, never recursively: if something is still
    /// mounted, `remove_dir` fails instead of deleting mail through the filesystem.
    fn remove_files(&self) {
        if std::env::var_os("IMAPFS_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.dir.display());
            return;
        }
        let _ = fs::remove_dir(&self.mountpoint);
        let _ = fs::remove_file(&self.log);
        let _ = fs::remove_file(self.dir.join("imapfs.stdout"));
        // imapfs's own cache directory (a plain directory, never a mount point).
        let _ = fs::remove_dir_all(self.dir.join(OWN_CACHE));
        let _ = fs::remove_dir(&self.dir);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if thread::panicking() && !self.finished {
            eprintln!(
                "--- imapfs log {} (tail) ---\n{}",
                self.log.display(),
                tail(&self.log(), 80)
            );
        }
        self.shutdown();
    }
}

fn force_unmount(mountpoint: &Path) {
    let mp = mountpoint.to_string_lossy().into_owned();
    let _ = try_run(&["umount", "-l", &mp], Duration::from_secs(10));
    if is_mounted(mountpoint) {
        let _ = try_run(&["fusermount3", "-u", "-z", &mp], Duration::from_secs(10));
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            _ => return None,
        }
    }
}

/// Whether `/proc/self/mountinfo` lists `path` as a mount point. Never touches the filesystem
/// at `path`, so it cannot hang on a dead FUSE server.
pub fn is_mounted(path: &Path) -> bool {
    let wanted = path.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|field| unescape_mountinfo(field) == wanted)
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Commands and deadlines
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` (program and arguments) with stdin closed and a deadline; panics if it does not
/// finish in time (the process is killed first). Exit status is for the caller to judge.
pub fn run<S: AsRef<OsStr>>(cmd: &[S], timeout: Duration) -> Output {
    try_run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`run`], but a timeout is an `Err` describing the command.
pub fn try_run<S: AsRef<OsStr>>(cmd: &[S], timeout: Duration) -> Result<Output, String> {
    let mut command = Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    run_command(command, None, timeout)
}

/// Spawns `command` with piped output, feeds `stdin`, and waits at most `timeout`.
pub fn run_command(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    let description = format!("{command:?}");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {description}: {e}"))?;
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    match wait_child(&mut child, timeout) {
        Some(status) => Ok(Output {
            status,
            stdout: stdout.recv().unwrap_or_default(),
            stderr: stderr.recv().unwrap_or_default(),
        }),
        None => {
            let _ = child.kill();
            let _ = wait_child(&mut child, Duration::from_secs(5));
            let err = stderr
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            Err(format!(
                "timed out after {timeout:?}: {description}\nstderr: {}",
                String::from_utf8_lossy(&err)
            ))
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `f` on its own thread and returns its result, or panics after `timeout`: for direct
/// filesystem calls on the mount, which would otherwise hang the test if imapfs hangs. (The
/// stuck thread is abandoned; unmounting in `Mount::drop` releases it.)
pub fn within<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result after {timeout:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}

/// SHA-256 of `data`, lower-case hex (computed by `sha256sum`, not by code under test).
pub fn sha256_hex(data: &[u8]) -> String {
    let output = run_command(
        Command::new("sha256sum"),
        Some(data),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(output.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// SHA-256 of each item, in one `python3` run.
pub fn sha256_hex_many(items: &[&[u8]]) -> Vec<String> {
    let mut input = Vec::new();
    for item in items {
        input.extend_from_slice(format!("{}\n", item.len()).as_bytes());
        input.extend_from_slice(item);
    }
    let script = "import sys, hashlib\n\
                  data = sys.stdin.buffer\n\
                  while True:\n\
                  \x20   line = data.readline()\n\
                  \x20   if not line: break\n\
                  \x20   print(hashlib.sha256(data.read(int(line))).hexdigest())\n";
    let mut command = Command::new("python3");
    command.args(["-c", script]);
    let output = run_command(command, Some(&input), Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Parses `sha256sum` output (`<hex>  <path>` lines) into path -> hex.
pub fn parse_sha256sum(stdout: &[u8]) -> BTreeMap<PathBuf, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(hex, path)| (PathBuf::from(path), hex.to_string()))
        .collect()
}

/// A port on 127.0.0.1 that was free a moment ago (nobody listens on it now). Only for a
/// server that must bind it itself; a test that wants a refusing port or a listener holds
/// one with [`ports::RefusingPort`].
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A new empty directory under the system temp dir, named for this process and `kind`.
pub fn unique_temp_dir(kind: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let base = fs::canonicalize(std::env::temp_dir()).expect("temp dir");
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = base.join(format!(
            "imapfs-test-{kind}-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Small self-contained encoders and a PRNG
// ---------------------------------------------------------------------------------------------

/// xorshift64: deterministic content without a `rand` dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform-ish in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64) as usize
    }
}

/// Modified UTF-7 (RFC 3501 section 5.1.3), as Dovecot names maildir++ folders on disk.
pub fn mutf7_encode(name: &str) -> String {
    fn flush(out: &mut String, pending: &mut Vec<u16>) {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&base64(&bytes, MUTF7_ALPHABET, false));
        out.push('-');
        pending.clear();
    }
    let mut out = String::new();
    let mut pending = Vec::new();
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut out, &mut pending);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut units));
        }
    }
    flush(&mut out, &mut pending);
    out
}

const STD_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const MUTF7_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    // Bytes first, one validation at the end: String::push per char is slow in test builds.
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let quad = [
            alphabet[(n >> 18) as usize & 63],
            alphabet[(n >> 12) as usize & 63],
            alphabet[(n >> 6) as usize & 63],
            alphabet[n as usize & 63],
        ];
        let digits = chunk.len() + 1;
        out.extend_from_slice(&quad[..digits]);
        if pad {
            out.extend_from_slice(&b"=="[..4 - digits]);
        }
    }
    String::from_utf8(out).expect("base64 is ASCII")
}

/// `Tue, 05 Mar 2024 09:12:00 +0000`.
pub fn rfc5322_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[m as usize - 1],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    match (std::str::from_utf8(haystack), std::str::from_utf8(needle)) {
        // core's substring search is compiled optimised even in test builds: 10x faster here.
        (Ok(haystack), Ok(needle)) => haystack.contains(needle),
        _ => needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle),
    }
}

fn parse_pairs(out: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The oracle client (Python imaplib)
// ---------------------------------------------------------------------------------------------

/// Commands: `list`, `fetch F UIDS`, `sha256 F`, `meta F`, `status F`, `expunge F UID`,
/// `store F UID OP FLAGS`, `append F FLAGS` (message on stdin), `create F`, `delete F`,
/// `search F CRITERIA [LITERAL]` (both hex), `parts F UID` (Python's `email` package),
/// `greeting-tls CA PORT`, `starttls CA`. `F` is a folder name as hex of its UTF-8.
const ORACLE_PY: &str = r#"
import base64, datetime, hashlib, imaplib, os, re, ssl, sys

HOST = '127.0.0.1'

def mutf7_encode(s):
    out, buf = [], []
    def flush():
        if buf:
            b = ''.join(buf).encode('utf-16-be')
            out.append('&' + base64.b64encode(b).decode().rstrip('=').replace('/', ',') + '-')
            buf.clear()
    for ch in s:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append('&-' if ch == '&' else ch)
        else:
            buf.append(ch)
    flush()
    return ''.join(out)

def mutf7_decode(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == '&':
            j = s.index('-', i)
            if j == i + 1:
                out.append('&')
            else:
                b = s[i + 1:j].replace(',', '/')
                out.append(base64.b64decode(b + '=' * (-len(b) % 4)).decode('utf-16-be'))
            i = j + 1
        else:
            out.append(s[i])
            i += 1
    return ''.join(out)

def quote(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'

def mailbox(folder_hex):
    return quote(mutf7_encode(bytes.fromhex(folder_hex).decode()))

def check(result, what):
    typ, data = result
    if typ != 'OK':
        sys.exit('oracle: %s failed: %s %r' % (what, typ, data))
    return data

def connect():
    m = imaplib.IMAP4(HOST, int(os.environ['ORACLE_PORT']))
    m.login(os.environ['ORACLE_USER'], os.environ['ORACLE_PASSWORD'])
    return m

def select(m, folder_hex, readonly=True):
    check(m.select(mailbox(folder_hex), readonly=readonly), 'SELECT')

def unquote(b):
    if b.startswith(b'"'):
        return re.sub(rb'\\(.)', rb'\1', b[1:-1])
    return b

LIST_RE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>NIL|"(?:\\.|[^"\\])*") (?P<name>.*)$')

def cmd_list(m):
    for item in check(m.list('""', '*'), 'LIST'):
        if not item:
            continue
        if isinstance(item, tuple):
            head, name = item[0], item[1]
            g = LIST_RE.match(head)
        else:
            g = LIST_RE.match(item)
            name = unquote(g.group('name'))
        delim = g.group('delim')
        delim = '' if delim == b'NIL' else unquote(delim).decode()
        decoded = mutf7_decode(name.decode('ascii'))
        sys.stdout.write('%s\t%s\t%s\n' % (decoded.encode().hex(), delim, g.group('attrs').decode()))

def bodies(m, folder_hex, uids):
    select(m, folder_hex)
    for item in check(m.uid('FETCH', uids, '(UID BODY.PEEK[])'), 'FETCH'):
        if isinstance(item, tuple):
            uid = int(re.search(rb'UID (\d+)', item[0]).group(1))
            yield uid, item[1]

def cmd_fetch(m, folder_hex, uids):
    out = sys.stdout.buffer
    for uid, body in bodies(m, folder_hex, uids):
        out.write(b'%d %d\n' % (uid, len(body)))
        out.write(body)

def cmd_sha256(m, folder_hex):
    for uid, body in bodies(m, folder_hex, '1:*'):
        print(uid, hashlib.sha256(body).hexdigest())

def cmd_meta(m, folder_hex):
    select(m, folder_hex)
    for item in check(m.uid('FETCH', '1:*', '(UID FLAGS RFC822.SIZE INTERNALDATE)'), 'FETCH'):
        if isinstance(item, tuple):
            item = item[0]
        if not item:
            continue
        uid = re.search(rb'UID (\d+)', item).group(1).decode()
        size = re.search(rb'RFC822\.SIZE (\d+)', item).group(1).decode()
        flags = re.search(rb'FLAGS \(([^)]*)\)', item).group(1).decode().split()
        flags = [f for f in flags if f != '\\Recent']
        date = re.search(rb'INTERNALDATE "([^"]+)"', item).group(1).decode().strip()
        unix = int(datetime.datetime.strptime(date, '%d-%b-%Y %H:%M:%S %z').timestamp())
        print('%s\t%s\t%d\t%s' % (uid, size, unix, ' '.join(flags)))

def cmd_status(m, folder_hex):
    data = check(m.status(mailbox(folder_hex), '(UIDVALIDITY UIDNEXT MESSAGES)'), 'STATUS')
    line = data[0].decode()
    values = [re.search(key + r' (\d+)', line).group(1) for key in ('UIDVALIDITY', 'UIDNEXT', 'MESSAGES')]
    print(' '.join(values))

def cmd_expunge(m, folder_hex, uid):
    select(m, folder_hex, readonly=False)
    check(m.uid('STORE', uid, '+FLAGS.SILENT', '(\\Deleted)'), 'STORE')
    check(m.uid('EXPUNGE', uid), 'UID EXPUNGE')

def cmd_store(m, folder_hex, uid, op, flags):
    select(m, folder_hex, readonly=False)
    check(m.uid('STORE', uid, op, '(%s)' % flags), 'STORE')

def cmd_append(m, folder_hex, flags):
    message = sys.stdin.buffer.read()
    data = check(m.append(mailbox(folder_hex), '(%s)' % flags if flags else None, None, message), 'APPEND')
    print(re.search(rb'APPENDUID \d+ (\d+)', data[0]).group(1).decode())

def cmd_search(m, folder_hex, criteria_hex, literal_hex=None):
    select(m, folder_hex)
    criteria = bytes.fromhex(criteria_hex).decode()
    if literal_hex is not None:
        m.literal = bytes.fromhex(literal_hex)
        data = check(m.uid('SEARCH', 'CHARSET', 'UTF-8', criteria), 'SEARCH')
    else:
        data = check(m.uid('SEARCH', criteria), 'SEARCH')
    print(' '.join(sorted((data[0] or b'').decode().split(), key=int)))

def fetch_section(m, uid, section):
    for item in check(m.uid('FETCH', uid, '(BODY.PEEK[%s])' % section), 'FETCH'):
        if isinstance(item, tuple):
            return item[1]
    sys.exit('oracle: no BODY[%s] for uid %s' % (section, uid))

def cmd_parts(m, folder_hex, uid):
    import email, email.policy
    select(m, folder_hex)
    raw = fetch_section(m, uid, '')
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    out = []
    def dash(s):
        return s if s else '-'
    def text_of(message):
        # The first text/plain, else text/html, that is not an attachment; not inside
        # attached messages.
        found = {}
        def look(p):
            if p.get_content_type() == 'message/rfc822':
                return
            if p.is_multipart():
                for sub in p.get_payload():
                    look(sub)
            elif p.get_content_maintype() == 'text' and p.get_content_disposition() != 'attachment':
                found.setdefault(p.get_content_subtype(), p)
        look(message)
        return found.get('plain') or found.get('html')
    def message(inner, prefix):
        header_section = prefix + '.HEADER' if prefix else 'HEADER'
        out.append('header\t%s\t%s' % (dash(prefix), fetch_section(m, uid, header_section).hex()))
        t = text_of(inner)
        if t is not None:
            out.append('text\t%s\t%s\t%s' % (dash(prefix), t.get_content_type(),
                                              t.get_content().encode('utf-8').hex()))
        if inner.is_multipart():
            for i, sub in enumerate(inner.get_payload(), 1):
                part(sub, '%s.%d' % (prefix, i) if prefix else str(i))
        else:
            part(inner, prefix + '.1' if prefix else '1')
    def part(p, section):
        # A message/rfc822 part counts as multipart to Python (its payload is a list).
        if p.get_content_type() == 'message/rfc822':
            message(p.get_payload()[0], section)
        elif p.is_multipart():
            for i, sub in enumerate(p.get_payload(), 1):
                part(sub, '%s.%d' % (section, i))
        else:
            name = p.get_filename()
            out.append('leaf\t%s\t%s\t%s\t%s\t%s' % (
                section, p.get_content_type(), dash(p.get_content_charset()),
                name.encode('utf-8').hex() if name else '-',
                (p.get_payload(decode=True) or b'').hex()))
    message(msg, '')
    sys.stdout.write(''.join(line + '\n' for line in out))

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'greeting-tls':
        ctx = ssl.create_default_context(cafile=args[0])
        m = imaplib.IMAP4_SSL(HOST, int(args[1]), ssl_context=ctx)
        sys.stdout.write(m.welcome.decode())
        m.logout()
        return
    if cmd == 'starttls':
        m = imaplib.IMAP4(HOST, int(os.environ['ORACLE_PORT']))
        m.starttls(ssl.create_default_context(cafile=args[0]))
        m.login(os.environ['ORACLE_USER'], os.environ['ORACLE_PASSWORD'])
        print(check(m.capability(), 'CAPABILITY')[0].decode())
        m.logout()
        return
    m = connect()
    if cmd == 'create':
        check(m.create(mailbox(args[0])), 'CREATE')
    elif cmd == 'delete':
        check(m.delete(mailbox(args[0])), 'DELETE')
    elif cmd == 'rename':
        check(m.rename(mailbox(args[0]), mailbox(args[1])), 'RENAME')
    else:
        globals()['cmd_' + cmd](m, *args)
    m.logout()

main()
"#;

// ---------------------------------------------------------------------------------------------
// The imapfs command line (tests/cli.rs)
// ---------------------------------------------------------------------------------------------

/// `imapfs` with a clean environment: no password, log level or certificate variables from
/// the caller, and `config_home` as `XDG_CONFIG_HOME` (it need not exist), so that the
/// user's own config file is never read.
pub fn imapfs_command(config_home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imapfs"));
    command
        .env_remove("IMAPFS_PASSWORD")
        .env_remove("RUST_LOG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("XDG_CONFIG_HOME", config_home);
    command
}

/// What a finished command said.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code (panics if a signal ended the process).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }
}

/// Runs `command` with stdin closed and a deadline (panics when it passes).
pub fn finish(command: Command, timeout: Duration) -> Finished {
    let output = run_command(command, None, timeout).unwrap_or_else(|e| panic!("{e}"));
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The one non-empty line of `text`; panics if there are none or several.
pub fn single_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{text}");
    lines[0].to_string()
}

/// The ids of the processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            if contains(&cmdline, needle.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

impl MountOptions<'_> {
    /// Runs with `RUST_LOG=level` instead of `debug`.
    pub fn rust_log(mut self, level: &str) -> Self {
        self.rust_log = Some(level.to_string());
        self
    }
}

/// Runs `cmd` with a one-minute deadline and requires it to succeed (its stderr in the panic).
pub fn run_ok(cmd: &[&str]) -> Output {
    let out = run(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Removes `*.lock` files below `dir` (dotlocks of a server that was killed).
fn remove_lock_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => remove_lock_files(&path),
            Ok(_) if path.extension().is_some_and(|e| e == "lock") => {
                let _ = fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

/// setxattr(2) directly, under a deadline, for the exact errno (setfattr cannot send an empty
/// value and reports errors as text).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    let value = value.to_vec();
    within("setxattr", Duration::from_secs(30), move || {
        // SAFETY: valid C strings and a buffer of the given length.
        let r = unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    })
}
