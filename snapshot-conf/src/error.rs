//! The one error type of snapshot-conf.
//!
//! Every variant names the element or attribute at fault, carries its
//! position (`line:column`) when the problem sits in a document, and says
//! what to change. Messages that libvirt also produces keep libvirt's wording
//! first (so users searching for them find the libvirt documentation) and
//! add the fix after a semicolon.
//!
//! ```text
//! ConfError
//!  ├─ document:  TooLarge, TooManyNodes, TooDeep, TooManyAttributes, Dtd,
//!  │             Syntax, WrongRoot, NotASnapshot
//!  ├─ schema:    UnexpectedElement, UnexpectedAttribute, UnexpectedText,
//!  │             DuplicateElement, NotAllowed
//!  ├─ values:    Missing*, InvalidValue, RelativePath, InvalidName, ...
//!  ├─ memory:    ManualMemory, MemoryFileNeedsExternal, ...
//!  └─ alignment: NoSuchDisk, DiskTwice, DiskMustUseMode, ...
//! ```

use std::fmt;

/// A position in an XML document, 1-based as editors show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pos {
    /// Line number, starting at 1.
    pub line: u32,
    /// Column number (in characters), starting at 1.
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Formats an optional position as ` at line L, column C` (or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At(pub Option<Pos>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " at line {}, column {}", p.line, p.column),
            None => Ok(()),
        }
    }
}

