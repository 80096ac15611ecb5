//! `virtsnap xml check` end to end: the real binary on libvirt's corpus and
//! on our example volume snapshot.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus(file: &str) -> PathBuf {
    repo().join("snapshot-conf/tests/libvirt").join(file)
}

fn virtsnap(args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_virtsnap"))
        .args(["xml", "check"])
        .args(args)
        .args(files)
        .output()
        .expect("run virtsnap")
}

#[test]
fn test_xml_check_redefine_internal_prints_libvirt_output_unchanged() {
    let file = corpus("xml2xml-out/full_domain.xml");
    let out = virtsnap(&["--redefine", "--internal"], std::slice::from_ref(&file));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = std::fs::read_to_string(&file).expect("corpus file");
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn test_xml_check_normalises_creation_request_like_libvirt() {
    let out = virtsnap(&[], &[corpus("xml2xml-in/disk_driver_name_null.xml")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<domainsnapshot>\n  <name>asdf</name>\n  <description>adsf</description>\n  <disks>\n    \
         <disk name='vda' snapshot='external' type='file'>\n      <source file='/tmp/foo'/>\n    \
         </disk>\n  </disks>\n</domainsnapshot>\n"
    );
}

#[test]
fn test_xml_check_invalid_file_exits_1_with_position_and_fix() {
    let out = virtsnap(
        &[],
        &[corpus("xml2xml-in/disk-network-seclabel-invalid.xml")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("disk-network-seclabel-invalid.xml"), "{err}");
    assert!(
        err.contains("<seclabel> inside a network <source> is not allowed at line 8, column 9"),
        "{err}"
    );
    assert!(err.contains("remove the <seclabel>"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn test_xml_check_continues_after_a_bad_file_and_labels_outputs() {
    let example = repo().join("snapshot-conf/examples/volsnapshot.xml");
    let out = virtsnap(
        &[],
        &[corpus("xml2xml-in/disk-invalid.xml"), example.clone()],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("<!-- {} -->\n<volsnapshot>\n", example.display())),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("startupPolicy"));
}

#[test]
fn test_xml_check_missing_file_names_it() {
    let out = virtsnap(&[], &[PathBuf::from("/nonexistent/snap.xml")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/snap.xml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn test_xml_check_refuses_unstorable_snapshot_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.xml");
    std::fs::write(&file, "<domainsnapshot><name>a/b</name></domainsnapshot>").expect("write");
    let out = virtsnap(&[], &[file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name can't contain '/'"));
}

#[test]
fn test_xml_check_unknown_root_names_both_kinds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("domain.xml");
    std::fs::write(&file, "<domain type='kvm'/>").expect("write");
    let out = virtsnap(&[], &[file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("expecting root element of 'domainsnapshot' or 'volsnapshot', not 'domain'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two commands of the README's quick start, exactly as written there.
#[test]
fn test_xml_check_readme_quick_start_commands_succeed() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let commands: Vec<String> = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(|block| block.replace("\\\n", " "))
        .filter(|cmd| cmd.contains("xml check"))
        .collect();
    assert_eq!(
        commands.len(),
        2,
        "README quick start changed: {commands:?}"
    );
    for cmd in commands {
        let args: Vec<&str> = cmd
            .split_whitespace()
            .skip_while(|w| *w != "check")
            .skip(1)
            .collect();
        let (flags, files): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| a.starts_with("--"));
        let files: Vec<PathBuf> = files.iter().map(|f| repo().join(f)).collect();
        let out = virtsnap(&flags, &files);
        assert!(
            out.status.success(),
            "README command `{cmd}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
