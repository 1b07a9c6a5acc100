//! The directory tree and the inode numbers of the mount.
//!
//! Directories are mailboxes (and the implied parents of mailboxes the server listed without
//! their parents). They get inode numbers below 2^32 from [`Tree`], stable for the life of the
//! mount: a path keeps its number across refreshes, and a renamed folder keeps its number
//! under the new path ([`Tree::rename_path`]), as the kernel expects. Messages are not stored
//! here at all: a message's inode is computed from a generation, which names a (mailbox,
//! UIDVALIDITY) pair, and the UID (see [`crate::fs::inode`]).
//!
//! Names: a mailbox component is shown decoded (UTF-8). A `/` inside a component (possible
//! where the delimiter is `.`) is shown as `%2F` and `%` as `%25`, so the mapping is
//! reversible; a component that would read as a message file name (`123.eml`), as `.`/`..`
//! or as a view's name (`.search`, `.parts`) has its dots escaped as `%2E`. In the Maildir
//! layout a component named `cur`, `new` or `tmp` would meet the folder's own Maildir
//! directories: it is shown with its first letter escaped (`%63ur`, `%6Eew`, `%74mp`).

use std::collections::{BTreeMap, HashMap};

use crate::fs::inode::{Ino, ROOT};
use crate::imap::types::{Uid, UidValidity};
use crate::store::{MailboxId, MailboxInfo};

/// One directory.
#[derive(Debug, Clone)]
pub struct DirNode {
    pub parent: Ino,
    /// The display name (escaped component).
    pub name: String,
    /// The mailbox behind the directory, and whether it can hold messages.
    pub mailbox: Option<(MailboxId, bool)>,
    /// The hierarchy delimiter of the mailbox (or of its listed descendants).
    pub delimiter: Option<char>,
    /// Child directories by display name.
    pub children: BTreeMap<String, Ino>,
    /// Whether the last LIST still had it (or a descendant).
    pub present: bool,
}

/// Directories by inode, and message generations.
#[derive(Debug)]
pub struct Tree {
    nodes: HashMap<Ino, DirNode>,
    by_path: HashMap<Vec<String>, Ino>,
    by_mailbox: HashMap<MailboxId, Ino>,
    next_ino: u64,
    /// The delimiter most mailboxes use (for new top-level folders).
    delimiter: Option<char>,
    generations: HashMap<(MailboxId, UidValidity), u32>,
    generation_info: Vec<(MailboxId, UidValidity)>,
    /// Components named `cur`, `new`, `tmp` are escaped (the Maildir layout).
    maildir_names: bool,
}

impl Default for Tree {
    fn default() -> Tree {
        let root = DirNode {
            parent: ROOT,
            name: String::new(),
            mailbox: None,
            delimiter: None,
            children: BTreeMap::new(),
            present: true,
        };
        Tree {
            nodes: HashMap::from([(ROOT, root)]),
            by_path: HashMap::from([(Vec::new(), ROOT)]),
            by_mailbox: HashMap::new(),
            next_ino: ROOT.0 + 1,
            delimiter: None,
            generations: HashMap::new(),
            generation_info: Vec::new(),
            maildir_names: false,
        }
    }
}

impl Tree {
    /// An empty tree; `maildir_names`: escape components named `cur`, `new`, `tmp`.
    pub fn new(maildir_names: bool) -> Tree {
        Tree {
            maildir_names,
            ..Tree::default()
        }
    }

    /// Whether components named `cur`, `new`, `tmp` are escaped.
    pub fn maildir_names(&self) -> bool {
        self.maildir_names
    }

    /// A decoded mailbox name as this tree's escaped display components.
    pub fn display_path(&self, name: &str, delimiter: Option<char>) -> Vec<String> {
        let path = split_name(name, delimiter);
        if !self.maildir_names {
            return path;
        }
        path.into_iter().map(escape_maildir_dir).collect()
    }

    /// Rebuild the directory structure from a LIST result. `id_of` gives each mailbox its id.
    pub fn rebuild(
        &mut self,
        list: &[MailboxInfo],
        mut id_of: impl FnMut(&MailboxInfo) -> MailboxId,
    ) {
        for node in self.nodes.values_mut() {
            node.children.clear();
            node.present = false;
            node.mailbox = None;
        }
        if let Some(root) = self.nodes.get_mut(&ROOT) {
            root.present = true;
        }
        self.by_mailbox.clear();
        self.delimiter = list.iter().find_map(|m| m.delimiter);
        for mb in list {
            let path = self.display_path(mb.name.as_str(), mb.delimiter);
            if path.iter().any(|c| c.is_empty()) {
                log::warn!(
                    "skipping mailbox with an empty name component: {:?}",
                    mb.name.as_str()
                );
                continue;
            }
            let mut parent = ROOT;
            for depth in 1..=path.len() {
                let key = path[..depth].to_vec();
                let ino = match self.by_path.get(&key) {
                    Some(&ino) => ino,
                    None => {
                        let ino = Ino(self.next_ino);
                        self.next_ino += 1;
                        self.by_path.insert(key.clone(), ino);
                        ino
                    }
                };
                let name = key[depth - 1].clone();
                let node = self.nodes.entry(ino).or_insert_with(|| DirNode {
                    parent,
                    name: name.clone(),
                    mailbox: None,
                    delimiter: None,
                    children: BTreeMap::new(),
                    present: true,
                });
                node.present = true;
                node.parent = parent;
                node.name.clone_from(&name);
                node.delimiter = node.delimiter.or(mb.delimiter);
                if depth == path.len() {
                    let id = id_of(mb);
                    node.mailbox = Some((id, !mb.noselect));
                    node.delimiter = mb.delimiter;
                    self.by_mailbox.insert(id, ino);
                }
                if let Some(p) = self.nodes.get_mut(&parent) {
                    p.children.insert(name, ino);
                }
                parent = ino;
            }
        }
    }

