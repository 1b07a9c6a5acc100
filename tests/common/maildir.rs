//! A seed written as Dovecot's maildir++ files, owned by the user the mail processes run as.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use super::{mutf7_encode, Seed, SeedFolder};

/// Who owns the mail files and runs the mail processes. Dovecot refuses mail access as root
/// ("Mail access not allowed for root", whatever `first_valid_uid` says), so as root the mail
/// belongs to `nobody`; otherwise to the current user.
pub(super) struct MailOwner {
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// Set when not root: Dovecot's login/internal processes must run as this user too.
    pub(super) unprivileged_user: Option<String>,
}

impl MailOwner {
    pub(super) fn for_this_process() -> MailOwner {
        let me = fs::metadata("/proc/self").expect("/proc/self");
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        let entries: Vec<Vec<&str>> = passwd.lines().map(|l| l.split(':').collect()).collect();
        if me.uid() == 0 {
            let nobody = entries.iter().find(|e| e.len() > 3 && e[0] == "nobody");
            let (uid, gid) = nobody
                .map(|e| (e[2].parse().unwrap_or(65534), e[3].parse().unwrap_or(65534)))
                .unwrap_or((65534, 65534));
            MailOwner {
                uid,
                gid,
                unprivileged_user: None,
            }
        } else {
            let name = entries
                .iter()
                .find(|e| e.len() > 2 && e[2] == me.uid().to_string())
                .map(|e| e[0].to_string())
                .expect("current user in /etc/passwd");
            MailOwner {
                uid: me.uid(),
                gid: me.gid(),
                unprivileged_user: Some(name),
            }
        }
    }
}

/// Writes `seed` as Dovecot's default maildir++ layout under `root`: INBOX is `root` itself,
/// folder `A.B` is `root/.A.B` (each name in modified UTF-7), each with `cur/ new/ tmp/` and,
/// for non-INBOX folders, a `maildirfolder` marker. Messages go to `cur/` as
/// `<secs>.M<uid>P1.imapfs-seed:2,<flags>` with mtime = INTERNALDATE. Dovecot assigns UIDs to
/// new files in the order of the time stamp in their names, so UID = position in the folder
/// (tests/harness.rs checks this).
pub(super) fn write_maildir(root: &Path, seed: &Seed) {
    fs::create_dir_all(root).expect("create maildir");
    let mut folders: Vec<&SeedFolder> = seed.folders.iter().collect();
    if !folders.iter().any(|f| f.name == "INBOX") {
        folders.push(EMPTY_INBOX.get_or_init(|| SeedFolder {
            name: "INBOX".to_string(),
            messages: Vec::new(),
        }));
    }
    for folder in folders {
        let dir = if folder.name == "INBOX" {
            root.to_path_buf()
        } else {
            root.join(format!(".{}", mutf7_encode(&folder.name)))
        };
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(sub)).expect("create maildir folder");
        }
        if folder.name != "INBOX" {
            fs::write(dir.join("maildirfolder"), b"").expect("maildirfolder");
        }
        for message in &folder.messages {
            let letters: String = {
                let mut l: Vec<char> = message
                    .flags
                    .iter()
                    .map(|f| maildir_flag_letter(f))
                    .collect();
                l.sort_unstable();
                l.into_iter().collect()
            };
            let hints = if seed.size_hints {
                let bare_lf = message
                    .bytes
                    .iter()
                    .enumerate()
                    .filter(|&(i, &b)| b == b'\n' && (i == 0 || message.bytes[i - 1] != b'\r'))
                    .count();
                let len = message.bytes.len();
                format!(",S={len},W={}", len + bare_lf)
            } else {
                String::new()
            };
            let name = format!(
                "{}.M{:06}P1.imapfs-seed{hints}:2,{letters}",
                1_500_000_000 + u64::from(message.uid),
                message.uid
            );
            let path = dir.join("cur").join(name);
            let file = fs::File::create(&path).expect("create message file");
            let mut writer = std::io::BufWriter::new(&file);
            writer.write_all(&message.bytes).expect("write message");
            writer.flush().expect("flush message");
            drop(writer);
            let mtime = UNIX_EPOCH + Duration::from_secs(message.internal_date as u64);
            file.set_modified(mtime).expect("set mtime");
        }
    }
}

/// Fills folder `name` (seeded empty, not yet SELECTed) with messages 1..=n written straight
/// into its `cur/`, named as Dovecot delivers them (`,S=`/`,W=` hints, \Seen): `message(uid)`
/// gives the CRLF bytes and the INTERNALDATE. Dovecot indexes them on the first SELECT, so
/// the folder is big in seconds, not in an APPEND per message (benchmarks).
pub fn fill_folder(
    mail_dir: &Path,
    name: &str,
    n: u32,
    message: &(dyn Fn(u32) -> (Vec<u8>, i64) + Sync),
) {
    let cur = mail_dir
        .join(format!(".{}", mutf7_encode(name)))
        .join("cur");
    let owner = MailOwner::for_this_process();
    let write = |uids: std::ops::RangeInclusive<u32>| {
        for uid in uids {
            let (bytes, date) = message(uid);
            let len = bytes.len();
            let file_name = format!(
                "{}.M{uid:07}P1.imapfs-seed,S={len},W={len}:2,S",
                1_500_000_000 + u64::from(uid)
            );
            let path = cur.join(file_name);
            let file = fs::File::create(&path).expect("create message file");
            (&file).write_all(&bytes).expect("write message");
            file.set_modified(UNIX_EPOCH + Duration::from_secs(date.max(0) as u64))
                .expect("set mtime");
            std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid)).expect("chown");
        }
    };
    // Two writers: the file system's per-file cost, not one core, is the limit.
    let half = n / 2;
    std::thread::scope(|s| {
        s.spawn(|| write(1..=half));
        write(half + 1..=n);
    });
}

static EMPTY_INBOX: OnceLock<SeedFolder> = OnceLock::new();

pub(super) fn maildir_flag_letter(flag: &str) -> char {
    match flag {
        "\\Draft" => 'D',
        "\\Flagged" => 'F',
        "\\Answered" => 'R',
        "\\Seen" => 'S',
        "\\Deleted" => 'T',
        other => panic!("seed supports only system flags, not {other:?}"),
    }
}

pub(super) fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if fs::symlink_metadata(path)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        for entry in fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), uid, gid);
        }
    }
}

/// Message `uid` of a big generated folder (tests/scale.rs, the listing memory benchmark): a
/// few hundred bytes whose size varies with the UID, and an INTERNALDATE that does too, so a
/// shifted listing cannot pass.
pub fn big_folder_message(uid: u32) -> (Vec<u8>, i64) {
    let pad = "x".repeat((uid % 97) as usize);
    let bytes = format!(
        "From: s{uid}@example.org\r\nTo: t@example.org\r\nSubject: m {uid}\r\n\
         Message-ID: <m{uid}@example.org>\r\n\r\nbody {uid} {pad}\r\n"
    )
    .into_bytes();
    (bytes, 1_600_000_000 + i64::from(uid) * 7)
}
