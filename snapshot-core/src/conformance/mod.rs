//! The conformance suite every [`VolumeDriver`] must pass (behind the
//! `conformance` feature, for the drivers' tests): the same checks run
//! against real storage for each driver and mode, so drivers agree on the
//! contract the volume API and the executor rely on.
//!
//! A driver's test supplies a [`Harness`]: the driver, the mode under
//! test, and how to make a volume, write to it and read its content as a
//! guest would see it (`qemu-io` and `qemu-img convert` for qcow2, plain
//! file I/O for raw). The suite keeps the snapshot tree itself (a
//! [`SnapshotTree`]) to hand each delete the parent, children and current
//! flag it needs, and records the content at each snapshot, so every
//! revert is checked byte for byte.
//!
//! Checks panic with a message naming the step, the snapshot and what
//! differed; each is a separate function so a driver's tests run them as
//! separate tests. [`matrix`] runs the same kind of checks per operation
//! and volume state, one cell each, for the integration matrix
//! (`cargo xtask matrix`).

pub mod backends;
pub mod matrix;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::driver::{
    CreatedSnapshot, DeleteContext, DriverError, RevertOutcome, SnapshotMode, SnapshotPlan,
    SnapshotRef, Volume, VolumeDriver, VolumeState,
};
use crate::tree::{ChildPolicy, Location, SnapshotInfo, SnapshotTree, StateKind};

/// Bytes in a test volume: 16 clusters of 64 KiB.
pub const VOLUME_SIZE: u64 = 1 << 20;
/// The unit test writes use (one qcow2 cluster).
pub const CHUNK: u64 = 64 * 1024;

/// What a driver's test supplies (see the module comment).
pub trait Harness: Send + Sync {
    /// The driver under test.
    fn driver(&self) -> &dyn VolumeDriver;
    /// The mode under test.
    fn mode(&self) -> SnapshotMode;
    /// A new zero-filled volume of [`VOLUME_SIZE`] bytes named `name` in
    /// `dir`.
    fn new_volume(&self, dir: &Path, name: &str) -> Volume;
    /// Writes `len` bytes of `pattern` at `offset` of the volume (or of a
    /// snapshot's file, given as a volume of its format).
    fn write(&self, volume: &Volume, offset: u64, len: u64, pattern: u8);
    /// The volume's content as a guest sees it.
    fn content(&self, volume: &Volume) -> Vec<u8>;
    /// Changes what `snapshot` of `volume` holds behind the driver's back,
    /// as damage would. The default writes to the snapshot's file; a
    /// driver whose snapshots have none supplies its own.
    fn damage(&self, volume: &Volume, snapshot: &CreatedSnapshot) {
        let file = snapshot
            .file
            .as_ref()
            .expect("a snapshot without a file needs the harness's own damage()");
        self.write(&Volume::new(file, volume.format.clone()), 0, CHUNK, 0x99);
    }
}

/// Defines, in the calling test file, one test per conformance check
/// (named after it) and `matrix`, which records the integration matrix's
/// row `$row` ([`matrix::test`]). Each runs on the harness `$harness`
/// evaluates to (an `Option`: `None` skips, after the harness said why)
/// and a fresh temporary directory. The caller needs `tokio` and
/// `tempfile` as dev-dependencies.
///
/// ```text
/// mod raw {
///     fn harness() -> Option<RawHarness<FileDriver>> { ... }
///     snapshot_core::conformance_tests!(harness(), "file-raw");
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr, $row:literal) => {
        $crate::conformance_tests!(@check $harness, create_revert_delete);
        $crate::conformance_tests!(@check $harness, existing_is_refused);
        $crate::conformance_tests!(@check $harness, undo_restores);
        $crate::conformance_tests!(@check $harness, delete_is_idempotent);
        $crate::conformance_tests!(@check $harness, checksum_detects_damage);
        $crate::conformance_tests!(@check $harness, chain_with_branches);

        /// The integration matrix's row.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn matrix() {
            let Some(h) = $harness else { return };
            let dir = tempfile::tempdir().expect("tempdir");
            $crate::conformance::matrix::test(&h, dir.path(), $row).await;
        }
    };
    (@check $harness:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(h) = $harness else { return };
            let dir = tempfile::tempdir().expect("tempdir");
            $crate::conformance::$name(&h, dir.path()).await;
        }
    };
}

