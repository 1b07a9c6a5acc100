//! The sans-I/O heart of a session: bytes from the server in, [`Event`]s and bytes to send out.
//!
//! [`Core`] owns everything a connection knows except the socket and the clock: the tags in
//! flight, completions that arrived for another waiter, the capabilities (a typed
//! [`Capabilities`] set, parsed once), the extensions ENABLED, the selected mailbox, the
//! untagged responses held for the next completion (within [`Limits::backlog_cap`]), and the
//! literal handshake of a command sent in several chunks. It is driven like rustls'
//! `ConnectionCommon`:
//!
//! ```text
//!   begin(cmd) -> tag        queue the command's first chunk in `outgoing`
//!   take_outgoing()          bytes the driver must write now
//!   feed(bytes)              bytes the driver read from the socket
//!   step() -> Some(Event)    one response decoded and applied to the state;
//!          -> None           Interrupt::Io: nothing more without more bytes
//! ```
//!
//! A continuation request for a command with chunks left queues its next chunk and gives
//! [`Event::Continue`]; the driver writes it. Every untagged response passes `Core::observe`
//! (capabilities, BYE, ENABLED, the selected mailbox) and comes out as
//! [`Event::Untagged`] with its [`MailboxEvent`], if any. A completion for
//! a tag not in flight, or an undecodable stream, breaks the core: it is a protocol violation
//! that no later reply can repair. The blocking [`Session`](super::Session) adds the transport
//! and the deadlines; the transcript tests (`tests/transcripts.rs`) drive a core from bytes.

use std::collections::{HashMap, HashSet};

use crate::error::{printable, Error, Result};
use crate::imap::codec::{Command, DecodeError, Limits, ResponseDecoder};
use crate::imap::types::*;

use super::capabilities::Capabilities;
use super::untagged::MailboxEvent;
use super::{Completed, Selected};

/// What one step of the core produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Untagged data, already applied to the connection and mailbox state; `mailbox` is what it
    /// says about the selected mailbox, if anything.
    Untagged {
        response: Untagged,
        mailbox: Option<MailboxEvent>,
    },
    /// The completion of a command in flight.
    Tagged(Tagged),
    /// A continuation request. If a command had chunks left, the next one is now queued in
    /// [`Core::take_outgoing`].
    Continue(ResponseText),
}

/// The protocol state of one connection, without I/O.
#[derive(Debug)]
pub struct Core {
    decoder: ResponseDecoder,
    limits: Limits,
    next_tag: u32,
    pub(super) capabilities: Capabilities,
    /// Extensions the server reported ENABLED (RFC 5161), upper-cased.
    pub(super) enabled: Vec<String>,
    pub(super) selected: Option<Selected>,
    /// Untagged responses not yet handed to a waiter.
    untagged: Vec<Untagged>,
    /// What `untagged` costs, by [`Limits::held_cost`]; at most [`Limits::backlog_cap`].
    untagged_bytes: u64,
    /// Untagged responses were dropped since the last completion: over the backlog cap.
    overflowed: bool,
    /// Tags sent whose completion no waiter has taken yet (some may be in `done`).
    in_flight: HashSet<Tag>,
    /// Tagged completions that arrived while waiting for another tag. Only ever holds tags
    /// of `in_flight`: a completion for any other tag is a protocol violation.
    done: HashMap<Tag, Tagged>,
    /// A recoverable decode error seen since the last completion.
    malformed: Option<DecodeError>,
    pub(super) bye: Option<String>,
    broken: bool,
    /// Bytes to write, in order.
    outgoing: Vec<u8>,
    /// The command waiting for a continuation request, and its chunks still to send.
    pending: Option<(Tag, std::vec::IntoIter<Vec<u8>>)>,
    /// A SELECT/EXAMINE (true) or UNSELECT/CLOSE (false) in flight: its completion decides
    /// `selected`.
    selecting: Option<(Tag, bool)>,
}

