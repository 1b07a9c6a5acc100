//! End-to-end tests of the Maildir layout (issue 18): `cur/`, `new/`, `tmp/` in every folder,
//! flags by rename, delivery from `tmp/`, moves by rename, folders named `cur`/`new`/`tmp`,
//! placement across remounts and directory times. Every change is checked against the server
//! by the harness's independent oracle. Real clients: `maildir_clients.rs`, `maildir_tty.rs`.

mod common;
mod maildir_fixture;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{run, wait_for, within};
use maildir_fixture::{
    flags, maildir, message, mounted, mounted_seed, name, names, rename, seed, set, validity, QUICK,
};

#[test]
fn layout_has_cur_new_tmp_and_mbsync_placement() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let root = names(f.mount.path().to_path_buf());
    assert!(
        root.contains("INBOX") && root.contains("Archive"),
        "{root:?}"
    );
    assert_eq!(
        names(f.mount.join("INBOX")),
        set(&["cur", "new", "tmp"]),
        "a folder holds its three directories and no message files"
    );
    assert_eq!(
        names(f.mount.join("Archive")),
        set(&["2024", "cur", "new", "tmp"])
    );
    // Unseen in new/, seen in cur/ (as mbsync delivers).
    assert_eq!(
        names(f.mount.join("INBOX/new")),
        BTreeSet::from([name(v, 1, ""), name(v, 4, "R")])
    );
    assert_eq!(
        names(f.mount.join("INBOX/cur")),
        BTreeSet::from([name(v, 2, "S"), name(v, 3, "FS")])
    );
    assert!(names(f.mount.join("INBOX/tmp")).is_empty());
    // The bytes are the server's, and the xattrs work on these files.
    let path = f.mount.join("INBOX/cur").join(name(v, 3, "FS"));
    let bytes = within("read", QUICK, move || fs::read(path)).expect("read");
    assert_eq!(bytes, f.dovecot.oracle_fetch("INBOX", 3));
    let out = run(
        &[
            "getfattr",
            "--only-values",
            "-n",
            "user.imap.uid",
            &f.mount
                .join("INBOX/cur")
                .join(name(v, 3, "FS"))
                .to_string_lossy(),
        ],
        QUICK,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3");
    // A name with other letters than the message's flags names nothing, nor an eml name.
    assert!(!f.mount.join("INBOX/cur").join(name(v, 3, "S")).exists());
    assert!(!f.mount.join("INBOX/3.eml").exists());
    // Directories are not dated 1970.
    let mtime = fs::metadata(f.mount.join("INBOX/cur"))
        .expect("stat")
        .mtime();
    assert!(mtime > 1_600_000_000, "{mtime}");
}

#[test]
fn the_default_layout_is_unchanged() {
    let f = mounted(&[]);
    let inbox = names(f.mount.join("INBOX"));
    assert!(
        inbox.contains("1.eml") && !inbox.contains("cur"),
        "{inbox:?}"
    );
    // Folder directories and the root are dated by the mount's start, not 1970 (issue 18).
    for dir in [f.mount.join("INBOX"), f.mount.path().to_path_buf()] {
        let meta = fs::metadata(&dir).expect("stat");
        assert!(meta.mtime() > 1_600_000_000, "{}", meta.mtime());
        assert!(meta.ctime() > 1_600_000_000, "{}", meta.ctime());
    }
}

