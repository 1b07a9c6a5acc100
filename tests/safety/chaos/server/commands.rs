//! What the chaos server does with each command, in its model ([`World`]) and on the wire
//! (see the parent module), and what each connection learns of other connections' changes.

use super::view::*;
use super::*;

fn mailbox_name(t: Option<&Tok>) -> String {
    let name = t.map(Tok::text).unwrap_or_default();
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        name
    }
}

fn canonical_flag(f: &str) -> String {
    SYSTEM_FLAGS
        .iter()
        .find(|s| s.eq_ignore_ascii_case(f))
        .map_or_else(|| f.to_string(), |s| s.to_string())
}

pub(super) fn flag_list(flags: &BTreeSet<String>) -> String {
    flags.iter().cloned().collect::<Vec<_>>().join(" ")
}

pub(super) fn execute(w: &mut World, s: &mut Session, cmd: &Command, fault: Fault) -> Vec<u8> {
    let tag = &cmd.tag;
    let a = &cmd.args;
    let mut out: Vec<u8> = Vec::new();
    let push = |out: &mut Vec<u8>, t: String| out.extend_from_slice(t.as_bytes());
    // Sync points: every command but the sequence-number FETCH, STORE and SEARCH.
    let silent_verbs = matches!(cmd.verb.as_str(), "FETCH" | "STORE" | "SEARCH");
    if !silent_verbs {
        sync(w, s, &mut out);
        if fault == Fault::Noise {
            noise(w, s, &mut out);
        }
    }
    let ok = |t: &str| format!("{tag} OK {t}\r\n");
    let reply = match cmd.verb.as_str() {
        "CAPABILITY" => format!("* CAPABILITY {}\r\n{}", s.caps, ok("done")),
        "ENABLE" => {
            let wanted = a.iter().any(|t| t.upper() == "QRESYNC");
            if s.modseq && wanted {
                s.qresync = true;
                format!("* ENABLED QRESYNC\r\n{}", ok("done"))
            } else {
                ok("done")
            }
        }
        "LOGIN" | "AUTHENTICATE" | "SUBSCRIBE" | "UNSUBSCRIBE" => ok("done"),
        "ID" => format!("* ID NIL\r\n{}", ok("done")),
        "NAMESPACE" => format!("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n{}", ok("done")),
        "NOOP" | "CHECK" => ok("done"),
        "LOGOUT" => format!("* BYE bye\r\n{}", ok("done")),
        "LIST" | "LSUB" => {
            let kind = if cmd.verb == "LIST" { "LIST" } else { "LSUB" };
            let pattern = format!(
                "{}{}",
                a.first().map(Tok::text).unwrap_or_default(),
                a.get(1).map(Tok::text).unwrap_or_default()
            );
            let mut r = String::new();
            if pattern.is_empty() && kind == "LIST" {
                r.push_str("* LIST (\\Noselect) \"/\" \"\"\r\n");
            }
            for name in w.folders.keys() {
                if matches(pattern.as_bytes(), name.as_bytes()) {
                    r.push_str(&format!("* {kind} (\\HasNoChildren) \"/\" \"{name}\"\r\n"));
                }
            }
            r + &ok("done")
        }
        "STATUS" => {
            let name = mailbox_name(a.first());
            match w.folders.get(&name) {
                None => format!("{tag} NO [NONEXISTENT] no such folder\r\n"),
                Some(f) => {
                    let mut items = Vec::new();
                    for item in a.get(1).map(Tok::items).unwrap_or_default() {
                        let v = match item.upper().as_str() {
                            "MESSAGES" => f.msgs.len() as u64,
                            "UIDNEXT" => u64::from(f.uidnext),
                            "UIDVALIDITY" => u64::from(f.uidvalidity),
                            "RECENT" => 0,
                            "UNSEEN" => f
                                .msgs
                                .values()
                                .filter(|m| !m.flags.contains("\\Seen"))
                                .count() as u64,
                            "SIZE" => f.msgs.values().map(|m| m.body.len() as u64).sum(),
                            "HIGHESTMODSEQ" if s.modseq => f.highest,
                            _ => continue,
                        };
                        items.push(format!("{} {v}", item.upper()));
                    }
                    format!(
                        "* STATUS \"{name}\" ({})\r\n{}",
                        items.join(" "),
                        ok("done")
                    )
                }
            }
        }
        "CREATE" => {
            let name = mailbox_name(a.first());
            if w.folders.contains_key(&name) {
                format!("{tag} NO [ALREADYEXISTS] exists\r\n")
            } else if name.is_empty() || name.contains('/') {
                format!("{tag} NO [CANNOT] not here\r\n")
            } else {
                w.create(&name);
                w.note(format!("created {name}"));
                ok("created")
            }
        }
        "DELETE" => {
            let name = mailbox_name(a.first());
            if name == "INBOX" {
                format!("{tag} NO [CANNOT] not INBOX\r\n")
            } else if let Some(f) = w.folders.remove(&name) {
                for m in f.msgs.values() {
                    let t = m.token();
                    if !t.starts_with('V') {
                        w.lost_with_folder.push((name.clone(), t));
                    }
                }
                w.note(format!("deleted {name} with {} messages", f.msgs.len()));
                ok("deleted")
            } else {
                format!("{tag} NO [NONEXISTENT] no such folder\r\n")
            }
        }
        "RENAME" => {
            let (from, to) = (mailbox_name(a.first()), mailbox_name(a.get(1)));
            if from == "INBOX" || to.is_empty() || to.contains('/') {
                format!("{tag} NO [CANNOT] not that\r\n")
            } else if w.folders.contains_key(&to) {
                format!("{tag} NO [ALREADYEXISTS] exists\r\n")
            } else if let Some(f) = w.folders.remove(&from) {
                for (uid, m) in &f.msgs {
                    w.ever.insert((to.clone(), *uid), m.body.clone());
                }
                w.folders.insert(to.clone(), f);
                w.note(format!("renamed {from} to {to}"));
                ok("renamed")
            } else {
                format!("{tag} NO [NONEXISTENT] no such folder\r\n")
            }
        }
        "SELECT" | "EXAMINE" => {
            s.selected = None;
            let name = mailbox_name(a.first());
            match w.folders.get(&name) {
                None => format!("{tag} NO [NONEXISTENT] no such folder\r\n"),
                Some(f) => {
                    let writable = cmd.verb == "SELECT";
                    s.selected = Some(Selected {
                        name: name.clone(),
                        validity: f.uidvalidity,
                        view: f.msgs.keys().copied().collect(),
                        writable,
                    });
                    let perm = if writable {
                        "\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*"
                    } else {
                        ""
                    };
                    let mut extra = String::new();
                    if s.modseq {
                        extra.push_str(&format!("* OK [HIGHESTMODSEQ {}] ok\r\n", f.highest));
                    }
                    if let Some((v, since)) = qresync_param(a.get(1)) {
                        if s.qresync && v == f.uidvalidity {
                            let gone: Vec<String> = f
                                .expunged
                                .iter()
                                .filter(|(_, m)| **m > since)
                                .map(|(u, _)| u.to_string())
                                .collect();
                            if !gone.is_empty() {
                                extra.push_str(&format!(
                                    "* VANISHED (EARLIER) {}\r\n",
                                    gone.join(",")
                                ));
                            }
                            for (i, (u, m)) in f.msgs.iter().enumerate() {
                                if m.modseq > since {
                                    extra.push_str(&format!(
                                        "* {} FETCH (UID {u} FLAGS ({}) MODSEQ ({}))\r\n",
                                        i + 1,
                                        flag_list(&m.flags),
                                        m.modseq
                                    ));
                                }
                            }
                        }
                    }
                    format!(
                        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
                         * OK [PERMANENTFLAGS ({perm})] ok\r\n* {} EXISTS\r\n* 0 RECENT\r\n\
                         * OK [UIDVALIDITY {}] ok\r\n* OK [UIDNEXT {}] ok\r\n{extra}\
                         {tag} OK [{}] done\r\n",
                        f.msgs.len(),
                        f.uidvalidity,
                        f.uidnext,
                        if writable { "READ-WRITE" } else { "READ-ONLY" }
                    )
                }
            }
        }
        "UNSELECT" => {
            s.selected = None;
            ok("done")
        }
        "CLOSE" => {
            if s.selected.as_ref().is_some_and(|x| x.writable) {
                let uids = selected_uids(w, s);
                expunge(w, s, &uids, fault, &mut String::new());
            }
            s.selected = None;
            ok("closed")
        }
        "APPEND" => append(w, tag, a, fault),
        verb => match &s.selected {
            None => format!("{tag} BAD no mailbox selected\r\n"),
            Some(_) => selected_command(w, s, verb, cmd, fault),
        },
    };
    push(&mut out, reply);
    out
}

