//! MetadataStore on a real directory: files written, reloaded, re-linked,
//! libvirt's own metadata files read as they are.

use std::path::Path;

use snapshot_conf::{DomainSnapshotDef, ParseFlags, ParseOptions};

use super::*;

fn layout(dir: &Path) -> Layout {
    Layout::new(dir.to_path_buf())
}

fn domain() -> Owner {
    Owner::Domain("vm1".into())
}

fn snap(name: &str) -> SnapshotRecord {
    let xml = format!(
        "<domainsnapshot><name>{name}</name><state>shutoff</state><creationTime>1700000000</creationTime></domainsnapshot>"
    );
    let parsed = DomainSnapshotDef::parse(&xml, &ParseOptions::new(ParseFlags::REDEFINE))
        .expect("test definition");
    SnapshotRecord::Domain(Box::new(parsed.def))
}

fn open(dir: &Path) -> MetadataStore {
    MetadataStore::open(&layout(dir), domain(), Access::Write).expect("open store")
}

fn file_text(dir: &Path, name: &str) -> String {
    let path = layout(dir)
        .owner_dir(&domain())
        .expect("owner dir")
        .join(format!("{name}.xml"));
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn test_store_create_writes_libvirt_files_and_reloads_the_same_tree() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = open(tmp.path());
    store.create(snap("a")).expect("a");
    store.create(snap("b")).expect("b");
    assert!(file_text(tmp.path(), "a").contains("<active>0</active>"));
    let b = file_text(tmp.path(), "b");
    assert!(
        b.contains("<parent>\n    <name>a</name>\n  </parent>"),
        "{b}"
    );
    assert!(b.contains("<active>1</active>"), "{b}");
    drop(store);

    let store = open(tmp.path());
    assert_eq!(store.tree().current(), Some("b"));
    assert_eq!(store.tree().parent("b"), Ok(Some("a")));
    assert_eq!(store.warnings(), []);
}

#[test]
fn test_store_revert_then_create_branches_and_persists_current() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = open(tmp.path());
    for n in ["a", "b"] {
        store.create(snap(n)).expect("create");
    }
    store.set_current(Some("a")).expect("revert");
    store.create(snap("c")).expect("c");
    drop(store);

    let store = open(tmp.path());
    assert_eq!(store.tree().children("a"), Ok(vec!["b", "c"]));
    assert_eq!(store.tree().current(), Some("c"));
    assert!(file_text(tmp.path(), "b").contains("<active>0</active>"));
}

#[test]
fn test_store_delete_rebase_relinks_children_on_disk() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = open(tmp.path());
    for n in ["a", "b", "c"] {
        store.create(snap(n)).expect("create");
    }
    assert_eq!(
        store.delete("b", ChildPolicy::Rebase).expect("delete"),
        ["b"]
    );
    drop(store);

    let store = open(tmp.path());
    assert_eq!(store.tree().parent("c"), Ok(Some("a")));
    assert!(!store.tree().contains("b"));
    assert!(file_text(tmp.path(), "c").contains("<name>a</name>"));
}

#[test]
fn test_store_delete_children_removes_files_and_moves_current_up() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = open(tmp.path());
    for n in ["a", "b", "c"] {
        store.create(snap(n)).expect("create");
    }
    let mut removed = store.delete("b", ChildPolicy::Children).expect("delete");
    removed.sort();
    assert_eq!(removed, ["b", "c"]);
    drop(store);

    let store = open(tmp.path());
    assert_eq!(store.tree().len(), 1);
    assert_eq!(store.tree().current(), Some("a"));
    assert!(file_text(tmp.path(), "a").contains("<active>1</active>"));
    let dir = layout(tmp.path()).owner_dir(&domain()).expect("dir");
    assert_eq!(fs::read_dir(dir).expect("dir").count(), 1);
}

