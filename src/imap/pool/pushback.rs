//! The server pushing back: throttled requests and a cap on connections.
//!
//! A server that throttles (Microsoft 365: `NO ... Request is throttled. Suggested Backoff
//! Time: N milliseconds`) gets the wait it asks for before a request is sent again
//! ([`Pool::lend`](super::Pool)); an episode is logged once when it begins and once when it
//! ends. A server that refuses a login for the number of connections
//! (`TooManyConnections`) caps the pool at what it holds for [`CAP_KEPT`], then the pool
//! tries one more again.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{printable, Result};
use crate::imap::pool::{Pool, PoolState};

/// A connection cap learned from the server (see [`Pool::open_connection`]).
pub(super) struct Cap {
    limit: usize,
    until: Instant,
}

/// How long a connection cap the server showed is kept before the pool tries one more
/// connection again (other clients of the account, a phone, may have gone meanwhile).
const CAP_KEPT: Duration = Duration::from_secs(120);

impl PoolState {
    /// Hold at most `limit` sessions for [`CAP_KEPT`]; returns the cap that was kept before.
    pub(super) fn cap_at(&mut self, limit: usize) -> Option<usize> {
        let was = self.cap.as_ref().map(|c| c.limit);
        self.cap = Some(Cap {
            limit,
            until: Instant::now() + CAP_KEPT,
        });
        was
    }

    /// The cap kept now, if any.
    pub(super) fn cap_kept(&self) -> Option<usize> {
        self.cap
            .as_ref()
            .filter(|c| Instant::now() < c.until)
            .map(|c| c.limit)
    }
}

impl Pool {
    /// The most sessions to hold now: `max`, or less while a cap the server showed is kept.
    pub(super) fn limit(&self, st: &mut PoolState) -> usize {
        match &st.cap {
            Some(cap) if Instant::now() < cap.until => cap.limit.min(self.max),
            Some(_) => {
                // Try for more again; refused again, the cap comes back for another while.
                st.cap = None;
                self.max
            }
            None => self.max,
        }
    }

    /// The server (or the account's other clients) allows no more connections than we hold
    /// (`st.open`, the refused one already taken off): shrink to them for [`CAP_KEPT`] and
    /// carry on; users see no error, and the cap is told once.
    pub(super) fn learn_cap(&self, st: &mut PoolState, words: &str) {
        let limit = st.open;
        let was = st.cap_at(limit);
        if was != Some(limit) {
            log::warn!(
                "{}:{} refuses more connections ({}); using {limit} of the {} allowed \
                 by --connections",
                self.config.host,
                self.config.port,
                printable(words),
                self.max
            );
        }
    }

    /// Log a throttle episode once, when it begins.
    pub(super) fn note_throttle<T>(&self, result: &Result<T>, wait: Duration) {
        let mut since = self.throttled_since.lock();
        if since.is_none() {
            *since = Some(Instant::now());
            if let Err(e) = result {
                log::warn!(
                    "{}:{} is throttling requests ({e}); waiting {} ms as it suggests and \
                     sending them again",
                    self.config.host,
                    self.config.port,
                    wait.as_millis()
                );
            }
        }
        self.throttle_waits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn end_throttle(&self) {
        if let Some(since) = self.throttled_since.lock().take() {
            log::info!(
                "{}:{} serves requests again after {:.1} s of throttling",
                self.config.host,
                self.config.port,
                since.elapsed().as_secs_f64()
            );
        }
    }
}
