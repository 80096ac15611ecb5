//! A shut-off domain whose three disks live on three storage drivers,
//! snapshotted as one (issue 7): vda, a qcow2 image on an ordinary
//! filesystem, gets a new overlay from the qemu driver (external); vdb, a
//! raw file on a real loop-mounted btrfs, gets a reflinked copy from the
//! btrfs driver; vdc, a raw file on an ordinary filesystem, gets a full
//! copy from the file driver. The drivers are the command line's, in its
//! order (qemu, btrfs, file), and route each disk by what they can do.
//!
//! The snapshot is taken, reverted to after the guest wrote to every disk
//! and deleted, each disk's content checked by checksum at every step.
//! A fault injected into the real driver of the last disk in the plan
//! (its `create` or overlay fails, disk full) makes the create fail with
//! that error and leaves nothing: the other two disks' snapshots are
//! undone, the domain definition, the contents and the metadata are as
//! before.
//!
//! Needs the qemu tools and root (a loop-mounted btrfs); otherwise each
//! test prints `SKIP` and passes, or fails when
//! `VIRTSNAP_REQUIRE_BACKENDS` is set.

mod domain_support;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use domain_support::{Fault, Faulty, Fixture, MIB, cli_drivers};
use driver_qemu::qcow2;
use snapshot_conf::{CookieDisk, VirtsnapCookie};
use snapshot_core::conformance::backends;
use snapshot_core::conformance::backends::{Btrfs, btrfs_exclusive_bytes as exclusive_bytes};
use snapshot_core::domain_api::{Created, DomainApi, DomainApiError};
use snapshot_core::exec::{ExecError, Undone};
use snapshot_core::plan::{CreateFlags, DiskAction, Performer, Plan, RevertFlags, Step};
use snapshot_core::store::{SnapshotRecord, domains};
use snapshot_core::tree::ChildPolicy;

/// The request: vda external, vdb and vdc internal (raw files have no
/// internal snapshots: their storage keeps a copy).
const S1: &str = "<domainsnapshot><name>s1</name><disks>\
    <disk name='vda' snapshot='external'/>\
    <disk name='vdb' snapshot='internal'/>\
    <disk name='vdc' snapshot='internal'/>\
    </disks></domainsnapshot>";

/// One of the three disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disk {
    /// vda: qcow2 on an ordinary filesystem, external snapshot.
    Qcow2,
    /// vdb: raw on btrfs, reflinked copy.
    OnBtrfs,
    /// vdc: raw on an ordinary filesystem, full copy.
    Raw,
}

const ALL: [Disk; 3] = [Disk::Qcow2, Disk::OnBtrfs, Disk::Raw];

impl Disk {
    fn target(self) -> &'static str {
        match self {
            Self::Qcow2 => "vda",
            Self::OnBtrfs => "vdb",
            Self::Raw => "vdc",
        }
    }

    /// The image's file name.
    fn file(self) -> &'static str {
        match self {
            Self::Qcow2 => "vda.qcow2",
            Self::OnBtrfs => "vdb.raw",
            Self::Raw => "vdc.raw",
        }
    }

    /// The file name of s1's storage: the overlay or the copy.
    fn snapshot_file(self) -> &'static str {
        match self {
            Self::Qcow2 => "vda.s1",
            Self::OnBtrfs => "vdb.raw.s1",
            Self::Raw => "vdc.raw.s1",
        }
    }

    fn format(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::OnBtrfs | Self::Raw => "raw",
        }
    }

    /// The driver that is to take it.
    fn driver(self) -> &'static str {
        match self {
            Self::Qcow2 => "qemu",
            Self::OnBtrfs => "btrfs",
            Self::Raw => "file",
        }
    }

    /// How s1 keeps it, as [`routes`] says.
    fn how(self) -> String {
        match self {
            Self::Qcow2 => format!("overlay {}", self.snapshot_file()),
            Self::OnBtrfs | Self::Raw => format!("copy {}", self.snapshot_file()),
        }
    }

    /// The first byte pattern written to it.
    fn pattern(self) -> u8 {
        match self {
            Self::Qcow2 => 0xa0,
            Self::OnBtrfs => 0xb0,
            Self::Raw => 0xc0,
        }
    }
}

/// Domain `vm` with the three disks, defined in `order`: vda and vdc in
/// the fixture's directory (not btrfs), vdb on the btrfs.
struct ThreeDisks {
    f: Fixture,
    on_btrfs: PathBuf,
}

