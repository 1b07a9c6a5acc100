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
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(OTHER_CLIENT_PY)
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

const OTHER_CLIENT_PY: &str = r#"
import base64, imaplib, os, re, sys

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

def mailbox(name):
    return quote(mutf7_encode(name))

def unquote(b):
    if b.startswith(b'"'):
        return re.sub(rb'\\(.)', rb'\1', b[1:-1])
    return b

LIST_RE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>NIL|"(?:\\.|[^"\\])*") (?P<name>.*)$')

def connect():
    c = imaplib.IMAP4('127.0.0.1', int(os.environ['ORACLE_PORT']))
    c.login(os.environ['ORACLE_USER'], os.environ['ORACLE_PASSWORD'])
    return c

m = connect()
out = sys.stdout

def folders():
    typ, data = m.list('""', '*')
    assert typ == 'OK', data
    for item in data:
        if not item:
            continue
        if isinstance(item, tuple):
            head, name = item[0], item[1]
            g = LIST_RE.match(head)
        else:
            g = LIST_RE.match(item)
            name = unquote(g.group('name'))
        if b'\\Noselect' in g.group('attrs') or b'\\NonExistent' in g.group('attrs'):
            continue
        yield mutf7_decode(name.decode('ascii'))

def snapshot():
    for name in folders():
        h = name.encode().hex()
        out.write('folder\t%s\n' % h)
        typ, data = m.select(mailbox(name), readonly=True)
        if typ != 'OK':
            continue
        if int(data[0]) == 0:
            continue
        typ, data = m.uid('FETCH', '1:*', '(UID FLAGS BODY.PEEK[HEADER.FIELDS (X-MODEL-TOKEN)])')
        assert typ == 'OK', data
        for item in data:
            if isinstance(item, tuple):
                head, body = item[0], item[1]
            else:
                continue
            uid = re.search(rb'UID (\d+)', head).group(1).decode()
            fl = re.search(rb'FLAGS \(([^)]*)\)', head)
            if fl is None:
                raise imaplib.IMAP4.error('no FLAGS in %r' % head)
            flags = fl.group(1).decode().split()
            t = re.search(rb'X-Model-Token:\s*(\S+)', body, re.I)
            token = t.group(1).decode() if t else '-'
            out.write('msg\t%s\t%s\t%s\t%s\n' % (h, uid, token, ' '.join(
                f for f in flags if f != '\\Recent')))

def main():
    global m
    for line in sys.stdin:
        # Dovecot closes a session whose selected folder another client deleted: log in
        # again and run the command once more.
        for attempt in (0, 1):
            try:
                run(line)
                break
            except (imaplib.IMAP4.abort, OSError) as e:
                m = connect()
                if line.startswith('append') or attempt == 1:
                    # Never sent twice: the first may have been stored.
                    out.write('no aborted %s\n' % str(e).replace('\n', ' '))
                    break
            except imaplib.IMAP4.error as e:
                out.write('no %s\n' % str(e).replace('\n', ' '))
                break
        out.write('.\n')
        out.flush()

def run(line):
        w = line.split()
        if True:
            if w[0] == 'hello':
                out.write('ok\n')
            elif w[0] == 'append':
                name = bytes.fromhex(w[1]).decode()
                flags = None if w[2] == '-' else '(%s)' % bytes.fromhex(w[2]).decode()
                typ, data = m.append(mailbox(name), flags, None, bytes.fromhex(w[3]))
                if typ == 'OK':
                    out.write('ok %s\n' % re.search(rb'APPENDUID \d+ (\d+)', data[0]).group(1).decode())
                else:
                    out.write('no %r\n' % data)
            elif w[0] == 'reflag':
                name = bytes.fromhex(w[1]).decode()
                typ, data = m.select(mailbox(name))
                if typ != 'OK':
                    out.write('gone\n')
                else:
                    typ, data = m.uid('SEARCH', 'HEADER', 'X-Model-Token', '"%s"' % w[2])
                    uids = (data[0] or b'').split()
                    if typ != 'OK' or len(uids) != 1:
                        out.write('gone\n')
                    else:
                        flag = bytes.fromhex(w[4]).decode()
                        typ, data = m.uid('STORE', uids[0].decode(), w[3], '(%s)' % flag)
                        ok = typ == 'OK' and any(d for d in data if d)
                        out.write('ok\n' if ok else 'gone\n')
            elif w[0] == 'snapshot':
                snapshot()
            else:
                out.write('error unknown command\n')

main()
"#;
