//! Search criteria typed by a user, parsed into [`SearchKey`] values.
//!
//! The text is a file name under a `.search` directory, so it comes from anyone who can type a
//! path. It is never passed through to the server: [`parse_criteria`] reads it into the
//! search-key grammar of RFC 3501 section 6.4.4 (plus `MODSEQ` of RFC 7162) and the encoder
//! writes the keys back out, every string through [`AString`](super::AString). Whatever the
//! text holds, the command on the wire is one the grammar allows.
//!
//! The syntax is IMAP's own, case-insensitive: `FROM alice SINCE 1-Nov-2026 UNSEEN`,
//! `OR FROM alice FROM bob`, `NOT (SEEN FLAGGED)`, `HEADER List-Id rust`, `UID 1:100`.
//! A string argument is a bare word or a `"quoted string"` (with `\"` and `\\`); a date is
//! `1-Nov-2026` or `2026-11-01`. The short form `key:value` is the same key with its one
//! argument (`from:alice since:2026-11-01 unseen` is `FROM alice SINCE 1-Nov-2026 UNSEEN`).
//!
//! Refused, before anything is sent: control characters anywhere (CR, LF, NUL, ...), an
//! unbalanced quote or parenthesis, `{` and `\` outside quotes (literal syntax has no place in
//! a name), unknown keys, missing or malformed arguments, nesting deeper than
//! [`MAX_DEPTH`].

use crate::imap::chars::is_atom_char;
use crate::imap::codec::encode::{SearchDate, SearchKey};
use crate::imap::types::{ModSeq, SequenceSet};

/// Deepest nesting of `NOT`, `OR` and parentheses accepted (the encoder's bound is 32).
pub const MAX_DEPTH: usize = 24;

/// Why a criteria string is not valid; the text says where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriteriaError(pub String);

impl std::fmt::Display for CriteriaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse criteria text into search keys (all of which must hold). Never empty on success.
pub fn parse_criteria(text: &str) -> Result<Vec<SearchKey>, CriteriaError> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens, pos: 0 };
    let mut keys = Vec::new();
    while p.pos < p.tokens.len() {
        keys.push(p.key(0)?);
    }
    if keys.is_empty() {
        return Err(err("no search criteria"));
    }
    Ok(keys)
}

impl SearchDate {
    /// `1-Nov-2026` (IMAP `date`, month name in any case) or `2026-11-01` (ISO 8601).
    pub fn parse(s: &str) -> Option<SearchDate> {
        let parts: Vec<&str> = s.split('-').collect();
        let [a, b, c] = parts[..] else {
            return None;
        };
        let num = |t: &str, max_len: usize| -> Option<u16> {
            if t.is_empty() || t.len() > max_len || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        if a.len() == 4 {
            let (y, m, d) = (num(a, 4)?, num(b, 2)?, num(c, 2)?);
            return SearchDate::new(y, u8::try_from(m).ok()?, u8::try_from(d).ok()?);
        }
        const MONTHS: [&str; 12] = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let m = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(b))?;
        let (d, y) = (num(a, 2)?, num(c, 4)?);
        if c.len() != 4 {
            return None;
        }
        SearchDate::new(y, m as u8 + 1, u8::try_from(d).ok()?)
    }
}

fn err(s: impl Into<String>) -> CriteriaError {
    CriteriaError(s.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    /// A bare word: a key name or an unquoted argument.
    Word(String),
    /// A quoted string: always an argument.
    Quoted(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, CriteriaError> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(err(format!(
            "control character U+{:04X} in search criteria",
            u32::from(c)
        )));
    }
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut depth = 0usize;
    while let Some(&(i, c)) = chars.peek() {
        match c {
            ' ' => {
                chars.next();
            }
            '(' => {
                chars.next();
                depth += 1;
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| err(format!("unbalanced `)` at byte {i}")))?;
                out.push(Token::Close);
            }
            '"' => {
                chars.next();
                out.push(Token::Quoted(quoted(&mut chars, i)?));
            }
            _ => {
                let mut word = String::new();
                while let Some(&(j, c)) = chars.peek() {
                    if matches!(c, ' ' | '(' | ')' | '"') {
                        break;
                    }
                    if matches!(c, '{' | '}' | '\\') {
                        return Err(err(format!(
                            "`{c}` at byte {j} is allowed only inside a quoted string"
                        )));
                    }
                    word.push(c);
                    chars.next();
                }
                // The short form with a quoted value: `subject:"two words"`.
                let quote = chars
                    .peek()
                    .filter(|&&(_, c)| c == '"' && word.ends_with(':') && word.len() > 1)
                    .map(|&(j, _)| j);
                if let Some(j) = quote {
                    word.pop();
                    chars.next();
                    let value = quoted(&mut chars, j)?;
                    out.push(Token::Word(word));
                    out.push(Token::Quoted(value));
                } else {
                    out.extend(short_form(word));
                }
            }
        }
    }
    if depth > 0 {
        return Err(err("unbalanced `(`: missing `)`"));
    }
    Ok(out)
}

