//! What the mount shows when other clients change the account: a recreated mailbox (new
//! UIDVALIDITY) must never serve a byte of the old messages, and new mail shows up once the
//! listing's TTL has passed.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{run_ok, wait_for, Dovecot, MountOptions, Seed};

const QUICK: Duration = Duration::from_secs(20);

fn message(tag: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nSubject: {tag}\r\n\r\nThis is the {tag} message.\r\n")
        .into_bytes()
}

#[test]
fn a_recreated_mailbox_never_serves_old_bytes() {
    let mut seed = Seed::new();
    seed.folder_mut("Recycled")
        .push(message("old"), &[], "old", "a@example.org", "<old@x>", 0, 0);
    let d = Dovecot::start(&seed);
    let mount = MountOptions::new(&d)
        .args(&["--dir-ttl", "0"])
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    let file = mount.join("Recycled/1.eml");
    let old_ino = fs::metadata(&file).unwrap().ino();
    let old_validity = uidvalidity(&file);
    // Read it, so that the block cache and the kernel's page cache hold the old bytes.
    assert_eq!(fs::read(&file).unwrap(), message("old"));

    // Another client deletes the mailbox and creates it again: UID 1 is another message now.
    d.oracle_delete("Recycled");
    d.oracle_create("Recycled");
    assert_eq!(d.oracle_append("Recycled", &message("new")), 1);

    let new = wait_for("the new message to show", QUICK, || {
        // Between DELETE and APPEND there is no UID 1: ENOENT is a state to wait through,
        // any other error is not.
        let data = match fs::read(&file) {
            Ok(data) => data,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return None,
            Err(e) => panic!("reading {}: {e}", file.display()),
        };
        (data != message("old")).then_some(data)
    });
    assert_eq!(new, message("new"), "UID 1 after recreation");
    let meta = fs::metadata(&file).unwrap();
    assert_ne!(
        meta.ino(),
        old_ino,
        "a new UIDVALIDITY must give new inodes"
    );
    let new_validity = uidvalidity(&file);
    assert_ne!(new_validity, old_validity);
}

#[test]
fn new_mail_appears_and_expunged_mail_goes_after_the_listing_ttl() {
    let mut seed = Seed::new();
    seed.folder_mut("Live").push(
        message("first"),
        &[],
        "first",
        "a@example.org",
        "<1@x>",
        0,
        0,
    );
    let d = Dovecot::start(&seed);
    let mount = MountOptions::new(&d)
        .args(&["--dir-ttl", "1"])
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    let dir = mount.join("Live");
    let names = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(), vec!["1.eml"]);
    let uid = d.oracle_append("Live", &message("second"));
    assert_eq!(uid, 2);
    wait_for("2.eml to appear", QUICK, || {
        (names() == vec!["1.eml", "2.eml"]).then_some(())
    });
    assert_eq!(fs::read(dir.join("2.eml")).unwrap(), message("second"));
    d.oracle_expunge("Live", 1);
    wait_for("1.eml to go", QUICK, || {
        (names() == vec!["2.eml"]).then_some(())
    });
    let gone = fs::metadata(dir.join("1.eml")).expect_err("1.eml was expunged");
    assert_eq!(gone.raw_os_error(), Some(libc::ENOENT), "{gone}");
}

/// `user.imap.uidvalidity` of a file: a number, or the test fails.
fn uidvalidity(file: &std::path::Path) -> u32 {
    let out = run_ok(&[
        "getfattr",
        "--only-values",
        "-n",
        "user.imap.uidvalidity",
        &file.to_string_lossy(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.parse()
        .unwrap_or_else(|e| panic!("uidvalidity {text:?} of {}: {e}", file.display()))
}
