//! Commands and their wire form.
//!
//! Every string that may come from a user (mailbox names, flags, search text, credentials) goes
//! through [`AString`], which picks the safest form: an atom when every byte is an ATOM-CHAR, a
//! quoted string when it is short 7-bit text without CR, LF or NUL, else a literal. A NUL can
//! be sent in no form and is refused. So no user input can end a command early or start a
//! second one: the CR/LF injection class is closed here, in one place.
//!
//! A command encodes to [`Encoded`]: chunks separated by synchronising literals. The session
//! sends the first chunk, waits for the server's `+`, sends the next, and so on; with LITERAL+
//! (`{n+}`) everything is one chunk.
//!
//! Arguments with structure are values too, valid once built: [`SearchKey`] criteria with a
//! [`SearchDate`], the [`QResync`] parameters of SELECT/EXAMINE, the [`ListReturn`] options of
//! an extended LIST. Their user text travels through [`AString`] like every other string.

use crate::imap::chars::is_atom_char;
use crate::imap::types::{Flag, MailboxName, ModSeq, SequenceSet, UidValidity};

/// Longest string sent quoted; longer ones go as literals.
const MAX_QUOTED: usize = 1024;

/// Why a command cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The value holds a NUL byte, which no IMAP string form can carry.
    Nul,
    /// The value is not valid for its place (e.g. an empty flag or a bad section).
    Invalid(String),
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::Nul => f.write_str("a NUL byte cannot be sent to an IMAP server"),
            EncodeError::Invalid(s) => write!(f, "invalid value: {s}"),
        }
    }
}

/// A string argument in the form that is safe for its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AString {
    Atom(Vec<u8>),
    Quoted(Vec<u8>),
    Literal(Vec<u8>),
}

impl AString {
    /// Choose the form for `bytes`; fails only for a NUL byte.
    pub fn new(bytes: &[u8]) -> Result<AString, EncodeError> {
        if bytes.contains(&0) {
            return Err(EncodeError::Nul);
        }
        if !bytes.is_empty() && bytes.iter().all(|&b| is_atom_char(b)) && !is_nil(bytes) {
            return Ok(AString::Atom(bytes.to_vec()));
        }
        let quotable = bytes.len() <= MAX_QUOTED
            && bytes
                .iter()
                .all(|&b| (0x01..0x80).contains(&b) && b != b'\r' && b != b'\n');
        if quotable {
            Ok(AString::Quoted(bytes.to_vec()))
        } else {
            Ok(AString::Literal(bytes.to_vec()))
        }
    }

    /// Like [`AString::new`] but never an atom (for places that want a string).
    pub fn string(bytes: &[u8]) -> Result<AString, EncodeError> {
        match AString::new(bytes)? {
            AString::Atom(b) => Ok(AString::Quoted(b)),
            other => Ok(other),
        }
    }
}

fn is_nil(b: &[u8]) -> bool {
    b.eq_ignore_ascii_case(b"NIL")
}

/// A FETCH data item to request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAttr {
    Uid,
    Flags,
    Rfc822Size,
    InternalDate,
    ModSeq,
    Envelope,
    BodyStructure,
    /// `BODY.PEEK[section]<offset.len>`: never sets `\Seen`.
    BodyPeek {
        section: String,
        partial: Option<(u64, u32)>,
    },
    /// `BINARY.PEEK[section]<offset.len>` (RFC 3516): a part with its content transfer
    /// encoding undone by the server; the section is a part number (`2`, `3.1`).
    BinaryPeek {
        section: String,
        partial: Option<(u64, u32)>,
    },
    /// `BINARY.SIZE[section]` (RFC 3516): the decoded size of a part.
    BinarySize(String),
    /// `EMAILID` and `THREADID` (RFC 8474 OBJECTID).
    EmailId,
    ThreadId,
    /// `X-GM-MSGID`, `X-GM-THRID`, `X-GM-LABELS` (Gmail's X-GM-EXT-1).
    GmMsgId,
    GmThrId,
    GmLabels,
}

