//! driver-qemu's qcow2 internal and external snapshots served as the
//! `qemu-plugin` plugin, so the integration matrix runs the same checks
//! through the ABI as linked in. ABI 1 has no image-chain operations, so
//! the plugin offers no overlays for domain disks.

plugin_abi::export_linked_driver!(
    driver_qemu::QemuDriver,
    c"qemu-plugin",
    c"0.1.0",
    c"qcow2 internal and external snapshots (driver-qemu as a plugin)",
    driver_qemu::QemuDriver::new()
);
