//! The parts of a libvirt `<domain>` definition that snapshots need: name,
//! UUID and every disk (device kind, type, driver, source, target,
//! read-only, shareable, the disk's default snapshot mode and its backing
//! chain). The rest of the domain stays in the kept [`XmlSubtree`].

use std::collections::HashSet;

use roxmltree::Node;
use uuid::Uuid;

use crate::error::{ConfError, Result};
use crate::source::{DiskSource, SnapshotMode, SourceKind, StorageFormat, string_enum};
use crate::xml::reader::{self, Cx, element_children, text_of};
use crate::xml::subtree::{XmlSubtree, domain_secrets};

string_enum! {
    /// What a disk looks like to the guest (`<disk device=...>`).
    DiskDevice {
        /// A hard disk (the default).
        Disk = "disk",
        /// A CD-ROM drive.
        Cdrom = "cdrom",
        /// A floppy drive.
        Floppy = "floppy",
        /// A SCSI LUN passed through.
        Lun = "lun",
    }
}

/// One layer of a disk's `<backingStore>` chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackingLayer {
    /// Where the layer lives.
    pub source: DiskSource,
    /// Its format (`<format type=...>`), as written.
    pub format: Option<String>,
}

/// A disk of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainDisk {
    /// `device=` (disk when absent).
    pub device: DiskDevice,
    /// `type=` and `<source>`.
    pub source: DiskSource,
    /// `<driver name=...>` (`qemu`).
    pub driver_name: Option<String>,
    /// `<driver type=...>` (`qcow2`, `raw`, ...), as written.
    pub driver_type: Option<String>,
    /// `<target dev=...>` (`vda`).
    pub target: String,
    /// `<target bus=...>` (`virtio`, `ide`, ...).
    pub bus: Option<String>,
    /// `<readonly/>`.
    pub readonly: bool,
    /// `<shareable/>`.
    pub shareable: bool,
    /// The disk's own `snapshot=` attribute: its default snapshot mode.
    pub snapshot: Option<SnapshotMode>,
    /// The `<backingStore>` chain, top first; `None` when the element is
    /// absent (chain unknown), an empty list for `<backingStore/>` (no
    /// backing image).
    pub backing_chain: Option<Vec<BackingLayer>>,
}

impl DomainDisk {
    /// The image format, if known.
    #[must_use]
    pub fn format(&self) -> Option<StorageFormat> {
        self.driver_type.as_deref().and_then(|t| t.parse().ok())
    }

    /// Whether the drive has no medium (an empty CD-ROM): libvirt's
    /// `virStorageSourceIsEmpty`, a file, block or directory source without
    /// a path, or a network source without a protocol.
    #[must_use]
    pub fn is_empty_drive(&self) -> bool {
        match self.source.kind {
            SourceKind::File | SourceKind::Block | SourceKind::Dir => self.source.path.is_none(),
            SourceKind::Network => self.source.protocol.is_none(),
            _ => false,
        }
    }
}

/// The typed view of a `<domain>` that snapshots need.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DomainDef {
    /// `<domain type=...>` (`qemu`, `kvm`, ...).
    pub hypervisor: Option<String>,
    /// `<name>`.
    pub name: Option<String>,
    /// `<uuid>`.
    pub uuid: Option<Uuid>,
    /// `<devices>/<disk>`, in document order.
    pub disks: Vec<DomainDisk>,
}

/// A domain definition: the typed view and the subtree as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain {
    /// What snapshots use.
    pub def: DomainDef,
    /// The whole element, re-emitted as written.
    pub xml: XmlSubtree,
}

impl Domain {
    /// Parses a standalone `<domain>` document (as `virsh dumpxml` writes it).
    ///
    /// # Errors
    /// Malformed XML, another root element, an invalid UUID, a disk without
    /// target, or two disks with one target.
    pub fn parse(xml: &str) -> Result<Self> {
        let doc = reader::load(xml)?;
        let cx = Cx {
            doc: &doc,
            validate: false,
        };
        let root = cx.expect_root("domain")?;
        Self::from_node(&cx, root)
    }

