//! `plan_revert` and `plan_delete`: the exact steps of going back to a
//! snapshot (internal, copy and external disks; memory; RUNNING / PAUSED /
//! FORCE; managed save; transient domains; what a revert discards) and of
//! deleting snapshots (metadata only; internal; external merged into its
//! one dependent, its dependents rebased, or removed; every child policy
//! on a chain, each step planned against the images the previous ones
//! left; what another snapshot still needs is kept or refused).
//!
//! Stored definitions come from `plan_create` where a real snapshot can be
//! taken (aligned disks, state, memory, the domain embedded), or are built
//! by hand where the images tell a longer story (later layers, branches).

mod plan_support;

use std::collections::{HashMap, HashSet};

use plan_support::{Kind, disk_facts, domain, facts, qemu, request, two_qcow2};
use snapshot_conf::{
    DiskSource, DomainSnapshotDef, EmbeddedDomain, SnapshotDisk, SnapshotMode, SnapshotState,
    StorageFormat, external_name,
};
use snapshot_core::plan::{
    CreateFlags, DeleteRequest, DiskAction, DiskStep, DomainFacts, DomainState, MemoryImage,
    Performer, PlanError, PlanKind, RevertFlags, RevertRequest, SourceChange, Step, plan_create,
    plan_delete, plan_revert, state_after,
};
use snapshot_core::{ChildPolicy, Location, SnapshotInfo, SnapshotTree, StateKind};

const RUN: DomainState = DomainState::Running;
const OFF: DomainState = DomainState::Shutoff;
const MEM_EXT: &str = "<memory snapshot='external' file='/mem/s1'/>";
/// The revert's clock: names the new overlays of external disks.
const NOW: i64 = 1_700_000_123;

// ---------------------------------------------------------------------
// Builders.

/// The stored definition of the snapshot `plan_create` takes of `facts`
/// (named `s1`): aligned disks, state, memory, the domain embedded.
fn taken(inner: &str, flags: CreateFlags, facts: &DomainFacts) -> DomainSnapshotDef {
    plan_create(&request(inner, flags), facts)
        .unwrap_or_else(|e| panic!("the snapshot is planned: {e}"))
        .def
        .expect("a create plan carries its definition")
}

/// `facts` with the disks' sources replaced, in the domain's order.
fn with_sources(mut facts: DomainFacts, sources: &[&str]) -> DomainFacts {
    assert_eq!(facts.domain.def.disks.len(), sources.len());
    for (d, s) in facts.domain.def.disks.iter_mut().zip(sources) {
        d.source = DiskSource::file(*s);
    }
    facts
}

/// A revert request without images anything needs.
fn revert(snapshot: DomainSnapshotDef, flags: RevertFlags) -> RevertRequest {
    RevertRequest {
        snapshot,
        flags,
        now: NOW,
        needed_images: HashSet::new(),
        backing_images: HashSet::new(),
    }
}

fn paths(list: &[&str]) -> HashSet<String> {
    list.iter().map(|p| (*p).to_string()).collect()
}

fn driver(kind: &str) -> Performer {
    Performer::Driver(kind.into())
}

fn disk_step(disk: &str, image: &str, by: Performer, action: DiskAction) -> DiskStep {
    DiskStep {
        disk: disk.into(),
        image: image.into(),
        by,
        action,
    }
}

/// The revert of one qcow2 disk to its internal snapshot, offline.
fn revert_internal(disk: &str, image: &str) -> Step {
    Step::RevertDisk(disk_step(disk, image, driver("qemu"), DiskAction::Internal))
}

/// The revert of one disk to an external snapshot: a new qcow2 overlay.
fn revert_external(disk: &str, frozen: &str, overlay: &str) -> Step {
    Step::RevertDisk(disk_step(
        disk,
        frozen,
        driver("qemu"),
        DiskAction::External {
            target: overlay.into(),
            format: StorageFormat::Qcow2,
            reuse: false,
        },
    ))
}

fn change(disk: &str, from: &str, to: &str) -> SourceChange {
    SourceChange {
        disk: disk.into(),
        from: from.into(),
        to: to.into(),
    }
}

/// A stored snapshot `name`, taken shut off without memory, each disk
/// `(target, mode, image)` with the image it used then (the frozen image
/// of an external disk, the image holding an internal one). Targets are
/// vda, vdb, ... in order.
fn stored(name: &str, disks: &[(&str, SnapshotMode, &str)]) -> DomainSnapshotDef {
    let mut dom = domain(&vec![Kind::Qcow2; disks.len()]);
    for (dd, (target, _, image)) in dom.def.disks.iter_mut().zip(disks) {
        assert_eq!(dd.target, *target, "targets in the domain's order");
        dd.source = DiskSource::file(*image);
    }
    DomainSnapshotDef {
        name: Some(name.into()),
        state: Some(SnapshotState::Shutoff),
        memory: Some(SnapshotMode::No),
        disks: disks
            .iter()
            .map(|(target, mode, _)| SnapshotDisk::new(*target, Some(*mode)))
            .collect(),
        domain: Some(EmbeddedDomain::Full(Box::new(dom))),
        ..DomainSnapshotDef::default()
    }
}

/// An external snapshot of vda that froze `frozen`.
fn ext(name: &str, frozen: &str) -> DomainSnapshotDef {
    stored(name, &[("vda", SnapshotMode::External, frozen)])
}

/// An internal snapshot of vda inside `image`.
fn int(name: &str, image: &str) -> DomainSnapshotDef {
    stored(name, &[("vda", SnapshotMode::Internal, image)])
}

/// A tree from `(name, parent)`, parents first.
fn tree(nodes: &[(&str, Option<&str>)]) -> SnapshotTree {
    let mut t = SnapshotTree::new();
    for (name, parent) in nodes {
        t.set_current(*parent).expect("parent defined first");
        t.create(SnapshotInfo {
            name: (*name).to_string(),
            state: StateKind::Inactive,
            location: Location::External,
            has_metadata: true,
            creation_time: 1_700_000_000,
        })
        .expect("a new name");
    }
    t
}

/// The backing map from `(image, its backing)`.
fn backing(pairs: &[(&str, Option<&str>)]) -> HashMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(img, b)| ((*img).to_string(), b.map(str::to_string)))
        .collect()
}

