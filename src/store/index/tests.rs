//! Unit tests of the index and its door: edits in place, refreshes (listings and deltas),
//! the changes each sends, and edits made while a refresh was under way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use super::*;
use crate::store::changes::{Change, ChangeFeed};
use crate::store::ids::{MailboxId, MessageRef};

fn meta(size: u64) -> MessageMeta {
    MessageMeta {
        listed_size: size,
        body_len: None,
        internal_date: 0,
        flags: Default::default(),
        modseq: None,
        ids: None,
    }
}

fn flagged(flags: Vec<Flag>) -> MessageMeta {
    MessageMeta {
        flags: flags.into(),
        ..meta(10)
    }
}

fn uid(n: u32) -> Uid {
    Uid::new(n).unwrap()
}

fn v(n: u32) -> UidValidity {
    UidValidity::new(n).unwrap()
}

fn id() -> MailboxId {
    MailboxId::new(1).unwrap()
}

/// A listing at UIDVALIDITY `validity`, UIDNEXT one past the last UID, HIGHESTMODSEQ 10.
fn index(validity: u32, uids: &[u32]) -> Index {
    Index::listed(
        v(validity),
        Some(uid(uids.iter().max().copied().unwrap_or(0) + 1)),
        Some(ModSeq(10)),
        None,
        uids.iter()
            .map(|&u| (uid(u), meta(10)))
            .collect::<UidMap<_>>(),
    )
}

/// A door with a subscriber, holding `ix` for [`id`] (installed as a first listing).
fn door(ix: Index) -> (Indexes, Receiver<Change>) {
    let feed = Arc::new(ChangeFeed::default());
    let rx = feed.subscribe();
    let door = Indexes::new(feed);
    door.install(id(), ix, &door.begin_listing(id()), None);
    (door, rx)
}

fn heard(rx: &Receiver<Change>) -> Vec<Change> {
    rx.try_iter().collect()
}

fn uids_of(door: &Indexes) -> Vec<u32> {
    let ix = door.get(id()).unwrap();
    let ix = ix.read();
    ix.messages().keys().map(|u| u.get()).collect()
}

#[test]
fn body_lengths_survive_a_refresh_of_the_same_generation() {
    let (ix, rx) = door(index(7, &[1, 2]));
    assert!(heard(&rx).is_empty(), "a first listing is no news");
    let len = IndexChange::BodyLength {
        uid: uid(2),
        len: 99,
    };
    assert!(ix.apply(id(), v(7), [len]));
    assert_eq!(
        heard(&rx),
        vec![Change::Changed {
            mailbox: id(),
            validity: v(7),
            uids: vec![uid(2)]
        }],
        "the size shown changed"
    );
    let (_, changes) = ix.install(id(), index(7, &[2, 3]), &ix.begin_listing(id()), None);
    assert_eq!(heard(&rx), changes, "what install returns is what it sent");
    let msg = MessageRef {
        mailbox: id(),
        validity: v(7),
        uid: uid(2),
    };
    assert_eq!(ix.meta(msg).unwrap().size(), 99);
    assert!(changes.contains(&Change::Removed {
        mailbox: id(),
        validity: v(7),
        uids: vec![uid(1)]
    }));
    assert!(changes.contains(&Change::Added {
        mailbox: id(),
        validity: v(7),
        uids: vec![uid(3)]
    }));
    // A new generation learns nothing from the old one.
    let (_, changes) = ix.install(id(), index(8, &[2]), &ix.begin_listing(id()), None);
    assert_eq!(
        changes,
        vec![Change::Reset {
            mailbox: id(),
            old: v(7),
            uids: vec![uid(2), uid(3)]
        }]
    );
    let msg = MessageRef {
        validity: v(8),
        ..msg
    };
    assert_eq!(ix.meta(msg).unwrap().size(), 10);
}

#[test]
fn a_body_length_that_confirms_the_listed_size_is_no_news() {
    let (ix, rx) = door(index(7, &[1]));
    let len = IndexChange::BodyLength {
        uid: uid(1),
        len: 10,
    };
    assert!(ix.apply(id(), v(7), [len]), "the index learned it");
    assert!(heard(&rx).is_empty(), "the size shown did not change");
}

