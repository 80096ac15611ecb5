//! `plan_create`'s flag rules (libvirt's mutual exclusions and
//! requirements, research notes 1.6) and the per-disk and per-state
//! rules: QUIESCE, LIVE, HALT, NO_METADATA, REUSE_EXT, REDEFINE, manual
//! disks, raw disks, block jobs, power-management suspend.

mod plan_support;

use plan_support::{Kind, facts, request, two_qcow2};
use snapshot_conf::SnapshotState;
use snapshot_core::driver::Capabilities;
use snapshot_core::plan::{
    AgentState, CreateFlags, DiskAction, DomainState, LiveDiskCaps, MemorySave, Performer,
    PlanError, PlanKind, Step, StorageOption, plan_create,
};

const RUN: DomainState = DomainState::Running;
const OFF: DomainState = DomainState::Shutoff;
const MEM_EXT: &str = "<memory snapshot='external' file='/mem/s1'/>";

fn refuse(inner: &str, flags: CreateFlags, state: DomainState) -> PlanError {
    plan_create(&request(inner, flags), &two_qcow2(state)).expect_err("the request must be refused")
}

#[test]
fn flag_requirements_and_exclusions_follow_libvirt() {
    let cases: [(CreateFlags, PlanError); 5] = [
        (
            CreateFlags::CURRENT,
            PlanError::FlagRequired {
                required: "REDEFINE",
                by: "CURRENT",
            },
        ),
        (
            CreateFlags::REDEFINE | CreateFlags::NO_METADATA,
            PlanError::FlagsExclusive {
                first: "REDEFINE",
                second: "NO_METADATA",
            },
        ),
        (
            CreateFlags::REDEFINE | CreateFlags::HALT,
            PlanError::FlagsExclusive {
                first: "REDEFINE",
                second: "HALT",
            },
        ),
        (
            CreateFlags::REDEFINE | CreateFlags::LIVE,
            PlanError::FlagsExclusive {
                first: "REDEFINE",
                second: "LIVE",
            },
        ),
        (
            CreateFlags::QUIESCE,
            PlanError::FlagRequired {
                required: "DISK_ONLY",
                by: "QUIESCE",
            },
        ),
    ];
    for (flags, want) in cases {
        let got = refuse("", flags, RUN);
        assert_eq!(got, want, "{flags:?}");
        assert!(got.is_invalid());
    }
    // The message names the options to change.
    let e = refuse("", CreateFlags::QUIESCE, RUN).to_string();
    assert!(e.contains("--disk-only") && e.contains("--quiesce"), "{e}");
}

#[test]
fn quiesce_freezes_around_the_disks_and_needs_a_connected_agent() {
    let flags = CreateFlags::DISK_ONLY | CreateFlags::QUIESCE;
    let plan = plan_create(&request("", flags), &two_qcow2(RUN)).expect("planned");
    assert_eq!(plan.steps.first(), Some(&Step::Freeze));
    let thaw = plan
        .steps
        .iter()
        .position(|s| *s == Step::Thaw)
        .expect("thaw");
    let tx = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::DiskTransaction(_)))
        .expect("transaction");
    assert!(tx < thaw);
    assert!(plan.steps[thaw + 1..].iter().all(Step::is_metadata));

    let mut f = two_qcow2(RUN);
    f.agent = AgentState::NotConfigured;
    let e = plan_create(&request("", flags), &f).expect_err("no agent");
    assert!(
        e.is_unsupported() && e.to_string().contains("guest agent channel"),
        "{e}"
    );
    f.agent = AgentState::Disconnected;
    let e = plan_create(&request("", flags), &f).expect_err("agent gone");
    assert!(e.to_string().contains("does not answer"), "{e}");

    let e = refuse("", flags, OFF);
    assert!(
        e.is_invalid() && e.to_string().contains("needs a running guest"),
        "{e}"
    );
    let e = refuse("", flags, DomainState::Paused);
    assert!(e.to_string().contains("paused"), "{e}");
    let e = refuse(
        "<disks><disk name='vda' snapshot='manual'/></disks>",
        flags,
        RUN,
    );
    assert!(e.to_string().contains("manual"), "{e}");
}

