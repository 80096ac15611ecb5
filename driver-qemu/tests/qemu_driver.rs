//! The qemu driver beyond the shared conformance suite: the native qcow2
//! reader against `qemu-img info`, names that look like ids, undo from
//! every state an interrupted external create can leave, refusals, and
//! progress from long commits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use driver_qemu::{QemuDriver, qcow2};
use snapshot_core::conformance::backends::{self, Tmpfs, run};
use snapshot_core::driver::{
    CreatedSnapshot, DeleteContext, DriverError, SnapshotMode, SnapshotPlan, SnapshotRef, Volume,
    VolumeDriver, VolumeFormat, VolumeState,
};

fn tools_present() -> bool {
    backends::qemu_tools_present()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn qcow2_image(dir: &Path, name: &str, extra: &[&str]) -> Volume {
    let path = dir.join(name);
    backends::qcow2_create(&path, 4 << 20, extra);
    Volume::new(path, VolumeFormat::Qcow2)
}

/// Writes 64 KiB of `pattern` at `offset`.
fn write(volume: &Volume, offset: u64, pattern: u8) {
    backends::write(&volume.path, "qcow2", offset, 65_536, pattern);
}

fn content(volume: &Volume) -> Vec<u8> {
    backends::content(&volume.path, "qcow2")
}

fn plan(name: &str, mode: SnapshotMode, file: Option<PathBuf>) -> SnapshotPlan {
    SnapshotPlan {
        name: name.into(),
        mode,
        file,
        checksum: false,
        writable: false,
    }
}

#[tokio::test]
async fn the_reader_agrees_with_qemu_img_info() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = qcow2_image(dir.path(), "base.qcow2", &["-o", "compat=0.10"]);
    let top = qcow2_image(
        dir.path(),
        "top.qcow2",
        &[
            "-F",
            "qcow2",
            "-b",
            p(&base.path),
            "-o",
            "cluster_size=4096",
        ],
    );
    for (i, name) in (0u8..).zip(["first", "2", "ünïcode name", "a,b=c", "last"]) {
        write(&top, u64::from(i) * 65_536, 0x20 + i);
        run("qemu-img", &["snapshot", "-c", name, p(&top.path)]);
    }
    run("qemu-img", &["snapshot", "-c", "old", p(&base.path)]);
    for image in [&base, &top] {
        let info: serde_json::Value =
            serde_json::from_str(&run("qemu-img", &["info", "--output=json", p(&image.path)]))
                .expect("qemu-img info JSON");
        let (header, snaps) = qcow2::read_snapshots(&image.path).expect("reading");
        assert_eq!(Some(header.size), info["virtual-size"].as_u64());
        assert_eq!(Some(header.cluster_size), info["cluster-size"].as_u64());
        assert_eq!(
            header.backing_file.as_deref(),
            info["backing-filename"].as_str()
        );
        assert_eq!(
            header.backing_format.as_deref(),
            info["backing-filename-format"].as_str()
        );
        let expected = info["snapshots"].as_array().expect("snapshots");
        assert_eq!(snaps.len(), expected.len());
        for (ours, theirs) in snaps.iter().zip(expected) {
            assert_eq!(Some(ours.id.as_str()), theirs["id"].as_str());
            assert_eq!(Some(ours.name.as_str()), theirs["name"].as_str());
            assert_eq!(Some(u64::from(ours.date_sec)), theirs["date-sec"].as_u64());
            assert_eq!(
                Some(u64::from(ours.date_nsec)),
                theirs["date-nsec"].as_u64()
            );
            assert_eq!(Some(ours.vm_state_size), theirs["vm-state-size"].as_u64());
        }
    }
    assert_eq!(qcow2::read_header(&base.path).expect("base").version, 2);
    assert_eq!(qcow2::read_header(&top.path).expect("top").version, 3);
}

