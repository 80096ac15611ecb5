//! Storage sources: where an image lives (`<source file=.../>`,
//! `<source dev=.../>`, network sources with their hosts), its security
//! labels, and the image formats libvirt knows. Shared by snapshot disks,
//! domain disks and volume snapshots.

use roxmltree::Node;

use crate::error::{ConfError, Result};
use crate::xml::reader::{Cx, element_children, text_of};
use crate::xml::subtree::{XmlSubtree, no_secrets};
use crate::xml::writer::{Attr, XmlWriter};

/// Generates a string-backed enum with `as_str`, `FromStr` and `Display`,
/// plus the list of accepted spellings for error messages.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The XML spelling.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The accepted spellings, for error messages.
            #[must_use]
            pub fn expected() -> String {
                let names: &[&str] = &[$($text),+];
                format!("one of {}", names.join(", "))
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> std::result::Result<Self, ()> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(()),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

string_enum! {
    /// How a disk (or memory) takes part in a snapshot: libvirt's
    /// `virDomainSnapshotLocation` without its "default" (which is `None`
    /// wherever a mode is optional).
    SnapshotMode {
        /// Not snapshotted.
        No = "no",
        /// Inside the image itself (qcow2 internal snapshot).
        Internal = "internal",
        /// A new image (overlay, copy, LV, subvolume) holds the change.
        External = "external",
        /// The user snapshots the storage out of band while the guest is paused.
        Manual = "manual",
    }
}

string_enum! {
    /// The `type` of a disk or source: where the image lives.
    SourceKind {
        /// A regular file (`file=`).
        File = "file",
        /// A block device (`dev=`).
        Block = "block",
        /// A directory (`dir=`).
        Dir = "dir",
        /// A network protocol (`protocol=` `name=` and `<host>`s).
        Network = "network",
        /// A storage pool volume (`pool=` `volume=`).
        Volume = "volume",
        /// An NVMe namespace.
        Nvme = "nvme",
        /// A vhost-user socket.
        VhostUser = "vhostuser",
        /// A vhost-vdpa device.
        VhostVdpa = "vhostvdpa",
    }
}

string_enum! {
    /// Image formats libvirt knows (`virStorageFileFormat`).
    StorageFormat {
        /// Raw bytes.
        Raw = "raw",
        /// A directory.
        Dir = "dir",
        /// Bochs.
        Bochs = "bochs",
        /// Linux compressed loop.
        Cloop = "cloop",
        /// Apple disk image.
        Dmg = "dmg",
        /// ISO 9660.
        Iso = "iso",
        /// Virtual PC.
        Vpc = "vpc",
        /// VirtualBox.
        Vdi = "vdi",
        /// FAT directory.
        Fat = "fat",
        /// Hyper-V VHD.
        Vhd = "vhd",
        /// Virtuozzo ploop.
        Ploop = "ploop",
        /// LUKS encrypted.
        Luks = "luks",
        /// User-mode Linux COW.
        Cow = "cow",
        /// qcow version 1.
        Qcow = "qcow",
        /// qcow2.
        Qcow2 = "qcow2",
        /// QEMU enhanced disk.
        Qed = "qed",
        /// VMware.
        Vmdk = "vmdk",
    }
}

impl StorageFormat {
    /// Formats that can carry a backing file, the only ones the snapshot
    /// schema allows for a new external image (`storageFormatBacking`).
    #[must_use]
    pub fn supports_backing(self) -> bool {
        matches!(
            self,
            Self::Cow | Self::Qcow | Self::Qcow2 | Self::Qed | Self::Vmdk
        )
    }
}

/// A `<host>` of a network source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NetworkHost {
    /// Host name or address.
    pub name: Option<String>,
    /// Port.
    pub port: Option<String>,
    /// Transport (`tcp` is the default and is not written back).
    pub transport: Option<String>,
    /// Unix socket path, for `transport='unix'`.
    pub socket: Option<String>,
}

