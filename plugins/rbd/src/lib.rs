//! Ceph RBD snapshots as a virtsnap plugin, the way a third party ships
//! one: a `cdylib` built against `plugin-abi`'s SDK and loaded at run
//! time, so virtsnap never links librbd; the plugin itself loads
//! `librbd.so.1` when it is opened ([`librbd`]). Volumes are RBD images
//! named as QEMU names them ([`name`]); [`plugin`] is the driver, and
//! [`diff`] RBD's `export-diff` format for incremental export and import.
//! The rlib holds the same binding for the tests and benchmarks.

pub mod diff;
pub mod librbd;
pub mod name;
pub mod plugin;
