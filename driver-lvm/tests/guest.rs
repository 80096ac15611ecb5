//! driver-lvm on real LVM, inside the Linux test guest (this host's
//! kernel has no device-mapper): the conformance suite for classic and
//! thin snapshots, and what is particular to LVM: an overflowed classic
//! snapshot is reported lost and never reverted to, a revert into an open
//! origin is deferred to its next activation, and a snapshot is never
//! taken of a frozen filesystem's volume behind LVM's back.
//!
//! The host side (`lvm_inside_the_test_guest`) boots a guest with one
//! scratch disk, carries this very test binary in on the payload disk and
//! runs its `in_guest` tests there, one at a time; they are `#[ignore]`d
//! and refuse to run anywhere but in the guest. Without the built guest
//! the host test skips with the reason (or fails under
//! `VIRTSNAP_REQUIRE_BACKENDS`).
//!
//! The integration matrix's LVM rows (`lvm-classic`, `lvm-thin`) are
//! `in_guest` tests too: they record their rows in the guest, and the host
//! test carries them back and records them on the host (for `cargo xtask
//! matrix`, which runs only them: `VIRTSNAP_LVM_GUEST_ONLY=matrix`).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use snapshot_core::conformance::matrix;
use testvm::{Options, TestVm};

/// Set in the guest for the `in_guest` tests.
const IN_GUEST: &str = "VIRTSNAP_LVM_IN_GUEST";
/// The volume group the guest tests use.
const VG: &str = "vsvg";
/// Its thin pool.
const POOL: &str = "pool";
/// Runs only the guest tests matching this filter (for working on them).
const ONLY_ENV: &str = "VIRTSNAP_LVM_GUEST_ONLY";
/// How many `in_guest` tests there are (the host checks all ran).
const GUEST_TESTS: usize = 23;
/// Where the guest's matrix rows are recorded, in the guest.
const GUEST_MATRIX_DIR: &str = "/tmp/vs-matrix";
/// How the host reads them back: one line each, this then the row's JSON.
const ROW_LINE: &str = "VIRTSNAP-MATRIX-ROW ";
/// The matrix rows of the guest tests.
const MATRIX_ROWS: [&str; 3] = ["lvm-classic", "lvm-thin", "lvm-plugin-classic"];
/// How long the in-guest tests may take in all: 14 to 25 min under TCG
/// on a loaded 2-core machine (25 in a CI run on 2026-12-03, beside the
/// rest of the suite), so 45 min before it counts as hung.
const GUEST_RUN_TIMEOUT: Duration = Duration::from_secs(2700);
/// The driver built as a plugin, carried in on the payload disk.
const GUEST_PLUGIN: &str = "/payload/libvirtsnap_plugin_lvm.so";