impl ThreeDisks {
    fn new(dir: &Path, on_btrfs: &Path, order: [Disk; 3]) -> Self {
        let image = |d: Disk| match d {
            Disk::OnBtrfs => on_btrfs.join(d.file()),
            _ => dir.join(d.file()),
        };
        backends::qcow2_create(&image(Disk::Qcow2), 4 * MIB, &[]);
        for d in [Disk::OnBtrfs, Disk::Raw] {
            std::fs::write(image(d), vec![0u8; 4 << 20]).expect("raw image");
        }
        for d in ALL {
            backends::write(&image(d), d.format(), 0, 65_536, d.pattern());
        }
        let disks: String = order
            .iter()
            .map(|&d| {
                format!(
                    "
    <disk type='file' device='disk'>
      <driver name='qemu' type='{format}'/>
      <source file='{source}'/>
      <target dev='{target}' bus='virtio'/>
    </disk>",
                    format = d.format(),
                    source = image(d).display(),
                    target = d.target(),
                )
            })
            .collect();
        let xml = format!(
            "<domain type='kvm'>
  <name>vm</name>
  <memory unit='MiB'>64</memory>
  <devices>{disks}
  </devices>
</domain>"
        );
        Self {
            f: Fixture::with_domain(dir, &xml),
            on_btrfs: on_btrfs.to_path_buf(),
        }
    }

    /// Where `file` of disk `d` lives: beside its image.
    fn path(&self, d: Disk, file: &str) -> PathBuf {
        match d {
            Disk::OnBtrfs => self.on_btrfs.join(file),
            _ => self.f.path(file),
        }
    }

    fn image(&self, d: Disk) -> PathBuf {
        self.path(d, d.file())
    }

    fn snapshot_file(&self, d: Disk) -> PathBuf {
        self.path(d, d.snapshot_file())
    }

    /// Disk `d`'s current source and format in the domain definition.
    fn source(&self, d: Disk) -> (PathBuf, String) {
        let domain = domains::get(&self.f.layout, "vm").expect("domain");
        let disk = domain
            .def
            .disk_by_target(d.target())
            .unwrap_or_else(|| panic!("domain vm lost disk {}", d.target()));
        (
            PathBuf::from(disk.source.path.clone().unwrap_or_default()),
            disk.driver_type.clone().unwrap_or_else(|| "raw".into()),
        )
    }

    /// What the guest sees on each disk (vda, vdb, vdc), hashed.
    fn contents(&self) -> [String; 3] {
        ALL.map(|d| {
            let (source, format) = self.source(d);
            hash(&source, &format)
        })
    }