    /// Reads a `<domain>` or `<inactiveDomain>` element.
    pub(crate) fn from_node(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<Self> {
        Ok(Self {
            def: DomainDef::from_node(cx, node)?,
            xml: XmlSubtree::from_node(cx.doc, node, domain_secrets),
        })
    }
}

impl DomainDef {
    /// Reads the typed subset of a `<domain>` element.
    pub(crate) fn from_node(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<Self> {
        let uuid = match cx.child(node, "uuid")? {
            Some(u) => Some(parse_uuid(cx, u)?),
            None => None,
        };
        let mut disks: Vec<DomainDisk> = Vec::new();
        if let Some(devices) = cx.child(node, "devices")? {
            let mut targets = HashSet::new();
            for d in element_children(devices).filter(|c| c.tag_name().name() == "disk") {
                let disk = parse_disk(cx, d)?;
                if !targets.insert(disk.target.clone()) {
                    return Err(ConfError::DuplicateTarget {
                        target: disk.target,
                    });
                }
                disks.push(disk);
            }
        }
        Ok(Self {
            hypervisor: node.attribute("type").map(str::to_string),
            name: cx.child_text(node, "name")?,
            uuid,
            disks,
        })
    }

    /// The disk whose target is `target`.
    #[must_use]
    pub fn disk_by_target(&self, target: &str) -> Option<&DomainDisk> {
        self.disks.iter().find(|d| d.target == target)
    }
}

/// Parses a UUID in libvirt's two spellings (with or without dashes).
pub(crate) fn parse_uuid(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<Uuid> {
    let text = text_of(node);
    let t = text.trim();
    let ok_shape = (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        || (t.len() == 36 && Uuid::try_parse(t).is_ok());
    if !ok_shape {
        return Err(cx.bad_text(
            node,
            &text,
            "a UUID such as 9d37b878-a7cc-9f9a-b78f-49b3abad25a8",
        ));
    }
    Uuid::try_parse(t).map_err(|_| cx.bad_text(node, &text, "a UUID"))
}

fn parse_disk(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<DomainDisk> {
    let kind = match node.attribute("type") {
        None => SourceKind::File,
        Some(t) => t
            .parse()
            .map_err(|()| cx.bad_attr(node, "type", t, SourceKind::expected()))?,
    };
    let device = match node.attribute("device") {
        None => DiskDevice::Disk,
        Some(d) => d
            .parse()
            .map_err(|()| cx.bad_attr(node, "device", d, DiskDevice::expected()))?,
    };
    let snapshot = match node.attribute("snapshot") {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|()| cx.bad_attr(node, "snapshot", s, SnapshotMode::expected()))?,
        ),
    };
    let source = match cx.child(node, "source")? {
        Some(s) => DiskSource::parse(cx, s, kind)?,
        None => DiskSource::new(kind),
    };
    let driver = cx.child(node, "driver")?;
    let target_node = cx.child(node, "target")?;
    let target = target_node
        .and_then(|t| t.attribute("dev"))
        .ok_or_else(|| ConfError::MissingAttribute {
            attribute: "dev",
            element: "target",
            hint: "every domain disk needs <target dev='vda'/> (or hda, sda, ...)",
            pos: cx.pos(target_node.unwrap_or(node)),
        })?
        .to_string();
    let backing_chain = match cx.child(node, "backingStore")? {
        Some(b) => Some(parse_backing_chain(cx, b)?),
        None => None,
    };
    Ok(DomainDisk {
        device,
        source,
        driver_name: driver.and_then(|d| d.attribute("name")).map(str::to_string),
        driver_type: driver.and_then(|d| d.attribute("type")).map(str::to_string),
        target,
        bus: target_node
            .and_then(|t| t.attribute("bus"))
            .map(str::to_string),
        readonly: cx.child(node, "readonly")?.is_some(),
        shareable: cx.child(node, "shareable")?.is_some(),
        snapshot,
        backing_chain,
    })
}

/// Walks nested `<backingStore>` elements iteratively (depth is already
/// bounded by the loader, but a loop needs no stack at all).
fn parse_backing_chain(cx: &Cx<'_, '_>, first: Node<'_, '_>) -> Result<Vec<BackingLayer>> {
    let mut chain = Vec::new();
    let mut current = Some(first);
    while let Some(node) = current {
        let Some(t) = node.attribute("type") else {
            // `<backingStore/>`: the chain ends here.
            break;
        };
        let kind = t
            .parse()
            .map_err(|()| cx.bad_attr(node, "type", t, SourceKind::expected()))?;
        let source = match cx.child(node, "source")? {
            Some(s) => DiskSource::parse(cx, s, kind)?,
            None => DiskSource::new(kind),
        };
        let format = cx
            .child(node, "format")?
            .and_then(|f| f.attribute("type"))
            .map(str::to_string);
        chain.push(BackingLayer { source, format });
        current = cx.child(node, "backingStore")?;
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = r"<domain type='kvm'>
  <name>vm1</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <devices>
    <disk type='file' device='disk' snapshot='external'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/top.qcow2'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/img/base.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/img'><host name='mon1' port='6789'/></source>
      <target dev='vdb' bus='virtio'/>
      <shareable/>
    </disk>
  </devices>
</domain>";

    #[test]
    fn test_domain_typed_subset() {
        let d = Domain::parse(DOMAIN).expect("valid domain");
        assert_eq!(d.def.name.as_deref(), Some("vm1"));
        assert_eq!(d.def.hypervisor.as_deref(), Some("kvm"));
        assert_eq!(
            d.def.uuid.map(|u| u.to_string()).as_deref(),
            Some("c7a5fdbd-edaf-9455-926a-d65c16db1809")
        );
        assert_eq!(d.def.disks.len(), 3);
        let vda = &d.def.disks[0];
        assert_eq!(vda.snapshot, Some(SnapshotMode::External));
        assert_eq!(vda.format(), Some(StorageFormat::Qcow2));
        assert_eq!(vda.driver_name.as_deref(), Some("qemu"));
        assert_eq!(vda.bus.as_deref(), Some("virtio"));
        let chain = vda.backing_chain.as_ref().expect("chain given");
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].source.path.as_deref(), Some("/img/base.qcow2"));
        let cd = &d.def.disks[1];
        assert_eq!(cd.device, DiskDevice::Cdrom);
        assert!(cd.readonly && cd.is_empty_drive());
        let rbd = &d.def.disks[2];
        assert_eq!(rbd.source.kind, SourceKind::Network);
        assert_eq!(rbd.source.protocol.as_deref(), Some("rbd"));
        assert_eq!(rbd.source.hosts[0].name.as_deref(), Some("mon1"));
        assert!(rbd.shareable);
        assert_eq!(
            rbd.source.volume_name().as_deref(),
            Some("rbd:pool/img:mon_host=mon1\\:6789")
        );
        assert_eq!(vda.source.volume_name().as_deref(), Some("/img/top.qcow2"));
    }

    #[test]
    fn test_rbd_disk_volume_name_carries_hosts_user_and_conf() {
        let xml = "<domain><name>d</name><devices><disk type='network'>
            <source protocol='rbd' name='pool/ns/img'>
              <host name='10.0.0.1' port='3300'/><host name='10.0.0.2'/>
              <auth username='virt'><secret type='ceph' usage='client.virt'/></auth>
              <config file='/etc/ceph/c=1.conf'/>
            </source><target dev='vda'/></disk>
            <disk type='network'><source protocol='rbd'/><target dev='vdb'/></disk>
            </devices></domain>";
        let d = Domain::parse(xml).expect("valid domain");
        assert_eq!(
            d.def.disks[0].source.volume_name().as_deref(),
            Some(
                "rbd:pool/ns/img:mon_host=10.0.0.1\\:3300\\;10.0.0.2:id=virt:conf=/etc/ceph/c\\=1.conf"
            )
        );
        assert_eq!(d.def.disks[1].source.volume_name(), None);
    }

    #[test]
    fn test_domain_duplicate_target_refused() {
        let xml = "<domain><devices><disk><target dev='vda'/></disk><disk><target dev='vda'/></disk></devices></domain>";
        assert_eq!(
            Domain::parse(xml),
            Err(ConfError::DuplicateTarget {
                target: "vda".into()
            })
        );
    }

    #[test]
    fn test_domain_disk_without_target_refused() {
        let err = Domain::parse("<domain><devices><disk type='file'/></devices></domain>")
            .expect_err("no target");
        assert!(matches!(
            err,
            ConfError::MissingAttribute {
                attribute: "dev",
                ..
            }
        ));
        assert!(err.to_string().contains("line 1, column 18"), "{err}");
    }

    #[test]
    fn test_domain_bad_uuid_refused_with_position() {
        let err = Domain::parse("<domain>\n  <uuid>nope</uuid>\n</domain>").expect_err("bad uuid");
        assert_eq!(
            err.to_string(),
            "invalid value 'nope' for <uuid> at line 2, column 3; expected a UUID such as 9d37b878-a7cc-9f9a-b78f-49b3abad25a8"
        );
    }
}
