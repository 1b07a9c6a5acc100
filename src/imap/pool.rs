//! A small pool of authenticated sessions.
//!
//! Filesystem requests arrive on several threads; each borrows a session for one short
//! exchange with [`Pool::with_session`] and gives it back. The pool prefers a session that has
//! the wanted mailbox selected already (saving an EXAMINE and Dovecot's folder rescan), opens a
//! new connection while under its limit (one login at a time, see [`Pool::acquire`]), and
//! otherwise waits, with a deadline, for one to come
//! back. An idle session is checked before it is lent ([`Session::check_idle`]: a BYE or a
//! closed socket that arrived while it sat unused), and a session that failed fatally or still
//! has commands in flight is dropped, never reused. A lent session is held by a guard
//! ([`Lent`]) whose `Drop` is the only way back to the pool: it returns the session or drops
//! it (freeing its slot) on every path, and always drops it when the borrower panicked.
//!
//! Each request says whether it may be sent again ([`Retry`]): an idempotent one (a FETCH, a
//! LIST) that failed on a pooled connection (the server may have closed it while idle) is
//! retried on another idle session that passes the check, or a new connection, until it has
//! failed on a new connection at most (so at most `max` + 1 runs); a request
//! that changes the mailbox (APPEND, COPY, MOVE, EXPUNGE, CREATE, RENAME, DELETE) is never
//! re-sent blindly: the caller gets the error and must find out what the server did.
//!
//! Accounting: `open` counts every session that exists or is being opened (idle, lent out,
//! connecting) and never exceeds `max`. Every change to it or to the idle list wakes *all*
//! waiters ([`Condvar::notify_all`]), which re-check what they wait for; with a handful of
//! connections that costs nothing and no wake-up can go to a waiter that cannot use it.
//!
//! Outages: when opening a connection fails, the pool enters back-off (0.5 s doubling up to
//! 30 s, with jitter) and logs the outage once. Until the back-off ends, a request that needs
//! a new connection and has no session to wait for fails at once with
//! [`Error::Unavailable`] (the last connection error) instead of queueing; the first request
//! after it tries once more, while the others keep failing fast (and if that attempt fails
//! too, so does its request: with `Unavailable`, which the filesystem logs only at debug
//! level, so that one outage is one warning however many requests and attempts it spans).
//! The first success ends the outage and is logged once.
//!
//! The link: an outage is the pool's half of the mount's link state ([`Pool::link`]: online
//! or offline, since when, and an epoch that moves with each change). A pool can start
//! offline ([`Pool::offline`], a mount that came up from its saved state). Attempts follow
//! demand, and a prober (the store's link thread) also makes one whenever the back-off ends
//! ([`Pool::probe_due`], [`Pool::probe`]), so that the mount comes back by itself with no
//! request to carry it. The watcher's own connection attempts count too: its failure
//! begins an outage, its success ends one.
//!
//! [`Pool::stats`] gives counters for a status view ([`PoolStats`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};

use crate::error::{printable, Error, Result};
use crate::imap::auth::{connect, ServerConfig};
use crate::imap::refusals::throttle_wait;
use crate::imap::session::Session;
use crate::imap::types::MailboxName;

mod link;
mod pushback;

pub use link::Link;
use link::{unavailable, Outage};

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

/// What the pool has done so far, for a status view. Counters only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Times a session turned from reading to writing (pipelined commands count once).
    pub round_trips: u64,
    /// Connections opened and logged in (the first one included).
    pub connections_opened: u64,
    /// Attempts to open a connection that failed.
    pub connect_failures: u64,
    /// Bytes received from the server (the IMAP stream, after TLS).
    pub bytes_read: u64,
    /// Requests that failed for a reason of the connection or the server as a whole (I/O,
    /// TLS, timeout, protocol, BYE, too large, unreachable, login); a NO or BAD answer to a
    /// valid request is not counted.
    pub errors: u64,
    /// The text of the last of those errors (printable; no credentials).
    pub last_error: Option<String>,
    /// Connections open now (idle, in use or being opened).
    pub open: usize,
    /// Of those, idle in the pool.
    pub idle: usize,
    /// While the server cannot be reached: for how long already.
    pub unreachable_for: Option<Duration>,
    /// Requests sent again after the wait a throttling server asked for.
    pub throttle_waits: u64,
    /// The connection cap the server showed (a login refused for the number of
    /// connections), while the pool keeps to it.
    pub connection_cap: Option<usize>,
    /// Whether the connections use COMPRESS=DEFLATE (the last one opened did).
    pub compressed: bool,
    /// Bytes that crossed the wire for `bytes_read` (after TLS; compressed or not).
    pub bytes_on_wire: u64,
    /// Bytes compression saved: `bytes_read` minus `bytes_on_wire`, as counted per session.
    pub bytes_saved: u64,
}

