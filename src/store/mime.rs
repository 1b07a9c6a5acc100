//! A message's MIME parts, for the `.parts` view: the tree from BODYSTRUCTURE, per-part
//! fetches, and decoding.
//!
//! [`Account::message_parts`] builds a [`PartTree`] the first time a message's parts are
//! needed (never with the listing of a folder), in two round trips on one session:
//! `UID FETCH (BODYSTRUCTURE BODY.PEEK[HEADER])`, then one FETCH with what the tree needs to
//! know every size exactly: `BINARY.SIZE[n]` of every leaf (where the server has BINARY),
//! `BODY.PEEK[n.HEADER]` of every attached message, and the text part itself when it is
//! small. Trees are kept in an LRU per (mailbox, UIDVALIDITY, UID), like the blocks.
//!
//! The tree, node 0 its root (the message's directory), in listing order:
//!
//! - `header`: the header block (`BODY[HEADER]`, or `BODY[n.HEADER]` in an attached message);
//! - `text`: the first `text/plain` part that is not an attachment (not looking inside
//!   attached messages), else the first such `text/html` converted to plain text by
//!   mail-parser's converter; decoded from its charset to UTF-8;
//! - one file per leaf part, named `<section>-<filename>` (filename from Content-Disposition,
//!   else Content-Type `name`, RFC 2231 and RFC 2047 decoded by mail-parser, then
//!   [`sanitize_filename`]), or `<section>.<ext>` from the MIME type when it has none;
//! - one directory per attached message (`message/rfc822`), named by its section, holding the
//!   same three kinds of entries for that message.
//!
//! A leaf holds the decoded bytes: with BINARY, `BINARY.PEEK[n]<offset.len>` block after
//! block, so reading a part fetches that part and nothing else; without it, an identity
//! encoding (7bit, 8bit, binary) is read the same way with `BODY.PEEK[n]<offset.len>`, and
//! base64 or quoted-printable is fetched whole with `BODY.PEEK[n]` and decoded here (its size
//! is then known only after that fetch). Decoded blocks live in their own byte-bounded cache
//! (a quarter of `cache_size`).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use lru::LruCache;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::Retry;
use crate::imap::session::Session;
use crate::imap::types::{BodyStructure, FetchItem, SequenceSet, Untagged};
use crate::store::blocks::BlockCache;
use crate::store::ids::MessageRef;
use crate::store::read::check_validity;
use crate::store::Account;

/// Most nodes in one message's tree, its directory included (the inode numbering of the
/// views has 11 bits for them); parts beyond are left out, with a warning.
pub const MAX_PART_NODES: usize = 0x800;

/// Longest file name made for a part, in bytes (Linux allows 255).
pub const MAX_NAME_BYTES: usize = 200;

/// A text part up to this size (encoded) is fetched with the tree.
const TEXT_PREFETCH: u64 = 64 << 10;

/// The `text` of a message is kept with its tree up to this size (a longer one is made again
/// from the cached part blocks when read).
const TEXT_KEPT: usize = 1 << 20;

/// Trees kept.
const TREES: usize = 256;

/// Blocks fetched ahead of a reader within a part, in the same round trip.
const PART_READAHEAD: u64 = 4;

/// What the parts view keeps between requests.
pub struct PartState {
    trees: Mutex<LruCache<MessageRef, Arc<PartTree>>>,
    blocks: BlockCache<PartBlock>,
    /// Trees built so far (for the mount's statistics).
    built: std::sync::atomic::AtomicU64,
}

impl PartState {
    pub fn new(capacity: u64) -> PartState {
        PartState {
            trees: Mutex::new(LruCache::new(NonZeroUsize::new(TREES).expect("non-zero"))),
            blocks: BlockCache::new(capacity),
            built: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// One block of one decoded part.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PartBlock {
    msg: MessageRef,
    node: u16,
    block: u64,
}

/// The parts of one message.
#[derive(Debug)]
pub struct PartTree {
    pub nodes: Vec<PartNode>,
    /// Whether leaves are read with BINARY (the server has it and answered BINARY.SIZE).
    binary: bool,
}

/// One entry of the tree.
#[derive(Debug)]
pub struct PartNode {
    /// Index of the directory holding it (0 holds itself).
    pub parent: u16,
    /// Its file name.
    pub name: String,
    pub kind: PartKind,
}

/// What an entry is.
#[derive(Debug)]
pub enum PartKind {
    /// The message's directory, or an attached message's; `section` is `""` or e.g. `"3"`.
    Dir {
        section: String,
        children: Vec<u16>,
    },
    /// The header block of the directory's message.
    Header {
        bytes: OnceLock<Arc<[u8]>>,
    },
    /// The text of the directory's message, from leaf `source`, in UTF-8.
    Text {
        source: u16,
        html: bool,
        content: OnceLock<Arc<[u8]>>,
    },
    Leaf(Leaf),
}

/// A leaf part.
#[derive(Debug)]
pub struct Leaf {
    /// The IMAP section number (`1`, `2.3`).
    pub section: String,
    /// `type/subtype`, lower case.
    pub mime_type: String,
    pub charset: Option<String>,
    /// Decoded, not sanitised.
    pub filename: Option<String>,
    /// Content-Transfer-Encoding, lower case.
    pub encoding: String,
    /// Content-Disposition `attachment` (such a part is never the `text`).
    pub attachment: bool,
    /// The encoded size BODYSTRUCTURE gave.
    pub encoded_size: u64,
    /// The decoded size, once known.
    size: OnceLock<u64>,
    /// Raw (decoded, charset untouched) content fetched with the tree (text parts only).
    prefetched: OnceLock<Arc<[u8]>>,
}

/// What a file of the tree is, for xattrs: MIME type, charset, original filename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub mime_type: String,
    pub charset: Option<String>,
    pub filename: Option<String>,
}

impl PartTree {
    pub fn node(&self, index: u16) -> Result<&PartNode> {
        self.nodes
            .get(usize::from(index))
            .ok_or_else(|| Error::NoEntry(format!("part entry {index}")))
    }

