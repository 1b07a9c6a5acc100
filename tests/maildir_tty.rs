//! neomutt through a pty (tmux) on a Maildir-layout mount (issue 18): open INBOX, see
//! another client's new mail arrive, flag one message, delete one, save one to another
//! folder, sync, quit: exactly those changes on the server. The same session runs first on
//! a plain local Maildir with the same messages (the control).

mod common;
mod maildir_fixture;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{run, unique_temp_dir, wait_for};
use maildir_fixture::{client_present, crlf, flags, other_clients_message, set, Side, QUICK};

#[test]
fn neomutt_sees_new_mail_flags_deletes_saves_and_syncs() {
    if !client_present(&["neomutt", "tmux"]) {
        return;
    }
    let work = unique_temp_dir("neomutt");
    let control = Side::local();
    neomutt_session(&control, &work);
    let files = files_below(control.root());
    let inbox: Vec<&String> = files.iter().filter(|f| f.starts_with("INBOX/")).collect();
    assert_eq!(inbox.len(), 3, "{files:?}");
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
    let inbox = f.dovecot.oracle_meta("INBOX");
    assert_eq!(
        inbox.keys().copied().collect::<Vec<_>>(),
        vec![1, 4, 5],
        "2 deleted, 3 saved away, the other client's 5 kept"
    );
    assert_eq!(flags(f, "INBOX", 1), set(&["\\Flagged"]));
    assert_eq!(
        flags(f, "INBOX", 4),
        set(&["\\Answered"]),
        "sync changed nothing else"
    );
    assert_eq!(flags(f, "INBOX", 5), set(&[]));
    let archive = f.dovecot.oracle_fetch_all("Archive");
    assert_eq!(archive.len(), 2, "exactly one copy saved");
    assert_eq!(archive.get(&2), Some(&saved_bytes));
    assert_eq!(flags(f, "Archive", 2), set(&["\\Flagged", "\\Seen"]));
    drop(side);
    let _ = fs::remove_dir_all(&work);
}

/// neomutt in tmux on `side`: waits for the index, lets another client deliver, waits until
/// neomutt shows that message (its mailbox check), then flags the first message, deletes the
/// second, saves the third to Archive, syncs and quits. Returns once neomutt exited 0.
fn neomutt_session(side: &Side, work: &Path) {
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
    let done = work.join("done");
    let _ = fs::remove_file(&done);
    let socket = format!("imapfs-maildir-{}", std::process::id());
    let tmux = |args: &[&str]| {
        let mut cmd = vec!["tmux", "-L", &socket];
        cmd.extend_from_slice(args);
        run(&cmd, QUICK)
    };
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
    let command = format!(
        "neomutt -n -F '{}' 2>'{}'; echo $? > '{}'",
        rc.display(),
        work.join("stderr").display(),
        done.display()
    );
    let out = tmux(&[
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
    let session = TmuxServer(socket.clone());
    wait_for("neomutt's index", QUICK, || {
        (screen().matches("maildir test").count() >= 4).then_some(())
    });
    // neomutt compares directory mtimes in whole seconds (on a local disk too): a change in
    // the second it read the folder in goes unseen until the next change, so the other
    // client delivers in a later second.
    let read_at = unix_seconds();
    wait_for("a new second", QUICK, || {
        (unix_seconds() > read_at).then_some(())
    });
    side.other_client_delivers(&other_clients_message(30));
    let deadline = std::time::Instant::now() + QUICK;
    while !screen().contains("from the other client") {
        assert!(
            std::time::Instant::now() < deadline,
            "neomutt did not show the other client's message (mount: {}):\n{}",
            side.is_mount(),
            screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let keys = "<first-entry><flag-message><next-entry><delete-message><next-entry>\
                <save-message>=Archive<enter><sync-mailbox><quit>";
    tmux(&["send-keys", "-l", &format!(":push \"{keys}\"")]);
    tmux(&["send-keys", "Enter"]);
    let status = wait_for("neomutt to exit", Duration::from_secs(60), || {
        fs::read_to_string(&done).ok().filter(|s| !s.is_empty())
    });
    drop(session);
    assert_eq!(
        status.trim(),
        "0",
        "neomutt failed: {}",
        fs::read_to_string(work.join("stderr")).unwrap_or_default()
    );
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Kills the tmux server on drop (the test's cleanup, on failure too).
struct TmuxServer(String);

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = run(&["tmux", "-L", &self.0, "kill-server"], QUICK);
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
