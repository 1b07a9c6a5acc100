//! Sending a draft: the writing flush (a close or an fsync) that APPENDs its version and
//! withdraws the versions it supersedes, and the last release that withdraws a partial one
//! (the rules are in the parent module's documentation).

use std::fs::File;
use std::sync::Arc;

use super::{Draft, FlushKind, Stored};
use crate::error::Result;
use crate::fs::caller::Caller;
use crate::fs::inode::{Ino, InoKind};
use crate::fs::invalidate::Invalidation;
use crate::fs::ImapFs;
use crate::imap::types::Flag;
use crate::store::{MailboxId, MessageBody, MessageRef, NewMessage};

impl ImapFs {
    /// `flush` (a close) or `fsync` of handle `fh` by thread `pid`: if `fh` writes and the
    /// draft changed since the server's version, APPEND it and withdraw the version it
    /// replaces. The APPEND's error is close()'s or fsync()'s.
    ///
    /// A close by a process other than the handle's opener is a copy of the descriptor it
    /// inherited (a fork, often closed by exec): it sends nothing until the opener has closed
    /// its copy or a version was sent, so a writer that spawns a child mid-copy does not store
    /// half a message (it would be replaced, but a reader must not see it). After that, any
    /// writing close sends what changed (a child writing a file its parent opened and closed).
    /// A process a signal is killing sends nothing.
    pub(crate) fn flush_draft(&self, ino: Ino, fh: u64, pid: u32, kind: FlushKind) -> Result<()> {
        if !matches!(ino.kind(), InoKind::Draft(_)) {
            return Ok(());
        }
        let (opener, opener_closed, sent_before, worth) = {
            let drafts = self.drafts.lock();
            let Some(d) = drafts.by_ino.get(&ino) else {
                return Ok(());
            };
            let Some(h) = d.handles.get(&fh).filter(|h| h.writes) else {
                return Ok(());
            };
            let worth = d.worth_sending() || has_leftovers(d);
            (
                h.opener,
                h.opener_closed,
                d.stored != Stored::Nothing,
                worth,
            )
        };
        // /proc/TID/status, never /proc/TID/stat: reading `stat` of a process in execve
        // waits for its exec lock, which it holds while close-on-exec flushes this very
        // file, waiting for our reply (both then hang in D state; seen here).
        let caller = Caller::of(pid);
        if caller.is_some_and(|c| c.killed) {
            if worth {
                log::info!("a new file's writer (pid {pid}) was killed: its close sends nothing");
            }
            return Ok(());
        }
        // Who cannot be told (a caller outside our pid namespace) counts as the opener.
        let own = match (opener, caller.and_then(|c| c.tgid)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if own && kind == FlushKind::Close && !opener_closed {
            // From now on the descriptors other processes inherited are the writers (a
            // parent that hands the file to a child and closes its own copy first).
            let mut drafts = self.drafts.lock();
            if let Some(h) = drafts
                .by_ino
                .get_mut(&ino)
                .and_then(|d| d.handles.get_mut(&fh))
            {
                h.opener_closed = true;
            }
        }
        if !worth || (kind == FlushKind::Close && !own && !sent_before && !opener_closed) {
            return Ok(());
        }
        // Our turn: one send of a draft at a time, the state read again once it is ours.
        let job = {
            let mut drafts = self.drafts.lock();
            loop {
                match drafts.by_ino.get(&ino).map(|d| d.sending) {
                    None => return Ok(()),
                    Some(true) => self.drafts_turn.wait(&mut drafts),
                    Some(false) => break,
                }
            }
            let Some(d) = drafts.by_ino.get_mut(&ino) else {
                return Ok(());
            };
            let send = d.worth_sending();
            if !send && !has_leftovers(d) {
                return Ok(());
            }
            if send {
                d.check_replaceable()?;
            }
            d.sending = true;
            Job::of(d, send)
        };
        let (appended, withdrawn) = self.send_draft(&job);
        {
            let mut drafts = self.drafts.lock();
            if let Some(d) = drafts.by_ino.get_mut(&ino) {
                if let Some(r) = &appended {
                    d.stored = match r {
                        Ok(Some(at)) => Stored::At {
                            version: job.version,
                            at: *at,
                        },
                        Ok(None) => Stored::Unplaced {
                            version: job.version,
                        },
                        Err(_) => Stored::Nothing,
                    };
                }
                d.superseded.extend(
                    withdrawn
                        .iter()
                        .filter_map(|(m, r)| r.is_err().then_some(*m)),
                );
                d.sending = false;
                if d.handles.is_empty() {
                    // Its last release came while this send ran, and left it to us.
                    drafts.by_ino.remove(&ino);
                }
            }
        }
        self.drafts_turn.notify_all();
        if let Some(r) = appended {
            r?;
        }
        for (m, r) in withdrawn {
            if let Err(e) = r {
                log::warn!(
                    "UID {} in {}: an earlier version of a new message stays on the server \
                     ({e}); it is expunged again at the next close",
                    m.uid,
                    m.mailbox
                );
                return Err(e);
            }
        }
        Ok(())
    }

    /// The server calls of one flush, with no lock held: APPEND the snapshot (if `job.send`),
    /// then withdraw every version it replaces (also when the APPEND failed: a draft is one
    /// message on the server, or none).
    #[allow(clippy::type_complexity)]
    fn send_draft(
        &self,
        job: &Job,
    ) -> (
        Option<Result<Option<MessageRef>>>,
        Vec<(MessageRef, Result<()>)>,
    ) {
        let appended = job.send.then(|| {
            self.account.append(
                job.mailbox,
                NewMessage {
                    body: MessageBody::File {
                        file: job.file.clone(),
                        len: job.len,
                    },
                    flags: job.flags.clone(),
                    date: job.mtime,
                },
            )
        });
        // Tried, the draft's name is gone: the message shows under its UID.
        if let Some(name) = &job.name {
            self.invalidate(Invalidation::Entry {
                parent: job.parent,
                name: name.into(),
            });
        }
        let withdrawn = job
            .replaces
            .iter()
            .map(|&m| (m, self.account.withdraw_appended(m)))
            .collect();
        self.invalidate(Invalidation::Inode(job.parent));
        (appended, withdrawn)
    }

    /// `release` of handle `fh`. Nothing is sent here (no one would see its error); at the
    /// last release the draft is forgotten: one changed since its last sent version was
    /// written after its writers' last close, so what the server holds of it is partial and
    /// is withdrawn.
    pub(crate) fn release_draft(&self, ino: Ino, fh: u64) {
        if !matches!(ino.kind(), InoKind::Draft(_)) {
            return;
        }
        let d = {
            let mut drafts = self.drafts.lock();
            let Some(d) = drafts.by_ino.get_mut(&ino) else {
                return;
            };
            d.handles.remove(&fh);
            // A flush still sending holds no handle of its own: it finishes on a draft that
            // is gone, and the kernel releases only after every flush has returned.
            if !d.handles.is_empty() || d.sending {
                return;
            }
            match drafts.by_ino.remove(&ino) {
                Some(d) => d,
                None => return,
            }
        };
        let mut withdraw = d.superseded.clone();
        if d.worth_sending() {
            let what = d.name.as_deref().unwrap_or("(a send was tried)");
            log::warn!(
                "new message {what}: its {} bytes are not stored: its last close failed (the \
                 writer was told), or it was written to after its last close (was its writer \
                 killed?)",
                d.len
            );
            if let Stored::At { at, .. } = d.stored {
                log::warn!("UID {} holds a partial version of it: withdrawn", at.uid);
                withdraw.push(at);
            }
        }
        for m in withdraw {
            if let Err(e) = self.account.withdraw_appended(m) {
                log::warn!(
                    "UID {} in {}: a partial new message stays on the server: {e}",
                    m.uid,
                    m.mailbox
                );
            }
        }
        if let Some(name) = d.name {
            self.invalidate(Invalidation::Entry {
                parent: d.parent,
                name: name.into(),
            });
        }
        self.invalidate(Invalidation::Inode(d.parent));
    }
}

/// What one flush sends, copied out of its [`Draft`] so that no lock is held while it goes.
struct Job {
    /// APPEND this version (else only withdraw leftovers).
    send: bool,
    version: u64,
    file: Arc<File>,
    len: u64,
    flags: Vec<Flag>,
    mtime: Option<i64>,
    mailbox: MailboxId,
    parent: Ino,
    /// The draft's name, dropped now that its first APPEND is tried.
    name: Option<String>,
    /// The versions on the server this flush removes.
    replaces: Vec<MessageRef>,
}

impl Job {
    /// Take the next send of `d`: its snapshot, its name, and what it replaces.
    fn of(d: &mut Draft, send: bool) -> Job {
        let mut replaces = std::mem::take(&mut d.superseded);
        if send {
            if let Stored::At { at, .. } = d.stored {
                replaces.push(at);
            }
        }
        Job {
            send,
            version: d.version,
            file: d.file.clone(),
            len: d.len,
            flags: d.flags.clone(),
            mtime: d.mtime,
            mailbox: d.mailbox,
            parent: d.parent,
            name: if send { d.name.take() } else { None },
            replaces,
        }
    }
}

/// Superseded versions whose expunge failed, still to withdraw.
fn has_leftovers(d: &Draft) -> bool {
    !d.superseded.is_empty()
}