#[test]
fn live_saves_memory_without_pausing_and_only_to_a_file() {
    let plan = plan_create(&request(MEM_EXT, CreateFlags::LIVE), &two_qcow2(RUN)).expect("live");
    assert!(!plan.has(&Step::Pause), "{plan}");
    assert!(plan.steps.contains(&Step::SaveMemory {
        file: "/mem/s1".into(),
        how: MemorySave::Live
    }));
    // The save leaves the guest paused at switchover: resumed after disks.
    let resume = plan
        .steps
        .iter()
        .position(|s| *s == Step::Resume)
        .expect("resume");
    let tx = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::DiskTransaction(_)))
        .expect("tx");
    assert!(tx < resume);

    let mut f = two_qcow2(RUN);
    f.hypervisor.background_snapshot = true;
    let plan = plan_create(&request(MEM_EXT, CreateFlags::LIVE), &f).expect("background");
    assert_eq!(plan.steps[0], Step::Pause);
    // The background save lets the guest run at once: disks first.
    assert!(matches!(plan.steps[1], Step::DiskTransaction(_)), "{plan}");
    assert_eq!(
        plan.steps[2],
        Step::SaveMemory {
            file: "/mem/s1".into(),
            how: MemorySave::Background
        }
    );
    // Not for a paused guest (the save would start it).
    let mut paused = two_qcow2(DomainState::Paused);
    paused.hypervisor.background_snapshot = true;
    let plan = plan_create(&request(MEM_EXT, CreateFlags::LIVE), &paused).expect("paused");
    assert!(
        !plan.steps.iter().any(|s| matches!(
            s,
            Step::SaveMemory {
                how: MemorySave::Background,
                ..
            }
        )),
        "{plan}"
    );

    for (inner, flags, state) in [
        ("", CreateFlags::LIVE, RUN),
        ("<memory snapshot='internal'/>", CreateFlags::LIVE, RUN),
        ("", CreateFlags::LIVE | CreateFlags::DISK_ONLY, RUN),
        ("", CreateFlags::LIVE, OFF),
    ] {
        let e = refuse(inner, flags, state);
        assert!(e.is_invalid() && e.to_string().contains("--live"), "{e}");
    }
}

#[test]
fn halt_stops_instead_of_resuming_and_needs_a_persistent_domain() {
    let plan = plan_create(&request("", CreateFlags::HALT), &two_qcow2(RUN)).expect("halt");
    assert!(plan.has(&Step::Halt) && !plan.has(&Step::Resume), "{plan}");
    let mut f = two_qcow2(RUN);
    f.persistent = false;
    let e = plan_create(&request("", CreateFlags::HALT), &f).expect_err("transient");
    assert!(e.to_string().contains("transient"), "{e}");
    let plan = plan_create(&request("", CreateFlags::HALT), &two_qcow2(OFF)).expect("offline");
    assert!(!plan.has(&Step::Halt));
    assert!(
        plan.notes.iter().any(|n| n.contains("nothing to stop")),
        "{plan}"
    );
}

#[test]
fn no_metadata_takes_the_snapshot_and_records_nothing() {
    let plan = plan_create(&request("", CreateFlags::NO_METADATA), &two_qcow2(OFF)).expect("ok");
    assert!(plan.steps.iter().all(|s| !s.is_metadata()), "{plan}");
    assert_eq!(plan.disk_steps().count(), 2);
}

#[test]
fn reuse_external_marks_every_external_target() {
    let plan = plan_create(
        &request("", CreateFlags::DISK_ONLY | CreateFlags::REUSE_EXT),
        &two_qcow2(OFF),
    )
    .expect("ok");
    assert_eq!(plan.disk_steps().count(), 2);
    for d in plan.disk_steps() {
        assert!(
            matches!(d.action, DiskAction::External { reuse: true, .. }),
            "{d:?}"
        );
    }
}

