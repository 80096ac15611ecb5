//! QUIESCE against a real qemu-guest-agent: the Linux test guest (built
//! by `cargo xtask testvm build`) runs under a QEMU started by the test
//! helper, which virtsnap adopts with `attach`; a quiesced snapshot
//! freezes the guest's filesystems for the disk transaction and thaws
//! them after, and thaws them too when the transaction fails.

use std::sync::{Arc, Mutex};

use driver_qemu::QemuDriver;
use driver_qemu::domain::{QemuDomain, QemuHypervisors};
use serde_json::json;
use snapshot_core::domain_api::DomainApi;
use snapshot_core::exec::StepEvent;
use snapshot_core::plan::{CreateFlags, DomainState, Step};
use snapshot_core::store::Layout;
use testvm::{Options, TestVm};

fn freeze_status(vm: &TestVm) -> String {
    vm.qga(&json!({"execute": "guest-fsfreeze-status"}))
        .expect("guest-fsfreeze-status")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn quiesced_snapshots_freeze_the_guest_for_the_transaction_and_always_thaw() {
    let Some(vm) = testvm::boot_or_skip(&Options::new().disk(64 << 20)) else {
        return;
    };
    let vm = Arc::new(vm);
    let disk = TestVm::scratch_device(0);
    vm.run_ok(&format!(
        "set -e; mkfs.ext4 -q {disk}; mkdir -p /mnt/q; mount {disk} /mnt/q; echo before > /mnt/q/f"
    ))
    .expect("filesystem in the guest");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::Builder::new()
        .prefix("vq")
        .tempdir_in("/tmp")
        .expect("dir");
    let layout = Layout::new(dir.path().join("s"));
    rt.block_on(async {
        let domain = QemuDomain::new(&layout, "tvm")
            .attach(vm.qmp_socket(), Some(vm.qga_socket()))
            .await
            .expect("attach");
        assert!(domain.def.disk_by_target("scratch0").is_some(), "{domain:?}");
        let api = DomainApi::new(layout.clone(), vec![Arc::new(QemuDriver::new())])
            .with_hypervisors(Arc::new(QemuHypervisors::new(&layout)));
        let facts = api.facts(&domain).await.expect("facts");
        assert_eq!(facts.state, DomainState::Running);
        assert_eq!(facts.agent, snapshot_core::plan::AgentState::Connected);

        // The guest is frozen while the disks are taken.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let observer = {
            let (seen, vm) = (seen.clone(), vm.clone());
            move |_: usize, step: &Step, event: StepEvent| {
                if event == StepEvent::Begin && matches!(step, Step::DiskTransaction(_)) {
                    seen.lock().expect("lock").push(freeze_status(&vm));
                }
            }
        };
        let overlay = dir.path().join("scratch0.q1");
        let xml = format!(
            "<domainsnapshot><name>q1</name><disks><disk name='scratch0' snapshot='external'>\
             <source file='{}'/></disk></disks></domainsnapshot>",
            overlay.display()
        );
        api.snapshot_create_xml(
            "tvm",
            Some(&xml),
            CreateFlags::DISK_ONLY | CreateFlags::QUIESCE,
            false,
            Some(&observer),
        )
        .await
        .expect("quiesced snapshot");
        assert_eq!(*seen.lock().expect("lock"), ["frozen"]);
        assert_eq!(freeze_status(&vm), "thawed");
        assert!(overlay.exists());
        // The guest writes again, into the overlay.
        vm.run_ok("echo after >> /mnt/q/f; sync").expect("write after thaw");

        // A transaction QEMU refuses (the name is taken inside the image
        // the guest now writes): thawed all the same, nothing left.
        vm.qmp(&json!({"execute": "blockdev-snapshot-internal-sync",
            "arguments": {"device": "scratch0", "name": "q2"}}))
            .expect("internal snapshot");
        let err = api
            .snapshot_create_xml(
                "tvm",
                Some("<domainsnapshot><name>q2</name><disks><disk name='scratch0' snapshot='internal'/></disks></domainsnapshot>"),
                CreateFlags::DISK_ONLY | CreateFlags::QUIESCE,
                false,
                None,
            )
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("nothing was left changed"), "{err}");
        assert_eq!(freeze_status(&vm), "thawed");
        let out = vm.run_ok("cat /mnt/q/f").expect("read");
        assert_eq!(out.trim(), "before\nafter");
    });
}
