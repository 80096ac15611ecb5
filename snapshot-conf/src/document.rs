//! A snapshot document of either kind, chosen by its root element: what a
//! tool that accepts "a snapshot XML file" (like `virtsnap xml check`)
//! works with.

use crate::error::{ConfError, Result};
use crate::flags::{FormatOptions, ParseOptions};
use crate::snapshot::{DomainSnapshotDef, Parsed};
use crate::volsnapshot::VolSnapshotDef;

/// A parsed `<domainsnapshot>` or `<volsnapshot>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotDocument {
    /// A domain snapshot.
    Domain(Parsed<DomainSnapshotDef>),
    /// A volume snapshot.
    Volume(Parsed<VolSnapshotDef>),
}

impl SnapshotDocument {
    /// Parses `xml` as the kind its root element names.
    ///
    /// # Errors
    /// As [`DomainSnapshotDef::parse`] and [`VolSnapshotDef::parse`]; a
    /// root that is neither is refused naming both.
    pub fn parse(xml: &str, options: &ParseOptions) -> Result<Self> {
        match DomainSnapshotDef::parse(xml, options) {
            Ok(p) => Ok(Self::Domain(p)),
            Err(ConfError::WrongRoot { found, .. }) if found == "volsnapshot" => {
                VolSnapshotDef::parse(xml, options).map(Self::Volume)
            }
            Err(ConfError::WrongRoot { found, pos, .. }) => Err(ConfError::WrongRoot {
                expected: "domainsnapshot' or 'volsnapshot",
                found,
                pos,
            }),
            Err(e) => Err(e),
        }
    }

    /// The snapshot's name, if it has one.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Domain(p) => p.def.name.as_deref(),
            Self::Volume(p) => p.def.name.as_deref(),
        }
    }

    /// Whether `<active>1</active>` was read (INTERNAL parses).
    #[must_use]
    pub fn is_current(&self) -> bool {
        match self {
            Self::Domain(p) => p.current,
            Self::Volume(p) => p.current,
        }
    }

    /// Writes the document in its canonical layout.
    #[must_use]
    pub fn format(&self, options: &FormatOptions) -> String {
        match self {
            Self::Domain(p) => p.def.format(options),
            Self::Volume(p) => p.def.format(options),
        }
    }
}
