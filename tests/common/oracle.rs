//! The oracle: Python's `imaplib` on a Dovecot's plaintext port (tests/common/oracle.py), a
//! client that shares no code with imapfs, so it can tell what the server really holds. Each
//! `Dovecot::oracle_*` call is one `python3` run under a deadline; folder names cross the
//! command line as hex of their UTF-8, answers come back as tab-separated lines. The parsing
//! both Python oracles share (mUTF-7, LIST, FETCH metadata, STATUS) is oracle_common.py.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::text::{hex_decode, parse_pairs};
use super::{hex_encode, run_command, Dovecot};

const ORACLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Commands: `list`, `fetch F UIDS`, `sha256 F`, `meta F`, `status F`, `expunge F UID`,
/// `store F UID OP FLAGS`, `append F FLAGS` (message on stdin), `create F`, `delete F`,
/// `search F CRITERIA [LITERAL]` (both hex), `parts F UID` (Python's `email` package),
/// `greeting-tls CA PORT`, `starttls CA`. `F` is a folder name as hex of its UTF-8.
const ORACLE_PY: &str = include_str!("oracle.py");
/// What both Python oracles import (written beside each of them).
const ORACLE_COMMON_PY: &str = include_str!("oracle_common.py");

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
        parse_sha256(&self.oracle(&["sha256", &hex_encode(folder.as_bytes())], None))
    }

    /// Flags of every message in `folder`, size and INTERNALDATE, by UID.
    pub fn oracle_meta(&self, folder: &str) -> BTreeMap<u32, OracleMeta> {
        parse_meta(&self.oracle(&["meta", &hex_encode(folder.as_bytes())], None))
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
        parse_status(&self.oracle(&["status", &hex_encode(folder.as_bytes())], None))
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
        parse_appended_uid(&out)
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
        parse_frames(&self.oracle(&["fetch", &hex_encode(folder.as_bytes()), uids], None))
    }

    /// Runs one oracle command; panics with its stderr and the server log if it fails.
    pub(super) fn oracle(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
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
}

/// Writes the oracle script and its shared module into `dir`; returns the script's path.
pub(super) fn write_oracle(dir: &Path) -> PathBuf {
    write_oracle_script(dir, ORACLE_PY)
}

/// Writes `script` as `dir/oracle.py` with oracle_common.py beside it (Python finds a module in
/// the script's own directory).
pub(super) fn write_oracle_script(dir: &Path, script: &str) -> PathBuf {
    fs::write(dir.join("oracle_common.py"), ORACLE_COMMON_PY).expect("write oracle_common.py");
    let path = dir.join("oracle.py");
    fs::write(&path, script).expect("write oracle.py");
    path
}

// --- parsing the Python oracles' answers (oracle.py and servers_oracle.py print the same) ----

/// `UID LEN\n` + LEN bytes, repeated: `BODY[]` by UID.
pub(super) fn parse_frames(out: &[u8]) -> BTreeMap<u32, Vec<u8>> {
    let mut frames = BTreeMap::new();
    let mut rest = out;
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

/// `UID HEX` lines: SHA-256 of each message by UID.
pub(super) fn parse_sha256(out: &[u8]) -> BTreeMap<u32, String> {
    parse_pairs(out)
        .into_iter()
        .map(|(uid, hex)| (uid.parse().expect("uid"), hex))
        .collect()
}

/// `UID\tSIZE\tDATE\tFLAGS` lines; flags sorted.
pub(super) fn parse_meta(out: &[u8]) -> BTreeMap<u32, OracleMeta> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|line| {
            let mut fields = line.split('\t');
            let mut next = || fields.next().expect("meta field");
            let uid = next().parse().expect("uid");
            let size = next().parse().expect("size");
            let internal_date = next().parse().expect("date");
            let mut flags: Vec<String> = next().split_whitespace().map(str::to_string).collect();
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

/// `UIDVALIDITY UIDNEXT MESSAGES`.
pub(super) fn parse_status(out: &[u8]) -> OracleStatus {
    let numbers: Vec<u32> = String::from_utf8_lossy(out)
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    OracleStatus {
        uidvalidity: numbers[0],
        uidnext: numbers[1],
        messages: numbers[2],
    }
}

/// The UID an APPEND got.
pub(super) fn parse_appended_uid(out: &[u8]) -> u32 {
    String::from_utf8_lossy(out)
        .trim()
        .parse()
        .expect("appended uid")
}
