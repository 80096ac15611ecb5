//! btrfs subvolume snapshots and reflink file snapshots.
//!
//! Empty for now: the btrfs/LVM issue fills it.
