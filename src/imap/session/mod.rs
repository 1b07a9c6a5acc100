//! One connection's state machine: tags, capabilities, the selected mailbox, and the untagged
//! updates the server sends about it.
//!
//! A [`Session`] owns a [`Transport`] and a [`ResponseDecoder`]. Commands are sent with
//! [`Session::send`], which returns the tag, and completed with [`Session::wait`]; several can be
//! in flight at once ([`Session::pipeline`]), and replies are matched by tag. Untagged
//! responses are collected in arrival order and handed to whoever waits next; those that change
//! the selected mailbox (EXISTS, EXPUNGE, VANISHED, UIDVALIDITY) are also applied to
//! [`Selected`], wherever they arrive.
//!
//! Every command has one deadline, [`Timeouts::command`] from when it is sent, for its writes
//! and its reply together (a pipeline shares one), optionally capped further by
//! [`Session::set_deadline_cap`] (the whole login shares one). Within it, every read also waits
//! at most the inactivity timeout, renewed while bytes keep arriving (over TLS: while records
//! keep arriving). The transport enforces each deadline per socket call, so a trickling peer
//! cannot stretch it. After a fatal error (I/O, timeout, undecodable stream, BYE) the session
//! is marked broken and must be dropped.
//!
//! Files: `select` (SELECT/EXAMINE, UNSELECT), `exchanges` (streamed APPEND, FETCH responses one
//! by one, IDLE), `untagged` (keeping and applying untagged responses); this file holds the
//! start, sending, waiting and reading.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::error::{printable, Error, Result};
use crate::imap::codec::{Command, DecodeError, Limits, ResponseDecoder, SelectSync};
use crate::imap::transport::Transport;
use crate::imap::types::*;

mod exchanges;
mod select;
mod untagged;

/// What a session needs to know about the connection.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Longest silence accepted from the server while waiting for a reply.
    pub inactivity: Duration,
    /// Longest a single command may take, however busy the server is.
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            inactivity: Duration::from_secs(30),
            command: Duration::from_secs(300),
        }
    }
}

/// The completion of a command: its untagged data, and the tagged status text.
#[derive(Debug, Clone)]
pub struct Completed {
    pub untagged: Vec<Untagged>,
    pub text: ResponseText,
}

/// State of the selected mailbox, kept current from untagged responses.
#[derive(Debug, Clone)]
pub struct Selected {
    pub mailbox: MailboxName,
    pub read_only: bool,
    pub uidvalidity: Option<UidValidity>,
    pub uidnext: Option<Uid>,
    pub exists: u32,
    pub highest_modseq: Option<ModSeq>,
    /// PERMANENTFLAGS: the flags a STORE can keep (`\*`: new keywords too).
    pub permanent_flags: Option<Vec<Flag>>,
    /// Set when the server reported expunges or new messages since the last [`Session::take_changed`].
    pub changed: bool,
}

/// One authenticated (or about to be) IMAP connection.
pub struct Session {
    transport: Transport,
    decoder: ResponseDecoder,
    timeouts: Timeouts,
    next_tag: u32,
    capabilities: Vec<String>,
    /// Extensions the server reported ENABLED (RFC 5161), upper-cased.
    enabled: Vec<String>,
    selected: Option<Selected>,
    /// Untagged responses not yet handed to a waiter.
    untagged: Vec<Untagged>,
    /// What `untagged` costs, by [`Limits::held_cost`]; at most [`Limits::backlog_cap`].
    untagged_bytes: u64,
    /// Untagged responses were dropped since the last completion: over the backlog cap.
    overflowed: bool,
    /// Tags sent whose completion no waiter has taken yet (some may be in `done`).
    in_flight: HashSet<String>,
    /// Tagged completions that arrived while waiting for another tag. Only ever holds tags
    /// of `in_flight`: a completion for any other tag is a protocol violation.
    done: HashMap<String, Tagged>,
    /// A recoverable decode error seen since the last completion.
    malformed: Option<DecodeError>,
    bye: Option<String>,
    broken: bool,
    read_buf: Vec<u8>,
    /// Round trips: times the client turned from reading to writing (pipelined commands
    /// count once), for tests and benchmarks.
    round_trips: u64,
    /// Whether the last socket operation was a read (or nothing yet).
    reading: bool,
    /// No command's deadline goes beyond this (see [`Session::set_deadline_cap`]).
    deadline_cap: Option<Instant>,
    limits: Limits,
    /// See [`Session::allow_clear_text`].
    clear_text_allowed: bool,
}

