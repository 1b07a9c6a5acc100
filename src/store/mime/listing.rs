//! Learning a message's part tree from the server: BODYSTRUCTURE and the header first, then
//! one FETCH with what the tree needs to know every size exactly.

use crate::imap::session::Capability;

use super::tree::build_tree;
use super::*;

/// The two FETCHes that build a tree; `None` if the server has no such message.
pub(super) fn load_tree(s: &mut Session, msg: MessageRef) -> Result<Option<PartTree>> {
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
    let binary = s.supports(Capability::Binary);
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

/// BODYSTRUCTURE and `BODY[HEADER]` from a FETCH answer about `msg`.
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
pub(super) fn sections_of(
    untagged: Vec<Untagged>,
    msg: MessageRef,
) -> Vec<(String, Option<u64>, Vec<u8>)> {
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
pub(super) fn second_fetch(tree: &PartTree) -> Vec<FetchAttr> {
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
                    let size = binary_sizes
                        .get(&l.section)
                        .ok_or_else(|| Error::BadReply {
                            command: "FETCH",
                            what: format!("no BINARY.SIZE for part {}", l.section),
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
