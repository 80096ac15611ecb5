//! Crash tests of the multi-file operations: a real child process runs one
//! operation and is SIGKILLed at one crash point; the parent then opens the
//! store for writing (which recovers) and checks that the store is exactly
//! in the state before or after the operation, never a mix, with no
//! journal and no temp file left.
//!
//! The child is this test binary run again (`std::env::current_exe()`) with
//! only the ignored test `crash_child_op`:
//!   <exe> --exact store::metadata::crash_tests::crash_child_op --ignored --nocapture
//! with CHILD_DIR_ENV naming the state directory, CHILD_CASE_ENV the case
//! and `VIRTSNAP_CRASH_AT` the crash point (the first time it is hit).
//! Without CHILD_DIR_ENV, `crash_child_op` does nothing.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use snapshot_conf::{DomainSnapshotDef, ParseFlags, ParseOptions};

use super::*;
use crate::store::persist::CRASH_ENV;

const CHILD_DIR_ENV: &str = "VIRTSNAP_TEST_CRASH_DIR";
const CHILD_CASE_ENV: &str = "VIRTSNAP_TEST_CRASH_CASE";

/// Crash points of `persist::write_atomic`; their first hit is the
/// journal's write.
const JOURNAL_WRITE_POINTS: [&str; 3] = ["temp-written", "temp-synced", "renamed"];

/// One operation under test.
struct Case {
    /// Its name (CHILD_CASE_ENV).
    name: &'static str,
    /// The journal's operation word.
    operation: &'static str,
    /// Files the journal lists = steps of the operation.
    files: usize,
}

const CASES: [Case; 6] = [
    // a -> b (current); create c: writes c, rewrites b.
    Case {
        name: "create",
        operation: "create",
        files: 2,
    },
    // a -> b -> c (current); set current a: writes a, rewrites c.
    Case {
        name: "set-current",
        operation: "set-current",
        files: 2,
    },
    // a -> b -> {c, d -> e (current)}; delete b, rebase: rewrites c, d
    // (parent a), removes b; e stays current and is not rewritten.
    Case {
        name: "delete-rebase",
        operation: "delete",
        files: 3,
    },
    // a -> b -> {c, d (current)}; delete b and children: rewrites a (the
    // new current), removes b, c, d.
    Case {
        name: "delete-children",
        operation: "delete",
        files: 4,
    },
    // a -> b -> c (current); rename b to x: writes x, rewrites c (parent
    // x), removes b.
    Case {
        name: "rename",
        operation: "rename",
        files: 3,
    },
    // a -> b (current), c child of a; redefine c as current: writes c,
    // rewrites b.
    Case {
        name: "redefine-current",
        operation: "redefine",
        files: 2,
    },
];

fn layout(dir: &Path) -> Layout {
    Layout::new(dir.to_path_buf())
}

fn domain() -> Owner {
    Owner::Domain("vm1".into())
}

fn snap(name: &str, parent: Option<&str>) -> SnapshotRecord {
    let parent = parent
        .map(|p| format!("<parent><name>{p}</name></parent>"))
        .unwrap_or_default();
    let xml = format!(
        "<domainsnapshot><name>{name}</name><state>shutoff</state>{parent}<creationTime>1700000000</creationTime></domainsnapshot>"
    );
    let parsed = DomainSnapshotDef::parse(&xml, &ParseOptions::new(ParseFlags::REDEFINE))
        .expect("test definition");
    SnapshotRecord::Domain(Box::new(parsed.def))
}

fn open(dir: &Path) -> MetadataStore {
    MetadataStore::open(&layout(dir), domain(), Access::Write).expect("open store")
}

