//! `<domainsnapshot>`: the typed definition, its parser (libvirt's rules of
//! `virDomainSnapshotDefParse`) and its formatter (libvirt's exact output
//! of `virDomainSnapshotDefFormatInternal`).
//!
//! ```text
//! <domainsnapshot>            DomainSnapshotDef
//!   <name/> <description/>    name, description
//!   <state/> <parent/>        state, parent                (REDEFINE)
//!   <creationTime/>           creation_time
//!   <memory snapshot= file=/> memory, memory_file
//!   <disks><disk/>...         disks: SnapshotDisk
//!   <revertDisks>...          revert_disks                 (REDEFINE)
//!   <domain/>                 domain: EmbeddedDomain       (REDEFINE)
//!   <inactiveDomain/>         inactive_domain              (REDEFINE)
//!   <cookie/>                 cookie                       (REDEFINE)
//!   <active/>                 Parsed::current              (INTERNAL)
//! ```

use roxmltree::Node;
use uuid::Uuid;

use crate::domain::{Domain, parse_uuid};
use crate::error::{ConfError, Result};
use crate::flags::{FormatFlags, FormatOptions, ParseFlags, ParseOptions};
use crate::source::{
    DiskSource, SnapshotMode, SourceKind, StorageFormat, parse_scaled, string_enum,
};
use crate::xml::reader::{self, Cx, element_children, in_no_namespace, text_of};
use crate::xml::subtree::{XmlSubtree, no_secrets};
use crate::xml::writer::{MomentHeader, XmlWriter};

string_enum! {
    /// The domain's state when the snapshot was taken.
    SnapshotState {
        /// Running.
        Running = "running",
        /// Blocked on a resource.
        Blocked = "blocked",
        /// Paused.
        Paused = "paused",
        /// Being shut down.
        Shutdown = "shutdown",
        /// Shut off: an offline snapshot.
        Shutoff = "shutoff",
        /// Crashed.
        Crashed = "crashed",
        /// Suspended by guest power management (libvirt accepts it; the
        /// schema does not).
        PmSuspended = "pmsuspended",
        /// A disk-only snapshot of a running domain.
        DiskSnapshot = "disk-snapshot",
    }
}

impl SnapshotState {
    /// Whether a snapshot in this state holds no memory (libvirt's
    /// "offline": shut off or disk-only).
    #[must_use]
    pub fn is_offline(self) -> bool {
        matches!(self, Self::Shutoff | Self::DiskSnapshot)
    }
}

/// One `<disk>` of a snapshot: which domain disk and how it is captured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotDisk {
    /// Target (`vda`) or source path naming the domain disk.
    pub name: String,
    /// `snapshot=`; `None` is libvirt's default (decided by alignment).
    pub mode: Option<SnapshotMode>,
    /// The new image of an external snapshot (`type=` and `<source>`).
    pub source: DiskSource,
    /// `<driver type=...>`: format of the new image.
    pub format: Option<StorageFormat>,
    /// `<driver><metadata_cache><max_size>` in bytes.
    pub metadata_cache_max_size: Option<u64>,
    /// `<snapshotDeleteInProgress/>` (REDEFINE only).
    pub delete_in_progress: bool,
}

impl SnapshotDisk {
    /// A disk entry with only a name and a mode.
    #[must_use]
    pub fn new(name: impl Into<String>, mode: Option<SnapshotMode>) -> Self {
        Self {
            name: name.into(),
            mode,
            source: DiskSource::new(SourceKind::File),
            format: None,
            metadata_cache_max_size: None,
            delete_in_progress: false,
        }
    }

    /// Whether a new image is described (libvirt writes `type=`, `<driver>`
    /// and `<source>` only then).
    #[must_use]
    pub fn describes_image(&self) -> bool {
        self.format.is_some() || !self.source.is_empty()
    }
}

/// `<domain>` inside a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EmbeddedDomain {
    /// The old short form `<domain><uuid>...</uuid></domain>`.
    Uuid(Uuid),
    /// The full domain definition at snapshot time.
    Full(Box<Domain>),
}

