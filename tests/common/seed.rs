//! Seeds: what a server holds when it starts. A [`Seed`] is folders of messages described in
//! memory, deterministic byte for byte; a message's UID is its 1-based position in its folder.
//! [`compose_text`] builds the simple text/plain messages tests append; the fixture most tests
//! share, [`Seed::standard`], is built in seed_standard.rs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use super::maildir::maildir_flag_letter;
use super::seed_standard::build_standard_seed;
use super::text::{base64, rfc5322_date, STD_ALPHABET};
use super::{contains, DELIMITER, PHRASE};

/// Folders and their messages, in memory. Folder names are IMAP names in UTF-8 with `.` as the
/// hierarchy delimiter (`Archive.2024` is `Archive/2024` on the mount).
#[derive(Debug, Clone, Default)]
pub struct Seed {
    pub(super) folders: Vec<SeedFolder>,
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

pub(super) fn push_common_headers(
    out: &mut String,
    from: &str,
    to: &str,
    subject: Subject<'_>,
    date: i64,
) {
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
pub(super) fn decode_display(from: &str) -> String {
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
