//! Import and export of libvirt snapshot metadata directories
//! (`store::transfer`): libvirt's corpus imports and lists, a hierarchy
//! round-trips byte for byte, every refusal names the problem and the fix
//! and leaves the store as it was, and an import killed half-way is
//! finished by running it again.
//!
//! The crash tests run this test binary again (`std::env::current_exe()`)
//! with only the ignored test `crash_child`:
//!   <exe> --exact crash_child --ignored --nocapture
//! with STATE_ENV naming the state directory, DIR_ENV the directory to
//! import and `VIRTSNAP_CRASH_AT` the crash point. Without STATE_ENV,
//! `crash_child` does nothing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use snapshot_conf::{
    DomainSnapshotDef, FormatFlags, FormatOptions, ParseFlags, ParseOptions, SnapshotDocument,
    VolSnapshotDef,
};
use snapshot_core::ListFilter;
use snapshot_core::store::{
    Access, ExportOptions, ImportOptions, Layout, MetadataStore, Owner, SnapshotRecord,
    TransferError, defined_domain, domains, export_dir, import_dir,
};

const STATE_ENV: &str = "VIRTSNAP_TEST_TRANSFER_STATE";
const DIR_ENV: &str = "VIRTSNAP_TEST_TRANSFER_DIR";
const CRASH_ENV: &str = "VIRTSNAP_CRASH_AT";

/// libvirt's corpus (the copy in snapshot-conf, identical to
/// `testdata/libvirt/`).
fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../snapshot-conf/tests/libvirt")
}

fn domain(name: &str) -> Owner {
    Owner::Domain(name.to_string())
}

fn open(layout: &Layout, name: &str) -> MetadataStore {
    MetadataStore::open(layout, domain(name), Access::Write).expect("open store")
}

/// A libvirt metadata file, formatted as libvirt (and the store) write it.
fn meta_xml(name: &str, parent: Option<&str>, created: i64, current: bool) -> String {
    meta_xml_described(name, parent, created, current, None)
}

fn meta_xml_described(
    name: &str,
    parent: Option<&str>,
    created: i64,
    current: bool,
    description: Option<&str>,
) -> String {
    let def = definition(name, parent, created, description);
    let mut flags = FormatFlags::SECURE | FormatFlags::INTERNAL;
    flags.set(FormatFlags::CURRENT, current);
    def.format(&FormatOptions::new(flags))
}

fn definition(
    name: &str,
    parent: Option<&str>,
    created: i64,
    description: Option<&str>,
) -> DomainSnapshotDef {
    let parent = parent
        .map(|p| format!("<parent><name>{p}</name></parent>"))
        .unwrap_or_default();
    let description = description
        .map(|d| format!("<description>{d}</description>"))
        .unwrap_or_default();
    let xml = format!(
        "<domainsnapshot><name>{name}</name>{description}<state>shutoff</state>{parent}<creationTime>{created}</creationTime></domainsnapshot>"
    );
    DomainSnapshotDef::parse(&xml, &ParseOptions::new(ParseFlags::REDEFINE))
        .expect("test definition")
        .def
}

fn record(name: &str, parent: Option<&str>, created: i64) -> SnapshotRecord {
    SnapshotRecord::Domain(Box::new(definition(name, parent, created, None)))
}

/// Every regular file of `dir` with its bytes (empty when `dir` is missing).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("dir entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, fs::read(e.path()).expect("read file"))
        })
        .collect()
}

fn owner_files(layout: &Layout, name: &str) -> BTreeMap<String, Vec<u8>> {
    files(&layout.owner_dir(&domain(name)).expect("owner dir"))
}

/// (name, parent, current) of every snapshot, sorted by name.
fn summary(store: &MetadataStore) -> Vec<(String, Option<String>, bool)> {
    let tree = store.tree();
    let mut out: Vec<_> = tree
        .list(&ListFilter::default())
        .expect("list")
        .into_iter()
        .map(|n| {
            let parent = tree.parent(n).expect("parent").map(str::to_string);
            (n.to_string(), parent, tree.is_current(n))
        })
        .collect();
    out.sort();
    out
}

fn write(dir: &Path, file: &str, text: &str) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join(file), text).expect("write");
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

// ---------------------------------------------------------------------
// libvirt's corpus

