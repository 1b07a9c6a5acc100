//! Terminal mail clients through a pty (tmux) on a Maildir-layout mount (issue 18), each
//! session run first on a plain local Maildir with the same messages (the control), then on
//! the mount, with the server checked by the harness's oracle:
//! - neomutt: open INBOX, see another client's new mail arrive, flag one message, delete one,
//!   save one to another folder, sync, quit: exactly those changes on the server; a message
//!   another client set \Deleted on (a `T` file) is purged on sync;
//! - aerc: the same with its commands (`:flag`, `:delete`, `:move`, `:copy`), and the new
//!   mail seen through its check-mail timer.

mod common;
mod maildir_fixture;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{compose_text, run, unique_temp_dir, wait_for};
use maildir_fixture::{
    client_present, crlf, flags, message, other_clients_message, set, Fixture, Side, QUICK,
};

#[test]
fn neomutt_sees_new_mail_flags_deletes_saves_and_syncs() {
    if !client_present(&["neomutt", "tmux"]) {
        return;
    }
    let work = unique_temp_dir("neomutt");
    let control = Side::local();
    neomutt_session(&control, &work);
    let files = control_files_after_session(&control);
    assert!(files.contains("INBOX/new/1.control:2,F"), "{files:?}");
    assert!(files.contains("INBOX/new/4.control:2,R"), "{files:?}");
    let saved: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with("Archive/") && !f.contains("9.control"))
        .collect();
    assert_eq!(saved.len(), 1, "{files:?}");
    // neomutt rewrites what it saves (bare LF): the server must hold what it wrote to the
    // local Maildir, with bare LF sent as CRLF (as every APPEND is).
    let saved_bytes = crlf(&fs::read(control.root().join(saved[0])).expect("saved"));
    drop(control);

    let side = Side::mount();
    neomutt_session(&side, &work);
    let f = side.fixture();
    server_inbox_after_session(f);
    assert_no_tmp_files(&side);
    let archive = f.dovecot.oracle_fetch_all("Archive");
    assert_eq!(archive.len(), 2, "exactly one copy saved");
    assert_eq!(archive.get(&2), Some(&saved_bytes));
    assert_eq!(flags(f, "Archive", 2), set(&["\\Flagged", "\\Seen"]));
    drop(side);
    let _ = fs::remove_dir_all(&work);
}

/// neomutt treats a file with `T` as deleted and purges it on sync: the unlink expunges.
#[test]
fn neomutt_purges_a_trashed_message_on_sync() {
    if !client_present(&["neomutt", "tmux"]) {
        return;
    }
    let work = unique_temp_dir("neomutt-purge");
    let control = Side::local();
    control.other_client_trashes(2);
    purge_session(&control, &work);
    let files = files_below(control.root());
    assert!(!files.iter().any(|f| f.contains("/2.control")), "{files:?}");
    assert_eq!(
        files.iter().filter(|f| f.starts_with("INBOX/")).count(),
        3,
        "{files:?}"
    );
    drop(control);

    let side = Side::mount();
    side.other_client_trashes(2);
    purge_session(&side, &work);
    let f = side.fixture();
    let inbox = f.dovecot.oracle_meta("INBOX");
    assert_eq!(inbox.keys().copied().collect::<Vec<_>>(), vec![1, 3, 4]);
    assert_eq!(flags(f, "INBOX", 4), set(&["\\Answered"]));
    drop(side);
    let _ = fs::remove_dir_all(&work);
}

/// neomutt opens INBOX, syncs and quits.
fn purge_session(side: &Side, work: &Path) {
    let tmux = start_neomutt(side, work);
    tmux.command("push \"<sync-mailbox><quit>\"");
    tmux.exited_0();
}

#[test]
fn aerc_sees_new_mail_flags_deletes_moves_and_copies() {
    if !client_present(&["aerc", "tmux"]) {
        return;
    }
    let work = unique_temp_dir("aerc");
    let control = Side::local();
    aerc_session(&control, &work);
    let files = control_files_after_session(&control);
    // aerc moves what it has listed from new/ to cur/, with the same letters.
    assert!(files.contains("INBOX/cur/1.control:2,F"), "{files:?}");
    assert!(files.contains("INBOX/cur/4.control:2,R"), "{files:?}");
    assert!(files.contains("Archive/cur/3.control:2,FS"), "{files:?}");
    let copies: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with("Archive/") && !f.contains(".control"))
        .collect();
    assert_eq!(copies.len(), 1, "{files:?}");
    assert!(copies[0].ends_with(":2,R"), "{files:?}");
    drop(control);

    let side = Side::mount();
    aerc_session(&side, &work);
    let f = side.fixture();
    server_inbox_after_session(f);
    assert_no_tmp_files(&side);
    let archive = f.dovecot.oracle_fetch_all("Archive");
    assert_eq!(archive.len(), 3, "one moved in, one copied in");
    assert_eq!(archive.get(&2), Some(&compose_text(&message(3))), "moved");
    assert_eq!(flags(f, "Archive", 2), set(&["\\Flagged", "\\Seen"]));
    assert_eq!(archive.get(&3), Some(&compose_text(&message(4))), "copied");
    // A limit (docs/clients.md): aerc 0.14 renames its copy from tmp/ into cur/ with no
    // letters (the APPEND, so no flags), then finds it by listing cur/ to add the letters;
    // the mount lists it under its server name only, so the copy has no flags.
    assert_eq!(flags(f, "Archive", 3), set(&[]));
    drop(side);
    let _ = fs::remove_dir_all(&work);
}

