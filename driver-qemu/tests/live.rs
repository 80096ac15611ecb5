//! Domain snapshots of a running QEMU (the stub guest, RAM from a file of
//! random bytes), through the domain API: every online kind of create,
//! reverts that bring disks and RAM back (checked through the restored
//! QEMU: qemu-io reads of the disks, pmemsave of RAM), and the undo of a
//! disk transaction QEMU refuses.

mod live_support;

use live_support::{Fixture, backend_ready};
use snapshot_core::ChildPolicy;
use snapshot_core::domain_api::Created;
use snapshot_core::exec::StepEvent;
use snapshot_core::plan::{CreateFlags, DomainState, RevertFlags, Step};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn create(f: &Fixture, xml: &str, flags: CreateFlags) -> snapshot_core::plan::Plan {
    match f
        .api()
        .snapshot_create_xml(&f.name, Some(xml), flags, false, None)
        .await
        .expect("snapshot taken")
    {
        Created::Taken { plan, .. } => plan,
        Created::Planned(p) => panic!("not run: {p}"),
    }
}

async fn state(f: &Fixture) -> DomainState {
    f.qemu().domain_state().await.expect("state")
}

#[test]
fn live_disk_only_external_snapshot_is_one_transaction_and_revert_brings_the_disks_back() {
    if !backend_ready("live_disk_only_external") {
        return;
    }
    rt().block_on(async {
        let f = Fixture::new(2, false);
        f.qemu().start_domain(false).await.expect("start");
        f.write_disk("vda", 0x11).await;
        f.write_disk("vdb", 0x21).await;

        let plan = create(
            &f,
            "<domainsnapshot><name>s1</name></domainsnapshot>",
            CreateFlags::DISK_ONLY,
        )
        .await;
        assert!(
            matches!(plan.steps.first(), Some(Step::DiskTransaction(d)) if d.len() == 2),
            "{plan}"
        );
        // The guest ran throughout and writes now go to the overlays.
        assert_eq!(state(&f).await, DomainState::Running);
        let top = f.source("vda");
        assert!(top.ends_with("vda.s1"), "{top}");
        let live = f.qemu().live_disks().await.expect("disks");
        assert_eq!(live["vda"].file, top, "QEMU writes the new overlay");
        f.write_disk("vda", 0x12).await;
        f.write_disk("vdb", 0x22).await;
        f.check_disk("vda", 0x12).await;

        // Revert: the disks read what they held at s1.
        f.api()
            .revert_to_snapshot(&f.name, "s1", RevertFlags::RUNNING, false, None)
            .await
            .expect("revert");
        assert_eq!(state(&f).await, DomainState::Running);
        f.check_disk("vda", 0x11).await;
        f.check_disk("vdb", 0x21).await;
        f.stop().await;
    });
}

#[test]
fn live_internal_disk_only_snapshot_is_taken_while_the_guest_runs() {
    if !backend_ready("live_internal_disk_only") {
        return;
    }
    rt().block_on(async {
        let f = Fixture::new(2, false);
        f.qemu().start_domain(false).await.expect("start");
        f.write_disk("vda", 0x31).await;
        let plan = create(
            &f,
            "<domainsnapshot><name>i1</name><disks><disk name='vda' snapshot='internal'/>\
             <disk name='vdb' snapshot='internal'/></disks></domainsnapshot>",
            CreateFlags::DISK_ONLY,
        )
        .await;
        assert!(
            !plan.has(&Step::Pause),
            "no pause for one transaction:\n{plan}"
        );
        let live = f.qemu().live_disks().await.expect("disks");
        for t in ["vda", "vdb"] {
            assert!(
                live[t]
                    .snapshots
                    .iter()
                    .any(|(n, vm)| n == "i1" && *vm == 0),
                "{t} holds i1 without memory: {:?}",
                live[t].snapshots
            );
        }
        f.write_disk("vda", 0x32).await;
        f.api()
            .revert_to_snapshot(&f.name, "i1", RevertFlags::RUNNING, false, None)
            .await
            .expect("revert");
        f.check_disk("vda", 0x31).await;
        f.stop().await;
    });
}

