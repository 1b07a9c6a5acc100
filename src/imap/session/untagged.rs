//! Untagged responses as typed events: what the server says about the selected mailbox
//! becomes a [`MailboxEvent`]. (Applying every untagged response to the connection and
//! mailbox state is the session core's: `Core::observe` in [`super::core`].)
//!
//! [`MailboxEvent::of`] is a pure function of one response, so the watcher, the store and the
//! transcript tests all read the same meaning out of it: EXISTS and EXPUNGE count and move
//! sequence numbers; VANISHED names UIDs (`earlier` for the QRESYNC catch-up of a SELECT);
//! FETCH carries what changed about one message (UID, flags, MODSEQ), if it says anything.

use super::*;

/// A change to the selected mailbox, as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MailboxEvent {
    /// `* n EXISTS`: the mailbox holds `n` messages.
    Exists(u32),
    /// `* n RECENT`.
    Recent(u32),
    /// `* n EXPUNGE`: the message at sequence number `n` is gone; those after it move down.
    Expunge(SeqNum),
    /// `* VANISHED [(EARLIER)] uids` (QRESYNC): these UIDs are gone.
    Vanished { earlier: bool, uids: SequenceSet },
    /// `* n FETCH (...)` with what it says about the message's state.
    Fetch {
        seq: SeqNum,
        uid: Option<Uid>,
        flags: Option<Vec<Flag>>,
        modseq: Option<ModSeq>,
    },
    /// `[UIDVALIDITY v]`: the mailbox generation.
    UidValidity(UidValidity),
    /// `[UIDNEXT n]`.
    UidNext(Uid),
    /// `[HIGHESTMODSEQ m]`.
    HighestModSeq(ModSeq),
    /// `* FLAGS (...)`: the flags defined in the mailbox.
    Flags(Vec<Flag>),
}

impl MailboxEvent {
    /// Whether the event says messages came, went or changed (what makes a watcher refresh),
    /// rather than describing the mailbox.
    pub fn is_message_change(&self) -> bool {
        matches!(
            self,
            MailboxEvent::Exists(_)
                | MailboxEvent::Expunge(_)
                | MailboxEvent::Vanished { .. }
                | MailboxEvent::Fetch { .. }
        )
    }

    /// What an untagged response says about the selected mailbox, if anything.
    pub fn of(u: &Untagged) -> Option<MailboxEvent> {
        Some(match u {
            Untagged::Exists(n) => MailboxEvent::Exists(*n),
            Untagged::Recent(n) => MailboxEvent::Recent(*n),
            Untagged::Expunge(n) => MailboxEvent::Expunge(*n),
            Untagged::Vanished { earlier, uids } => MailboxEvent::Vanished {
                earlier: *earlier,
                uids: uids.clone(),
            },
            Untagged::Flags(f) => MailboxEvent::Flags(f.clone()),
            Untagged::Fetch { seq, items } => {
                let (mut uid, mut flags, mut modseq) = (None, None, None);
                for item in items {
                    match item {
                        FetchItem::Uid(u) => uid = Some(*u),
                        FetchItem::Flags(f) => flags = Some(f.clone()),
                        FetchItem::ModSeq(m) => modseq = Some(*m),
                        _ => {}
                    }
                }
                MailboxEvent::Fetch {
                    seq: *seq,
                    uid,
                    flags,
                    modseq,
                }
            }
            Untagged::Status { text, .. } => match &text.code {
                Some(Code::UidValidity(v)) => MailboxEvent::UidValidity(*v),
                Some(Code::UidNext(n)) => MailboxEvent::UidNext(*n),
                Some(Code::HighestModSeq(m)) => MailboxEvent::HighestModSeq(*m),
                _ => return None,
            },
            _ => return None,
        })
    }
}