#[test]
fn test_store_reads_libvirt_metadata_files_as_they_are() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = layout(tmp.path()).owner_dir(&domain()).expect("dir");
    fs::create_dir_all(&dir).expect("mkdir");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../snapshot-conf/tests/libvirt/xml2xml-out/full_domain.xml");
    let text = fs::read_to_string(&corpus).expect("corpus file");
    fs::write(dir.join("my snap name.xml"), &text).expect("copy");

    let store = MetadataStore::open(&layout(tmp.path()), domain(), Access::Read).expect("open");

    assert_eq!(store.tree().current(), Some("my snap name"));
    assert_eq!(
        store.warnings(),
        [LoadWarning::Orphan {
            name: "my snap name".into(),
            parent: "earlier_snap".into()
        }]
    );
    let record = store.get("my snap name").expect("loaded");
    assert_eq!(record.to_xml(true), text, "rewritten byte for byte");
}

#[test]
fn test_store_unparsable_file_is_reported_and_kept() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = open(tmp.path());
    store.create(snap("a")).expect("a");
    drop(store);
    let dir = layout(tmp.path()).owner_dir(&domain()).expect("dir");
    fs::write(dir.join("broken.xml"), "<domainsnapshot>").expect("write");

    let store = open(tmp.path());

    assert_eq!(store.tree().len(), 1);
    assert!(matches!(
        store.warnings(),
        [LoadWarning::Unreadable { file, .. }] if file == "broken.xml"
    ));
    assert!(dir.join("broken.xml").exists());
}

#[test]
fn test_store_read_only_refuses_changes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = MetadataStore::open(&layout(tmp.path()), domain(), Access::Read).expect("open");
    let err = store.create(snap("a")).expect_err("read-only");
    assert!(matches!(err, StoreError::ReadOnly { .. }));
    assert_eq!(
        err.to_string(),
        "domain 'vm1' was opened read-only; open it for writing to change its snapshots"
    );
}

#[test]
fn test_store_refuses_bad_and_colliding_names_before_writing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = open(tmp.path());
    assert!(matches!(
        store.create(snap("a/b")),
        Err(StoreError::Layout(_))
    ));
    store.create(snap("Base")).expect("Base");
    assert!(matches!(
        store.create(snap("base")),
        Err(StoreError::Layout(_))
    ));
    assert_eq!(store.tree().len(), 1);
    let dir = layout(tmp.path()).owner_dir(&domain()).expect("dir");
    assert_eq!(fs::read_dir(dir).expect("dir").count(), 1);
}

#[test]
fn test_store_redefine_parents_first_and_current() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = open(tmp.path());
    let mut child = snap("s2");
    child.set_parent(Some("s3"));
    let err = store
        .redefine(child.clone(), false)
        .expect_err("parent first");
    assert!(matches!(
        err,
        StoreError::Tree(TreeError::ParentNotFound { .. })
    ));
    store.redefine(snap("s3"), false).expect("s3");
    store.redefine(child, true).expect("s2");
    drop(store);
    let store = open(tmp.path());
    assert_eq!(store.tree().current(), Some("s2"));
    assert_eq!(store.tree().parent("s2"), Ok(Some("s3")));
}

#[test]
fn test_store_volume_owner_refuses_domain_snapshots() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = MetadataStore::open(
        &layout(tmp.path()),
        Owner::Volume("/img/disk.qcow2".into()),
        Access::Write,
    )
    .expect("open");
    let err = store.create(snap("a")).expect_err("wrong kind");
    assert!(matches!(err, StoreError::WrongKind { .. }));
}