    /// The child of directory `dir` called `name`.
    pub fn child(&self, dir: u16, name: &str) -> Option<u16> {
        match &self.node(dir).ok()?.kind {
            PartKind::Dir { children, .. } => children
                .iter()
                .copied()
                .find(|c| self.nodes[usize::from(*c)].name == name),
            _ => None,
        }
    }

    /// The type, charset and filename of a file entry (`None` for a directory).
    pub fn info(&self, index: u16) -> Option<PartInfo> {
        match &self.node(index).ok()?.kind {
            PartKind::Dir { .. } => None,
            PartKind::Header { .. } => Some(PartInfo {
                mime_type: "text/rfc822-headers".into(),
                charset: None,
                filename: None,
            }),
            PartKind::Text { .. } => Some(PartInfo {
                mime_type: "text/plain".into(),
                charset: Some("utf-8".into()),
                filename: None,
            }),
            PartKind::Leaf(l) => Some(PartInfo {
                mime_type: l.mime_type.clone(),
                charset: l.charset.clone(),
                filename: l.filename.clone(),
            }),
        }
    }
}

impl Account {
    /// The parts of a message, from the cache or the server (two round trips).
    pub fn message_parts(&self, msg: MessageRef) -> Result<Arc<PartTree>> {
        if let Some(t) = self.parts.trees.lock().get(&msg) {
            return Ok(t.clone());
        }
        let name = self.require_name(msg.mailbox)?;
        let tree = self.pool.with_session(Some(&name), Retry::Idempotent, |s| {
            check_validity(s, &name, msg.validity)?;
            load_tree(s, msg)
        });
        let tree = match tree {
            Ok(Some(t)) => Arc::new(t),
            Ok(None) => {
                self.forget_message(msg);
                return Err(Error::NoMessage(format!("UID {} in {name}", msg.uid)));
            }
            Err(e) => return Err(e),
        };
        self.parts.built.fetch_add(1, Ordering::Relaxed);
        self.parts.trees.lock().put(msg, tree.clone());
        Ok(tree)
    }

    /// Trees built so far (for the mount's statistics).
    pub fn part_trees_built(&self) -> u64 {
        self.parts.built.load(Ordering::Relaxed)
    }

    /// The exact size of a file entry. May fetch: a text part not fetched with the tree, or
    /// a base64 / quoted-printable part of a server without BINARY.
    pub fn part_size(&self, msg: MessageRef, tree: &PartTree, index: u16) -> Result<u64> {
        match &tree.node(index)?.kind {
            PartKind::Dir { .. } => Ok(0),
            PartKind::Header { bytes } => Ok(bytes.get().map_or(0, |b| b.len() as u64)),
            PartKind::Text { .. } => Ok(self.text(msg, tree, index)?.len() as u64),
            PartKind::Leaf(l) => {
                if let Some(&n) = l.size.get() {
                    return Ok(n);
                }
                if !tree.binary && !identity(&l.encoding) {
                    return Ok(self.decode_locally(msg, tree, index, l)?.len() as u64);
                }
                // Identity encoding without BINARY: the encoded size is the size.
                Ok(*l.size.get_or_init(|| l.encoded_size))
            }
        }
    }

    /// Up to `len` bytes of a file entry at `offset`; shorter only at its end.
    pub fn read_part(
        &self,
        msg: MessageRef,
        tree: &PartTree,
        index: u16,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let slice = |b: &[u8]| {
            let start = (offset.min(b.len() as u64)) as usize;
            let end = (offset.saturating_add(len).min(b.len() as u64)) as usize;
            b[start..end].to_vec()
        };
        match &tree.node(index)?.kind {
            PartKind::Dir { .. } => Err(Error::InvalidInput("a directory".into())),
            PartKind::Header { bytes } => Ok(bytes.get().map(|b| slice(b)).unwrap_or_default()),
            PartKind::Text { .. } => Ok(slice(&self.text(msg, tree, index)?)),
            PartKind::Leaf(l) => {
                if !tree.binary && !identity(&l.encoding) {
                    if let Some(data) = self.cached_range(msg, index, l, offset, len) {
                        return Ok(data);
                    }
                    return Ok(slice(&self.decode_locally(msg, tree, index, l)?));
                }
                self.read_leaf_blocks(msg, tree, index, l, offset, len)
            }
        }
    }

