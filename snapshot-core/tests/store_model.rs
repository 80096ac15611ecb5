//! Model-based test of the crash-safe [`MetadataStore`] on a real directory:
//! random sequences of create, set-current (revert), redefine (new and
//! existing names, and the refused cases: own parent, missing parent,
//! cycle, invalid name, case collision) and delete (every [`ChildPolicy`])
//! go both to a writer handle in a temp dir and to a deliberately naive
//! model (a map of name to parent, state and creation time, and the current
//! name); at random points the handle is dropped and opened again, from the
//! index or, with the index removed, from the XML files.
//!
//! After every step the outcome (the removed names, or the exact refusal)
//! and the handle's view (names, parents, current, states, definitions)
//! must match the model, the tree's invariants must hold, and the owner
//! directory must hold exactly one libvirt-format file per snapshot, naming
//! the model's parent, with `<active>1</active>` in the current one only;
//! no journal, intent or temp file may be left, and no index while a writer
//! holds the store. At audit points (and at the end) the store is opened
//! for reading from its index and from the files, and both must give the
//! model's tree.
//!
//! This file owns the store-level model; the tree's own semantics are
//! modelled in more depth by `tree_model.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;
use snapshot_conf::{DomainSnapshotDef, ParseFlags, ParseOptions};
use snapshot_core::store::{
    Access, Layout, LayoutError, MetadataStore, Owner, SnapshotRecord, StoreError,
};
use snapshot_core::{ChildPolicy, Location, StateKind, TreeError};

/// Cases per run: 64 unless `PROPTEST_CASES` says otherwise (every step
/// writes real files, with fsyncs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Longest operation sequence of one case.
const MAX_OPS: usize = 40;

/// The usual names: small, so that operations often hit existing
/// snapshots.
const POOL: usize = 10;

/// Names that differ from pool names only in case (the store refuses a new
/// one while its twin exists), and one that cannot be a file name.
const ODD_NAMES: [&str; 3] = ["S0", "S1", ".hidden"];

const DOMAIN: &str = "vm1";

/// Base of the creation times; a few distinct values only, so that ties
/// (ordered by name on load) are common.
const EPOCH: i64 = 1_700_000_000;

// ---------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------

/// The `<state>` of a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Shutoff,
    Running,
    DiskSnapshot,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            Self::Shutoff => "shutoff",
            Self::Running => "running",
            Self::DiskSnapshot => "disk-snapshot",
        }
    }

    fn kind(self) -> StateKind {
        match self {
            Self::Shutoff => StateKind::Inactive,
            Self::Running => StateKind::Active,
            Self::DiskSnapshot => StateKind::DiskOnly,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    parent: Option<String>,
    state: State,
    time: i64,
}

/// Why the model expects an operation to be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// The tree's refusal, exactly.
    Tree(TreeError),
    /// A name that cannot be a file name.
    InvalidName(String),
    /// A new name equal to an existing one after lower-casing.
    CaseCollision { name: String, existing: String },
}

/// The naive reference: name to node, and the current name.
#[derive(Debug, Clone, Default)]
struct Model {
    nodes: BTreeMap<String, Node>,
    current: Option<String>,
}

impl Model {
    fn contains(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    fn parent(&self, name: &str) -> Option<&str> {
        self.nodes.get(name).and_then(|n| n.parent.as_deref())
    }

    fn children(&self, name: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.parent.as_deref() == Some(name))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether `ancestor` is a strict ancestor of `name` (bounded walk).
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

    fn descendants(&self, name: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|n| self.is_ancestor(name, n))
            .cloned()
            .collect()
    }

