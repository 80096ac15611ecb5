//! Subtrees kept exactly: `<domain>`, `<inactiveDomain>`, `<cookie>` and
//! source children we do not model.
//!
//! libvirt re-formats these with its full domain formatter; we do not
//! re-model the domain schema, so we keep what was written — start tags
//! (attribute order, quote style, entity references), text and comments
//! byte for byte; CDATA sections keep their content, written as escaped
//! text — and only re-indent: in element-only content every
//! child goes on its own line, two spaces deeper than its parent, as
//! libvirt writes it. Mixed content (text beside elements) is kept with its
//! whitespace untouched.
//!
//! Representation: the text without indentation, plus the offsets where a
//! line break and indentation go (with their depth relative to the subtree
//! root), plus byte ranges of security-sensitive attributes that are only
//! written with the SECURE format flag.

use roxmltree::{Document, Node, NodeType};

use crate::error::Result;
use crate::xml::reader::{self, is_blank};

/// An XML element kept as written, re-indentable to any depth.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XmlSubtree {
    text: String,
    /// `(offset in text, depth)`: a newline and `depth` levels of indent.
    breaks: Vec<(u32, u16)>,
    /// `(start, end)` byte ranges left out unless formatting with SECURE.
    secrets: Vec<(u32, u32)>,
    local_name: String,
}

/// Decides which attributes are security sensitive: `(element, attribute)`
/// local names.
pub(crate) type SecretRule = fn(&str, &str) -> bool;

/// No attribute is secret.
pub(crate) fn no_secrets(_: &str, _: &str) -> bool {
    false
}

/// libvirt's SECURE flag guards the passwords of `<graphics>` devices.
pub(crate) fn domain_secrets(element: &str, attribute: &str) -> bool {
    element == "graphics" && attribute == "passwd"
}

impl XmlSubtree {
    /// Parses a standalone XML document and keeps its root element.
    ///
    /// # Errors
    /// The document is malformed or over the crate's limits.
    pub fn parse(xml: &str) -> Result<Self> {
        let doc = reader::load(xml)?;
        Ok(Self::from_node(&doc, doc.root_element(), no_secrets))
    }

    /// Keeps the element `node` of `doc`.
    pub(crate) fn from_node(doc: &Document<'_>, node: Node<'_, '_>, secret: SecretRule) -> Self {
        let mut b = Builder {
            src: doc.input_text(),
            tree: Self {
                text: String::with_capacity(node.range().len()),
                breaks: Vec::new(),
                secrets: Vec::new(),
                local_name: node.tag_name().name().to_string(),
            },
            secret,
        };
        b.element(node, 0, true);
        b.tree
    }

    /// Local name of the root element (`domain`, `cookie`, ...).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.local_name
    }

    /// About how many bytes the subtree takes when written (for buffer
    /// sizing; indentation is estimated).
    #[must_use]
    pub fn len_hint(&self) -> usize {
        self.text.len() + 12 * self.breaks.len()
    }

    /// The subtree as XML with its root at column 0.
    #[must_use]
    pub fn to_xml(&self, secure: bool) -> String {
        let mut out = String::with_capacity(self.text.len() + 8 * self.breaks.len());
        self.write_to(&mut out, 0, secure);
        out
    }

    /// Appends the subtree with its root at indent level `base` (the first
    /// line's indentation is the caller's).
    pub(crate) fn write_to(&self, out: &mut String, base: usize, secure: bool) {
        let mut cursor = 0usize;
        let mut breaks = self.breaks.iter().peekable();
        let mut secrets = self.secrets.iter().filter(|_| !secure).peekable();
        loop {
            let next_break = breaks.peek().map(|b| b.0 as usize);
            let next_secret = secrets.peek().map(|s| s.0 as usize);
            match (next_break, next_secret) {
                (Some(b), s) if s.is_none_or(|s| b <= s) => {
                    let (_, depth) = breaks.next().copied().unwrap_or_default();
                    out.push_str(&self.text[cursor..b]);
                    out.push('\n');
                    for _ in 0..(base + usize::from(depth)) {
                        out.push_str("  ");
                    }
                    cursor = b;
                }
                (_, Some(s)) => {
                    let (_, end) = secrets.next().copied().unwrap_or_default();
                    out.push_str(&self.text[cursor..s]);
                    cursor = end as usize;
                }
                _ => break,
            }
        }
        out.push_str(&self.text[cursor..]);
    }
}

struct Builder<'s> {
    src: &'s str,
    tree: XmlSubtree,
    secret: SecretRule,
}