    /// Blocks of a leaf the server decodes (BINARY) or that needs no decoding.
    fn read_leaf_blocks(
        &self,
        msg: MessageRef,
        tree: &PartTree,
        index: u16,
        leaf: &Leaf,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let size = self.part_size(msg, tree, index)?;
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let bs = self.opts.block_size.max(1);
        let (first, last) = (offset / bs, (end - 1) / bs);
        let key = |block| PartBlock {
            msg,
            node: index,
            block,
        };
        let mut have: Vec<Option<Arc<[u8]>>> = (first..=last)
            .map(|b| self.parts.blocks.get(&key(b)))
            .collect();
        let missing: Vec<u64> = (first..=last)
            .zip(&have)
            .filter(|(_, h)| h.is_none())
            .map(|(b, _)| b)
            .collect();
        if !missing.is_empty() {
            let last_block = size.saturating_sub(1) / bs;
            let ahead = (last + 1..=(last + PART_READAHEAD).min(last_block))
                .filter(|b| self.parts.blocks.get(&key(*b)).is_none());
            let wanted: Vec<u64> = missing.iter().copied().chain(ahead).collect();
            for (b, data) in self.fetch_leaf_blocks(msg, tree, leaf, &wanted)? {
                if let Some(slot) = b.checked_sub(first).and_then(|i| have.get_mut(i as usize)) {
                    *slot = Some(data.clone());
                }
                self.parts.blocks.insert(key(b), data);
            }
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, block) in have.iter().enumerate() {
            let start = (first + i as u64) * bs;
            let data = block.as_ref().ok_or_else(|| {
                Error::Protocol(format!(
                    "no data for block {} of part {} of UID {}",
                    first + i as u64,
                    leaf.section,
                    msg.uid
                ))
            })?;
            let from = offset.max(start) - start;
            let to = (end - start).min(data.len() as u64);
            if from < to {
                out.extend_from_slice(&data[from as usize..to as usize]);
            }
            if (data.len() as u64) < bs {
                break;
            }
        }
        Ok(out)
    }

    /// A range of a leaf of known size from cached blocks alone (`None` if one is missing).
    fn cached_range(
        &self,
        msg: MessageRef,
        index: u16,
        leaf: &Leaf,
        offset: u64,
        len: u64,
    ) -> Option<Vec<u8>> {
        let size = *leaf.size.get()?;
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Some(Vec::new());
        }
        let bs = self.opts.block_size.max(1);
        let mut out = Vec::with_capacity((end - offset) as usize);
        for b in offset / bs..=(end - 1) / bs {
            let data = self.parts.blocks.get(&PartBlock {
                msg,
                node: index,
                block: b,
            })?;
            let start = b * bs;
            let from = (offset.max(start) - start) as usize;
            let to = ((end - start) as usize).min(data.len());
            out.extend_from_slice(data.get(from..to)?);
        }
        Some(out)
    }

    /// Fetch blocks of a leaf in one pipeline; the first must come back.
    fn fetch_leaf_blocks(
        &self,
        msg: MessageRef,
        tree: &PartTree,
        leaf: &Leaf,
        blocks: &[u64],
    ) -> Result<Vec<(u64, Arc<[u8]>)>> {
        let name = self.require_name(msg.mailbox)?;
        let bs = self.opts.block_size.max(1);
        let chunk = u32::try_from(bs).unwrap_or(u32::MAX);
        let cmds: Vec<Command> = blocks
            .iter()
            .map(|b| {
                let partial = Some((b * bs, chunk));
                let section = leaf.section.clone();
                Command::Fetch {
                    uid: true,
                    set: SequenceSet::single(msg.uid.get()),
                    attrs: vec![
                        FetchAttr::Uid,
                        if tree.binary {
                            FetchAttr::BinaryPeek { section, partial }
                        } else {
                            FetchAttr::BodyPeek { section, partial }
                        },
                    ],
                    changed_since: None,
                }
            })
            .collect();
        let out = self
            .pool
            .with_session(Some(&name), Retry::Idempotent, |s| {
                check_validity(s, &name, msg.validity)?;
                let mut out = Vec::new();
                for (i, r) in s.pipeline(&cmds)?.into_iter().enumerate() {
                    let done = match r {
                        Ok(done) => done,
                        Err(e) if i == 0 => return Err(e),
                        Err(e) => {
                            log::debug!("part readahead failed: {e}");
                            continue;
                        }
                    };
                    for (section, origin, data) in sections_of(done.untagged, msg) {
                        if section != leaf.section {
                            continue;
                        }
                        let origin = origin.unwrap_or(0);
                        if origin % bs != 0 || data.len() as u64 > bs {
                            return Err(Error::Protocol(format!(
                                "part {section} answered at {origin} with {} bytes",
                                data.len()
                            )));
                        }
                        out.push((origin / bs, Arc::from(data)));
                    }
                }
                Ok(out)
            })?;
        if !out.iter().any(|(b, _)| *b == blocks[0]) {
            return Err(Error::Protocol(format!(
                "no data for part {} of UID {}",
                leaf.section, msg.uid
            )));
        }
        Ok(out)
    }

