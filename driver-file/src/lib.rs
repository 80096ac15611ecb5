//! Full-copy snapshots of any file, sparse-aware and reflinked where
//! possible: [`FileDriver`], the `file` [`snapshot_core::driver::VolumeDriver`]
//! (a copy snapshot is an independent file beside the volume, in the
//! volume's format), and [`copy`], the copying and hashing helpers other
//! drivers reuse.

pub mod copy;
mod driver;

pub use driver::FileDriver;