impl Builder<'_> {
    fn offset(&self) -> u32 {
        // Documents are bounded by MAX_DOCUMENT_BYTES, far below u32::MAX.
        u32::try_from(self.tree.text.len()).unwrap_or(u32::MAX)
    }

    fn push_break(&mut self, depth: usize) {
        let at = self.offset();
        self.tree
            .breaks
            .push((at, u16::try_from(depth).unwrap_or(u16::MAX)));
    }

    fn raw(&mut self, node: Node<'_, '_>) {
        self.tree.text.push_str(&self.src[node.range()]);
    }

    fn element(&mut self, node: Node<'_, '_>, depth: usize, is_root: bool) {
        let start = node.range().start;
        let tag_end = start_tag_end(self.src, start);
        let self_closing = self.src[..tag_end].ends_with("/>");
        let body_end = if self_closing {
            tag_end - 2
        } else {
            tag_end - 1
        };

        // Start tag, without its terminator, minus secret attributes.
        let tag_base = self.offset() as usize;
        self.tree.text.push_str(&self.src[start..body_end]);
        let element_name = node.tag_name().name();
        for attr in node.attributes() {
            if (self.secret)(element_name, attr.name()) {
                let r = attr.range();
                let mut ws = r.start;
                while ws > start && self.src.as_bytes()[ws - 1].is_ascii_whitespace() {
                    ws -= 1;
                }
                let to_out = |p: usize| u32::try_from(tag_base + p - start).unwrap_or(u32::MAX);
                self.tree.secrets.push((to_out(ws), to_out(r.end)));
            }
        }
        if is_root {
            self.inherited_namespaces(node, &self.src[start..body_end]);
        }
        self.tree
            .text
            .push_str(if self_closing { "/>" } else { ">" });
        if self_closing {
            return;
        }

        // Element-only content (child elements, maybe comments, blank text)
        // is re-indented; anything else is kept with its whitespace.
        let has_elements = node.children().any(|c| c.is_element());
        let has_text = node
            .children()
            .any(|c| c.is_text() && !is_blank(c.text().unwrap_or("")));
        if has_elements && !has_text {
            for child in node.children().filter(|c| !c.is_text()) {
                self.push_break(depth + 1);
                self.child(child, depth + 1);
            }
            self.push_break(depth);
        } else {
            for child in node.children() {
                self.child(child, depth + 1);
            }
        }
        self.tree.text.push_str("</");
        self.tree
            .text
            .push_str(raw_tag_name(&self.src[start..tag_end]));
        self.tree.text.push('>');
    }

    fn child(&mut self, node: Node<'_, '_>, depth: usize) {
        match node.node_type() {
            NodeType::Element => self.element(node, depth, false),
            NodeType::Text => self.text(node),
            _ => self.raw(node),
        }
    }

    /// Text as written when its source spells exactly its value (entity
    /// references and quotes keep their spelling); otherwise — CDATA, or a
    /// CR the parser turned into LF, possibly merged with the text beside
    /// it — the value itself, escaped.
    fn text(&mut self, node: Node<'_, '_>) {
        let value = node.text().unwrap_or("");
        let raw = &self.src[node.range()];
        let spelled_exactly = !raw.contains(['<', '\r'])
            && (raw == value || quick_xml::escape::unescape(raw).is_ok_and(|v| v == value));
        if spelled_exactly {
            self.tree.text.push_str(raw);
        } else {
            self.tree
                .text
                .push_str(&quick_xml::escape::partial_escape(value));
        }
    }

    /// Declares on the root the namespaces it uses from its ancestors, so
    /// the kept subtree stands alone.
    fn inherited_namespaces(&mut self, node: Node<'_, '_>, own_tag: &str) {
        let Some(parent) = node.parent_element() else {
            return;
        };
        for ns in node.namespaces() {
            if ns.name() == Some("xml") || declares(own_tag, ns.name()) {
                continue;
            }
            if parent
                .namespaces()
                .any(|p| p.name() == ns.name() && p.uri() == ns.uri())
            {
                self.tree.text.push_str(" xmlns");
                if let Some(prefix) = ns.name() {
                    self.tree.text.push(':');
                    self.tree.text.push_str(prefix);
                }
                self.tree.text.push_str("=\"");
                crate::xml::writer::push_escaped_attr(&mut self.tree.text, ns.uri());
                self.tree.text.push('"');
            }
        }
    }
}

/// Whether a raw start tag declares the namespace `prefix` itself.
fn declares(tag: &str, prefix: Option<&str>) -> bool {
    let wanted = match prefix {
        Some(p) => format!("xmlns:{p}"),
        None => "xmlns".to_string(),
    };
    attribute_names(tag).any(|name| name == wanted)
}

