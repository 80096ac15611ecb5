//! Defined domains: libvirt domain XML kept in `$STATE/domains/NAME.xml`
//! byte for byte as given (snapshot-conf types the parts snapshots need).
//! Defining and undefining take the domain's owner lock, so they never race
//! with snapshot changes of the same domain.

use std::fs;
use std::io;

use snapshot_conf::Domain;

use crate::store::layout::{self, Layout, Owner};
use crate::store::metadata::StoreError;
use crate::store::persist::{self, OwnerLock};

/// Why a domain definition was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The XML is not a usable domain definition.
    #[error("invalid domain definition: {0}")]
    Invalid(#[from] snapshot_conf::ConfError),
    /// The definition has no `<name>`.
    #[error("domain definition has no <name>; add <name>NAME</name>")]
    NoName,
    /// No such domain.
    #[error("domain '{name}' is not defined; see `virtsnap list --all`")]
    NotDefined {
        /// The name.
        name: String,
    },
    /// Undefining a domain that still has snapshot metadata.
    #[error(
        "cannot delete inactive domain with {count} snapshots; pass --snapshots-metadata to delete their metadata too"
    )]
    HasSnapshots {
        /// How many.
        count: usize,
    },
    /// A store error (I/O, names).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_error(op: &'static str, path: &std::path::Path) -> impl FnOnce(io::Error) -> DomainError {
    let path = path.to_path_buf();
    move |source| DomainError::Store(StoreError::Io { op, path, source })
}

fn lock(layout: &Layout, name: &str) -> Result<OwnerLock, DomainError> {
    let path = layout
        .owner_lock(&Owner::Domain(name.to_string()))
        .map_err(StoreError::from)?;
    if let Some(parent) = path.parent() {
        persist::create_dir_durable(parent).map_err(io_error("creating", parent))?;
    }
    OwnerLock::acquire(&path).map_err(io_error("locking", &path))
}

/// Defines (or redefines) the domain described by `xml` and returns it.
///
/// # Errors
/// Not a domain definition, no or invalid name, or a write failure.
pub fn define(layout: &Layout, xml: &str) -> Result<Domain, DomainError> {
    let (domain, name) = parse_named(xml)?;
    let _lock = lock(layout, &name)?;
    write_definition(layout, &name, xml)?;
    Ok(domain)
}

/// [`define`] for a caller that holds the domain's lock through its
/// snapshot store opened for writing (the executor changing disk
/// sources in the middle of a snapshot): taking the lock again would wait
/// for itself.
///
/// # Errors
/// As [`define`], or a store that is not the domain's, opened for writing.
pub fn define_locked(
    layout: &Layout,
    xml: &str,
    store: &crate::store::MetadataStore,
) -> Result<Domain, DomainError> {
    let (domain, name) = parse_named(xml)?;
    if store.owner() != &Owner::Domain(name.clone())
        || store.access() != crate::store::Access::Write
    {
        return Err(DomainError::Store(StoreError::IntentMisuse {
            owner: store.owner().to_string(),
            problem: format!(
                "redefining domain '{name}' needs its own snapshot store, opened for writing"
            ),
        }));
    }
    write_definition(layout, &name, xml)?;
    Ok(domain)
}

fn parse_named(xml: &str) -> Result<(Domain, String), DomainError> {
    let domain = Domain::parse(xml)?;
    let name = domain.def.name.clone().ok_or(DomainError::NoName)?;
    layout::check_domain_name(&name).map_err(StoreError::from)?;
    Ok((domain, name))
}

fn write_definition(layout: &Layout, name: &str, xml: &str) -> Result<(), DomainError> {
    let dir = layout.domains_dir();
    persist::create_dir_durable(&dir).map_err(io_error("creating", &dir))?;
    let file = format!("{name}.xml");
    persist::write_atomic(&dir, &file, xml.as_bytes())
        .map_err(io_error("writing", &dir.join(&file)))
}

/// The XML of a defined domain, as it was given.
///
/// # Errors
/// Not defined, or unreadable.
pub fn dumpxml(layout: &Layout, name: &str) -> Result<String, DomainError> {
    let path = layout.domain_file(name).map_err(StoreError::from)?;
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DomainError::NotDefined {
            name: name.to_string(),
        }),
        Err(e) => Err(io_error("reading", &path)(e)),
    }
}

/// A defined domain, parsed.
///
/// # Errors
/// As [`dumpxml`], or the stored XML no longer parses.
pub fn get(layout: &Layout, name: &str) -> Result<Domain, DomainError> {
    Ok(Domain::parse(&dumpxml(layout, name)?)?)
}

/// Names of the defined domains, sorted.
///
/// # Errors
/// The domains directory cannot be read.
pub fn list(layout: &Layout) -> Result<Vec<String>, DomainError> {
    let dir = layout.domains_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("reading", &dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("reading", &dir))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".xml").filter(|n| !n.starts_with('.')) {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// What happens to a domain's snapshot metadata when it is undefined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMetadata {
    /// Refuse while any exists (libvirt's default).
    Refuse,
    /// Delete it with the domain (`--snapshots-metadata`).
    Delete,
}