#[test]
fn flags_by_rename_store_exactly_the_letters() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let cur = f.mount.join("INBOX/cur");
    // Flag a seen message in cur/.
    rename(cur.join(name(v, 2, "S")), cur.join(name(v, 2, "FS"))).expect("flag");
    assert_eq!(flags(&f, "INBOX", 2), set(&["\\Flagged", "\\Seen"]));
    assert!(cur.join(name(v, 2, "FS")).exists());
    assert!(!cur.join(name(v, 2, "S")).exists());
    // Unflag and mark unseen (it stays in cur/: a client moved it there).
    rename(cur.join(name(v, 3, "FS")), cur.join(name(v, 3, ""))).expect("unflag");
    assert_eq!(flags(&f, "INBOX", 3), set(&[]));
    assert!(cur.join(name(v, 3, "")).exists());
    // The T letter is \Deleted only; the message stays.
    rename(cur.join(name(v, 2, "FS")), cur.join(name(v, 2, "FST"))).expect("trash flag");
    assert_eq!(
        flags(&f, "INBOX", 2),
        set(&["\\Flagged", "\\Seen", "\\Deleted"])
    );
    assert_eq!(f.dovecot.oracle_status("INBOX").messages, 4);
    // user.imap.flags works on the same files, and renames them.
    common::set_xattr(
        &cur.join(name(v, 2, "FST")),
        "user.imap.flags",
        b"-\\Deleted",
    )
    .expect("setxattr");
    assert_eq!(flags(&f, "INBOX", 2), set(&["\\Flagged", "\\Seen"]));
    assert!(cur.join(name(v, 2, "FS")).exists());
    // Another unique part within the folder is refused.
    let e = rename(cur.join(name(v, 2, "FS")), cur.join(name(v, 9, "FS"))).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
}

#[test]
fn new_to_cur_with_the_same_flags_changes_nothing_on_the_server() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let before = f.dovecot.oracle_meta("INBOX");
    let new = f.mount.join("INBOX/new");
    let cur = f.mount.join("INBOX/cur");
    let cur_mtime = fs::metadata(&cur).expect("stat").modified().expect("mtime");
    rename(new.join(name(v, 1, "")), cur.join(name(v, 1, ""))).expect("new -> cur");
    assert!(cur.join(name(v, 1, "")).exists());
    assert!(!new.join(name(v, 1, "")).exists());
    assert_eq!(
        f.dovecot.oracle_meta("INBOX"),
        before,
        "no change on the server"
    );
    // The directories' times moved forward.
    let after = fs::metadata(&cur).expect("stat").modified().expect("mtime");
    assert!(after > cur_mtime, "{after:?} <= {cur_mtime:?}");
    // new/ -> cur/ with S (notmuch's -unread): \Seen.
    rename(new.join(name(v, 4, "R")), cur.join(name(v, 4, "RS"))).expect("read");
    assert_eq!(flags(&f, "INBOX", 4), set(&["\\Answered", "\\Seen"]));
}

#[test]
fn unlink_expunges() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let path = f.mount.join("INBOX/cur").join(name(v, 2, "S"));
    within("unlink", QUICK, move || fs::remove_file(path)).expect("rm");
    let uids: Vec<u32> = f.dovecot.oracle_meta("INBOX").into_keys().collect();
    assert_eq!(uids, vec![1, 3, 4]);
}

