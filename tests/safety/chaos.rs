//! The chaos test (issue 13): thousands of operations through a real mount of a scripted
//! server that answers every command validly but adversarially at random
//! ([`server::ChaosServer`]: NO, BAD, BYE, cuts before and after the change, slow replies,
//! `[MODIFIED]`, `[TRYCREATE]`, missing FETCH data, news of other messages mid-command).
//!
//! After every operation (ls, cat, stat, getfattr, setfattr, rm, mv between folders, cp in,
//! mkdir, rmdir, folder rename) the test checks, against the server's own model:
//! - the mount is alive (no ENOTCONN, still mounted) and the call finished within its
//!   deadline; a failure is an errno a caller can act on (EIO, ENOENT, EBUSY, ...);
//! - a success is true: rm -> the message is gone; setfattr -> the flags are what was asked;
//!   mv -> the message is in the target once and not in the source (or, as documented for a
//!   queued move the server then refused, still in the source and the name mv gave ENOENT);
//!   cp -> exactly one new message with those bytes; mkdir, rmdir, folder rename -> the
//!   folder list says so, and rmdir deleted no mail; cat -> the bytes of that message; stat ->
//!   its size;
//! - no other message changed (folder, UID, flags), and no message is ever held twice.
//!
//! `IMAPFS_CHAOS_SEED=N` replays a run's choices (the server's per connection, the test's
//! operations; thread timing still varies), `IMAPFS_CHAOS_OPS=N` sets its length,
//! `IMAPFS_CHAOS_RATE=P` the percentage of commands that get a fault (default 30).

#[path = "chaos/server.rs"]
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{self, is_mounted, try_run, Mount, MountOptions, Rng};
use server::{message, token_of, ChaosServer, Fault, World};

/// `--timeout` of the mount, seconds.
const TIMEOUT: u64 = 2;
/// No operation may take longer (the server is never silent for more than 0.75 s).
const OP_DEADLINE: Duration = Duration::from_secs(3 * TIMEOUT + 10);
/// How long a queued move may take to reach the server after `mv` returned.
const MOVE_LANDS: Duration = Duration::from_secs(3);
/// The seed of the short run (odd: the CONDSTORE/QRESYNC profile).
const SHORT_SEED: u64 = 1_796_476_635_508_476_107;
const FLAGS: [&str; 5] = ["\\Seen", "\\Flagged", "\\Answered", "$Work", "$Later"];
/// What a failed call may say; anything else (ENOTCONN above all) is a defect.
const ERRNOS: [&str; 16] = [
    "Input/output error",
    "No such file or directory",
    "Device or resource busy",
    "Operation not permitted",
    "Invalid argument",
    "Directory not empty",
    "File exists",
    "Resource temporarily unavailable",
    "Permission denied",
    "Operation not supported",
    "No data available",
    "No such attribute",
    "Read-only file system",
    "Disk quota exceeded",
    "Connection timed out",
    "Not a directory",
];

#[test]
fn chaos_short_run() {
    // A fixed seed, so that the default suite is repeatable (thread timing still varies);
    // the long run takes a new one each time.
    run_chaos(env_u64("IMAPFS_CHAOS_OPS").unwrap_or(300), Some(SHORT_SEED));
}

/// The long run of scripts/chaos.sh.
#[test]
#[ignore = "long: thousands of operations; scripts/chaos.sh"]
fn chaos_long_run() {
    run_chaos(env_u64("IMAPFS_CHAOS_OPS").unwrap_or(5000), None);
}

// --- defects the chaos found, one regression test each -------------------------------------------