/// A bounded set of sessions to one account.
pub struct Pool {
    config: ServerConfig,
    max: usize,
    state: Mutex<PoolState>,
    /// Signalled (to all) whenever `open`, `idle` or `outage` changes.
    changed: Condvar,
    round_trips: AtomicU64,
    bytes_read: AtomicU64,
    bytes_on_wire: AtomicU64,
    bytes_saved: AtomicU64,
    compressed: AtomicBool,
    opened: AtomicU64,
    connect_failures: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Since when the server has been throttling us (an episode is logged once).
    throttled_since: Mutex<Option<Instant>>,
    throttle_waits: AtomicU64,
    /// APPENDLIMIT of the last connection opened (0: none advertised).
    append_limit: AtomicU64,
}

struct PoolState {
    idle: Vec<Session>,
    /// Sessions that exist or are being opened: idle + lent out + `connecting`.
    open: usize,
    /// Connections being opened right now.
    connecting: usize,
    outage: Option<Outage>,
    /// When `outage` last began or ended, and how many times it did.
    link_since: SystemTime,
    link_epoch: u64,
    /// The server refused a login for the number of connections: the pool keeps at most
    /// `Cap::limit` until `Cap::until`, then tries one more again.
    cap: Option<pushback::Cap>,
}

impl Pool {
    /// A pool that opens at most `max` connections; `first` is an already open session.
    pub fn new(config: ServerConfig, max: usize, mut first: Option<Session>) -> Pool {
        let open = usize::from(first.is_some());
        let append_limit = first.as_mut().map_or(0, session_append_limit);
        let compressed = first.as_ref().is_some_and(|s| s.wire().compressed);
        let pool = Pool {
            config,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: first.into_iter().collect(),
                open,
                connecting: 0,
                outage: None,
                link_since: SystemTime::now(),
                link_epoch: 0,
                cap: None,
            }),
            changed: Condvar::new(),
            round_trips: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_on_wire: AtomicU64::new(0),
            bytes_saved: AtomicU64::new(0),
            compressed: AtomicBool::new(compressed),
            opened: AtomicU64::new(open as u64),
            connect_failures: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            throttled_since: Mutex::new(None),
            throttle_waits: AtomicU64::new(0),
            append_limit: AtomicU64::new(0),
        };
        pool.append_limit.store(append_limit, Ordering::Relaxed);
        pool
    }

    /// A pool that starts offline: the server could not be reached (`error`), and the first
    /// attempt waits for the first back-off, as after any failed attempt.
    pub fn offline(config: ServerConfig, max: usize, error: &Error) -> Pool {
        let pool = Pool::new(config, max, None);
        pool.connect_failures.fetch_add(1, Ordering::Relaxed);
        pool.begin_outage(&mut pool.state.lock(), error);
        pool
    }

    /// Wait until something about the pool changes (a session given back, the link), or
    /// `timeout`.
    pub fn wait_changed(&self, timeout: Duration) {
        let mut st = self.state.lock();
        self.changed.wait_for(&mut st, timeout);
    }

    /// Drop the idle sessions the server closed (checked one by one outside the lock).
    fn drop_dead_idle(&self) {
        let idle = std::mem::take(&mut self.state.lock().idle);
        let (mut alive, mut dead) = (Vec::new(), Vec::new());
        for mut s in idle {
            if s.check_idle() {
                alive.push(s);
            } else {
                dead.push(s);
            }
        }
        let mut st = self.state.lock();
        st.open -= dead.len();
        st.idle.extend(alive);
        drop(st);
        if !dead.is_empty() {
            self.changed.notify_all();
        }
    }

    /// The largest message the server accepts, if it advertised APPENDLIMIT (RFC 7889) on
    /// the connections opened so far.
    pub fn append_limit(&self) -> Option<u64> {
        match self.append_limit.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Run `f` on a session, preferably one with `mailbox` selected. With
    /// [`Retry::Idempotent`], `f` runs again on another session after a pooled one turned out
    /// to be dropped (see the module documentation); with [`Retry::Never`] the failure is
    /// returned as it is.
    pub fn with_session<T>(
        &self,
        mailbox: Option<&MailboxName>,
        retry: Retry,
        mut f: impl FnMut(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let result = self.lend(mailbox, retry, &mut f);
        if let Err(e) = &result {
            self.note_error(e);
        }
        result
    }

    /// The most connections the pool opens at once.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Round trips made by all sessions so far (for tests and benchmarks).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Bytes received from the server so far (the IMAP stream, after TLS).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Counters for a status view.
    pub fn stats(&self) -> PoolStats {
        let (open, idle, unreachable_for, connection_cap) = {
            let st = self.state.lock();
            let since = st.outage.as_ref().map(|o| o.since.elapsed());
            let cap = st.cap_kept();
            (st.open, st.idle.len(), since, cap)
        };
        PoolStats {
            round_trips: self.round_trips.load(Ordering::Relaxed),
            connections_opened: self.opened.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
            open,
            idle,
            unreachable_for,
            throttle_waits: self.throttle_waits.load(Ordering::Relaxed),
            connection_cap,
            compressed: self.compressed.load(Ordering::Relaxed),
            bytes_on_wire: self.bytes_on_wire.load(Ordering::Relaxed),
            bytes_saved: self.bytes_saved.load(Ordering::Relaxed),
        }
    }

    /// A session of its own for a long-lived task (the watcher's IDLE / NOTIFY): opened with
    /// the pool's account settings, outside its limit and its round-trip count, and never
    /// handed to [`Pool::with_session`] callers. The caller owns it and logs it out.
    ///
    /// When the server refuses it for the number of connections, the pool gives up a session
    /// of its own (an idle one at once, else the next one given back) and lowers its cap, so
    /// that the watcher's next attempt finds a free slot: live updates matter more than a
    /// spare reader.
    pub fn dedicated_session(&self) -> Result<Session> {
        let result = connect(&self.config);
        match &result {
            Ok(_) => self.end_outage(),
            Err(e) if e.is_unreachable() => {
                let mut st = self.state.lock();
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                self.begin_outage(&mut st, e);
                drop(st);
                self.changed.notify_all();
            }
            Err(_) => {}
        }
        if let Err(Error::TooManyConnections(words)) = &result {
            let mut st = self.state.lock();
            let limit = st.open.saturating_sub(1).max(1);
            st.cap_at(limit);
            let spare = if st.open > limit { st.idle.pop() } else { None };
            if spare.is_some() {
                st.open -= 1;
            }
            drop(st);
            self.changed.notify_all();
            log::info!(
                "{}:{} refused a connection for live updates ({}); the pool keeps at most \
                 {limit}",
                self.config.host,
                self.config.port,
                printable(words)
            );
            if let Some(s) = spare {
                s.logout();
            }
        }
        result
    }

    /// Close every idle connection (on unmount).
    pub fn close_all(&self) {
        let idle = std::mem::take(&mut self.state.lock().idle);
        let n = idle.len();
        for s in idle {
            s.logout();
        }
        self.state.lock().open -= n;
        self.changed.notify_all();
    }

    fn lend<T>(
        &self,
        mailbox: Option<&MailboxName>,
        retry: Retry,
        f: &mut impl FnMut(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let (session, mut fresh) = self.acquire(mailbox)?;
        let mut lent = Lent::new(self, session);
        let mut result = lent.run(f);
        // Two reasons to send a request again, both only when it may run twice:
        // - A pooled connection the server dropped while it sat idle fails at once (BYE,
        //   reset) and is worth a retry, on another idle session or a new connection; other
        //   idle ones may have been dropped too without our knowing yet, so this goes on until
        //   the request failed on a new connection (at most `max` + 1 runs: every failed
        //   session is gone). A timeout is not retried: the server is there but slow, and
        //   retrying would double the wait.
        // - A server that throttles (Microsoft 365: `NO ... Request is throttled. Suggested
        //   Backoff Time: N milliseconds`) gets the wait it asked for, then the request again,
        //   while the waits fit in one command timeout. A BYE after a throttle reply is an
        //   ordinary reconnect, even on a new connection.
        let budget_end = Instant::now() + self.config.timeouts.command;
        let mut throttled = false;
        let mut may_reconnect = false;
        while retry == Retry::Idempotent && result.is_err() {
            let wait = result.as_ref().err().and_then(throttle_wait);
            if let Some(wait) = wait {
                if Instant::now() + wait >= budget_end {
                    break;
                }
                self.note_throttle(&result, wait);
                throttled = true;
                may_reconnect = true;
                std::thread::sleep(wait);
            } else {
                let dropped = matches!(&result, Err(Error::Bye(_) | Error::Io { .. }));
                if (fresh && !may_reconnect) || !lent.is_broken() || !dropped {
                    break;
                }
                if let Err(e) = &result {
                    log::info!("retrying on another connection after: {e}");
                }
                // One reconnect after a throttle reply is ordinary; more is a real failure.
                may_reconnect = may_reconnect && !fresh;
            }
            if lent.is_broken() {
                drop(lent);
                let session;
                (session, fresh) = self.acquire(mailbox)?;
                lent = Lent::new(self, session);
            }
            result = lent.run(f);
        }
        if throttled && result.is_ok() {
            self.end_throttle();
        }
        result
    }

    fn run_on<T>(
        &self,
        session: &mut Session,
        f: &mut impl FnMut(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let (trips, bytes, wire) = (session.round_trips(), session.bytes_read(), session.wire());
        let result = f(session);
        self.round_trips
            .fetch_add(session.round_trips() - trips, Ordering::Relaxed);
        self.bytes_read
            .fetch_add(session.bytes_read() - bytes, Ordering::Relaxed);
        let now = session.wire();
        self.bytes_on_wire
            .fetch_add(now.received - wire.received, Ordering::Relaxed);
        self.bytes_saved
            .fetch_add(now.saved.saturating_sub(wire.saved), Ordering::Relaxed);
        result
    }

    /// A session to use: an idle one that passes [`Session::check_idle`] (preferably on
    /// `mailbox`), else a new connection while under the limit, else the first one given
    /// back within the command timeout. Whether it is new is returned too.
    fn acquire(&self, mailbox: Option<&MailboxName>) -> Result<(Session, bool)> {
        let deadline = Instant::now() + self.config.timeouts.command;
        let mut st = self.state.lock();
        loop {
            if let Some(pos) = preferred(&st.idle, mailbox) {
                let mut session = st.idle.swap_remove(pos);
                drop(st);
                if session.check_idle() {
                    return Ok((session, false));
                }
                log::debug!("dropping an idle connection the server closed");
                drop(session);
                st = self.state.lock();
                st.open -= 1;
                self.changed.notify_all();
                continue;
            }
            if st.open < self.limit(&mut st) {
                let now = Instant::now();
                let backing_off = st
                    .outage
                    .as_ref()
                    .is_some_and(|o| now < o.retry_at || st.connecting > 0);
                // One login at a time: a server counts a connection against its cap only
                // once the login is done (Dovecot's anvil learns of it from the mail process),
                // so logins in parallel all pass the check and exceed the cap together (4
                // open against a limit of 3, about 2 runs in 11 of the provider test). Serial
                // logins are also what providers that throttle reconnects want.
                if !backing_off && st.connecting == 0 {
                    st.open += 1;
                    st.connecting += 1;
                    drop(st);
                    match self.open_connection() {
                        Err(Error::TooManyConnections(_)) if self.state.lock().cap.is_some() => {
                            // Refused for the number of connections while others exist:
                            // wait for one of those instead (the cap is now known).
                            st = self.state.lock();
                            continue;
                        }
                        other => return other.map(|s| (s, true)),
                    }
                }
                if st.outage.is_some() && st.open == st.connecting {
                    // Nothing to wait for: no session exists that could come back.
                    return Err(unavailable(st.outage.as_ref(), now));
                }
            }
            // Wake for a session given back, or when the back-off ends.
            let wake = st
                .outage
                .as_ref()
                .map_or(deadline, |o| o.retry_at.min(deadline));
            self.changed.wait_until(&mut st, wake);
            let now = Instant::now();
            if now >= deadline {
                return Err(match &st.outage {
                    Some(o) => unavailable(Some(o), now),
                    None => Error::Timeout {
                        what: "a free connection to the server".into(),
                    },
                });
            }
        }
    }

    /// Connect and log in (a slot in `open` and `connecting` is already taken), keeping the
    /// outage state and the counters. The attempt that finds the server gone fails with its
    /// own error; an attempt that fails again during an outage fails as [`Error::Unavailable`],
    /// like the requests that did not try: the outage was told once when it began.
    fn open_connection(&self) -> Result<Session> {
        let mut result = connect(&self.config);
        if let Ok(session) = &mut result {
            self.append_limit
                .store(session_append_limit(session), Ordering::Relaxed);
            self.compressed
                .store(session.wire().compressed, Ordering::Relaxed);
        }
        let mut st = self.state.lock();
        st.connecting -= 1;
        let mut again = None;
        match &result {
            Ok(_) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                self.outage_over(&mut st);
            }
            Err(Error::TooManyConnections(words)) if st.open > 1 => {
                st.open -= 1;
                self.learn_cap(&mut st, words);
            }
            Err(e) => {
                st.open -= 1;
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                again = self.begin_outage(&mut st, e);
            }
        }
        drop(st);
        self.changed.notify_all();
        if let Some(e) = again {
            result = Err(e);
        }
        result
    }

    /// Drop a session that will not be lent again, and free its slot.
    fn discard(&self, session: Session) {
        self.state.lock().open -= 1;
        self.changed.notify_all();
        drop(session); // closes the socket, outside the lock
    }

    fn give_back(&self, session: Session) {
        let mut st = self.state.lock();
        let limit = self.limit(&mut st);
        let dropped = if session.is_reusable() && st.open <= limit {
            st.idle.push(session);
            None
        } else {
            st.open -= 1;
            Some(session)
        };
        drop(st);
        self.changed.notify_all();
        drop(dropped); // closes the socket, outside the lock
    }

    fn note_error(&self, e: &Error) {
        let counts = e.is_fatal_to_connection()
            || matches!(
                e,
                Error::Unavailable { .. }
                    | Error::Auth(_)
                    | Error::TooLarge { .. }
                    | Error::BadReply { .. }
                    | Error::Internal(_)
            );
        if counts {
            self.errors.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock() = Some(printable(&e.to_string()).into_owned());
        }
    }
}

/// A session lent out by [`Pool::lend`]. Its `Drop` is the one way back: the session returns
/// to the idle list if it can serve again ([`Session::is_reusable`]), and is dropped (its
/// slot in `open` freed) otherwise, and always when the borrower panicked, mid-exchange for
/// all we know. Without it a panic would leave the slot counted forever; after `max` of them
/// every request would wait for a connection that never comes back.
struct Lent<'p> {
    pool: &'p Pool,
    /// Taken only by `Drop`.
    session: Option<Session>,
}

impl<'p> Lent<'p> {
    fn new(pool: &'p Pool, session: Session) -> Lent<'p> {
        Lent {
            pool,
            session: Some(session),
        }
    }

    fn run<T>(&mut self, f: &mut impl FnMut(&mut Session) -> Result<T>) -> Result<T> {
        match self.session.as_mut() {
            Some(s) => self.pool.run_on(s, f),
            None => Err(Error::Timeout {
                what: "a free connection to the server".into(),
            }),
        }
    }

    fn is_broken(&self) -> bool {
        self.session.as_ref().is_none_or(Session::is_broken)
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if std::thread::panicking() {
            log::warn!("dropping a connection whose user panicked");
            self.pool.discard(session);
        } else {
            self.pool.give_back(session);
        }
    }
}

/// The idle session to lend: the last given back with `mailbox` selected, else the last given
/// back (the most likely to be alive).
fn preferred(idle: &[Session], mailbox: Option<&MailboxName>) -> Option<usize> {
    let last = idle.len().checked_sub(1)?;
    let on_mailbox = mailbox.and_then(|m| {
        idle.iter()
            .rposition(|s| s.selected().is_some_and(|sel| &sel.mailbox == m))
    });
    Some(on_mailbox.unwrap_or(last))
}

/// A session's APPENDLIMIT, 0 for none.
fn session_append_limit(session: &mut Session) -> u64 {
    session
        .capability_set()
        .ok()
        .and_then(|c| c.append_limit())
        .unwrap_or(0)
}
