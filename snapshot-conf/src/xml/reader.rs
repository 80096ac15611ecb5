//! Safe loading of untrusted XML and the small helpers every parser here uses.
//!
//! [`load`] bounds the input before and during parsing (size, node count,
//! nesting depth), refuses DTDs (so no entity can expand), and maps
//! roxmltree's errors to [`ConfError`] with a position. [`Cx`] carries the
//! document (for `line:column`) and the VALIDATE switch: with it, anything
//! the schema does not allow is an error; without it, unknown elements and
//! attributes are ignored as libvirt ignores them.

use roxmltree::{Document, Node, ParsingOptions};

use crate::error::{ConfError, Pos, Result};
use crate::limits::{MAX_ATTRIBUTES, MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_NODES};

/// Parses `text` into a roxmltree document within the crate's limits.
pub(crate) fn load(text: &str) -> Result<Document<'_>> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(ConfError::TooLarge {
            size: text.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    check_attribute_counts(text)?;
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::DtdDetected => ConfError::Dtd,
        roxmltree::Error::NodesLimitReached => ConfError::TooManyNodes { limit: MAX_NODES },
        other => {
            let p = other.pos();
            ConfError::Syntax {
                message: strip_position(&other.to_string()),
                pos: Some(Pos {
                    line: p.row,
                    column: p.col,
                }),
            }
        }
    })?;
    check_depth(&doc)?;
    Ok(doc)
}

/// Refuses an element with more than [`MAX_ATTRIBUTES`] attributes before
/// the XML parser sees it (its duplicate check is quadratic per element).
/// One pass over the bytes: every `=` outside quotes inside a start tag is
/// an attribute; comments, CDATA, processing instructions and declarations
/// are skipped whole.
fn check_attribute_counts(text: &str) -> Result<()> {
    let b = text.as_bytes();
    let skip_to = |from: usize, end: &[u8]| -> usize {
        b[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(b.len(), |i| from + i + end.len())
    };
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'<') {
        let start = i + off;
        let rest = &b[start..];
        i = if rest.starts_with(b"<!--") {
            skip_to(start + 4, b"-->")
        } else if rest.starts_with(b"<![CDATA[") {
            skip_to(start + 9, b"]]>")
        } else if rest.starts_with(b"<?") {
            skip_to(start + 2, b"?>")
        } else if rest.starts_with(b"<!") || rest.starts_with(b"</") {
            skip_to(start + 2, b">")
        } else {
            let mut j = start + 1;
            let mut quote = None;
            let mut count = 0usize;
            while j < b.len() {
                match (quote, b[j]) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, c @ (b'"' | b'\'')) => quote = Some(c),
                    (None, b'=') => count += 1,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            if count > MAX_ATTRIBUTES {
                let line = 1 + b[..start].iter().filter(|&&c| c == b'\n').count();
                let line_start = b[..start]
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |p| p + 1);
                // Columns count characters, as the XML parser's do.
                let column = text[line_start..start].chars().count() + 1;
                return Err(ConfError::TooManyAttributes {
                    limit: MAX_ATTRIBUTES,
                    pos: Some(Pos {
                        line: u32::try_from(line).unwrap_or(u32::MAX),
                        column: u32::try_from(column).unwrap_or(u32::MAX),
                    }),
                });
            }
            (j + 1).min(b.len())
        };
    }
    Ok(())
}

/// roxmltree appends " at R:C" to its messages; we print positions ourselves.
fn strip_position(message: &str) -> String {
    match message.rfind(" at ") {
        Some(i)
            if message[i + 4..]
                .chars()
                .all(|c| c.is_ascii_digit() || c == ':') =>
        {
            message[..i].to_string()
        }
        _ => message.to_string(),
    }
}

/// Refuses documents nested deeper than [`MAX_DEPTH`]. Iterative, so a
/// hostile document cannot exhaust the stack here; every recursive walk in
/// this crate runs after this check.
fn check_depth(doc: &Document<'_>) -> Result<()> {
    // descendants() walks in document order, so the open elements form a
    // stack: pop until the top is the node's parent, then push the node.
    let mut open: Vec<roxmltree::NodeId> = Vec::with_capacity(32);
    for node in doc.descendants().filter(Node::is_element) {
        let parent = node.parent().map(|p| p.id());
        while open.last().is_some_and(|top| Some(*top) != parent) {
            open.pop();
        }
        open.push(node.id());
        if open.len() > MAX_DEPTH {
            return Err(ConfError::TooDeep {
                limit: MAX_DEPTH,
                pos: Some(pos_of(doc, node.range().start)),
            });
        }
    }
    Ok(())
}

fn pos_of(doc: &Document<'_>, offset: usize) -> Pos {
    let p = doc.text_pos_at(offset);
    Pos {
        line: p.row,
        column: p.col,
    }
}

/// Parsing context: the document and whether to enforce the schema.
#[derive(Clone, Copy)]
pub(crate) struct Cx<'a, 'input> {
    pub(crate) doc: &'a Document<'input>,
    pub(crate) validate: bool,
}

impl std::fmt::Debug for Cx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cx")
            .field("validate", &self.validate)
            .finish()
    }
}

impl<'a, 'input> Cx<'a, 'input> {
    /// Position of a node.
    pub(crate) fn pos(&self, node: Node<'_, '_>) -> Option<Pos> {
        Some(pos_of(self.doc, node.range().start))
    }