/// A client command (without its tag).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Command {
    Capability,
    Noop,

    Logout,
    StartTls,
    /// `COMPRESS DEFLATE` (RFC 4978).
    CompressDeflate,
    Login {
        user: Vec<u8>,
        password: Vec<u8>,
    },
    /// `AUTHENTICATE mech [initial-response]`; the initial response is already base64.
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Enable(Vec<String>),
    Id(Vec<(String, String)>),
    Namespace,
    List {
        reference: Vec<u8>,
        pattern: Vec<u8>,
    },
    /// `SELECT` (or `EXAMINE` when `read_only`) with optional CONDSTORE/QRESYNC parameters.
    Select {
        mailbox: MailboxName,
        read_only: bool,
        sync: SelectSync,
    },
    Status {
        mailbox: MailboxName,
        items: Vec<&'static str>,
    },
    Create(MailboxName),
    Delete(MailboxName),
    Subscribe(MailboxName),
    Unsubscribe(MailboxName),
    /// `LSUB reference pattern`: the subscribed mailboxes.
    Lsub {
        reference: Vec<u8>,
        pattern: Vec<u8>,
    },
    Rename {
        from: MailboxName,
        to: MailboxName,
    },
    Fetch {
        uid: bool,
        set: SequenceSet,
        attrs: Vec<FetchAttr>,
        changed_since: Option<ModSeq>,
    },
    Store {
        uid: bool,
        set: SequenceSet,
        /// `+`, `-` or empty (replace).
        mode: StoreMode,
        silent: bool,
        flags: Vec<Flag>,
        unchanged_since: Option<ModSeq>,
    },
    /// `UID STORE set [+|-]X-GM-LABELS[.SILENT] (label ...)` (Gmail). `utf8`: UTF8=ACCEPT is
    /// in force, so user labels go as UTF-8 instead of modified UTF-7.
    StoreLabels {
        set: SequenceSet,
        mode: StoreMode,
        silent: bool,
        labels: Vec<crate::imap::gmail::Label>,
        utf8: bool,
    },
    Copy {
        uid: bool,
        set: SequenceSet,
        mailbox: MailboxName,
    },
    Move {
        uid: bool,
        set: SequenceSet,
        mailbox: MailboxName,
    },
    Expunge,
    UidExpunge(SequenceSet),
    Append {
        mailbox: MailboxName,
        flags: Vec<Flag>,
        date: Option<String>,
        message: Vec<u8>,
    },
    Idle,
    /// `DONE`, the end of IDLE (sent untagged).
    Done,
    GetQuotaRoot(MailboxName),
    Unselect,
    Close,
    /// `LIST reference pattern RETURN (...)` (RFC 5258, RFC 5819 LIST-STATUS).
    ListExtended {
        reference: Vec<u8>,
        pattern: Vec<u8>,
        ret: ListReturn,
    },
    /// `[UID] SEARCH [RETURN (...)] [CHARSET UTF-8] criteria` (RFC 3501, RFC 4731).
    ///
    /// `CHARSET UTF-8` is added when a string argument is not ASCII, unless `utf8` says that
    /// `UTF8=ACCEPT` is enabled (RFC 6855 then forbids a charset). An empty `ret` sends a
    /// plain SEARCH (answered by `* SEARCH`); a non-empty one asks for `* ESEARCH`.
    Search {
        uid: bool,
        criteria: Vec<SearchKey>,
        ret: Vec<SearchReturn>,
        utf8: bool,
    },
    /// `GETQUOTA root` (RFC 9208).
    GetQuota(Vec<u8>),
    /// `NOTIFY SET (filter (events))...` (RFC 5465), or `NOTIFY NONE` when empty.
    Notify(Vec<(NotifyFilter, Vec<NotifyEvent>)>),
}

/// Which mailboxes a NOTIFY group covers (RFC 5465 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFilter {
    Selected,
    /// Every mailbox of the user's personal namespace(s).
    Personal,
    Inboxes,
    Subscribed,
}

/// An event NOTIFY can report (RFC 5465 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyEvent {
    MessageNew,
    MessageExpunge,
    FlagChange,
    MailboxName,
    SubscriptionChange,
}

impl NotifyFilter {
    fn as_str(self) -> &'static str {
        match self {
            NotifyFilter::Selected => "SELECTED",
            NotifyFilter::Personal => "PERSONAL",
            NotifyFilter::Inboxes => "INBOXES",
            NotifyFilter::Subscribed => "SUBSCRIBED",
        }
    }
}

impl NotifyEvent {
    fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::MessageNew => "MessageNew",
            NotifyEvent::MessageExpunge => "MessageExpunge",
            NotifyEvent::FlagChange => "FlagChange",
            NotifyEvent::MailboxName => "MailboxName",
            NotifyEvent::SubscriptionChange => "SubscriptionChange",
        }
    }
}

/// What SELECT/EXAMINE asks the server to report about changes (RFC 7162).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectSync {
    /// No parameter.
    Plain,
    /// `(CONDSTORE)`: report HIGHESTMODSEQ.
    CondStore,
    /// `(QRESYNC (...))`: report what changed since (needs `ENABLE QRESYNC` first).
    QResync(QResync),
}

/// The QRESYNC parameters of SELECT/EXAMINE: what the client remembers of the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QResync {
    pub uidvalidity: UidValidity,
    /// The HIGHESTMODSEQ the client last saw.
    pub modseq: ModSeq,
    /// The UIDs the client knows (lets the server limit VANISHED to them).
    pub known_uids: Option<SequenceSet>,
    /// Message sequence numbers and their UIDs, as a hint (`seq-match-data`); sent only
    /// together with `known_uids`.
    pub seq_match: Option<(SequenceSet, SequenceSet)>,
}

/// The RETURN options of an extended LIST.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListReturn {
    /// `CHILDREN`: \HasChildren / \HasNoChildren attributes.
    pub children: bool,
    /// `SPECIAL-USE` (RFC 6154): \Sent, \Trash, ... attributes.
    pub special_use: bool,
    /// `STATUS (...)` items (LIST-STATUS), e.g. `["MESSAGES", "UIDNEXT"]`; empty for none.
    pub status: Vec<&'static str>,
}

/// A SEARCH criterion (RFC 3501 section 6.4.4, RFC 7162 MODSEQ). Strings from the user travel
/// as [`AString`] (atom, quoted or literal); a keyword must be an atom.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SearchKey {
    All,
    /// `UID set`.
    Uid(SequenceSet),
    /// A message sequence set.
    Seq(SequenceSet),
    /// Internal date on or after the day.
    Since(SearchDate),
    /// Internal date before the day.
    Before(SearchDate),
    /// Internal date on the day.
    On(SearchDate),
    /// Date: header on or after the day.
    SentSince(SearchDate),
    /// Date: header before the day.
    SentBefore(SearchDate),
    /// Date: header on the day.
    SentOn(SearchDate),
    /// `TEXT string`: header or body contains the string.
    Text(Vec<u8>),
    /// `BODY string`: the body contains the string.
    Body(Vec<u8>),
    From(Vec<u8>),
    To(Vec<u8>),
    Cc(Vec<u8>),
    Bcc(Vec<u8>),
    Subject(Vec<u8>),
    /// `HEADER field-name string`.
    Header {
        field: Vec<u8>,
        value: Vec<u8>,
    },
    /// `KEYWORD flag`: the keyword (an atom without backslash) is set.
    Keyword(String),
    /// `UNKEYWORD flag`.
    Unkeyword(String),
    /// RFC822.SIZE larger than n.
    Larger(u64),
    /// RFC822.SIZE smaller than n.
    Smaller(u64),
    /// `MODSEQ n` (CONDSTORE): changed after the mod-sequence.
    ModSeq(ModSeq),
    Answered,
    Unanswered,
    Deleted,
    Undeleted,
    Draft,
    Undraft,
    Flagged,
    Unflagged,
    Seen,
    Unseen,
    New,
    Old,
    Recent,
    Not(Box<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    /// `(key key ...)`: every key holds; never empty.
    And(Vec<SearchKey>),
    /// `X-GM-RAW string` (Gmail): a query in Gmail's own search language, sent as one string.
    GmRaw(Vec<u8>),
}

