//! Unit tests of the saved index: format, checks on the file and its directory.

use std::collections::BTreeMap;
use std::fs;

use super::*;
use crate::imap::types::{Flag, ModSeq, Uid, UidValidity};
use crate::store::index::{MessageMeta, ObjectId, ObjectIds};
use std::os::unix::fs::MetadataExt;

fn sample() -> Index {
    let mut messages = BTreeMap::new();
    for u in [1u32, 5, 9] {
        messages.insert(
            Uid::new(u).unwrap(),
            MessageMeta {
                listed_size: 100 + u64::from(u),
                body_len: (u == 5).then_some(99),
                internal_date: -3 + i64::from(u),
                // Three flag sets, one of them empty.
                flags: match u {
                    1 => vec![Flag::Seen, Flag::Keyword("$Junk".into())],
                    5 => vec![Flag::Extension("\\Important".into()), Flag::Flagged],
                    _ => Vec::new(),
                }
                .into(),
                modseq: Some(ModSeq(7)),
                // Every form of id: Gmail's, RFC 8474's with and without a thread, none.
                ids: match u {
                    1 => Some(std::sync::Arc::new(ObjectIds {
                        message: ObjectId::Gmail(1_600_000_000_000_000_001),
                        thread: Some(ObjectId::Gmail(1_600_000_000_000_000_000)),
                    })),
                    5 => Some(std::sync::Arc::new(ObjectIds {
                        message: ObjectId::Rfc8474("Mdeadbeef".into()),
                        thread: None,
                    })),
                    _ => None,
                },
            },
        );
    }
    Index::listed(
        UidValidity::new(42).unwrap(),
        Uid::new(10),
        Some(ModSeq(12)),
        None,
        messages,
    )
}

#[test]
fn round_trips_and_loads_stale() {
    let name = MailboxName::from_utf8("INBOX", false);
    let ix = sample();
    let bytes = encode("u@h:993", &name, &ix);
    let back = decode(&bytes, "u@h:993", &name).unwrap().unwrap();
    let mut expected = ix.messages().clone();
    // Verified lengths are learned again from the server's bytes (item 15).
    expected.values_mut().for_each(|m| m.body_len = None);
    assert_eq!(back.messages(), &expected);
    assert_eq!(back.validity(), ix.validity());
    assert_eq!(back.uidnext(), ix.uidnext());
    assert_eq!(back.highest_modseq(), ix.highest_modseq());
    assert!(back.is_stale(), "a saved index is only a starting point");
}

#[test]
fn foreign_and_damaged_files_are_never_trusted() {
    let name = MailboxName::from_utf8("INBOX", false);
    let bytes = encode("u@h:993", &name, &sample());
    assert!(decode(&bytes, "v@h:993", &name).unwrap().is_none());
    let other = MailboxName::from_utf8("Sent", false);
    assert!(decode(&bytes, "u@h:993", &other).unwrap().is_none());
    // Every single-byte change and every truncation is caught.
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x41;
        assert!(decode(&bad, "u@h:993", &name).is_err(), "flip at {i}");
        assert!(decode(&bytes[..i], "u@h:993", &name).is_err(), "cut at {i}");
    }
}

