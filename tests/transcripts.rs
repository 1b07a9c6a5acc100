//! The session core driven from byte transcripts: no server, no socket, no clock.
//!
//! Each `tests/transcripts/*.txt` is a conversation, one directive a line:
//!
//! ```text
//! # a comment (the first one says what the transcript pins)
//! > LOGIN alice secret     the client starts a command (see `command` below)
//! C: A1 LOGIN alice secret the bytes the core must have queued, one CRLF line each
//! S: A1 OK done            bytes from the server (a CRLF is added); the core steps until
//!                          it needs more, and every event it gives is checked in order:
//! E: done A1 ok 0          an event (see `show_untagged` and `Runner::drain`)
//! = exists 3               a fact about the core's state (see `check`)
//! ```
//!
//! The first untagged status is the greeting; after it, untagged data is held for the next
//! completion, and a completion is completed by the core,
//! as the blocking session does. Every transcript is run twice: whole lines at a time, and
//! one byte at a time, with the same events expected. A failure names the file and line.

use std::path::Path;
use std::time::Instant;

use imapfs::imap::codec::{
    Command, FetchAttr, Limits, NotifyEvent, NotifyFilter, QResync, SelectSync,
};
use imapfs::imap::session::{Core, Event, MailboxEvent, Tag};
use imapfs::imap::types::{Flag, MailboxName, ModSeq, SequenceSet, Status, UidValidity, Untagged};
use imapfs::Error;

#[test]
fn transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "only {} transcripts", files.len());
    let start = Instant::now();
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for bytewise in [false, true] {
            if let Err(e) = run(&name, &text, bytewise) {
                failures.push(e);
                break;
            }
        }
    }
    let took = start.elapsed();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} transcripts in {:?}", files.len(), took);
    assert!(took.as_secs_f64() < 1.0, "transcripts took {took:?}");
}

struct Runner {
    core: Core,
    /// Events given by the core and not yet checked.
    events: Vec<String>,
    /// Expected client bytes not yet compared.
    expect_out: Vec<u8>,
    /// Command names by tag, for completions.
    names: Vec<(Tag, &'static str)>,
    bytewise: bool,
    greeted: bool,
}

fn run(file: &str, text: &str, bytewise: bool) -> Result<(), String> {
    // Small enough that a transcript can overflow the backlog.
    let limits = Limits {
        max_response: Some(2048),
        max_backlog: Some(4096),
        ..Limits::default()
    };
    let mut r = Runner {
        core: Core::new(limits),
        events: Vec::new(),
        expect_out: Vec::new(),
        names: Vec::new(),
        bytewise,
        greeted: false,
    };
    let mode = if bytewise { "bytewise" } else { "by line" };
    for (i, line) in text.lines().enumerate() {
        let at = |msg: String| format!("{file}:{} ({mode}): {msg}", i + 1);
        // What the client sent is due once the server speaks or a fact is checked.
        if line.starts_with("S:") || line.starts_with('=') {
            r.compare_out().map_err(at)?;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kind, rest) = line.split_at(line.find(' ').unwrap_or(line.len()));
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        match kind {
            ">" => r.start(rest).map_err(at)?,
            "C:" => {
                r.expect_out.extend_from_slice(rest.as_bytes());
                r.expect_out.extend_from_slice(b"\r\n");
            }
            "S:" => {
                let mut bytes = rest.as_bytes().to_vec();
                bytes.extend_from_slice(b"\r\n");
                r.feed(&bytes);
            }
            "E:" => {
                if r.events.is_empty() {
                    return Err(at(format!("expected event `{rest}`, the core gave none")));
                }
                let got = r.events.remove(0);
                if got != rest {
                    return Err(at(format!("expected event `{rest}`, got `{got}`")));
                }
            }
            "=" => r.check(rest).map_err(at)?,
            _ => return Err(at(format!("unknown directive `{kind}`"))),
        }
    }
    r.compare_out()
        .map_err(|m| format!("{file}: at the end ({mode}): {m}"))?;
    if !r.events.is_empty() {
        return Err(format!(
            "{file}: at the end ({mode}): events not expected: {:?}",
            r.events
        ));
    }
    Ok(())
}

impl Runner {
    fn start(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split(' ').collect();
        match words[0] {
            "DONE" => {
                self.core.queue(b"DONE\r\n");
                return Ok(());
            }
            "LINE" => {
                self.core.queue(words.get(1).unwrap_or(&"").as_bytes());
                self.core.queue(b"\r\n");
                return Ok(());
            }
            _ => {}
        }
        let cmd = command(&words)?;
        match self.core.begin(&cmd) {
            Ok(tag) => self.names.push((tag, cmd.name())),
            Err(e) => self.events.push(format!("refused {}", kind(&e))),
        }
        Ok(())
    }

    fn compare_out(&mut self) -> Result<(), String> {
        let out = self.core.take_outgoing();
        let want = std::mem::take(&mut self.expect_out);
        if out != want {
            return Err(format!(
                "the client sent {:?}, expected {:?}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want)
            ));
        }
        Ok(())
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.bytewise {
            for b in bytes {
                self.core.feed(std::slice::from_ref(b));
                self.drain();
            }
        } else {
            self.core.feed(bytes);
            self.drain();
        }
    }