    /// The store's name rules for a name not yet in the store.
    fn check_new_name(&self, name: &str) -> Result<(), Refusal> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            return Err(Refusal::InvalidName(name.to_string()));
        }
        let folded = name.to_lowercase();
        if let Some(existing) = self
            .nodes
            .keys()
            .find(|e| *e != name && e.to_lowercase() == folded)
        {
            return Err(Refusal::CaseCollision {
                name: name.to_string(),
                existing: existing.clone(),
            });
        }
        Ok(())
    }

    fn create(&mut self, name: &str, state: State, time: i64) -> Result<Vec<String>, Refusal> {
        self.check_new_name(name)?;
        if self.contains(name) {
            return Err(Refusal::Tree(TreeError::Exists {
                name: name.to_string(),
            }));
        }
        let node = Node {
            parent: self.current.clone(),
            state,
            time,
        };
        self.nodes.insert(name.to_string(), node);
        self.current = Some(name.to_string());
        Ok(Vec::new())
    }

    fn set_current(&mut self, name: Option<&str>) -> Result<Vec<String>, Refusal> {
        if let Some(n) = name
            && !self.contains(n)
        {
            return Err(Refusal::Tree(TreeError::NotFound {
                name: n.to_string(),
            }));
        }
        self.current = name.map(str::to_string);
        Ok(Vec::new())
    }

    fn redefine(&mut self, def: &Def, make_current: bool) -> Result<Vec<String>, Refusal> {
        let name = def.name.clone();
        let exists = self.contains(&name);
        if !exists {
            self.check_new_name(&name)?;
        }
        if let Some(p) = def.parent.as_deref() {
            if p == name {
                return Err(Refusal::Tree(TreeError::OwnParent { name }));
            }
            if !self.contains(p) {
                return Err(Refusal::Tree(TreeError::ParentNotFound {
                    parent: p.to_string(),
                    name,
                }));
            }
            if exists && self.is_ancestor(&name, p) {
                return Err(Refusal::Tree(TreeError::Cycle {
                    parent: p.to_string(),
                    name,
                }));
            }
        }
        let node = Node {
            parent: def.parent.clone(),
            state: def.state,
            time: def.time,
        };
        self.nodes.insert(name.clone(), node);
        if make_current {
            self.current = Some(name);
        }
        Ok(Vec::new())
    }

    fn delete(&mut self, name: &str, policy: ChildPolicy) -> Result<Vec<String>, Refusal> {
        if !self.contains(name) {
            return Err(Refusal::Tree(TreeError::NotFound {
                name: name.to_string(),
            }));
        }
        let parent = self.parent(name).map(str::to_string);
        let (doomed, survivor) = match policy {
            ChildPolicy::Rebase => {
                for child in self.children(name) {
                    self.nodes.get_mut(&child).expect("child").parent = parent.clone();
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

    /// Names and parents, and the current name.
    fn shape(&self) -> Shape {
        (
            self.nodes
                .iter()
                .map(|(k, n)| (k.clone(), n.parent.clone()))
                .collect(),
            self.current.clone(),
        )
    }
}

/// A tree's names with their parents, and its current snapshot.
type Shape = (BTreeMap<String, Option<String>>, Option<String>);

// ---------------------------------------------------------------------------
// Operations and their strategies.
// ---------------------------------------------------------------------------

/// A definition to create or redefine.
#[derive(Debug, Clone)]
struct Def {
    name: String,
    parent: Option<String>,
    state: State,
    time: i64,
}

impl Def {
    /// The definition as a user would give it (libvirt's redefine XML).
    fn record(&self) -> SnapshotRecord {
        let parent = self
            .parent
            .as_deref()
            .map(|p| format!("<parent><name>{p}</name></parent>"))
            .unwrap_or_default();
        let xml = format!(
            "<domainsnapshot><name>{}</name><state>{}</state>{parent}\
             <creationTime>{}</creationTime></domainsnapshot>",
            self.name,
            self.state.word(),
            self.time
        );
        let parsed = DomainSnapshotDef::parse(&xml, &ParseOptions::new(ParseFlags::REDEFINE))
            .unwrap_or_else(|e| panic!("test definition {xml}: {e}"));
        SnapshotRecord::Domain(Box::new(parsed.def))
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Create (the parent the definition names is ignored: it is the
    /// current snapshot).
    Create(Def),
    SetCurrent(Option<String>),
    Redefine {
        def: Def,
        make_current: bool,
    },
    Delete(String, ChildPolicy),
    /// Drop the writer and open it again; `drop_index` removes the index
    /// first (the tree is rebuilt from the files), `audit` opens for
    /// reading from the index and from the files in between.
    Reopen {
        drop_index: bool,
        audit: bool,
    },
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => (0..POOL).prop_map(|i| format!("s{i}")),
        1 => prop::sample::select(&ODD_NAMES[..]).prop_map(str::to_string),
    ]
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Shutoff),
        Just(State::Running),
        Just(State::DiskSnapshot),
    ]
}

/// A name to operate on, resolved when the step runs: one the model holds
/// (its n-th), one of the pool it does not hold, or any name. Without
/// the first two, random names would mostly miss (or, to create, hit).
#[derive(Debug, Clone)]
enum Pick {
    Existing(prop::sample::Index),
    Fresh(prop::sample::Index),
    Name(String),
}

impl Pick {
    fn resolve(&self, model: &Model) -> String {
        match self {
            Self::Existing(i) if !model.nodes.is_empty() => model
                .nodes
                .keys()
                .nth(i.index(model.nodes.len()))
                .expect("index in range")
                .clone(),
            Self::Existing(_) => "s0".to_string(),
            Self::Fresh(i) => {
                let fresh: Vec<String> = (0..POOL)
                    .map(|n| format!("s{n}"))
                    .filter(|n| !model.contains(n))
                    .collect();
                if fresh.is_empty() {
                    "s0".to_string()
                } else {
                    fresh[i.index(fresh.len())].clone()
                }
            }
            Self::Name(n) => n.clone(),
        }
    }
}

/// A definition whose names are resolved when the step runs.
#[derive(Debug, Clone)]
struct DefPlan {
    name: Pick,
    parent: Option<Pick>,
    state: State,
    time: i64,
}

impl DefPlan {
    fn resolve(&self, model: &Model) -> Def {
        Def {
            name: self.name.resolve(model),
            parent: self.parent.as_ref().map(|p| p.resolve(model)),
            state: self.state,
            time: self.time,
        }
    }
}

/// A step as generated: [`Op`] with names still to resolve.
#[derive(Debug, Clone)]
enum Plan {
    Create(DefPlan),
    SetCurrent(Option<Pick>),
    Redefine { def: DefPlan, make_current: bool },
    Delete(Pick, ChildPolicy),
    Reopen { drop_index: bool, audit: bool },
}

impl Plan {
    fn resolve(&self, model: &Model) -> Op {
        match self {
            Self::Create(def) => Op::Create(def.resolve(model)),
            Self::SetCurrent(p) => Op::SetCurrent(p.as_ref().map(|p| p.resolve(model))),
            Self::Redefine { def, make_current } => Op::Redefine {
                def: def.resolve(model),
                make_current: *make_current,
            },
            Self::Delete(p, policy) => Op::Delete(p.resolve(model), *policy),
            Self::Reopen { drop_index, audit } => Op::Reopen {
                drop_index: *drop_index,
                audit: *audit,
            },
        }
    }
}

impl From<Def> for DefPlan {
    fn from(def: Def) -> Self {
        Self {
            name: Pick::Name(def.name),
            parent: def.parent.map(Pick::Name),
            state: def.state,
            time: def.time,
        }
    }
}

impl From<Op> for Plan {
    /// The plan of a fixed operation: its names as they are.
    fn from(op: Op) -> Self {
        let name = |n: String| Pick::Name(n);
        match op {
            Op::Create(def) => Self::Create(DefPlan::from(def)),
            Op::SetCurrent(n) => Self::SetCurrent(n.map(name)),
            Op::Redefine { def, make_current } => Self::Redefine {
                def: DefPlan::from(def),
                make_current,
            },
            Op::Delete(n, policy) => Self::Delete(name(n), policy),
            Op::Reopen { drop_index, audit } => Self::Reopen { drop_index, audit },
        }
    }
}

/// `existing` percent an existing snapshot, else any name.
fn pick(existing: u32) -> impl Strategy<Value = Pick> {
    prop_oneof![
        existing => any::<prop::sample::Index>().prop_map(Pick::Existing),
        100 - existing => name().prop_map(Pick::Name),
    ]
}

fn time() -> impl Strategy<Value = i64> {
    (0..4i64).prop_map(|t| EPOCH + t)
}

fn policy() -> impl Strategy<Value = ChildPolicy> {
    prop_oneof![
        2 => Just(ChildPolicy::Rebase),
        1 => Just(ChildPolicy::Children),
        1 => Just(ChildPolicy::ChildrenOnly),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    let fresh = prop_oneof![
        4 => any::<prop::sample::Index>().prop_map(Pick::Fresh),
        1 => name().prop_map(Pick::Name),
    ];
    let create = (fresh, state(), time()).prop_map(|(name, state, time)| {
        Plan::Create(DefPlan {
            name,
            parent: None,
            state,
            time,
        })
    });
    let redefine = (
        pick(50),
        prop::option::weighted(0.8, pick(70)),
        state(),
        time(),
        any::<bool>(),
    )
        .prop_map(|(name, parent, state, time, make_current)| Plan::Redefine {
            def: DefPlan {
                name,
                parent,
                state,
                time,
            },
            make_current,
        });
    prop_oneof![
        6 => create,
        2 => prop::option::weighted(0.85, pick(80)).prop_map(Plan::SetCurrent),
        3 => redefine,
        2 => (pick(85), policy()).prop_map(|(p, policy)| Plan::Delete(p, policy)),
        1 => (any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(drop_index, audit)| Plan::Reopen { drop_index, audit }),
    ]
}

// ---------------------------------------------------------------------------
// The store under test and its files.
// ---------------------------------------------------------------------------

/// The paths of the store under test.
struct Paths {
    layout: Layout,
    owner_dir: PathBuf,
    side_dir: PathBuf,
    index: PathBuf,
    journal: PathBuf,
    intent: PathBuf,
    lock: PathBuf,
}

impl Paths {
    fn new(root: PathBuf) -> Self {
        let layout = Layout::new(root);
        let owner = owner();
        let owner_dir = layout.owner_dir(&owner).expect("owner dir");
        let side_dir = owner_dir.parent().expect("side dir").to_path_buf();
        Self {
            index: layout.owner_index(&owner).expect("index path"),
            journal: layout.owner_journal(&owner).expect("journal path"),
            intent: layout.owner_intent(&owner).expect("intent path"),
            lock: layout.owner_lock(&owner).expect("lock path"),
            layout,
            owner_dir,
            side_dir,
        }
    }

    fn open(&self, access: Access) -> Result<MetadataStore, TestCaseError> {
        MetadataStore::open(&self.layout, owner(), access)
            .map_err(|e| TestCaseError::fail(format!("open {access:?}: {e}")))
    }
}

fn owner() -> Owner {
    Owner::Domain(DOMAIN.into())
}

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

/// Applies `op` (not a reopen) to the store; the removed names on success.
fn apply_store(store: &mut MetadataStore, op: &Op) -> Result<Vec<String>, StoreError> {
    match op {
        Op::Create(def) => store.create(def.record()).map(|()| Vec::new()),
        Op::SetCurrent(name) => store.set_current(name.as_deref()).map(|()| Vec::new()),
        Op::Redefine { def, make_current } => store
            .redefine(def.record(), *make_current)
            .map(|()| Vec::new()),
        Op::Delete(name, policy) => store.delete(name, *policy),
        Op::Reopen { .. } => unreachable!("reopen is not a store operation"),
    }
}

fn apply_model(model: &mut Model, op: &Op) -> Result<Vec<String>, Refusal> {
    match op {
        Op::Create(def) => model.create(&def.name, def.state, def.time),
        Op::SetCurrent(name) => model.set_current(name.as_deref()),
        Op::Redefine { def, make_current } => model.redefine(def, *make_current),
        Op::Delete(name, policy) => model.delete(name, *policy),
        Op::Reopen { .. } => unreachable!("reopen is not a model operation"),
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v
}

/// Whether the store's error is the refusal the model expects.
fn same_refusal(real: &StoreError, expected: &Refusal) -> bool {
    match (real, expected) {
        (StoreError::Tree(r), Refusal::Tree(e)) => r == e,
        (
            StoreError::Layout(LayoutError::InvalidSnapshotName { name, .. }),
            Refusal::InvalidName(e),
        ) => name == e,
        (
            StoreError::Layout(LayoutError::CaseCollision { name, existing }),
            Refusal::CaseCollision {
                name: en,
                existing: ee,
            },
        ) => name == en && existing == ee,
        _ => false,
    }
}

fn compare_outcome(
    real: Result<Vec<String>, StoreError>,
    expected: Result<Vec<String>, Refusal>,
    step: usize,
    op: &Op,
) -> Result<(), TestCaseError> {
    match (real, expected) {
        (Ok(real), Ok(expected)) => {
            prop_assert_eq!(sorted(real), sorted(expected), "step {} {:?}", step, op);
        }
        (Err(real), Err(expected)) => prop_assert!(
            same_refusal(&real, &expected),
            "step {step} {op:?}: the store refused with {real:?} ({real}), the model expects {expected:?}"
        ),
        (real, expected) => {
            let real = real.map_err(|e| format!("{e:?} ({e})"));
            return Err(fail(format!(
                "step {step} {op:?}: store gave {real:?}, model expects {expected:?}"
            )));
        }
    }
    Ok(())
}

/// The shape of an open store's tree.
fn store_shape(store: &MetadataStore) -> Result<Shape, TestCaseError> {
    let tree = store.tree();
    let names = tree
        .list(&snapshot_core::ListFilter::default())
        .map_err(|e| fail(format!("list: {e}")))?;
    let mut out = BTreeMap::new();
    for n in names {
        let parent = tree
            .parent(n)
            .map_err(|e| fail(format!("parent of {n}: {e}")))?;
        out.insert(n.to_string(), parent.map(str::to_string));
    }
    Ok((out, tree.current().map(str::to_string)))
}

/// Compares everything an open handle says with the model.
fn check_handle(store: &MetadataStore, model: &Model, what: &str) -> Result<(), TestCaseError> {
    let tree = store.tree();
    prop_assert!(
        tree.invariants_hold(),
        "{}: invariants broken: {:?}",
        what,
        tree
    );
    prop_assert_eq!(tree.len(), model.nodes.len(), "{}", what);
    prop_assert_eq!(store_shape(store)?, model.shape(), "{}", what);
    for (name, node) in &model.nodes {
        let info = tree
            .get(name)
            .ok_or_else(|| fail(format!("{what}: {name} not in the tree")))?;
        prop_assert_eq!(&info.name, name);
        prop_assert_eq!(info.state, node.state.kind(), "{}: state of {}", what, name);
        prop_assert_eq!(info.location, Location::Internal);
        prop_assert!(info.has_metadata);
        prop_assert_eq!(info.creation_time, node.time, "{}: time of {}", what, name);
        prop_assert_eq!(
            store.state_word(name),
            Some(node.state.word()),
            "{}: state word of {}",
            what,
            name
        );
        let record = store
            .get(name)
            .ok_or_else(|| fail(format!("{what}: no definition of {name}")))?;
        prop_assert_eq!(record.name(), Some(name.as_str()));
        prop_assert_eq!(
            record.parent(),
            node.parent.as_deref(),
            "{}: definition's parent of {}",
            what,
            name
        );
        prop_assert_eq!(record.state_word(), node.state.word());
    }
    for odd in (0..POOL)
        .map(|i| format!("s{i}"))
        .chain(ODD_NAMES.iter().map(|s| (*s).to_string()))
    {
        if !model.contains(&odd) {
            prop_assert!(!tree.contains(&odd), "{}: {} in the tree", what, odd);
            prop_assert!(store.get(&odd).is_none(), "{}: definition of {}", what, odd);
        }
    }
    prop_assert!(
        store.warnings().is_empty(),
        "{}: warnings {:?}",
        what,
        store.warnings()
    );
    Ok(())
}

/// Checks the files: one per snapshot in the owner directory with the
/// model's parent and `<active>`, nothing else there; beside it no journal,
/// no intent, no temp file, and an index exactly when no writer holds the
/// store (`writer_open`; a writer removes the index it read).
fn check_files(paths: &Paths, model: &Model, writer_open: bool) -> Result<(), TestCaseError> {
    let mut found = BTreeSet::new();
    let mut active = Vec::new();
    let entries =
        fs::read_dir(&paths.owner_dir).map_err(|e| fail(format!("listing owner dir: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| fail(e.to_string()))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".xml").filter(|n| !n.starts_with('.')) else {
            return Err(fail(format!("stray file {file} in the owner directory")));
        };
        let text = fs::read_to_string(entry.path()).map_err(|e| fail(format!("{file}: {e}")))?;
        let parsed = DomainSnapshotDef::parse(
            &text,
            &ParseOptions::new(ParseFlags::REDEFINE | ParseFlags::INTERNAL),
        )
        .map_err(|e| fail(format!("{file} does not parse: {e}\n{text}")))?;
        prop_assert_eq!(parsed.def.name.as_deref(), Some(name), "{}", file);
        let node = model
            .nodes
            .get(name)
            .ok_or_else(|| fail(format!("file {file} of a snapshot the model lacks")))?;
        prop_assert_eq!(
            parsed.def.parent.as_deref(),
            node.parent.as_deref(),
            "parent in {}:\n{}",
            file,
            text
        );
        prop_assert_eq!(
            parsed.def.state.map(|s| s.as_str()),
            Some(node.state.word()),
            "state in {}",
            file
        );
        prop_assert_eq!(
            parsed.def.creation_time,
            Some(node.time),
            "time in {}",
            file
        );
        // The raw text too, independently of the parser.
        let on = text.contains("<active>1</active>");
        let off = text.contains("<active>0</active>");
        prop_assert!(on != off, "{} has no single <active>:\n{}", file, text);
        prop_assert_eq!(on, parsed.current, "{}", file);
        if on {
            active.push(name.to_string());
        }
        found.insert(name.to_string());
    }
    let expected: BTreeSet<String> = model.nodes.keys().cloned().collect();
    prop_assert_eq!(found, expected, "snapshot files");
    let expected_active: Vec<String> = model.current.iter().cloned().collect();
    prop_assert_eq!(active, expected_active, "files saying <active>1</active>");

    prop_assert!(!paths.journal.exists(), "journal left behind");
    prop_assert!(!paths.intent.exists(), "intent left behind");
    prop_assert!(paths.lock.exists(), "no lock file");
    prop_assert_eq!(
        paths.index.exists(),
        !writer_open,
        "index present (writer open: {})",
        writer_open
    );
    let side = fs::read_dir(&paths.side_dir).map_err(|e| fail(format!("listing: {e}")))?;
    for entry in side {
        let entry = entry.map_err(|e| fail(e.to_string()))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let known = [&paths.owner_dir, &paths.index, &paths.lock];
        prop_assert!(
            known
                .iter()
                .any(|p| p.file_name() == Some(entry.file_name().as_os_str())),
            "stray side file {}",
            file
        );
    }
    Ok(())
}

/// With no writer: the files, then a reader from the index and a reader
/// from the files (the index removed first), both against the model.
fn audit(paths: &Paths, model: &Model, step: usize) -> Result<(), TestCaseError> {
    check_files(paths, model, false)?;
    let from_index = paths.open(Access::Read)?;
    prop_assert!(
        from_index.opened_from_index(),
        "step {}: a reader did not use the index a writer left",
        step
    );
    check_handle(
        &from_index,
        model,
        &format!("step {step}: reader from index"),
    )?;
    let index_shape = store_shape(&from_index)?;
    drop(from_index);

    fs::remove_file(&paths.index).map_err(|e| fail(format!("removing index: {e}")))?;
    let from_files = paths.open(Access::Read)?;
    prop_assert!(!from_files.opened_from_index());
    check_handle(
        &from_files,
        model,
        &format!("step {step}: reader from files"),
    )?;
    prop_assert_eq!(index_shape, store_shape(&from_files)?, "step {}", step);
    drop(from_files);
    // The reader from the files left a fresh index behind.
    check_files(paths, model, false)
}

fn run(steps: &[Plan]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(format!("temp dir: {e}")))?;
    let paths = Paths::new(tmp.path().to_path_buf());
    let mut model = Model::default();
    let mut store = paths.open(Access::Write)?;
    check_handle(&store, &model, "fresh store")?;
    for (i, plan) in steps.iter().enumerate() {
        let op = &plan.resolve(&model);
        if let Op::Reopen {
            drop_index,
            audit: audit_here,
        } = *op
        {
            drop(store);
            check_files(&paths, &model, false)?;
            if audit_here {
                audit(&paths, &model, i)?;
            }
            if drop_index {
                fs::remove_file(&paths.index).map_err(|e| fail(format!("removing index: {e}")))?;
            }
            store = paths.open(Access::Write)?;
            prop_assert_eq!(
                store.opened_from_index(),
                !drop_index,
                "step {}: writer opened from index",
                i
            );
        } else {
            let real = apply_store(&mut store, op);
            let expected = apply_model(&mut model, op);
            compare_outcome(real, expected, i, op)?;
        }
        check_handle(&store, &model, &format!("step {i} {op:?}"))?;
        check_files(&paths, &model, true)?;
    }
    drop(store);
    audit(&paths, &model, steps.len())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_naive_model(steps in prop::collection::vec(plan(), 0..=MAX_OPS)) {
        run(&steps)?;
    }
}

// ---------------------------------------------------------------------------
// Fixed sequences (regressions and the refusals, spelled out).
// ---------------------------------------------------------------------------

fn create(name: &str) -> Op {
    Op::Create(Def {
        name: name.to_string(),
        parent: None,
        state: State::Shutoff,
        time: EPOCH,
    })
}

fn redefine(name: &str, parent: Option<&str>, make_current: bool) -> Op {
    Op::Redefine {
        def: Def {
            name: name.to_string(),
            parent: parent.map(str::to_string),
            state: State::Running,
            time: EPOCH + 1,
        },
        make_current,
    }
}

#[test]
fn test_store_model_refusals_and_reopens() {
    let steps = [
        create("s0"),
        create("s1"),
        create("s2"),
        redefine("s0", Some("s0"), false),      // own parent
        redefine("s3", Some("s7"), false),      // missing parent
        redefine("s0", Some("s2"), false),      // cycle
        redefine("S1", None, false),            // case collision
        redefine(".hidden", None, false),       // invalid name
        create("s1"),                           // exists
        Op::SetCurrent(Some("s5".to_string())), // unknown
        Op::Delete("s5".to_string(), ChildPolicy::Rebase),
        Op::Reopen {
            drop_index: false,
            audit: true,
        },
        redefine("s3", Some("s0"), true),
        Op::Delete("s1".to_string(), ChildPolicy::Rebase),
        Op::Reopen {
            drop_index: true,
            audit: false,
        },
        Op::Delete("s0".to_string(), ChildPolicy::ChildrenOnly),
        create("s4"),
        Op::Delete("s0".to_string(), ChildPolicy::Children),
        Op::SetCurrent(None),
    ];
    let steps: Vec<Plan> = steps.into_iter().map(Plan::from).collect();
    if let Err(e) = run(&steps) {
        panic!("{e}");
    }
}
