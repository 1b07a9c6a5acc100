//! The seeded model-based test (issue 13): random operations through a real mount on four
//! folders of a real Dovecot, while another client (tests/common/other_client.rs) appends and
//! re-flags, and a proxy cuts connections at random. A model knows every message by the token
//! in its `X-Model-Token:` header, with its folder and flags. After every 50 operations and at
//! the end the server, read by the other client, must equal the model (nothing lost,
//! duplicated, misplaced, no flag lost or gained), and the mount's listing must agree with the
//! server. `IMAPFS_MODEL_SEED=N` replays a run, `IMAPFS_MODEL_OPS=N` sets its length,
//! `IMAPFS_MODEL_CUTS=N` the cuts per thousand commands (default 15; 0 in the default
//! suite's `model_short_sequence`; `model_short_sequence_with_cuts` runs with them).
//!
//! An operation that failed leaves the model unchanged (a failed rm: still there; a failed
//! mv: still in its source). A failed `cp` may or may not have stored the message (documented
//! for a cut APPEND): the model then accepts zero or one copy, never two.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::other_client::{OtherClient, Reflag};
use crate::common::proxy::CuttingProxy;
use crate::common::{try_run, within, Dovecot, Mount, MountOptions, Rng, Seed};

const BASE: [&str; 4] = ["M0", "M1", "M2", "M3"];
const FLAGS: [&str; 6] = [
    "\\Seen",
    "\\Flagged",
    "\\Answered",
    "\\Draft",
    "$Work",
    "$Later",
];
const OP_TIMEOUT: Duration = Duration::from_secs(120);

/// The default suite's run: 150 operations with the other client, no cuts (about 6 s).
#[test]
fn model_short_sequence() {
    run_model(env_u64("IMAPFS_MODEL_OPS").unwrap_or(150), 0);
}

/// The same with random cuts (15 per thousand commands): a cut MOVE is sent again and the
/// messages it had moved are named in the target by size and INTERNALDATE; a cut STORE whose
/// flags the retry finds set is a yes (about 10 s).
#[test]
fn model_short_sequence_with_cuts() {
    run_model(env_u64("IMAPFS_MODEL_OPS").unwrap_or(150), 15);
}

/// The long run of scripts/model.sh.
#[test]
#[ignore]
fn model_long_sequence() {
    run_model(env_u64("IMAPFS_MODEL_OPS").unwrap_or(3000), 15);
}

/// How a successful setfattr changes the model's flags.
type FlagChange = Box<dyn Fn(&mut BTreeSet<String>)>;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[derive(Debug, Clone)]
struct Msg {
    folder: String,
    flags: BTreeSet<String>,
    /// A failed cp: zero or one copy is right.
    maybe: bool,
}

struct Model {
    msgs: BTreeMap<String, Msg>,
    folders: BTreeSet<String>,
    next: u64,
    failures: Vec<String>,
    history: BTreeMap<String, Vec<String>>,
}

impl Model {
    fn token(&mut self) -> String {
        self.next += 1;
        format!("T{:07}Z", self.next)
    }
    fn note(&mut self, token: &str, what: String) {
        self.history
            .entry(token.to_string())
            .or_default()
            .push(what);
    }
    fn in_folder(&self, folder: &str) -> Vec<String> {
        self.msgs
            .iter()
            .filter(|(_, m)| m.folder == folder && !m.maybe)
            .map(|(t, _)| t.clone())
            .collect()
    }
}

fn message(token: &str) -> Vec<u8> {
    format!(
        "From: model@imapfs.test\r\nTo: you@imapfs.test\r\nSubject: model {token}\r\n\
         Date: Tue, 05 Mar 2024 09:12:00 +0000\r\nMessage-ID: <{token}@model.imapfs.test>\r\n\
         X-Model-Token: {token}\r\n\r\nbody of {token}\r\n"
    )
    .into_bytes()
}