#[tokio::test]
async fn a_name_that_looks_like_an_id_reverts_to_itself() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let vol = qcow2_image(dir.path(), "ids.qcow2", &[]);
    let driver = QemuDriver::new();
    // "2" gets id 1, "one" gets id 2: "2" must not mean "one".
    write(&vol, 0, 0x11);
    driver
        .create(&vol, &plan("2", SnapshotMode::Internal, None), None)
        .await
        .expect("create 2");
    let at_two = content(&vol);
    write(&vol, 0, 0x22);
    driver
        .create(&vol, &plan("one", SnapshotMode::Internal, None), None)
        .await
        .expect("create one");
    write(&vol, 0, 0x33);
    let two = SnapshotRef {
        name: "2".into(),
        mode: SnapshotMode::Internal,
        file: None,
        checksum: None,
    };
    driver
        .revert(&vol, &two, false, None)
        .await
        .expect("revert");
    assert!(
        content(&vol) == at_two,
        "reverting to '2' restored another snapshot"
    );
    driver
        .delete(&vol, &two, &DeleteContext::default(), None)
        .await
        .expect("delete 2");
    let left: Vec<String> = driver
        .list(&vol)
        .await
        .expect("list")
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(left, ["one"]);
}

/// The states an external create passes through, rebuilt by hand, each
/// undone back to the original volume.
#[tokio::test]
async fn undo_finishes_from_every_interrupted_external_create() {
    if !tools_present() {
        return;
    }
    let driver = QemuDriver::new();
    for state in ["overlay-written", "linked", "complete"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = qcow2_image(dir.path(), "v.qcow2", &[]);
        write(&vol, 0, 0x5a);
        let original = content(&vol);
        let file = dir.path().join("v.qcow2.snap");
        let overlay = dir.path().join(".v.qcow2.virtsnap-overlay");
        let created = CreatedSnapshot {
            name: "snap".into(),
            mode: SnapshotMode::External,
            file: Some(file.clone()),
            format: None,
            checksum: None,
            size: None,
        };
        match state {
            "overlay-written" => {
                run(
                    "qemu-img",
                    &[
                        "create",
                        "-q",
                        "-f",
                        "qcow2",
                        "-F",
                        "qcow2",
                        "-b",
                        p(&file),
                        "-u",
                        p(&overlay),
                        "4M",
                    ],
                );
            }
            "linked" => {
                run(
                    "qemu-img",
                    &[
                        "create",
                        "-q",
                        "-f",
                        "qcow2",
                        "-F",
                        "qcow2",
                        "-b",
                        p(&file),
                        "-u",
                        p(&overlay),
                        "4M",
                    ],
                );
                std::fs::hard_link(&vol.path, &file).expect("link");
            }
            _ => {
                driver
                    .create(
                        &vol,
                        &plan("snap", SnapshotMode::External, Some(file.clone())),
                        None,
                    )
                    .await
                    .expect("create");
                write(&vol, 65_536, 0x6b);
            }
        }
        for round in 0..2 {
            driver
                .undo(&vol, &created)
                .await
                .unwrap_or_else(|e| panic!("{state}: undo {round}: {e}"));
            assert!(
                content(&vol) == original,
                "{state}: undo {round} did not restore the volume"
            );
            assert!(!file.exists(), "{state}: the snapshot file is left");
            assert!(!overlay.exists(), "{state}: the temporary overlay is left");
            assert!(
                qcow2::read_header(&vol.path)
                    .expect("header")
                    .backing_file
                    .is_none(),
                "{state}: the volume still has a backing file"
            );
        }
    }
}

