//! The integration matrix's rows for a volume attached to a running guest
//! (`qemu-qmp-internal`, `qemu-qmp-external`): a qcow2 disk of the stub
//! guest, snapshotted disk-only through the domain API while QEMU runs,
//! as the live-domain tests do. Each cell starts its own guest, writes
//! the disk through QEMU and checks it through QEMU (qemu-io on the
//! device, then a shared read of the image chain).
//!
//! The volume drivers themselves decline volumes in use (their rows'
//! in-use cells); these rows have in-use cells only.

mod live_support;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use live_support::{Fixture, backend_ready};
use snapshot_core::ChildPolicy;
use snapshot_core::conformance::matrix::{self, Op, Outcome, Row, State};
use snapshot_core::domain_api::Created;
use snapshot_core::plan::{CreateFlags, DomainState, RevertFlags};

/// The disk under test.
const DISK: &str = "vda";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Internal,
    External,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::External => "external",
        }
    }
}

/// A running guest with one qcow2 disk, and what each snapshot holds.
struct Live {
    f: Fixture,
    mode: Mode,
    /// The pattern the disk's first MiB held at each snapshot.
    held: HashMap<String, u8>,
    /// The pattern it holds now.
    now: u8,
}

impl Live {
    async fn start(mode: Mode) -> Self {
        // Anonymous RAM: no RAM file to fill.
        let f = Fixture::with(1, false, false);
        f.qemu().start_domain(false).await.expect("start the guest");
        Self {
            f,
            mode,
            held: HashMap::new(),
            now: 0,
        }
    }

    async fn write(&mut self, pattern: u8) {
        self.f.write_disk(DISK, pattern).await;
        self.now = pattern;
    }

    async fn running(&self, after: &str) {
        let state = self.f.qemu().domain_state().await.expect("state");
        assert_eq!(state, DomainState::Running, "the guest runs after {after}");
    }

    /// The disk reads what it held at `pattern`, through QEMU.
    async fn reads(&self, pattern: u8) {
        self.f.check_disk(DISK, pattern).await;
    }

    /// The image files of QEMU's chain for the disk, top first.
    async fn chain(&self) -> Vec<String> {
        let qmp = self.f.monitor().await;
        let blocks = qmp.execute("query-block", None).await.expect("query-block");
        // The disk's device, by its id as QEMU names it (`vda`, or the
        // qdev path `/machine/peripheral/vda/virtio-backend`).
        let ours = |b: &&serde_json::Value| {
            let qdev = b["qdev"].as_str().unwrap_or("");
            qdev == DISK
                || qdev.starts_with(&format!("/machine/peripheral/{DISK}/"))
                || b["device"].as_str() == Some(DISK)
        };
        let block = blocks
            .as_array()
            .and_then(|b| b.iter().find(ours))
            .unwrap_or_else(|| panic!("{DISK} is not in query-block: {blocks}"));
        let mut files = Vec::new();
        let mut image = &block["inserted"]["image"];
        while let Some(file) = image["filename"].as_str() {
            files.push(file.to_string());
            image = &image["backing-image"];
        }
        assert!(!files.is_empty(), "{DISK} has no image: {block}");
        files
    }

    /// The internal snapshots QEMU sees in the disk's top image.
    async fn internal(&self) -> BTreeSet<String> {
        let live = self.f.qemu().live_disks().await.expect("live disks");
        live[DISK]
            .snapshots
            .iter()
            .map(|(name, vm)| {
                assert_eq!(*vm, 0, "'{name}' is disk-only: no VM state");
                name.clone()
            })
            .collect()
    }

    fn names(&self) -> BTreeSet<String> {
        self.f.snapshot_names().into_iter().collect()
    }

