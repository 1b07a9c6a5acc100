//! The `.search` view: criteria names run as UID SEARCH, results as symlinks, kept in bounded
//! tables and rerun after a change to their mailbox or `dir_ttl`.

use super::*;

pub(super) struct SearchTable {
    pub(super) results: LruCache<u32, SearchResult>,
    /// (directory searched, criteria text) -> result number.
    pub(super) by_key: HashMap<(Ino, String), u32>,
    pub(super) next_result: u32,
    pub(super) runs: LruCache<u32, Arc<Run>>,
    pub(super) next_run: u32,
}

/// `DIR/.search/<criteria>`.
pub(super) struct SearchResult {
    /// The folder searched, or the root for all folders.
    pub(super) dir: Ino,
    pub(super) criteria: String,
    pub(super) keys: Vec<SearchKey>,
    pub(super) run: Option<Arc<Run>>,
}

/// One execution of a search: its hits, folder by folder. Nothing is made per hit but its UID
/// (4 bytes): a link's name, target and attributes are made when asked for ([`Run::link`],
/// the listing's walk), so a result of 500,000 messages costs 2 MB, not a `String` pair and a
/// map entry per hit.
pub(super) struct Run {
    pub(super) id: u32,
    pub(super) at: Instant,
    /// The store's change epoch of what was searched, when the run ended.
    pub(super) epoch: u64,
    /// In link order: each folder's hits follow the previous folder's.
    pub(super) folders: Vec<RunFolder>,
}

/// The hits of one folder in a [`Run`].
pub(super) struct RunFolder {
    pub(super) mailbox: MailboxId,
    pub(super) validity: UidValidity,
    /// A search of the root: the folder's path (`a/b`, for targets) and its links' name
    /// prefix (`a%2Fb-`). `None` for a folder's own `.search`.
    pub(super) path: Option<(String, String)>,
    /// The link number of the first hit.
    pub(super) start: u32,
    /// Ascending.
    pub(super) uids: Vec<Uid>,
    /// The Maildir layout only: each hit's target below the folder (`cur/<name>`), which
    /// depends on the message's flags and is fixed when the run is made, so that a link
    /// never changes target. `None` in the default layout, where it is `<UID>.eml`.
    pub(super) targets: Option<Vec<String>>,
}

#[derive(Clone)]
pub(super) struct Link {
    pub(super) name: String,
    pub(super) target: String,
    pub(super) message: MessageRef,
}

impl Run {
    /// How many links the run has.
    pub(super) fn len(&self) -> u32 {
        self.folders
            .last()
            .map_or(0, |f| f.start + f.uids.len() as u32)
    }

    /// Link `index`: its folder and its position there.
    fn at(&self, index: u32) -> Option<(&RunFolder, usize)> {
        let k = self.folders.partition_point(|f| f.start <= index);
        let f = self.folders.get(k.checked_sub(1)?)?;
        let i = (index - f.start) as usize;
        (i < f.uids.len()).then_some((f, i))
    }

    /// Link `index`, made now.
    pub(super) fn link(&self, index: u32) -> Option<Link> {
        let (f, i) = self.at(index)?;
        Some(f.link(i))
    }

    /// The number of the link called `name`: its UID parsed back and looked up, O(folders
    /// + log hits).
    pub(super) fn find(&self, name: &str) -> Option<u32> {
        self.folders.iter().find_map(|f| {
            let file = match &f.path {
                Some((_, prefix)) => name.strip_prefix(prefix.as_str())?,
                None => name,
            };
            let uid = parse_message_file_name(file)?;
            let i = f.uids.binary_search(&uid).ok()?;
            Some(f.start + i as u32)
        })
    }
}

impl RunFolder {
    /// Hit `i` as a link.
    pub(super) fn link(&self, i: usize) -> Link {
        let uid = self.uids[i];
        let file = message_file_name(uid);
        let at = self.targets.as_ref().map_or(file.as_str(), |t| &t[i]);
        let (name, target) = match &self.path {
            Some((path, prefix)) => (format!("{prefix}{file}"), format!("../../{path}/{at}")),
            None => {
                let target = format!("../../{at}");
                (file, target)
            }
        };
        Link {
            name,
            target,
            message: self.message(uid),
        }
    }