#[test]
fn delivery_from_tmp_is_one_append_at_the_rename() {
    let f = maildir();
    let tmp = f.mount.join("Archive/tmp");
    let bytes = common::compose_text(&message(20));
    let file = tmp.join("1700000000.M1P2.host");
    let (file2, bytes2) = (file.clone(), bytes.clone());
    within("write in tmp/", QUICK, move || {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file2)?;
        out.write_all(&bytes2)?;
        out.sync_all()?; // mdeliver fsyncs: that must not APPEND
        Ok::<_, std::io::Error>(())
    })
    .expect("write");
    assert_eq!(
        f.dovecot.oracle_status("Archive").messages,
        1,
        "fsync/close sent nothing"
    );
    assert!(names(tmp.clone()).contains("1700000000.M1P2.host"));
    rename(file, f.mount.join("Archive/new/1700000000.M1P2.host:2,F")).expect("deliver");
    let meta = f.dovecot.oracle_meta("Archive");
    assert_eq!(meta.len(), 2, "exactly one APPEND");
    assert_eq!(f.dovecot.oracle_fetch("Archive", 2), bytes);
    assert_eq!(flags(&f, "Archive", 2), set(&["\\Flagged"]));
    let v = validity(&f, "Archive");
    assert_eq!(
        names(f.mount.join("Archive/new")),
        BTreeSet::from([name(v, 2, "F")]),
        "it carries its server name"
    );
    assert!(names(tmp.clone()).is_empty());
    // A file in tmp/ that is unlinked is never sent; creating outside tmp/ is refused.
    let junk = tmp.join("junk");
    let junk2 = junk.clone();
    within("write", QUICK, move || {
        fs::write(junk2, b"Subject: x\r\n\r\nx\r\n")
    })
    .expect("write");
    within("rm", QUICK, move || fs::remove_file(junk)).expect("rm");
    let e = within("create in cur", QUICK, {
        let p = f.mount.join("Archive/cur/x");
        move || fs::write(p, b"x")
    })
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert_eq!(f.dovecot.oracle_status("Archive").messages, 2);
    // link() is refused with EPERM (mutt then renames).
    let e = within("link", QUICK, {
        let (a, b) = (
            f.mount.join("Archive/new").join(name(v, 2, "F")),
            f.mount.join("Archive/cur/linked:2,S"),
        );
        move || fs::hard_link(a, b)
    })
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
}

#[test]
fn rename_into_another_folder_is_a_move() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let original = f.dovecot.oracle_fetch("INBOX", 3);
    rename(
        f.mount.join("INBOX/cur").join(name(v, 3, "FS")),
        f.mount
            .join("Archive/2024/cur/1700000000.mrefile.host:2,FS"),
    )
    .expect("move");
    let inbox: Vec<u32> = f.dovecot.oracle_meta("INBOX").into_keys().collect();
    assert_eq!(inbox, vec![1, 2, 4]);
    let target = f.dovecot.oracle_fetch_all("Archive.2024");
    assert_eq!(target.len(), 1, "exactly one copy");
    assert_eq!(target.values().next(), Some(&original));
    assert_eq!(flags(&f, "Archive.2024", 1), set(&["\\Flagged", "\\Seen"]));
    let v2 = validity(&f, "Archive.2024");
    assert_eq!(
        names(f.mount.join("Archive/2024/cur")),
        BTreeSet::from([name(v2, 1, "FS")])
    );
}

#[test]
fn another_clients_changes_move_the_directory_times() {
    let f = mounted(&["-o", "maildir,dir_ttl=1"]);
    let v = validity(&f, "INBOX");
    let new = f.mount.join("INBOX/new");
    let cur = f.mount.join("INBOX/cur");
    let t0 = fs::metadata(&new).expect("stat").modified().expect("mtime");
    let c0 = fs::metadata(&cur).expect("stat").modified().expect("mtime");
    let uid = f
        .dovecot
        .oracle_append("INBOX", &common::compose_text(&message(30)));
    wait_for("new/ to change its time", QUICK, || {
        let t = fs::metadata(&new).ok()?.modified().ok()?;
        (t > t0).then_some(())
    });
    assert!(names(new.clone()).contains(&name(v, uid, "")));
    f.dovecot.oracle_store("INBOX", 2, "+FLAGS", &["\\Flagged"]);
    wait_for("cur/ to show the flag", QUICK, || {
        let t = fs::metadata(&cur).ok()?.modified().ok()?;
        (t > c0 && names(cur.clone()).contains(&name(v, 2, "FS"))).then_some(())
    });
    let now = SystemTime::now();
    let t = fs::metadata(&cur).expect("stat").modified().expect("mtime");
    assert!(t <= now + Duration::from_secs(1));
}

