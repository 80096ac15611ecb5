//! The seed's combination table (../shared/seeds/combination-table.txt),
//! every row and its disk-only variant, against `plan_create`: the memory
//! mode, each disk's mode, the state recorded and the steps, or the
//! refusal. The domain is the research notes' (two writable qcow2 disks,
//! no `snapshot=` defaults); "no", "int" and "ext" disks list both disks
//! with that mode. Rows libvirt 10.7 refuses as unsupported (9, 13, 16,
//! 20, 24) are planned here; each row's comment says what libvirt does.

mod plan_support;

use plan_support::{request, two_qcow2};
use snapshot_core::plan::{
    CreateFlags, DiskAction, DomainState, MemorySave, Performer, Plan, PlanError, Step, plan_create,
};

const OMIT: &str = "";
const MEM_NO: &str = "<memory snapshot='no'/>";
const MEM_INT: &str = "<memory snapshot='internal'/>";
const MEM_EXT: &str = "<memory snapshot='external' file='/mem/s1'/>";
const DISKS_NO: &str =
    "<disks><disk name='vda' snapshot='no'/><disk name='vdb' snapshot='no'/></disks>";
const DISKS_INT: &str =
    "<disks><disk name='vda' snapshot='internal'/><disk name='vdb' snapshot='internal'/></disks>";
const DISKS_EXT: &str =
    "<disks><disk name='vda' snapshot='external'/><disk name='vdb' snapshot='external'/></disks>";

