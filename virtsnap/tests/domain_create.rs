//! Domain snapshots of a shut-off domain end to end, through
//! `snapshot_core::domain_api::DomainApi` with the real drivers on real
//! images: a domain with a qcow2 disk snapshotted internally, a qcow2
//! disk snapshotted externally (a new overlay becomes its source) and a
//! raw disk whose internal snapshot is a full copy. Every disk's content
//! is checked by checksum; a fault injected into the real driver at each
//! disk step, and a SIGKILL of a real child process at every step, leave
//! nothing behind after the undo or the recovery on next open.

mod domain_support;

use std::path::Path;

use domain_support::{Fault, Faulty, Fixture, real_drivers};
use driver_qemu::qcow2;
use snapshot_conf::SnapshotMode as XmlMode;
use snapshot_core::conformance::backends;
use snapshot_core::domain_api::{Created, DomainApi, DomainApiError};
use snapshot_core::exec::{ExecError, StepEvent, Undone};
use snapshot_core::plan::CreateFlags;
use snapshot_core::store::{Layout, SnapshotRecord};

const S1: &str = "<domainsnapshot><name>s1</name></domainsnapshot>";

#[tokio::test]
async fn three_disks_each_by_its_own_mechanism() {
    if !backends::qemu_tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = Fixture::new(tmp.path());
    let api = f.api(real_drivers());
    let before = f.contents();

    // The dry run says what will happen and changes nothing.
    let Created::Planned(plan) = api
        .snapshot_create_xml("vm", Some(S1), CreateFlags::empty(), true, None)
        .await
        .expect("planned")
    else {
        panic!("a dry run only plans");
    };
    let text = plan.to_string();
    assert!(text.contains("vda: internal snapshot in"), "{text}");
    assert!(text.contains("vdb: new qcow2 overlay"), "{text}");
    assert!(text.contains("vdc: copy of"), "{text}");
    assert_eq!(f.files(), ["vda.qcow2", "vdb.qcow2", "vdc.raw"]);
    assert!(f.store().tree().is_empty());

    let Created::Taken { def, plan } = api
        .snapshot_create_xml("vm", Some(S1), CreateFlags::empty(), false, None)
        .await
        .expect("taken")
    else {
        panic!("taken");
    };
    let def = def.expect("metadata written");
    let modes: Vec<_> = def
        .disks
        .iter()
        .map(|d| (d.name.as_str(), d.mode))
        .collect();
    assert_eq!(
        modes,
        [
            ("vda", Some(XmlMode::Internal)),
            ("vdb", Some(XmlMode::External)),
            ("vdc", Some(XmlMode::Internal)),
        ],
        "{plan}"
    );
    assert_eq!(f.internal("vda.qcow2"), ["s1"]);
    let vdb_s1 = f.path("vdb.s1");
    assert_eq!(
        qcow2::read_header(&vdb_s1)
            .expect("overlay")
            .backing_file
            .as_deref(),
        f.path("vdb.qcow2").to_str()
    );
    assert_eq!(
        f.sources(),
        [
            f.path("vda.qcow2").display().to_string(),
            vdb_s1.display().to_string(),
            f.path("vdc.raw").display().to_string(),
        ]
    );
    assert_eq!(
        std::fs::read(f.path("vdc.raw.s1")).expect("copy"),
        std::fs::read(f.path("vdc.raw")).expect("raw")
    );
    assert_eq!(f.contents(), before, "a snapshot changes no disk's content");
    {
        // A reader's lock: dropped before the next write.
        let store = f.store();
        assert_eq!(store.tree().current(), Some("s1"));
        let Some(SnapshotRecord::Domain(stored)) = store.get("s1") else {
            panic!("s1 stored");
        };
        assert_eq!(
            stored.state.map(|s| s.to_string()).as_deref(),
            Some("shutoff")
        );
    }

    // A second snapshot after the guest wrote: s2 is s1's child; the
    // frozen images keep s1's data.
    backends::write(Path::new(&f.sources()[0]), "qcow2", 0, 65_536, 0xa2);
    backends::write(Path::new(&f.sources()[1]), "qcow2", 0, 65_536, 0xb2);
    backends::write(Path::new(&f.sources()[2]), "raw", 0, 65_536, 0xc2);
    let after_writes = f.contents();
    api.snapshot_create_xml(
        "vm",
        Some("<domainsnapshot><name>s2</name></domainsnapshot>"),
        CreateFlags::empty(),
        false,
        None,
    )
    .await
    .expect("s2");
    assert_eq!(f.contents(), after_writes);
    assert_eq!(f.store().tree().parent("s2").expect("s2"), Some("s1"));
    assert_eq!(f.internal("vda.qcow2"), ["s1", "s2"]);
    assert_eq!(
        qcow2::read_header(&f.path("vdb.s2"))
            .expect("overlay")
            .backing_file
            .as_deref(),
        vdb_s1.to_str()
    );
    assert_eq!(
        driver_file::copy::sha256_bytes(&backends::content(&f.path("vdb.s1"), "qcow2")),
        after_writes[1],
        "the frozen s1 overlay holds what vdb had at s2"
    );
    assert_eq!(
        driver_file::copy::sha256_bytes(&std::fs::read(f.path("vdc.raw.s1")).expect("copy")),
        before[2],
        "the s1 copy keeps vdc as it was at s1"
    );

    // A taken name and an existing target are refused, nothing changed.
    let files = f.files();
    let e = api
        .snapshot_create_xml("vm", Some(S1), CreateFlags::empty(), false, None)
        .await
        .expect_err("taken name");
    assert!(matches!(e, DomainApiError::NameTaken { .. }), "{e}");
    std::fs::write(f.path("vdb.s3"), b"mine").expect("a file of the user");
    let e = api
        .snapshot_create_xml(
            "vm",
            Some("<domainsnapshot><name>s3</name></domainsnapshot>"),
            CreateFlags::empty(),
            false,
            None,
        )
        .await
        .expect_err("target exists");
    assert!(
        matches!(e, DomainApiError::Exec(ExecError::Conflict(_)))
            && e.to_string().contains("vdb.s3"),
        "{e}"
    );
    assert_eq!(std::fs::read(f.path("vdb.s3")).expect("kept"), b"mine");
    let mut with_user_file = files.clone();
    with_user_file.push("vdb.s3".into());
    with_user_file.sort();
    assert_eq!(f.files(), with_user_file);
    assert_eq!(f.internal("vda.qcow2"), ["s1", "s2"]);
}