#[test]
fn full_system_internal_checkpoint_restores_disks_and_ram() {
    if !backend_ready("full_system_internal") {
        return;
    }
    rt().block_on(async {
        let f = Fixture::new(2, false);
        f.qemu().start_domain(false).await.expect("start");
        let ram_then = f.ram_digest().await;
        assert_eq!(
            ram_then,
            f.ram_file_digest(),
            "the guest's RAM is the file's"
        );
        f.write_disk("vda", 0x41).await;
        let plan = create(
            &f,
            "<domainsnapshot><name>c1</name></domainsnapshot>",
            CreateFlags::empty(),
        )
        .await;
        assert!(
            plan.steps
                .iter()
                .any(|s| matches!(s, Step::SaveMemoryInternal { .. })),
            "{plan}"
        );
        assert_eq!(state(&f).await, DomainState::Running, "resumed after");
        let live = f.qemu().live_disks().await.expect("disks");
        assert!(
            live["vda"]
                .snapshots
                .iter()
                .any(|(n, vm)| n == "c1" && *vm > 0),
            "vda holds the memory: {:?}",
            live["vda"].snapshots
        );
        f.write_disk("vda", 0x42).await;
        // A restored guest must not get the RAM the file has now.
        f.scramble_ram_file(99);
        assert_ne!(f.ram_file_digest(), ram_then);

        // Running on the images that hold it: loaded in place, the QEMU
        // process stays.
        let pid = f.qemu().pid();
        let plan = f
            .api()
            .revert_to_snapshot(&f.name, "c1", RevertFlags::empty(), false, None)
            .await
            .expect("revert");
        assert!(
            matches!(
                plan.steps.first(),
                Some(Step::LoadCheckpoint { paused: false, .. })
            ),
            "{plan}"
        );
        assert!(!plan.has(&Step::StopDomain), "{plan}");
        assert_eq!(f.qemu().pid(), pid, "same process");
        assert_eq!(state(&f).await, DomainState::Running);
        assert_eq!(f.ram_digest().await, ram_then, "RAM as at c1");
        f.check_disk("vda", 0x41).await;

        // Paused on request.
        f.api()
            .revert_to_snapshot(&f.name, "c1", RevertFlags::PAUSED, false, None)
            .await
            .expect("revert paused");
        assert_eq!(state(&f).await, DomainState::Paused);

        // Shut off: started again with the checkpoint loaded.
        f.write_disk("vda", 0x43).await;
        f.stop().await;
        let plan = f
            .api()
            .revert_to_snapshot(&f.name, "c1", RevertFlags::empty(), false, None)
            .await
            .expect("revert from shut off");
        assert!(
            plan.steps.iter().any(|s| matches!(
                s,
                Step::StartDomain {
                    memory: Some(_),
                    ..
                }
            )),
            "{plan}"
        );
        assert_eq!(state(&f).await, DomainState::Running);
        assert_eq!(f.ram_digest().await, ram_then, "RAM as at c1 after a start");
        f.check_disk("vda", 0x41).await;
        f.stop().await;
    });
}