    async fn create(&mut self, name: &str) {
        let chain_before = self.chain().await;
        let disk = format!("<disk name='{DISK}' snapshot='{}'/>", self.mode.as_str());
        let xml =
            format!("<domainsnapshot><name>{name}</name><disks>{disk}</disks></domainsnapshot>");
        let created = self
            .f
            .api()
            .snapshot_create_xml(
                &self.f.name,
                Some(&xml),
                CreateFlags::DISK_ONLY,
                false,
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("creating '{name}': {e}"));
        assert!(
            matches!(created, Created::Taken { .. }),
            "'{name}' not taken: {created:?}"
        );
        self.running(&format!("creating '{name}'")).await;
        self.reads(self.now).await;
        match self.mode {
            Mode::Internal => {
                assert!(
                    self.internal().await.contains(name),
                    "QEMU does not see '{name}' in the disk's image"
                );
                assert_eq!(
                    self.chain().await,
                    chain_before,
                    "an internal snapshot adds no image"
                );
            }
            Mode::External => {
                let chain = self.chain().await;
                assert_eq!(
                    chain[1..],
                    chain_before[..],
                    "QEMU writes a new overlay on the old top"
                );
                assert_eq!(
                    chain[0],
                    self.f.source(DISK),
                    "the domain's source is QEMU's top"
                );
                assert!(Path::new(&chain[0]).exists(), "{} exists", chain[0]);
            }
        }
        assert!(self.names().contains(name), "'{name}' has no metadata");
        self.held.insert(name.to_string(), self.now);
    }

    async fn revert(&mut self, name: &str) {
        self.f
            .api()
            .revert_to_snapshot(&self.f.name, name, RevertFlags::RUNNING, false, None)
            .await
            .unwrap_or_else(|e| panic!("reverting to '{name}': {e}"));
        self.running(&format!("reverting to '{name}'")).await;
        self.now = self.held[name];
        self.reads(self.now).await;
    }

    async fn delete(&mut self, name: &str, policy: ChildPolicy) {
        let before = self.names();
        self.f
            .api()
            .snapshot_delete(&self.f.name, name, policy, false, false, None)
            .await
            .unwrap_or_else(|e| panic!("deleting '{name}' ({policy:?}): {e}"));
        self.running(&format!("deleting '{name}'")).await;
        self.reads(self.now).await;
        let after = self.names();
        let gone: Vec<String> = before.difference(&after).cloned().collect();
        for g in &gone {
            self.held.remove(g);
        }
        match self.mode {
            Mode::Internal => {
                let internal = self.internal().await;
                for g in &gone {
                    assert!(!internal.contains(g), "QEMU still sees the deleted '{g}'");
                }
            }
            Mode::External => {
                // A file named after a deleted snapshot is left only as
                // the image QEMU writes (a deleted snapshot's overlay that
                // took in what it was built on).
                let chain = self.chain().await;
                for g in &gone {
                    let file = self.f.dir.path().join(format!("{DISK}.{g}"));
                    let file = file.to_string_lossy().into_owned();
                    assert!(
                        !Path::new(&file).exists() || chain.contains(&file),
                        "{file} is left after deleting '{g}' (QEMU's chain: {chain:?})"
                    );
                }
            }
        }
    }

    /// Deletes every snapshot left, then checks nothing is left of any:
    /// no internal snapshot, no image but those QEMU reads.
    async fn nothing_left(&mut self) {
        let mut names: Vec<String> = self.names().into_iter().collect();
        names.sort();
        for name in names {
            self.delete(&name, ChildPolicy::Rebase).await;
        }
        assert!(
            self.names().is_empty(),
            "snapshots left: {:?}",
            self.names()
        );
        assert!(self.internal().await.is_empty(), "internal snapshots left");
        let chain: BTreeSet<String> = self.chain().await.into_iter().collect();
        let images: BTreeSet<String> = self
            .f
            .files()
            .into_iter()
            .filter(|f| f.starts_with(&format!("{DISK}.")))
            .map(|f| self.f.dir.path().join(f).to_string_lossy().into_owned())
            .collect();
        assert_eq!(images, chain, "the disk's images left are QEMU's chain");
    }

    /// Reverts to every snapshot left, each reading what it held.
    async fn verify_all(&mut self) {
        let mut names: Vec<String> = self.held.keys().cloned().collect();
        names.sort();
        for name in names {
            self.revert(&name).await;
        }
    }

    async fn stop(&self) {
        self.f.stop().await;
    }
}

