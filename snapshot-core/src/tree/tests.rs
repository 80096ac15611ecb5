//! Unit tests of [`SnapshotTree`], including the hierarchy of libvirt's
//! `virshtest` "snapshot" script: s1{s3{s2,s6{s4,s5}},s7{s8}} built by
//! create and revert.

use super::*;

fn info(name: &str) -> SnapshotInfo {
    SnapshotInfo {
        name: name.to_string(),
        state: StateKind::Active,
        location: Location::Internal,
        has_metadata: true,
        creation_time: 0,
    }
}

/// libvirt's test hierarchy s1{s3{s2,s6{s4,s5}},s7{s8}}, built by create
/// and revert only.
fn virsh_tree() -> SnapshotTree {
    let mut t = SnapshotTree::new();
    for step in [
        "s1", "s3", "s2", "@s3", "s6", "s4", "@s6", "s5", "@s1", "s7", "s8",
    ] {
        match step.strip_prefix('@') {
            Some(target) => t.set_current(Some(target)).expect("revert"),
            None => t.create(info(step)).expect("create"),
        }
    }
    assert!(t.invariants_hold());
    assert_eq!(t.current(), Some("s8"));
    t
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v
}

#[test]
fn test_create_parent_is_current_and_becomes_current() {
    let mut t = SnapshotTree::new();
    t.create(info("a")).expect("a");
    t.create(info("b")).expect("b");
    assert_eq!(t.parent("b"), Ok(Some("a")));
    assert_eq!(t.parent("a"), Ok(None));
    assert_eq!(t.current(), Some("b"));
}

#[test]
fn test_revert_then_create_branches() {
    let mut t = SnapshotTree::new();
    t.create(info("a")).expect("a");
    t.create(info("b")).expect("b");
    t.set_current(Some("a")).expect("revert");
    t.create(info("c")).expect("c");
    assert_eq!(t.children("a"), Ok(vec!["b", "c"]));
    assert!(t.is_current("c"));
}

