//! [`FlagSet`]: a message's flags in an index, one shared copy per distinct set (issue 17:
//! a big folder's memory).
//!
//! Most messages of a folder have one of a few flag sets (none, `\Seen`, `\Seen \Answered`):
//! a `Vec<Flag>` per message was 24 bytes in the entry and a 32-byte allocation beside it
//! (heaptrack, cold `ls -l` of 100,000 messages). A set of system flags only (at most 2^5,
//! and the empty one) is made once per thread and shared by every message that has it; a set
//! with a keyword or an extension flag gets its own copy. The saved index shares its table's
//! sets the same way.

use std::cell::RefCell;
use std::sync::Arc;

use crate::imap::types::Flag;

/// A message's flags, immutable and cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct FlagSet(Arc<[Flag]>);

/// The most sets a thread keeps for sharing: every set of the five system flags kept in an
/// index and the empty one, in any order the server lists them (more than that is not kept).
const SHARED_MAX: usize = 64;

thread_local! {
    static SHARED: RefCell<Vec<Arc<[Flag]>>> = const { RefCell::new(Vec::new()) };
}

impl FlagSet {
    /// The set of `flags`, as they are (see `without_recent` for what an index keeps).
    pub fn new(flags: Vec<Flag>) -> FlagSet {
        let system = |f: &Flag| !matches!(f, Flag::Keyword(_) | Flag::Extension(_));
        if !flags.iter().all(system) {
            return FlagSet(flags.into());
        }
        SHARED.with(|shared| {
            let mut shared = shared.borrow_mut();
            if let Some(set) = shared.iter().find(|s| ***s == *flags) {
                return FlagSet(set.clone());
            }
            let set: Arc<[Flag]> = flags.into();
            if shared.len() < SHARED_MAX {
                shared.push(set.clone());
            }
            FlagSet(set)
        })
    }
}

impl Default for FlagSet {
    fn default() -> Self {
        FlagSet::new(Vec::new())
    }
}

impl From<Vec<Flag>> for FlagSet {
    fn from(flags: Vec<Flag>) -> Self {
        FlagSet::new(flags)
    }
}

impl std::ops::Deref for FlagSet {
    type Target = [Flag];

    fn deref(&self) -> &[Flag] {
        &self.0
    }
}

impl std::fmt::Debug for FlagSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq<Vec<Flag>> for FlagSet {
    fn eq(&self, other: &Vec<Flag>) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<[Flag]> for FlagSet {
    fn eq(&self, other: &[Flag]) -> bool {
        *self.0 == *other
    }
}

impl<const N: usize> PartialEq<[Flag; N]> for FlagSet {
    fn eq(&self, other: &[Flag; N]) -> bool {
        *self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_sets_are_shared_and_others_are_not() {
        let a = FlagSet::new(vec![Flag::Seen]);
        let b = FlagSet::from(vec![Flag::Seen]);
        assert!(Arc::ptr_eq(&a.0, &b.0), "one copy of \\Seen");
        assert_eq!(a, [Flag::Seen]);
        assert_eq!(a, vec![Flag::Seen]);
        assert!(Arc::ptr_eq(
            &FlagSet::default().0,
            &FlagSet::new(Vec::new()).0
        ));
        let k = vec![Flag::Seen, Flag::Keyword("$Junk".into())];
        let (c, d) = (FlagSet::new(k.clone()), FlagSet::new(k.clone()));
        assert_eq!(c, d);
        assert_eq!(c, k);
        assert!(!Arc::ptr_eq(&c.0, &d.0), "a keyword set is not kept");
        assert_ne!(a, FlagSet::new(vec![Flag::Seen, Flag::Answered]));
    }
}
