//! The lifecycle verbs and save/restore through the `virtsnap` binary,
//! on a real QEMU running the stub guest: start, domstate, dominfo,
//! list, suspend, resume, save (with and without disks), restore,
//! destroy, the refusals a user meets (starting twice, undefining a
//! running domain, destroying a stopped one), and attach to a QEMU
//! started by hand.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tool_missing() -> Option<&'static str> {
    ["qemu-system-x86_64", "qemu-img", "gcc", "ld"]
        .into_iter()
        .find(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

fn ready(test: &str) -> bool {
    match tool_missing() {
        None => true,
        Some(t) => {
            assert!(
                std::env::var_os("VIRTSNAP_REQUIRE_BACKENDS").is_none(),
                "{test}: {t} is not installed (VIRTSNAP_REQUIRE_BACKENDS is set)"
            );
            eprintln!("SKIP {test}: {t} is not installed");
            false
        }
    }
}

fn stub_kernel(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../driver-qemu/tests/guest/stub.S");
    let (obj, elf) = (dir.join("stub.o"), dir.join("stub.elf"));
    assert!(
        Command::new("gcc")
            .args(["-m32", "-c"])
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .expect("gcc")
            .success()
    );
    assert!(
        Command::new("ld")
            .args(["-m", "elf_i386", "-Ttext=0x100000", "-e", "_start", "-o"])
            .arg(&elf)
            .arg(&obj)
            .status()
            .expect("ld")
            .success()
    );
    elf
}

struct Cli {
    state: PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_virtsnap"))
            .args(args)
            .env("VIRTSNAP_STATE", &self.state)
            .output()
            .expect("virtsnap runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "virtsnap {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "virtsnap {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn lifecycle_save_and_restore_through_the_cli() {
    if !ready("lifecycle_cli") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("vc")
        .tempdir_in("/tmp")
        .expect("dir");
    let cli = Cli {
        state: dir.path().join("s"),
    };
    let img = dir.path().join("vda.qcow2");
    assert!(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("32M")
            .status()
            .expect("qemu-img")
            .success()
    );
    let xml = dir.path().join("g.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>g</name><memory unit='MiB'>32</memory>\
             <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel></os><devices>\
             <disk type='file'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>\
             </devices></domain>",
            stub_kernel(dir.path()).display(),
            img.display()
        ),
    )
    .expect("xml");
    cli.ok(&["define", xml.to_str().expect("utf8")]);
    assert_eq!(cli.ok(&["domstate", "g"]), "shut off\n");
    assert!(
        cli.ok(&["list"]).lines().count() == 2,
        "no running domain listed"
    );

    assert!(cli.ok(&["start", "g"]).contains("started (tcg)"));
    assert_eq!(cli.ok(&["domstate", "g"]), "running\n");
    let info = cli.ok(&["dominfo", "g"]);
    for want in [
        "State:          running",
        "Accelerator:    tcg",
        "QEMU version:",
        "Pid:",
    ] {
        assert!(info.contains(want), "{want} in\n{info}");
    }
    let list = cli.ok(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["+", "g", "running"]),
        "{list}"
    );
    assert!(cli.fails(&["start", "g"]).contains("already running"));
    assert!(cli.fails(&["undefine", "g"]).contains("destroy it first"));

    cli.ok(&["suspend", "g"]);
    assert_eq!(cli.ok(&["domstate", "g"]), "paused\n");
    cli.ok(&["resume", "g"]);
    assert_eq!(cli.ok(&["domstate", "g"]), "running\n");

    // Save and stop, restore; then with the disks, kept running.
    let save = dir.path().join("g.save");
    cli.ok(&["save", "g", save.to_str().expect("utf8")]);
    assert_eq!(cli.ok(&["domstate", "g"]), "shut off\n");
    assert!(
        cli.fails(&["save", "g", save.to_str().expect("utf8")])
            .contains("not running")
    );
    cli.ok(&["restore", save.to_str().expect("utf8")]);
    assert_eq!(cli.ok(&["domstate", "g"]), "running\n");
    let with_disks = dir.path().join("gd.save");
    let out = cli.ok(&[
        "save",
        "g",
        with_disks.to_str().expect("utf8"),
        "--disks",
        "--resume",
    ]);
    assert!(out.contains("with its disks"), "{out}");
    assert_eq!(cli.ok(&["domstate", "g"]), "running\n");
    assert!(
        cli.ok(&["snapshot-list", "g", "--name"])
            .starts_with("save-")
    );
    cli.ok(&["destroy", "g"]);
    cli.ok(&["restore", with_disks.to_str().expect("utf8"), "--paused"]);
    assert_eq!(cli.ok(&["domstate", "g"]), "paused\n");
    assert!(
        cli.fails(&["restore", xml.to_str().expect("utf8")])
            .contains("not a virtsnap save file")
    );

    cli.ok(&["destroy", "g"]);
    assert_eq!(cli.ok(&["domstate", "g"]), "shut off\n");
    assert!(cli.fails(&["destroy", "g"]).contains("not running"));
}

#[test]
fn attach_adopts_a_qemu_started_elsewhere() {
    if !ready("attach_cli") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("va")
        .tempdir_in("/tmp")
        .expect("dir");
    let cli = Cli {
        state: dir.path().join("s"),
    };
    let img = dir.path().join("d0.qcow2");
    assert!(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("32M")
            .status()
            .expect("qemu-img")
            .success()
    );
    let qmp = dir.path().join("m.sock");
    let pid = dir.path().join("q.pid");
    let ok = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "pc,accel=tcg",
            "-m",
            "32M",
            "-nodefaults",
            "-display",
            "none",
            "-kernel",
        ])
        .arg(stub_kernel(dir.path()))
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=disk0,format=qcow2",
            img.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=disk0"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-pidfile")
        .arg(&pid)
        .arg("-daemonize")
        .status()
        .expect("qemu")
        .success();
    assert!(ok);
    let out = cli.ok(&["attach", "other", "--qmp", qmp.to_str().expect("utf8")]);
    assert!(out.contains("1 disk(s)"), "{out}");
    let xml = cli.ok(&["dumpxml", "other"]);
    assert!(xml.contains(&img.display().to_string()), "{xml}");
    assert!(
        xml.contains("<memory unit='b'>33554432</memory>"),
        "QEMU's RAM: {xml}"
    );
    assert_eq!(cli.ok(&["domstate", "other"]), "running\n");
    assert!(
        cli.ok(&["dominfo", "other"])
            .contains("Adopted:        yes")
    );
    // A live disk-only snapshot of the adopted QEMU.
    cli.ok(&["snapshot-create-as", "other", "a1", "--disk-only"]);
    assert!(cli.ok(&["dumpxml", "other"]).contains("d0.a1"));
    cli.ok(&["destroy", "other"]);
    assert_eq!(cli.ok(&["domstate", "other"]), "shut off\n");
    let qemu_pid = std::fs::read_to_string(&pid).unwrap_or_default();
    assert!(
        qemu_pid.is_empty() || !Path::new(&format!("/proc/{}", qemu_pid.trim())).exists(),
        "QEMU quit"
    );
}