fn delete(
    name: &str,
    policy: ChildPolicy,
    snapshots: Vec<DomainSnapshotDef>,
    backing: HashMap<String, Option<String>>,
) -> DeleteRequest {
    DeleteRequest {
        name: name.into(),
        policy,
        metadata_only: false,
        snapshots: snapshots
            .into_iter()
            .map(|d| (d.name.clone().expect("named"), d))
            .collect(),
        backing,
        merge_blocked: HashSet::new(),
    }
}

/// Domain `vm` with one qcow2 disk vda on `source`, in `state`.
fn vda_on(source: &str, state: DomainState) -> DomainFacts {
    with_sources(facts(&[Kind::Qcow2], state), &[source])
}

fn remove_metadata(names: &[&str]) -> Vec<Step> {
    names
        .iter()
        .map(|n| Step::RemoveMetadata((*n).to_string()))
        .collect()
}

fn merge(image: &str, into: &str, by: Performer) -> Step {
    Step::MergeImage {
        disk: "vda".into(),
        image: image.into(),
        into: into.into(),
        by,
    }
}

// ---------------------------------------------------------------------
// plan_revert.

#[test]
fn revert_offline_to_internal_snapshot_goes_back_inside_each_image() {
    let f = two_qcow2(OFF);
    let snap = taken("", CreateFlags::empty(), &f);
    let plan = plan_revert(&revert(snap, RevertFlags::empty()), &f).expect("planned");
    assert_eq!(plan.kind, PlanKind::Revert);
    assert_eq!(plan.snapshot, "s1");
    assert_eq!(plan.domain, "vm");
    assert_eq!(
        plan.steps,
        vec![
            revert_internal("vda", "/img/vda.qcow2"),
            revert_internal("vdb", "/img/vdb.qcow2"),
            Step::RestoreDefinition,
            Step::SetCurrent("s1".into()),
        ],
        "{plan}"
    );
    assert_eq!(state_after(&plan), OFF);
    assert!(plan.notes.is_empty(), "{plan}");
    // The dry run numbers the steps.
    let text = plan.to_string();
    assert!(
        text.starts_with("plan: revert to snapshot 's1' of domain 'vm'"),
        "{text}"
    );
    assert!(
        text.contains("  4. make 's1' the current snapshot"),
        "{text}"
    );
}

#[test]
fn revert_to_offline_snapshot_starts_the_domain_only_when_asked() {
    let f = two_qcow2(OFF);
    let snap = taken("", CreateFlags::empty(), &f);
    for (flags, paused, after) in [
        (RevertFlags::RUNNING, false, RUN),
        (RevertFlags::PAUSED, true, DomainState::Paused),
    ] {
        let plan = plan_revert(&revert(snap.clone(), flags), &f).expect("planned");
        assert_eq!(
            plan.steps[2..],
            [
                Step::RestoreDefinition,
                Step::StartDomain {
                    paused,
                    memory: None
                },
                Step::SetCurrent("s1".into()),
            ],
            "{flags:?}\n{plan}"
        );
        assert_eq!(state_after(&plan), after);
    }
}

#[test]
fn a_running_domain_loads_an_internal_checkpoint_of_its_own_images_in_place() {
    let f = two_qcow2(RUN);
    let snap = taken("", CreateFlags::empty(), &two_qcow2(RUN));
    for (flags, paused) in [
        (RevertFlags::empty(), false),
        (RevertFlags::PAUSED, true),
        (RevertFlags::RUNNING, false),
    ] {
        let plan = plan_revert(&revert(snap.clone(), flags), &f).expect("planned");
        assert_eq!(
            plan.steps,
            vec![
                Step::LoadCheckpoint {
                    name: "s1".into(),
                    disks: vec!["vda".into(), "vdb".into()],
                    paused,
                },
                Step::SetCurrent("s1".into()),
            ],
            "{flags:?}\n{plan}"
        );
        let after = if paused { DomainState::Paused } else { RUN };
        assert_eq!(state_after(&plan), after);
    }
    // Not in place: shut off, no live internal snapshots, or an image a
    // later external snapshot built on.
    let mut off = two_qcow2(DomainState::Shutoff);
    off.hypervisor = qemu();
    let plan = plan_revert(&revert(snap.clone(), RevertFlags::empty()), &off).expect("planned");
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(s, Step::StartDomain { .. })),
        "{plan}"
    );
    let mut no_live = two_qcow2(RUN);
    no_live.disks[1].live.internal = false;
    let plan = plan_revert(&revert(snap.clone(), RevertFlags::empty()), &no_live).expect("planned");
    assert_eq!(plan.steps.first(), Some(&Step::StopDomain), "{plan}");
}

#[test]
fn revert_of_running_domain_stops_it_and_starts_it_with_the_snapshots_memory() {
    // The definition changed since: the checkpoint cannot be loaded into
    // the running process, which is replaced.
    let mut f = two_qcow2(RUN);
    f.domain = snapshot_conf::Domain::parse(
        &f.domain
            .xml
            .to_xml(true)
            .replace("</domain>", "<description>changed</description></domain>"),
    )
    .expect("domain");
    // Taken running with memory: an internal checkpoint.
    let snap = taken("", CreateFlags::empty(), &two_qcow2(RUN));
    assert_eq!(snap.memory, Some(SnapshotMode::Internal));
    assert_eq!(snap.state, Some(SnapshotState::Running));

    let plan = plan_revert(&revert(snap.clone(), RevertFlags::empty()), &f).expect("planned");
    let memory = match plan.steps.get(4) {
        Some(Step::StartDomain {
            paused: false,
            memory: Some(m),
        }) => m.clone(),
        other => panic!("start with memory expected, got {other:?}\n{plan}"),
    };
    assert_eq!(memory, MemoryImage::Checkpoint("s1".into()));
    assert_eq!(
        plan.steps,
        vec![
            Step::StopDomain,
            revert_internal("vda", "/img/vda.qcow2"),
            revert_internal("vdb", "/img/vdb.qcow2"),
            Step::RestoreDefinition,
            Step::StartDomain {
                paused: false,
                memory: Some(memory.clone()),
            },
            Step::SetCurrent("s1".into()),
        ],
        "{plan}"
    );
    assert_eq!(state_after(&plan), RUN);

    // Paused afterwards: PAUSED, or a snapshot taken paused unless RUNNING.
    let mut taken_paused = snap.clone();
    taken_paused.state = Some(SnapshotState::Paused);
    for (snapshot, flags, paused) in [
        (snap.clone(), RevertFlags::PAUSED, true),
        (snap.clone(), RevertFlags::RUNNING, false),
        (taken_paused.clone(), RevertFlags::empty(), true),
        (taken_paused.clone(), RevertFlags::PAUSED, true),
        (taken_paused, RevertFlags::RUNNING, false),
    ] {
        let plan = plan_revert(&revert(snapshot, flags), &f).expect("planned");
        assert_eq!(
            plan.steps[plan.steps.len() - 2],
            Step::StartDomain {
                paused,
                memory: Some(memory.clone())
            },
            "{flags:?}\n{plan}"
        );
    }

    // Memory in a file: the file is loaded.
    let snap = taken(MEM_EXT, CreateFlags::empty(), &two_qcow2(RUN));
    let plan = plan_revert(&revert(snap, RevertFlags::empty()), &f).expect("planned");
    assert_eq!(plan.steps.first(), Some(&Step::StopDomain));
    assert_eq!(
        plan.steps[plan.steps.len() - 2..],
        [
            Step::StartDomain {
                paused: false,
                memory: Some(MemoryImage::File("/mem/s1".into()))
            },
            Step::SetCurrent("s1".into()),
        ],
        "{plan}"
    );
}