#[test]
fn full_system_external_live_and_paused_restore_ram_and_disks() {
    if !backend_ready("full_system_external") {
        return;
    }
    rt().block_on(async {
        let f = Fixture::new(2, false);
        f.qemu().start_domain(false).await.expect("start");
        let ram_then = f.ram_digest().await;
        f.write_disk("vda", 0x51).await;
        f.write_disk("vdb", 0x61).await;
        let mem = f.dir.path().join("e1.mem");
        let xml = format!(
            "<domainsnapshot><name>e1</name><memory snapshot='external' file='{}'/>\
             <disks><disk name='vda' snapshot='external'/><disk name='vdb' snapshot='external'/></disks>\
             </domainsnapshot>",
            mem.display()
        );
        let monitor = f.monitor().await;
        let mut events = monitor.subscribe();
        drop(monitor);
        let plan = create(&f, &xml, CreateFlags::LIVE).await;
        assert!(
            plan.steps.iter().any(|s| matches!(
                s,
                Step::SaveMemory {
                    how: snapshot_core::plan::MemorySave::Live,
                    ..
                }
            )),
            "{plan}"
        );
        assert!(mem.exists(), "memory file written");
        assert_eq!(state(&f).await, DomainState::Running);
        // The guest stopped once, at switchover, and was resumed.
        let mut names = Vec::new();
        while let Ok(ev) = events.try_recv() {
            names.push(ev.name);
        }
        let stops = names.iter().filter(|n| *n == "STOP").count();
        assert!(stops <= 1, "paused at most once: {names:?}");
        f.write_disk("vda", 0x52).await;

        // Non-live: paused for the whole save.
        let mem2 = f.dir.path().join("e2.mem");
        let xml2 = format!(
            "<domainsnapshot><name>e2</name><memory snapshot='external' file='{}'/></domainsnapshot>",
            mem2.display()
        );
        create(&f, &xml2, CreateFlags::empty()).await;
        assert!(mem2.exists());
        assert_eq!(state(&f).await, DomainState::Running);

        f.scramble_ram_file(7);
        f.api()
            .revert_to_snapshot(&f.name, "e1", RevertFlags::empty(), false, None)
            .await
            .expect("revert e1");
        assert_eq!(state(&f).await, DomainState::Running);
        assert_eq!(f.ram_digest().await, ram_then, "RAM as at e1");
        f.check_disk("vda", 0x51).await;
        f.check_disk("vdb", 0x61).await;
        f.stop().await;
    });
}

#[test]
fn halt_stops_the_domain_after_the_snapshot() {
    if !backend_ready("halt") {
        return;
    }
    rt().block_on(async {
        let f = Fixture::new(1, false);
        f.qemu().start_domain(false).await.expect("start");
        create(
            &f,
            "<domainsnapshot><name>h1</name></domainsnapshot>",
            CreateFlags::DISK_ONLY | CreateFlags::HALT,
        )
        .await;
        assert_eq!(state(&f).await, DomainState::Shutoff);
        assert!(f.source("vda").ends_with("vda.h1"));
    });
}

#[test]
fn a_refused_transaction_leaves_no_overlay_and_the_guest_running() {
    if !backend_ready("refused_transaction") {
        return;
    }
    rt().block_on(async {
        let f = Fixture::new(2, false);
        f.qemu().start_domain(false).await.expect("start");
        // vdb already holds an internal snapshot of that name: QEMU
        // refuses the whole transaction, vda's overlay included.
        let d = f.qemu();
        d.monitor()
            .await
            .expect("monitor")
            .execute(
                "blockdev-snapshot-internal-sync",
                Some(serde_json::json!({"device": "vs-disk-vdb", "name": "x1"})),
            )
            .await
            .expect("internal snapshot");
        drop(d);
        let before = f.files();
        let err = f
            .api()
            .snapshot_create_xml(
                &f.name,
                Some(
                    "<domainsnapshot><name>x1</name><disks><disk name='vda' snapshot='external'/>\
                     <disk name='vdb' snapshot='internal'/></disks></domainsnapshot>",
                ),
                CreateFlags::DISK_ONLY,
                false,
                None,
            )
            .await
            .expect_err("QEMU refuses");
        let msg = err.to_string();
        assert!(
            msg.contains("x1") && msg.contains("nothing was left changed"),
            "{msg}"
        );
        assert_eq!(f.files(), before, "no overlay left");
        assert_eq!(state(&f).await, DomainState::Running);
        assert!(f.source("vda").ends_with("vda.qcow2"));
        let live = f.qemu().live_disks().await.expect("disks");
        assert!(
            live["vda"].file.ends_with("vda.qcow2"),
            "QEMU still writes the base"
        );
        assert!(f.snapshot_names().is_empty(), "no metadata");
        f.stop().await;
    });
}