    /// A base64 or quoted-printable leaf of a server without BINARY: fetched whole and
    /// decoded here; its decoded blocks are cached like the server-decoded ones.
    fn decode_locally(
        &self,
        msg: MessageRef,
        tree: &PartTree,
        index: u16,
        leaf: &Leaf,
    ) -> Result<Arc<[u8]>> {
        let bs = self.opts.block_size.max(1);
        let key = |block| PartBlock {
            msg,
            node: index,
            block,
        };
        if let Some(&size) = leaf.size.get() {
            // Whole from the cache, if every block is still there.
            let blocks: Option<Vec<Arc<[u8]>>> = (0..size.div_ceil(bs).max(1))
                .map(|b| self.parts.blocks.get(&key(b)))
                .collect();
            if let Some(blocks) = blocks {
                return Ok(Arc::from(blocks.concat()));
            }
        }
        let mut encoded = Vec::new();
        let mut next = 0;
        loop {
            // The encoded size is the server's claim: fetch what it announces, then go on
            // while blocks come back full.
            let upto = (leaf.encoded_size / bs).max(next);
            let wanted: Vec<u64> = (next..=upto).collect();
            let mut got = self.fetch_leaf_blocks(msg, tree, leaf, &wanted)?;
            got.sort_by_key(|(b, _)| *b);
            let mut full = true;
            for (i, (b, data)) in got.iter().enumerate() {
                if *b != next + i as u64 {
                    return Err(Error::Protocol(format!(
                        "part {} of UID {} came back with a gap",
                        leaf.section, msg.uid
                    )));
                }
                encoded.extend_from_slice(data);
                full = data.len() as u64 == bs;
            }
            next += got.len() as u64;
            if !full || got.len() < wanted.len() {
                break;
            }
        }
        let decoded: Arc<[u8]> = Arc::from(decode(&leaf.encoding, &encoded));
        let _ = leaf.size.set(decoded.len() as u64);
        for (b, chunk) in decoded.chunks(bs as usize).enumerate() {
            self.parts.blocks.insert(key(b as u64), Arc::from(chunk));
        }
        Ok(decoded)
    }

    /// The `text` entry's content: the source part, in UTF-8, HTML made plain.
    fn text(&self, msg: MessageRef, tree: &PartTree, index: u16) -> Result<Arc<[u8]>> {
        let PartKind::Text {
            source,
            html,
            content,
        } = &tree.node(index)?.kind
        else {
            return Err(Error::InvalidInput("not a text entry".into()));
        };
        if let Some(c) = content.get() {
            return Ok(c.clone());
        }
        let PartKind::Leaf(leaf) = &tree.node(*source)?.kind else {
            return Err(Error::Protocol("text source is not a leaf".into()));
        };
        let raw = match leaf.prefetched.get() {
            Some(raw) => raw.clone(),
            None => {
                let size = self.part_size(msg, tree, *source)?;
                Arc::from(self.read_part(msg, tree, *source, 0, size)?)
            }
        };
        let mut text = to_utf8(&raw, leaf.charset.as_deref());
        if *html {
            text = mail_parser::decoders::html::html_to_text(&text);
        }
        let text: Arc<[u8]> = Arc::from(text.into_bytes());
        if text.len() <= TEXT_KEPT {
            let _ = content.set(text.clone());
        }
        Ok(text)
    }
}

/// The two FETCHes that build a tree; `None` if the server has no such message.
fn load_tree(s: &mut Session, msg: MessageRef) -> Result<Option<PartTree>> {
    let first = Command::Fetch {
        uid: true,
        set: SequenceSet::single(msg.uid.get()),
        attrs: vec![
            FetchAttr::Uid,
            FetchAttr::BodyStructure,
            FetchAttr::BodyPeek {
                section: "HEADER".into(),
                partial: None,
            },
        ],
        changed_since: None,
    };
    let mut found = structure_of(s.run(first.clone())?.untagged, msg);
    if found.is_none() {
        // Not proof of absence before the session has synced (see store::read).
        s.run(Command::Noop)?;
        found = structure_of(s.run(first)?.untagged, msg);
    }
    let Some((structure, header)) = found else {
        return Ok(None);
    };
    let binary = s.has_capability("BINARY");
    let mut tree = build_tree(&structure, header, binary);
    let attrs = second_fetch(&tree);
    if attrs.is_empty() {
        return Ok(Some(tree));
    }
    let second = |attrs: Vec<FetchAttr>| Command::Fetch {
        uid: true,
        set: SequenceSet::single(msg.uid.get()),
        attrs,
        changed_since: None,
    };
    let done = match s.run(second(attrs)) {
        // A part the server cannot decode (`[UNKNOWN-CTE]`): decode every part here.
        Err(Error::No { text, .. }) if tree.binary => {
            log::info!(
                "UID {}: BINARY refused ({}), decoding here",
                msg.uid,
                text.text
            );
            tree.binary = false;
            s.run(second(second_fetch(&tree)))?
        }
        other => other?,
    };
    let mut binary_sizes = HashMap::new();
    let mut sections = HashMap::new();
    for u in done.untagged {
        let Untagged::Fetch { items, .. } = u else {
            continue;
        };
        if !items.contains(&FetchItem::Uid(msg.uid)) {
            continue;
        }
        for item in items {
            match item {
                FetchItem::BinarySize { section, size } => {
                    binary_sizes.insert(section, size);
                }
                FetchItem::Body {
                    section,
                    data: Some(d),
                    ..
                } => {
                    sections.insert(section, d);
                }
                _ => {}
            }
        }
    }
    fill_tree(&tree, &binary_sizes, &mut sections)?;
    Ok(Some(tree))
}