#[test]
fn revert_of_running_domain_to_snapshot_without_memory_leaves_it_shut_off() {
    let f = two_qcow2(RUN);
    let snap = taken("", CreateFlags::empty(), &two_qcow2(OFF));
    let plan = plan_revert(&revert(snap, RevertFlags::empty()), &f).expect("planned");
    assert_eq!(plan.steps[0], Step::StopDomain);
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::StartDomain { .. })),
        "{plan}"
    );
    assert_eq!(state_after(&plan), OFF);
    assert!(
        plan.summary.contains("afterwards shut off"),
        "{}",
        plan.summary
    );
}

/// A revert works on the images after `StopDomain`: the disks are judged
/// by what their drivers can do offline, not in use.
#[test]
fn running_revert_judges_disks_by_offline_capabilities() {
    let mut f = two_qcow2(RUN); // facts as a caller gathers them while it runs
    let snap = taken("", CreateFlags::empty(), &f);
    // Not loadable in place (no live internal snapshots): stopped first.
    for d in &mut f.disks {
        d.live.internal = false;
    }
    let plan = plan_revert(&revert(snap, RevertFlags::empty()), &f)
        .unwrap_or_else(|e| panic!("a running checkpoint can be reverted to: {e}"));
    assert_eq!(plan.steps[0], Step::StopDomain);
    assert_eq!(plan.steps[1], revert_internal("vda", "/img/vda.qcow2"));

    let snap = taken("", CreateFlags::DISK_ONLY, &f);
    plan_revert(&revert(snap, RevertFlags::empty()), &f)
        .unwrap_or_else(|e| panic!("a disk-only snapshot can be reverted to: {e}"));

    // A raw disk's copy is copied back offline, whatever the file driver
    // can do with the image in use.
    let f = facts(&[Kind::Raw], RUN);
    let snap = taken("", CreateFlags::empty(), &facts(&[Kind::Raw], OFF));
    let plan = plan_revert(&revert(snap, RevertFlags::RUNNING), &f)
        .unwrap_or_else(|e| panic!("a copy can be copied back: {e}"));
    assert_eq!(
        plan.disk_steps().map(|d| &d.action).collect::<Vec<_>>(),
        [&DiskAction::Copy {
            target: "/img/vda.raw.s1".into()
        }]
    );
}

/// A shut-off domain goes back to a running checkpoint when the
/// hypervisor that would start it can load the memory (its capabilities
/// describe that hypervisor), and is refused without one.
#[test]
fn offline_revert_to_memory_needs_the_hypervisor_that_would_start_it() {
    let snap = taken("", CreateFlags::empty(), &two_qcow2(RUN));
    let mut f = DomainFacts::offline(
        domain(&[Kind::Qcow2, Kind::Qcow2]),
        vec![disk_facts(Kind::Qcow2, OFF), disk_facts(Kind::Qcow2, OFF)],
    );
    let e = plan_revert(&revert(snap.clone(), RevertFlags::empty()), &f)
        .expect_err("no hypervisor at hand");
    assert!(
        e.is_unsupported() && e.to_string().contains("holds memory"),
        "{e}"
    );
    f.hypervisor = qemu();
    let plan = plan_revert(&revert(snap, RevertFlags::empty()), &f)
        .unwrap_or_else(|e| panic!("a shut-off domain can go back to a running checkpoint: {e}"));
    assert_eq!(state_after(&plan), RUN);
}

#[test]
fn revert_with_running_and_paused_is_refused() {
    let f = two_qcow2(OFF);
    let snap = taken("", CreateFlags::empty(), &f);
    let e = plan_revert(
        &revert(snap, RevertFlags::RUNNING | RevertFlags::PAUSED),
        &f,
    )
    .expect_err("exclusive");
    assert_eq!(
        e,
        PlanError::FlagsExclusive {
            first: "RUNNING",
            second: "PAUSED"
        }
    );
    assert!(e.is_invalid());
    let msg = e.to_string();
    assert!(
        msg.contains("--running") && msg.contains("--paused"),
        "{msg}"
    );
}

