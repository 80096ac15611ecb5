//! btrfs volume snapshots: [`BtrfsDriver`], the `btrfs`
//! [`snapshot_core::driver::VolumeDriver`], for two kinds of volume on a
//! btrfs filesystem.
//!
//! - **Files** (a raw or qcow2 image, any file in a btrfs directory):
//!   a snapshot is a reflinked copy (`FICLONE`) beside the volume, in the
//!   volume's format, sharing every block with it until either is
//!   written: O(1) in time and space whatever the file's size. Revert
//!   reflinks the snapshot into a temporary file beside the volume and
//!   renames it over the volume (the old content stays whole until the
//!   rename); delete removes the snapshot's file. These are
//!   [`snapshot_core::driver::SnapshotMode::Copy`] snapshots, as the
//!   `file` driver makes, but never a byte is copied: where a reflink is
//!   impossible the driver refuses instead of copying. Asking for a
//!   writable snapshot changes nothing: the copy is an ordinary file.
//! - **Subvolumes** (the volume's path is a btrfs subvolume): a snapshot
//!   is a subvolume snapshot, read-only (like `btrfs subvolume snapshot
//!   -r`) unless the plan asks for a writable one
//!   ([`snapshot_core::driver::SnapshotPlan::writable`], like `btrfs
//!   subvolume snapshot` without `-r`), kept by name in the directory
//!   `.VOLUME.snapshots` beside the volume ([`snapshot_dir`]):
//!   [`snapshot_core::driver::SnapshotMode::Internal`] snapshots that
//!   [`snapshot_core::driver::VolumeDriver::list`] finds again. Revert
//!   makes a writable snapshot of the snapshot under a temporary name
//!   beside the volume and swaps the two atomically
//!   (`renameat2(RENAME_EXCHANGE)`), then deletes the old state; delete
//!   deletes the snapshot's subvolume. Revert, delete and list treat
//!   both kinds alike, so the driver records nothing of which is which.
//!   A writable snapshot can have been changed since it was taken:
//!   reverting to it restores its content as it is at the revert, not as
//!   it was taken (as with any snapshot made by `btrfs subvolume snapshot`
//!   without `-r`).
//!
//! On any other filesystem the driver declares nothing (default
//! [`snapshot_core::driver::Capabilities`]), so a caller that tries
//! drivers in order of preference falls through to the `file` driver.
//! A volume a running guest writes to is declined too.
//!
//! Subvolume snapshots are made and deleted with the btrfs ioctls
//! (`BTRFS_IOC_SNAP_CREATE_V2`, `BTRFS_IOC_SNAP_DESTROY`) in the module
//! `ioctl`, the only `unsafe` code of the workspace; btrfs-progs is not
//! needed. Everything blocking (ioctls, file syscalls through `rustix`)
//! runs on `tokio::task::spawn_blocking`.

mod driver;
mod ioctl;
mod probe;
mod reflink;
mod subvolume;

pub use driver::BtrfsDriver;
pub use probe::{BTRFS_SUPER_MAGIC, is_btrfs};
pub use subvolume::snapshot_dir;