/// A `<domainsnapshot>` definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DomainSnapshotDef {
    /// `<name>`.
    pub name: Option<String>,
    /// `<description>`.
    pub description: Option<String>,
    /// `<state>`.
    pub state: Option<SnapshotState>,
    /// `<parent><name>`.
    pub parent: Option<String>,
    /// `<creationTime>`, seconds since the epoch.
    pub creation_time: Option<i64>,
    /// `<memory snapshot=...>`; `None` is libvirt's default.
    pub memory: Option<SnapshotMode>,
    /// `<memory file=...>`.
    pub memory_file: Option<String>,
    /// `<disks>`.
    pub disks: Vec<SnapshotDisk>,
    /// `<revertDisks>`: bookkeeping of reverts of external snapshots.
    pub revert_disks: Vec<SnapshotDisk>,
    /// `<domain>`.
    pub domain: Option<EmbeddedDomain>,
    /// `<inactiveDomain>`: persistent definition of a running domain.
    pub inactive_domain: Option<Box<Domain>>,
    /// `<cookie>`: hypervisor-private data, kept as written.
    pub cookie: Option<XmlSubtree>,
}

/// A parsed definition and what `<active>` said (INTERNAL parses only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<T> {
    /// The definition.
    pub def: T,
    /// `<active>1</active>`: this snapshot is the current one.
    pub current: bool,
}

const TOP_LEVEL: &[&str] = &[
    "name",
    "description",
    "state",
    "creationTime",
    "memory",
    "disks",
    "revertDisks",
    "active",
    "domain",
    "inactiveDomain",
    "parent",
    "cookie",
];

impl DomainSnapshotDef {
    /// Parses a `<domainsnapshot>` document.
    ///
    /// # Errors
    /// Malformed or hostile XML, a value or combination libvirt refuses
    /// (see [`ConfError`]), or with [`ParseFlags::VALIDATE`] anything the
    /// schema refuses.
    pub fn parse(xml: &str, options: &ParseOptions) -> Result<Parsed<Self>> {
        let doc = reader::load(xml)?;
        let flags = options.flags;
        let cx = Cx {
            doc: &doc,
            validate: flags.contains(ParseFlags::VALIDATE),
        };
        let root = cx.expect_root("domainsnapshot")?;
        cx.check_content(root, &[], TOP_LEVEL, false)?;
        let redefine = flags.contains(ParseFlags::REDEFINE);

        // libvirt reads these with `string(./name)`: an empty element
        // counts as absent.
        let mut def = Self {
            name: cx.child_text(root, "name")?,
            description: cx.child_text(root, "description")?,
            ..Self::default()
        };
        for leaf in ["name", "description"] {
            if let Some(n) = cx.child(root, leaf)? {
                cx.check_content(n, &[], &[], true)?;
            }
        }
        let mut offline = flags.contains(ParseFlags::OFFLINE);

        if redefine {
            if def.name.is_none() {
                return Err(ConfError::MissingElement {
                    element: "name",
                    parent: "domainsnapshot",
                    hint: "a redefined snapshot must have a name",
                    pos: cx.pos(root),
                });
            }
            def.creation_time = Some(parse_creation_time(&cx, root, "domainsnapshot")?);
            let state = parse_state(&cx, root)?;
            offline = state.is_offline();
            def.state = Some(state);
            if let Some(p) = cx.child(root, "parent")? {
                cx.check_content(p, &[], &["name"], false)?;
                def.parent = cx.child_text(p, "name")?;
            }
            def.domain = parse_embedded_domain(&cx, root)?;
            if let Some(d) = cx.child(root, "inactiveDomain")? {
                def.inactive_domain = Some(Box::new(Domain::from_node(&cx, d)?));
            }
            if let Some(c) = cx.child(root, "revertDisks")? {
                def.revert_disks = parse_disks(&cx, c, redefine)?;
            }
        } else {
            if cx.validate {
                validate_ignored(&cx, root)?;
            }
            if let Some(t) = options.creation_time {
                def.creation_time = Some(t);
                if def.name.is_none() {
                    def.name = Some(t.to_string());
                }
            }
        }

        parse_memory(&cx, root, redefine, offline, &mut def)?;
        if let Some(d) = cx.child(root, "disks")? {
            def.disks = parse_disks(&cx, d, redefine)?;
        }

        let mut current = false;
        if flags.contains(ParseFlags::INTERNAL) {
            current = parse_active(&cx, root)?;
        } else if let Some(a) = cx.child(root, "active")? {
            // Allowed by the schema; only our metadata files give it meaning.
            if cx.validate {
                check_active_value(&cx, a)?;
            }
        }
        // libvirt reads a cookie only with memory state; our own metadata
        // files also keep virtsnap's record of how each disk was taken
        // (`crate::cookie`) in offline snapshots.
        if redefine
            && (!offline || flags.contains(ParseFlags::INTERNAL))
            && let Some(c) = cx.child(root, "cookie")?
        {
            def.cookie = Some(XmlSubtree::from_node(cx.doc, c, no_secrets));
        }
        Ok(Parsed { def, current })
    }