    pub(super) fn message(&self, uid: Uid) -> MessageRef {
        MessageRef {
            mailbox: self.mailbox,
            validity: self.validity,
            uid,
        }
    }
}

/// A search result's links as readdir walks them: each made when reached, its time from the
/// folder's index (read once per folder and reply).
pub(super) struct LinkWalk {
    pub(super) run: Arc<Run>,
    pub(super) ttl: Duration,
}

impl LazyEntries for LinkWalk {
    fn len(&self) -> usize {
        self.run.len() as usize
    }

    fn walk(
        &self,
        fs: &ImapFs,
        from: usize,
        base: usize,
        add: &mut dyn FnMut(u64, &DirEntry) -> bool,
    ) -> bool {
        for f in &self.run.folders {
            let start = f.start as usize;
            if start + f.uids.len() <= from {
                continue;
            }
            let index = fs.account.cached_index(f.mailbox);
            let ix = index.as_ref().map(|i| i.read());
            let ix = ix.as_deref().filter(|ix| ix.validity() == f.validity);
            for i in from.saturating_sub(start)..f.uids.len() {
                let link = f.link(i);
                let number = f.start + i as u32;
                let Some(ino) = Ino::view(ViewIno::SearchLink {
                    run: self.run.id,
                    index: number,
                }) else {
                    continue;
                };
                let time = ix
                    .and_then(|ix| ix.messages().get(&f.uids[i]))
                    .map_or(UNIX_EPOCH, |m| unix_time(m.internal_date));
                let entry = DirEntry {
                    ino,
                    kind: FileType::Symlink,
                    attr: fs.attr(
                        ino,
                        FileType::Symlink,
                        0o777,
                        link.target.len() as u64,
                        time,
                    ),
                    name: link.name.into(),
                    ttl: self.ttl,
                };
                if add((base + number as usize) as u64 + 1, &entry) {
                    return true;
                }
            }
        }
        false
    }
}

/// The names of `old`'s links that `new` does not have (a merge of the UID lists, folder by
/// folder).
fn dropped_names(old: &Run, new: &Run) -> Vec<String> {
    let mut out = Vec::new();
    for f in &old.folders {
        let now = new
            .folders
            .iter()
            .find(|n| n.mailbox == f.mailbox && n.validity == f.validity && n.path == f.path);
        let keep: &[Uid] = now.map_or(&[], |n| &n.uids);
        let mut j = 0;
        for (i, uid) in f.uids.iter().enumerate() {
            while j < keep.len() && keep[j] < *uid {
                j += 1;
            }
            if keep.get(j) != Some(uid) {
                out.push(f.link(i).name);
            }
        }
    }
    out
}

impl SearchTable {
    pub(super) fn insert_result(&mut self, r: SearchResult) -> u32 {
        let mut id = self.next_result;
        while self.results.contains(&id) {
            id = id.wrapping_add(1);
        }
        self.next_result = id.wrapping_add(1);
        self.by_key.insert((r.dir, r.criteria.clone()), id);
        if let Some((old_id, old)) = self.results.push(id, r) {
            if old_id != id {
                self.by_key.remove(&(old.dir, old.criteria));
            }
        }
        id
    }
}

impl ImapFs {
    /// `DIR/.search/<criteria>`: parse, then search (or take a fresh enough earlier run).
    pub(super) fn lookup_search(&self, dir: Ino, criteria: &str) -> Result<(FileAttr, Duration)> {
        if !self.search_root_exists(dir) {
            return Err(Error::NoEntry(SEARCH_DIR.into()));
        }
        let keys = parse_criteria(criteria)
            .map_err(|e| Error::InvalidInput(format!("search criteria {criteria:?}: {e}")))?;
        let id = {
            let mut t = self.views.search.lock();
            match t.by_key.get(&(dir, criteria.to_string())).copied() {
                Some(id) if t.results.get(&id).is_some() => id,
                _ => t.insert_result(SearchResult {
                    dir,
                    criteria: criteria.to_string(),
                    keys,
                    run: None,
                }),
            }
        };
        self.fresh_run(id)?;
        let ino = view_ino(ViewIno::SearchResult(id))?;
        Ok((self.view_dir_attr(ino), VIEW_DIR_TTL))
    }