impl SearchKey {
    /// Whether the criteria hold Gmail's `X-GM-RAW` (then only a server with X-GM-EXT-1 may
    /// be asked).
    pub fn uses_gmail(&self) -> bool {
        match self {
            SearchKey::GmRaw(_) => true,
            SearchKey::Not(k) => k.uses_gmail(),
            SearchKey::Or(a, b) => a.uses_gmail() || b.uses_gmail(),
            SearchKey::And(keys) => keys.iter().any(SearchKey::uses_gmail),
            _ => false,
        }
    }

    /// Whether a string argument holds a non-ASCII byte (then a charset must be named).
    fn has_non_ascii(&self, depth: usize) -> bool {
        if depth > 33 {
            return false; // refused by the encoder anyway
        }
        match self {
            SearchKey::Text(t)
            | SearchKey::Body(t)
            | SearchKey::From(t)
            | SearchKey::To(t)
            | SearchKey::Cc(t)
            | SearchKey::Bcc(t)
            | SearchKey::Subject(t)
            | SearchKey::GmRaw(t) => !t.is_ascii(),
            SearchKey::Header { field, value } => !field.is_ascii() || !value.is_ascii(),
            SearchKey::Not(k) => k.has_non_ascii(depth + 1),
            SearchKey::Or(a, b) => a.has_non_ascii(depth + 1) || b.has_non_ascii(depth + 1),
            SearchKey::And(keys) => keys.iter().any(|k| k.has_non_ascii(depth + 1)),
            _ => false,
        }
    }
}

/// An ESEARCH RETURN option (RFC 4731).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchReturn {
    Min,
    Max,
    All,
    Count,
}

/// A calendar day for SEARCH (`1-Feb-1994`); valid by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SearchDate {
    year: u16,
    month: u8,
    day: u8,
}

impl SearchDate {
    /// A day of the proleptic Gregorian calendar, year 1 to 9999; `None` if no such day.
    pub fn new(year: u16, month: u8, day: u8) -> Option<SearchDate> {
        let leap =
            year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        if !(1..=9999).contains(&year) || day == 0 || day > days {
            return None;
        }
        Some(SearchDate { year, month, day })
    }

    /// The UTC day holding `secs` seconds since the Unix epoch (clamped to years 1..=9999).
    pub fn from_unix(secs: i64) -> SearchDate {
        let (y, m, d) = civil_from_days(secs.div_euclid(86400));
        let y = y.clamp(1, 9999) as u16;
        SearchDate::new(y, m, d).unwrap_or(SearchDate {
            year: y,
            month: 1,
            day: 1,
        })
    }
}

impl std::fmt::Display for SearchDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mon = MONTHS[usize::from(self.month - 1)];
        write!(f, "{}-{mon}-{:04}", self.day, self.year)
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The IMAP `date-time` of APPEND for `secs` seconds since the Unix epoch, in UTC:
/// `" 3-Mar-2020 09:12:00 +0000"` (day padded with a space, as date-day-fixed wants).
pub fn imap_date_time(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let t = secs.rem_euclid(86400);
    let (h, min, s) = (t / 3600, t / 60 % 60, t % 60);
    let mon = MONTHS[usize::from(m - 1)];
    format!(
        "{d:>2}-{mon}-{:04} {h:02}:{min:02}:{s:02} +0000",
        y.clamp(0, 9999)
    )
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z.clamp(-1_000_000_000, 1_000_000_000) + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Add,
    Remove,
    Replace,
}

/// A command's bytes, split where a synchronising literal needs the server's `+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub chunks: Vec<Vec<u8>>,
    /// Whether the bytes hold a secret (never log them).
    pub sensitive: bool,
}