impl Core {
    pub fn new(limits: Limits) -> Core {
        Core {
            decoder: ResponseDecoder::new(limits),
            limits,
            next_tag: 1,
            capabilities: Capabilities::default(),
            enabled: Vec::new(),
            selected: None,
            untagged: Vec::new(),
            untagged_bytes: 0,
            overflowed: false,
            in_flight: HashSet::new(),
            done: HashMap::new(),
            malformed: None,
            bye: None,
            broken: false,
            outgoing: Vec::new(),
            pending: None,
            selecting: None,
        }
    }

    /// Start a command: give it a tag and queue its first chunk. Later chunks (synchronising
    /// literals) follow continuation requests, unless LITERAL+ was advertised.
    pub fn begin(&mut self, cmd: &Command) -> Result<Tag> {
        if self.broken {
            return Err(Error::Protocol("connection is broken".into()));
        }
        let tag = self.new_tag();
        let enc = cmd
            .encode_with(tag.as_str(), self.capabilities.literals())
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        if !enc.sensitive {
            log::trace!(
                "C: {}",
                crate::imap::codec::parse::excerpt(enc.chunks.first().map_or(&[], |c| c))
            );
        } else {
            log::trace!("C: {tag} {} <credentials hidden>", cmd.name());
        }
        self.in_flight.insert(tag.clone());
        match cmd {
            // Untagged data from here on describes the new mailbox.
            Command::Select {
                mailbox, read_only, ..
            } => {
                self.selected = Some(Selected::new(mailbox.clone(), *read_only));
                self.selecting = Some((tag.clone(), true));
            }
            Command::Unselect | Command::Close => self.selecting = Some((tag.clone(), false)),
            _ => {}
        }
        let mut chunks = enc.chunks.into_iter();
        if let Some(first) = chunks.next() {
            self.outgoing.extend_from_slice(&first);
        }
        if chunks.len() > 0 {
            self.pending = Some((tag.clone(), chunks));
        }
        Ok(tag)
    }

    /// Take the server's greeting (its status text): the capabilities it may carry.
    pub fn greeted(&mut self, text: &ResponseText) {
        if let Some(Code::Capability(caps)) = &text.code {
            self.capabilities = Capabilities::new(caps.clone());
        }
    }

    /// Start a command whose bytes the caller writes itself (a streamed APPEND): a tag in
    /// flight, nothing queued.
    pub fn begin_raw(&mut self) -> Result<Tag> {
        if self.broken {
            return Err(Error::Protocol("connection is broken".into()));
        }
        let tag = self.new_tag();
        self.in_flight.insert(tag.clone());
        Ok(tag)
    }

    fn new_tag(&mut self) -> Tag {
        let tag = Tag::numbered(self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Queue raw bytes (a SASL response, `DONE`, the rest of a streamed literal).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.outgoing.extend_from_slice(bytes);
    }

    /// The bytes to write now; the core forgets them.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outgoing)
    }

    /// Whether `tag` still has chunks waiting for a continuation request.
    pub fn awaits_continuation(&self, tag: &Tag) -> bool {
        self.pending.as_ref().is_some_and(|(t, _)| t == tag)
    }