#[test]
fn damage_under_a_good_checksum_is_still_refused() {
    // Bytes that pass the CRC (written by a buggy encoder, say) are checked field by field.
    let name = MailboxName::from_utf8("INBOX", false);
    let reseal = |mut bytes: Vec<u8>| {
        bytes.truncate(bytes.len() - 4);
        seal(bytes)
    };
    let ix = sample();
    let good = encode("u@h:993", &name, &ix);
    assert!(decode(&reseal(good.clone()), "u@h:993", &name).is_ok());
    // Messages start after the header and the flag set table; find UID 5's record by its
    // size field (105, unique) and UID 9's by its UID followed by its size (109).
    let find = |needle: &[u8]| {
        good.windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    let at5 = find(&[5, 0, 0, 0, 105, 0, 0, 0, 0, 0, 0, 0]);
    let at9 = find(&[9, 0, 0, 0, 109, 0, 0, 0, 0, 0, 0, 0]);
    for (what, uid) in [("a UID twice", 5u32), ("out of order", 3)] {
        let mut bad = good.clone();
        bad[at9..at9 + 4].copy_from_slice(&uid.to_le_bytes());
        let why = decode(&reseal(bad), "u@h:993", &name).err();
        assert_eq!(why.as_deref(), Some("UIDs out of order"), "{what}");
    }
    // UID 5's flag set index (after UID, size, date and MODSEQ) pointing past the table.
    let mut bad = good.clone();
    let set = at5 + 4 + 8 + 8 + 9;
    bad[set..set + 4].copy_from_slice(&3u32.to_le_bytes());
    let why = decode(&reseal(bad), "u@h:993", &name).err();
    assert_eq!(why.as_deref(), Some("bad flag set"));
    // A file of another version (version 2 ended with an MD5) is refused as such.
    let mut old = good.clone();
    old[8..12].copy_from_slice(&2u32.to_le_bytes());
    let why = decode(&old, "u@h:993", &name).err();
    assert_eq!(why.as_deref(), Some("another version"));
}

#[test]
fn files_are_private_and_replaced_whole() {
    let dir = std::env::temp_dir().join(format!("imapfs-persist-{}", std::process::id()));
    let p = PersistOptions {
        dir: dir.clone(),
        account: "u@h:993".into(),
    };
    let name = MailboxName::from_utf8("INBOX", false);
    let path = file_for(&p, &name);
    write_private(&path, &encode(&p.account, &name, &sample())).unwrap();
    write_private(&path, &encode(&p.account, &name, &sample())).unwrap();
    let mode = fs::metadata(&path).unwrap().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
        0o700
    );
    let back = decode(&read_private(&path).unwrap().unwrap(), &p.account, &name)
        .unwrap()
        .unwrap();
    assert!(
        back.messages().values().all(|m| m.body_len.is_none()),
        "item 15: a saved length is never trusted over the server's bytes"
    );
    assert!(
        fs::read_dir(path.parent().unwrap()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp")),
        "no temporary file is left behind"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn item_14_a_symlink_or_a_loose_file_or_directory_is_never_read() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = std::env::temp_dir().join(format!("imapfs-persist14-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let p = PersistOptions {
        dir: dir.clone(),
        account: "u@h:993".into(),
    };
    let name = MailboxName::from_utf8("INBOX", false);
    let path = file_for(&p, &name);
    let bytes = encode(&p.account, &name, &sample());
    write_private(&path, &bytes).unwrap();
    assert!(read_private(&path).unwrap().is_some());

    // A symlink in place of the file, to a sound index elsewhere: refused.
    let elsewhere = dir.join("elsewhere.idx");
    fs::write(&elsewhere, &bytes).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(&path).unwrap();
    symlink(&elsewhere, &path).unwrap();
    assert!(read_private(&path).is_err(), "a symlinked file");
    // Writing replaces the link itself, never the file it points to.
    write_private(&path, &bytes).unwrap();
    assert!(!fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());

    // A file others can read or write: refused.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(read_private(&path).is_err(), "a loose file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

    // The account directory swapped for a symlink to another directory: refused, for
    // reading and for writing.
    let account_dir = path.parent().unwrap().to_path_buf();
    let moved = dir.join("moved");
    fs::rename(&account_dir, &moved).unwrap();
    symlink(&moved, &account_dir).unwrap();
    assert!(read_private(&path).is_err(), "a symlinked directory");
    assert!(write_private(&path, &bytes).is_err());
    // Discarding what could not be read removes nothing through the link: the file in the
    // directory it points to stays.
    assert!(load_private(&path, |d| Ok(Some(d))).is_none());
    assert!(
        moved.join(path.file_name().unwrap()).exists(),
        "a discard unlinked a file through a symlinked directory"
    );
    fs::remove_file(&account_dir).unwrap();
    fs::rename(&moved, &account_dir).unwrap();

    // A directory others can enter: refused.
    fs::set_permissions(&account_dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(read_private(&path).is_err(), "a loose directory");
    let _ = fs::remove_dir_all(&dir);
}