impl Command {
    /// The command's name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Capability => "CAPABILITY",
            Command::Noop => "NOOP",
            Command::Logout => "LOGOUT",
            Command::StartTls => "STARTTLS",
            Command::CompressDeflate => "COMPRESS",
            Command::Login { .. } => "LOGIN",
            Command::Authenticate { .. } => "AUTHENTICATE",
            Command::Enable(_) => "ENABLE",
            Command::Id(_) => "ID",
            Command::Namespace => "NAMESPACE",
            Command::List { .. } => "LIST",
            Command::Select {
                read_only: false, ..
            } => "SELECT",
            Command::Select {
                read_only: true, ..
            } => "EXAMINE",
            Command::Status { .. } => "STATUS",
            Command::Create(_) => "CREATE",
            Command::Delete(_) => "DELETE",
            Command::Subscribe(_) => "SUBSCRIBE",
            Command::Unsubscribe(_) => "UNSUBSCRIBE",
            Command::Lsub { .. } => "LSUB",
            Command::Rename { .. } => "RENAME",
            Command::Fetch { .. } => "FETCH",
            Command::Store { .. } => "STORE",
            Command::StoreLabels { .. } => "UID STORE",
            Command::Copy { .. } => "COPY",
            Command::Move { .. } => "MOVE",
            Command::Expunge => "EXPUNGE",
            Command::UidExpunge(_) => "UID EXPUNGE",
            Command::Append { .. } => "APPEND",
            Command::Idle => "IDLE",
            Command::Done => "DONE",
            Command::GetQuotaRoot(_) => "GETQUOTAROOT",
            Command::Unselect => "UNSELECT",
            Command::Close => "CLOSE",
            Command::ListExtended { .. } => "LIST",
            Command::Search { uid: false, .. } => "SEARCH",
            Command::Search { uid: true, .. } => "UID SEARCH",
            Command::GetQuota(_) => "GETQUOTA",
            Command::Notify(_) => "NOTIFY",
        }
    }

    /// Encode with `tag`. `literal_plus`: the server offers LITERAL+, so literals need no
    /// round trip.
    pub fn encode(&self, tag: &str, literal_plus: bool) -> Result<Encoded, EncodeError> {
        let literals = if literal_plus {
            Literals::Plus
        } else {
            Literals::Sync
        };
        self.encode_with(tag, literals)
    }

    /// Encode with `tag`, sending literals as the server allows ([`Literals`]).
    pub fn encode_with(&self, tag: &str, literals: Literals) -> Result<Encoded, EncodeError> {
        let mut w = Writer {
            chunks: Vec::new(),
            cur: Vec::new(),
            literals,
        };
        if !matches!(self, Command::Done) {
            w.raw(tag.as_bytes());
            w.raw(b" ");
        }
        let mut sensitive = false;
        match self {
            Command::Capability
            | Command::Noop
            | Command::Logout
            | Command::StartTls
            | Command::Namespace
            | Command::Expunge
            | Command::Idle
            | Command::Done
            | Command::Unselect
            | Command::Close => w.raw(self.name().as_bytes()),
            Command::CompressDeflate => w.raw(b"COMPRESS DEFLATE"),
            Command::Login { user, password } => {
                sensitive = true;
                w.raw(b"LOGIN ");
                w.astring(user)?;
                w.raw(b" ");
                w.astring(password)?;
            }
            Command::Authenticate { mechanism, initial } => {
                sensitive = initial.is_some();
                w.raw(b"AUTHENTICATE ");
                w.atom(mechanism)?;
                if let Some(ir) = initial {
                    w.raw(b" ");
                    // An empty initial response is sent as `=` (RFC 4959).
                    w.raw(if ir.is_empty() { b"=" } else { ir.as_bytes() });
                }
            }
            Command::Enable(caps) => {
                w.raw(b"ENABLE");
                for c in caps {
                    w.raw(b" ");
                    w.atom(c)?;
                }
            }
            Command::Id(fields) => {
                w.raw(b"ID ");
                if fields.is_empty() {
                    w.raw(b"NIL");
                } else {
                    w.raw(b"(");
                    for (i, (k, v)) in fields.iter().enumerate() {
                        if i > 0 {
                            w.raw(b" ");
                        }
                        w.string(k.as_bytes())?;
                        w.raw(b" ");
                        w.string(v.as_bytes())?;
                    }
                    w.raw(b")");
                }
            }
            Command::List { reference, pattern } | Command::Lsub { reference, pattern } => {
                w.raw(self.name().as_bytes());
                w.raw(b" ");
                w.string(reference)?;
                w.raw(b" ");
                w.string(pattern)?;
            }
            Command::Status { mailbox, items } => {
                w.raw(b"STATUS ");
                w.mailbox(mailbox)?;
                w.raw(b" ");
                w.atom_list(items)?;
            }
            Command::Select {
                mailbox,
                read_only,
                sync,
            } => {
                w.raw(if *read_only { b"EXAMINE " } else { b"SELECT " });
                w.mailbox(mailbox)?;
                match sync {
                    SelectSync::Plain => {}
                    SelectSync::CondStore => w.raw(b" (CONDSTORE)"),
                    SelectSync::QResync(q) => {
                        w.raw(format!(" (QRESYNC ({} {}", q.uidvalidity, q.modseq.0).as_bytes());
                        if let Some(known) = &q.known_uids {
                            w.raw(b" ");
                            w.set(known)?;
                            if let Some((seqs, uids)) = &q.seq_match {
                                w.raw(b" (");
                                w.set(seqs)?;
                                w.raw(b" ");
                                w.set(uids)?;
                                w.raw(b")");
                            }
                        }
                        w.raw(b"))");
                    }
                }
            }
            Command::ListExtended {
                reference,
                pattern,
                ret,
            } => {
                w.raw(b"LIST ");
                w.string(reference)?;
                w.raw(b" ");
                w.string(pattern)?;
                w.raw(b" RETURN (");
                let mut opts: Vec<&[u8]> = Vec::new();
                if ret.children {
                    opts.push(b"CHILDREN");
                }
                if ret.special_use {
                    opts.push(b"SPECIAL-USE");
                }
                w.raw(&opts.join(&b' '));
                if !ret.status.is_empty() {
                    if !opts.is_empty() {
                        w.raw(b" ");
                    }
                    w.raw(b"STATUS ");
                    w.atom_list(&ret.status)?;
                }
                w.raw(b")");
            }
            Command::Search {
                uid,
                criteria,
                ret,
                utf8,
            } => {
                if criteria.is_empty() {
                    return Err(EncodeError::Invalid("SEARCH without criteria".into()));
                }
                w.raw(if *uid { b"UID SEARCH" } else { b"SEARCH" });
                if !ret.is_empty() {
                    let names: Vec<&'static str> = ret
                        .iter()
                        .map(|r| match r {
                            SearchReturn::Min => "MIN",
                            SearchReturn::Max => "MAX",
                            SearchReturn::All => "ALL",
                            SearchReturn::Count => "COUNT",
                        })
                        .collect();
                    w.raw(b" RETURN ");
                    w.atom_list(&names)?;
                }
                if !*utf8 && criteria.iter().any(|k| k.has_non_ascii(0)) {
                    w.raw(b" CHARSET UTF-8");
                }
                for key in criteria {
                    w.raw(b" ");
                    w.search_key(key, 0)?;
                }
            }
            Command::GetQuota(root) => {
                w.raw(b"GETQUOTA ");
                w.astring(root)?;
            }
            Command::Notify(groups) if groups.is_empty() => w.raw(b"NOTIFY NONE"),
            Command::Notify(groups) => {
                w.raw(b"NOTIFY SET");
                for (filter, events) in groups {
                    w.raw(b" (");
                    w.raw(filter.as_str().as_bytes());
                    w.raw(b" (");
                    for (i, e) in events.iter().enumerate() {
                        if i > 0 {
                            w.raw(b" ");
                        }
                        w.raw(e.as_str().as_bytes());
                    }
                    w.raw(b"))");
                }
            }
            Command::Create(m)
            | Command::Delete(m)
            | Command::Subscribe(m)
            | Command::Unsubscribe(m)
            | Command::GetQuotaRoot(m) => {
                w.raw(self.name().as_bytes());
                w.raw(b" ");
                w.mailbox(m)?;
            }
            Command::Rename { from, to } => {
                w.raw(b"RENAME ");
                w.mailbox(from)?;
                w.raw(b" ");
                w.mailbox(to)?;
            }
            Command::Fetch {
                uid,
                set,
                attrs,
                changed_since,
            } => {
                w.raw(if *uid { b"UID FETCH " } else { b"FETCH " });
                w.set(set)?;
                w.raw(b" (");
                for (i, a) in attrs.iter().enumerate() {
                    if i > 0 {
                        w.raw(b" ");
                    }
                    w.fetch_attr(a)?;
                }
                w.raw(b")");
                if let Some(m) = changed_since {
                    w.raw(format!(" (CHANGEDSINCE {})", m.0).as_bytes());
                }
            }
            Command::Store {
                uid,
                set,
                mode,
                silent,
                flags,
                unchanged_since,
            } => {
                w.raw(if *uid { b"UID STORE " } else { b"STORE " });
                w.set(set)?;
                if let Some(m) = unchanged_since {
                    w.raw(format!(" (UNCHANGEDSINCE {})", m.0).as_bytes());
                }
                w.store_item(*mode, "FLAGS", *silent);
                w.flags(flags)?;
            }
            Command::StoreLabels {
                set,
                mode,
                silent,
                labels,
                utf8,
            } => {
                w.raw(b"UID STORE ");
                w.set(set)?;
                w.store_item(*mode, "X-GM-LABELS", *silent);
                w.raw(b"(");
                for (i, l) in labels.iter().enumerate() {
                    if i > 0 {
                        w.raw(b" ");
                    }
                    // Every label through the one door: atom, quoted string or literal.
                    w.astring(&l.wire(*utf8))?;
                }
                w.raw(b")");
            }
            Command::Copy { uid, set, mailbox } | Command::Move { uid, set, mailbox } => {
                if *uid {
                    w.raw(b"UID ");
                }
                w.raw(self.name().as_bytes());
                w.raw(b" ");
                w.set(set)?;
                w.raw(b" ");
                w.mailbox(mailbox)?;
            }
            Command::UidExpunge(set) => {
                w.raw(b"UID EXPUNGE ");
                w.set(set)?;
            }
            Command::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                w.raw(b"APPEND ");
                w.mailbox(mailbox)?;
                if !flags.is_empty() {
                    w.raw(b" ");
                    w.flags(flags)?;
                }
                if let Some(d) = date {
                    w.raw(b" ");
                    w.string(d.as_bytes())?;
                }
                if message.contains(&0) {
                    return Err(EncodeError::Nul);
                }
                w.raw(b" ");
                w.literal(message);
            }
        }
        w.raw(b"\r\n");
        w.chunks.push(w.cur);
        Ok(Encoded {
            chunks: w.chunks,
            sensitive,
        })
    }
}

