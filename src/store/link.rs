//! The link to the server, and the mount's life without it.
//!
//! The pool says whether the server can be reached ([`Pool::link`]: offline from a failed
//! connection attempt until a successful one). The store adds what "offline" means for the
//! mount, and the way back:
//!
//! ```text
//!            a connection attempt fails                the prober (this thread), a request
//!   Online ─────────────────────────────> Offline ───> or the watcher connects
//!     ^      (or the mount started without                         │
//!     │       reaching the server)                                 v
//!     └──────────── folder list and every held index ───────── Resyncing
//!                   refreshed (QRESYNC/CONDSTORE), saved
//!                   copies checked against the server
//! ```
//!
//! - **Offline**: what is held is served read-only. [`Account::index`] gives the index held,
//!   however old, or the one an earlier mount saved ([`Account::offline_index`], held
//!   unverified); [`Account::mailboxes`] the list held or saved; folder STATUS comes from the
//!   index. Bodies are served from the caches; anything else that needs the server fails at
//!   once (the pool does not wait for an attempt: [`crate::Error::Unavailable`], EIO), and
//!   the filesystem refuses every change with EROFS ([`Account::is_writable`]).
//! - **The way back**: a thread ([`Account::start_link`]) makes a connection attempt each
//!   time the pool's back-off ends ([`Pool::probe`]), so the mount comes back by itself.
//! - **Resyncing**: once the server answers, the folder list is read again and every held
//!   index is refreshed, incrementally, with a sample check of the copies loaded from disk
//!   (`store/sync/verify.rs`); the filesystem hears every difference through the change
//!   feed. Only then is the mount writable again: a change must never be decided from a
//!   saved copy the server was not asked about (a restored backup reuses UIDs).
//!
//! [`Pool::link`]: crate::imap::pool::Pool::link
//! [`Pool::probe`]: crate::imap::pool::Pool::probe

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::imap::pool::Link;
use crate::imap::types::Flag;
use crate::store::ids::MailboxId;
use crate::store::index::SharedIndex;
use crate::store::mailboxes::{MailboxInfo, MailboxStatus};
use crate::store::Account;

/// Longest wait of the link thread between two looks at the pool.
const POLL: Duration = Duration::from_secs(1);

/// What the link thread keeps.
#[derive(Default)]
pub struct LinkState {
    stop: AtomicBool,
    /// The pool's link epoch the store is in step with: the folder list and every index
    /// were refreshed since the link last came online (a mount that started online is in
    /// step from the start).
    synced: AtomicU64,
    /// Resyncs done after an outage.
    resyncs: AtomicU64,
}

impl Account {
    /// The link to the server (online or offline, since when).
    pub fn link(&self) -> Link {
        self.pool.link()
    }

    /// Whether the server cannot be reached now (the mount serves what it holds).
    pub fn is_offline(&self) -> bool {
        !self.pool.link().online
    }

    /// Whether changes may be sent: online, and resynced since the link came back.
    pub fn is_writable(&self) -> bool {
        let link = self.pool.link();
        link.online && self.link_state.synced.load(Ordering::SeqCst) == link.epoch
    }

    /// Resyncs done after the server came back, for `user.imapfs.stats`.
    pub fn resyncs(&self) -> u64 {
        self.link_state.resyncs.load(Ordering::Relaxed)
    }

    /// Start offline: hold the folder list an earlier mount saved (untrusted: the first
    /// LIST that reaches the server replaces it).
    pub fn serve_offline(&self, saved: Vec<MailboxInfo>) {
        self.mailboxes.hold_saved(saved);
    }

    /// Start the link thread (once, after any fork). It runs until [`Account::close`].
    pub fn start_link(self: &Arc<Account>) -> Result<()> {
        let link = self.pool.link();
        if link.online {
            self.link_state.synced.store(link.epoch, Ordering::SeqCst);
        }
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("link".into())
            .spawn(move || run(weak))
            .map(drop)
            .map_err(|e| Error::io("starting the link thread", e))
    }

