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

/// One execution of a search: its links, in name order.
pub(super) struct Run {
    pub(super) id: u32,
    pub(super) at: Instant,
    /// The store's change epoch of what was searched, when the run ended.
    pub(super) epoch: u64,
    pub(super) links: Vec<Link>,
    pub(super) by_name: HashMap<String, u32>,
}

#[derive(Clone)]
pub(super) struct Link {
    pub(super) name: String,
    pub(super) target: String,
    pub(super) message: MessageRef,
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
        let links = self.run_search(dir, &keys)?;
        let epoch = self.search_epoch(dir);
        let run = {
            let mut t = self.views.search.lock();
            let run_id = t.next_run;
            t.next_run = (t.next_run + 1) % ((1 << 30) - 16);
            let by_name = links
                .iter()
                .enumerate()
                .map(|(i, l)| (l.name.clone(), i as u32))
                .collect();
            let run = Arc::new(Run {
                id: run_id,
                at: Instant::now(),
                epoch,
                links,
                by_name,
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
            for l in old
                .links
                .iter()
                .filter(|l| !run.by_name.contains_key(&l.name))
            {
                self.invalidate(Invalidation::Entry {
                    parent: result,
                    name: l.name.clone().into(),
                });
            }
        }
        Ok((dir, run))
    }

    /// Search a folder, or every selectable folder for the root; the links, by name.
    pub(super) fn run_search(&self, dir: Ino, keys: &[SearchKey]) -> Result<Vec<Link>> {
        let folders: Vec<(MailboxId, Vec<String>)> = if dir == ROOT {
            self.sync_tree()?;
            self.tree.lock().selectable_folders()
        } else {
            let mb = self
                .selectable_mailbox(dir)
                .ok_or_else(|| Error::NoEntry(SEARCH_DIR.into()))?;
            vec![(mb, Vec::new())]
        };
        let mut links = Vec::new();
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
            for uid in hits.uids {
                let message = MessageRef {
                    mailbox: hits.mailbox,
                    validity: hits.validity,
                    uid,
                };
                let file = message_file_name(uid);
                // Hook: fs::maildir (links point at cur/ or new/ there).
                let at = self
                    .maildir_path_of(message)
                    .unwrap_or_else(|| file.clone());
                let (name, target) = if dir == ROOT {
                    let flat: Vec<String> = path.iter().map(|c| c.replace('%', "%25")).collect();
                    (
                        format!("{}-{file}", flat.join("%2F")),
                        format!("../../{}/{at}", path.join("/")),
                    )
                } else {
                    (file.clone(), format!("../../{at}"))
                };
                links.push(Link {
                    name,
                    target,
                    message,
                });
            }
        }
        Ok(links)
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
        let mut t = self.views.search.lock();
        let run = t
            .runs
            .get(&run)
            .ok_or_else(|| Error::NoEntry(format!("search run {run}")))?;
        run.links
            .get(index as usize)
            .cloned()
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
