//! The snapshot engine: the snapshot tree ([`tree`]) today; the metadata
//! store, the planner, the executor and the driver traits come with the
//! following issues (see DESIGN.md).

pub mod store;
pub mod tree;

pub use tree::{
    ChildPolicy, ListFilter, Location, SnapshotInfo, SnapshotTree, StateKind, TreeError,
};