impl Session {
    /// Wrap a connected transport and read the server's greeting. Returns the session and
    /// whether the greeting was PREAUTH (already authenticated).
    pub fn start(
        transport: Transport,
        timeouts: Timeouts,
        limits: Limits,
    ) -> Result<(Session, bool)> {
        let deadline = Instant::now() + timeouts.inactivity;
        Session::start_before(transport, timeouts, limits, deadline)
    }

    /// [`Session::start`], with the greeting due before `deadline`.
    pub fn start_before(
        transport: Transport,
        timeouts: Timeouts,
        limits: Limits,
        deadline: Instant,
    ) -> Result<(Session, bool)> {
        let mut s = Session {
            transport,
            decoder: ResponseDecoder::new(limits),
            timeouts,
            next_tag: 1,
            capabilities: Vec::new(),
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
            read_buf: vec![0; 64 * 1024],
            round_trips: 0,
            reading: true,
            deadline_cap: None,
            limits,
            clear_text_allowed: false,
        };
        let greeting = loop {
            match s.read_response(deadline)? {
                Response::Untagged(Untagged::Status { status, text }) => break (status, text),
                Response::Untagged(other) => s.absorb(other),
                other => return Err(Error::Protocol(format!("unexpected greeting: {other:?}"))),
            }
        };
        let (status, text) = greeting;
        if let Some(Code::Capability(caps)) = &text.code {
            s.capabilities = caps.clone();
        }
        match status {
            Status::Ok => Ok((s, false)),
            Status::PreAuth => Ok((s, true)),
            Status::Bye => Err(Error::Bye(text.text)),
            _ => Err(Error::Protocol(format!(
                "unexpected greeting status {status:?}"
            ))),
        }
    }