#[test]
fn deleting_snapshots_of_a_running_domain_streams_live_layers_and_keeps_every_byte() {
    if !backend_ready("delete_running") {
        return;
    }
    rt().block_on(async {
        let f = Fixture::new(1, false);
        f.qemu().start_domain(false).await.expect("start");
        f.write_disk("vda", 0x71).await;
        let base = f.source("vda");
        create(&f, "<domainsnapshot><name>e1</name></domainsnapshot>", CreateFlags::DISK_ONLY).await;
        f.write_disk("vda", 0x72).await;
        create(&f, "<domainsnapshot><name>e2</name></domainsnapshot>", CreateFlags::DISK_ONLY).await;
        f.write_disk("vda", 0x73).await;
        create(
            &f,
            "<domainsnapshot><name>i3</name><disks><disk name='vda' snapshot='internal'/></disks></domainsnapshot>",
            CreateFlags::DISK_ONLY,
        )
        .await;

        // e1 froze the base image; the running chain pulls it up.
        let plan = f
            .api()
            .snapshot_delete(&f.name, "e1", ChildPolicy::Rebase, false, false, None)
            .await
            .expect("delete e1");
        assert!(
            plan.steps.iter().any(|s| matches!(
                s,
                Step::MergeImage { by: snapshot_core::plan::Performer::Hypervisor, .. }
            )),
            "{plan}"
        );
        assert_eq!(state(&f).await, DomainState::Running);
        assert!(!std::path::Path::new(&base).exists(), "{base} removed");
        f.check_disk("vda", 0x73).await;

        // The internal snapshot inside the running top image.
        f.api()
            .snapshot_delete(&f.name, "i3", ChildPolicy::Rebase, false, false, None)
            .await
            .expect("delete i3");
        let live = f.qemu().live_disks().await.expect("disks");
        assert!(live["vda"].snapshots.is_empty(), "{:?}", live["vda"].snapshots);
        assert_eq!(f.snapshot_names(), ["e2"]);

        // What is left still reverts to its own content.
        f.api()
            .revert_to_snapshot(&f.name, "e2", RevertFlags::RUNNING, false, None)
            .await
            .expect("revert e2");
        f.check_disk("vda", 0x72).await;
        f.stop().await;
    });
}