/// Every file of libvirt's corpus that is valid redefine input, with the
/// snapshot it defines: (file, name, parent, `<active>1`).
const REDEFINE_INPUTS: [(&str, &str, Option<&str>, bool); 12] = [
    ("virsh/snapshot-s2.xml", "s2", Some("s3"), false),
    ("virsh/snapshot-s3.xml", "s3", None, false),
    ("xml2xml-in/noparent.xml", "my snap name", None, false),
    (
        "xml2xml-out/all_parameters.xml",
        "my snap name",
        Some("earlier_snap"),
        true,
    ),
    (
        "xml2xml-out/disk_snapshot_redefine.xml",
        "my snap name",
        Some("earlier_snap"),
        true,
    ),
    (
        "xml2xml-out/external_vm_redefine.xml",
        "my snap name",
        Some("earlier_snap"),
        false,
    ),
    (
        "xml2xml-out/full_domain.xml",
        "my snap name",
        Some("earlier_snap"),
        true,
    ),
    (
        "xml2xml-out/memory-snapshot-inactivedomain.xml",
        "test-snap",
        None,
        false,
    ),
    (
        "xml2xml-out/metadata.xml",
        "my snap name",
        Some("earlier_snap"),
        false,
    ),
    ("xml2xml-out/noparent.xml", "my snap name", None, false),
    (
        "xml2xml-out/noparent_nodescription.xml",
        "my snap name",
        None,
        true,
    ),
    (
        "xml2xml-out/noparent_nodescription_noactive.xml",
        "my snap name",
        None,
        false,
    ),
];

fn corpus_text(file: &str) -> String {
    fs::read_to_string(corpus().join(file)).expect("corpus file")
}

#[test]
fn test_corpus_redefine_inputs_are_exactly_the_listed_files() {
    let mut valid = Vec::new();
    for sub in ["virsh", "xml2xml-in", "xml2xml-out"] {
        for entry in fs::read_dir(corpus().join(sub)).expect("corpus dir") {
            let path = entry.expect("entry").path();
            let text = fs::read_to_string(&path).expect("read");
            if SnapshotDocument::parse(&text, &ParseOptions::new(ParseFlags::REDEFINE)).is_ok() {
                let file = path.file_name().expect("name").to_string_lossy();
                valid.push(format!("{sub}/{file}"));
            }
        }
    }
    valid.sort();
    let listed: Vec<String> = REDEFINE_INPUTS
        .iter()
        .map(|(f, ..)| (*f).to_string())
        .collect();
    assert_eq!(valid, listed);
}

#[test]
fn test_corpus_each_redefine_input_imports_into_its_own_domain_and_lists() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path().join("state"));
    for (i, (file, name, parent, current)) in REDEFINE_INPUTS.into_iter().enumerate() {
        let vm = format!("corpus{i}");
        let dir = tmp.path().join(format!("import{i}"));
        let text = corpus_text(file);
        write(&dir, &format!("{name}.xml"), &text);
        let mut store = open(&layout, &vm);

        if let Some(p) = parent {
            // Alone, its parent is missing: refused, nothing written.
            let err = import_dir(&mut store, &dir, &ImportOptions::default())
                .expect_err("parent missing");
            let msg = err.to_string();
            assert!(
                matches!(&err, TransferError::MissingParent { parent, .. } if parent == p),
                "{file}: {msg}"
            );
            assert!(msg.contains(&format!("add '{p}.xml'")), "{file}: {msg}");
            assert!(store.tree().is_empty(), "{file}");
            assert!(owner_files(&layout, &vm).is_empty(), "{file}");
            // With its parent beside it (an older snapshot), it imports.
            write(&dir, &format!("{p}.xml"), &meta_xml(p, None, 1000, false));
        }
        let report = import_dir(&mut store, &dir, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));

        let mut expected = Vec::new();
        expected.extend(parent.map(str::to_string));
        expected.push(name.to_string());
        assert_eq!(report.imported, expected, "{file}: parents first");
        assert_eq!(report.current.as_deref(), current.then_some(name), "{file}");
        let has_active = text.contains("<active>");
        assert_eq!(
            report.without_active,
            if has_active {
                vec![]
            } else {
                vec![format!("{name}.xml")]
            },
            "{file}"
        );
        let mut listed: Vec<&str> = store.tree().list(&ListFilter::default()).expect("list");
        listed.sort_unstable();
        let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
        want.sort_unstable();
        assert_eq!(listed, want, "{file}");
        assert_eq!(store.tree().parent(name), Ok(parent), "{file}");
        assert_eq!(store.tree().current(), current.then_some(name), "{file}");
        drop(store);

        // What the store keeps is the definition read; a libvirt metadata
        // file (with <active>) is kept byte for byte.
        let stored = owner_files(&layout, &vm);
        let kept = String::from_utf8(stored[&format!("{name}.xml")].clone()).expect("utf-8");
        if has_active {
            assert_eq!(kept, text, "{file}: byte for byte");
        } else {
            let public = ParseOptions::new(ParseFlags::REDEFINE);
            assert_eq!(
                DomainSnapshotDef::parse(&kept, &public).expect("kept").def,
                DomainSnapshotDef::parse(&text, &public)
                    .expect("corpus")
                    .def,
                "{file}"
            );
            assert!(kept.contains("<active>0</active>"), "{file}: {kept}");
        }
        // Reopened from disk, the same tree.
        let store = MetadataStore::open(&layout, domain(&vm), Access::Read).expect("reopen");
        assert_eq!(store.warnings(), [], "{file}");
        assert_eq!(store.tree().parent(name), Ok(parent), "{file}");
        assert_eq!(store.tree().current(), current.then_some(name), "{file}");
    }
}

