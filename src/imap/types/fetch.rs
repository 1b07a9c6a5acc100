//! FETCH data: the items a FETCH response carries (RFC 3501 `msg-att`, RFC 7162 MODSEQ,
//! Gmail's X-GM-*), an ENVELOPE's parts and a BODYSTRUCTURE, and reading the UID and the
//! whole-message bodies out of a response.

use super::{Flag, ModSeq, Uid, Untagged};

/// The UID a FETCH response's items carry, if any (a FETCH without one names no message by
/// UID and cannot be matched to a request).
pub fn fetch_uid(items: &[FetchItem]) -> Option<Uid> {
    items.iter().find_map(|i| match i {
        FetchItem::Uid(u) => Some(*u),
        _ => None,
    })
}

/// A whole-message body item: its origin (`None`: from the start) and its data (`None`: the
/// server answered NIL).
pub type BodyItem = (Option<u64>, Option<Vec<u8>>);

/// The whole-message body items (`BODY[]`, `BODY[]<origin>`) of a FETCH response that
/// names its UID, with the UID. `None` for any other response.
pub fn message_bodies(u: Untagged) -> Option<(Uid, impl Iterator<Item = BodyItem>)> {
    let Untagged::Fetch { items, .. } = u else {
        return None;
    };
    let uid = fetch_uid(&items)?;
    let bodies = items.into_iter().filter_map(|item| match item {
        FetchItem::Body {
            section,
            origin,
            data,
        } if section.is_empty() => Some((origin, data)),
        _ => None,
    });
    Some((uid, bodies))
}

/// A data item of a FETCH response.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FetchItem {
    Uid(Uid),
    Flags(Vec<Flag>),
    Rfc822Size(u64),
    /// INTERNALDATE as seconds since the Unix epoch.
    InternalDate(i64),
    ModSeq(ModSeq),
    /// `BODY[section]<origin>` or `BINARY[section]<origin>`; `data` is `None` for NIL.
    Body {
        section: String,
        origin: Option<u64>,
        data: Option<Vec<u8>>,
    },
    Envelope(Box<Envelope>),
    BodyStructure(Box<BodyStructure>),
    /// `RFC822`, `RFC822.HEADER`, `RFC822.TEXT`: whole-message forms.
    Rfc822 {
        part: String,
        data: Option<Vec<u8>>,
    },
    BinarySize {
        section: String,
        size: u64,
    },
    /// OBJECTID (RFC 8474): the server's id of the message's content, the same in every
    /// mailbox that holds a copy; empty for NIL.
    EmailId(String),
    ThreadId(String),
    /// `X-GM-MSGID` (Gmail): the message's id, the same in every label folder.
    GmMsgId(u64),
    /// `X-GM-THRID` (Gmail): the conversation's id.
    GmThrId(u64),
    /// `X-GM-LABELS` (Gmail): the message's labels.
    GmLabels(Vec<crate::imap::gmail::Label>),
    /// An item this client does not know: its name and raw value.
    Other {
        name: String,
        raw: Vec<u8>,
    },
}

/// The ENVELOPE structure (RFC 3501 section 7.4.2); strings are raw bytes (may be RFC 2047 encoded).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope {
    pub date: Option<Vec<u8>>,
    pub subject: Option<Vec<u8>>,
    pub from: Vec<Address>,
    pub sender: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub bcc: Vec<Address>,
    pub in_reply_to: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
}

/// One address of an ENVELOPE address list (group markers have `host: None`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Address {
    pub name: Option<Vec<u8>>,
    pub adl: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub host: Option<Vec<u8>>,
}

/// BODYSTRUCTURE / BODY (RFC 3501 section 7.4.2), with extension data kept when present.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyStructure {
    Single {
        media_type: String,
        subtype: String,
        params: Vec<(String, String)>,
        id: Option<Vec<u8>>,
        description: Option<Vec<u8>>,
        encoding: String,
        size: u64,
        /// For `text/*`: line count. For `message/rfc822`: also envelope and inner body.
        lines: Option<u64>,
        message: Option<(Box<Envelope>, Box<BodyStructure>)>,
        ext: BodyExtension,
    },
    Multi {
        parts: Vec<BodyStructure>,
        subtype: String,
        params: Vec<(String, String)>,
        ext: BodyExtension,
    },
}

/// Optional extension data of a body part.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BodyExtension {
    pub md5: Option<Vec<u8>>,
    pub disposition: Option<(String, Vec<(String, String)>)>,
    pub language: Vec<String>,
    pub location: Option<Vec<u8>>,
}