/// Kills QEMU (SIGKILL) as step `at` begins.
fn kill_qemu_at(
    f: &Fixture,
    at: fn(&Step) -> bool,
) -> impl Fn(usize, &Step, StepEvent) + Send + Sync + use<> {
    let pid_file = f.layout.run_dir().join("g/qemu.pid");
    move |_, step, event| {
        if event == StepEvent::Begin && at(step) {
            let pid = std::fs::read_to_string(&pid_file).expect("pid");
            std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status()
                .expect("kill");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

#[test]
fn qemu_killed_mid_snapshot_leaves_no_file_and_no_metadata() {
    if !backend_ready("qemu_killed") {
        return;
    }
    rt().block_on(async {
        for (what, at) in [
            ("memory save", (|s: &Step| matches!(s, Step::SaveMemory { .. })) as fn(&Step) -> bool),
            ("disk transaction", |s: &Step| matches!(s, Step::DiskTransaction(_))),
        ] {
            let f = Fixture::new(2, false);
            f.qemu().start_domain(false).await.expect("start");
            f.write_disk("vda", 0x81).await;
            let before = f.files();
            let mem = f.dir.path().join("k.mem");
            let xml = format!(
                "<domainsnapshot><name>k</name><memory snapshot='external' file='{}'/>\
                 <disks><disk name='vda' snapshot='external'/><disk name='vdb' snapshot='external'/></disks>\
                 </domainsnapshot>",
                mem.display()
            );
            let observer = kill_qemu_at(&f, at);
            let err = f
                .api()
                .snapshot_create_xml(&f.name, Some(&xml), CreateFlags::LIVE, false, Some(&observer))
                .await
                .expect_err("QEMU died");
            assert!(err.to_string().contains("nothing was left changed"), "{what}: {err}");
            assert_eq!(f.files(), before, "{what}: nothing left behind");
            assert!(f.snapshot_names().is_empty(), "{what}: no metadata");
            assert!(f.source("vda").ends_with("vda.qcow2"), "{what}");
            assert_eq!(state(&f).await, DomainState::Shutoff, "{what}");
            // The data written before is intact, and the domain starts.
            f.qemu().start_domain(false).await.expect("restart");
            f.check_disk("vda", 0x81).await;
            f.stop().await;
        }
    });
}

#[test]
fn quiesce_without_an_answering_agent_is_refused_before_anything_changes() {
    if !backend_ready("quiesce_no_agent") {
        return;
    }
    rt().block_on(async {
        // A channel, but the stub guest runs no agent.
        let f = Fixture::new(1, true);
        f.qemu().start_domain(false).await.expect("start");
        let before = f.files();
        let err = f
            .api()
            .snapshot_create_xml(
                &f.name,
                Some("<domainsnapshot><name>q</name></domainsnapshot>"),
                CreateFlags::DISK_ONLY | CreateFlags::QUIESCE,
                false,
                None,
            )
            .await
            .expect_err("no agent");
        assert!(err.to_string().contains("agent"), "{err}");
        assert_eq!(f.files(), before);
        assert_eq!(state(&f).await, DomainState::Running);
        // Without a channel at all, the message says how to add one.
        let g = Fixture::new(1, false);
        g.qemu().start_domain(false).await.expect("start");
        let err = g
            .api()
            .snapshot_create_xml(
                &g.name,
                None,
                CreateFlags::DISK_ONLY | CreateFlags::QUIESCE,
                false,
                None,
            )
            .await
            .expect_err("no channel");
        assert!(err.to_string().contains("agent"), "{err}");
        f.stop().await;
        g.stop().await;
    });
}

#[test]
fn a_full_disk_under_the_memory_file_fails_the_save_and_resumes_the_guest() {
    if !backend_ready("memory_disk_full") {
        return;
    }
    rt().block_on(async {
        let f = Fixture::new(1, false);
        let small = f.dir.path().join("small");
        std::fs::create_dir(&small).expect("dir");
        let Some(_mount) = snapshot_core::conformance::backends::Tmpfs::mount_or_skip(&small, "1m") else {
            return;
        };
        f.qemu().start_domain(false).await.expect("start");
        let mem = small.join("m.mem");
        let xml = format!(
            "<domainsnapshot><name>m</name><memory snapshot='external' file='{}'/></domainsnapshot>",
            mem.display()
        );
        let err = f
            .api()
            .snapshot_create_xml(&f.name, Some(&xml), CreateFlags::empty(), false, None)
            .await
            .expect_err("no space");
        assert!(err.to_string().contains("nothing was left changed"), "{err}");
        assert!(!mem.exists(), "the partial memory file is removed");
        assert_eq!(state(&f).await, DomainState::Running, "resumed");
        assert!(f.snapshot_names().is_empty());
        f.stop().await;
    });
}

#[test]
fn resuming_after_a_crashed_save_cancels_the_migration_left_at_switchover() {
    if !backend_ready("stray_migration") {
        return;
    }
    rt().block_on(async {
        use snapshot_core::hypervisor::Hypervisor as _;
        let f = Fixture::new(1, false);
        f.qemu().start_domain(false).await.expect("start");
        let mem = f.dir.path().join("stray.mem");
        {
            // What a virtsnap killed at switchover leaves: a migration
            // waiting in pre-switchover, the guest paused.
            let d = f.qemu();
            d.save_memory(&mem, snapshot_core::plan::MemorySave::Live)
                .await
                .expect("save to switchover");
            assert_eq!(d.domain_state().await.expect("state"), DomainState::Paused);
        }
        // A new process (a new handle) undoes the pause.
        f.qemu().resume().await.expect("resume");
        assert_eq!(state(&f).await, DomainState::Running);
        f.stop().await;
    });
}

#[test]
fn a_background_memory_save_takes_the_disks_first_and_lets_the_guest_run() {
    if !backend_ready("background_save") {
        return;
    }
    rt().block_on(async {
        // Anonymous RAM: QEMU can write-protect it.
        let f = Fixture::with(2, false, false);
        f.qemu().start_domain(false).await.expect("start");
        let facts = f
            .api()
            .facts(&snapshot_core::store::domains::get(&f.layout, "g").expect("domain"))
            .await
            .expect("facts");
        assert!(facts.hypervisor.background_snapshot, "anonymous RAM allows it");
        f.write_disk("vda", 0xa1).await;
        let mem = f.dir.path().join("b.mem");
        let xml = format!(
            "<domainsnapshot><name>b</name><memory snapshot='external' file='{}'/>\
             <disks><disk name='vda' snapshot='external'/><disk name='vdb' snapshot='external'/></disks>\
             </domainsnapshot>",
            mem.display()
        );
        let plan = create(&f, &xml, CreateFlags::LIVE).await;
        let save = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::SaveMemory { how: snapshot_core::plan::MemorySave::Background, .. }))
            .unwrap_or_else(|| panic!("background save expected:\n{plan}"));
        let tx = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::DiskTransaction(_)))
            .expect("transaction");
        assert!(tx < save, "{plan}");
        assert!(mem.metadata().expect("memory file").len() > 0);
        assert_eq!(state(&f).await, DomainState::Running);
        f.write_disk("vda", 0xa2).await;
        // A second save of another kind is not a background one.
        let mem2 = f.dir.path().join("p.mem");
        create(
            &f,
            &format!("<domainsnapshot><name>p</name><memory snapshot='external' file='{}'/></domainsnapshot>", mem2.display()),
            CreateFlags::empty(),
        )
        .await;
        f.api()
            .revert_to_snapshot(&f.name, "b", RevertFlags::empty(), false, None)
            .await
            .expect("revert");
        assert_eq!(state(&f).await, DomainState::Running);
        f.check_disk("vda", 0xa1).await;
        f.stop().await;
    });
}