#[test]
fn search_links_point_into_cur_and_new() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let results = f.mount.join("INBOX/.search/BODY zebracorn");
    let links = names(results.clone());
    assert_eq!(links.len(), 4, "{links:?}");
    let target = within("readlink", QUICK, {
        let p = results.join("1.eml");
        move || fs::read_link(p)
    })
    .expect("readlink");
    assert_eq!(
        target,
        PathBuf::from(format!("../../new/{}", name(v, 1, "")))
    );
    let bytes = within("read through the link", QUICK, {
        let p = results.join("3.eml");
        move || fs::read(p)
    })
    .expect("read");
    assert_eq!(bytes, f.dovecot.oracle_fetch("INBOX", 3));
    // .parts works as in the default layout (by UID): the text part of message 3.
    let parts = f.mount.join("INBOX/.parts/3");
    let leaves = names(parts.clone());
    assert!(!leaves.is_empty(), "no parts");
    let texts: Vec<Vec<u8>> = leaves
        .iter()
        .filter_map(|leaf| {
            let p = parts.join(leaf);
            within("read a part", QUICK, move || fs::read(p)).ok()
        })
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| String::from_utf8_lossy(t).contains("message number 3")),
        "{leaves:?}"
    );
}

/// Folders named `cur`, `new` and `tmp` are shown escaped (`%63ur`, `%6Eew`, `%74mp`): they
/// never meet the Maildir directories of their parent, and the escaped names work for
/// everything (listing, mkdir, moves).
#[test]
fn folders_named_cur_new_tmp_are_escaped() {
    let mut s = seed();
    s.folder_mut("Archive.cur")
        .push_text(&message(11), &["\\Seen"]);
    s.folder_mut("Archive.new");
    let f = mounted_seed(&s, &["-o", "maildir"]);
    assert_eq!(
        names(f.mount.join("Archive")),
        set(&["%63ur", "%6Eew", "2024", "cur", "new", "tmp"])
    );
    let v = validity(&f, "Archive");
    let vc = validity(&f, "Archive.cur");
    assert_eq!(
        names(f.mount.join("Archive/cur")),
        BTreeSet::from([name(v, 1, "S")]),
        "Archive's own cur/"
    );
    assert_eq!(
        names(f.mount.join("Archive/%63ur/cur")),
        BTreeSet::from([name(vc, 1, "S")]),
        "the folder named cur, with its own cur/"
    );
    // mkdir of an escaped name creates the folder named tmp.
    within("mkdir", QUICK, {
        let p = f.mount.join("Archive/%74mp");
        move || fs::create_dir(p)
    })
    .expect("mkdir %74mp");
    assert!(
        f.dovecot
            .oracle_list()
            .iter()
            .any(|e| e.name == "Archive.tmp"),
        "{:?}",
        f.dovecot.oracle_list()
    );
    assert!(names(f.mount.join("Archive")).contains("%74mp"));
    // A rename into the escaped folder's cur/ is a MOVE to the folder named cur.
    rename(
        f.mount.join("Archive/cur").join(name(v, 1, "S")),
        f.mount.join("Archive/%63ur/cur/1700000000.x.host:2,S"),
    )
    .expect("move");
    assert_eq!(f.dovecot.oracle_status("Archive").messages, 0);
    assert_eq!(f.dovecot.oracle_status("Archive.cur").messages, 2);
}

/// A message a client moved from `new/` to `cur/` with the same flags (neomutt's sync) stays
/// in `cur/` after a remount: the memory is kept beside the saved indexes, in a private file.
#[test]
fn new_to_cur_placement_survives_a_remount() {
    let mut f = maildir();
    let v = validity(&f, "INBOX");
    let (new, cur) = (f.mount.join("INBOX/new"), f.mount.join("INBOX/cur"));
    rename(new.join(name(v, 1, "")), cur.join(name(v, 1, ""))).expect("new -> cur");
    let before = f.dovecot.oracle_meta("INBOX");
    f.remount(&["-o", "maildir"]);
    let (new, cur) = (f.mount.join("INBOX/new"), f.mount.join("INBOX/cur"));
    assert!(
        names(cur.clone()).contains(&name(v, 1, "")),
        "still in cur/"
    );
    assert_eq!(
        names(new.clone()),
        BTreeSet::from([name(v, 4, "R")]),
        "only the message never moved is in new/"
    );
    assert_eq!(f.dovecot.oracle_meta("INBOX"), before, "no server change");
    let saved = files_named(&f.cache, ".cur");
    assert_eq!(saved.len(), 1, "{saved:?}");
    let mode = fs::metadata(&saved[0]).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", saved[0].display());
    let text = fs::read_to_string(&saved[0]).expect("read");
    assert_eq!(text, format!("cur {v} 1\n"));
    // Back to new/: forgotten, across remounts too.
    rename(cur.join(name(v, 1, "")), new.join(name(v, 1, ""))).expect("cur -> new");
    f.remount(&["-o", "maildir"]);
    assert!(names(f.mount.join("INBOX/new")).contains(&name(v, 1, "")));
}