/// The suite's view of one volume and its snapshots.
struct Session<'a> {
    h: &'a dyn Harness,
    volume: Volume,
    tree: SnapshotTree,
    refs: HashMap<String, SnapshotRef>,
    contents: HashMap<String, Vec<u8>>,
}

fn info(name: &str, mode: SnapshotMode) -> SnapshotInfo {
    SnapshotInfo {
        name: name.to_string(),
        state: StateKind::Inactive,
        location: if mode == SnapshotMode::Internal {
            Location::Internal
        } else {
            Location::External
        },
        has_metadata: true,
        creation_time: 0,
    }
}

fn file_for(volume: &Volume, name: &str) -> PathBuf {
    volume
        .path
        .with_file_name(format!("{}.{name}", volume.file_name()))
}

impl<'a> Session<'a> {
    fn new(h: &'a dyn Harness, dir: &Path, name: &str) -> Self {
        let volume = h.new_volume(dir, name);
        Self {
            h,
            volume,
            tree: SnapshotTree::new(),
            refs: HashMap::new(),
            contents: HashMap::new(),
        }
    }

    fn plan(&self, name: &str, checksum: bool) -> SnapshotPlan {
        SnapshotPlan {
            name: name.to_string(),
            mode: self.h.mode(),
            file: (self.h.mode() != SnapshotMode::Internal).then(|| file_for(&self.volume, name)),
            checksum,
            writable: false,
        }
    }

    fn content(&self) -> Vec<u8> {
        self.h.content(&self.volume)
    }

    async fn create(&mut self, name: &str, checksum: bool) -> CreatedSnapshot {
        let before = self.content();
        let plan = self.plan(name, checksum);
        let created = self
            .h
            .driver()
            .create(&self.volume, &plan, None)
            .await
            .unwrap_or_else(|e| panic!("creating snapshot '{name}': {e}"));
        assert_eq!(created.name, name, "the created snapshot's name");
        assert_eq!(created.mode, self.h.mode(), "the created snapshot's mode");
        if let Some(file) = &plan.file {
            assert_eq!(created.file.as_ref(), Some(file), "the created file");
            assert!(file.exists(), "{} exists after create", file.display());
        }
        assert!(
            self.content() == before,
            "creating '{name}' changed the volume's content"
        );
        self.tree
            .create(info(name, self.h.mode()))
            .unwrap_or_else(|e| panic!("tree: {e}"));
        self.refs.insert(name.to_string(), created.as_ref());
        self.contents.insert(name.to_string(), before);
        created
    }

    async fn revert(&mut self, name: &str) {
        let target = self.refs[name].clone();
        let outcome = self
            .h
            .driver()
            .revert(&self.volume, &target, true, None)
            .await
            .unwrap_or_else(|e| panic!("reverting to '{name}': {e}"));
        assert_eq!(
            outcome,
            RevertOutcome::Done,
            "reverting to '{name}' of a volume nobody has open"
        );
        assert!(
            self.content() == self.contents[name],
            "after reverting to '{name}' the volume does not hold its content"
        );
        self.tree.set_current(Some(name)).expect("tree");
    }

    fn context(&self, name: &str) -> DeleteContext {
        DeleteContext {
            parent: self
                .tree
                .parent(name)
                .expect("tree")
                .map(|p| self.refs[p].clone()),
            children: self
                .tree
                .children(name)
                .expect("tree")
                .into_iter()
                .map(|c| self.refs[c].clone())
                .collect(),
            is_current: self.tree.is_current(name),
            flatten_clones: false,
        }
    }