#[test]
fn lvm_inside_the_test_guest() {
    assert!(
        std::env::var_os(IN_GUEST).is_none(),
        "the host test does not run inside the guest"
    );
    let payload = tempfile::tempdir().expect("payload dir");
    let me = std::env::current_exe().expect("this test binary");
    fs::copy(&me, payload.path().join("guest-tests")).expect("copying the test binary");
    let plugin = plugin_abi::testing::cargo_plugin("virtsnap-plugin-lvm", "virtsnap_plugin_lvm");
    fs::copy(&plugin, payload.path().join("libvirtsnap_plugin_lvm.so"))
        .expect("copying the LVM plugin");
    let options = Options::new()
        .disk(1 << 30)
        .payload(payload.path())
        .command_timeout(Duration::from_secs(900));
    let Some(vm) = testvm::boot_or_skip(&options) else {
        return;
    };
    let disk = TestVm::scratch_device(0);
    vm.run_ok(&format!(
        "set -e; pvcreate -q {disk}; vgcreate -q -s 1m {VG} {disk}; \
         lvcreate -qy --type thin-pool -L 256m -n {POOL} {VG}"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    // A narrower filter, by hand, for working on one test.
    let only = std::env::var(ONLY_ENV).ok();
    let filter = only.as_deref().unwrap_or("in_guest::");
    let out = vm
        .run_timeout(
            &format!(
                "cd /tmp && {IN_GUEST}=1 RUST_BACKTRACE=1 {matrix}={GUEST_MATRIX_DIR} \
                 VIRTSNAP_LVM_SNAPSHOT_SIZE=200% \
                 /payload/guest-tests --ignored --test-threads=1 '{filter}' 2>&1",
                matrix = matrix::DIR_ENV,
            ),
            GUEST_RUN_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", out.stdout);
    // The matrix rows, recorded here too (even when a guest test failed:
    // the rows say which cells).
    let rows = vm
        .run_ok(&format!(
            "for f in {GUEST_MATRIX_DIR}/*.json; do [ -e \"$f\" ] || continue; \
             printf '{ROW_LINE}'; cat \"$f\"; done"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut carried = Vec::new();
    for line in rows.lines() {
        let Some(json) = line.strip_prefix(ROW_LINE) else {
            continue;
        };
        let row = matrix::Row::from_json(json)
            .unwrap_or_else(|e| panic!("a matrix row from the guest: {e}: {json}"));
        matrix::record(&row);
        carried.push(row.row);
    }
    assert!(
        out.success(),
        "the guest tests failed (rc {}):\n{}\n{}\n--- console ---\n{}",
        out.rc,
        out.stdout,
        out.stderr,
        vm.console_log()
    );
    if only.is_some() {
        return;
    }
    for row in MATRIX_ROWS {
        assert!(
            carried.iter().any(|r| r == row),
            "the guest recorded no matrix row {row} (rows: {carried:?})"
        );
    }
    let summary = format!("test result: ok. {GUEST_TESTS} passed");
    assert!(
        out.stdout.contains(&summary),
        "not every guest test ran (expected {summary:?}):\n{}",
        out.stdout
    );
}

/// Runs `lvm ARGS` in the guest, requiring success; its stdout.
fn lvm(args: &[&str]) -> String {
    let out = Command::new("lvm")
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .expect("running lvm");
    assert!(
        out.status.success(),
        "lvm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command in the guest; its status and both outputs.
fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("running sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write_at(path: &Path, offset: u64, len: u64, pattern: u8) {
    let data = vec![pattern; usize::try_from(len).expect("a small write")];
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    file.write_all_at(&data, offset)
        .and_then(|()| file.sync_all())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A new logical volume of `bytes`, zero-filled, classic or thin; its
/// device.
fn new_lv(name: &str, bytes: u64, thin: bool) -> std::path::PathBuf {
    let size = format!("{bytes}b");
    if thin {
        lvm(&[
            "lvcreate",
            "-qy",
            "--type",
            "thin",
            "--virtualsize",
            &size,
            "--thinpool",
            POOL,
            "-n",
            name,
            VG,
        ]);
    } else {
        lvm(&["lvcreate", "-qy", "-L", &size, "-n", name, VG]);
    }
    let device = Path::new("/dev").join(VG).join(name);
    // A classic volume holds whatever its extents held before.
    write_at(&device, 0, bytes, 0);
    device
}

mod in_guest {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use driver_lvm::{LvmDriver, SizePolicy};
    use snapshot_core::conformance::{self, Harness, VOLUME_SIZE};
    use snapshot_core::driver::{
        CreatedSnapshot, DeleteContext, DriverError, RevertOutcome, SnapshotMode, SnapshotPlan,
        Volume, VolumeDriver, VolumeFormat, VolumeState,
    };

    use super::*;

    /// Refuses to run outside the guest (they are `#[ignore]`d, but
    /// `--ignored` on the host must not touch the host's volumes).
    fn in_guest() {
        assert!(
            std::env::var_os(IN_GUEST).is_some(),
            "runs inside the test guest only, started by lvm_inside_the_test_guest"
        );
    }

    /// Logical volumes of the conformance suite, classic or thin.
    struct LvmHarness<D> {
        driver: D,
        thin: bool,
    }

    static SERIAL: AtomicUsize = AtomicUsize::new(0);

    impl<D: VolumeDriver> Harness for LvmHarness<D> {
        fn driver(&self) -> &dyn VolumeDriver {
            &self.driver
        }

        fn mode(&self) -> SnapshotMode {
            SnapshotMode::Internal
        }

        fn new_volume(&self, _dir: &Path, name: &str) -> Volume {
            let n = SERIAL.fetch_add(1, Ordering::Relaxed);
            let kind = if self.thin { "thin" } else { "classic" };
            let device = new_lv(&format!("{kind}-{name}-{n}"), VOLUME_SIZE, self.thin);
            Volume::new(device, VolumeFormat::Raw)
        }

        fn write(&self, volume: &Volume, offset: u64, len: u64, pattern: u8) {
            write_at(&volume.path, offset, len, pattern);
        }

        fn content(&self, volume: &Volume) -> Vec<u8> {
            read(&volume.path)
        }

        fn damage(&self, volume: &Volume, snapshot: &CreatedSnapshot) {
            let lv = format!(
                "{VG}/{}.{}",
                volume.path.file_name().expect("a name").to_string_lossy(),
                snapshot.name
            );
            lvm(&["lvchange", "-qy", "--permission", "rw", &lv]);
            lvm(&["lvchange", "-qy", "-ay", "-K", &lv]);
            write_at(&Path::new("/dev").join(&lv), 0, 4096, 0x99);
        }
    }

    fn classic() -> LvmHarness<LvmDriver> {
        // Room for every chunk the suite writes: its snapshots never
        // overflow.
        LvmHarness {
            driver: LvmDriver::with_size(SizePolicy::PercentOfOrigin(200)),
            thin: false,
        }
    }

    fn thin() -> LvmHarness<LvmDriver> {
        LvmHarness {
            driver: LvmDriver::new(),
            thin: true,
        }
    }

    macro_rules! suite {
        ($module:ident, $harness:expr, $row:literal) => {
            mod $module {
                use super::*;

                macro_rules! check {
                    ($name:ident) => {
                        #[tokio::test]
                        #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
                        async fn $name() {
                            in_guest();
                            conformance::$name(&$harness, Path::new("/tmp")).await;
                        }
                    };
                }

                check!(create_revert_delete);
                check!(existing_is_refused);
                check!(undo_restores);
                check!(delete_is_idempotent);
                check!(checksum_detects_damage);
                check!(chain_with_branches);

                /// The integration matrix's row, recorded in the guest
                /// for the host to carry back.
                #[tokio::test]
                #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
                async fn matrix() {
                    in_guest();
                    conformance::matrix::test(&$harness, Path::new("/tmp"), $row).await;
                }
            }
        };
    }

    suite!(classic_suite, classic(), "lvm-classic");
    suite!(thin_suite, thin(), "lvm-thin");

    /// The driver built as a plugin (`plugins/lvm`), loaded through the
    /// plugin ABI from the payload disk, on classic snapshots (their space
    /// from `$VIRTSNAP_LVM_SNAPSHOT_SIZE`, 200 % in the guest, as
    /// `classic()` has). Only the suite's first check and the matrix row:
    /// every LVM command costs most of a second under TCG.
    fn plugin_classic() -> LvmHarness<plugin_abi::host::PluginDriver> {
        let plugin =
            plugin_abi::host::load(Path::new(GUEST_PLUGIN)).unwrap_or_else(|e| panic!("{e}"));
        LvmHarness {
            driver: plugin_abi::host::PluginDriver::open(plugin).unwrap_or_else(|e| panic!("{e}")),
            thin: false,
        }
    }

    mod plugin_suite {
        use super::*;

        #[tokio::test]
        #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
        async fn create_revert_delete() {
            in_guest();
            conformance::create_revert_delete(&plugin_classic(), Path::new("/tmp")).await;
        }

        /// The integration matrix's row, recorded in the guest for the
        /// host to carry back.
        #[tokio::test]
        #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
        async fn matrix() {
            in_guest();
            matrix::test(&plugin_classic(), Path::new("/tmp"), "lvm-plugin-classic").await;
        }
    }

    fn plan(name: &str) -> SnapshotPlan {
        SnapshotPlan {
            name: name.to_string(),
            mode: SnapshotMode::Internal,
            file: None,
            checksum: false,
            writable: false,
        }
    }

    fn lv_attr(lv: &str) -> String {
        lvm(&["lvs", "--noheadings", "-o", "lv_attr", lv])
            .trim()
            .to_string()
    }

    fn exists(lv: &str) -> bool {
        sh(&format!("lvm lvs {lv} >/dev/null 2>&1")).0
    }

    #[tokio::test]
    #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
    async fn an_overflowed_classic_snapshot_is_reported_lost_and_never_reverted_to() {
        in_guest();
        let driver = LvmDriver::with_size(SizePolicy::Bytes(1 << 20));
        let device = new_lv("overflow", 16 << 20, false);
        let volume = Volume::new(&device, VolumeFormat::Raw);
        write_at(&device, 0, 1 << 20, 0x11);
        let created = driver
            .create(&volume, &plan("small"), None)
            .await
            .expect("create");
        assert_eq!(created.size, Some(1 << 20), "the policy's space");
        let listed = driver.list(&volume).await.expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].invalid, None, "a fresh snapshot is whole");

        // 8 MiB of changes into 1 MiB of copy-on-write space.
        write_at(&device, 0, 8 << 20, 0x22);
        let before = read(&device);
        let listed = driver.list(&volume).await.expect("list");
        let why = listed[0]
            .invalid
            .as_deref()
            .expect("the overflow is reported");
        assert!(why.contains("lost"), "{why}");
        let err = driver
            .revert(&volume, &created.as_ref(), false, None)
            .await
            .expect_err("an overflowed snapshot is never reverted to");
        let text = err.to_string();
        assert!(
            text.contains("overflowed") && text.contains("delete it"),
            "{text}"
        );
        assert!(
            read(&device) == before,
            "the refused revert changed the volume"
        );
        driver
            .delete(&volume, &created.as_ref(), &DeleteContext::default(), None)
            .await
            .expect("an overflowed snapshot can be deleted");
        assert!(driver.list(&volume).await.expect("list").is_empty());
    }

    async fn deferred_merge(name: &str, thin: bool) {
        let driver = LvmDriver::with_size(SizePolicy::PercentOfOrigin(100));
        let device = new_lv(name, 8 << 20, thin);
        let volume = Volume::new(&device, VolumeFormat::Raw);
        write_at(&device, 0, 1 << 20, 0xaa);
        let old = read(&device);
        let created = driver
            .create(&volume, &plan("old"), None)
            .await
            .expect("create");
        write_at(&device, 0, 1 << 20, 0xbb);
        let new = read(&device);

        // Someone has the origin open: LVM cannot merge now.
        let holder = File::open(&device).expect("opening the origin");
        let outcome = driver
            .revert(&volume, &created.as_ref(), false, None)
            .await
            .expect("a revert into an open origin");
        let RevertOutcome::Deferred { message } = outcome else {
            panic!("a revert into an open origin must be deferred, got {outcome:?}");
        };
        assert!(
            message.contains("next activated") && message.contains("lvchange -an"),
            "{message}"
        );
        let snap = format!("{VG}/{name}.old");
        assert!(
            exists(&snap),
            "the merging snapshot is there until the merge"
        );
        assert!(
            driver.list(&volume).await.expect("list").is_empty(),
            "a merging snapshot is not listed"
        );
        let err = driver
            .create(&volume, &plan("during"), None)
            .await
            .expect_err("no snapshot of an origin being merged into");
        assert!(err.to_string().contains("merging"), "{err}");
        assert!(
            read(&device) == new,
            "the open origin changed before its reactivation"
        );

        // Closed and activated again: LVM finishes the merge.
        drop(holder);
        let lv = format!("{VG}/{name}");
        lvm(&["lvchange", "-an", &lv]);
        lvm(&["lvchange", "-ay", &lv]);
        assert!(
            read(&device) == old,
            "after reactivation the origin holds the snapshot"
        );
        for _ in 0..300 {
            if !exists(&snap) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!exists(&snap), "the merge consumed the snapshot");
        assert!(
            read(&device) == old,
            "the finished merge kept the snapshot's content"
        );
        // The volume takes snapshots again.
        driver
            .create(&volume, &plan("after"), None)
            .await
            .expect("create after");
    }

    #[tokio::test]
    #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
    async fn a_revert_into_an_open_classic_origin_is_deferred_to_its_next_activation() {
        in_guest();
        deferred_merge("deferred", false).await;
    }

    #[tokio::test]
    #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
    async fn a_revert_into_an_open_thin_origin_is_deferred_to_its_next_activation() {
        in_guest();
        deferred_merge("deferthin", true).await;
    }

    #[tokio::test]
    #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
    async fn a_mounted_filesystem_is_snapshotted_without_freezing_it_first() {
        in_guest();
        let driver = LvmDriver::with_size(SizePolicy::PercentOfOrigin(50));
        let device = new_lv("mounted", 64 << 20, false);
        let volume = Volume::new(&device, VolumeFormat::Raw);
        let mnt = "/mnt/vs-mounted";
        let (ok, out) = sh(&format!(
            "set -e; mkfs.ext4 -q {d}; mkdir -p {mnt}; mount {d} {mnt}; \
             echo one > {mnt}/file",
            d = device.display()
        ));
        assert!(ok, "{out}");
        // The driver never freezes: LVM suspends (and so freezes) the
        // device itself, with the file system's unwritten data flushed.
        let created = driver
            .create(&volume, &plan("live"), None)
            .await
            .expect("create");
        let (ok, out) = sh(&format!(
            "set -e; echo two > {mnt}/file; sync; mkdir -p /mnt/vs-snap; \
             mount -o ro,noload /dev/{VG}/mounted.live /mnt/vs-snap; cat /mnt/vs-snap/file; \
             umount /mnt/vs-snap"
        ));
        assert!(ok, "{out}");
        assert_eq!(out.trim(), "one", "the snapshot holds the file as it was");

        // A filesystem frozen by someone else (qemu-ga, fsfreeze): LVM's
        // own freeze fails with EBUSY and lvcreate leaves a half-made
        // snapshot, which the driver removes; nothing is left behind.
        let (ok, out) = sh(&format!("fsfreeze --freeze {mnt}"));
        assert!(ok, "fsfreeze: {out}");
        let result = driver.create(&volume, &plan("frozen"), None).await;
        let (thawed, out) = sh(&format!("fsfreeze --unfreeze {mnt}"));
        assert!(thawed, "thaw: {out}");
        let err = result.expect_err("a snapshot of a frozen filesystem's volume fails on 6.1");
        assert!(
            matches!(err, DriverError::Tool { .. } | DriverError::Inconsistent(_)),
            "{err}"
        );
        if exists(&format!("{VG}/mounted.frozen")) {
            panic!(
                "a half-made snapshot was left behind: {err}\n{}",
                lvm(&["lvs", "-a", VG])
            );
        }
        let listed = driver.list(&volume).await.expect("list");
        let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["live"], "only the good snapshot remains");
        let (ok, out) = sh(&format!("umount {mnt}"));
        assert!(ok, "{out}");
        driver
            .revert(&volume, &created.as_ref(), false, None)
            .await
            .expect("revert");
        let (ok, out) = sh(&format!(
            "set -e; mount {d} {mnt}; cat {mnt}/file; umount {mnt}",
            d = device.display()
        ));
        assert!(ok, "{out}");
        assert_eq!(out.trim(), "one", "the revert brought the file back");
    }

    #[tokio::test]
    #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
    async fn snapshots_are_read_only_unless_asked_and_kept_by_a_revert() {
        in_guest();
        let driver = LvmDriver::new();
        let device = new_lv("perm", 4 << 20, true);
        let volume = Volume::new(&device, VolumeFormat::Raw);
        let caps = driver
            .capabilities(&volume, VolumeState::Offline)
            .await
            .expect("capabilities");
        assert!(
            caps.internal && caps.revert && caps.list && !caps.copy,
            "{caps:?}"
        );
        let in_use = driver
            .capabilities(&volume, VolumeState::InUse)
            .await
            .expect("capabilities");
        assert!(
            !in_use.internal,
            "a running guest's volume is its hypervisor's"
        );

        driver
            .create(&volume, &plan("ro"), None)
            .await
            .expect("create ro");
        let mut rw = plan("rw");
        rw.writable = true;
        let writable = driver.create(&volume, &rw, None).await.expect("create rw");
        assert_eq!(lv_attr(&format!("{VG}/perm.ro")).chars().nth(1), Some('r'));
        assert_eq!(lv_attr(&format!("{VG}/perm.rw")).chars().nth(1), Some('w'));

        write_at(&device, 0, 4096, 0x55);
        driver
            .revert(&volume, &writable.as_ref(), false, None)
            .await
            .expect("revert");
        assert!(
            read(&device).iter().all(|b| *b == 0),
            "the revert restored zeros"
        );
        // The merge consumed the snapshot; the revert took it again, as
        // it was (writable, tagged).
        assert_eq!(lv_attr(&format!("{VG}/perm.rw")).chars().nth(1), Some('w'));
        let tags = lvm(&[
            "lvs",
            "--noheadings",
            "-o",
            "lv_tags",
            &format!("{VG}/perm.rw"),
        ]);
        assert_eq!(tags.trim(), "virtsnap");
        let origin_tags = lvm(&[
            "lvs",
            "--noheadings",
            "-o",
            "lv_tags",
            &format!("{VG}/perm"),
        ]);
        assert_eq!(
            origin_tags.trim(),
            "",
            "the revert's tag is gone once it finished"
        );
        let mut names: Vec<String> = driver
            .list(&volume)
            .await
            .expect("list")
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.sort();
        assert_eq!(names, ["ro", "rw"]);

        // Snapshots taken by hand are listed by their volume's name.
        lvm(&[
            "lvcreate",
            "-qy",
            "-s",
            "-n",
            "byhand",
            &format!("{VG}/perm"),
        ]);
        let listed = driver.list(&volume).await.expect("list");
        assert!(listed.iter().any(|s| s.name == "byhand"), "{listed:?}");
    }

    #[tokio::test]
    #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
    async fn a_revert_cut_short_after_the_merge_is_finished_by_running_it_again() {
        in_guest();
        let driver = LvmDriver::with_size(SizePolicy::PercentOfOrigin(100));
        let device = new_lv("cut", 4 << 20, false);
        let volume = Volume::new(&device, VolumeFormat::Raw);
        write_at(&device, 0, 4096, 0x31);
        let created = driver
            .create(&volume, &plan("s"), None)
            .await
            .expect("create");
        let old = read(&device);
        write_at(&device, 0, 4096, 0x32);
        // What a crash between the merge and taking the snapshot again
        // leaves: the origin tagged, the snapshot merged away.
        lvm(&[
            "lvchange",
            "--addtag",
            &format!("virtsnap_revert:r:{}:cut.s", 4 << 20),
            &format!("{VG}/cut"),
        ]);
        lvm(&[
            "lvconvert",
            "-q",
            "--merge",
            "-i",
            "1",
            &format!("{VG}/cut.s"),
        ]);
        assert!(!exists(&format!("{VG}/cut.s")));
        let outcome = driver
            .revert(&volume, &created.as_ref(), false, None)
            .await
            .expect("the revert run again");
        assert_eq!(outcome, RevertOutcome::Done);
        assert!(read(&device) == old, "the volume holds the snapshot");
        assert!(
            exists(&format!("{VG}/cut.s")),
            "the snapshot was taken again"
        );
        let size = lvm(&[
            "lvs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "lv_size",
            &format!("{VG}/cut.s"),
        ]);
        assert_eq!(size.trim(), (4u64 << 20).to_string(), "with its old space");
    }

    #[tokio::test]
    #[ignore = "runs inside the test guest (lvm_inside_the_test_guest)"]
    async fn a_thin_revert_cut_short_between_its_renames_is_finished_by_the_next() {
        in_guest();
        let driver = LvmDriver::new();
        let device = new_lv("swap", 4 << 20, true);
        let volume = Volume::new(&device, VolumeFormat::Raw);
        write_at(&device, 0, 4096, 0x41);
        let created = driver
            .create(&volume, &plan("s"), None)
            .await
            .expect("create");
        let old = read(&device);
        write_at(&device, 0, 4096, 0x42);
        let newer = read(&device);
        // What a crash after the first rename leaves: the new volume made,
        // the origin renamed away, nothing at the volume's path.
        lvm(&[
            "lvcreate",
            "-qy",
            "-s",
            "-kn",
            "-n",
            "swap.virtsnap-revert",
            &format!("{VG}/swap.s"),
        ]);
        lvm(&[
            "lvchange",
            "-qy",
            "-ay",
            &format!("{VG}/swap.virtsnap-revert"),
        ]);
        lvm(&["lvrename", VG, "swap", "swap.virtsnap-old"]);
        assert!(!device.exists(), "the volume's path is gone mid-swap");
        let outcome = driver
            .revert(&volume, &created.as_ref(), false, None)
            .await
            .expect("the next revert");
        assert_eq!(outcome, RevertOutcome::Done);
        assert!(read(&device) == old, "the volume holds the snapshot");
        assert!(read(&device) != newer);
        for leftover in ["swap.virtsnap-old", "swap.virtsnap-revert"] {
            assert!(!exists(&format!("{VG}/{leftover}")), "{leftover} is left");
        }
        let names: Vec<String> = driver
            .list(&volume)
            .await
            .expect("list")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["s"], "the snapshot is kept");
        let err = driver
            .create(&volume, &plan("virtsnap-old"), None)
            .await
            .expect_err("a name the driver uses itself");
        assert!(matches!(err, DriverError::InvalidName { .. }), "{err}");
    }
}