    /// The result's current run, searching again if it is older than `dir_ttl` or its
    /// folder changed since.
    pub(super) fn fresh_run(&self, id: u32) -> Result<(Ino, Arc<Run>)> {
        let (dir, keys, old) = {
            let mut t = self.views.search.lock();
            let r = t
                .results
                .get(&id)
                .ok_or_else(|| Error::NoEntry(format!("search result {id}")))?;
            (r.dir, r.keys.clone(), r.run.clone())
        };
        let epoch = self.search_epoch(dir);
        if let Some(run) = &old {
            if run.at.elapsed() < self.opts.dir_ttl && run.epoch == epoch {
                return Ok((dir, run.clone()));
            }
        }
        let folders = self.run_search(dir, &keys)?;
        let epoch = self.search_epoch(dir);
        let run = {
            let mut t = self.views.search.lock();
            let run_id = t.next_run;
            t.next_run = (t.next_run + 1) % ((1 << 30) - 16);
            let run = Arc::new(Run {
                id: run_id,
                at: Instant::now(),
                epoch,
                folders,
            });
            t.runs.put(run_id, run.clone());
            if let Some(r) = t.results.get_mut(&id) {
                r.run = Some(run.clone());
            }
            run
        };
        if let Some(old) = old {
            // The kernel may hold entries for links this run no longer has.
            let result = view_ino(ViewIno::SearchResult(id))?;
            for name in dropped_names(&old, &run) {
                self.invalidate(Invalidation::Entry {
                    parent: result,
                    name: name.into(),
                });
            }
        }
        Ok((dir, run))
    }