/// The rest of a quoted string whose opening quote was at byte `start`.
fn quoted(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    start: usize,
) -> Result<String, CriteriaError> {
    let mut s = String::new();
    loop {
        match chars.next() {
            None => {
                return Err(err(format!(
                    "unbalanced quote: the string opened at byte {start} never ends"
                )))
            }
            Some((_, '"')) => return Ok(s),
            Some((j, '\\')) => match chars.next() {
                Some((_, c @ ('"' | '\\'))) => s.push(c),
                _ => {
                    return Err(err(format!(
                        "only \\\" and \\\\ may follow `\\` (byte {j})"
                    )))
                }
            },
            Some((_, c)) => s.push(c),
        }
    }
}

/// `key:value` becomes `key`, `value` when `key` takes exactly one argument.
fn short_form(word: String) -> Vec<Token> {
    if let Some((key, value)) = word.split_once(':') {
        if !value.is_empty() && one_argument_key(key) {
            return vec![Token::Word(key.to_string()), Token::Word(value.to_string())];
        }
    }
    vec![Token::Word(word)]
}

fn one_argument_key(key: &str) -> bool {
    const KEYS: &[&str] = &[
        "BCC",
        "BEFORE",
        "BODY",
        "CC",
        "FROM",
        "KEYWORD",
        "LARGER",
        "MODSEQ",
        "ON",
        "SENTBEFORE",
        "SENTON",
        "SENTSINCE",
        "SINCE",
        "SMALLER",
        "SUBJECT",
        "TEXT",
        "TO",
        "UID",
        "UNKEYWORD",
        "X-GM-RAW",
    ];
    KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn key(&mut self, depth: usize) -> Result<SearchKey, CriteriaError> {
        if depth > MAX_DEPTH {
            return Err(err(format!(
                "criteria nested deeper than {MAX_DEPTH} levels"
            )));
        }
        let word = match self.next() {
            None => return Err(err("criteria end where a search key was expected")),
            Some(Token::Open) => {
                let mut keys = Vec::new();
                loop {
                    if self.tokens.get(self.pos) == Some(&Token::Close) {
                        self.pos += 1;
                        break;
                    }
                    keys.push(self.key(depth + 1)?);
                }
                if keys.is_empty() {
                    return Err(err("empty parentheses"));
                }
                return Ok(SearchKey::And(keys));
            }
            Some(Token::Close) => return Err(err("`)` where a search key was expected")),
            Some(Token::Quoted(s)) => {
                return Err(err(format!(
                    "quoted string \"{s}\" where a search key was expected"
                )))
            }
            Some(Token::Word(w)) => w,
        };
        let upper = word.to_ascii_uppercase();
        let key = match upper.as_str() {
            "ALL" => SearchKey::All,
            "ANSWERED" => SearchKey::Answered,
            "UNANSWERED" => SearchKey::Unanswered,
            "DELETED" => SearchKey::Deleted,
            "UNDELETED" => SearchKey::Undeleted,
            "DRAFT" => SearchKey::Draft,
            "UNDRAFT" => SearchKey::Undraft,
            "FLAGGED" => SearchKey::Flagged,
            "UNFLAGGED" => SearchKey::Unflagged,
            "SEEN" => SearchKey::Seen,
            "UNSEEN" => SearchKey::Unseen,
            "NEW" => SearchKey::New,
            "OLD" => SearchKey::Old,
            "RECENT" => SearchKey::Recent,
            "TEXT" => SearchKey::Text(self.string(&upper)?),
            "BODY" => SearchKey::Body(self.string(&upper)?),
            "FROM" => SearchKey::From(self.string(&upper)?),
            "TO" => SearchKey::To(self.string(&upper)?),
            "CC" => SearchKey::Cc(self.string(&upper)?),
            "BCC" => SearchKey::Bcc(self.string(&upper)?),
            "SUBJECT" => SearchKey::Subject(self.string(&upper)?),
            // Gmail's own query language, passed as one string (quoted by the encoder).
            "X-GM-RAW" => SearchKey::GmRaw(self.string(&upper)?),
            "SINCE" => SearchKey::Since(self.date(&upper)?),
            "BEFORE" => SearchKey::Before(self.date(&upper)?),
            "ON" => SearchKey::On(self.date(&upper)?),
            "SENTSINCE" => SearchKey::SentSince(self.date(&upper)?),
            "SENTBEFORE" => SearchKey::SentBefore(self.date(&upper)?),
            "SENTON" => SearchKey::SentOn(self.date(&upper)?),
            "KEYWORD" => SearchKey::Keyword(self.keyword(&upper)?),
            "UNKEYWORD" => SearchKey::Unkeyword(self.keyword(&upper)?),
            "LARGER" => SearchKey::Larger(self.number(&upper)?),
            "SMALLER" => SearchKey::Smaller(self.number(&upper)?),
            "MODSEQ" => SearchKey::ModSeq(ModSeq(self.number(&upper)?)),
            "UID" => {
                let w = self.word(&upper)?;
                SearchKey::Uid(sequence_set(&w).ok_or_else(|| {
                    err(format!(
                        "UID takes a set of UIDs like 1:10,15,20:*, not `{w}`"
                    ))
                })?)
            }
            "HEADER" => {
                let field = self.string(&upper)?;
                let valid = !field.is_empty()
                    && field
                        .iter()
                        .all(|&b| (0x21..0x7f).contains(&b) && b != b':');
                if !valid {
                    return Err(err("HEADER takes a header field name, then a string"));
                }
                let value = self.string("HEADER field")?;
                SearchKey::Header { field, value }
            }
            "NOT" => SearchKey::Not(Box::new(self.key(depth + 1)?)),
            "OR" => {
                let a = self.key(depth + 1)?;
                let b = self.key(depth + 1)?;
                SearchKey::Or(Box::new(a), Box::new(b))
            }
            _ => match sequence_set(&word) {
                Some(set) => SearchKey::Seq(set),
                None => return Err(err(format!("unknown search key `{word}`"))),
            },
        };
        Ok(key)
    }

    /// A string argument: a quoted string or a bare word.
    fn string(&mut self, key: &str) -> Result<Vec<u8>, CriteriaError> {
        match self.next() {
            Some(Token::Quoted(s)) | Some(Token::Word(s)) => Ok(s.into_bytes()),
            _ => Err(err(format!("{key} needs a string argument"))),
        }
    }

    /// An argument that may be quoted but must be one word.
    fn word(&mut self, key: &str) -> Result<String, CriteriaError> {
        match self.next() {
            Some(Token::Quoted(s)) | Some(Token::Word(s)) => Ok(s),
            _ => Err(err(format!("{key} needs an argument"))),
        }
    }

    fn date(&mut self, key: &str) -> Result<SearchDate, CriteriaError> {
        let w = self.word(key)?;
        SearchDate::parse(&w).ok_or_else(|| {
            err(format!(
                "{key} takes a date like 1-Nov-2026 or 2026-11-01, not `{w}`"
            ))
        })
    }

    fn number(&mut self, key: &str) -> Result<u64, CriteriaError> {
        let w = self.word(key)?;
        if w.is_empty() || w.len() > 19 || !w.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(format!("{key} takes a number, not `{w}`")));
        }
        w.parse()
            .map_err(|_| err(format!("{key} takes a number, not `{w}`")))
    }

    fn keyword(&mut self, key: &str) -> Result<String, CriteriaError> {
        let w = self.word(key)?;
        if w.is_empty() || !w.bytes().all(is_atom_char) {
            return Err(err(format!(
                "{key} takes a keyword (an atom such as $Label1, no backslash), not `{w}`"
            )));
        }
        Ok(w)
    }
}

