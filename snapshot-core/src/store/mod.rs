//! The metadata store (in progress): snapshot metadata of one owner as one
//! libvirt-format XML file per snapshot, written atomically under a
//! per-owner lock; import and export of libvirt metadata directories.

pub mod domains;
pub(crate) mod index;
pub mod intent;
pub(crate) mod journal;
pub mod layout;
pub mod metadata;
pub(crate) mod persist;
pub mod transfer;

pub use intent::{Intent, IntentHandler, Recovery};
pub use layout::{Layout, LayoutError, Owner};
pub use metadata::{Access, LoadWarning, MetadataStore, SnapshotRecord, StoreError};
pub use transfer::{
    ExportOptions, ExportReport, ImportOptions, ImportReport, TransferError, defined_domain,
    export_dir, import_dir,
};