    /// Step until the core needs more bytes, as the session does with what it gets.
    fn drain(&mut self) {
        while !self.core.is_broken() {
            match self.core.step() {
                Ok(None) => return,
                Ok(Some(Event::Untagged { response, mailbox })) => {
                    self.events.push(show_untagged(&response, mailbox.as_ref()));
                    match response {
                        // The greeting, as the session takes it: not held for a command.
                        Untagged::Status { text, .. } if !self.greeted => {
                            self.core.greeted(&text);
                        }
                        other => self.core.hold(other),
                    }
                    self.greeted = true;
                }
                Ok(Some(Event::Continue(_))) => self.events.push("continue".into()),
                Ok(Some(Event::Tagged(t))) => {
                    let name = self
                        .names
                        .iter()
                        .find(|(tag, _)| *tag == t.tag)
                        .map_or("?", |(_, n)| n);
                    let tag = t.tag.clone();
                    let status = t.status;
                    match self.core.complete(t, name) {
                        Ok(done) => {
                            self.events
                                .push(format!("done {tag} ok {}", done.untagged.len()));
                        }
                        Err(e) => self.events.push(format!(
                            "done {tag} {} {}",
                            match status {
                                Status::Ok => "ok",
                                Status::No => "no",
                                _ => "bad",
                            },
                            kind(&e)
                        )),
                    }
                }
                Err(e) => self.events.push(format!("error {}", kind(&e))),
            }
        }
    }

