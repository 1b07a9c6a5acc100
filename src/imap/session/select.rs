//! Selecting mailboxes: SELECT/EXAMINE (with CONDSTORE or QRESYNC), reselecting to learn the
//! current UIDVALIDITY, leaving a mailbox without expunging (UNSELECT).

use super::*;

impl Session {
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
                .ok_or_else(|| Error::Protocol("not selected".into()));
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
            .ok_or_else(|| Error::Protocol("mailbox not selected".into()))
    }

    /// [`Session::reselect`], with `then` pipelined behind the SELECT/EXAMINE in the same round
    /// trip (it runs only if the selection succeeds). Returns `then`'s completion.
    pub fn reselect_then(
        &mut self,
        mailbox: &MailboxName,
        read_only: bool,
        then: Option<Command>,
    ) -> Result<Option<Result<Completed>>> {
        let sync = if self.supports(Capability::CondStore) {
            SelectSync::CondStore
        } else {
            SelectSync::Plain
        };
        let then: Vec<Command> = then.into_iter().collect();
        let (_, results) = self.select_with(mailbox, read_only, sync, &then)?;
        Ok(results.into_iter().next())
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
            None => Err(Error::Protocol("no reply to SELECT".into())),
        }
    }
}
