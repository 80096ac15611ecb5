//! driver-lvm's classic and thin snapshots served as the `lvm-plugin`
//! plugin (snapshot space from `$VIRTSNAP_LVM_SNAPSHOT_SIZE`, as linked
//! in), so the integration matrix runs the same checks through the ABI as
//! linked in.

plugin_abi::export_linked_driver!(
    driver_lvm::LvmDriver,
    c"lvm-plugin",
    c"0.1.0",
    c"LVM classic and thin snapshots (driver-lvm as a plugin)",
    driver_lvm::LvmDriver::from_env()
);
