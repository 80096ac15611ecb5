//! `<volsnapshot>`: a snapshot of one storage volume that belongs to no
//! domain, the element proposed with the `virStorageVolSnapshot*` API
//! (`volume-snapshot-api-proposal.txt`). Its schema is
//! `schemas/volsnapshot.rng` in this crate; the layout follows
//! `<domainsnapshot>` so the two read alike:
//!
//! ```text
//! <volsnapshot>
//!   <name>before-upgrade</name>              name (default: creation time)
//!   <description>...</description>          description
//!   <state>offline</state>                   state            (REDEFINE)
//!   <parent><name>base</name></parent>       parent           (REDEFINE)
//!   <creationTime>1700000000</creationTime>  creation_time
//!   <volume>                                 volume: the volume snapshotted
//!     <path>/img/disk.qcow2</path>             path or
//!     <key>vg0/data</key>                      key (LVM, rbd, ...)
//!     <format type='qcow2'/>                   its format
//!     <driver name='qemu'/>                    the driver that manages it
//!   </volume>
//!   <snapshot mode='external' type='file'>   how it is captured
//!     <driver type='qcow2'/>                   new image format (external)
//!     <source file='/img/disk.before-upgrade'/> new image (external)
//!   </snapshot>
//!   <active>1</active>                       current (INTERNAL)
//! </volsnapshot>
//! ```

use roxmltree::Node;

use crate::error::{ConfError, Result};
use crate::flags::{FormatFlags, FormatOptions, ParseFlags, ParseOptions};
use crate::snapshot::{Parsed, format_driver, is_abs_path, parse_creation_time};
use crate::source::{DiskSource, SourceKind, StorageFormat, string_enum};
use crate::xml::reader::{self, Cx, text_of};
use crate::xml::writer::{MomentHeader, XmlWriter, has_xml_text};

string_enum! {
    /// Whether the volume was in use when the snapshot was taken.
    VolSnapshotState {
        /// No writer had the volume open: the snapshot is clean.
        Offline = "offline",
        /// A running writer had it open: crash-consistent.
        Online = "online",
        /// A running guest had it open and froze its filesystems first.
        Quiesced = "quiesced",
    }
}

string_enum! {
    /// Where a volume snapshot lives.
    VolSnapshotMode {
        /// Inside the volume itself (qcow2 internal snapshot).
        Internal = "internal",
        /// A new image: overlay, logical volume or subvolume.
        External = "external",
        /// A full, independent copy of the volume's bytes.
        Copy = "copy",
    }
}

/// The volume a snapshot belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VolumeRef {
    /// Filesystem path of the volume (file or block device).
    pub path: Option<String>,
    /// Key for volumes without a path (`vg0/data`, `rbd:pool/image`).
    pub key: Option<String>,
    /// Image format.
    pub format: Option<StorageFormat>,
    /// Kind of driver that manages its snapshots (`qemu`, `file`, `lvm`,
    /// `btrfs`, or a plugin's name).
    pub driver: Option<String>,
}

/// How a volume snapshot is captured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolSnapshotTarget {
    /// `mode=`; `None` lets the volume's driver choose.
    pub mode: Option<VolSnapshotMode>,
    /// The new image of an external snapshot.
    pub source: DiskSource,
    /// Format of the new image.
    pub format: Option<StorageFormat>,
    /// `<checksum>`: the content checksum recorded when the snapshot was
    /// taken, verified on revert.
    pub checksum: Option<VolChecksum>,
}

impl Default for VolSnapshotTarget {
    fn default() -> Self {
        Self {
            mode: None,
            source: DiskSource::new(SourceKind::File),
            format: None,
            checksum: None,
        }
    }
}

/// A `<checksum type='sha256'>HEX</checksum>` of a snapshot's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolChecksum {
    /// The algorithm: `sha256`.
    pub algorithm: String,
    /// The digest, lowercase hex.
    pub value: String,
}

impl VolChecksum {
    /// The algorithms accepted, with their digest length in hex digits.
    pub const ALGORITHMS: &'static [(&'static str, usize)] = &[("sha256", 64)];
}