/// Found by the chaos (seeds 1796475604021835535 and 1796476214112197171): `UID STORE
/// +FLAGS.SILENT (\Deleted)` was refused (NO), or answered `OK [MODIFIED]` (not stored),
/// `UID EXPUNGE` answered OK (nothing to expunge), and the check `UID FETCH (UID)` came back
/// without data; rm took the silence for "gone" and reported success while the message
/// stayed. After a refusal in the round only an expunge report counts.
#[test]
fn defect_rm_with_a_refused_store_and_an_empty_check_is_no_success() {
    let mut world = World::new();
    world.add("INBOX", message("M1", "one"), &["\\Seen"]);
    world.add("INBOX", message("M2", "two"), &[]);
    let server = ChaosServer::start(world, 1, 0, false);
    let mount = mount(&server);
    let file = mount.join("INBOX/1.eml").to_string_lossy().into_owned();
    assert!(mount.join("INBOX/1.eml").exists());
    for refusal in [Fault::No, Fault::Modified] {
        server.force("UID STORE 1 +FLAGS", refusal);
        server.force("UID FETCH 1 (UID)", Fault::Missing);
        let out = try_run(&["rm", &file], OP_DEADLINE).unwrap_or_else(|e| panic!("{e}"));
        let held = server.world().message("INBOX", 1).cloned();
        assert!(
            !out.status.success(),
            "{refusal:?}: rm reported success; the server holds it: {:?}\n{}",
            held.as_ref().map(|m| &m.flags),
            common::tail(&mount.log(), 40)
        );
        let flags = held.map(|m| m.flags).unwrap_or_default();
        assert_eq!(flags, BTreeSet::from(["\\Seen".to_string()]), "{refusal:?}");
    }
    // Without the faults, rm works.
    let out = try_run(&["rm", &file], OP_DEADLINE).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{out:?}");
    assert!(server.world().message("INBOX", 1).is_none());
}

/// Found by the chaos (seed 1796476214112197171, 1,500 operations): an APPEND cut after the
/// server stored it, then on a new connection the proof's SEARCH found the message but the
/// size FETCH came back without data; the proof read that as "absent", sent the APPEND again
/// and `cp` succeeded with two copies on the server. The same for a digest block left out.
#[test]
fn defect_cut_append_whose_proof_gets_no_fetch_data_is_not_sent_twice() {
    let mut world = World::new();
    world.add("INBOX", message("M1", "one"), &[]);
    let server = ChaosServer::start(world, 1, 0, false);
    let mount = mount(&server);
    assert!(mount.join("INBOX/1.eml").exists());
    for (n, left_out) in ["(UID RFC822.SIZE)", "BODY.PEEK[]<0."].iter().enumerate() {
        let token = format!("N{n}");
        let bytes = message(&token, "copied in");
        let tmp = std::env::temp_dir().join(format!("chaos-{}-{token}.eml", std::process::id()));
        std::fs::write(&tmp, &bytes).unwrap_or_else(|e| panic!("write temp: {e}"));
        server.force("APPEND", Fault::CutAfter);
        server.force(left_out, Fault::Missing);
        let target = mount.join(format!("INBOX/new-{token}.eml"));
        let out = try_run(
            &["cp", &tmp.to_string_lossy(), &target.to_string_lossy()],
            OP_DEADLINE,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_file(&tmp);
        let copies = server.world().places(&token).len();
        assert_eq!(
            copies,
            1,
            "{left_out} left out: cp ok: {}, {copies} copies on the server\n{}",
            out.status.success(),
            common::tail(&mount.log(), 40)
        );
        assert!(
            !out.status.success(),
            "{left_out} left out: the proof was not sure"
        );
    }
}

/// Found by the chaos (seed 1796477061407122909, 3,000 operations): RENAME succeeded, the
/// folder list read after it failed, and the rename was reported as failed (`mv` then said
/// the two names "are the same file"); rmdir the same after DELETE. A change the server made
/// is a success; the list is read again later.
#[test]
fn defect_folder_rename_and_rmdir_done_but_the_list_after_fails_are_successes() {
    let mut world = World::new();
    world.add("INBOX", message("M1", "one"), &[]);
    world.create("Old");
    world.create("Gone");
    let server = ChaosServer::start(world, 1, 0, false);
    let mount = mount(&server);
    let root = mount.path().to_string_lossy().into_owned();
    let out = try_run(&["ls", &root], OP_DEADLINE).unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Old"));
    for (verb, cmd) in [
        (
            "RENAME",
            vec![
                "mv".to_string(),
                format!("{root}/Old"),
                format!("{root}/New"),
            ],
        ),
        ("DELETE", vec!["rmdir".to_string(), format!("{root}/Gone")]),
    ] {
        for _ in 0..6 {
            server.force_after(verb, "LIST", Fault::Bad);
        }
        let out = try_run(&cmd, OP_DEADLINE).unwrap_or_else(|e| panic!("{e}"));
        server.clear_forced();
        let folders: Vec<String> = server.world().folders.keys().cloned().collect();
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}) although the server did it: {folders:?}\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            common::tail(&mount.log(), 30)
        );
    }
    let folders: Vec<String> = server.world().folders.keys().cloned().collect();
    assert_eq!(folders, ["INBOX", "New"]);
    let out = try_run(&["ls", &root], OP_DEADLINE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "INBOX\nNew\n");
}

