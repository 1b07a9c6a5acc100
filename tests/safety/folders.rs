//! See main.rs. Folders: rmdir asks the server (item 5), a folder rename waits for the moves
//! queued into and out of it (item 9), a refresh commits HIGHESTMODSEQ/UIDNEXT only once the
//! UIDs it did not know are listed (item 6), and a saved index is checked against the server
//! before it is believed (item 15).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use imapfs::imap::auth::Security;
use imapfs::imap::pool::Pool;
use imapfs::imap::types::{MailboxName, ModSeq, Uid};
use imapfs::store::{Account, StoreOptions};

use crate::common::proxy::HoldingProxy;
use crate::common::{run, Dovecot, Mount, MountOptions, Seed, TextMessage};
use crate::script::{self, Conn, Script, Wire};

const QUICK: Duration = Duration::from_secs(30);
const SLOW: Duration = Duration::from_secs(300);

/// A seed holding `count` small text messages in each named folder.
fn seed(folders: &[(&str, usize)]) -> Seed {
    let mut seed = Seed::new();
    for (name, count) in folders {
        let folder = seed.folder_mut(name);
        for i in 0..*count {
            folder.push_text(&message(&format!("{name}-{i}"), 1), &[]);
        }
    }
    seed
}

fn message(token: &str, lines: usize) -> TextMessage<'static> {
    TextMessage {
        from: "Seed <seed@example.org>",
        to: "tester@example.org",
        subject: crate::common::Subject::Plain("seeded"),
        date: 1_700_000_000,
        message_id: format!("<{token}@imapfs.test>"),
        body_lines: (0..lines)
            .map(|l| format!("token {token} line {l}"))
            .collect(),
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// --- item 5: rmdir decides "empty" on the server -------------------------------------------------

/// Mail appended by another client just before `rmdir` (the watcher has not reported it yet)
/// must make rmdir fail with ENOTEMPTY, never be deleted with the folder.
#[test]
fn item_5_rmdir_of_a_folder_that_just_got_mail_is_refused() {
    let rounds = 6;
    let names: Vec<String> = (0..rounds).map(|i| format!("Drop{i}")).collect();
    let folders: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 0)).collect();
    let dovecot = Dovecot::start(&seed(&folders));
    let mount = Mount::start(&dovecot, &[]).unwrap_or_else(|f| panic!("{f}"));
    // Every folder listed (and so held and watched) before the rounds start.
    for name in &names {
        assert!(fs::read_dir(mount.join(name)).unwrap().next().is_none());
    }
    let mut lost = Vec::new();
    for name in &names {
        dovecot.oracle_append(name, &crate::common::compose_text(&message(name, 3)));
        let out = run(&["rmdir", &path_str(&mount.join(name))], QUICK);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("Directory not empty") {
            lost.push(format!("{name}: rmdir said {:?} {err}", out.status));
        }
    }
    let listed: Vec<String> = dovecot.oracle_list().into_iter().map(|e| e.name).collect();
    for name in &names {
        if !listed.contains(name) {
            lost.push(format!("{name} and its message were deleted"));
        } else {
            assert_eq!(dovecot.oracle_status(name).messages, 1, "{name}");
        }
    }
    assert!(lost.is_empty(), "{lost:#?}");
    // An empty folder is still removed.
    run_ok_quick(&["mkdir", &path_str(&mount.join("Gone"))]);
    run_ok_quick(&["rmdir", &path_str(&mount.join("Gone"))]);
    assert!(!dovecot.oracle_list().iter().any(|e| e.name == "Gone"));
}

