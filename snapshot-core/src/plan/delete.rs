//! `plan_delete`: removing snapshots (libvirt's `virDomainSnapshotDelete`
//! with CHILDREN / CHILDREN_ONLY / METADATA_ONLY), so that no other
//! snapshot, branch or the domain itself loses data.
//!
//! Per disk of each snapshot deleted:
//! - internal: the snapshot is dropped from the image holding it (a copy
//!   is deleted);
//! - external: the image the snapshot froze (`I`) goes, its data moving
//!   to what is built on it: with one image `X` on `I`, `X` is merged down
//!   into `I`, which then takes `X`'s name (`X`'s users keep their path);
//!   with several, each is rebased onto `I`'s backing (copying what it
//!   read from `I`), then `I` is deleted; with none, `I` is deleted. An
//!   image another snapshot still needs (an internal snapshot of it lives
//!   inside) is kept as it is. Merging or rebasing an image that holds
//!   internal snapshots would change what those read: refused, with the
//!   way out.
//!
//! Several snapshots (CHILDREN, CHILDREN_ONLY) are deleted deepest first,
//! each planned against the images as the previous ones left them.

use std::collections::{HashMap, HashSet};

use snapshot_conf::{DomainSnapshotDef, EmbeddedDomain, SnapshotMode as XmlMode};

use super::create::source_label;
use super::error::PlanError;
use super::facts::{DomainFacts, cannot, driver_for, recorded};
use super::step::{DiskAction, DiskStep, Performer, Plan, PlanKind, Step};
use crate::tree::{ChildPolicy, SnapshotTree};

/// A delete request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRequest {
    /// The snapshot.
    pub name: String,
    /// What happens to its children.
    pub policy: ChildPolicy,
    /// Only the metadata goes; storage stays as it is.
    pub metadata_only: bool,
    /// The stored definition of every snapshot of the domain.
    pub snapshots: HashMap<String, DomainSnapshotDef>,
    /// Each image's backing image (`None`: it has none), as read from the
    /// images: every image the snapshots and the domain refer to.
    pub backing: HashMap<String, Option<String>>,
    /// Images their one child cannot be merged into (not qcow2, holding
    /// internal snapshots, another size): their children are rebased
    /// instead.
    pub merge_blocked: HashSet<String>,
}

/// Plans deleting `request.name` from `tree`.
///
/// # Errors
/// An unknown snapshot, a snapshot without stored definition, or a
/// deletion that would change another snapshot's data.
pub fn plan_delete(
    request: &DeleteRequest,
    tree: &SnapshotTree,
    facts: &DomainFacts,
) -> Result<Plan, PlanError> {
    let name = &request.name;
    if !tree.contains(name) {
        return Err(PlanError::invalid(
            format!("domain '{}' has no snapshot named '{name}'", facts.name()),
            "list them with snapshot-list",
        ));
    }
    let mut order = Vec::new();
    if request.policy != ChildPolicy::Rebase {
        deepest_first(tree, name, &mut order);
        order.pop(); // the snapshot itself comes last, if at all
    }
    if request.policy != ChildPolicy::ChildrenOnly {
        order.push(name.clone());
    }
    let mut state = Images {
        backing: request.backing.clone(),
        gone: HashSet::new(),
    };
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let mut deleted = HashSet::new();
    for victim in &order {
        if !request.metadata_only {
            let Some(def) = request.snapshots.get(victim) else {
                return Err(PlanError::invalid(
                    format!(
                        "snapshot '{victim}' has no stored definition to delete its storage by"
                    ),
                    "delete its metadata only (--metadata)",
                ));
            };
            let others: Vec<(&String, &DomainSnapshotDef)> = request
                .snapshots
                .iter()
                .filter(|(n, _)| *n != victim && !deleted.contains(*n))
                .collect();
            plan_one(
                victim,
                def,
                &others,
                facts,
                &request.merge_blocked,
                &mut state,
                &mut steps,
                &mut notes,
            )?;
        }
        steps.push(Step::RemoveMetadata(victim.clone()));
        deleted.insert(victim.clone());
    }
    if request.metadata_only {
        notes.push("--metadata: every image and memory file stays as it is".to_string());
    }
    let what = match request.policy {
        ChildPolicy::Rebase => "the snapshot alone, its children move to its parent".to_string(),
        ChildPolicy::Children => format!("the snapshot and {} descendant(s)", order.len() - 1),
        ChildPolicy::ChildrenOnly => format!("{} descendant(s), the snapshot stays", order.len()),
    };
    Ok(Plan {
        kind: PlanKind::Delete,
        domain: facts.name().to_string(),
        snapshot: name.clone(),
        summary: what,
        steps,
        def: None,
        notes,
    })
}

