//! Changing the disks of a kept `<domain>`: the new source (and format)
//! of a disk when an external snapshot's overlay becomes its image, or
//! when a revert or delete moves it. Only the disks named are touched,
//! and in them only `<source>`, `<driver type>`, the disk's `type` and
//! the now stale `<backingStore>` chain (libvirt probes the chain at
//! start; a persistent definition does not carry it); everything else
//! stays byte for byte as written.

use std::ops::Range;

use roxmltree::Node;

use crate::domain::Domain;
use crate::error::{ConfError, Result};
use crate::xml::reader;
use crate::xml::writer::push_escaped_attr;

/// A disk's new image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskChange {
    /// The disk's target (`vda`).
    pub target: String,
    /// The new image: a local file.
    pub file: String,
    /// Its format (`<driver type=...>`), when it changes.
    pub format: Option<String>,
}

impl Domain {
    /// This domain with `changes` applied.
    ///
    /// # Errors
    /// A target the domain has no disk for, or a disk without an element
    /// the change needs.
    pub fn with_disk_changes(&self, changes: &[DiskChange]) -> Result<Self> {
        let text = self.xml.to_xml(true);
        let doc = reader::load(&text)?;
        let devices = doc
            .root_element()
            .children()
            .find(|n| n.has_tag_name("devices"));
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        for change in changes {
            let disk = devices
                .into_iter()
                .flat_map(|d| d.children())
                .filter(|n| n.has_tag_name("disk"))
                .find(|d| {
                    d.children()
                        .find(|c| c.has_tag_name("target"))
                        .and_then(|t| t.attribute("dev"))
                        == Some(change.target.as_str())
                })
                .ok_or_else(|| ConfError::NoSuchDisk {
                    name: change.target.clone(),
                    targets: self
                        .def
                        .disks
                        .iter()
                        .map(|d| d.target.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            edit_disk(&text, disk, change, &mut edits);
        }
        edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        let mut out = text.clone();
        for (range, with) in edits {
            out.replace_range(range, &with);
        }
        Domain::parse(&out)
    }
}

fn attr(name: &str, value: &str) -> String {
    let mut s = format!(" {name}='");
    push_escaped_attr(&mut s, value);
    s.push('\'');
    s
}

/// The offset just before the `>` (or `/>`) closing `node`'s start tag.
fn start_tag_end(text: &str, node: Node<'_, '_>) -> usize {
    let range = node.range();
    let mut quote = None;
    for (i, b) in text.as_bytes()[range.clone()].iter().enumerate() {
        match (quote, *b) {
            (None, b'\'' | b'"') => quote = Some(*b),
            (Some(q), c) if c == q => quote = None,
            (None, b'>') => {
                let at = range.start + i;
                return if text.as_bytes()[at - 1] == b'/' {
                    at - 1
                } else {
                    at
                };
            }
            _ => {}
        }
    }
    range.end
}

fn edit_disk(
    text: &str,
    disk: Node<'_, '_>,
    change: &DiskChange,
    edits: &mut Vec<(Range<usize>, String)>,
) {
    // The disk becomes a file disk.
    match disk.attributes().find(|a| a.name() == "type") {
        Some(a) if a.value() != "file" => edits.push((a.range_value(), "file".into())),
        Some(_) => {}
        None => {
            let at = start_tag_end(text, disk);
            edits.push((at..at, attr("type", "file")));
        }
    }
    let child = |name: &str| disk.children().find(|c| c.has_tag_name(name));
    let source = format!("<source{}/>", attr("file", &change.file));
    let driver = child("driver");
    match child("source") {
        Some(s) => edits.push((s.range(), source)),
        None => {
            // After <driver>, else first in the disk.
            let at = driver.map_or_else(|| start_tag_end(text, disk) + 1, |d| d.range().end);
            edits.push((at..at, source));
        }
    }
    if let Some(format) = &change.format {
        match driver {
            Some(d) => match d.attributes().find(|a| a.name() == "type") {
                Some(a) => edits.push((a.range_value(), escaped(format))),
                None => {
                    let at = start_tag_end(text, d);
                    edits.push((at..at, attr("type", format)));
                }
            },
            None => {
                let at = start_tag_end(text, disk) + 1;
                edits.push((
                    at..at,
                    format!("<driver name='qemu'{}/>", attr("type", format)),
                ));
            }
        }
    }
    if let Some(b) = child("backingStore") {
        edits.push((b.range(), String::new()));
    }
}

fn escaped(value: &str) -> String {
    let mut s = String::new();
    push_escaped_attr(&mut s, value);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceKind;

    const DOMAIN: &str = r"<domain type='kvm'>
  <name>vm1</name>
  <!-- kept -->
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source dev='/dev/vg/lv'><seclabel model='dac' relabel='no'/></source>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk device='disk'>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <graphics type='vnc' passwd='secret'/>
  </devices>
</domain>";

    #[test]
    fn test_change_source_format_and_type_keeps_the_rest() {
        let d = Domain::parse(DOMAIN).expect("parses");
        let changed = d
            .with_disk_changes(&[
                DiskChange {
                    target: "vda".into(),
                    file: "/img/it's.qcow2".into(),
                    format: Some("qcow2".into()),
                },
                DiskChange {
                    target: "vdb".into(),
                    file: "/img/b.qcow2".into(),
                    format: Some("qcow2".into()),
                },
            ])
            .expect("changed");
        let vda = &changed.def.disks[0];
        assert_eq!(vda.source.kind, SourceKind::File);
        assert_eq!(vda.source.path.as_deref(), Some("/img/it's.qcow2"));
        assert_eq!(vda.driver_type.as_deref(), Some("qcow2"));
        assert_eq!(vda.backing_chain, None);
        let vdb = &changed.def.disks[1];
        assert_eq!(vdb.source.path.as_deref(), Some("/img/b.qcow2"));
        assert_eq!(vdb.driver_type.as_deref(), Some("qcow2"));
        let xml = changed.xml.to_xml(true);
        assert!(xml.contains("cache='none'"), "{xml}");
        assert!(xml.contains("<!-- kept -->"), "{xml}");
        assert!(xml.contains("passwd='secret'"), "{xml}");
        assert!(!xml.contains("/dev/vg/lv"), "{xml}");
        // Unchanged disks' XML and the rest stay as they were.
        assert_eq!(changed.def.name, d.def.name);
    }

    #[test]
    fn test_unknown_target_is_refused() {
        let d = Domain::parse(DOMAIN).expect("parses");
        let e = d
            .with_disk_changes(&[DiskChange {
                target: "vdz".into(),
                file: "/x".into(),
                format: None,
            }])
            .expect_err("no vdz");
        assert!(e.to_string().contains("vdz"), "{e}");
    }
}
