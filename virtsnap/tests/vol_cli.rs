//! The `vol-snapshot-*` verbs and `demo` end to end with the real binary
//! on real images: what each prints, the exit statuses of refusals, and
//! that the storage changed as the output says.

use std::path::Path;
use std::process::{Command, Output};

use snapshot_core::conformance::backends::{self, run};

fn tools_present() -> bool {
    backends::qemu_tools_present()
}

fn virtsnap(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_virtsnap"))
        .args(args)
        .env("VIRTSNAP_STATE", state)
        .env_remove("RUST_LOG")
        .output()
        .expect("run virtsnap")
}

fn ok(state: &Path, args: &[&str]) -> String {
    let out = virtsnap(state, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "virtsnap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn refused(state: &Path, args: &[&str], code: i32) -> String {
    let out = virtsnap(state, args);
    assert_eq!(out.status.code(), Some(code), "virtsnap {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn vol_snapshot_verbs_work_on_a_qcow2_image() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let disk = dir.path().join("disk.qcow2");
    let d = disk.to_str().expect("utf-8");
    run("qemu-img", &["create", "-q", "-f", "qcow2", d, "1M"]);
    run("qemu-io", &["-c", "write -P 1 0 64k", d]);
    assert_eq!(
        ok(&state, &["vol-snapshot-create", d, "--name", "a"]),
        "Volume snapshot a created\n"
    );
    run("qemu-io", &["-c", "write -P 2 0 64k", d]);
    ok(
        &state,
        &[
            "vol-snapshot-create",
            d,
            "--name",
            "b",
            "--description",
            "second",
        ],
    );
    assert!(run("qemu-img", &["snapshot", "-l", d]).contains(" b "));
    assert_eq!(ok(&state, &["vol-snapshot-list", d, "--name"]), "a\nb\n");
    let table = ok(&state, &["vol-snapshot-list", d, "--parent"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(" b") && l.contains("internal") && l.trim_end().ends_with('a')),
        "{table}"
    );
    assert_eq!(ok(&state, &["vol-snapshot-current", d, "--name"]), "b\n");
    let info = ok(&state, &["vol-snapshot-info", d, "a"]);
    assert!(info.contains("Children:       1"), "{info}");
    assert!(info.contains("Driver:         qemu"), "{info}");
    let xml = ok(&state, &["vol-snapshot-dumpxml", d, "b"]);
    assert!(
        xml.starts_with("<volsnapshot>") && xml.contains("<description>second</description>"),
        "{xml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&state, &["vol-snapshot-list", d, "--json"])).expect("json");
    assert_eq!(json[1]["parent"], "a");
    assert_eq!(json[1]["current"], true);
    assert_eq!(
        ok(&state, &["vol-snapshot-revert", d, "a"]),
        "Volume reverted to snapshot a\n"
    );
    let read = Command::new("qemu-io")
        .args(["-c", "read -P 1 0 64k", d])
        .output()
        .expect("qemu-io");
    assert!(!String::from_utf8_lossy(&read.stdout).contains("Pattern verification failed"));
    let err = refused(&state, &["vol-snapshot-revert", d, "nope"], 1);
    assert!(err.contains("no snapshot named 'nope'"), "{err}");
    let err = refused(&state, &["vol-snapshot-create", d, "--name", "a"], 1);
    assert!(err.contains("already has a snapshot named 'a'"), "{err}");
    refused(
        &state,
        &["vol-snapshot-delete", d, "a", "--children", "--metadata"],
        2,
    );
    assert_eq!(
        ok(&state, &["vol-snapshot-delete", d, "a", "--children"]),
        "Volume snapshot a deleted\n"
    );
    assert_eq!(ok(&state, &["vol-snapshot-list", d, "--name"]), "");
    assert_eq!(run("qemu-img", &["snapshot", "-l", d]), "");
    let err = refused(&state, &["vol-snapshot-current", d], 1);
    assert!(err.contains("has no current snapshot"), "{err}");
    let err = refused(&state, &["vol-snapshot-list", "/nonexistent/x.img"], 1);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn a_raw_file_gets_copies_and_internal_is_refused_with_the_way_out() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let disk = dir.path().join("plain.img");
    std::fs::write(&disk, vec![7u8; 128 * 1024]).expect("raw");
    let d = disk.to_str().expect("utf-8");
    let err = refused(&state, &["vol-snapshot-create", d, "--mode", "internal"], 1);
    assert!(err.contains("--mode copy"), "{err}");
    ok(
        &state,
        &["vol-snapshot-create", d, "--name", "c", "--checksum"],
    );
    let copy = dir.path().join("plain.img.c");
    assert_eq!(std::fs::read(&copy).expect("copy"), vec![7u8; 128 * 1024]);
    std::fs::write(&disk, vec![8u8; 128 * 1024]).expect("change");
    std::fs::write(&copy, vec![9u8; 128 * 1024]).expect("damage the copy");
    let err = refused(&state, &["vol-snapshot-revert", d, "c", "--verify"], 1);
    assert!(err.contains("does not match its recorded sha256"), "{err}");
    assert_eq!(std::fs::read(&disk).expect("disk"), vec![8u8; 128 * 1024]);
    let dry = ok(
        &state,
        &["vol-snapshot-create", d, "--name", "d", "--dry-run"],
    );
    assert!(dry.contains("<name>d</name>"), "{dry}");
    assert!(dry.contains("<snapshot mode='copy' type='file'>"), "{dry}");
    assert!(dry.contains("<driver name='file'/>"), "{dry}");
    assert!(!dir.path().join("plain.img.d").exists());
}

#[test]
fn demo_runs_and_checks_every_step() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(dir.path(), &["demo"]);
    assert!(
        out.contains("deleted 'e2', in the middle of the external chain"),
        "{out}"
    );
    // The domain part: a dry-run plan, then the checks it proved.
    assert!(
        out.contains("plan: create snapshot 's1' of domain 'demo'"),
        "{out}"
    );
    assert!(
        out.contains("-> both disks read byte for byte what they held at 's1'"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("removing the temporary directories"),
        "{out}"
    );
}

#[test]
fn snapshots_made_by_qemu_img_are_discovered_and_imported() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let disk = dir.path().join("old.qcow2");
    let d = disk.to_str().expect("utf-8");
    run("qemu-img", &["create", "-q", "-f", "qcow2", d, "1M"]);
    run("qemu-io", &["-c", "write -P 1 0 64k", d]);
    run("qemu-img", &["snapshot", "-c", "x1", d]);
    run("qemu-io", &["-c", "write -P 2 0 64k", d]);
    run("qemu-img", &["snapshot", "-c", "x2", d]);
    run("qemu-io", &["-c", "write -P 3 0 64k", d]);
    let found = ok(&state, &["vol-snapshot-discover", d]);
    let names: Vec<&str> = found
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["x1", "x2"], "{found}");
    assert_eq!(
        ok(&state, &["vol-snapshot-discover", d, "--import", "x1"]),
        "Volume snapshot x1 imported\n"
    );
    let err = refused(&state, &["vol-snapshot-discover", d, "--import", "nope"], 1);
    assert!(err.contains("no unrecorded snapshot named 'nope'"), "{err}");
    refused(&state, &["vol-snapshot-discover", d, "x2"], 2);
    ok(&state, &["vol-snapshot-discover", d, "--import"]);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&state, &["vol-snapshot-list", d, "--json"])).expect("json");
    assert_eq!(json[1]["name"], "x2");
    assert_eq!(json[1]["parent"], "x1");
    assert_eq!(json[1]["current"], true);
    ok(&state, &["vol-snapshot-revert", d, "x1"]);
    let read = Command::new("qemu-io")
        .args(["-c", "read -P 1 0 64k", d])
        .output()
        .expect("qemu-io");
    let said = String::from_utf8_lossy(&read.stdout);
    assert!(
        said.contains("read 65536/65536") && !said.contains("verification failed"),
        "{said}"
    );
    assert_eq!(
        ok(&state, &["vol-snapshot-discover", d, "--import"]),
        format!("{d} holds no unrecorded snapshots\n")
    );
}