#[test]
fn changes_apply_in_place_and_only_to_their_generation() {
    let (ix, rx) = door(index(7, &[1]));
    assert!(!ix.apply(id(), v(6), [IndexChange::Removed(uid(1))]));
    assert!(heard(&rx).is_empty());
    let flags = IndexChange::Flags {
        uid: uid(1),
        flags: vec![Flag::Seen],
        modseq: Some(ModSeq(5)),
    };
    assert!(ix.apply(id(), v(7), [flags]));
    assert!(ix.apply(id(), v(7), [IndexChange::Added(uid(9), meta(1))]));
    assert_eq!(ix.get(id()).unwrap().read().uidnext(), Some(uid(10)));
    assert!(ix.apply(id(), v(7), [IndexChange::Removed(uid(1))]));
    assert!(!ix.apply(id(), v(7), [IndexChange::Removed(uid(1))]));
    let at = |uids: Vec<Uid>| (id(), v(7), uids);
    let sent: Vec<_> = heard(&rx)
        .into_iter()
        .map(|c| match c {
            Change::Changed {
                mailbox,
                validity,
                uids,
            } => ("changed", (mailbox, validity, uids)),
            Change::Added {
                mailbox,
                validity,
                uids,
            } => ("added", (mailbox, validity, uids)),
            Change::Removed {
                mailbox,
                validity,
                uids,
            } => ("removed", (mailbox, validity, uids)),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            ("changed", at(vec![uid(1)])),
            ("added", at(vec![uid(9)])),
            ("removed", at(vec![uid(1)])),
        ],
        "one change per edit that changed something, none for the repeated removal"
    );
}

#[test]
fn an_expunge_of_ours_is_announced_even_for_uids_no_longer_held() {
    let (ix, rx) = door(index(7, &[1, 2]));
    ix.expunged(id(), v(7), &[uid(2), uid(5)]);
    assert_eq!(uids_of(&ix), [1]);
    assert_eq!(
        heard(&rx),
        vec![Change::Removed {
            mailbox: id(),
            validity: v(7),
            uids: vec![uid(2), uid(5)]
        }]
    );
    ix.expunged(id(), v(6), &[uid(1)]);
    assert_eq!(uids_of(&ix), [1], "another generation's UID 1");
    assert_eq!(heard(&rx).len(), 1);
}

#[test]
fn a_qresync_delta_removes_adds_and_reflags() {
    let (ix, rx) = door(index(7, &[1, 2, 3, 4]));
    let len = IndexChange::BodyLength {
        uid: uid(2),
        len: 99,
    };
    ix.apply(id(), v(7), [len]);
    heard(&rx);
    let delta = Delta {
        uidnext: Some(uid(6)),
        highest_modseq: Some(ModSeq(20)),
        // EARLIER ranges can cover UIDs never known.
        vanished: vec![(3, 3), (100, 200)],
        flags: vec![(uid(2), vec![Flag::Seen], Some(ModSeq(15)))],
        listed: BTreeMap::from([(uid(5), flagged(vec![Flag::Flagged]))]),
        ..Delta::default()
    };
    let listing = ix.begin_listing(id());
    let (shared, unknown, _) = ix.apply_delta(id(), v(7), delta, &listing, None).unwrap();
    assert!(unknown.is_empty());
    assert_eq!(uids_of(&ix), [1, 2, 4, 5]);
    let shared = shared.read();
    assert_eq!(shared.messages()[&uid(2)].flags, vec![Flag::Seen]);
    assert_eq!(
        shared.messages()[&uid(2)].body_len,
        Some(99),
        "size corrections survive"
    );
    assert_eq!(shared.highest_modseq(), Some(ModSeq(20)));
    assert_eq!(shared.uidnext(), Some(uid(6)));
    assert_eq!(heard(&rx).len(), 3);
}

