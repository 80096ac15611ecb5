//! libvirt-compatible snapshot XML: `<domainsnapshot>`, `<volsnapshot>`
//! and the parts of `<domain>` snapshots need.
//!
//! Pure: strings in, typed values out, no I/O (disk alignment asks a
//! [`SourceProbe`] whether a file exists). Parsing follows libvirt's rules
//! and messages (element order free, unknown content ignored unless
//! [`ParseFlags::VALIDATE`]); formatting reproduces libvirt's output byte
//! for byte. Hostile input is bounded by the limits in [`limits`].
//!
//! ```text
//!  xml ──parse──▶ DomainSnapshotDef ──align_disks(domain)──▶ one disk per domain disk
//!                  │  VolSnapshotDef
//!                  └──format──▶ xml (libvirt layout)
//! ```
//!
//! ```
//! use snapshot_conf::{DomainSnapshotDef, FormatOptions, ParseOptions};
//!
//! let xml = "<domainsnapshot><name>s1</name></domainsnapshot>";
//! let parsed = DomainSnapshotDef::parse(xml, &ParseOptions::default()).unwrap();
//! assert_eq!(
//!     parsed.def.format(&FormatOptions::default()),
//!     "<domainsnapshot>\n  <name>s1</name>\n</domainsnapshot>\n"
//! );
//! ```

pub mod align;
pub mod cookie;
pub mod document;
pub mod domain;
pub mod domain_edit;
pub mod error;
pub mod flags;
pub mod limits;
pub mod machine;
pub mod names;
pub mod snapshot;
pub mod source;
pub mod volsnapshot;
mod xml;

pub use align::{AlignParams, HostFiles, SourceProbe, external_name};
pub use cookie::{CookieDisk, VirtsnapCookie};
pub use document::SnapshotDocument;
pub use domain::{BackingLayer, DiskDevice, Domain, DomainDef, DomainDisk};
pub use domain_edit::DiskChange;
pub use error::{ConfError, Pos, Result};
pub use flags::{FormatFlags, FormatOptions, ParseFlags, ParseOptions};
pub use machine::{Boot, MachineDef, MemorySource};
pub use names::check_snapshot_name;
pub use snapshot::{DomainSnapshotDef, EmbeddedDomain, Parsed, SnapshotDisk, SnapshotState};
pub use source::{DiskSource, NetworkHost, Seclabel, SnapshotMode, SourceKind, StorageFormat};
pub use volsnapshot::{
    VolChecksum, VolSnapshotDef, VolSnapshotMode, VolSnapshotState, VolSnapshotTarget, VolumeRef,
};
pub use xml::subtree::XmlSubtree;

/// The RelaxNG schema of `<volsnapshot>` (`schemas/volsnapshot.rng`).
pub const VOLSNAPSHOT_SCHEMA: &str = include_str!("../schemas/volsnapshot.rng");
