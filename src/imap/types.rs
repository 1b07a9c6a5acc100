//! Values of the IMAP protocol, parsed once and valid from then on.
//!
//! The codec turns server bytes into [`Response`] values and [`crate::imap::codec::Command`]
//! values into bytes; everything in between speaks these types. Identifiers that the protocol
//! forbids to be zero ([`Uid`], [`UidValidity`], [`SeqNum`]) are wrapped so that a zero can never
//! travel further than the parser. Strings from the server are kept as raw bytes where the
//! protocol allows 8-bit data (mailbox names, header values), and decoded to UTF-8 only at the
//! edge that needs text.

use std::fmt;
use std::num::NonZeroU32;

use crate::imap::chars::{is_astring_char, is_atom_char};

mod fetch;
pub use fetch::*;

/// A command tag (RFC 3501 `tag`: one or more ASTRING-CHARs other than `+`). The session
/// core numbers the client's own (`A1`, `A2`, ...), and a tag in flight is always one of
/// those; a tag the server sends in a completion is parsed into one, so that comparing the
/// two is comparing tags, never raw text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// A tag as read from the wire, if it is one.
    pub fn parse(bytes: &[u8]) -> Option<Tag> {
        let valid = !bytes.is_empty() && bytes.iter().all(|&b| is_astring_char(b) && b != b'+');
        // Only ASCII passes the check above.
        valid.then(|| Tag(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// The client's `n`th tag.
    pub(crate) fn numbered(n: u32) -> Tag {
        Tag(format!("A{n}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's unique identifier inside one mailbox generation (RFC 3501 section 2.3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uid(NonZeroU32);

impl Uid {
    /// A UID from a number; `None` for zero, which the protocol reserves.
    pub fn new(n: u32) -> Option<Uid> {
        NonZeroU32::new(n).map(Uid)
    }
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The UIDVALIDITY of a mailbox: UIDs are only meaningful together with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UidValidity(NonZeroU32);

impl UidValidity {
    pub fn new(n: u32) -> Option<UidValidity> {
        NonZeroU32::new(n).map(UidValidity)
    }
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for UidValidity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A message sequence number (1-based position in the selected mailbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqNum(NonZeroU32);

impl SeqNum {
    pub fn new(n: u32) -> Option<SeqNum> {
        NonZeroU32::new(n).map(SeqNum)
    }
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

/// A CONDSTORE modification sequence (RFC 7162).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModSeq(pub u64);

/// A message flag or keyword.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Flag {
    Seen,
    Answered,
    Flagged,
    Deleted,
    Draft,
    Recent,
    /// `\*` in PERMANENTFLAGS: new keywords may be created.
    MayCreate,
    /// Another system flag (`\Something`), kept with its backslash.
    Extension(String),
    /// A keyword (no backslash), e.g. `$Forwarded` or `Junk`.
    Keyword(String),
}

impl Flag {
    /// Parse a flag as written on the wire (`\Seen`, `$Junk`, ...). Returns `None` for a string
    /// that is not a valid flag (empty, or containing characters an atom may not hold).
    pub fn parse(s: &str) -> Option<Flag> {
        if let Some(rest) = s.strip_prefix('\\') {
            if rest == "*" {
                return Some(Flag::MayCreate);
            }
            if rest.is_empty() || !rest.bytes().all(is_atom_char) {
                return None;
            }
            return Some(match rest.to_ascii_lowercase().as_str() {
                "seen" => Flag::Seen,
                "answered" => Flag::Answered,
                "flagged" => Flag::Flagged,
                "deleted" => Flag::Deleted,
                "draft" => Flag::Draft,
                "recent" => Flag::Recent,
                _ => Flag::Extension(s.to_string()),
            });
        }
        if s.is_empty() || !s.bytes().all(is_atom_char) {
            return None;
        }
        Some(Flag::Keyword(s.to_string()))
    }

    /// The wire form of the flag.
    pub fn as_str(&self) -> &str {
        match self {
            Flag::Seen => "\\Seen",
            Flag::Answered => "\\Answered",
            Flag::Flagged => "\\Flagged",
            Flag::Deleted => "\\Deleted",
            Flag::Draft => "\\Draft",
            Flag::Recent => "\\Recent",
            Flag::MayCreate => "\\*",
            Flag::Extension(s) | Flag::Keyword(s) => s,
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mailbox name as the server sent it (raw bytes), with its decoded UTF-8 form.
///
/// The raw form is what goes back on the wire, so a name the client cannot decode still
/// round-trips exactly. `INBOX` is case-insensitive and normalised to upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName {
    raw: Vec<u8>,
    decoded: String,
}

impl MailboxName {
    /// A name received from the server. `utf8` says whether UTF8=ACCEPT is in force (names are
    /// then UTF-8 on the wire) or modified UTF-7 applies.
    pub fn from_wire(raw: Vec<u8>, utf8: bool) -> MailboxName {
        let raw = if raw.eq_ignore_ascii_case(b"INBOX") {
            b"INBOX".to_vec()
        } else {
            raw
        };
        let decoded = if utf8 {
            String::from_utf8_lossy(&raw).into_owned()
        } else {
            match crate::imap::mutf7::decode(&raw) {
                Ok(s) => s,
                Err(_) => String::from_utf8_lossy(&raw).into_owned(),
            }
        };
        MailboxName { raw, decoded }
    }

    /// A name the user typed (UTF-8), encoded for the wire.
    pub fn from_utf8(name: &str, utf8: bool) -> MailboxName {
        if name.eq_ignore_ascii_case("INBOX") {
            return MailboxName {
                raw: b"INBOX".to_vec(),
                decoded: "INBOX".into(),
            };
        }
        let raw = if utf8 {
            name.as_bytes().to_vec()
        } else {
            crate::imap::mutf7::encode(name).into_bytes()
        };
        MailboxName {
            raw,
            decoded: name.to_string(),
        }
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
    pub fn as_str(&self) -> &str {
        &self.decoded
    }
}

/// For logs and errors: control characters a server may have put in a name are escaped
/// (the filesystem uses [`MailboxName::as_str`]).
impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::printable::printable(&self.decoded))
    }
}

/// A server response: one complete frame of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// The completion of a command: `A1 OK ...`.
    Tagged(Tagged),
    /// Data or status not tied to a tag: `* ...`.
    Untagged(Untagged),
    /// A continuation request: `+ ...`.
    Continue(ResponseText),
}

/// The completion result of a tagged command.
#[derive(Debug, Clone, PartialEq)]
pub struct Tagged {
    pub tag: Tag,
    pub status: Status,
    pub text: ResponseText,
}

/// Completion and condition states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    PreAuth,
    Bye,
}

/// Human-readable text of a status response with its optional bracketed code.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseText {
    pub code: Option<Code>,
    pub text: String,
}

/// A response code: the bracketed part of a status response (RFC 3501 section 7.1 and extensions).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Code {
    Alert,
    Parse,
    ReadOnly,
    ReadWrite,
    TryCreate,
    Capability(Vec<String>),
    PermanentFlags(Vec<Flag>),
    UidValidity(UidValidity),
    UidNext(Uid),
    Unseen(u32),
    HighestModSeq(ModSeq),
    NoModSeq,
    AppendUid {
        validity: UidValidity,
        uids: SequenceSet,
    },
    CopyUid {
        validity: UidValidity,
        source: SequenceSet,
        dest: SequenceSet,
    },
    Closed,
    OverQuota,
    Nonexistent,
    AlreadyExists,
    NoPerm,
    Cannot,
    Unavailable,
    AuthenticationFailed,
    AuthorizationFailed,
    ExpungeIssued,
    ServerBug,
    Limit,
    InUse,
    Modified(SequenceSet),
    /// The mailbox has children (RFC 9051: refusing DELETE of a mailbox with inferiors).
    HasChildren,
    /// `[BADCHARSET (charsets)]`: the charsets the server would accept.
    BadCharset(Vec<String>),
    /// UIDPLUS: the mailbox does not keep UIDs across sessions.
    UidNotSticky,
    Expired,
    ClientBug,
    Corruption,
    ContactAdmin,
    PrivacyRequired,
    UnknownCte,
    /// A code this client does not know, kept raw: name and the rest inside the brackets.
    Other {
        name: String,
        rest: Option<String>,
    },
}

/// Untagged data and status responses.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Untagged {
    /// `* OK|NO|BAD|PREAUTH|BYE ...`
    Status {
        status: Status,
        text: ResponseText,
    },
    Capability(Vec<String>),
    Enabled(Vec<String>),
    List(ListItem),
    Lsub(ListItem),
    Flags(Vec<Flag>),
    Exists(u32),
    Recent(u32),
    Expunge(SeqNum),
    Fetch {
        seq: SeqNum,
        items: Vec<FetchItem>,
    },
    Search {
        nums: Vec<u32>,
        modseq: Option<ModSeq>,
    },
    ESearch(ESearch),
    StatusData {
        mailbox: MailboxName,
        items: Vec<StatusItem>,
    },
    Vanished {
        earlier: bool,
        uids: SequenceSet,
    },
    Namespace(Namespaces),
    Quota {
        root: Vec<u8>,
        resources: Vec<QuotaResource>,
    },
    QuotaRoot {
        mailbox: MailboxName,
        roots: Vec<Vec<u8>>,
    },
    Id(Vec<(String, Option<String>)>),
    /// A response this client does not understand: its keyword and the raw frame.
    Other {
        keyword: String,
        raw: Vec<u8>,
    },
}

/// One mailbox of a LIST or LSUB reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ListItem {
    pub attributes: Vec<String>,
    pub delimiter: Option<char>,
    pub name: MailboxName,
    /// LIST-EXTENDED data (e.g. CHILDINFO, OLDNAME), kept as tag and raw value.
    pub extended: Vec<(String, Vec<u8>)>,
}

impl ListItem {
    /// Whether the mailbox cannot be selected (`\Noselect` or `\NonExistent`).
    pub fn is_noselect(&self) -> bool {
        self.attributes.iter().any(|a| {
            a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
        })
    }
}

/// A STATUS data item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusItem {
    Messages(u32),
    Recent(u32),
    UidNext(Uid),
    UidValidity(UidValidity),
    Unseen(u32),
    HighestModSeq(ModSeq),
    Size(u64),
    Deleted(u32),
}

/// An ESEARCH response (RFC 4731).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ESearch {
    pub tag: Option<String>,
    pub uid: bool,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub count: Option<u32>,
    pub all: Option<SequenceSet>,
    pub modseq: Option<ModSeq>,
    /// `PARTIAL (range results)`: one page of the matches (RFC 5267's CONTEXT=SEARCH,
    /// RFC 9394's PARTIAL). imapfs does not ask for it (a `.search` listing needs every
    /// match, and each page is a search of its own on the server), but reads it right.
    pub partial: Option<PartialResult>,
    /// Return data this client does not know: upper-cased name and raw value.
    pub other: Vec<(String, Vec<u8>)>,
}

/// ESEARCH's `PARTIAL` return data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartialResult {
    /// The positions among the matches that were asked for, as sent: `1:100` counts from
    /// the first match, `-1:-100` from the last (RFC 9394).
    pub range: (i64, i64),
    /// The matches at those positions (empty for `NIL`: none there).
    pub results: SequenceSet,
}

