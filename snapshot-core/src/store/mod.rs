//! The metadata store (in progress): snapshot metadata of one owner as one
//! libvirt-format XML file per snapshot, written atomically under a
//! per-owner lock.

pub mod domains;
pub(crate) mod index;
pub(crate) mod journal;
pub mod layout;
pub mod metadata;
pub(crate) mod persist;

pub use layout::{Layout, LayoutError, Owner};
pub use metadata::{Access, LoadWarning, MetadataStore, SnapshotRecord, StoreError};