/// A `<volsnapshot>` definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VolSnapshotDef {
    /// `<name>`.
    pub name: Option<String>,
    /// `<description>`.
    pub description: Option<String>,
    /// `<state>`.
    pub state: Option<VolSnapshotState>,
    /// `<parent><name>`.
    pub parent: Option<String>,
    /// `<creationTime>`, seconds since the epoch.
    pub creation_time: Option<i64>,
    /// `<volume>`.
    pub volume: Option<VolumeRef>,
    /// `<snapshot>`.
    pub target: VolSnapshotTarget,
}

const TOP_LEVEL: &[&str] = &[
    "name",
    "description",
    "state",
    "parent",
    "creationTime",
    "volume",
    "snapshot",
    "active",
];

impl VolSnapshotDef {
    /// Parses a `<volsnapshot>` document. [`ParseFlags::OFFLINE`] has no
    /// meaning here and is ignored.
    ///
    /// # Errors
    /// Malformed or hostile XML, a missing or invalid value, or with
    /// [`ParseFlags::VALIDATE`] anything `volsnapshot.rng` refuses.
    pub fn parse(xml: &str, options: &ParseOptions) -> Result<Parsed<Self>> {
        let doc = reader::load(xml)?;
        let flags = options.flags;
        let cx = Cx {
            doc: &doc,
            validate: flags.contains(ParseFlags::VALIDATE),
        };
        let root = cx.expect_root("volsnapshot")?;
        cx.check_content(root, &[], TOP_LEVEL, false)?;
        for leaf in ["name", "description", "state", "creationTime", "active"] {
            if let Some(n) = cx.child(root, leaf)? {
                cx.check_content(n, &[], &[], true)?;
            }
        }
        let mut def = Self {
            name: cx.child_text(root, "name")?,
            description: cx.child_text(root, "description")?,
            ..Self::default()
        };
        if let Some(v) = cx.child(root, "volume")? {
            def.volume = Some(parse_volume(&cx, v)?);
        }
        let redefine = flags.contains(ParseFlags::REDEFINE);
        if redefine || cx.validate {
            // A creation request ignores these, but VALIDATE still refuses
            // what the schema refuses.
            let state = parse_state(&cx, root)?;
            let parent = parse_parent(&cx, root)?;
            let time = match cx.child(root, "creationTime")? {
                Some(_) => Some(parse_creation_time(&cx, root, "volsnapshot")?),
                None => None,
            };
            if redefine {
                def.state = state;
                def.parent = parent;
                def.creation_time = time;
            }
        }
        if redefine {
            if def.name.is_none() {
                return Err(ConfError::MissingElement {
                    element: "name",
                    parent: "volsnapshot",
                    hint: "a redefined snapshot must have a name",
                    pos: cx.pos(root),
                });
            }
            if def.volume.is_none() {
                return Err(ConfError::MissingElement {
                    element: "volume",
                    parent: "volsnapshot",
                    hint: "a redefined volume snapshot names its volume with <volume><path> or <volume><key>",
                    pos: cx.pos(root),
                });
            }
            def.creation_time = Some(parse_creation_time(&cx, root, "volsnapshot")?);
        } else if let Some(t) = options.creation_time {
            def.creation_time = Some(t);
            if def.name.is_none() {
                def.name = Some(t.to_string());
            }
        }
        if let Some(s) = cx.child(root, "snapshot")? {
            def.target = parse_target(&cx, s)?;
        }
        let mut current = false;
        let active = cx.child(root, "active")?;
        if let Some(a) = active {
            let text = text_of(a);
            let value = match text.trim() {
                "0" => false,
                "1" => true,
                _ => return Err(cx.bad_text(a, &text, "0 or 1")),
            };
            current = value && flags.contains(ParseFlags::INTERNAL);
        } else if flags.contains(ParseFlags::INTERNAL) {
            return Err(ConfError::MissingElement {
                element: "active",
                parent: "volsnapshot",
                hint: "snapshot metadata files record <active>1</active> on the current snapshot and <active>0</active> on the others",
                pos: cx.pos(root),
            });
        }
        Ok(Parsed { def, current })
    }

