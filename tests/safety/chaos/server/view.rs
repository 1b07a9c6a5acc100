//! The chaos server's per-connection view of its selected folder (sequence numbers, news of
//! other connections' changes, noise about victims) and the FETCH items and matching it
//! answers with.

use super::commands::flag_list;
use super::*;

/// Tell this connection what other connections changed in its folder (EXPUNGE, EXISTS).
pub(super) fn sync(w: &World, s: &mut Session, out: &mut Vec<u8>) {
    let Some(sel) = s.selected.as_mut() else {
        return;
    };
    let Some(f) = w.folders.get(&sel.name) else {
        return;
    };
    let mut i = 0;
    let mut vanished = Vec::new();
    while i < sel.view.len() {
        if f.msgs.contains_key(&sel.view[i]) {
            i += 1;
        } else if s.qresync {
            vanished.push(sel.view.remove(i).to_string());
        } else {
            out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
            sel.view.remove(i);
        }
    }
    if !vanished.is_empty() {
        out.extend_from_slice(format!("* VANISHED {}\r\n", vanished.join(",")).as_bytes());
    }
    let last = sel.view.last().copied().unwrap_or(0);
    let before = sel.view.len();
    sel.view.extend(f.msgs.keys().filter(|u| **u > last));
    if sel.view.len() != before {
        out.extend_from_slice(format!("* {} EXISTS\r\n", sel.view.len()).as_bytes());
    }
}

/// Untagged news of victims in the selected folder: one expunged, one delivered or one
/// re-flagged, really done in the model.
pub(super) fn noise(w: &mut World, s: &mut Session, out: &mut Vec<u8>) {
    let Some(name) = s.selected.as_ref().map(|x| x.name.clone()) else {
        return;
    };
    let victims: Vec<u32> = w
        .folders
        .get(&name)
        .map(|f| {
            f.msgs
                .iter()
                .filter(|(_, m)| m.token().starts_with('V'))
                .map(|(u, _)| *u)
                .collect()
        })
        .unwrap_or_default();
    let pick = (!victims.is_empty()).then(|| victims[s.rng.below(victims.len() as u64) as usize]);
    match (s.rng.below(3), pick) {
        (0, Some(uid)) => {
            if let Some(f) = w.folders.get_mut(&name) {
                f.take(uid);
            }
            out.extend_from_slice(report_gone(s, uid).as_bytes());
            w.note(format!("noise: expunged victim {name}/{uid}"));
        }
        (1, Some(uid)) => {
            let flag = ["\\Seen", "\\Flagged", "$Chaos"][s.rng.below(3) as usize];
            let now = w.folders.get_mut(&name).and_then(|f| {
                let m = f.msgs.get_mut(&uid)?;
                if !m.flags.remove(flag) {
                    m.flags.insert(flag.to_string());
                }
                f.highest += 1;
                m.modseq = f.highest;
                Some(flag_list(&m.flags))
            });
            if let (Some(now), Some(seq)) = (now, seq_of(s, uid)) {
                out.extend_from_slice(format!("* {seq} FETCH (FLAGS ({now}))\r\n").as_bytes());
            }
        }
        _ => {
            let body = w.victim();
            let uid = w.add(&name, body, &[]);
            w.note(format!("noise: delivered victim {name}/{uid}"));
            sync(w, s, out);
        }
    }
}

pub(super) fn expunge(
    w: &mut World,
    s: &mut Session,
    uids: &[u32],
    _fault: Fault,
    out: &mut String,
) {
    let name = s.folder();
    for uid in uids {
        let deleted = w
            .message(&name, *uid)
            .is_some_and(|m| m.flags.contains("\\Deleted"));
        if !deleted {
            continue;
        }
        let token = w.message(&name, *uid).map(Msg::token).unwrap_or_default();
        if let Some(f) = w.folders.get_mut(&name) {
            f.take(*uid);
        }
        out.push_str(&report_gone(s, *uid));
        w.note(format!("expunged {name}/{uid} {token}"));
    }
}

