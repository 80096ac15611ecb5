//! Hard limits on the XML this crate reads, so hostile input stays bounded
//! in memory and time (the same idea as firecracker's
//! `SNAPSHOT_DESERIALIZATION_BYTES_LIMIT`).

/// Largest document accepted, in bytes. A libvirt domain definition with
/// hundreds of devices is well under 1 MiB; snapshot metadata embeds two of
/// them at most.
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;

/// Most XML nodes (elements, attributes' owners, text, comments) accepted.
pub const MAX_NODES: u32 = 500_000;

/// Deepest element nesting accepted. libvirt's own documents stay under 12.
pub const MAX_DEPTH: usize = 256;

/// Most attributes (namespace declarations included) on one element. The
/// XML parser checks each attribute against the earlier ones, so an element
/// with tens of thousands of attributes would take minutes; libvirt's
/// elements carry about ten.
pub const MAX_ATTRIBUTES: usize = 128;
