//! libvirt-compatible snapshot XML (work in progress).
