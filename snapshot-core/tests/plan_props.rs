//! Property test of `plan_create`: any generated request (domain of up to
//! four disks of mixed kinds, any state, agent, hypervisor and driver
//! capabilities, any flag bits, memory and per-disk modes, unknown disk
//! names) yields a plan or a typed refusal, never a panic, and every plan
//! keeps the invariants the executor relies on:
//!
//! - the guest is paused before memory is saved and before disks not
//!   taken in one hypervisor transaction (unless it was paused already,
//!   or the live save pauses it at switchover);
//! - resume (or leave-paused, or halt) and thaw come after every memory
//!   and disk step, thaw after resume, freeze first;
//! - every step before the metadata can be undone, except halt, which
//!   only metadata follows;
//! - metadata is written last (nothing at all with NO_METADATA);
//! - a shut-off domain sees only storage-driver steps;
//! - the aligned definition gives every domain disk a mode, and exactly
//!   the disks it snapshots get a step.

mod plan_support;

use std::collections::BTreeSet;

use plan_support::{Kind, disk_facts, domain, target};
use proptest::prelude::*;
use snapshot_conf::{DomainSnapshotDef, ParseFlags, ParseOptions, SnapshotMode as XmlMode};
use snapshot_core::plan::{
    AgentState, CreateFlags, CreateRequest, DomainFacts, DomainState, HypervisorCaps, MemorySave,
    Plan, PlanKind, Step, Undo, plan_create,
};

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Qcow2),
        2 => Just(Kind::Raw),
        1 => Just(Kind::Cdrom),
        1 => Just(Kind::Network),
    ]
}

fn state() -> impl Strategy<Value = DomainState> {
    prop_oneof![
        3 => Just(DomainState::Running),
        3 => Just(DomainState::Shutoff),
        1 => Just(DomainState::Paused),
        1 => Just(DomainState::Blocked),
        1 => Just(DomainState::Shutdown),
        1 => Just(DomainState::Crashed),
        1 => Just(DomainState::PmSuspended),
    ]
}

fn agent() -> impl Strategy<Value = AgentState> {
    prop_oneof![
        Just(AgentState::Connected),
        Just(AgentState::Disconnected),
        Just(AgentState::NotConfigured),
    ]
}

fn mode() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        3 => Just(None),
        2 => Just(Some("internal")),
        2 => Just(Some("external")),
        1 => Just(Some("no")),
        1 => Just(Some("manual")),
    ]
}

fn memory() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(""),
        Just("<memory snapshot='no'/>"),
        Just("<memory snapshot='internal'/>"),
        Just("<memory snapshot='external' file='/mem/s1'/>"),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    kinds: Vec<Kind>,
    state: DomainState,
    agent: AgentState,
    persistent: bool,
    hypervisor: [bool; 4],
    flags: u32,
    memory: &'static str,
    /// Per disk: listed or not, and with which mode.
    listed: Vec<(bool, Option<&'static str>)>,
    unknown_disk: bool,
    /// Per disk: block job, and storage caps internal/external/copy
    /// flipped.
    tweaks: Vec<(bool, bool, bool, bool)>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=4).prop_flat_map(|n| {
        (
            prop::collection::vec(kind(), n),
            state(),
            agent(),
            any::<bool>(),
            [
                prop::bool::weighted(0.85),
                prop::bool::weighted(0.85),
                prop::bool::weighted(0.3),
                prop::bool::weighted(0.9),
            ],
            prop::collection::vec(prop::bool::weighted(0.12), 10).prop_map(|bits| {
                bits.iter()
                    .enumerate()
                    .filter(|(_, on)| **on)
                    .fold(0u32, |acc, (i, _)| acc | (1 << i))
            }),
            memory(),
            prop::collection::vec((any::<bool>(), mode()), n),
            prop::bool::weighted(0.05),
            prop::collection::vec(
                (
                    prop::bool::weighted(0.05),
                    prop::bool::weighted(0.1),
                    prop::bool::weighted(0.1),
                    prop::bool::weighted(0.1),
                ),
                n,
            ),
        )
            .prop_map(
                |(
                    kinds,
                    state,
                    agent,
                    persistent,
                    hypervisor,
                    flags,
                    memory,
                    listed,
                    unknown_disk,
                    tweaks,
                )| Case {
                    kinds,
                    state,
                    agent,
                    persistent,
                    hypervisor,
                    flags,
                    memory,
                    listed,
                    unknown_disk,
                    tweaks,
                },
            )
    })
}

