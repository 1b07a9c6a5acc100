//! Exchanges beyond one command and its reply: APPEND streamed from a file, FETCH responses
//! handed over one by one as they are decoded, IDLE. Each is a loop over the one step
//! function ([`Session::drive`] or [`Session::next_event`]).

use super::*;

impl Session {
    /// APPEND a message of `len` bytes that `next` hands over in chunks (from a spooled file),
    /// so it is never held whole in memory. A chunk source that fails, or that yields more or
    /// fewer bytes than `len`, leaves the literal unfinished: the connection is dropped.
    pub fn append_streamed(
        &mut self,
        mailbox: &MailboxName,
        flags: &[Flag],
        date: Option<&str>,
        len: u64,
        next: &mut dyn FnMut() -> std::io::Result<Option<Vec<u8>>>,
    ) -> Result<Completed> {
        // APPENDLIMIT (RFC 7889): a message the server said it will refuse is refused here,
        // before any byte of it goes up.
        if let Some(limit) = self.core.capabilities().append_limit() {
            if len > limit {
                return Err(Error::MessageTooLarge { len, limit });
            }
        }
        let deadline = self.command_deadline();
        let literal_plus = self.core.capabilities().literals().non_synchronising(len);
        let tag = self.core.begin_raw()?;
        let prefix = crate::imap::codec::append_prefix(
            tag.as_str(),
            mailbox,
            flags,
            date,
            len,
            literal_plus,
        );
        let prefix = match prefix {
            Ok(p) => p,
            Err(e) => {
                self.core.forget(&tag);
                return Err(Error::InvalidInput(e.to_string()));
            }
        };
        log::trace!("C: {}", crate::imap::codec::parse::excerpt(&prefix));
        self.write(&prefix, deadline)?;
        if !literal_plus {
            if let Reached::Completed(t) =
                self.drive(&tag, Until::Continuation, deadline, Sink::Hold)?
            {
                // The server refused the command before its literal.
                return self.complete(t, "APPEND").and_then(|_| {
                    Err(Error::Protocol(
                        "command completed before its literal was sent".into(),
                    ))
                });
            }
        }
        let mut sent = 0u64;
        loop {
            let chunk = match next() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(self.fail(Error::io("reading the message to append", e))),
            };
            sent += chunk.len() as u64;
            if sent > len {
                return Err(self.fail(Error::Protocol("the message grew while it was sent".into())));
            }
            self.write(&chunk, deadline)?;
        }
        if sent != len {
            return Err(self.fail(Error::Protocol(
                "the message shrank while it was sent".into(),
            )));
        }
        self.write(b"\r\n", deadline)?;
        self.wait_before(&tag, "APPEND", deadline)
    }

    /// [`Session::wait`], handing each untagged response to `each` as soon as it is decoded
    /// instead of collecting it, so that a long FETCH is consumed while it streams in.
    /// Responses that change the selected mailbox are applied to it as usual. Untagged data
    /// that arrived before this call (while waiting for other tags) is in the completion.
    pub fn wait_each(
        &mut self,
        tag: &Tag,
        name: &'static str,
        mut each: impl FnMut(Untagged),
    ) -> Result<Completed> {
        let deadline = self.command_deadline();
        match self.drive(tag, Until::Completion, deadline, Sink::Each(&mut each))? {
            Reached::Completed(t) => self.complete(t, name),
            Reached::Continue => {
                Err(self.fail(Error::Protocol("unexpected continuation request".into())))
            }
        }
    }

    /// IDLE (RFC 2177) until the server reports something or `max` passes, then DONE.
    /// Returns the untagged responses received (empty if nothing happened).
    pub fn idle(&mut self, max: Duration) -> Result<Vec<Untagged>> {
        let tag = self.send(&Command::Idle)?;
        let deadline = self
            .command_deadline()
            .min(Instant::now() + self.timeouts.inactivity);
        if let Reached::Completed(t) =
            self.drive(&tag, Until::Continuation, deadline, Sink::Hold)?
        {
            // Refused (or ended at once): report it as the command's failure.
            return self.complete(t, "IDLE").map(|c| c.untagged);
        }
        let until = Instant::now() + max;
        while !self.core.holds_untagged() {
            match self.next_event(until, false)? {
                None => break,
                Some(Event::Untagged { response, .. }) => self.core.hold(response),
                Some(Event::Tagged(t)) if t.tag == tag => {
                    // The server ended IDLE itself.
                    return self.complete(t, "IDLE").map(|c| c.untagged);
                }
                Some(other) => {
                    return Err(self.fail(Error::Protocol(format!(
                        "unexpected during IDLE: {other:?}"
                    ))))
                }
            }
        }
        let deadline = self.command_deadline();
        self.core.queue(b"DONE\r\n");
        self.flush(deadline)?;
        self.wait_before(&tag, "IDLE", deadline).map(|c| c.untagged)
    }
}