/// Everything that can go wrong reading, checking or aligning snapshot XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    // ----- the document as a whole -----
    /// The input is larger than [`crate::limits::MAX_DOCUMENT_BYTES`].
    #[error(
        "XML document is {size} bytes, over the {limit}-byte limit for snapshot XML; check that the right file was given"
    )]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The input has more nodes than [`crate::limits::MAX_NODES`].
    #[error(
        "XML document has more than {limit} nodes, over the limit for snapshot XML; check that the right file was given"
    )]
    TooManyNodes {
        /// The limit.
        limit: u32,
    },
    /// Elements nest deeper than [`crate::limits::MAX_DEPTH`].
    #[error(
        "XML elements nest more than {limit} levels deep{at}; snapshot XML is never that deep, check the input",
        at = At(*pos)
    )]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        pos: Option<Pos>,
    },
    /// An element carries more than [`crate::limits::MAX_ATTRIBUTES`] attributes.
    #[error(
        "an element has more than {limit} attributes{at}; snapshot XML never has that many, check the input",
        at = At(*pos)
    )]
    TooManyAttributes {
        /// The limit.
        limit: usize,
        /// Position of the element.
        pos: Option<Pos>,
    },
    /// A `<!DOCTYPE>` was found: DTDs and their entities are refused.
    #[error(
        "XML document type declarations (<!DOCTYPE ...>) are refused in snapshot XML because their entities can expand without bound; remove the DOCTYPE"
    )]
    Dtd,
    /// The input is not well-formed XML.
    #[error("malformed XML{at}: {message}", at = At(*pos))]
    Syntax {
        /// The XML parser's description.
        message: String,
        /// Where it went wrong.
        pos: Option<Pos>,
    },
    /// The root element is not the expected one.
    #[error("expecting root element of '{expected}', not '{found}'{at}", at = At(*pos))]
    WrongRoot {
        /// What the caller asked for (`domainsnapshot`, `volsnapshot`, `domain`).
        expected: &'static str,
        /// What the document has.
        found: String,
        /// Position of the root element.
        pos: Option<Pos>,
    },
    /// The root element names neither kind of snapshot.
    #[error(
        "expecting root element of 'domainsnapshot' or 'volsnapshot', not '{found}'{at}",
        at = At(*pos)
    )]
    NotASnapshot {
        /// What the document has.
        found: String,
        /// Position of the root element.
        pos: Option<Pos>,
    },

    // ----- schema (reported with the VALIDATE parse flag) -----
    /// An element the schema does not allow here.
    #[error(
        "element <{element}> is not allowed in <{parent}>{at}; remove it or check its spelling",
        at = At(*pos)
    )]
    UnexpectedElement {
        /// The unexpected element.
        element: String,
        /// Its parent.
        parent: String,
        /// Its position.
        pos: Option<Pos>,
    },
    /// An attribute the schema does not allow here.
    #[error(
        "attribute '{attribute}' is not allowed on <{element}>{at}; remove it or check its spelling",
        at = At(*pos)
    )]
    UnexpectedAttribute {
        /// The unexpected attribute.
        attribute: String,
        /// The element carrying it.
        element: String,
        /// Its position.
        pos: Option<Pos>,
    },
    /// Text inside an element that may hold only elements.
    #[error("text is not allowed directly inside <{element}>{at}; remove it", at = At(*pos))]
    UnexpectedText {
        /// The element.
        element: String,
        /// Position of the text.
        pos: Option<Pos>,
    },
    /// An element given twice where the schema allows it once.
    #[error("element <{element}> appears more than once in <{parent}>{at}; keep one", at = At(*pos))]
    DuplicateElement {
        /// The element.
        element: String,
        /// Its parent.
        parent: String,
        /// Position of the second occurrence.
        pos: Option<Pos>,
    },
    /// A schema rule that is not a plain unknown name (for example
    /// `<seclabel>` in a network source).
    #[error("{what} is not allowed{at}: {why}", at = At(*pos))]
    NotAllowed {
        /// What was found, e.g. `<seclabel> inside a network <source>`.
        what: String,
        /// The rule and the fix.
        why: &'static str,
        /// Its position.
        pos: Option<Pos>,
    },

    // ----- values -----
    /// A required element is absent.
    #[error("missing <{element}> in <{parent}>{at}; {hint}", at = At(*pos))]
    MissingElement {
        /// The missing element.
        element: &'static str,
        /// The element that should contain it.
        parent: &'static str,
        /// Why it is required and what to add.
        hint: &'static str,
        /// Position of the parent.
        pos: Option<Pos>,
    },
    /// A required attribute is absent.
    #[error("missing attribute '{attribute}' on <{element}>{at}; {hint}", at = At(*pos))]
    MissingAttribute {
        /// The missing attribute.
        attribute: &'static str,
        /// The element that should carry it.
        element: &'static str,
        /// What to add.
        hint: &'static str,
        /// Position of the element.
        pos: Option<Pos>,
    },
    /// A value outside the allowed set or format.
    #[error("invalid value '{value}' for {what}{at}; expected {expected}", at = At(*pos))]
    InvalidValue {
        /// The element or attribute, e.g. `<state>` or `attribute 'snapshot' of <disk>`.
        what: String,
        /// The value found.
        value: String,
        /// What is allowed.
        expected: String,
        /// Its position.
        pos: Option<Pos>,
    },
    /// A path that must be absolute is relative.
    #[error("{what} path ({path}) must be absolute{at}; give the full path starting with '/'", at = At(*pos))]
    RelativePath {
        /// Which path (`memory snapshot file`, `disk snapshot image`).
        what: &'static str,
        /// The path.
        path: String,
        /// Its position.
        pos: Option<Pos>,
    },
    /// A snapshot name that cannot be used as a metadata file name.
    #[error("invalid snapshot name '{name}': {reason}; choose another name")]
    InvalidName {
        /// The name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    // ----- memory -----
    /// `<memory snapshot='manual'/>`.
    #[error(
        "'manual' memory snapshot mode not supported{at}; use snapshot='manual' on the disks and <memory snapshot='no'/>",
        at = At(*pos)
    )]
    ManualMemory {
        /// Position of `<memory>`.
        pos: Option<Pos>,
    },
    /// `<memory file=...>` with a mode other than external.
    #[error(
        "memory filename '{file}' requires external snapshot{at}; set snapshot='external' or remove the file attribute",
        at = At(*pos)
    )]
    MemoryFileNeedsExternal {
        /// The file.
        file: String,
        /// Position of `<memory>`.
        pos: Option<Pos>,
    },
    /// `<memory snapshot='external'/>` without a file.
    #[error(
        "external memory snapshots require a filename{at}; add file='/absolute/path' to <memory>",
        at = At(*pos)
    )]
    ExternalMemoryNeedsFile {
        /// Position of `<memory>`.
        pos: Option<Pos>,
    },
    /// Memory requested for an offline or disk-only snapshot.
    #[error(
        "memory state cannot be saved with offline or disk-only snapshot{at}; use <memory snapshot='no'/> or drop the disk-only request",
        at = At(*pos)
    )]
    MemoryWithOffline {
        /// Position of `<memory>`.
        pos: Option<Pos>,
    },

    // ----- disk alignment against the domain -----
    /// Alignment needs a domain definition and none is available.
    #[error(
        "missing domain in snapshot; a snapshot's disks can only be checked against a domain definition: pass the domain or include <domain> in the snapshot"
    )]
    MissingDomain,
    /// More snapshot disks than domain disks.
    #[error(
        "too many disk snapshot requests for domain: the snapshot lists {requested} disks but the domain has {available}; remove the extra <disk> entries"
    )]
    TooManyDisks {
        /// Disks in the snapshot.
        requested: usize,
        /// Disks in the domain.
        available: usize,
    },
    /// A snapshot disk names no domain disk.
    #[error("no disk named '{name}'; name a disk by its target ({targets}) or its source path")]
    NoSuchDisk {
        /// The name given.
        name: String,
        /// The domain's targets, comma separated.
        targets: String,
    },
    /// A path names more than one domain disk.
    #[error(
        "disk name '{name}' is ambiguous: it is the source of both '{first}' and '{second}'; name the disk by its target"
    )]
    AmbiguousDisk {
        /// The name given.
        name: String,
        /// First matching target.
        first: String,
        /// Second matching target.
        second: String,
    },
    /// The same domain disk is listed twice.
    #[error("disk '{name}' specified twice; keep one <disk> entry for it")]
    DiskTwice {
        /// The disk's target.
        name: String,
    },
    /// Internal snapshots cannot exclude or mix disks.
    #[error(
        "disk '{disk}' must use snapshot mode '{mode}'; internal snapshots cover every disk the same way: change its snapshot attribute or make the snapshot external"
    )]
    DiskMustUseMode {
        /// The disk's target.
        disk: String,
        /// The required mode.
        mode: &'static str,
    },
    /// A new image path was given for a disk whose mode is not external.
    #[error(
        "file '{path}' for disk '{disk}' requires use of external snapshot mode; set snapshot='external' or drop the <source>"
    )]
    PathRequiresExternal {
        /// The path.
        path: String,
        /// The disk's target.
        disk: String,
    },
    /// No default external file name can be made for a disk.
    #[error("cannot generate external snapshot name for disk '{disk}': {reason}")]
    CannotGenerateName {
        /// The disk's target.
        disk: String,
        /// Why, and what to give instead.
        reason: String,
    },
    /// Two disks would write the same new image.
    #[error(
        "disks '{disk}' and '{other}' would both write the new image '{path}'; give each disk its own <source file=.../>"
    )]
    TargetCollision {
        /// The later disk.
        disk: String,
        /// The earlier disk.
        other: String,
        /// The shared path.
        path: String,
    },
    /// A new image path is the current image (or backing image) of a disk.
    #[error(
        "new image '{path}' for disk '{disk}' is already used by disk '{other}'; an external snapshot must write a new file: give the disk another <source file='...'/> or choose another snapshot name"
    )]
    TargetIsExistingSource {
        /// The disk being snapshotted.
        disk: String,
        /// The disk whose source (or backing image) it is.
        other: String,
        /// The path.
        path: String,
    },
    /// A domain definition lists two disks with the same target.
    #[error("domain has two disks with target '{target}'; each disk needs its own target dev")]
    DuplicateTarget {
        /// The target.
        target: String,
    },
}

impl ConfError {
    /// The position in the document this error refers to, if any.
    #[must_use]
    pub fn pos(&self) -> Option<Pos> {
        match self {
            Self::TooDeep { pos, .. }
            | Self::TooManyAttributes { pos, .. }
            | Self::Syntax { pos, .. }
            | Self::WrongRoot { pos, .. }
            | Self::NotASnapshot { pos, .. }
            | Self::UnexpectedElement { pos, .. }
            | Self::UnexpectedAttribute { pos, .. }
            | Self::UnexpectedText { pos, .. }
            | Self::DuplicateElement { pos, .. }
            | Self::NotAllowed { pos, .. }
            | Self::MissingElement { pos, .. }
            | Self::MissingAttribute { pos, .. }
            | Self::InvalidValue { pos, .. }
            | Self::RelativePath { pos, .. }
            | Self::ManualMemory { pos }
            | Self::MemoryFileNeedsExternal { pos, .. }
            | Self::ExternalMemoryNeedsFile { pos }
            | Self::MemoryWithOffline { pos } => *pos,
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ConfError> = std::result::Result<T, E>;