/// Builds the state before the case's operation.
fn setup(case: &str, dir: &Path) {
    let mut store = open(dir);
    let chain: &[&str] = match case {
        "create" | "redefine-current" => &["a", "b"],
        "set-current" => &["a", "b", "c"],
        "delete-rebase" | "delete-children" | "rename" => &["a", "b", "c"],
        other => panic!("unknown case {other}"),
    };
    for name in chain {
        store.create(snap(name, None)).expect("create");
    }
    match case {
        "delete-rebase" => {
            store.set_current(Some("b")).expect("revert to b");
            store.create(snap("d", None)).expect("create d");
            store.create(snap("e", None)).expect("create e");
        }
        "delete-children" => {
            store.set_current(Some("b")).expect("revert to b");
            store.create(snap("d", None)).expect("create d");
        }
        _ => {}
    }
}

/// Runs the case's operation.
fn operate(case: &str, dir: &Path) {
    let mut store = open(dir);
    match case {
        "create" => store.create(snap("c", None)).expect("create c"),
        "set-current" => store.set_current(Some("a")).expect("set current"),
        "delete-rebase" => {
            store.delete("b", ChildPolicy::Rebase).expect("delete b");
        }
        "delete-children" => {
            store.delete("b", ChildPolicy::Children).expect("delete b");
        }
        "redefine-current" => store
            .redefine(snap("c", Some("a")), true)
            .expect("redefine c"),
        "rename" => store
            .rename("b", snap("x", Some("a")), false)
            .expect("rename b"),
        other => panic!("unknown case {other}"),
    }
}

#[test]
#[ignore = "child process of the crash tests; does nothing on its own"]
fn crash_child_op() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let case = std::env::var(CHILD_CASE_ENV).expect("case");
    operate(&case, Path::new(&dir));
    panic!("crash point {:?} was not reached", std::env::var(CRASH_ENV));
}

fn run_child(dir: &Path, case: &str, point: &str) -> std::process::ExitStatus {
    let test_name = format!(
        "{}::crash_child_op",
        module_path!().split_once("::").expect("crate::module").1
    );
    std::process::Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", &test_name, "--ignored", "--nocapture"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_CASE_ENV, case)
        .env(CRASH_ENV, point)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn crash child")
}

/// Everything that must match: the owner directory's files with their
/// exact bytes, and the tree (name -> parent, current) as loaded.
#[derive(Debug, PartialEq, Eq)]
struct State {
    files: BTreeMap<String, Vec<u8>>,
    parents: BTreeMap<String, Option<String>>,
    current: Option<String>,
}

fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("read owner dir")
        .map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().into_string().expect("UTF-8 name");
            (name, fs::read(e.path()).expect("read file"))
        })
        .collect()
}

fn state_of(store: &MetadataStore, dir: &Path) -> State {
    let tree = store.tree();
    let parents = store
        .records
        .keys()
        .map(|n| {
            let parent = tree.parent(n).expect("in tree").map(str::to_string);
            (n.clone(), parent)
        })
        .collect();
    State {
        files: files_of(dir),
        parents,
        current: tree.current().map(str::to_string),
    }
}

/// Names in `dir` that are journals or temp files.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".journal") || (n.starts_with('.') && n.contains(".tmp-")))
        .collect();
    names.sort();
    names
}

/// The state of a fresh store set up for `case`, before or after the
/// operation, with the store reopened (as the parent does after a crash).
fn reference(case: &str, after: bool) -> State {
    let tmp = tempfile::tempdir().expect("tempdir");
    setup(case, tmp.path());
    if after {
        operate(case, tmp.path());
    }
    let store = open(tmp.path());
    assert_eq!(store.warnings(), [], "{case}: reference store");
    state_of(
        &store,
        &layout(tmp.path()).owner_dir(&domain()).expect("dir"),
    )
}

