//! Conversions between snapshot-core's driver types and the ABI's
//! documents ([`crate::payload`]), used by the host (requests out, results
//! in) and by the bridge that serves a linked driver as a plugin.
//! Paths cross as UTF-8 strings: a path that is not UTF-8 is refused
//! before anything is sent.

use std::path::{Path, PathBuf};

use snapshot_core::driver as core;

use crate::payload as doc;

/// A path that is not UTF-8 (the documents are UTF-8 JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUtf8(pub PathBuf);

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not valid UTF-8, which plugins need; rename it",
            self.0.display()
        )
    }
}

fn path(p: &Path) -> Result<String, NotUtf8> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| NotUtf8(p.to_path_buf()))
}

fn opt_path(p: Option<&PathBuf>) -> Result<Option<String>, NotUtf8> {
    p.map(|p| path(p)).transpose()
}

/// A document's mode.
#[must_use]
pub fn mode_to_doc(mode: core::SnapshotMode) -> doc::Mode {
    match mode {
        core::SnapshotMode::Internal => doc::Mode::Internal,
        core::SnapshotMode::External => doc::Mode::External,
        core::SnapshotMode::Copy => doc::Mode::Copy,
    }
}

/// snapshot-core's mode.
#[must_use]
pub fn mode_from_doc(mode: doc::Mode) -> core::SnapshotMode {
    match mode {
        doc::Mode::Internal => core::SnapshotMode::Internal,
        doc::Mode::External => core::SnapshotMode::External,
        doc::Mode::Copy => core::SnapshotMode::Copy,
    }
}

/// A document's state.
#[must_use]
pub fn state_to_doc(state: core::VolumeState) -> doc::State {
    match state {
        core::VolumeState::Offline => doc::State::Offline,
        core::VolumeState::InUse => doc::State::InUse,
    }
}

/// snapshot-core's state.
#[must_use]
pub fn state_from_doc(state: doc::State) -> core::VolumeState {
    match state {
        doc::State::Offline => core::VolumeState::Offline,
        doc::State::InUse => core::VolumeState::InUse,
    }
}

/// A volume as a document.
///
/// # Errors
/// Its path is not UTF-8.
pub fn volume_to_doc(v: &core::Volume) -> Result<doc::Volume, NotUtf8> {
    Ok(doc::Volume {
        path: path(&v.path)?,
        format: v.format.as_str().to_string(),
    })
}

/// A volume from a document.
#[must_use]
pub fn volume_from_doc(v: &doc::Volume) -> core::Volume {
    core::Volume::new(&v.path, core::VolumeFormat::from_name(&v.format))
}

fn checksum_to_doc(c: &core::Checksum) -> doc::Checksum {
    doc::Checksum {
        algorithm: c.algorithm.clone(),
        value: c.value.clone(),
    }
}

fn checksum_from_doc(c: &doc::Checksum) -> core::Checksum {
    core::Checksum {
        algorithm: c.algorithm.clone(),
        value: c.value.clone(),
    }
}

/// A snapshot reference as a document.
///
/// # Errors
/// Its file's path is not UTF-8.
pub fn ref_to_doc(r: &core::SnapshotRef) -> Result<doc::SnapshotRef, NotUtf8> {
    Ok(doc::SnapshotRef {
        name: r.name.clone(),
        mode: mode_to_doc(r.mode),
        file: opt_path(r.file.as_ref())?,
        checksum: r.checksum.as_ref().map(checksum_to_doc),
    })
}

/// A snapshot reference from a document.
#[must_use]
pub fn ref_from_doc(r: &doc::SnapshotRef) -> core::SnapshotRef {
    core::SnapshotRef {
        name: r.name.clone(),
        mode: mode_from_doc(r.mode),
        file: r.file.as_ref().map(PathBuf::from),
        checksum: r.checksum.as_ref().map(checksum_from_doc),
    }
}

/// A plan as a document.
///
/// # Errors
/// Its file's path is not UTF-8.
pub fn plan_to_doc(p: &core::SnapshotPlan) -> Result<doc::SnapshotPlan, NotUtf8> {
    Ok(doc::SnapshotPlan {
        name: p.name.clone(),
        mode: mode_to_doc(p.mode),
        file: opt_path(p.file.as_ref())?,
        checksum: p.checksum,
        writable: p.writable,
    })
}

