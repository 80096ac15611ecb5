//! driver-btrfs's subvolume snapshots and reflinked copies served as the
//! `btrfs-plugin` plugin, so the integration matrix runs the same checks
//! through the ABI as linked in.

plugin_abi::export_linked_driver!(
    driver_btrfs::BtrfsDriver,
    c"btrfs-plugin",
    c"0.1.0",
    c"btrfs subvolume snapshots and reflinks (driver-btrfs as a plugin)",
    driver_btrfs::BtrfsDriver::new()
);