    /// Writes the definition exactly as libvirt writes it.
    #[must_use]
    pub fn format(&self, options: &FormatOptions) -> String {
        let flags = options.flags;
        let mut w = XmlWriter::with_capacity(self.size_hint());
        w.open("domainsnapshot", &[]);
        w.moment_header(&MomentHeader {
            name: self.name.as_deref(),
            description: self.description.as_deref(),
            state: self.state.map(|s| s.as_str()),
            parent: self.parent.as_deref(),
            creation_time: self.creation_time,
        });
        if self.memory.is_some() || self.memory_file.is_some() {
            w.empty(
                "memory",
                &[
                    ("snapshot", self.memory.map(SnapshotMode::as_str)),
                    ("file", self.memory_file.as_deref()),
                ],
            );
        }
        format_disks(&mut w, "disks", &self.disks);
        format_disks(&mut w, "revertDisks", &self.revert_disks);
        if !flags.contains(FormatFlags::NO_DOMAIN) {
            let secure = flags.contains(FormatFlags::SECURE);
            let uuid = match &self.domain {
                Some(EmbeddedDomain::Full(d)) => {
                    w.subtree(&d.xml, secure);
                    None
                }
                Some(EmbeddedDomain::Uuid(u)) => Some(*u),
                None => options.domain_uuid,
            };
            if let Some(u) = uuid {
                w.open("domain", &[]);
                w.text_element("uuid", &[], &u.to_string());
                w.close("domain");
            }
            if let Some(d) = &self.inactive_domain {
                w.subtree(&d.xml, secure);
            }
        }
        if let Some(c) = &self.cookie {
            w.subtree(c, true);
        }
        if flags.contains(FormatFlags::INTERNAL) {
            let active = if flags.contains(FormatFlags::CURRENT) {
                "1"
            } else {
                "0"
            };
            w.text_element("active", &[], active);
        }
        w.close("domainsnapshot");
        w.finish()
    }

    fn size_hint(&self) -> usize {
        let domain = match &self.domain {
            Some(EmbeddedDomain::Full(d)) => d.xml.len_hint(),
            _ => 0,
        };
        let inactive = self
            .inactive_domain
            .as_ref()
            .map_or(0, |d| d.xml.len_hint());
        let cookie = self.cookie.as_ref().map_or(0, XmlSubtree::len_hint);
        512 + 160 * (self.disks.len() + self.revert_disks.len()) + domain + inactive + cookie
    }

    /// Whether the snapshot is external: memory or any disk external
    /// (libvirt's `virDomainSnapshotDefIsExternal`).
    #[must_use]
    pub fn is_external(&self) -> bool {
        self.memory == Some(SnapshotMode::External)
            || self
                .disks
                .iter()
                .any(|d| d.mode == Some(SnapshotMode::External))
    }

    /// UUID of the embedded domain, if any.
    #[must_use]
    pub fn domain_uuid(&self) -> Option<Uuid> {
        match &self.domain {
            Some(EmbeddedDomain::Uuid(u)) => Some(*u),
            Some(EmbeddedDomain::Full(d)) => d.def.uuid,
            None => None,
        }
    }
}

/// A creation request ignores the output-only elements, but VALIDATE
/// still refuses what the schema refuses in them.
fn validate_ignored(cx: &Cx<'_, '_>, root: Node<'_, '_>) -> Result<()> {
    if cx.child(root, "state")?.is_some() {
        parse_state(cx, root)?;
    }
    if let Some(p) = cx.child(root, "parent")? {
        cx.check_content(p, &[], &["name"], false)?;
    }
    parse_embedded_domain(cx, root)?;
    if let Some(d) = cx.child(root, "inactiveDomain")? {
        Domain::from_node(cx, d)?;
    }
    if let Some(c) = cx.child(root, "revertDisks")? {
        parse_disks(cx, c, false)?;
    }
    Ok(())
}