#[test]
fn deleting_a_snapshot_with_two_children_streams_the_running_one_and_rebases_the_other() {
    if !backend_ready("delete_two_children") {
        return;
    }
    rt().block_on(async {
        let f = Fixture::new(1, false);
        f.qemu().start_domain(false).await.expect("start");
        f.write_disk("vda", 0xb1).await;
        let base = f.source("vda");
        create(
            &f,
            "<domainsnapshot><name>e1</name></domainsnapshot>",
            CreateFlags::DISK_ONLY,
        )
        .await;
        f.write_disk("vda", 0xb2).await;
        create(
            &f,
            "<domainsnapshot><name>e2</name></domainsnapshot>",
            CreateFlags::DISK_ONLY,
        )
        .await;
        // Back to e1: a second branch grows on the base image.
        f.api()
            .revert_to_snapshot(&f.name, "e1", RevertFlags::RUNNING, false, None)
            .await
            .expect("revert e1");
        f.write_disk("vda", 0xb3).await;
        let plan = f
            .api()
            .snapshot_delete(&f.name, "e1", ChildPolicy::Rebase, false, false, None)
            .await
            .expect("delete e1");
        assert!(
            plan.steps.iter().any(|s| matches!(
                s,
                Step::RebaseImages { children, by: snapshot_core::plan::Performer::Hypervisor, .. }
                    if children.len() == 2
            )),
            "{plan}"
        );
        assert!(!std::path::Path::new(&base).exists(), "{base} removed");
        assert_eq!(state(&f).await, DomainState::Running);
        f.check_disk("vda", 0xb3).await;
        // The other branch kept its data.
        f.api()
            .revert_to_snapshot(&f.name, "e2", RevertFlags::RUNNING, false, None)
            .await
            .expect("revert e2");
        f.check_disk("vda", 0xb2).await;
        f.stop().await;
    });
}