/// Commands that need a selected folder.
fn selected_command(
    w: &mut World,
    s: &mut Session,
    verb: &str,
    cmd: &Command,
    fault: Fault,
) -> String {
    let tag = &cmd.tag;
    let a = &cmd.args;
    let uid_mode = verb.starts_with("UID ");
    let set = || a.first().map(Tok::text).unwrap_or_default();
    let writable = s.selected.as_ref().is_some_and(|x| x.writable);
    let mut out = String::new();
    match verb {
        "EXPUNGE" | "UID EXPUNGE" => {
            if !writable {
                return format!("{tag} NO [READ-ONLY] examined\r\n");
            }
            if fault == Fault::KeepOk {
                return format!("{tag} OK expunged\r\n");
            }
            let uids = if verb == "EXPUNGE" {
                selected_uids(w, s)
            } else {
                resolve(w, s, &set(), true)
            };
            expunge(w, s, &uids, fault, &mut out);
            out + &format!("{tag} OK expunged\r\n")
        }
        "FETCH" | "UID FETCH" => {
            let mut uids = resolve(w, s, &set(), uid_mode);
            let mut items = a.get(1).map(Tok::items).unwrap_or_default();
            if let Some(since) = modifier(a.get(2), "CHANGEDSINCE") {
                let name = s.folder();
                uids.retain(|u| w.message(&name, *u).is_some_and(|m| m.modseq > since));
                items.push(Tok::Atom("MODSEQ".into()));
            }
            if fault == Fault::Missing {
                return format!("{tag} OK done\r\n");
            }
            let Some(sel) = &s.selected else {
                return format!("{tag} BAD no mailbox selected\r\n");
            };
            let name = sel.name.clone();
            for uid in uids {
                let Some(seq) = seq_of(s, uid) else { continue };
                let Some(m) = w.folders.get_mut(&name).and_then(|f| f.msgs.get_mut(&uid)) else {
                    continue;
                };
                let mut parts: Vec<Vec<u8>> = vec![format!("UID {uid}").into_bytes()];
                if fault != Fault::Partial {
                    for item in &items {
                        if item.upper() == "MODSEQ" {
                            parts.push(format!("MODSEQ ({})", m.modseq).into_bytes());
                        } else if let Some(p) = fetch_item(m, &item.text(), writable) {
                            parts.push(p);
                        }
                    }
                }
                let mut line = format!("* {seq} FETCH (").into_bytes();
                line.extend(parts.join(&b' '));
                line.extend_from_slice(b")\r\n");
                out.push_str(&String::from_utf8_lossy(&line));
                // Literals may hold non-UTF-8 bytes: bodies here are ASCII.
            }
            out + &format!("{tag} OK done\r\n")
        }
        "STORE" | "UID STORE" => {
            if !writable {
                return format!("{tag} NO [READ-ONLY] examined\r\n");
            }
            if fault == Fault::Modified {
                return format!("{tag} OK [MODIFIED {}] nothing changed\r\n", set());
            }
            let uids = resolve(w, s, &set(), uid_mode);
            let mut rest = a.get(1..).unwrap_or_default().to_vec();
            let mut unchanged_since = None;
            if matches!(rest.first(), Some(Tok::List(_))) {
                unchanged_since = modifier(rest.first(), "UNCHANGEDSINCE");
                rest.remove(0);
            }
            let mut modified = Vec::new();
            let item = rest.first().map(Tok::upper).unwrap_or_default();
            let flags: BTreeSet<String> = rest
                .get(1..)
                .unwrap_or_default()
                .iter()
                .flat_map(Tok::items)
                .map(|t| canonical_flag(&t.text()))
                .filter(|f| !f.is_empty())
                .collect();
            let name = s.folder();
            for uid in uids {
                let Some(f) = w.folders.get_mut(&name) else {
                    continue;
                };
                let Some(m) = f.msgs.get_mut(&uid) else {
                    continue;
                };
                if unchanged_since.is_some_and(|u| m.modseq > u) {
                    modified.push(uid.to_string());
                    continue;
                }
                f.highest += 1;
                m.modseq = f.highest;
                if item.starts_with('+') {
                    m.flags.extend(flags.iter().cloned());
                } else if item.starts_with('-') {
                    m.flags.retain(|f| !flags.contains(f));
                } else {
                    m.flags = flags.clone();
                }
                let now = flag_list(&m.flags);
                let token = m.token();
                let modseq = if s.modseq {
                    format!(" MODSEQ ({})", m.modseq)
                } else {
                    String::new()
                };
                if !item.ends_with(".SILENT") || unchanged_since.is_some() {
                    if let Some(seq) = seq_of(s, uid) {
                        out.push_str(&format!(
                            "* {seq} FETCH (UID {uid} FLAGS ({now}){modseq})\r\n"
                        ));
                    }
                }
                w.note(format!("{name}/{uid} {token} flags now ({now})"));
            }
            if modified.is_empty() {
                out + &format!("{tag} OK stored\r\n")
            } else {
                out + &format!(
                    "{tag} OK [MODIFIED {}] changed since\r\n",
                    modified.join(",")
                )
            }
        }
        "COPY" | "UID COPY" | "MOVE" | "UID MOVE" => {
            let moving = verb.ends_with("MOVE");
            if moving && !writable {
                return format!("{tag} NO [READ-ONLY] examined\r\n");
            }
            let target = mailbox_name(a.get(1));
            if fault == Fault::TryCreate || !w.folders.contains_key(&target) {
                return format!("{tag} NO [TRYCREATE] no such folder\r\n");
            }
            let uids = resolve(w, s, &set(), uid_mode);
            let name = s.folder();
            let (mut from, mut to) = (Vec::new(), Vec::new());
            for uid in &uids {
                let Some(m) = w.message(&name, *uid).cloned() else {
                    continue;
                };
                let token = m.token();
                let Some(t) = w.folders.get_mut(&target) else {
                    continue;
                };
                let new = t.uidnext;
                t.uidnext += 1;
                w.ever.insert((target.clone(), new), m.body.clone());
                let Some(t) = w.folders.get_mut(&target) else {
                    continue;
                };
                t.put(new, m);
                from.push(uid.to_string());
                to.push(new.to_string());
                w.note(format!("{verb} {name}/{uid} {token} -> {target}/{new}"));
            }
            let validity = w.folders.get(&target).map_or(0, |f| f.uidvalidity);
            let code = if from.is_empty() {
                String::new()
            } else {
                format!("[COPYUID {validity} {} {}] ", from.join(","), to.join(","))
            };
            if moving {
                if !code.is_empty() {
                    out.push_str(&format!("* OK {code}moved\r\n"));
                }
                let moved: Vec<u32> = from.iter().filter_map(|u| u.parse().ok()).collect();
                let mut gone = String::new();
                if let Some(f) = w.folders.get_mut(&name) {
                    for uid in &moved {
                        f.take(*uid);
                    }
                }
                for uid in moved {
                    gone.push_str(&report_gone(s, uid));
                }
                if fault == Fault::MovedNo {
                    return out
                        + &gone
                        + &format!("{tag} NO [EXPUNGEISSUED] some messages no longer exist\r\n");
                }
                out + &gone + &format!("{tag} OK done\r\n")
            } else {
                out + &format!("{tag} OK {code}done\r\n")
            }
        }
        "SEARCH" | "UID SEARCH" => {
            let name = s.folder();
            let mut hits = selected_uids(w, s);
            let mut i = 0;
            while i < a.len() {
                let key = a[i].upper();
                match key.as_str() {
                    "ALL" => {}
                    "UID" => {
                        let set = a.get(i + 1).map(Tok::text).unwrap_or_default();
                        let within = resolve(w, s, &set, true);
                        hits.retain(|u| within.contains(u));
                        i += 1;
                    }
                    "HEADER" => {
                        let field = a.get(i + 1).map(Tok::text).unwrap_or_default();
                        let value = a.get(i + 2).map(Tok::text).unwrap_or_default();
                        hits.retain(|u| {
                            w.message(&name, *u)
                                .is_some_and(|m| header_has(&m.body, &field, &value))
                        });
                        i += 2;
                    }
                    "CHARSET" => i += 1,
                    _ => return format!("{tag} BAD search key {key} unknown here\r\n"),
                }
                i += 1;
            }
            let nums: Vec<String> = hits
                .iter()
                .filter_map(|u| {
                    if uid_mode {
                        Some(u.to_string())
                    } else {
                        seq_of(s, *u).map(|q| q.to_string())
                    }
                })
                .collect();
            let sep = if nums.is_empty() { "" } else { " " };
            format!("* SEARCH{sep}{}\r\n{tag} OK done\r\n", nums.join(" "))
        }
        _ => format!("{tag} BAD unknown command\r\n"),
    }
}

fn append(w: &mut World, tag: &str, a: &[Tok], fault: Fault) -> String {
    let name = mailbox_name(a.first());
    let Some(Tok::Str(body)) = a.last() else {
        return format!("{tag} BAD no message\r\n");
    };
    if fault == Fault::TryCreate || !w.folders.contains_key(&name) {
        return format!("{tag} NO [TRYCREATE] no such folder\r\n");
    }
    let flags: Vec<String> = match a.get(1) {
        Some(Tok::List(l)) => l.iter().map(|t| canonical_flag(&t.text())).collect(),
        _ => Vec::new(),
    };
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let uid = w.add(&name, body.clone(), &refs);
    let validity = w.folders.get(&name).map_or(0, |f| f.uidvalidity);
    let token = token_of(body).unwrap_or_default();
    w.note(format!(
        "APPEND {name}/{uid} {token} ({} bytes)",
        body.len()
    ));
    format!("{tag} OK [APPENDUID {validity} {uid}] appended\r\n")
}