/// BODYSTRUCTURE and BODY[HEADER] from a FETCH answer about `msg`.
fn structure_of(untagged: Vec<Untagged>, msg: MessageRef) -> Option<(BodyStructure, Vec<u8>)> {
    untagged.into_iter().find_map(|u| {
        let Untagged::Fetch { items, .. } = u else {
            return None;
        };
        if !items.contains(&FetchItem::Uid(msg.uid)) {
            return None;
        }
        let mut structure = None;
        let mut header = None;
        for item in items {
            match item {
                FetchItem::BodyStructure(b) => structure = Some(*b),
                FetchItem::Body {
                    section,
                    data: Some(d),
                    ..
                } if section.eq_ignore_ascii_case("HEADER") => header = Some(d),
                _ => {}
            }
        }
        Some((structure?, header.unwrap_or_default()))
    })
}

/// (section, origin, data) of every body item of a FETCH answer about `msg`.
fn sections_of(untagged: Vec<Untagged>, msg: MessageRef) -> Vec<(String, Option<u64>, Vec<u8>)> {
    let mut out = Vec::new();
    for u in untagged {
        let Untagged::Fetch { items, .. } = u else {
            continue;
        };
        if !items.contains(&FetchItem::Uid(msg.uid)) {
            continue;
        }
        for item in items {
            if let FetchItem::Body {
                section,
                origin,
                data: Some(d),
            } = item
            {
                out.push((section, origin, d));
            }
        }
    }
    out
}

