//! Full-copy snapshots of any file, sparse-aware and reflinked where
//! possible: [`FileDriver`], the `file` [`snapshot_core::driver::VolumeDriver`]
//! (a copy snapshot is an independent file beside the volume, in the
//! volume's format). [`copy`] is snapshot-core's `files`, the copying and
//! hashing helpers every driver may use (drivers never depend on each
//! other, so they live below them).
//!
//! Programs use the driver through the volume API, which keeps the
//! snapshot tree and its metadata and journals every change:
//!
//! ```
//! use std::sync::Arc;
//!
//! use driver_file::FileDriver;
//! use snapshot_core::store::Layout;
//! use snapshot_core::volume::{CreateOptions, RevertOptions, VolumeApi};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let disk = dir.path().join("disk.img");
//! std::fs::write(&disk, b"before")?;
//!
//! // The metadata lives in a state directory; the drivers do the storage.
//! let api = VolumeApi::new(
//!     Layout::new(dir.path().join("state")),
//!     vec![Arc::new(FileDriver::new())],
//! );
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(async {
//!     let volume = api.volume(&disk, None)?;
//!     let options = CreateOptions {
//!         name: Some("clean".into()),
//!         checksum: true,
//!         ..CreateOptions::default()
//!     };
//!     let snapshot = api.snapshot_create_xml(&volume, None, &options, None).await?;
//!     assert_eq!(snapshot.target.source.path.as_deref(),
//!                Some(dir.path().join("disk.img.clean").to_str().unwrap()));
//!
//!     std::fs::write(&disk, b"after")?;
//!     let verify = RevertOptions { verify: true, ..RevertOptions::default() };
//!     api.revert_to_snapshot(&volume, "clean", verify, None).await?;
//!     assert_eq!(std::fs::read(&disk)?, b"before");
//!     assert_eq!(api.snapshot_list_names(&volume)?, ["clean"]);
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```

pub use snapshot_core::files as copy;
mod driver;

pub use driver::FileDriver;
