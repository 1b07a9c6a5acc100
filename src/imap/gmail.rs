//! Gmail's IMAP extensions (X-GM-EXT-1): labels and the message and thread ids.
//!
//! Gmail shows each label as a folder, and one message in every folder whose label it carries
//! (and in `[Gmail]/All Mail`), with another UID in each but the same `X-GM-MSGID`; its
//! conversation is `X-GM-THRID`. `X-GM-LABELS` lists a message's labels and `STORE
//! X-GM-LABELS` changes them; `X-GM-RAW` in SEARCH passes Gmail's own query language.
//!
//! [`Label`] is a label as the user names it, valid once built: a system label (`\Important`,
//! `\Starred`, `\Inbox`, ...: a backslash and atom characters) or a user label's UTF-8 name
//! (spaces, `/` and any non-ASCII allowed; no control characters). On the wire a user label is
//! an astring in modified UTF-7 (or UTF-8 under UTF8=ACCEPT), exactly as Gmail names the
//! matching folder; the encoder chooses atom, quoted string or literal
//! ([`crate::imap::codec::AString`]).
//!
//! The text form ([`Label::list_text`], [`Label::parse_list`]) is what `user.gmail.labels`
//! shows and takes: labels separated by spaces, a label holding a space, `"` or `\` (other
//! than a system label's leading one) in double quotes with `\"` and `\\` escaped.

use std::fmt;

use crate::imap::chars::is_atom_char;

/// A Gmail label; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// `\Important`, `\Starred`, ...: kept with its backslash.
    System(String),
    /// A user label's name, UTF-8.
    User(String),
}

/// Why a label (or a list of them) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLabel(pub String);

impl fmt::Display for BadLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Label {
    /// A label from its name as a user typed it: `\Atom` is a system label, anything else a
    /// user label. Refuses an empty name, control characters, and a backslash name that is
    /// not `\` + atom characters.
    pub fn new(name: &str) -> Result<Label, BadLabel> {
        if name.is_empty() {
            return Err(BadLabel("an empty label".into()));
        }
        if name.chars().any(char::is_control) {
            return Err(BadLabel("a label with a control character".into()));
        }
        if let Some(rest) = name.strip_prefix('\\') {
            if rest.is_empty() || !rest.bytes().all(is_atom_char) {
                return Err(BadLabel(format!(
                    "{name:?}: a system label is a backslash and letters"
                )));
            }
            return Ok(Label::System(name.to_string()));
        }
        Ok(Label::User(name.to_string()))
    }