#[test]
fn test_store_loop_and_several_current_in_files_are_reported_not_fatal() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = layout(tmp.path()).owner_dir(&domain()).expect("dir");
    fs::create_dir_all(&dir).expect("mkdir");
    for (name, parent) in [("a", "b"), ("b", "a")] {
        let xml = format!(
            "<domainsnapshot><name>{name}</name><state>shutoff</state><parent><name>{parent}</name></parent>\
             <creationTime>1</creationTime><active>1</active></domainsnapshot>"
        );
        fs::write(dir.join(format!("{name}.xml")), xml).expect("write");
    }

    let store = MetadataStore::open(&layout(tmp.path()), domain(), Access::Read).expect("open");

    assert_eq!(store.tree().len(), 2);
    assert!(store.tree().invariants_hold());
    let warnings = store.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| matches!(w, LoadWarning::Orphan { .. })),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| matches!(w, LoadWarning::SeveralCurrent { names, .. } if names.len() == 2)),
        "{warnings:?}"
    );
    assert!(store.tree().current().is_some());
}

#[test]
fn test_store_writer_excludes_others_and_other_owners_do_not_block() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let l = layout(tmp.path());
    let writer = open(tmp.path());
    assert!(
        MetadataStore::try_open(&l, domain(), Access::Write)
            .expect("try")
            .is_none()
    );
    assert!(
        MetadataStore::try_open(&l, domain(), Access::Read)
            .expect("try")
            .is_none()
    );
    let other =
        MetadataStore::try_open(&l, Owner::Domain("vm2".into()), Access::Write).expect("try");
    assert!(other.is_some(), "another owner is not blocked");
    drop(writer);
    let r1 = MetadataStore::try_open(&l, domain(), Access::Read).expect("try");
    let r2 = MetadataStore::try_open(&l, domain(), Access::Read).expect("try");
    assert!(r1.is_some() && r2.is_some(), "readers share");
    assert!(
        MetadataStore::try_open(&l, domain(), Access::Write)
            .expect("try")
            .is_none()
    );
}