    /// Writes the definition in the canonical layout of `volsnapshot.rng`.
    #[must_use]
    pub fn format(&self, options: &FormatOptions) -> String {
        let mut w = XmlWriter::with_capacity(512);
        w.open("volsnapshot", &[]);
        w.moment_header(&MomentHeader {
            name: self.name.as_deref(),
            description: self.description.as_deref(),
            state: self.state.map(|s| s.as_str()),
            parent: self.parent.as_deref(),
            creation_time: self.creation_time,
        });
        if let Some(v) = &self.volume {
            w.open("volume", &[]);
            for (element, value) in [("path", &v.path), ("key", &v.key)] {
                if let Some(text) = value.as_deref().filter(|t| has_xml_text(t)) {
                    w.text_element(element, &[], text);
                }
            }
            if let Some(f) = v.format {
                w.empty("format", &[("type", Some(f.as_str()))]);
            }
            if let Some(d) = &v.driver {
                w.empty("driver", &[("name", Some(d.as_str()))]);
            }
            w.close("volume");
        }
        let t = &self.target;
        let image = t.format.is_some() || !t.source.is_empty() || t.checksum.is_some();
        let internal = t.mode == Some(VolSnapshotMode::Internal);
        let attrs = [
            ("mode", t.mode.map(VolSnapshotMode::as_str)),
            ("type", (image && !internal).then(|| t.source.kind.as_str())),
        ];
        if image {
            w.open("snapshot", &attrs);
            format_driver(&mut w, t.format, None);
            t.source.format(&mut w);
            if let Some(c) = &t.checksum {
                w.text_element(
                    "checksum",
                    &[("type", Some(c.algorithm.as_str()))],
                    &c.value,
                );
            }
            w.close("snapshot");
        } else if t.mode.is_some() {
            w.empty("snapshot", &attrs);
        }
        if options.flags.contains(FormatFlags::INTERNAL) {
            let current = options.flags.contains(FormatFlags::CURRENT);
            w.text_element("active", &[], if current { "1" } else { "0" });
        }
        w.close("volsnapshot");
        w.finish()
    }
}

fn parse_state(cx: &Cx<'_, '_>, root: Node<'_, '_>) -> Result<Option<VolSnapshotState>> {
    let Some(s) = cx.child(root, "state")? else {
        return Ok(None);
    };
    let text = text_of(s);
    text.trim()
        .parse()
        .map(Some)
        .map_err(|()| cx.bad_text(s, &text, VolSnapshotState::expected()))
}

fn parse_parent(cx: &Cx<'_, '_>, root: Node<'_, '_>) -> Result<Option<String>> {
    let Some(p) = cx.child(root, "parent")? else {
        return Ok(None);
    };
    cx.check_content(p, &[], &["name"], false)?;
    cx.child_text(p, "name")
}

fn parse_volume(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<VolumeRef> {
    cx.check_content(node, &[], &["path", "key", "format", "driver"], false)?;
    let mut v = VolumeRef {
        path: cx.child_text(node, "path")?,
        key: cx.child_text(node, "key")?,
        ..VolumeRef::default()
    };
    if let Some(f) = cx.child(node, "format")? {
        cx.check_content(f, &["type"], &[], false)?;
        let t = f
            .attribute("type")
            .ok_or_else(|| ConfError::MissingAttribute {
                attribute: "type",
                element: "format",
                hint: "give the volume's image format, e.g. <format type='qcow2'/>",
                pos: cx.pos(f),
            })?;
        v.format = Some(
            t.parse()
                .map_err(|()| cx.bad_attr(f, "type", t, StorageFormat::expected()))?,
        );
    }
    if let Some(d) = cx.child(node, "driver")? {
        cx.check_content(d, &["name"], &[], false)?;
        let n = d
            .attribute("name")
            .ok_or_else(|| ConfError::MissingAttribute {
                attribute: "name",
                element: "driver",
                hint: "name the snapshot driver, e.g. <driver name='qemu'/>",
                pos: cx.pos(d),
            })?;
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(cx.bad_attr(
                d,
                "name",
                n,
                "a driver name of letters, digits, '-', '_', '.' or ':'",
            ));
        }
        v.driver = Some(n.to_string());
    }
    if v.path.is_none() && v.key.is_none() {
        return Err(ConfError::MissingElement {
            element: "path",
            parent: "volume",
            hint: "name the volume with <path>/absolute/path</path> or <key>...</key>",
            pos: cx.pos(node),
        });
    }
    if let Some(p) = &v.path
        && !is_abs_path(p)
    {
        return Err(ConfError::RelativePath {
            what: "volume",
            path: p.clone(),
            pos: cx.pos(node),
        });
    }
    Ok(v)
}