/// Every file below `dir` whose name ends with `suffix`.
fn files_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

/// mtime and ctime of a directory, in nanoseconds.
fn dir_times(dir: &Path) -> (i128, i128) {
    let m = fs::metadata(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    (ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec()))
}

/// The times of `cur/` and `new/` move forward with every change to their content, made
/// here (flag rename, new -> cur, delivery, unlink, move) or by another client (seen by
/// IDLE), and never go backwards or read 1970.
#[test]
fn directory_times_follow_every_change_and_never_go_back() {
    let f = maildir();
    let v = validity(&f, "INBOX");
    let inbox = f.mount.join("INBOX");
    let (cur, new) = (inbox.join("cur"), inbox.join("new"));
    let mut last = [dir_times(&cur), dir_times(&new)];
    for (m, c) in last {
        assert!(m > 1_600_000_000 * 1_000_000_000 && c == m, "{m} {c}");
    }
    // After each change: the named directories' times move forward, the others stay.
    let mut step = |what: &str, moved: [bool; 2]| {
        let dirs = [&cur, &new];
        wait_for(&format!("{what}: the directory times"), QUICK, || {
            let now = [dir_times(dirs[0]), dir_times(dirs[1])];
            for i in 0..2 {
                assert!(now[i].0 >= last[i].0, "{what}: went backwards");
                assert_eq!(now[i].0, now[i].1, "{what}: ctime is mtime");
            }
            let ok = (0..2).all(|i| !moved[i] || now[i].0 > last[i].0);
            ok.then(|| last = now)
        });
    };
    rename(cur.join(name(v, 2, "S")), cur.join(name(v, 2, "FS"))).expect("flag");
    step("flag rename", [true, false]);
    rename(new.join(name(v, 1, "")), cur.join(name(v, 1, ""))).expect("new -> cur");
    step("new -> cur", [true, true]);
    within("deliver", QUICK, {
        let (tmp, to) = (inbox.join("tmp/d.host"), new.join("d.host:2,"));
        move || {
            fs::File::create(&tmp)?.write_all(&common::compose_text(&message(21)))?;
            fs::rename(tmp, to)
        }
    })
    .expect("deliver");
    step("delivery", [false, true]);
    within("unlink", QUICK, {
        let p = cur.join(name(v, 3, "FS"));
        move || fs::remove_file(p)
    })
    .expect("unlink");
    step("unlink", [true, false]);
    f.dovecot
        .oracle_append("INBOX", &common::compose_text(&message(22)));
    step("another client's APPEND", [false, true]);
    let before_store = dir_times(&cur).0;
    f.dovecot.oracle_store("INBOX", 2, "-FLAGS", &["\\Flagged"]);
    step("another client's STORE", [true, false]);
    // The time may have moved first for a late notice of the APPEND; the STORE then shows in
    // the listing within the deadline, and cur/ is dated after what a client saw before it.
    wait_for("cur/ to list the STORE", QUICK, || {
        names(cur.clone()).contains(&name(v, 2, "S")).then_some(())
    });
    assert!(dir_times(&cur).0 > before_store);
    // Never in the future either.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i128;
    assert!(last[0].0 <= now + 1_000_000_000);
}