fn build(case: &Case) -> (CreateRequest, DomainFacts) {
    let mut disks = String::new();
    for (i, (listed, mode)) in case.listed.iter().enumerate() {
        if !listed {
            continue;
        }
        match mode {
            Some(m) => disks.push_str(&format!("<disk name='{}' snapshot='{m}'/>", target(i))),
            None => disks.push_str(&format!("<disk name='{}'/>", target(i))),
        }
    }
    if case.unknown_disk {
        disks.push_str("<disk name='vdz' snapshot='internal'/>");
    }
    let disks = if disks.is_empty() {
        String::new()
    } else {
        format!("<disks>{disks}</disks>")
    };
    let xml = format!(
        "<domainsnapshot><name>s1</name>{}{disks}</domainsnapshot>",
        case.memory
    );
    let mut options = ParseOptions::new(ParseFlags::empty());
    options.creation_time = Some(1_700_000_000);
    let def = DomainSnapshotDef::parse(&xml, &options)
        .unwrap_or_else(|e| panic!("generated XML {xml} parses: {e}"))
        .def;
    let mut facts_disks: Vec<_> = case
        .kinds
        .iter()
        .map(|k| disk_facts(*k, case.state))
        .collect();
    for (f, (job, i, e, c)) in facts_disks.iter_mut().zip(&case.tweaks) {
        f.block_job = *job;
        if let Some(o) = f.offline.first_mut() {
            o.caps.internal ^= *i;
            o.caps.overlay ^= *e;
            o.caps.copy ^= *c;
        }
    }
    let [save, file, background, transaction] = case.hypervisor;
    let facts = DomainFacts {
        domain: domain(&case.kinds),
        state: case.state,
        persistent: case.persistent,
        agent: case.agent,
        managed_save: false,
        disks: facts_disks,
        hypervisor: HypervisorCaps {
            snapshot_save: save,
            memory_to_file: file,
            background_snapshot: background,
            transaction,
        },
    };
    (
        CreateRequest {
            def,
            flags: CreateFlags::from_bits_truncate(case.flags),
        },
        facts,
    )
}

fn position(plan: &Plan, pred: impl Fn(&Step) -> bool) -> Option<usize> {
    plan.steps.iter().position(pred)
}

fn last_position(plan: &Plan, pred: impl Fn(&Step) -> bool) -> Option<usize> {
    plan.steps.iter().rposition(pred)
}

fn is_capture(s: &Step) -> bool {
    matches!(
        s,
        Step::SaveMemoryInternal { .. }
            | Step::SaveMemory { .. }
            | Step::DiskTransaction(_)
            | Step::DiskSnapshot(_)
            | Step::UpdateDomain(_)
    )
}