/// aerc in tmux on `side` (a maildir account, messages sorted by date): waits for the list,
/// lets another client deliver and waits until aerc lists it, then flags the first message,
/// deletes the second, moves the third to Archive, copies the fourth there, and quits once
/// each change is on the side. Returns once aerc exited 0.
fn aerc_session(side: &Side, work: &Path) {
    let config = work.join("config");
    let dir = config.join("aerc");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("aerc.conf"), "[ui]\nsort = date\n").expect("aerc.conf");
    let accounts = dir.join("accounts.conf");
    fs::write(
        &accounts,
        format!(
            "[test]\nsource = maildir://{}\noutgoing = /bin/false\ndefault = INBOX\n\
             from = Bob <bob@example.net>\ncheck-mail = 1s\ncheck-mail-cmd = true\n",
            side.root().display()
        ),
    )
    .expect("accounts.conf");
    fs::set_permissions(&accounts, fs::Permissions::from_mode(0o600)).expect("chmod");
    let command = format!(
        "HOME='{w}' XDG_CONFIG_HOME='{c}' XDG_CACHE_HOME='{w}/cache' XDG_DATA_HOME='{w}/data' \
         XDG_STATE_HOME='{w}/state' aerc",
        w = work.display(),
        c = config.display()
    );
    let tmux = Tmux::start("aerc", &command, work);
    let listed = |n: usize| move |s: &str| s.matches("maildir test").count() == n;
    tmux.wait_screen("aerc's message list", listed(4));
    side.other_client_delivers(&other_clients_message(30));
    // On the mount no inotify event tells aerc of another client's mail: its check-mail
    // timer (with a command that does nothing) makes it list the folders again.
    let what = format!(
        "aerc to list the other client's message (mount: {})",
        side.is_mount()
    );
    tmux.wait_screen(&what, |s| s.contains("from the other client"));
    let exists = |folder: &str, n: u32| {
        let dir = side.folder(folder);
        ["cur", "new"].iter().any(|sub| {
            fs::read_dir(dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let unique = name.split(":2,").next().unwrap_or_default().to_string();
                    unique == format!("{n}.control") || unique.ends_with(&format!(".{n}.imapfs"))
                })
        })
    };
    tmux.command("select 0");
    tmux.command("flag");
    tmux.wait_screen("the flag", |s| s.contains('!'));
    tmux.command("next");
    tmux.command("delete");
    tmux.wait_screen("the deletion", listed(3));
    tmux.command("move Archive");
    tmux.wait_screen("the move", listed(2));
    tmux.command("copy Archive");
    wait_for("aerc's copy", QUICK, || {
        (side.files("Archive").len() == 3).then_some(())
    });
    assert!(!exists("INBOX", 2) && !exists("INBOX", 3));
    tmux.command("quit");
    tmux.exited_0();
}

/// The control's files after a session, INBOX holding three (one deleted, one saved or moved
/// away, the other client's added).
fn control_files_after_session(control: &Side) -> BTreeSet<String> {
    let files = files_below(control.root());
    let inbox = files.iter().filter(|f| f.starts_with("INBOX/")).count();
    assert_eq!(inbox, 3, "{files:?}");
    assert_no_tmp_files(control);
    files
}

/// Nothing is left in a `tmp/` (neomutt's save: write in tmp/, link() refused, rename).
fn assert_no_tmp_files(side: &Side) {
    let files = files_below(side.root());
    assert!(!files.iter().any(|f| f.contains("/tmp/")), "{files:?}");
}

/// INBOX on the server after a session: 1 flagged, 2 deleted, 3 gone to Archive, 4 as it was
/// (a client moving it from new/ to cur/ changes nothing), the other client's 5 unchanged.
fn server_inbox_after_session(f: &Fixture) {
    let inbox = f.dovecot.oracle_meta("INBOX");
    assert_eq!(inbox.keys().copied().collect::<Vec<_>>(), vec![1, 4, 5]);
    assert_eq!(flags(f, "INBOX", 1), set(&["\\Flagged"]));
    assert_eq!(flags(f, "INBOX", 4), set(&["\\Answered"]));
    assert_eq!(flags(f, "INBOX", 5), set(&[]));
}

