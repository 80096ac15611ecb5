//! The Linux test guest end to end: LVM classic snapshots with a merge,
//! qemu-guest-agent freezing a filesystem inside the guest, and the
//! helper's own channels (shell, payload disk, QMP, timeouts, errors).
//!
//! Each test boots its own guest (~5 s under TCG); guests queue for a slot,
//! so these run one at a time on a small host. Without the built guest or
//! QEMU they skip with the reason, or fail when VIRTSNAP_REQUIRE_BACKENDS
//! is set (`cargo xtask test`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testvm::{Error, Options, TestVm};

const MIB: u64 = 1 << 20;

/// Boots a guest for one test, or skips it (returns `None`).
fn boot(options: &Options) -> Option<TestVm> {
    let vm = testvm::boot_or_skip(options)?;
    eprintln!("boot to ready: {:.2} s", vm.boot_time().as_secs_f64());
    Some(vm)
}

/// Runs `script` in the guest, requiring success; panics with both
/// outputs and the console's tail otherwise.
fn ok(vm: &TestVm, script: &str) -> String {
    vm.run_ok(script).unwrap_or_else(|err| panic!("{err}"))
}

/// The sha256 (hex) of the first `mib` MiB of the guest's block device.
fn device_sha256(vm: &TestVm, device: &str, mib: u64) -> String {
    let out = ok(
        vm,
        &format!("dd if={device} bs=1M count={mib} 2>/dev/null | sha256sum"),
    );
    let hash = out.split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(hash.len(), 64, "not a sha256: {out:?}");
    hash
}

/// The logical volumes of `vg` as `lvs --reportformat json` reports them.
fn lvs(vm: &TestVm, vg: &str) -> Vec<Value> {
    let out = ok(
        vm,
        &format!("lvs --reportformat json -o lv_name,lv_attr,origin,lv_size --units b {vg}"),
    );
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    report["report"][0]["lv"]
        .as_array()
        .unwrap_or_else(|| panic!("no lv list in {report}"))
        .clone()
}

#[test]
fn lvm_classic_snapshot_keeps_the_old_data_and_merges_it_back() {
    let Some(vm) = boot(&Options::new().disk(512 * MIB)) else {
        return;
    };
    let started = Instant::now();

    let version = ok(&vm, "lvm version");
    assert!(version.contains("LVM version:"), "{version}");
    assert!(
        version.contains("Driver version:"),
        "device-mapper is missing: {version}"
    );

    let disk = TestVm::scratch_device(0);
    ok(
        &vm,
        &format!(
            "set -e; pvcreate -q {disk}; vgcreate -q vg0 {disk}; lvcreate -qy -n origin -L 64M vg0"
        ),
    );
    ok(
        &vm,
        "set -e; dd if=/dev/urandom of=/tmp/data bs=1M count=8 2>/dev/null; \
         dd if=/tmp/data of=/dev/vg0/origin bs=1M conv=fsync 2>/dev/null",
    );
    let written = ok(&vm, "sha256sum /tmp/data");
    let before = device_sha256(&vm, "/dev/vg0/origin", 8);
    assert!(written.starts_with(&before), "{written} vs {before}");

    ok(&vm, "lvcreate -qy -s -n snap -L 32M vg0/origin");
    let volumes = lvs(&vm, "vg0");
    let snap = volumes
        .iter()
        .find(|lv| lv["lv_name"] == "snap")
        .unwrap_or_else(|| panic!("no snapshot in {volumes:?}"));
    assert_eq!(snap["origin"], "origin", "{snap}");
    assert!(
        snap["lv_attr"]
            .as_str()
            .is_some_and(|attr| attr.starts_with('s')),
        "not a snapshot: {snap}"
    );

    ok(
        &vm,
        "dd if=/dev/zero of=/dev/vg0/origin bs=1M count=8 conv=fsync 2>/dev/null",
    );
    let overwritten = device_sha256(&vm, "/dev/vg0/origin", 8);
    assert_ne!(overwritten, before, "the overwrite did not land");
    assert_eq!(
        device_sha256(&vm, "/dev/vg0/snap", 8),
        before,
        "the snapshot changed with its origin"
    );

    // The origin is not open, so the merge runs now and removes the snapshot.
    let merge = ok(&vm, "lvconvert --merge -i 1 vg0/snap");
    assert!(merge.contains("Merged"), "{merge}");
    let volumes = lvs(&vm, "vg0");
    assert!(
        volumes.iter().all(|lv| lv["lv_name"] != "snap"),
        "the merged snapshot is still listed: {volumes:?}"
    );
    assert_eq!(
        device_sha256(&vm, "/dev/vg0/origin", 8),
        before,
        "the merge did not bring the old data back"
    );
    eprintln!("LVM scenario: {:.2} s", started.elapsed().as_secs_f64());
}

