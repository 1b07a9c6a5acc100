//! One connection: the blocking driver of a sans-I/O [`Core`].
//!
//! The [`Core`] (`core.rs`) holds the protocol state: tags, capabilities, the selected mailbox,
//! untagged data held for the next completion, the literal handshake. A [`Session`] owns the
//! [`Transport`] and the clock, and moves bytes between them in one step function,
//! [`Session::next_event`]: write what the core queued, decode what is buffered, else read
//! once more under the deadline. Every exchange (a command and its reply, a pipeline, the
//! literal handshake, FETCH responses handed over one by one, IDLE, SASL) is a loop over that
//! step, and the loops that wait for a tag are one, [`Session::drive`].
//!
//! Commands are sent with [`Session::send`], which returns the tag, and completed with
//! [`Session::wait`]; several can be in flight at once ([`Session::pipeline`]), and replies
//! are matched by tag. Untagged responses are collected in arrival order and handed to whoever
//! waits next; those that change the selected mailbox are applied to [`Selected`] wherever
//! they arrive, and come out of the core as typed [`MailboxEvent`]s.
//!
//! Every command has one deadline, [`Timeouts::command`] from when it is sent, for its writes
//! and its reply together (a pipeline shares one), optionally capped further by
//! [`Session::set_deadline_cap`] (the whole login shares one). Within it, every read also waits
//! at most the inactivity timeout, renewed while bytes keep arriving (over TLS: while records
//! keep arriving). The transport enforces each deadline per socket call, so a trickling peer
//! cannot stretch it. After a fatal error (I/O, timeout, undecodable stream, BYE) the session
//! is marked broken and must be dropped.
//!
//! Files: `core` (the state machine), `capabilities` (the typed capability set), `untagged` (typed mailbox events, applying untagged
//! responses), `select` (SELECT/EXAMINE, `select_at` for a named UIDVALIDITY, UNSELECT),
//! `exchanges` (streamed APPEND, FETCH responses one by one, IDLE); this file holds the
//! driver: start, sending, waiting, reading.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::imap::codec::{Command, Limits, SelectSync};
use crate::imap::transport::{Transport, WireBytes};
use crate::imap::types::*;

mod capabilities;
pub mod core;
mod exchanges;
mod select;
mod untagged;

pub use self::capabilities::{Capabilities, Capability};
pub use self::core::{Core, Event};
pub use crate::imap::types::Tag;
pub use select::Access;
pub use untagged::MailboxEvent;

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
}

impl Selected {
    /// A mailbox being selected: nothing known yet but its name.
    pub fn new(mailbox: MailboxName, read_only: bool) -> Selected {
        Selected {
            mailbox,
            read_only,
            uidvalidity: None,
            uidnext: None,
            exists: 0,
            highest_modseq: None,
            permanent_flags: None,
        }
    }
}

/// One authenticated (or about to be) IMAP connection.
pub struct Session {
    transport: Transport,
    core: Core,
    timeouts: Timeouts,
    read_buf: Vec<u8>,
    /// Round trips: times the client turned from reading to writing (pipelined commands
    /// count once), for tests and benchmarks.
    round_trips: u64,
    /// Whether the last socket operation was a read (or nothing yet).
    reading: bool,
    /// No command's deadline goes beyond this (see [`Session::set_deadline_cap`]).
    deadline_cap: Option<Instant>,
    /// See [`Session::allow_clear_text`].
    clear_text_allowed: bool,
}

/// What [`Session::drive`] waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The tag's completion.
    Completion,
    /// A continuation request (or the tag's completion, which refuses the command).
    Continuation,
}

/// Where [`Session::drive`] stopped.
enum Reached {
    Completed(Tagged),
    Continue,
}