#[test]
fn test_corpus_files_form_one_libvirt_metadata_directory() {
    // A directory as libvirt keeps it: the virsh test's s3 <- s2, the
    // inactive-domain snapshot, and the full-domain snapshot (current)
    // with its parent.
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path().join("state"));
    let dir = tmp.path().join("QEMUGuest1");
    for (file, name) in [
        ("virsh/snapshot-s2.xml", "s2"),
        ("virsh/snapshot-s3.xml", "s3"),
        (
            "xml2xml-out/memory-snapshot-inactivedomain.xml",
            "test-snap",
        ),
        ("xml2xml-out/full_domain.xml", "my snap name"),
    ] {
        write(&dir, &format!("{name}.xml"), &corpus_text(file));
    }
    write(
        &dir,
        "earlier_snap.xml",
        &meta_xml("earlier_snap", None, 1_272_917_000, false),
    );
    let mut store = open(&layout, "QEMUGuest1");

    let report = import_dir(&mut store, &dir, &ImportOptions::default()).expect("import");

    // Roots first (by creation time), then their children: s2 is older
    // than s3 and sorts first, but s3 is its parent.
    assert_eq!(
        report.imported,
        names(&["s3", "earlier_snap", "test-snap", "s2", "my snap name"])
    );
    assert_eq!(report.current.as_deref(), Some("my snap name"));
    assert_eq!(
        report.without_active,
        names(&["s2.xml", "s3.xml", "test-snap.xml"])
    );
    assert_eq!(
        summary(&store),
        vec![
            ("earlier_snap".into(), None, false),
            ("my snap name".into(), Some("earlier_snap".into()), true),
            ("s2".into(), Some("s3".into()), false),
            ("s3".into(), None, false),
            ("test-snap".into(), None, false),
        ]
    );
    assert_eq!(
        owner_files(&layout, "QEMUGuest1")["my snap name.xml"],
        corpus_text("xml2xml-out/full_domain.xml").into_bytes()
    );
}

#[test]
fn test_corpus_import_checks_the_defined_domain() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path().join("state"));
    let dir = tmp.path().join("dir");
    write(
        &dir,
        "my snap name.xml",
        &corpus_text("xml2xml-out/full_domain.xml"),
    );
    write(
        &dir,
        "earlier_snap.xml",
        &meta_xml("earlier_snap", None, 1, false),
    );
    let define = |name: &str, uuid: Option<&str>| {
        let uuid = uuid
            .map(|u| format!("<uuid>{u}</uuid>"))
            .unwrap_or_default();
        domains::define(
            &layout,
            &format!("<domain type='qemu'><name>{name}</name>{uuid}</domain>"),
        )
        .expect("define");
    };
    let import = |vm: &str| {
        let mut store = open(&layout, vm);
        let opts = ImportOptions {
            domain: defined_domain(&layout, store.owner()).expect("definition"),
            ..ImportOptions::default()
        };
        let result = import_dir(&mut store, &dir, &opts);
        (result, summary(&store))
    };
    // Its own domain.
    define("QEMUGuest1", Some("c7a5fdbd-edaf-9455-926a-d65c16db1809"));
    let (result, listed) = import("QEMUGuest1");
    assert_eq!(result.expect("same domain").imported.len(), 2);
    assert_eq!(listed.len(), 2);
    // Renamed: the UUID decides.
    define("renamed", Some("c7a5fdbd-edaf-9455-926a-d65c16db1809"));
    let (result, _) = import("renamed");
    assert_eq!(result.expect("renamed domain").imported.len(), 2);
    // Another UUID.
    define("other", Some("11111111-2222-3333-4444-555555555555"));
    let (result, listed) = import("other");
    let msg = result.expect_err("other uuid").to_string();
    assert!(
        msg.contains("the domain with UUID c7a5fdbd-edaf-9455-926a-d65c16db1809")
            && msg.contains("but domain 'other' has UUID 11111111-2222-3333-4444-555555555555")
            && msg.contains("my snap name.xml")
            && msg.contains("import the directory into the snapshots it belongs to"),
        "{msg}"
    );
    assert!(listed.is_empty());
    assert!(owner_files(&layout, "other").is_empty());
    // No UUID to compare: the name decides.
    define("nouuid", None);
    let msg = import("nouuid").0.expect_err("other name").to_string();
    assert!(
        msg.contains("the domain named 'QEMUGuest1'")
            && msg.contains("domain 'nouuid' has the name 'nouuid'"),
        "{msg}"
    );
    // Not defined: nothing to check against.
    assert_eq!(
        defined_domain(&layout, &domain("undefined")).expect("lookup"),
        None
    );
    let (result, _) = import("undefined");
    assert_eq!(result.expect("undefined domain").imported.len(), 2);
}

