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
//! (an eighth of `cache_size`, taken from the message blocks' share:
//! [`crate::store::cache_shares`]).
//!
//! Files: `listing` (the two FETCHes that learn a tree), `tree` (BODYSTRUCTURE -> nodes and
//! names), `names` (sections, filenames, extensions, transfer decoding, charsets); this file
//! holds the tree types, the cache and the reading of parts.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use lru::LruCache;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::Retry;
use crate::imap::session::{Access, Session};
use crate::imap::types::{BodyStructure, FetchItem, SequenceSet, Untagged};
use crate::store::blocks::BlockCache;
use crate::store::ids::MessageRef;
use crate::store::Account;

mod listing;
mod names;
mod tree;

use listing::{load_tree, sections_of};
use names::{decode, identity, is_utf8_charset, to_utf8};
pub use names::{extension, sanitize_filename};

/// Most nodes in one message's tree, its directory included (the inode numbering of the
/// views has 11 bits for them); parts beyond are left out, with a warning.
pub const MAX_PART_NODES: usize = 0x800;

/// Longest file name made for a part, in bytes (Linux allows 255).
pub const MAX_NAME_BYTES: usize = 200;

/// A text part up to this size (encoded) is fetched with the tree.
const TEXT_PREFETCH: u64 = 64 << 10;

/// The `text` of a message is kept with its tree up to this size; a longer one is read from
/// its source or kept in the part block cache (see [`TextForm`]), so that the [`TREES`] kept
/// hold a few MiB at most, not 256 texts of any size (issue 17).
const TEXT_KEPT: usize = 16 << 10;

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
            trees: Mutex::new(LruCache::new(
                NonZeroUsize::new(TREES).unwrap_or(NonZeroUsize::MIN),
            )),
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
        made: OnceLock<TextForm>,
    },
    Leaf(Leaf),
}

