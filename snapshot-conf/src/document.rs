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
            Err(ConfError::WrongRoot { found, pos, .. }) => {
                Err(ConfError::NotASnapshot { found, pos })
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{FormatFlags, ParseFlags};

    #[test]
    fn test_document_root_picks_the_kind() {
        let opts = ParseOptions::new(ParseFlags::INTERNAL);
        let d = SnapshotDocument::parse(
            "<domainsnapshot><name>d</name><active>1</active></domainsnapshot>",
            &opts,
        )
        .expect("domain snapshot");
        assert!(matches!(d, SnapshotDocument::Domain(_)));
        assert_eq!((d.name(), d.is_current()), (Some("d"), true));
        let v = SnapshotDocument::parse(
            "<volsnapshot><name>v</name><active>0</active></volsnapshot>",
            &opts,
        )
        .expect("volume snapshot");
        assert!(matches!(v, SnapshotDocument::Volume(_)));
        assert_eq!((v.name(), v.is_current()), (Some("v"), false));
        assert_eq!(
            v.format(&FormatOptions::new(FormatFlags::INTERNAL)),
            "<volsnapshot>\n  <name>v</name>\n  <active>0</active>\n</volsnapshot>\n"
        );
    }

    #[test]
    fn test_document_other_root_names_both_kinds() {
        let err =
            SnapshotDocument::parse("<domain/>", &ParseOptions::default()).expect_err("domain");
        assert_eq!(
            err.to_string(),
            "expecting root element of 'domainsnapshot' or 'volsnapshot', not 'domain' at line 1, column 1"
        );
    }
}