#[test]
fn redefine_writes_metadata_only() {
    let redefine = |flags| {
        let mut req = request("", CreateFlags::REDEFINE | flags);
        req.def.state = Some(SnapshotState::Running);
        req
    };
    let plan = plan_create(&redefine(CreateFlags::CURRENT), &two_qcow2(RUN)).expect("redefine");
    assert_eq!(plan.kind, PlanKind::Redefine);
    assert_eq!(
        plan.steps,
        [
            Step::WriteMetadata { redefine: true },
            Step::SetCurrent("s1".into())
        ]
    );
    let e = plan_create(&redefine(CreateFlags::DISK_ONLY), &two_qcow2(RUN)).expect_err("state");
    assert!(e.to_string().contains("disk-snapshot"), "{e}");
    let mut req = request("", CreateFlags::REDEFINE);
    req.def.state = None;
    let e = plan_create(&req, &two_qcow2(OFF)).expect_err("no state");
    assert!(e.to_string().contains("<state>"), "{e}");
    req.def.state = Some(SnapshotState::DiskSnapshot);
    req.flags |= CreateFlags::DISK_ONLY;
    plan_create(&req, &two_qcow2(OFF)).expect("disk-only redefinition");
}

#[test]
fn manual_disks_leave_the_guest_paused() {
    let inner =
        "<disks><disk name='vda' snapshot='manual'/><disk name='vdb' snapshot='external'/></disks>";
    let plan = plan_create(&request(inner, CreateFlags::DISK_ONLY), &two_qcow2(RUN)).expect("ok");
    assert_eq!(plan.steps[0], Step::Pause);
    assert!(plan.has(&Step::LeavePaused(vec!["vda".into()])), "{plan}");
    assert!(!plan.has(&Step::Resume));
    // Offline, a manual disk is only noted.
    let plan = plan_create(&request(inner, CreateFlags::empty()), &two_qcow2(OFF)).expect("ok");
    assert_eq!(plan.disk_steps().count(), 1);
    assert!(
        plan.notes
            .iter()
            .any(|n| n.starts_with("vda: snapshot='manual'"))
    );
}

#[test]
fn raw_disks_keep_internal_snapshots_as_copies_offline_only() {
    let kinds = [Kind::Qcow2, Kind::Raw];
    let plan = plan_create(&request("", CreateFlags::empty()), &facts(&kinds, OFF)).expect("ok");
    let steps: Vec<_> = plan.disk_steps().collect();
    assert_eq!(steps[0].action, DiskAction::Internal);
    assert_eq!(
        steps[1].action,
        DiskAction::Copy {
            target: "/img/vdb.raw.s1".into()
        }
    );
    assert_eq!(steps[1].by, Performer::Driver("file".into()));
    // Not libvirt's "internal snapshot for disk vdb unsupported for
    // storage type raw".
    assert!(plan.notes.iter().any(|n| n.contains("keeps its path")));

    let e = plan_create(
        &request(
            "<disks><disk name='vdb' snapshot='internal'/></disks>",
            CreateFlags::DISK_ONLY,
        ),
        &facts(&kinds, RUN),
    )
    .expect_err("raw internal while running");
    assert!(
        e.is_unsupported() && e.to_string().contains("snapshot='external'"),
        "{e}"
    );
    // External on raw while running: an overlay by the hypervisor.
    let plan = plan_create(&request("", CreateFlags::DISK_ONLY), &facts(&kinds, RUN)).expect("ok");
    assert!(plan.disk_steps().all(|d| d.by == Performer::Hypervisor));
}

