//! virtsnap itself killed (SIGKILL) at every step of a live full-system
//! external snapshot, with QEMU running on: the next change to the
//! domain's snapshots (here `open_for_write`, which every change does
//! first) either rolls the snapshot back — guest running, disks on their
//! old images, no overlay, no memory file, no metadata — or, once the
//! metadata is written, keeps it whole.

mod live_support;

use std::os::unix::process::ExitStatusExt as _;

use live_support::{Fixture, backend_ready};
use snapshot_core::exec::StepEvent;
use snapshot_core::plan::{CreateFlags, DomainState};
use snapshot_core::store::Layout;

const STATE: &str = "VIRTSNAP_CRASH_STATE";
const STEP: &str = "VIRTSNAP_CRASH_STEP";
const EVENT: &str = "VIRTSNAP_CRASH_EVENT";

fn request(dir: &std::path::Path) -> String {
    format!(
        "<domainsnapshot><name>k</name><memory snapshot='external' file='{}'/>\
         <disks><disk name='vda' snapshot='external'/><disk name='vdb' snapshot='external'/></disks>\
         </domainsnapshot>",
        dir.join("k.mem").display()
    )
}

/// The child: takes the snapshot and kills itself at the given step.
#[test]
#[ignore = "run by killed_at_every_step_of_a_live_snapshot"]
fn child_takes_a_live_snapshot_and_dies() {
    let state = std::path::PathBuf::from(std::env::var(STATE).expect("state"));
    let step: usize = std::env::var(STEP).expect("step").parse().expect("number");
    let event = if std::env::var(EVENT).as_deref() == Ok("done") {
        StepEvent::Done
    } else {
        StepEvent::Begin
    };
    let layout = Layout::new(&state);
    let api = snapshot_core::domain_api::DomainApi::new(
        layout.clone(),
        vec![std::sync::Arc::new(driver_qemu::QemuDriver::new())],
    )
    .with_hypervisors(std::sync::Arc::new(
        driver_qemu::domain::QemuHypervisors::new(&layout),
    ));
    let observer = move |i: usize, _: &snapshot_core::plan::Step, e: StepEvent| {
        if i == step && e == event {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        }
    };
    let dir = state.parent().expect("fixture dir").to_path_buf();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let _ = api
                .snapshot_create_xml(
                    "g",
                    Some(&request(&dir)),
                    CreateFlags::LIVE,
                    false,
                    Some(&observer),
                )
                .await;
        });
    // Past the last step: the parent sees no SIGKILL and stops.
}

#[test]
fn killed_at_every_step_of_a_live_snapshot() {
    if !backend_ready("live_crash") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut outcomes = Vec::new();
    'steps: for step in 0..16 {
        for event in ["begin", "done"] {
            let f = Fixture::new(2, false);
            rt.block_on(async {
                f.qemu().start_domain(false).await.expect("start");
                f.write_disk("vda", 0x91).await;
            });
            let before = f.files();
            let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "child_takes_a_live_snapshot_and_dies",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env(STATE, f.layout.root())
                .env(STEP, step.to_string())
                .env(EVENT, event)
                .output()
                .expect("child runs")
                .status;
            if status.signal() != Some(9) {
                // The plan has fewer steps: every point was covered.
                assert!(status.success(), "child failed: {status:?}");
                assert!(step >= 4, "too few steps were killed: {step}");
                break 'steps;
            }
            rt.block_on(async {
                let api = f.api();
                let (store, note) = api.open_for_write("g").await.expect("recovered");
                drop(store);
                let names = f.snapshot_names();
                let what = format!("killed at step {step} ({event}): {note:?}");
                assert_eq!(
                    f.qemu().domain_state().await.expect("state"),
                    DomainState::Running,
                    "{what}"
                );
                if names.is_empty() {
                    assert_eq!(f.files(), before, "{what}: nothing left behind");
                    assert!(f.source("vda").ends_with("vda.qcow2"), "{what}");
                    let live = f.qemu().live_disks().await.expect("disks");
                    assert!(
                        live["vda"].file.ends_with("vda.qcow2"),
                        "{what}: QEMU writes the base"
                    );
                    outcomes.push("rolled back");
                } else {
                    assert_eq!(names, ["k"], "{what}");
                    assert!(f.dir.path().join("k.mem").exists(), "{what}");
                    assert!(f.source("vda").ends_with("vda.k"), "{what}");
                    outcomes.push("kept");
                }
                f.check_disk("vda", 0x91).await;
                f.stop().await;
            });
        }
    }
    assert!(
        outcomes.contains(&"rolled back") && outcomes.contains(&"kept"),
        "{outcomes:?}"
    );
}