/// Where a `text` entry's bytes are, once its length is known. A text is never held whole
/// beyond [`TEXT_KEPT`]: a big one is read from its source or from the part block cache, so
/// its memory is that cache's bound (issue 17).
#[derive(Debug, Clone)]
pub enum TextForm {
    /// Made (charset converted, HTML made plain), up to [`TEXT_KEPT`] bytes: kept here.
    Kept(Arc<[u8]>),
    /// The source's own bytes, already UTF-8 and not HTML: read from the source part.
    Source(u64),
    /// Made and longer, of this length: its blocks are in the part block cache under the
    /// text entry's index, made again if evicted.
    Cached(u64),
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
            s.select_at(&name, msg.validity, Access::Read)?;
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
            PartKind::Text { .. } => Ok(match self.text_form(msg, tree, index)? {
                TextForm::Kept(b) => b.len() as u64,
                TextForm::Source(len) | TextForm::Cached(len) => len,
            }),
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
            PartKind::Text { source, .. } => match self.text_form(msg, tree, index)? {
                TextForm::Kept(b) => Ok(slice(&b)),
                TextForm::Source(_) => self.read_part(msg, tree, *source, offset, len),
                TextForm::Cached(size) => match self.cached_blocks(msg, index, size, offset, len) {
                    Some(data) => Ok(data),
                    None => Ok(slice(&self.make_text(msg, tree, index)?.0)),
                },
            },
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
            let data = block.as_ref().ok_or_else(|| Error::BadReply {
                command: "FETCH",
                what: format!(
                    "no data for block {} of part {} of UID {}",
                    first + i as u64,
                    leaf.section,
                    msg.uid
                ),
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
        self.cached_blocks(msg, index, *leaf.size.get()?, offset, len)
    }

    /// A range of entry `index`, `size` bytes long, from cached blocks alone (`None` if one
    /// is missing).
    fn cached_blocks(
        &self,
        msg: MessageRef,
        index: u16,
        size: u64,
        offset: u64,
        len: u64,
    ) -> Option<Vec<u8>> {
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
                s.select_at(&name, msg.validity, Access::Read)?;
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
                            return Err(Error::BadReply {
                                command: "FETCH",
                                what: format!(
                                    "part {section} answered at {origin} with {} bytes",
                                    data.len()
                                ),
                            });
                        }
                        out.push((origin / bs, Arc::from(data)));
                    }
                }
                Ok(out)
            })?;
        if !out.iter().any(|(b, _)| *b == blocks[0]) {
            return Err(Error::BadReply {
                command: "FETCH",
                what: format!("no data for part {} of UID {}", leaf.section, msg.uid),
            });
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
                    return Err(Error::BadReply {
                        command: "FETCH",
                        what: format!(
                            "part {} of UID {} came back with a gap",
                            leaf.section, msg.uid
                        ),
                    });
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

    /// Where the `text` entry's bytes are, learning it the first time: a source that is
    /// UTF-8 already (and not HTML) is checked block by block and then read as it is; any
    /// other is made once (see [`Account::make_text`]).
    fn text_form(&self, msg: MessageRef, tree: &PartTree, index: u16) -> Result<TextForm> {
        let PartKind::Text { source, html, made } = &tree.node(index)?.kind else {
            return Err(Error::InvalidInput("not a text entry".into()));
        };
        if let Some(form) = made.get() {
            return Ok(form.clone());
        }
        let PartKind::Leaf(leaf) = &tree.node(*source)?.kind else {
            return Err(Error::Internal("a text entry whose source is not a leaf"));
        };
        if !*html && leaf.prefetched.get().is_none() && is_utf8_charset(leaf.charset.as_deref()) {
            let size = self.part_size(msg, tree, *source)?;
            if size > TEXT_KEPT as u64 && self.source_is_utf8(msg, tree, *source, size)? {
                return Ok(made.get_or_init(|| TextForm::Source(size)).clone());
            }
        }
        Ok(self.make_text(msg, tree, index)?.1)
    }

    /// Whether leaf `source` (`size` bytes) is valid UTF-8, read block by block through the
    /// part block cache (never whole).
    fn source_is_utf8(
        &self,
        msg: MessageRef,
        tree: &PartTree,
        source: u16,
        size: u64,
    ) -> Result<bool> {
        let bs = self.opts.block_size.max(1);
        // A character cut by a block boundary: its first bytes wait for the next block.
        let mut carry: Vec<u8> = Vec::new();
        let mut offset = 0;
        while offset < size {
            let block = self.read_part(msg, tree, source, offset, bs)?;
            if block.is_empty() {
                break;
            }
            offset += block.len() as u64;
            carry.extend_from_slice(&block);
            match std::str::from_utf8(&carry) {
                Ok(_) => carry.clear(),
                Err(e) if e.error_len().is_none() => {
                    carry.drain(..e.valid_up_to());
                }
                Err(_) => return Ok(false),
            }
        }
        Ok(carry.is_empty())
    }

    /// Make the `text` entry's content from its source (charset to UTF-8, HTML made plain):
    /// the bytes, and where they are kept from now on: with the tree up to [`TEXT_KEPT`],
    /// else in the part block cache.
    fn make_text(
        &self,
        msg: MessageRef,
        tree: &PartTree,
        index: u16,
    ) -> Result<(Arc<[u8]>, TextForm)> {
        let PartKind::Text { source, html, made } = &tree.node(index)?.kind else {
            return Err(Error::InvalidInput("not a text entry".into()));
        };
        let PartKind::Leaf(leaf) = &tree.node(*source)?.kind else {
            return Err(Error::Internal("a text entry whose source is not a leaf"));
        };
        let raw = match leaf.prefetched.get() {
            Some(raw) => raw.to_vec(),
            None => {
                let size = self.part_size(msg, tree, *source)?;
                self.read_part(msg, tree, *source, 0, size)?
            }
        };
        let mut text = to_utf8(raw, leaf.charset.as_deref());
        if *html {
            text = mail_parser::decoders::html::html_to_text(&text);
        }
        let text: Arc<[u8]> = Arc::from(text.into_bytes());
        let form = if text.len() <= TEXT_KEPT {
            TextForm::Kept(text.clone())
        } else {
            let bs = self.opts.block_size.max(1) as usize;
            for (b, chunk) in text.chunks(bs).enumerate() {
                let key = PartBlock {
                    msg,
                    node: index,
                    block: b as u64,
                };
                self.parts.blocks.insert(key, Arc::from(chunk));
            }
            TextForm::Cached(text.len() as u64)
        };
        Ok((text, made.get_or_init(|| form).clone()))
    }
}