/// `cuts`: connections cut per thousand commands unless `IMAPFS_MODEL_CUTS` says.
fn run_model(ops: u64, cuts: u64) {
    let seed = env_u64("IMAPFS_MODEL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let cuts = env_u64("IMAPFS_MODEL_CUTS").unwrap_or(cuts);
    println!("model: IMAPFS_MODEL_SEED={seed} IMAPFS_MODEL_OPS={ops} IMAPFS_MODEL_CUTS={cuts}");
    let mut rng = Rng::new(seed);
    let mut model = Model {
        msgs: BTreeMap::new(),
        folders: BASE.iter().map(|s| s.to_string()).collect(),
        next: 0,
        failures: Vec::new(),
        history: BTreeMap::new(),
    };
    let mut seedbox = Seed::new();
    for f in BASE {
        for _ in 0..6 {
            let token = model.token();
            let flags: Vec<&str> = FLAGS[..4]
                .iter()
                .copied()
                .filter(|_| rng.below(3) == 0)
                .collect();
            seedbox
                .folder_mut(f)
                .push(message(&token), &flags, "model", "model", "", 0, 0);
            model.msgs.insert(
                token,
                Msg {
                    folder: f.to_string(),
                    flags: flags.iter().map(|s| s.to_string()).collect(),
                    maybe: false,
                },
            );
        }
    }
    let dovecot = Dovecot::start(&seedbox);
    let proxy = CuttingProxy::random(dovecot.imap_port, seed, cuts);
    let mount = MountOptions::new(&dovecot)
        .url(format!("imap://{}@127.0.0.1:{}", dovecot.user, proxy.port))
        .args(&["--insecure"])
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    let mut other = OtherClient::connect(&dovecot);
    let started = Instant::now();
    for n in 1..=ops {
        step(&mut rng, &mut model, &mount);
        if rng.below(10) < 3 {
            other_step(&mut rng, &mut model, &mut other);
        }
        if n % 50 == 0 || n == ops {
            proxy.set_cutting(false);
            check(&mut model, &mount, &mut other, n);
            proxy.set_cutting(true);
        }
    }
    println!(
        "model: {ops} operations in {:.1?}, {} cuts",
        started.elapsed(),
        proxy.cuts()
    );
    if !model.failures.is_empty() {
        let log = mount.log();
        let kept = std::env::temp_dir().join(format!("imapfs-model-{seed}.log"));
        let _ = std::fs::write(&kept, &log);
        println!("model: the whole mount log is in {}", kept.display());
        panic!(
            "model (IMAPFS_MODEL_SEED={seed} IMAPFS_MODEL_OPS={ops}): {} failure(s):\n{}\n\
             mount log tail:\n{}",
            model.failures.len(),
            model.failures.join("\n"),
            crate::common::tail(&log, 60)
        );
    }
}

/// Runs a shell command; Err(stderr) when it fails.
fn sh(args: &[&str]) -> Result<(), String> {
    let out = try_run(args, OP_TIMEOUT).unwrap_or_else(|e| panic!("hung: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The mount's listing of `folder`: name -> token (read through the mount).
fn resolve(mount: &Mount, folder: &str) -> Result<BTreeMap<String, String>, String> {
    let dir = mount.join(folder);
    within("resolve", OP_TIMEOUT, move || {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
            let e = e.map_err(|e| e.to_string())?;
            let name = e.file_name().to_string_lossy().to_string();
            if !name.ends_with(".eml") {
                continue;
            }
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            out.insert(name, token_of(&bytes).unwrap_or_else(|| "-".into()));
        }
        Ok(out)
    })
}

fn token_of(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().find(|l| l.starts_with("X-Model-Token: "))?;
    Some(line["X-Model-Token: ".len()..].trim().to_string())
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        Some(&items[rng.below(items.len() as u64) as usize])
    }
}

/// One random operation through the mount.
fn step(rng: &mut Rng, model: &mut Model, mount: &Mount) {
    let folders: Vec<String> = model.folders.iter().cloned().collect();
    let extra: Vec<String> = folders
        .iter()
        .filter(|f| !BASE.contains(&f.as_str()))
        .cloned()
        .collect();
    let kind = rng.below(100);
    let path = |p: &str| mount.join(p).to_string_lossy().to_string();
    if kind >= 88 {
        // folders: mkdir, rmdir, rename
        match kind {
            88..=91 => {
                let name = format!("X{}", model.next + 1);
                model.next += 1;
                match sh(&["mkdir", &path(&name)]) {
                    Ok(()) => {
                        model.folders.insert(name);
                    }
                    Err(e) => model.failures.push(format!("mkdir {name}: {e} (noted)")),
                }
            }
            92..=95 => {
                let Some(f) = pick(rng, &extra).cloned() else {
                    return;
                };
                let held = model.in_folder(&f);
                if let Ok(()) = sh(&["rmdir", &path(&f)]) {
                    {
                        if !held.is_empty() {
                            model
                                .failures
                                .push(format!("rmdir {f} succeeded but it held {held:?} (item 5)"));
                            for t in held {
                                model.msgs.remove(&t);
                            }
                        }
                        model.folders.remove(&f);
                    }
                }
            }
            _ => {
                let Some(f) = pick(rng, &extra).cloned() else {
                    return;
                };
                // Sometimes a batch of moves into it first (item 9).
                if rng.below(2) == 0 {
                    mv_batch(rng, model, mount, Some(&f));
                }
                let to = format!("R{}", model.next + 1);
                model.next += 1;
                if let Ok(()) = sh(&["mv", &path(&f), &path(&to)]) {
                    {
                        model.folders.remove(&f);
                        model.folders.insert(to.clone());
                        let moved: Vec<String> = model
                            .msgs
                            .iter()
                            .filter(|(_, m)| m.folder == f)
                            .map(|(t, _)| t.clone())
                            .collect();
                        for t in moved {
                            model.note(&t, format!("folder {f} renamed {to}"));
                            if let Some(m) = model.msgs.get_mut(&t) {
                                m.folder = to.clone();
                            }
                        }
                    }
                }
            }
        }
        return;
    }
    if kind < 10 {
        // cp of a new message
        let Some(f) = pick(rng, &folders).cloned() else {
            return;
        };
        let token = model.token();
        let tmp = std::env::temp_dir().join(format!("model-{}-{token}.eml", std::process::id()));
        std::fs::write(&tmp, message(&token)).expect("write temp");
        let r = sh(&[
            "cp",
            &tmp.to_string_lossy(),
            &path(&format!("{f}/new-{token}.eml")),
        ]);
        let _ = std::fs::remove_file(&tmp);
        model.note(&token, format!("cp to {f}: {r:?}"));
        model.msgs.insert(
            token,
            Msg {
                folder: f,
                flags: BTreeSet::new(),
                maybe: r.is_err(),
            },
        );
        return;
    }
    if kind < 22 {
        mv_batch(rng, model, mount, None);
        return;
    }
    // Operations on one message: pick a folder, list it, pick a message listed there.
    let Some(f) = pick(rng, &folders).cloned() else {
        return;
    };
    let Ok(listing) = resolve(mount, &f) else {
        return;
    };
    let listed: Vec<(String, String)> = listing.into_iter().collect();
    for (name, t) in &listed {
        let at = model.msgs.get(t).map(|m| m.folder.clone());
        if at.as_deref() != Some(f.as_str()) {
            model.failures.push(format!(
                "mount lists {f}/{name} as {t}, model has it in {at:?}"
            ));
        }
    }
    let Some((name, token)) = pick(rng, &listed).cloned() else {
        return;
    };
    if !model.msgs.contains_key(&token) {
        return;
    }
    let file = path(&format!("{f}/{name}"));
    match kind {
        22..=41 => {
            // mv single, sometimes followed at once by an operation on the new name (item 1)
            let others: Vec<String> = folders.iter().filter(|g| **g != f).cloned().collect();
            let Some(g) = pick(rng, &others).cloned() else {
                return;
            };
            let r = sh(&["mv", &file, &path(&format!("{g}/"))]);
            model.note(&token, format!("mv {f}/{name} {g}/: {r:?}"));
            if r.is_err() {
                return;
            }
            model.msgs.get_mut(&token).expect("token").folder = g.clone();
            if rng.below(3) == 0 {
                let alias = path(&format!("{g}/{name}"));
                let got = within("cat alias", OP_TIMEOUT, move || std::fs::read(&alias));
                match got.map(|b| token_of(&b)) {
                    Ok(Some(t)) if t == token => {}
                    other => model.failures.push(format!(
                        "item 1(ii): right after mv {f}/{name} {g}/, {g}/{name} reads {other:?}, \
                         not the moved {token}"
                    )),
                }
            }
        }
        42..=55 => {
            let r = sh(&["rm", &file]);
            model.note(&token, format!("rm {f}/{name}: {r:?}"));
            if r.is_ok() {
                model.msgs.remove(&token);
            }
        }
        _ => {
            // setfattr: replace, delta, sign alone (item 2), remove
            let which = rng.below(10);
            let mut chosen: Vec<&str> = FLAGS
                .iter()
                .copied()
                .filter(|_| rng.below(3) == 0)
                .collect();
            if chosen.is_empty() {
                chosen.push(FLAGS[rng.below(6) as usize]);
            }
            let (args, apply): (Vec<String>, FlagChange) = match which {
                0..=3 => {
                    let set: BTreeSet<String> = chosen.iter().map(|s| s.to_string()).collect();
                    (
                        vec![
                            "-n".into(),
                            "user.imap.flags".into(),
                            "-v".into(),
                            chosen.join(" "),
                        ],
                        Box::new(move |f: &mut BTreeSet<String>| *f = set.clone()),
                    )
                }
                4..=7 => {
                    let add = rng.below(2) == 0;
                    let v: Vec<String> = chosen
                        .iter()
                        .map(|c| format!("{}{c}", if add { '+' } else { '-' }))
                        .collect();
                    let list: Vec<String> = chosen.iter().map(|s| s.to_string()).collect();
                    (
                        vec![
                            "-n".into(),
                            "user.imap.flags".into(),
                            "-v".into(),
                            v.join(" "),
                        ],
                        Box::new(move |f: &mut BTreeSet<String>| {
                            for c in &list {
                                if add {
                                    f.insert(c.clone());
                                } else {
                                    f.remove(c);
                                }
                            }
                        }),
                    )
                }
                8 => {
                    let sign = if rng.below(2) == 0 { "+" } else { "-" };
                    // A sign without a flag changes nothing (item 2): the model stays.
                    (
                        vec![
                            "-n".into(),
                            "user.imap.flags".into(),
                            "-v".into(),
                            sign.into(),
                        ],
                        Box::new(|_: &mut BTreeSet<String>| {}),
                    )
                }
                _ => (
                    vec!["-x".into(), "user.imap.flags".into()],
                    Box::new(|f: &mut BTreeSet<String>| f.clear()),
                ),
            };
            let mut cmd: Vec<&str> = vec!["setfattr"];
            cmd.extend(args.iter().map(String::as_str));
            cmd.push(&file);
            let r = sh(&cmd);
            model.note(&token, format!("setfattr {args:?} {f}/{name}: {r:?}"));
            if r.is_ok() {
                if let Some(m) = model.msgs.get_mut(&token) {
                    apply(&mut m.flags);
                }
            }
        }
    }
}

/// `mv a b c G/` of 2-6 messages of one folder (into `into` when given).
fn mv_batch(rng: &mut Rng, model: &mut Model, mount: &Mount, into: Option<&str>) {
    let folders: Vec<String> = model.folders.iter().cloned().collect();
    let sources: Vec<String> = folders
        .iter()
        .filter(|f| Some(f.as_str()) != into)
        .cloned()
        .collect();
    let Some(f) = pick(rng, &sources).cloned() else {
        return;
    };
    let targets: Vec<String> = folders.iter().filter(|g| **g != f).cloned().collect();
    let g = match into {
        Some(g) => g.to_string(),
        None => match pick(rng, &targets) {
            Some(g) => g.clone(),
            None => return,
        },
    };
    let Ok(listing) = resolve(mount, &f) else {
        return;
    };
    let mut listed: Vec<(String, String)> = listing
        .into_iter()
        .filter(|(_, t)| model.msgs.get(t).is_some_and(|m| m.folder == f))
        .collect();
    let k = rng.range(2, 7).min(listed.len());
    let mut batch = Vec::new();
    for _ in 0..k {
        let i = rng.below(listed.len() as u64) as usize;
        batch.push(listed.swap_remove(i));
    }
    if batch.is_empty() {
        return;
    }
    let files: Vec<String> = batch
        .iter()
        .map(|(n, _)| mount.join(format!("{f}/{n}")).to_string_lossy().to_string())
        .collect();
    let target = mount.join(format!("{g}/")).to_string_lossy().to_string();
    let mut cmd: Vec<&str> = vec!["mv"];
    cmd.extend(files.iter().map(String::as_str));
    cmd.push(&target);
    let r = sh(&cmd);
    for ((name, token), file) in batch.iter().zip(&files) {
        let failed = match &r {
            Ok(()) => false,
            Err(e) => e.contains(file.as_str()),
        };
        model.note(token, format!("mv batch {f}/{name} -> {g}: {r:?}"));
        if !failed {
            model.msgs.get_mut(token).expect("token").folder = g.clone();
        }
    }
    if let Err(e) = &r {
        if files.iter().all(|f| !e.contains(f.as_str())) {
            model.failures.push(format!(
                "mv batch {f} -> {g} failed naming no source (item 1b): {e}"
            ));
        }
    }
}

/// The other client: append (60 %) or re-flag a message (40 %).
fn other_step(rng: &mut Rng, model: &mut Model, other: &mut OtherClient) {
    let folders: Vec<String> = model.folders.iter().cloned().collect();
    if rng.below(10) < 6 {
        let Some(f) = pick(rng, &folders).cloned() else {
            return;
        };
        let token = model.token();
        let flags: Vec<&str> = FLAGS
            .iter()
            .copied()
            .filter(|_| rng.below(4) == 0)
            .collect();
        match other.append(&f, &flags, &message(&token)) {
            Ok(_) => {
                model.note(&token, format!("other: append to {f} {flags:?}"));
                model.msgs.insert(
                    token,
                    Msg {
                        folder: f,
                        flags: flags.iter().map(|s| s.to_string()).collect(),
                        maybe: false,
                    },
                );
            }
            Err(e) => {
                model.note(&token, format!("other: append to {f} refused: {e}"));
                if e.contains("aborted") {
                    // The connection broke under it: stored or not.
                    let flags = flags.iter().map(|s| s.to_string()).collect();
                    model.msgs.insert(
                        token,
                        Msg {
                            folder: f,
                            flags,
                            maybe: true,
                        },
                    );
                }
            }
        }
    } else {
        let tokens: Vec<String> = model
            .msgs
            .iter()
            .filter(|(_, m)| !m.maybe)
            .map(|(t, _)| t.clone())
            .collect();
        let Some(t) = pick(rng, &tokens).cloned() else {
            return;
        };
        let flag = FLAGS[rng.below(6) as usize];
        let add = rng.below(2) == 0;
        let folder = model.msgs[&t].folder.clone();
        let op = if add { "+FLAGS" } else { "-FLAGS" };
        let r = other.reflag(&folder, &t, op, flag);
        model.note(&t, format!("other: {op} {flag} in {folder}: {r:?}"));
        if r == Reflag::Done {
            let m = model.msgs.get_mut(&t).expect("token");
            if add {
                m.flags.insert(flag.to_string());
            } else {
                m.flags.remove(flag);
            }
        }
    }
}

/// The server (read by the other client) must equal the model, and the mount agree.
fn check(model: &mut Model, mount: &Mount, other: &mut OtherClient, n: u64) {
    // Listing every folder settles the move queue.
    for f in model.folders.clone() {
        let _ = resolve(mount, &f);
    }
    let snap = other.snapshot();
    let mut found: BTreeMap<String, Vec<(String, u32, Vec<String>)>> = BTreeMap::new();
    for (folder, msgs) in &snap {
        for s in msgs {
            match &s.token {
                Some(t) => found.entry(t.clone()).or_default().push((
                    folder.clone(),
                    s.uid,
                    s.flags.clone(),
                )),
                None => model
                    .failures
                    .push(format!("after {n}: {folder} uid {} has no token", s.uid)),
            }
        }
    }
    let server_folders: BTreeSet<String> = snap.keys().filter(|f| *f != "INBOX").cloned().collect();
    if server_folders != model.folders {
        model.failures.push(format!(
            "after {n}: folders: server {server_folders:?}, model {:?}",
            model.folders
        ));
        model.folders = server_folders;
    }
    let tokens: BTreeSet<String> = model.msgs.keys().chain(found.keys()).cloned().collect();
    for t in tokens {
        let want = model.msgs.get(&t).cloned();
        let have = found.get(&t).cloned().unwrap_or_default();
        let history = model.history.get(&t).cloned().unwrap_or_default();
        let bad = match (&want, have.as_slice()) {
            (Some(w), []) if w.maybe => {
                model.msgs.remove(&t);
                None
            }
            (Some(w), [(f, _, flags)])
                if *f == w.folder
                    && (w.maybe || flags.iter().cloned().collect::<BTreeSet<_>>() == w.flags) =>
            {
                None
            }
            (Some(w), _) => Some(format!("model {}/{:?}", w.folder, w.flags)),
            (None, _) => Some("not in the model".to_string()),
        };
        if let Some(why) = bad {
            model.failures.push(format!(
                "after {n}: {t}: {why}, server {have:?}; history {history:?}"
            ));
        }
        // Adopt the server's state, to go on finding other failures.
        match have.first() {
            Some((f, _, flags)) => {
                model.msgs.insert(
                    t.clone(),
                    Msg {
                        folder: f.clone(),
                        flags: flags.iter().cloned().collect(),
                        maybe: false,
                    },
                );
            }
            None => {
                model.msgs.remove(&t);
            }
        }
    }
    // The mount's listing must agree with the server (other clients' changes may take the
    // watcher a moment; with the watcher's connection cut silently, the listing TTL (10 s)
    // after the watcher stops vouching (5 s)).
    for (folder, msgs) in &snap {
        if folder == "INBOX" {
            continue;
        }
        let want: BTreeMap<String, String> = msgs
            .iter()
            .map(|s| {
                (
                    format!("{}.eml", s.uid),
                    s.token.clone().unwrap_or_else(|| "-".into()),
                )
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = resolve(mount, folder);
            if got.as_ref().ok() == Some(&want) {
                break;
            }
            if Instant::now() >= deadline {
                model.failures.push(format!(
                    "after {n}: mount lists {folder} as {got:?}, server {want:?}"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