    pub fn dir(&self, ino: Ino) -> Option<&DirNode> {
        self.nodes.get(&ino).filter(|n| n.present)
    }

    /// The directory of a mailbox.
    pub fn dir_of(&self, mailbox: MailboxId) -> Option<Ino> {
        self.by_mailbox.get(&mailbox).copied()
    }

    /// The display components of a directory's path from the root.
    pub fn path(&self, ino: Ino) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let node = self.dir(at)?;
            out.push(node.name.clone());
            at = node.parent;
            if out.len() > 4096 {
                return None;
            }
        }
        out.reverse();
        Some(out)
    }

    /// Every folder that holds messages, with its display path (for searching them all).
    pub fn selectable_folders(&self) -> Vec<(MailboxId, Vec<String>)> {
        let mut out: Vec<(MailboxId, Vec<String>)> = self
            .by_mailbox
            .iter()
            .filter(|(_, ino)| {
                self.dir(**ino)
                    .is_some_and(|n| n.mailbox.is_some_and(|m| m.1))
            })
            .filter_map(|(id, ino)| Some((*id, self.path(*ino)?)))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// The delimiter for a new folder under `parent`.
    pub fn delimiter_under(&self, parent: Ino) -> Option<char> {
        self.dir(parent)
            .and_then(|n| n.delimiter)
            .or(self.delimiter)
    }

    /// Every known directory, with its path (for invalidating what a rebuild removed).
    pub fn present_dirs(&self) -> Vec<(Ino, Ino, String)> {
        self.nodes
            .iter()
            .filter(|(i, n)| n.present && **i != ROOT)
            .map(|(i, n)| (*i, n.parent, n.name.clone()))
            .collect()
    }

    /// A folder was renamed: its directory and every one below keep their inode numbers
    /// under the new path (the kernel moved its dentries; our numbers must follow).
    pub fn rename_path(&mut self, from: &[String], to: &[String]) {
        let moved: Vec<(Vec<String>, Ino)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (old, ino) in moved {
            self.by_path.remove(&old);
            let mut new = to.to_vec();
            new.extend_from_slice(&old[from.len()..]);
            self.by_path.insert(new, ino);
        }
    }

    /// The generation number for a mailbox at a UIDVALIDITY (assigned on first use).
    pub fn generation(&mut self, mailbox: MailboxId, validity: UidValidity) -> u32 {
        if let Some(&g) = self.generations.get(&(mailbox, validity)) {
            return g;
        }
        self.generation_info.push((mailbox, validity));
        let g = self.generation_info.len() as u32;
        self.generations.insert((mailbox, validity), g);
        g
    }

    /// The mailbox and UIDVALIDITY of a generation.
    pub fn generation_info(&self, generation: u32) -> Option<(MailboxId, UidValidity)> {
        self.generation_info
            .get((generation as usize).checked_sub(1)?)
            .copied()
    }
}

/// The file name of a message.
pub fn message_file_name(uid: Uid) -> String {
    format!("{uid}.eml")
}

/// The UID a file name stands for, if it is a message file name.
pub fn parse_message_file_name(name: &str) -> Option<Uid> {
    let digits = name.strip_suffix(".eml")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Uid::new(digits.parse().ok()?)
}

/// Split a decoded mailbox name into escaped display components.
pub fn split_name(name: &str, delimiter: Option<char>) -> Vec<String> {
    let parts: Vec<&str> = match delimiter {
        Some(d) => name.split(d).collect(),
        None => vec![name],
    };
    parts.into_iter().map(escape_component).collect()
}

/// Escape one mailbox name component for display as a file name.
pub fn escape_component(c: &str) -> String {
    let mut s = c.replace('%', "%25").replace('/', "%2F");
    // `.search` and `.parts` are the views' names (crate::fs::views).
    if s == "."
        || s == ".."
        || s == ".search"
        || s == ".parts"
        || parse_message_file_name(&s).is_some()
    {
        s = s.replace('.', "%2E");
    }
    s
}