/// neomutt in tmux on `side`: waits for the index, lets another client deliver, waits until
/// neomutt shows that message (its mailbox check), then flags the first message, deletes the
/// second, saves the third to Archive, syncs and quits. Returns once neomutt exited 0.
fn neomutt_session(side: &Side, work: &Path) {
    let tmux = start_neomutt(side, work);
    // neomutt compares directory mtimes in whole seconds (on a local disk too): a change
    // dated the second that new/ was last dated goes unseen until the next change. So the
    // other client delivers once a file written now is dated a later second than new/ and
    // than neomutt's reading: file times come from the kernel's coarse clock, which lags
    // the system clock by up to a tick (a delivery at x.000 by the system clock was dated
    // (x-1).999 and missed, about one run in six).
    let read_at = unix_seconds();
    let new_dir = side.folder("INBOX").join("new");
    let probe = work.join("clock-probe");
    wait_for("a later second on the file clock", QUICK, || {
        fs::write(&probe, b"").ok()?;
        let now = u64::try_from(fs::metadata(&probe).ok()?.mtime()).ok()?;
        let new = u64::try_from(fs::metadata(&new_dir).ok()?.mtime()).ok()?;
        (now > new.max(read_at)).then_some(())
    });
    side.other_client_delivers(&other_clients_message(30));
    let what = format!(
        "neomutt to show the other client's message (mount: {})",
        side.is_mount()
    );
    tmux.wait_screen(&what, |s| s.contains("from the other client"));
    let keys = "<first-entry><flag-message><next-entry><delete-message><next-entry>\
                <save-message>=Archive<enter><sync-mailbox><quit>";
    tmux.command(&format!("push \"{keys}\""));
    tmux.exited_0();
}

/// neomutt in tmux on `side`'s INBOX (sorted by date; deleting is unlink on sync), once its
/// index shows the four seeded messages.
fn start_neomutt(side: &Side, work: &Path) -> Tmux {
    let rc = work.join("neomuttrc");
    fs::write(
        &rc,
        format!(
            "set mbox_type=Maildir\nset folder={}\nset spoolfile=+INBOX\nset sort=date\n\
             set confirmappend=no\nset delete=yes\nset quit=yes\nset move=no\nset mark_old=no\n\
             set maildir_trash=no\nset header_cache=\nset record=\nset wait_key=no\n\
             set resolve=no\nset mail_check=1\nset timeout=1\nset beep_new=no\n",
            side.root().display()
        ),
    )
    .expect("muttrc");
    let command = format!("neomutt -n -F '{}'", rc.display());
    let tmux = Tmux::start("neomutt", &command, work);
    tmux.wait_screen("neomutt's index", |s| {
        s.matches("maildir test").count() >= 4
    });
    tmux
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Tmux servers started by this process (each has its own socket).
static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A program running in a private tmux server (its pty): screen, keys, exit status. The
/// server is killed on drop (the test's cleanup, on failure too).
struct Tmux {
    socket: String,
    work: PathBuf,
    what: &'static str,
}

impl Tmux {
    /// Runs the shell command `command` in a 200x50 pane; its stderr and exit status go to
    /// files in `work`.
    fn start(what: &'static str, command: &str, work: &Path) -> Tmux {
        let tmux = Tmux {
            socket: format!(
                "imapfs-maildir-{what}-{}-{}",
                std::process::id(),
                SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            work: work.to_path_buf(),
            what,
        };
        let _ = fs::remove_file(tmux.done());
        let command = format!(
            "{command} 2>'{}'; echo $? > '{}'",
            work.join("stderr").display(),
            tmux.done().display()
        );
        let out = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            &command,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = vec!["tmux", "-L", &self.socket];
        cmd.extend_from_slice(args);
        run(&cmd, QUICK)
    }

    fn done(&self) -> PathBuf {
        self.work.join("done")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Waits until the screen satisfies `ok`; the failure shows the screen.
    fn wait_screen(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + QUICK;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: waited for {what}; the screen:\n{screen}\nstderr: {}",
                self.what,
                fs::read_to_string(self.work.join("stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `:command` and Enter.
    fn command(&self, command: &str) {
        self.run(&["send-keys", "-l", &format!(":{command}")]);
        self.run(&["send-keys", "Enter"]);
    }

    /// Waits for the program to exit, and asserts it exited 0.
    fn exited_0(&self) {
        let status = wait_for(
            &format!("{} to exit", self.what),
            Duration::from_secs(60),
            || {
                fs::read_to_string(self.done())
                    .ok()
                    .filter(|s| !s.is_empty())
            },
        );
        assert_eq!(
            status.trim(),
            "0",
            "{} failed: {}",
            self.what,
            fs::read_to_string(self.work.join("stderr")).unwrap_or_default()
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = run(&["tmux", "-L", &self.socket, "kill-server"], QUICK);
    }
}

/// Every file below `root` in INBOX and Archive, relative.
fn files_below(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for folder in ["INBOX", "Archive"] {
        for sub in ["cur", "new", "tmp"] {
            for e in fs::read_dir(root.join(folder).join(sub)).expect("read_dir") {
                let name = e.expect("entry").file_name().to_string_lossy().into_owned();
                out.insert(format!("{folder}/{sub}/{name}"));
            }
        }
    }
    out
}