#[test]
fn revert_without_the_snapshots_domain_is_risky_and_forced_keeps_the_current_one() {
    let f = two_qcow2(OFF);
    let full = taken("", CreateFlags::empty(), &f);
    let uuid = f.domain.def.uuid.expect("test domain has a uuid");
    for domain in [None, Some(EmbeddedDomain::Uuid(uuid))] {
        let mut snap = full.clone();
        snap.domain = domain;
        let e = plan_revert(&revert(snap.clone(), RevertFlags::empty()), &f).expect_err("risky");
        assert!(matches!(e, PlanError::Risky { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("lacks the definition") && msg.contains("pass --force"),
            "{msg}"
        );

        let plan = plan_revert(&revert(snap, RevertFlags::FORCE), &f).expect("forced");
        assert_eq!(
            plan.steps,
            vec![
                revert_internal("vda", "/img/vda.qcow2"),
                revert_internal("vdb", "/img/vdb.qcow2"),
                Step::SetCurrent("s1".into()),
            ],
            "no RestoreDefinition without a definition\n{plan}"
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("lacks its domain definition") && n.contains("--force")),
            "{plan}"
        );
    }
}

#[test]
fn revert_to_memory_needs_a_hypervisor_that_can_load_it() {
    let internal = taken("", CreateFlags::empty(), &two_qcow2(RUN));
    let external = taken(MEM_EXT, CreateFlags::empty(), &two_qcow2(RUN));

    let mut f = two_qcow2(RUN);
    f.hypervisor.snapshot_save = false;
    let e = plan_revert(&revert(internal.clone(), RevertFlags::empty()), &f)
        .expect_err("no snapshot-save");
    assert!(e.is_unsupported(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("holds memory") && msg.contains("revert to a snapshot without memory"),
        "{msg}"
    );
    // A memory file needs the other capability only.
    plan_revert(&revert(external.clone(), RevertFlags::empty()), &f)
        .expect("memory_to_file suffices for a memory file");

    let mut f = two_qcow2(RUN);
    f.hypervisor.memory_to_file = false;
    let e =
        plan_revert(&revert(external, RevertFlags::empty()), &f).expect_err("no memory_to_file");
    assert!(
        e.is_unsupported() && e.to_string().contains("/mem/s1"),
        "{e}"
    );
    plan_revert(&revert(internal.clone(), RevertFlags::empty()), &f)
        .expect("snapshot_save suffices for an internal checkpoint");

    // A shut-off domain starts with the memory when the hypervisor can.
    let mut f = two_qcow2(OFF);
    f.hypervisor = qemu();
    let plan = plan_revert(&revert(internal, RevertFlags::empty()), &f).expect("planned");
    assert!(!plan.has(&Step::StopDomain), "{plan}");
    assert_eq!(state_after(&plan), RUN);
}

#[test]
fn revert_of_transient_domain_to_offline_snapshot_must_start_it() {
    let mut f = two_qcow2(RUN);
    f.persistent = false;
    let snap = taken("", CreateFlags::empty(), &two_qcow2(OFF));
    let e = plan_revert(&revert(snap.clone(), RevertFlags::empty()), &f).expect_err("transient");
    assert!(e.is_invalid(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("transient") && msg.contains("--running") && msg.contains("--paused"),
        "{msg}"
    );
    for (flags, paused) in [(RevertFlags::RUNNING, false), (RevertFlags::PAUSED, true)] {
        let plan = plan_revert(&revert(snap.clone(), flags), &f).expect("started again");
        assert_eq!(plan.steps[0], Step::StopDomain);
        assert_eq!(
            plan.steps[plan.steps.len() - 2],
            Step::StartDomain {
                paused,
                memory: None
            },
            "{plan}"
        );
    }
}

#[test]
fn revert_to_external_snapshot_puts_a_new_overlay_on_the_frozen_image() {
    // s1 froze /img/vd?.qcow2; the domain now writes /img/vd?.s1.
    let snap = taken("", CreateFlags::DISK_ONLY, &two_qcow2(OFF));
    assert!(
        snap.disks
            .iter()
            .all(|d| d.mode == Some(SnapshotMode::External))
    );
    let f = with_sources(two_qcow2(OFF), &["/img/vda.s1", "/img/vdb.s1"]);
    let vda_new = external_name("/img/vda.qcow2", &NOW.to_string());
    let vdb_new = external_name("/img/vdb.qcow2", &NOW.to_string());
    assert_eq!(vda_new, "/img/vda.1700000123");
    assert_eq!(vdb_new, "/img/vdb.1700000123");
    let frozen = ["/img/vda.qcow2", "/img/vdb.qcow2"];

    // Nothing needs the old top images: they are discarded.
    let mut req = revert(snap.clone(), RevertFlags::empty());
    req.needed_images = paths(&frozen);
    req.backing_images = paths(&frozen);
    let plan = plan_revert(&req, &f).expect("planned");
    assert_eq!(
        plan.steps,
        vec![
            revert_external("vda", "/img/vda.qcow2", &vda_new),
            revert_external("vdb", "/img/vdb.qcow2", &vdb_new),
            Step::RestoreDefinition,
            // Relative to the restored definition, which names the
            // frozen images.
            Step::UpdateDomain(vec![
                change("vda", "/img/vda.qcow2", &vda_new),
                change("vdb", "/img/vdb.qcow2", &vdb_new),
            ]),
            Step::DiscardImage {
                disk: "vda".into(),
                path: "/img/vda.s1".into()
            },
            Step::DiscardImage {
                disk: "vdb".into(),
                path: "/img/vdb.s1".into()
            },
            Step::SetCurrent("s1".into()),
        ],
        "{plan}"
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("/img/vda.s1") && n.contains("discarded")),
        "{plan}"
    );

    // vda.s1 is frozen by a later snapshot, an image is built on vdb.s1:
    // both are kept, each with a note.
    let mut req = revert(snap, RevertFlags::empty());
    req.needed_images = paths(&["/img/vda.qcow2", "/img/vdb.qcow2", "/img/vda.s1"]);
    req.backing_images = paths(&["/img/vda.qcow2", "/img/vdb.qcow2", "/img/vdb.s1"]);
    let plan = plan_revert(&req, &f).expect("planned");
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::DiscardImage { .. })),
        "{plan}"
    );
    assert!(plan.has(&Step::UpdateDomain(vec![
        change("vda", "/img/vda.qcow2", &vda_new),
        change("vdb", "/img/vdb.qcow2", &vdb_new),
    ])));
    for disk in ["vda", "vdb"] {
        assert!(
            plan.notes
                .iter()
                .any(|n| n.starts_with(&format!("{disk}: /img/{disk}.s1 is kept"))),
            "{plan}"
        );
    }
}