/// A per-source security label override (`<seclabel>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Seclabel {
    /// Security driver (`dac`, `selinux`, ...).
    pub model: Option<String>,
    /// Whether the image is relabelled (libvirt's default: yes).
    pub relabel: bool,
    /// Output-only marker that labelling was skipped.
    pub labelskip: bool,
    /// Explicit label.
    pub label: Option<String>,
}

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskSource {
    /// The `type` of the owning disk.
    pub kind: SourceKind,
    /// `file=` / `dev=` / `dir=` path, or the network `name=`.
    pub path: Option<String>,
    /// Network protocol (`rbd`, `gluster`, `nbd`, ...).
    pub protocol: Option<String>,
    /// Network hosts.
    pub hosts: Vec<NetworkHost>,
    /// Security label overrides (file and block sources only).
    pub seclabels: Vec<Seclabel>,
    /// Other attributes of `<source>` (`index`, `tls`, `pool`, ...), in
    /// document order.
    pub attributes: Vec<(String, String)>,
    /// Other children of `<source>` (`<auth>`, `<encryption>`,
    /// `<slices>`, ...), kept as written.
    pub children: Vec<XmlSubtree>,
}

impl DiskSource {
    /// A source of `kind` with nothing set.
    #[must_use]
    pub fn new(kind: SourceKind) -> Self {
        Self {
            kind,
            path: None,
            protocol: None,
            hosts: Vec::new(),
            seclabels: Vec::new(),
            attributes: Vec::new(),
            children: Vec::new(),
        }
    }

