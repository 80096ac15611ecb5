//! The documents that cross the ABI: every request the host sends and
//! every result a plugin writes back, as UTF-8 JSON. These types are the
//! schema: `schema/virtsnap-plugin-v1.schema.json` is generated from them
//! (a test fails when it drifts) and both the host and the Rust SDK
//! (de)serialise through them.
//!
//! Evolution: readers ignore fields they do not know (informational
//! fields may be added in any minor version), but a request lists in
//! `requires` the features a plugin must understand to carry it out
//! safely; a plugin that does not know one of them refuses the request
//! with `E_UNSUPPORTED`. ABI 1.0 defines none; ABI 1.1 defines
//! [`FEATURE_NETWORK_VOLUME`], which every request about a network volume
//! carries (so a 1.0 plugin, which cannot know it, refuses such a volume
//! instead of mistaking its name for a path).

use serde::{Deserialize, Serialize};

/// The feature (ABI 1.1) a request about a network volume requires: its
/// `volume.path` is the volume's name `PROTOCOL:NAME[:OPTION=VALUE...]`
/// (`rbd:pool/image:conf=/etc/ceph/ceph.conf`), not an absolute path.
pub const FEATURE_NETWORK_VOLUME: &str = "network-volume";

/// The features a 1.x SDK understands in a request's `requires`.
pub const KNOWN_FEATURES: &[&str] = &[FEATURE_NETWORK_VOLUME, FEATURE_FLATTEN_CLONES];

/// A delete request asks for the snapshot's storage-level clones to be
/// flattened (`DeleteRequest::flatten_clones`).
pub const FEATURE_FLATTEN_CLONES: &str = "flatten-clones";

/// How a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Inside the volume or by the storage (qcow2 internal, LVM, btrfs).
    Internal,
    /// A new image the volume's later writes go to.
    External,
    /// A full, independent copy.
    Copy,
}

/// Whether a running guest writes to the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Nobody has it open for writing.
    Offline,
    /// A running guest writes to it.
    InUse,
}

/// A volume: a file, a block device or a network volume, and the format
/// of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Volume {
    /// An absolute path, or a network volume's name
    /// `PROTOCOL:NAME[:OPTION=VALUE...]` (then `requires` holds
    /// `network-volume`).
    pub path: String,
    /// `raw`, `qcow2`, or another `qemu-img` format name.
    pub format: String,
}

/// A content checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Checksum {
    /// The algorithm (`sha256`).
    pub algorithm: String,
    /// Lowercase hex digest.
    pub value: String,
}

/// A snapshot as the host's metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnapshotRef {
    /// Its name.
    pub name: String,
    /// How it is kept.
    pub mode: Mode,
    /// Its file (external and copy snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The checksum recorded at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
}

/// What the plugin can do with one volume in one state. Absent fields
/// are `false`; a plugin that does not take the volume answers `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
#[allow(clippy::struct_excessive_bools)]
pub struct Capabilities {
    /// Internal snapshots.
    pub internal: bool,
    /// External snapshots.
    pub external: bool,
    /// Full copies.
    pub copy: bool,
    /// Reverting (needs the `revert` slot).
    pub revert: bool,
    /// A revert keeps the snapshots taken after its target.
    pub revert_keeps_newer: bool,
    /// Deleting a snapshot with children, which keep their contents.
    pub delete_rebase: bool,
    /// Listing what the storage holds (needs the `list` slot).
    pub list: bool,
    /// Checksums recorded at creation and verified on revert.
    pub checksums: bool,
}

/// `capabilities`: what the plugin can do with `volume` in `state`.
/// Result: [`Capabilities`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CapabilitiesRequest {
    /// Features the plugin must know to answer (`network-volume` for a
    /// network volume; none otherwise).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The volume.
    pub volume: Volume,
    /// Its state.
    pub state: State,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnapshotPlan {
    /// The name (already checked against virtsnap's name rules).
    pub name: String,
    /// How to keep it (one the plugin declared for the volume).
    pub mode: Mode,
    /// The new file for external and copy snapshots; refuse it with
    /// `E_EXISTS` when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Record a checksum when the plugin can.
    #[serde(default)]
    pub checksum: bool,
    /// Keep the snapshot writable where the storage makes snapshots
    /// read-only by default.
    #[serde(default)]
    pub writable: bool,
}

/// `create`: take the snapshot `plan` describes; on error nothing is left
/// behind. Result: [`CreatedSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateRequest {
    /// Features the plugin must know (`network-volume` for a network
    /// volume; none otherwise).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The volume.
    pub volume: Volume,
    /// What to create.
    pub plan: SnapshotPlan,
}

/// What the plugin created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreatedSnapshot {
    /// The planned name.
    pub name: String,
    /// The planned mode.
    pub mode: Mode,
    /// The planned file, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The file's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The checksum, when asked for and supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// Bytes the snapshot occupies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `revert`: bring the volume back to `snapshot`. With `verify`, check
/// its recorded checksum first (`E_CHECKSUM_MISMATCH` changes nothing).
/// Result: [`RevertResult`], or nothing for `done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RevertRequest {
    /// Features the plugin must know (`network-volume` for a network
    /// volume; none otherwise).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The volume.
    pub volume: Volume,
    /// The snapshot.
    pub snapshot: SnapshotRef,
    /// Check the checksum first.
    #[serde(default)]
    pub verify: bool,
}

/// How a revert ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RevertResult {
    /// The volume holds the snapshot's content; the snapshot is kept.
    Done,
    /// The storage reverts later and consumes the snapshot then.
    Deferred {
        /// What happens and what the user should do.
        message: String,
    },
}

