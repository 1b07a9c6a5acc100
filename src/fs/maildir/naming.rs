//! Maildir file names: `UIDVALIDITY.UID.imapfs:2,LETTERS`.
//!
//! The unique part names one message of one generation for as long as it exists (flag
//! changes and restarts keep it); the letters after `:2,` are its flags in ASCII order (`D`
//! \Draft, `F` \Flagged, `P` $Forwarded, `R` \Answered, `S` \Seen, `T` \Deleted). A name a
//! client made up (delivery, `mrefile`) has no message in its unique part, only letters.
//! Keywords have no letter: they are never shown in a name, and a rename never changes them.

use crate::imap::types::{Flag, Uid, UidValidity};
use crate::store::FlagEdit;

/// The flags a name's letters stand for, in letter order.
const LETTERS: [(char, &str); 6] = [
    ('D', "\\Draft"),
    ('F', "\\Flagged"),
    ('P', "$Forwarded"),
    ('R', "\\Answered"),
    ('S', "\\Seen"),
    ('T', "\\Deleted"),
];

pub(super) fn letter_of(flag: &Flag) -> Option<char> {
    LETTERS
        .iter()
        .find(|(_, f)| f.eq_ignore_ascii_case(flag.as_str()))
        .map(|(c, _)| *c)
}

fn flag_of(letter: char) -> Option<Flag> {
    LETTERS
        .iter()
        .find(|(c, _)| *c == letter)
        .and_then(|(_, f)| Flag::parse(f))
}

/// A message's Maildir file name.
pub fn message_name(validity: UidValidity, uid: Uid, flags: &[Flag]) -> String {
    let mut letters: Vec<char> = flags.iter().filter_map(letter_of).collect();
    letters.sort_unstable();
    letters.dedup();
    let letters: String = letters.into_iter().collect();
    format!("{validity}.{uid}.imapfs:2,{letters}")
}

/// A Maildir file name taken apart: the message its unique part names (if it is one of
/// ours) and the flags its letters stand for (unknown letters are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    pub message: Option<(UidValidity, Uid)>,
    pub flags: Vec<Flag>,
}

pub fn parse_name(name: &str) -> ParsedName {
    let (unique, info) = match name.split_once(":2,") {
        Some((u, i)) => (u, i),
        None => (name, ""),
    };
    let message = unique
        .strip_suffix(".imapfs")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(v, u)| {
            let number = |s: &str| {
                (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<u32>().ok())
                    .flatten()
            };
            Some((UidValidity::new(number(v)?)?, Uid::new(number(u)?)?))
        });
    let flags = info.chars().filter_map(flag_of).collect();
    ParsedName { message, flags }
}

/// The STORE that gives a message the flags a name's letters say, leaving flags no letter
/// stands for (keywords) alone; `None` if they are the same.
pub(super) fn letter_edit(now: &[Flag], wanted: &[Flag]) -> Option<FlagEdit> {
    let has = |set: &[Flag], f: &Flag| {
        set.iter()
            .any(|g| g.as_str().eq_ignore_ascii_case(f.as_str()))
    };
    let add: Vec<Flag> = wanted.iter().filter(|f| !has(now, f)).cloned().collect();
    let remove: Vec<Flag> = now
        .iter()
        .filter(|f| letter_of(f).is_some() && !has(wanted, f))
        .cloned()
        .collect();
    (!add.is_empty() || !remove.is_empty()).then_some(FlagEdit::Delta { add, remove })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Vec<Flag> {
        list.iter().filter_map(|f| Flag::parse(f)).collect()
    }

    #[test]
    fn names_round_trip_with_sorted_letters() {
        let v = UidValidity::new(1700000000).unwrap();
        let uid = Uid::new(42).unwrap();
        let f = flags(&["\\Seen", "\\Flagged", "$Forwarded", "\\Answered", "Junk"]);
        let name = message_name(v, uid, &f);
        assert_eq!(name, "1700000000.42.imapfs:2,FPRS");
        let parsed = parse_name(&name);
        assert_eq!(parsed.message, Some((v, uid)));
        assert_eq!(parsed.flags.len(), 4);
        assert_eq!(message_name(v, uid, &[]), "1700000000.42.imapfs:2,");
        assert_eq!(parse_name("1700000000.042.imapfs:2,S").message, None);
        assert_eq!(parse_name("123.host:2,S").message, None);
        assert_eq!(
            parse_name("123.host:2,ST").flags,
            flags(&["\\Seen", "\\Deleted"])
        );
    }

    #[test]
    fn a_letter_edit_keeps_keywords() {
        let now = flags(&["\\Seen", "Junk"]);
        let wanted = flags(&["\\Flagged", "\\Seen"]);
        assert_eq!(
            letter_edit(&now, &wanted),
            Some(FlagEdit::Delta {
                add: flags(&["\\Flagged"]),
                remove: vec![]
            })
        );
        assert_eq!(letter_edit(&now, &flags(&["\\Seen"])), None);
    }
}
