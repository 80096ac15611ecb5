//! The volume snapshot API (`snapshot_core::volume::VolumeApi`) with the
//! real drivers of this build on real images: qcow2 internal snapshots and
//! external chains through `qemu-img`, full copies of raw files with
//! checksums, the refusals, and recovery after a crash in the middle of
//! create, revert and delete (a fault-injection wrapper around the real
//! driver panics right after the storage step, as a killed process would
//! stop there).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use snapshot_core::conformance::backends::{self, run};
use snapshot_core::driver::{
    Capabilities, CreatedSnapshot, DeleteContext, DriverError, Progress, RevertOutcome,
    SnapshotMode, SnapshotPlan, SnapshotRef, StorageSnapshot, Volume, VolumeDriver, VolumeState,
};
use snapshot_core::store::Layout;
use snapshot_core::volume::{CreateOptions, DeletePolicy, RevertOptions, VolumeApi, VolumeError};

fn tools_present() -> bool {
    backends::qemu_tools_present()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

struct Fixture {
    dir: tempfile::TempDir,
    api: VolumeApi,
}

fn real_drivers() -> Vec<Arc<dyn VolumeDriver>> {
    vec![
        Arc::new(driver_qemu::QemuDriver::new()),
        Arc::new(driver_file::FileDriver::new()),
    ]
}

impl Fixture {
    fn new() -> Self {
        Self::with(real_drivers())
    }

    fn with(drivers: Vec<Arc<dyn VolumeDriver>>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = VolumeApi::new(Layout::new(dir.path().join("state")), drivers);
        Self { dir, api }
    }

    fn qcow2(&self, name: &str) -> Volume {
        let path = self.dir.path().join(name);
        backends::qcow2_create(&path, 2 << 20, &[]);
        self.api.volume(&path, None).expect("volume")
    }

    fn raw(&self, name: &str) -> Volume {
        let path = self.dir.path().join(name);
        std::fs::write(&path, vec![0u8; 2 << 20]).expect("raw");
        self.api.volume(&path, None).expect("volume")
    }
}

/// Writes 64 KiB of `pattern` at `offset`, as a guest would.
fn write(volume: &Volume, offset: u64, pattern: u8) {
    backends::write(
        &volume.path,
        volume.format.as_str(),
        offset,
        65_536,
        pattern,
    );
}

fn content(volume: &Volume) -> Vec<u8> {
    backends::content(&volume.path, volume.format.as_str())
}

fn named(name: &str) -> CreateOptions {
    CreateOptions {
        name: Some(name.into()),
        ..CreateOptions::default()
    }
}

fn with_mode(name: &str, mode: SnapshotMode) -> CreateOptions {
    CreateOptions {
        mode: Some(mode),
        ..named(name)
    }
}

#[tokio::test]
async fn an_external_chain_keeps_the_volume_path_and_deletes_in_the_middle() {
    if !tools_present() {
        return;
    }
    let f = Fixture::new();
    let vol = f.qcow2("disk.qcow2");
    let mut seen = Vec::new();
    for (i, name) in (0u8..).zip(["e1", "e2", "e3"]) {
        write(&vol, u64::from(i) * 65_536, 0x40 + i);
        seen.push(content(&vol));
        let def = f
            .api
            .snapshot_create_xml(&vol, None, &with_mode(name, SnapshotMode::External), None)
            .await
            .expect("create");
        let file = PathBuf::from(def.target.source.path.expect("a file"));
        assert_eq!(file, f.dir.path().join(format!("disk.qcow2.{name}")));
        assert!(file.exists());
    }
    write(&vol, 5 * 65_536, 0x99);
    let now = content(&vol);
    assert_eq!(
        f.api.snapshot_list_names(&vol).expect("list"),
        ["e1", "e2", "e3"]
    );
    let xml = f.api.snapshot_get_xml_desc(&vol, "e3").expect("xml");
    assert!(xml.contains("<driver name='qemu'/>"), "{xml}");
    assert!(
        xml.contains("<parent>\n    <name>e2</name>\n  </parent>"),
        "{xml}"
    );
    // The default mode follows the volume's snapshots: external.
    f.api
        .snapshot_create_xml(&vol, None, &named("e4"), None)
        .await
        .expect("create e4");
    assert!(f.dir.path().join("disk.qcow2.e4").exists());
    // Mixing is refused and names both modes.
    let err = f
        .api
        .snapshot_create_xml(&vol, None, &with_mode("i", SnapshotMode::Internal), None)
        .await
        .expect_err("mixing");
    assert!(err.to_string().contains("external"), "{err}");
    f.api
        .snapshot_delete(&vol, "e2", DeletePolicy::Rebase, None)
        .await
        .expect("delete e2");
    assert!(!f.dir.path().join("disk.qcow2.e2").exists());
    assert!(content(&vol) == now, "deleting e2 changed the volume");
    assert_eq!(
        f.api
            .snapshot_lookup_by_name(&vol, "e3")
            .expect("e3")
            .parent
            .as_deref(),
        Some("e1")
    );
    for (name, expected) in [("e1", &seen[0]), ("e3", &seen[2])] {
        f.api
            .revert_to_snapshot(&vol, name, RevertOptions::default(), None)
            .await
            .expect("revert");
        assert!(content(&vol) == *expected, "revert to {name}");
        assert_eq!(
            f.api
                .snapshot_current(&vol)
                .expect("current")
                .name
                .as_deref(),
            Some(name)
        );
    }
    // The volume is still a qcow2 at its path, backed by e3's file.
    let backing = driver_qemu::qcow2::read_header(&vol.path)
        .expect("header")
        .backing_file
        .expect("backed");
    assert!(backing.ends_with("disk.qcow2.e3"), "{backing}");
}

#[tokio::test]
async fn internal_snapshots_are_the_qcow2_default_and_delete_with_children() {
    if !tools_present() {
        return;
    }
    let f = Fixture::new();
    let vol = f.qcow2("int.qcow2");
    write(&vol, 0, 1);
    let first = f
        .api
        .snapshot_create_xml(&vol, None, &CreateOptions::default(), None)
        .await
        .expect("create with a default name");
    let first = first.name.expect("named");
    assert!(
        first.parse::<i64>().is_ok(),
        "default name is the time: {first}"
    );
    let at_first = content(&vol);
    write(&vol, 0, 2);
    f.api
        .snapshot_create_xml(&vol, None, &named("b"), None)
        .await
        .expect("b");
    write(&vol, 0, 3);
    f.api
        .snapshot_create_xml(&vol, None, &named("c"), None)
        .await
        .expect("c");
    let err = f
        .api
        .snapshot_create_xml(&vol, None, &named("c"), None)
        .await
        .expect_err("taken");
    assert!(matches!(err, VolumeError::NameTaken { .. }), "{err}");
    let listed = run("qemu-img", &["snapshot", "-l", p(&vol.path)]);
    assert!(listed.contains(" b ") && listed.contains(" c "), "{listed}");
    // Revert to the first dropping what came after: b and c go, from the
    // image too.
    f.api
        .revert_to_snapshot(
            &vol,
            &first,
            RevertOptions {
                drop_newer: true,
                verify: false,
            },
            None,
        )
        .await
        .expect("revert");
    assert!(content(&vol) == at_first);
    assert_eq!(
        f.api.snapshot_list_names(&vol).expect("list"),
        std::slice::from_ref(&first)
    );
    let listed = run("qemu-img", &["snapshot", "-l", p(&vol.path)]);
    assert!(
        !listed.contains(" b ") && !listed.contains(" c "),
        "{listed}"
    );
    f.api
        .snapshot_delete(&vol, &first, DeletePolicy::Children, None)
        .await
        .expect("delete");
    assert_eq!(f.api.snapshot_num(&vol).expect("num"), 0);
    assert!(!f.api.has_current_snapshot(&vol).expect("has current"));
    assert_eq!(run("qemu-img", &["snapshot", "-l", p(&vol.path)]), "");
}

#[tokio::test]
async fn copies_of_a_raw_file_are_checksummed_and_verified() {
    if !tools_present() {
        return;
    }
    let f = Fixture::new();
    let vol = f.raw("disk.raw");
    write(&vol, 0, 7);
    let before = content(&vol);
    let def = f
        .api
        .snapshot_create_xml(
            &vol,
            None,
            &CreateOptions {
                checksum: true,
                ..named("copy1")
            },
            None,
        )
        .await
        .expect("copy");
    let sum = def.target.checksum.expect("checksum");
    assert_eq!(sum.algorithm, "sha256");
    write(&vol, 0, 8);
    let changed = content(&vol);
    let verify = RevertOptions {
        drop_newer: false,
        verify: true,
    };
    // Internal and external snapshots of a raw file are refused with the way out.
    let err = f
        .api
        .snapshot_create_xml(&vol, None, &with_mode("x", SnapshotMode::Internal), None)
        .await
        .expect_err("raw internal");
    assert!(err.to_string().contains("--mode copy"), "{err}");
    // Damage the copy: verification refuses and leaves the volume alone.
    let copy = PathBuf::from(def.target.source.path.expect("file"));
    let mut bytes = std::fs::read(&copy).expect("copy");
    bytes[10] ^= 0xff;
    std::fs::write(&copy, &bytes).expect("damage");
    let err = f
        .api
        .revert_to_snapshot(&vol, "copy1", verify, None)
        .await
        .expect_err("damaged");
    assert!(
        matches!(
            err,
            VolumeError::Driver(DriverError::ChecksumMismatch { .. })
        ),
        "{err}"
    );
    assert!(content(&vol) == changed);
    bytes[10] ^= 0xff;
    std::fs::write(&copy, &bytes).expect("repair");
    f.api
        .revert_to_snapshot(&vol, "copy1", verify, None)
        .await
        .expect("revert");
    assert!(content(&vol) == before);
    // A dry run changes nothing.
    let dry = f
        .api
        .snapshot_create_xml(
            &vol,
            None,
            &CreateOptions {
                dry_run: true,
                ..named("dry")
            },
            None,
        )
        .await
        .expect("dry run");
    assert_eq!(dry.parent.as_deref(), Some("copy1"));
    assert!(!f.dir.path().join("disk.raw.dry").exists());
    assert_eq!(f.api.snapshot_num(&vol).expect("num"), 1);
}

/// The real driver, panicking right after one operation's storage step.
struct CrashAfter {
    inner: Arc<dyn VolumeDriver>,
    operation: &'static str,
}

#[async_trait]
impl VolumeDriver for CrashAfter {
    fn kind(&self) -> &'static str {
        self.inner.kind()
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
        let out = self.inner.create(volume, plan, progress).await;
        assert!(self.operation != "create", "injected crash after create");
        out
    }

    async fn revert(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        verify: bool,
        progress: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError> {
        let out = self.inner.revert(volume, snapshot, verify, progress).await;
        assert!(self.operation != "revert", "injected crash after revert");
        out
    }

    async fn delete(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        context: &DeleteContext,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        let out = self.inner.delete(volume, snapshot, context, progress).await;
        assert!(self.operation != "delete", "injected crash after delete");
        out
    }

    async fn list(&self, volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
        self.inner.list(volume).await
    }

    async fn undo(&self, volume: &Volume, created: &CreatedSnapshot) -> Result<(), DriverError> {
        self.inner.undo(volume, created).await
    }
}

/// Runs `op` on an API whose qemu driver crashes after `operation`, and
/// checks it did crash.
async fn crash<F, Fut>(f: &Fixture, operation: &'static str, op: F)
where
    F: FnOnce(VolumeApi) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api = VolumeApi::new(
        Layout::new(f.dir.path().join("state")),
        vec![Arc::new(CrashAfter {
            inner: Arc::new(driver_qemu::QemuDriver::new()),
            operation,
        })],
    );
    let joined = tokio::spawn(op(api)).await;
    assert!(
        joined.is_err_and(|e| e.is_panic()),
        "the injected crash after {operation} did not happen"
    );
}

#[tokio::test]
async fn a_crash_in_the_middle_is_recovered_to_a_consistent_state() {
    if !tools_present() {
        return;
    }
    for mode in [SnapshotMode::Internal, SnapshotMode::External] {
        let f = Fixture::new();
        let vol = f.qcow2("crash.qcow2");
        write(&vol, 0, 1);
        f.api
            .snapshot_create_xml(&vol, None, &with_mode("a", mode), None)
            .await
            .expect("a");
        write(&vol, 0, 2);
        let before = content(&vol);

        // Create: the storage was made, the metadata not; recovery rolls back.
        let v = vol.clone();
        crash(&f, "create", |api| async move {
            let _ = api.snapshot_create_xml(&v, None, &named("b"), None).await;
        })
        .await;
        let err = f
            .api
            .snapshot_create_xml(&vol, None, &named("c"), None)
            .await
            .expect_err("an interrupted operation blocks the next");
        assert!(err.to_string().contains("recover"), "{mode}: {err}");
        f.api.recover(&vol).await.expect("recover create");
        assert_eq!(f.api.snapshot_list_names(&vol).expect("list"), ["a"]);
        assert!(
            content(&vol) == before,
            "{mode}: rollback changed the volume"
        );
        assert!(!f.dir.path().join("crash.qcow2.b").exists());
        let listed = run("qemu-img", &["snapshot", "-l", p(&vol.path)]);
        assert!(!listed.contains(" b "), "{mode}: {listed}");

        // Revert: the storage was reverted, current not set; recovery finishes.
        f.api
            .snapshot_create_xml(&vol, None, &named("b"), None)
            .await
            .expect("b");
        write(&vol, 0, 3);
        let v = vol.clone();
        crash(&f, "revert", |api| async move {
            let _ = api
                .revert_to_snapshot(&v, "a", RevertOptions::default(), None)
                .await;
        })
        .await;
        f.api.recover(&vol).await.expect("recover revert");
        assert_eq!(
            f.api
                .snapshot_current(&vol)
                .expect("current")
                .name
                .as_deref(),
            Some("a"),
            "{mode}"
        );

        // Delete: the storage went, the metadata not; recovery finishes.
        let at_a = content(&vol);
        let v = vol.clone();
        crash(&f, "delete", |api| async move {
            let _ = api
                .snapshot_delete(&v, "b", DeletePolicy::Rebase, None)
                .await;
        })
        .await;
        f.api.recover(&vol).await.expect("recover delete");
        assert_eq!(
            f.api.snapshot_list_names(&vol).expect("list"),
            ["a"],
            "{mode}"
        );
        assert!(
            content(&vol) == at_a,
            "{mode}: the delete changed the volume"
        );
        let err = f.api.recover(&vol).await.expect_err("nothing pending");
        assert!(
            err.to_string().contains("no interrupted operation"),
            "{err}"
        );
    }
}