/// The start of an APPEND whose message follows as a literal of `len` bytes sent separately
/// (streamed from a file): `TAG APPEND mailbox [(flags)] ["date"] {len[+]}` and CRLF. With
/// `literal_plus` false the caller must wait for the server's `+` before the message.
pub fn append_prefix(
    tag: &str,
    mailbox: &MailboxName,
    flags: &[Flag],
    date: Option<&str>,
    len: u64,
    literal_plus: bool,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer {
        chunks: Vec::new(),
        cur: Vec::new(),
        literals: if literal_plus {
            Literals::Plus
        } else {
            Literals::Sync
        },
    };
    w.raw(tag.as_bytes());
    w.raw(b" APPEND ");
    w.mailbox(mailbox)?;
    if !flags.is_empty() {
        w.raw(b" ");
        w.flags(flags)?;
    }
    if let Some(d) = date {
        w.raw(b" ");
        w.string(d.as_bytes())?;
    }
    if !w.chunks.is_empty() {
        // A mailbox name that needs a synchronising literal of its own: the caller streams
        // one prefix, so refuse rather than send half of it.
        return Err(EncodeError::Invalid(
            "this mailbox name needs a literal the server must acknowledge first".into(),
        ));
    }
    let plus = if literal_plus { "+" } else { "" };
    w.raw(format!(" {{{len}{plus}}}\r\n").as_bytes());
    Ok(w.cur)
}