/// The NAMESPACE response (RFC 2342): personal, other users', shared.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Namespaces {
    pub personal: Vec<(Vec<u8>, Option<char>)>,
    pub other: Vec<(Vec<u8>, Option<char>)>,
    pub shared: Vec<(Vec<u8>, Option<char>)>,
}

/// A QUOTA resource: name, usage, limit.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaResource {
    pub name: String,
    pub usage: u64,
    pub limit: u64,
}

/// A set of sequence numbers or UIDs: ranges, where `u32::MAX` stands for `*`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SequenceSet(pub Vec<(u32, u32)>);

impl SequenceSet {
    /// A set holding one number.
    pub fn single(n: u32) -> SequenceSet {
        SequenceSet(vec![(n, n)])
    }

    /// A set covering `lo` to `*`.
    pub fn from(lo: u32) -> SequenceSet {
        SequenceSet(vec![(lo, u32::MAX)])
    }

    /// Build a compact set from numbers in any order.
    pub fn from_numbers(nums: impl IntoIterator<Item = u32>) -> SequenceSet {
        let mut v: Vec<u32> = nums.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for n in v {
            match ranges.last_mut() {
                Some((_, hi)) if hi.checked_add(1) == Some(n) => *hi = n,
                _ => ranges.push((n, n)),
            }
        }
        SequenceSet(ranges)
    }

    /// Every number of the set, with `*` capped at `max`. Bounded by `limit` numbers.
    pub fn iter_capped(&self, max: u32, limit: usize) -> impl Iterator<Item = u32> + '_ {
        self.0
            .iter()
            .flat_map(move |&(a, b)| {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                lo..=hi.min(max)
            })
            .take(limit)
    }

    /// Whether `n` is in the set.
    pub fn contains(&self, n: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            (lo..=hi).contains(&n)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for SequenceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let show = |n: u32| {
                if n == u32::MAX {
                    "*".to_string()
                } else {
                    n.to_string()
                }
            };
            if a == b {
                f.write_str(&show(a))?;
            } else {
                write!(f, "{}:{}", show(a), show(b))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_what_the_grammar_allows() {
        assert_eq!(Tag::parse(b"A1"), Some(Tag::numbered(1)));
        assert_eq!(
            Tag::parse(b"x.]-_7").map(|t| t.to_string()),
            Some("x.]-_7".into())
        );
        for bad in [
            &b""[..],
            b"A+1",
            b"A 1",
            b"*",
            b"+",
            b"a{1}",
            b"a\"",
            b"a%",
            b"\xc3\xa4",
            b"a\r",
        ] {
            assert_eq!(Tag::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
