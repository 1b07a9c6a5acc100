//! Walk plans: the messages after a start in UID order or in file name order.

use crate::store::index::UidMap;

use super::{Order, PLAN_MESSAGES};
use crate::imap::types::Uid;

/// If `uid` follows one of `recent` (newest first: a walker's own last message is newer than
/// its earlier ones, which `uid` may follow by chance in the other order) in file name order
/// or in UID order among `messages`, that order, the message it follows, and the next
/// [`PLAN_MESSAGES`] messages after `uid` in it. Proportional to what it returns, not to the
/// folder: a few range lookups per candidate (a reader that walks past the end of one plan
/// starts the next stream there).
pub(super) fn walk_plan<V>(
    messages: &UidMap<V>,
    uid: Uid,
    recent: &[Uid],
) -> Option<(Order, Uid, Vec<Uid>)> {
    // Where both orders agree (1001 after 1000), file names: a walk that starts in the
    // middle of a folder is a batch of names (`xargs`), and a UID walker stays within a
    // name plan's few steps (it skips `101.eml` between `1009.eml` and `1010.eml`), where
    // a name walker leaves a UID plan for good.
    let (order, prev) = recent.iter().find_map(|&prev| {
        if names_after(messages, prev, 1) == [uid] {
            Some((Order::Name, prev))
        } else if messages.range(prev..).nth(1).map(|(u, _)| *u) == Some(uid) {
            Some((Order::Uid, prev))
        } else {
            None
        }
    })?;
    let plan = match order {
        Order::Uid => messages
            .range(uid..)
            .skip(1)
            .take(PLAN_MESSAGES)
            .map(|(u, _)| *u)
            .collect(),
        Order::Name => names_after(messages, uid, PLAN_MESSAGES),
    };
    Some((order, prev, plan))
}

/// Up to `limit` messages after `uid` in the order of a walk that went from `prev` to `uid`:
/// file name order if `uid` is `prev`'s next name (as [`walk_plan`], names where both orders
/// agree), else UID order. A reader's walk prefetch fetches these, so that a `cat *.eml` gets
/// the messages it opens next, not the next UIDs it reads much later.
pub(crate) fn walk_next<V>(messages: &UidMap<V>, prev: Uid, uid: Uid, limit: usize) -> Vec<Uid> {
    if names_after(messages, prev, 1) == [uid] {
        return names_after(messages, uid, limit);
    }
    messages
        .range(uid..)
        .skip(1)
        .take(limit)
        .map(|(u, _)| *u)
        .collect()
}

/// The messages after `uid` among `messages`, by UID and by file name.
pub(super) fn next_messages<V>(messages: &UidMap<V>, uid: Uid) -> [Option<Uid>; 2] {
    let by_uid = messages.range(uid..).map(|(u, _)| *u).find(|u| *u != uid);
    [by_uid, names_after(messages, uid, 1).first().copied()]
}

/// Up to `limit` UIDs of `messages` after `after` in file name order (`<uid>.eml` in byte
/// order: decimal strings, a prefix first), found without looking at the others. UIDs of one
/// digit count are in the same order by number and by name, so the name order is a merge
/// of at most ten ranges of the map, one per digit count, each starting at its first name
/// after `after`'s.
fn names_after<V>(messages: &UidMap<V>, after: Uid, limit: usize) -> Vec<Uid> {
    let x = u64::from(after.get());
    let len = digits(x);
    let mut runs: Vec<_> = (1..=10u32)
        .filter_map(|d| {
            let first = match d.cmp(&len) {
                // Same length: a greater number.
                std::cmp::Ordering::Equal => x + 1,
                // Longer: its first `len` digits at least `after`'s.
                std::cmp::Ordering::Greater => x * 10u64.pow(d - len),
                // Shorter: greater than `after`'s first `d` digits (equal is a prefix).
                std::cmp::Ordering::Less => x / 10u64.pow(len - d) + 1,
            };
            let lo = first.max(10u64.pow(d - 1));
            let hi = (10u64.pow(d) - 1).min(u64::from(u32::MAX));
            let (lo, hi) = (Uid::new(u32::try_from(lo).ok()?)?, Uid::new(hi as u32)?);
            (lo <= hi).then(|| messages.range(lo..=hi).map(|(u, _)| *u).peekable())
        })
        .collect();
    let mut out = Vec::with_capacity(limit.min(messages.len()));
    while out.len() < limit {
        let next = runs
            .iter_mut()
            .filter_map(|r| r.peek().copied())
            .min_by(|a, b| name_order(a.get(), b.get()));
        let Some(next) = next else {
            break;
        };
        for r in &mut runs {
            r.next_if_eq(&next);
        }
        out.push(next);
    }
    out
}