    /// The files beside the images: the fixture's directory (without the
    /// state), then the btrfs directory.
    fn files(&self) -> (Vec<String>, Vec<String>) {
        let mut on_btrfs: Vec<String> = std::fs::read_dir(&self.on_btrfs)
            .expect("btrfs directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        on_btrfs.sort();
        (self.f.files(), on_btrfs)
    }

    /// Writes `pattern` to every disk where the guest would (its current
    /// source), at 64 KiB.
    fn write_all(&self, pattern: u8) {
        for d in ALL {
            let (source, format) = self.source(d);
            backends::write(&source, &format, 65_536, 65_536, pattern ^ d.pattern());
        }
    }
}

/// The guest-visible content of the image at `path` in `format`, hashed.
fn hash(path: &Path, format: &str) -> String {
    driver_file::copy::sha256_bytes(&backends::content(path, format))
}

/// Takes s1 (or only plans it), all disks or none.
async fn create_s1(api: &DomainApi, dry_run: bool) -> Result<Created, DomainApiError> {
    api.snapshot_create_xml("vm", Some(S1), CreateFlags::ATOMIC, dry_run, None)
        .await
}

/// Each disk step of `plan`: disk, who takes it and how (`overlay`,
/// `copy`, `internal`) with the file's name.
fn routes(plan: &Plan) -> Vec<(String, String, String)> {
    plan.disk_steps()
        .map(|d| {
            let by = match &d.by {
                Performer::Driver(kind) => kind.clone(),
                Performer::Hypervisor => "hypervisor".into(),
            };
            let how = match &d.action {
                DiskAction::Internal => "internal".to_string(),
                DiskAction::External { target, .. } => format!("overlay {}", file_name(target)),
                DiskAction::Copy { target } => format!("copy {}", file_name(target)),
            };
            (d.disk.clone(), by, how)
        })
        .collect()
}

fn file_name(path: impl AsRef<Path>) -> String {
    path.as_ref()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn route(disk: &str, by: &str, how: &str) -> (String, String, String) {
    (disk.into(), by.into(), how.into())
}

/// A btrfs and a directory on an ordinary filesystem, or `None` after a
/// skip (see the module comment).
fn backends_or_skip() -> Option<(Btrfs, tempfile::TempDir)> {
    if !backends::qemu_tools_present() {
        return None;
    }
    let fs = Btrfs::new_or_skip("300M")?;
    let tmp = tempfile::tempdir().expect("tempdir");
    if driver_btrfs::is_btrfs(tmp.path()).expect("statfs of the tempdir") {
        let _ = backends::skip(&format!(
            "the temporary directory {} is on btrfs, where the file driver would not take \
             vdc; point TMPDIR at another filesystem",
            tmp.path().display()
        ));
        return None;
    }
    Some((fs, tmp))
}

#[tokio::test]
async fn create_revert_and_delete_across_qemu_btrfs_and_file() {
    let Some((fs, tmp)) = backends_or_skip() else {
        return;
    };
    let v = ThreeDisks::new(tmp.path(), fs.path(), ALL);
    let api = v.f.api(cli_drivers());
    let at_s1 = v.contents();
    let files_before = v.files();

    // The plan routes each disk to its driver, and changes nothing.
    let Created::Planned(plan) = create_s1(&api, true).await.expect("planned") else {
        panic!("a dry run only plans");
    };
    let expected_routes = ALL.map(|d| route(d.target(), d.driver(), &d.how()));
    assert_eq!(
        routes(&plan),
        expected_routes,
        "the dry run's routing:\n{plan}"
    );
    assert_eq!(v.files(), files_before, "a dry run created files");

    // Taken.
    let Created::Taken { plan, .. } = create_s1(&api, false).await.expect("s1 taken") else {
        panic!("a create that is not a dry run takes the snapshot");
    };
    assert_eq!(routes(&plan), expected_routes, "the routing run:\n{plan}");
    let stored = {
        let store = v.f.store();
        assert_eq!(store.tree().current(), Some("s1"), "s1 is not current");
        assert!(
            store.pending_intent().is_none(),
            "a finished create left its intent"
        );
        let Some(SnapshotRecord::Domain(def)) = store.get("s1") else {
            panic!("no domain snapshot s1 stored");
        };
        def.clone()
    };
    let cookie = stored
        .cookie
        .as_ref()
        .and_then(VirtsnapCookie::from_subtree)
        .expect("s1's metadata records how each disk was taken");
    let recorded = |d: Disk, mode: &str| CookieDisk {
        name: d.target().into(),
        driver: d.driver().into(),
        mode: mode.into(),
        file: Some(v.snapshot_file(d).display().to_string()),
    };
    assert_eq!(
        cookie.disks,
        [
            recorded(Disk::Qcow2, "external"),
            recorded(Disk::OnBtrfs, "copy"),
            recorded(Disk::Raw, "copy"),
        ],
        "the drivers and files s1's metadata records"
    );

    // vda: the new overlay on the frozen image is the disk's source.
    let overlay = v.snapshot_file(Disk::Qcow2);
    assert_eq!(
        qcow2::read_header(&overlay)
            .expect("vda's overlay is a qcow2 image")
            .backing_file
            .map(PathBuf::from),
        Some(v.image(Disk::Qcow2)),
        "the backing file of vda's overlay"
    );
    assert_eq!(
        v.source(Disk::Qcow2),
        (overlay.clone(), "qcow2".to_string()),
        "vda's source after s1"
    );
    // vdb: a reflinked copy on the btrfs, sharing every extent with the
    // disk; the disk keeps its path.
    let vdb_copy = v.snapshot_file(Disk::OnBtrfs);
    assert!(
        driver_btrfs::is_btrfs(&vdb_copy).expect("statfs of vdb's copy"),
        "vdb's copy {} is not on btrfs",
        vdb_copy.display()
    );
    assert_eq!(
        exclusive_bytes(&vdb_copy),
        0,
        "vdb's copy has extents of its own: it is not a reflink of the disk"
    );
    // vdc: a full copy, a file of its own, on the ordinary filesystem.
    let vdc_copy = v.snapshot_file(Disk::Raw);
    let (copy_meta, image_meta) = (
        std::fs::metadata(&vdc_copy).expect("vdc's copy exists"),
        std::fs::metadata(v.image(Disk::Raw)).expect("vdc's image"),
    );
    assert_ne!(
        (copy_meta.dev(), copy_meta.ino()),
        (image_meta.dev(), image_meta.ino()),
        "vdc's copy is the image itself"
    );
    assert_eq!(
        (v.source(Disk::OnBtrfs).0, v.source(Disk::Raw).0),
        (v.image(Disk::OnBtrfs), v.image(Disk::Raw)),
        "a copied disk keeps its source"
    );
    let (mut plain, mut btrfs) = files_before.clone();
    plain.extend(["vda.s1".to_string(), "vdc.raw.s1".to_string()]);
    plain.sort();
    btrfs.push("vdb.raw.s1".into());
    btrfs.sort();
    assert_eq!(v.files(), (plain, btrfs), "the files s1 made");
    // Contents: the guest sees what it had; the snapshot holds it.
    assert_eq!(v.contents(), at_s1, "taking s1 changed a disk's content");
    let held = || {
        [
            hash(&v.image(Disk::Qcow2), "qcow2"),
            hash(&vdb_copy, "raw"),
            hash(&vdc_copy, "raw"),
        ]
    };
    assert_eq!(
        held(),
        at_s1,
        "what s1's storage holds (vda's frozen image, copies)"
    );

    // The guest writes to every disk; s1's storage keeps its data.
    v.write_all(0x0f);
    let written = v.contents();
    for (i, d) in ALL.iter().enumerate() {
        assert_ne!(
            written[i],
            at_s1[i],
            "the write did not reach {}",
            d.target()
        );
    }
    assert_eq!(held(), at_s1, "a write to the disks reached s1's storage");

    // Revert: every disk is back at s1, each by its own driver.
    let plan = api
        .revert_to_snapshot("vm", "s1", RevertFlags::empty(), false, None)
        .await
        .expect("reverted to s1");
    let revert_routes: Vec<(String, String)> = routes(&plan)
        .into_iter()
        .map(|(disk, by, _)| (disk, by))
        .collect();
    assert_eq!(
        revert_routes,
        [
            ("vda".to_string(), "qemu".to_string()),
            ("vdb".into(), "btrfs".into()),
            ("vdc".into(), "file".into()),
        ],
        "the revert's routing:\n{plan}"
    );
    assert_eq!(
        v.contents(),
        at_s1,
        "a disk is not back at s1 after the revert"
    );
    let (vda_now, vda_format) = v.source(Disk::Qcow2);
    assert_eq!(vda_format, "qcow2", "vda's format after the revert");
    assert_ne!(
        vda_now, overlay,
        "vda still uses the overlay the guest wrote to"
    );
    assert_eq!(
        qcow2::read_header(&vda_now)
            .expect("vda's new overlay")
            .backing_file
            .map(PathBuf::from),
        Some(v.image(Disk::Qcow2)),
        "the backing file of vda's overlay after the revert"
    );
    assert!(
        !overlay.exists(),
        "the overlay the revert discarded is still there"
    );
    assert!(
        vdb_copy.exists() && vdc_copy.exists(),
        "a revert removed a copy"
    );
    {
        let store = v.f.store();
        assert_eq!(store.tree().current(), Some("s1"), "s1 after the revert");
        assert!(
            store.pending_intent().is_none(),
            "the revert left its intent"
        );
    }

    // The guest writes again; deleting s1 removes its storage and keeps
    // what every disk holds now.
    v.write_all(0xf0);
    let latest = v.contents();
    for (i, d) in ALL.iter().enumerate() {
        assert_ne!(
            latest[i],
            at_s1[i],
            "the write did not reach {}",
            d.target()
        );
    }
    let plan = api
        .snapshot_delete("vm", "s1", ChildPolicy::Rebase, false, false, None)
        .await
        .expect("s1 deleted");
    assert_eq!(
        routes(&plan),
        [
            route("vdb", "btrfs", "copy vdb.raw.s1"),
            route("vdc", "file", "copy vdc.raw.s1"),
        ],
        "the delete's copy steps:\n{plan}"
    );
    let merged: Vec<(&str, &Performer)> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::MergeImage { disk, by, .. } => Some((disk.as_str(), by)),
            _ => None,
        })
        .collect();
    assert_eq!(
        merged,
        [("vda", &Performer::Driver("qemu".into()))],
        "the delete's merges:\n{plan}"
    );
    assert_eq!(v.contents(), latest, "deleting s1 changed a disk's content");
    assert!(!vdb_copy.exists(), "vdb's copy is still there");
    assert!(!vdc_copy.exists(), "vdc's copy is still there");
    // vda's frozen image is merged into the overlay above it, which keeps
    // its path and now stands alone.
    assert!(
        !v.image(Disk::Qcow2).exists(),
        "vda's frozen image is still there"
    );
    assert_eq!(
        v.source(Disk::Qcow2),
        (vda_now.clone(), "qcow2".to_string()),
        "vda's source after the delete"
    );
    assert_eq!(
        qcow2::read_header(&vda_now)
            .expect("vda's image")
            .backing_file,
        None,
        "vda's image still has a backing file after the delete"
    );
    assert_eq!(
        v.files(),
        (
            vec![file_name(&vda_now), "vdc.raw".to_string()],
            vec!["vdb.raw".to_string()]
        ),
        "the files left after the delete"
    );
    let store = v.f.store();
    assert!(
        store.tree().is_empty(),
        "snapshots left after the delete: {:?}",
        store.tree().current()
    );
    assert!(
        store.pending_intent().is_none(),
        "the delete left its intent"
    );
}

