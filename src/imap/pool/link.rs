//! The link to the server as the pool knows it: online, or an outage from a failed
//! connection attempt until a successful one, with the back-off between attempts and the
//! probe the link thread (`store/link.rs`) makes when one is due.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime};

use super::{Pool, PoolState};
use crate::error::{printable, Error};

/// Whether the server can be reached, as the pool last found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// False from a failed connection attempt until a successful one.
    pub online: bool,
    /// When the link last changed (the pool's creation at first).
    pub since: SystemTime,
    /// Moves on with every change of `online`.
    pub epoch: u64,
}

/// The server could not be reached lately.
pub(super) struct Outage {
    pub(super) since: Instant,
    /// Failed attempts in a row.
    pub(super) failures: u32,
    /// No new attempt before this.
    pub(super) retry_at: Instant,
    /// The last connection error, printable.
    pub(super) error: String,
}

/// First back-off after a failed connection attempt; doubles with each further failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
impl Pool {
    /// The link as the pool knows it: offline from a failed connection attempt until a
    /// successful one.
    pub fn link(&self) -> Link {
        let st = self.state.lock();
        Link {
            online: st.outage.is_none(),
            since: st.link_since,
            epoch: st.link_epoch,
        }
    }

    /// While offline: how long until a connection attempt is due (zero: now, and nobody is
    /// making one). `None` while online.
    pub fn probe_due(&self) -> Option<Duration> {
        let st = self.state.lock();
        let o = st.outage.as_ref()?;
        if st.connecting > 0 {
            return Some(BACKOFF_START);
        }
        Some(o.retry_at.saturating_duration_since(Instant::now()))
    }

    /// While offline and an attempt is due: try to connect once (idle sessions the server
    /// closed are dropped first, so that their slots do not block the attempt); a new
    /// session goes to the idle list. Returns whether the link is online afterwards.
    pub fn probe(&self) -> bool {
        if self.probe_due() != Some(Duration::ZERO) {
            return self.link().online;
        }
        self.drop_dead_idle();
        let mut st = self.state.lock();
        let due = st
            .outage
            .as_ref()
            .is_some_and(|o| Instant::now() >= o.retry_at);
        if !due || st.connecting > 0 || st.open >= self.limit(&mut st) {
            return st.outage.is_none();
        }
        st.open += 1;
        st.connecting += 1;
        drop(st);
        match self.open_connection() {
            Ok(session) => {
                self.give_back(session);
                true
            }
            Err(e) => {
                log::debug!("probing the server: {e}");
                self.link().online
            }
        }
    }

    /// A connection attempt failed with `e`: the outage begins (logged once, the link goes
    /// offline) or goes on (the next attempt waits longer). During an outage the error
    /// returned is [`Error::Unavailable`], for the attempt to fail like the requests that
    /// did not try.
    pub(super) fn begin_outage(&self, st: &mut PoolState, e: &Error) -> Option<Error> {
        let now = Instant::now();
        let error = printable(&e.to_string()).into_owned();
        match &mut st.outage {
            Some(o) => {
                o.failures += 1;
                o.retry_at = now + backoff(o.failures);
                log::debug!("connection attempt {} failed: {error}", o.failures);
                o.error = error;
                Some(unavailable(Some(o), now))
            }
            None => {
                log::warn!(
                    "cannot connect to {}:{}: {error}; requests fail until it can be reached \
                     again (retrying with back-off)",
                    self.config.host,
                    self.config.port
                );
                st.outage = Some(Outage {
                    since: now,
                    failures: 1,
                    retry_at: now + backoff(1),
                    error,
                });
                st.link_since = SystemTime::now();
                st.link_epoch += 1;
                None
            }
        }
    }

    /// A connection was opened: an outage, if any, is over (logged once).
    pub(super) fn outage_over(&self, st: &mut PoolState) {
        if let Some(o) = st.outage.take() {
            log::info!(
                "{}:{} reachable again after {:.1} s ({} failed attempts)",
                self.config.host,
                self.config.port,
                o.since.elapsed().as_secs_f64(),
                o.failures
            );
            st.link_since = SystemTime::now();
            st.link_epoch += 1;
        }
    }

    /// [`Pool::outage_over`] from outside a locked section (the watcher's connection).
    pub(super) fn end_outage(&self) {
        let mut st = self.state.lock();
        let was = st.outage.is_some();
        self.outage_over(&mut st);
        drop(st);
        if was {
            self.changed.notify_all();
        }
    }
}

pub(super) fn unavailable(outage: Option<&Outage>, now: Instant) -> Error {
    match outage {
        Some(o) => Error::Unavailable {
            error: o.error.clone(),
            retry_in: o.retry_at.saturating_duration_since(now),
        },
        None => Error::Timeout {
            what: "a free connection to the server".into(),
        },
    }
}

/// The wait after the `failures`-th failed attempt in a row: [`BACKOFF_START`] doubling up to
/// [`BACKOFF_MAX`], then a random 50-100 % of it, so that many clients of one server (or many
/// mounts) do not retry in step.
fn backoff(failures: u32) -> Duration {
    let doubled = BACKOFF_START.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let full = doubled.min(BACKOFF_MAX);
    // A random fraction in [0.5, 1): RandomState is seeded randomly per process and counter.
    let r = RandomState::new().build_hasher().finish();
    let fraction = 0.5 + (r >> 11) as f64 / (1u64 << 54) as f64;
    full.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty_seconds_with_jitter() {
        for (failures, full) in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (40, 30.0)] {
            for _ in 0..50 {
                let d = backoff(failures).as_secs_f64();
                assert!(d >= full * 0.5 && d < full, "{failures}: {d}");
            }
        }
        let spread: std::collections::HashSet<u128> =
            (0..20).map(|_| backoff(3).as_micros()).collect();
        assert!(spread.len() > 10, "no jitter: {spread:?}");
    }
}