fn run_ok_quick(cmd: &[&str]) {
    let out = run(cmd, QUICK);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- item 9: a folder rename waits for queued moves ------------------------------------------------

/// `mv A/*.eml B/ && mv B C`, with moves also queued into a folder below B: every message
/// ends in C (or below it), none stays behind or lands in a re-created B.
#[test]
fn item_9_folder_rename_waits_for_moves_queued_into_it_and_below() {
    // B and B.Sub already hold messages with the UIDs the moved ones have in A and A2, so the
    // moved messages' new UIDs collide with no name `mv` is still moving.
    let dovecot = Dovecot::start(&seed(&[("A", 200), ("A2", 50), ("B", 250), ("B.Sub", 100)]));
    let mount = Mount::start(&dovecot, &[]).unwrap_or_else(|f| panic!("{f}"));
    let script = format!(
        "mv {a}/*.eml {b}/ && mv {a2}/*.eml {sub}/ && mv {b} {c}",
        a = path_str(&mount.join("A")),
        a2 = path_str(&mount.join("A2")),
        b = path_str(&mount.join("B")),
        sub = path_str(&mount.join("B/Sub")),
        c = path_str(&mount.join("C")),
    );
    let out = run(&["sh", "-c", &script], SLOW);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<String> = dovecot.oracle_list().into_iter().map(|e| e.name).collect();
    assert!(
        !listed.iter().any(|n| n == "B" || n.starts_with("B.")),
        "B came back: {listed:?}"
    );
    assert_eq!(dovecot.oracle_status("A").messages, 0, "left in A");
    assert_eq!(dovecot.oracle_status("A2").messages, 0, "left in A2");
    assert_eq!(dovecot.oracle_status("C").messages, 450);
    assert_eq!(dovecot.oracle_status("C.Sub").messages, 150);
}

// --- the model test: a folder list answered after our own folder change ---------------------

/// Issue 13, the model test (seed 1796470078135231498): right after `mv X R` succeeded, `R` was
/// ENOENT. The watcher's folder-list poll had sent its LIST before the RENAME and got the
/// answer after it; that answer was taken as the current list, so the tree was rebuilt
/// without R (and with X again) until the next poll. A listing overtaken by a folder change of
/// ours is dropped, never installed.
#[test]
fn a_folder_list_answered_after_our_rename_does_not_undo_it() {
    let dovecot = Dovecot::start(&seed(&[("X", 2), ("Other", 1)]));
    // The watcher is the connection that sends NOTIFY; it reads the folder list every second.
    let proxy = HoldingProxy::start(dovecot.imap_port, "NOTIFY", "LIST");
    let mount = MountOptions::new(&dovecot)
        .url(format!("imap://{}@127.0.0.1:{}", dovecot.user, proxy.port))
        .args(&["--insecure"])
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(mount.join("X/1.eml").exists());
    proxy.arm();
    proxy.wait_held(QUICK);
    // The watcher's LIST went to the server before the RENAME; its answer waits.
    run_ok_quick(&[
        "mv",
        &path_str(&mount.join("X")),
        &path_str(&mount.join("R")),
    ]);
    // Hold the watcher's next LIST too: once it is sent, the watcher has taken in the answer
    // released now, and nothing newer from it can repair what that answer did.
    proxy.arm();
    proxy.release();
    proxy.wait_held(QUICK);
    let root: Vec<String> = fs::read_dir(mount.path())
        .expect("list the root")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        root.contains(&"R".to_string()) && !root.contains(&"X".to_string()),
        "root lists {root:?}"
    );
    assert!(mount.join("R").is_dir(), "R is gone after mv X R");
    assert!(mount.join("R/1.eml").exists());
    assert!(!mount.join("X").exists(), "X is back after mv X R");
    proxy.release();
}

// --- item 15: a restored server with the same UIDVALIDITY -----------------------------------------

