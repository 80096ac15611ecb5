//! The stable C plugin ABI: header, loader and the Rust SDK for third-party drivers.
//!
//! Empty for now: the plugin-abi issue fills it.
