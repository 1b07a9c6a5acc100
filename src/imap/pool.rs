//! A small pool of authenticated sessions.
//!
//! Filesystem requests arrive on several threads; each borrows a session for one short
//! exchange with [`Pool::with_session`] and gives it back. The pool prefers a session that has
//! the wanted mailbox selected already (saving an EXAMINE and Dovecot's folder rescan), opens a
//! new connection while under its limit, and otherwise waits, with a deadline, for one to come
//! back. A session that failed fatally is dropped, never reused. Each request says whether it
//! may be sent again ([`Retry`]): an idempotent one (a FETCH, a LIST) that failed on a pooled
//! connection (the server may have closed it while idle) is retried once on a fresh one; a
//! request that changes the mailbox (APPEND, COPY, MOVE, EXPUNGE, CREATE, RENAME, DELETE) is
//! never re-sent blindly: the caller gets the error and must find out what the server did.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::imap::auth::{connect, ServerConfig};
use crate::imap::session::{Session, Traffic};
use crate::imap::types::MailboxName;

/// Whether a request may be sent again after the connection broke under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Running it twice has the effect of running it once (reads, EXAMINE, LIST, STATUS, a
    /// STORE of absolute flags).
    Idempotent,
    /// Running it twice could duplicate or lose mail: the server may have done it before the
    /// connection broke. Never re-sent by the pool.
    Never,
}

/// A bounded set of sessions to one account.
pub struct Pool {
    config: ServerConfig,
    max: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
    /// Round trips of all sessions, counted when each is given back.
    round_trips: std::sync::atomic::AtomicU64,
    /// Bytes received and sent by all sessions, counted likewise.
    bytes_received: std::sync::atomic::AtomicU64,
    bytes_sent: std::sync::atomic::AtomicU64,
}

struct PoolState {
    idle: Vec<Session>,
    open: usize,
}

impl Pool {
    /// A pool that opens at most `max` connections; `first` is an already open session.
    pub fn new(config: ServerConfig, max: usize, first: Option<Session>) -> Pool {
        let open = usize::from(first.is_some());
        Pool {
            config,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: first.into_iter().collect(),
                open,
            }),
            returned: Condvar::new(),
            round_trips: std::sync::atomic::AtomicU64::new(0),
            bytes_received: std::sync::atomic::AtomicU64::new(0),
            bytes_sent: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Run `f` on a session, preferably one with `mailbox` selected. With
    /// [`Retry::Idempotent`], `f` runs again on a new connection after the pooled one turned
    /// out to be dropped; with [`Retry::Never`] the failure is returned as it is.
    pub fn with_session<T>(
        &self,
        mailbox: Option<&MailboxName>,
        retry: Retry,
        mut f: impl FnMut(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let (mut session, fresh) = self.take(mailbox)?;
        let before = session.traffic();
        let mut result = f(&mut session);
        self.count(session.traffic() - before);
        // A pooled connection the server dropped while it sat idle fails at once (BYE, reset):
        // worth one retry. A timeout is not: the server is there but slow, and retrying
        // would double the wait.
        let dropped = matches!(&result, Err(Error::Bye(_) | Error::Io { .. }));
        if retry == Retry::Idempotent && !fresh && session.is_broken() && dropped {
            log::info!(
                "retrying on a new connection after: {}",
                result
                    .as_ref()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            );
            self.give_back(session);
            let (s, _) = self.open_new()?;
            session = s;
            result = f(&mut session);
            self.count(session.traffic());
        }
        self.give_back(session);
        result
    }

    /// Round trips made by all sessions so far (for tests and benchmarks).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Round trips and bytes of all sessions so far.
    pub fn traffic(&self) -> Traffic {
        use std::sync::atomic::Ordering::Relaxed;
        Traffic {
            round_trips: self.round_trips.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
        }
    }

    fn count(&self, t: Traffic) {
        use std::sync::atomic::Ordering::Relaxed;
        self.round_trips.fetch_add(t.round_trips, Relaxed);
        self.bytes_received.fetch_add(t.bytes_received, Relaxed);
        self.bytes_sent.fetch_add(t.bytes_sent, Relaxed);
    }

    /// Close every idle connection (on unmount).
    pub fn close_all(&self) {
        let idle = std::mem::take(&mut self.state.lock().idle);
        for s in idle {
            s.logout();
            self.state.lock().open -= 1;
        }
    }

    fn take(&self, mailbox: Option<&MailboxName>) -> Result<(Session, bool)> {
        let deadline = Instant::now() + self.config.timeouts.command;
        let mut st = self.state.lock();
        loop {
            if !st.idle.is_empty() {
                let pos = mailbox
                    .and_then(|m| {
                        st.idle
                            .iter()
                            .rposition(|s| s.selected().is_some_and(|sel| &sel.mailbox == m))
                    })
                    .unwrap_or(st.idle.len() - 1);
                return Ok((st.idle.swap_remove(pos), false));
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match connect(&self.config) {
                    Ok(s) => Ok((s, true)),
                    Err(e) => {
                        self.state.lock().open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            if self.returned.wait_until(&mut st, deadline).timed_out() {
                return Err(Error::Timeout {
                    what: "a free connection to the server".into(),
                });
            }
        }
    }

    fn open_new(&self) -> Result<(Session, bool)> {
        // The broken session was already given back (and counted out); open a replacement.
        let mut st = self.state.lock();
        let deadline = Instant::now() + Duration::from_secs(1).max(self.config.timeouts.inactivity);
        while st.open >= self.max {
            if self.returned.wait_until(&mut st, deadline).timed_out() {
                return Err(Error::Timeout {
                    what: "a free connection to the server".into(),
                });
            }
        }
        st.open += 1;
        drop(st);
        match connect(&self.config) {
            Ok(s) => Ok((s, true)),
            Err(e) => {
                self.state.lock().open -= 1;
                self.returned.notify_one();
                Err(e)
            }
        }
    }

    fn give_back(&self, session: Session) {
        let mut st = self.state.lock();
        if session.is_broken() {
            st.open -= 1;
        } else {
            st.idle.push(session);
        }
        drop(st);
        self.returned.notify_one();
    }
}