/// Every file of the owner directory with its content.
fn all_files(dir: &Path) -> Vec<(String, String)> {
    let owner_dir = layout(dir).owner_dir(&domain()).expect("owner dir");
    let mut files: Vec<(String, String)> = fs::read_dir(&owner_dir)
        .expect("list owner dir")
        .map(|e| {
            let e = e.expect("entry");
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn test_store_refuses_to_relink_a_child_whose_file_is_garbled_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    {
        let mut store = open(tmp.path());
        for name in ["a", "b", "c"] {
            store.create(snap(name)).expect("create");
        }
    }
    // Garbled in place: the index (written on drop) still lists it, so the
    // next writer only finds out when it must rewrite c.
    let c = layout(tmp.path())
        .owner_dir(&domain())
        .expect("owner dir")
        .join("c.xml");
    fs::write(&c, "<domainsnapshot><name>c</name>").expect("garble c");
    let before = all_files(tmp.path());
    let mut store = open(tmp.path());
    let err = store
        .delete("b", ChildPolicy::Rebase)
        .expect_err("c cannot be rewritten");
    let message = err.to_string();
    assert!(
        matches!(&err, StoreError::Unreadable { name, .. } if name == "c"),
        "{err:?}"
    );
    assert!(message.contains("snapshot-delete --metadata"), "{message}");
    // Nothing changed, on disk or in memory.
    assert_eq!(all_files(tmp.path()), before);
    assert_eq!(store.tree().parent("b"), Ok(Some("a")));
    assert!(store.tree().contains("b"));
    // The garbled snapshot itself can still be removed, and then b.
    assert_eq!(
        store.delete("c", ChildPolicy::Rebase).expect("delete c"),
        ["c"]
    );
    assert_eq!(
        store.delete("b", ChildPolicy::Rebase).expect("delete b"),
        ["b"]
    );
    assert_eq!(store.tree().current(), Some("a"));
}

#[test]
fn test_store_reader_restamps_an_index_trusted_only_after_listing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    {
        let mut store = open(tmp.path());
        store.create(snap("a")).expect("a");
    }
    let dir = layout(tmp.path()).owner_dir(&domain()).expect("owner dir");
    let index_path = layout(tmp.path()).owner_index(&domain()).expect("index");
    // The directory last changed 10 s ago; the index says it saw that
    // mtime 1 ns later (racy: trusted only after listing).
    let old = SystemTime::now() - std::time::Duration::from_secs(10);
    fs::File::open(&dir)
        .and_then(|f| f.set_modified(old))
        .expect("set dir mtime");
    let mtime = index::nanos(
        fs::metadata(&dir)
            .and_then(|m| m.modified())
            .expect("mtime"),
    );
    let mut found = Index::read(&index_path).expect("read").expect("valid");
    found.dir_mtime_ns = mtime;
    found.written_ns = mtime + 1;
    found.write(&index_path).expect("write racy index");
    assert_eq!(found.freshness(&dir, mtime), Freshness::FreshAfterListing);

    let reader = MetadataStore::open(&layout(tmp.path()), domain(), Access::Read).expect("read");
    assert!(reader.opened_from_index());
    drop(reader);
    let again = Index::read(&index_path).expect("read").expect("valid");
    assert_eq!(again.freshness(&dir, mtime), Freshness::Fresh);
    assert_eq!(again.entries, found.entries);
}

fn snap_under(name: &str, parent: Option<&str>) -> SnapshotRecord {
    let parent = parent
        .map(|p| format!("<parent><name>{p}</name></parent>"))
        .unwrap_or_default();
    let xml = format!(
        "<domainsnapshot><name>{name}</name><state>shutoff</state>{parent}\
         <creationTime>1700000000</creationTime></domainsnapshot>"
    );
    let parsed = DomainSnapshotDef::parse(&xml, &ParseOptions::new(ParseFlags::REDEFINE))
        .expect("test definition");
    SnapshotRecord::Domain(Box::new(parsed.def))
}

#[test]
fn test_store_rename_moves_children_and_current_in_one_change() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = open(tmp.path());
    for name in ["a", "b", "c"] {
        store.create(snap(name)).expect("create");
    }
    store.set_current(Some("b")).expect("revert to b");
    store.create(snap("d")).expect("d under b");
    store.set_current(Some("b")).expect("b current");

    store
        .rename("b", snap_under("x", Some("a")), false)
        .expect("rename");
    assert!(!store.tree().contains("b"));
    assert_eq!(store.tree().current(), Some("x"));
    assert_eq!(store.tree().children("x"), Ok(vec!["c", "d"]));
    drop(store);

    let store = open(tmp.path());
    assert_eq!(store.tree().current(), Some("x"));
    assert_eq!(store.tree().parent("c"), Ok(Some("x")));
    assert_eq!(store.tree().parent("x"), Ok(Some("a")));
    assert!(file_text(tmp.path(), "c").contains("<name>x</name>"));
    assert!(file_text(tmp.path(), "x").contains("<active>1</active>"));
    let names: Vec<String> = all_files(tmp.path()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a.xml", "c.xml", "d.xml", "x.xml"]);
    assert_eq!(store.warnings(), []);
}

#[test]
fn test_store_rename_refusals_change_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut store = open(tmp.path());
    for name in ["a", "b", "c"] {
        store.create(snap(name)).expect("create");
    }
    let before = all_files(tmp.path());
    for (record, says) in [
        (snap_under("c", Some("a")), "already exists"),
        (snap_under("B", Some("a")), "case"),
        (snap_under("x", Some("c")), "cycle"),
        (snap_under("x", Some("b")), "own parent"),
        (snap_under("x", Some("zz")), "not found"),
    ] {
        let err = store.rename("b", record, false).expect_err(says);
        assert!(err.to_string().contains(says), "{says}: {err}");
        assert_eq!(all_files(tmp.path()), before, "{says}");
        assert_eq!(store.tree().parent("c"), Ok(Some("b")), "{says}");
    }
    let err = store
        .rename("nope", snap_under("x", None), false)
        .expect_err("unknown");
    assert!(err.to_string().contains("nope"), "{err}");
}
