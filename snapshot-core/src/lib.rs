//! The snapshot engine: the snapshot tree ([`tree`]), the crash-safe
//! metadata store ([`store`]) and the storage driver trait ([`driver`]);
//! the volume API, the planner and the executor come with the following
//! issues (see DESIGN.md).

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod domain_api;
pub mod driver;
pub mod exec;
pub mod files;
pub mod hypervisor;
pub mod plan;
pub mod store;
pub mod tree;
pub mod volume;

pub use tree::{
    ChildPolicy, ListFilter, Location, SnapshotInfo, SnapshotTree, StateKind, TreeError,
};