/// `delete`: remove `snapshot`'s storage; `children` (and the volume when
/// `is_current`) keep their contents. Deleting what is gone succeeds.
/// No result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeleteRequest {
    /// Features the plugin must know (`network-volume` for a network
    /// volume; none otherwise).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The volume.
    pub volume: Volume,
    /// The snapshot.
    pub snapshot: SnapshotRef,
    /// Its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotRef>,
    /// Its children.
    #[serde(default)]
    pub children: Vec<SnapshotRef>,
    /// Whether it is the volume's current snapshot.
    #[serde(default)]
    pub is_current: bool,
    /// Flatten the storage's clones of the snapshot (images made from it)
    /// before deleting it, instead of refusing (ABI 1.1; when true,
    /// `requires` holds `flatten-clones`, so a plugin that does not know
    /// it refuses rather than ignores it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flatten_clones: bool,
}

/// `list`: the snapshots the storage holds. Result: [`ListResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListRequest {
    /// Features the plugin must know (`network-volume` for a network
    /// volume; none otherwise).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The volume.
    pub volume: Volume,
}

/// A snapshot the storage holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StorageSnapshot {
    /// Its name.
    pub name: String,
    /// How it is kept.
    pub mode: Mode,
    /// The storage's own id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Creation time, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// Saved VM state bytes.
    #[serde(default)]
    pub vm_state_size: u64,
    /// Why its data cannot be used, when the storage says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// The result of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListResult {
    /// The snapshots.
    pub snapshots: Vec<StorageSnapshot>,
}

/// `undo`: undo a `create` that succeeded (a later step of the host's
/// operation failed): the volume is as before it. No result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UndoRequest {
    /// Features the plugin must know (`network-volume` for a network
    /// volume; none otherwise).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The volume.
    pub volume: Volume,
    /// What `create` returned.
    pub snapshot: CreatedSnapshot,
}

/// `export_diff` (ABI 1.1): write the changes between `from` (or the
/// volume's beginning) and `snapshot` to the new file `file`, in a format
/// the plugin's `import_diff` replays on another volume (RBD's
/// `export-diff`). Result: [`ExportDiffResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExportDiffRequest {
    /// Features the plugin must know (`network-volume` for a network
    /// volume; none otherwise).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The volume.
    pub volume: Volume,
    /// The snapshot the export ends at.
    pub snapshot: SnapshotRef,
    /// The snapshot it starts from; absent for everything from the
    /// volume's beginning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<SnapshotRef>,
    /// The absolute path of the new file. Refuse an existing file with
    /// `E_EXISTS`; on error leave no file behind.
    pub file: String,
}

/// What `export_diff` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExportDiffResult {
    /// Bytes of the file written.
    pub file_bytes: u64,
    /// Bytes of volume data that changed between the two snapshots (the
    /// data the file carries).
    pub changed_bytes: u64,
}

/// `import_diff` (ABI 1.1): replay a file `export_diff` wrote on `volume`,
/// which must hold the diff's start snapshot (none for a diff from the
/// beginning), and create its end snapshot there. On error the volume
/// keeps its snapshots. Result: [`ImportDiffResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImportDiffRequest {
    /// Features the plugin must know (`network-volume` for a network
    /// volume; none otherwise).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The volume.
    pub volume: Volume,
    /// The absolute path of the file to replay.
    pub file: String,
}

/// What `import_diff` applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImportDiffResult {
    /// The snapshot the import created on the volume (the export's end
    /// snapshot); never empty.
    pub snapshot: String,
    /// The snapshot the diff starts from, which the volume held; absent
    /// for a diff from the beginning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The volume's size in bytes after the import.
    pub size: u64,
}

/// The configuration `open` receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OpenConfig {
    /// The host's version.
    pub host_version: String,
    /// The plugin's options: the JSON object in the file beside the
    /// library (`NAME.so` -> `NAME.json`), `{}` when there is none.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// Every document of ABI 1, by operation, for the published schema.
#[cfg(feature = "schema")]
#[derive(Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[allow(dead_code)]
pub struct Documents {
    /// `open`'s configuration.
    pub open: OpenConfig,
    /// `capabilities` request.
    pub capabilities_request: CapabilitiesRequest,
    /// `capabilities` result.
    pub capabilities_result: Capabilities,
    /// `create` request.
    pub create_request: CreateRequest,
    /// `create` result.
    pub create_result: CreatedSnapshot,
    /// `revert` request.
    pub revert_request: RevertRequest,
    /// `revert` result.
    pub revert_result: RevertResult,
    /// `delete` request.
    pub delete_request: DeleteRequest,
    /// `list` request.
    pub list_request: ListRequest,
    /// `list` result.
    pub list_result: ListResult,
    /// `undo` request.
    pub undo_request: UndoRequest,
    /// `export_diff` request (ABI 1.1).
    pub export_diff_request: ExportDiffRequest,
    /// `export_diff` result (ABI 1.1).
    pub export_diff_result: ExportDiffResult,
    /// `import_diff` request (ABI 1.1).
    pub import_diff_request: ImportDiffRequest,
    /// `import_diff` result (ABI 1.1).
    pub import_diff_result: ImportDiffResult,
}

/// The JSON Schema of every document, as published in
#[cfg(feature = "schema")]
/// `schema/virtsnap-plugin-v1.schema.json`.
#[must_use]
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Documents);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The first feature in `requires` this SDK does not know, if any.
#[must_use]
pub fn unknown_feature(requires: &[String]) -> Option<&str> {
    requires
        .iter()
        .map(String::as_str)
        .find(|f| !KNOWN_FEATURES.contains(f))
}