fn parse_target(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<VolSnapshotTarget> {
    let mode = match node.attribute("mode") {
        None => None,
        Some(m) => Some(
            m.parse()
                .map_err(|()| cx.bad_attr(node, "mode", m, VolSnapshotMode::expected()))?,
        ),
    };
    let internal = mode == Some(VolSnapshotMode::Internal);
    if internal {
        // An internal snapshot is inside the volume: no image of its own,
        // only the checksum a driver may have recorded.
        cx.check_content(node, &["mode"], &["checksum"], false)?;
    } else {
        cx.check_content(
            node,
            &["mode", "type"],
            &["source", "driver", "checksum"],
            false,
        )?;
    }
    let kind = match node.attribute("type") {
        None => SourceKind::File,
        Some(t) => match t.parse() {
            Ok(
                k @ (SourceKind::File | SourceKind::Block | SourceKind::Dir | SourceKind::Network),
            ) => k,
            _ => return Err(cx.bad_attr(node, "type", t, "file, block, dir or network")),
        },
    };
    let mut target = VolSnapshotTarget {
        mode,
        source: DiskSource::new(kind),
        format: None,
        checksum: None,
    };
    if let Some(s) = cx.child(node, "source")? {
        target.source = DiskSource::parse_snapshot_image(cx, s, kind)?;
        if let Some(p) = target.source.local_path()
            && !is_abs_path(p)
        {
            return Err(ConfError::RelativePath {
                what: "volume snapshot image",
                path: p.to_string(),
                pos: cx.pos(s),
            });
        }
    }
    if let Some(d) = cx.child(node, "driver")? {
        cx.check_content(d, &["type"], &[], false)?;
        if let Some(t) = d.attribute("type") {
            target.format = Some(
                t.parse()
                    .map_err(|()| cx.bad_attr(d, "type", t, StorageFormat::expected()))?,
            );
        }
    }
    if let Some(c) = cx.child(node, "checksum")? {
        cx.check_content(c, &["type"], &[], true)?;
        let algorithm = c
            .attribute("type")
            .ok_or_else(|| ConfError::MissingAttribute {
                attribute: "type",
                element: "checksum",
                hint: "name the algorithm, e.g. <checksum type='sha256'>",
                pos: cx.pos(c),
            })?;
        let Some(&(_, digits)) = VolChecksum::ALGORITHMS
            .iter()
            .find(|(a, _)| *a == algorithm)
        else {
            return Err(cx.bad_attr(c, "type", algorithm, "sha256".to_string()));
        };
        let text = text_of(c);
        let value = text.trim();
        if value.len() != digits
            || !value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(cx.bad_text(
                c,
                &text,
                format!("{digits} lowercase hex digits (a {algorithm} digest)"),
            ));
        }
        target.checksum = Some(VolChecksum {
            algorithm: algorithm.to_string(),
            value: value.to_string(),
        });
    }
    if internal && (target.format.is_some() || !target.source.is_empty()) {
        return Err(ConfError::NotAllowed {
            what: "a new image in an internal volume snapshot".into(),
            why: "internal snapshots live inside the volume; set mode='external' or remove <source> and <driver>",
            pos: cx.pos(node),
        });
    }
    let image = target.format.is_some() || !target.source.is_empty() || target.checksum.is_some();
    if target.mode.is_none() && image {
        target.mode = Some(VolSnapshotMode::External);
    }
    Ok(target)
}
