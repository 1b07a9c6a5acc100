//! The saved index's bytes: encoding, the CRC-32 seal, and decoding that checks everything
//! (the layout is in the parent module's documentation). The folder list's file
//! (`list.rs`) is sealed and read with the same pieces.

use std::collections::HashMap;

use crate::imap::types::{Flag, MailboxName, ModSeq, Uid, UidValidity};
use crate::store::index::{FlagSet, Index, MessageMeta, ObjectId, ObjectIds, UidMap};

const MAGIC: &[u8; 8] = b"IMAPFSIX";
/// 2: each message also carries its [`ObjectIds`] (version 1 files are listed afresh: their
/// messages would lack the ids that make one message one inode). 3: flag sets in a table, no
/// verified-length field, CRC-32 instead of MD5 (older files are listed afresh).
pub(super) const VERSION: u32 = 3;

/// Serialise an index (see the module documentation for the layout).
pub(super) fn encode(account: &str, name: &MailboxName, ix: &Index) -> Vec<u8> {
    let mut w = Vec::with_capacity(64 + ix.messages().len() * 40);
    w.extend_from_slice(MAGIC);
    put_u32(&mut w, VERSION);
    put_bytes(&mut w, account.as_bytes());
    put_bytes(&mut w, name.raw());
    put_u32(&mut w, ix.validity().get());
    put_opt(&mut w, ix.uidnext().map(|u| u64::from(u.get())));
    put_opt(&mut w, ix.highest_modseq().map(|m| m.0));
    // Each distinct flag set once (a folder has a handful); messages name theirs by number.
    let mut sets: HashMap<&[Flag], u32> = HashMap::new();
    let mut table: Vec<&[Flag]> = Vec::new();
    let set_of: Vec<u32> = ix
        .messages()
        .values()
        .map(|m| {
            *sets.entry(&*m.flags).or_insert_with(|| {
                table.push(&m.flags);
                table.len() as u32 - 1
            })
        })
        .collect();
    put_u32(&mut w, table.len() as u32);
    for set in &table {
        put_u32(&mut w, set.len() as u32);
        for f in *set {
            put_bytes(&mut w, f.as_str().as_bytes());
        }
    }
    put_u32(&mut w, ix.messages().len() as u32);
    for ((uid, m), set) in ix.messages().iter().zip(set_of) {
        put_u32(&mut w, uid.get());
        w.extend_from_slice(&m.listed_size.to_le_bytes());
        // The verified length is not saved: it would be trusted over the server's bytes
        // after a restore (see the module documentation).
        w.extend_from_slice(&m.internal_date.to_le_bytes());
        put_opt(&mut w, m.modseq.map(|m| m.0));
        put_u32(&mut w, set);
        match m.ids.as_deref() {
            None => w.push(0),
            Some(ids) => {
                put_object_id(&mut w, &ids.message);
                match &ids.thread {
                    None => w.push(0),
                    Some(t) => put_object_id(&mut w, t),
                }
            }
        }
    }
    seal(w)
}

/// End a file's bytes with the CRC-32 of everything before it (damage, not forgery, is what
/// it catches: the file is private to its owner, and a loaded index is checked against the
/// server before it is used).
pub(super) fn seal(mut w: Vec<u8>) -> Vec<u8> {
    let sum = crc32fast::hash(&w);
    w.extend_from_slice(&sum.to_le_bytes());
    w
}

/// Check a sealed file's magic, version and checksum; a reader of what follows them.
pub(super) fn open_sealed<'a>(
    data: &'a [u8],
    magic: &[u8; 8],
    version: u32,
) -> Result<Reader<'a>, String> {
    if data.len() < magic.len() + 8 || &data[..magic.len()] != magic {
        return Err("not a file of ours".into());
    }
    let mut r = Reader(&data[magic.len()..]);
    if r.u32()? != version {
        return Err("another version".into());
    }
    let (body, sum) = data.split_at(data.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != sum {
        return Err("checksum mismatch".into());
    }
    Ok(Reader(&body[magic.len() + 4..]))
}