/// How a command's literals are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literals {
    /// Each after the server's `+` continuation request.
    Sync,
    /// LITERAL+ (RFC 7888): all without waiting (`{n+}`).
    Plus,
    /// LITERAL- (RFC 7888): those of at most [`LITERAL_MINUS_MAX`] bytes without waiting,
    /// larger ones after `+`.
    Minus,
}

/// The largest literal LITERAL- allows without a continuation request.
pub const LITERAL_MINUS_MAX: u64 = 4096;

impl Literals {
    /// Whether a literal of `len` bytes goes without waiting for `+`.
    pub fn non_synchronising(self, len: u64) -> bool {
        match self {
            Literals::Sync => false,
            Literals::Plus => true,
            Literals::Minus => len <= LITERAL_MINUS_MAX,
        }
    }
}

struct Writer {
    chunks: Vec<Vec<u8>>,
    cur: Vec<u8>,
    literals: Literals,
}

impl Writer {
    fn raw(&mut self, b: &[u8]) {
        self.cur.extend_from_slice(b);
    }

    fn atom(&mut self, s: &str) -> Result<(), EncodeError> {
        if s.is_empty() || !s.bytes().all(is_atom_char) {
            return Err(EncodeError::Invalid(format!(
                "`{}` is not an atom",
                s.escape_debug()
            )));
        }
        self.raw(s.as_bytes());
        Ok(())
    }

    fn astring(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let a = AString::new(b)?;
        self.emit(a);
        Ok(())
    }

    fn string(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let a = AString::string(b)?;
        self.emit(a);
        Ok(())
    }

    fn mailbox(&mut self, m: &MailboxName) -> Result<(), EncodeError> {
        self.astring(m.raw())
    }

    fn emit(&mut self, a: AString) {
        match a {
            AString::Atom(b) => self.raw(&b),
            AString::Quoted(b) => {
                self.cur.push(b'"');
                for c in b {
                    if c == b'"' || c == b'\\' {
                        self.cur.push(b'\\');
                    }
                    self.cur.push(c);
                }
                self.cur.push(b'"');
            }
            AString::Literal(b) => self.literal(&b),
        }
    }

    fn literal(&mut self, b: &[u8]) {
        if self.literals.non_synchronising(b.len() as u64) {
            self.raw(format!("{{{}+}}\r\n", b.len()).as_bytes());
        } else {
            self.raw(format!("{{{}}}\r\n", b.len()).as_bytes());
            let chunk = std::mem::take(&mut self.cur);
            self.chunks.push(chunk);
        }
        self.raw(b);
    }