#[test]
fn test_crash_at_every_step_leaves_the_state_before_or_after() {
    for case in &CASES {
        let before = reference(case.name, false);
        let after = reference(case.name, true);
        assert_ne!(
            before, after,
            "{}: the operation changes nothing",
            case.name
        );
        let steps = ["step-1-done", "step-2-done", "step-3-done", "step-4-done"];
        let points = JOURNAL_WRITE_POINTS
            .iter()
            .chain(&["journal-written"])
            .chain(&steps[..case.files])
            .chain(&["unlinked"]);
        for &point in points {
            let what = format!("{} at {point}", case.name);
            let tmp = tempfile::tempdir().expect("tempdir");
            let root = tmp.path();
            setup(case.name, root);
            let owner_dir = layout(root).owner_dir(&domain()).expect("owner dir");
            let side_dir = owner_dir.parent().expect("kind dir").to_path_buf();
            let journal_path = layout(root).owner_journal(&domain()).expect("journal");

            let status = run_child(root, case.name, point);
            assert_eq!(
                status.signal(),
                Some(9),
                "{what}: child not SIGKILLed (crash point never hit?): {status}"
            );
            // The first write_atomic of the operation is the journal's.
            if matches!(point, "temp-written" | "temp-synced") {
                assert!(!journal_path.exists(), "{what}: journal already renamed");
                assert!(
                    leftovers(&side_dir).iter().any(|n| n.contains(".tmp-")),
                    "{what}: no journal temp: the crash was not in the journal's write"
                );
            }
            // Before the journal is renamed into place: before-state, no
            // journal. "unlinked" is first hit by a delete's or rename's first removal
            // step (journal still there), otherwise by removing the journal.
            let crashed_before = matches!(point, "temp-written" | "temp-synced");
            let journaled = journal_path.exists();
            let expect_journal = !crashed_before
                && (point != "unlinked" || matches!(case.operation, "delete" | "rename"));
            assert_eq!(journaled, expect_journal, "{what}: journal presence");

            let store = open(root);
            let state = state_of(&store, &owner_dir);
            let expected = if crashed_before { &before } else { &after };
            assert_eq!(
                &state, expected,
                "{what}: neither before nor after (before: {before:?}, after: {after:?})"
            );
            if journaled {
                assert_eq!(
                    store.warnings(),
                    [LoadWarning::Recovered {
                        operation: case.operation.to_owned(),
                        files: case.files,
                    }],
                    "{what}"
                );
            } else {
                assert_eq!(store.warnings(), [], "{what}");
            }
            assert_eq!(leftovers(&side_dir), Vec::<String>::new(), "{what}");
            assert_eq!(leftovers(&owner_dir), Vec::<String>::new(), "{what}");
            drop(store);

            // The store keeps working and nothing is lost on reload.
            let mut store = open(root);
            assert_eq!(store.warnings(), [], "{what}: second open");
            store.create(snap("z", None)).expect("create after crash");
            drop(store);
            let store = open(root);
            assert_eq!(store.warnings(), [], "{what}: after a new create");
            assert_eq!(store.tree().len(), expected.parents.len() + 1, "{what}");
        }
    }
}

#[test]
fn test_reader_refuses_a_leftover_journal_until_a_writer_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    setup("create", root);
    let status = run_child(root, "create", "step-1-done");
    assert_eq!(status.signal(), Some(9), "child not SIGKILLed: {status}");

    let err = MetadataStore::open(&layout(root), domain(), Access::Read)
        .expect_err("reader must refuse a half-way state");
    match &err {
        StoreError::Interrupted { operation, .. } => assert_eq!(operation, "create"),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("open it for writing"), "{err}");

    let store = open(root);
    assert_eq!(store.tree().current(), Some("c"));
    drop(store);
    let store = MetadataStore::open(&layout(root), domain(), Access::Read).expect("read");
    assert_eq!(store.tree().current(), Some("c"));
    assert_eq!(store.tree().parent("c"), Ok(Some("b")));
}

#[test]
fn test_unparsable_journal_is_removed_and_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    setup("create", root);
    let journal_path = layout(root).owner_journal(&domain()).expect("journal");
    fs::write(&journal_path, "not a journal").expect("write");
    let store = open(root);
    assert!(
        matches!(
            store.warnings(),
            [LoadWarning::Unreadable { file, .. }] if file == ".vm1.journal"
        ),
        "{:?}",
        store.warnings()
    );
    assert!(!journal_path.exists());
    assert_eq!(store.tree().current(), Some("b"));
}