/// Decimal digits of `n` (1 for 0).
fn digits(mut n: u64) -> u32 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// `a.eml` against `b.eml` in byte order: compared as decimal strings padded with zeros to
/// one length, the shorter first on a tie (it is a prefix, and `.` sorts before digits).
fn name_order(a: u32, b: u32) -> std::cmp::Ordering {
    let (a, b) = (u64::from(a), u64::from(b));
    let (da, db) = (digits(a), digits(b));
    let width = da.max(db);
    (a * 10u64.pow(width - da))
        .cmp(&(b * 10u64.pow(width - db)))
        .then(da.cmp(&db))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle: every name made and sorted.
    fn by_sorting(uids: &[u32], after: u32, limit: usize) -> Vec<u32> {
        let mut names: Vec<String> = uids.iter().map(|u| format!("{u}.eml")).collect();
        names.sort();
        let after = format!("{after}.eml");
        names
            .into_iter()
            .filter(|n| *n > after)
            .take(limit)
            .map(|n| n.trim_end_matches(".eml").parse().unwrap())
            .collect()
    }

    #[test]
    fn issue_17_a_walk_prefetch_follows_the_walks_order() {
        let map: UidMap<()> = (1..=1250).map(|u| (Uid::new(u).unwrap(), ())).collect();
        let u = |n| Uid::new(n).unwrap();
        let got = |prev, uid| -> Vec<u32> {
            walk_next(&map, u(prev), u(uid), 3)
                .into_iter()
                .map(Uid::get)
                .collect()
        };
        // `cat *.eml`: 1009.eml, 101.eml, then 1010.eml 1011.eml 1012.eml.
        assert_eq!(got(1009, 101), [1010, 1011, 1012]);
        // `grep -r`: UID order.
        assert_eq!(got(100, 101), [102, 103, 104]);
    }

    #[test]
    fn issue_17_name_order_plans_match_sorted_names() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            // Dense small folders, sparse ones, and UIDs of every length up to u32::MAX.
            let span = [30u64, 1_000, 100_000, u64::from(u32::MAX)][round % 4];
            let n = 1 + (rand() % 300) as usize;
            let mut uids: Vec<u32> = (0..n).map(|_| 1 + (rand() % span) as u32).collect();
            uids.extend([1, 9, 10, 99, 100]);
            uids.sort_unstable();
            uids.dedup();
            let map: UidMap<()> = uids.iter().map(|&u| (Uid::new(u).unwrap(), ())).collect();
            for _ in 0..5 {
                // A UID of the folder, or one that is not (a message gone meanwhile).
                let after = match rand() % 2 {
                    0 => uids[(rand() % uids.len() as u64) as usize],
                    _ => 1 + (rand() % span) as u32,
                };
                let limit = 1 + (rand() % 400) as usize;
                let got: Vec<u32> = names_after(&map, Uid::new(after).unwrap(), limit)
                    .into_iter()
                    .map(Uid::get)
                    .collect();
                assert_eq!(
                    got,
                    by_sorting(&uids, after, limit),
                    "after {after} in {uids:?}"
                );
            }
        }
    }
}