/// A component named as a Maildir directory (`cur`, `new`, `tmp`), shown with its first
/// letter escaped so that it never meets the folder's own `cur/`, `new/`, `tmp/`.
fn escape_maildir_dir(c: String) -> String {
    match c.as_str() {
        "cur" | "new" | "tmp" => format!("%{:02X}{}", c.as_bytes()[0], &c[1..]),
        _ => c,
    }
}

/// Undo [`escape_component`] (and the Maildir layout's `%63ur`, `%6Eew`, `%74mp`): the mailbox name component a display name stands for.
pub fn unescape_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        match code {
            Some("25") => out.push('%'),
            Some("2F") | Some("2f") => out.push('/'),
            Some("2E") | Some("2e") => out.push('.'),
            Some("63") => out.push('c'),
            Some("6E") | Some("6e") => out.push('n'),
            Some("74") => out.push('t'),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::types::MailboxName;

    fn info(name: &str, noselect: bool) -> MailboxInfo {
        MailboxInfo {
            name: MailboxName::from_utf8(name, false),
            delimiter: Some('.'),
            noselect,
            attributes: Vec::new(),
            subscribed: false,
        }
    }

    fn id(n: u32) -> MailboxId {
        MailboxId::new(n).unwrap()
    }

    #[test]
    fn escaping_round_trips() {
        for c in [
            "a/b",
            "100%",
            "%2F",
            "123.eml",
            ".",
            "..",
            ".search",
            ".parts",
            "R&D",
            "\u{dc}ber",
        ] {
            let e = escape_component(c);
            assert!(!e.contains('/'), "{e}");
            assert_eq!(unescape_component(&e), c, "{e}");
        }
        assert_eq!(escape_component("123.eml"), "123%2Eeml");
    }

    #[test]
    fn maildir_directory_names_are_escaped_only_in_the_maildir_layout() {
        let maildir = Tree::new(true);
        assert_eq!(
            maildir.display_path("INBOX/cur/new/tmp/curly", Some('/')),
            ["INBOX", "%63ur", "%6Eew", "%74mp", "curly"]
        );
        assert_eq!(Tree::default().display_path("cur", None), ["cur"]);
        for (shown, plain) in [("%63ur", "cur"), ("%6Eew", "new"), ("%74mp", "tmp")] {
            assert_eq!(unescape_component(shown), plain);
        }
        // A folder literally named `%63ur` stays apart from one named `cur`.
        assert_eq!(maildir.display_path("%63ur", None), ["%2563ur"]);
        assert_eq!(unescape_component("%2563ur"), "%63ur");
    }

    #[test]
    fn message_names() {
        assert_eq!(parse_message_file_name("42.eml"), Uid::new(42));
        assert_eq!(parse_message_file_name("042.eml"), None);
        assert_eq!(parse_message_file_name("0.eml"), None);
        assert_eq!(parse_message_file_name("99999999999.eml"), None);
        assert_eq!(parse_message_file_name("x.eml"), None);
    }

    #[test]
    fn tree_keeps_inodes_and_implies_parents() {
        let mut t = Tree::default();
        let mut n = 0;
        t.rebuild(&[info("INBOX", false), info("Lists.rust", false)], |_| {
            n += 1;
            id(n)
        });
        let root = t.dir(ROOT).unwrap();
        let lists = root.children["Lists"];
        assert!(t.dir(lists).unwrap().mailbox.is_none());
        let rust = t.dir(lists).unwrap().children["rust"];
        t.rebuild(&[info("Lists.rust", false)], |_| id(9));
        assert_eq!(t.dir(ROOT).unwrap().children["Lists"], lists);
        assert_eq!(t.dir(lists).unwrap().children["rust"], rust);
        assert!(!t.dir(ROOT).unwrap().children.contains_key("INBOX"));
    }

    #[test]
    fn message_inodes_encode_generation() {
        let mut t = Tree::default();
        let v1 = UidValidity::new(1).unwrap();
        let v2 = UidValidity::new(2).unwrap();
        let g1 = t.generation(id(3), v1);
        let g2 = t.generation(id(3), v2);
        assert_ne!(g1, g2);
        assert_eq!(t.generation_info(g2), Some((id(3), v2)));
        let uid = Uid::new(77).unwrap();
        assert_ne!(Ino::message(g1, uid), Ino::message(g2, uid));
    }

    #[test]
    fn a_renamed_folder_keeps_its_inodes() {
        let mut t = Tree::default();
        t.rebuild(&[info("A", false), info("A.b", false)], |m| {
            id(m.name.as_str().len() as u32)
        });
        let a = t.dir(ROOT).unwrap().children["A"];
        let b = t.dir(a).unwrap().children["b"];
        t.rename_path(&["A".into()], &["Z".into()]);
        t.rebuild(&[info("Z", false), info("Z.b", false)], |m| {
            id(m.name.as_str().len() as u32)
        });
        assert_eq!(t.dir(ROOT).unwrap().children["Z"], a);
        assert_eq!(t.dir(a).unwrap().children["b"], b);
        assert_eq!(t.path(b).unwrap(), vec!["Z".to_string(), "b".to_string()]);
    }
}