#[test]
fn revert_inside_an_image_later_snapshots_built_on_is_refused() {
    let snap = taken("", CreateFlags::empty(), &two_qcow2(OFF));
    // A later external snapshot s2 froze /img/vda.qcow2: vda writes vda.s2.
    let f = with_sources(two_qcow2(OFF), &["/img/vda.s2", "/img/vdb.qcow2"]);
    let mut req = revert(snap.clone(), RevertFlags::empty());
    req.needed_images = paths(&["/img/vda.qcow2", "/img/vdb.qcow2"]);
    req.backing_images = paths(&["/img/vda.qcow2"]);
    let e = plan_revert(&req, &f).expect_err("would change s2");
    assert!(e.is_unsupported(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("disk vda")
            && msg.contains("/img/vda.qcow2")
            && msg.contains("delete the external snapshots taken after 's1' first"),
        "{msg}"
    );

    // Not built on (vda was pointed elsewhere): vda goes back to the
    // image holding the snapshot, the other image is discarded unless
    // something needs it.
    let mut req = revert(snap, RevertFlags::empty());
    req.needed_images = paths(&["/img/vda.qcow2", "/img/vdb.qcow2"]);
    let plan = plan_revert(&req, &f).expect("planned");
    assert_eq!(
        plan.steps,
        vec![
            revert_internal("vda", "/img/vda.qcow2"),
            revert_internal("vdb", "/img/vdb.qcow2"),
            // The restored definition names /img/vda.qcow2 already.
            Step::RestoreDefinition,
            Step::DiscardImage {
                disk: "vda".into(),
                path: "/img/vda.s2".into()
            },
            Step::SetCurrent("s1".into()),
        ],
        "{plan}"
    );
    req.needed_images.insert("/img/vda.s2".into());
    let plan = plan_revert(&req, &f).expect("planned");
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::DiscardImage { .. })),
        "{plan}"
    );
}