#[test]
fn a_plain_delta_judges_expunges_only_below_its_uidnext() {
    // UID 9 arrived in the index after the server answered (a move of ours).
    let (ix, rx) = door(index(7, &[1, 2, 9]));
    let delta = Delta {
        uidnext: Some(uid(4)),
        present: Some(BTreeSet::from([uid(1), uid(3)])),
        flags: vec![(uid(1), Vec::new(), None), (uid(3), Vec::new(), None)],
        ..Delta::default()
    };
    let listing = ix.begin_listing(id());
    let (_, unknown, _) = ix.apply_delta(id(), v(7), delta, &listing, None).unwrap();
    assert_eq!(
        unknown,
        vec![uid(3)],
        "known to the server, not to us: list it"
    );
    assert_eq!(uids_of(&ix), [1, 9]);
    assert_eq!(
        heard(&rx),
        vec![Change::Removed {
            mailbox: id(),
            validity: v(7),
            uids: vec![uid(2)]
        }]
    );
}

#[test]
fn a_delta_for_another_generation_is_not_applied() {
    let (ix, rx) = door(index(7, &[1]));
    let delta = Delta {
        vanished: vec![(1, 1)],
        ..Delta::default()
    };
    let listing = ix.begin_listing(id());
    let (shared, _, _) = ix.apply_delta(id(), v(8), delta, &listing, None).unwrap();
    assert!(heard(&rx).is_empty());
    assert_eq!(uids_of(&ix), [1]);
    assert!(shared.read().is_stale());
}

#[test]
fn item_6_a_delta_with_unlisted_uids_keeps_the_old_highestmodseq_and_uidnext() {
    let (ix, _rx) = door(index(7, &[1, 2]));
    // QRESYNC reported flags of UID 3, which no listing gave us.
    let delta = Delta {
        uidnext: Some(uid(4)),
        highest_modseq: Some(ModSeq(12)),
        flags: vec![(uid(3), Vec::new(), Some(ModSeq(12)))],
        ..Delta::default()
    };
    let listing = ix.begin_listing(id());
    let (shared, unknown, _) = ix.apply_delta(id(), v(7), delta, &listing, None).unwrap();
    assert_eq!(unknown, vec![uid(3)]);
    {
        let ix = shared.read();
        assert_eq!(ix.highest_modseq(), Some(ModSeq(10)), "not committed");
        assert_eq!(ix.uidnext(), Some(uid(3)), "not committed");
        assert!(ix.is_stale(), "the next question asks again");
    }
    // Listed (on the refresh's session): committed.
    let delta = Delta {
        uidnext: Some(uid(4)),
        highest_modseq: Some(ModSeq(12)),
        flags: vec![(uid(3), Vec::new(), Some(ModSeq(12)))],
        listed: BTreeMap::from([(uid(3), meta(10))]),
        ..Delta::default()
    };
    let (shared, unknown, _) = ix.apply_delta(id(), v(7), delta, &listing, None).unwrap();
    assert!(unknown.is_empty());
    let ix = shared.read();
    assert!(ix.messages().contains_key(&uid(3)));
    assert_eq!(ix.highest_modseq(), Some(ModSeq(12)));
    assert_eq!(ix.uidnext(), Some(uid(4)));
    assert!(!ix.is_stale());
}

#[test]
fn a_saved_index_goes_in_with_its_first_delta() {
    let feed = Arc::new(ChangeFeed::default());
    let rx = feed.subscribe();
    let ix = Indexes::new(feed);
    let saved = Index::saved(
        v(7),
        Some(uid(3)),
        Some(ModSeq(10)),
        index(7, &[1, 2]).messages,
    );
    let delta = Delta {
        uidnext: Some(uid(3)),
        highest_modseq: Some(ModSeq(11)),
        vanished: vec![(1, 1)],
        ..Delta::default()
    };
    let listing = ix.begin_listing(id());
    assert!(ix
        .apply_delta(id(), v(7), Delta::default(), &listing, None)
        .is_none());
    let (shared, _, changed) = ix
        .apply_delta(id(), v(7), delta, &listing, Some(saved))
        .unwrap();
    assert_eq!(uids_of(&ix), [2]);
    assert!(!shared.read().is_stale());
    assert_eq!(heard(&rx).len(), 1, "the removal");
    assert!(changed, "a removal changes the saved index");
}

// Edits made while a refresh was under way (issue 14; the model test's "listed in the
// folder it was just moved out of").