/// A plan from a document.
#[must_use]
pub fn plan_from_doc(p: &doc::SnapshotPlan) -> core::SnapshotPlan {
    core::SnapshotPlan {
        name: p.name.clone(),
        mode: mode_from_doc(p.mode),
        file: p.file.as_ref().map(PathBuf::from),
        checksum: p.checksum,
        writable: p.writable,
    }
}

/// A created snapshot as a document.
///
/// # Errors
/// Its file's path is not UTF-8.
pub fn created_to_doc(c: &core::CreatedSnapshot) -> Result<doc::CreatedSnapshot, NotUtf8> {
    Ok(doc::CreatedSnapshot {
        name: c.name.clone(),
        mode: mode_to_doc(c.mode),
        file: opt_path(c.file.as_ref())?,
        format: c.format.as_ref().map(|f| f.as_str().to_string()),
        checksum: c.checksum.as_ref().map(checksum_to_doc),
        size: c.size,
    })
}

/// A created snapshot from a document.
#[must_use]
pub fn created_from_doc(c: &doc::CreatedSnapshot) -> core::CreatedSnapshot {
    core::CreatedSnapshot {
        name: c.name.clone(),
        mode: mode_from_doc(c.mode),
        file: c.file.as_ref().map(PathBuf::from),
        format: c.format.as_deref().map(core::VolumeFormat::from_name),
        checksum: c.checksum.as_ref().map(checksum_from_doc),
        size: c.size,
    }
}

/// Capabilities as a document (`overlay` has no place in ABI 1: plugins
/// have no image chains).
#[must_use]
pub fn caps_to_doc(c: &core::Capabilities) -> doc::Capabilities {
    doc::Capabilities {
        internal: c.internal,
        external: c.external,
        copy: c.copy,
        revert: c.revert,
        revert_keeps_newer: c.revert_keeps_newer,
        delete_rebase: c.delete_rebase,
        list: c.list,
        checksums: c.checksums,
    }
}

/// Capabilities from a document.
#[must_use]
pub fn caps_from_doc(c: &doc::Capabilities) -> core::Capabilities {
    core::Capabilities {
        internal: c.internal,
        external: c.external,
        copy: c.copy,
        revert: c.revert,
        revert_keeps_newer: c.revert_keeps_newer,
        delete_rebase: c.delete_rebase,
        list: c.list,
        checksums: c.checksums,
        overlay: false,
    }
}

/// A storage snapshot as a document.
///
/// # Errors
/// Its file's path is not UTF-8.
pub fn storage_to_doc(s: &core::StorageSnapshot) -> Result<doc::StorageSnapshot, NotUtf8> {
    Ok(doc::StorageSnapshot {
        name: s.name.clone(),
        mode: mode_to_doc(s.mode),
        id: s.id.clone(),
        file: opt_path(s.file.as_ref())?,
        created: s.created,
        vm_state_size: s.vm_state_size,
        invalid: s.invalid.clone(),
    })
}

/// A storage snapshot from a document.
#[must_use]
pub fn storage_from_doc(s: &doc::StorageSnapshot) -> core::StorageSnapshot {
    core::StorageSnapshot {
        name: s.name.clone(),
        mode: mode_from_doc(s.mode),
        id: s.id.clone(),
        file: s.file.as_ref().map(PathBuf::from),
        created: s.created,
        vm_state_size: s.vm_state_size,
        invalid: s.invalid.clone(),
    }
}

/// A revert outcome as a document.
#[must_use]
pub fn outcome_to_doc(o: &core::RevertOutcome) -> doc::RevertResult {
    match o {
        core::RevertOutcome::Done => doc::RevertResult::Done,
        core::RevertOutcome::Deferred { message } => doc::RevertResult::Deferred {
            message: message.clone(),
        },
    }
}

/// A revert outcome from a document.
#[must_use]
pub fn outcome_from_doc(o: &doc::RevertResult) -> core::RevertOutcome {
    match o {
        doc::RevertResult::Done => core::RevertOutcome::Done,
        doc::RevertResult::Deferred { message } => core::RevertOutcome::Deferred {
            message: message.clone(),
        },
    }
}