#[test]
fn disks_that_cannot_be_snapshotted_are_refused_by_name() {
    // No driver for a network disk.
    let kinds = [Kind::Qcow2, Kind::Network];
    let e = plan_create(&request("", CreateFlags::empty()), &facts(&kinds, OFF)).expect_err("net");
    assert!(
        e.is_unsupported()
            && e.to_string().contains("disk vdb (rbd:pool/vdb")
            && e.to_string().contains("no storage driver handles it"),
        "{e}"
    );
    // Leaving it out works.
    let plan = plan_create(
        &request(
            "<disks><disk name='vdb' snapshot='no'/></disks>",
            CreateFlags::empty(),
        ),
        &facts(&kinds, OFF),
    )
    .expect("vdb left out");
    assert_eq!(plan.disk_steps().count(), 1);
    // An empty CD-ROM is left out by default, refused when asked for.
    let kinds = [Kind::Qcow2, Kind::Cdrom];
    let plan = plan_create(&request("", CreateFlags::empty()), &facts(&kinds, OFF)).expect("ok");
    assert_eq!(plan.disk_steps().count(), 1);
    let e = plan_create(
        &request(
            "<disks><disk name='vdb' snapshot='external'/></disks>",
            CreateFlags::empty(),
        ),
        &facts(&kinds, OFF),
    )
    .expect_err("empty drive");
    assert!(e.is_invalid(), "{e}");
    // A block job.
    let mut f = two_qcow2(RUN);
    f.disks[1].block_job = true;
    let e = plan_create(&request("", CreateFlags::DISK_ONLY), &f).expect_err("job");
    assert!(
        e.to_string()
            .contains("disk vdb already has an active block job"),
        "{e}"
    );
    // An unknown disk, a disk twice: alignment errors.
    let e = refuse(
        "<disks><disk name='vdz' snapshot='internal'/></disks>",
        CreateFlags::empty(),
        OFF,
    );
    assert!(matches!(e, PlanError::Conf(_)) && e.is_invalid(), "{e}");
    // An external image in a format without backing files.
    let e = refuse(
        "<disks><disk name='vda' snapshot='external'><driver type='qed'/></disk></disks>",
        CreateFlags::empty(),
        OFF,
    );
    assert!(e.to_string().contains("qcow2"), "{e}");
}

#[test]
fn states_without_memory_to_capture_are_refused() {
    let e = refuse("", CreateFlags::empty(), DomainState::PmSuspended);
    assert!(
        e.is_unsupported() && e.to_string().contains("power management"),
        "{e}"
    );
    // A paused domain is snapshotted as paused and left paused.
    let plan = plan_create(
        &request("", CreateFlags::empty()),
        &two_qcow2(DomainState::Paused),
    )
    .expect("paused");
    assert!(
        !plan.has(&Step::Pause) && !plan.has(&Step::Resume),
        "{plan}"
    );
    assert_eq!(
        plan.def.as_ref().and_then(|d| d.state),
        Some(SnapshotState::Paused)
    );
}

#[test]
fn storage_drivers_of_running_domains_work_while_paused() {
    // A disk whose storage driver can snapshot it in use (LVM, btrfs)
    // but which the hypervisor cannot: the guest is paused around it.
    let mut f = two_qcow2(RUN);
    f.disks[1].in_use = vec![StorageOption::new(
        "lvm",
        Capabilities {
            internal: true,
            ..Capabilities::default()
        },
    )];
    f.disks[1].live = LiveDiskCaps::default();
    let plan = plan_create(
        &request(
            "<disks><disk name='vdb' snapshot='internal'/></disks>",
            CreateFlags::DISK_ONLY,
        ),
        &f,
    )
    .expect("planned");
    assert_eq!(plan.steps[0], Step::Pause, "{plan}");
    let lvm = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::DiskSnapshot(d) if d.by == Performer::Driver("lvm".into())))
        .expect("lvm step");
    let resume = plan
        .steps
        .iter()
        .position(|s| *s == Step::Resume)
        .expect("resume");
    assert!(lvm < resume);
}