#[test]
fn revert_over_a_managed_save_needs_force_unless_memory_replaces_it() {
    let mut f = two_qcow2(OFF);
    f.managed_save = true;
    let snap = taken("", CreateFlags::empty(), &two_qcow2(OFF));
    let e = plan_revert(&revert(snap.clone(), RevertFlags::empty()), &f).expect_err("risky");
    assert!(matches!(e, PlanError::Risky { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("managed save") && msg.contains("pass --force"),
        "{msg}"
    );
    let plan = plan_revert(&revert(snap, RevertFlags::FORCE), &f).expect("forced");
    assert_eq!(
        plan.steps,
        vec![
            Step::DiscardManagedSave,
            revert_internal("vda", "/img/vda.qcow2"),
            revert_internal("vdb", "/img/vdb.qcow2"),
            Step::RestoreDefinition,
            Step::SetCurrent("s1".into()),
        ],
        "{plan}"
    );

    // A snapshot with memory replaces the saved state: no FORCE needed.
    f.hypervisor = qemu();
    let snap = taken("", CreateFlags::empty(), &two_qcow2(RUN));
    let plan = plan_revert(&revert(snap, RevertFlags::empty()), &f).expect("memory");
    assert_eq!(plan.steps[0], Step::DiscardManagedSave, "{plan}");
}

#[test]
fn revert_of_raw_disk_copies_its_copy_back() {
    let f = facts(&[Kind::Qcow2, Kind::Raw], OFF);
    let snap = taken("", CreateFlags::empty(), &f);
    let plan = plan_revert(&revert(snap.clone(), RevertFlags::empty()), &f).expect("planned");
    assert_eq!(
        plan.steps,
        vec![
            revert_internal("vda", "/img/vda.qcow2"),
            Step::RevertDisk(disk_step(
                "vdb",
                "/img/vdb.raw",
                driver("file"),
                DiskAction::Copy {
                    target: "/img/vdb.raw.s1".into()
                }
            )),
            Step::RestoreDefinition,
            Step::SetCurrent("s1".into()),
        ],
        "{plan}"
    );
    assert!(
        plan.to_string()
            .contains("vdb: /img/vdb.raw gets the content of copy /img/vdb.raw.s1 back"),
        "{plan}"
    );

    // A driver with neither internal snapshots nor copies.
    let mut f = f;
    f.disks[1].offline[0].caps.copy = false;
    let e = plan_revert(&revert(snap, RevertFlags::empty()), &f).expect_err("no way back");
    assert!(
        e.is_unsupported()
            && e.to_string()
                .contains("disk vdb (/img/vdb.raw) cannot go back")
            && e.to_string().contains("its drivers (file, qemu)"),
        "{e}"
    );
}

#[test]
fn revert_notes_disks_left_out_and_disks_added_since() {
    // vdb was not in the snapshot.
    let f = two_qcow2(OFF);
    let snap = taken(
        "<disks><disk name='vdb' snapshot='no'/></disks>",
        CreateFlags::empty(),
        &f,
    );
    let plan = plan_revert(&revert(snap, RevertFlags::empty()), &f).expect("planned");
    assert_eq!(
        plan.disk_steps()
            .map(|d| d.disk.as_str())
            .collect::<Vec<_>>(),
        ["vda"]
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| n == "vdb: not in the snapshot; keeps its current content"),
        "{plan}"
    );

    // vdb was added after the snapshot.
    let snap = taken("", CreateFlags::empty(), &facts(&[Kind::Qcow2], OFF));
    let plan = plan_revert(&revert(snap, RevertFlags::empty()), &f).expect("planned");
    assert_eq!(plan.disk_steps().count(), 1);
    assert!(
        plan.notes
            .iter()
            .any(|n| n.starts_with("vdb: added after the snapshot") && n.contains("/img/vdb.qcow2")),
        "{plan}"
    );
}

#[test]
fn revert_refuses_snapshots_it_cannot_restore() {
    let f = two_qcow2(OFF);
    let snap = taken("", CreateFlags::empty(), &f);

    let mut s = snap.clone();
    s.name = None;
    let e = plan_revert(&revert(s, RevertFlags::empty()), &f).expect_err("no name");
    assert!(e.is_invalid(), "{e:?}");

    let mut s = snap.clone();
    s.state = None;
    let e = plan_revert(&revert(s, RevertFlags::empty()), &f).expect_err("no state");
    assert!(e.is_invalid() && e.to_string().contains("<state>"), "{e}");

    let mut s = snap.clone();
    s.state = Some(SnapshotState::PmSuspended);
    let e = plan_revert(&revert(s, RevertFlags::FORCE), &f).expect_err("pmsuspended");
    assert!(
        e.is_unsupported() && e.to_string().contains("power management"),
        "{e}"
    );

    // A disk no storage driver handles.
    let mut g = f.clone();
    g.disks[1].offline.clear();
    let e = plan_revert(&revert(snap, RevertFlags::empty()), &g).expect_err("no driver");
    assert!(
        e.is_unsupported()
            && e.to_string().contains("disk vdb")
            && e.to_string().contains("no storage driver handles it"),
        "{e}"
    );
}

/// The refusal for a disk removed since the snapshot gives advice that
/// works: put the disk back (FORCE would not help).
#[test]
fn revert_advice_for_removed_disk_works() {
    let snap = taken("", CreateFlags::empty(), &two_qcow2(OFF));
    let f = facts(&[Kind::Qcow2], OFF); // vdb removed since
    let e = plan_revert(&revert(snap.clone(), RevertFlags::empty()), &f).expect_err("vdb gone");
    assert!(e.to_string().contains("disk vdb"), "{e}");
    match plan_revert(&revert(snap, RevertFlags::FORCE), &f) {
        Ok(plan) => assert!(plan.has(&Step::RestoreDefinition), "{plan}"),
        Err(forced) => assert!(
            !forced.to_string().contains("--force"),
            "the refusal under --force still advises --force: {forced}"
        ),
    }
}

// ---------------------------------------------------------------------
// plan_delete.

#[test]
fn delete_metadata_only_removes_metadata_deepest_first() {
    // s1 -> {s2 -> s3, s4}
    let t = tree(&[
        ("s1", None),
        ("s2", Some("s1")),
        ("s3", Some("s2")),
        ("s4", Some("s1")),
    ]);
    let f = two_qcow2(OFF);
    let request = |policy| DeleteRequest {
        name: "s1".into(),
        policy,
        metadata_only: true,
        snapshots: HashMap::new(), // no definitions needed
        backing: HashMap::new(),
        merge_blocked: HashSet::new(),
    };
    let plan = plan_delete(&request(ChildPolicy::Children), &t, &f).expect("planned");
    assert_eq!(plan.kind, PlanKind::Delete);
    assert_eq!(plan.steps, remove_metadata(&["s3", "s2", "s4", "s1"]));
    assert!(plan.notes.iter().any(|n| n.starts_with("--metadata")));
    assert_eq!(plan.summary, "the snapshot and 3 descendant(s)");

    let plan = plan_delete(&request(ChildPolicy::ChildrenOnly), &t, &f).expect("planned");
    assert_eq!(plan.steps, remove_metadata(&["s3", "s2", "s4"]));

    let plan = plan_delete(&request(ChildPolicy::Rebase), &t, &f).expect("planned");
    assert_eq!(plan.steps, remove_metadata(&["s1"]));
}

#[test]
fn delete_internal_snapshot_drops_it_from_each_image() {
    let f = two_qcow2(OFF);
    let s1 = taken("", CreateFlags::empty(), &f);
    let t = tree(&[("s1", None)]);
    let images = backing(&[("/img/vda.qcow2", None), ("/img/vdb.qcow2", None)]);
    let req = delete("s1", ChildPolicy::Rebase, vec![s1.clone()], images.clone());
    let plan = plan_delete(&req, &t, &f).expect("planned");
    let drop = |disk: &str, by: Performer| {
        Step::DeleteDiskSnapshot(disk_step(
            disk,
            &format!("/img/{disk}.qcow2"),
            by,
            DiskAction::Internal,
        ))
    };
    assert_eq!(
        plan.steps,
        vec![
            drop("vda", driver("qemu")),
            drop("vdb", driver("qemu")),
            Step::RemoveMetadata("s1".into()),
        ],
        "{plan}"
    );

    // Running on those images: the hypervisor drops them.
    let plan = plan_delete(&req, &t, &two_qcow2(RUN)).expect("planned");
    assert_eq!(
        plan.steps,
        vec![
            drop("vda", Performer::Hypervisor),
            drop("vdb", Performer::Hypervisor),
            Step::RemoveMetadata("s1".into()),
        ],
        "{plan}"
    );

    // Running on an overlay of vda's image: a read-only backing image.
    let running = with_sources(two_qcow2(RUN), &["/img/vda.s2", "/img/vdb.qcow2"]);
    let mut images = images;
    images.insert("/img/vda.s2".into(), Some("/img/vda.qcow2".into()));
    let req = delete("s1", ChildPolicy::Rebase, vec![s1], images);
    let e = plan_delete(&req, &t, &running).expect_err("backing image in use");
    assert!(
        e.is_unsupported() && e.to_string().contains("shut the domain off"),
        "{e}"
    );
    // Offline, the same is fine.
    let offline = with_sources(two_qcow2(OFF), &["/img/vda.s2", "/img/vdb.qcow2"]);
    plan_delete(&req, &t, &offline).expect("offline");
}

#[test]
fn delete_raw_copy_deletes_the_copy() {
    let f = facts(&[Kind::Raw], OFF);
    let s1 = taken("", CreateFlags::empty(), &f);
    let req = delete(
        "s1",
        ChildPolicy::Rebase,
        vec![s1],
        backing(&[("/img/vda.raw", None)]),
    );
    let plan = plan_delete(&req, &tree(&[("s1", None)]), &f).expect("planned");
    assert_eq!(
        plan.steps,
        vec![
            Step::DeleteDiskSnapshot(disk_step(
                "vda",
                "/img/vda.raw",
                driver("file"),
                DiskAction::Copy {
                    target: "/img/vda.raw.s1".into()
                }
            )),
            Step::RemoveMetadata("s1".into()),
        ],
        "{plan}"
    );
}

/// Whether an internal snapshot of a raw disk is a copy is decided by what
/// its drivers do offline, whatever the domain's state: while it runs, the
/// copy /img/vda.raw.s1 is still deleted by the file driver, never planned
/// as an internal snapshot inside the live raw image.
#[test]
fn delete_raw_copy_while_running_deletes_the_copy() {
    let s1 = taken("", CreateFlags::empty(), &facts(&[Kind::Raw], OFF));
    let req = delete(
        "s1",
        ChildPolicy::Rebase,
        vec![s1],
        backing(&[("/img/vda.raw", None)]),
    );
    let plan =
        plan_delete(&req, &tree(&[("s1", None)]), &facts(&[Kind::Raw], RUN)).expect("planned");
    assert_eq!(
        plan.steps[0],
        Step::DeleteDiskSnapshot(disk_step(
            "vda",
            "/img/vda.raw",
            driver("file"),
            DiskAction::Copy {
                target: "/img/vda.raw.s1".into()
            }
        )),
        "{plan}"
    );
}

#[test]
fn delete_external_snapshot_merges_into_its_one_dependent() {
    let f = vda_on("/img/vda.s1", OFF);
    let images = backing(&[
        ("/img/vda.s1", Some("/img/vda.qcow2")),
        ("/img/vda.qcow2", None),
    ]);
    let req = delete(
        "s1",
        ChildPolicy::Rebase,
        vec![ext("s1", "/img/vda.qcow2")],
        images,
    );
    let plan = plan_delete(&req, &tree(&[("s1", None)]), &f).expect("planned");
    assert_eq!(
        plan.steps,
        vec![
            merge("/img/vda.qcow2", "/img/vda.s1", driver("qemu")),
            Step::RemoveMetadata("s1".into()),
        ],
        "{plan}"
    );
    assert_eq!(
        plan.steps[0].to_string(),
        "vda: merge /img/vda.s1 down into /img/vda.qcow2, which then takes the name /img/vda.s1 (by driver qemu); data kept: everything /img/vda.s1 reads"
    );
}

#[test]
fn delete_external_snapshot_rebases_several_dependents_onto_its_backing() {
    // vda.s1 (the domain's) and vda.1700000123 (a branch left by a revert
    // that something needed) are both built on the frozen image.
    let f = vda_on("/img/vda.s1", OFF);
    for (parent, onto) in [
        (None, None),
        (Some("/img/base.qcow2"), Some("/img/base.qcow2")),
    ] {
        let mut images = backing(&[
            ("/img/vda.s1", Some("/img/vda.qcow2")),
            ("/img/vda.1700000123", Some("/img/vda.qcow2")),
            ("/img/vda.qcow2", parent),
        ]);
        if let Some(p) = parent {
            images.insert(p.into(), None);
        }
        let req = delete(
            "s1",
            ChildPolicy::Rebase,
            vec![ext("s1", "/img/vda.qcow2")],
            images,
        );
        let plan = plan_delete(&req, &tree(&[("s1", None)]), &f).expect("planned");
        assert_eq!(
            plan.steps,
            vec![
                Step::RebaseImages {
                    disk: "vda".into(),
                    image: "/img/vda.qcow2".into(),
                    children: vec!["/img/vda.1700000123".into(), "/img/vda.s1".into()],
                    onto: onto.map(str::to_string),
                    by: driver("qemu"),
                },
                Step::RemoveMetadata("s1".into()),
            ],
            "{plan}"
        );
    }
}

#[test]
fn delete_external_snapshot_with_nothing_built_on_it_removes_the_image() {
    let images = backing(&[("/img/vda.qcow2", None), ("/img/other.qcow2", None)]);
    let req = delete(
        "s1",
        ChildPolicy::Rebase,
        vec![ext("s1", "/img/vda.qcow2")],
        images,
    );
    let t = tree(&[("s1", None)]);
    let plan = plan_delete(&req, &t, &vda_on("/img/other.qcow2", OFF)).expect("planned");
    assert_eq!(
        plan.steps,
        vec![
            Step::RemoveImage {
                disk: "vda".into(),
                path: "/img/vda.qcow2".into()
            },
            Step::RemoveMetadata("s1".into()),
        ],
        "{plan}"
    );
    // The domain's own source is never removed.
    let plan = plan_delete(&req, &t, &vda_on("/img/vda.qcow2", OFF)).expect("planned");
    assert_eq!(plan.steps, remove_metadata(&["s1"]), "{plan}");
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("/img/vda.qcow2 is kept") && n.contains("the domain uses it")),
        "{plan}"
    );
}