#[test]
fn guest_agent_pings_and_freezes_a_filesystem_inside_the_guest() {
    let Some(vm) = boot(&Options::new().disk(256 * MIB)) else {
        return;
    };
    let qga = |command: Value| {
        vm.qga(&command)
            .unwrap_or_else(|err| panic!("{command}: {err}"))
    };
    assert_eq!(qga(json!({"execute": "guest-ping"})), json!({}));
    // Twice in a row: each call reconnects and syncs again.
    assert_eq!(qga(json!({"execute": "guest-ping"})), json!({}));
    let info = qga(json!({"execute": "guest-info"}));
    assert!(info["version"].is_string(), "{info}");
    assert_eq!(qga(json!({"execute": "guest-fsfreeze-status"})), "thawed");

    // Only a filesystem of the guest's own is frozen, never the host's.
    let disk = TestVm::scratch_device(0);
    ok(
        &vm,
        &format!(
            "set -e; mkfs.ext4 -q {disk}; mkdir -p /mnt/data; mount {disk} /mnt/data; \
             echo before > /mnt/data/file; sync"
        ),
    );
    let frozen = qga(json!({"execute": "guest-fsfreeze-freeze"}));
    assert_eq!(frozen, 1, "exactly the ext4 is frozen");
    assert_eq!(qga(json!({"execute": "guest-fsfreeze-status"})), "frozen");

    // A writer blocks while frozen (uninterruptibly: probe it from the
    // background) and lands after the thaw.
    let probe = ok(
        &vm,
        "(echo during > /mnt/data/blocked; sync) >/dev/null 2>&1 & sleep 2; \
         if kill -0 $! 2>/dev/null; then echo blocked; else echo finished; fi",
    );
    assert_eq!(probe.trim(), "blocked");

    let thawed = qga(json!({"execute": "guest-fsfreeze-thaw"}));
    assert_eq!(thawed, 1);
    assert_eq!(qga(json!({"execute": "guest-fsfreeze-status"})), "thawed");
    let landed = ok(
        &vm,
        "for i in $(seq 50); do [ -s /mnt/data/blocked ] && break; sleep 0.1; done; \
         cat /mnt/data/blocked",
    );
    assert_eq!(landed, "during\n");
}

