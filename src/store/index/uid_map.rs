//! [`UidMap`]: an index's messages by UID, packed (issue 17: a big folder's memory).
//!
//! A `BTreeMap<Uid, MessageMeta>` filled in ascending order (a listing: UIDs come ascending)
//! keeps its leaves a little over half full: about 157 bytes a message for an 84-byte entry,
//! measured with heaptrack on a cold `ls -l` of 100,000 messages. Here the entries are in
//! chunks of at most [`CHUNK`], sorted, each chunk two arrays (the UIDs, then the values, so
//! a lookup's binary search reads only UIDs); appending a UID above the last fills the last
//! chunk to the brim, so a listing costs the entries and nothing more. A UID below the last
//! goes into its chunk (split in two when it passes [`CHUNK`]); a removal shifts at most a
//! chunk and frees a chunk left empty. Lookups are two binary searches.

use std::ops::{Bound, RangeBounds};

use crate::imap::types::Uid;

/// Most entries in a chunk: a chunk of 80-byte values is then 160 KiB, above the mount's
/// mmap threshold (128 KiB), so full chunks are mapped on their own and never strand the
/// heap around them when freed.
const CHUNK: usize = 2048;

/// A map from UID to `V`, sorted by UID: the part of `BTreeMap`'s interface the store uses.
#[derive(Clone)]
pub struct UidMap<V> {
    chunks: Vec<Chunk<V>>,
    len: usize,
}

#[derive(Clone)]
struct Chunk<V> {
    /// Ascending, never empty.
    uids: Vec<Uid>,
    values: Vec<V>,
}

impl<V> Chunk<V> {
    fn last(&self) -> Uid {
        self.uids[self.uids.len() - 1]
    }

    fn shrink(&mut self) {
        self.uids.shrink_to_fit();
        self.values.shrink_to_fit();
    }
}

impl<V> Default for UidMap<V> {
    fn default() -> Self {
        UidMap {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for UidMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: PartialEq> PartialEq for UidMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<V> UidMap<V> {
    pub fn new() -> Self {
        UidMap::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `uid` if any chunk does, and where in it.
    fn find(&self, uid: &Uid) -> Option<(usize, usize)> {
        let c = self.chunks.partition_point(|c| c.last() < *uid);
        let i = self.chunks.get(c)?.uids.binary_search(uid).ok()?;
        Some((c, i))
    }

    pub fn get(&self, uid: &Uid) -> Option<&V> {
        let (c, i) = self.find(uid)?;
        Some(&self.chunks[c].values[i])
    }

    pub fn get_mut(&mut self, uid: &Uid) -> Option<&mut V> {
        let (c, i) = self.find(uid)?;
        Some(&mut self.chunks[c].values[i])
    }

    pub fn contains_key(&self, uid: &Uid) -> bool {
        self.find(uid).is_some()
    }

    /// Insert or replace; returns the value replaced.
    pub fn insert(&mut self, uid: Uid, value: V) -> Option<V> {
        match self.chunks.last_mut() {
            None => {}
            Some(last) if last.last() < uid && last.uids.len() < CHUNK => {
                last.uids.push(uid);
                last.values.push(value);
                self.len += 1;
                return None;
            }
            // Above every UID, and no room in the last chunk.
            Some(last) if last.last() < uid => {}
            Some(_) => {
                // At or below the last UID: into the chunk that covers it.
                let c = self.chunks.partition_point(|c| c.last() < uid);
                let chunk = &mut self.chunks[c];
                match chunk.uids.binary_search(&uid) {
                    Ok(i) => return Some(std::mem::replace(&mut chunk.values[i], value)),
                    Err(i) => {
                        chunk.uids.insert(i, uid);
                        chunk.values.insert(i, value);
                    }
                }
                self.len += 1;
                if chunk.uids.len() > CHUNK {
                    let half = chunk.uids.len() / 2;
                    let mut right = Chunk {
                        uids: chunk.uids.split_off(half),
                        values: chunk.values.split_off(half),
                    };
                    chunk.shrink();
                    right.shrink();
                    self.chunks.insert(c + 1, right);
                }
                return None;
            }
        }
        // Above every UID, in a new chunk.
        self.chunks.push(Chunk {
            uids: vec![uid],
            values: vec![value],
        });
        self.len += 1;
        None
    }

    pub fn remove(&mut self, uid: &Uid) -> Option<V> {
        let (c, i) = self.find(uid)?;
        let chunk = &mut self.chunks[c];
        chunk.uids.remove(i);
        let value = chunk.values.remove(i);
        self.len -= 1;
        if chunk.uids.is_empty() {
            self.chunks.remove(c);
        } else if chunk.values.capacity() > 4 * chunk.values.len().max(16) {
            // Most of the chunk removed: give the room back.
            chunk.shrink();
        }
        Some(value)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Uid, &V)> + Clone + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.uids.iter().zip(c.values.iter()))
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&Uid, &mut V)> + '_ {
        self.chunks
            .iter_mut()
            .flat_map(|c| c.uids.iter().zip(c.values.iter_mut()))
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + '_ {
        self.chunks.iter_mut().flat_map(|c| c.values.iter_mut())
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Uid> + Clone + '_ {
        self.chunks.iter().flat_map(|c| c.uids.iter())
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + Clone + '_ {
        self.chunks.iter().flat_map(|c| c.values.iter())
    }

    /// Where the first entry with a UID above `uid` (`above`) or at least `uid` is: (chunk,
    /// position), `(chunks, 0)` past the end.
    fn position(&self, uid: Uid, above: bool) -> (usize, usize) {
        let before = |u: &Uid| if above { *u <= uid } else { *u < uid };
        let c = self.chunks.partition_point(|c| before(&c.last()));
        match self.chunks.get(c) {
            Some(chunk) => (c, chunk.uids.partition_point(before)),
            None => (self.chunks.len(), 0),
        }
    }

    /// The entries whose UIDs are in `range`, ascending (empty, not a panic, for a range
    /// whose start is past its end).
    pub fn range(
        &self,
        range: impl RangeBounds<Uid>,
    ) -> impl DoubleEndedIterator<Item = (&Uid, &V)> + Clone + '_ {
        let start = match range.start_bound() {
            Bound::Included(u) => self.position(*u, false),
            Bound::Excluded(u) => self.position(*u, true),
            Bound::Unbounded => (0, 0),
        };
        let end = match range.end_bound() {
            Bound::Included(u) => self.position(*u, true),
            Bound::Excluded(u) => self.position(*u, false),
            Bound::Unbounded => (self.chunks.len(), 0),
        };
        let chunks = if start < end {
            start.0..(end.0 + 1).min(self.chunks.len())
        } else {
            0..0
        };
        chunks.flat_map(move |c| {
            let chunk = &self.chunks[c];
            let from = if c == start.0 { start.1 } else { 0 };
            let to = if c == end.0 { end.1 } else { chunk.uids.len() };
            chunk.uids[from..to]
                .iter()
                .zip(chunk.values[from..to].iter())
        })
    }
}