    fn atom_list(&mut self, items: &[&str]) -> Result<(), EncodeError> {
        self.raw(b"(");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.raw(b" ");
            }
            self.atom(item)?;
        }
        self.raw(b")");
        Ok(())
    }

    /// One search key; `depth` bounds NOT/OR nesting so a hand-built chain cannot recurse
    /// without end.
    fn search_key(&mut self, key: &SearchKey, depth: usize) -> Result<(), EncodeError> {
        if depth > 32 {
            return Err(EncodeError::Invalid(
                "search criteria nested too deeply".into(),
            ));
        }
        match key {
            SearchKey::All => self.raw(b"ALL"),
            SearchKey::Uid(set) => {
                self.raw(b"UID ");
                self.set(set)?;
            }
            SearchKey::Seq(set) => self.set(set)?,
            SearchKey::Since(d) => self.raw(format!("SINCE {d}").as_bytes()),
            SearchKey::Before(d) => self.raw(format!("BEFORE {d}").as_bytes()),
            SearchKey::On(d) => self.raw(format!("ON {d}").as_bytes()),
            SearchKey::SentSince(d) => self.raw(format!("SENTSINCE {d}").as_bytes()),
            SearchKey::SentBefore(d) => self.raw(format!("SENTBEFORE {d}").as_bytes()),
            SearchKey::SentOn(d) => self.raw(format!("SENTON {d}").as_bytes()),
            SearchKey::Text(t) => self.string_key(b"TEXT ", t)?,
            SearchKey::Body(t) => self.string_key(b"BODY ", t)?,
            SearchKey::From(t) => self.string_key(b"FROM ", t)?,
            SearchKey::To(t) => self.string_key(b"TO ", t)?,
            SearchKey::Cc(t) => self.string_key(b"CC ", t)?,
            SearchKey::Bcc(t) => self.string_key(b"BCC ", t)?,
            SearchKey::Subject(t) => self.string_key(b"SUBJECT ", t)?,
            SearchKey::GmRaw(t) => self.string_key(b"X-GM-RAW ", t)?,
            SearchKey::Header { field, value } => {
                self.raw(b"HEADER ");
                self.astring(field)?;
                self.raw(b" ");
                self.astring(value)?;
            }
            SearchKey::Keyword(k) | SearchKey::Unkeyword(k) => {
                let name = if matches!(key, SearchKey::Keyword(_)) {
                    "KEYWORD "
                } else {
                    "UNKEYWORD "
                };
                self.raw(name.as_bytes());
                // A keyword is an atom; `\Seen` and friends are searched by their own keys.
                self.atom(k)?;
            }
            SearchKey::Larger(n) => self.raw(format!("LARGER {n}").as_bytes()),
            SearchKey::Smaller(n) => self.raw(format!("SMALLER {n}").as_bytes()),
            SearchKey::ModSeq(m) => self.raw(format!("MODSEQ {}", m.0).as_bytes()),
            SearchKey::Answered => self.raw(b"ANSWERED"),
            SearchKey::Unanswered => self.raw(b"UNANSWERED"),
            SearchKey::Deleted => self.raw(b"DELETED"),
            SearchKey::Undeleted => self.raw(b"UNDELETED"),
            SearchKey::Draft => self.raw(b"DRAFT"),
            SearchKey::Undraft => self.raw(b"UNDRAFT"),
            SearchKey::Flagged => self.raw(b"FLAGGED"),
            SearchKey::Unflagged => self.raw(b"UNFLAGGED"),
            SearchKey::Seen => self.raw(b"SEEN"),
            SearchKey::Unseen => self.raw(b"UNSEEN"),
            SearchKey::New => self.raw(b"NEW"),
            SearchKey::Old => self.raw(b"OLD"),
            SearchKey::Recent => self.raw(b"RECENT"),
            SearchKey::Not(k) => {
                self.raw(b"NOT ");
                self.search_key(k, depth + 1)?;
            }
            SearchKey::Or(a, b) => {
                self.raw(b"OR ");
                self.search_key(a, depth + 1)?;
                self.raw(b" ");
                self.search_key(b, depth + 1)?;
            }
            SearchKey::And(keys) => {
                if keys.is_empty() {
                    return Err(EncodeError::Invalid("empty parenthesised criteria".into()));
                }
                self.raw(b"(");
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        self.raw(b" ");
                    }
                    self.search_key(k, depth + 1)?;
                }
                self.raw(b")");
            }
        }
        Ok(())
    }

    /// `NAME string` for the search keys that take one string.
    fn string_key(&mut self, name: &[u8], value: &[u8]) -> Result<(), EncodeError> {
        self.raw(name);
        self.astring(value)
    }

    fn set(&mut self, s: &SequenceSet) -> Result<(), EncodeError> {
        if s.is_empty() || s.0.iter().any(|&(a, b)| a == 0 || b == 0) {
            return Err(EncodeError::Invalid(
                "empty sequence set or number 0".into(),
            ));
        }
        self.raw(s.to_string().as_bytes());
        Ok(())
    }

    /// ` [+|-]ITEM[.SILENT] ` of a STORE.
    fn store_item(&mut self, mode: StoreMode, item: &str, silent: bool) {
        self.raw(match mode {
            StoreMode::Add => b" +",
            StoreMode::Remove => b" -",
            StoreMode::Replace => b" ",
        });
        self.raw(item.as_bytes());
        if silent {
            self.raw(b".SILENT");
        }
        self.raw(b" ");
    }

    fn flags(&mut self, flags: &[Flag]) -> Result<(), EncodeError> {
        self.raw(b"(");
        for (i, f) in flags.iter().enumerate() {
            if i > 0 {
                self.raw(b" ");
            }
            // A Flag is valid by construction, but a hand-built Keyword must still be an atom.
            let s = f.as_str();
            let body = s.strip_prefix('\\').unwrap_or(s);
            if matches!(f, Flag::MayCreate | Flag::Recent) {
                return Err(EncodeError::Invalid(format!("{s} cannot be stored")));
            }
            if body.is_empty() || !body.bytes().all(is_atom_char) {
                return Err(EncodeError::Invalid(format!(
                    "`{}` is not a flag",
                    s.escape_debug()
                )));
            }
            self.raw(s.as_bytes());
        }
        self.raw(b")");
        Ok(())
    }

    fn fetch_attr(&mut self, a: &FetchAttr) -> Result<(), EncodeError> {
        match a {
            FetchAttr::Uid => self.raw(b"UID"),
            FetchAttr::Flags => self.raw(b"FLAGS"),
            FetchAttr::Rfc822Size => self.raw(b"RFC822.SIZE"),
            FetchAttr::InternalDate => self.raw(b"INTERNALDATE"),
            FetchAttr::ModSeq => self.raw(b"MODSEQ"),
            FetchAttr::Envelope => self.raw(b"ENVELOPE"),
            FetchAttr::BodyStructure => self.raw(b"BODYSTRUCTURE"),
            FetchAttr::BodyPeek { section, partial } => {
                let ok = section
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b" .-()".contains(&b));
                if !ok {
                    return Err(EncodeError::Invalid(format!("section `{section}`")));
                }
                self.raw(format!("BODY.PEEK[{section}]").as_bytes());
                if let Some((off, len)) = partial {
                    self.raw(format!("<{off}.{len}>").as_bytes());
                }
            }
            FetchAttr::BinaryPeek { section, partial } => {
                part_number(section)?;
                self.raw(format!("BINARY.PEEK[{section}]").as_bytes());
                if let Some((off, len)) = partial {
                    self.raw(format!("<{off}.{len}>").as_bytes());
                }
            }
            FetchAttr::BinarySize(section) => {
                part_number(section)?;
                self.raw(format!("BINARY.SIZE[{section}]").as_bytes());
            }
            FetchAttr::EmailId => self.raw(b"EMAILID"),
            FetchAttr::ThreadId => self.raw(b"THREADID"),
            FetchAttr::GmMsgId => self.raw(b"X-GM-MSGID"),
            FetchAttr::GmThrId => self.raw(b"X-GM-THRID"),
            FetchAttr::GmLabels => self.raw(b"X-GM-LABELS"),
        }
        Ok(())
    }
}