    async fn delete(&mut self, name: &str) {
        let before = self.content();
        let target = self.refs[name].clone();
        let context = self.context(name);
        self.h
            .driver()
            .delete(&self.volume, &target, &context, None)
            .await
            .unwrap_or_else(|e| panic!("deleting '{name}': {e}"));
        assert!(
            self.content() == before,
            "deleting '{name}' changed the volume's content"
        );
        if let Some(file) = &target.file {
            assert!(
                !file.exists(),
                "{} still exists after deleting '{name}'",
                file.display()
            );
        }
        self.tree.delete(name, ChildPolicy::Rebase).expect("tree");
        self.refs.remove(name);
        self.contents.remove(name);
    }

    /// Reverts to every snapshot in turn and checks its content.
    async fn verify_all(&mut self) {
        let mut names: Vec<String> = self.refs.keys().cloned().collect();
        names.sort();
        for name in names {
            self.revert(&name).await;
        }
    }

    fn write(&self, index: u64, pattern: u8) {
        let offset = (index % (VOLUME_SIZE / CHUNK)) * CHUNK;
        self.h.write(&self.volume, offset, CHUNK, pattern);
    }
}

/// Whether the driver declares the harness's mode for a fresh volume;
/// a harness for an undeclared mode is a mistake in the test.
async fn declared(h: &dyn Harness, dir: &Path) {
    let volume = h.new_volume(dir, "caps");
    let caps = h
        .driver()
        .capabilities(&volume, VolumeState::Offline)
        .await
        .unwrap_or_else(|e| panic!("capabilities: {e}"));
    assert!(
        caps.supports(h.mode()),
        "{} does not declare {} snapshots for {}",
        h.driver().kind(),
        h.mode(),
        volume.path.display()
    );
    assert!(caps.revert, "{} declares no revert", h.driver().kind());
}

/// Create, change, revert, delete: the volume holds the snapshot's
/// content after the revert and keeps its content through the delete.
pub async fn create_revert_delete(h: &dyn Harness, dir: &Path) {
    declared(h, dir).await;
    let mut s = Session::new(h, dir, "basic");
    s.write(0, 0xa1);
    s.create("one", false).await;
    s.write(0, 0xb2);
    s.write(3, 0xb3);
    let changed = s.content();
    assert!(changed != s.contents["one"], "the writes changed nothing");
    s.revert("one").await;
    s.write(5, 0xc4);
    s.delete("one").await;
    assert_eq!(s.tree.len(), 0);
}

/// A snapshot name or file that exists is refused with
/// [`DriverError::Exists`], and nothing changes.
pub async fn existing_is_refused(h: &dyn Harness, dir: &Path) {
    let mut s = Session::new(h, dir, "exists");
    s.write(1, 0x11);
    s.create("taken", false).await;
    s.write(1, 0x22);
    let before = s.content();
    let err = h
        .driver()
        .create(&s.volume, &s.plan("taken", false), None)
        .await
        .expect_err("a second snapshot with the same name and file is refused");
    assert!(matches!(err, DriverError::Exists { .. }), "got {err}");
    assert!(
        s.content() == before,
        "the refused create changed the volume"
    );
    if h.mode() != SnapshotMode::Internal {
        let file = file_for(&s.volume, "other");
        std::fs::write(&file, b"not yours").expect("writing a stray file");
        let err = h
            .driver()
            .create(&s.volume, &s.plan("other", false), None)
            .await
            .expect_err("an existing file is refused");
        assert!(matches!(err, DriverError::Exists { .. }), "got {err}");
        assert_eq!(
            std::fs::read(&file).expect("reading the stray file"),
            b"not yours",
            "the refused create overwrote an existing file"
        );
        assert!(
            s.content() == before,
            "the refused create changed the volume"
        );
    }
    s.revert("taken").await;
}

