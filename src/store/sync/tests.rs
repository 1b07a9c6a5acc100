//! Unit tests of the refresh logic: deltas applied to an index, the saved-index check.
use super::*;

fn uid(n: u32) -> Uid {
    Uid::new(n).unwrap()
}

fn meta(flags: Vec<Flag>) -> MessageMeta {
    MessageMeta {
        listed_size: 10,
        body_len: None,
        internal_date: 0,
        flags,
        modseq: None,
    }
}

fn index(uids: &[u32]) -> Index {
    Index {
        validity: UidValidity::new(7).unwrap(),
        uidnext: Some(uid(uids.iter().max().copied().unwrap_or(0) + 1)),
        highest_modseq: Some(ModSeq(10)),
        permanent_flags: None,
        messages: uids.iter().map(|&u| (uid(u), meta(Vec::new()))).collect(),
        fetched_at: Instant::now(),
        stale: false,
    }
}

#[test]
fn a_qresync_delta_removes_adds_and_reflags() {
    let id = MailboxId::new(1).unwrap();
    let v = UidValidity::new(7).unwrap();
    let mut ix = index(&[1, 2, 3, 4]);
    ix.messages.get_mut(&uid(2)).unwrap().body_len = Some(99);
    let delta = Delta {
        uidnext: Some(uid(6)),
        highest_modseq: Some(ModSeq(20)),
        // EARLIER ranges can cover UIDs never known.
        vanished: vec![(3, 3), (100, 200)],
        flags: vec![(uid(2), vec![Flag::Seen], Some(ModSeq(15)))],
        listed: BTreeMap::from([(uid(5), meta(vec![Flag::Flagged]))]),
        ..Delta::default()
    };
    let (changes, unknown) = apply_delta(id, v, &mut ix, delta);
    assert!(unknown.is_empty());
    assert_eq!(
        ix.messages.keys().map(|u| u.get()).collect::<Vec<_>>(),
        [1, 2, 4, 5]
    );
    assert_eq!(ix.messages[&uid(2)].flags, vec![Flag::Seen]);
    assert_eq!(
        ix.messages[&uid(2)].body_len,
        Some(99),
        "size corrections survive"
    );
    assert_eq!(ix.highest_modseq, Some(ModSeq(20)));
    assert_eq!(ix.uidnext, Some(uid(6)));
    assert_eq!(changes.len(), 3);
}

#[test]
fn a_plain_delta_judges_expunges_only_below_its_uidnext() {
    let id = MailboxId::new(1).unwrap();
    let v = UidValidity::new(7).unwrap();
    // UID 9 arrived in the index after the server answered (a move of ours).
    let mut ix = index(&[1, 2, 9]);
    let delta = Delta {
        uidnext: Some(uid(4)),
        present: Some(BTreeSet::from([uid(1), uid(3)])),
        flags: vec![(uid(1), Vec::new(), None), (uid(3), Vec::new(), None)],
        ..Delta::default()
    };
    let (changes, unknown) = apply_delta(id, v, &mut ix, delta);
    assert_eq!(
        unknown,
        vec![uid(3)],
        "known to the server, not to us: list it"
    );
    assert!(ix.messages.contains_key(&uid(9)));
    assert!(!ix.messages.contains_key(&uid(2)));
    assert_eq!(
        changes,
        vec![Change::Removed {
            mailbox: id,
            validity: v,
            uids: vec![uid(2)]
        }]
    );
}

#[test]
fn a_delta_for_another_generation_is_not_applied() {
    let id = MailboxId::new(1).unwrap();
    let mut ix = index(&[1]);
    let delta = Delta {
        vanished: vec![(1, 1)],
        ..Delta::default()
    };
    let (changes, _) = apply_delta(id, UidValidity::new(8).unwrap(), &mut ix, delta);
    assert!(changes.is_empty());
    assert!(ix.messages.contains_key(&uid(1)));
    assert!(ix.stale);
}
#[test]
fn item_6_a_delta_with_unlisted_uids_keeps_the_old_highestmodseq_and_uidnext() {
    let id = MailboxId::new(1).unwrap();
    let v = UidValidity::new(7).unwrap();
    let mut ix = index(&[1, 2]);
    // QRESYNC reported flags of UID 3, which no listing gave us.
    let delta = Delta {
        uidnext: Some(uid(4)),
        highest_modseq: Some(ModSeq(12)),
        flags: vec![(uid(3), Vec::new(), Some(ModSeq(12)))],
        ..Delta::default()
    };
    let (_, unknown) = apply_delta(id, v, &mut ix, delta);
    assert_eq!(unknown, vec![uid(3)]);
    assert_eq!(ix.highest_modseq, Some(ModSeq(10)), "not committed");
    assert_eq!(ix.uidnext, Some(uid(3)), "not committed");
    assert!(ix.stale, "the next question asks again");
    // Listed (on the refresh's session): committed.
    let delta = Delta {
        uidnext: Some(uid(4)),
        highest_modseq: Some(ModSeq(12)),
        flags: vec![(uid(3), Vec::new(), Some(ModSeq(12)))],
        listed: BTreeMap::from([(uid(3), meta(Vec::new()))]),
        ..Delta::default()
    };
    let (_, unknown) = apply_delta(id, v, &mut ix, delta);
    assert!(unknown.is_empty());
    assert!(ix.messages.contains_key(&uid(3)));
    assert_eq!(ix.highest_modseq, Some(ModSeq(12)));
    assert_eq!(ix.uidnext, Some(uid(4)));
    assert!(!ix.stale);
}

#[test]
fn item_15_a_sample_that_differs_from_the_server_fails_the_check() {
    let name = MailboxName::from_utf8("INBOX", false);
    let saved = index(&[1, 2, 3]);
    let base = Base::of(&saved, verify::sample(&saved));
    assert_eq!(base.check.len(), 3, "a small index is sampled whole");
    let listed = |size: u64| -> BTreeMap<Uid, MessageMeta> {
        [1, 2, 3]
            .into_iter()
            .map(|u| {
                let mut m = meta(Vec::new());
                m.listed_size = if u == 2 { size } else { 10 };
                (uid(u), m)
            })
            .collect()
    };
    let same = Delta {
        listed: listed(10),
        ..Delta::default()
    };
    let (m, n) = (Some(ModSeq(10)), Some(uid(4)));
    assert!(verify::matches(&name, &base, &same, m, n));
    let other = Delta {
        listed: listed(11),
        ..Delta::default()
    };
    assert!(!verify::matches(&name, &base, &other, m, n));
    // Gone without a word, or counters that went back: not the same mailbox.
    let mut gone = listed(10);
    gone.remove(&uid(3));
    let silent = Delta {
        listed: gone.clone(),
        ..Delta::default()
    };
    assert!(!verify::matches(&name, &base, &silent, m, n));
    let reported = Delta {
        listed: gone,
        vanished: vec![(3, 3)],
        ..Delta::default()
    };
    assert!(verify::matches(&name, &base, &reported, m, n));
    assert!(!verify::matches(&name, &base, &same, Some(ModSeq(9)), n));
    assert!(!verify::matches(&name, &base, &same, m, Some(uid(3))));
    // A big index: the newest 100 and 100 others.
    let big = index(&(1..=1000).collect::<Vec<_>>());
    let sample = verify::sample(&big);
    assert_eq!(sample.len(), 200);
    assert!((901..=1000).all(|u| sample.iter().any(|(s, _, _)| s.get() == u)));
}