// ---------------------------------------------------------------------
// A hierarchy: export, import elsewhere, byte for byte

/// root -> a1 -> a2, root -> b1 -> b2; current b1.
fn hierarchy(layout: &Layout, vm: &str) {
    let mut store = open(layout, vm);
    for (name, parent, created) in [
        ("root", None, 100),
        ("a1", Some("root"), 200),
        ("a2", Some("a1"), 300),
        ("b1", Some("root"), 400),
        ("b2", Some("b1"), 500),
    ] {
        store
            .redefine(record(name, parent, created), name == "b1")
            .expect("redefine");
    }
}

#[test]
fn test_hierarchy_exports_and_reimports_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path().join("state"));
    hierarchy(&layout, "vm1");
    let out = tmp.path().join("export/vm1");

    let store = MetadataStore::open(&layout, domain("vm1"), Access::Read).expect("open");
    let report = export_dir(&store, &out, ExportOptions::default()).expect("export");
    let source_summary = summary(&store);
    drop(store);

    assert_eq!(report.written, names(&["root", "a1", "b1", "a2", "b2"]));
    assert_eq!(report.current.as_deref(), Some("b1"));
    assert!(report.unchanged.is_empty() && report.foreign.is_empty());
    let exported = files(&out);
    assert_eq!(
        exported,
        owner_files(&layout, "vm1"),
        "the store's own files"
    );
    let b1 = String::from_utf8(exported["b1.xml"].clone()).expect("utf-8");
    assert!(b1.contains("<active>1</active>"), "{b1}");
    assert_eq!(
        b1,
        meta_xml("b1", Some("root"), 400, true),
        "libvirt's format"
    );

    // Into another domain: the same files, the same tree.
    let mut copy = open(&layout, "vm2");
    let report = import_dir(&mut copy, &out, &ImportOptions::default()).expect("import");
    assert_eq!(report.imported, names(&["root", "a1", "b1", "a2", "b2"]));
    assert_eq!(report.current.as_deref(), Some("b1"));
    assert!(report.without_active.is_empty() && report.skipped.is_empty());
    assert_eq!(summary(&copy), source_summary);
    drop(copy);
    assert_eq!(owner_files(&layout, "vm2"), exported);

    // And out again: the same files.
    let again = tmp.path().join("export/vm2");
    let copy = MetadataStore::open(&layout, domain("vm2"), Access::Read).expect("open");
    export_dir(&copy, &again, ExportOptions::default()).expect("export again");
    assert_eq!(files(&again), exported);

    // Exporting over an identical export writes nothing.
    let report = export_dir(&copy, &out, ExportOptions::default()).expect("re-export");
    assert!(report.written.is_empty(), "{report:?}");
    assert_eq!(report.unchanged.len(), 5);
}

#[test]
fn test_export_refuses_to_overwrite_unless_forced_and_reports_foreign_files() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path().join("state"));
    hierarchy(&layout, "vm1");
    let out = tmp.path().join("out");
    write(&out, "a1.xml", "edited by hand\n");
    write(&out, "stranger.xml", &meta_xml("stranger", None, 1, false));
    write(&out, "notes.txt", "not a snapshot\n");
    let before = files(&out);
    let store = MetadataStore::open(&layout, domain("vm1"), Access::Read).expect("open");

    let err = export_dir(&store, &out, ExportOptions::default()).expect_err("would overwrite");
    let msg = err.to_string();
    assert!(
        matches!(&err, TransferError::WouldOverwrite { files, .. } if files == &["a1.xml"]),
        "{msg}"
    );
    assert!(
        msg.contains("a1.xml") && msg.contains("pass --force"),
        "{msg}"
    );
    assert_eq!(files(&out), before, "nothing written");

    let report = export_dir(&store, &out, ExportOptions { force: true }).expect("forced");
    assert_eq!(report.written.len(), 5);
    assert_eq!(report.foreign, names(&["stranger.xml"]));
    assert_eq!(files(&out)["a1.xml"], owner_files(&layout, "vm1")["a1.xml"]);
    assert_eq!(files(&out)["notes.txt"], b"not a snapshot\n");
}