pub(crate) fn parse_creation_time(
    cx: &Cx<'_, '_>,
    root: Node<'_, '_>,
    parent: &'static str,
) -> Result<i64> {
    let node = cx.child(root, "creationTime")?.ok_or_else(|| ConfError::MissingElement {
        element: "creationTime",
        parent,
        hint: "missing creationTime from existing snapshot: a redefined snapshot keeps the time it was taken (seconds since 1970)",
        pos: cx.pos(root),
    })?;
    cx.check_content(node, &[], &[], true)?;
    let text = text_of(node);
    text.trim()
        .parse()
        .map_err(|_| cx.bad_text(node, &text, "seconds since 1970-01-01 as an integer"))
}

fn parse_state(cx: &Cx<'_, '_>, root: Node<'_, '_>) -> Result<SnapshotState> {
    let node = cx.child(root, "state")?.ok_or_else(|| ConfError::MissingElement {
        element: "state",
        parent: "domainsnapshot",
        hint: "missing state from existing snapshot: give the domain state it was taken in (running, paused, shutoff, disk-snapshot, ...)",
        pos: cx.pos(root),
    })?;
    cx.check_content(node, &[], &[], true)?;
    let text = text_of(node);
    let state: SnapshotState = text
        .trim()
        .parse()
        .map_err(|()| cx.bad_text(node, &text, SnapshotState::expected()))?;
    if cx.validate && state == SnapshotState::PmSuspended {
        return Err(cx.bad_text(
            node,
            &text,
            "one of running, blocked, paused, shutdown, shutoff, crashed, disk-snapshot",
        ));
    }
    Ok(state)
}

fn parse_embedded_domain(cx: &Cx<'_, '_>, root: Node<'_, '_>) -> Result<Option<EmbeddedDomain>> {
    let Some(node) = cx.child(root, "domain")? else {
        return Ok(None);
    };
    let uuid_only = !node.has_attribute("type")
        && element_children(node).all(|c| c.tag_name().name() == "uuid");
    if uuid_only {
        cx.check_content(node, &[], &["uuid"], false)?;
        return match cx.child(node, "uuid")? {
            Some(u) => Ok(Some(EmbeddedDomain::Uuid(parse_uuid(cx, u)?))),
            None if cx.validate => Err(ConfError::MissingElement {
                element: "uuid",
                parent: "domain",
                hint: "the short form of <domain> in a snapshot holds the domain's <uuid>",
                pos: cx.pos(node),
            }),
            None => Ok(None),
        };
    }
    if cx.validate && !node.has_attribute("type") {
        return Err(ConfError::MissingAttribute {
            attribute: "type",
            element: "domain",
            hint: "a full domain definition names its hypervisor, e.g. type='kvm'",
            pos: cx.pos(node),
        });
    }
    Ok(Some(EmbeddedDomain::Full(Box::new(Domain::from_node(
        cx, node,
    )?))))
}

