//! driver-file's full copies served as the `file-plugin` plugin: a
//! `cdylib` built with the Rust SDK around the linked driver
//! ([`plugin_abi::sdk::bridge::Linked`]). The tests load it like any
//! third-party plugin and run the conformance suite through the ABI.

plugin_abi::export_linked_driver!(
    driver_file::FileDriver,
    c"file-plugin",
    c"0.1.0",
    c"full copies of any file (driver-file as a plugin)",
    driver_file::FileDriver::new()
);
