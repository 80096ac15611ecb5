//! Plugins that break the ABI, each in one way (the C files in
//! `tests/c/`, compiled here with the system's compiler, and the Rust
//! `rust-faults` plugin that panics on request): each is refused at load
//! with a message naming the problem, or degraded, or its call fails with
//! a clear error. The test process survives every one, and what virtsnap
//! manages (the volume, the snapshot metadata) is unchanged.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

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
            && text.contains("ABI 1.0"),
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
        text.contains("ABI 2.") && text.contains("ABI 1.0"),
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
        text.contains("ABI 0.9") && text.contains("ABI 1.0"),
        "{text}"
    );
    assert!(text.contains("rebuild the plugin"), "{text}");
}

#[tokio::test]
async fn a_newer_minor_loads_and_its_extra_slots_are_ignored() {
    let Some(d) = driver("newer_minor") else {
        return;
    };
    assert_eq!(d.plugin().abi.0, 1);
    assert!(d.plugin().abi.1 > 0, "{:?}", d.plugin().abi);
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = volume(dir.path());
    let caps = d
        .capabilities(&v, VolumeState::Offline)
        .await
        .expect("capabilities");
    assert!(caps.copy, "{caps:?}");
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