    fn check(&self, fact: &str) -> Result<(), String> {
        let (what, value) = fact.split_once(' ').unwrap_or((fact, ""));
        let sel = self.core.selected();
        let got = match what {
            "selected" => sel.map_or("none".into(), |s| s.mailbox.as_str().to_string()),
            "exists" => sel.map_or("none".into(), |s| s.exists.to_string()),
            "uidvalidity" => opt(sel.and_then(|s| s.uidvalidity.map(|v| v.get()))),
            "uidnext" => opt(sel.and_then(|s| s.uidnext.map(|v| v.get()))),
            "highestmodseq" => opt(sel.and_then(|s| s.highest_modseq.map(|m| m.0))),
            "readonly" => sel.map_or("none".into(), |s| s.read_only.to_string()),
            "cap" => self.core.capabilities().contains(value).to_string(),
            "enabled" => self.core.is_enabled(value).to_string(),
            "broken" => self.core.is_broken().to_string(),
            "inflight" => self.core.has_in_flight().to_string(),
            "kept" => self.core.kept_completions().to_string(),
            _ => return Err(format!("unknown fact `{what}`")),
        };
        let want = match what {
            "cap" | "enabled" => "true",
            _ => value,
        };
        if got != want {
            return Err(format!("`{fact}`: the core says {got}"));
        }
        Ok(())
    }
}

fn opt(v: Option<impl ToString>) -> String {
    v.map_or("none".into(), |v| v.to_string())
}

/// The error's variant, which is what callers branch on.
fn kind(e: &Error) -> String {
    let d = format!("{e:?}");
    d.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}

fn mailbox(name: &str) -> MailboxName {
    MailboxName::from_utf8(name, false)
}

/// The commands a transcript can start: `> NAME args`.
fn command(w: &[&str]) -> Result<Command, String> {
    let arg = |i: usize| {
        w.get(i)
            .copied()
            .ok_or_else(|| format!("`{}` needs argument {i}", w[0]))
    };
    let num = |i: usize| -> Result<u64, String> { arg(i)?.parse().map_err(|e| format!("{e}")) };
    Ok(match w[0] {
        "NOOP" => Command::Noop,
        "CAPABILITY" => Command::Capability,
        "LOGOUT" => Command::Logout,
        "STARTTLS" => Command::StartTls,
        "IDLE" => Command::Idle,
        "UNSELECT" => Command::Unselect,
        "CLOSE" => Command::Close,
        "EXPUNGE" => Command::Expunge,
        "LOGIN" => Command::Login {
            user: arg(1)?.as_bytes().to_vec(),
            password: arg(2)?.as_bytes().to_vec(),
        },
        "AUTHENTICATE" => Command::Authenticate {
            mechanism: arg(1)?.into(),
            initial: w.get(2).map(|s| s.to_string()),
        },
        "ENABLE" => Command::Enable(w[1..].iter().map(|s| s.to_string()).collect()),
        "SELECT" | "EXAMINE" | "SELECT-CONDSTORE" | "SELECT-QRESYNC" => Command::Select {
            mailbox: mailbox(arg(1)?),
            read_only: w[0] == "EXAMINE",
            sync: match w[0] {
                "SELECT-CONDSTORE" => SelectSync::CondStore,
                "SELECT-QRESYNC" => SelectSync::QResync(QResync {
                    uidvalidity: UidValidity::new(num(2)? as u32).ok_or("zero UIDVALIDITY")?,
                    modseq: ModSeq(num(3)?),
                    known_uids: None,
                    seq_match: None,
                }),
                _ => SelectSync::Plain,
            },
        },
        "FETCH" => Command::Fetch {
            uid: true,
            set: set(arg(1)?)?,
            attrs: vec![FetchAttr::Uid, FetchAttr::Flags],
            changed_since: None,
        },
        "FETCH-BODY" => Command::Fetch {
            uid: true,
            set: set(arg(1)?)?,
            attrs: vec![FetchAttr::BodyPeek {
                section: String::new(),
                partial: None,
            }],
            changed_since: None,
        },
        "APPEND" => Command::Append {
            mailbox: mailbox(arg(1)?),
            flags: vec![Flag::Seen],
            date: None,
            message: arg(2)?.as_bytes().to_vec(),
        },
        "CREATE" => Command::Create(mailbox(arg(1)?)),
        "STATUS" => Command::Status {
            mailbox: mailbox(arg(1)?),
            items: vec!["MESSAGES", "UIDNEXT", "UIDVALIDITY"],
        },
        "LIST" => Command::List {
            reference: Vec::new(),
            pattern: b"*".to_vec(),
        },
        "NOTIFY" => Command::Notify(vec![(
            NotifyFilter::Selected,
            vec![
                NotifyEvent::MessageNew,
                NotifyEvent::MessageExpunge,
                NotifyEvent::FlagChange,
            ],
        )]),
        other => return Err(format!("unknown command `{other}`")),
    })
}

fn set(s: &str) -> Result<SequenceSet, String> {
    let mut ranges = Vec::new();
    for part in s.split(',') {
        let n = |x: &str| -> Result<u32, String> {
            if x == "*" {
                Ok(u32::MAX)
            } else {
                x.parse().map_err(|e| format!("{e}"))
            }
        };
        match part.split_once(':') {
            Some((a, b)) => ranges.push((n(a)?, n(b)?)),
            None => ranges.push((n(part)?, n(part)?)),
        }
    }
    Ok(SequenceSet(ranges))
}

/// An untagged event in one line: the mailbox event if there is one, else the response.
fn show_untagged(u: &Untagged, mailbox: Option<&MailboxEvent>) -> String {
    let flags = |f: &[Flag]| {
        f.iter()
            .map(|f| f.as_str().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match mailbox {
        Some(MailboxEvent::Exists(n)) => return format!("exists {n}"),
        Some(MailboxEvent::Recent(n)) => return format!("recent {n}"),
        Some(MailboxEvent::Expunge(n)) => return format!("expunge {}", n.get()),
        Some(MailboxEvent::Vanished { earlier, uids }) => {
            return format!("vanished{} {uids}", if *earlier { " earlier" } else { "" })
        }
        Some(MailboxEvent::Fetch {
            seq,
            uid,
            flags: f,
            modseq,
        }) => {
            let mut s = format!("fetch {}", seq.get());
            if let Some(u) = uid {
                s += &format!(" uid={u}");
            }
            if let Some(f) = f {
                s += &format!(" flags=({})", flags(f));
            }
            if let Some(m) = modseq {
                s += &format!(" modseq={}", m.0);
            }
            return s;
        }
        Some(MailboxEvent::UidValidity(v)) => return format!("uidvalidity {v}"),
        Some(MailboxEvent::UidNext(n)) => return format!("uidnext {n}"),
        Some(MailboxEvent::HighestModSeq(m)) => return format!("highestmodseq {}", m.0),
        Some(MailboxEvent::Flags(f)) => return format!("flags ({})", flags(f)),
        Some(other) => return format!("{other:?}"),
        None => {}
    }
    match u {
        Untagged::Status { status, text } => {
            let s = format!("{status:?}").to_ascii_lowercase();
            match &text.code {
                Some(c) => {
                    let c = format!("{c:?}");
                    let c = c
                        .split(|ch: char| !ch.is_alphanumeric())
                        .next()
                        .unwrap_or("");
                    format!("status {s} [{c}] {}", text.text)
                }
                None => format!("status {s} {}", text.text),
            }
        }
        Untagged::Capability(c) => format!("capability {}", c.join(" ")),
        Untagged::Enabled(c) => format!("enabled {}", c.join(" ")),
        Untagged::List(l) => format!("list {}", l.name.as_str()),
        Untagged::StatusData { mailbox, items } => {
            format!("statusdata {} {}", mailbox.as_str(), items.len())
        }
        Untagged::Fetch { seq, .. } => format!("fetch {}", seq.get()),
        Untagged::Exists(n) => format!("untagged exists {n}"),
        Untagged::Expunge(n) => format!("untagged expunge {}", n.get()),
        Untagged::Vanished { earlier, uids } => format!(
            "untagged vanished{} {uids}",
            if *earlier { " earlier" } else { "" }
        ),
        other => {
            let d = format!("{other:?}");
            format!(
                "untagged {}",
                d.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("")
            )
        }
    }
}
