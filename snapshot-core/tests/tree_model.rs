//! Model-based test of [`SnapshotTree`]: random sequences of create,
//! revert (`set_current`), redefine and delete are applied both to the real
//! tree and to a deliberately naive reference model (a map of name to
//! parent and info, children and descendants found by scanning), and after
//! every step the two must agree on the outcome, the hierarchy, the current
//! snapshot, the child counts and the listings of random filters.
//!
//! The model encodes libvirt's semantics: create attaches under the current
//! snapshot and makes the new one current; redefine refuses its own parent,
//! a missing parent and a cycle, and keeps an existing snapshot's children;
//! delete rebases the children, removes the descendants too, or removes
//! only the descendants, and moves current to the nearest survivor.

use std::collections::BTreeMap;

use proptest::prelude::*;
use snapshot_core::{
    ChildPolicy, ListFilter, Location, SnapshotInfo, SnapshotTree, StateKind, TreeError,
};

/// Size of the name pool `s0..s11`: small, so that operations often hit
/// existing snapshots.
const POOL: usize = 12;

/// Cases per run: 256 unless `PROPTEST_CASES` says otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn info(name: &str, state: StateKind, location: Location, has_metadata: bool) -> SnapshotInfo {
    SnapshotInfo {
        name: name.to_string(),
        state,
        location,
        has_metadata,
        creation_time: 0,
    }
}

// ---------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------

/// The naive reference: name to (parent, info), and the current name.
#[derive(Debug, Clone, Default)]
struct Model {
    nodes: BTreeMap<String, (Option<String>, SnapshotInfo)>,
    current: Option<String>,
}

impl Model {
    fn contains(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    fn parent(&self, name: &str) -> Option<&str> {
        self.nodes.get(name).and_then(|(p, _)| p.as_deref())
    }

    /// Direct children, by scanning every node.
    fn children(&self, name: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, (p, _))| p.as_deref() == Some(name))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether `ancestor` is a strict ancestor of `name`, by walking up
    /// (bounded, so that a broken model cannot loop forever).
    fn is_ancestor(&self, ancestor: &str, name: &str) -> bool {
        let mut up = self.parent(name);
        for _ in 0..=self.nodes.len() {
            match up {
                None => return false,
                Some(a) if a == ancestor => return true,
                Some(a) => up = self.parent(a),
            }
        }
        panic!("model has a cycle above {name}");
    }