    /// Position of an attribute of `node` (the element's position when absent).
    pub(crate) fn attr_pos(&self, node: Node<'_, '_>, name: &str) -> Option<Pos> {
        match node.attribute_node(name) {
            Some(a) => Some(pos_of(self.doc, a.range().start)),
            None => self.pos(node),
        }
    }

    /// Checks `root` is an un-namespaced element called `expected`.
    pub(crate) fn expect_root(&self, expected: &'static str) -> Result<Node<'a, 'input>> {
        let root = self.doc.root_element();
        if root.tag_name().name() != expected || !in_no_namespace(root) {
            return Err(ConfError::WrongRoot {
                expected,
                found: qualified_name(root),
                pos: self.pos(root),
            });
        }
        Ok(root)
    }

    /// First child element called `name` (libvirt's XPath `./name` picks
    /// the first too). With VALIDATE a second one is an error.
    pub(crate) fn child(
        &self,
        node: Node<'a, 'input>,
        name: &str,
    ) -> Result<Option<Node<'a, 'input>>> {
        let mut found = None;
        for c in
            element_children(node).filter(|c| c.tag_name().name() == name && in_no_namespace(*c))
        {
            if found.is_none() {
                found = Some(c);
                if !self.validate {
                    break;
                }
            } else {
                return Err(ConfError::DuplicateElement {
                    element: name.to_string(),
                    parent: qualified_name(node),
                    pos: self.pos(c),
                });
            }
        }
        Ok(found)
    }

    /// Text of the first child element `name`; absent or empty text is
    /// `None`, as libvirt's `virXPathString` reads it.
    pub(crate) fn child_text(&self, node: Node<'a, 'input>, name: &str) -> Result<Option<String>> {
        Ok(self
            .child(node, name)?
            .map(text_of)
            .filter(|t| !t.is_empty()))
    }

    /// With VALIDATE, refuses attributes of `node` not in `attributes` and
    /// child elements not in `children`, and text when `children` is
    /// element-only content (`text_allowed == false`).
    pub(crate) fn check_content(
        &self,
        node: Node<'_, '_>,
        attributes: &[&str],
        children: &[&str],
        text_allowed: bool,
    ) -> Result<()> {
        if !self.validate {
            return Ok(());
        }
        self.check_attributes(node, attributes)?;
        for c in node.children() {
            if c.is_element() {
                if !in_no_namespace(c) || !children.contains(&c.tag_name().name()) {
                    return Err(ConfError::UnexpectedElement {
                        element: qualified_name(c),
                        parent: qualified_name(node),
                        pos: self.pos(c),
                    });
                }
            } else if c.is_text() && !text_allowed && !is_blank(c.text().unwrap_or("")) {
                return Err(ConfError::UnexpectedText {
                    element: qualified_name(node),
                    pos: self.pos(c),
                });
            }
        }
        Ok(())
    }

    /// With VALIDATE, refuses attributes of `node` not in `allowed`.
    pub(crate) fn check_attributes(&self, node: Node<'_, '_>, allowed: &[&str]) -> Result<()> {
        if !self.validate {
            return Ok(());
        }
        for a in node.attributes() {
            if a.namespace().is_some_and(|ns| !ns.is_empty()) || !allowed.contains(&a.name()) {
                return Err(ConfError::UnexpectedAttribute {
                    attribute: a.name().to_string(),
                    element: qualified_name(node),
                    pos: Some(pos_of(self.doc, a.range().start)),
                });
            }
        }
        Ok(())
    }

    /// Builds an [`ConfError::InvalidValue`] for attribute `attr` of `node`.
    pub(crate) fn bad_attr(
        &self,
        node: Node<'_, '_>,
        attr: &str,
        value: &str,
        expected: impl Into<String>,
    ) -> ConfError {
        ConfError::InvalidValue {
            what: format!("attribute '{attr}' of <{}>", qualified_name(node)),
            value: value.to_string(),
            expected: expected.into(),
            pos: self.attr_pos(node, attr),
        }
    }

    /// Builds an [`ConfError::InvalidValue`] for the text of `node`.
    pub(crate) fn bad_text(
        &self,
        node: Node<'_, '_>,
        value: &str,
        expected: impl Into<String>,
    ) -> ConfError {
        ConfError::InvalidValue {
            what: format!("<{}>", qualified_name(node)),
            value: value.to_string(),
            expected: expected.into(),
            pos: self.pos(node),
        }
    }
}

/// Whether `node` is in no namespace (`xmlns=''` resets to none).
pub(crate) fn in_no_namespace(node: Node<'_, '_>) -> bool {
    node.tag_name().namespace().is_none_or(str::is_empty)
}

/// The child elements of `node`.
pub(crate) fn element_children<'a, 'input>(
    node: Node<'a, 'input>,
) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children().filter(Node::is_element)
}

/// All text directly inside `node` (libvirt reads element text this way).
pub(crate) fn text_of(node: Node<'_, '_>) -> String {
    let mut out = String::new();
    for c in node.children().filter(Node::is_text) {
        out.push_str(c.text().unwrap_or(""));
    }
    out
}

/// `prefix:local` as written, or `local`.
pub(crate) fn qualified_name(node: Node<'_, '_>) -> String {
    let local = node.tag_name().name();
    match node
        .tag_name()
        .namespace()
        .filter(|uri| !uri.is_empty())
        .and_then(|uri| node.lookup_prefix(uri))
    {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}:{local}"),
        _ => local.to_string(),
    }
}

/// XML whitespace only.
pub(crate) fn is_blank(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}