fn parse_memory(
    cx: &Cx<'_, '_>,
    root: Node<'_, '_>,
    redefine: bool,
    offline: bool,
    def: &mut DomainSnapshotDef,
) -> Result<()> {
    let node = cx.child(root, "memory")?;
    let mut mode = None;
    if let Some(m) = node {
        cx.check_content(m, &["snapshot", "file"], &[], false)?;
        if let Some(s) = m.attribute("snapshot") {
            let parsed: SnapshotMode = s
                .parse()
                .map_err(|()| cx.bad_attr(m, "snapshot", s, "one of no, internal, external"))?;
            if parsed == SnapshotMode::Manual {
                return Err(ConfError::ManualMemory {
                    pos: cx.attr_pos(m, "snapshot"),
                });
            }
            mode = Some(parsed);
        }
        def.memory_file = m.attribute("file").map(str::to_string);
    }
    let pos = || node.and_then(|m| cx.pos(m));
    if mode.is_none() {
        if def.memory_file.is_some() {
            mode = Some(SnapshotMode::External);
        } else if redefine {
            mode = Some(if offline {
                SnapshotMode::No
            } else {
                SnapshotMode::Internal
            });
        }
    }
    if let Some(file) = &def.memory_file
        && mode != Some(SnapshotMode::External)
    {
        return Err(ConfError::MemoryFileNeedsExternal {
            file: file.clone(),
            pos: pos(),
        });
    }
    if mode == Some(SnapshotMode::External) && def.memory_file.is_none() {
        return Err(ConfError::ExternalMemoryNeedsFile { pos: pos() });
    }
    if offline && !matches!(mode, None | Some(SnapshotMode::No)) {
        return Err(ConfError::MemoryWithOffline { pos: pos() });
    }
    if let Some(file) = &def.memory_file
        && !is_abs_path(file)
    {
        return Err(ConfError::RelativePath {
            what: "memory snapshot file",
            path: file.clone(),
            pos: node.and_then(|m| cx.attr_pos(m, "file")),
        });
    }
    def.memory = mode;
    Ok(())
}

fn parse_active(cx: &Cx<'_, '_>, root: Node<'_, '_>) -> Result<bool> {
    let node = cx.child(root, "active")?.ok_or_else(|| ConfError::MissingElement {
        element: "active",
        parent: "domainsnapshot",
        hint: "could not find 'active' element: snapshot metadata files record <active>1</active> on the current snapshot and <active>0</active> on the others",
        pos: cx.pos(root),
    })?;
    if cx.validate {
        check_active_value(cx, node)?;
    }
    let text = text_of(node);
    let value: i64 = text
        .trim()
        .parse()
        .map_err(|_| cx.bad_text(node, &text, "0 or 1"))?;
    Ok(value != 0)
}

fn check_active_value(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<()> {
    cx.check_content(node, &[], &[], true)?;
    let text = text_of(node);
    if text != "0" && text != "1" {
        return Err(cx.bad_text(node, &text, "0 or 1"));
    }
    Ok(())
}

fn parse_disks(cx: &Cx<'_, '_>, node: Node<'_, '_>, redefine: bool) -> Result<Vec<SnapshotDisk>> {
    cx.check_content(node, &[], &["disk"], false)?;
    element_children(node)
        .filter(|c| c.tag_name().name() == "disk" && in_no_namespace(*c))
        .map(|d| parse_disk(cx, d, redefine))
        .collect()
}

/// Reads one `<disk>` of `<disks>` or `<revertDisks>`.
pub(crate) fn parse_disk(
    cx: &Cx<'_, '_>,
    node: Node<'_, '_>,
    redefine: bool,
) -> Result<SnapshotDisk> {
    let name = node.attribute("name").ok_or_else(|| ConfError::MissingAttribute {
        attribute: "name",
        element: "disk",
        hint: "missing name from disk snapshot element: name the disk by its target (vda) or its source path",
        pos: cx.pos(node),
    })?;
    if cx.validate && !is_target_dev(name) && !is_abs_path(name) {
        return Err(cx.bad_attr(
            node,
            "name",
            name,
            "a disk target such as vda or hdb, or an absolute source path",
        ));
    }
    let mode = match node.attribute("snapshot") {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|()| cx.bad_attr(node, "snapshot", s, SnapshotMode::expected()))?,
        ),
    };
    let kind = match node.attribute("type") {
        None => SourceKind::File,
        Some(t) => match t.parse() {
            Ok(k @ (SourceKind::File | SourceKind::Block | SourceKind::Network)) => k,
            _ => {
                return Err(cx.bad_attr(
                    node,
                    "type",
                    t,
                    "file, block or network: unsupported disk snapshot type (a new snapshot image cannot be a directory or a pool volume)",
                ));
            }
        },
    };
    if cx.validate {
        let image_allowed = matches!(mode, None | Some(SnapshotMode::External));
        let children: &[&str] = if image_allowed {
            &["source", "driver", "snapshotDeleteInProgress"]
        } else {
            &[]
        };
        let attributes: &[&str] = if image_allowed {
            &["name", "snapshot", "type"]
        } else {
            &["name", "snapshot"]
        };
        cx.check_content(node, attributes, children, false)?;
    }

    let mut disk = SnapshotDisk::new(name, mode);
    disk.source.kind = kind;
    if let Some(s) = cx.child(node, "source")? {
        disk.source = DiskSource::parse_snapshot_image(cx, s, kind)?;
        if let Some(path) = disk.source.local_path()
            && !is_abs_path(path)
        {
            return Err(ConfError::RelativePath {
                what: "disk snapshot image",
                path: path.to_string(),
                pos: cx.pos(s),
            });
        }
    }
    if let Some(d) = cx.child(node, "driver")? {
        cx.check_content(d, &["type"], &["metadata_cache"], false)?;
        if let Some(t) = d.attribute("type") {
            let format: StorageFormat = t.parse().map_err(|()| {
                cx.bad_attr(
                    d,
                    "type",
                    t,
                    "a known image format (unknown disk snapshot driver): raw, qcow2, qed, vmdk, ...",
                )
            })?;
            if cx.validate && !format.supports_backing() {
                return Err(cx.bad_attr(
                    d,
                    "type",
                    t,
                    "a format that can have a backing file: cow, qcow, qcow2, qed or vmdk",
                ));
            }
            disk.format = Some(format);
        }
        if let Some(cache) = cx.child(d, "metadata_cache")? {
            cx.check_content(cache, &[], &["max_size"], false)?;
            if let Some(max) = cx.child(cache, "max_size")? {
                cx.check_content(max, &["unit"], &[], true)?;
                disk.metadata_cache_max_size = Some(parse_scaled(cx, max)?);
            }
        }
    }
    if redefine {
        disk.delete_in_progress = cx.child(node, "snapshotDeleteInProgress")?.is_some();
    }
    if disk.mode.is_none() && (disk.source.path.is_some() || disk.format.is_some()) {
        disk.mode = Some(SnapshotMode::External);
    }
    Ok(disk)
}

