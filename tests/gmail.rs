//! Gmail through a real mount, against the scripted Gmail of `tests/script/gmail.rs`
//! (issue 15): reads byte-identical, labels read and written as `user.gmail.labels`, the ids
//! as `user.gmail.msgid` / `user.gmail.thrid`, `rm` in a label folder removing the label
//! (the message stays in All Mail), `delete=trash` moving to `[Gmail]/Trash`, `X-GM-RAW`
//! searches; and one message one inode: a message in INBOX, two
//! labels and All Mail as one inode with four links whose body crosses the wire once.

mod common;
mod script;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{getfattr, run, MountOptions};
use script::gmail::{GmailServer, Seed, ALL_MAIL};

const QUICK: Duration = Duration::from_secs(20);

fn body(n: u64, extra: &str) -> Vec<u8> {
    format!(
        "Subject: message {n}\r\nFrom: a@example.org\r\nMessage-ID: <{n}@example.org>\r\n\r\n\
         body of message {n}\r\n{extra}"
    )
    .into_bytes()
}

/// Four messages: 1 in INBOX, Work and My Label; 2 in INBOX only; 3 archived with a
/// non-ASCII label (`R\u{e9}unions`, modified UTF-7 on the wire) and `\Important`; 4 in
/// INBOX with an attachment.
fn seeds() -> Vec<Seed> {
    let seed = |n: u64, labels: &[&str], extra: &str| Seed {
        msgid: 1_600_000_000_000_000_000 + n,
        thrid: 1_600_000_000_000_000_100 + n / 2,
        body: body(n, extra),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    vec![
        seed(1, &["\\Inbox", "Work", "My Label"], ""),
        seed(2, &["\\Inbox"], ""),
        seed(3, &["R&AOk-unions", "\\Important"], ""),
        seed(
            4,
            &["\\Inbox"],
            "--b\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\nPDF\r\n",
        ),
    ]
}

fn msgid(n: u64) -> u64 {
    1_600_000_000_000_000_000 + n
}

fn mount(server: &GmailServer, extra: &[&str]) -> common::Mount {
    let mut args = vec!["-o", "compress=no"];
    args.extend_from_slice(extra);
    MountOptions::custom(server.url(), server.script.ca_file.clone(), "secret")
        .args(&args)
        .start()
        .unwrap_or_else(|e| panic!("mount failed: {e}"))
}

fn setfattr(path: &Path, name: &str, value: &str) -> Result<(), String> {
    let out = run(
        &["setfattr", "-n", name, "-v", value, &path.to_string_lossy()],
        QUICK,
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The file of the message with this X-GM-MSGID in `folder`.
fn file(m: &common::Mount, server: &GmailServer, folder: &str, n: u64) -> std::path::PathBuf {
    let uid = server
        .uid(folder, msgid(n))
        .unwrap_or_else(|| panic!("message {n} is not in {folder}"));
    m.join(folder).join(format!("{uid}.eml"))
}

#[test]
fn quirk_gmail_labels_ids_and_reads() {
    let server = GmailServer::start(&seeds(), &[]);
    let m = mount(&server, &[]);
    // Reads are byte-identical in every folder the message shows in.
    for folder in ["INBOX", "Work", "My Label", ALL_MAIL] {
        let got = std::fs::read(file(&m, &server, folder, 1)).expect("read");
        assert_eq!(got, body(1, ""), "{folder}");
    }
    let one = file(&m, &server, "INBOX", 1);
    assert_eq!(
        getfattr(&one, "user.gmail.msgid").unwrap(),
        msgid(1).to_string()
    );
    assert_eq!(
        getfattr(&one, "user.gmail.thrid").unwrap(),
        "1600000000000000100"
    );
    assert_eq!(
        getfattr(&one, "user.gmail.labels").unwrap(),
        "\"My Label\" Work \\Inbox"
    );
    // The folder's wire name is modified UTF-7; the mount shows it decoded.
    let uid3 = server
        .uid("R&AOk-unions", msgid(3))
        .expect("3 in R\u{e9}unions");
    let three = m.join("R\u{e9}unions").join(format!("{uid3}.eml"));
    assert_eq!(
        getfattr(&three, "user.gmail.labels").unwrap(),
        "R\u{e9}unions \\Important"
    );
    // Writes: add (a name with a space, a non-ASCII one), remove, replace.
    setfattr(&one, "user.gmail.labels", "+Two Words").unwrap();
    setfattr(&one, "user.gmail.labels", "+R\u{e9}unions").unwrap();
    setfattr(&one, "user.gmail.labels", "-Work").unwrap();
    let mut want = vec!["My Label", "R&AOk-unions", "Two Words", "\\Inbox"];
    want.sort();
    assert_eq!(server.labels(msgid(1)), want);
    // (setfattr(1) itself decodes backslashes in a value, so none here.)
    setfattr(&three, "user.gmail.labels", "Alpha \"Two Words\"").unwrap();
    assert_eq!(server.labels(msgid(3)), vec!["Alpha", "Two Words"]);
    // Bad values: EINVAL, nothing sent.
    let stores_before = stores(&server);
    for bad in ["+", "\"open", "a\"b"] {
        let e = setfattr(&one, "user.gmail.labels", bad).unwrap_err();
        assert!(e.contains("Invalid argument"), "{bad}: {e}");
    }
    assert_eq!(stores(&server), stores_before);
    // The ids are read-only.
    let e = setfattr(&one, "user.gmail.msgid", "1").unwrap_err();
    assert!(e.contains("not permitted"), "{e}");
    // Gmail's own search language, passed as one quoted string.
    let hits = std::fs::read_dir(m.join("INBOX/.search/X-GM-RAW \"has:attachment pdf\""))
        .expect("search")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let four = server.uid("INBOX", msgid(4)).expect("uid of 4");
    assert_eq!(hits, vec![format!("{four}.eml")]);
    assert!(server
        .commands()
        .iter()
        .any(|c| c.contains("X-GM-RAW \"has:attachment pdf\"")));
    drop(m);
}

fn stores(server: &GmailServer) -> usize {
    server
        .commands()
        .iter()
        .filter(|c| c.to_ascii_uppercase().contains("X-GM-LABELS ("))
        .count()
}

#[test]
fn quirk_gmail_rm_in_a_label_folder_removes_the_label_and_trash_mode_trashes() {
    let server = GmailServer::start(&seeds(), &[]);
    {
        let m = mount(&server, &[]);
        let in_work = file(&m, &server, "Work", 1);
        std::fs::remove_file(&in_work).expect("rm in Work");
        let labels = server.labels(msgid(1));
        assert!(!labels.contains(&"Work".to_string()), "{labels:?}");
        assert_eq!(server.exists(msgid(1)), Some(false), "still in All Mail");
        assert!(!in_work.exists());
        assert!(file(&m, &server, ALL_MAIL, 1).exists());
        assert!(file(&m, &server, "INBOX", 1).exists());
    }
    let m = mount(&server, &["-o", "delete=trash"]);
    let two = file(&m, &server, "INBOX", 2);
    std::fs::remove_file(&two).expect("rm with delete=trash");
    assert_eq!(
        server.exists(msgid(2)),
        Some(true),
        "moved to [Gmail]/Trash"
    );
    assert!(file(&m, &server, "[Gmail]/Trash", 2).exists());
    drop(m);
}

/// `grep -r` over INBOX, the label folders and All Mail: each body crosses the wire once,
/// whichever folder it is read through (issue 15).
#[test]
fn quirk_gmail_grep_over_every_folder_fetches_each_body_once() {
    // The Maildir layout gives every copy a file of its own: only the body is shared there.
    for layout in [&[][..], &["-o", "maildir"][..]] {
        let server = GmailServer::start(&seeds(), &[]);
        let m = mount(&server, layout);
        let found = grep_everything(&m);
        // Every copy was read: INBOX (1, 2, 4), Work, My Label, R\u{e9}unions, All Mail (4).
        assert_eq!(found.len(), 3 + 1 + 1 + 1 + 4, "{layout:?}: {found:?}");
        assert_fetched_once(&server);
        drop(m);
    }
}

/// `-o prefetch=all` over INBOX, the labels and All Mail downloads each body once.
#[test]
fn quirk_gmail_prefetch_of_every_folder_fetches_each_body_once() {
    let server = GmailServer::start(&seeds(), &[]);
    let m = mount(&server, &["-o", "prefetch=all"]);
    common::wait_for("prefetch=done", QUICK, || {
        (m.stat("prefetch").as_deref() == Some("done")).then_some(())
    });
    assert_fetched_once(&server);
    // Every name reads from the cache: nothing more crosses the wire.
    assert_eq!(grep_everything(&m).len(), 10);
    assert_fetched_once(&server);
    drop(m);
}

/// `mv` of one of a message's links moves that folder's copy only (on Gmail: swaps that
/// label), and the message keeps its one inode under its new name.
#[test]
fn quirk_gmail_mv_of_one_link_moves_that_folders_copy() {
    let server = GmailServer::start(&seeds(), &[]);
    let m = mount(&server, &[]);
    for f in ["INBOX", "Work", "My Label", ALL_MAIL, "R\u{e9}unions"] {
        std::fs::read_dir(m.join(f)).expect("ls").for_each(drop);
    }
    let ino = std::fs::metadata(file(&m, &server, "INBOX", 1))
        .expect("stat")
        .ino();
    let in_work = file(&m, &server, "Work", 1);
    let target = m.join("R\u{e9}unions");
    let moved = target.join(in_work.file_name().expect("name"));
    std::fs::rename(&in_work, &moved).expect("mv Work/ -> R\u{e9}unions/");
    // Settled once the target is listed: the copy in Work is gone, one arrived.
    let names: Vec<_> = std::fs::read_dir(&target)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    let mut labels = server.labels(msgid(1));
    labels.sort();
    assert_eq!(labels, ["My Label", "R&AOk-unions", "\\Inbox"]);
    assert!(!in_work.exists());
    let arrived = file(&m, &server, "R&AOk-unions", 1);
    let arrived = target.join(arrived.file_name().expect("name"));
    assert!(names.contains(&arrived), "{names:?}");
    let meta = std::fs::metadata(&arrived).expect("stat");
    assert_eq!(meta.ino(), ino, "one inode under its new name");
    assert_eq!(meta.nlink(), 4, "INBOX, My Label, R\u{e9}unions, All Mail");
    assert_eq!(std::fs::read(&arrived).expect("read"), body(1, ""));
    assert_fetched_once_or_less(&server);
    drop(m);
}

/// No body was fetched more than once.
fn assert_fetched_once_or_less(server: &GmailServer) {
    let fetched: Vec<u64> = server.body_fetches().iter().map(|(id, _)| *id).collect();
    for id in &fetched {
        assert_eq!(
            fetched.iter().filter(|f| *f == id).count(),
            1,
            "{fetched:?}"
        );
    }
}

/// `grep -r -l` over the whole mount: the files that matched.
fn grep_everything(m: &common::Mount) -> Vec<String> {
    let root = m.path().to_string_lossy();
    let out = run(&["grep", "-r", "-l", "body of message", &root], QUICK);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// Each message's body was fetched exactly once.
fn assert_fetched_once(server: &GmailServer) {
    let mut fetched: Vec<u64> = server.body_fetches().iter().map(|(id, _)| *id).collect();
    fetched.sort_unstable();
    let once: Vec<u64> = (1..=4).map(msgid).collect();
    assert_eq!(
        fetched,
        once,
        "each body fetched once: {:?}",
        server.body_fetches()
    );
}

/// One message, one inode (issue 15): message 1 in INBOX, Work, My Label and All Mail is one
/// file with four names once the mount has listed those folders; reading every name fetches
/// its body once; `rm` of one name removes that folder's copy only (on Gmail: the label), the
/// copy the inode is numbered after included, and the other names go on working.
#[test]
fn quirk_gmail_one_message_one_inode_fetched_once() {
    let server = GmailServer::start(&seeds(), &[]);
    let m = mount(&server, &[]);
    let folders = ["INBOX", "Work", "My Label", ALL_MAIL];
    // As far as the mount knows: the folders it has listed.
    for f in folders {
        std::fs::read_dir(m.join(f)).expect("ls").for_each(drop);
    }
    let paths: Vec<_> = folders.iter().map(|f| file(&m, &server, f, 1)).collect();
    let links = |paths: &[std::path::PathBuf], n: u64| {
        let metas: Vec<_> = paths
            .iter()
            .map(|p| std::fs::metadata(p).expect("stat"))
            .collect();
        for (meta, p) in metas.iter().zip(paths) {
            assert_eq!(meta.ino(), metas[0].ino(), "one inode: {p:?}");
            assert_eq!(meta.nlink(), n, "{p:?}");
        }
        metas[0].ino()
    };
    let ino = links(&paths, 4);
    // Numbered after the first copy the mount saw: INBOX's.
    let inbox_uid = server.uid("INBOX", msgid(1)).expect("uid");
    assert_eq!(ino & 0xffff_ffff, u64::from(inbox_uid));
    // Other messages keep inodes of their own.
    let two = std::fs::metadata(file(&m, &server, "INBOX", 2)).expect("stat 2");
    assert_ne!(two.ino(), ino);
    assert_eq!(two.nlink(), 2, "INBOX and All Mail");
    grep_everything(&m);
    assert_fetched_once(&server);
    // rm in Work removes Work's copy (the label); the other three names stay, one inode.
    std::fs::remove_file(&paths[1]).expect("rm in Work");
    let mut labels = server.labels(msgid(1));
    labels.sort();
    assert_eq!(labels, ["My Label", "\\Inbox"]);
    assert!(!paths[1].exists());
    let left = [paths[0].clone(), paths[2].clone(), paths[3].clone()];
    assert_eq!(links(&left, 3), ino);
    for p in &left {
        assert_eq!(std::fs::read(p).expect("read"), body(1, ""), "{p:?}");
    }
    assert_fetched_once(&server);
    // rm of the copy the inode is numbered after (INBOX): the other names still work.
    std::fs::remove_file(&paths[0]).expect("rm in INBOX");
    assert_eq!(server.labels(msgid(1)), ["My Label"]);
    let left = [paths[2].clone(), paths[3].clone()];
    assert_eq!(links(&left, 2), ino);
    for p in &left {
        assert_eq!(std::fs::read(p).expect("read"), body(1, ""), "{p:?}");
    }
    assert_eq!(server.exists(msgid(1)), Some(false), "still in All Mail");
    drop(m);
}