/// The attribute names of a raw start tag (`<name a='x' b = "y">`).
fn attribute_names(tag: &str) -> impl Iterator<Item = &str> {
    let b = tag.as_bytes();
    let mut i = 1 + raw_tag_name(tag).len();
    std::iter::from_fn(move || {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/' || b[i] == b'>') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let name = tag.get(start..i).filter(|n| !n.is_empty())?;
        // Skip `=`, whitespace and the quoted value.
        while i < b.len() && (b[i] == b'=' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        if let Some(&q) = b.get(i).filter(|&&q| q == b'"' || q == b'\'') {
            i += 1;
            while i < b.len() && b[i] != q {
                i += 1;
            }
            i += 1;
        }
        Some(name)
    })
}

/// Offset just past the `>` ending the start tag that begins at `start`.
fn start_tag_end(src: &str, start: usize) -> usize {
    let bytes = src.as_bytes();
    let mut i = start + 1;
    let mut quote = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return i + 1,
            None => {}
        }
        i += 1;
    }
    bytes.len()
}

/// `prefix:name` from a raw start tag.
fn raw_tag_name(tag: &str) -> &str {
    let rest = &tag[1..];
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(xml: &str) -> XmlSubtree {
        XmlSubtree::parse(xml).expect("well-formed test input")
    }

    #[test]
    fn test_subtree_reindents_element_only_content() {
        let t = keep("<a x=\"1\"><b/>\n\n      <c y='2'>t</c></a>");
        assert_eq!(
            t.to_xml(true),
            "<a x=\"1\">\n  <b/>\n  <c y='2'>t</c>\n</a>"
        );
        let mut out = String::new();
        t.write_to(&mut out, 2, true);
        assert_eq!(
            out,
            "<a x=\"1\">\n      <b/>\n      <c y='2'>t</c>\n    </a>"
        );
    }

    #[test]
    fn test_subtree_keeps_mixed_content_and_entities_verbatim() {
        let xml = "<a>text &amp; 'q' <b>x</b>  tail<!-- c --></a>";
        assert_eq!(keep(xml).to_xml(true), xml);
    }

    #[test]
    fn test_subtree_keeps_text_merged_with_cdata() {
        assert_eq!(
            keep("<c><![CDATA[<x>]]>y</c>").to_xml(true),
            "<c>&lt;x&gt;y</c>"
        );
        assert_eq!(keep("<c>y<![CDATA[x]]></c>").to_xml(true), "<c>yx</c>");
    }

    #[test]
    fn test_subtree_comment_only_element_is_not_reindented() {
        assert_eq!(
            keep("<a><n><!-- c --></n></a>").to_xml(true),
            "<a>\n  <n><!-- c --></n>\n</a>"
        );
    }

    #[test]
    fn test_subtree_xmlns_inside_attribute_value_is_not_a_declaration() {
        assert!(!declares("<x a='xmlns:q='>", Some("q")));
        assert!(declares("<x a='1' xmlns:q = 'urn:q'>", Some("q")));
        assert!(declares("<x xmlns='urn:d'/>", None));
    }

    #[test]
    fn test_subtree_drops_graphics_password_unless_secure() {
        let doc =
            reader::load("<d><graphics type='vnc' passwd='s3cret' port='1'/></d>").expect("valid");
        let t = XmlSubtree::from_node(&doc, doc.root_element(), domain_secrets);
        assert_eq!(
            t.to_xml(false),
            "<d>\n  <graphics type='vnc' port='1'/>\n</d>"
        );
        assert_eq!(
            t.to_xml(true),
            "<d>\n  <graphics type='vnc' passwd='s3cret' port='1'/>\n</d>"
        );
    }

    #[test]
    fn test_subtree_declares_namespaces_inherited_from_ancestors() {
        let doc = reader::load("<r xmlns:q='urn:q'><domain><q:x/></domain></r>").expect("valid");
        let domain = doc.root_element().first_element_child().expect("child");
        let t = XmlSubtree::from_node(&doc, domain, no_secrets);
        assert_eq!(
            t.to_xml(true),
            "<domain xmlns:q=\"urn:q\">\n  <q:x/>\n</domain>"
        );
        XmlSubtree::parse(&t.to_xml(true)).unwrap();
    }

    #[test]
    fn test_subtree_attribute_with_gt_in_value() {
        let t = keep("<a v='x>y'><b/></a>");
        assert_eq!(t.to_xml(true), "<a v='x>y'>\n  <b/>\n</a>");
    }
}