#[tokio::test]
async fn refusals_name_the_volume_and_the_way_out() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let raw_path = dir.path().join("disk.raw");
    std::fs::write(&raw_path, vec![0u8; 65_536]).expect("raw");
    let raw = Volume::new(&raw_path, VolumeFormat::Raw);
    let driver = QemuDriver::new();
    let caps = driver
        .capabilities(&raw, VolumeState::Offline)
        .await
        .expect("caps");
    assert!(caps.modes().is_empty(), "a raw volume gets no qemu modes");
    for mode in [SnapshotMode::Internal, SnapshotMode::External] {
        let err = driver
            .create(
                &raw,
                &plan("x", mode, Some(dir.path().join("disk.raw.x"))),
                None,
            )
            .await
            .expect_err("raw is refused");
        let text = err.to_string();
        assert!(matches!(err, DriverError::Unsupported { .. }), "{text}");
        assert!(
            text.contains("disk.raw") && text.contains("--mode copy"),
            "{text}"
        );
    }
    assert_eq!(std::fs::read(&raw_path).expect("raw").len(), 65_536);
    let vol = qcow2_image(dir.path(), "q.qcow2", &[]);
    let err = driver
        .create(
            &vol,
            &plan("c", SnapshotMode::Copy, Some(dir.path().join("c"))),
            None,
        )
        .await
        .expect_err("copies are refused");
    assert!(err.to_string().contains("--driver file"), "{err}");
    let busy = driver
        .capabilities(&vol, VolumeState::InUse)
        .await
        .expect("caps");
    assert!(
        busy.modes().is_empty(),
        "qemu-img cannot work on a disk in use"
    );
    let missing = Volume::new(dir.path().join("nope.qcow2"), VolumeFormat::Qcow2);
    let err = driver
        .capabilities(&missing, VolumeState::Offline)
        .await
        .expect_err("missing");
    assert!(matches!(err, DriverError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_long_commit_reports_progress_to_the_end() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let vol = qcow2_image(dir.path(), "big.qcow2", &[]);
    let driver = QemuDriver::new();
    let file = dir.path().join("big.qcow2.s");
    let created = driver
        .create(
            &vol,
            &plan("s", SnapshotMode::External, Some(file.clone())),
            None,
        )
        .await
        .expect("create");
    for i in 0..8u8 {
        write(&vol, u64::from(i) * 65_536, 0x70 + i);
    }
    let expected = content(&vol);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let progress = move |done: u64, total: u64| sink.lock().expect("lock").push((done, total));
    driver
        .delete(
            &vol,
            &created.as_ref(),
            &DeleteContext {
                is_current: true,
                ..DeleteContext::default()
            },
            Some(&progress),
        )
        .await
        .expect("delete");
    assert!(content(&vol) == expected, "the delete changed the volume");
    assert!(!file.exists());
    let seen = seen.lock().expect("lock").clone();
    let last = *seen.last().expect("progress was reported");
    assert_eq!(last, (4 << 20, 4 << 20), "progress ends at the total");
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress never goes back"
    );
}

#[tokio::test]
async fn a_qemu_img_older_than_supported_is_refused_by_name() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A qemu-img that reports an old version; the driver must not run it
    // for real work.
    let old = dir.path().join("qemu-img-old");
    std::fs::write(
        &old,
        "#!/bin/sh\n[ \"$1\" = --version ] && echo 'qemu-img version 2.5.0' && exit 0\nexit 99\n",
    )
    .expect("script");
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let vol = qcow2_image(dir.path(), "v.qcow2", &[]);
    let driver = QemuDriver::with_qemu_img(driver_qemu::qemu_img::QemuImg::new(&old));
    let err = driver
        .create(&vol, &plan("s", SnapshotMode::Internal, None), None)
        .await
        .expect_err("too old");
    let text = err.to_string();
    assert!(
        text.contains("2.5.0 is too old") && text.contains("4.0 or newer"),
        "{text}"
    );
    let real = QemuDriver::new()
        .version()
        .await
        .expect("the installed qemu-img");
    assert!(real >= driver_qemu::MIN_QEMU_IMG, "{real:?}");
}

