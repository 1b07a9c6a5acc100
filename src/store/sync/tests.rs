//! Unit tests of the refresh logic: the saved-index check (deltas are tested with the index,
//! store/index/tests.rs).
use super::*;
use crate::store::index::UidMap;

fn uid(n: u32) -> Uid {
    Uid::new(n).unwrap()
}

fn meta(flags: Vec<Flag>) -> MessageMeta {
    MessageMeta {
        listed_size: 10,
        body_len: None,
        internal_date: 0,
        flags: flags.into(),
        modseq: None,
        ids: None,
    }
}

fn index(uids: &[u32]) -> Index {
    Index::listed(
        UidValidity::new(7).unwrap(),
        Some(uid(uids.iter().max().copied().unwrap_or(0) + 1)),
        Some(ModSeq(10)),
        None,
        uids.iter()
            .map(|&u| (uid(u), meta(Vec::new())))
            .collect::<UidMap<_>>(),
    )
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

#[test]
fn a_sample_of_a_sparse_index_is_of_its_messages() {
    // Issue 17: the random part is drawn by UID (no pass over the index); every draw lands
    // on a message the index holds, below the newest ones, and none twice.
    let uids: Vec<u32> = (1..=3000).step_by(7).chain(1_000_000..1_000_050).collect();
    let ix = index(&uids);
    let sample = verify::sample(&ix);
    let newest: Vec<u32> = uids[uids.len() - verify::NEWEST..].to_vec();
    assert_eq!(sample.len(), verify::NEWEST + verify::RANDOM);
    let mut seen = BTreeSet::new();
    for (u, _, _) in &sample {
        assert!(ix.messages().contains_key(u), "UID {u} is held");
        assert!(seen.insert(*u), "UID {u} drawn twice");
    }
    let older = sample.iter().filter(|(u, _, _)| !newest.contains(&u.get()));
    assert_eq!(older.count(), verify::RANDOM);
}
