//! `snapshot-create` and `snapshot-create-as` end to end with the real
//! binary on real images made with qemu-img: a domain `vm` with two qcow2
//! disks (vda, vdb) and a raw one (vdc), defined with `virtsnap define`.
//! The dry run changes nothing; snapshots land in the images (internal
//! snapshots, overlays, copies), the metadata and the domain definition;
//! `--print-xml` prints what virsh prints (libvirt's
//! `tests/virshtestdata/snapshot-create-args` and more); refusals exit
//! with status 1 and say what to do; a create killed half-way is rolled
//! back, with a warning, by the next one.

mod domain_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use snapshot_core::conformance::backends::{self, run};
use snapshot_core::domain_api::DomainApi;
use snapshot_core::driver::VolumeDriver;
use snapshot_core::exec::StepEvent;
use snapshot_core::plan::{CreateFlags, Step};
use snapshot_core::store::Layout;

const MIB: u64 = 1 << 20;

/// A scratch directory with the images of domain `vm` and the state
/// directory (`state/`) where it is defined.
struct Vm {
    dir: tempfile::TempDir,
}

impl Vm {
    fn new() -> Self {
        let vm = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        backends::qcow2_create(&vm.path("vda.qcow2"), 4 * MIB, &[]);
        backends::qcow2_create(&vm.path("vdb.qcow2"), 4 * MIB, &[]);
        std::fs::write(vm.path("vdc.raw"), vec![0u8; 4 << 20]).expect("raw image");
        backends::write(&vm.path("vda.qcow2"), "qcow2", 0, 65_536, 0xa1);
        backends::write(&vm.path("vdb.qcow2"), "qcow2", 0, 65_536, 0xb1);
        backends::write(&vm.path("vdc.raw"), "raw", 0, 65_536, 0xc1);
        let disk = |format: &str, image: &str, target: &str| {
            format!(
                "    <disk type='file' device='disk'>
      <driver name='qemu' type='{format}'/>
      <source file='{}'/>
      <target dev='{target}' bus='virtio'/>
    </disk>\n",
                vm.p(image)
            )
        };
        let xml = format!(
            "<domain type='kvm'>\n  <name>vm</name>\n  <memory unit='MiB'>64</memory>\n  <devices>\n{}{}{}  </devices>\n</domain>\n",
            disk("qcow2", "vda.qcow2", "vda"),
            disk("qcow2", "vdb.qcow2", "vdb"),
            disk("raw", "vdc.raw", "vdc"),
        );
        std::fs::write(vm.path("vm.xml"), xml).expect("domain XML");
        assert_eq!(
            vm.ok(&["define", &vm.p("vm.xml")]),
            format!("Domain 'vm' defined from {}\n", vm.p("vm.xml"))
        );
        vm
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path` as a string.
    fn p(&self, name: &str) -> String {
        self.path(name).to_str().expect("UTF-8 path").to_string()
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_virtsnap"))
            .args(args)
            .env("VIRTSNAP_STATE", self.state())
            .env_remove("RUST_LOG")
            .output()
            .expect("run virtsnap")
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "virtsnap {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 stdout")
    }

    /// Runs a command that must be refused with status 1 and nothing on
    /// stdout; its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "virtsnap {args:?}: {err}");
        assert!(out.stdout.is_empty(), "virtsnap {args:?}: stdout given");
        assert!(err.starts_with("virtsnap: error: "), "{args:?}: {err}");
        err
    }

    /// The files beside the state directory.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "state")
            .collect();
        v.sort();
        v
    }

    /// The internal snapshots of a qcow2 image, by qemu-img.
    fn internal(&self, image: &str) -> Vec<String> {
        run("qemu-img", &["snapshot", "-l", "-U", &self.p(image)])
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }

    /// The backing file of a qcow2 image, by qemu-img.
    fn backing(&self, image: &str) -> Option<String> {
        let info = run("qemu-img", &["info", "-U", "--output=json", &self.p(image)]);
        let info: serde_json::Value = serde_json::from_str(&info).expect("qemu-img info JSON");
        info["backing-filename"].as_str().map(str::to_string)
    }

    /// What the guest sees on vda, vdb (through its current source) and
    /// vdc.
    fn contents(&self) -> Vec<Vec<u8>> {
        let xml = self.ok(&["dumpxml", "vm"]);
        let vdb = if xml.contains(&self.p("x.s1")) {
            self.path("x.s1")
        } else {
            self.path("vdb.qcow2")
        };
        vec![
            backends::content(&self.path("vda.qcow2"), "qcow2"),
            backends::content(&vdb, "qcow2"),
            backends::content(&self.path("vdc.raw"), "raw"),
        ]
    }

    /// Everything a refused or planned-only create must leave alone.
    fn everything(&self) -> (Vec<String>, String, String, Vec<String>, Vec<String>) {
        (
            self.files(),
            self.ok(&["dumpxml", "vm"]),
            self.ok(&["snapshot-list", "vm", "--name"]),
            self.internal("vda.qcow2"),
            self.internal("vdb.qcow2"),
        )
    }
}

#[test]
fn dry_run_prints_the_numbered_plan_and_changes_nothing() {
    if !backends::qemu_tools_present() {
        return;
    }
    let vm = Vm::new();
    let xml = vm.path("s1.xml");
    std::fs::write(
        &xml,
        "<domainsnapshot><name>s1</name><disks><disk name='vdb' snapshot='external'/></disks></domainsnapshot>",
    )
    .expect("write");
    let xml = xml.to_str().expect("path");
    let before = vm.everything();
    let plan = vm.ok(&["snapshot-create", "vm", "--xmlfile", xml, "--dry-run"]);
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(
        lines[0],
        "plan: create snapshot 's1' of domain 'vm': domain shut off, state shutoff, no memory; \
         disks: vda internal, vdb external, vdc internal",
        "{plan}"
    );
    let steps: Vec<&str> = lines[1..]
        .iter()
        .filter(|l| !l.starts_with("  note: "))
        .copied()
        .collect();
    for (i, (step, says)) in steps
        .iter()
        .zip([
            format!("vda: internal snapshot in {}", vm.p("vda.qcow2")),
            format!(
                "vdb: new qcow2 overlay {} on {} becomes its source",
                vm.p("vdb.s1"),
                vm.p("vdb.qcow2")
            ),
            format!("vdc: copy of {} to {}", vm.p("vdc.raw"), vm.p("vdc.raw.s1")),
            format!("domain definition: vdb now uses {}", vm.p("vdb.s1")),
            "write the snapshot's metadata".to_string(),
            "make 's1' the current snapshot".to_string(),
        ])
        .enumerate()
    {
        let number = format!("  {:>2}. ", i + 1);
        assert!(
            step.starts_with(&number) && step.contains(&says),
            "step {}: {says}\n{plan}",
            i + 1
        );
    }
    assert_eq!(steps.len(), 6, "{plan}");
    assert!(
        plan.contains("  note: vdc: raw has no internal snapshots"),
        "{plan}"
    );

    // The same request from arguments plans the same.
    assert_eq!(
        vm.ok(&[
            "snapshot-create-as",
            "vm",
            "s1",
            "--diskspec",
            "vdb,snapshot=external",
            "--dry-run"
        ]),
        plan
    );
    // Without XML: every default, the name being the creation time.
    let defaults = vm.ok(&["snapshot-create", "vm", "--dry-run"]);
    assert!(
        defaults.starts_with("plan: create snapshot '")
            && defaults.contains("disks: vda internal, vdb internal, vdc internal"),
        "{defaults}"
    );
    assert_eq!(vm.everything(), before, "a dry run changes nothing");
}

#[test]
fn snapshot_create_as_takes_internal_and_external_disk_snapshots() {
    if !backends::qemu_tools_present() {
        return;
    }
    let vm = Vm::new();
    let before = vm.contents();
    let overlay = vm.p("x.s1");
    let vdb_spec = format!("vdb,snapshot=external,file={overlay}");
    let out = vm.run(&[
        "snapshot-create-as",
        "vm",
        "s1",
        "first <snapshot>",
        "--diskspec",
        "vda,snapshot=internal",
        "--diskspec",
        &vdb_spec,
        "--diskspec",
        "vdc,snapshot=no",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Domain snapshot s1 created\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("vdc: not snapshotted"),
        "the plan's notes go to stderr"
    );

    // The storage: an internal snapshot in vda, an overlay on vdb, vdc
    // left alone; the guest sees what it saw.
    assert_eq!(vm.internal("vda.qcow2"), ["s1"]);
    assert!(vm.internal("vdb.qcow2").is_empty());
    assert_eq!(vm.backing("x.s1"), Some(vm.p("vdb.qcow2")));
    assert_eq!(
        vm.files(),
        ["vda.qcow2", "vdb.qcow2", "vdc.raw", "vm.xml", "x.s1"]
    );
    assert_eq!(vm.contents(), before);

    // The domain: vdb's source is the overlay now.
    let domain = vm.ok(&["dumpxml", "vm"]);
    assert!(
        domain.contains(&format!("<source file='{overlay}'/>"))
            && !domain.contains(&vm.p("vdb.qcow2")),
        "{domain}"
    );

    // The metadata.
    assert_eq!(vm.ok(&["snapshot-list", "vm", "--name"]), "s1\n");
    assert_eq!(vm.ok(&["snapshot-current", "vm", "--name"]), "s1\n");
    let list = vm.ok(&["snapshot-list", "vm"]);
    assert!(
        list.lines()
            .nth(2)
            .is_some_and(|l| l.starts_with(" s1 ") && l.ends_with("shutoff")),
        "{list}"
    );
    let stored = vm.ok(&["snapshot-dumpxml", "vm", "s1"]);
    for part in [
        "<description>first &lt;snapshot&gt;</description>",
        "<state>shutoff</state>",
        "<disk name='vda' snapshot='internal'/>",
        "<disk name='vdb' snapshot='external' type='file'>",
        &format!("<source file='{overlay}'/>"),
        "<disk name='vdc' snapshot='no'/>",
    ] {
        assert!(stored.contains(part), "{part}\n{stored}");
    }

    // All defaults, the name from the clock: vda and the overlay keep
    // internal snapshots, vdc (raw) gets a copy; s1 is its parent.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let out = vm.ok(&["snapshot-create", "vm"]);
    let name = out
        .strip_prefix("Domain snapshot ")
        .and_then(|s| s.strip_suffix(" created\n"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let when: u64 = name.parse().expect("a creation time");
    assert!(when.abs_diff(now) < 600, "{name} vs {now}");
    assert_eq!(vm.internal("vda.qcow2"), ["s1", name.as_str()]);
    assert_eq!(vm.internal("x.s1"), [name.as_str()]);
    assert_eq!(
        std::fs::read(vm.path(&format!("vdc.raw.{name}"))).expect("copy of vdc"),
        std::fs::read(vm.path("vdc.raw")).expect("vdc")
    );
    assert_eq!(vm.ok(&["snapshot-parent", "vm", &name]), "s1\n");

    // From a file: virsh's "created from".
    let xml = vm.path("s3.xml");
    std::fs::write(
        &xml,
        "<domainsnapshot><name>s3</name><disks><disk name='vdc' snapshot='no'/></disks></domainsnapshot>",
    )
    .expect("write");
    let xml = xml.to_str().expect("path");
    assert_eq!(
        vm.ok(&["snapshot-create", "vm", "--xmlfile", xml]),
        format!("Domain snapshot s3 created from '{xml}'\n")
    );

    // --no-metadata: taken, not remembered.
    let out = vm.run(&[
        "snapshot-create-as",
        "vm",
        "--name",
        "s4",
        "--no-metadata",
        "--diskspec",
        "vdc,snapshot=no",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Domain snapshot s4 created\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-metadata"));
    assert_eq!(vm.internal("vda.qcow2"), ["s1", name.as_str(), "s3", "s4"]);
    assert_eq!(
        vm.ok(&["snapshot-list", "vm", "--name"]),
        format!("{name}\ns1\ns3\n")
    );
    assert_eq!(vm.ok(&["snapshot-current", "vm", "--name"]), "s3\n");
}

#[test]
fn print_xml_is_what_virsh_prints() {
    // libvirt's tests/virshtestdata/snapshot-create-args.{in,out}: the
    // domain need not exist, nothing is touched.
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let print = |args: &str| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_virtsnap"))
            .arg("snapshot-create-as")
            .arg("--print-xml")
            .args(args.split(' '))
            .env("VIRTSNAP_STATE", &state)
            .output()
            .expect("run virtsnap");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let name_desc_vda_vdb = "<domainsnapshot>
  <name>name</name>
  <description>desc</description>
  <disks>
    <disk name='vda'/>
    <disk name='vdb'/>
  </disks>
</domainsnapshot>

";
    for args in [
        "test name desc vda vdb",
        "test name desc --diskspec vda vdb",
        "test name desc --diskspec vda --diskspec vdb",
        "test --diskspec vda name --diskspec vdb desc",
        "--description desc --name name --domain test vda vdb",
        "--description desc --diskspec vda --name name --domain test vdb",
    ] {
        assert_eq!(print(args), name_desc_vda_vdb, "{args}");
    }
    assert_eq!(
        print("test name vda vdb"),
        "<domainsnapshot>
  <name>name</name>
  <description>vda</description>
  <disks>
    <disk name='vdb'/>
  </disks>
</domainsnapshot>

"
    );
    assert_eq!(
        print(
            "test --diskspec vda,file=a&b,,c,snapshot=external --description 1<2 --diskspec vdb --memspec file=d,,e"
        ),
        "<domainsnapshot>
  <description>1&lt;2</description>
  <memory file='d,e'/>
  <disks>
    <disk name='vda' snapshot='external'>
      <source file='a&amp;b,c'/>
    </disk>
    <disk name='vdb'/>
  </disks>
</domainsnapshot>

"
    );

    // Every field, each storage type, quotes and doubled commas.
    assert_eq!(
        print(
            "vm s1 --memspec /mem/s1,,a,snapshot=external \
             --diskspec vda,snapshot=external,driver=qcow2,stype=file,file=/img/vda.s1 \
             --diskspec /img/b,,c.qcow2,snapshot=external,stype=block,file=/dev/vg/b,,c \
             --diskspec vdc,snapshot=external,stype=network,file=rbd:pool/c'1 \
             --diskspec vdd,snapshot=no --diskspec vde,snapshot=internal"
        ),
        "<domainsnapshot>
  <name>s1</name>
  <memory snapshot='external' file='/mem/s1,a'/>
  <disks>
    <disk name='vda' snapshot='external' type='file'>
      <driver type='qcow2'/>
      <source file='/img/vda.s1'/>
    </disk>
    <disk name='/img/b,c.qcow2' snapshot='external' type='block'>
      <source dev='/dev/vg/b,c'/>
    </disk>
    <disk name='vdc' snapshot='external' type='network'>
      <source protocol='rbd' name='pool/c&apos;1'/>
    </disk>
    <disk name='vdd' snapshot='no'/>
    <disk name='vde' snapshot='internal'/>
  </disks>
</domainsnapshot>

"
    );
    assert_eq!(
        print("vm --name \"q\" --memspec snapshot=no"),
        "<domainsnapshot>\n  <name>&quot;q&quot;</name>\n  <memory snapshot='no'/>\n</domainsnapshot>\n\n"
    );
    assert_eq!(print("vm"), "<domainsnapshot>\n</domainsnapshot>\n\n");
    assert!(!state.exists(), "--print-xml touches no state");
}

#[test]
fn refusals_exit_1_and_say_what_to_do() {
    if !backends::qemu_tools_present() {
        return;
    }
    let vm = Vm::new();
    let before = vm.everything();
    let create_as = |extra: &[&str]| {
        let mut args = vec!["snapshot-create-as", "vm", "s1"];
        args.extend_from_slice(extra);
        vm.refused(&args)
    };

    // Bad specs name the field and what is accepted.
    let err = create_as(&["--diskspec", "vda,size=1G"]);
    assert_eq!(
        err,
        "virtsnap: error: unable to parse diskspec 'vda,size=1G': unknown field 'size=1G'; \
         the fields are disk[,snapshot=type][,driver=type][,stype=type][,file=name] \
         (write a comma inside a value as ',,')\n"
    );
    let err = create_as(&["--diskspec", "vda,snapshot=fast"]);
    assert!(
        err.contains("snapshot='fast' is not a snapshot mode; use no, internal, external, manual"),
        "{err}"
    );
    let err = create_as(&["--diskspec", "vda,stype=dir"]);
    assert!(err.contains("use file, block or network"), "{err}");
    let err = create_as(&["--memspec", "mem.img"]);
    assert!(
        err.contains("unable to parse memspec 'mem.img'") && err.contains("write file=mem.img"),
        "{err}"
    );

    // Refused plans say what to change.
    let err = create_as(&["--memspec", &vm.p("mem")]);
    assert!(
        err.contains("memory state cannot be saved: domain 'vm' is shut off")
            && err.contains("drop <memory>")
            && err.contains("--memspec makes <memory>"),
        "{err}"
    );
    let err = create_as(&["--quiesce"]);
    assert!(
        err.contains("flag DISK_ONLY (--disk-only) is required by flag QUIESCE (--quiesce)"),
        "{err}"
    );
    let err = create_as(&["--disk-only", "--quiesce"]);
    assert!(
        err.contains("--quiesce needs a running guest") && err.contains("drop --quiesce"),
        "{err}"
    );
    let err = create_as(&["--diskspec", "vdz"]);
    assert!(
        err.contains("no disk named 'vdz'") && err.contains("vda, vdb, vdc"),
        "{err}"
    );
    let vdb_onto_existing = format!("vdb,snapshot=external,file={}", vm.p("vm.xml"));
    let err = create_as(&["--diskspec", &vdb_onto_existing]);
    assert!(
        err.contains("exists already") && err.contains("--reuse-external"),
        "{err}"
    );
    let err = vm.refused(&["snapshot-create", "nosuch"]);
    assert!(err.contains("domain 'nosuch' is not defined"), "{err}");
    let err = vm.refused(&["snapshot-create", "vm", "--xmlfile", &vm.p("none.xml")]);
    assert!(err.contains("cannot read"), "{err}");
    assert_eq!(vm.everything(), before, "a refusal changes nothing");

    // A name that exists.
    vm.ok(&[
        "snapshot-create-as",
        "vm",
        "s1",
        "--diskspec",
        "vdc,snapshot=no",
    ]);
    let taken = vm.everything();
    for dry_run in [false, true] {
        let mut args = vec!["snapshot-create-as", "vm", "s1"];
        if dry_run {
            args.push("--dry-run");
        }
        let err = vm.refused(&args);
        assert_eq!(
            err,
            "virtsnap: error: domain 'vm' already has a snapshot named 's1'; choose another name\n"
        );
    }
    assert_eq!(vm.everything(), taken);

    // Usage errors are status 2.
    for usage in [
        &["snapshot-create-as", "--print-xml"][..],
        &["snapshot-create-as", "vm", "--print-xml", "--dry-run"],
        &["snapshot-create", "vm", "--current"],
        &["snapshot-create", "vm", "--redefine"],
    ] {
        assert_eq!(vm.run(usage).status.code(), Some(2), "{usage:?}");
    }
}

fn real_drivers() -> Vec<Arc<dyn VolumeDriver>> {
    vec![
        Arc::new(driver_qemu::QemuDriver::new()),
        Arc::new(driver_file::FileDriver::new()),
    ]
}

/// The child of `an_interrupted_create_is_rolled_back_with_a_warning`:
/// takes s1 (vdb external) through the library and SIGKILLs itself once
/// the domain definition has changed.
#[tokio::test]
#[ignore = "the child process of the interrupted-create tests"]
async fn crash_child() {
    let Ok(dir) = std::env::var("VIRTSNAP_CLI_CRASH_DIR") else {
        return; // Only as the child of the test below.
    };
    let api = DomainApi::new(Layout::new(Path::new(&dir).join("state")), real_drivers());
    let observer = |_: usize, step: &Step, event: StepEvent| {
        if matches!(step, Step::UpdateDomain(_)) && event == StepEvent::Done {
            domain_support::kill_self();
        }
    };
    let xml = "<domainsnapshot><name>s1</name><disks><disk name='vdb' snapshot='external'/></disks></domainsnapshot>";
    let _ = api
        .snapshot_create_xml(
            "vm",
            Some(xml),
            CreateFlags::empty(),
            false,
            Some(&observer),
        )
        .await;
    panic!("the child was to be killed");
}

/// Runs `crash_child` on `vm`: a create of s1 killed once vdb's source
/// has moved to its new overlay.
fn kill_mid_create(vm: &Vm) {
    domain_support::run_killed_child(
        "crash_child",
        &[(
            "VIRTSNAP_CLI_CRASH_DIR",
            vm.dir.path().display().to_string(),
        )],
        "create",
    );
}

#[test]
fn an_interrupted_create_is_rolled_back_with_a_warning() {
    if !backends::qemu_tools_present() {
        return;
    }
    let vm = Vm::new();
    let before = vm.contents();
    kill_mid_create(&vm);
    // Killed with vdb moved to its new overlay.
    assert!(vm.ok(&["dumpxml", "vm"]).contains(&vm.p("vdb.s1")));
    assert_eq!(vm.internal("vda.qcow2"), ["s1"]);

    // A dry run recovers nothing, but says its plan may not hold.
    let out = vm.run(&["snapshot-create-as", "vm", "s2", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "virtsnap: warning: a snapshot create on domain 'vm' was interrupted; the next create recovers it first"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(vm.path("vdb.s1").exists());

    // The next create rolls s1 back first, says so, and plans on the
    // domain as it was: s2's overlay goes on vdb.qcow2.
    let out = vm.run(&[
        "snapshot-create-as",
        "vm",
        "s2",
        "--diskspec",
        "vdb,snapshot=external",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "virtsnap: warning: an interrupted snapshot 's1' of domain 'vm' was rolled back"
        ),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Domain snapshot s2 created\n"
    );
    assert!(!vm.path("vdb.s1").exists(), "s1's overlay is removed");
    assert_eq!(vm.backing("vdb.s2"), Some(vm.p("vdb.qcow2")));
    assert_eq!(vm.internal("vda.qcow2"), ["s2"]);
    assert_eq!(vm.ok(&["snapshot-list", "vm", "--name"]), "s2\n");
    let domain = vm.ok(&["dumpxml", "vm"]);
    assert!(
        domain.contains(&format!("<source file='{}'/>", vm.p("vdb.s2"))),
        "{domain}"
    );
    let mut after = vm.contents();
    after[1] = backends::content(&vm.path("vdb.s2"), "qcow2");
    assert_eq!(after, before);
}

/// What the guest sees on vda, vdb (through whatever source the domain
/// now has) and vdc.
fn guest_view(vm: &Vm) -> Vec<Vec<u8>> {
    let xml = vm.ok(&["dumpxml", "vm"]);
    let domain = snapshot_conf::Domain::parse(&xml).expect("domain XML");
    domain
        .def
        .disks
        .iter()
        .map(|d| {
            let path = d.source.path.clone().expect("file disk");
            let format = d.driver_type.clone().unwrap_or_else(|| "raw".into());
            backends::content(Path::new(&path), &format)
        })
        .collect()
}

#[test]
fn revert_and_delete_go_through_the_storage() {
    if !backends::qemu_tools_present() {
        return;
    }
    let vm = Vm::new();
    vm.ok(&[
        "snapshot-create-as",
        "vm",
        "s1",
        "--diskspec",
        "vdb,snapshot=external",
    ]);
    let at_s1 = guest_view(&vm);
    let overlay = vm.p("vdb.s1");
    backends::write(Path::new(&overlay), "qcow2", 0, 65_536, 0xee);
    backends::write(&vm.path("vda.qcow2"), "qcow2", 0, 65_536, 0xee);
    vm.ok(&["snapshot-create-as", "vm", "s2"]);
    backends::write(&vm.path("vda.qcow2"), "qcow2", 0, 65_536, 0xff);
    let at_s2_plus = guest_view(&vm);
    assert_ne!(at_s2_plus, at_s1);

    // Dry runs say what happens and change nothing.
    let plan = vm.ok(&["snapshot-revert", "vm", "s1", "--dry-run"]);
    assert!(
        plan.starts_with("plan: revert to snapshot 's1' of domain 'vm'"),
        "{plan}"
    );
    assert!(
        plan.contains("vda: ") && plan.contains("goes back to its internal snapshot"),
        "{plan}"
    );
    assert_eq!(guest_view(&vm), at_s2_plus);

    // Revert prints nothing, as virsh; every disk is back at s1.
    assert_eq!(vm.ok(&["snapshot-revert", "vm", "s1"]), "");
    assert_eq!(guest_view(&vm), at_s1);
    assert_eq!(vm.ok(&["snapshot-current", "vm", "--name"]), "s1\n");

    // Deleting s1 keeps s2 whole.
    let plan = vm.ok(&["snapshot-delete", "vm", "s1", "--dry-run"]);
    assert!(
        plan.starts_with("plan: delete snapshot 's1' of domain 'vm'"),
        "{plan}"
    );
    assert_eq!(
        vm.ok(&["snapshot-delete", "vm", "s1"]),
        "Domain snapshot s1 deleted\n"
    );
    assert_eq!(vm.internal("vda.qcow2"), ["s2"]);
    assert!(!vm.path("vdc.raw.s1").exists());
    vm.ok(&["snapshot-revert", "vm", "s2"]);
    assert_eq!(vm.ok(&["snapshot-current", "vm", "--name"]), "s2\n");
    let view = guest_view(&vm);
    assert_eq!(view[0][..65_536], vec![0xee; 65_536][..], "vda at s2");

    // An unknown snapshot, and --running with --paused, are refused.
    let err = vm.refused(&["snapshot-revert", "vm", "nope"]);
    assert!(err.contains("no snapshot named 'nope'"), "{err}");
    let out = vm.run(&["snapshot-revert", "vm", "s2", "--running", "--paused"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses the pair");
}

#[test]
fn snapshot_recover_rolls_back_or_forgets_an_interrupted_create() {
    if !backends::qemu_tools_present() {
        return;
    }
    let vm = Vm::new();
    assert_eq!(
        vm.ok(&["snapshot-recover", "vm"]),
        "Domain 'vm' has no interrupted snapshot operation\n"
    );
    let before = vm.contents();
    kill_mid_create(&vm);
    assert_eq!(
        vm.ok(&["snapshot-recover", "vm"]),
        "an interrupted snapshot 's1' of domain 'vm' was rolled back\n"
    );
    assert_eq!(vm.contents(), before);
    assert!(vm.internal("vda.qcow2").is_empty() && !vm.path("vdb.s1").exists());

    // --discard forgets it: what was done stays (vda's internal snapshot,
    // vdb's overlay as its source), for whoever repairs it by hand.
    let vm = Vm::new();
    kill_mid_create(&vm);
    let out = vm.ok(&["snapshot-recover", "vm", "--discard"]);
    assert!(
        out.starts_with("Forgot the interrupted 'domain-snapshot-create' of domain 'vm'"),
        "{out}"
    );
    assert_eq!(vm.internal("vda.qcow2"), ["s1"]);
    assert!(vm.ok(&["dumpxml", "vm"]).contains(&vm.p("vdb.s1")));
    assert_eq!(
        vm.ok(&["snapshot-recover", "vm", "--discard"]),
        "Domain 'vm' has no interrupted snapshot operation\n"
    );
}