/// Undefines a domain.
///
/// # Errors
/// Not defined, snapshot metadata left and `Refuse`, or I/O.
pub fn undefine(
    layout: &Layout,
    name: &str,
    metadata: SnapshotMetadata,
) -> Result<(), DomainError> {
    let owner = Owner::Domain(name.to_string());
    let _lock = lock(layout, name)?;
    let path = layout.domain_file(name).map_err(StoreError::from)?;
    if !path.exists() {
        return Err(DomainError::NotDefined {
            name: name.to_string(),
        });
    }
    let snap_dir = layout.owner_dir(&owner).map_err(StoreError::from)?;
    let snapshot_files: Vec<String> = match fs::read_dir(&snap_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| layout::snapshot_name_from_file(f).is_some())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error("reading", &snap_dir)(e)),
    };
    if !snapshot_files.is_empty() {
        if metadata == SnapshotMetadata::Refuse {
            return Err(DomainError::HasSnapshots {
                count: snapshot_files.len(),
            });
        }
        for f in &snapshot_files {
            persist::remove_durable(&snap_dir, f)
                .map_err(io_error("removing", &snap_dir.join(f)))?;
        }
    }
    if snap_dir.exists() {
        fs::remove_dir_all(&snap_dir).map_err(io_error("removing", &snap_dir))?;
    }
    for side in [layout.owner_index(&owner), layout.owner_journal(&owner)] {
        let side = side.map_err(StoreError::from)?;
        if let (Some(dir), Some(file)) = (side.parent(), side.file_name()) {
            persist::remove_durable(dir, &file.to_string_lossy())
                .map_err(io_error("removing", &side))?;
        }
    }
    let dir = layout.domains_dir();
    persist::remove_durable(&dir, &format!("{name}.xml")).map_err(io_error("removing", &path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::metadata::{Access, MetadataStore, SnapshotRecord};
    use snapshot_conf::{DomainSnapshotDef, ParseFlags, ParseOptions};

    const VM: &str = "<domain type='kvm'>\n  <name>vm1</name>\n  <devices>\n    <disk type='file'><source file='/img/a.qcow2'/><target dev='vda'/></disk>\n  </devices>\n</domain>\n";

    #[test]
    fn test_define_keeps_xml_byte_for_byte_and_lists() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(tmp.path());
        let d = define(&layout, VM).expect("define");
        assert_eq!(d.def.disks[0].target, "vda");
        assert_eq!(dumpxml(&layout, "vm1").expect("dumpxml"), VM);
        assert_eq!(list(&layout).expect("list"), ["vm1"]);
        assert_eq!(
            get(&layout, "vm1").expect("get").def.name.as_deref(),
            Some("vm1")
        );
    }

    #[test]
    fn test_define_refuses_nameless_and_bad_names() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(tmp.path());
        assert!(matches!(
            define(&layout, "<domain/>"),
            Err(DomainError::NoName)
        ));
        assert!(matches!(
            define(&layout, "<domain><name>a/b</name></domain>"),
            Err(DomainError::Store(StoreError::Layout(_)))
        ));
        assert!(matches!(
            define(&layout, "<volume/>"),
            Err(DomainError::Invalid(_))
        ));
        assert_eq!(list(&layout).expect("list"), Vec::<String>::new());
    }

    #[test]
    fn test_undefine_refuses_with_snapshots_unless_asked() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(tmp.path());
        define(&layout, VM).expect("define");
        {
            let mut store =
                MetadataStore::open(&layout, Owner::Domain("vm1".into()), Access::Write)
                    .expect("open");
            let def = DomainSnapshotDef::parse(
                "<domainsnapshot><name>s1</name><state>shutoff</state><creationTime>1</creationTime></domainsnapshot>",
                &ParseOptions::new(ParseFlags::REDEFINE),
            )
            .expect("snapshot")
            .def;
            store
                .create(SnapshotRecord::Domain(Box::new(def)))
                .expect("create");
        }
        let err = undefine(&layout, "vm1", SnapshotMetadata::Refuse).expect_err("has snapshots");
        assert_eq!(
            err.to_string(),
            "cannot delete inactive domain with 1 snapshots; pass --snapshots-metadata to delete their metadata too"
        );
        assert_eq!(list(&layout).expect("list"), ["vm1"]);
        undefine(&layout, "vm1", SnapshotMetadata::Delete).expect("undefine");
        assert_eq!(list(&layout).expect("list"), Vec::<String>::new());
        let store =
            MetadataStore::open(&layout, Owner::Domain("vm1".into()), Access::Read).expect("open");
        assert!(store.tree().is_empty());
        drop(store); // flock: our own reader would block the writer below
        assert!(matches!(
            undefine(&layout, "vm1", SnapshotMetadata::Delete),
            Err(DomainError::NotDefined { .. })
        ));
    }
}