#[tokio::test]
async fn a_failing_disk_step_undoes_every_step_before_it() {
    if !backends::qemu_tools_present() {
        return;
    }
    for (image, step) in [("vda.qcow2", 1), ("vdb.qcow2", 2), ("vdc.raw", 3)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = Fixture::new(tmp.path());
        let before = (f.contents(), f.sources(), f.files());
        let drivers = Faulty::drivers(|| Fault::CreateOn(image.into()));
        let e = f
            .api(drivers)
            .snapshot_create_xml("vm", Some(S1), CreateFlags::empty(), false, None)
            .await
            .expect_err("injected failure");
        let DomainApiError::Exec(ExecError::Step { index, undone, .. }) = &e else {
            panic!("{image}: expected a step failure, got {e}");
        };
        assert_eq!((*index, undone), (step, &Undone::All), "{image}: {e}");
        assert!(e.to_string().contains("no space left"), "{e}");
        assert_eq!((f.contents(), f.sources(), f.files()), before, "{image}");
        assert!(f.internal("vda.qcow2").is_empty(), "{image}");
        let store = f.store();
        assert!(
            store.tree().is_empty() && store.pending_intent().is_none(),
            "{image}"
        );
    }
}

/// The child side of the crash test: takes s1 and SIGKILLs itself at the
/// step and event named by `VIRTSNAP_CRASH_AT` (`INDEX:begin|done`).
#[tokio::test]
#[ignore = "the child process of a_killed_create_is_recovered_at_every_step"]
async fn crash_child() {
    let (Ok(at), Ok(dir)) = (
        std::env::var("VIRTSNAP_CRASH_AT"),
        std::env::var("VIRTSNAP_CRASH_DIR"),
    ) else {
        return; // Run only as the child of `a_killed_create_is_recovered_at_every_step`.
    };
    let (index, event) = at.split_once(':').expect("INDEX:EVENT");
    let index: usize = index.parse().expect("index");
    let event = if event == "begin" {
        StepEvent::Begin
    } else {
        StepEvent::Done
    };
    let layout = Layout::new(Path::new(&dir).join("state"));
    let api = DomainApi::new(layout, real_drivers());
    let observer = domain_support::kill_at(index, event);
    let _ = api
        .snapshot_create_xml("vm", Some(S1), CreateFlags::empty(), false, Some(&observer))
        .await;
    panic!("the child was to be killed at {at}");
}

#[tokio::test]
async fn a_killed_create_is_recovered_at_every_step() {
    if !backends::qemu_tools_present() {
        return;
    }
    // Steps: vda internal, vdb overlay, vdc copy, domain definition,
    // metadata, current.
    for index in 0..6 {
        for event in ["begin", "done"] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let f = Fixture::new(tmp.path());
            let before = (f.contents(), f.sources(), f.files());
            domain_support::run_killed_child(
                "crash_child",
                &[
                    ("VIRTSNAP_CRASH_AT", format!("{index}:{event}")),
                    ("VIRTSNAP_CRASH_DIR", tmp.path().display().to_string()),
                ],
                &format!("{index}:{event}"),
            );
            assert!(
                f.store().pending_intent().is_some(),
                "{index}:{event}: the interrupted create left no record"
            );
            let (_, note) = f
                .api(real_drivers())
                .open_for_write("vm")
                .await
                .unwrap_or_else(|e| panic!("{index}:{event}: recovery: {e}"));
            let note = note.expect("recovery note");
            let store = f.store();
            assert!(store.pending_intent().is_none());
            // Metadata written (done of step 4 and anything after): the
            // snapshot is complete and stays; before: rolled back.
            let kept = index >= 5 || (index == 4 && event == "done");
            if kept {
                assert!(note.contains("complete"), "{note}");
                assert_eq!(store.tree().current(), Some("s1"));
                assert_eq!(f.internal("vda.qcow2"), ["s1"]);
                assert!(f.path("vdb.s1").exists() && f.path("vdc.raw.s1").exists());
                assert_eq!(f.sources()[1], f.path("vdb.s1").display().to_string());
                assert_eq!(f.contents(), before.0);
            } else {
                assert!(note.contains("rolled back"), "{note}");
                assert!(store.tree().is_empty(), "{index}:{event}");
                assert!(f.internal("vda.qcow2").is_empty(), "{index}:{event}");
                assert_eq!(
                    (f.contents(), f.sources(), f.files()),
                    before,
                    "{index}:{event}"
                );
            }
        }
    }
}