    /// Search a folder, or every selectable folder for the root; the hits, folder by folder.
    pub(super) fn run_search(&self, dir: Ino, keys: &[SearchKey]) -> Result<Vec<RunFolder>> {
        let folders: Vec<(MailboxId, Vec<String>)> = if dir == ROOT {
            self.sync_tree()?;
            self.tree.lock().selectable_folders()
        } else {
            let mb = self
                .selectable_mailbox(dir)
                .ok_or_else(|| Error::NoEntry(SEARCH_DIR.into()))?;
            vec![(mb, Vec::new())]
        };
        let mut out = Vec::new();
        let mut start = 0u32;
        for (mb, path) in folders {
            let hits = match self.account.search(mb, keys) {
                Ok(h) => h,
                // A folder deleted meanwhile has nothing to show.
                Err(e @ (Error::NoMailbox(_) | Error::No { .. })) if dir == ROOT => {
                    log::info!("search in {}: {e}", path.join("/"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let path = (dir == ROOT).then(|| {
                let flat: Vec<String> = path.iter().map(|c| c.replace('%', "%25")).collect();
                (path.join("/"), format!("{}-", flat.join("%2F")))
            });
            let mut folder = RunFolder {
                mailbox: hits.mailbox,
                validity: hits.validity,
                path,
                start,
                uids: hits.uids,
                targets: None,
            };
            // Hook: fs::maildir (links point at cur/ or new/ there).
            if self.is_maildir() {
                let targets = folder
                    .uids
                    .iter()
                    .map(|&uid| {
                        let msg = folder.message(uid);
                        self.maildir_path_of(msg)
                            .unwrap_or_else(|| message_file_name(uid))
                    })
                    .collect();
                folder.targets = Some(targets);
            }
            start = u32::try_from(folder.uids.len())
                .ok()
                .and_then(|n| start.checked_add(n))
                .ok_or_else(|| Error::Unsupported("more search hits than link numbers".into()))?;
            out.push(folder);
        }
        Ok(out)
    }

    pub(super) fn search_epoch(&self, dir: Ino) -> u64 {
        if dir == ROOT {
            self.account.change_epoch(None)
        } else {
            self.selectable_mailbox(dir)
                .map_or(0, |mb| self.account.change_epoch(Some(mb)))
        }
    }

    /// Whether `dir` has a `.search`: the root and every folder that holds messages.
    pub(super) fn search_root_exists(&self, dir: Ino) -> bool {
        dir == ROOT || self.selectable_mailbox(dir).is_some()
    }

    pub(super) fn link(&self, run: u32, index: u32) -> Result<Link> {
        let run = self
            .views
            .search
            .lock()
            .runs
            .get(&run)
            .cloned()
            .ok_or_else(|| Error::NoEntry(format!("search run {run}")))?;
        run.link(index)
            .ok_or_else(|| Error::NoEntry(format!("search link {index}")))
    }

    pub(super) fn link_attr(&self, ino: Ino, link: &Link) -> FileAttr {
        let time = self
            .account
            .message_meta(link.message)
            .map_or(UNIX_EPOCH, |m| unix_time(m.internal_date));
        self.attr(
            ino,
            FileType::Symlink,
            0o777,
            link.target.len() as u64,
            time,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uids(v: &[u32]) -> Vec<Uid> {
        v.iter().map(|&u| Uid::new(u).unwrap()).collect()
    }

    fn folder(mb: u32, path: Option<(&str, &str)>, start: u32, hits: &[u32]) -> RunFolder {
        RunFolder {
            mailbox: MailboxId::new(mb).unwrap(),
            validity: UidValidity::new(7).unwrap(),
            path: path.map(|(p, f)| (p.to_string(), f.to_string())),
            start,
            uids: uids(hits),
            targets: None,
        }
    }

    fn run(folders: Vec<RunFolder>) -> Run {
        Run {
            id: 1,
            at: Instant::now(),
            epoch: 0,
            folders,
        }
    }

    #[test]
    fn links_are_made_from_uids_and_found_by_name() {
        // Issue 17: nothing per hit but its UID; names and targets made when asked for.
        let root = run(vec![
            folder(1, Some(("INBOX", "INBOX-")), 0, &[3, 9]),
            folder(2, Some(("a/b%c", "a%2Fb%25c-")), 2, &[1, 12]),
        ]);
        assert_eq!(root.len(), 4);
        let names: Vec<(String, String)> = (0..4)
            .map(|i| root.link(i).map(|l| (l.name, l.target)).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                ("INBOX-3.eml".into(), "../../INBOX/3.eml".into()),
                ("INBOX-9.eml".into(), "../../INBOX/9.eml".into()),
                ("a%2Fb%25c-1.eml".into(), "../../a/b%c/1.eml".into()),
                ("a%2Fb%25c-12.eml".into(), "../../a/b%c/12.eml".into()),
            ]
        );
        assert!(root.link(4).is_none());
        for (i, (name, _)) in names.iter().enumerate() {
            assert_eq!(root.find(name), Some(i as u32), "{name}");
        }
        for absent in [
            "INBOX-4.eml",
            "INBOX-03.eml",
            "3.eml",
            "a%2Fb%25c-9.eml",
            "x-1.eml",
        ] {
            assert_eq!(root.find(absent), None, "{absent}");
        }
        let one = run(vec![folder(1, None, 0, &[5, 6, 70])]);
        assert_eq!(one.find("70.eml"), Some(2));
        let l = one.link(2).unwrap();
        assert_eq!(
            (l.name.as_str(), l.target.as_str()),
            ("70.eml", "../../70.eml")
        );
        assert_eq!(l.message.uid.get(), 70);
    }

    #[test]
    fn a_new_run_drops_only_the_names_it_lost() {
        let old = run(vec![
            folder(1, Some(("INBOX", "INBOX-")), 0, &[1, 2, 3, 8]),
            folder(2, Some(("X", "X-")), 4, &[4]),
        ]);
        let new = run(vec![folder(1, Some(("INBOX", "INBOX-")), 0, &[2, 3, 5, 9])]);
        assert_eq!(
            dropped_names(&old, &new),
            ["INBOX-1.eml", "INBOX-8.eml", "X-4.eml"]
        );
        assert!(dropped_names(&new, &new).is_empty());
    }
}