/// Tag 1 and a u64 for Gmail's ids, tag 2 and bytes for RFC 8474's (0 is "none").
pub(super) fn put_object_id(w: &mut Vec<u8>, id: &ObjectId) {
    match id {
        ObjectId::Gmail(n) => {
            w.push(1);
            w.extend_from_slice(&n.to_le_bytes());
        }
        ObjectId::Rfc8474(s) => {
            w.push(2);
            put_bytes(w, s.as_bytes());
        }
    }
}

pub(super) fn put_u32(w: &mut Vec<u8>, n: u32) {
    w.extend_from_slice(&n.to_le_bytes());
}

pub(super) fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_u32(w, b.len() as u32);
    w.extend_from_slice(b);
}

pub(super) fn put_opt(w: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            w.push(1);
            w.extend_from_slice(&v.to_le_bytes());
        }
        None => w.push(0),
    }
}

/// Parse a saved index, checking everything.
pub(super) fn decode(
    data: &[u8],
    account: &str,
    name: &MailboxName,
) -> Result<Option<Index>, String> {
    let mut r = open_sealed(data, MAGIC, VERSION)?;
    if r.bytes()? != account.as_bytes() || r.bytes()? != name.raw() {
        // Another account's or folder's (a name hash collision): not for us.
        return Ok(None);
    }
    let validity = UidValidity::new(r.u32()?).ok_or("UIDVALIDITY 0")?;
    let uidnext = match r.opt()? {
        Some(n) => Some(
            u32::try_from(n)
                .ok()
                .and_then(Uid::new)
                .ok_or("bad UIDNEXT")?,
        ),
        None => None,
    };
    let highest_modseq = r.opt()?.map(ModSeq);
    let nsets = r.u32()? as usize;
    let mut sets = Vec::with_capacity(nsets.min(r.0.len() / 4));
    for _ in 0..nsets {
        let n = r.u32()? as usize;
        let mut set = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let f = std::str::from_utf8(r.bytes()?).map_err(|_| "flag not UTF-8")?;
            // An index saved before \Recent was left out of indexes may hold it.
            match Flag::parse(f).ok_or("bad flag")? {
                Flag::Recent => {}
                flag => set.push(flag),
            }
        }
        // One copy of each set, shared by its messages.
        sets.push(FlagSet::from(set));
    }
    let count = r.u32()? as usize;
    // Packed as decoded: the UIDs are ascending (checked), so each goes at the end.
    let mut messages = UidMap::new();
    let mut last: Option<Uid> = None;
    for _ in 0..count {
        let uid = Uid::new(r.u32()?).ok_or("UID 0")?;
        if last.is_some_and(|l| l >= uid) {
            return Err("UIDs out of order".into());
        }
        last = Some(uid);
        let listed_size = r.u64()?;
        let internal_date = r.u64()? as i64;
        let modseq = r.opt()?.map(ModSeq);
        let flags = sets.get(r.u32()? as usize).ok_or("bad flag set")?.clone();
        let ids = match r.object_id()? {
            None => None,
            Some(message) => Some(std::sync::Arc::new(ObjectIds {
                message,
                thread: r.object_id()?,
            })),
        };
        let meta = MessageMeta {
            listed_size,
            // Never trusted from disk: a length is learned again from the server's bytes.
            body_len: None,
            internal_date,
            flags,
            modseq,
            ids,
        };
        messages.insert(uid, meta);
    }
    if !r.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(Some(Index::saved(
        validity,
        uidnext,
        highest_modseq,
        messages,
    )))
}

/// A bounds-checked cursor.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(super) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub(super) fn flag(&mut self) -> Result<bool, String> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("bad flag byte".into()),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn object_id(&mut self) -> Result<Option<ObjectId>, String> {
        Ok(match self.take(1)?[0] {
            0 => None,
            1 => Some(ObjectId::Gmail(self.u64()?)),
            2 => {
                let s = std::str::from_utf8(self.bytes()?).map_err(|_| "id not UTF-8")?;
                Some(ObjectId::Rfc8474(s.into()))
            }
            _ => return Err("bad id tag".into()),
        })
    }

    pub(super) fn opt(&mut self) -> Result<Option<u64>, String> {
        match self.take(1)?[0] {
            0 => Ok(None),
            1 => self.u64().map(Some),
            _ => Err("bad option tag".into()),
        }
    }
}