#[tokio::test]
async fn a_full_filesystem_is_no_space_and_the_image_is_intact() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    let Some(_mount) = Tmpfs::mount_or_skip(&small, "4m") else {
        return;
    };
    let vol = qcow2_image(&small, "v.qcow2", &[]);
    for i in 0..8u8 {
        write(&vol, u64::from(i) * 65_536, 0x30 + i);
    }
    let before = content(&vol);
    // Fill what is left.
    let filler = small.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status();
    let driver = QemuDriver::new();
    let files = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let external = plan("e", SnapshotMode::External, Some(small.join("v.qcow2.e")));
    for p in [plan("i", SnapshotMode::Internal, None), external] {
        let err = driver
            .create(&vol, &p, None)
            .await
            .expect_err("a full filesystem");
        assert!(
            matches!(err, DriverError::NoSpace { .. }),
            "{:?}: expected NoSpace, got {err}",
            p.mode
        );
        assert_eq!(
            files(&small),
            ["filler", "v.qcow2"],
            "{:?} left files",
            p.mode
        );
    }
    std::fs::remove_file(&filler).expect("rm filler");
    assert!(content(&vol) == before, "the image's content changed");
    let check = Command::new("qemu-img")
        .args(["check", "-q", p(&vol.path)])
        .status()
        .expect("qemu-img check");
    // 0: clean; 3: leaked clusters only (harmless, `check -r leaks`).
    assert!(
        matches!(check.code(), Some(0 | 3)),
        "qemu-img check: {check}"
    );
    assert!(driver.list(&vol).await.expect("list").is_empty());
}

#[tokio::test]
async fn an_external_file_on_another_filesystem_is_refused_untouched() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let Some(_mount) = Tmpfs::mount_or_skip(&other, "4m") else {
        return;
    };
    let vol = qcow2_image(dir.path(), "v.qcow2", &[]);
    write(&vol, 0, 0x42);
    let before = content(&vol);
    let target = other.join("v.qcow2.e");
    let err = QemuDriver::new()
        .create(
            &vol,
            &plan("e", SnapshotMode::External, Some(target.clone())),
            None,
        )
        .await
        .expect_err("another filesystem");
    let text = err.to_string();
    assert!(
        text.contains("another filesystem") && text.contains("--file"),
        "{text}"
    );
    assert!(!target.exists());
    assert!(!dir.path().join(".v.qcow2.virtsnap-overlay").exists());
    assert!(content(&vol) == before);
    assert!(
        qcow2::read_header(&vol.path)
            .expect("header")
            .backing_file
            .is_none()
    );
}

/// A process holding the image open for writing, as a running guest
/// does: `qemu-io` sleeping with the image open read-write.
struct Writer(std::process::Child);

impl Writer {
    fn hold(image: &Path) -> Self {
        let writer = Self(
            Command::new("qemu-io")
                .args(["-f", "qcow2", "-c", "sleep 20000", p(image)])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("qemu-io"),
        );
        // Wait until it holds QEMU's write lock.
        for _ in 0..200 {
            if driver_qemu::lock::held_for_writing(image).expect("probe") {
                return writer;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("qemu-io never locked {}", image.display());
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_image_a_running_process_writes_is_refused_untouched() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let vol = qcow2_image(dir.path(), "busy.qcow2", &[]);
    let driver = QemuDriver::new();
    let e1 = dir.path().join("busy.qcow2.e1");
    let created = driver
        .create(
            &vol,
            &plan("e1", SnapshotMode::External, Some(e1.clone())),
            None,
        )
        .await
        .expect("create while idle");
    assert!(!driver_qemu::lock::held_for_writing(&vol.path).expect("probe"));
    let writer = Writer::hold(&vol.path);
    let e2 = dir.path().join("busy.qcow2.e2");
    let refusals = [
        driver
            .create(
                &vol,
                &plan("e2", SnapshotMode::External, Some(e2.clone())),
                None,
            )
            .await
            .map(drop),
        driver
            .create(&vol, &plan("i", SnapshotMode::Internal, None), None)
            .await
            .map(drop),
        driver
            .revert(&vol, &created.as_ref(), false, None)
            .await
            .map(drop),
        driver
            .delete(
                &vol,
                &created.as_ref(),
                &DeleteContext {
                    is_current: true,
                    ..DeleteContext::default()
                },
                None,
            )
            .await,
    ];
    for (i, r) in refusals.into_iter().enumerate() {
        let err = r.expect_err("in use");
        assert!(
            matches!(err, DriverError::InUse { .. }),
            "operation {i}: {err}"
        );
        assert!(err.to_string().contains("busy.qcow2 is in use"), "{err}");
    }
    assert!(!e2.exists() && e1.exists());
    drop(writer);
    driver
        .revert(&vol, &created.as_ref(), false, None)
        .await
        .expect("revert once the writer is gone");
}
