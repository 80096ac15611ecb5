//! virsh's snapshot verbs on the metadata store, end to end with the real
//! binary: libvirt's own `snapshot-redefine` virsh test (parents first,
//! `--current`, `snapshot-info`) and the listing and delete verbs.

use std::path::{Path, PathBuf};
use std::process::Output;

struct Cli {
    state: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Self {
            state: tempfile::tempdir().expect("state dir"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_virtsnap"))
            .args(args)
            .env("VIRTSNAP_STATE", self.state.path())
            .output()
            .expect("run virtsnap")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "virtsnap {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

fn virsh_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../snapshot-conf/tests/libvirt/virsh")
        .join(name)
}

#[test]
fn test_libvirt_snapshot_redefine_case() {
    let cli = Cli::new();
    let s2 = virsh_file("snapshot-s2.xml");
    let s3 = virsh_file("snapshot-s3.xml");
    let s2 = s2.to_str().expect("path");
    let s3 = s3.to_str().expect("path");

    let first = cli.run(&[
        "snapshot-create",
        "test",
        "--redefine",
        "--xmlfile",
        s2,
        "--validate",
    ]);
    assert_eq!(first.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("parent s3 for snapshot s2 not found"),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    cli.ok(&[
        "snapshot-create",
        "test",
        "--redefine",
        "--xmlfile",
        s3,
        "--validate",
    ]);
    cli.ok(&[
        "snapshot-create",
        "test",
        "--redefine",
        "--current",
        "--xmlfile",
        s2,
        "--validate",
    ]);

    let info = cli.ok(&["snapshot-info", "test", "--current"]);
    assert_eq!(
        info,
        "Name:           s2\nDomain:         test\nCurrent:        yes\nState:          running\n\
         Location:       internal\nParent:         s3\nChildren:       0\nDescendants:    0\n\
         Metadata:       yes\n"
    );
}

fn redefine(cli: &Cli, dir: &Path, name: &str, parent: Option<&str>) {
    let parent = parent
        .map(|p| format!("<parent><name>{p}</name></parent>"))
        .unwrap_or_default();
    let xml = format!(
        "<domainsnapshot><name>{name}</name><state>shutoff</state>{parent}<creationTime>1</creationTime></domainsnapshot>"
    );
    let file = dir.join(format!("{name}.xml"));
    std::fs::write(&file, xml).expect("write");
    cli.ok(&[
        "snapshot-create",
        "vm",
        "--redefine",
        "--xmlfile",
        file.to_str().expect("path"),
    ]);
}

/// libvirt's virsh test hierarchy s1{s3{s2,s6{s4,s5}},s7{s8}}.
fn hierarchy() -> Cli {
    let cli = Cli::new();
    let tmp = tempfile::tempdir().expect("xml dir");
    for (name, parent) in [
        ("s1", None),
        ("s3", Some("s1")),
        ("s2", Some("s3")),
        ("s6", Some("s3")),
        ("s4", Some("s6")),
        ("s5", Some("s6")),
        ("s7", Some("s1")),
        ("s8", Some("s7")),
    ] {
        redefine(&cli, tmp.path(), name, parent);
    }
    cli
}

fn names(out: &str) -> Vec<&str> {
    let mut v: Vec<&str> = out.lines().collect();
    v.sort_unstable();
    v
}

#[test]
fn test_snapshot_list_filters_like_virsh() {
    let cli = hierarchy();
    assert_eq!(
        names(&cli.ok(&["snapshot-list", "vm", "--name", "--roots"])),
        ["s1"]
    );
    assert_eq!(
        names(&cli.ok(&["snapshot-list", "vm", "--name", "--leaves"])),
        ["s2", "s4", "s5", "s8"]
    );
    assert_eq!(
        names(&cli.ok(&[
            "snapshot-list",
            "vm",
            "--name",
            "--from",
            "s3",
            "--descendants"
        ])),
        ["s2", "s4", "s5", "s6"]
    );
    let topo = cli.ok(&["snapshot-list", "vm", "--name", "--topological"]);
    let order: Vec<&str> = topo.lines().collect();
    let at = |n: &str| order.iter().position(|x| *x == n).expect("listed");
    assert!(
        at("s1") < at("s3") && at("s3") < at("s6") && at("s6") < at("s4"),
        "{topo}"
    );
    let tree = cli.ok(&["snapshot-list", "vm", "--tree"]);
    assert!(tree.starts_with("s1\n  |\n  +- s3\n"), "{tree}");
    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["snapshot-list", "vm", "--json"])).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(8));
}

#[test]
fn test_snapshot_delete_metadata_children_and_current_moves_up() {
    let cli = hierarchy();
    cli.ok(&["snapshot-current", "vm", "s4"]);
    assert_eq!(cli.ok(&["snapshot-current", "vm", "--name"]), "s4\n");
    assert_eq!(
        cli.ok(&["snapshot-delete", "vm", "s6", "--metadata", "--children"]),
        "Domain snapshot s6 deleted\n"
    );
    assert_eq!(cli.ok(&["snapshot-current", "vm", "--name"]), "s3\n");
    assert_eq!(
        names(&cli.ok(&["snapshot-list", "vm", "--name"])),
        ["s1", "s2", "s3", "s7", "s8"]
    );
    cli.ok(&["snapshot-delete", "vm", "s3", "--metadata"]);
    assert_eq!(cli.ok(&["snapshot-parent", "vm", "s2"]), "s1\n");
    let refused = cli.run(&["snapshot-delete", "vm", "s1"]);
    assert_eq!(refused.status.code(), Some(1));
    // The storage of an undefined domain's snapshots cannot be examined.
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("is not defined here") && stderr.contains("--metadata"),
        "{stderr}"
    );
}

