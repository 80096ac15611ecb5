//! Crashes between the storage step and the metadata step of an RBD
//! snapshot operation, and their recovery: a child process runs the
//! volume API with the rbd plugin wrapped so that it is SIGKILLed right
//! after the plugin's create (or delete) returned, before the metadata
//! is written, as a crash at that line would stop it. Then
//! `virtsnap vol-snapshot-recover` rolls the create back (the RBD
//! snapshot is removed) or finishes the delete (the metadata follows the
//! storage), and the image's content never changes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use snapshot_core::driver::{
    Capabilities, CreatedSnapshot, DeleteContext, DriverError, Progress, RevertOutcome,
    SnapshotPlan, SnapshotRef, StorageSnapshot, Volume, VolumeDriver, VolumeState,
};
use snapshot_core::store::Layout;
use snapshot_core::volume::{CreateOptions, DeletePolicy, VolumeApi};
use support::sha256;

const MIB: u64 = 1 << 20;
const CHILD: &str = "crash_child";

/// The rbd plugin, killing this process right after `create` or
/// `delete` returned (`kill_after`).
struct KillAfter {
    inner: plugin_abi::host::PluginDriver,
    kill_after: String,
}

/// SIGKILL to this process: no unwinding, no destructors, no flushing.
fn kill_self() -> ! {
    let _ = Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    std::thread::sleep(std::time::Duration::from_secs(60));
    std::process::abort()
}

#[async_trait]
impl VolumeDriver for KillAfter {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn handles(&self, volume: &Volume) -> bool {
        self.inner.handles(volume)
    }
    async fn capabilities(
        &self,
        volume: &Volume,
        state: VolumeState,
    ) -> Result<Capabilities, DriverError> {
        self.inner.capabilities(volume, state).await
    }
    async fn create(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
        progress: Option<&Progress>,
    ) -> Result<CreatedSnapshot, DriverError> {
        let created = self.inner.create(volume, plan, progress).await;
        if self.kill_after == "create" && created.is_ok() {
            kill_self();
        }
        created
    }
    async fn revert(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        verify: bool,
        progress: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError> {
        self.inner.revert(volume, snapshot, verify, progress).await
    }
    async fn delete(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        context: &DeleteContext,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        let deleted = self.inner.delete(volume, snapshot, context, progress).await;
        if self.kill_after == "delete" && deleted.is_ok() {
            kill_self();
        }
        deleted
    }
    async fn list(&self, volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
        self.inner.list(volume).await
    }
    async fn undo(&self, volume: &Volume, created: &CreatedSnapshot) -> Result<(), DriverError> {
        self.inner.undo(volume, created).await
    }
}

/// The child: runs one operation on `RBD_CRASH_VOLUME` with the state
/// directory `RBD_CRASH_STATE`, to be killed in it.
#[tokio::test]
#[ignore = "run by the crash tests in a process of its own"]
async fn crash_child() {
    let volume = std::env::var("RBD_CRASH_VOLUME").expect("RBD_CRASH_VOLUME");
    let state = std::env::var("RBD_CRASH_STATE").expect("RBD_CRASH_STATE");
    let op = std::env::var("RBD_CRASH_OP").expect("RBD_CRASH_OP");
    let driver = KillAfter {
        inner: support::plugin(),
        kill_after: op.clone(),
    };
    let api = VolumeApi::new(Layout::new(PathBuf::from(state)), vec![Arc::new(driver)]);
    let volume = api.volume(Path::new(&volume), None).expect("volume");
    match op.as_str() {
        "create" => {
            let options = CreateOptions {
                name: Some("s1".into()),
                ..CreateOptions::default()
            };
            api.snapshot_create_xml(&volume, None, &options, None)
                .await
                .expect("create");
        }
        "delete" => {
            api.snapshot_delete(&volume, "s1", DeletePolicy::Rebase, None)
                .await
                .expect("delete");
        }
        other => panic!("unknown operation {other}"),
    }
    panic!("the {op} returned: the child was not killed");
}

/// Runs the child for `op` and checks SIGKILL ended it.
fn run_killed_child(volume: &str, state: &Path, op: &str) {
    use std::os::unix::process::ExitStatusExt as _;
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            CHILD,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RBD_CRASH_VOLUME", volume)
        .env("RBD_CRASH_STATE", state)
        .env("RBD_CRASH_OP", op)
        .output()
        .expect("the child runs");
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the {op} child was not killed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_create_killed_before_its_metadata_is_rolled_back_by_recovery() {
    let Some(ns) = support::namespace("crash-create") else {
        return;
    };
    ns.create_image("disk", 4 * MIB).expect("image");
    let vol = ns.volume_name("disk");
    let image = support::open(&vol, None);
    image.write(0, &vec![0x42; 1 << 20]).expect("write");
    drop(image);
    let before = sha256(&vol, None);
    let cli = support::Cli::new(support::plugin_dir());

    run_killed_child(&vol, cli.state(), "create");
    let snaps = ns
        .rbd(["snap", "ls", &ns.image_spec("disk")])
        .expect("snap ls");
    assert!(
        snaps.contains("s1"),
        "the storage step ran before the kill: {snaps}"
    );
    // The interrupted create blocks other changes until recovered.
    let out = cli.refused(&["vol-snapshot-create", &vol, "--name", "s2"]);
    assert!(out.contains("recover"), "{out}");

    let out = cli.ok(&["vol-snapshot-recover", &vol]);
    assert!(out.contains("rolled back") || out.contains("roll"), "{out}");
    let snaps = ns
        .rbd(["snap", "ls", &ns.image_spec("disk")])
        .expect("snap ls");
    assert!(
        !snaps.contains("s1"),
        "the recovery left the RBD snapshot: {snaps}"
    );
    assert_eq!(cli.ok(&["vol-snapshot-list", &vol, "--name"]).trim(), "");
    assert_eq!(sha256(&vol, None), before, "the image's content changed");
    // And the volume works again.
    cli.ok(&["vol-snapshot-create", &vol, "--name", "s1"]);
    assert_eq!(sha256(&vol, Some("s1")), before);
}

#[test]
fn a_delete_killed_before_its_metadata_is_finished_by_recovery() {
    let Some(ns) = support::namespace("crash-delete") else {
        return;
    };
    ns.create_image("disk", 4 * MIB).expect("image");
    let vol = ns.volume_name("disk");
    let cli = support::Cli::new(support::plugin_dir());
    cli.ok(&["vol-snapshot-create", &vol, "--name", "s1"]);
    let image = support::open(&vol, None);
    image.write(0, &vec![0x43; 1 << 20]).expect("write");
    drop(image);
    let before = sha256(&vol, None);

    run_killed_child(&vol, cli.state(), "delete");
    let snaps = ns
        .rbd(["snap", "ls", &ns.image_spec("disk")])
        .expect("snap ls");
    assert!(
        !snaps.contains("s1"),
        "the storage step ran before the kill: {snaps}"
    );

    cli.ok(&["vol-snapshot-recover", &vol]);
    assert_eq!(
        cli.ok(&["vol-snapshot-list", &vol, "--name"]).trim(),
        "",
        "the metadata still names the deleted snapshot"
    );
    assert_eq!(sha256(&vol, None), before, "the image's content changed");
    cli.ok(&["vol-snapshot-create", &vol, "--name", "s1"]);
}