/// `name`'s subtree, every snapshot after its descendants.
fn deepest_first(tree: &SnapshotTree, name: &str, out: &mut Vec<String>) {
    if let Ok(children) = tree.children(name) {
        let mut children: Vec<&str> = children;
        children.sort_unstable();
        for c in children {
            deepest_first(tree, c, out);
        }
    }
    out.push(name.to_string());
}

/// The images as the steps so far leave them.
struct Images {
    backing: HashMap<String, Option<String>>,
    gone: HashSet<String>,
}

impl Images {
    /// The images built directly on `image`, sorted.
    fn built_on(&self, image: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .backing
            .iter()
            .filter(|(img, b)| b.as_deref() == Some(image) && !self.gone.contains(*img))
            .map(|(img, _)| img.clone())
            .collect();
        v.sort();
        v
    }
}

/// The image a snapshot's `<domain>` gives for `disk`.
fn image_of(def: &DomainSnapshotDef, disk: &str) -> Option<String> {
    match &def.domain {
        Some(EmbeddedDomain::Full(d)) => {
            d.def.disk_by_target(disk).map(|d| source_label(&d.source))
        }
        _ => None,
    }
}

/// The snapshots (other than the one deleted) that keep an internal
/// snapshot inside `image`.
fn internal_holders<'a>(others: &[(&'a String, &DomainSnapshotDef)], image: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = others
        .iter()
        .filter(|(_, def)| {
            def.disks.iter().any(|sd| {
                sd.mode == Some(XmlMode::Internal)
                    && image_of(def, &sd.name).as_deref() == Some(image)
            })
        })
        .map(|(n, _)| n.as_str())
        .collect();
    v.sort_unstable();
    v
}

