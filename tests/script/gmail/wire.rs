//! The wire side of the Gmail emulator: one connection's commands, read whole (literals
//! included), tokenised, and answered from the shared [`State`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{Kind, State, CAPS, MAX_CONNECTIONS};
use crate::script::Conn;

const UIDVALIDITY: u32 = 11;

/// A token of a command line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Atom(String),
    Str(String),
    List(Vec<Tok>),
}

impl Tok {
    fn text(&self) -> &str {
        match self {
            Tok::Atom(s) | Tok::Str(s) => s,
            Tok::List(_) => "",
        }
    }
}

pub(crate) fn serve(c: &mut Conn, state: &Mutex<State>, live: &AtomicUsize) {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    c.send(b"* OK Gimap ready for requests from 127.0.0.1 z1mb\r\n");
    let mut selected: Option<usize> = None;
    while let Some(line) = read_command(c) {
        let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let tag = tag.to_string();
        let toks = tokens(rest);
        let verb = toks
            .first()
            .map(|t| t.text().to_ascii_uppercase())
            .unwrap_or_default();
        lock().commands.push(rest.to_string());
        let args = &toks[toks.len().min(1)..];
        match verb.as_str() {
            "LOGIN" | "AUTHENTICATE" => {
                if live.load(Ordering::SeqCst) > MAX_CONNECTIONS {
                    lock().refused += 1;
                    c.send(
                        format!(
                            "{tag} NO [ALERT] Too many simultaneous connections. (Failure)\r\n"
                        )
                        .as_bytes(),
                    );
                } else {
                    c.send(format!("* CAPABILITY {CAPS}\r\n{tag} OK tester@gmail.com authenticated (Success)\r\n").as_bytes());
                }
            }
            "ID" => c.send(
                format!(
                    "* ID (\"name\" \"GImap\" \"vendor\" \"Google, Inc.\")\r\n{tag} OK Success\r\n"
                )
                .as_bytes(),
            ),
            "LIST" | "LSUB" => {
                let st = lock();
                let mut out = String::new();
                for f in &st.folders {
                    let attrs = match f.kind {
                        Kind::Parent => "\\HasChildren \\Noselect",
                        Kind::All => "\\All \\HasNoChildren",
                        Kind::Trash => "\\HasNoChildren \\Trash",
                        _ => "\\HasNoChildren",
                    };
                    out.push_str(&format!("* {verb} ({attrs}) \"/\" {}\r\n", quote(&f.name)));
                }
                out.push_str(&format!("{tag} OK Success\r\n"));
                c.send(out.as_bytes());
            }
            "SELECT" | "EXAMINE" => {
                let mut st = lock();
                let Some(f) = args.first().and_then(|n| st.folder(n.text())) else {
                    c.send(format!("{tag} NO [NONEXISTENT] Unknown Mailbox\r\n").as_bytes());
                    continue;
                };
                if st.folders[f].kind == Kind::Parent {
                    c.send(format!("{tag} NO [NONEXISTENT] Unknown Mailbox\r\n").as_bytes());
                    continue;
                }
                st.sync(f);
                selected = Some(f);
                let fo = &st.folders[f];
                let access = if verb == "SELECT" {
                    "READ-WRITE"
                } else {
                    "READ-ONLY"
                };
                c.send(format!(
                    "* FLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing)\r\n\
                     * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing \\*)] Flags permitted.\r\n\
                     * OK [UIDVALIDITY {UIDVALIDITY}] UIDs valid.\r\n* {} EXISTS\r\n* 0 RECENT\r\n\
                     * OK [UIDNEXT {}] Predicted next UID.\r\n* OK [HIGHESTMODSEQ {}]\r\n{tag} OK [{access}] {} selected. (Success)\r\n",
                    fo.uids.len(), fo.uidnext, st.modseq.max(1), fo.name).as_bytes());
            }
            "STATUS" => {
                let mut st = lock();
                let Some(f) = args.first().and_then(|n| st.folder(n.text())) else {
                    c.send(format!("{tag} NO [NONEXISTENT] Unknown Mailbox\r\n").as_bytes());
                    continue;
                };
                st.sync(f);
                let fo = &st.folders[f];
                let unseen = fo
                    .uids
                    .values()
                    .filter(|&&m| !st.msgs[m].flags.contains("\\Seen"))
                    .count();
                c.send(format!("* STATUS {} (MESSAGES {} UIDNEXT {} UIDVALIDITY {UIDVALIDITY} UNSEEN {unseen})\r\n{tag} OK Success\r\n",
                    quote(&fo.name), fo.uids.len(), fo.uidnext).as_bytes());
            }
            "IDLE" => {
                c.send(b"+ idling\r\n");
                while let Some(l) = c.line() {
                    if l.trim_ascii().eq_ignore_ascii_case(b"DONE") {
                        break;
                    }
                }
                c.send(format!("{tag} OK IDLE terminated (Success)\r\n").as_bytes());
            }
            "CLOSE" | "UNSELECT" => {
                selected = None;
                c.send(
                    format!("{tag} OK Returned to authenticated state. (Success)\r\n").as_bytes(),
                );
            }
            "UID" => {
                let Some(f) = selected else {
                    c.send(format!("{tag} BAD No mailbox selected\r\n").as_bytes());
                    continue;
                };
                let sub = args
                    .first()
                    .map(|t| t.text().to_ascii_uppercase())
                    .unwrap_or_default();
                let mut st = lock();
                st.sync(f);
                let out = match sub.as_str() {
                    "FETCH" => fetch(&mut st, f, &args[1..]),
                    "STORE" => store(&mut st, f, &args[1..]),
                    "EXPUNGE" => expunge(&mut st, f, &args[1..]),
                    "MOVE" | "COPY" => move_to(&mut st, f, &args[1..], sub == "MOVE"),
                    "SEARCH" => search(&mut st, f, &args[1..], &tag),
                    _ => Err("Unknown UID command".into()),
                };
                drop(st);
                match out {
                    Ok(text) => c.send(format!("{text}{tag} OK Success\r\n").as_bytes()),
                    Err(e) => c.send(format!("{tag} BAD {e}\r\n").as_bytes()),
                }
            }
            _ => {
                let cmd = super::super::Cmd {
                    tag: tag.clone(),
                    verb: verb.clone(),
                    rest: String::new(),
                };
                if !c.answer_basic(&cmd, CAPS) {
                    c.send(format!("{tag} BAD Unknown command\r\n").as_bytes());
                }
            }
        }
    }
}

