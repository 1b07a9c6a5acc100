//! The chaos server's reading of commands: a line, its literals (a synchronising one is
//! asked for with `+`), and its tokens.

use std::collections::VecDeque;

use crate::script::Conn;

#[derive(Clone, Debug)]
pub(super) enum Tok {
    Atom(String),
    Str(Vec<u8>),
    List(Vec<Tok>),
}

impl Tok {
    pub(super) fn text(&self) -> String {
        match self {
            Tok::Atom(s) => s.clone(),
            Tok::Str(b) => String::from_utf8_lossy(b).into_owned(),
            Tok::List(_) => String::new(),
        }
    }
    pub(super) fn upper(&self) -> String {
        self.text().to_ascii_uppercase()
    }
    pub(super) fn items(&self) -> Vec<Tok> {
        match self {
            Tok::List(l) => l.clone(),
            other => vec![other.clone()],
        }
    }
}

pub(super) struct Command {
    pub(super) tag: String,
    /// Upper case; `UID FETCH` etc. for UID commands.
    pub(super) verb: String,
    pub(super) args: Vec<Tok>,
    pub(super) line: String,
}

/// The next command, literals included (a synchronising literal is asked for with `+`).
pub(super) fn read_command(c: &mut Conn) -> Option<Command> {
    let mut text = Vec::new();
    let mut literals = VecDeque::new();
    let mut next: Option<Vec<u8>> = None;
    loop {
        let line = match next.take() {
            Some(l) => l,
            None => c.line()?,
        };
        let mut end = line.len();
        while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
            end -= 1;
        }
        let line = &line[..end];
        match literal_suffix(line) {
            Some((start, len, plus)) => {
                text.extend_from_slice(&line[..start]);
                text.push(0);
                if !plus {
                    c.send(b"+ go on\r\n");
                }
                let mut buf = Vec::new();
                while buf.len() < len {
                    buf.extend(c.line()?);
                }
                let rest = buf.split_off(len);
                literals.push_back(buf);
                // The command line goes on after the literal (at least its CRLF).
                next = (!rest.is_empty()).then_some(rest);
            }
            None => {
                text.extend_from_slice(line);
                break;
            }
        }
    }
    let printable = String::from_utf8_lossy(&text).replace('\0', "{literal}");
    let mut pos = 0;
    let mut toks = tokens(&text, &mut pos, &mut literals);
    if toks.len() < 2 {
        return Some(Command {
            tag: toks.first().map_or("*".into(), Tok::text),
            verb: String::new(),
            args: Vec::new(),
            line: printable,
        });
    }
    let tag = toks.remove(0).text();
    let mut verb = toks.remove(0).upper();
    if verb == "UID" && !toks.is_empty() {
        verb = format!("UID {}", toks.remove(0).upper());
    }
    Some(Command {
        tag,
        verb,
        args: toks,
        line: printable,
    })
}

/// `{N}` or `{N+}` at the end of a line: (where it starts, N, non-synchronising).
fn literal_suffix(line: &[u8]) -> Option<(usize, usize, bool)> {
    if line.last() != Some(&b'}') {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'{')?;
    let inner = &line[open + 1..line.len() - 1];
    let (digits, plus) = match inner.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (inner, false),
    };
    let len = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((open, len, plus))
}

fn tokens(text: &[u8], pos: &mut usize, lits: &mut VecDeque<Vec<u8>>) -> Vec<Tok> {
    let mut out = Vec::new();
    while *pos < text.len() {
        match text[*pos] {
            b' ' => *pos += 1,
            b')' => {
                *pos += 1;
                return out;
            }
            b'(' => {
                *pos += 1;
                out.push(Tok::List(tokens(text, pos, lits)));
            }
            0 => {
                *pos += 1;
                out.push(Tok::Str(lits.pop_front().unwrap_or_default()));
            }
            b'"' => {
                *pos += 1;
                let mut s = Vec::new();
                while *pos < text.len() && text[*pos] != b'"' {
                    if text[*pos] == b'\\' && *pos + 1 < text.len() {
                        *pos += 1;
                    }
                    s.push(text[*pos]);
                    *pos += 1;
                }
                *pos += 1;
                out.push(Tok::Str(s));
            }
            _ => {
                let start = *pos;
                let mut depth = 0i32;
                while *pos < text.len() {
                    let b = text[*pos];
                    match b {
                        b'[' => depth += 1,
                        b']' => depth -= 1,
                        b' ' | b'(' | b')' if depth <= 0 => break,
                        _ => {}
                    }
                    *pos += 1;
                }
                out.push(Tok::Atom(
                    String::from_utf8_lossy(&text[start..*pos]).into_owned(),
                ));
            }
        }
    }
    out
}
