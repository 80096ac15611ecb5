//! Several processes on one state directory: two processes hammering the
//! same owner leave a consistent store, and a writer of one owner never
//! blocks a writer of another.
//!
//! The child processes are this test binary run again
//! (`std::env::current_exe()`) with only the ignored test `child`:
//!   <exe> --exact child --ignored --nocapture
//! with ROLE_ENV naming what to do (`hammer`, `hold`, `other`, `waiter`)
//! and STATE_ENV the state directory. Without ROLE_ENV, `child` does
//! nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use snapshot_conf::{DomainSnapshotDef, ParseFlags, ParseOptions};
use snapshot_core::store::{Access, Layout, MetadataStore, Owner, SnapshotRecord};
use snapshot_core::{ChildPolicy, ListFilter};

const ROLE_ENV: &str = "VIRTSNAP_TEST_ROLE";
const STATE_ENV: &str = "VIRTSNAP_TEST_STATE";
const SEED_ENV: &str = "VIRTSNAP_TEST_SEED";
const OPS_ENV: &str = "VIRTSNAP_TEST_OPS";

/// Operations of the hammer test, over both processes.
const TOTAL_OPS: u64 = 1000;
/// Snapshot names drawn from `s0`..`s{NAMES-1}`, so the processes collide.
const NAMES: u64 = 24;
/// How long a child waits for the parent's signal before giving up (a
/// safety net against a hung test, not a pass/fail threshold).
const PATIENCE: Duration = Duration::from_secs(60);

fn domain(name: &str) -> Owner {
    Owner::Domain(name.to_string())
}

fn snap(name: &str) -> SnapshotRecord {
    let xml = format!(
        "<domainsnapshot><name>{name}</name><state>shutoff</state><creationTime>1700000000</creationTime></domainsnapshot>"
    );
    let parsed = DomainSnapshotDef::parse(&xml, &ParseOptions::new(ParseFlags::REDEFINE))
        .expect("test definition");
    SnapshotRecord::Domain(Box::new(parsed.def))
}

/// splitmix64: a seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, names: &[&'a str]) -> Option<&'a str> {
        if names.is_empty() {
            return None;
        }
        let len = u64::try_from(names.len()).expect("small");
        names
            .get(usize::try_from(self.below(len)).expect("small"))
            .copied()
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("${key} not set"))
}

/// Waits until `path` exists.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < PATIENCE,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
#[ignore = "child process of the concurrency tests; does nothing on its own"]
fn child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let state = PathBuf::from(env(STATE_ENV));
    let layout = Layout::new(state.clone());
    match role.as_str() {
        "hammer" => hammer(&layout),
        "hold" => {
            // Hold owner `a` for writing until told to let go.
            let mut store =
                MetadataStore::open(&layout, domain("a"), Access::Write).expect("open a");
            store.create(snap("held")).expect("create held");
            fs::write(state.join("held"), b"").expect("signal held");
            wait_for(&state.join("release"));
            // A writer waiting for `a` sees this one as current.
            store.create(snap("released")).expect("create released");
            drop(store);
        }
        "other" => {
            // Owner `a` is held: a write open of it would wait. Owner `b`
            // opens at once, and `a` is still held when we are done.
            assert!(
                MetadataStore::try_open(&layout, domain("a"), Access::Write)
                    .expect("try a")
                    .is_none(),
                "owner a is not held"
            );
            let mut store = MetadataStore::try_open(&layout, domain("b"), Access::Write)
                .expect("try b")
                .expect("owner b is blocked by owner a's writer");
            store.create(snap("b1")).expect("create b1");
            drop(store);
            assert!(
                MetadataStore::try_open(&layout, domain("a"), Access::Write)
                    .expect("try a")
                    .is_none(),
                "owner a was released before owner b finished"
            );
        }
        "waiter" => {
            // Waits for owner `a`, then builds on what the holder left.
            fs::write(state.join("waiting"), b"").expect("signal waiting");
            let mut store =
                MetadataStore::open(&layout, domain("a"), Access::Write).expect("open a");
            store.create(snap("waited")).expect("create waited");
        }
        other => panic!("unknown role {other}"),
    }
}