    pub(crate) fn stop_link(&self) {
        self.link_state.stop.store(true, Ordering::Relaxed);
    }

    /// Offline: the index held, however old, else the one an earlier mount saved (held
    /// from now on, unverified). Nothing: [`Error::Offline`].
    pub(crate) fn offline_index(&self, id: MailboxId) -> Result<SharedIndex> {
        if let Some(ix) = self.indexes.get(id) {
            return Ok(ix);
        }
        let name = self.require_name(id)?;
        match self.load_saved_index(id, &name) {
            Some(saved) => Ok(self.indexes.install_saved(id, saved)),
            None => Err(Error::Offline(format!("{name} was never listed here"))),
        }
    }

    /// Offline: the folder list held, however old, else the one an earlier mount saved.
    pub(crate) fn offline_mailboxes(&self) -> Result<Arc<Vec<MailboxInfo>>> {
        if let Some(list) = self.mailboxes.current() {
            return Ok(list);
        }
        match self
            .opts
            .persist
            .as_ref()
            .and_then(super::persist::saved_mailbox_list)
        {
            Some(saved) => Ok(self.mailboxes.hold_saved(saved)),
            None => Err(Error::Offline("no folder list was saved here".into())),
        }
    }

    /// Offline: a folder's STATUS, counted from its index.
    pub(crate) fn offline_status(&self, id: MailboxId) -> Result<MailboxStatus> {
        let ix = self.offline_index(id)?;
        let ix = ix.read();
        let count = |n: usize| Some(u32::try_from(n).unwrap_or(u32::MAX));
        Ok(MailboxStatus {
            messages: count(ix.messages().len()),
            unseen: count(
                ix.messages()
                    .values()
                    .filter(|m| !m.flags.contains(&Flag::Seen))
                    .count(),
            ),
            uidnext: ix.uidnext().map(|u| u.get()),
            uidvalidity: Some(ix.validity()),
        })
    }

    /// The server answers again: read the folder list, refresh every held index (checking
    /// those loaded from disk), then allow changes. An index that cannot be refreshed now
    /// and was never checked is dropped: it is listed afresh when next needed.
    fn resync(&self, epoch: u64) {
        log::info!("the server answers again: resyncing the folder list and the indexes held");
        self.mailboxes.invalidate();
        if let Err(e) = self.mailboxes(Duration::ZERO) {
            log::info!("resync: reading the folder list: {e}");
        }
        for id in self.indexes.ids() {
            if self.is_offline() {
                return;
            }
            if let Err(e) = self.refresh_held(id) {
                let unverified = self
                    .indexes
                    .get(id)
                    .is_some_and(|ix| ix.read().is_unverified());
                log::info!("resync: refreshing {id}: {e}");
                if unverified || matches!(e, Error::No { .. }) {
                    self.forget_mailbox_content(id);
                }
            }
        }
        let link = self.pool.link();
        if link.online && link.epoch == epoch {
            self.link_state.synced.store(epoch, Ordering::SeqCst);
            self.link_state.resyncs.fetch_add(1, Ordering::Relaxed);
            log::info!("online again: the mount is writable");
        }
    }
}

/// The link thread: probe while offline, resync when the link comes back.
fn run(account: Weak<Account>) {
    loop {
        let Some(a) = account.upgrade() else { return };
        if a.link_state.stop.load(Ordering::Relaxed) {
            return;
        }
        a.daily.flush_if_due(a.pool.bytes_read());
        let link = a.pool.link();
        if link.online && a.link_state.synced.load(Ordering::SeqCst) != link.epoch {
            a.resync(link.epoch);
            continue;
        }
        match a.pool.probe_due() {
            Some(wait) if wait.is_zero() => {
                a.pool.probe();
            }
            Some(wait) => a.pool.wait_changed(wait.min(POLL)),
            None => a.pool.wait_changed(POLL),
        }
    }
}