    /// A file source at `path`.
    #[must_use]
    pub fn file(path: impl Into<String>) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::new(SourceKind::File)
        }
    }

    /// Whether `<source>` would be written at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.path.is_none()
            && self.protocol.is_none()
            && self.hosts.is_empty()
            && self.seclabels.is_empty()
            && self.attributes.is_empty()
            && self.children.is_empty()
    }

    /// The local path of a file, block or directory source.
    #[must_use]
    pub fn local_path(&self) -> Option<&str> {
        match self.kind {
            SourceKind::File | SourceKind::Block | SourceKind::Dir => self.path.as_deref(),
            _ => None,
        }
    }

    /// The name a storage driver knows a network source by, the way QEMU
    /// names it on its command line: `PROTOCOL:NAME`, then the cluster
    /// options the source carries, each `:KEY=VALUE` with `:`, `;`, `=`
    /// and `\\` escaped by a backslash: `mon_host=` the `<host>`s
    /// (`name:port`, `;`-separated), `id=` the `<auth username=...>`,
    /// `conf=` the `<config file=...>`. `rbd:pool/image` for a bare
    /// `<source protocol='rbd' name='pool/image'/>`. `None` for a local
    /// source, or a network one without a protocol or name. Secrets
    /// (`<auth><secret .../>`) are libvirt's and stay out: the driver
    /// reads keys from the cluster's configuration and keyrings.
    #[must_use]
    pub fn network_volume_name(&self) -> Option<String> {
        if self.kind != SourceKind::Network {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let name = self.path.as_deref().filter(|n| !n.is_empty())?;
        let mut out = format!("{protocol}:{name}");
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .filter_map(|h| {
                let name = h.name.as_deref()?;
                Some(match &h.port {
                    Some(port) => format!("{name}:{port}"),
                    None => name.to_string(),
                })
            })
            .collect();
        if !hosts.is_empty() {
            out.push_str(":mon_host=");
            out.push_str(&escape_option(&hosts.join(";")));
        }
        let child_attr = |element: &str, attribute: &str| -> Option<String> {
            self.children
                .iter()
                .filter(|c| c.name() == element)
                .find_map(|c| {
                    let xml = c.to_xml(false);
                    let doc = roxmltree::Document::parse(&xml).ok()?;
                    doc.root_element().attribute(attribute).map(str::to_string)
                })
        };
        if let Some(user) = child_attr("auth", "username") {
            out.push_str(":id=");
            out.push_str(&escape_option(&user));
        }
        if let Some(conf) = child_attr("config", "file") {
            out.push_str(":conf=");
            out.push_str(&escape_option(&conf));
        }
        Some(out)
    }

    /// What a storage driver is handed for this source: the local path,
    /// or the network volume's name ([`DiskSource::network_volume_name`]).
    #[must_use]
    pub fn volume_name(&self) -> Option<String> {
        self.local_path()
            .map(str::to_string)
            .or_else(|| self.network_volume_name())
    }

    /// The attribute holding the path for this kind.
    fn path_attribute(kind: SourceKind) -> Option<&'static str> {
        match kind {
            SourceKind::File => Some("file"),
            SourceKind::Block | SourceKind::VhostVdpa => Some("dev"),
            SourceKind::Dir => Some("dir"),
            SourceKind::Network => Some("name"),
            SourceKind::VhostUser => Some("path"),
            SourceKind::Volume | SourceKind::Nvme => None,
        }
    }

    /// Reads `<source>` of a disk whose type is `kind`.
    pub(crate) fn parse(cx: &Cx<'_, '_>, node: Node<'_, '_>, kind: SourceKind) -> Result<Self> {
        Self::parse_with(cx, node, kind, None)
    }

    /// Reads the `<source>` of a new snapshot image: with VALIDATE it must
    /// follow the snapshot grammar; without, what the grammar does not
    /// allow is ignored (as libvirt ignores it), so the output validates.
    pub(crate) fn parse_snapshot_image(
        cx: &Cx<'_, '_>,
        node: Node<'_, '_>,
        kind: SourceKind,
    ) -> Result<Self> {
        Self::check_snapshot_schema(cx, node, kind)?;
        Self::parse_with(cx, node, kind, Some(snapshot_source_rules(kind)))
    }

    /// Reads `<source>`, keeping only the attributes and children `rules`
    /// names when given.
    fn parse_with(
        cx: &Cx<'_, '_>,
        node: Node<'_, '_>,
        kind: SourceKind,
        rules: Option<SourceRules>,
    ) -> Result<Self> {
        let mut src = Self::new(kind);
        let path_attr = Self::path_attribute(kind);
        for a in node.attributes() {
            if a.namespace().is_some_and(|ns| !ns.is_empty())
                || rules.is_some_and(|(attrs, _)| !attrs.contains(&a.name()))
            {
                continue;
            }
            match a.name() {
                n if Some(n) == path_attr => src.path = Some(a.value().to_string()),
                "protocol" if kind == SourceKind::Network => {
                    src.protocol = Some(a.value().to_string());
                }
                n => src.attributes.push((n.to_string(), a.value().to_string())),
            }
        }
        let kept = |c: &Node<'_, '_>| {
            rules.is_none_or(|(_, children)| children.contains(&c.tag_name().name()))
        };
        for c in element_children(node).filter(kept) {
            match c.tag_name().name() {
                "host" if kind == SourceKind::Network => src.hosts.push(NetworkHost {
                    name: c.attribute("name").map(str::to_string),
                    port: c.attribute("port").map(str::to_string),
                    transport: c
                        .attribute("transport")
                        .filter(|t| *t != "tcp")
                        .map(str::to_string),
                    socket: c.attribute("socket").map(str::to_string),
                }),
                "seclabel" => src.seclabels.push(parse_seclabel(cx, c)?),
                _ => src
                    .children
                    .push(XmlSubtree::from_node(cx.doc, c, no_secrets)),
            }
        }
        Ok(src)
    }

    /// With VALIDATE: the snapshot grammar's rules for a new image's source.
    fn check_snapshot_schema(cx: &Cx<'_, '_>, node: Node<'_, '_>, kind: SourceKind) -> Result<()> {
        if !cx.validate {
            return Ok(());
        }
        let (attributes, children) = snapshot_source_rules(kind);
        if node.has_attribute("startupPolicy") {
            return Err(ConfError::NotAllowed {
                what: "attribute 'startupPolicy' on a snapshot disk <source>".into(),
                why: "a new snapshot image has no startup policy; remove the attribute (it belongs on the domain's <disk> <source>)",
                pos: cx.attr_pos(node, "startupPolicy"),
            });
        }
        if kind == SourceKind::Network
            && let Some(s) = element_children(node).find(|c| c.tag_name().name() == "seclabel")
        {
            return Err(ConfError::NotAllowed {
                what: "<seclabel> inside a network <source>".into(),
                why: "only file and block sources carry security labels; remove the <seclabel>",
                pos: cx.pos(s),
            });
        }
        let required = match kind {
            SourceKind::Block => Some(("dev", "a block snapshot image is named by dev='/dev/...'")),
            SourceKind::Dir => Some(("dir", "a directory snapshot is named by dir='/path'")),
            SourceKind::Network => Some((
                "protocol",
                "a network snapshot image names its protocol, e.g. protocol='rbd'",
            )),
            _ => None,
        };
        if let Some((attribute, hint)) = required
            && !node.has_attribute(attribute)
        {
            return Err(ConfError::MissingAttribute {
                attribute,
                element: "source",
                hint,
                pos: cx.pos(node),
            });
        }
        cx.check_content(node, attributes, children, false)?;
        if let Some(p) = node.attribute("protocol")
            && !NETWORK_PROTOCOLS.contains(&p)
        {
            return Err(cx.bad_attr(
                node,
                "protocol",
                p,
                format!("one of {}", NETWORK_PROTOCOLS.join(", ")),
            ));
        }
        if let Some(t) = node.attribute("tls")
            && !matches!(t, "yes" | "no")
        {
            return Err(cx.bad_attr(node, "tls", t, "'yes' or 'no'"));
        }
        if let Some(i) = node.attribute("index")
            && !i.parse::<u32>().is_ok_and(|n| n > 0)
        {
            return Err(cx.bad_attr(node, "index", i, "a positive integer"));
        }
        for h in element_children(node).filter(|c| c.tag_name().name() == "host") {
            cx.check_content(h, &["name", "port", "transport", "socket"], &[], false)?;
            if let Some(t) = h.attribute("transport")
                && !matches!(t, "tcp" | "rdma" | "unix")
            {
                return Err(cx.bad_attr(h, "transport", t, "tcp, rdma or unix"));
            }
            if let Some(sock) = h.attribute("socket")
                && !crate::snapshot::is_abs_path(sock)
            {
                return Err(cx.bad_attr(h, "socket", sock, "an absolute path"));
            }
        }
        for s in element_children(node).filter(|c| c.tag_name().name() == "seclabel") {
            check_seclabel_schema(cx, s)?;
        }
        Ok(())
    }

    /// Writes `<source .../>` (nothing when empty).
    pub(crate) fn format(&self, w: &mut XmlWriter) {
        if self.is_empty() {
            return;
        }
        let mut attrs: Vec<Attr<'_>> = Vec::with_capacity(3 + self.attributes.len());
        if self.kind == SourceKind::Network {
            attrs.push(("protocol", self.protocol.as_deref()));
        }
        if let Some(name) = Self::path_attribute(self.kind) {
            attrs.push((name, self.path.as_deref()));
        }
        attrs.extend(
            self.attributes
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        );
        if self.hosts.is_empty() && self.seclabels.is_empty() && self.children.is_empty() {
            w.empty("source", &attrs);
            return;
        }
        w.open("source", &attrs);
        for h in &self.hosts {
            w.empty(
                "host",
                &[
                    ("name", h.name.as_deref()),
                    ("port", h.port.as_deref()),
                    ("transport", h.transport.as_deref()),
                    ("socket", h.socket.as_deref()),
                ],
            );
        }
        for s in &self.seclabels {
            let relabel = if s.relabel { "yes" } else { "no" };
            let attrs = [
                ("model", s.model.as_deref()),
                ("labelskip", s.labelskip.then_some("yes")),
                ("relabel", (!s.labelskip).then_some(relabel)),
            ];
            match &s.label {
                Some(label) => {
                    w.open("seclabel", &attrs);
                    w.text_element("label", &[], label);
                    w.close("seclabel");
                }
                None => w.empty("seclabel", &attrs),
            }
        }
        for c in &self.children {
            w.subtree(c, true);
        }
        w.close("source");
    }
}

