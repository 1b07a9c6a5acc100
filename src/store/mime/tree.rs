//! Building a message's part tree from its BODYSTRUCTURE: sections, names, kinds.

use super::names::{decoded_param, extension, sanitize_filename, section};
use super::*;

/// The tree of a BODYSTRUCTURE (sizes and nested headers still to fill in).
pub(super) fn build_tree(structure: &BodyStructure, header: Vec<u8>, binary: bool) -> PartTree {
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
                    made: OnceLock::new(),
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

#[cfg(test)]
mod tests {
    use super::super::listing::second_fetch;
    use super::*;
    use crate::imap::types::BodyExtension;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
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
}