    /// Bytes received from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.decoder.feed(bytes);
    }

    /// Bytes received but not yet part of a decoded response.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// See [`ResponseDecoder::take_buffered`](crate::imap::codec::ResponseDecoder::take_buffered).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        self.decoder.take_buffered()
    }

    /// Decode and apply one response; `Ok(None)` when more bytes are needed. An error is
    /// fatal: the core is broken and the connection must be dropped.
    pub fn step(&mut self) -> Result<Option<Event>> {
        loop {
            let r = match self.decoder.next_response() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(None),
                Err(e) if e.is_recoverable() => {
                    log::warn!("{e}");
                    self.malformed.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(self.fail(Error::Protocol(e.to_string()))),
            };
            log_response(&r);
            return match r {
                Response::Tagged(t)
                    if !self.in_flight.contains(&t.tag) || self.done.contains_key(&t.tag) =>
                {
                    // A completion for a command never sent (or completed twice): injected,
                    // or a server that lost track. Either way its replies cannot be matched.
                    Err(self.fail(Error::Protocol(format!(
                        "the server completed a command that was not in flight ({})",
                        crate::imap::codec::parse::excerpt(t.tag.as_str().as_bytes())
                    ))))
                }
                Response::Tagged(t) => {
                    if self.awaits_continuation(&t.tag) {
                        // Refused before its literal: the rest is never sent.
                        self.pending = None;
                    }
                    Ok(Some(Event::Tagged(t)))
                }
                Response::Untagged(u) => {
                    let mailbox = self.observe(&u);
                    Ok(Some(Event::Untagged {
                        response: u,
                        mailbox,
                    }))
                }
                Response::Continue(text) => {
                    if let Some((tag, mut chunks)) = self.pending.take() {
                        if let Some(next) = chunks.next() {
                            self.outgoing.extend_from_slice(&next);
                        }
                        if chunks.len() > 0 {
                            self.pending = Some((tag, chunks));
                        }
                    }
                    Ok(Some(Event::Continue(text)))
                }
            };
        }
    }

    /// Apply an untagged response to the connection and mailbox state; returns what it says
    /// about the selected mailbox.
    pub(super) fn observe(&mut self, u: &Untagged) -> Option<MailboxEvent> {
        match u {
            Untagged::Capability(c) => self.capabilities = Capabilities::new(c.clone()),
            Untagged::Status {
                status: Status::Bye,
                text,
            } => self.bye = Some(text.text.clone()),
            Untagged::Status { text, .. } => {
                if let Some(sel) = self.selected.as_mut() {
                    match &text.code {
                        Some(Code::UidValidity(v)) => sel.uidvalidity = Some(*v),
                        Some(Code::UidNext(n)) => sel.uidnext = Some(*n),
                        Some(Code::HighestModSeq(m)) => sel.highest_modseq = Some(*m),
                        Some(Code::ReadOnly) => sel.read_only = true,
                        Some(Code::PermanentFlags(f)) => sel.permanent_flags = Some(f.clone()),
                        _ => {}
                    }
                }
                if text.code == Some(Code::Alert) {
                    log::warn!("server alert: {}", printable(&text.text));
                }
            }
            Untagged::Exists(n) => {
                if let Some(sel) = self.selected.as_mut() {
                    sel.exists = *n;
                }
            }
            Untagged::Expunge(_) => {
                if let Some(sel) = self.selected.as_mut() {
                    sel.exists = sel.exists.saturating_sub(1);
                }
            }
            // VANISHED (not EARLIER) replaces EXPUNGE once QRESYNC is enabled.
            Untagged::Vanished {
                earlier: false,
                uids,
            } => {
                if let Some(sel) = self.selected.as_mut() {
                    let n = uids.iter_capped(u32::MAX - 1, sel.exists as usize).count();
                    sel.exists = sel.exists.saturating_sub(n as u32);
                }
            }
            Untagged::Enabled(caps) => {
                for c in caps {
                    if !self.enabled.iter().any(|e| e.eq_ignore_ascii_case(c)) {
                        self.enabled.push(c.to_ascii_uppercase());
                    }
                }
            }
            _ => {}
        }
        self.selected.as_ref().and_then(|_| MailboxEvent::of(u))
    }

    /// Keep an untagged response for the next completion, within the backlog cap: past it,
    /// responses are dropped (they were applied to the state already), and the command they
    /// belong to fails with [`Error::TooLarge`].
    pub fn hold(&mut self, u: Untagged) {
        let cost = Limits::held_cost(self.decoder.last_frame_len() as u64);
        if self.overflowed || self.untagged_bytes + cost > self.limits.backlog_cap() {
            if !self.overflowed {
                log::warn!(
                    "the server's responses to one command exceed {} bytes; dropping them",
                    self.limits.backlog_cap()
                );
            }
            self.overflowed = true;
            self.untagged.clear();
            self.untagged_bytes = 0;
            return;
        }
        self.untagged_bytes += cost;
        self.untagged.push(u);
    }

    /// Whether untagged responses are held for the next completion.
    pub fn holds_untagged(&self) -> bool {
        !self.untagged.is_empty()
    }

    /// Keep the completion of a command someone else waits for (pipelining). Only tags in
    /// flight get here (see [`Core::step`]), so this is bounded by what was sent.
    pub fn keep_completion(&mut self, t: Tagged) {
        if let Some(tag) = self.in_flight.get(&t.tag).cloned() {
            self.done.insert(tag, t);
        }
    }

    /// A completion kept for `tag`, if it arrived while someone waited for another.
    pub fn take_kept(&mut self, tag: &Tag) -> Option<Tagged> {
        self.done.remove(tag)
    }

    /// Finish a command: its completion with the untagged data held since the last one, or
    /// its failure (NO, BAD, a malformed frame, too much data).
    pub fn complete(&mut self, t: Tagged, name: &'static str) -> Result<Completed> {
        self.in_flight.remove(&t.tag);
        if let Some((_, select)) = self.selecting.take_if(|(tag, _)| *tag == t.tag) {
            let ok = t.status == Status::Ok && !self.overflowed && self.malformed.is_none();
            match (select, ok) {
                (true, true) => {
                    if let (Some(sel), Some(Code::ReadOnly)) =
                        (self.selected.as_mut(), &t.text.code)
                    {
                        sel.read_only = true;
                    }
                }
                // A refused SELECT leaves no mailbox selected (RFC 3501 6.3.1).
                (true, false) => self.selected = None,
                (false, true) => self.selected = None,
                (false, false) => {}
            }
        }
        if let Some(Code::Capability(caps)) = &t.text.code {
            self.capabilities = Capabilities::new(caps.clone());
        }
        let untagged = std::mem::take(&mut self.untagged);
        self.untagged_bytes = 0;
        if std::mem::take(&mut self.overflowed) {
            // The stream is intact (every response was decoded, then dropped): only this
            // command fails.
            self.malformed = None;
            return Err(Error::TooLarge {
                what: "the responses to one command",
                limit: self.limits.backlog_cap(),
            });
        }
        if let Some(e) = self.malformed.take() {
            let e = Error::Protocol(e.to_string());
            // With other commands in flight the bad frame may have been part of their reply,
            // which would then look complete but lack it: drop the connection.
            return Err(if self.in_flight.is_empty() {
                e
            } else {
                self.fail(e)
            });
        }
        match t.status {
            Status::Ok => Ok(Completed {
                untagged,
                text: t.text,
            }),
            Status::No => Err(Error::No {
                command: name,
                text: t.text,
            }),
            _ => Err(Error::Bad {
                command: name,
                text: t.text,
            }),
        }
    }

    /// Forget a tag whose completion the caller took itself (SASL exchanges).
    pub fn forget(&mut self, tag: &Tag) {
        self.in_flight.remove(tag);
        if self.awaits_continuation(tag) {
            self.pending = None;
        }
    }

    /// Mark the core broken: no more commands. Returns `e` for the caller to pass on.
    pub fn fail(&mut self, e: Error) -> Error {
        self.broken = true;
        e
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    pub fn kept_completions(&self) -> usize {
        self.done.len()
    }

    pub fn has_malformed(&self) -> bool {
        self.malformed.is_some()
    }

    pub fn set_utf8(&mut self, utf8: bool) {
        self.decoder.set_utf8(utf8);
    }

    pub fn utf8(&self) -> bool {
        self.decoder.utf8()
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    pub fn selected(&self) -> Option<&Selected> {
        self.selected.as_ref()
    }

    pub fn is_enabled(&self, ext: &str) -> bool {
        self.enabled.iter().any(|e| e.eq_ignore_ascii_case(ext))
    }

    /// Drop everything learnt before a STARTTLS handshake (a man in the middle could have
    /// written any of it); tags keep counting.
    pub fn reset_for_tls(&mut self) {
        let next_tag = self.next_tag;
        *self = Core::new(self.limits);
        self.next_tag = next_tag;
    }
}

fn log_response(r: &Response) {
    if log::log_enabled!(log::Level::Trace) {
        match r {
            Response::Untagged(Untagged::Fetch { seq, items }) => {
                let names: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        FetchItem::Body {
                            section,
                            origin,
                            data,
                        } => format!(
                            "BODY[{section}]<{origin:?}> ({} bytes)",
                            data.as_ref().map_or(0, Vec::len)
                        ),
                        other => format!("{other:?}"),
                    })
                    .collect();
                log::trace!("S: * {} FETCH {}", seq.get(), names.join(" "));
            }
            other => log::trace!("S: {other:?}"),
        }
    }
}
