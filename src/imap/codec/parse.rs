//! Recursive-descent parser for one complete response frame.
//!
//! The decoder hands over a frame that is known to be complete (every literal present), so the
//! parser never waits for input: running out of bytes is a malformed response. It is tolerant
//! where real servers are sloppy (doubled or missing spaces, missing response text, NIL for a
//! string, items in any order, 8-bit bytes in quoted strings and text, atom-specials in flags,
//! multiparts without parts) and strict where sloppiness would be dangerous (literal lengths,
//! numbers out of range, nesting depth).
//!
//! What it does not know it keeps: an unknown untagged response becomes [`Untagged::Other`] with
//! the raw frame, an unknown FETCH item [`FetchItem::Other`] with its raw value, an unknown or
//! unparsable response code [`Code::Other`]. A response it does know but cannot parse is an
//! error (a truncated FETCH must be reported, never silently skipped).
//!
//! Every recursive production (parenthesised values, BODYSTRUCTURE, ENVELOPE) goes through
//! [`Parser::enter`], so nesting is bounded by `max_depth` and a hostile frame cannot exhaust
//! the stack.

use crate::imap::chars::{is_astring_char, is_atom_char};
use crate::imap::codec::DecodeError;
use crate::imap::gmail::Label;
use crate::imap::types::*;

/// Parse one frame (ending in CRLF or LF) into a [`Response`].
pub fn parse_response(frame: &[u8], max_depth: usize, utf8: bool) -> Result<Response, DecodeError> {
    let mut p = Parser {
        buf: frame,
        pos: 0,
        depth: 0,
        max_depth,
        utf8,
    };
    p.response().map_err(|reason| DecodeError::Malformed {
        reason,
        excerpt: excerpt(frame),
    })
}

/// A short printable excerpt of a frame for error messages and logs.
pub fn excerpt(frame: &[u8]) -> String {
    let mut s: String = frame
        .iter()
        .take(120)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    if frame.len() > 120 {
        s.push_str("...");
    }
    s
}

type PResult<T> = Result<T, String>;

/// Body parameters: attribute and value pairs.
type Params = Vec<(String, String)>;

pub(crate) struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
    utf8: bool,
}

impl<'a> Parser<'a> {
    fn response(&mut self) -> PResult<Response> {
        if self.eat(b'+') {
            self.skip_sp();
            let text = self.resp_text()?;
            return Ok(Response::Continue(text));
        }
        if self.eat(b'*') {
            self.sp()?;
            let u = self.untagged()?;
            return Ok(Response::Untagged(u));
        }
        let tag = self.take_while(|b| is_astring_char(b) && b != b'+');
        let tag = Tag::parse(tag).ok_or("expected a tag, `*` or `+`")?;
        self.sp()?;
        let word = self.atom()?;
        let status = status_word(&word).ok_or_else(|| format!("unknown status `{word}`"))?;
        let text = self.resp_text_after_status()?;
        Ok(Response::Tagged(Tagged { tag, status, text }))
    }