// ---------------------------------------------------------------------
// Refusals: each names the thing and the fix; the store is unchanged

/// The target: vm2 with `x` (current) and `snap`.
fn target(layout: &Layout) -> MetadataStore {
    let mut store = open(layout, "vm2");
    store
        .redefine(record("snap", None, 10), false)
        .expect("snap");
    store.redefine(record("x", None, 20), true).expect("x");
    store
}

/// Imports `dir` into `store` expecting a refusal; checks that nothing
/// changed, on disk and in memory, and returns the message.
fn refused(
    layout: &Layout,
    store: &mut MetadataStore,
    dir: &Path,
    opts: &ImportOptions,
) -> (TransferError, String) {
    let files_before = owner_files(layout, "vm2");
    let tree_before = summary(store);
    let err = import_dir(store, dir, opts).expect_err("refused");
    let msg = err.to_string();
    assert_eq!(owner_files(layout, "vm2"), files_before, "{msg}");
    assert_eq!(summary(store), tree_before, "{msg}");
    (err, msg)
}

#[test]
fn test_import_refusals_name_the_problem_and_the_fix_and_change_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path().join("state"));
    let mut store = target(&layout);
    let none = ImportOptions::default();
    // Each case: a directory holding a good snapshot plus the problem.
    let case = |label: &str, extra: &[(&str, String)]| {
        let dir = tmp.path().join(label);
        write(&dir, "good.xml", &meta_xml("good", None, 5, false));
        for (file, text) in extra {
            write(&dir, file, text);
        }
        dir
    };

    // The file name does not match the name inside.
    let dir = case("name", &[("wrong.xml", meta_xml("right", None, 1, false))]);
    let (err, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(matches!(err, TransferError::NameMismatch { .. }), "{msg}");
    assert!(
        msg.contains("wrong.xml")
            && msg.contains("defines snapshot 'right'")
            && msg.contains("rename it to 'right.xml'"),
        "{msg}"
    );

    // Not snapshot XML.
    let dir = case("parse", &[("broken.xml", "<domainsnapshot>".to_string())]);
    let (err, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(matches!(err, TransferError::Parse { .. }), "{msg}");
    assert!(
        msg.contains("broken.xml") && msg.contains("fix or remove this file"),
        "{msg}"
    );

    // Redefine needs a creation time.
    let dir = case(
        "no-time",
        &[(
            "t.xml",
            "<domainsnapshot><name>t</name><state>running</state><active>0</active></domainsnapshot>"
                .to_string(),
        )],
    );
    let (_, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(
        msg.contains("t.xml") && msg.contains("creationTime"),
        "{msg}"
    );

    // A volume snapshot among domain snapshots.
    let vol = "<volsnapshot><name>v</name><state>offline</state><creationTime>1</creationTime><volume><path>/img/a.qcow2</path></volume><active>0</active></volsnapshot>";
    let dir = case("kind", &[("v.xml", vol.to_string())]);
    let (err, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(matches!(err, TransferError::WrongKind { .. }), "{msg}");
    assert!(
        msg.contains("v.xml is a volume snapshot, but domain 'vm2' keeps domain snapshots"),
        "{msg}"
    );

    // Two current snapshots.
    let dir = case(
        "two-current",
        &[
            ("c1.xml", meta_xml("c1", None, 1, true)),
            ("c2.xml", meta_xml("c2", None, 2, true)),
        ],
    );
    let (err, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(matches!(err, TransferError::SeveralCurrent { .. }), "{msg}");
    assert!(
        msg.contains("c1.xml, c2.xml") && msg.contains("set <active>0</active> in all but one"),
        "{msg}"
    );

    // A name already in the store with another definition.
    let dir = case(
        "exists",
        &[(
            "snap.xml",
            meta_xml_described("snap", None, 10, false, Some("changed")),
        )],
    );
    let (err, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(
        matches!(&err, TransferError::Exists { names, .. } if names == &["snap"]),
        "{msg}"
    );
    assert!(
        msg.contains("domain 'vm2' already has a snapshot with a different definition ('snap')")
            && msg.contains("pass --replace"),
        "{msg}"
    );

    // Only case differs from a stored name.
    let dir = case("case", &[("SNAP.xml", meta_xml("SNAP", None, 1, false))]);
    let (err, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(matches!(err, TransferError::Collision { .. }), "{msg}");
    assert!(
        msg.contains("SNAP.xml") && msg.contains("\"snap\"") && msg.contains("choose another name"),
        "{msg}"
    );

    // A parent that is nowhere.
    let dir = case(
        "orphan",
        &[("kid.xml", meta_xml("kid", Some("ghost"), 1, false))],
    );
    let (err, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(matches!(err, TransferError::MissingParent { .. }), "{msg}");
    assert!(
        msg.contains("snapshot 'kid'")
            && msg.contains("parent 'ghost'")
            && msg.contains("add 'ghost.xml' to the directory or redefine 'ghost' first"),
        "{msg}"
    );

    // A loop in the directory.
    let dir = case(
        "loop",
        &[
            ("l1.xml", meta_xml("l1", Some("l2"), 1, false)),
            ("l2.xml", meta_xml("l2", Some("l1"), 2, false)),
        ],
    );
    let (err, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(
        matches!(&err, TransferError::Loop { names } if names.len() == 2),
        "{msg}"
    );
    assert!(
        (msg.contains("'l1' -> 'l2' -> 'l1'") || msg.contains("'l2' -> 'l1' -> 'l2'"))
            && msg.contains("fix the <parent> of one of them"),
        "{msg}"
    );

    // A loop through the store: x's child y exists; replacing x with a
    // child of y closes a loop.
    store
        .redefine(record("y", Some("x"), 30), false)
        .expect("y");
    let dir = case(
        "store-loop",
        &[("x.xml", meta_xml("x", Some("y"), 20, true))],
    );
    let replace = ImportOptions {
        replace: true,
        ..ImportOptions::default()
    };
    let (err, msg) = refused(&layout, &mut store, &dir, &replace);
    assert!(matches!(err, TransferError::Loop { .. }), "{msg}");
    assert!(msg.contains("'x'") && msg.contains("'y'"), "{msg}");

    // A file larger than any snapshot document.
    let big = " ".repeat(snapshot_conf::limits::MAX_DOCUMENT_BYTES + 1);
    let dir = case("large", &[("big.xml", big)]);
    let (err, msg) = refused(&layout, &mut store, &dir, &none);
    assert!(matches!(err, TransferError::TooLarge { .. }), "{msg}");
    assert!(
        msg.contains("big.xml") && msg.contains("remove it"),
        "{msg}"
    );

    // A directory that is not there.
    let (err, msg) = refused(&layout, &mut store, &tmp.path().join("nowhere"), &none);
    assert!(matches!(err, TransferError::Io { .. }), "{msg}");
    assert!(msg.contains("nowhere"), "{msg}");

    // A store opened to read.
    drop(store);
    let mut reader = MetadataStore::open(&layout, domain("vm2"), Access::Read).expect("open");
    let dir = case("read-only", &[]);
    let (err, msg) = refused(&layout, &mut reader, &dir, &none);
    assert!(matches!(err, TransferError::Store(_)), "{msg}");
    assert!(
        msg.contains("opened read-only") && msg.contains("open it for writing"),
        "{msg}"
    );
    drop(reader);
    let mut store = open(&layout, "vm2");

    // After all that, the good snapshot still imports.
    fs::remove_file(tmp.path().join("name/wrong.xml")).expect("fix the directory");
    let report = import_dir(&mut store, &tmp.path().join("name"), &none).expect("fixed");
    assert_eq!(report.imported, names(&["good"]));
}

#[test]
fn test_import_replace_overwrites_and_identical_snapshots_are_not_conflicts() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path().join("state"));
    let mut store = target(&layout);
    let dir = tmp.path().join("dir");
    // `x` identical (current in the store), `snap` changed, `new` new.
    write(&dir, "x.xml", &meta_xml("x", None, 20, false));
    write(
        &dir,
        "snap.xml",
        &meta_xml_described("snap", None, 10, false, Some("changed")),
    );
    write(&dir, "new.xml", &meta_xml("new", Some("snap"), 30, true));
    write(&dir, "README", "skipped\n");
    write(&dir, ".hidden.xml", "skipped\n");
    let not_utf8 = std::ffi::OsStr::from_bytes(b"\xff.xml");
    fs::write(dir.join(not_utf8), meta_xml("x", None, 1, false)).expect("write");
    fs::create_dir(dir.join("sub.xml")).expect("mkdir");
    let replace = ImportOptions {
        replace: true,
        ..ImportOptions::default()
    };

    let report = import_dir(&mut store, &dir, &replace).expect("import");

    assert_eq!(report.imported, names(&["snap", "new"]));
    assert_eq!(report.replaced, names(&["snap"]));
    assert_eq!(report.unchanged, names(&["x"]));
    assert_eq!(report.current.as_deref(), Some("new"));
    assert_eq!(
        report.skipped,
        names(&[".hidden.xml", "README", "sub.xml", "\u{fffd}.xml"])
    );
    assert_eq!(
        summary(&store),
        vec![
            ("new".into(), Some("snap".into()), true),
            ("snap".into(), None, false),
            ("x".into(), None, false),
        ]
    );
    drop(store);
    let stored = owner_files(&layout, "vm2");
    assert_eq!(
        stored["snap.xml"],
        meta_xml_described("snap", None, 10, false, Some("changed")).into_bytes()
    );
    assert_eq!(
        stored["x.xml"],
        meta_xml("x", None, 20, false).into_bytes(),
        "no longer current"
    );

    // Run again: nothing to do, nothing written.
    let mut store = open(&layout, "vm2");
    let report = import_dir(&mut store, &dir, &ImportOptions::default()).expect("again");
    assert!(report.imported.is_empty(), "{report:?}");
    assert_eq!(report.unchanged, names(&["snap", "x", "new"]));
    drop(store);
    assert_eq!(owner_files(&layout, "vm2"), stored);
}

#[test]
fn test_import_unreadable_stored_file_is_a_conflict_and_orphans_are_relinked() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path().join("state"));
    let owner_dir = layout.owner_dir(&domain("vm2")).expect("dir");
    // The store holds an unreadable `a` and an orphan `c` (parent `b`).
    write(&owner_dir, "a.xml", "garbage");
    write(&owner_dir, "c.xml", &meta_xml("c", Some("b"), 3, false));
    let dir = tmp.path().join("dir");
    write(&dir, "a.xml", &meta_xml("a", None, 1, false));
    write(&dir, "b.xml", &meta_xml("b", Some("a"), 2, false));
    write(&dir, "c.xml", &meta_xml("c", Some("b"), 3, false));
    let mut store = open(&layout, "vm2");
    assert_eq!(store.tree().parent("c"), Ok(None), "an orphan is a root");

    let (err, msg) = refused(&layout, &mut store, &dir, &ImportOptions::default());
    assert!(
        matches!(&err, TransferError::Exists { names, .. } if names == &["a"]),
        "{msg}"
    );

    let replace = ImportOptions {
        replace: true,
        ..ImportOptions::default()
    };
    let report = import_dir(&mut store, &dir, &replace).expect("import");
    assert_eq!(report.imported, names(&["a", "b", "c"]));
    assert_eq!(report.replaced, names(&["a"]));
    assert_eq!(store.tree().parent("c"), Ok(Some("b")), "relinked");
    drop(store);
    let store = MetadataStore::open(&layout, domain("vm2"), Access::Read).expect("reopen");
    assert_eq!(store.warnings(), []);
    assert_eq!(store.tree().parent("c"), Ok(Some("b")));
}

#[test]
fn test_volume_import_checks_kind_and_volume() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path().join("state"));
    let vol = |name: &str, path: &str, parent: Option<&str>, current: bool| {
        let parent = parent
            .map(|p| format!("<parent><name>{p}</name></parent>"))
            .unwrap_or_default();
        let xml = format!(
            "<volsnapshot><name>{name}</name><state>offline</state>{parent}<creationTime>1</creationTime><volume><path>{path}</path></volume><active>{}</active></volsnapshot>",
            u8::from(current)
        );
        let parsed = VolSnapshotDef::parse(
            &xml,
            &ParseOptions::new(ParseFlags::REDEFINE | ParseFlags::INTERNAL),
        )
        .expect("volume snapshot");
        let mut flags = FormatFlags::SECURE | FormatFlags::INTERNAL;
        flags.set(FormatFlags::CURRENT, current);
        parsed.def.format(&FormatOptions::new(flags))
    };
    let owner = Owner::Volume("/img/a.qcow2".into());
    let mut store = MetadataStore::open(&layout, owner.clone(), Access::Write).expect("open");

    let dir = tmp.path().join("good");
    write(&dir, "v1.xml", &vol("v1", "/img/a.qcow2", None, false));
    write(&dir, "v2.xml", &vol("v2", "/img/a.qcow2", Some("v1"), true));
    let report = import_dir(&mut store, &dir, &ImportOptions::default()).expect("import");
    assert_eq!(report.imported, names(&["v1", "v2"]));
    assert_eq!(store.tree().current(), Some("v2"));

    let dir = tmp.path().join("other-volume");
    write(&dir, "w.xml", &vol("w", "/img/b.qcow2", None, false));
    let msg = import_dir(&mut store, &dir, &ImportOptions::default())
        .expect_err("another volume")
        .to_string();
    assert!(
        msg.contains("was taken of the volume '/img/b.qcow2'")
            && msg.contains("volume '/img/a.qcow2' has the key '/img/a.qcow2'"),
        "{msg}"
    );

    let dir = tmp.path().join("domain-kind");
    write(&dir, "d.xml", &meta_xml("d", None, 1, false));
    let msg = import_dir(&mut store, &dir, &ImportOptions::default())
        .expect_err("domain snapshot")
        .to_string();
    assert!(
        msg.contains("is a domain snapshot, but volume '/img/a.qcow2' keeps volume snapshots"),
        "{msg}"
    );
    assert_eq!(store.tree().len(), 2);

    // Round trip through a directory into another volume's store.
    let out = tmp.path().join("out");
    export_dir(&store, &out, ExportOptions::default()).expect("export");
    drop(store);
    let exported = files(&out);
    assert_eq!(exported.len(), 2);
    assert_eq!(
        exported["v2.xml"],
        vol("v2", "/img/a.qcow2", Some("v1"), true).into_bytes()
    );
}

// ---------------------------------------------------------------------
// Crash half-way: running the same import again finishes it

#[test]
#[ignore = "child process of the crash tests; does nothing on its own"]
fn crash_child() {
    let (Some(state), Some(dir)) = (std::env::var_os(STATE_ENV), std::env::var_os(DIR_ENV)) else {
        return;
    };
    let layout = Layout::new(PathBuf::from(state));
    let mut store = open(&layout, "vm2");
    import_dir(&mut store, Path::new(&dir), &ImportOptions::default()).expect("import");
    panic!("crash point {:?} was not reached", std::env::var(CRASH_ENV));
}

#[test]
fn test_import_killed_half_way_is_finished_by_running_it_again() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let source = Layout::new(tmp.path().join("source"));
    hierarchy(&source, "vm1");
    let dir = tmp.path().join("dir");
    let store = MetadataStore::open(&source, domain("vm1"), Access::Read).expect("open");
    export_dir(&store, &dir, ExportOptions::default()).expect("export");
    drop(store);
    let exported = files(&dir);
    let order = ["root", "a1", "b1", "a2", "b2"];

    // (crash point, snapshots already in the store after the crash)
    for (point, done) in [
        ("temp-synced", 0), // the first file not yet in place
        ("renamed", 1),     // the first file in place, its directory not synced
        ("import-1-done", 1),
        ("import-3-done", 3),
        ("import-before-current", 5),
    ] {
        let state = tmp.path().join(format!("state-{point}"));
        let status = std::process::Command::new(std::env::current_exe().expect("current_exe"))
            .args(["--exact", "crash_child", "--ignored", "--nocapture"])
            .env(STATE_ENV, &state)
            .env(DIR_ENV, &dir)
            .env(CRASH_ENV, point)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("spawn crash child");
        assert_eq!(status.signal(), Some(9), "{point}: not killed: {status}");

        let layout = Layout::new(state);
        let mut store = open(&layout, "vm2");
        // Consistent after the crash: a parents-first part, no orphan,
        // nobody current yet.
        let mut present: Vec<&str> = store.tree().list(&ListFilter::default()).expect("list");
        present.sort_unstable();
        let mut want = order[..done].to_vec();
        want.sort_unstable();
        assert_eq!(present, want, "{point}");
        assert!(
            store
                .warnings()
                .iter()
                .all(|w| matches!(w, snapshot_core::store::LoadWarning::Recovered { .. })),
            "{point}: {:?}",
            store.warnings()
        );
        assert_eq!(store.tree().current(), None, "{point}");

        let report = import_dir(&mut store, &dir, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{point}: rerun: {e}"));
        assert_eq!(report.unchanged.len(), done, "{point}: {report:?}");
        assert_eq!(report.imported, names(&order[done..]), "{point}");
        assert_eq!(report.current.as_deref(), Some("b1"), "{point}");
        drop(store);
        assert_eq!(owner_files(&layout, "vm2"), exported, "{point}");
    }
}
