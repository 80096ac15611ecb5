//! Why the planner refuses: flag rules (libvirt's messages), requests
//! that make no sense ([`PlanError::Invalid`]), requests the storage or
//! hypervisor at hand cannot do ([`PlanError::Unsupported`]), risky
//! reverts that need FORCE, and alignment errors from snapshot-conf.
//! Every message says what was asked, what was found and what to do.

use snapshot_conf::ConfError;

/// The command-line option of a flag, for messages.
pub(crate) fn option_of(flag: &str) -> &'static str {
    match flag {
        "DISK_ONLY" => "--disk-only",
        "LIVE" => "--live",
        "QUIESCE" => "--quiesce",
        "ATOMIC" => "--atomic",
        "REUSE_EXT" => "--reuse-external",
        "HALT" => "--halt",
        "NO_METADATA" => "--no-metadata",
        "REDEFINE" => "--redefine",
        "CURRENT" => "--current",
        "VALIDATE" => "--validate",
        "RUNNING" => "--running",
        "PAUSED" => "--paused",
        "FORCE" => "--force",
        "CHILDREN" => "--children",
        "CHILDREN_ONLY" => "--children-only",
        "METADATA_ONLY" => "--metadata",
        _ => "",
    }
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A flag needs another one (libvirt's "Flag '%s' is required by flag
    /// '%s'").
    #[error(
        "flag {required} ({}) is required by flag {by} ({}); add it or drop {by}",
        option_of(required),
        option_of(by)
    )]
    FlagRequired {
        /// The flag missing.
        required: &'static str,
        /// The flag that needs it.
        by: &'static str,
    },
    /// Two flags cannot go together.
    #[error(
        "flags {first} ({}) and {second} ({}) are mutually exclusive; drop one",
        option_of(first),
        option_of(second)
    )]
    FlagsExclusive {
        /// One flag.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// The request makes no sense (nothing to snapshot, memory of a shut
    /// off domain, ...).
    #[error("{reason}; {fix}")]
    Invalid {
        /// What is wrong, naming the element, disk or flag.
        reason: String,
        /// What to change.
        fix: String,
    },
    /// The request makes sense but the storage or hypervisor at hand
    /// cannot do it.
    #[error("{reason}; {fix}")]
    Unsupported {
        /// What cannot be done, and why.
        reason: String,
        /// What to do instead.
        fix: String,
    },
    /// A revert that would lose something the user may want, refused
    /// without FORCE.
    #[error("{reason}; pass --force to revert anyway ({consequence})")]
    Risky {
        /// What makes it risky.
        reason: String,
        /// What FORCE will do.
        consequence: String,
    },
    /// The `<domainsnapshot>` does not fit the domain (unknown disk, a
    /// disk listed twice, a path on a non-external disk, ...).
    #[error("the snapshot's disks do not fit the domain: {0}")]
    Conf(#[from] ConfError),
}

impl PlanError {
    /// An [`PlanError::Invalid`].
    pub(crate) fn invalid(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Invalid {
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// An [`PlanError::Unsupported`].
    pub(crate) fn unsupported(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Unsupported {
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// The request itself is wrong (flag rules, nonsense combinations,
    /// disks that do not fit), as opposed to the backends lacking a
    /// feature.
    #[must_use]
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            Self::FlagRequired { .. } | Self::FlagsExclusive { .. } | Self::Invalid { .. }
        ) || matches!(self, Self::Conf(_))
    }

    /// The backends at hand lack what the request needs.
    #[must_use]
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }
}
