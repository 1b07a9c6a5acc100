//! Selecting mailboxes: SELECT/EXAMINE (with CONDSTORE or QRESYNC), reselecting to learn the
//! current UIDVALIDITY, leaving a mailbox without expunging (UNSELECT).
//!
//! Two kinds of callers. Those that learn a mailbox's current generation (a listing, a
//! refresh, a search) reselect and read [`Selected::uidvalidity`]. Those that act on messages
//! they listed earlier (reads, streams, flag edits, moves, removals) name the generation they
//! listed them in and call [`Session::select_at`]: it answers with the selection only when the
//! mailbox is at that generation, else with [`Error::ValidityChanged`], so a UID of one
//! generation never reaches a command of another.

use super::*;

/// What a selection is for: reading (EXAMINE does; a read-write selection serves too, since
/// reads use BODY.PEEK) or changing messages (SELECT, and the server must grant read-write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Session {
    /// Select `mailbox` for `access` at the generation the caller means, `validity`, reusing
    /// the current selection when it fits. A session that selected the mailbox long ago may
    /// hold an older generation than the caller: then it selects afresh before concluding that
    /// the caller's generation is gone ([`Error::ValidityChanged`]). For [`Access::Write`] a
    /// mailbox the server opens read-only is [`Error::NotPermitted`].
    pub fn select_at(
        &mut self,
        mailbox: &MailboxName,
        validity: UidValidity,
        access: Access,
    ) -> Result<&Selected> {
        let read_only = access == Access::Read;
        let mut current = match self.select(mailbox, read_only) {
            Ok(sel) => sel.uidvalidity,
            // A session whose selected mailbox another client deleted can refuse the next
            // SELECT/EXAMINE once (Dovecot: "Mailbox was deleted under us"); the mailbox may
            // exist again.
            Err(Error::No { .. }) => self.reselect(mailbox, read_only)?.uidvalidity,
            Err(e) => return Err(e),
        };
        if current.is_some_and(|v| v != validity) {
            current = self.reselect(mailbox, read_only)?.uidvalidity;
        }
        match current {
            Some(v) if v == validity => {}
            Some(found) => {
                return Err(Error::ValidityChanged {
                    mailbox: mailbox.to_string(),
                    expected: validity,
                    found,
                })
            }
            None => return Err(no_uidvalidity(mailbox)),
        }
        let sel = self
            .core
            .selected
            .as_ref()
            .ok_or(Error::Internal("a selected mailbox without its state"))?;
        if access == Access::Write && sel.read_only {
            return Err(Error::NotPermitted(format!(
                "{mailbox} is read-only on the server"
            )));
        }
        Ok(sel)
    }

    /// The selection of `mailbox` just made (by [`Session::reselect_then`] or
    /// [`Session::select_with`]) and its UIDVALIDITY, which a server must send with every
    /// successful SELECT/EXAMINE (RFC 3501 section 6.3.1): without it, [`Error::BadReply`].
    pub fn just_selected(&self, mailbox: &MailboxName) -> Result<(&Selected, UidValidity)> {
        let sel = self
            .core
            .selected
            .as_ref()
            .ok_or(Error::Internal("no mailbox selected after SELECT"))?;
        let validity = sel.uidvalidity.ok_or_else(|| no_uidvalidity(mailbox))?;
        Ok((sel, validity))
    }

    /// Select (read-write) or examine (read-only) a mailbox, unless it already is. A read-write
    /// selection serves a read-only request too (reads use BODY.PEEK, so nothing changes);
    /// a read-only one never serves a request to write.
    pub fn select(&mut self, mailbox: &MailboxName, read_only: bool) -> Result<&Selected> {
        let current = self
            .core
            .selected
            .as_ref()
            .is_some_and(|s| &s.mailbox == mailbox && (!s.read_only || read_only));
        if current {
            return self
                .core
                .selected
                .as_ref()
                .ok_or(Error::Internal("a selected mailbox without its state"));
        }
        self.reselect(mailbox, read_only)
    }

    /// Leave the selected mailbox without expunging anything: UNSELECT where offered, else
    /// EXAMINE of INBOX (never CLOSE, which expunges). Servers refuse to DELETE or RENAME a
    /// mailbox a session has open (Courier).
    pub fn unselect(&mut self) -> Result<()> {
        if self.core.selected.is_none() {
            return Ok(());
        }
        if self.supports(Capability::Unselect) {
            // The core forgets the selection when UNSELECT completes.
            return self.run(Command::Unselect).map(drop);
        }
        self.reselect(&MailboxName::from_utf8("INBOX", false), true)
            .map(drop)
    }

    /// Select or examine a mailbox even if it is selected already: the way to learn its
    /// current UIDVALIDITY (another client may have deleted and recreated it meanwhile).
    pub fn reselect(&mut self, mailbox: &MailboxName, read_only: bool) -> Result<&Selected> {
        self.reselect_then(mailbox, read_only, None)?;
        self.core
            .selected
            .as_ref()
            .ok_or(Error::Internal("no mailbox selected after SELECT"))
    }

    /// [`Session::reselect`], with `then` pipelined behind the SELECT/EXAMINE in the same round
    /// trip (it runs only if the selection succeeds). Returns `then`'s completion.
    pub fn reselect_then(
        &mut self,
        mailbox: &MailboxName,
        read_only: bool,
        then: Option<Command>,
    ) -> Result<Option<Result<Completed>>> {
        let sync = self.select_sync();
        let then: Vec<Command> = then.into_iter().collect();
        let (_, results) = self.select_with(mailbox, read_only, sync, &then)?;
        Ok(results.into_iter().next())
    }

    /// [`Session::reselect_then`] with `then`'s untagged responses handed to `each` as they
    /// are decoded instead of collected, so that a listing of a million messages is never
    /// held whole. Returns `then`'s completion (its untagged data is only what arrived
    /// before it was waited for; `each` has seen the rest).
    pub fn reselect_each(
        &mut self,
        mailbox: &MailboxName,
        read_only: bool,
        then: &Command,
        each: &mut dyn FnMut(Untagged),
    ) -> Result<Result<Completed>> {
        let sync = self.select_sync();
        let select = Command::Select {
            mailbox: mailbox.clone(),
            read_only,
            sync,
        };
        let sent = self
            .send(&select)
            .and_then(|s| self.send(then).map(|t| (s, t)));
        let (select_tag, then_tag) = match sent {
            Ok(tags) => tags,
            Err(e) => {
                self.core.selected = None;
                return Err(e);
            }
        };
        // As in [`Session::pipeline`]: a fatal error with a command still in flight leaves
        // nobody to read its reply, so the connection is given up.
        let fatal = |s: &mut Session, e: Error| {
            s.core.selected = None;
            if s.core.has_in_flight() {
                s.fail(e)
            } else {
                e
            }
        };
        let selected = match self.wait(&select_tag, select.name()) {
            Err(e) if e.is_fatal_to_connection() => return Err(fatal(self, e)),
            r => r,
        };
        let listed = match self.wait_each(&then_tag, then.name(), each) {
            Err(e) if e.is_fatal_to_connection() => return Err(fatal(self, e)),
            r => r,
        };
        selected.map(|_| listed)
    }

    /// The change reports a selection with nothing to resync from asks for: CONDSTORE where
    /// the server offers it (so that replies carry MODSEQs), else none.
    pub fn select_sync(&mut self) -> SelectSync {
        if self.supports(Capability::CondStore) {
            SelectSync::CondStore
        } else {
            SelectSync::Plain
        }
    }

    /// SELECT/EXAMINE with the given change-report parameters (`QRESYNC` needs
    /// `ENABLE QRESYNC` first: see [`Session::is_enabled`]), with `then` pipelined behind it in
    /// the same round trip. Returns the selection's own completion (with a QRESYNC
    /// selection, its untagged data holds `VANISHED (EARLIER)` and the changed messages'
    /// FETCH responses) and the completions of `then`.
    pub fn select_with(
        &mut self,
        mailbox: &MailboxName,
        read_only: bool,
        sync: SelectSync,
        then: &[Command],
    ) -> Result<(Completed, Vec<Result<Completed>>)> {
        let cmd = Command::Select {
            mailbox: mailbox.clone(),
            read_only,
            sync,
        };
        let mut cmds = vec![cmd];
        cmds.extend_from_slice(then);
        // The core tracks the selection: fresh when the SELECT is sent, kept (READ-ONLY
        // noted) when it completes OK, gone when it fails. A pipeline that broke before the
        // completion leaves nothing known.
        let mut results = match self.pipeline(&cmds) {
            Ok(r) => r.into_iter(),
            Err(e) => {
                self.core.selected = None;
                return Err(e);
            }
        };
        match results.next() {
            Some(Ok(done)) => Ok((done, results.collect())),
            Some(Err(e)) => Err(e),
            None => Err(Error::Internal("a pipeline without a reply to its SELECT")),
        }
    }
}

fn no_uidvalidity(mailbox: &MailboxName) -> Error {
    Error::BadReply {
        command: "SELECT",
        what: format!("no UIDVALIDITY for {mailbox}"),
    }
}