/// The report of `uid`'s expunge to this connection (`* n EXPUNGE`, or `* VANISHED uid` once
/// QRESYNC is enabled), taking it out of the connection's view.
pub(super) fn report_gone(s: &mut Session, uid: u32) -> String {
    let Some(seq) = seq_of(s, uid) else {
        return String::new();
    };
    if let Some(sel) = s.selected.as_mut() {
        sel.view.remove(seq - 1);
    }
    if s.qresync {
        format!("* VANISHED {uid}\r\n")
    } else {
        format!("* {seq} EXPUNGE\r\n")
    }
}

/// `(NAME n)` (a FETCH or STORE modifier): n.
pub(super) fn modifier(t: Option<&Tok>, name: &str) -> Option<u64> {
    let items = match t? {
        Tok::List(l) => l.clone(),
        _ => return None,
    };
    let i = items.iter().position(|x| x.upper() == name)?;
    items.get(i + 1)?.text().parse().ok()
}

/// `(QRESYNC (uidvalidity modseq ...))` of a SELECT: (uidvalidity, modseq).
pub(super) fn qresync_param(t: Option<&Tok>) -> Option<(u32, u64)> {
    let items = match t? {
        Tok::List(l) => l.clone(),
        _ => return None,
    };
    let i = items.iter().position(|x| x.upper() == "QRESYNC")?;
    let Tok::List(p) = items.get(i + 1)? else {
        return None;
    };
    Some((
        p.first()?.text().parse().ok()?,
        p.get(1)?.text().parse().ok()?,
    ))
}

pub(super) fn seq_of(s: &Session, uid: u32) -> Option<usize> {
    s.selected
        .as_ref()?
        .view
        .iter()
        .position(|u| *u == uid)
        .map(|p| p + 1)
}

pub(super) fn selected_uids(w: &World, s: &Session) -> Vec<u32> {
    let Some(sel) = &s.selected else {
        return Vec::new();
    };
    let Some(f) = w.folders.get(&sel.name) else {
        return Vec::new();
    };
    sel.view
        .iter()
        .copied()
        .filter(|u| f.msgs.contains_key(u))
        .collect()
}

/// The UIDs a set names (UIDs or sequence numbers) among the folder's messages in view.
pub(super) fn resolve(w: &World, s: &Session, set: &str, uid_mode: bool) -> Vec<u32> {
    let known = selected_uids(w, s);
    let Some(sel) = &s.selected else {
        return Vec::new();
    };
    let top = if uid_mode {
        known.last().copied().unwrap_or(0)
    } else {
        sel.view.len() as u32
    };
    let num = |x: &str| -> Option<u32> {
        if x == "*" {
            Some(top)
        } else {
            x.parse().ok()
        }
    };
    let ranges: Vec<(u32, u32)> = set
        .split(',')
        .filter_map(|part| match part.split_once(':') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                Some((a.min(b), a.max(b)))
            }
            None => num(part).map(|n| (n, n)),
        })
        .collect();
    let inside = |n: u32| ranges.iter().any(|&(a, b)| (a..=b).contains(&n));
    if uid_mode {
        known.into_iter().filter(|u| inside(*u)).collect()
    } else {
        sel.view
            .iter()
            .enumerate()
            .filter(|(i, u)| inside(*i as u32 + 1) && known.contains(u))
            .map(|(_, u)| *u)
            .collect()
    }
}

