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
                push_escaped(&mut self.out, value);
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

    /// A kept subtree, re-indented to the current depth.
    pub(crate) fn subtree(&mut self, tree: &XmlSubtree, secure: bool) {
        self.indent();
        tree.write_to(&mut self.out, self.depth, secure);
        self.out.push('\n');
    }
}

/// Appends `text` escaped as libvirt escapes it.
pub(crate) fn push_escaped(out: &mut String, text: &str) {
    let needs_filter = text
        .bytes()
        .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'));
    let filtered: Cow<'_, str> = if needs_filter {
        Cow::Owned(
            text.chars()
                .filter(|&c| c >= ' ' || matches!(c, '\t' | '\n' | '\r'))
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    };
    out.push_str(&quick_xml::escape::escape(filtered.as_ref()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_escape_replaces_five_specials_and_drops_controls() {
        let mut out = String::new();
        push_escaped(&mut out, "a<b>&'\"\u{1}\tz");
        assert_eq!(out, "a&lt;b&gt;&amp;&apos;&quot;\tz");
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