#[allow(clippy::too_many_lines)]
fn check_plan(case: &Case, request: &CreateRequest, facts: &DomainFacts, plan: &Plan) {
    let flags = request.flags;
    let printed = plan.to_string();
    assert!(printed.contains("plan: "), "{printed}");
    if plan.kind == PlanKind::Redefine {
        assert!(flags.contains(CreateFlags::REDEFINE));
        assert!(plan.steps.iter().all(Step::is_metadata));
        return;
    }
    // Metadata last, and only without NO_METADATA.
    if let Some(first) = position(plan, Step::is_metadata) {
        assert!(plan.steps[first..].iter().all(Step::is_metadata), "{plan}");
        assert!(!flags.contains(CreateFlags::NO_METADATA));
        assert_eq!(plan.steps.last(), Some(&Step::SetCurrent("s1".into())));
    } else {
        assert!(flags.contains(CreateFlags::NO_METADATA), "{plan}");
    }
    // Undo known before each side effect; halt only before metadata.
    for (i, s) in plan.steps.iter().enumerate() {
        if s.undo() == Undo::Finish {
            assert_eq!(*s, Step::Halt, "{plan}");
            assert!(plan.steps[i + 1..].iter().all(Step::is_metadata), "{plan}");
        }
    }
    let active = case.state.is_active();
    if !active {
        for s in &plan.steps {
            assert!(
                matches!(
                    s,
                    Step::DiskSnapshot(_)
                        | Step::UpdateDomain(_)
                        | Step::WriteMetadata { .. }
                        | Step::SetCurrent(_)
                ),
                "offline plan with {s:?}\n{plan}"
            );
        }
        assert!(
            plan.disk_steps()
                .all(|d| matches!(d.by, snapshot_core::plan::Performer::Driver(_)))
        );
    } else {
        let already_paused = case.state == DomainState::Paused;
        let pause = position(plan, |s| *s == Step::Pause);
        let live_save = position(plan, |s| {
            matches!(
                s,
                Step::SaveMemory {
                    how: MemorySave::Live,
                    ..
                }
            )
        });
        for (i, s) in plan.steps.iter().enumerate() {
            let needs_still = matches!(
                s,
                Step::SaveMemoryInternal { .. }
                    | Step::SaveMemory {
                        how: MemorySave::Paused | MemorySave::Background,
                        ..
                    }
            );
            if needs_still && !already_paused {
                assert!(
                    pause.is_some_and(|p| p < i),
                    "memory saved before pause\n{plan}"
                );
            }
            if matches!(s, Step::DiskSnapshot(_)) && !already_paused {
                assert!(
                    pause.is_some_and(|p| p < i) || live_save.is_some_and(|p| p < i),
                    "driver step of a running guest without pause\n{plan}"
                );
            }
        }
        let last_capture = last_position(plan, is_capture);
        let end = position(plan, |s| {
            matches!(s, Step::Resume | Step::LeavePaused(_) | Step::Halt)
        });
        if (pause.is_some() || live_save.is_some()) && !already_paused {
            let end = end.expect("a paused guest is resumed, left paused on purpose, or halted");
            assert!(last_capture.is_none_or(|c| c < end), "{plan}");
        }
        if let Some(freeze) = position(plan, |s| *s == Step::Freeze) {
            assert_eq!(freeze, 0, "{plan}");
            let after = position(plan, |s| matches!(s, Step::Thaw | Step::Halt))
                .expect("frozen filesystems are thawed (or the domain halted)");
            assert!(last_capture.is_none_or(|c| c < after), "{plan}");
            if let (Some(t), Some(r)) = (
                position(plan, |s| *s == Step::Thaw),
                position(plan, |s| *s == Step::Resume),
            ) {
                assert!(r < t, "thaw before resume\n{plan}");
            }
        } else {
            assert!(position(plan, |s| *s == Step::Thaw).is_none());
        }
    }
    // The aligned definition.
    let def = plan.def.as_ref().expect("definition");
    assert_eq!(def.disks.len(), facts.domain.def.disks.len());
    assert!(def.state.is_some() && def.memory.is_some());
    let mut wanted = BTreeSet::new();
    for d in &def.disks {
        let m = d.mode.expect("every disk has a mode");
        if matches!(m, XmlMode::Internal | XmlMode::External) {
            wanted.insert(d.name.clone());
        }
    }
    let mut stepped: BTreeSet<String> = plan.disk_steps().map(|d| d.disk.clone()).collect();
    for s in &plan.steps {
        if let Step::SaveMemoryInternal { vmstate, disks } = s {
            assert!(disks.contains(vmstate), "{plan}");
            stepped.extend(disks.iter().cloned());
        }
    }
    assert_eq!(stepped, wanted, "{plan}");
    if def.memory == Some(XmlMode::Internal) {
        assert!(
            position(plan, |s| matches!(s, Step::SaveMemoryInternal { .. })).is_some(),
            "{plan}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_request_is_planned_or_refused_with_reason(case in case()) {
        let (request, facts) = build(&case);
        let first = plan_create(&request, &facts);
        // Pure: the same answer twice.
        prop_assert_eq!(&first, &plan_create(&request, &facts));
        match first {
            Ok(plan) => check_plan(&case, &request, &facts, &plan),
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.is_empty());
                prop_assert!(e.is_invalid() || e.is_unsupported(), "{e:?}");
            }
        }
    }
}
