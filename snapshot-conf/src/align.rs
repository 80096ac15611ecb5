//! Disk alignment: matching a snapshot's `<disks>` to the domain's disks
//! (libvirt's `virDomainSnapshotAlignDisks` and
//! `virDomainSnapshotDefAssignExternalNames`), plus the conflicts libvirt
//! lets through and we refuse (two disks writing one new image, a new
//! image that is an existing disk's image).
//!
//! After alignment the snapshot lists exactly one disk per domain disk, in
//! domain order, each named by its target and with a definite mode;
//! external disks without a path get `<source>` minus its last suffix plus
//! `.` and the snapshot name (`/img/vm.qcow2` + `s1` → `/img/vm.s1`).

use std::collections::HashMap;
use std::path::Path;

use crate::domain::{DomainDef, DomainDisk};
use crate::error::{ConfError, Result};
use crate::snapshot::{DomainSnapshotDef, EmbeddedDomain, SnapshotDisk};
use crate::source::{DiskSource, SnapshotMode, SourceKind};

/// How undecided disks are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignParams {
    /// Mode for disks with neither an explicit mode nor a domain default.
    pub default_mode: SnapshotMode,
    /// Internal snapshots must cover every disk the same way (true for
    /// qcow2 `savevm`, which cannot leave a disk out).
    pub uniform_internal: bool,
    /// Unlisted disks get `default_mode` even when the domain disk has its
    /// own `snapshot=` attribute.
    pub force_default: bool,
}

impl AlignParams {
    /// `default_mode`, uniform internal snapshots, domain defaults honoured.
    #[must_use]
    pub fn new(default_mode: SnapshotMode) -> Self {
        Self {
            default_mode,
            uniform_internal: true,
            force_default: false,
        }
    }
}

/// What alignment may ask of the filesystem: whether a disk's current
/// image is a regular file (default names are only made for files).
pub trait SourceProbe {
    /// Whether `path` is a regular file.
    fn is_regular_file(&self, path: &str) -> bool;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFiles;

impl SourceProbe for HostFiles {
    fn is_regular_file(&self, path: &str) -> bool {
        Path::new(path).metadata().is_ok_and(|m| m.is_file())
    }
}

/// The domain's own default for a disk: its `snapshot=` attribute, and
/// `no` for read-only disks without one (libvirt's domain post-parse).
fn domain_default(disk: &DomainDisk) -> Option<SnapshotMode> {
    disk.snapshot
        .or_else(|| disk.readonly.then_some(SnapshotMode::No))
}

impl DomainSnapshotDef {
    /// Aligns `disks` with a domain: the snapshot's own full `<domain>`
    /// when it has one, else `existing`. On error the definition is
    /// unchanged.
    ///
    /// # Errors
    /// No domain, too many or unknown or repeated disks, a mode an internal
    /// snapshot cannot use, a path on a non-external disk, no default name
    /// possible, or two disks (or a disk and an existing image) sharing a
    /// new image.
    pub fn align_disks(
        &mut self,
        existing: Option<&DomainDef>,
        params: AlignParams,
        probe: &dyn SourceProbe,
    ) -> Result<()> {
        let domain = match (&self.domain, existing) {
            (Some(EmbeddedDomain::Full(d)), _) => &d.def,
            (_, Some(d)) => d,
            (_, None) => return Err(ConfError::MissingDomain),
        };
        let aligned = align(self, domain, params, probe)?;
        self.disks = aligned;
        Ok(())
    }
}

fn align(
    snap: &DomainSnapshotDef,
    domain: &DomainDef,
    params: AlignParams,
    probe: &dyn SourceProbe,
) -> Result<Vec<SnapshotDisk>> {
    if snap.disks.len() > domain.disks.len() {
        return Err(ConfError::TooManyDisks {
            requested: snap.disks.len(),
            available: domain.disks.len(),
        });
    }
    let require_match = params.uniform_internal && params.default_mode == SnapshotMode::Internal;
    let mut slots: Vec<Option<SnapshotDisk>> = vec![None; domain.disks.len()];
    let index_of = DiskIndex::new(domain);

    for requested in &snap.disks {
        let index = index_of.find(&requested.name)?;
        let dom_disk = &domain.disks[index];
        if slots[index].is_some() {
            return Err(ConfError::DiskTwice {
                name: dom_disk.target.clone(),
            });
        }
        let mut disk = requested.clone();
        let own = domain_default(dom_disk);
        disk.mode = Some(match disk.mode {
            None => match own {
                Some(m) if !require_match || m == SnapshotMode::No => m,
                _ => params.default_mode,
            },
            Some(m) => {
                let allowed = m == params.default_mode
                    || (m == SnapshotMode::No && own == Some(SnapshotMode::No));
                if require_match && !allowed {
                    return Err(ConfError::DiskMustUseMode {
                        disk: dom_disk.target.clone(),
                        mode: params.default_mode.as_str(),
                    });
                }
                m
            }
        });
        if let Some(path) = &disk.source.path
            && disk.mode != Some(SnapshotMode::External)
        {
            return Err(ConfError::PathRequiresExternal {
                path: path.clone(),
                disk: dom_disk.target.clone(),
            });
        }
        disk.name.clone_from(&dom_disk.target);
        slots[index] = Some(disk);
    }

    let mut disks: Vec<SnapshotDisk> = slots
        .into_iter()
        .zip(&domain.disks)
        .map(|(slot, dom_disk)| {
            slot.unwrap_or_else(|| {
                let mode = if dom_disk.is_empty_drive() {
                    SnapshotMode::No
                } else {
                    match domain_default(dom_disk) {
                        Some(m) if !params.force_default => m,
                        _ => params.default_mode,
                    }
                };
                SnapshotDisk::new(dom_disk.target.clone(), Some(mode))
            })
        })
        .collect();

    assign_external_names(snap.name.as_deref(), domain, &mut disks, probe)?;
    check_conflicts(domain, &disks)?;
    Ok(disks)
}

/// Finds domain disks by target or source path in O(1), so aligning a
/// domain with thousands of disks stays linear.
struct DiskIndex<'d> {
    domain: &'d DomainDef,
    by_target: HashMap<&'d str, usize>,
    /// First and second disk with this local source path.
    by_path: HashMap<&'d str, (usize, Option<usize>)>,
}