#[test]
fn test_snapshot_dumpxml_is_the_stored_definition() {
    let cli = hierarchy();
    let xml = cli.ok(&["snapshot-dumpxml", "vm", "s3"]);
    assert!(
        xml.starts_with("<domainsnapshot>\n  <name>s3</name>\n"),
        "{xml}"
    );
    assert!(
        xml.contains("<parent>\n    <name>s1</name>\n  </parent>"),
        "{xml}"
    );
    assert!(!xml.contains("<active>"), "public XML has no <active>");
    let missing = cli.run(&["snapshot-dumpxml", "vm", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn test_define_list_dumpxml_undefine_with_snapshot_metadata() {
    let cli = Cli::new();
    let tmp = tempfile::tempdir().expect("xml dir");
    let xml = "<domain type='kvm'>\n  <name>vm</name>\n  <devices>\n    <disk type='file'>\n      <source file='/img/vm.qcow2'/>\n      <target dev='vda'/>\n    </disk>\n  </devices>\n</domain>\n";
    let file = tmp.path().join("vm.xml");
    std::fs::write(&file, xml).expect("write");
    let file = file.to_str().expect("path");
    assert!(
        cli.ok(&["define", file])
            .starts_with("Domain 'vm' defined from ")
    );
    assert_eq!(cli.ok(&["list", "--all", "--name"]), "vm\n");
    assert!(
        cli.ok(&["list", "--all"])
            .contains(" -    vm     shut off\n")
    );
    assert_eq!(cli.ok(&["dumpxml", "vm"]), xml);
    redefine(&cli, tmp.path(), "s1", None);
    let refused = cli.run(&["undefine", "vm"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("cannot delete inactive domain with 1 snapshots"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        cli.ok(&["undefine", "vm", "--snapshots-metadata"]),
        "Domain 'vm' has been undefined\n"
    );
    assert_eq!(cli.ok(&["list", "--all", "--name"]), "");
    assert_eq!(cli.ok(&["snapshot-list", "vm", "--name"]), "");
}

#[test]
fn test_snapshot_export_then_import_into_another_domain_keeps_the_tree() {
    let cli = hierarchy();
    cli.ok(&["snapshot-current", "vm", "s4"]);
    let out = tempfile::tempdir().expect("export dir");
    let dir = out.path().join("vm");
    let dir_arg = dir.to_str().expect("path");
    cli.ok(&["snapshot-export", "vm", dir_arg]);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("exported")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"].map(|n| format!("{n}.xml"))
    );
    assert!(
        std::fs::read_to_string(dir.join("s4.xml"))
            .expect("s4")
            .contains("<active>1</active>")
    );

    cli.ok(&["snapshot-import", "copy", dir_arg]);
    for args in [
        &["snapshot-list", "--tree"][..],
        &["snapshot-current", "--name"][..],
        &["snapshot-list", "--leaves", "--name"][..],
    ] {
        let with = |domain: &str| {
            let mut a = vec![args[0], domain];
            a.extend_from_slice(&args[1..]);
            cli.ok(&a)
        };
        assert_eq!(with("copy"), with("vm"), "{args:?}");
    }
    assert_eq!(cli.ok(&["snapshot-current", "copy", "--name"]).trim(), "s4");

    // Running it again changes nothing; exporting over a different
    // directory is refused without --force.
    cli.ok(&["snapshot-import", "copy", dir_arg]);
    std::fs::write(dir.join("s1.xml"), "<domainsnapshot/>").expect("tamper");
    let refused = cli.run(&["snapshot-export", "vm", dir_arg]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("s1.xml") && stderr.contains("--force"),
        "{stderr}"
    );
    cli.ok(&["snapshot-export", "vm", dir_arg, "--force"]);
}

/// virsh's `--tree` layout (`vshTreePrintInternal`): a `|` line before a
/// snapshot's first child, siblings sorted by name, and after the last
/// leaf of a branch a line holding only its indentation.
#[test]
fn test_snapshot_list_tree_is_virshs_layout() {
    let cli = hierarchy();
    let expected = "s1\n  |\n  +- s3\n  |   |\n  |   +- s2\n  |   +- s6\n  |       |\n\
                    \x20 |       +- s4\n  |       +- s5\n  |         \n  +- s7\n      |\n\
                    \x20     +- s8\n        \n";
    assert_eq!(cli.ok(&["snapshot-list", "vm", "--tree"]), expected);
    let from = "s3\n  |\n  +- s2\n  +- s6\n      |\n      +- s4\n      +- s5\n        \n";
    assert_eq!(
        cli.ok(&["snapshot-list", "vm", "--tree", "--from", "s3"]),
        from
    );
    // virsh's exclusions are usage errors (exit 2).
    for args in [
        &["snapshot-list", "vm", "--tree", "--name"][..],
        &["snapshot-list", "vm", "--tree", "--leaves"][..],
        &["snapshot-list", "vm", "--roots", "--current"][..],
        &["snapshot-list", "vm", "--descendants"][..],
    ] {
        assert_eq!(cli.run(args).status.code(), Some(2), "{args:?}");
    }
}

/// Without --topological, virsh sorts by name ignoring case.
#[test]
fn test_snapshot_list_sorts_by_name_ignoring_case() {
    let cli = Cli::new();
    let tmp = tempfile::tempdir().expect("xml dir");
    for name in ["b", "A", "c", "B2"] {
        redefine(&cli, tmp.path(), name, None);
    }
    let out = cli.ok(&["snapshot-list", "vm", "--name"]);
    assert_eq!(out, "A\nb\nB2\nc\n");
}