impl<V> std::ops::Index<&Uid> for UidMap<V> {
    type Output = V;

    /// Panics if `uid` is not a key, as `BTreeMap`'s does.
    fn index(&self, uid: &Uid) -> &V {
        self.get(uid).expect("no entry for the UID")
    }
}

impl<V> FromIterator<(Uid, V)> for UidMap<V> {
    fn from_iter<I: IntoIterator<Item = (Uid, V)>>(iter: I) -> Self {
        let mut map = UidMap::new();
        for (uid, value) in iter {
            map.insert(uid, value);
        }
        map
    }
}

impl<V> From<std::collections::BTreeMap<Uid, V>> for UidMap<V> {
    fn from(map: std::collections::BTreeMap<Uid, V>) -> Self {
        map.into_iter().collect()
    }
}

impl<'a, V> IntoIterator for &'a UidMap<V> {
    type Item = (&'a Uid, &'a V);
    type IntoIter = Box<dyn DoubleEndedIterator<Item = (&'a Uid, &'a V)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn uid(n: u32) -> Uid {
        Uid::new(n).unwrap()
    }

    /// Random inserts, removals, lookups and ranges against a `BTreeMap`, across many chunks.
    #[test]
    fn behaves_as_a_btreemap() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut map = UidMap::new();
        let mut model = BTreeMap::new();
        // Ascending first (a listing), then anything.
        for n in 1..=3 * CHUNK as u32 {
            assert_eq!(map.insert(uid(n * 3), n), model.insert(uid(n * 3), n));
        }
        let span = 12 * CHUNK as u64;
        for step in 0..40_000u32 {
            let u = uid(1 + (rand() % span) as u32);
            match rand() % 4 {
                0 | 1 => assert_eq!(map.insert(u, step), model.insert(u, step)),
                2 => assert_eq!(map.remove(&u), model.remove(&u)),
                _ => {
                    let v = uid(1 + (rand() % span) as u32);
                    let got: Vec<_> = map.range(u..=v).collect();
                    let want: Vec<_> = if u <= v {
                        model.range(u..=v).collect()
                    } else {
                        Vec::new()
                    };
                    assert_eq!(got, want, "range {u:?}..={v:?}");
                    let got: Vec<_> = map.range(u..).take(5).collect();
                    assert_eq!(got, model.range(u..).take(5).collect::<Vec<_>>());
                    let got: Vec<_> = map.range(..u).rev().take(5).collect();
                    assert_eq!(got, model.range(..u).rev().take(5).collect::<Vec<_>>());
                    assert_eq!(
                        map.range((Bound::Excluded(u), Bound::Unbounded)).next(),
                        model.range((Bound::Excluded(u), Bound::Unbounded)).next()
                    );
                }
            }
            assert_eq!(map.get(&u), model.get(&u));
            assert_eq!(map.contains_key(&u), model.contains_key(&u));
            assert_eq!(map.len(), model.len());
        }
        assert!(map.iter().eq(model.iter()));
        assert!(map.keys().rev().eq(model.keys().rev()));
        assert!(map.values().eq(model.values()));
        for (_, v) in map.iter_mut() {
            *v += 1;
        }
        assert!(map.values().copied().eq(model.values().map(|v| v + 1)));
        assert!(map
            .chunks
            .iter()
            .all(|c| !c.uids.is_empty() && c.uids.len() <= CHUNK));
    }

    /// A listing (ascending UIDs) fills every chunk but the last to the brim.
    #[test]
    fn ascending_inserts_fill_the_chunks() {
        let map: UidMap<u64> = (1..=5 * CHUNK as u32 + 7).map(|n| (uid(n), 0)).collect();
        assert_eq!(map.chunks.len(), 6);
        assert!(map.chunks[..5].iter().all(|c| c.uids.len() == CHUNK));
        assert!(map.chunks[..5]
            .iter()
            .all(|c| c.values.capacity() == CHUNK && c.uids.capacity() == CHUNK));
        let empty: UidMap<u64> = UidMap::new();
        assert_eq!(empty.range(..).count(), 0);
        assert_eq!(empty.get(&uid(1)), None);
    }
}