/// A step as a short tag, so a row's expectation fits on a line.
fn tag(step: &Step) -> String {
    let disk = |d: &snapshot_core::plan::DiskStep| {
        let by = match &d.by {
            Performer::Hypervisor => "hv".to_string(),
            Performer::Driver(k) => k.clone(),
        };
        let what = match &d.action {
            DiskAction::Internal => "int".to_string(),
            DiskAction::External { target, .. } => format!("ext>{target}"),
            DiskAction::Copy { target } => format!("copy>{target}"),
        };
        format!("{}:{what}@{by}", d.disk)
    };
    match step {
        Step::Freeze => "freeze".into(),
        Step::Pause => "pause".into(),
        Step::SaveMemoryInternal { vmstate, disks } => {
            format!("savevm[{vmstate}|{}]", disks.join(","))
        }
        Step::SaveMemory { file, how } => format!(
            "mem>{file}:{}",
            match how {
                MemorySave::Paused => "paused",
                MemorySave::Live => "live",
                MemorySave::Background => "background",
            }
        ),
        Step::DiskTransaction(d) => {
            format!("tx[{}]", d.iter().map(disk).collect::<Vec<_>>().join(" "))
        }
        Step::DiskSnapshot(d) => format!("snap {}", disk(d)),
        Step::UpdateDomain(c) => format!(
            "define[{}]",
            c.iter()
                .map(|c| c.disk.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Step::Resume => "resume".into(),
        Step::LeavePaused(d) => format!("leave-paused[{}]", d.join(",")),
        Step::Halt => "halt".into(),
        Step::Thaw => "thaw".into(),
        Step::WriteMetadata { redefine } => {
            if *redefine {
                "redefine".into()
            } else {
                "metadata".into()
            }
        }
        Step::SetCurrent(n) => format!("current={n}"),
        other => format!("{other:?}"),
    }
}

/// What a row expects.
enum Expect {
    /// state, memory, disk modes ("vda internal, vdb external"), steps.
    Plan(
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    ),
    /// A refusal as invalid, with a piece of its message.
    Invalid(&'static str),
}
use Expect::{Invalid, Plan as P};

/// The memory, state and disk modes of the aligned definition.
fn outline(plan: &Plan) -> (String, String, String) {
    let def = plan
        .def
        .as_ref()
        .expect("a create plan carries its definition");
    let state = def.state.expect("state set").to_string();
    let memory = def.memory.expect("memory set").to_string();
    let disks = def
        .disks
        .iter()
        .map(|d| format!("{} {}", d.name, d.mode.expect("mode set")))
        .collect::<Vec<_>>()
        .join(", ");
    (state, memory, disks)
}

fn check(
    row: &str,
    state: DomainState,
    memory: &str,
    disks: &str,
    disk_only: bool,
    expect: &Expect,
) {
    let flags = if disk_only {
        CreateFlags::DISK_ONLY
    } else {
        CreateFlags::empty()
    };
    let req = request(&format!("{memory}{disks}"), flags);
    let got = plan_create(&req, &two_qcow2(state));
    match (expect, got) {
        (P(st, mem, modes, steps), Ok(plan)) => {
            let (s, m, d) = outline(&plan);
            assert_eq!(
                (s.as_str(), m.as_str(), d.as_str()),
                (*st, *mem, *modes),
                "row {row}: outline\n{plan}"
            );
            let tags: Vec<String> = plan.steps.iter().map(tag).collect();
            assert_eq!(tags, *steps, "row {row}: steps\n{plan}");
            // The printed plan names every step.
            assert_eq!(
                plan.to_string()
                    .lines()
                    .filter(|l| l.starts_with("  ")
                        && l.trim_start()
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_digit()))
                    .count(),
                plan.steps.len(),
                "row {row}"
            );
        }
        (Invalid(piece), Err(e)) => {
            assert!(
                e.is_invalid(),
                "row {row}: expected an invalid-request refusal, got {e:?}"
            );
            assert!(
                e.to_string().contains(piece),
                "row {row}: '{e}' lacks '{piece}'"
            );
        }
        (P(..), Err(e)) => panic!("row {row}: expected a plan, got: {e}"),
        (Invalid(_), Ok(plan)) => panic!("row {row}: expected a refusal, got\n{plan}"),
    }
}

const OFF: DomainState = DomainState::Shutoff;
const RUN: DomainState = DomainState::Running;

const OFFLINE_INT: &[&str] = &[
    "snap vda:int@qemu",
    "snap vdb:int@qemu",
    "metadata",
    "current=s1",
];
const OFFLINE_EXT: &[&str] = &[
    "snap vda:ext>/img/vda.s1@qemu",
    "snap vdb:ext>/img/vdb.s1@qemu",
    "define[vda,vdb]",
    "metadata",
    "current=s1",
];
const SAVEVM: &[&str] = &[
    "pause",
    "savevm[vda|vda,vdb]",
    "resume",
    "metadata",
    "current=s1",
];
const LIVE_EXT: &[&str] = &[
    "tx[vda:ext>/img/vda.s1@hv vdb:ext>/img/vdb.s1@hv]",
    "define[vda,vdb]",
    "metadata",
    "current=s1",
];
const LIVE_INT: &[&str] = &["tx[vda:int@hv vdb:int@hv]", "metadata", "current=s1"];
const NOTHING: &str = "nothing selected for snapshot";
const NO_MEMORY_OFFLINE: &str = "memory state cannot be saved: domain 'vm' is shut off";
const NO_MEMORY_DISK_ONLY: &str = "memory state cannot be saved with a disk-only snapshot";
const BOTH_INT: &str = "vda internal, vdb internal";
const BOTH_EXT: &str = "vda external, vdb external";
const BOTH_NO: &str = "vda no, vdb no";

#[rustfmt::skip]
fn rows() -> Vec<(&'static str, DomainState, &'static str, &'static str, bool, Expect)> {
    vec![
        // libvirt: memory=no disk=int via qemu-img.
        ("1", OFF, OMIT, OMIT, false, P("shutoff", "no", BOTH_INT, OFFLINE_INT)),
        // libvirt 10.7: DISK_ONLY selects external overlays.
        ("1b", OFF, OMIT, OMIT, true, P("shutoff", "no", BOTH_EXT, OFFLINE_EXT)),
        ("2", OFF, MEM_NO, OMIT, false, P("shutoff", "no", BOTH_INT, OFFLINE_INT)),
        ("2b", OFF, MEM_NO, OMIT, true, P("shutoff", "no", BOTH_EXT, OFFLINE_EXT)),
        // libvirt: invalid (nothing to snapshot).
        ("3", OFF, OMIT, DISKS_NO, false, Invalid(NOTHING)),
        ("3-no", OFF, MEM_NO, DISKS_NO, false, Invalid(NOTHING)),
        ("3b", OFF, OMIT, DISKS_NO, true, Invalid(NOTHING)),
        ("4", OFF, OMIT, DISKS_INT, false, P("shutoff", "no", BOTH_INT, OFFLINE_INT)),
        // libvirt: accepted but takes nothing (a gap); here the disks.
        ("4b", OFF, MEM_NO, DISKS_INT, true, P("shutoff", "no", BOTH_INT, OFFLINE_INT)),
        ("5", OFF, OMIT, DISKS_EXT, false, P("shutoff", "no", BOTH_EXT, OFFLINE_EXT)),
        ("5b", OFF, MEM_NO, DISKS_EXT, true, P("shutoff", "no", BOTH_EXT, OFFLINE_EXT)),
        // libvirt: invalid (no memory to save).
        ("6-int", OFF, MEM_INT, OMIT, false, Invalid(NO_MEMORY_OFFLINE)),
        ("6-ext", OFF, MEM_EXT, DISKS_EXT, false, Invalid(NO_MEMORY_OFFLINE)),
        ("6b-int", OFF, MEM_INT, DISKS_INT, true, Invalid(NO_MEMORY_OFFLINE)),
        ("6b-ext", OFF, MEM_EXT, OMIT, true, Invalid(NO_MEMORY_OFFLINE)),
        // libvirt: savevm.
        ("7", RUN, OMIT, OMIT, false, P("running", "internal", BOTH_INT, SAVEVM)),
        // libvirt: transaction, disk-snapshot.
        ("8", RUN, OMIT, OMIT, true, P("disk-snapshot", "no", BOTH_EXT, LIVE_EXT)),
        // libvirt: unsupported. Memory follows the disks: external disks
        // listed, none internal: disk-only.
        ("9-ext", RUN, OMIT, DISKS_EXT, false, P("disk-snapshot", "no", BOTH_EXT, LIVE_EXT)),
        // Every disk excluded: memory (internal by default) has no disk.
        ("9-no", RUN, OMIT, DISKS_NO, false, Invalid("memory saved internally needs a disk")),
        ("10", RUN, OMIT, DISKS_NO, true, Invalid(NOTHING)),
        ("11", RUN, OMIT, DISKS_EXT, true, P("disk-snapshot", "no", BOTH_EXT, LIVE_EXT)),
        ("12", RUN, OMIT, DISKS_INT, false, P("running", "internal", BOTH_INT, SAVEVM)),
        // libvirt: unsupported; here blockdev-snapshot-internal-sync in
        // one transaction, the guest never paused.
        ("13", RUN, OMIT, DISKS_INT, true, P("disk-snapshot", "no", BOTH_INT, LIVE_INT)),
        // libvirt 10.7 refuses without DISK_ONLY; the 2012 table (and
        // virtsnap) take it disk-only.
        ("14", RUN, MEM_NO, OMIT, false, P("disk-snapshot", "no", BOTH_EXT, LIVE_EXT)),
        ("14b", RUN, MEM_NO, OMIT, true, P("disk-snapshot", "no", BOTH_EXT, LIVE_EXT)),
        ("15", RUN, MEM_NO, DISKS_NO, false, Invalid(NOTHING)),
        ("15b", RUN, MEM_NO, DISKS_NO, true, Invalid(NOTHING)),
        // libvirt: unsupported; here live internal disk-only.
        ("16", RUN, MEM_NO, DISKS_INT, false, P("disk-snapshot", "no", BOTH_INT, LIVE_INT)),
        ("16b", RUN, MEM_NO, DISKS_INT, true, P("disk-snapshot", "no", BOTH_INT, LIVE_INT)),
        ("17", RUN, MEM_NO, DISKS_EXT, false, P("disk-snapshot", "no", BOTH_EXT, LIVE_EXT)),
        ("17b", RUN, MEM_NO, DISKS_EXT, true, P("disk-snapshot", "no", BOTH_EXT, LIVE_EXT)),
        // libvirt: invalid (disk-only vs memory).
        ("18-int", RUN, MEM_INT, OMIT, true, Invalid(NO_MEMORY_DISK_ONLY)),
        ("18-ext", RUN, MEM_EXT, DISKS_EXT, true, Invalid(NO_MEMORY_DISK_ONLY)),
        ("19", RUN, MEM_INT, OMIT, false, P("running", "internal", BOTH_INT, SAVEVM)),
        // libvirt: unsupported. Every disk excluded or external: no disk
        // holds the memory (the subset rows below are planned).
        ("20-no", RUN, MEM_INT, DISKS_NO, false, Invalid("memory saved internally needs a disk")),
        ("20-ext", RUN, MEM_INT, DISKS_EXT, false, Invalid("memory saved internally needs a disk")),
        ("21", RUN, MEM_INT, DISKS_INT, false, P("running", "internal", BOTH_INT, SAVEVM)),
        // libvirt: migrate + transaction.
        ("22", RUN, MEM_EXT, OMIT, false, P("running", "external", BOTH_EXT, &[
            "pause", "mem>/mem/s1:paused",
            "tx[vda:ext>/img/vda.s1@hv vdb:ext>/img/vdb.s1@hv]",
            "define[vda,vdb]", "resume", "metadata", "current=s1"])),
        // libvirt: memory only, by migration.
        ("23", RUN, MEM_EXT, DISKS_NO, false, P("running", "external", BOTH_NO, &[
            "pause", "mem>/mem/s1:paused", "resume", "metadata", "current=s1"])),
        // libvirt: unsupported (mixing); here memory to a file and
        // internal disks in one transaction while paused.
        ("24", RUN, MEM_EXT, DISKS_INT, false, P("running", "external", BOTH_INT, &[
            "pause", "mem>/mem/s1:paused", "tx[vda:int@hv vdb:int@hv]",
            "resume", "metadata", "current=s1"])),
        ("25", RUN, MEM_EXT, DISKS_EXT, false, P("running", "external", BOTH_EXT, &[
            "pause", "mem>/mem/s1:paused",
            "tx[vda:ext>/img/vda.s1@hv vdb:ext>/img/vdb.s1@hv]",
            "define[vda,vdb]", "resume", "metadata", "current=s1"])),
    ]
}

#[test]
fn every_row_of_the_seed_table() {
    let rows = rows();
    for (row, state, memory, disks, disk_only, expect) in &rows {
        check(row, *state, memory, disks, *disk_only, expect);
    }
    // Every seed row is there (1 to 25).
    for n in 1..=25 {
        let n = n.to_string();
        assert!(
            rows.iter()
                .any(|r| r.0 == n || r.0.starts_with(&format!("{n}-")) || r.0 == format!("{n}b")),
            "seed row {n} is missing"
        );
    }
}

/// Row 20 with a subset: internal memory in vda, vdb left out
/// (snapshot-save with an explicit device list) or external (in the same
/// pause, by a transaction).
#[test]
fn row_20_subsets_are_planned() {
    let subset = request(
        &format!(
            "{MEM_INT}<disks><disk name='vda' snapshot='internal'/><disk name='vdb' snapshot='no'/></disks>"
        ),
        CreateFlags::empty(),
    );
    let plan = plan_create(&subset, &two_qcow2(RUN)).expect("subset planned");
    let tags: Vec<String> = plan.steps.iter().map(tag).collect();
    assert_eq!(
        tags,
        [
            "pause",
            "savevm[vda|vda]",
            "resume",
            "metadata",
            "current=s1"
        ]
    );

    let mixed = request(
        &format!("{MEM_INT}<disks><disk name='vdb' snapshot='external'/></disks>"),
        CreateFlags::empty(),
    );
    let plan = plan_create(&mixed, &two_qcow2(RUN)).expect("mixed planned");
    let tags: Vec<String> = plan.steps.iter().map(tag).collect();
    assert_eq!(
        tags,
        [
            "pause",
            "savevm[vda|vda]",
            "tx[vdb:ext>/img/vdb.s1@hv]",
            "define[vdb]",
            "resume",
            "metadata",
            "current=s1"
        ]
    );
    assert_eq!(outline(&plan).2, "vda internal, vdb external");
}

#[test]
fn refusals_say_what_to_change() {
    let e: PlanError = plan_create(&request(MEM_INT, CreateFlags::empty()), &two_qcow2(OFF))
        .expect_err("memory of a shut-off domain");
    assert!(e.to_string().contains("drop <memory>"), "{e}");
    let e = plan_create(&request(DISKS_NO, CreateFlags::empty()), &two_qcow2(OFF))
        .expect_err("nothing selected");
    assert!(
        e.to_string().contains("--diskspec vda,snapshot=external"),
        "{e}"
    );
}