/// A whole command, with its literals (`{n}` answered with `+`, `{n+}` not) inlined as
/// quoted strings.
fn read_command(c: &mut Conn) -> Option<String> {
    let mut out = String::new();
    loop {
        let line = c.line()?;
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        let literal = text
            .rfind('{')
            .filter(|_| text.ends_with('}'))
            .and_then(|i| {
                let inner = &text[i + 1..text.len() - 1];
                let (n, sync) = match inner.strip_suffix('+') {
                    Some(n) => (n, false),
                    None => (inner, true),
                };
                Some((i, n.parse::<usize>().ok()?, sync))
            });
        let Some((at, n, sync)) = literal else {
            out.push_str(&text);
            return Some(out);
        };
        out.push_str(&text[..at]);
        if sync {
            c.send(b"+ go ahead\r\n");
        }
        let mut data = Vec::new();
        while data.len() < n {
            data.extend(c.line()?);
        }
        let rest = data.split_off(n);
        out.push_str(&quote(&String::from_utf8_lossy(&data)));
        if !rest.is_empty() && rest != b"\r\n" {
            // The command goes on after the literal on the same line: read it as a line.
            let tail = String::from_utf8_lossy(&rest)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            out.push_str(&tail);
            if !tail.ends_with('}') {
                return Some(out);
            }
        } else {
            return Some(out);
        }
    }
}

/// A quoted string.
pub(crate) fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `X-GM-LABELS (...)` of a message.
fn labels_item(msg: &super::Msg) -> String {
    let labels: Vec<String> = msg.labels.iter().map(|l| label_wire(l)).collect();
    format!("X-GM-LABELS ({})", labels.join(" "))
}

/// A label as Gmail sends it: a system label bare, a user label quoted.
fn label_wire(l: &str) -> String {
    if l.starts_with('\\') {
        l.to_string()
    } else {
        quote(l)
    }
}