/// `undo` right after `create` leaves the volume as before, with no
/// snapshot storage, and can run again.
pub async fn undo_restores(h: &dyn Harness, dir: &Path) {
    let mut s = Session::new(h, dir, "undo");
    s.write(2, 0x33);
    let before = s.content();
    let created = s.create("gone", false).await;
    for round in 0..2 {
        h.driver()
            .undo(&s.volume, &created)
            .await
            .unwrap_or_else(|e| panic!("undo round {round}: {e}"));
        assert!(
            s.content() == before,
            "undo round {round} changed the volume"
        );
        if let Some(file) = &created.file {
            assert!(!file.exists(), "{} left after undo", file.display());
        }
    }
    if let Ok(listed) = h.driver().list(&s.volume).await {
        assert!(
            listed.iter().all(|x| x.name != "gone"),
            "the storage still lists the undone snapshot"
        );
    }
    // The name is free again.
    s.tree = SnapshotTree::new();
    s.refs.clear();
    s.create("gone", false).await;
}

/// Deleting a snapshot whose storage is already gone succeeds: recovery
/// re-runs deletes.
pub async fn delete_is_idempotent(h: &dyn Harness, dir: &Path) {
    let mut s = Session::new(h, dir, "twice");
    s.create("first", false).await;
    s.write(4, 0x44);
    s.create("second", false).await;
    let target = s.refs["first"].clone();
    let context = s.context("first");
    s.delete("first").await;
    h.driver()
        .delete(&s.volume, &target, &context, None)
        .await
        .unwrap_or_else(|e| panic!("deleting 'first' again: {e}"));
    s.verify_all().await;
}

/// With checksums: the created snapshot carries a sha256 digest, and a
/// revert with verification refuses a snapshot whose content changed,
/// leaving the volume alone. Drivers without checksums skip this.
pub async fn checksum_detects_damage(h: &dyn Harness, dir: &Path) {
    let mut s = Session::new(h, dir, "sum");
    let caps = h
        .driver()
        .capabilities(&s.volume, VolumeState::Offline)
        .await
        .expect("capabilities");
    if !caps.checksums {
        return;
    }
    s.write(6, 0x66);
    let created = s.create("summed", true).await;
    let sum = created.checksum.clone().expect("a checksum was asked for");
    assert_eq!(sum.algorithm, "sha256");
    assert_eq!(sum.value.len(), 64, "a sha256 digest has 64 hex digits");
    assert!(sum.value.bytes().all(|b| b.is_ascii_hexdigit()));
    s.revert("summed").await;
    s.write(7, 0x77);
    let before = s.content();
    h.damage(&s.volume, &created);
    let err = h
        .driver()
        .revert(&s.volume, &s.refs["summed"], true, None)
        .await
        .expect_err("a damaged snapshot is refused");
    assert!(
        matches!(err, DriverError::ChecksumMismatch { .. }),
        "got {err}"
    );
    assert!(
        s.content() == before,
        "the refused revert changed the volume"
    );
}

/// A chain of 20 snapshots with two branches, then deletes in the middle
/// (a snapshot with one child, one with two, the current one, a root),
/// each checked by reverting to every snapshot left.
pub async fn chain_with_branches(h: &dyn Harness, dir: &Path) {
    let mut s = Session::new(h, dir, "chain");
    for i in 0..20u8 {
        if i == 8 {
            s.revert("s03").await;
        }
        if i == 14 {
            s.revert("s10").await;
        }
        s.write(u64::from(i), 0x10 + i);
        s.create(&format!("s{i:02}"), false).await;
    }
    // s03 has children s04 and s08; s10 has s11 and s14; current is s19.
    assert_eq!(s.tree.children("s03").expect("tree").len(), 2);
    s.write(20, 0xee);
    s.delete("s05").await; // one child
    s.delete("s03").await; // two children
    s.delete("s19").await; // the current one
    s.delete("s00").await; // a root with one child
    s.delete("s10").await; // two children again
    s.verify_all().await;
    s.revert("s12").await;
    s.write(21, 0xdd);
    s.create("after", false).await;
    s.delete("s12").await; // the reverted one, with an old and a new child
    s.verify_all().await;
    let names: Vec<String> = s.refs.keys().cloned().collect();
    for name in names {
        s.delete(&name).await;
    }
    assert_eq!(s.tree.len(), 0);
}