/// One FETCH item's data (`NAME value`), or `None` for an item this server does not know.
pub(super) fn fetch_item(m: &mut Msg, item: &str, writable: bool) -> Option<Vec<u8>> {
    let upper = item.to_ascii_uppercase();
    let body = m.body.clone();
    let split = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len(), |p| p + 4);
    let literal = |key: String, data: &[u8]| {
        let mut v = format!("{key} {{{}}}\r\n", data.len()).into_bytes();
        v.extend_from_slice(data);
        v
    };
    match upper.as_str() {
        "UID" => None, // always sent first
        "FLAGS" => Some(format!("FLAGS ({})", flag_list(&m.flags)).into_bytes()),
        "RFC822.SIZE" => Some(format!("RFC822.SIZE {}", body.len()).into_bytes()),
        "INTERNALDATE" => Some(b"INTERNALDATE \"05-Mar-2024 09:12:00 +0000\"".to_vec()),
        "ENVELOPE" => Some(b"ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)".to_vec()),
        "BODYSTRUCTURE" | "BODY" => Some(
            format!(
                "{upper} (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" {} {})",
                body.len() - split,
                body[split..].iter().filter(|b| **b == b'\n').count()
            )
            .into_bytes(),
        ),
        "RFC822" | "RFC822.HEADER" | "RFC822.TEXT" => {
            if upper == "RFC822" && writable {
                m.flags.insert("\\Seen".into());
            }
            let data = match upper.as_str() {
                "RFC822" => &body[..],
                "RFC822.HEADER" => &body[..split],
                _ => &body[split..],
            };
            Some(literal(upper.clone(), data))
        }
        _ => {
            let (peek, rest) = if let Some(r) = upper.strip_prefix("BODY.PEEK[") {
                (true, r)
            } else if let Some(r) = upper.strip_prefix("BODY[") {
                (false, r)
            } else if let Some(r) = upper.strip_prefix("BINARY.PEEK[") {
                (true, r)
            } else {
                return None;
            };
            let close = rest.rfind(']')?;
            let section = &rest[..close];
            let partial = &rest[close + 1..];
            if !peek && writable {
                m.flags.insert("\\Seen".into());
            }
            let data: Vec<u8> = match section {
                "" => body.clone(),
                "HEADER" => body[..split].to_vec(),
                "TEXT" | "1" => body[split..].to_vec(),
                s if s.starts_with("HEADER.FIELDS") => {
                    let not = s.starts_with("HEADER.FIELDS.NOT");
                    let names: Vec<String> = s
                        .split_once('(')
                        .map(|(_, l)| l.trim_end_matches(')'))
                        .unwrap_or("")
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    header_fields(&body[..split], &names, not)
                }
                _ => Vec::new(),
            };
            let kind = if upper.starts_with("BINARY") {
                "BINARY"
            } else {
                "BODY"
            };
            let (origin, data) = match partial
                .strip_prefix('<')
                .and_then(|p| p.strip_suffix('>'))
                .and_then(|p| p.split_once('.'))
                .and_then(|(o, l)| Some((o.parse::<usize>().ok()?, l.parse::<usize>().ok()?)))
            {
                Some((o, l)) => {
                    let start = o.min(data.len());
                    let end = o.saturating_add(l).min(data.len());
                    (format!("<{o}>"), data[start..end].to_vec())
                }
                None => (String::new(), data),
            };
            Some(literal(format!("{kind}[{section}]{origin}"), &data))
        }
    }
}

pub(super) fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(header);
    let mut out = String::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        let name = line.split(':').next().unwrap_or("").to_ascii_uppercase();
        if names.iter().any(|n| n == &name) != not {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

pub(super) fn header_has(body: &[u8], field: &str, value: &str) -> bool {
    let text = String::from_utf8_lossy(body);
    text.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\r\n")
        .any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                n.eq_ignore_ascii_case(field)
                    && v.to_ascii_lowercase().contains(&value.to_ascii_lowercase())
            })
        })
}

/// IMAP LIST wildcards: `*` anything, `%` anything but the delimiter.
pub(super) fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| matches(rest, &name[i..])),
        Some((b'%', rest)) => (0..=name.len())
            .take_while(|i| *i == 0 || name[i - 1] != b'/')
            .any(|i| matches(rest, &name[i..])),
        Some((c, rest)) => name
            .split_first()
            .is_some_and(|(n, tail)| n.eq_ignore_ascii_case(c) && matches(rest, tail)),
    }
}