    fn untagged(&mut self) -> PResult<Untagged> {
        if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            let n = self.number()?;
            self.sp()?;
            let word = self.atom()?.to_ascii_uppercase();
            return match word.as_str() {
                "EXISTS" => self.end().map(|()| Untagged::Exists(n)),
                "RECENT" => self.end().map(|()| Untagged::Recent(n)),
                "EXPUNGE" => {
                    let seq = SeqNum::new(n).ok_or("EXPUNGE of message 0")?;
                    self.end().map(|()| Untagged::Expunge(seq))
                }
                "FETCH" => {
                    let seq = SeqNum::new(n).ok_or("FETCH of message 0")?;
                    self.skip_sp();
                    let items = self.fetch_items().map_err(|e| format!("FETCH: {e}"))?;
                    self.end()?;
                    Ok(Untagged::Fetch { seq, items })
                }
                _ => Ok(self.other(word)),
            };
        }
        let word = self.atom()?.to_ascii_uppercase();
        if let Some(status) = status_word(&word) {
            let text = self.resp_text_after_status()?;
            return Ok(Untagged::Status { status, text });
        }
        let parsed = match word.as_str() {
            "CAPABILITY" => self.atoms_to_end().map(Untagged::Capability),
            "ENABLED" => self.atoms_to_end().map(Untagged::Enabled),
            "LIST" => self.list_item().map(Untagged::List),
            "LSUB" => self.list_item().map(Untagged::Lsub),
            "FLAGS" => self.flags_data(),
            "SEARCH" | "SORT" => self.search(),
            "ESEARCH" => self.esearch().map(Untagged::ESearch),
            "VANISHED" => self.vanished(),
            "STATUS" => self.status_data(),
            "NAMESPACE" => self.namespace(),
            "QUOTA" => self.quota(),
            "QUOTAROOT" => self.quota_root(),
            "ID" => self.id(),
            _ => return Ok(self.other(word)),
        };
        parsed.map_err(|e| format!("{word}: {e}"))
    }

    fn other(&mut self, keyword: String) -> Untagged {
        Untagged::Other {
            keyword,
            raw: self.buf.to_vec(),
        }
    }

    fn flags_data(&mut self) -> PResult<Untagged> {
        self.skip_sp();
        let f = self.flag_list()?;
        self.end()?;
        Ok(Untagged::Flags(f))
    }

    fn search(&mut self) -> PResult<Untagged> {
        let mut nums = Vec::new();
        let mut modseq = None;
        loop {
            self.skip_sp();
            if self.at_eol() {
                break;
            }
            if self.eat(b'(') {
                self.skip_sp();
                let w = self.atom()?;
                if !w.eq_ignore_ascii_case("MODSEQ") {
                    return Err("unexpected item in SEARCH".into());
                }
                self.sp()?;
                modseq = Some(ModSeq(self.number64()?));
                self.skip_sp();
                self.expect(b')')?;
                continue;
            }
            nums.push(self.number()?);
        }
        self.end()?;
        Ok(Untagged::Search { nums, modseq })
    }

    /// `ESEARCH [(TAG "t")] [UID] *(name value)` (RFC 4731); unknown return data kept raw.
    fn esearch(&mut self) -> PResult<ESearch> {
        let mut es = ESearch::default();
        self.skip_sp();
        if self.eat(b'(') {
            // search-correlator: TAG, and MAILBOX/UIDVALIDITY from MULTISEARCH.
            self.list_rest(|p| {
                let key = p.atom()?;
                p.sp()?;
                if key.eq_ignore_ascii_case("TAG") {
                    es.tag = Some(String::from_utf8_lossy(&p.astring()?).into_owned());
                    Ok(())
                } else {
                    p.skip_value()
                }
            })?;
        }
        loop {
            self.skip_sp();
            if self.at_eol() {
                break;
            }
            let name = self.atom()?.to_ascii_uppercase();
            if name == "UID" {
                es.uid = true;
                continue;
            }
            self.sp()?;
            match name.as_str() {
                "MIN" => es.min = Some(self.number()?),
                "MAX" => es.max = Some(self.number()?),
                "COUNT" => es.count = Some(self.number()?),
                "ALL" => es.all = Some(self.sequence_set()?),
                "MODSEQ" => es.modseq = Some(ModSeq(self.number64()?)),
                "PARTIAL" => es.partial = Some(self.partial_result()?),
                _ => {
                    let start = self.pos;
                    self.skip_value()?;
                    es.other.push((name, self.buf[start..self.pos].to_vec()));
                }
            }
        }
        self.end()?;
        Ok(es)
    }

    /// `"(" partial-range SP (sequence-set / "NIL") ")"` (RFC 9394 section 4, RFC 5267
    /// section 4.4): a range of positions (`first:last`, negative counting from the end),
    /// then the matches there.
    fn partial_result(&mut self) -> PResult<PartialResult> {
        self.expect(b'(')?;
        let first = self.partial_position()?;
        self.expect(b':')?;
        let last = self.partial_position()?;
        if (first < 0) != (last < 0) {
            return Err("PARTIAL range mixes ends".into());
        }
        self.sp()?;
        let results = if self.eat_word("NIL") {
            SequenceSet::default()
        } else {
            self.sequence_set()?
        };
        self.expect(b')')?;
        Ok(PartialResult {
            range: (first, last),
            results,
        })
    }

    /// A position of a PARTIAL range: a non-zero number, negative from the end.
    fn partial_position(&mut self) -> PResult<i64> {
        let negative = self.eat(b'-');
        let n = i64::from(self.number()?);
        if n == 0 {
            return Err("PARTIAL position 0".into());
        }
        Ok(if negative { -n } else { n })
    }

    fn vanished(&mut self) -> PResult<Untagged> {
        self.sp()?;
        let mut earlier = false;
        if self.eat(b'(') {
            self.skip_sp();
            let w = self.atom()?;
            earlier = w.eq_ignore_ascii_case("EARLIER");
            self.skip_sp();
            self.expect(b')')?;
            self.sp()?;
        }
        let uids = self.sequence_set()?;
        self.end()?;
        Ok(Untagged::Vanished { earlier, uids })
    }

    fn status_data(&mut self) -> PResult<Untagged> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        self.skip_sp();
        let items = self.list(|p| {
            let name = p.atom()?.to_ascii_uppercase();
            p.sp()?;
            if !p.peek().is_some_and(|b| b.is_ascii_digit()) {
                // A non-numeric item this client does not use (e.g. MAILBOXID (...)).
                p.skip_value()?;
                return Ok(None);
            }
            let n = p.number64()?;
            let small = || u32::try_from(n).map_err(|_| format!("{name} out of range"));
            Ok(Some(match name.as_str() {
                "MESSAGES" => StatusItem::Messages(small()?),
                "RECENT" => StatusItem::Recent(small()?),
                "UIDNEXT" => StatusItem::UidNext(Uid::new(small()?).ok_or("UIDNEXT 0")?),
                "UIDVALIDITY" => {
                    StatusItem::UidValidity(UidValidity::new(small()?).ok_or("UIDVALIDITY 0")?)
                }
                "UNSEEN" => StatusItem::Unseen(small()?),
                "DELETED" => StatusItem::Deleted(small()?),
                "HIGHESTMODSEQ" => StatusItem::HighestModSeq(ModSeq(n)),
                "SIZE" => StatusItem::Size(n),
                _ => return Ok(None),
            }))
        })?;
        let items = items.into_iter().flatten().collect();
        self.end()?;
        Ok(Untagged::StatusData { mailbox, items })
    }

    fn list_item(&mut self) -> PResult<ListItem> {
        self.sp()?;
        let attributes = self.list(|p| {
            let bs = p.eat(b'\\');
            let a = p.atom()?;
            Ok(if bs { format!("\\{a}") } else { a })
        })?;
        self.sp()?;
        let delimiter = self.delimiter()?;
        self.sp()?;
        let name = self.mailbox()?;
        let mut extended = Vec::new();
        self.skip_sp();
        if self.eat(b'(') {
            extended = self.list_rest(|p| {
                let tag = String::from_utf8_lossy(&p.astring()?).into_owned();
                p.sp()?;
                let start = p.pos;
                p.skip_value()?;
                Ok((tag, p.buf[start..p.pos].to_vec()))
            })?;
        }
        self.end()?;
        Ok(ListItem {
            attributes,
            delimiter,
            name,
            extended,
        })
    }

    /// A hierarchy delimiter: one quoted ASCII character, or NIL (an empty string is read as
    /// NIL too: some servers send `""` for a flat namespace).
    fn delimiter(&mut self) -> PResult<Option<char>> {
        if self.eat_word("NIL") {
            return Ok(None);
        }
        let d = self.string()?;
        match d.as_slice() {
            [] => Ok(None),
            [c] if c.is_ascii() => Ok(Some(*c as char)),
            _ => Err("hierarchy delimiter is not one ASCII character".into()),
        }
    }

    /// `NAMESPACE personal other shared` (RFC 2342); each group NIL or a list of
    /// `(prefix delimiter *(extension))`. Extensions are read and dropped.
    fn namespace(&mut self) -> PResult<Untagged> {
        self.sp()?;
        let personal = self.namespace_group()?;
        self.sp()?;
        let other = self.namespace_group()?;
        self.sp()?;
        let shared = self.namespace_group()?;
        self.end()?;
        Ok(Untagged::Namespace(Namespaces {
            personal,
            other,
            shared,
        }))
    }

    fn namespace_group(&mut self) -> PResult<Vec<(Vec<u8>, Option<char>)>> {
        if self.eat_word("NIL") {
            return Ok(Vec::new());
        }
        self.list(|p| {
            p.expect(b'(')?;
            p.skip_sp();
            let prefix = p.string()?;
            p.sp()?;
            let delimiter = p.delimiter()?;
            p.list_rest(Self::skip_value)?; // namespace extensions
            Ok((prefix, delimiter))
        })
    }

    /// `QUOTA root (resource usage limit ...)` (RFC 9208). Resource names are upper-cased.
    fn quota(&mut self) -> PResult<Untagged> {
        self.sp()?;
        let root = self.astring()?;
        self.skip_sp();
        let resources = self.list(|p| {
            let name = p.atom()?.to_ascii_uppercase();
            p.sp()?;
            let usage = p.number64()?;
            p.sp()?;
            let limit = p.number64()?;
            Ok(QuotaResource { name, usage, limit })
        })?;
        self.end()?;
        Ok(Untagged::Quota { root, resources })
    }

    /// `QUOTAROOT mailbox *(root)`.
    fn quota_root(&mut self) -> PResult<Untagged> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        let mut roots = Vec::new();
        loop {
            self.skip_sp();
            if self.at_eol() {
                break;
            }
            roots.push(self.astring()?);
        }
        self.end()?;
        Ok(Untagged::QuotaRoot { mailbox, roots })
    }

    /// `ID NIL` or `ID ("key" value ...)` (RFC 2971); values are nstrings.
    fn id(&mut self) -> PResult<Untagged> {
        self.skip_sp();
        let mut fields = Vec::new();
        if !self.eat_word("NIL") {
            fields = self.list(|p| {
                let key = p.astring()?;
                p.sp()?;
                let value = p.nstring_or_atom()?;
                Ok((
                    String::from_utf8_lossy(&key).into_owned(),
                    value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                ))
            })?;
        }
        self.end()?;
        Ok(Untagged::Id(fields))
    }

    fn mailbox(&mut self) -> PResult<MailboxName> {
        let raw = self.astring()?;
        Ok(MailboxName::from_wire(raw, self.utf8))
    }

    // ----- FETCH -----

    fn fetch_items(&mut self) -> PResult<Vec<FetchItem>> {
        self.list(Self::fetch_item)
    }

    fn fetch_item(&mut self) -> PResult<FetchItem> {
        let name = self.take_while(|b| is_atom_char(b) && b != b'[' && b != b'<');
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        if name.is_empty() {
            return Err("expected a FETCH item name".into());
        }
        match name.as_str() {
            "UID" => {
                self.sp()?;
                Ok(FetchItem::Uid(Uid::new(self.number()?).ok_or("UID 0")?))
            }
            "FLAGS" => {
                self.sp()?;
                Ok(FetchItem::Flags(self.flag_list()?))
            }
            "RFC822.SIZE" => {
                self.sp()?;
                Ok(FetchItem::Rfc822Size(self.number64()?))
            }
            "INTERNALDATE" => {
                self.sp()?;
                let s = self.nstring()?.ok_or("INTERNALDATE is NIL")?;
                Ok(FetchItem::InternalDate(parse_date_time(&s)?))
            }
            "MODSEQ" => {
                self.sp()?;
                self.expect(b'(')?;
                self.skip_sp();
                let n = self.number64()?;
                self.skip_sp();
                self.expect(b')')?;
                Ok(FetchItem::ModSeq(ModSeq(n)))
            }
            "BODY" | "BINARY" if self.peek() == Some(b'[') => {
                let section = self.section()?;
                let origin = if self.eat(b'<') {
                    let o = self.number64()?;
                    self.expect(b'>')?;
                    Some(o)
                } else {
                    None
                };
                self.sp()?;
                let data = self.nstring()?;
                Ok(FetchItem::Body {
                    section,
                    origin,
                    data,
                })
            }
            "BODY" | "BODYSTRUCTURE" => {
                self.sp()?;
                Ok(FetchItem::BodyStructure(Box::new(self.body()?)))
            }
            "ENVELOPE" => {
                self.sp()?;
                Ok(FetchItem::Envelope(Box::new(self.envelope()?)))
            }
            "BINARY.SIZE" => {
                let section = self.section()?;
                self.sp()?;
                Ok(FetchItem::BinarySize {
                    section,
                    size: self.number64()?,
                })
            }
            "RFC822" | "RFC822.HEADER" | "RFC822.TEXT" => {
                self.sp()?;
                Ok(FetchItem::Rfc822 {
                    part: name,
                    data: self.nstring()?,
                })
            }
            "X-GM-MSGID" | "X-GM-THRID" => {
                self.sp()?;
                let n = self.number64()?;
                Ok(if name == "X-GM-MSGID" {
                    FetchItem::GmMsgId(n)
                } else {
                    FetchItem::GmThrId(n)
                })
            }
            "X-GM-LABELS" => {
                self.sp()?;
                let utf8 = self.utf8;
                Ok(FetchItem::GmLabels(self.list(|p| {
                    // `\Important` comes as an atom with its backslash, other labels as
                    // astrings (quoted when they hold a space).
                    if p.peek() == Some(b'\\') {
                        p.pos += 1;
                        let w = p.take_while(is_atom_char);
                        let mut raw = b"\\".to_vec();
                        raw.extend_from_slice(w);
                        return Ok(Label::from_wire(&raw, utf8));
                    }
                    Ok(Label::from_wire(&p.astring()?, utf8))
                })?))
            }
            "EMAILID" | "THREADID" => {
                self.sp()?;
                let v = if self.eat_word("NIL") {
                    String::new()
                } else {
                    self.expect(b'(')?;
                    self.skip_sp();
                    let id = self.atom()?;
                    self.skip_sp();
                    self.expect(b')')?;
                    id
                };
                Ok(if name == "EMAILID" {
                    FetchItem::EmailId(v)
                } else {
                    FetchItem::ThreadId(v)
                })
            }
            _ => {
                // Unknown item: keep `name[section]<origin>` as the name, the value raw.
                let start = self.pos - name.len();
                if self.peek() == Some(b'[') {
                    self.section()?;
                }
                if self.eat(b'<') {
                    self.take_while(|b| b.is_ascii_digit() || b == b'.');
                    self.expect(b'>')?;
                }
                let full = String::from_utf8_lossy(&self.buf[start..self.pos]).to_ascii_uppercase();
                self.sp()?;
                let vstart = self.pos;
                self.skip_value()?;
                Ok(FetchItem::Other {
                    name: full,
                    raw: self.buf[vstart..self.pos].to_vec(),
                })
            }
        }
    }

    /// `[section]` returned without brackets; nested parentheses (HEADER.FIELDS) are kept.
    fn section(&mut self) -> PResult<String> {
        self.expect(b'[')?;
        let start = self.pos;
        let mut depth = 0usize;
        loop {
            match self.next_byte().ok_or("unterminated section")? {
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                b']' if depth == 0 => break,
                b'\r' | b'\n' => return Err("line end inside a section".into()),
                _ => {}
            }
        }
        Ok(String::from_utf8_lossy(&self.buf[start..self.pos - 1]).into_owned())
    }

    // ----- ENVELOPE and BODYSTRUCTURE (RFC 3501 section 7.4.2, RFC 9051 section 7.5.2) -----

    /// `(date subject from sender reply-to to cc bcc in-reply-to message-id)`.
    fn envelope(&mut self) -> PResult<Envelope> {
        self.expect(b'(')?;
        self.enter()?;
        self.skip_sp();
        let date = self.nstring_or_atom()?;
        self.skip_sp();
        let subject = self.nstring_or_atom()?;
        let mut lists: [Vec<Address>; 6] = Default::default();
        for list in lists.iter_mut() {
            self.skip_sp();
            *list = self.address_list()?;
        }
        self.skip_sp();
        let in_reply_to = self.nstring_or_atom()?;
        self.skip_sp();
        let message_id = self.nstring_or_atom()?;
        self.skip_sp();
        self.expect(b')')?;
        self.leave();
        let [from, sender, reply_to, to, cc, bcc] = lists;
        Ok(Envelope {
            date,
            subject,
            from,
            sender,
            reply_to,
            to,
            cc,
            bcc,
            in_reply_to,
            message_id,
        })
    }

    /// NIL or `(address address ...)`; spaces between addresses are tolerated (outlook.com
    /// puts them there).
    fn address_list(&mut self) -> PResult<Vec<Address>> {
        if self.eat_word("NIL") {
            return Ok(Vec::new());
        }
        self.list(|p| {
            p.expect(b'(')?;
            let mut f: [Option<Vec<u8>>; 4] = Default::default();
            for field in f.iter_mut() {
                p.skip_sp();
                *field = p.nstring_or_atom()?;
            }
            p.skip_sp();
            p.expect(b')')?;
            let [name, adl, mailbox, host] = f;
            Ok(Address {
                name,
                adl,
                mailbox,
                host,
            })
        })
    }

    /// One `body` production: a single part or a multipart, with extension data if present.
    fn body(&mut self) -> PResult<BodyStructure> {
        self.expect(b'(')?;
        self.enter()?;
        self.skip_sp();
        let b = if self.peek() == Some(b'(') {
            self.body_multi()?
        } else {
            self.body_single()?
        };
        self.skip_sp();
        self.expect(b')')?;
        self.leave();
        Ok(b)
    }

    fn body_multi(&mut self) -> PResult<BodyStructure> {
        let mut parts = Vec::new();
        while self.peek() == Some(b'(') {
            parts.push(self.body()?);
            self.skip_sp();
        }
        let subtype = self.lossy_field()?;
        self.body_multi_rest(parts, subtype)
    }

    /// After the subtype of a multipart: `[params [dsp [lang [loc *ext]]]]`.
    fn body_multi_rest(
        &mut self,
        parts: Vec<BodyStructure>,
        subtype: String,
    ) -> PResult<BodyStructure> {
        let mut params = Vec::new();
        let mut ext = BodyExtension::default();
        if self.more() {
            params = self.body_params()?;
            if self.more() {
                self.body_ext_dsp_onwards(&mut ext)?;
            }
        }
        Ok(BodyStructure::Multi {
            parts,
            subtype,
            params,
            ext,
        })
    }

    fn body_single(&mut self) -> PResult<BodyStructure> {
        let media_type = self.lossy_field()?;
        self.skip_sp();
        if matches!(self.peek(), Some(b'(') | Some(b')')) {
            // A multipart without parts, sent as `("MIXED" ...)`: the string is the subtype.
            return self.body_multi_rest(Vec::new(), media_type);
        }
        let subtype = self.lossy_field()?;
        self.skip_sp();
        let params = self.body_params()?;
        self.skip_sp();
        let id = self.nstring_or_atom()?;
        self.skip_sp();
        let description = self.nstring_or_atom()?;
        self.skip_sp();
        let encoding = self.lossy_field()?;
        self.skip_sp();
        let size = self.number_or_nil()?.unwrap_or(0);
        let is_message = media_type.eq_ignore_ascii_case("MESSAGE")
            && (subtype.eq_ignore_ascii_case("RFC822") || subtype.eq_ignore_ascii_case("GLOBAL"));
        let is_text = media_type.eq_ignore_ascii_case("TEXT");
        let mut lines = None;
        let mut message = None;
        self.skip_sp();
        if is_message && self.peek() == Some(b'(') {
            let envelope = self.envelope()?;
            self.skip_sp();
            let inner = self.body()?;
            self.skip_sp();
            lines = self.number_or_nil()?;
            message = Some((Box::new(envelope), Box::new(inner)));
        } else if is_text && self.peek().is_some_and(|b| b.is_ascii_digit()) {
            lines = Some(self.number64()?);
        }
        // Servers that send message/rfc822 without envelope and body (seen in the wild) are
        // read as a basic part: the extension data then follows the size directly.
        let mut ext = BodyExtension::default();
        if self.more() {
            ext.md5 = self.nstring_or_atom()?;
            if self.more() {
                self.body_ext_dsp_onwards(&mut ext)?;
            }
        }
        Ok(BodyStructure::Single {
            media_type,
            subtype,
            params,
            id,
            description,
            encoding,
            size,
            lines,
            message,
            ext,
        })
    }

    /// `dsp [lang [loc *ext]]`: the extension data shared by single parts and multiparts.
    fn body_ext_dsp_onwards(&mut self, ext: &mut BodyExtension) -> PResult<()> {
        ext.disposition = self.body_disposition()?;
        if !self.more() {
            return Ok(());
        }
        ext.language = self.body_language()?;
        if !self.more() {
            return Ok(());
        }
        ext.location = self.nstring_or_atom()?;
        // Further extension values: read (bounded) and dropped.
        while self.more() {
            self.skip_value()?;
        }
        Ok(())
    }

    /// `NIL` or `("type" params)`; a bare string is read as a disposition without parameters.
    fn body_disposition(&mut self) -> PResult<Option<(String, Params)>> {
        if self.eat_word("NIL") {
            return Ok(None);
        }
        if self.peek() != Some(b'(') {
            return Ok(Some((self.lossy_field()?, Vec::new())));
        }
        self.pos += 1;
        self.skip_sp();
        let kind = self.lossy_field()?;
        let mut params = Vec::new();
        if self.more() {
            params = self.body_params()?;
        }
        self.skip_sp();
        self.expect(b')')?;
        Ok(Some((kind, params)))
    }

    /// `NIL`, a string, or a list of strings.
    fn body_language(&mut self) -> PResult<Vec<String>> {
        if self.peek() != Some(b'(') {
            return Ok(self
                .nstring_or_atom()?
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .into_iter()
                .collect());
        }
        self.list(Self::lossy_field)
    }

    /// `NIL` or `("key" "value" ...)`; an empty list and a key without value are tolerated.
    fn body_params(&mut self) -> PResult<Params> {
        if self.eat_word("NIL") {
            return Ok(Vec::new());
        }
        self.list(|p| {
            let key = p.lossy_field()?;
            p.skip_sp();
            let value = if p.peek() == Some(b')') {
                String::new()
            } else {
                p.lossy_field()?
            };
            Ok((key, value))
        })
    }

    /// Whether another element follows before the closing parenthesis (spaces skipped).
    fn more(&mut self) -> bool {
        self.skip_sp();
        !matches!(self.peek(), None | Some(b')') | Some(b'\r') | Some(b'\n'))
    }

    /// A string-valued field read leniently (string, literal, atom; NIL as empty) as text.
    fn lossy_field(&mut self) -> PResult<String> {
        let v = self.nstring_or_atom()?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    fn number_or_nil(&mut self) -> PResult<Option<u64>> {
        if self.eat_word("NIL") {
            return Ok(None);
        }
        self.number64().map(Some)
    }

    // ----- response text and codes -----

    fn resp_text_after_status(&mut self) -> PResult<ResponseText> {
        // Tolerate a missing text after the status (Gmail, iCloud): `A1 OK\r\n`.
        self.skip_sp();
        self.resp_text()
    }

    fn resp_text(&mut self) -> PResult<ResponseText> {
        let mut code = None;
        if self.peek() == Some(b'[') {
            let save = self.pos;
            let depth = self.depth;
            self.pos += 1;
            match self.resp_code() {
                Ok(c) => code = Some(c),
                Err(_) => {
                    // An unknown or unparsable code: keep it raw up to the closing bracket.
                    self.pos = save + 1;
                    self.depth = depth;
                    let inner = self.take_while(|b| b != b']' && b != b'\r' && b != b'\n');
                    let inner = String::from_utf8_lossy(inner).into_owned();
                    self.eat(b']');
                    let (name, rest) = match inner.split_once(' ') {
                        Some((n, r)) => (n.to_string(), Some(r.to_string())),
                        None => (inner, None),
                    };
                    code = Some(Code::Other {
                        name: name.to_ascii_uppercase(),
                        rest,
                    });
                }
            }
            self.skip_sp();
        }
        // The text runs to the end of the line; a stray CR inside it is kept.
        let text = self.take_while(|b| b != b'\n');
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let text = String::from_utf8_lossy(text).into_owned();
        self.end()?;
        Ok(ResponseText { code, text })
    }

    /// A response code after its `[`, consuming the closing `]`.
    fn resp_code(&mut self) -> PResult<Code> {
        let name = self.take_while(|b| is_atom_char(b) && b != b']');
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let simple = match name.as_str() {
            "ALERT" => Some(Code::Alert),
            "PARSE" => Some(Code::Parse),
            "READ-ONLY" => Some(Code::ReadOnly),
            "READ-WRITE" => Some(Code::ReadWrite),
            "TRYCREATE" => Some(Code::TryCreate),
            "NOMODSEQ" => Some(Code::NoModSeq),
            "CLOSED" => Some(Code::Closed),
            "OVERQUOTA" => Some(Code::OverQuota),
            "NONEXISTENT" => Some(Code::Nonexistent),
            "ALREADYEXISTS" => Some(Code::AlreadyExists),
            "NOPERM" => Some(Code::NoPerm),
            "CANNOT" => Some(Code::Cannot),
            "UNAVAILABLE" => Some(Code::Unavailable),
            "AUTHENTICATIONFAILED" => Some(Code::AuthenticationFailed),
            "AUTHORIZATIONFAILED" => Some(Code::AuthorizationFailed),
            "EXPUNGEISSUED" => Some(Code::ExpungeIssued),
            "SERVERBUG" => Some(Code::ServerBug),
            "LIMIT" => Some(Code::Limit),
            "INUSE" => Some(Code::InUse),
            "HASCHILDREN" => Some(Code::HasChildren),
            "UIDNOTSTICKY" => Some(Code::UidNotSticky),
            "EXPIRED" => Some(Code::Expired),
            "CLIENTBUG" => Some(Code::ClientBug),
            "CORRUPTION" => Some(Code::Corruption),
            "CONTACTADMIN" => Some(Code::ContactAdmin),
            "PRIVACYREQUIRED" => Some(Code::PrivacyRequired),
            "UNKNOWN-CTE" => Some(Code::UnknownCte),
            _ => None,
        };
        if let Some(c) = simple {
            self.skip_sp();
            self.expect(b']')?;
            return Ok(c);
        }
        let code = match name.as_str() {
            "CAPABILITY" => {
                let mut caps = Vec::new();
                loop {
                    self.skip_sp();
                    if self.peek() == Some(b']') {
                        break;
                    }
                    let c = self.take_while(|b| is_atom_char(b) && b != b']');
                    if c.is_empty() {
                        return Err("bad capability".into());
                    }
                    caps.push(String::from_utf8_lossy(c).into_owned());
                }
                Code::Capability(caps)
            }
            "PERMANENTFLAGS" => {
                self.sp()?;
                Code::PermanentFlags(self.flag_list()?)
            }
            "BADCHARSET" => {
                let mut charsets = Vec::new();
                self.skip_sp();
                if self.eat(b'(') {
                    charsets = self
                        .list_rest(|p| Ok(String::from_utf8_lossy(&p.astring()?).into_owned()))?;
                }
                Code::BadCharset(charsets)
            }
            "UIDVALIDITY" => {
                self.sp()?;
                Code::UidValidity(UidValidity::new(self.number()?).ok_or("UIDVALIDITY 0")?)
            }
            "UIDNEXT" => {
                self.sp()?;
                Code::UidNext(Uid::new(self.number()?).ok_or("UIDNEXT 0")?)
            }
            "UNSEEN" => {
                self.sp()?;
                Code::Unseen(self.number()?)
            }
            "HIGHESTMODSEQ" => {
                self.sp()?;
                Code::HighestModSeq(ModSeq(self.number64()?))
            }
            "APPENDUID" => {
                self.sp()?;
                let validity = UidValidity::new(self.number()?).ok_or("UIDVALIDITY 0")?;
                self.sp()?;
                Code::AppendUid {
                    validity,
                    uids: self.sequence_set()?,
                }
            }
            "COPYUID" => {
                self.sp()?;
                let validity = UidValidity::new(self.number()?).ok_or("UIDVALIDITY 0")?;
                self.sp()?;
                let source = self.sequence_set()?;
                self.sp()?;
                Code::CopyUid {
                    validity,
                    source,
                    dest: self.sequence_set()?,
                }
            }
            "MODIFIED" => {
                self.sp()?;
                Code::Modified(self.sequence_set()?)
            }
            _ => return Err("unknown code".into()),
        };
        self.skip_sp();
        self.expect(b']')?;
        Ok(code)
    }

    // ----- lexical pieces -----

    /// `(` element* `)`: the elements, each read by `element`. Spaces between elements may be
    /// doubled or missing (servers differ).
    fn list<T>(&mut self, element: impl FnMut(&mut Self) -> PResult<T>) -> PResult<Vec<T>> {
        self.expect(b'(')?;
        self.list_rest(element)
    }

    /// Like [`Parser::list`], after its `(` was consumed.
    fn list_rest<T>(
        &mut self,
        mut element: impl FnMut(&mut Self) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        let mut out = Vec::new();
        loop {
            self.skip_sp();
            if self.eat(b')') {
                return Ok(out);
            }
            out.push(element(self)?);
        }
    }

    /// `(flag flag ...)`. A flag is read up to a space or `)`, so keywords with atom-specials
    /// (Gmail sends `OIB-Seen-[Google Mail]/...`) are kept instead of failing the response.
    fn flag_list(&mut self) -> PResult<Vec<Flag>> {
        self.list(|p| {
            let word = p.take_while(|b| !matches!(b, b' ' | b'(' | b')' | b'\r' | b'\n'));
            if word.is_empty() {
                return Err(format!("expected a flag at byte {}", p.pos));
            }
            let word = String::from_utf8_lossy(word).into_owned();
            Ok(Flag::parse(&word).unwrap_or(Flag::Keyword(word)))
        })
    }

    fn atoms_to_end(&mut self) -> PResult<Vec<String>> {
        let mut v = Vec::new();
        loop {
            self.skip_sp();
            if self.at_eol() {
                self.end()?;
                return Ok(v);
            }
            v.push(self.atom()?);
        }
    }

    fn sequence_set(&mut self) -> PResult<SequenceSet> {
        let mut ranges = Vec::new();
        loop {
            let a = self.seq_number()?;
            let b = if self.eat(b':') {
                self.seq_number()?
            } else {
                a
            };
            ranges.push((a, b));
            if !self.eat(b',') {
                return Ok(SequenceSet(ranges));
            }
        }
    }

    fn seq_number(&mut self) -> PResult<u32> {
        if self.eat(b'*') {
            Ok(u32::MAX)
        } else {
            self.number()
        }
    }

    /// A value of unknown shape: atom, number, string, NIL or parenthesised list (bounded depth).
    fn skip_value(&mut self) -> PResult<()> {
        match self.peek() {
            Some(b'(') => {
                self.enter()?;
                self.pos += 1;
                self.list_rest(Self::skip_value)?;
                self.leave();
                Ok(())
            }
            Some(b'"') | Some(b'{') => self.string().map(drop),
            Some(b'~') if self.at_literal8() => self.string().map(drop),
            Some(_) => {
                let w = self.take_while(|b| !matches!(b, b' ' | b'(' | b')' | b'\r' | b'\n'));
                if w.is_empty() {
                    return Err(format!("expected a value at byte {}", self.pos));
                }
                Ok(())
            }
            None => Err("expected a value, found the end".into()),
        }
    }

    /// One level deeper into a recursive production; fails beyond `max_depth`.
    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(format!("nesting deeper than {}", self.max_depth));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    pub(crate) fn atom(&mut self) -> PResult<String> {
        let w = self.take_while(is_atom_char);
        if w.is_empty() {
            return Err(format!("expected an atom at byte {}", self.pos));
        }
        Ok(String::from_utf8_lossy(w).into_owned())
    }

    pub(crate) fn astring(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.string(),
            Some(b'~') if self.at_literal8() => self.string(),
            _ => {
                let w = self.take_while(is_astring_char);
                if w.is_empty() {
                    return Err(format!("expected an astring at byte {}", self.pos));
                }
                Ok(w.to_vec())
            }
        }
    }

    pub(crate) fn nstring(&mut self) -> PResult<Option<Vec<u8>>> {
        if self.eat_word("NIL") {
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// NIL, a string, or (leniently) a bare atom where a string belongs.
    fn nstring_or_atom(&mut self) -> PResult<Option<Vec<u8>>> {
        if self.eat_word("NIL") {
            return Ok(None);
        }
        self.astring().map(Some)
    }

    /// A quoted string, a literal `{n}` or a literal8 `~{n}`.
    pub(crate) fn string(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.next_byte().ok_or("unterminated quoted string")? {
                        b'"' => return Ok(out),
                        b'\\' => out.push(self.next_byte().ok_or("unterminated escape")?),
                        b'\r' | b'\n' => return Err("line end inside a quoted string".into()),
                        b => out.push(b),
                    }
                }
            }
            Some(b'{') | Some(b'~') if self.peek() == Some(b'{') || self.at_literal8() => {
                self.eat(b'~');
                self.expect(b'{')?;
                let n = self.number64()?;
                self.eat(b'+');
                self.expect(b'}')?;
                self.eat(b'\r');
                self.expect(b'\n')?;
                let n = usize::try_from(n).map_err(|_| "literal too large")?;
                let end = self.pos.checked_add(n).ok_or("literal too large")?;
                if end > self.buf.len() {
                    return Err("literal runs past the frame".into());
                }
                let s = self.buf[self.pos..end].to_vec();
                self.pos = end;
                Ok(s)
            }
            // NIL where a string belongs (Mail.ru): read as empty.
            _ if self.eat_word("NIL") => Ok(Vec::new()),
            _ => Err(format!("expected a string at byte {}", self.pos)),
        }
    }

    pub(crate) fn number(&mut self) -> PResult<u32> {
        let n = self.number64()?;
        u32::try_from(n).map_err(|_| format!("number {n} out of range"))
    }

    pub(crate) fn number64(&mut self) -> PResult<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() {
            return Err(format!("expected a number at byte {}", self.pos));
        }
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "number too large".into())
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let end = self.pos + word.len();
        if end <= self.buf.len()
            && self.buf[self.pos..end].eq_ignore_ascii_case(word.as_bytes())
            && !self.buf.get(end).copied().is_some_and(is_atom_char)
        {
            self.pos = end;
            return true;
        }
        false
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.pos < self.buf.len() && f(self.buf[self.pos]) {
            self.pos += 1;
        }
        &self.buf[start..self.pos]
    }

    /// Whether a literal8 (`~{n}`) starts here; a bare `~` is an ordinary atom character.
    fn at_literal8(&self) -> bool {
        self.peek() == Some(b'~') && self.buf.get(self.pos + 1) == Some(&b'{')
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> PResult<()> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", b as char, self.pos))
        }
    }

    /// One or more spaces (servers that double them are tolerated).
    fn sp(&mut self) -> PResult<()> {
        if !self.eat(b' ') {
            return Err(format!("expected a space at byte {}", self.pos));
        }
        self.skip_sp();
        Ok(())
    }

    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    fn at_eol(&self) -> bool {
        matches!(self.peek(), None | Some(b'\r') | Some(b'\n'))
    }

    /// The end of the frame: optional trailing spaces, then CRLF (or a bare LF).
    fn end(&mut self) -> PResult<()> {
        self.skip_sp();
        self.eat(b'\r');
        if self.eat(b'\n') && self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!("unexpected data at byte {}", self.pos))
        }
    }
}