async fn create(l: &mut Live) {
    l.write(0x11).await;
    l.create("s1").await;
    l.write(0x12).await;
    l.create("s2").await;
    assert_eq!(l.names(), BTreeSet::from(["s1".into(), "s2".into()]));
}

async fn list(l: &mut Live) {
    let base = l.chain().await;
    l.write(0x21).await;
    l.create("s1").await;
    let top1 = l.f.source(DISK);
    l.write(0x22).await;
    l.create("s2").await;
    let top2 = l.f.source(DISK);
    let both = BTreeSet::from(["s1".to_string(), "s2".to_string()]);
    assert_eq!(l.names(), both, "the domain's snapshots");
    match l.mode {
        Mode::Internal => assert_eq!(l.internal().await, both, "QEMU's internal snapshots"),
        Mode::External => {
            let mut expected = vec![top2, top1];
            expected.extend(base);
            assert_eq!(
                l.chain().await,
                expected,
                "QEMU's chain: one overlay per snapshot"
            );
        }
    }
}

async fn revert(l: &mut Live) {
    l.write(0x31).await;
    l.create("s1").await;
    l.write(0x32).await;
    l.create("s2").await;
    l.write(0x33).await;
    l.revert("s1").await;
    l.write(0x34).await;
    l.revert("s2").await;
    l.revert("s1").await;
}

async fn delete_rebase(l: &mut Live) {
    for (name, pattern) in [("s1", 0x41), ("s2", 0x42), ("s3", 0x43)] {
        l.write(pattern).await;
        l.create(name).await;
    }
    l.write(0x44).await;
    l.delete("s2", ChildPolicy::Rebase).await;
    assert_eq!(l.names(), BTreeSet::from(["s1".into(), "s3".into()]));
    l.verify_all().await;
    // The current one, a root with a child.
    l.revert("s1").await;
    l.delete("s1", ChildPolicy::Rebase).await;
    assert_eq!(l.names(), BTreeSet::from(["s3".into()]));
    l.verify_all().await;
    l.nothing_left().await;
}

/// `root <- top <- {leaf1, leaf2}`.
async fn subtree(l: &mut Live) {
    l.write(0x51).await;
    l.create("root").await;
    l.write(0x52).await;
    l.create("top").await;
    l.write(0x53).await;
    l.create("leaf1").await;
    l.revert("top").await;
    l.write(0x54).await;
    l.create("leaf2").await;
    l.write(0x55).await;
}

async fn delete_children(l: &mut Live) {
    subtree(l).await;
    l.delete("top", ChildPolicy::Children).await;
    assert_eq!(l.names(), BTreeSet::from(["root".into()]));
    l.verify_all().await;
    l.nothing_left().await;
}

async fn delete_children_only(l: &mut Live) {
    subtree(l).await;
    l.delete("top", ChildPolicy::ChildrenOnly).await;
    assert_eq!(l.names(), BTreeSet::from(["root".into(), "top".into()]));
    l.verify_all().await;
    l.nothing_left().await;
}

async fn cell(op: Op, mode: Mode) -> Outcome {
    let mut l = Live::start(mode).await;
    match op {
        Op::Create => create(&mut l).await,
        Op::List => list(&mut l).await,
        Op::Revert => revert(&mut l).await,
        Op::DeleteRebase => delete_rebase(&mut l).await,
        Op::DeleteChildren => delete_children(&mut l).await,
        Op::DeleteChildrenOnly => delete_children_only(&mut l).await,
    }
    l.stop().await;
    Outcome::Pass
}

fn row(id: &str, mode: Mode) {
    if !backend_ready(id) {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut row = Row::new(id, "qemu+qmp", mode.as_str());
        for op in Op::ALL {
            row.cells
                .push(matrix::cell(State::InUse, op.as_str(), cell(op, mode)).await);
        }
        matrix::record(&row);
        row.assert_passed();
    });
}

#[test]
fn matrix_qemu_qmp_internal() {
    row("qemu-qmp-internal", Mode::Internal);
}

#[test]
fn matrix_qemu_qmp_external() {
    row("qemu-qmp-external", Mode::External);
}
