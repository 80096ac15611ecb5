//! Plugins that break the ABI, each in one way (the C files in
//! `tests/c/`, compiled here with the system's compiler, and the Rust
//! `rust-faults` plugin that panics on request): each is refused at load
//! with a message naming the problem, or degraded, or its call fails with
//! a clear error. The test process survives every one, and what virtsnap
//! manages (the volume, the snapshot metadata) is unchanged. Also the
//! ABI 1.1 additions seen from the host: a plugin built against the 1.0
//! table, network volumes, and `export_diff`/`import_diff` through the
//! ABI (with `rust-faults`, which echoes what it receives).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use plugin_abi::host::{self, LoadError, PluginDriver};
use snapshot_core::conformance::backends::RawHarness;
use snapshot_core::conformance::{CHUNK, Harness};
use snapshot_core::driver::{
    CreatedSnapshot, DeleteContext, DriverError, SnapshotMode, SnapshotPlan, SnapshotRef, Volume,
    VolumeDriver, VolumeState,
};

/// The load error of the fault plugin `file`, or `None` when skipped.
fn load_error(file: &str) -> Option<LoadError> {
    let path = support::c_test_plugin(file)?;
    match host::load(&path) {
        Ok(p) => panic!("{file}: loaded as '{}', expected a refusal", p.name),
        Err(e) => Some(e),
    }
}

fn driver(file: &str) -> Option<PluginDriver> {
    support::c_test_plugin(file).map(|p| support::driver(&p))
}

/// A raw volume with some content, and its bytes.
fn volume(dir: &Path) -> (Volume, Vec<u8>) {
    let h = RawHarness {
        driver: driver_file::FileDriver::new(),
        mode: SnapshotMode::Copy,
    };
    let v = h.new_volume(dir, "disk");
    h.write(&v, 0, CHUNK, 0x5a);
    let bytes = std::fs::read(&v.path).expect("reading the volume");
    (v, bytes)
}

fn plan(volume: &Volume, name: &str) -> SnapshotPlan {
    SnapshotPlan {
        name: name.to_string(),
        mode: SnapshotMode::Copy,
        file: Some(volume.path.with_extension(name)),
        checksum: false,
        writable: false,
    }
}

fn snapshot_ref(volume: &Volume, name: &str) -> SnapshotRef {
    SnapshotRef {
        name: name.to_string(),
        mode: SnapshotMode::Copy,
        file: Some(volume.path.with_extension(name)),
        checksum: None,
    }
}

fn fault_text(e: &DriverError) -> &str {
    match e {
        DriverError::PluginFault { problem, .. } => problem,
        other => panic!("expected a plugin fault, got {other:?}: {other}"),
    }
}