/// `1:10,15,20:*` (numbers from 1, `*` for the largest).
fn sequence_set(s: &str) -> Option<SequenceSet> {
    if s.is_empty() {
        return None;
    }
    let number = |t: &str| -> Option<u32> {
        if t == "*" {
            return Some(u32::MAX);
        }
        if t.is_empty() || t.len() > 10 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok().filter(|&n| n > 0)
    };
    let mut ranges = Vec::new();
    for item in s.split(',') {
        let range = match item.split_once(':') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(item)?;
                (n, n)
            }
        };
        ranges.push(range);
    }
    Some(SequenceSet(ranges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::codec::Command;

    fn wire(text: &str) -> String {
        let criteria = parse_criteria(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let cmd = Command::Search {
            uid: true,
            criteria,
            ret: Vec::new(),
            utf8: false,
        };
        let e = cmd.encode("A1", true).unwrap();
        String::from_utf8(e.chunks.concat()).unwrap()
    }

    #[test]
    fn imap_syntax_round_trips() {
        assert_eq!(
            wire("FROM alice SINCE 1-Nov-2026 UNSEEN"),
            "A1 UID SEARCH FROM alice SINCE 1-Nov-2026 UNSEEN\r\n"
        );
        assert_eq!(
            wire("or from alice not (seen flagged)"),
            "A1 UID SEARCH OR FROM alice NOT (SEEN FLAGGED)\r\n"
        );
        assert_eq!(
            wire("SUBJECT \"two words\" HEADER List-Id rust"),
            "A1 UID SEARCH SUBJECT \"two words\" HEADER List-Id rust\r\n"
        );
        assert_eq!(
            wire("UID 1:10,15,20:* LARGER 100 SMALLER 5000 KEYWORD $Label1"),
            "A1 UID SEARCH UID 1:10,15,20:* LARGER 100 SMALLER 5000 KEYWORD $Label1\r\n"
        );
        assert_eq!(
            wire("ON 2026-02-28 SENTBEFORE 1-jan-2027"),
            "A1 UID SEARCH ON 28-Feb-2026 SENTBEFORE 1-Jan-2027\r\n"
        );
        assert_eq!(wire("1:5"), "A1 UID SEARCH 1:5\r\n");
    }

    #[test]
    fn short_form_maps_one_to_one() {
        assert_eq!(
            wire("from:alice since:2026-11-01 unseen"),
            wire("FROM alice SINCE 1-Nov-2026 UNSEEN")
        );
        assert_eq!(
            wire("subject:\"a b\" uid:3:4"),
            wire("SUBJECT \"a b\" UID 3:4")
        );
        // Not a key: an ordinary word with a colon.
        assert_eq!(wire("TEXT re:hello"), "A1 UID SEARCH TEXT re:hello\r\n");
    }

    #[test]
    fn non_ascii_goes_as_a_literal_with_a_charset() {
        assert_eq!(
            wire("SUBJECT Müller"),
            "A1 UID SEARCH CHARSET UTF-8 SUBJECT {7+}\r\nMüller\r\n"
        );
    }

    #[test]
    fn strings_that_look_like_syntax_stay_strings() {
        assert_eq!(
            wire("SUBJECT \"{5}\" FROM \"a\\\"b\\\\c\""),
            "A1 UID SEARCH SUBJECT \"{5}\" FROM \"a\\\"b\\\\c\"\r\n"
        );
        assert_eq!(wire("TEXT \"\""), "A1 UID SEARCH TEXT \"\"\r\n");
    }

    #[test]
    fn injection_attempts_are_refused() {
        for bad in [
            "FROM a\r\nA2 DELETE INBOX",
            "FROM a\nX",
            "FROM a\0",
            "SUBJECT {5}",
            "SUBJECT {5+}",
            "SUBJECT \"open",
            "SUBJECT a\"",
            "(FROM a",
            "FROM a)",
            "NOT (",
            "SUBJECT a\\b",
            "FROM \"a\\x\"",
            "",
            "   ",
        ] {
            assert!(parse_criteria(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn malformed_criteria_say_why() {
        for (bad, why) in [
            ("FROMX alice", "unknown search key"),
            ("SINCE yesterday", "SINCE takes a date"),
            ("SINCE 31-Feb-2026", "SINCE takes a date"),
            ("LARGER big", "LARGER takes a number"),
            ("KEYWORD \"\\\\Seen\"", "KEYWORD takes a keyword"),
            ("UID 0", "UID takes a set"),
            ("OR FROM a", "criteria end"),
            ("FROM", "FROM needs a string"),
            ("()", "empty parentheses"),
            ("HEADER \"a b\" x", "HEADER takes a header field name"),
        ] {
            let e = parse_criteria(bad).unwrap_err();
            assert!(e.0.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "NOT ".repeat(MAX_DEPTH + 1) + "SEEN";
        assert!(parse_criteria(&deep).is_err());
        let ok = "NOT ".repeat(MAX_DEPTH) + "SEEN";
        assert!(wire(&ok).ends_with("SEEN\r\n"));
        let parens = "(".repeat(200) + "SEEN" + &")".repeat(200);
        assert!(parse_criteria(&parens).is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(
            SearchDate::parse("1-Nov-2026"),
            SearchDate::new(2026, 11, 1)
        );
        assert_eq!(
            SearchDate::parse("01-NOV-2026"),
            SearchDate::new(2026, 11, 1)
        );
        assert_eq!(
            SearchDate::parse("2026-11-01"),
            SearchDate::new(2026, 11, 1)
        );
        assert_eq!(
            SearchDate::parse("2024-02-29"),
            SearchDate::new(2024, 2, 29)
        );
        for bad in [
            "2023-02-29",
            "1-Nov-26",
            "Nov-1-2026",
            "1-Nov-2026-x",
            "+1-Nov-2026",
        ] {
            assert_eq!(SearchDate::parse(bad), None, "{bad}");
        }
    }
}
