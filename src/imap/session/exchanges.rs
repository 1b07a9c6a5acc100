//! Exchanges beyond one command and its reply: APPEND streamed from a file, FETCH responses
//! handed over one by one as they are decoded, IDLE.

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
        if self.broken {
            return Err(Error::Protocol("connection is broken".into()));
        }
        let deadline = self.command_deadline();
        let tag = format!("A{}", self.next_tag);
        self.next_tag += 1;
        let literal_plus = self
            .capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case("LITERAL+"));
        let prefix =
            crate::imap::codec::append_prefix(&tag, mailbox, flags, date, len, literal_plus)
                .map_err(|e| Error::InvalidInput(e.to_string()))?;
        self.in_flight.insert(tag.clone());
        log::trace!("C: {}", crate::imap::codec::parse::excerpt(&prefix));
        self.write(&prefix, deadline)?;
        if !literal_plus {
            self.wait_continuation(&tag, "APPEND", deadline)?;
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
        tag: &str,
        name: &'static str,
        mut each: impl FnMut(Untagged),
    ) -> Result<Completed> {
        let deadline = self.command_deadline();
        let tagged = loop {
            if let Some(t) = self.done.remove(tag) {
                break t;
            }
            match self.read_response(deadline)? {
                Response::Tagged(t) if t.tag == tag => break t,
                Response::Tagged(t) => self.keep_completion(t),
                Response::Untagged(u) => {
                    self.observe(&u);
                    each(u);
                }
                Response::Continue(_) => {
                    return Err(self.fail(Error::Protocol("unexpected continuation request".into())))
                }
            }
        };
        self.complete(tagged, name)
    }

    /// IDLE (RFC 2177) until the server reports something or `max` passes, then DONE.
    /// Returns the untagged responses received (empty if nothing happened).
    pub fn idle(&mut self, max: Duration) -> Result<Vec<Untagged>> {
        let tag = self.send(&Command::Idle)?;
        let deadline = self
            .command_deadline()
            .min(Instant::now() + self.timeouts.inactivity);
        loop {
            match self.read_response(deadline)? {
                Response::Continue(_) => break,
                Response::Tagged(t) if t.tag == tag => {
                    // Refused (or ended at once): report it as the command's failure.
                    return self.complete(t, "IDLE").map(|c| c.untagged);
                }
                Response::Tagged(t) => self.keep_completion(t),
                Response::Untagged(u) => self.absorb(u),
            }
        }
        let until = Instant::now() + max;
        while self.untagged.is_empty() {
            match self.poll_response(until, false)? {
                None => break,
                Some(Response::Untagged(u)) => self.absorb(u),
                Some(Response::Tagged(t)) if t.tag == tag => {
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
        self.write(b"DONE\r\n", deadline)?;
        self.wait_before(&tag, "IDLE", deadline).map(|c| c.untagged)
    }
}
