//! The folder list kept beside the indexes, so that a mount can start offline: without it
//! there is no tree to show. One file per account, `mailboxes.lst` in the account's
//! directory, written like an index by the saving thread (a private temporary file, fsynced,
//! renamed; 0600 in a 0700 directory) whenever the list installed differs from the one saved
//! last, and read
//! through the same checks (owner, mode, no symlink, checksum, account inside).
//!
//! Format (little-endian): `IMAPFSML`, a version, the account, the number of folders, and per
//! folder its raw name, whether that name is UTF-8 (else modified UTF-7), its delimiter,
//! `\Noselect`, its LIST attributes and whether it is subscribed; then a CRC-32 of the rest
//! (version 2; version 1 ended with an MD5).
//!
//! Trust: the list is only ever shown while the server cannot be reached; the first LIST
//! once it can replaces it (and the filesystem hears the difference).

use std::path::PathBuf;
use std::sync::Arc;

use super::{
    account_dir, load_private, open_sealed, put_bytes, put_opt, put_u32, seal, PersistOptions,
    SaveJob,
};
use crate::imap::types::MailboxName;
use crate::store::{Account, MailboxInfo};

const MAGIC: &[u8; 8] = b"IMAPFSML";
const VERSION: u32 = 2;
const FILE: &str = "mailboxes.lst";

impl Account {
    /// Save the folder list held now if it differs from the one saved last (called after
    /// every list installed; a no-op without persistence).
    pub(crate) fn save_mailbox_list(&self) {
        let Some(p) = self.opts.persist.as_ref() else {
            return;
        };
        // Saves take turns, and each saves the newest list, so an older one never lands last.
        let mut last = self.saved.list.lock();
        let Some(list) = self.mailboxes.current() else {
            return;
        };
        if last
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, &list) || **l == *list)
        {
            return;
        }
        // Written by the saving thread, in the order queued (off the FUSE thread).
        self.saved.queue(SaveJob::File {
            what: "the folder list",
            path: file(p),
            bytes: encode(&p.account, &list),
        });
        *last = Some(list);
    }
}

/// The folder list an earlier mount saved for the account, if a sound one exists (a damaged
/// or foreign file is removed and reported as none).
pub fn saved_mailbox_list(p: &PersistOptions) -> Option<Vec<MailboxInfo>> {
    load_private(&file(p), |data| decode(&data, &p.account))
}

fn file(p: &PersistOptions) -> PathBuf {
    account_dir(&p.dir, &p.account).join(FILE)
}

fn encode(account: &str, list: &[MailboxInfo]) -> Vec<u8> {
    let mut w = Vec::with_capacity(64 + list.len() * 64);
    w.extend_from_slice(MAGIC);
    put_u32(&mut w, VERSION);
    put_bytes(&mut w, account.as_bytes());
    put_u32(&mut w, list.len() as u32);
    for m in list {
        put_bytes(&mut w, m.name.raw());
        // A name that modified UTF-7 does not decode to what we show came as UTF-8.
        let utf8 = MailboxName::from_wire(m.name.raw().to_vec(), false) != m.name;
        w.push(u8::from(utf8));
        put_opt(&mut w, m.delimiter.map(u64::from));
        w.push(u8::from(m.noselect));
        w.push(u8::from(m.subscribed));
        put_u32(&mut w, m.attributes.len() as u32);
        for a in &m.attributes {
            put_bytes(&mut w, a.as_bytes());
        }
    }
    seal(w)
}

fn decode(data: &[u8], account: &str) -> Result<Option<Vec<MailboxInfo>>, String> {
    let mut r = open_sealed(data, MAGIC, VERSION)?;
    if r.bytes()? != account.as_bytes() {
        // Another account's (a name hash collision): not for us.
        return Ok(None);
    }
    let count = r.u32()? as usize;
    let mut list = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let raw = r.bytes()?.to_vec();
        let utf8 = r.flag()?;
        let delimiter = match r.opt()? {
            Some(d) => Some(
                u32::try_from(d)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or("bad delimiter")?,
            ),
            None => None,
        };
        let noselect = r.flag()?;
        let subscribed = r.flag()?;
        let n = r.u32()? as usize;
        let mut attributes = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let a = std::str::from_utf8(r.bytes()?).map_err(|_| "attribute not UTF-8")?;
            attributes.push(a.to_string());
        }
        list.push(MailboxInfo {
            name: MailboxName::from_wire(raw, utf8),
            delimiter,
            noselect,
            attributes,
            subscribed,
        });
    }
    if !r.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(Some(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<MailboxInfo> {
        let folder = |name: MailboxName, noselect, subscribed, attributes: &[&str]| MailboxInfo {
            name,
            delimiter: Some('.'),
            noselect,
            attributes: attributes.iter().map(|a| a.to_string()).collect(),
            subscribed,
        };
        vec![
            folder(MailboxName::from_utf8("INBOX", false), false, true, &[]),
            folder(
                MailboxName::from_utf8("Ünïcødé", false),
                false,
                false,
                &["\\Sent"],
            ),
            folder(
                MailboxName::from_utf8("Ünï", true),
                true,
                true,
                &["\\HasChildren"],
            ),
        ]
    }

    #[test]
    fn round_trips_names_in_both_encodings() {
        let list = sample();
        let back = decode(&encode("u@h:993", &list), "u@h:993")
            .unwrap()
            .unwrap();
        assert_eq!(back, list);
        assert_eq!(back[1].name.raw(), b"&ANw-n&AO8-c&APg-d&AOk-");
        assert_eq!(back[2].name.raw(), "Ünï".as_bytes());
    }

    #[test]
    fn another_account_or_damage_is_not_served() {
        let bytes = encode("u@h:993", &sample());
        assert_eq!(decode(&bytes, "v@h:993"), Ok(None));
        for at in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(decode(&bad, "u@h:993").is_err(), "flip at {at}");
        }
        assert!(decode(&bytes[..bytes.len() - 3], "u@h:993").is_err());
    }

    #[test]
    fn saved_file_is_private_and_read_back() {
        use super::super::write_private;
        let dir = std::env::temp_dir().join(format!("imapfs-list-{}", std::process::id()));
        let p = PersistOptions {
            dir: dir.clone(),
            account: "u@h:993".into(),
        };
        assert_eq!(saved_mailbox_list(&p), None);
        write_private(&file(&p), &encode(&p.account, &sample())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file(&p)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(saved_mailbox_list(&p), Some(sample()));
        // A loosened mode is not ours any more: discarded.
        std::fs::set_permissions(file(&p), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(saved_mailbox_list(&p), None);
        assert!(!file(&p).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