pub(crate) fn tokens(s: &str) -> Vec<Tok> {
    let mut chars = s.chars().peekable();
    let mut stack: Vec<Vec<Tok>> = vec![Vec::new()];
    while let Some(&ch) = chars.peek() {
        match ch {
            ' ' => {
                chars.next();
            }
            '(' => {
                chars.next();
                stack.push(Vec::new());
            }
            ')' => {
                chars.next();
                if stack.len() > 1 {
                    let done = stack.pop().unwrap_or_default();
                    stack.last_mut().expect("stack").push(Tok::List(done));
                }
            }
            '"' => {
                chars.next();
                let mut v = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => v.extend(chars.next()),
                        '"' => break,
                        c => v.push(c),
                    }
                }
                stack.last_mut().expect("stack").push(Tok::Str(v));
            }
            _ => {
                let mut v = String::new();
                let mut depth = 0;
                while let Some(&c) = chars.peek() {
                    if depth == 0 && (c == ' ' || c == ')' || c == '(') {
                        break;
                    }
                    depth += i32::from(c == '[') - i32::from(c == ']');
                    v.push(c);
                    chars.next();
                }
                stack.last_mut().expect("stack").push(Tok::Atom(v));
            }
        }
    }
    stack.into_iter().next().unwrap_or_default()
}

