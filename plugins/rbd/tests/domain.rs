//! A shut-off domain with two RBD disks (libvirt's
//! `<disk type='network'><source protocol='rbd' ...>` with the cluster's
//! monitor as `<host>`, the client as `<auth username>` and the cluster's
//! ceph.conf as `<config file>`) and one local qcow2 disk, driven through
//! the `virtsnap` binary with the rbd plugin in its plugin directory: one
//! snapshot across all three (RBD snapshots by the plugin, a qcow2
//! internal snapshot by the qemu driver), a revert after the guest wrote
//! to every disk, and a delete; each disk's content checked by sha256 at
//! every step, the RBD disks through librbd reads.

mod support;

use std::path::{Path, PathBuf};

use snapshot_core::conformance::backends;
use support::sha256;

const MIB: u64 = 1 << 20;

const S1: &str = "<domainsnapshot><name>s1</name><description>three disks</description><disks>\
    <disk name='vda' snapshot='internal'/>\
    <disk name='vdb' snapshot='internal'/>\
    <disk name='vdc' snapshot='internal'/>\
    </disks></domainsnapshot>";

struct Vm {
    dir: tempfile::TempDir,
    cli: support::Cli,
    /// vdb's and vdc's volume names (`rbd:...`).
    rbd: [String; 2],
}

impl Vm {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.cli.ok(args)
    }

    /// The sha256 of each disk as the guest reads it: vda (qcow2), vdb
    /// and vdc (through librbd).
    fn contents(&self) -> [String; 3] {
        [
            driver_sha(&backends::content(&self.path("vda.qcow2"), "qcow2")),
            sha256(&self.rbd[0], None),
            sha256(&self.rbd[1], None),
        ]
    }

    /// The guest writes `pattern` to every disk.
    fn write_all(&self, offset: u64, pattern: u8) {
        backends::write(&self.path("vda.qcow2"), "qcow2", offset, MIB, pattern);
        for (i, vol) in self.rbd.iter().enumerate() {
            let image = support::open(vol, None);
            let data = vec![pattern.wrapping_add(u8::try_from(i).expect("small")); 1 << 20];
            image.write(offset, &data).expect("write");
            image.flush().expect("flush");
        }
    }
}