#[test]
fn issue_14_a_listing_older_than_a_move_does_not_bring_the_message_back() {
    let (ix, rx) = door(index(7, &[1, 2]));
    let listing = ix.begin_listing(id());
    // The listing is fetched now (UID 2 still there); then the move of UID 2 is confirmed.
    let answer = index(7, &[1, 2]);
    ix.expunged(id(), v(7), &[uid(2)]);
    heard(&rx);
    let (_, changes) = ix.install(id(), answer, &listing, None);
    assert_eq!(uids_of(&ix), [1], "the moved message stays gone");
    assert!(changes.is_empty(), "no news: {changes:?}");
}

#[test]
fn issue_14_a_delta_older_than_a_move_does_not_bring_the_message_back() {
    let (ix, rx) = door(index(7, &[1]));
    let listing = ix.begin_listing(id());
    // Another client appended UID 2; we moved it away; the refresh that saw it lands last.
    let answer = Delta {
        uidnext: Some(uid(3)),
        listed: BTreeMap::from([(uid(2), meta(10))]),
        ..Delta::default()
    };
    ix.expunged(id(), v(7), &[uid(2)]);
    heard(&rx);
    ix.apply_delta(id(), v(7), answer, &listing, None).unwrap();
    assert_eq!(uids_of(&ix), [1]);
    assert!(heard(&rx).is_empty(), "added and removed again: no news");
}

#[test]
fn issue_14_a_listing_older_than_an_arrival_keeps_it() {
    let (ix, _rx) = door(index(7, &[1]));
    let listing = ix.begin_listing(id());
    let answer = index(7, &[1]);
    // A move of ours put UID 5 here after the listing was fetched.
    ix.apply(id(), v(7), [IndexChange::Added(uid(5), meta(3))]);
    ix.install(id(), answer, &listing, None);
    assert_eq!(uids_of(&ix), [1, 5]);
    // But a listing that knew UID 5 (its UIDNEXT is past it) and lacks it is the newer
    // word: another client removed it since.
    let listing = ix.begin_listing(id());
    let mut answer = index(7, &[1, 5]);
    answer.uidnext = Some(uid(7));
    ix.apply(id(), v(7), [IndexChange::Added(uid(6), meta(3))]);
    ix.install(id(), answer, &listing, None);
    assert_eq!(uids_of(&ix), [1, 5]);
}

#[test]
fn issue_14_flag_edits_during_a_listing_win_only_when_newer() {
    let (ix, _rx) = door(index(7, &[1, 2]));
    let listing = ix.begin_listing(id());
    let mut answer = index(7, &[1, 2]);
    answer.messages.get_mut(&uid(1)).unwrap().modseq = Some(ModSeq(11));
    answer.messages.get_mut(&uid(2)).unwrap().modseq = Some(ModSeq(13));
    let seen = |u, m| IndexChange::Flags {
        uid: uid(u),
        flags: vec![Flag::Seen],
        modseq: Some(ModSeq(m)),
    };
    ix.apply(id(), v(7), [seen(1, 12), seen(2, 12)]);
    ix.install(id(), answer, &listing, None);
    let shared = ix.get(id()).unwrap();
    let got = shared.read();
    assert_eq!(
        got.messages()[&uid(1)].flags,
        vec![Flag::Seen],
        "ours is newer"
    );
    assert!(
        got.messages()[&uid(2)].flags.is_empty(),
        "the server's is newer"
    );
    assert!(!got.is_stale());
    drop(got);
    // Without MODSEQs nobody can tell: ours is kept and the index asks again.
    let listing = ix.begin_listing(id());
    let answer = index(7, &[1, 2]);
    let plain = IndexChange::Flags {
        uid: uid(2),
        flags: vec![Flag::Flagged],
        modseq: None,
    };
    ix.apply(id(), v(7), [plain]);
    ix.install(id(), answer, &listing, None);
    let got = shared.read();
    assert_eq!(got.messages()[&uid(2)].flags, vec![Flag::Flagged]);
    assert!(got.is_stale());
}

#[test]
fn issue_14_a_stale_mark_during_a_listing_survives_it() {
    let (ix, _rx) = door(index(7, &[1]));
    let listing = ix.begin_listing(id());
    ix.mark_stale(id());
    ix.install(id(), index(7, &[1]), &listing, None);
    assert!(ix.get(id()).unwrap().read().is_stale());
    // Once no listing is open, nothing is journaled.
    drop(listing);
    let listing = ix.begin_listing(id());
    ix.install(id(), index(7, &[1]), &listing, None);
    assert!(!ix.get(id()).unwrap().read().is_stale());
}