    /// A label as the server sent it (the astring's bytes): modified UTF-7 unless `utf8`
    /// (UTF8=ACCEPT in force). A name that does not decode is kept as its bytes read lossily.
    pub fn from_wire(raw: &[u8], utf8: bool) -> Label {
        if raw.first() == Some(&b'\\') {
            return Label::System(String::from_utf8_lossy(raw).into_owned());
        }
        let name = if utf8 {
            String::from_utf8_lossy(raw).into_owned()
        } else {
            crate::imap::mutf7::decode(raw)
                .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned())
        };
        Label::User(name)
    }

    /// The bytes to send (as an astring): a system label as it is, a user label in modified
    /// UTF-7 unless `utf8`.
    pub fn wire(&self, utf8: bool) -> Vec<u8> {
        match self {
            Label::System(s) => s.as_bytes().to_vec(),
            Label::User(s) if utf8 => s.as_bytes().to_vec(),
            Label::User(s) => crate::imap::mutf7::encode(s).into_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Label::System(s) | Label::User(s) => s,
        }
    }

    /// Labels as `user.gmail.labels` shows them (see the module documentation).
    pub fn list_text(labels: &[Label]) -> String {
        labels.iter().map(Label::text).collect::<Vec<_>>().join(" ")
    }

    /// One label in the text form: bare if it needs no quoting.
    fn text(&self) -> String {
        let s = self.as_str();
        let body = match self {
            Label::System(s) => &s[1..],
            Label::User(s) => s.as_str(),
        };
        let plain = !body.is_empty()
            && !body
                .chars()
                .any(|c| c == ' ' || c == '"' || c == '\\' || c.is_control());
        if plain {
            return s.to_string();
        }
        let mut out = String::from("\"");
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }

    /// Parse the text form: labels separated by spaces, quoted where they hold spaces.
    pub fn parse_list(text: &str) -> Result<Vec<Label>, BadLabel> {
        let mut out = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            let Some(&first) = chars.peek() else {
                return Ok(out);
            };
            let mut name = String::new();
            if first == '"' {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err(BadLabel("an unterminated quoted label".into())),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => name.push(c),
                            _ => {
                                return Err(BadLabel(
                                    "in a quoted label only \\\" and \\\\ are escapes".into(),
                                ))
                            }
                        },
                        Some(c) => name.push(c),
                    }
                }
                if chars.peek().is_some_and(|c| *c != ' ') {
                    return Err(BadLabel("a space must follow a quoted label".into()));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    if c == '"' {
                        return Err(BadLabel("a quote inside an unquoted label".into()));
                    }
                    name.push(c);
                    chars.next();
                }
            }
            out.push(Label::new(&name)?);
        }
    }

    /// One label given alone (after `+` or `-`): the whole text is its name, unless it is
    /// quoted.
    pub fn parse_one(text: &str) -> Result<Label, BadLabel> {
        if text.starts_with('"') {
            let mut v = Label::parse_list(text)?;
            if v.len() != 1 {
                return Err(BadLabel("one label after + or -".into()));
            }
            return Ok(v.remove(0));
        }
        Label::new(text)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::printable::printable(self.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let labels = vec![
            Label::new("\\Important").unwrap(),
            Label::new("Work").unwrap(),
            Label::new("My Label").unwrap(),
            Label::new("R\u{e9}unions/\u{e9}t\u{e9}").unwrap(),
            Label::new("say \"hi\" \\o/").unwrap(),
        ];
        let text = Label::list_text(&labels);
        assert_eq!(
            text,
            "\\Important Work \"My Label\" R\u{e9}unions/\u{e9}t\u{e9} \"say \\\"hi\\\" \\\\o/\""
        );
        assert_eq!(Label::parse_list(&text).unwrap(), labels);
    }

    #[test]
    fn bad_labels_are_refused() {
        for bad in ["", "\\", "\\Imp\u{7f}", "a\nb", "\"open", "a\"b", "\"x\"y"] {
            assert!(Label::parse_list(bad).map_or(true, |v| v.is_empty() && bad.is_empty()));
        }
        assert!(Label::parse_one("").is_err());
        assert!(Label::parse_one("a\rb").is_err());
        assert_eq!(
            Label::parse_one("My Label").unwrap(),
            Label::User("My Label".into())
        );
    }

    #[test]
    fn wire_forms() {
        let l = Label::new("R\u{e9}unions").unwrap();
        assert_eq!(l.wire(false), b"R&AOk-unions");
        assert_eq!(Label::from_wire(b"R&AOk-unions", false), l);
        assert_eq!(l.wire(true), "R\u{e9}unions".as_bytes());
        assert_eq!(
            Label::from_wire(b"\\Important", false),
            Label::System("\\Important".into())
        );
    }

    #[test]
    fn fetch_and_store_on_the_wire() {
        use crate::imap::codec::parse::parse_response;
        use crate::imap::codec::{Command, StoreMode};
        use crate::imap::types::{FetchItem, Response, SequenceSet, Untagged};
        let line = b"* 3 FETCH (X-GM-THRID 1278455344230334865 X-GM-MSGID 1278455344230334866 \
                     X-GM-LABELS (\\Important \"My Label\" R&AOk-unions Work) UID 7)\r\n";
        let Response::Untagged(Untagged::Fetch { items, .. }) =
            parse_response(line, 16, false).unwrap()
        else {
            panic!("not a FETCH");
        };
        assert!(items.contains(&FetchItem::GmThrId(1278455344230334865)));
        assert!(items.contains(&FetchItem::GmMsgId(1278455344230334866)));
        let labels: Vec<Label> = ["\\Important", "My Label", "R\u{e9}unions", "Work"]
            .iter()
            .map(|n| Label::new(n).unwrap())
            .collect();
        assert!(items.contains(&FetchItem::GmLabels(labels.clone())));
        let cmd = Command::StoreLabels {
            set: SequenceSet::single(7),
            mode: StoreMode::Add,
            silent: false,
            labels,
            utf8: false,
        };
        let e = cmd.encode("A1", false).unwrap();
        assert_eq!(
            String::from_utf8(e.chunks.concat()).unwrap(),
            "A1 UID STORE 7 +X-GM-LABELS (\"\\\\Important\" \"My Label\" R&AOk-unions Work)\r\n"
        );
        // A label that could end the command goes as a literal, never raw.
        let evil = Command::StoreLabels {
            set: SequenceSet::single(7),
            mode: StoreMode::Replace,
            silent: true,
            labels: vec![Label::User("x) UID EXPUNGE 1:*".into())],
            utf8: true,
        };
        let wire = evil.encode("A2", true).unwrap().chunks.concat();
        assert!(wire.starts_with(b"A2 UID STORE 7 X-GM-LABELS.SILENT (\"x) UID EXPUNGE 1:*\")"));
    }
}
