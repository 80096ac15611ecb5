//! Parse and format flags, the equivalents of libvirt's
//! `VIR_DOMAIN_SNAPSHOT_PARSE_*` and `VIR_DOMAIN_SNAPSHOT_FORMAT_*`.

use bitflags::bitflags;
use uuid::Uuid;

bitflags! {
    /// How to read a snapshot document.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ParseFlags: u32 {
        /// Redefinition of an existing snapshot: name, state and creation
        /// time are required; parent, domain, inactive domain, cookie and
        /// revert disks are read (a creation request ignores them).
        const REDEFINE = 1 << 0;
        /// Our own metadata file: `<active>` is required and read.
        const INTERNAL = 1 << 1;
        /// The domain is shut off or the request is disk-only: memory
        /// cannot be saved.
        const OFFLINE = 1 << 2;
        /// Refuse anything the schema refuses (unknown elements and
        /// attributes, values outside their patterns).
        const VALIDATE = 1 << 3;
    }
}

bitflags! {
    /// How to write a snapshot document.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FormatFlags: u32 {
        /// Include security-sensitive data (graphics passwords) of the
        /// embedded domain.
        const SECURE = 1 << 0;
        /// Write `<active>` (metadata files).
        const INTERNAL = 1 << 1;
        /// With INTERNAL: this snapshot is the current one (`<active>1`).
        const CURRENT = 1 << 2;
        /// Leave out `<domain>` and `<inactiveDomain>`.
        const NO_DOMAIN = 1 << 3;
    }
}

/// Options for parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// Flags.
    pub flags: ParseFlags,
    /// For a creation request (not REDEFINE): the creation time to record,
    /// in seconds since the epoch; a missing name defaults to it, as in
    /// libvirt. `None` applies no defaults.
    pub creation_time: Option<i64>,
}

impl ParseOptions {
    /// Options with `flags` and no creation time.
    #[must_use]
    pub fn new(flags: ParseFlags) -> Self {
        Self {
            flags,
            creation_time: None,
        }
    }
}

/// Options for formatting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FormatOptions {
    /// Flags.
    pub flags: FormatFlags,
    /// UUID of the owning domain, written as `<domain><uuid>` when the
    /// snapshot carries no domain of its own (libvirt's public XML always
    /// does this).
    pub domain_uuid: Option<Uuid>,
}

impl FormatOptions {
    /// Options with `flags` and no domain UUID.
    #[must_use]
    pub fn new(flags: FormatFlags) -> Self {
        Self {
            flags,
            domain_uuid: None,
        }
    }
}
