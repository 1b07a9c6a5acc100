//! Gmail labels of one message: read with `UID FETCH uid (X-GM-LABELS)`, changed with `UID
//! STORE uid [+|-]X-GM-LABELS (...)` (see [`crate::imap::gmail`]).
//!
//! Labels are asked when read, never kept: another client (the phone, the web) changes them
//! without any CONDSTORE trace a label view could follow. A change succeeds only if the
//! labels the server reports afterwards are what was asked. A label is a folder on Gmail, so
//! after a change every folder's index is asked again before it is next shown (a message
//! appears in, or leaves, the folder of the label).

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr, StoreMode};
use crate::imap::gmail::Label;
use crate::imap::pool::Retry;
use crate::imap::session::{Access, Capability};
use crate::imap::types::{FetchItem, SequenceSet, Uid, Untagged};
use crate::store::ids::MessageRef;
use crate::store::Account;

/// A change to a message's labels, as `setfattr -n user.gmail.labels` asks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelEdit {
    /// `+Label`.
    Add(Label),
    /// `-Label`.
    Remove(Label),
    /// A list (see [`Label::parse_list`]); empty removes every label.
    Replace(Vec<Label>),
}

impl LabelEdit {
    /// `+Label`, `-Label` (the rest of the value is the label's name, or one quoted label),
    /// or a list that replaces. A bad label is EINVAL.
    pub fn parse(text: &str) -> Result<LabelEdit> {
        let bad = |e: crate::imap::gmail::BadLabel| {
            Error::InvalidInput(format!("user.gmail.labels: {e}"))
        };
        Ok(if let Some(rest) = text.strip_prefix('+') {
            LabelEdit::Add(Label::parse_one(rest).map_err(bad)?)
        } else if let Some(rest) = text.strip_prefix('-') {
            LabelEdit::Remove(Label::parse_one(rest).map_err(bad)?)
        } else {
            LabelEdit::Replace(Label::parse_list(text).map_err(bad)?)
        })
    }

    fn holds_for(&self, labels: &[Label]) -> bool {
        match self {
            LabelEdit::Add(l) => labels.contains(l),
            LabelEdit::Remove(l) => !labels.contains(l),
            LabelEdit::Replace(want) => {
                let (mut a, mut b) = (want.clone(), labels.to_vec());
                a.sort();
                a.dedup();
                b.sort();
                b.dedup();
                a == b
            }
        }
    }
}

impl Account {
    /// The labels of a message now (one round trip). ENOTSUP on a server without X-GM-EXT-1.
    pub fn labels(&self, msg: MessageRef) -> Result<Vec<Label>> {
        let name = self.require_name(msg.mailbox)?;
        self.pool.with_session(Some(&name), Retry::Idempotent, |s| {
            require_labels(s)?;
            s.select_at(&name, msg.validity, Access::Read)?;
            let done = s.run(Command::Fetch {
                uid: true,
                set: SequenceSet::single(msg.uid.get()),
                attrs: vec![FetchAttr::Uid, FetchAttr::GmLabels],
                changed_since: None,
            })?;
            labels_of(&done.untagged, msg.uid)
                .ok_or_else(|| Error::NoMessage(format!("UID {} in {name}", msg.uid)))
        })
    }

    /// Change a message's labels; returns them as the server reports them afterwards.
    /// EBUSY if they are not what was asked (the server refused one silently, or another
    /// client changed them at the same moment).
    pub fn set_labels(&self, msg: MessageRef, edit: &LabelEdit) -> Result<Vec<Label>> {
        let name = self.require_name(msg.mailbox)?;
        let set = SequenceSet::single(msg.uid.get());
        let labels = self
            .pool
            .with_session(Some(&name), Retry::Idempotent, |s| {
                require_labels(s)?;
                s.select_at(&name, msg.validity, Access::Write)?;
                let (mode, labels) = match edit {
                    LabelEdit::Add(l) => (StoreMode::Add, vec![l.clone()]),
                    LabelEdit::Remove(l) => (StoreMode::Remove, vec![l.clone()]),
                    LabelEdit::Replace(v) => (StoreMode::Replace, v.clone()),
                };
                let utf8 = s.utf8();
                let done = s.run(Command::StoreLabels {
                    set: set.clone(),
                    mode,
                    silent: false,
                    labels,
                    utf8,
                })?;
                if let Some(l) = labels_of(&done.untagged, msg.uid) {
                    return Ok(l);
                }
                // No FETCH with the STORE's reply: ask.
                let now = s.run(Command::Fetch {
                    uid: true,
                    set: set.clone(),
                    attrs: vec![FetchAttr::Uid, FetchAttr::GmLabels],
                    changed_since: None,
                })?;
                labels_of(&now.untagged, msg.uid)
                    .ok_or_else(|| Error::NoMessage(format!("UID {} in {name}", msg.uid)))
            })?;
        // A label is a folder: the message may have come into one or left one.
        for id in self.indexes.ids() {
            self.indexes.mark_stale(id);
        }
        if !edit.holds_for(&labels) {
            return Err(Error::Conflict(format!(
                "the labels of UID {} are not what was asked; read them and try again",
                msg.uid
            )));
        }
        Ok(labels)
    }
}

fn require_labels(s: &mut crate::imap::session::Session) -> Result<()> {
    if s.supports(Capability::GmExt) {
        Ok(())
    } else {
        Err(Error::Unsupported(
            "labels: the server has no X-GM-EXT-1".into(),
        ))
    }
}

/// The labels a FETCH reported for `uid`.
fn labels_of(untagged: &[Untagged], uid: Uid) -> Option<Vec<Label>> {
    untagged.iter().rev().find_map(|u| {
        let Untagged::Fetch { items, .. } = u else {
            return None;
        };
        if !items.contains(&FetchItem::Uid(uid)) {
            return None;
        }
        items.iter().find_map(|i| match i {
            FetchItem::GmLabels(l) => Some(l.clone()),
            _ => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_parse() {
        assert_eq!(
            LabelEdit::parse("+My Label").unwrap(),
            LabelEdit::Add(Label::User("My Label".into()))
        );
        assert_eq!(
            LabelEdit::parse("-\\Important").unwrap(),
            LabelEdit::Remove(Label::System("\\Important".into()))
        );
        assert_eq!(
            LabelEdit::parse("Work \"Two Words\"").unwrap(),
            LabelEdit::Replace(vec![
                Label::User("Work".into()),
                Label::User("Two Words".into())
            ])
        );
        assert_eq!(LabelEdit::parse("").unwrap(), LabelEdit::Replace(vec![]));
        for bad in ["+", "-", "+a\nb", "\"open", "+\\", "-\\Bad Label"] {
            assert!(LabelEdit::parse(bad).is_err(), "{bad}");
        }
    }
}