fn mount(server: &ChaosServer) -> Mount {
    MountOptions::custom(server.url(), server.script.ca_file.clone(), "secret")
        .args(&["--timeout", &TIMEOUT.to_string(), "--connections", "3"])
        .start()
        .unwrap_or_else(|e| panic!("mount failed: {e}"))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

type Placement = BTreeMap<String, Vec<(String, u32, BTreeSet<String>)>>;

struct Run {
    server: ChaosServer,
    mount: Mount,
    rng: Rng,
    failures: Vec<String>,
    /// Folders a move went into since their last successful listing: names there may be
    /// aliases of moved messages (docs/usage.md), so bytes by UID are not checked.
    aliased: BTreeSet<String>,
    /// Folders the test made (candidates for rmdir and rename).
    made: BTreeSet<String>,
    next: u64,
    /// (operation, outcome) -> count.
    outcomes: BTreeMap<(String, String), u64>,
    slowest: (Duration, String),
    seen_dups: BTreeSet<String>,
    op_number: u64,
}

fn run_chaos(ops: u64, default_seed: Option<u64>) {
    let seed = env_u64("IMAPFS_CHAOS_SEED")
        .or(default_seed)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let rate = env_u64("IMAPFS_CHAOS_RATE").unwrap_or(30);
    println!("chaos: IMAPFS_CHAOS_SEED={seed} IMAPFS_CHAOS_OPS={ops} IMAPFS_CHAOS_RATE={rate}");
    let mut world = World::new();
    let mut n = 0;
    for folder in ["INBOX", "A", "B", "C", "D"] {
        world.create(folder);
        for i in 0..8 {
            n += 1;
            let token = if i < 6 {
                format!("M{n:06}")
            } else {
                format!("V{n:06}x")
            };
            let flags: &[&str] = if i % 2 == 0 { &["\\Seen"] } else { &[] };
            world.add(folder, message(&token, "seeded"), flags);
        }
    }
    let modseq = env_u64("IMAPFS_CHAOS_QRESYNC").map_or(seed % 2 == 1, |v| v == 1);
    println!(
        "chaos: {}",
        if modseq {
            "CONDSTORE and QRESYNC"
        } else {
            "no CONDSTORE"
        }
    );
    let server = ChaosServer::start(world, seed, rate, modseq);
    let mount = mount(&server);
    let mut run = Run {
        server,
        mount,
        rng: Rng::new(seed),
        failures: Vec::new(),
        aliased: BTreeSet::new(),
        made: BTreeSet::new(),
        next: 0,
        outcomes: BTreeMap::new(),
        slowest: (Duration::ZERO, String::new()),
        seen_dups: BTreeSet::new(),
        op_number: 0,
    };
    run.remember();
    let root = run.mount.path().to_string_lossy().into_owned();
    let out = run.sh(&["ls", &root]);
    assert!(out.status.success(), "ls of the root before the chaos");
    run.server.set_chaos(true);
    let started = Instant::now();
    for i in 1..=ops {
        run.step(i);
        if !is_mounted(run.mount.path()) {
            run.failures.push(format!("op {i}: the mount is gone"));
            break;
        }
        if run.failures.len() > 20 {
            break;
        }
    }
    run.server.set_chaos(false);
    let elapsed = started.elapsed();
    let log = run.mount.log();
    if log.contains("panicked") {
        run.failures.push(format!(
            "the daemon panicked:\n{}",
            log.lines()
                .filter(|l| l.contains("panicked"))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    println!(
        "chaos: {ops} operations in {elapsed:.1?}, slowest {:.1?} ({}), {} connections",
        run.slowest.0,
        run.slowest.1,
        run.server.script.accepted()
    );
    for ((op, outcome), count) in &run.outcomes {
        println!("chaos:   {op:<10} {outcome:<40} {count}");
    }
    let served = run.server.faults();
    let faults: u64 = served.values().sum();
    println!("chaos: {faults} faults served");
    for (fault, count) in &served {
        println!("chaos:   {fault:<40} {count}");
    }
    let journal: Vec<String> = run.server.world().journal.iter().cloned().collect();
    let saved = std::env::temp_dir().join(format!("imapfs-chaos-{seed}.journal"));
    if !run.failures.is_empty() || std::env::var_os("IMAPFS_CHAOS_JOURNAL").is_some() {
        let _ = std::fs::write(&saved, journal.join("\n"));
        println!("chaos: the server's journal is in {}", saved.display());
    }
    if !run.failures.is_empty() {
        panic!(
            "chaos (IMAPFS_CHAOS_SEED={seed} IMAPFS_CHAOS_OPS={ops} IMAPFS_CHAOS_RATE={rate}): \
             {} failure(s):\n{}\n--- server journal (tail) ---\n{}\n--- mount log (tail) ---\n{}",
            run.failures.len(),
            run.failures.join("\n"),
            journal[journal.len().saturating_sub(60)..].join("\n"),
            common::tail(&log, 80)
        );
    }
}

/// What one operation names, for the frame check: these tokens may change, no other.
#[derive(Default)]
struct Named {
    tokens: BTreeSet<String>,
    folders: BTreeSet<String>,
}

impl Run {
    fn path(&self, rel: &str) -> String {
        self.mount.join(rel).to_string_lossy().into_owned()
    }

    /// The world's placement of non-victim messages.
    fn remember(&mut self) -> Placement {
        let mut p = self.server.world().placement();
        p.retain(|t, _| !t.starts_with('V'));
        p
    }

    /// The body of `folder`/`uid` if the server ever held that message.
    fn body(&self, folder: &str, uid: u32) -> Option<Vec<u8>> {
        self.server
            .world()
            .ever
            .get(&(folder.to_string(), uid))
            .cloned()
    }

    /// A failure of the kind that was an open defect (a cut MOVE whose check FETCH came back
    /// without data was taken for "moved", hiding the message from its source folder). Fixed:
    /// after a cut, `UID MOVE` is sent again for every UID (`store/write/moves.rs`
    /// `find_unmoved`), never inferred from absent FETCH data; it now fails every run.
    fn open_defect(&mut self, what: String) {
        self.failures.push(what);
    }

    /// Runs a command with the operation deadline; a hang is a failure (and an empty,
    /// failed output).
    fn sh(&mut self, cmd: &[&str]) -> Output {
        let root = format!("{}/", self.mount.path().display());
        let line = cmd.join(" ").replace(&root, "");
        self.server
            .world()
            .note(format!("== op {}: {line}", self.op_number));
        let started = Instant::now();
        let out = match try_run(cmd, OP_DEADLINE) {
            Ok(out) => out,
            Err(e) => {
                self.failures.push(format!("hung: {e}"));
                std::process::Command::new("false")
                    .output()
                    .unwrap_or_else(|e| panic!("false: {e}"))
            }
        };
        let took = started.elapsed();
        self.server.world().note(format!(
            "== op {} done in {took:.1?}: {}",
            self.op_number,
            if out.status.success() {
                "ok".to_string()
            } else {
                String::from_utf8_lossy(&out.stderr).trim().to_string()
            }
        ));
        if took > self.slowest.0 {
            self.slowest = (took, cmd.join(" "));
        }
        out
    }

    /// Runs an operation's command, checks that a failure is a proper errno, and counts it.
    fn op(&mut self, kind: &str, cmd: &[&str]) -> bool {
        let out = self.sh(cmd);
        let ok = out.status.success();
        let outcome = if ok {
            "ok".to_string()
        } else {
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            match ERRNOS.iter().find(|e| err.contains(*e)) {
                Some(e) => e.to_string(),
                None => {
                    self.failures
                        .push(format!("{cmd:?}: not an errno we expect: {err}"));
                    format!("other: {}", err.trim())
                }
            }
        };
        *self
            .outcomes
            .entry((kind.to_string(), outcome))
            .or_default() += 1;
        ok
    }

    fn folders(&self) -> Vec<String> {
        self.server.world().folders.keys().cloned().collect()
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.rng.below(items.len() as u64) as usize].clone())
        }
    }

    /// A (folder, UID, token) of a non-victim message the server holds now, or a UID the
    /// folder never had.
    fn pick_message(&mut self) -> Option<(String, u32, String)> {
        let held: Vec<(String, u32, String)> = {
            let w = self.server.world();
            w.folders
                .iter()
                .flat_map(|(name, f)| {
                    f.msgs
                        .iter()
                        .filter(|(_, m)| !m.token().starts_with('V'))
                        .map(|(u, m)| (name.clone(), *u, m.token()))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        if self.rng.below(20) == 0 {
            let f = self.pick(&self.folders())?;
            return Some((f, 900 + self.rng.below(50) as u32, String::new()));
        }
        self.pick(&held)
    }

    /// [`Run::pick_message`]; in a folder with aliases (a name there may be another message,
    /// moved in) every message of the folder counts as named.
    fn pick_named(&mut self, named: &mut Named) -> Option<(String, u32, String)> {
        let (f, uid, token) = self.pick_message()?;
        named.tokens.insert(token.clone());
        if self.aliased.contains(&f) {
            named.folders.insert(f.clone());
        }
        Some((f, uid, token))
    }

    fn step(&mut self, i: u64) {
        self.op_number = i;
        let before = self.remember();
        let lost_before = self.server.world().lost_with_folder.len();
        let mut named = Named::default();
        let kind = self.rng.below(100);
        match kind {
            0..=9 => self.ls(),
            10..=19 => self.cat(&mut named),
            20..=26 => self.stat(&mut named),
            27..=32 => self.getfattr(&mut named),
            33..=49 => self.setfattr(&before, &mut named),
            50..=61 => self.rm(&mut named),
            62..=77 => self.mv(&before, &mut named),
            78..=86 => self.cp(&mut named),
            87..=90 => self.mkdir(&mut named),
            91..=94 => self.rmdir(&before, &mut named),
            _ => self.rename(&before, &mut named),
        }
        let after = self.remember();
        self.frame(i, &before, &after, &named);
        let w = self.server.world();
        let lost = w.lost_with_folder[lost_before..].to_vec();
        drop(w);
        for (folder, token) in lost {
            self.failures.push(format!(
                "op {i}: {token} was deleted with its folder {folder}"
            ));
        }
    }

    /// No message the operation did not name changed; none is held twice.
    fn frame(&mut self, i: u64, before: &Placement, after: &Placement, named: &Named) {
        let tokens: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for t in tokens {
            let (b, a) = (before.get(t), after.get(t));
            if let Some(places) = a {
                if places.len() > 1 && self.seen_dups.insert(t.clone()) {
                    self.failures
                        .push(format!("op {i}: {t} is held twice: {places:?}"));
                }
            }
            if named.tokens.contains(t) {
                continue;
            }
            let in_named = |p: Option<&Vec<(String, u32, BTreeSet<String>)>>| {
                p.is_some_and(|v| v.iter().any(|(f, _, _)| named.folders.contains(f)))
            };
            let unsettled = |p: Option<&Vec<(String, u32, BTreeSet<String>)>>| {
                p.is_some_and(|v| v.iter().any(|(f, _, _)| self.aliased.contains(f)))
            };
            if in_named(b) || in_named(a) || unsettled(b) || unsettled(a) {
                continue;
            }
            if b != a {
                self.failures.push(format!(
                    "op {i}: {t}, not named by the operation, changed: {b:?} -> {a:?}"
                ));
            }
        }
    }

    fn ls(&mut self) {
        let Some(f) = self.pick(&self.folders()) else {
            return;
        };
        let out = self.sh(&["ls", "-a", &self.path(&f)]);
        let ok = out.status.success();
        self.count_raw("ls", &out);
        if !ok {
            return;
        }
        self.aliased.remove(&f);
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(uid) = name
                .strip_suffix(".eml")
                .and_then(|u| u.parse::<u32>().ok())
            else {
                continue;
            };
            if self.body(&f, uid).is_none() {
                self.failures
                    .push(format!("ls {f} lists {name}, which the server never held"));
            }
        }
    }

    fn count_raw(&mut self, kind: &str, out: &Output) {
        let outcome = if out.status.success() {
            "ok".to_string()
        } else {
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            match ERRNOS.iter().find(|e| err.contains(*e)) {
                Some(e) => e.to_string(),
                None => {
                    self.failures
                        .push(format!("{kind}: not an errno we expect: {err}"));
                    format!("other: {}", err.trim())
                }
            }
        };
        *self
            .outcomes
            .entry((kind.to_string(), outcome))
            .or_default() += 1;
    }

    fn cat(&mut self, named: &mut Named) {
        let Some((f, uid, _)) = self.pick_named(named) else {
            return;
        };
        let file = self.path(&format!("{f}/{uid}.eml"));
        let out = self.sh(&["cat", &file]);
        self.count_raw("cat", &out);
        if !out.status.success() || self.aliased.contains(&f) {
            return;
        }
        match self.body(&f, uid) {
            Some(body) if body == out.stdout => {}
            Some(body) => self.failures.push(format!(
                "cat {f}/{uid}.eml gave {} bytes ({:?}), the server holds {} ({:?})",
                out.stdout.len(),
                token_of(&out.stdout),
                body.len(),
                token_of(&body)
            )),
            None => self.failures.push(format!(
                "cat {f}/{uid}.eml succeeded; the server never held it"
            )),
        }
    }

    fn stat(&mut self, named: &mut Named) {
        let Some((f, uid, _)) = self.pick_named(named) else {
            return;
        };
        let file = self.path(&format!("{f}/{uid}.eml"));
        let out = self.sh(&["stat", "-c", "%s", &file]);
        self.count_raw("stat", &out);
        if !out.status.success() || self.aliased.contains(&f) {
            return;
        }
        let size: Option<usize> = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
        let want = self.body(&f, uid).map(|b| b.len());
        if want.is_none() || size != want {
            self.failures.push(format!(
                "stat {f}/{uid}.eml: size {size:?}, the server's message {want:?}"
            ));
        }
    }

    fn getfattr(&mut self, named: &mut Named) {
        let Some((f, uid, _)) = self.pick_named(named) else {
            return;
        };
        let file = self.path(&format!("{f}/{uid}.eml"));
        self.op(
            "getfattr",
            &["getfattr", "--only-values", "-n", "user.imap.flags", &file],
        );
    }

    fn setfattr(&mut self, before: &Placement, named: &mut Named) {
        let Some((f, uid, token)) = self.pick_named(named) else {
            return;
        };
        let file = self.path(&format!("{f}/{uid}.eml"));
        let mut chosen: Vec<&str> = FLAGS
            .iter()
            .copied()
            .filter(|_| self.rng.below(3) == 0)
            .collect();
        if chosen.is_empty() {
            chosen.push(FLAGS[self.rng.below(5) as usize]);
        }
        let was: BTreeSet<String> = before
            .get(&token)
            .and_then(|v| v.first())
            .map(|(_, _, fl)| fl.clone())
            .unwrap_or_default();
        let which = self.rng.below(4);
        let (args, want): (Vec<String>, BTreeSet<String>) = match which {
            0 => (
                vec!["-v".into(), chosen.join(" ")],
                chosen.iter().map(|s| s.to_string()).collect(),
            ),
            1 => (
                vec![
                    "-v".into(),
                    chosen
                        .iter()
                        .map(|c| format!("+{c}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ],
                was.iter()
                    .cloned()
                    .chain(chosen.iter().map(|s| s.to_string()))
                    .collect(),
            ),
            2 => (
                vec![
                    "-v".into(),
                    chosen
                        .iter()
                        .map(|c| format!("-{c}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ],
                was.iter()
                    .filter(|f| !chosen.contains(&f.as_str()))
                    .cloned()
                    .collect(),
            ),
            _ => (vec!["-v".into(), String::new()], BTreeSet::new()),
        };
        let mut cmd = vec!["setfattr", "-n", "user.imap.flags"];
        cmd.extend(args.iter().map(String::as_str));
        cmd.push(&file);
        if !self.op("setfattr", &cmd) || self.aliased.contains(&f) {
            return;
        }
        let now = self
            .server
            .world()
            .message(&f, uid)
            .map(|m| m.flags.clone());
        if now.as_ref() != Some(&want) {
            self.failures.push(format!(
                "setfattr {args:?} {f}/{uid}.eml ({token}) succeeded; the server has \
                 {now:?}, asked {want:?} (from {was:?})"
            ));
        }
    }

    fn rm(&mut self, named: &mut Named) {
        let Some((f, uid, token)) = self.pick_named(named) else {
            return;
        };
        let file = self.path(&format!("{f}/{uid}.eml"));
        if !self.op("rm", &["rm", &file]) || self.aliased.contains(&f) {
            return;
        }
        let w = self.server.world();
        let still = w.message(&f, uid).is_some();
        let anywhere = !token.is_empty() && w.placement().contains_key(&token);
        drop(w);
        if still || anywhere {
            self.failures.push(format!(
                "rm {f}/{uid}.eml ({token}) succeeded; the server still holds it"
            ));
        }
    }

    fn mv(&mut self, before: &Placement, named: &mut Named) {
        let Some((f, uid, token)) = self.pick_named(named) else {
            return;
        };
        let others: Vec<String> = self.folders().into_iter().filter(|g| *g != f).collect();
        let Some(g) = self.pick(&others) else {
            return;
        };
        let file = self.path(&format!("{f}/{uid}.eml"));
        let target = self.path(&format!("{g}/"));
        self.aliased.insert(g.clone());
        if !self.op("mv", &["mv", &file, &target]) {
            return;
        }
        if named.folders.contains(&f) {
            // A name in an unsettled folder: which message it named is not known here.
            self.settle(&[&f, &g]);
            return;
        }
        if token.is_empty() {
            self.failures.push(format!(
                "mv {f}/{uid}.eml {g}/ succeeded; the server never held it"
            ));
            return;
        }
        // The move is queued; it reaches the server within a burst, which a listing of the
        // source waits for (if that listing fails, wait for the message to leave the source).
        self.settle(&[&f]);
        let deadline = Instant::now()
            + if self.aliased.contains(&f) {
                MOVE_LANDS
            } else {
                Duration::ZERO
            };
        let places = loop {
            let places = self.server.world().places(&token);
            if places.iter().all(|(h, _, _)| *h != f) || Instant::now() >= deadline {
                break places;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let was = before.get(&token).cloned().unwrap_or_default();
        // Still in its source: refused, or still being sent (a failed listing above did not
        // wait for it, and a move retried through slow and cut commands can outlast
        // MOVE_LANDS). A listing of the source waits for the move to be answered; the
        // server's placement after it tells which.
        let still = matches!(places.as_slice(), [(h, u, _)] if *h == f && *u == uid);
        let (places, listing) = match still {
            true => {
                let out = self.sh(&["ls", &self.path(&f)]);
                let places = self.server.world().places(&token);
                (places, out.status.success().then_some(out))
            }
            false => (places, None),
        };
        match places.as_slice() {
            [(h, _, _)] if *h == g => {
                let landed = match still {
                    true => "ok: landed after MOVE_LANDS",
                    false => "ok: landed",
                };
                *self
                    .outcomes
                    .entry(("mv".into(), landed.into()))
                    .or_default() += 1;
            }
            [(h, u, _)] if *h == f && *u == uid => {
                // Documented: a queued move the server refused leaves the message in its
                // source, and the name mv gave is ENOENT.
                *self
                    .outcomes
                    .entry(("mv".into(), "ok: queued, then refused".into()))
                    .or_default() += 1;
                let alias = self.path(&format!("{g}/{uid}.eml"));
                let out = self.sh(&["cat", &alias]);
                if out.status.success() {
                    self.failures.push(format!(
                        "mv {f}/{uid}.eml {g}/ was refused by the server, yet {g}/{uid}.eml \
                         reads {:?}",
                        token_of(&out.stdout)
                    ));
                }
                // "still in its source under its old name" (docs/usage.md), in a listing
                // made after the move was answered.
                let listed = listing.as_ref().map(|out| {
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .any(|l| l == format!("{uid}.eml"))
                });
                if listed == Some(false) {
                    self.open_defect(format!(
                        "mv {f}/{uid}.eml {g}/ was refused by the server, and {f} no longer \
                         lists {uid}.eml"
                    ));
                }
            }
            _ => self.failures.push(format!(
                "mv {f}/{uid}.eml {g}/ ({token}) succeeded; the server has it at {places:?} \
                 (was {was:?})"
            )),
        }
        self.settle(&[&g]);
    }

    /// List `folders`: a listing waits for queued moves into or out of the folder and ends
    /// its aliases. A folder whose listing failed stays unsettled (in `aliased`).
    fn settle(&mut self, folders: &[&str]) {
        for f in folders {
            let out = self.sh(&["ls", &self.path(f)]);
            if out.status.success() {
                self.aliased.remove(*f);
            } else {
                self.aliased.insert(f.to_string());
            }
        }
    }

    fn cp(&mut self, named: &mut Named) {
        let Some(g) = self.pick(&self.folders()) else {
            return;
        };
        self.next += 1;
        let token = format!("N{:06}-{}", self.next, self.rng.below(1_000_000));
        named.tokens.insert(token.clone());
        let bytes = message(&token, "copied in");
        let tmp = std::env::temp_dir().join(format!("chaos-{}-{token}.eml", std::process::id()));
        std::fs::write(&tmp, &bytes).unwrap_or_else(|e| panic!("write temp: {e}"));
        let target = self.path(&format!("{g}/new-{token}.eml"));
        let ok = self.op("cp", &["cp", &tmp.to_string_lossy(), &target]);
        let _ = std::fs::remove_file(&tmp);
        let w = self.server.world();
        let held: Vec<(String, Vec<u8>)> = w
            .folders
            .iter()
            .flat_map(|(name, f)| {
                f.msgs
                    .values()
                    .filter(|m| m.token() == token)
                    .map(|m| (name.clone(), m.body.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        drop(w);
        let right = held.len() == 1 && held[0].0 == g && held[0].1 == bytes;
        if ok && !right {
            self.failures.push(format!(
                "cp to {g} ({token}) succeeded; the server holds {} copies ({:?})",
                held.len(),
                held.iter().map(|(f, b)| (f, b.len())).collect::<Vec<_>>()
            ));
        }
        if !ok && held.len() > 1 {
            self.failures.push(format!(
                "cp to {g} ({token}) failed and left {} copies",
                held.len()
            ));
        }
    }

    fn mkdir(&mut self, named: &mut Named) {
        self.next += 1;
        let name = format!("X{}", self.next);
        named.folders.insert(name.clone());
        if self.op("mkdir", &["mkdir", &self.path(&name)]) {
            self.made.insert(name.clone());
            if !self.server.world().folders.contains_key(&name) {
                self.failures.push(format!(
                    "mkdir {name} succeeded; the server has no such folder"
                ));
            }
        } else if self.server.world().folders.contains_key(&name) {
            // Created after all (a cut after CREATE): ours to use.
            self.made.insert(name);
        }
    }

    fn rmdir(&mut self, before: &Placement, named: &mut Named) {
        let made: Vec<String> = self.made.iter().cloned().collect();
        let Some(f) = self.pick(&made) else {
            return;
        };
        named.folders.insert(f.clone());
        let held: Vec<&String> = before
            .iter()
            .filter(|(_, v)| v.iter().any(|(h, _, _)| *h == f))
            .map(|(t, _)| t)
            .collect();
        let ok = self.op("rmdir", &["rmdir", &self.path(&f)]);
        let exists = self.server.world().folders.contains_key(&f);
        if !exists {
            self.made.remove(&f);
        }
        if ok && exists {
            self.failures
                .push(format!("rmdir {f} succeeded; the server still has it"));
        }
        if !exists && !held.is_empty() {
            self.failures.push(format!(
                "rmdir {f} (ok: {ok}) deleted a folder holding {held:?}"
            ));
        }
    }

    fn rename(&mut self, before: &Placement, named: &mut Named) {
        let made: Vec<String> = self.made.iter().cloned().collect();
        let Some(f) = self.pick(&made) else {
            return;
        };
        self.next += 1;
        let to = format!("R{}", self.next);
        named.folders.insert(f.clone());
        named.folders.insert(to.clone());
        let ok = self.op("mv-folder", &["mv", &self.path(&f), &self.path(&to)]);
        let w = self.server.world();
        let (old, new) = (w.folders.contains_key(&f), w.folders.contains_key(&to));
        let placement = w.placement();
        drop(w);
        if !old {
            self.made.remove(&f);
        }
        if new {
            self.made.insert(to.clone());
            if self.aliased.contains(&f) {
                self.aliased.insert(to.clone());
            }
        }
        if ok && (old || !new) {
            self.failures.push(format!(
                "mv {f} {to} succeeded; the server has {f}: {old}, {to}: {new}"
            ));
        }
        if new && !old {
            for (t, v) in before {
                if v.iter().any(|(h, _, _)| *h == f)
                    && !placement
                        .get(t)
                        .is_some_and(|p| p.iter().any(|(h, _, _)| *h == to))
                {
                    self.failures
                        .push(format!("mv {f} {to}: {t} did not go along"));
                }
            }
        }
    }
}