    /// Upgrade the connection with STARTTLS (RFC 3501 section 6.2.1, RFC 2595 section 3.1).
    ///
    /// Nothing received before the handshake can be trusted: a man in the middle can add to
    /// the plaintext stream at will. So the only response accepted to STARTTLS is its own
    /// tagged OK, with nothing after it, and every piece of state learnt before TLS
    /// (capabilities, kept completions, untagged data, BYE text, decoder buffer) is dropped
    /// once the handshake is done.
    pub fn start_tls(
        mut self,
        config: std::sync::Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<Session> {
        if self.bye.is_some() || !self.in_flight.is_empty() || self.malformed.is_some() {
            return Err(self.fail(Error::Protocol(
                "unexpected responses from the server before STARTTLS".into(),
            )));
        }
        let deadline = self.command_deadline();
        let tag = self.send_before(&Command::StartTls, deadline)?;
        match self.read_response(deadline)? {
            Response::Tagged(t) if t.tag == tag && self.malformed.is_none() => {
                self.complete(t, "STARTTLS")?;
            }
            other => {
                let what = match other {
                    Response::Tagged(_) if self.malformed.is_some() => "an undecodable line",
                    Response::Tagged(_) => "a reply to another command",
                    Response::Untagged(_) => "an untagged response",
                    Response::Continue(_) => "a continuation request",
                };
                return Err(self.fail(Error::Protocol(format!(
                    "the server sent {what} before the STARTTLS completion; refusing to go on \
                     (a man in the middle may be tampering with the connection)"
                ))));
            }
        }
        if self.decoder.buffered() > 0 {
            // Bytes after the OK, before TLS: a man in the middle injecting plaintext.
            return Err(self.fail(Error::Protocol("server sent data after STARTTLS OK".into())));
        }
        let deadline = self
            .command_deadline()
            .min(Instant::now() + self.timeouts.inactivity);
        self.transport = self.transport.start_tls(config, host, deadline)?;
        self.decoder = ResponseDecoder::new(self.limits);
        self.capabilities.clear();
        self.selected = None;
        self.untagged.clear();
        self.untagged_bytes = 0;
        self.overflowed = false;
        self.in_flight.clear();
        self.done.clear();
        self.malformed = None;
        self.bye = None;
        Ok(self)
    }

    /// The server's capabilities, asking for them if not yet known.
    pub fn capabilities(&mut self) -> Result<&[String]> {
        if self.capabilities.is_empty() {
            self.run(Command::Capability)?;
        }
        Ok(&self.capabilities)
    }

    /// Whether a capability was advertised (case-insensitive). Asks if none are known.
    pub fn has_capability(&mut self, cap: &str) -> bool {
        self.capabilities()
            .map(|c| c.iter().any(|x| x.eq_ignore_ascii_case(cap)))
            .unwrap_or(false)
    }

    /// Whether the server reported an extension ENABLED (`* ENABLED`, RFC 5161) on this
    /// connection: the advertisement alone does not switch anything on.
    pub fn is_enabled(&self, ext: &str) -> bool {
        self.enabled.iter().any(|e| e.eq_ignore_ascii_case(ext))
    }

    /// Forget the capabilities (after login they may change).
    pub fn forget_capabilities(&mut self) {
        self.capabilities.clear();
    }

    pub fn set_utf8(&mut self, utf8: bool) {
        self.decoder.set_utf8(utf8);
    }

    /// Whether mailbox names are UTF-8 on the wire (UTF8=ACCEPT enabled), else modified UTF-7.
    pub fn utf8(&self) -> bool {
        self.decoder.utf8()
    }

    pub fn selected(&self) -> Option<&Selected> {
        self.selected.as_ref()
    }

    /// Whether the server reported changes to the selected mailbox; clears the mark.
    pub fn take_changed(&mut self) -> bool {
        self.selected
            .as_mut()
            .map(|s| std::mem::take(&mut s.changed))
            .unwrap_or(false)
    }

    /// Tagged completions received for tags nobody waited for: a server answering commands
    /// we did not send (for tests: proof that no injected command ran).
    pub fn unclaimed_completions(&self) -> usize {
        self.done.len()
    }

    /// Take in what the server sent while the session sat unused, without waiting for more
    /// than a moment, and say whether the session can still serve a command. Untagged data
    /// (a mailbox update) is kept for the next command as usual; a BYE, the end of the
    /// stream, or anything else (a completion, a continuation request, half a response)
    /// means the server has dropped or lost the connection.
    pub fn check_idle(&mut self) -> bool {
        // A response in progress may need a moment to arrive whole.
        let wait = self.timeouts.inactivity.min(Duration::from_millis(200));
        for _ in 0..1024 {
            if !self.is_reusable() || self.bye.is_some() {
                return false;
            }
            if self.decoder.buffered() == 0 && !self.transport.readable_now() {
                return true;
            }
            match self.poll_response(Instant::now() + wait, false) {
                Ok(Some(Response::Untagged(u))) => self.absorb(u),
                Ok(_) => {
                    self.fail(Error::Protocol(
                        "the server sent something unexpected while the connection was idle".into(),
                    ));
                    return false;
                }
                Err(_) => return false,
            }
        }
        // Still more: a flood. Let the next command deal with it under its own limits.
        true
    }

    /// Whether a password may be sent in clear text (LOGIN, AUTHENTICATE PLAIN) over this
    /// connection: it is protected (TLS, or a tunnel the user chose), or the user explicitly
    /// accepted a connection without TLS ([`Session::allow_clear_text`]).
    pub fn may_send_password(&self) -> bool {
        self.transport.is_protected() || self.clear_text_allowed
    }

    /// Accept sending a password over this connection even without TLS (`--insecure`).
    pub fn allow_clear_text(&mut self) {
        self.clear_text_allowed = true;
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether the session can serve another user: not broken, and no command of the last
    /// one still in flight (its reply would land in the next user's command).
    pub fn is_reusable(&self) -> bool {
        !self.broken && self.in_flight.is_empty()
    }

    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    /// Bytes received from the server so far.
    pub fn bytes_read(&self) -> u64 {
        self.transport.bytes_read()
    }

    /// Let no command end later than `cap` (`None`: each command has its own
    /// [`Timeouts::command`]). Used to bound a whole exchange of several commands, such as
    /// the login.
    pub fn set_deadline_cap(&mut self, cap: Option<Instant>) {
        self.deadline_cap = cap;
    }

    /// The deadline of a command starting now.
    fn command_deadline(&self) -> Instant {
        let own = Instant::now() + self.timeouts.command;
        self.deadline_cap.map_or(own, |cap| cap.min(own))
    }

    /// Run one command to completion.
    pub fn run(&mut self, cmd: Command) -> Result<Completed> {
        self.run_ref(&cmd)
    }

    /// [`Session::run`] without giving the command up (an APPEND's message is not copied).
    pub fn run_ref(&mut self, cmd: &Command) -> Result<Completed> {
        let deadline = self.command_deadline();
        let tag = self.send_before(cmd, deadline)?;
        self.wait_before(&tag, cmd.name(), deadline)
    }

    /// Send several commands at once and wait for all: one round trip instead of N. Each
    /// completion holds the untagged data that arrived after the previous one and before it.
    /// The whole pipeline has one command deadline.
    pub fn pipeline(&mut self, cmds: &[Command]) -> Result<Vec<Result<Completed>>> {
        let deadline = self.command_deadline();
        let mut tags = Vec::with_capacity(cmds.len());
        for c in cmds {
            tags.push((self.send_before(c, deadline)?, c.name()));
        }
        let mut out = Vec::with_capacity(cmds.len());
        for (tag, name) in tags {
            match self.wait_before(&tag, name, deadline) {
                // The commands after this one are still in flight: nobody will wait for their
                // replies, so the connection cannot be used again.
                Err(e) if e.is_fatal_to_connection() => {
                    return Err(if self.in_flight.is_empty() {
                        e
                    } else {
                        self.fail(e)
                    })
                }
                r => out.push(r),
            }
        }
        Ok(out)
    }

    /// Send a command (handling synchronising literals) and return its tag.
    pub fn send(&mut self, cmd: &Command) -> Result<String> {
        let deadline = self.command_deadline();
        self.send_before(cmd, deadline)
    }

    fn send_before(&mut self, cmd: &Command, deadline: Instant) -> Result<String> {
        if self.broken {
            return Err(Error::Protocol("connection is broken".into()));
        }
        let tag = format!("A{}", self.next_tag);
        self.next_tag += 1;
        self.in_flight.insert(tag.clone());
        let literal_plus = self
            .capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case("LITERAL+"));
        let enc = cmd
            .encode(&tag, literal_plus)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        if !enc.sensitive {
            log::trace!("C: {}", crate::imap::codec::parse::excerpt(&enc.chunks[0]));
        } else {
            log::trace!("C: {tag} {} <credentials hidden>", cmd.name());
        }
        let n = enc.chunks.len();
        for (i, chunk) in enc.chunks.iter().enumerate() {
            self.write(chunk, deadline)?;
            if i + 1 < n {
                self.wait_continuation(&tag, cmd.name(), deadline)?;
            }
        }
        Ok(tag)
    }

    /// Wait for `tag` to complete, collecting untagged data on the way.
    pub fn wait(&mut self, tag: &str, name: &'static str) -> Result<Completed> {
        let deadline = self.command_deadline();
        self.wait_before(tag, name, deadline)
    }

    fn wait_before(
        &mut self,
        tag: &str,
        name: &'static str,
        deadline: Instant,
    ) -> Result<Completed> {
        let tagged = loop {
            if let Some(t) = self.done.remove(tag) {
                break t;
            }
            match self.read_response(deadline)? {
                Response::Tagged(t) if t.tag == tag => break t,
                Response::Tagged(t) => self.keep_completion(t),
                Response::Untagged(u) => self.absorb(u),
                Response::Continue(_) => {
                    return Err(self.fail(Error::Protocol("unexpected continuation request".into())))
                }
            }
        };
        self.complete(tagged, name)
    }

    fn complete(&mut self, t: Tagged, name: &'static str) -> Result<Completed> {
        self.in_flight.remove(&t.tag);
        if let Some(Code::Capability(caps)) = &t.text.code {
            self.capabilities = caps.clone();
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

    fn wait_continuation(
        &mut self,
        tag: &str,
        name: &'static str,
        deadline: Instant,
    ) -> Result<()> {
        loop {
            match self.read_response(deadline)? {
                Response::Continue(_) => return Ok(()),
                Response::Tagged(t) if t.tag == tag => {
                    // The server refused the command before its literal.
                    return self.complete(t, name).and_then(|_| {
                        Err(Error::Protocol(
                            "command completed before its literal was sent".into(),
                        ))
                    });
                }
                Response::Tagged(t) => self.keep_completion(t),
                Response::Untagged(u) => self.absorb(u),
            }
        }
    }

    /// Send raw bytes (a SASL response line) without a tag.
    pub fn send_line(&mut self, line: &[u8]) -> Result<()> {
        let deadline = self.command_deadline();
        self.write(line, deadline)?;
        self.write(b"\r\n", deadline)
    }

    /// Read the next response (for SASL exchanges and IDLE): untagged data is absorbed and
    /// also returned.
    pub fn next_response(&mut self) -> Result<Response> {
        let deadline = self.command_deadline();
        let r = self.read_response(deadline)?;
        match &r {
            Response::Untagged(u) => self.observe(u),
            // The caller takes this completion itself.
            Response::Tagged(t) => drop(self.in_flight.remove(&t.tag)),
            Response::Continue(_) => {}
        }
        Ok(r)
    }

    /// Say LOGOUT, briefly; errors are irrelevant at this point.
    pub fn logout(mut self) {
        self.timeouts.inactivity = Duration::from_secs(2);
        self.timeouts.command = Duration::from_secs(2);
        let _ = self.run(Command::Logout);
        self.transport.shutdown();
    }

    /// Read until one complete response is decoded.
    fn read_response(&mut self, deadline: Instant) -> Result<Response> {
        match self.poll_response(deadline, true)? {
            Some(r) => Ok(r),
            None => Err(self.fail(Error::Timeout {
                what: "the server's reply".into(),
            })),
        }
    }

    /// Read until one complete response is decoded or `deadline` passes. A deadline that
    /// passes is fatal to the connection only if `fatal` (a reply was due); while idling it
    /// just means nothing happened.
    fn poll_response(&mut self, deadline: Instant, fatal: bool) -> Result<Option<Response>> {
        self.reading = true;
        loop {
            match self.decoder.next_response() {
                Ok(Some(Response::Tagged(t)))
                    if !self.in_flight.contains(&t.tag) || self.done.contains_key(&t.tag) =>
                {
                    // A completion for a command never sent (or completed twice): injected,
                    // or a server that lost track. Either way its replies cannot be matched.
                    return Err(self.fail(Error::Protocol(format!(
                        "the server completed a command that was not in flight ({})",
                        crate::imap::codec::parse::excerpt(t.tag.as_bytes())
                    ))));
                }
                Ok(Some(r)) => {
                    log_response(&r);
                    return Ok(Some(r));
                }
                Ok(None) => {}
                Err(e) if e.is_recoverable() => {
                    log::warn!("{e}");
                    self.malformed.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(self.fail(Error::Protocol(e.to_string()))),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait_until = if fatal {
                deadline.min(now + self.timeouts.inactivity)
            } else {
                deadline
            };
            let n = match self.transport.read(&mut self.read_buf, wait_until) {
                Ok(n) => n,
                Err(Error::Timeout { .. }) if !fatal || Instant::now() < deadline => {
                    if fatal {
                        // Silence longer than the inactivity timeout while a reply is due.
                        return Err(self.fail(Error::Timeout {
                            what: "the server's reply".into(),
                        }));
                    }
                    return Ok(None);
                }
                Err(e) => return Err(self.fail(e)),
            };
            if n == 0 {
                let why = self
                    .bye
                    .clone()
                    .unwrap_or_else(|| "connection closed by the server".into());
                return Err(self.fail(Error::Bye(why)));
            }
            self.decoder.feed(&self.read_buf[..n]);
        }
    }

    fn write(&mut self, data: &[u8], deadline: Instant) -> Result<()> {
        if self.reading {
            self.round_trips += 1;
            self.reading = false;
        }
        match self.transport.write_all(data, deadline) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.broken = true;
        self.transport.shutdown();
        e
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
