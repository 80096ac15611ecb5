//! Plugins in the `virtsnap` command line: discovered in
//! `$VIRTSNAP_PLUGIN_DIR` and `STATE_DIR/plugins`, listed by
//! `plugin-list` (refused ones with the reason), and used by the volume
//! verbs with `--driver` like a built-in driver: the example C plugin
//! takes, reverts (verified) and deletes a snapshot, byte for byte.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn run(exe: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args).env_remove("VIRTSNAP_PLUGIN_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running virtsnap {args:?}: {e}"))
}

fn ok(exe: &Path, env: &[(&str, &Path)], args: &[&str]) -> String {
    let out = run(exe, env, args);
    assert!(
        out.status.success(),
        "virtsnap {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn plugins_are_listed_and_used_by_the_volume_verbs() {
    let Some(dircopy) = support::dircopy() else {
        return;
    };
    let Some(bad) = support::c_test_plugin("too_small") else {
        return;
    };
    let file_plugin = support::cargo_plugin("virtsnap-plugin-file", "virtsnap_plugin_file");
    let exe = support::cargo_bin("virtsnap", "virtsnap");
    let work = tempfile::tempdir().expect("tempdir");
    let plugins = work.path().join("plugins");
    let state = work.path().join("state");
    std::fs::create_dir_all(state.join("plugins")).expect("mkdir");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    std::fs::copy(&dircopy, plugins.join("libvirtsnap_dircopy.so")).expect("copy");
    std::fs::copy(&bad, plugins.join("libbroken.so")).expect("copy");
    std::fs::copy(
        &file_plugin,
        state.join("plugins/libvirtsnap_plugin_file.so"),
    )
    .expect("copy");
    let env = [
        ("VIRTSNAP_PLUGIN_DIR", plugins.as_path()),
        ("VIRTSNAP_STATE", state.as_path()),
    ];

    let disk = work.path().join("disk.img");
    std::fs::write(&disk, vec![0x11u8; 256 * 1024]).expect("write");
    let disk_s = disk.to_str().expect("utf-8");

    let list = ok(&exe, &env, &["plugin-list", "--volume", disk_s]);
    assert!(
        list.contains("dircopy") && list.contains("parallel"),
        "{list}"
    );
    assert!(
        list.contains("file-plugin") && list.contains("libvirtsnap_plugin_file.so"),
        "{list}"
    );
    assert!(list.contains("offline: copy,revert"), "{list}");
    assert!(list.contains("in use: declines"), "{list}");
    assert!(
        list.contains("refused:") && list.contains("libbroken.so") && list.contains("less than"),
        "{list}"
    );

    ok(
        &exe,
        &env,
        &[
            "vol-snapshot-create",
            disk_s,
            "--name",
            "a",
            "--driver",
            "dircopy",
            "--checksum",
        ],
    );
    let copy = work.path().join("disk.img.a");
    assert_eq!(
        std::fs::read(&copy).expect("the copy"),
        vec![0x11u8; 256 * 1024]
    );
    let xml = ok(&exe, &env, &["vol-snapshot-dumpxml", disk_s, "a"]);
    assert!(xml.contains("dircopy") && xml.contains("sha256"), "{xml}");

    std::fs::write(&disk, vec![0x22u8; 256 * 1024]).expect("write");
    ok(
        &exe,
        &env,
        &["vol-snapshot-revert", disk_s, "a", "--verify"],
    );
    assert_eq!(
        std::fs::read(&disk).expect("disk"),
        vec![0x11u8; 256 * 1024]
    );

    let names = ok(&exe, &env, &["vol-snapshot-list", disk_s, "--name"]);
    assert_eq!(names.trim(), "a");
    ok(&exe, &env, &["vol-snapshot-delete", disk_s, "a"]);
    assert!(!copy.exists(), "the plugin removed the copy");

    // Without the plugin directory, the snapshot's driver is unknown and
    // virtsnap says so rather than guessing.
    ok(
        &exe,
        &env,
        &[
            "vol-snapshot-create",
            disk_s,
            "--name",
            "b",
            "--driver",
            "dircopy",
        ],
    );
    let state_only = [("VIRTSNAP_STATE", state.as_path())];
    let out = run(&exe, &state_only, &["vol-snapshot-revert", disk_s, "b"]);
    assert!(!out.status.success(), "reverted without its driver");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dircopy"), "{err}");
}
