//! LVM classic and thin snapshots.
//!
//! Empty for now: the btrfs/LVM issue fills it.