/// Attributes and child elements allowed on a `<source>`.
type SourceRules = (&'static [&'static str], &'static [&'static str]);

/// What the snapshot grammar allows in the `<source>` of a new image.
fn snapshot_source_rules(kind: SourceKind) -> SourceRules {
    const LOCAL_CHILDREN: &[&str] = &["seclabel", "slices", "privateData", "encryption"];
    match kind {
        SourceKind::File => (&["file", "index"], LOCAL_CHILDREN),
        SourceKind::Block => (&["dev", "index"], LOCAL_CHILDREN),
        SourceKind::Dir => (&["dir", "index"], LOCAL_CHILDREN),
        _ => (
            &["protocol", "name", "tls", "tlsHostname", "query", "index"],
            &[
                "host",
                "snapshot",
                "config",
                "auth",
                "encryption",
                "reconnect",
                "timeout",
                "readahead",
                "cookies",
                "ssl",
                "knownHosts",
                "identity",
                "initiator",
                "privateData",
                "slices",
            ],
        ),
    }
}

/// `value` with `\\`, `:`, `;` and `=` escaped by a backslash, as QEMU's
/// legacy `rbd:` file names escape option values.
fn escape_option(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ':' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// libvirt's network disk protocols (`diskSourceNetworkProtocol*`).
const NETWORK_PROTOCOLS: &[&str] = &[
    "nbd", "gluster", "rbd", "iscsi", "http", "https", "ftps", "ftp", "ssh", "sheepdog", "tftp",
    "vxhs", "nfs",
];

/// The schema's three shapes of `<seclabel>`: `relabel='no'` alone,
/// `labelskip='yes'` alone, or (optionally `relabel='yes'`) with labels.
fn check_seclabel_schema(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<()> {
    cx.check_content(node, &["model", "relabel", "labelskip"], &["label"], false)?;
    for l in element_children(node) {
        cx.check_content(l, &[], &[], true)?;
    }
    let has_label = element_children(node).next().is_some();
    let shape_ok = match (node.attribute("relabel"), node.attribute("labelskip")) {
        (Some("no"), None) | (None, Some("yes")) => !has_label,
        (None | Some("yes"), None) => has_label,
        _ => false,
    };
    if shape_ok {
        return Ok(());
    }
    Err(ConfError::NotAllowed {
        what: "this combination of relabel, labelskip and <label> in <seclabel>".into(),
        why: "a seclabel override is relabel='no' alone, labelskip='yes' alone, or one or more <label> (with relabel='yes' or no relabel)",
        pos: cx.pos(node),
    })
}

fn parse_seclabel(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<Seclabel> {
    let yes_no = |attr: &str| -> Result<Option<bool>> {
        match node.attribute(attr) {
            None => Ok(None),
            Some("yes") => Ok(Some(true)),
            Some("no") => Ok(Some(false)),
            Some(other) => Err(cx.bad_attr(node, attr, other, "'yes' or 'no'")),
        }
    };
    let label = element_children(node)
        .find(|c| c.tag_name().name() == "label")
        .map(text_of);
    let relabel = yes_no("relabel")?.unwrap_or(true);
    let labelskip = yes_no("labelskip")?.unwrap_or(false);
    if !relabel && label.is_some() {
        return Err(ConfError::NotAllowed {
            what: "<label> in a <seclabel relabel='no'>".into(),
            why: "Cannot specify a label if relabelling is turned off; remove the <label> or set relabel='yes'",
            pos: cx.pos(node),
        });
    }
    if cx.validate && relabel && !labelskip && label.is_none() {
        return Err(ConfError::MissingElement {
            element: "label",
            parent: "seclabel",
            hint: "a security label override either says relabel='no' or gives the <label> to use",
            pos: cx.pos(node),
        });
    }
    Ok(Seclabel {
        model: node.attribute("model").map(str::to_string),
        relabel,
        labelskip,
        label,
    })
}

/// Parses a scaled integer (`<max_size unit='KiB'>4</max_size>`) to bytes,
/// with libvirt's units: `b`/`bytes`, `k`/`KiB` = 1024, `KB` = 1000, and so
/// on up to exabytes.
pub(crate) fn parse_scaled(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<u64> {
    let text = text_of(node);
    let value: u64 = text
        .trim()
        .parse()
        .map_err(|_| cx.bad_text(node, &text, "a non-negative integer"))?;
    let unit = node.attribute("unit").unwrap_or("b");
    let scale = unit_scale(unit).ok_or_else(|| {
        cx.bad_attr(
            node,
            "unit",
            unit,
            "b, bytes, k, KiB, KB, M, MiB, MB, G, GiB, GB, T, TiB, TB, P, PiB, PB, E, EiB or EB",
        )
    })?;
    value
        .checked_mul(scale)
        .ok_or_else(|| cx.bad_text(node, &text, "a size below 16 EiB"))
}

fn unit_scale(unit: &str) -> Option<u64> {
    let lower = unit.to_ascii_lowercase();
    if matches!(lower.as_str(), "b" | "byte" | "bytes") {
        return Some(1);
    }
    let mut chars = lower.chars();
    let exponent = match chars.next()? {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    let base: u64 = match chars.as_str() {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return None,
    };
    Some(base.pow(exponent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unit_scale_binary_and_decimal() {
        assert_eq!(unit_scale("bytes"), Some(1));
        assert_eq!(unit_scale("k"), Some(1024));
        assert_eq!(unit_scale("KiB"), Some(1024));
        assert_eq!(unit_scale("KB"), Some(1000));
        assert_eq!(unit_scale("G"), Some(1 << 30));
        assert_eq!(unit_scale("EiB"), Some(1 << 60));
        assert_eq!(unit_scale("parsec"), None);
    }

    #[test]
    fn test_storage_format_round_trips_every_spelling() {
        for f in StorageFormat::ALL {
            assert_eq!(f.as_str().parse::<StorageFormat>(), Ok(*f));
        }
        assert!(StorageFormat::Qcow2.supports_backing());
        assert!(!StorageFormat::Raw.supports_backing());
    }
}
