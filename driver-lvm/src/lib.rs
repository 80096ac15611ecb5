//! LVM snapshots of logical volumes: classic copy-on-write snapshots
//! (`lvcreate -s -L`, their space from a [`SizePolicy`]) of ordinary
//! volumes, and thin snapshots (`lvcreate -s`) of thin volumes, both
//! [`SnapshotMode::Internal`](snapshot_core::driver::SnapshotMode):
//! the storage names them, beside their origin in its volume group.
//!
//! A volume is a logical volume named by its device path (`/dev/VG/LV`
//! or `/dev/mapper/VG-LV`); anything else is declined, so the next driver
//! (a full copy) takes it. The snapshot `NAME` of `VG/LV` is the logical
//! volume `VG/LV.NAME`, read-only unless asked for writable and tagged
//! `virtsnap`.
//!
//! - **Revert of a classic snapshot** merges it into its origin
//!   (`lvconvert --merge`), which consumes it, then takes it again at
//!   once, so the volume's snapshots stay as they were. The origin is
//!   tagged `virtsnap_revert:...` between the two, so a revert cut short
//!   by a crash is finished by running it again.
//! - **Revert of a thin snapshot** makes a new thin snapshot of it and
//!   renames that to the origin's name (the old origin renamed away first
//!   and removed last; a swap cut short is finished by the next revert).
//!   A merge would not do: it consumes the snapshot, and after one merge
//!   the origin's other snapshots are no longer mergeable into it.
//! - **An origin that is open** (a mounted filesystem, a running guest)
//!   cannot be changed now: LVM merges the snapshot when the origin is
//!   next activated, and the revert reports that it was deferred
//!   ([`RevertOutcome::Deferred`](snapshot_core::driver::RevertOutcome));
//!   the merge consumes the snapshot.
//! - **A classic snapshot that overflowed** its copy-on-write space is
//!   invalid: its data is lost. It is listed as such, never reverted to,
//!   and can only be deleted.
//! - **No filesystem freeze** is ever done around `lvcreate -s`: LVM
//!   suspends the device, which freezes the filesystem on it, and a freeze
//!   held already makes that suspend fail with EBUSY, leaving a half-made
//!   snapshot behind. A failed create removes what LVM left.
//! - The LVM tools are run as `lvm COMMAND` with `--reportformat json`,
//!   whose reports are parsed ([`report`]); human output is never read.
//!
//! The tools run as child processes with async I/O. A volume in use by a
//! running guest is declined (its hypervisor's driver must take it).

mod driver;
pub mod report;
mod size;

pub use driver::LvmDriver;
pub use size::{SIZE_ENV, SizePolicy};
