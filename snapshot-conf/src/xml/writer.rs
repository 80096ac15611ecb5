//! The XML writer that reproduces libvirt's output conventions.
//!
//! libvirt formats with an auto-indenting buffer: two spaces per level,
//! every element on its own line, attributes in single quotes, empty
//! elements as `<x/>`, a newline after the last line. Escaping follows
//! `virBufferEscapeString`: `< > & ' "` become entities and the control
//! characters 0x01–0x1F other than TAB, LF and CR are dropped, since XML 1.0
//! cannot carry them. One deliberate difference: quick-xml's
//! [`escape`](quick_xml::escape::escape) also writes CR as `&#13;`, so a CR
//! survives the next parse (libvirt writes it raw and the parser turns it
//! into LF).

use std::borrow::Cow;

use crate::xml::subtree::XmlSubtree;

/// An attribute to write: `None` values are skipped, so optional
/// attributes read naturally at the call site.
pub(crate) type Attr<'a> = (&'a str, Option<&'a str>);

/// The fields libvirt's "moment" (snapshot or checkpoint) shares.
#[derive(Debug, Default)]
pub(crate) struct MomentHeader<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) description: Option<&'a str>,
    pub(crate) state: Option<&'a str>,
    pub(crate) parent: Option<&'a str>,
    pub(crate) creation_time: Option<i64>,
}

/// Indenting writer producing libvirt-formatted XML into a `String`.
#[derive(Debug, Default)]
pub(crate) struct XmlWriter {
    out: String,
    depth: usize,
}

impl XmlWriter {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            depth: 0,
        }
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }

    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn start_tag(&mut self, name: &str, attrs: &[Attr<'_>]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            if let Some(value) = value {
                self.out.push(' ');
                self.out.push_str(key);
                self.out.push_str("='");
                push_escaped_attr(&mut self.out, value);
                self.out.push('\'');
            }
        }
    }

    /// `<name attrs>` on its own line; children follow one level deeper.
    pub(crate) fn open(&mut self, name: &str, attrs: &[Attr<'_>]) {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    /// `</name>` closing the element opened last.
    pub(crate) fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.indent();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// `<name attrs/>`.
    pub(crate) fn empty(&mut self, name: &str, attrs: &[Attr<'_>]) {
        self.start_tag(name, attrs);
        self.out.push_str("/>\n");
    }

    /// `<name attrs>text</name>` on one line.
    pub(crate) fn text_element(&mut self, name: &str, attrs: &[Attr<'_>], text: &str) {
        self.start_tag(name, attrs);
        self.out.push('>');
        push_escaped(&mut self.out, text);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// The elements every snapshot kind starts with, in libvirt's order;
    /// empty strings are written as absent, as libvirt reads them.
    pub(crate) fn moment_header(&mut self, h: &MomentHeader<'_>) {
        if let Some(name) = h.name.filter(|s| has_xml_text(s)) {
            self.text_element("name", &[], name);
        }
        if let Some(d) = h.description.filter(|s| has_xml_text(s)) {
            self.text_element("description", &[], d);
        }
        if let Some(s) = h.state {
            self.text_element("state", &[], s);
        }
        if let Some(p) = h.parent.filter(|s| has_xml_text(s)) {
            self.open("parent", &[]);
            self.text_element("name", &[], p);
            self.close("parent");
        }
        if let Some(t) = h.creation_time {
            self.text_element("creationTime", &[], &t.to_string());
        }
    }

    /// A kept subtree, re-indented to the current depth.
    pub(crate) fn subtree(&mut self, tree: &XmlSubtree, secure: bool) {
        self.indent();
        tree.write_to(&mut self.out, self.depth, secure);
        self.out.push('\n');
    }
}

/// Whether XML 1.0 can carry `c` (controls other than TAB, LF and CR, and
/// U+FFFE/U+FFFF, cannot; Rust strings hold no surrogates).
fn is_xml_char(c: char) -> bool {
    (c >= ' ' || matches!(c, '\t' | '\n' | '\r')) && !matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// Whether `text` keeps at least one character once written: empty
/// elements read back as absent, so they are not written.
pub(crate) fn has_xml_text(text: &str) -> bool {
    text.chars().any(is_xml_char)
}

/// Appends `text` escaped as libvirt escapes it, minus characters XML
/// cannot carry.
pub(crate) fn push_escaped(out: &mut String, text: &str) {
    let clean: Cow<'_, str> = if text.chars().all(is_xml_char) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| is_xml_char(c)).collect())
    };
    out.push_str(&quick_xml::escape::escape(clean.as_ref()));
}

/// Appends an attribute value: as text, plus TAB and LF as character
/// references, because a parser turns raw ones in attributes into spaces.
pub(crate) fn push_escaped_attr(out: &mut String, value: &str) {
    if !value.contains(['\t', '\n']) {
        push_escaped(out, value);
        return;
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    push_escaped(&mut escaped, value);
    out.push_str(&escaped.replace('\t', "&#9;").replace('\n', "&#10;"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_escape_replaces_five_specials_and_drops_controls() {
        let mut out = String::new();
        push_escaped(&mut out, "a<b>&'\"\u{1}\u{FFFE}\tz\r");
        assert_eq!(out, "a&lt;b&gt;&amp;&apos;&quot;\tz&#13;");
    }

    #[test]
    fn test_attribute_escape_keeps_tab_and_newline_as_references() {
        let mut out = String::new();
        push_escaped_attr(&mut out, "a\tb\nc'");
        assert_eq!(out, "a&#9;b&#10;c&apos;");
    }

    #[test]
    fn test_writer_indents_two_spaces_and_single_quotes() {
        let mut w = XmlWriter::default();
        w.open("a", &[("x", Some("1")), ("y", None)]);
        w.text_element("b", &[], "t");
        w.empty("c", &[("k", Some("it's"))]);
        w.close("a");
        assert_eq!(
            w.finish(),
            "<a x='1'>\n  <b>t</b>\n  <c k='it&apos;s'/>\n</a>\n"
        );
    }
}