fn format_disks(w: &mut XmlWriter, element: &str, disks: &[SnapshotDisk]) {
    if disks.is_empty() {
        return;
    }
    w.open(element, &[]);
    for d in disks {
        format_disk(w, d);
    }
    w.close(element);
}

/// Writes one snapshot `<disk>` as libvirt does.
pub(crate) fn format_disk(w: &mut XmlWriter, d: &SnapshotDisk) {
    let image = d.describes_image();
    let attrs = [
        ("name", Some(d.name.as_str())),
        ("snapshot", d.mode.map(SnapshotMode::as_str)),
        ("type", image.then(|| d.source.kind.as_str())),
    ];
    if !image && !d.delete_in_progress {
        w.empty("disk", &attrs);
        return;
    }
    w.open("disk", &attrs);
    if d.delete_in_progress {
        w.empty("snapshotDeleteInProgress", &[]);
    }
    if image {
        format_driver(w, d.format, d.metadata_cache_max_size);
        d.source.format(w);
    }
    w.close("disk");
}

/// `<driver type=...>` with an optional metadata cache; nothing when empty.
pub(crate) fn format_driver(w: &mut XmlWriter, format: Option<StorageFormat>, cache: Option<u64>) {
    let attrs = [("type", format.map(StorageFormat::as_str))];
    match cache {
        None if format.is_some() => w.empty("driver", &attrs),
        None => {}
        Some(bytes) => {
            w.open("driver", &attrs);
            w.open("metadata_cache", &[]);
            w.text_element("max_size", &[("unit", Some("bytes"))], &bytes.to_string());
            w.close("metadata_cache");
            w.close("driver");
        }
    }
}

/// libvirt's `absFilePath`: `/...` or a Windows drive path.
pub(crate) fn is_abs_path(path: &str) -> bool {
    let b = path.as_bytes();
    (b.first() == Some(&b'/') && b.len() > 1)
        || (b.len() > 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\')
}

/// libvirt's `diskTargetDev`: `(ioemu:)?(fd|hd|sd|vd|xvd|ubd)[a-zA-Z0-9_]+`.
pub(crate) fn is_target_dev(name: &str) -> bool {
    let name = name.strip_prefix("ioemu:").unwrap_or(name);
    ["fd", "hd", "sd", "vd", "xvd", "ubd"].iter().any(|p| {
        name.strip_prefix(p).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
    })
}