/// Mount, read, unmount; replace every message of the folder with other content (the same
/// UIDs and UIDVALIDITY: `dovecot-uidlist` kept, Dovecot's index files deleted so it rescans);
/// remount with the same cache: every size, date and byte is the new one.
#[test]
fn item_15_a_restored_folder_with_the_same_uidvalidity_is_not_served_from_the_saved_index() {
    let mut dovecot = Dovecot::start(&seed(&[("Restore", 40)]));
    let cache = crate::common::unique_temp_dir("xdg-cache");
    let _cleanup = RemoveDir(cache.clone());
    let before = dovecot.oracle_status("Restore");
    {
        let mount = MountOptions::new(&dovecot)
            .cache_home(&cache)
            .start()
            .unwrap_or_else(|f| panic!("{f}"));
        // Read everything: verified lengths are known (and saved).
        for (uid, bytes) in dovecot.oracle_fetch_all("Restore") {
            let got = fs::read(mount.join(format!("Restore/{uid}.eml"))).unwrap();
            assert_eq!(got, bytes);
        }
        mount.unmount();
    }
    dovecot.kill_server();
    let folder = dovecot.mail_dir.join(".Restore");
    let mut replaced = 0;
    for entry in fs::read_dir(folder.join("cur")).unwrap() {
        let path = entry.unwrap().path();
        // Other content, longer than before, another date.
        let token = format!("restored-{replaced}");
        let bytes = crate::common::compose_text(&message(&token, 40 + replaced));
        fs::write(&path, &bytes).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(1_600_000_000 + replaced as u64))
            .unwrap();
        replaced += 1;
    }
    assert_eq!(replaced, 40);
    for entry in fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("dovecot.index") {
            fs::remove_file(&path).unwrap();
        }
    }
    dovecot.start_again();
    let after = dovecot.oracle_status("Restore");
    assert_eq!(
        after.uidvalidity, before.uidvalidity,
        "the test needs the same UIDVALIDITY"
    );
    let server = dovecot.oracle_meta("Restore");
    let bodies = dovecot.oracle_fetch_all("Restore");
    let mount = MountOptions::new(&dovecot)
        .cache_home(&cache)
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    let mut wrong = Vec::new();
    for (uid, meta) in &server {
        let path = mount.join(format!("Restore/{uid}.eml"));
        let st = fs::metadata(&path).unwrap();
        if st.len() != meta.size || st.mtime() != meta.internal_date {
            wrong.push(format!(
                "{uid}: shows {} bytes at {}, the server has {} at {}",
                st.len(),
                st.mtime(),
                meta.size,
                meta.internal_date
            ));
        }
        if fs::read(&path).unwrap() != bodies[uid] {
            wrong.push(format!("{uid}: other bytes than the server's"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// --- item 6: a refresh commits its HIGHESTMODSEQ only with every UID listed -----------------------

/// What the scripted QRESYNC server holds and how it misbehaves.
#[derive(Default)]
struct Qresync {
    /// UID -> MODSEQ.
    messages: BTreeMap<u32, u64>,
    /// Listings of new messages (`UID FETCH n:*`) and of named UIDs leave out UID 3, as a
    /// session whose view predates it would.
    hide_3: bool,
    /// A listing of named UIDs is refused (NO).
    refuse_named: bool,
}

impl Qresync {
    fn highest(&self) -> u64 {
        self.messages.values().copied().max().unwrap_or(1)
    }
    fn uidnext(&self) -> u32 {
        self.messages.keys().next_back().map_or(1, |u| u + 1)
    }
}

const QRESYNC_CAPS: &str = "IMAP4rev1 AUTH=PLAIN SASL-IR ENABLE CONDSTORE QRESYNC UIDPLUS";

fn serve_qresync(c: &mut Conn, state: &Mutex<Qresync>) {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    c.send(format!("* OK [CAPABILITY {QRESYNC_CAPS}] ready\r\n").as_bytes());
    while let Some(cmd) = c.command() {
        let tag = cmd.tag.clone();
        if cmd.verb == "ENABLE" {
            c.send(format!("* ENABLED QRESYNC\r\n{tag} OK enabled\r\n").as_bytes());
            continue;
        }
        if c.answer_basic(&cmd, QRESYNC_CAPS) {
            continue;
        }
        let rest = cmd.rest.to_ascii_uppercase();
        let st = lock();
        let line = |uid: u32, modseq: u64| {
            format!(
                "* {uid} FETCH (UID {uid} FLAGS () RFC822.SIZE 100 \
                 INTERNALDATE \"01-Jan-2024 00:00:00 +0000\" MODSEQ ({modseq}))\r\n"
            )
        };
        let mut out = String::new();
        match cmd.verb.as_str() {
            "EXAMINE" | "SELECT" => {
                // `EXAMINE INBOX (QRESYNC (7 10))`: report what changed since 10.
                if let Some(since) = rest
                    .split_once("QRESYNC (")
                    .and_then(|(_, r)| r.split(' ').nth(1))
                    .and_then(|m| m.trim_end_matches(')').parse::<u64>().ok())
                {
                    for (uid, m) in &st.messages {
                        if *m > since {
                            out.push_str(&format!(
                                "* {uid} FETCH (UID {uid} FLAGS () MODSEQ ({m}))\r\n"
                            ));
                        }
                    }
                }
                out = format!(
                    "* {} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {}] ok\r\n\
                     * OK [HIGHESTMODSEQ {}] ok\r\n{out}{tag} OK [READ-ONLY] done\r\n",
                    st.messages.len(),
                    st.uidnext(),
                    st.highest()
                );
            }
            "UID" if rest.starts_with("FETCH ") => {
                let set = rest["FETCH ".len()..].split(' ').next().unwrap_or("");
                let uids: Vec<u32> = if let Some(from) = set.strip_suffix(":*") {
                    let from: u32 = from.parse().unwrap_or(1);
                    st.messages.keys().copied().filter(|u| *u >= from).collect()
                } else if st.refuse_named {
                    out.push_str(&format!("{tag} NO [UNAVAILABLE] try later\r\n"));
                    drop(st);
                    c.send(out.as_bytes());
                    continue;
                } else {
                    set.split(',')
                        .filter_map(|n| n.parse().ok())
                        .filter(|u| st.messages.contains_key(u))
                        .collect()
                };
                for uid in uids {
                    if !(st.hide_3 && uid == 3) {
                        out.push_str(&line(uid, st.messages[&uid]));
                    }
                }
                out.push_str(&format!("{tag} OK done\r\n"));
            }
            _ => out.push_str(&format!("{tag} BAD unknown\r\n")),
        }
        drop(st);
        c.send(out.as_bytes());
    }
}

/// A QRESYNC refresh learns of UID 3 only from its flags (the listing of new messages left it
/// out), and the listing of UID 3 fails, then comes back empty. The index must not take the
/// new HIGHESTMODSEQ meanwhile: once the server answers, UID 3 shows.
#[test]
fn item_6_a_refresh_commits_highestmodseq_only_after_listing_the_uids_it_lacked() {
    let state = Arc::new(Mutex::new(Qresync {
        messages: BTreeMap::from([(1, 5), (2, 10)]),
        ..Qresync::default()
    }));
    let shared = state.clone();
    let server = Script::start(Wire::Tls, move |c| serve_qresync(c, &shared));
    let pool = Pool::new(script::config(&server, Security::Tls), 1, None);
    let account = Account::new(pool, StoreOptions::default());
    let id = account.mailbox_id(&MailboxName::from_utf8("INBOX", false));
    let uid3 = Uid::new(3).unwrap();

    let ix = account.index(id, Duration::ZERO).expect("first listing");
    assert_eq!(ix.read().highest_modseq(), Some(ModSeq(10)));
    {
        let mut st = state.lock().unwrap();
        st.messages.insert(3, 12);
        st.hide_3 = true;
        st.refuse_named = true;
    }
    let refused = account.index(id, Duration::ZERO);
    let ix = account.cached_index(id).unwrap();
    assert!(
        refused.is_err() || ix.read().messages().contains_key(&uid3),
        "a refresh that could not list UID 3 reported success without it"
    );
    assert_eq!(
        ix.read().highest_modseq(),
        Some(ModSeq(10)),
        "HIGHESTMODSEQ committed before UID 3 was listed"
    );

    // The listing now succeeds but leaves UID 3 out: still not committed.
    state.lock().unwrap().refuse_named = false;
    let _ = account.index(id, Duration::ZERO);
    let ix = account.cached_index(id).unwrap();
    if !ix.read().messages().contains_key(&uid3) {
        assert_eq!(ix.read().highest_modseq(), Some(ModSeq(10)));
    }

    // The server answers properly: UID 3 shows, and the index is at the server's state.
    state.lock().unwrap().hide_3 = false;
    let ix = account.index(id, Duration::ZERO).expect("refresh");
    let ix = ix.read();
    assert!(ix.messages().contains_key(&uid3), "UID 3 stays invisible");
    assert_eq!(ix.highest_modseq(), Some(ModSeq(12)));
    assert_eq!(ix.uidnext(), Uid::new(4));
}

/// Issue 13, the model test (seed 1796476622388976014): another client's APPEND to R42 stayed
/// unlisted, although the watcher was connected and polling. Dovecot 2.3's NOTIFY can go
/// silent after folders are created and renamed by another connection (here ours: `mkdir
/// X54; mv X54 R56; rmdir R56` in 0.3 s), and the watcher renews NOTIFY only when its poll
/// sees the folder list change, which that sequence leaves as it was. Every folder change of
/// ours now renews it.
#[test]
fn notify_is_renewed_after_folder_changes_a_poll_never_saw() {
    let dovecot = Dovecot::start(&seed(&[("Old", 1), ("Other", 1)]));
    let proxy = HoldingProxy::start(dovecot.imap_port, "NOTIFY", "LIST");
    let mount = MountOptions::new(&dovecot)
        .url(format!("imap://{}@127.0.0.1:{}", dovecot.user, proxy.port))
        .args(&["--insecure", "--dir-ttl", "600"])
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(mount.join("Old/1.eml").exists());
    proxy.arm();
    proxy.wait_held(QUICK);
    // While the watcher's poll waits: a folder made, renamed and removed.
    run_ok_quick(&["mkdir", &path_str(&mount.join("X"))]);
    run_ok_quick(&[
        "mv",
        &path_str(&mount.join("X")),
        &path_str(&mount.join("Y")),
    ]);
    run_ok_quick(&["rmdir", &path_str(&mount.join("Y"))]);
    proxy.release();
    let uid = dovecot.oracle_append("Old", &crate::common::compose_text(&message("late", 1)));
    let name = format!("{uid}.eml");
    // The watcher's promise is 2 s; the 30 s STATUS poll must not be what shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names: Vec<String> = fs::read_dir(mount.join("Old"))
            .expect("list Old")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if names.contains(&name) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not listed in Old after 10 s: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