    /// All descendants, by scanning every node.
    fn descendants(&self, name: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|n| self.is_ancestor(name, n))
            .cloned()
            .collect()
    }

    fn create(&mut self, info: SnapshotInfo) -> Result<Vec<String>, TreeError> {
        if self.contains(&info.name) {
            return Err(TreeError::Exists { name: info.name });
        }
        let name = info.name.clone();
        self.nodes
            .insert(name.clone(), (self.current.clone(), info));
        self.current = Some(name);
        Ok(Vec::new())
    }

    fn set_current(&mut self, name: Option<&str>) -> Result<Vec<String>, TreeError> {
        if let Some(n) = name
            && !self.contains(n)
        {
            return Err(TreeError::NotFound {
                name: n.to_string(),
            });
        }
        self.current = name.map(str::to_string);
        Ok(Vec::new())
    }

    fn redefine(
        &mut self,
        info: SnapshotInfo,
        parent: Option<&str>,
        make_current: bool,
    ) -> Result<Vec<String>, TreeError> {
        let name = info.name.clone();
        if let Some(p) = parent {
            if p == name {
                return Err(TreeError::OwnParent { name });
            }
            if !self.contains(p) {
                return Err(TreeError::ParentNotFound {
                    parent: p.to_string(),
                    name,
                });
            }
            if self.contains(&name) && self.descendants(&name).iter().any(|d| d == p) {
                return Err(TreeError::Cycle {
                    parent: p.to_string(),
                    name,
                });
            }
        }
        // Children point at the name, so an existing node keeps them.
        self.nodes
            .insert(name.clone(), (parent.map(str::to_string), info));
        if make_current {
            self.current = Some(name);
        }
        Ok(Vec::new())
    }

    fn delete(&mut self, name: &str, policy: ChildPolicy) -> Result<Vec<String>, TreeError> {
        if !self.contains(name) {
            return Err(TreeError::NotFound {
                name: name.to_string(),
            });
        }
        let parent = self.parent(name).map(str::to_string);
        let (doomed, survivor) = match policy {
            ChildPolicy::Rebase => {
                for child in self.children(name) {
                    self.nodes.get_mut(&child).expect("child").0 = parent.clone();
                }
                (vec![name.to_string()], parent)
            }
            ChildPolicy::Children => {
                let mut all = self.descendants(name);
                all.push(name.to_string());
                (all, parent)
            }
            ChildPolicy::ChildrenOnly => (self.descendants(name), Some(name.to_string())),
        };
        if self.current.as_ref().is_some_and(|c| doomed.contains(c)) {
            self.current = survivor;
        }
        for d in &doomed {
            self.nodes.remove(d);
        }
        Ok(doomed)
    }

    /// libvirt's group rule: a union of the set flags; none or all set
    /// means no filtering.
    fn group(flags: &[bool], selected: usize) -> bool {
        let set = flags.iter().filter(|&&f| f).count();
        set == 0 || set == flags.len() || flags[selected]
    }

    fn list(&self, f: &ListFilter) -> Result<Vec<String>, TreeError> {
        let candidates = match &f.from {
            Some(from) if !self.contains(from) => {
                return Err(TreeError::NotFound { name: from.clone() });
            }
            Some(from) if f.descendants => self.descendants(from),
            Some(from) => self.children(from),
            None => self.nodes.keys().cloned().collect(),
        };
        let mut out: Vec<String> = candidates
            .into_iter()
            .filter(|n| {
                let (parent, info) = &self.nodes[n];
                let leaf = self.children(n).is_empty();
                let roots_ok = f.from.is_some() || !f.roots || parent.is_none();
                let leaf_ok = Self::group(&[f.leaves, f.no_leaves], usize::from(!leaf));
                let meta_ok = Self::group(
                    &[f.metadata, f.no_metadata],
                    usize::from(!info.has_metadata),
                );
                let state_ok = Self::group(
                    &[f.inactive, f.active, f.disk_only],
                    match info.state {
                        StateKind::Inactive => 0,
                        StateKind::Active => 1,
                        StateKind::DiskOnly => 2,
                    },
                );
                let loc_ok = Self::group(
                    &[f.internal, f.external],
                    match info.location {
                        Location::Internal => 0,
                        Location::External => 1,
                    },
                );
                roots_ok && leaf_ok && meta_ok && state_ok && loc_ok
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Operations and their strategies.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Create(SnapshotInfo),
    SetCurrent(Option<String>),
    Redefine {
        info: SnapshotInfo,
        parent: Option<String>,
        make_current: bool,
    },
    Delete(String, ChildPolicy),
}

fn name() -> impl Strategy<Value = String> {
    (0..POOL).prop_map(|i| format!("s{i}"))
}

fn state() -> impl Strategy<Value = StateKind> {
    prop_oneof![
        Just(StateKind::Inactive),
        Just(StateKind::Active),
        Just(StateKind::DiskOnly),
    ]
}

fn location() -> impl Strategy<Value = Location> {
    prop_oneof![Just(Location::Internal), Just(Location::External)]
}

fn snapshot_info() -> impl Strategy<Value = SnapshotInfo> {
    (name(), state(), location(), any::<bool>(), 0..1000i64).prop_map(
        |(name, state, location, has_metadata, creation_time)| SnapshotInfo {
            name,
            state,
            location,
            has_metadata,
            creation_time,
        },
    )
}

fn policy() -> impl Strategy<Value = ChildPolicy> {
    prop_oneof![
        Just(ChildPolicy::Rebase),
        Just(ChildPolicy::Children),
        Just(ChildPolicy::ChildrenOnly),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => snapshot_info().prop_map(Op::Create),
        2 => prop::option::weighted(0.85, name()).prop_map(Op::SetCurrent),
        2 => (snapshot_info(), prop::option::weighted(0.8, name()), any::<bool>()).prop_map(
            |(info, parent, make_current)| Op::Redefine {
                info,
                parent,
                make_current,
            }
        ),
        2 => (name(), policy()).prop_map(|(n, p)| Op::Delete(n, p)),
    ]
}

fn flag() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.25)
}

fn list_filter() -> impl Strategy<Value = ListFilter> {
    (
        (
            flag(),
            prop::option::weighted(0.4, name()),
            any::<bool>(),
            any::<bool>(),
        ),
        (flag(), flag(), flag(), flag()),
        (flag(), flag(), flag(), flag(), flag()),
    )
        .prop_map(
            |(
                (roots, from, descendants, topological),
                (leaves, no_leaves, metadata, no_metadata),
                (inactive, active, disk_only, internal, external),
            )| ListFilter {
                roots,
                from,
                descendants,
                topological,
                leaves,
                no_leaves,
                metadata,
                no_metadata,
                inactive,
                active,
                disk_only,
                internal,
                external,
            },
        )
}

/// One step: an operation and the filters listed after it.
fn step() -> impl Strategy<Value = (Op, Vec<ListFilter>)> {
    (op(), prop::collection::vec(list_filter(), 3))
}

// ---------------------------------------------------------------------------
// Applying and comparing.
// ---------------------------------------------------------------------------

fn apply_real(tree: &mut SnapshotTree, op: &Op) -> Result<Vec<String>, TreeError> {
    match op {
        Op::Create(info) => tree.create(info.clone()).map(|()| Vec::new()),
        Op::SetCurrent(name) => tree.set_current(name.as_deref()).map(|()| Vec::new()),
        Op::Redefine {
            info,
            parent,
            make_current,
        } => tree
            .redefine(info.clone(), parent.as_deref(), *make_current)
            .map(|()| Vec::new()),
        Op::Delete(name, policy) => tree.delete(name, *policy),
    }
}