#[test]
fn delete_never_changes_what_another_snapshots_internal_snapshot_reads() {
    // s1 froze vda.qcow2; s2 keeps an internal snapshot in vda.s1, built
    // on it: merging would change what s2 reads.
    let f = vda_on("/img/vda.s1", OFF);
    let images = backing(&[
        ("/img/vda.s1", Some("/img/vda.qcow2")),
        ("/img/vda.qcow2", None),
    ]);
    let t = tree(&[("s1", None), ("s2", Some("s1"))]);
    let snaps = vec![ext("s1", "/img/vda.qcow2"), int("s2", "/img/vda.s1")];
    let req = delete("s1", ChildPolicy::Rebase, snaps.clone(), images.clone());
    let plan = plan_delete(&req, &t, &f).expect("planned, the image kept");
    assert_eq!(plan.steps, remove_metadata(&["s1"]), "{plan}");
    assert!(
        plan.notes
            .iter()
            .any(|n| n.starts_with("vda: /img/vda.qcow2 is kept")
                && n.contains("internal snapshots of s2")
                && n.contains("delete those snapshots to free it")),
        "{plan}"
    );
    // Deleting s2 with it: s2 goes first, then nothing stops the merge.
    let req = delete("s1", ChildPolicy::Children, snaps, images.clone());
    let plan = plan_delete(&req, &t, &f).expect("planned");
    assert_eq!(
        plan.steps,
        vec![
            Step::DeleteDiskSnapshot(disk_step(
                "vda",
                "/img/vda.s1",
                driver("qemu"),
                DiskAction::Internal
            )),
            Step::RemoveMetadata("s2".into()),
            merge("/img/vda.qcow2", "/img/vda.s1", driver("qemu")),
            Step::RemoveMetadata("s1".into()),
        ],
        "{plan}"
    );

    // s0 keeps an internal snapshot in the image s1 froze: it is kept.
    let t = tree(&[("s0", None), ("s1", Some("s0"))]);
    let snaps = vec![int("s0", "/img/vda.qcow2"), ext("s1", "/img/vda.qcow2")];
    let req = delete("s1", ChildPolicy::Rebase, snaps, images);
    let plan = plan_delete(&req, &t, &f).expect("planned");
    assert_eq!(plan.steps, remove_metadata(&["s1"]), "{plan}");
    assert!(
        plan.notes
            .iter()
            .any(|n| n.starts_with("vda: /img/vda.qcow2 is kept") && n.contains("s0")),
        "{plan}"
    );
}

/// s1 -> s2 -> s3, each external: s1 froze vda.qcow2, s2 vda.s1, s3
/// vda.s2; the domain writes vda.s3.
fn chain() -> (SnapshotTree, DeleteRequest) {
    let t = tree(&[("s1", None), ("s2", Some("s1")), ("s3", Some("s2"))]);
    let req = delete(
        "s1",
        ChildPolicy::Children,
        vec![
            ext("s1", "/img/vda.qcow2"),
            ext("s2", "/img/vda.s1"),
            ext("s3", "/img/vda.s2"),
        ],
        backing(&[
            ("/img/vda.s3", Some("/img/vda.s2")),
            ("/img/vda.s2", Some("/img/vda.s1")),
            ("/img/vda.s1", Some("/img/vda.qcow2")),
            ("/img/vda.qcow2", None),
        ]),
    );
    (t, req)
}