#[allow(clippy::too_many_lines, clippy::too_many_arguments)]
fn plan_one(
    name: &str,
    def: &DomainSnapshotDef,
    others: &[(&String, &DomainSnapshotDef)],
    facts: &DomainFacts,
    merge_blocked: &HashSet<String>,
    images: &mut Images,
    steps: &mut Vec<Step>,
    notes: &mut Vec<String>,
) -> Result<(), PlanError> {
    let active = facts.state.is_active();
    // The live chain of each disk: its source and everything below.
    let live: HashSet<String> = if active {
        facts
            .domain
            .def
            .disks
            .iter()
            .flat_map(|d| {
                let mut chain = Vec::new();
                let mut cur = Some(source_label(&d.source));
                while let Some(c) = cur {
                    cur = images.backing.get(&c).cloned().flatten();
                    chain.push(c);
                    if chain.len() > 4096 {
                        break;
                    }
                }
                chain
            })
            .collect()
    } else {
        HashSet::new()
    };
    let performer = |image: &str, kind: &str| {
        if live.contains(image) {
            Performer::Hypervisor
        } else {
            Performer::Driver(kind.to_string())
        }
    };
    for sd in &def.disks {
        let mode = sd.mode.unwrap_or(XmlMode::No);
        if !matches!(mode, XmlMode::Internal | XmlMode::External) {
            continue;
        }
        let disk = sd.name.clone();
        let Some(image) = image_of(def, &disk) else {
            return Err(PlanError::invalid(
                format!("snapshot '{name}' does not record which image disk {disk} used"),
                "delete its metadata only (--metadata), then remove its images by hand",
            ));
        };
        let Some(df) = facts.disk(&disk) else {
            return Err(PlanError::unsupported(
                format!(
                    "disk {disk} of snapshot '{name}' is no longer in domain '{}', so its storage cannot be examined",
                    facts.name()
                ),
                "put the disk back in the domain definition (define), or delete the metadata only (--metadata)",
            ));
        };
        if mode == XmlMode::Internal {
            // Judged as the storage is with the domain stopped: what the
            // snapshot was taken as (an internal snapshot, or a copy).
            // As recorded when taken, else as the drivers see it now.
            let recorded = recorded(def, &disk, &df.offline);
            let copy_file = recorded
                .as_ref()
                .filter(|r| r.mode == "copy")
                .and_then(|r| r.file.clone());
            let (kind, copy) = if let Some(r) = recorded
                .as_ref()
                .filter(|r| r.driver != "hypervisor" && (r.mode == "copy" || r.mode == "internal"))
            {
                (r.driver.clone(), r.mode == "copy")
            } else if let Some(k) = driver_for(&df.offline, |c| c.internal) {
                (k.to_string(), false)
            } else if let Some(k) = driver_for(&df.offline, |c| c.copy) {
                (k.to_string(), true)
            } else {
                return Err(PlanError::unsupported(
                    format!(
                        "the internal snapshot of disk {disk} ({image}) cannot be dropped: {}",
                        cannot(&df.offline, "drop one")
                    ),
                    "delete the metadata only (--metadata)",
                ));
            };
            if active && live.contains(&image) && !copy {
                let current = facts
                    .domain
                    .def
                    .disk_by_target(&disk)
                    .map(|d| source_label(&d.source));
                if current.as_deref() != Some(image.as_str()) {
                    return Err(PlanError::unsupported(
                        format!(
                            "the internal snapshot of disk {disk} lives in {image}, which the running domain uses as a read-only backing image"
                        ),
                        "shut the domain off, then delete the snapshot",
                    ));
                }
            }
            let action = if copy {
                DiskAction::Copy {
                    target: copy_file.unwrap_or_else(|| format!("{image}.{name}")),
                }
            } else {
                DiskAction::Internal
            };
            let by = if copy {
                Performer::Driver(kind.clone())
            } else {
                performer(&image, &kind)
            };
            steps.push(Step::DeleteDiskSnapshot(DiskStep {
                disk,
                image,
                by,
                action,
            }));
            continue;
        }
        // External: the frozen image goes, its data to what is built on it.
        let Some(kind) = driver_for(&df.offline, |c| c.overlay).map(str::to_string) else {
            return Err(PlanError::unsupported(
                format!(
                    "the external snapshot of disk {disk} ({image}) cannot be merged away: {}",
                    cannot(&df.offline, "work on image chains")
                ),
                "delete the metadata only (--metadata)",
            ));
        };
        let holders = internal_holders(others, &image);
        if !holders.is_empty() {
            notes.push(format!(
                "{disk}: {image} is kept: snapshot(s) {} keep internal snapshots in it",
                holders.join(", ")
            ));
            continue;
        }
        let current_uses = facts
            .domain
            .def
            .disks
            .iter()
            .any(|d| source_label(&d.source) == image);
        let dependents = images.built_on(&image);
        // Internal snapshots inside an image built on this one read
        // through it: moving its data would change theirs. It stays.
        let readers: Vec<String> = dependents
            .iter()
            .flat_map(|x| internal_holders(others, x))
            .map(str::to_string)
            .collect();
        if !readers.is_empty() {
            notes.push(format!(
                "{disk}: {image} is kept: internal snapshots of {} in the images built on it read through it (delete those snapshots to free it)",
                readers.join(", ")
            ));
            continue;
        }
        let parent = images.backing.get(&image).cloned().flatten();
        match dependents.as_slice() {
            [] if current_uses => {
                notes.push(format!(
                    "{disk}: {image} is kept: the domain uses it as the disk's source"
                ));
            }
            [] => {
                steps.push(Step::RemoveImage {
                    disk,
                    path: image.clone(),
                });
                images.gone.insert(image);
            }
            [x] if !merge_blocked.contains(&image) => {
                steps.push(Step::MergeImage {
                    disk,
                    image: image.clone(),
                    into: x.clone(),
                    by: if live.contains(x) {
                        Performer::Hypervisor
                    } else {
                        Performer::Driver(kind.clone())
                    },
                });
                images.backing.insert(x.clone(), parent);
                images.gone.insert(image);
            }
            many => {
                let by = if many.iter().any(|x| live.contains(x)) {
                    Performer::Hypervisor
                } else {
                    Performer::Driver(kind.clone())
                };
                steps.push(Step::RebaseImages {
                    disk,
                    image: image.clone(),
                    children: many.to_vec(),
                    onto: parent.clone(),
                    by,
                });
                for x in many {
                    images.backing.insert(x.clone(), parent.clone());
                }
                images.gone.insert(image);
            }
        }
    }
    if def.memory == Some(XmlMode::External)
        && let Some(file) = &def.memory_file
    {
        steps.push(Step::RemoveMemoryFile(file.clone()));
    }
    Ok(())
}