/// Runs the seeded random operations on owner `vm`, opening the store for
/// each one (as separate commands do), and prints what it did.
fn hammer(layout: &Layout) {
    let mut rng = Rng(env(SEED_ENV).parse().expect("seed"));
    let ops: u64 = env(OPS_ENV).parse().expect("ops");
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for _ in 0..ops {
        let mut store = MetadataStore::open(layout, domain("vm"), Access::Write).expect("open");
        assert_eq!(store.warnings(), [], "the other process left a mess");
        assert!(store.tree().invariants_hold());
        let existing: Vec<String> = store
            .tree()
            .list(&ListFilter::default())
            .expect("list")
            .into_iter()
            .map(str::to_string)
            .collect();
        let existing: Vec<&str> = existing.iter().map(String::as_str).collect();
        let what = match rng.below(10) {
            0..=5 => {
                let name = format!("s{}", rng.below(NAMES));
                if existing.contains(&name.as_str()) {
                    "create-exists"
                } else {
                    store.create(snap(&name)).expect("create");
                    "create"
                }
            }
            6 | 7 => {
                let target = if rng.below(5) == 0 {
                    None
                } else {
                    rng.pick(&existing)
                };
                store.set_current(target).expect("set current");
                "set-current"
            }
            _ => match rng.pick(&existing) {
                None => "delete-none",
                Some(name) => {
                    let policy = if rng.below(8) == 0 {
                        ChildPolicy::Children
                    } else {
                        ChildPolicy::Rebase
                    };
                    store.delete(name, policy).expect("delete");
                    "delete"
                }
            },
        };
        *counts.entry(what).or_default() += 1;
    }
    for (what, n) in counts {
        println!("{what}={n}");
    }
}