#[test]
fn issue_14_edits_before_a_first_listing_lands_are_kept() {
    let feed = Arc::new(ChangeFeed::default());
    let ix = Indexes::new(feed);
    let listing = ix.begin_listing(id());
    assert!(!ix.apply(id(), v(7), [IndexChange::Added(uid(4), meta(3))]));
    ix.install(id(), index(7, &[1]), &listing, None);
    assert_eq!(uids_of(&ix), [1, 4]);
}

#[test]
fn a_delta_that_changes_nothing_says_so() {
    // Issue 17: a remount's refresh of an unchanged folder need not write its index again.
    let (ix, rx) = door(index(7, &[1, 2]));
    let same = || Delta {
        uidnext: Some(uid(3)),
        highest_modseq: Some(ModSeq(10)),
        flags: vec![(uid(1), Vec::new(), None)],
        listed: BTreeMap::from([(uid(2), meta(10))]),
        ..Delta::default()
    };
    let listing = ix.begin_listing(id());
    let (_, _, changed) = ix.apply_delta(id(), v(7), same(), &listing, None).unwrap();
    assert!(!changed, "the same flags, sizes and marks");
    assert!(heard(&rx).is_empty());
    // Each kind of edit counts: flags, a MODSEQ alone, HIGHESTMODSEQ, UIDNEXT, an expunge.
    let edits = [
        Delta {
            flags: vec![(uid(1), vec![Flag::Seen], None)],
            ..same()
        },
        Delta {
            listed: BTreeMap::from([(
                uid(2),
                MessageMeta {
                    modseq: Some(ModSeq(9)),
                    ..meta(10)
                },
            )]),
            ..same()
        },
        Delta {
            highest_modseq: Some(ModSeq(11)),
            ..same()
        },
        Delta {
            uidnext: Some(uid(5)),
            ..same()
        },
        Delta {
            vanished: vec![(2, 2)],
            ..same()
        },
    ];
    for (i, delta) in edits.into_iter().enumerate() {
        let (_, _, changed) = ix.apply_delta(id(), v(7), delta, &listing, None).unwrap();
        assert!(changed, "edit {i}");
    }
}

#[test]
fn recent_is_never_kept_so_it_is_no_change() {
    // Issue 17: \Recent is one session's view (another client's SELECT takes it away); an
    // index that kept it looked changed from one mount to the next.
    let (ix, rx) = door(index(7, &[1, 2]));
    let listing = ix.begin_listing(id());
    let recent = Delta {
        uidnext: Some(uid(3)),
        highest_modseq: Some(ModSeq(10)),
        flags: vec![(uid(1), vec![Flag::Recent], None)],
        listed: BTreeMap::from([(uid(2), flagged(vec![Flag::Recent]))]),
        ..Delta::default()
    };
    let (_, _, changed) = ix.apply_delta(id(), v(7), recent, &listing, None).unwrap();
    assert!(!changed, "\\Recent alone is no change");
    assert!(heard(&rx).is_empty());
    let added = IndexChange::Added(uid(3), flagged(vec![Flag::Recent, Flag::Seen]));
    assert!(ix.apply(id(), v(7), [added]));
    let shared = ix.get(id()).unwrap();
    let held = shared.read();
    assert!(held
        .messages()
        .values()
        .all(|m| !m.flags.contains(&Flag::Recent)));
    assert_eq!(held.messages()[&uid(3)].flags, [Flag::Seen]);
}

#[test]
fn flag_lists_enter_an_index_without_spare_room() {
    // As a decoder builds it: room for more than it holds.
    let mut decoded = Vec::with_capacity(4);
    decoded.extend([Flag::Seen, Flag::Recent]);
    let kept = without_recent(decoded);
    assert_eq!((kept.as_slice(), kept.capacity()), (&[Flag::Seen][..], 1));
}

/// A message's entry in an index stays small (issue 17: 1,000,000 of them in 300 MiB).
#[test]
fn a_message_entry_is_72_bytes() {
    assert_eq!(std::mem::size_of::<MessageMeta>(), 72);
}