#[test]
fn test_create_duplicate_name_refused() {
    let mut t = SnapshotTree::new();
    t.create(info("a")).expect("a");
    assert_eq!(
        t.create(info("a")),
        Err(TreeError::Exists { name: "a".into() })
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn test_virsh_tree_listings() {
    let t = virsh_tree();
    let all = ListFilter::default();
    assert_eq!(t.list(&all).expect("list").len(), 8);
    let roots = ListFilter {
        roots: true,
        ..ListFilter::default()
    };
    assert_eq!(t.list(&roots), Ok(vec!["s1"]));
    let leaves = ListFilter {
        leaves: true,
        ..ListFilter::default()
    };
    assert_eq!(
        sorted(t.list(&leaves).expect("leaves")),
        ["s2", "s4", "s5", "s8"]
    );
    let no_leaves = ListFilter {
        no_leaves: true,
        ..ListFilter::default()
    };
    assert_eq!(
        sorted(t.list(&no_leaves).expect("no leaves")),
        ["s1", "s3", "s6", "s7"]
    );
    let both = ListFilter {
        leaves: true,
        no_leaves: true,
        ..ListFilter::default()
    };
    assert_eq!(t.list(&both).expect("both").len(), 8);
    let from = ListFilter {
        from: Some("s3".into()),
        ..ListFilter::default()
    };
    assert_eq!(sorted(t.list(&from).expect("from")), ["s2", "s6"]);
    let descendants = ListFilter {
        from: Some("s3".into()),
        descendants: true,
        ..ListFilter::default()
    };
    assert_eq!(
        sorted(t.list(&descendants).expect("descendants")),
        ["s2", "s4", "s5", "s6"]
    );
    assert_eq!(t.child_count("s1", false), Ok(2));
    assert_eq!(t.child_count("s1", true), Ok(7));
}

#[test]
fn test_topological_lists_parents_before_children() {
    let t = virsh_tree();
    let topo = t
        .list(&ListFilter {
            topological: true,
            ..ListFilter::default()
        })
        .expect("list");
    assert_eq!(topo.len(), 8);
    for name in &topo {
        if let Ok(Some(parent)) = t.parent(name) {
            let pi = topo
                .iter()
                .position(|n| *n == parent)
                .expect("parent listed");
            let ci = topo.iter().position(|n| n == name).expect("child listed");
            assert!(pi < ci, "{parent} after {name} in {topo:?}");
        }
    }
}

#[test]
fn test_delete_rebase_moves_children_to_parent_and_current_to_parent() {
    let mut t = virsh_tree();
    t.set_current(Some("s3")).expect("current");
    assert_eq!(
        t.delete("s3", ChildPolicy::Rebase),
        Ok(vec!["s3".to_string()])
    );
    assert_eq!(
        sorted(t.children("s1").expect("children")),
        ["s2", "s6", "s7"]
    );
    assert_eq!(t.current(), Some("s1"));
    assert!(t.invariants_hold());
}

#[test]
fn test_delete_children_removes_subtree_and_moves_current_up() {
    let mut t = virsh_tree();
    t.set_current(Some("s4")).expect("current");
    let removed = t.delete("s3", ChildPolicy::Children).expect("delete");
    assert_eq!(
        sorted(removed.iter().map(String::as_str).collect()),
        ["s2", "s3", "s4", "s5", "s6"]
    );
    assert_eq!(t.current(), Some("s1"));
    assert_eq!(t.len(), 3);
    assert!(t.invariants_hold());
}

#[test]
fn test_delete_children_only_keeps_node_and_makes_it_current() {
    let mut t = virsh_tree();
    t.set_current(Some("s5")).expect("current");
    let removed = t.delete("s3", ChildPolicy::ChildrenOnly).expect("delete");
    assert_eq!(removed.len(), 4);
    assert!(t.contains("s3"));
    assert_eq!(t.children("s3"), Ok(vec![]));
    assert_eq!(t.current(), Some("s3"));
    assert!(t.invariants_hold());
}

#[test]
fn test_delete_current_root_leaves_no_current() {
    let mut t = SnapshotTree::new();
    t.create(info("a")).expect("a");
    t.delete("a", ChildPolicy::Rebase).expect("delete");
    assert_eq!(t.current(), None);
    assert!(t.is_empty());
}

#[test]
fn test_redefine_refuses_missing_parent_own_parent_and_cycle() {
    let mut t = virsh_tree();
    assert_eq!(
        t.redefine(info("s9"), Some("nope"), false),
        Err(TreeError::ParentNotFound {
            parent: "nope".into(),
            name: "s9".into()
        })
    );
    assert_eq!(
        t.redefine(info("s9"), Some("s9"), false),
        Err(TreeError::OwnParent { name: "s9".into() })
    );
    let err = t
        .redefine(info("s3"), Some("s4"), false)
        .expect_err("cycle");
    assert_eq!(
        err.to_string(),
        "parent s4 would create cycle to s3; a snapshot cannot descend from itself"
    );
    assert!(t.invariants_hold());
}

#[test]
fn test_redefine_parents_first_like_virsh_and_set_current() {
    let mut t = SnapshotTree::new();
    let err = t
        .redefine(info("s2"), Some("s3"), false)
        .expect_err("parent first");
    assert_eq!(
        err.to_string(),
        "parent s3 for snapshot s2 not found; redefine parents before their children"
    );
    t.redefine(info("s3"), None, false).expect("s3");
    t.redefine(info("s2"), Some("s3"), true).expect("s2");
    assert_eq!(t.current(), Some("s2"));
    assert_eq!(t.parent("s2"), Ok(Some("s3")));
    assert_eq!(t.child_count("s2", true), Ok(0));
}

#[test]
fn test_filters_state_location_metadata_groups() {
    let mut t = SnapshotTree::new();
    let mk = |name: &str, state, location, has_metadata| SnapshotInfo {
        name: name.into(),
        state,
        location,
        has_metadata,
        creation_time: 0,
    };
    t.create(mk("off", StateKind::Inactive, Location::Internal, true))
        .expect("off");
    t.create(mk("run", StateKind::Active, Location::External, true))
        .expect("run");
    t.create(mk("disk", StateKind::DiskOnly, Location::External, false))
        .expect("disk");
    let f = |g: fn(&mut ListFilter)| {
        let mut filter = ListFilter::default();
        g(&mut filter);
        t.list(&filter).expect("list").join(",")
    };
    assert_eq!(f(|f| f.inactive = true), "off");
    assert_eq!(f(|f| f.active = true), "run");
    assert_eq!(f(|f| f.disk_only = true), "disk");
    assert_eq!(f(|f| (f.inactive, f.disk_only) = (true, true)), "off,disk");
    assert_eq!(f(|f| f.external = true), "run,disk");
    assert_eq!(f(|f| f.internal = true), "off");
    assert_eq!(f(|f| f.no_metadata = true), "disk");
    assert_eq!(f(|f| (f.external, f.metadata) = (true, true)), "run");
    assert_eq!(f(|f| (f.internal, f.leaves) = (true, true)), "");
}

#[test]
fn test_unknown_names_are_not_found() {
    let mut t = SnapshotTree::new();
    let missing = TreeError::NotFound { name: "x".into() };
    assert_eq!(t.parent("x"), Err(missing.clone()));
    assert_eq!(t.delete("x", ChildPolicy::Rebase), Err(missing.clone()));
    assert_eq!(t.set_current(Some("x")), Err(missing));
}
