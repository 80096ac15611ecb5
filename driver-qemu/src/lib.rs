//! qcow2 internal and external snapshots through qemu-img and QMP, and the QEMU launcher.
//!
//! Empty for now: the volume and live-domain issues fill it.