/// A BINARY section must be a part number: `1`, `2.3` (no `HEADER`, no empty section).
fn part_number(section: &str) -> Result<(), EncodeError> {
    let ok = !section.is_empty()
        && section
            .split('.')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'));
    if ok {
        Ok(())
    } else {
        Err(EncodeError::Invalid(format!("BINARY section `{section}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(cmd: &Command) -> String {
        let e = cmd.encode("A1", false).unwrap();
        assert_eq!(e.chunks.len(), 1);
        String::from_utf8(e.chunks[0].clone()).unwrap()
    }

    fn mbox(s: &str) -> MailboxName {
        MailboxName::from_utf8(s, false)
    }

    #[test]
    fn notify_set_and_none() {
        let cmd = Command::Notify(vec![(
            NotifyFilter::Personal,
            vec![NotifyEvent::MessageNew, NotifyEvent::MailboxName],
        )]);
        assert_eq!(
            one(&cmd),
            "A1 NOTIFY SET (PERSONAL (MessageNew MailboxName))\r\n"
        );
        assert_eq!(one(&Command::Notify(Vec::new())), "A1 NOTIFY NONE\r\n");
    }

    #[test]
    fn astring_forms() {
        assert_eq!(
            AString::new(b"INBOX").unwrap(),
            AString::Atom(b"INBOX".to_vec())
        );
        assert_eq!(
            AString::new(b"Old Projects").unwrap(),
            AString::Quoted(b"Old Projects".to_vec())
        );
        assert_eq!(AString::new(b"").unwrap(), AString::Quoted(Vec::new()));
        assert_eq!(
            AString::new(b"nil").unwrap(),
            AString::Quoted(b"nil".to_vec())
        );
        assert_eq!(
            AString::new(b"a\r\nb").unwrap(),
            AString::Literal(b"a\r\nb".to_vec())
        );
        assert_eq!(
            AString::new(b"caf\xc3\xa9").unwrap(),
            AString::Literal(b"caf\xc3\xa9".to_vec())
        );
        assert_eq!(AString::new(b"a\0b"), Err(EncodeError::Nul));
    }

    #[test]
    fn examine_and_fetch() {
        assert_eq!(
            one(&Command::Select {
                mailbox: mbox("\u{dc}ber R&D"),
                read_only: true,
                sync: SelectSync::Plain
            }),
            "A1 EXAMINE \"&ANw-ber R&-D\"\r\n"
        );
        let f = Command::Fetch {
            uid: true,
            set: SequenceSet::from_numbers([1, 2, 3, 7]),
            attrs: vec![
                FetchAttr::Uid,
                FetchAttr::BodyPeek {
                    section: String::new(),
                    partial: Some((0, 65536)),
                },
            ],
            changed_since: None,
        };
        assert_eq!(one(&f), "A1 UID FETCH 1:3,7 (UID BODY.PEEK[]<0.65536>)\r\n");
    }

    #[test]
    fn injection_goes_as_literal_with_synchronisation() {
        let evil = "x\r\nA2 DELETE INBOX";
        let c = Command::Create(MailboxName::from_wire(evil.as_bytes().to_vec(), false));
        let e = c.encode("A1", false).unwrap();
        assert_eq!(e.chunks.len(), 2);
        assert_eq!(e.chunks[0], b"A1 CREATE {18}\r\n");
        assert_eq!(e.chunks[1], b"x\r\nA2 DELETE INBOX\r\n");
        let e = c.encode("A1", true).unwrap();
        assert_eq!(
            e.chunks,
            vec![b"A1 CREATE {18+}\r\nx\r\nA2 DELETE INBOX\r\n".to_vec()]
        );
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        let c = Command::Create(MailboxName::from_wire(b"a\"b\\c".to_vec(), false));
        assert_eq!(one(&c), "A1 CREATE \"a\\\"b\\\\c\"\r\n");
    }

    #[test]
    fn login_is_sensitive() {
        let c = Command::Login {
            user: b"me".to_vec(),
            password: b"p w".to_vec(),
        };
        let e = c.encode("A1", false).unwrap();
        assert!(e.sensitive);
        assert_eq!(e.chunks[0], b"A1 LOGIN me \"p w\"\r\n");
    }

    #[test]
    fn bad_flags_and_sections_are_refused() {
        let c = Command::Store {
            uid: true,
            set: SequenceSet::single(1),
            mode: StoreMode::Add,
            silent: true,
            flags: vec![Flag::Keyword("a)b".into())],
            unchanged_since: None,
        };
        assert!(c.encode("A1", false).is_err());
        let f = Command::Fetch {
            uid: true,
            set: SequenceSet::single(1),
            attrs: vec![FetchAttr::BodyPeek {
                section: "]\r\n".into(),
                partial: None,
            }],
            changed_since: None,
        };
        assert!(f.encode("A1", false).is_err());
        for bad in ["", "HEADER", "1.", "0", "1.a", "1]"] {
            let f = Command::Fetch {
                uid: true,
                set: SequenceSet::single(1),
                attrs: vec![FetchAttr::BinarySize(bad.into())],
                changed_since: None,
            };
            assert!(f.encode("A1", false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binary_fetch() {
        let f = Command::Fetch {
            uid: true,
            set: SequenceSet::single(9),
            attrs: vec![
                FetchAttr::BinarySize("2".into()),
                FetchAttr::BinaryPeek {
                    section: "3.1".into(),
                    partial: Some((1024, 512)),
                },
            ],
            changed_since: None,
        };
        assert_eq!(
            one(&f),
            "A1 UID FETCH 9 (BINARY.SIZE[2] BINARY.PEEK[3.1]<1024.512>)\r\n"
        );
    }
}