#[test]
fn entry_returning_null_is_refused_with_what_it_logged() {
    let Some(e) = load_error("entry_null") else {
        return;
    };
    assert!(matches!(e, LoadError::Refused { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("refused to load") && text.contains("refusing: test"),
        "{text}"
    );
}

#[test]
fn a_plugin_for_another_major_names_both_versions() {
    let Some(e) = load_error("abi_v2_only") else {
        return;
    };
    let text = e.to_string();
    assert!(matches!(e, LoadError::NoEntry { .. }), "{e:?}");
    assert!(
        text.contains("plugin ABI 2")
            && text.contains("virtsnap_plugin_entry_v2")
            && text.contains("ABI 1.1"),
        "{text}"
    );

    let Some(e) = load_error("abi_major_mismatch") else {
        return;
    };
    let text = e.to_string();
    assert!(
        matches!(
            e,
            LoadError::Incompatible {
                plugin_major: 2,
                host_major: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        text.contains("ABI 2.") && text.contains("ABI 1.1"),
        "{text}"
    );
    assert!(text.contains("upgrade virtsnap"), "{text}");

    let Some(e) = load_error("abi_major_old") else {
        return;
    };
    let text = e.to_string();
    assert!(
        matches!(
            e,
            LoadError::Incompatible {
                plugin_major: 0,
                plugin_minor: 9,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        text.contains("ABI 0.9") && text.contains("ABI 1.1"),
        "{text}"
    );
    assert!(text.contains("rebuild the plugin"), "{text}");
}

#[tokio::test]
async fn a_newer_minor_loads_and_its_extra_slots_are_ignored() {
    let Some(d) = driver("newer_minor") else {
        return;
    };
    assert_eq!(d.plugin().abi, (1, 7));
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = volume(dir.path());
    let caps = d
        .capabilities(&v, VolumeState::Offline)
        .await
        .expect("capabilities");
    assert!(caps.copy, "{caps:?}");
    // Its 1.1 slots are NULL; the slots after them are never called (they
    // abort).
    assert!(d.plugin().optional_ops().is_empty());
    let e = d
        .export_diff(
            &v,
            &snapshot_ref(&v, "a"),
            None,
            &dir.path().join("d"),
            None,
        )
        .await
        .expect_err("export_diff");
    assert!(matches!(e, DriverError::Unsupported { .. }), "{e:?}");
}

/// A plugin built against the 1.0 header (its table ends after `undo`,
/// followed in memory by slots that abort) loads in this 1.1 host; its
/// `export_diff` and `import_diff` are unsupported, naming the plugin, and
/// nothing changes.
#[tokio::test]
async fn an_abi_1_0_table_loads_without_export_and_import() {
    let Some(d) = driver("abi_1_0") else { return };
    let p = d.plugin();
    assert_eq!(p.name, "abi-one-oh");
    assert_eq!(p.abi, (1, 0));
    assert!(p.optional_ops().is_empty(), "{:?}", p.optional_ops());
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, before) = volume(dir.path());
    let caps = d
        .capabilities(&v, VolumeState::Offline)
        .await
        .expect("capabilities");
    assert!(caps.copy, "{caps:?}");

    let file = dir.path().join("disk.diff");
    let e = d
        .export_diff(
            &v,
            &snapshot_ref(&v, "b"),
            Some(&snapshot_ref(&v, "a")),
            &file,
            None,
        )
        .await
        .expect_err("export_diff");
    match &e {
        DriverError::Unsupported {
            driver,
            operation,
            reason,
            ..
        } => {
            assert_eq!(*driver, "abi-one-oh");
            assert!(operation.contains("export"), "{e}");
            assert!(
                reason.contains("plugin 'abi-one-oh'") && reason.contains("has no export_diff"),
                "{e}"
            );
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let e = d
        .import_diff(&v, &file, None)
        .await
        .expect_err("import_diff");
    match &e {
        DriverError::Unsupported { driver, reason, .. } => {
            assert_eq!(*driver, "abi-one-oh");
            assert!(reason.contains("has no import_diff"), "{e}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(!file.exists(), "no export file");
    assert_eq!(std::fs::read(&v.path).expect("volume"), before);
}

/// A network volume (`rbd:pool/image`) as a 1.0 plugin sees it: the
/// request requires `network-volume`, which it does not know, so it
/// refuses; the host takes that as declining the volume (all false), and
/// the plugin never mistakes the name for a path.
#[tokio::test]
async fn a_1_0_plugin_declines_network_volumes() {
    let Some(d) = driver("abi_1_0") else { return };
    let rbd = Volume::new("rbd:pool/image", snapshot_core::driver::VolumeFormat::Raw);
    assert!(d.handles(&rbd), "a plugin is asked about every volume");
    for state in [VolumeState::Offline, VolumeState::InUse] {
        let caps = d.capabilities(&rbd, state).await.expect("declined");
        assert_eq!(caps, Default::default(), "{state:?}");
    }
    // Asked anyway, it refuses with its reason (not a fault).
    let e = d
        .create(&rbd, &plan(&rbd, "a"), None)
        .await
        .expect_err("create on a network volume");
    assert!(matches!(e, DriverError::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("does not know"), "{e}");
    assert!(!Path::new("rbd:pool").exists(), "nothing made in the cwd");
    assert!(!Path::new("rbd:pool.a").exists(), "nothing made in the cwd");
}

fn rust_faults() -> PluginDriver {
    let path = support::cargo_plugin("virtsnap-plugin-test-faults", "virtsnap_plugin_test_faults");
    PluginDriver::open(support::load(&path)).expect("open")
}

/// What `rust-faults` wrote: the export request it received.
fn exported_request(file: &Path) -> plugin_abi::payload::ExportDiffRequest {
    serde_json::from_slice(&std::fs::read(file).expect("the export file"))
        .expect("rust-faults writes the request it received")
}

/// `export_diff` and `import_diff` through the ABI with a Rust plugin: the
/// request's fields arrive (the snapshot, `from`, the file), the result's
/// come back, progress reaches the caller, an existing file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_cross_the_abi() {
    let d = rust_faults();
    assert_eq!(d.plugin().abi, (1, 1));
    assert_eq!(d.plugin().optional_ops(), ["export-diff", "import-diff"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, before) = volume(dir.path());
    let mut b = snapshot_ref(&v, "b");
    b.checksum = Some(snapshot_core::driver::Checksum {
        algorithm: "sha256".into(),
        value: "ab".repeat(32),
    });
    let a = snapshot_ref(&v, "a");
    let file = dir.path().join("a-b.diff");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let progress = move |done: u64, total: u64| sink.lock().unwrap().push((done, total));

    let exported = d
        .export_diff(&v, &b, Some(&a), &file, Some(&progress))
        .await
        .expect("export_diff");
    let got = exported_request(&file);
    assert!(got.requires.is_empty(), "{:?}", got.requires);
    assert_eq!(got.volume.path, v.path.to_str().unwrap());
    assert_eq!(got.volume.format, "raw");
    assert_eq!(got.snapshot.name, "b");
    assert_eq!(got.snapshot.mode, plugin_abi::payload::Mode::Copy);
    assert_eq!(
        got.snapshot.file.as_deref(),
        b.file.as_deref().and_then(Path::to_str)
    );
    assert_eq!(
        got.snapshot.checksum.expect("checksum").value,
        "ab".repeat(32)
    );
    assert_eq!(got.from.expect("from").name, "a");
    assert_eq!(got.file, file.to_str().unwrap());
    let len = std::fs::metadata(&file).expect("file").len();
    assert_eq!(exported.file_bytes, len);
    assert_eq!(exported.changed_bytes, (3 << 20) + 1);
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&(len, len)),
        "progress forwarded"
    );

    // From the beginning: no `from` in the request.
    let full = dir.path().join("b.diff");
    let exported = d
        .export_diff(&v, &b, None, &full, None)
        .await
        .expect("export_diff without from");
    assert!(exported_request(&full).from.is_none());
    assert_eq!(exported.changed_bytes, 3 << 20);

    // An existing file is refused, and kept as it was.
    std::fs::write(&full, b"mine").expect("write");
    let e = d
        .export_diff(&v, &b, None, &full, None)
        .await
        .expect_err("existing file");
    assert!(matches!(e, DriverError::Exists { .. }), "{e:?}");
    assert!(e.to_string().contains(full.to_str().unwrap()), "{e}");
    assert_eq!(std::fs::read(&full).expect("kept"), b"mine");

    let imported = d.import_diff(&v, &file, None).await.expect("import_diff");
    assert_eq!(imported.snapshot, "b");
    assert_eq!(imported.from.as_deref(), Some("a"));
    assert_eq!(imported.size, len);

    let e = d
        .import_diff(&v, &dir.path().join("missing.diff"), None)
        .await
        .expect_err("missing file");
    assert!(matches!(e, DriverError::NotFound { .. }), "{e:?}");
    assert_eq!(std::fs::read(&v.path).expect("volume"), before);
}

/// Results the host cannot trust are plugin faults: an import that names
/// no snapshot, an export whose size is not the file's.
#[tokio::test]
async fn malformed_export_and_import_results_are_faults() {
    let d = rust_faults();
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = volume(dir.path());
    let file = dir.path().join("lie.diff");
    let e = d
        .export_diff(&v, &snapshot_ref(&v, "lie"), None, &file, None)
        .await
        .expect_err("a wrong size");
    let text = fault_text(&e);
    assert!(
        text.contains("bytes written to") && text.contains("which holds"),
        "{e}"
    );

    let good = dir.path().join("good.diff");
    d.export_diff(&v, &snapshot_ref(&v, "b"), None, &good, None)
        .await
        .expect("export");
    let nameless = Volume::new(dir.path().join("disk.nameless"), v.format.clone());
    let e = d
        .import_diff(&nameless, &good, None)
        .await
        .expect_err("no snapshot name");
    assert!(fault_text(&e).contains("names no snapshot"), "{e}");
    assert!(e.to_string().contains("plugin 'rust-faults'"), "{e}");
}

/// A Rust plugin gets network volumes (the SDK knows `network-volume`):
/// the request carries the feature and the name as it is, and the plugin
/// decides which it takes.
#[tokio::test]
async fn a_rust_plugin_receives_network_volumes() {
    let d = rust_faults();
    let raw = snapshot_core::driver::VolumeFormat::Raw;
    let ours = Volume::new("faults:pool/image", raw.clone());
    let caps = d
        .capabilities(&ours, VolumeState::Offline)
        .await
        .expect("capabilities");
    assert!(caps.internal && !caps.copy, "{caps:?}");
    let rbd = Volume::new("rbd:pool/image", raw);
    let caps = d
        .capabilities(&rbd, VolumeState::Offline)
        .await
        .expect("capabilities");
    assert_eq!(caps, Default::default());

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("net.diff");
    let snap = SnapshotRef {
        name: "b".into(),
        mode: SnapshotMode::Internal,
        file: None,
        checksum: None,
    };
    d.export_diff(&ours, &snap, None, &file, None)
        .await
        .expect("export_diff");
    let got = exported_request(&file);
    assert_eq!(got.requires, ["network-volume"]);
    assert_eq!(got.volume.path, "faults:pool/image");
    assert!(got.snapshot.file.is_none());
}

#[test]
fn broken_tables_are_refused_with_the_reason() {
    for (file, needle) in [
        ("too_small", "less than the"),
        ("missing_required", "lacks the required operation(s) create"),
        (
            "bad_name",
            "\"Bad Name!\" must start with a lowercase letter",
        ),
        ("flags_set", "flags are 0x1"),
    ] {
        let Some(e) = load_error(file) else { return };
        assert!(matches!(e, LoadError::Invalid { .. }), "{file}: {e:?}");
        let text = e.to_string();
        assert!(text.contains(needle), "{file}: {text}");
        assert!(text.contains("rebuild it against"), "{file}: {text}");
    }
}

#[tokio::test]
async fn garbage_results_are_faults_and_change_nothing() {
    let Some(d) = driver("garbage") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, before) = volume(dir.path());

    let e = d
        .create(&v, &plan(&v, "a"), None)
        .await
        .expect_err("create");
    assert!(fault_text(&e).contains("not the documented JSON"), "{e}");
    assert!(e.to_string().contains("virtsnap recorded nothing"), "{e}");

    let e = d.list(&v).await.expect_err("list");
    assert!(fault_text(&e).contains("not UTF-8"), "{e}");

    let e = d
        .revert(&v, &snapshot_ref(&v, "a"), false, None)
        .await
        .expect_err("revert");
    assert!(
        fault_text(&e).contains("success after reporting an error"),
        "{e}"
    );

    let e = d
        .delete(&v, &snapshot_ref(&v, "a"), &DeleteContext::default(), None)
        .await
        .expect_err("delete");
    assert!(fault_text(&e).contains("returned 5"), "{e}");

    assert_eq!(std::fs::read(&v.path).expect("volume"), before);
}

#[tokio::test]
async fn missing_results_are_faults() {
    let Some(d) = driver("null_result") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = volume(dir.path());
    let e = d
        .capabilities(&v, VolumeState::Offline)
        .await
        .expect_err("capabilities");
    assert!(fault_text(&e).contains("without a result"), "{e}");
    let e = d
        .create(&v, &plan(&v, "a"), None)
        .await
        .expect_err("create");
    assert!(fault_text(&e).contains("without a result"), "{e}");
}

#[tokio::test]
async fn a_result_for_another_snapshot_is_a_fault() {
    let Some(d) = driver("wrong_result") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = volume(dir.path());
    let e = d
        .create(&v, &plan(&v, "a"), None)
        .await
        .expect_err("create");
    let text = fault_text(&e);
    assert!(
        text.contains("reports snapshot 'other'") && text.contains("asked for 'a'"),
        "{e}"
    );
}

#[tokio::test]
async fn an_error_without_a_message_says_so() {
    let Some(d) = driver("no_message") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = volume(dir.path());
    let e = d
        .create(&v, &plan(&v, "a"), None)
        .await
        .expect_err("create");
    match &e {
        DriverError::Plugin { code, message, .. } => {
            assert_eq!(code, "io");
            assert!(message.contains("without a message"), "{e}");
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_optional_operations_are_unsupported_never_success() {
    let Some(d) = driver("no_optional") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = volume(dir.path());
    let caps = d
        .capabilities(&v, VolumeState::Offline)
        .await
        .expect("capabilities");
    assert!(caps.copy, "{caps:?}");
    assert!(
        !caps.revert && !caps.list,
        "claimed without slots: {caps:?}"
    );
    for e in [
        d.revert(&v, &snapshot_ref(&v, "a"), false, None)
            .await
            .expect_err("revert"),
        d.list(&v).await.expect_err("list"),
    ] {
        assert!(matches!(e, DriverError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("has no"), "{e}");
    }
    // Without an undo slot, undo is the documented delete.
    let created = CreatedSnapshot {
        name: "a".into(),
        mode: SnapshotMode::Copy,
        file: Some(v.path.with_extension("a")),
        format: None,
        checksum: None,
        size: None,
    };
    d.undo(&v, &created)
        .await
        .expect("undo falls back to delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serialize_all_plugin_never_sees_two_calls_at_once() {
    // The plugin aborts the process if two calls overlap.
    let Some(d) = driver("slow_serial") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = volume(dir.path());
    let d = Arc::new(d);
    let second = Arc::new(PluginDriver::open(Arc::clone(d.plugin())).expect("a second instance"));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let driver = if i % 2 == 0 {
            Arc::clone(&d)
        } else {
            Arc::clone(&second)
        };
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            driver.capabilities(&v, VolumeState::Offline).await
        }));
    }
    for t in tasks {
        let caps = t.await.expect("task").expect("capabilities");
        assert!(caps.copy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_an_error_and_poisons_the_instance() {
    let path = support::cargo_plugin("virtsnap-plugin-test-faults", "virtsnap_plugin_test_faults");
    let plugin = support::load(&path);
    let d = PluginDriver::open(Arc::clone(&plugin)).expect("open");
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, before) = volume(dir.path());

    let e = d
        .create(&v, &plan(&v, "panic"), None)
        .await
        .expect_err("create");
    let text = fault_text(&e);
    assert!(
        text.contains("panicked") && text.contains("asked to panic in create"),
        "{e}"
    );
    // Poisoned: the next call fails without entering the plugin.
    let e = d
        .capabilities(&v, VolumeState::Offline)
        .await
        .expect_err("poisoned");
    assert!(fault_text(&e).contains("panicked earlier"), "{e}");
    // Another instance is fine.
    let fresh = PluginDriver::open(Arc::clone(&plugin)).expect("a fresh instance");
    assert!(
        fresh
            .capabilities(&v, VolumeState::Offline)
            .await
            .expect("caps")
            .copy
    );
    let panicky = Volume::new(dir.path().join("x.panic"), v.format.clone());
    let e = fresh
        .capabilities(&panicky, VolumeState::Offline)
        .await
        .expect_err("panic");
    assert!(
        fault_text(&e).contains("asked to panic in capabilities"),
        "{e}"
    );

    let mut options = serde_json::Map::new();
    options.insert("panic-on-open".into(), true.into());
    let e = PluginDriver::open_with(plugin, options).expect_err("open panics");
    assert!(e.message.contains("asked to panic in open"), "{e}");

    assert_eq!(std::fs::read(&v.path).expect("volume"), before);
    assert!(!v.path.with_extension("panic").exists());
}

#[test]
fn untrusted_files_are_not_loaded() {
    let Some(good) = support::c_test_plugin("minimal") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = |name: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::copy(&good, &p).expect("copy");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    };
    let writable = copy("libw.so", 0o666);
    let e = host::load(&writable).expect_err("world-writable");
    assert!(e.to_string().contains("writable by group or others"), "{e}");

    let foreign = copy("libf.so", 0o755);
    if rustix_uid() == 0 {
        std::os::unix::fs::chown(&foreign, Some(4242), None).expect("chown");
        let e = host::load(&foreign).expect_err("foreign owner");
        assert!(e.to_string().contains("owned by uid 4242"), "{e}");
    }

    let open_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let inside = open_dir.path().join("libm.so");
    std::fs::copy(&good, &inside).expect("copy");
    let e = host::load(&inside).expect_err("in a world-writable directory");
    assert!(e.to_string().contains("its directory"), "{e}");

    let e = host::load(Path::new("relative/libm.so")).expect_err("relative");
    assert!(matches!(e, LoadError::Relative { .. }), "{e:?}");
}

fn rustix_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(1, |m| std::os::unix::fs::MetadataExt::uid(&m))
}

#[test]
fn discovery_lists_every_file_and_refuses_duplicates_and_reserved_names() {
    let (Some(minimal), Some(bad)) = (
        support::c_test_plugin("minimal"),
        support::c_test_plugin("bad_name"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for (src, name) in [
        (&minimal, "liba.so"),
        (&minimal, "libb.so"),
        (&bad, "libc.so"),
    ] {
        std::fs::copy(src, dir.path().join(name)).expect("copy");
    }
    std::fs::write(dir.path().join("README"), "not a plugin").expect("write");
    let found = host::discover(&[dir.path().to_path_buf(), dir.path().join("missing")], &[]);
    let names: Vec<_> = found
        .iter()
        .map(|d| d.path.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["liba.so", "libb.so", "libc.so"]);
    assert_eq!(
        found[0].result.as_ref().expect("liba loads").name,
        "minimal"
    );
    let dup = found[1]
        .result
        .as_ref()
        .expect_err("libb has the same name");
    assert!(
        dup.to_string().contains("taken by") && dup.to_string().contains("liba.so"),
        "{dup}"
    );
    let bad_name = found[2].result.as_ref().expect_err("libc has a bad name");
    assert!(bad_name.to_string().contains("Bad Name!"), "{bad_name}");

    let found = host::discover(&[dir.path().to_path_buf()], &["minimal"]);
    let e = found[0].result.as_ref().expect_err("reserved");
    assert!(e.to_string().contains("built-in driver"), "{e}");
}

/// Through the volume API: a plugin whose create returns garbage leaves
/// no snapshot in the metadata and the volume as it was.
#[tokio::test]
async fn the_volume_api_records_nothing_from_a_faulty_plugin() {
    use snapshot_core::store::Layout;
    use snapshot_core::volume::{CreateOptions, VolumeApi};
    let Some(d) = driver("garbage") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, before) = volume(dir.path());
    let api = VolumeApi::new(Layout::new(dir.path().join("state")), vec![Arc::new(d)]);
    let volume = api.volume(&v.path, None).expect("volume");
    let options = CreateOptions {
        name: Some("a".into()),
        mode: Some(SnapshotMode::Copy),
        driver: Some("garbage".into()),
        ..CreateOptions::default()
    };
    let e = api
        .snapshot_create_xml(&volume, None, &options, None)
        .await
        .expect_err("create through a faulty plugin");
    assert!(e.to_string().contains("plugin 'garbage'"), "{e}");
    assert!(api.snapshot_list_names(&volume).expect("list").is_empty());
    assert_eq!(std::fs::read(&v.path).expect("volume"), before);
}