fn driver_sha(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn rbd_disk(target: &str, pool: &str, ns: &str, image: &str, mon: &str, conf: &Path) -> String {
    let (host, port) = mon.split_once(':').expect("host:port");
    format!(
        "    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='{pool}/{ns}/{image}'>
        <host name='{host}' port='{port}'/>
        <auth username='admin'><secret type='ceph' usage='client.admin'/></auth>
        <config file='{}'/>
      </source>
      <target dev='{target}' bus='virtio'/>
    </disk>\n",
        conf.display()
    )
}

#[test]
fn one_snapshot_across_two_rbd_disks_and_a_qcow2_disk() {
    if !backends::qemu_tools_present() {
        return;
    }
    let Some(ns) = support::namespace("domain") else {
        return;
    };
    let cluster = ns.cluster();
    ns.create_image("vdb", 8 * MIB).expect("vdb");
    ns.create_image("vdc", 8 * MIB).expect("vdc");
    let dir = tempfile::tempdir().expect("dir");
    let vda = dir.path().join("vda.qcow2");
    backends::qcow2_create(&vda, 8 * MIB, &[]);
    let xml = format!(
        "<domain type='kvm'>\n  <name>vm</name>\n  <memory unit='MiB'>64</memory>\n  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{}'/>
      <target dev='vda' bus='virtio'/>
    </disk>\n{}{}  </devices>\n</domain>\n",
        vda.display(),
        rbd_disk(
            "vdb",
            ns.pool(),
            ns.name(),
            "vdb",
            &cluster.mon_host(),
            cluster.conf()
        ),
        rbd_disk(
            "vdc",
            ns.pool(),
            ns.name(),
            "vdc",
            &cluster.mon_host(),
            cluster.conf()
        ),
    );
    // What virtsnap hands the plugin for vdb: QEMU's name, with the
    // monitor, the client and the ceph.conf from the XML.
    let name = |image: &str| {
        let (host, port) = cluster
            .mon_host()
            .split_once(':')
            .map(|(h, p)| (h.to_string(), p.to_string()))
            .expect("host:port");
        format!(
            "rbd:{}/{}/{image}:mon_host={host}\\:{port}:id=admin:conf={}",
            ns.pool(),
            ns.name(),
            cluster.conf().display()
        )
    };
    let vm = Vm {
        dir,
        cli: support::Cli::new(support::plugin_dir()),
        rbd: [name("vdb"), name("vdc")],
    };
    std::fs::write(vm.path("vm.xml"), xml).expect("domain XML");
    std::fs::write(vm.path("s1.xml"), S1).expect("snapshot XML");
    vm.ok(&["define", vm.path("vm.xml").to_str().expect("utf-8")]);

    vm.write_all(0, 0x10);
    let at_s1 = vm.contents();

    // The plan routes the RBD disks to the plugin, vda to qemu.
    let plan = vm.ok(&[
        "snapshot-create",
        "vm",
        "--xmlfile",
        vm.path("s1.xml").to_str().expect("utf-8"),
        "--dry-run",
    ]);
    assert!(
        plan.contains("rbd") && plan.contains("qemu"),
        "the plan:\n{plan}"
    );

    vm.ok(&[
        "snapshot-create",
        "vm",
        "--xmlfile",
        vm.path("s1.xml").to_str().expect("utf-8"),
    ]);
    assert_eq!(vm.contents(), at_s1, "taking s1 changed a disk");
    for image in ["vdb", "vdc"] {
        let snaps = ns
            .rbd(["snap", "ls", &ns.image_spec(image)])
            .expect("snap ls");
        assert!(
            snaps.contains("s1"),
            "{image} has no RBD snapshot s1:\n{snaps}"
        );
    }
    assert_eq!(
        [
            sha256(&vm.rbd[0], Some("s1")),
            sha256(&vm.rbd[1], Some("s1"))
        ],
        [at_s1[1].clone(), at_s1[2].clone()],
        "what the RBD snapshots hold"
    );
    let qcow2 = backends::run(
        "qemu-img",
        &["snapshot", "-l", vda.to_str().expect("utf-8")],
    );
    assert!(
        qcow2.contains("s1"),
        "vda has no internal snapshot s1:\n{qcow2}"
    );
    assert_eq!(vm.ok(&["snapshot-current", "vm", "--name"]).trim(), "s1");

    // The guest writes everywhere; the revert brings all three back.
    vm.write_all(2 * MIB, 0x20);
    let written = vm.contents();
    for i in 0..3 {
        assert_ne!(written[i], at_s1[i], "the write did not reach disk {i}");
    }
    vm.ok(&["snapshot-revert", "vm", "s1"]);
    assert_eq!(vm.contents(), at_s1, "the revert to s1");

    // A delete removes every disk's snapshot and changes no content.
    vm.write_all(4 * MIB, 0x30);
    let before_delete = vm.contents();
    vm.ok(&["snapshot-delete", "vm", "s1"]);
    assert_eq!(vm.contents(), before_delete, "the delete changed a disk");
    for image in ["vdb", "vdc"] {
        let snaps = ns
            .rbd(["snap", "ls", &ns.image_spec(image)])
            .expect("snap ls");
        assert!(!snaps.contains("s1"), "{image} kept s1:\n{snaps}");
    }
    let qcow2 = backends::run(
        "qemu-img",
        &["snapshot", "-l", vda.to_str().expect("utf-8")],
    );
    assert!(!qcow2.contains("s1"), "vda kept s1:\n{qcow2}");
    assert_eq!(vm.ok(&["snapshot-list", "vm", "--name"]).trim(), "");
}
