//! Indexes kept on disk between mounts (placeholder).

use crate::imap::types::MailboxName;
use crate::store::ids::MailboxId;
use crate::store::index::Index;
use crate::store::Account;

impl Account {
    pub(crate) fn load_saved_index(&self, _id: MailboxId, _name: &MailboxName) -> Option<Index> {
        None
    }

    pub(crate) fn index_changed(&self, _id: MailboxId) {}

    pub(crate) fn save_indexes(&self) {}
}