#[tokio::test]
async fn a_fault_in_the_last_disks_driver_undoes_the_other_disks() {
    let Some((fs, tmp)) = backends_or_skip() else {
        return;
    };
    // Each driver in turn takes the last disk of the plan, so each
    // driver's snapshot is undone in some case; the case (the
    // file driver last) first.
    let orders = [
        [Disk::Qcow2, Disk::OnBtrfs, Disk::Raw],
        [Disk::Raw, Disk::Qcow2, Disk::OnBtrfs],
        [Disk::OnBtrfs, Disk::Raw, Disk::Qcow2],
    ];
    for (case, order) in orders.into_iter().enumerate() {
        let last = order[2];
        let what = format!("{} last", last.driver());
        let dir = tmp.path().join(format!("case{case}"));
        let on_btrfs = fs.path().join(format!("case{case}"));
        std::fs::create_dir(&dir).expect("case directory");
        std::fs::create_dir(&on_btrfs).expect("case directory on btrfs");
        let v = ThreeDisks::new(&dir, &on_btrfs, order);
        let before = (v.contents(), v.files(), v.f.definition());

        let drivers = Faulty::only(
            cli_drivers(),
            last.driver(),
            Fault::CreateOn(last.file().into()),
        );
        let api = v.f.api(drivers);
        let Created::Planned(plan) = create_s1(&api, true).await.expect("planned") else {
            panic!("{what}: a dry run only plans");
        };
        let expected: Vec<_> = order
            .iter()
            .map(|d| route(d.target(), d.driver(), &d.how()))
            .collect();
        assert_eq!(
            routes(&plan),
            expected,
            "{what}: the disks are not taken in the definition's order by their drivers:\n{plan}"
        );

        let Err(e) = create_s1(&api, false).await else {
            panic!("{what}: the create succeeded despite the fault injected on the last disk");
        };
        let DomainApiError::Exec(ExecError::Step {
            index,
            disk,
            undone,
            ..
        }) = &e
        else {
            panic!("{what}: expected a failed step, got {e}");
        };
        assert_eq!(
            (*index, disk.as_deref(), undone),
            (3, Some(last.target()), &Undone::All),
            "{what}: the failed step, its disk and the undo: {e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("no space left") && text.contains(&v.image(last).display().to_string()),
            "{what}: the error does not say the injected fault on {}: {text}",
            v.image(last).display()
        );
        for d in ALL {
            assert!(
                !v.snapshot_file(d).exists(),
                "{what}: {} of disk {} is left after the undo",
                v.snapshot_file(d).display(),
                d.target()
            );
        }
        assert_eq!(
            v.files(),
            before.1,
            "{what}: files changed by the failed create"
        );
        assert_eq!(
            v.f.definition(),
            before.2,
            "{what}: the domain definition changed"
        );
        assert_eq!(v.contents(), before.0, "{what}: a disk's content changed");
        let store = v.f.store();
        assert!(
            store.tree().is_empty(),
            "{what}: the failed create left snapshot metadata"
        );
        assert!(
            store.pending_intent().is_none(),
            "{what}: the failed create left its intent"
        );
        drop(store);

        // The same request succeeds once the fault is gone: nothing the
        // failed one left stands in its way.
        create_s1(&v.f.api(cli_drivers()), false)
            .await
            .unwrap_or_else(|e| panic!("{what}: s1 after the fault is gone: {e}"));
        assert_eq!(v.contents(), before.0, "{what}: taking s1 changed a disk");
    }
}