/// Where untagged responses go while [`Session::drive`] waits: held for the completion, or
/// handed to the caller at once.
enum Sink<'a> {
    Hold,
    Each(&'a mut dyn FnMut(Untagged)),
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
            core: Core::new(limits),
            timeouts,
            read_buf: vec![0; 64 * 1024],
            round_trips: 0,
            reading: true,
            deadline_cap: None,
            clear_text_allowed: false,
        };
        let greeting = loop {
            match s.read_event(deadline)? {
                Event::Untagged {
                    response: Untagged::Status { status, text },
                    ..
                } => break (status, text),
                Event::Untagged { response, .. } => s.core.hold(response),
                other => return Err(Error::Protocol(format!("unexpected greeting: {other:?}"))),
            }
        };
        let (status, text) = greeting;
        s.core.greeted(&text);
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
        if self.core.bye.is_some() || self.core.has_in_flight() || self.core.has_malformed() {
            return Err(self.fail(Error::Protocol(
                "unexpected responses from the server before STARTTLS".into(),
            )));
        }
        let deadline = self.command_deadline();
        let tag = self.send_before(&Command::StartTls, deadline)?;
        match self.read_event(deadline)? {
            Event::Tagged(t) if t.tag == tag && !self.core.has_malformed() => {
                self.complete(t, "STARTTLS")?;
            }
            other => {
                let what = match other {
                    Event::Tagged(_) if self.core.has_malformed() => "an undecodable line",
                    Event::Tagged(_) => "a reply to another command",
                    Event::Untagged { .. } => "an untagged response",
                    Event::Continue(_) => "a continuation request",
                };
                return Err(self.fail(Error::Protocol(format!(
                    "the server sent {what} before the STARTTLS completion; refusing to go on \
                     (a man in the middle may be tampering with the connection)"
                ))));
            }
        }
        if self.core.buffered() > 0 {
            // Bytes after the OK, before TLS: a man in the middle injecting plaintext.
            return Err(self.fail(Error::Protocol("server sent data after STARTTLS OK".into())));
        }
        let deadline = self
            .command_deadline()
            .min(Instant::now() + self.timeouts.inactivity);
        self.transport = self.transport.start_tls(config, host, deadline)?;
        self.core.reset_for_tls();
        Ok(self)
    }

    /// Turn on COMPRESS=DEFLATE (RFC 4978): after the server's tagged OK every byte in both
    /// directions is a deflate stream. A NO leaves the connection as it was (the error is
    /// returned and is not fatal); anything else is.
    pub fn start_compress(&mut self) -> Result<()> {
        if self.core.has_in_flight() {
            return Err(Error::Internal("COMPRESS with a command in flight"));
        }
        let deadline = self.command_deadline();
        let tag = self.send_before(&Command::CompressDeflate, deadline)?;
        loop {
            match self.read_event(deadline)? {
                Event::Tagged(t) if t.tag == tag => {
                    self.complete(t, "COMPRESS")?;
                    break;
                }
                Event::Untagged { response, .. } => self.core.hold(response),
                _ => {
                    return Err(self.fail(Error::Protocol(
                        "unexpected reply while starting compression".into(),
                    )))
                }
            }
        }
        // Whatever followed the OK in the same read is already compressed.
        let leftover = self.core.take_buffered();
        self.transport.compress(leftover)
    }

    /// Bytes on the wire so far and what compression saved ([`WireBytes`]).
    pub fn wire(&self) -> WireBytes {
        self.transport.wire()
    }

    /// The server's capabilities, asking for them if not yet known.
    pub fn capabilities(&mut self) -> Result<&[String]> {
        if self.core.capabilities.is_empty() {
            self.run(Command::Capability)?;
        }
        Ok(self.core.capabilities.names())
    }

    /// The capabilities as a typed set, asking for them if not yet known.
    pub fn capability_set(&mut self) -> Result<&Capabilities> {
        self.capabilities()?;
        Ok(self.core.capabilities())
    }

    /// Whether a capability was advertised (case-insensitive). Asks if none are known.
    pub fn has_capability(&mut self, cap: &str) -> bool {
        self.capability_set().is_ok_and(|c| c.contains(cap))
    }

    /// [`Session::has_capability`] for the capabilities the engine branches on: a bit test.
    pub fn supports(&mut self, cap: Capability) -> bool {
        self.capability_set().is_ok_and(|c| c.has(cap))
    }

    /// Stop using an advertised extension on this connection: the server answered BAD to it.
    pub fn withdraw(&mut self, cap: Capability) {
        if self.capabilities().is_ok() {
            self.core.capabilities.withdraw(cap);
        }
    }

    /// Whether the server reported an extension ENABLED (`* ENABLED`, RFC 5161) on this
    /// connection: the advertisement alone does not switch anything on.
    pub fn is_enabled(&self, ext: &str) -> bool {
        self.core.is_enabled(ext)
    }

    /// Forget the capabilities (after login they may change).
    pub fn forget_capabilities(&mut self) {
        self.core.capabilities = Capabilities::default();
    }

    pub fn set_utf8(&mut self, utf8: bool) {
        self.core.set_utf8(utf8);
    }

    /// Whether mailbox names are UTF-8 on the wire (UTF8=ACCEPT enabled), else modified UTF-7.
    pub fn utf8(&self) -> bool {
        self.core.utf8()
    }

    pub fn selected(&self) -> Option<&Selected> {
        self.core.selected()
    }

    /// Tagged completions received for tags nobody waited for: a server answering commands
    /// we did not send (for tests: proof that no injected command ran).
    pub fn unclaimed_completions(&self) -> usize {
        self.core.kept_completions()
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
            if !self.is_reusable() || self.core.bye.is_some() {
                return false;
            }
            if self.core.buffered() == 0 && !self.transport.readable_now() {
                return true;
            }
            match self.next_event(Instant::now() + wait, false) {
                Ok(Some(Event::Untagged { response, .. })) => self.core.hold(response),
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
        self.core.is_broken()
    }

    /// Whether the session can serve another user: not broken, and no command of the last
    /// one still in flight (its reply would land in the next user's command).
    pub fn is_reusable(&self) -> bool {
        !self.core.is_broken() && !self.core.has_in_flight()
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
        // One write for the whole pipeline (one segment where it fits), not one per command.
        for c in cmds {
            tags.push((self.queue_before(c, deadline)?, c.name()));
        }
        self.flush(deadline)?;
        let mut out = Vec::with_capacity(cmds.len());
        for (tag, name) in tags {
            match self.wait_before(&tag, name, deadline) {
                // The commands after this one are still in flight: nobody will wait for their
                // replies, so the connection cannot be used again.
                Err(e) if e.is_fatal_to_connection() => {
                    return Err(if self.core.has_in_flight() {
                        self.fail(e)
                    } else {
                        e
                    })
                }
                r => out.push(r),
            }
        }
        Ok(out)
    }

    /// Send a command (handling synchronising literals) and return its tag.
    pub fn send(&mut self, cmd: &Command) -> Result<Tag> {
        let deadline = self.command_deadline();
        self.send_before(cmd, deadline)
    }

    fn send_before(&mut self, cmd: &Command, deadline: Instant) -> Result<Tag> {
        let tag = self.queue_before(cmd, deadline)?;
        self.flush(deadline)?;
        Ok(tag)
    }

    /// Queue a command's bytes, to be written by the next flush, and return its tag; one with
    /// a synchronising literal is written at once, up to the server's continuation each time.
    fn queue_before(&mut self, cmd: &Command, deadline: Instant) -> Result<Tag> {
        let tag = self.core.begin(cmd)?;
        if self.core.awaits_continuation(&tag) {
            self.flush(deadline)?;
        }
        // Each continuation request queues (and the step writes) the next chunk.
        while self.core.awaits_continuation(&tag) {
            if let Reached::Completed(t) =
                self.drive(&tag, Until::Continuation, deadline, Sink::Hold)?
            {
                // The server refused the command before its literal.
                return self.complete(t, cmd.name()).and_then(|_| {
                    Err(Error::Protocol(
                        "command completed before its literal was sent".into(),
                    ))
                });
            }
        }
        Ok(tag)
    }

    /// Wait for `tag` to complete, collecting untagged data on the way.
    pub fn wait(&mut self, tag: &Tag, name: &'static str) -> Result<Completed> {
        let deadline = self.command_deadline();
        self.wait_before(tag, name, deadline)
    }

    fn wait_before(
        &mut self,
        tag: &Tag,
        name: &'static str,
        deadline: Instant,
    ) -> Result<Completed> {
        match self.drive(tag, Until::Completion, deadline, Sink::Hold)? {
            Reached::Completed(t) => self.complete(t, name),
            Reached::Continue => {
                Err(self.fail(Error::Protocol("unexpected continuation request".into())))
            }
        }
    }

    /// The one loop that waits for a tag: steps until `tag` completes (or, for
    /// [`Until::Continuation`], the server asks for more), keeping other tags' completions for
    /// their waiters and passing untagged data to `sink`.
    fn drive(
        &mut self,
        tag: &Tag,
        until: Until,
        deadline: Instant,
        mut sink: Sink<'_>,
    ) -> Result<Reached> {
        loop {
            if let Some(t) = self.core.take_kept(tag) {
                return Ok(Reached::Completed(t));
            }
            match self.read_event(deadline)? {
                Event::Tagged(t) if t.tag == *tag => return Ok(Reached::Completed(t)),
                Event::Tagged(t) => self.core.keep_completion(t),
                Event::Untagged { response, .. } => match &mut sink {
                    Sink::Hold => self.core.hold(response),
                    Sink::Each(each) => each(response),
                },
                Event::Continue(_) if until == Until::Continuation => return Ok(Reached::Continue),
                Event::Continue(_) => {
                    return Err(self.fail(Error::Protocol("unexpected continuation request".into())))
                }
            }
        }
    }

    fn complete(&mut self, t: Tagged, name: &'static str) -> Result<Completed> {
        let r = self.core.complete(t, name);
        if self.core.is_broken() {
            self.transport.shutdown();
        }
        r
    }

    /// Send raw bytes (a SASL response line) without a tag.
    pub fn send_line(&mut self, line: &[u8]) -> Result<()> {
        let deadline = self.command_deadline();
        self.core.queue(line);
        self.core.queue(b"\r\n");
        self.flush(deadline)
    }

    /// Read the next response (for SASL exchanges and IDLE): untagged data is applied to the
    /// state and returned, not held.
    pub fn next_response(&mut self) -> Result<Response> {
        let deadline = self.command_deadline();
        Ok(match self.read_event(deadline)? {
            Event::Untagged { response, .. } => Response::Untagged(response),
            Event::Tagged(t) => {
                // The caller takes this completion itself.
                self.core.forget(&t.tag);
                Response::Tagged(t)
            }
            Event::Continue(text) => Response::Continue(text),
        })
    }

    /// Wait as `timeouts` say from now on (a session opened under shorter ones, to learn
    /// quickly whether the server is there, serves under the usual ones afterwards).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// Say LOGOUT, briefly; errors are irrelevant at this point.
    pub fn logout(mut self) {
        self.timeouts.inactivity = Duration::from_secs(2);
        self.timeouts.command = Duration::from_secs(2);
        let _ = self.run(Command::Logout);
        self.transport.shutdown();
    }

    /// The next event, which is due before `deadline`: running out of time is fatal.
    fn read_event(&mut self, deadline: Instant) -> Result<Event> {
        match self.next_event(deadline, true)? {
            Some(e) => Ok(e),
            None => Err(self.fail(Error::Timeout {
                what: "the server's reply".into(),
            })),
        }
    }

    /// The step function: decode one event from what is buffered, else read once more, until
    /// an event comes or `deadline` passes. Bytes the core queues on the way (the next chunk
    /// of a literal) are written at once. A deadline that passes is fatal to the connection
    /// only if `fatal` (a reply was due); while idling it just means nothing happened.
    fn next_event(&mut self, deadline: Instant, fatal: bool) -> Result<Option<Event>> {
        self.reading = true;
        loop {
            match self.core.step() {
                Ok(Some(e)) => {
                    if matches!(e, Event::Continue(_)) {
                        self.flush(deadline)?;
                    }
                    return Ok(Some(e));
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
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
                    .core
                    .bye
                    .clone()
                    .unwrap_or_else(|| "connection closed by the server".into());
                return Err(self.fail(Error::Bye(why)));
            }
            self.core.feed(&self.read_buf[..n]);
        }
    }

    /// Write what the core queued.
    fn flush(&mut self, deadline: Instant) -> Result<()> {
        let out = self.core.take_outgoing();
        if out.is_empty() {
            return Ok(());
        }
        self.write(&out, deadline)
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
        self.transport.shutdown();
        self.core.fail(e)
    }
}