#[test]
fn the_helper_carries_payloads_outputs_qmp_errors_and_timeouts() {
    let payload = tempfile::tempdir().expect("tempdir");
    let text = "payload from the host: äöü, 'quotes' and $dollars\n";
    std::fs::create_dir(payload.path().join("sub")).expect("mkdir");
    std::fs::write(payload.path().join("sub/file.txt"), text).expect("write");
    std::fs::write(
        payload.path().join("tool.sh"),
        "#!/bin/sh\necho tool ran \"$@\"\n",
    )
    .expect("write");
    let options = Options::new()
        .disk(64 * MIB)
        .disk(32 * MIB)
        .payload(payload.path())
        .memory_mib(512)
        .command_timeout(Duration::from_secs(60));
    let Some(vm) = boot(&options) else {
        return;
    };

    // The payload is unpacked to /payload, bytes intact.
    assert_eq!(ok(&vm, "cat /payload/sub/file.txt"), text);
    assert_eq!(ok(&vm, "sh /payload/tool.sh a b"), "tool ran a b\n");

    // Disks are where the guest and the host say they are.
    for index in 0..2 {
        let device = TestVm::scratch_device(index);
        let bytes = ok(&vm, &format!("blockdev --getsize64 {device}"));
        let expected = if index == 0 { 64 * MIB } else { 32 * MIB };
        assert_eq!(bytes.trim(), expected.to_string(), "{device}");
        let image = vm.scratch_image(index).expect("an image per disk");
        assert!(image.is_file(), "{}", image.display());
    }
    assert!(vm.scratch_image(2).is_none());

    // stdout and stderr apart, the exit status as is.
    let output = vm
        .run("echo out; echo err >&2; exit 3")
        .expect("the command runs");
    assert_eq!(
        (output.rc, output.stdout.as_str(), output.stderr.as_str()),
        (3, "out\n", "err\n")
    );
    let err = vm.run_ok("echo visible; false").expect_err("exit status 1");
    let message = err.to_string();
    assert!(matches!(err, Error::CommandFailed { .. }), "{message}");
    assert!(message.contains("visible"), "{message}");

    // A command that outlives its timeout: the error shows the console's
    // tail; the next command still gets its own answer.
    let err = vm
        .run_timeout(
            "echo console-marker-4711 > /dev/console; sleep 3; echo late",
            Duration::from_secs(1),
        )
        .expect_err("times out");
    let message = err.to_string();
    assert!(matches!(err, Error::Timeout { .. }), "{message}");
    assert!(message.contains("console-marker-4711"), "{message}");
    assert_eq!(ok(&vm, "echo after"), "after\n");

    // QMP: answers, errors, and the drives named as documented.
    let status = vm
        .qmp(&json!({"execute": "query-status"}))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(status["status"], "running", "{status}");
    let blocks = vm
        .qmp(&json!({"execute": "query-block"}))
        .unwrap_or_else(|err| panic!("{err}"));
    let names: Vec<&str> = blocks
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|b| b["device"].as_str())
        .collect();
    assert_eq!(names, ["scratch0", "scratch1", "payload"]);
    let err = vm
        .qmp(&json!({"execute": "no-such-command"}))
        .expect_err("unknown command");
    assert!(
        matches!(&err, Error::Qmp { class, .. } if class == "CommandNotFound"),
        "{err}"
    );
    let err = vm
        .qga(&json!({"execute": "guest-no-such-command"}))
        .expect_err("unknown command");
    assert!(matches!(err, Error::Agent { .. }), "{err}");

    assert!(vm.console_log().contains("TESTVM-READY"));
    assert!(vm.qmp_socket().exists() && vm.qga_socket().exists());

    // Dropping the guest ends QEMU and removes its run directory.
    let pid = vm.pid();
    let run_dir = vm.run_dir().to_path_buf();
    drop(vm);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} survived the drop"
    );
    assert!(!run_dir.exists(), "{} is left", run_dir.display());
}

#[test]
fn boot_failures_say_what_happened() {
    let Some(artefacts) = testvm::require_or_skip() else {
        return;
    };
    // Too little memory for the initramfs: QEMU or the kernel gives up,
    // and QEMU exits (-no-reboot) long before the timeout.
    let started = Instant::now();
    let err = artefacts
        .boot(&Options::new().memory_mib(16))
        .expect_err("16 MiB cannot hold the initramfs");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, Error::QemuExited { .. }), "{message}");
    assert!(message.contains("the guest console"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(60), "{message}");

    // No guest is ready within 1 s under TCG.
    let err = artefacts
        .boot(&Options::new().ready_timeout(Duration::from_secs(1)))
        .expect_err("too short");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, Error::BootTimeout { .. }), "{message}");
    assert!(message.contains("TESTVM-READY within 1s"), "{message}");
    assert!(message.contains("the guest console"), "{message}");
}

#[test]
fn skip_reason_agrees_with_locate() {
    let reason = TestVm::skip_reason();
    match testvm::Artefacts::locate() {
        Ok(artefacts) => {
            assert_eq!(reason, None);
            assert!(artefacts.kernel.is_file() && artefacts.initrd.is_file());
        }
        Err(err) => assert_eq!(reason, Some(err.to_string())),
    }
}