impl<'d> DiskIndex<'d> {
    fn new(domain: &'d DomainDef) -> Self {
        let mut by_target = HashMap::with_capacity(domain.disks.len());
        let mut by_path: HashMap<&str, (usize, Option<usize>)> = HashMap::new();
        for (i, d) in domain.disks.iter().enumerate() {
            by_target.entry(d.target.as_str()).or_insert(i);
            if let Some(p) = d.source.local_path() {
                by_path
                    .entry(p)
                    .and_modify(|e| {
                        e.1.get_or_insert(i);
                    })
                    .or_insert((i, None));
            }
        }
        Self {
            domain,
            by_target,
            by_path,
        }
    }

    /// Index of the domain disk called `name` (target, or source path).
    fn find(&self, name: &str) -> Result<usize> {
        if let Some(&i) = self.by_target.get(name) {
            return Ok(i);
        }
        let disks = &self.domain.disks;
        match self.by_path.get(name) {
            Some(&(i, None)) => Ok(i),
            Some(&(first, Some(second))) => Err(ConfError::AmbiguousDisk {
                name: name.to_string(),
                first: disks[first].target.clone(),
                second: disks[second].target.clone(),
            }),
            None => Err(ConfError::NoSuchDisk {
                name: name.to_string(),
                targets: disks
                    .iter()
                    .map(|d| d.target.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

fn assign_external_names(
    snapshot: Option<&str>,
    domain: &DomainDef,
    disks: &mut [SnapshotDisk],
    probe: &dyn SourceProbe,
) -> Result<()> {
    for (disk, dom_disk) in disks.iter_mut().zip(&domain.disks) {
        if disk.mode != Some(SnapshotMode::External) || disk.source.path.is_some() {
            continue;
        }
        let fail = |reason: String| ConfError::CannotGenerateName {
            disk: dom_disk.target.clone(),
            reason,
        };
        if disk.source.kind != SourceKind::File {
            return Err(fail(format!(
                "its new image is a '{}' source, which has no file name to derive; give one with <source>",
                disk.source.kind
            )));
        }
        let Some(current) = dom_disk.source.local_path() else {
            return Err(fail(
                "the disk has no local source; give the new image with <source file='/absolute/path'/>"
                    .into(),
            ));
        };
        if !probe.is_regular_file(current) {
            return Err(fail(format!(
                "source '{current}' is not a regular file; refusing to generate external snapshot name: give the new image with <source file='/absolute/path'/>"
            )));
        }
        let Some(name) = snapshot else {
            return Err(fail("the snapshot has no name yet; name it first".into()));
        };
        disk.source = DiskSource::file(external_name(current, name));
    }
    Ok(())
}

/// `/img/vm.qcow2` + `s1` → `/img/vm.s1`; the suffix is dropped only when
/// its dot is in the last path component.
#[must_use]
pub fn external_name(current: &str, snapshot: &str) -> String {
    let base = match (current.rfind('.'), current.rfind('/')) {
        (Some(dot), Some(slash)) if dot > slash => &current[..dot],
        (Some(dot), None) => &current[..dot],
        _ => current,
    };
    format!("{base}.{snapshot}")
}

fn check_conflicts(domain: &DomainDef, disks: &[SnapshotDisk]) -> Result<()> {
    let mut existing: HashMap<&str, &str> = HashMap::new();
    for d in &domain.disks {
        let chain = d.backing_chain.iter().flatten().map(|l| &l.source);
        for src in std::iter::once(&d.source).chain(chain) {
            if let Some(p) = src.local_path() {
                existing.entry(p).or_insert(d.target.as_str());
            }
        }
    }
    let mut targets: HashMap<&str, &str> = HashMap::new();
    for d in disks
        .iter()
        .filter(|d| d.mode == Some(SnapshotMode::External))
    {
        let Some(path) = d.source.local_path() else {
            continue;
        };
        if let Some(other) = existing.get(path) {
            return Err(ConfError::TargetIsExistingSource {
                disk: d.name.clone(),
                other: (*other).to_string(),
                path: path.to_string(),
            });
        }
        if let Some(other) = targets.insert(path, d.name.as_str()) {
            return Err(ConfError::TargetCollision {
                disk: d.name.clone(),
                other: other.to_string(),
                path: path.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