/// The folder's UIDs in a set (`1:*`, `3,5:7`).
fn uids_in(st: &State, f: usize, set: &str) -> Vec<u32> {
    let max = st.folders[f].uids.keys().next_back().copied().unwrap_or(0);
    let mut out = Vec::new();
    for part in set.split(',') {
        let num = |s: &str| {
            if s == "*" {
                max
            } else {
                s.parse().unwrap_or(0)
            }
        };
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (num(a), num(b)),
            None => (num(part), num(part)),
        };
        let (a, b) = (a.min(b), a.max(b));
        out.extend(st.folders[f].uids.range(a..=b).map(|(u, _)| *u));
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn seq_of(st: &State, f: usize, uid: u32) -> usize {
    st.folders[f].uids.range(..=uid).count()
}

/// `UID FETCH set (items) [(CHANGEDSINCE n)]`.
fn fetch(st: &mut State, f: usize, args: &[Tok]) -> Result<String, String> {
    let set = args.first().ok_or("no set")?.text().to_string();
    let items: Vec<String> = match args.get(1) {
        Some(Tok::List(v)) => v.iter().map(|t| t.text().to_ascii_uppercase()).collect(),
        Some(t) => vec![t.text().to_ascii_uppercase()],
        None => return Err("no items".into()),
    };
    let since: Option<u64> = match args.get(2) {
        Some(Tok::List(v)) => v.get(1).and_then(|t| t.text().parse().ok()),
        _ => None,
    };
    let mut out = String::new();
    for uid in uids_in(st, f, &set) {
        let m = st.folders[f].uids[&uid];
        if since.is_some_and(|s| st.msgs[m].modseq <= s) {
            continue;
        }
        let msg = st.msgs[m].clone();
        let mut parts = vec![format!("UID {uid}")];
        let mut body_bytes = 0;
        for item in &items {
            let part = match item.as_str() {
                "UID" => continue,
                "FLAGS" => format!(
                    "FLAGS ({})",
                    msg.flags.iter().cloned().collect::<Vec<_>>().join(" ")
                ),
                "RFC822.SIZE" => format!("RFC822.SIZE {}", msg.body.len()),
                "INTERNALDATE" => "INTERNALDATE \"01-Mar-2024 09:12:00 +0000\"".into(),
                "MODSEQ" => format!("MODSEQ ({})", msg.modseq),
                "X-GM-MSGID" => format!("X-GM-MSGID {}", msg.msgid),
                "X-GM-THRID" => format!("X-GM-THRID {}", msg.thrid),
                "X-GM-LABELS" => labels_item(&msg),
                i if i.starts_with("BODY.PEEK[") => {
                    let (section, partial) = i["BODY.PEEK[".len()..]
                        .split_once(']')
                        .ok_or("bad section")?;
                    let full = &msg.body[..];
                    let data: &[u8] = match section {
                        "" => full,
                        "HEADER" => {
                            let end = full
                                .windows(4)
                                .position(|w| w == b"\r\n\r\n")
                                .map_or(full.len(), |p| p + 4);
                            &full[..end]
                        }
                        _ => return Err(format!("section {section} not emulated")),
                    };
                    let (origin, data) =
                        match partial.strip_prefix('<').and_then(|p| p.strip_suffix('>')) {
                            Some(r) => {
                                let (o, l) = r.split_once('.').ok_or("bad partial")?;
                                let o: usize = o.parse().map_err(|_| "bad offset")?;
                                let l: usize = l.parse().map_err(|_| "bad length")?;
                                let s = o.min(data.len());
                                (
                                    format!("<{o}>"),
                                    &data[s..(s.saturating_add(l)).min(data.len())],
                                )
                            }
                            None => (String::new(), data),
                        };
                    body_bytes += data.len();
                    format!(
                        "BODY[{section}]{origin} {{{}}}\r\n{}",
                        data.len(),
                        String::from_utf8_lossy(data)
                    )
                }
                other => return Err(format!("{other} not emulated")),
            };
            parts.push(part);
        }
        if items.iter().any(|i| i.starts_with("BODY.PEEK[")) {
            st.body_fetches.push((msg.msgid, body_bytes));
        }
        out.push_str(&format!(
            "* {} FETCH ({})\r\n",
            seq_of(st, f, uid),
            parts.join(" ")
        ));
    }
    Ok(out)
}

/// `UID STORE set [+|-]FLAGS|X-GM-LABELS[.SILENT] (...)`.
fn store(st: &mut State, f: usize, args: &[Tok]) -> Result<String, String> {
    let set = args.first().ok_or("no set")?.text().to_string();
    let mut i = 1;
    if matches!(args.get(1), Some(Tok::List(_))) {
        return Err("UNCHANGEDSINCE not emulated".into());
    }
    let what = args.get(i).ok_or("no item")?.text().to_ascii_uppercase();
    i += 1;
    let values: Vec<String> = match args.get(i) {
        Some(Tok::List(v)) => v.iter().map(|t| t.text().to_string()).collect(),
        Some(t) => vec![t.text().to_string()],
        None => return Err("no values".into()),
    };
    let (mode, rest) = match what.as_bytes().first() {
        Some(b'+') => ('+', &what[1..]),
        Some(b'-') => ('-', &what[1..]),
        _ => ('=', what.as_str()),
    };
    let silent = rest.ends_with(".SILENT");
    let labels = rest.starts_with("X-GM-LABELS");
    if !labels && !rest.starts_with("FLAGS") {
        return Err(format!("{rest} not emulated"));
    }
    let mut out = String::new();
    for uid in uids_in(st, f, &set) {
        let m = st.folders[f].uids[&uid];
        let target = if labels {
            &mut st.msgs[m].labels
        } else {
            &mut st.msgs[m].flags
        };
        match mode {
            '+' => target.extend(values.iter().cloned()),
            '-' => values.iter().for_each(|v| {
                target.remove(v);
            }),
            _ => *target = values.iter().cloned().collect(),
        }
        st.touch(m);
        if !silent {
            let msg = &st.msgs[m];
            let item = if labels {
                labels_item(msg)
            } else {
                format!(
                    "FLAGS ({}) MODSEQ ({})",
                    msg.flags.iter().cloned().collect::<Vec<_>>().join(" "),
                    msg.modseq
                )
            };
            out.push_str(&format!(
                "* {} FETCH ({item} UID {uid})\r\n",
                seq_of(st, f, uid)
            ));
        }
    }
    Ok(out)
}

/// `UID EXPUNGE set`: as Gmail, by what the folder is.
fn expunge(st: &mut State, f: usize, args: &[Tok]) -> Result<String, String> {
    let set = args.first().ok_or("no set")?.text().to_string();
    let mut out = String::new();
    for uid in uids_in(st, f, &set).into_iter().rev() {
        let m = st.folders[f].uids[&uid];
        if !st.msgs[m].flags.contains("\\Deleted") {
            continue;
        }
        out.push_str(&format!("* {} EXPUNGE\r\n", seq_of(st, f, uid)));
        let msg = &mut st.msgs[m];
        msg.flags.remove("\\Deleted");
        match st.folders[f].kind.clone() {
            Kind::Inbox => {
                msg.labels.remove("\\Inbox");
            }
            Kind::Label(l) => {
                msg.labels.remove(&l);
            }
            Kind::All | Kind::Trash => msg.deleted_forever = true,
            Kind::Parent => {}
        }
        st.touch(m);
    }
    st.sync(f);
    Ok(out)
}

/// `UID MOVE|COPY set mailbox`: a label added (and the source's taken off for a move).
fn move_to(st: &mut State, f: usize, args: &[Tok], is_move: bool) -> Result<String, String> {
    let set = args.first().ok_or("no set")?.text().to_string();
    let to = st
        .folder(args.get(1).ok_or("no mailbox")?.text())
        .ok_or("[TRYCREATE] no such folder")?;
    let uids = uids_in(st, f, &set);
    let mut out = String::new();
    for &uid in &uids {
        let m = st.folders[f].uids[&uid];
        let from = st.folders[f].kind.clone();
        let msg = &mut st.msgs[m];
        match st.folders[to].kind.clone() {
            Kind::Trash => msg.trashed = true,
            Kind::Inbox => {
                msg.labels.insert("\\Inbox".into());
            }
            Kind::Label(l) => {
                msg.labels.insert(l);
            }
            Kind::All | Kind::Parent => {}
        }
        if is_move {
            match from {
                Kind::Inbox => {
                    msg.labels.remove("\\Inbox");
                }
                Kind::Label(l) => {
                    msg.labels.remove(&l);
                }
                _ => {}
            }
        }
        st.touch(m);
    }
    st.sync(to);
    let src: Vec<String> = uids.iter().map(u32::to_string).collect();
    let dst: Vec<String> = uids
        .iter()
        .filter_map(|u| {
            st.folders[to]
                .uid_of
                .get(&st.folders[f].uids[u])
                .map(u32::to_string)
        })
        .collect();
    out.push_str(&format!(
        "* OK [COPYUID {UIDVALIDITY} {} {}]\r\n",
        src.join(","),
        dst.join(",")
    ));
    if is_move {
        for &uid in uids.iter().rev() {
            out.push_str(&format!("* {} EXPUNGE\r\n", seq_of(st, f, uid)));
        }
        st.sync(f);
    }
    Ok(out)
}

/// `UID SEARCH [RETURN (...)] [CHARSET x] criteria`: ALL, UID set, X-GM-RAW (`has:attachment`
/// and plain words, all of which must be in the message).
fn search(st: &mut State, f: usize, args: &[Tok], tag: &str) -> Result<String, String> {
    let mut i = 0;
    let esearch = args
        .first()
        .is_some_and(|t| t.text().eq_ignore_ascii_case("RETURN"));
    if esearch {
        i = 2;
    }
    if args
        .get(i)
        .is_some_and(|t| t.text().eq_ignore_ascii_case("CHARSET"))
    {
        i += 2;
    }
    let mut found: Vec<u32> = st.folders[f].uids.keys().copied().collect();
    while let Some(key) = args.get(i) {
        match key.text().to_ascii_uppercase().as_str() {
            "ALL" => i += 1,
            "UID" => {
                let set = uids_in(st, f, args.get(i + 1).ok_or("no set")?.text());
                found.retain(|u| set.contains(u));
                i += 2;
            }
            "X-GM-RAW" => {
                let query = args.get(i + 1).ok_or("no query")?.text().to_string();
                found.retain(|u| {
                    let body = String::from_utf8_lossy(&st.msgs[st.folders[f].uids[u]].body)
                        .to_lowercase();
                    query.split(' ').filter(|w| !w.is_empty()).all(|w| match w {
                        "has:attachment" => body.contains("content-disposition: attachment"),
                        w if w.contains(':') => true,
                        w => body.contains(&w.to_lowercase()),
                    })
                });
                i += 2;
            }
            other => return Err(format!("search key {other} not emulated")),
        }
    }
    let list: Vec<String> = found.iter().map(u32::to_string).collect();
    Ok(if esearch {
        if list.is_empty() {
            format!("* ESEARCH (TAG \"{tag}\") UID\r\n")
        } else {
            format!("* ESEARCH (TAG \"{tag}\") UID ALL {}\r\n", list.join(","))
        }
    } else {
        format!("* SEARCH {}\r\n", list.join(" ")).replace("SEARCH \r\n", "SEARCH\r\n")
    })
}