fn spawn(role: &str, state: &Path, extra: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args(["--exact", "child", "--ignored", "--nocapture"])
        .env(ROLE_ENV, role)
        .env(STATE_ENV, state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

/// Waits for `child` (killing it after PATIENCE) and returns its stdout;
/// fails the test when it did not succeed.
fn finish(child: Child, label: &str) -> String {
    let id = child.id();
    let start = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("{label} (pid {id}) hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{label} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `key=value` counts printed by a hammer child.
fn counts(stdout: &str) -> BTreeMap<String, u64> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// (parent, current) of every snapshot of `store`.
fn tree_of(store: &MetadataStore) -> BTreeMap<String, (Option<String>, bool)> {
    let tree = store.tree();
    tree.list(&ListFilter::default())
        .expect("list")
        .into_iter()
        .map(|n| {
            let parent = tree.parent(n).expect("parent").map(str::to_string);
            (n.to_string(), (parent, tree.is_current(n)))
        })
        .collect()
}

/// Every file of the owner directory parsed as the store does: name ->
/// (parent, `<active>`).
fn files_of(dir: &Path) -> BTreeMap<String, (Option<String>, bool)> {
    let options = ParseOptions::new(ParseFlags::REDEFINE | ParseFlags::INTERNAL);
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).expect("owner dir") {
        let entry = entry.expect("entry");
        let file = entry.file_name().to_string_lossy().into_owned();
        let name = file
            .strip_suffix(".xml")
            .unwrap_or_else(|| panic!("stray file {file} in the owner directory"));
        let text = fs::read_to_string(entry.path()).expect("read");
        let parsed = DomainSnapshotDef::parse(&text, &options)
            .unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
        assert_eq!(parsed.def.name.as_deref(), Some(name), "{file}");
        out.insert(name.to_string(), (parsed.def.parent, parsed.current));
    }
    out
}

#[test]
fn test_two_processes_hammering_one_owner_leave_a_consistent_store() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path().to_path_buf();
    let per_child = TOTAL_OPS / 2;
    let children: Vec<Child> = [11_u64, 29]
        .iter()
        .map(|seed| {
            spawn(
                "hammer",
                &state,
                &[
                    (SEED_ENV, seed.to_string()),
                    (OPS_ENV, per_child.to_string()),
                ],
            )
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let done = counts(&finish(child, &format!("hammer {i}")));
        assert_eq!(done.values().sum::<u64>(), per_child, "{done:?}");
        for op in ["create", "set-current", "delete"] {
            assert!(done.get(op).copied().unwrap_or(0) > 0, "no {op}: {done:?}");
        }
    }

    let layout = Layout::new(state);
    let owner = domain("vm");
    let dir = layout.owner_dir(&owner).expect("dir");
    let journal = layout.owner_journal(&owner).expect("journal");
    let index = layout.owner_index(&owner).expect("index");
    assert!(!journal.exists(), "a journal was left");

    // The files: each parses, names itself, its parent exists, at most one
    // is current.
    let files = files_of(&dir);
    for (name, (parent, _)) in &files {
        if let Some(p) = parent {
            assert!(files.contains_key(p), "{name}'s parent {p} has no file");
        }
    }
    let current: Vec<&String> = files
        .iter()
        .filter(|(_, (_, c))| *c)
        .map(|(n, _)| n)
        .collect();
    assert!(current.len() <= 1, "several current: {current:?}");

    // Opened normally (from the index the last writer left), the store is
    // exactly the files.
    assert!(index.exists(), "the last writer left no index");
    let store = MetadataStore::open(&layout, owner.clone(), Access::Read).expect("open");
    assert!(store.opened_from_index(), "the index was not trusted");
    assert_eq!(store.warnings(), []);
    assert!(store.tree().invariants_hold());
    let from_index = tree_of(&store);
    drop(store);
    assert_eq!(from_index, files, "index and files disagree");

    // Without the index, from the files: the same.
    fs::remove_file(&index).expect("remove index");
    let store = MetadataStore::open(&layout, owner, Access::Read).expect("open");
    assert!(!store.opened_from_index());
    assert_eq!(store.warnings(), []);
    assert_eq!(tree_of(&store), from_index);
}

#[test]
fn test_a_writer_of_one_owner_does_not_block_another_owner() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path().to_path_buf();
    let layout = Layout::new(state.clone());

    let holder = spawn("hold", &state, &[]);
    wait_for(&state.join("held"));
    // Owner b: opened, changed and closed while a is held (the child checks
    // both with try_open, so no timing decides).
    finish(spawn("other", &state, &[]), "other owner");
    // Owner a itself: a writer waits for the holder.
    let mut waiter = spawn("waiter", &state, &[]);
    wait_for(&state.join("waiting"));
    // Give it time to block (if the lock failed it would finish now and
    // build on `held` instead of `released`, see below).
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        MetadataStore::try_open(&layout, domain("a"), Access::Write)
            .expect("try a")
            .is_none(),
        "owner a is not held any more"
    );
    assert!(
        waiter.try_wait().expect("try_wait").is_none(),
        "the waiter got owner a while it was held"
    );
    fs::write(state.join("release"), b"").expect("release");
    finish(holder, "holder");
    finish(waiter, "waiter");

    // The waiter ran after the holder let go: its snapshot is the child of
    // the holder's last one.
    let a = MetadataStore::open(&layout, domain("a"), Access::Read).expect("open a");
    assert_eq!(a.tree().parent("released"), Ok(Some("held")));
    assert_eq!(a.tree().parent("waited"), Ok(Some("released")));
    assert_eq!(a.tree().current(), Some("waited"));
    let b = MetadataStore::open(&layout, domain("b"), Access::Read).expect("open b");
    assert_eq!(b.tree().current(), Some("b1"));
}