#[test]
fn delete_with_children_plans_each_step_on_the_images_the_previous_left() {
    let (t, req) = chain();
    let f = vda_on("/img/vda.s3", OFF);
    let plan = plan_delete(&req, &t, &f).expect("planned");
    let q = || driver("qemu");
    // After s3's merge, vda.s3 is built on vda.s1: s2's frozen image has
    // it as its one dependent, and so on down.
    assert_eq!(
        plan.steps,
        vec![
            merge("/img/vda.s2", "/img/vda.s3", q()),
            Step::RemoveMetadata("s3".into()),
            merge("/img/vda.s1", "/img/vda.s3", q()),
            Step::RemoveMetadata("s2".into()),
            merge("/img/vda.qcow2", "/img/vda.s3", q()),
            Step::RemoveMetadata("s1".into()),
        ],
        "{plan}"
    );
    assert_eq!(plan.summary, "the snapshot and 2 descendant(s)");
}

#[test]
fn delete_children_only_keeps_the_snapshot() {
    let (t, mut req) = chain();
    req.policy = ChildPolicy::ChildrenOnly;
    let plan = plan_delete(&req, &t, &vda_on("/img/vda.s3", OFF)).expect("planned");
    let q = || driver("qemu");
    assert_eq!(
        plan.steps,
        vec![
            merge("/img/vda.s2", "/img/vda.s3", q()),
            Step::RemoveMetadata("s3".into()),
            merge("/img/vda.s1", "/img/vda.s3", q()),
            Step::RemoveMetadata("s2".into()),
        ],
        "{plan}"
    );
    assert!(!plan.has(&Step::RemoveMetadata("s1".into())));
    assert_eq!(plan.summary, "2 descendant(s), the snapshot stays");
}

#[test]
fn delete_merges_into_the_live_top_image_by_the_hypervisor() {
    let images = backing(&[
        ("/img/vda.s1", Some("/img/vda.qcow2")),
        ("/img/vda.qcow2", None),
    ]);
    let req = delete(
        "s1",
        ChildPolicy::Rebase,
        vec![ext("s1", "/img/vda.qcow2")],
        images,
    );
    let t = tree(&[("s1", None)]);
    let plan = plan_delete(&req, &t, &vda_on("/img/vda.s1", RUN)).expect("planned");
    assert_eq!(
        plan.steps[0],
        merge("/img/vda.qcow2", "/img/vda.s1", Performer::Hypervisor),
        "{plan}"
    );
    // A dependent the running domain does not use: its storage driver.
    let mut images = req.backing.clone();
    images.insert("/img/other.qcow2".into(), None);
    let req = DeleteRequest {
        backing: images,
        ..req
    };
    let plan = plan_delete(&req, &t, &vda_on("/img/other.qcow2", RUN)).expect("planned");
    assert_eq!(
        plan.steps[0],
        merge("/img/vda.qcow2", "/img/vda.s1", driver("qemu")),
        "{plan}"
    );
}

#[test]
fn delete_removes_the_memory_file() {
    // s1 taken running, memory to /mem/s1, disks external (vd?.s1).
    let s1 = taken(MEM_EXT, CreateFlags::empty(), &two_qcow2(RUN));
    assert_eq!(s1.memory_file.as_deref(), Some("/mem/s1"));
    let f = with_sources(two_qcow2(OFF), &["/img/vda.s1", "/img/vdb.s1"]);
    let images = backing(&[
        ("/img/vda.s1", Some("/img/vda.qcow2")),
        ("/img/vdb.s1", Some("/img/vdb.qcow2")),
        ("/img/vda.qcow2", None),
        ("/img/vdb.qcow2", None),
    ]);
    let req = delete("s1", ChildPolicy::Rebase, vec![s1], images);
    let plan = plan_delete(&req, &tree(&[("s1", None)]), &f).expect("planned");
    assert_eq!(
        plan.steps,
        vec![
            merge("/img/vda.qcow2", "/img/vda.s1", driver("qemu")),
            Step::MergeImage {
                disk: "vdb".into(),
                image: "/img/vdb.qcow2".into(),
                into: "/img/vdb.s1".into(),
                by: driver("qemu"),
            },
            Step::RemoveMemoryFile("/mem/s1".into()),
            Step::RemoveMetadata("s1".into()),
        ],
        "{plan}"
    );
}

#[test]
fn delete_of_unknown_or_undefined_snapshot_is_invalid() {
    let f = vda_on("/img/vda.qcow2", OFF);
    let t = tree(&[("s1", None)]);
    let req = delete("nope", ChildPolicy::Rebase, Vec::new(), HashMap::new());
    let e = plan_delete(&req, &t, &f).expect_err("unknown");
    assert!(e.is_invalid(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("no snapshot named 'nope'") && msg.contains("snapshot-list"),
        "{msg}"
    );
    // Known to the tree, but no stored definition to find its storage by.
    let req = delete("s1", ChildPolicy::Rebase, Vec::new(), HashMap::new());
    let e = plan_delete(&req, &t, &f).expect_err("no definition");
    assert!(
        e.is_invalid() && e.to_string().contains("--metadata"),
        "{e}"
    );
    // Without the images it used.
    let mut s1 = int("s1", "/img/vda.qcow2");
    s1.domain = None;
    let req = delete("s1", ChildPolicy::Rebase, vec![s1], HashMap::new());
    let e = plan_delete(&req, &t, &f).expect_err("no <domain>");
    assert!(
        e.is_invalid()
            && e.to_string()
                .contains("does not record which image disk vda used"),
        "{e}"
    );
}

/// A disk since removed from the domain cannot be examined: its snapshot's
/// storage is refused with the way out, never handed to the driver of
/// another disk.
#[test]
fn delete_of_removed_disk_is_refused_not_guessed() {
    // s1 was taken of vda (raw) and vdb (qcow2); vdb has been removed.
    let s1 = taken(
        "",
        CreateFlags::empty(),
        &facts(&[Kind::Raw, Kind::Qcow2], OFF),
    );
    let f = facts(&[Kind::Raw], OFF);
    let req = delete(
        "s1",
        ChildPolicy::Rebase,
        vec![s1],
        backing(&[("/img/vda.raw", None), ("/img/vdb.qcow2", None)]),
    );
    let e = plan_delete(&req, &tree(&[("s1", None)]), &f).expect_err("vdb is gone");
    assert!(
        e.is_unsupported()
            && e.to_string().contains("disk vdb")
            && e.to_string().contains("--metadata"),
        "{e}"
    );
}