/// What the second FETCH asks for: decoded sizes, attached messages' headers, the text.
fn second_fetch(tree: &PartTree) -> Vec<FetchAttr> {
    let mut attrs = Vec::new();
    for node in &tree.nodes {
        match &node.kind {
            PartKind::Leaf(l) if tree.binary => {
                attrs.push(FetchAttr::BinarySize(l.section.clone()));
            }
            PartKind::Header { bytes } if bytes.get().is_none() => {
                if let PartKind::Dir { section, .. } = &tree.nodes[usize::from(node.parent)].kind {
                    attrs.push(FetchAttr::BodyPeek {
                        section: format!("{section}.HEADER"),
                        partial: None,
                    });
                }
            }
            PartKind::Text { source, .. } => {
                if let PartKind::Leaf(l) = &tree.nodes[usize::from(*source)].kind {
                    if l.encoded_size <= TEXT_PREFETCH && (tree.binary || identity(&l.encoding)) {
                        let section = l.section.clone();
                        attrs.push(if tree.binary {
                            FetchAttr::BinaryPeek {
                                section,
                                partial: None,
                            }
                        } else {
                            FetchAttr::BodyPeek {
                                section,
                                partial: None,
                            }
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if !attrs.is_empty() {
        attrs.insert(0, FetchAttr::Uid);
    }
    attrs
}

/// Put the second FETCH's answers into the tree.
fn fill_tree(
    tree: &PartTree,
    binary_sizes: &HashMap<String, u64>,
    sections: &mut HashMap<String, Vec<u8>>,
) -> Result<()> {
    for node in &tree.nodes {
        match &node.kind {
            PartKind::Leaf(l) => {
                if tree.binary {
                    let size = binary_sizes.get(&l.section).ok_or_else(|| {
                        Error::Protocol(format!("no BINARY.SIZE for part {}", l.section))
                    })?;
                    let _ = l.size.set(*size);
                }
                if let Some(d) = sections.remove(&l.section) {
                    if l.size.get().is_none_or(|s| *s == d.len() as u64) {
                        let _ = l.prefetched.set(Arc::from(d));
                    }
                }
            }
            PartKind::Header { bytes } if bytes.get().is_none() => {
                if let PartKind::Dir { section, .. } = &tree.nodes[usize::from(node.parent)].kind {
                    let d = sections
                        .remove(&format!("{section}.HEADER"))
                        .unwrap_or_default();
                    let _ = bytes.set(Arc::from(d));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The tree of a BODYSTRUCTURE (sizes and nested headers still to fill in).
fn build_tree(structure: &BodyStructure, header: Vec<u8>, binary: bool) -> PartTree {
    let mut b = Builder { nodes: Vec::new() };
    b.nodes.push(PartNode {
        parent: 0,
        name: String::new(),
        kind: PartKind::Dir {
            section: String::new(),
            children: Vec::new(),
        },
    });
    b.message(0, "", structure, Some(header));
    PartTree {
        nodes: b.nodes,
        binary,
    }
}

struct Builder {
    nodes: Vec<PartNode>,
}

impl Builder {
    /// Add a node under `dir`; `None` when the tree is full.
    fn add(&mut self, dir: u16, name: String, kind: PartKind) -> Option<u16> {
        if self.nodes.len() >= MAX_PART_NODES {
            log::warn!("a message with more than {MAX_PART_NODES} parts: the rest are not shown");
            return None;
        }
        let index = self.nodes.len() as u16;
        self.nodes.push(PartNode {
            parent: dir,
            name,
            kind,
        });
        if let PartKind::Dir { children, .. } = &mut self.nodes[usize::from(dir)].kind {
            children.push(index);
        }
        Some(index)
    }

    /// The entries of a message (top level or attached) into directory `dir`.
    fn message(&mut self, dir: u16, prefix: &str, body: &BodyStructure, header: Option<Vec<u8>>) {
        let bytes = OnceLock::new();
        if let Some(h) = header {
            let _ = bytes.set(Arc::from(h));
        }
        if self
            .add(dir, "header".into(), PartKind::Header { bytes })
            .is_none()
        {
            return;
        }
        let first_leaf = self.nodes.len();
        match body {
            BodyStructure::Multi { parts, .. } => {
                for (i, p) in parts.iter().enumerate() {
                    self.part(dir, &section(prefix, i + 1), p);
                }
            }
            single => self.part(dir, &section(prefix, 1), single),
        }
        // The text: chosen among this message's own leaves (attached messages are
        // directories, their leaves belong to them).
        let own = |n: &PartNode| n.parent == dir;
        let pick = |subtype: &str, nodes: &[PartNode]| {
            nodes
                .iter()
                .enumerate()
                .skip(first_leaf)
                .find_map(|(i, n)| match &n.kind {
                    PartKind::Leaf(l)
                        if own(n) && l.mime_type == format!("text/{subtype}") && !l.attachment =>
                    {
                        Some(i as u16)
                    }
                    _ => None,
                })
        };
        let chosen = pick("plain", &self.nodes)
            .map(|i| (i, false))
            .or_else(|| pick("html", &self.nodes).map(|i| (i, true)));
        if let Some((source, html)) = chosen {
            if let Some(text) = self.add(
                dir,
                "text".into(),
                PartKind::Text {
                    source,
                    html,
                    content: OnceLock::new(),
                },
            ) {
                // Listed right after `header`.
                if let PartKind::Dir { children, .. } = &mut self.nodes[usize::from(dir)].kind {
                    children.pop();
                    children.insert(1, text);
                }
            }
        }
    }

    fn part(&mut self, dir: u16, sec: &str, p: &BodyStructure) {
        match p {
            BodyStructure::Multi { parts, .. } => {
                for (i, sub) in parts.iter().enumerate() {
                    self.part(dir, &section(sec, i + 1), sub);
                }
            }
            BodyStructure::Single {
                media_type,
                message: Some((_, inner)),
                ..
            } if media_type.eq_ignore_ascii_case("message") => {
                let kind = PartKind::Dir {
                    section: sec.to_string(),
                    children: Vec::new(),
                };
                if let Some(sub) = self.add(dir, sec.to_string(), kind) {
                    self.message(sub, sec, inner, None);
                }
            }
            BodyStructure::Single {
                media_type,
                subtype,
                params,
                encoding,
                size,
                ext,
                ..
            } => {
                let mime_type = format!("{}/{}", media_type, subtype).to_ascii_lowercase();
                let param = |list: &[(String, String)], key: &str| {
                    list.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(key))
                        .map(|(_, v)| v.clone())
                };
                let disposition = ext.disposition.as_ref();
                let filename = disposition
                    .and_then(|(_, dp)| decoded_param(dp, "filename"))
                    .or_else(|| decoded_param(params, "name"));
                let name = match filename.as_deref().and_then(sanitize_filename) {
                    Some(f) => format!("{sec}-{f}"),
                    None => format!("{sec}.{}", extension(&mime_type)),
                };
                let leaf = Leaf {
                    section: sec.to_string(),
                    charset: param(params, "charset").map(|c| c.to_ascii_lowercase()),
                    filename,
                    encoding: encoding.to_ascii_lowercase(),
                    attachment: disposition
                        .is_some_and(|(kind, _)| kind.eq_ignore_ascii_case("attachment")),
                    encoded_size: *size,
                    size: OnceLock::new(),
                    prefetched: OnceLock::new(),
                    mime_type,
                };
                self.add(dir, name, PartKind::Leaf(leaf));
            }
        }
    }
}

fn section(prefix: &str, n: usize) -> String {
    if prefix.is_empty() {
        n.to_string()
    } else {
        format!("{prefix}.{n}")
    }
}

/// Whether a Content-Transfer-Encoding leaves the bytes as they are.
fn identity(encoding: &str) -> bool {
    matches!(encoding, "7bit" | "8bit" | "binary" | "")
}

/// Undo a Content-Transfer-Encoding; undecodable input is kept as it is (logged).
fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let decoded = match encoding {
        "base64" => mail_parser::decoders::base64::base64_decode(data),
        "quoted-printable" => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(data)
        }
        _ => return data.to_vec(),
    };
    decoded.unwrap_or_else(|| {
        log::warn!("a {encoding} part does not decode: shown as it is");
        data.to_vec()
    })
}

/// Text in `charset` as UTF-8 (mail-parser's decoders; unknown charsets read as UTF-8 with
/// replacement characters).
fn to_utf8(raw: &[u8], charset: Option<&str>) -> String {
    let utf8 = charset.is_none_or(|c| {
        c.eq_ignore_ascii_case("utf-8")
            || c.eq_ignore_ascii_case("utf8")
            || c.eq_ignore_ascii_case("us-ascii")
    });
    if !utf8 {
        if let Some(decoder) = charset
            .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()))
        {
            return decoder(raw);
        }
    }
    String::from_utf8_lossy(raw).into_owned()
}

/// A parameter (`filename`, `name`) decoded the way mail-parser decodes a header: RFC 2231
/// (`filename*`, continuations `filename*0*`, charsets) and RFC 2047 words. The parameters
/// are written back into a header line for it, every value quoted.
fn decoded_param(params: &[(String, String)], key: &str) -> Option<String> {
    use mail_parser::MimeHeaders;
    let wanted = params.iter().any(|(k, _)| {
        let k = k.to_ascii_lowercase();
        k == key
            || k.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('*'))
    });
    if !wanted {
        return None;
    }
    let mut line = String::from("Content-Disposition: x");
    for (k, v) in params {
        let k: String = k
            .chars()
            .filter(|c| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(*c) || *c == '*')
            .collect();
        if k.is_empty() {
            continue;
        }
        let v: String = v
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        line.push_str(&format!(";\r\n {k}=\"{v}\""));
    }
    line.push_str("\r\n\r\n");
    let parsed = mail_parser::MessageParser::default().parse_headers(line.as_bytes())?;
    let value = parsed.content_disposition()?.attribute(key)?.to_string();
    Some(value)
}

/// A decoded filename as a safe name: control characters (NUL among them) removed, `/`
/// replaced by `_`, surrounding white space and leading dots removed, cut at
/// [`MAX_NAME_BYTES`] keeping an extension of up to 16 bytes. `None` if nothing is left.
pub fn sanitize_filename(name: &str) -> Option<String> {
    let s: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    let s = s.trim().trim_start_matches('.').trim();
    if s.is_empty() {
        return None;
    }
    if s.len() <= MAX_NAME_BYTES {
        return Some(s.to_string());
    }
    let ext = s
        .rfind('.')
        .map(|i| &s[i..])
        .filter(|e| e.len() <= 16)
        .unwrap_or("");
    let mut stem_end = MAX_NAME_BYTES - ext.len();
    while !s.is_char_boundary(stem_end) {
        stem_end -= 1;
    }
    Some(format!("{}{ext}", &s[..stem_end]))
}

/// A file name extension for a MIME type without a filename.
pub fn extension(mime_type: &str) -> &'static str {
    match mime_type {
        "text/plain" => "txt",
        "text/html" => "html",
        "text/calendar" => "ics",
        "text/csv" => "csv",
        "text/vcard" | "text/x-vcard" => "vcf",
        "text/xml" | "application/xml" => "xml",
        "text/markdown" => "md",
        "text/rfc822-headers" => "txt",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/svg+xml" => "svg",
        "image/tiff" => "tif",
        "image/bmp" => "bmp",
        "audio/mpeg" => "mp3",
        "audio/ogg" => "ogg",
        "audio/wav" | "audio/x-wav" => "wav",
        "video/mp4" => "mp4",
        "video/mpeg" => "mpg",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "application/gzip" | "application/x-gzip" => "gz",
        "application/json" => "json",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.ms-powerpoint" => "ppt",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "pptx",
        "application/vnd.oasis.opendocument.text" => "odt",
        "application/pgp-signature" => "asc",
        "application/pgp-encrypted" | "application/pgp-keys" => "asc",
        "application/pkcs7-signature" | "application/x-pkcs7-signature" => "p7s",
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => "p7m",
        "application/ics" => "ics",
        "message/rfc822" | "message/global" => "eml",
        "message/delivery-status" | "message/disposition-notification" => "txt",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::types::BodyExtension;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn filenames_decode_rfc2231_and_rfc2047() {
        assert_eq!(
            decoded_param(
                &[p("filename*", "UTF-8''%E2%82%AC%20rates.pdf")],
                "filename"
            ),
            Some("\u{20ac} rates.pdf".into())
        );
        assert_eq!(
            decoded_param(
                &[
                    p("filename*0*", "UTF-8''%E2%82%AC%20r"),
                    p("filename*1", "ates.pdf")
                ],
                "filename"
            ),
            Some("\u{20ac} rates.pdf".into())
        );
        assert_eq!(
            decoded_param(&[p("name", "=?UTF-8?B?w6TDtsO8LnBkZg==?=")], "name"),
            Some("\u{e4}\u{f6}\u{fc}.pdf".into())
        );
        assert_eq!(
            decoded_param(&[p("filename*", "iso-8859-1'en'%E4%F6.txt")], "filename"),
            Some("\u{e4}\u{f6}.txt".into())
        );
        assert_eq!(
            decoded_param(&[p("FILENAME", "a\"b\\c/d.pdf")], "filename"),
            Some("a\"b\\c/d.pdf".into())
        );
        assert_eq!(decoded_param(&[p("size", "3")], "filename"), None);
    }

    #[test]
    fn filenames_are_sanitised() {
        assert_eq!(
            sanitize_filename("../../etc/passwd").as_deref(),
            Some("_.._etc_passwd")
        );
        assert_eq!(sanitize_filename("a/b.pdf").as_deref(), Some("a_b.pdf"));
        assert_eq!(sanitize_filename(".hidden").as_deref(), Some("hidden"));
        assert_eq!(sanitize_filename("a\0b\r\n.txt").as_deref(), Some("ab.txt"));
        assert_eq!(sanitize_filename(" ... "), None);
        let long = format!("{}.pdf", "\u{e9}".repeat(300));
        let s = sanitize_filename(&long).unwrap();
        assert!(s.len() <= MAX_NAME_BYTES && s.ends_with(".pdf"), "{s}");
    }

    fn leaf(t: &str, st: &str, params: Vec<(String, String)>, dsp: Option<&str>) -> BodyStructure {
        BodyStructure::Single {
            media_type: t.into(),
            subtype: st.into(),
            params,
            id: None,
            description: None,
            encoding: "BASE64".into(),
            size: 10,
            lines: None,
            message: None,
            ext: BodyExtension {
                disposition: dsp.map(|d| (d.to_string(), Vec::new())),
                ..BodyExtension::default()
            },
        }
    }

    #[test]
    fn tree_names_sections_and_text() {
        let inner = BodyStructure::Multi {
            parts: vec![
                leaf("text", "plain", vec![], None),
                leaf("image", "png", vec![p("name", "x.png")], None),
            ],
            subtype: "mixed".into(),
            params: vec![],
            ext: BodyExtension::default(),
        };
        let message = BodyStructure::Single {
            media_type: "MESSAGE".into(),
            subtype: "RFC822".into(),
            params: vec![],
            id: None,
            description: None,
            encoding: "7BIT".into(),
            size: 100,
            lines: Some(3),
            message: Some((Box::default(), Box::new(inner))),
            ext: BodyExtension::default(),
        };
        let top = BodyStructure::Multi {
            parts: vec![
                BodyStructure::Multi {
                    parts: vec![
                        leaf(
                            "text",
                            "plain",
                            vec![p("charset", "UTF-8")],
                            Some("attachment"),
                        ),
                        leaf("text", "html", vec![], None),
                    ],
                    subtype: "alternative".into(),
                    params: vec![],
                    ext: BodyExtension::default(),
                },
                leaf("application", "pdf", vec![], Some("attachment")),
                message,
            ],
            subtype: "mixed".into(),
            params: vec![],
            ext: BodyExtension::default(),
        };
        let t = build_tree(&top, b"H: v\r\n\r\n".to_vec(), true);
        let names = |dir: u16| -> Vec<String> {
            match &t.nodes[usize::from(dir)].kind {
                PartKind::Dir { children, .. } => children
                    .iter()
                    .map(|c| t.nodes[usize::from(*c)].name.clone())
                    .collect(),
                _ => panic!("not a dir"),
            }
        };
        assert_eq!(
            names(0),
            ["header", "text", "1.1.txt", "1.2.html", "2.pdf", "3"]
        );
        // The attached text/plain is not the text: the HTML is.
        let text = t.child(0, "text").unwrap();
        assert!(matches!(
            &t.nodes[usize::from(text)].kind,
            PartKind::Text { html: true, .. }
        ));
        let sub = t.child(0, "3").unwrap();
        assert_eq!(names(sub), ["header", "text", "3.1.txt", "3.2-x.png"]);
        assert_eq!(
            t.info(t.child(sub, "3.2-x.png").unwrap())
                .unwrap()
                .mime_type,
            "image/png"
        );
        // Attached messages' headers are asked for in the second FETCH.
        let attrs = second_fetch(&t);
        assert!(attrs.contains(&FetchAttr::BodyPeek {
            section: "3.HEADER".into(),
            partial: None
        }));
        assert!(attrs.contains(&FetchAttr::BinarySize("3.2".into())));
    }

    #[test]
    fn local_decoding() {
        assert_eq!(decode("base64", b"SGVs\r\nbG8=\r\n"), b"Hello");
        assert_eq!(
            decode("quoted-printable", b"Gr=FC=\r\n=DFe\r\n"),
            b"Gr\xfc\xdfe\r\n"
        );
        assert_eq!(decode("7bit", b"as is"), b"as is");
        assert_eq!(
            to_utf8(b"Gr\xfc\xdfe", Some("iso-8859-1")),
            "Gr\u{fc}\u{df}e"
        );
    }
}
