//! A second, independent client that stays logged in: Python's `imaplib` in one long-lived
//! process, driven line by line over its stdin/stdout. The model-based test (tests/safety)
//! uses it as "another client" (appending and re-flagging while the mount works) and as the
//! oracle that reads the whole account in one go ([`OtherClient::snapshot`]). It shares no
//! code with imapfs and talks to Dovecot's plaintext port directly (never through a proxy).
//!
//! Messages are known by a token in an `X-Model-Token:` header: [`OtherClient::snapshot`]
//! returns every message of every folder with its token and flags.
//!
//! `Drop` closes the process's stdin and reaps it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::{hex_decode, hex_encode, Dovecot};

/// One message as the other client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub uid: u32,
    /// The `X-Model-Token` header's value, if the message has one.
    pub token: Option<String>,
    /// Sorted, without `\Recent`.
    pub flags: Vec<String>,
}

/// What a re-flag did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reflag {
    /// The server reported the message's new flags.
    Done,
    /// No message with that token in the folder (or the server reported nothing).
    Gone,
}

/// See the module documentation.
pub struct OtherClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl OtherClient {
    /// Log in to `dovecot` on its plaintext port.
    pub fn connect(dovecot: &Dovecot) -> OtherClient {
        let script = dovecot.oracle_script.with_file_name("other_client.py");
        std::fs::write(&script, OTHER_CLIENT_PY).expect("write other_client.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .env("ORACLE_PORT", dovecot.imap_port.to_string())
            .env("ORACLE_USER", &dovecot.user)
            .env("ORACLE_PASSWORD", &dovecot.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut client = OtherClient {
            child,
            stdin,
            stdout,
        };
        let hello = client.ask("hello");
        assert_eq!(hello, vec!["ok".to_string()], "other client: {hello:?}");
        client
    }

    /// APPEND `bytes` to `folder` with `flags`; the new UID, or the server's refusal.
    pub fn append(&mut self, folder: &str, flags: &[&str], bytes: &[u8]) -> Result<u32, String> {
        let flags = if flags.is_empty() {
            "-".to_string()
        } else {
            hex_encode(flags.join(" ").as_bytes())
        };
        let line = format!(
            "append {} {} {}",
            hex_encode(folder.as_bytes()),
            flags,
            hex_encode(bytes)
        );
        let reply = self.ask(&line);
        match reply.first().map(String::as_str) {
            Some(r) if r.starts_with("ok ") => Ok(r[3..].parse().expect("uid")),
            _ => Err(reply.join(" ")),
        }
    }

    /// `UID STORE uid <op> (flag)` (op `+FLAGS` or `-FLAGS`) on the message of `folder` whose
    /// token is `token` (found with `UID SEARCH HEADER`).
    pub fn reflag(&mut self, folder: &str, token: &str, op: &str, flag: &str) -> Reflag {
        let line = format!(
            "reflag {} {} {} {}",
            hex_encode(folder.as_bytes()),
            token,
            op,
            hex_encode(flag.as_bytes())
        );
        let reply = self.ask(&line);
        match reply.first().map(String::as_str) {
            Some("ok") => Reflag::Done,
            Some("gone") => Reflag::Gone,
            _ => Reflag::Gone,
        }
    }

    /// Every selectable folder (UTF-8 names) and its messages, read with EXAMINE and one
    /// `UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Model-Token)])` each.
    pub fn snapshot(&mut self) -> BTreeMap<String, Vec<Seen>> {
        let mut out: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        for line in self.ask("snapshot") {
            let f: Vec<&str> = line.split('\t').collect();
            let folder = String::from_utf8(hex_decode(f[1])).expect("UTF-8 folder");
            let entry = out.entry(folder).or_default();
            if f[0] == "folder" {
                continue;
            }
            let mut flags: Vec<String> = f
                .get(4)
                .unwrap_or(&"")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            flags.sort();
            entry.push(Seen {
                uid: f[2].parse().expect("uid"),
                token: (f[3] != "-").then(|| f[3].to_string()),
                flags,
            });
        }
        out
    }

    /// Sends one command line; the reply lines up to the terminating `.`.
    fn ask(&mut self, line: &str) -> Vec<String> {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("other client: write");
        stdin.flush().expect("other client: flush");
        let mut lines = Vec::new();
        loop {
            let mut reply = String::new();
            let n = self
                .stdout
                .read_line(&mut reply)
                .expect("other client: read");
            assert!(n > 0, "other client exited (command {:.80})", line);
            let reply = reply.trim_end();
            if reply == "." {
                return lines;
            }
            lines.push(reply.to_string());
        }
    }
}

impl Drop for OtherClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client (written beside the Dovecot's oracle script, whose oracle_common.py it imports).
const OTHER_CLIENT_PY: &str = include_str!("other_client.py");