fn apply_model(model: &mut Model, op: &Op) -> Result<Vec<String>, TreeError> {
    match op {
        Op::Create(info) => model.create(info.clone()),
        Op::SetCurrent(name) => model.set_current(name.as_deref()),
        Op::Redefine {
            info,
            parent,
            make_current,
        } => model.redefine(info.clone(), parent.as_deref(), *make_current),
        Op::Delete(name, policy) => model.delete(name, *policy),
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v
}

/// Compares the whole observable state of the tree with the model.
fn check_state(tree: &SnapshotTree, model: &Model) -> Result<(), TestCaseError> {
    prop_assert!(tree.invariants_hold(), "invariants broken: {tree:?}");
    prop_assert_eq!(tree.len(), model.nodes.len());
    prop_assert_eq!(tree.is_empty(), model.nodes.is_empty());
    prop_assert_eq!(tree.current(), model.current.as_deref());

    let all = tree
        .list(&ListFilter::default())
        .map_err(|e| TestCaseError::fail(format!("list all: {e}")))?;
    let names = sorted(all.iter().map(|s| (*s).to_string()).collect());
    prop_assert_eq!(&names, &model.nodes.keys().cloned().collect::<Vec<_>>());

    for i in 0..POOL {
        let name = format!("s{i}");
        prop_assert_eq!(tree.contains(&name), model.contains(&name));
        prop_assert_eq!(tree.is_current(&name), model.current == Some(name.clone()));
        let Some((parent, info)) = model.nodes.get(&name) else {
            prop_assert_eq!(tree.get(&name), None);
            prop_assert_eq!(
                tree.parent(&name),
                Err(TreeError::NotFound { name: name.clone() })
            );
            prop_assert_eq!(
                tree.child_count(&name, true),
                Err(TreeError::NotFound { name: name.clone() })
            );
            continue;
        };
        prop_assert_eq!(tree.get(&name), Some(info));
        prop_assert_eq!(tree.parent(&name), Ok(parent.as_deref()));
        let children = tree
            .children(&name)
            .map_err(|e| TestCaseError::fail(format!("children of {name}: {e}")))?;
        prop_assert_eq!(
            sorted(children.iter().map(|s| (*s).to_string()).collect()),
            model.children(&name)
        );
        prop_assert_eq!(
            tree.child_count(&name, false),
            Ok(model.children(&name).len())
        );
        prop_assert_eq!(
            tree.child_count(&name, true),
            Ok(model.descendants(&name).len())
        );
    }
    Ok(())
}

/// Compares one listing with the model: the same set of names, and in
/// topological order every listed ancestor before its listed descendants.
fn check_list(tree: &SnapshotTree, model: &Model, f: &ListFilter) -> Result<(), TestCaseError> {
    let real = tree
        .list(f)
        .map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>());
    let expected = model.list(f);
    match (&real, &expected) {
        (Ok(real), Ok(expected)) => {
            prop_assert_eq!(&sorted(real.clone()), expected, "filter {:?}", f);
            if f.topological {
                for (pos, n) in real.iter().enumerate() {
                    for (apos, a) in real.iter().enumerate() {
                        if model.is_ancestor(a, n) {
                            prop_assert!(
                                apos < pos,
                                "{a} listed after its descendant {n}: {real:?} ({f:?})"
                            );
                        }
                    }
                }
            }
        }
        _ => prop_assert_eq!(&real, &expected, "filter {:?}", f),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn tree_matches_naive_model(steps in prop::collection::vec(step(), 0..=60)) {
        let mut tree = SnapshotTree::new();
        let mut model = Model::default();
        for (i, (op, filters)) in steps.iter().enumerate() {
            let real = apply_real(&mut tree, op).map(sorted);
            let expected = apply_model(&mut model, op).map(sorted);
            prop_assert_eq!(&real, &expected, "step {} {:?}", i, op);
            check_state(&tree, &model)?;
            for f in filters {
                check_list(&tree, &model, f)?;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A long chain.
// ---------------------------------------------------------------------------

#[test]
fn test_rebase_delete_in_middle_of_long_chain() {
    const LEN: usize = 10_000;
    let mut tree = SnapshotTree::new();
    for i in 0..LEN {
        tree.create(info(
            &format!("c{i}"),
            StateKind::Active,
            Location::Internal,
            true,
        ))
        .expect("create");
    }
    let middle = LEN / 2;
    let name = format!("c{middle}");
    let removed = tree.delete(&name, ChildPolicy::Rebase).expect("delete");
    assert_eq!(removed, vec![name.clone()]);

    let child = format!("c{}", middle + 1);
    let parent = format!("c{}", middle - 1);
    assert_eq!(tree.parent(&child), Ok(Some(parent.as_str())));
    assert_eq!(tree.children(&parent), Ok(vec![child.as_str()]));
    assert!(!tree.contains(&name));
    assert_eq!(tree.len(), LEN - 1);
    let last = format!("c{}", LEN - 1);
    assert_eq!(tree.current(), Some(last.as_str()));
    assert_eq!(tree.child_count("c0", true), Ok(LEN - 2));
    assert!(tree.invariants_hold());
}
