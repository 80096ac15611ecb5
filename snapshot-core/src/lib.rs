//! The snapshot engine: snapshot tree, metadata store, planner, executor and driver traits.
//!
//! Empty for now: the tree/store, volume and planner issues fill it.
