//! Real Maildir clients through a Maildir-layout mount (issue 18): notmuch, mblaze and mu,
//! driven non-interactively. Each client's script runs twice: on the control, a plain local
//! Maildir with the same messages, then on the mount; what the client reports at each step
//! must be the same on both (so a failing script is told apart from a failing mount), and
//! every change must be on the server (the harness's oracle). In each script another client
//! changes the account meanwhile, and the client must see it on its next check.
//! neomutt, which needs a terminal: `maildir_tty.rs`. The benchmark: `scripts/bench-maildir.sh`.

mod common;
mod maildir_fixture;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{compose_text, run_command, unique_temp_dir, wait_for};
use maildir_fixture::{
    client_present, flags, message, other_clients_message, set, sh, Side, QUICK,
};

/// What a client reported, step by step.
type Steps = Vec<(&'static str, String)>;

/// Runs `script` on the control and on the mount; returns the mount side for server checks.
fn on_both(script: fn(&Side) -> Steps) -> Side {
    let control = Side::local();
    let expected = script(&control);
    drop(control);
    let mount = Side::mount();
    let got = script(&mount);
    for (want, have) in expected.iter().zip(&got) {
        assert_eq!(have, want, "the mount differs from the local Maildir");
    }
    assert_eq!(got.len(), expected.len());
    mount
}

/// `sub/letters` of a message's file (`cur/FS`).
fn place_of(path: &Path) -> String {
    let sub = path.parent().and_then(Path::file_name).unwrap_or_default();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let letters = name.split_once(":2,").map(|(_, l)| l).unwrap_or("?");
    format!("{}/{letters}", sub.to_string_lossy())
}

fn command_output(mut c: Command, stdin: Option<&[u8]>, what: &str) -> String {
    c.env("TZ", "UTC");
    let out = run_command(c, stdin, Duration::from_secs(120)).expect(what);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// notmuch: `new` counts, `search` equal to the server's SEARCH, other clients' changes seen
/// by the next `new`, `tag` with synchronize_flags reaching the server, `insert` delivering
/// once.
#[test]
fn notmuch_indexes_searches_tags_and_inserts() {
    if !client_present(&["notmuch"]) {
        return;
    }
    let side = on_both(notmuch_script);
    let f = side.fixture();
    assert_eq!(flags(f, "INBOX", 2), set(&["\\Flagged", "\\Seen"]));
    assert_eq!(flags(f, "INBOX", 4), set(&["\\Answered", "\\Flagged"]));
    assert_eq!(flags(f, "INBOX", 1), set(&["\\Seen"]));
    assert_eq!(f.dovecot.oracle_status("Archive").messages, 2, "one APPEND");
}

fn notmuch_script(side: &Side) -> Steps {
    let home = unique_temp_dir("notmuch");
    let config = home.join("notmuch-config");
    fs::write(
        &config,
        format!(
            "[database]\npath={}\nmail_root={}\n[new]\ntags=unread;inbox\n\
             [maildir]\nsynchronize_flags=true\n",
            home.join("db").display(),
            side.root().display()
        ),
    )
    .expect("config");
    fs::create_dir_all(home.join("db")).expect("db");
    let nm_in = |args: &[&str], stdin: Option<&[u8]>| -> String {
        let mut c = Command::new("notmuch");
        c.args(args)
            .env("NOTMUCH_CONFIG", &config)
            .env("HOME", &home);
        command_output(c, stdin, &format!("notmuch {args:?}"))
    };
    let nm = |args: &[&str]| nm_in(args, None);
    let count = |query: &str| nm(&["count", "--output=files", query]).trim().to_string();
    let mut steps = Steps::new();
    nm(&["new", "--quiet"]);
    steps.push(("files", count("*")));
    let hits = nm(&["search", "--output=files", "zebracorn and folder:INBOX"]);
    if let Side::Mount(f) = side {
        let server = f.dovecot.oracle_search("INBOX", "BODY zebracorn", None);
        assert_eq!(hits.lines().count(), server.len(), "search = SEARCH");
    }
    steps.push(("zebracorn in INBOX", hits.lines().count().to_string()));
    // Another client delivers, then flags: each is seen by the next `notmuch new` (through
    // the mount once IDLE told imapfs, hence the deadline).
    side.other_client_delivers(&other_clients_message(60));
    wait_for("notmuch new to see the delivery", QUICK, || {
        nm(&["new", "--quiet"]);
        (count("subject:\"from the other client\"") == "1").then_some(())
    });
    steps.push(("files after the other client's delivery", count("*")));
    side.other_client_flags(2);
    wait_for("notmuch new to see the flag", QUICK, || {
        nm(&["new", "--quiet"]);
        (count("tag:flagged") == "2").then_some(())
    });
    // Tags with synchronize_flags rename files: 4 moves from new/ to cur/ flagged.
    nm(&["tag", "+flagged", "id:maildir-4@example.org"]);
    nm(&["tag", "-unread", "id:maildir-1@example.org"]);
    steps.push(("4", place_of(&side.file("INBOX", 4))));
    steps.push(("1", place_of(&side.file("INBOX", 1))));
    let out = nm_in(
        &["insert", "--folder=Archive"],
        Some(&compose_text(&message(50))),
    );
    steps.push(("insert", out));
    steps.push(("Archive files", side.files("Archive").len().to_string()));
    steps.push(("Archive indexed", count("folder:Archive")));
    let _ = fs::remove_dir_all(&home);
    steps
}

/// mblaze: mlist, mscan, mflag -F/-S, mrefile (one copy, bytes intact), mdeliver (one
/// APPEND), and another client's delivery seen by the next mlist.
#[test]
fn mblaze_lists_flags_refiles_and_delivers() {
    if !client_present(&["mlist", "mscan", "mflag", "mrefile", "mdeliver"]) {
        return;
    }
    let side = on_both(mblaze_script);
    let f = side.fixture();
    assert_eq!(flags(f, "INBOX", 2), set(&["\\Flagged", "\\Seen"]));
    assert_eq!(flags(f, "INBOX", 1), set(&["\\Seen"]));
    assert!(!f.dovecot.oracle_meta("INBOX").contains_key(&3), "refiled");
    let target = f.dovecot.oracle_fetch_all("Archive.2024");
    assert_eq!(target.len(), 2, "one refiled, one delivered");
    assert_eq!(
        target.get(&1),
        Some(&compose_text(&message(3))),
        "bytes intact"
    );
}

fn mblaze_script(side: &Side) -> Steps {
    let inbox = side.folder("INBOX").to_string_lossy().into_owned();
    let archive = side.folder("Archive/2024");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut steps = Steps::new();
    steps.push(("mlist", sh(&["mlist", &inbox]).lines().count().to_string()));
    let scan = sh(&["mscan", &path(&side.file("INBOX", 2))]);
    steps.push(("mscan", scan.contains("maildir test").to_string()));
    sh(&["mflag", "-F", &path(&side.file("INBOX", 2))]);
    steps.push(("mflag -F", place_of(&side.file("INBOX", 2))));
    sh(&["mflag", "-S", &path(&side.file("INBOX", 1))]);
    steps.push(("mflag -S", place_of(&side.file("INBOX", 1))));
    let original = fs::read(side.file("INBOX", 3)).expect("read 3");
    sh(&["mrefile", &path(&side.file("INBOX", 3)), &path(&archive)]);
    let refiled = side.files("Archive/2024");
    steps.push(("mrefile copies", refiled.len().to_string()));
    let bytes = fs::read(&refiled[0]).expect("read the refiled copy");
    steps.push(("mrefile bytes intact", (bytes == original).to_string()));
    let mut c = Command::new("mdeliver");
    c.arg(&archive);
    command_output(c, Some(&compose_text(&message(40))), "mdeliver");
    steps.push(("mdeliver", side.files("Archive/2024").len().to_string()));
    steps.push(("mlist", sh(&["mlist", &inbox]).lines().count().to_string()));
    side.other_client_delivers(&other_clients_message(41));
    wait_for("mlist to list the other client's message", QUICK, || {
        (sh(&["mlist", &inbox]).lines().count() == 4).then_some(())
    });
    steps
}

/// mu 1.8: index, find, unread = the server's unseen, and another client's delivery found
/// after the next `mu index`.
#[test]
fn mu_indexes_and_finds() {
    if !client_present(&["mu"]) {
        return;
    }
    let side = on_both(mu_script);
    let f = side.fixture();
    let unseen = f.dovecot.oracle_search("INBOX", "UNSEEN", None).len()
        + f.dovecot.oracle_search("Archive", "UNSEEN", None).len();
    assert_eq!(
        unseen, 3,
        "two seeded unseen and the other client's message"
    );
}

fn mu_script(side: &Side) -> Steps {
    let home = unique_temp_dir("mu");
    let muhome = format!("--muhome={}", home.display());
    let mu = |args: &[&str]| -> String {
        let mut c = Command::new("mu");
        c.args(args).arg(&muhome).env("HOME", &home);
        command_output(c, None, &format!("mu {args:?}"))
    };
    let mut steps = Steps::new();
    mu(&["init", &format!("--maildir={}", side.root().display())]);
    mu(&["index", "--quiet"]);
    let found = mu(&["find", "--fields=l", "zebracorn"]);
    steps.push(("zebracorn", found.lines().count().to_string()));
    let unread = mu(&["find", "--fields=l", "flag:unread"]);
    steps.push(("unread", unread.lines().count().to_string()));
    if let Side::Mount(f) = side {
        let unseen = f.dovecot.oracle_search("INBOX", "UNSEEN", None).len();
        assert_eq!(unread.lines().count(), unseen, "unread = UNSEEN");
    }
    let flagged = mu(&["find", "--fields=s", "flag:flagged"]);
    steps.push(("flagged", flagged));
    side.other_client_delivers(&other_clients_message(70));
    wait_for("mu index to find the other client's message", QUICK, || {
        mu(&["index", "--quiet"]);
        // mu find exits 4 (no matches) until it is indexed.
        let mut c = Command::new("mu");
        c.args(["find", "--fields=s", "subject:other"])
            .arg(&muhome)
            .env("HOME", &home);
        let out = run_command(c, None, QUICK).ok()?;
        out.status.success().then_some(())
    });
    steps.push((
        "zebracorn",
        mu(&["find", "--fields=l", "zebracorn"])
            .lines()
            .count()
            .to_string(),
    ));
    let _ = fs::remove_dir_all(&home);
    steps
}