fn status_word(word: &str) -> Option<Status> {
    match word.to_ascii_uppercase().as_str() {
        "OK" => Some(Status::Ok),
        "NO" => Some(Status::No),
        "BAD" => Some(Status::Bad),
        "PREAUTH" => Some(Status::PreAuth),
        "BYE" => Some(Status::Bye),
        _ => None,
    }
}

/// Parse an IMAP date-time (`" 3-Mar-2020 09:12:00 +0100"`) into seconds since the epoch.
/// A missing zone is read as `+0000`; years outside 0..=9999 are refused.
pub fn parse_date_time(s: &[u8]) -> PResult<i64> {
    let s = std::str::from_utf8(s)
        .map_err(|_| "date-time is not ASCII")?
        .trim();
    let bad = || format!("bad date-time `{s}`");
    let mut parts = s.split_whitespace();
    let (date, time) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
    let zone = parts.next().unwrap_or("+0000");
    if parts.next().is_some() {
        return Err(bad());
    }
    let digits = |x: &str, max_len: usize| -> Option<u32> {
        if x.is_empty() || x.len() > max_len || !x.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        x.parse().ok()
    };
    let mut d = date.split('-');
    let day = d.next().and_then(|x| digits(x, 2)).ok_or_else(bad)?;
    let mon = d.next().ok_or_else(bad)?;
    let year = d.next().and_then(|x| digits(x, 4)).ok_or_else(bad)?;
    if d.next().is_some() {
        return Err(bad());
    }
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(mon))
        .ok_or_else(bad)? as u32
        + 1;
    let t: Vec<u32> = time
        .split(':')
        .map(|x| digits(x, 2))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    if t.len() != 3 || !(1..=31).contains(&day) || t[0] > 23 || t[1] > 59 || t[2] > 60 {
        return Err(bad());
    }
    let (sign, zdigits) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ => return Err(bad()),
    };
    if zdigits.len() != 4 || !zdigits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let zh: i64 = zdigits[..2].parse().map_err(|_| bad())?;
    let zm: i64 = zdigits[2..].parse().map_err(|_| bad())?;
    let offset = sign * (zh * 3600 + zm * 60);
    let days = days_from_civil(i64::from(year), month, day);
    let secs = i64::from(t[0]) * 3600 + i64::from(t[1]) * 60 + i64::from(t[2]);
    Ok(days * 86400 + secs - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Response {
        parse_response(s, 64, false).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn tagged_with_code() {
        let r = parse(b"A1 OK [READ-ONLY] EXAMINE completed\r\n");
        assert_eq!(
            r,
            Response::Tagged(Tagged {
                tag: Tag::parse(b"A1").unwrap(),
                status: Status::Ok,
                text: ResponseText {
                    code: Some(Code::ReadOnly),
                    text: "EXAMINE completed".into()
                }
            })
        );
    }

    #[test]
    fn missing_response_text_gmail() {
        // Source: FIELD-NOTES (Gmail, iCloud omit resp-text).
        let r = parse(b"A2 OK\r\n");
        let Response::Tagged(t) = r else { panic!() };
        assert_eq!(t.status, Status::Ok);
        assert_eq!(t.text.text, "");
    }

    #[test]
    fn select_responses() {
        let r = parse(b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n");
        let Response::Untagged(Untagged::Status { text, .. }) = r else {
            panic!()
        };
        assert_eq!(
            text.code,
            Some(Code::UidValidity(UidValidity::new(3857529045).unwrap()))
        );
        let r = parse(b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n");
        let Response::Untagged(Untagged::Status { text, .. }) = r else {
            panic!()
        };
        assert_eq!(
            text.code,
            Some(Code::PermanentFlags(vec![
                Flag::Deleted,
                Flag::Seen,
                Flag::MayCreate
            ]))
        );
        assert_eq!(
            parse(b"* 172 EXISTS\r\n"),
            Response::Untagged(Untagged::Exists(172))
        );
    }

    #[test]
    fn fetch_items_in_any_order_with_doubled_spaces() {
        let r = parse(
            b"* 12 FETCH (FLAGS (\\Seen $Junk)  INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 UID 4827313)\r\n",
        );
        let Response::Untagged(Untagged::Fetch { seq, items }) = r else {
            panic!()
        };
        assert_eq!(seq.get(), 12);
        assert_eq!(
            items[0],
            FetchItem::Flags(vec![Flag::Seen, Flag::Keyword("$Junk".into())])
        );
        assert_eq!(items[1], FetchItem::InternalDate(837596665));
        assert_eq!(items[2], FetchItem::Rfc822Size(4286));
        assert_eq!(items[3], FetchItem::Uid(Uid::new(4827313).unwrap()));
    }

    #[test]
    fn body_section_with_origin_and_header_fields() {
        let r = parse(
            b"* 1 FETCH (UID 5 BODY[HEADER.FIELDS (SUBJECT)] {4}\r\nab\r\n BODY[]<100> \"xy\")\r\n",
        );
        let Response::Untagged(Untagged::Fetch { items, .. }) = r else {
            panic!()
        };
        assert_eq!(
            items[1],
            FetchItem::Body {
                section: "HEADER.FIELDS (SUBJECT)".into(),
                origin: None,
                data: Some(b"ab\r\n".to_vec())
            }
        );
        assert_eq!(
            items[2],
            FetchItem::Body {
                section: String::new(),
                origin: Some(100),
                data: Some(b"xy".to_vec())
            }
        );
    }

    #[test]
    fn list_with_mutf7_name_and_nil_delimiter() {
        let r = parse(b"* LIST (\\HasNoChildren) \".\" \"&ANw-n&AO8-c&APg-d&AOk- Folder\"\r\n");
        let Response::Untagged(Untagged::List(item)) = r else {
            panic!()
        };
        assert_eq!(item.name.as_str(), "\u{dc}n\u{ef}c\u{f8}d\u{e9} Folder");
        assert_eq!(item.delimiter, Some('.'));
        let r = parse(b"* LIST (\\Noselect) NIL \"\"\r\n");
        let Response::Untagged(Untagged::List(item)) = r else {
            panic!()
        };
        assert_eq!(item.delimiter, None);
        assert!(item.is_noselect());
        let r = parse(b"* LIST () \"/\" {3}\r\na\"b\r\n");
        let Response::Untagged(Untagged::List(item)) = r else {
            panic!()
        };
        assert_eq!(item.name.raw(), b"a\"b");
    }

    #[test]
    fn unknown_code_is_kept_raw() {
        let r = parse(b"A3 NO [X-WEIRD 1 2 (3)] nope\r\n");
        let Response::Tagged(t) = r else { panic!() };
        assert_eq!(
            t.text.code,
            Some(Code::Other {
                name: "X-WEIRD".into(),
                rest: Some("1 2 (3)".into())
            })
        );
        assert_eq!(t.text.text, "nope");
    }

    #[test]
    fn eight_bit_text_and_quoted_strings() {
        let r = parse(b"* OK caf\xc3\xa9 \xff\r\n");
        assert!(matches!(r, Response::Untagged(Untagged::Status { .. })));
        let r = parse(b"* LIST () \"/\" \"caf\xc3\xa9\"\r\n");
        assert!(matches!(r, Response::Untagged(Untagged::List(_))));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut s = b"* 1 FETCH (X-ITEM ".to_vec();
        s.extend(std::iter::repeat_n(b'(', 1000));
        s.extend(std::iter::repeat_n(b')', 1000));
        s.extend_from_slice(b")\r\n");
        assert!(parse_response(&s, 64, false).is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date_time(b"01-Jan-1970 00:00:00 +0000"), Ok(0));
        assert_eq!(
            parse_date_time(b" 3-Mar-2020 09:12:00 +0100"),
            Ok(1583223120)
        );
        assert!(parse_date_time(b"31-Foo-2020 00:00:00 +0000").is_err());
        // Regression: a huge year from the server overflowed the day arithmetic (a panic in
        // debug builds); years are now at most four digits.
        assert!(parse_date_time(b"01-Jan-99999999999999999 00:00:00 +0000").is_err());
        assert!(parse_date_time(b"01-Jan-2020 -1:00:00 +0000").is_err());
        assert_eq!(parse_date_time(b"17-Jul-1996 02:44:25"), Ok(837571465));
    }
}
