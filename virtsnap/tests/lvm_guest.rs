//! The `virtsnap` binary on real LVM inside the Linux test guest: volume
//! snapshots of a classic and a thin logical volume created with
//! checksums, listed, reverted (with `--verify`) and deleted through the
//! CLI, the volume's content checked by sha256 at every step and the
//! volume group checked with `lvs`.
//!
//! The host boots the guest with this build's `virtsnap` on the payload
//! disk; without the built guest the test skips with the reason (or
//! fails under `VIRTSNAP_REQUIRE_BACKENDS`).

use std::time::Duration;

use testvm::{Options, TestVm};

/// The environment every `virtsnap` run in the guest gets.
const ENV: &str = "VIRTSNAP_STATE=/tmp/vs-state VIRTSNAP_LVM_SNAPSHOT_SIZE=50%";

fn ok(vm: &TestVm, script: &str) -> String {
    vm.run_ok(script).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `virtsnap ARGS` in the guest, requiring success; its stdout.
fn virtsnap(vm: &TestVm, args: &str) -> String {
    ok(vm, &format!("{ENV} /payload/virtsnap {args}"))
}

/// The sha256 of the whole device.
fn sha(vm: &TestVm, device: &str) -> String {
    let out = ok(vm, &format!("sha256sum {device}"));
    let hash = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(hash.len(), 64, "{out}");
    hash
}

/// The names of the logical volumes of `vsvg` and their tags.
fn lvs(vm: &TestVm) -> Vec<(String, String)> {
    ok(vm, "lvm lvs --noheadings -o lv_name,lv_tags vsvg")
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            (
                f.next().unwrap_or_default().to_string(),
                f.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn lifecycle(vm: &TestVm, lv: &str) {
    let device = format!("/dev/vsvg/{lv}");
    ok(
        vm,
        &format!("dd if=/dev/urandom of={device} bs=1M count=4 conv=fsync 2>/dev/null"),
    );
    let first = sha(vm, &device);
    let out = virtsnap(
        vm,
        &format!("vol-snapshot-create {device} --name s1 --checksum"),
    );
    assert!(out.contains("s1"), "{out}");
    assert!(
        lvs(vm).contains(&(format!("{lv}.s1"), "virtsnap".to_string())),
        "no tagged snapshot volume {lv}.s1: {:?}",
        lvs(vm)
    );
    let xml = virtsnap(vm, &format!("vol-snapshot-dumpxml {device} s1"));
    assert!(
        xml.contains("<driver name='lvm'/>")
            && xml.contains("mode='internal'")
            && xml.contains("<checksum type='sha256'>"),
        "{xml}"
    );
    assert_eq!(
        sha(vm, &device),
        first,
        "taking the snapshot changed the volume"
    );

    ok(
        vm,
        &format!("dd if=/dev/urandom of={device} bs=1M count=2 seek=1 conv=fsync 2>/dev/null"),
    );
    let second = sha(vm, &device);
    assert_ne!(second, first, "the write did not land");
    virtsnap(
        vm,
        &format!("vol-snapshot-create {device} --name s2 --checksum"),
    );
    let list = virtsnap(vm, &format!("vol-snapshot-list {device}"));
    assert!(list.contains("s1") && list.contains("s2"), "{list}");

    let out = virtsnap(vm, &format!("vol-snapshot-revert {device} s1 --verify"));
    assert!(out.contains("reverted"), "{out}");
    assert_eq!(sha(vm, &device), first, "reverting to s1 ({lv})");
    let current = virtsnap(vm, &format!("vol-snapshot-current {device} --name"));
    assert_eq!(current.trim(), "s1");
    virtsnap(vm, &format!("vol-snapshot-revert {device} s2 --verify"));
    assert_eq!(sha(vm, &device), second, "reverting to s2 ({lv})");
    // Both snapshots survive the reverts, as they do with every driver.
    let names: Vec<String> = lvs(vm).into_iter().map(|(n, _)| n).collect();
    for s in ["s1", "s2"] {
        assert!(
            names.contains(&format!("{lv}.{s}")),
            "{lv}.{s} is gone: {names:?}"
        );
    }

    virtsnap(vm, &format!("vol-snapshot-delete {device} s1"));
    let names: Vec<String> = lvs(vm).into_iter().map(|(n, _)| n).collect();
    assert!(!names.contains(&format!("{lv}.s1")), "{names:?}");
    let list = virtsnap(vm, &format!("vol-snapshot-list {device}"));
    assert!(!list.contains("s1") && list.contains("s2"), "{list}");
    assert_eq!(sha(vm, &device), second, "deleting s1 changed the volume");
    virtsnap(vm, &format!("vol-snapshot-delete {device} s2"));
    let list = virtsnap(vm, &format!("vol-snapshot-list {device} --name"));
    assert_eq!(list.trim(), "", "snapshots left");
    let names: Vec<String> = lvs(vm).into_iter().map(|(n, _)| n).collect();
    assert!(
        !names.iter().any(|n| n.starts_with(&format!("{lv}."))),
        "{names:?}"
    );
}

#[test]
fn virtsnap_snapshots_classic_and_thin_logical_volumes_inside_the_guest() {
    let payload = tempfile::tempdir().expect("payload dir");
    std::fs::copy(
        env!("CARGO_BIN_EXE_virtsnap"),
        payload.path().join("virtsnap"),
    )
    .expect("copying virtsnap");
    let options = Options::new()
        .disk(512 << 20)
        .payload(payload.path())
        .command_timeout(Duration::from_secs(300));
    let Some(vm) = testvm::boot_or_skip(&options) else {
        return;
    };
    let disk = TestVm::scratch_device(0);
    ok(
        &vm,
        &format!(
            "set -e; pvcreate -q {disk}; vgcreate -q -s 1m vsvg {disk}; \
             lvcreate -qy -L 16m -n classic vsvg; \
             lvcreate -qy --type thin-pool -L 128m -n pool vsvg; \
             lvcreate -qy --type thin --virtualsize 16m --thinpool pool -n thin vsvg"
        ),
    );
    lifecycle(&vm, "classic");
    lifecycle(&vm, "thin");
}
