//! The matrix against a fake copy driver on plain files, healthy and
//! broken in one way at a time: a failing or panicking cell fails alone,
//! refusals are unsupported only when real, and in-use declarations
//! without a harness fail.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::conformance::VOLUME_SIZE;
use crate::driver::{
    CreatedSnapshot, DeleteContext, Progress, RevertOutcome, SnapshotPlan, SnapshotRef,
    StorageSnapshot, VolumeDriver, VolumeFormat,
};

/// How the fake driver misbehaves.
#[derive(Debug, Default, Clone, Copy)]
struct Faults {
    /// Declares list and lists.
    list: bool,
    /// Does not declare list, but lists anyway.
    undeclared_list: bool,
    /// Reverts report success and change nothing.
    revert_does_nothing: bool,
    /// Deletes panic.
    delete_panics: bool,
    /// Refuses deletes of snapshots with children, and declares so.
    no_rebase: bool,
    /// Declares copies for volumes in use.
    in_use_copy: bool,
}

#[derive(Debug, Default)]
struct Fake {
    faults: Faults,
    /// Per volume: (name, file) of the snapshots it holds.
    held: Mutex<HashMap<PathBuf, Vec<(String, PathBuf)>>>,
}

fn unsupported(volume: &Volume, operation: &str) -> DriverError {
    DriverError::Unsupported {
        driver: "fake",
        operation: operation.to_string(),
        volume: volume.path.display().to_string(),
        reason: "the fake cannot".to_string(),
        hint: "use another".to_string(),
    }
}

#[async_trait]
impl VolumeDriver for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn capabilities(
        &self,
        volume: &Volume,
        state: VolumeState,
    ) -> Result<Capabilities, DriverError> {
        if !volume.path.exists() {
            return Err(DriverError::NotFound {
                what: volume.path.display().to_string(),
            });
        }
        if state == VolumeState::InUse {
            return Ok(Capabilities {
                copy: self.faults.in_use_copy,
                ..Capabilities::default()
            });
        }
        Ok(Capabilities {
            copy: true,
            revert: true,
            revert_keeps_newer: true,
            delete_rebase: !self.faults.no_rebase,
            list: self.faults.list,
            ..Capabilities::default()
        })
    }

    async fn create(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
        _progress: Option<&Progress>,
    ) -> Result<CreatedSnapshot, DriverError> {
        if plan.mode != SnapshotMode::Copy {
            return Err(unsupported(volume, "take that snapshot"));
        }
        let file = plan.file.clone().expect("a copy has a file");
        if file.exists() {
            return Err(DriverError::Exists {
                what: file.display().to_string(),
            });
        }
        fs::copy(&volume.path, &file).map_err(DriverError::io("copy", &file))?;
        self.held
            .lock()
            .expect("lock")
            .entry(volume.path.clone())
            .or_default()
            .push((plan.name.clone(), file.clone()));
        Ok(CreatedSnapshot {
            name: plan.name.clone(),
            mode: SnapshotMode::Copy,
            file: Some(file),
            format: Some(volume.format.clone()),
            checksum: None,
            size: None,
        })
    }

    async fn revert(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        _verify: bool,
        _progress: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError> {
        if !self.faults.revert_does_nothing {
            let file = snapshot.file.as_ref().expect("a copy has a file");
            fs::copy(file, &volume.path).map_err(DriverError::io("copy", file))?;
        }
        Ok(RevertOutcome::Done)
    }

    async fn delete(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        context: &DeleteContext,
        _progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        assert!(!self.faults.delete_panics, "the fake's delete blew up");
        if self.faults.no_rebase && !context.children.is_empty() {
            return Err(unsupported(volume, "delete a snapshot with children"));
        }
        if let Some(file) = &snapshot.file {
            let _ = fs::remove_file(file);
        }
        if let Some(held) = self.held.lock().expect("lock").get_mut(&volume.path) {
            held.retain(|(name, _)| *name != snapshot.name);
        }
        Ok(())
    }

    async fn list(&self, volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
        if !self.faults.list && !self.faults.undeclared_list {
            return Err(unsupported(volume, "list snapshots"));
        }
        let held = self.held.lock().expect("lock");
        Ok(held
            .get(&volume.path)
            .into_iter()
            .flatten()
            .map(|(name, file)| StorageSnapshot {
                name: name.clone(),
                mode: SnapshotMode::Copy,
                id: None,
                file: Some(file.clone()),
                created: None,
                vm_state_size: 0,
                invalid: None,
            })
            .collect())
    }

    async fn undo(&self, volume: &Volume, created: &CreatedSnapshot) -> Result<(), DriverError> {
        let file = created.file.as_ref().expect("a copy has a file");
        let _ = fs::remove_file(file);
        let _ = volume;
        Ok(())
    }
}

struct FakeHarness {
    driver: Fake,
    mode: SnapshotMode,
}

impl FakeHarness {
    fn new(faults: Faults) -> Self {
        Self {
            driver: Fake {
                faults,
                ..Fake::default()
            },
            mode: SnapshotMode::Copy,
        }
    }
}

impl Harness for FakeHarness {
    fn driver(&self) -> &dyn VolumeDriver {
        &self.driver
    }

    fn mode(&self) -> SnapshotMode {
        self.mode
    }

    fn new_volume(&self, dir: &Path, name: &str) -> Volume {
        let path = dir.join(format!("{name}.img"));
        File::create(&path)
            .and_then(|f| f.set_len(VOLUME_SIZE))
            .expect("volume");
        Volume::new(path, VolumeFormat::Raw)
    }

    fn write(&self, volume: &Volume, offset: u64, len: u64, pattern: u8) {
        let data = vec![pattern; usize::try_from(len).expect("small")];
        OpenOptions::new()
            .write(true)
            .open(&volume.path)
            .and_then(|f| f.write_all_at(&data, offset))
            .expect("write");
    }

    fn content(&self, volume: &Volume) -> Vec<u8> {
        fs::read(&volume.path).expect("read")
    }
}

async fn row_of(faults: Faults) -> Row {
    let h = FakeHarness::new(faults);
    let dir = tempfile::tempdir().expect("tempdir");
    run_row(&h, dir.path(), "fake").await
}

/// The outcome kinds of the offline cells, in [`Op::ALL`] order.
fn offline_kinds(row: &Row) -> Vec<&'static str> {
    Op::ALL
        .iter()
        .map(|op| {
            row.cell(State::Offline, op.as_str())
                .expect("every offline cell")
                .outcome
                .kind()
        })
        .collect()
}

fn message(row: &Row, state: State, op: Op) -> String {
    match &row.cell(state, op.as_str()).expect("cell").outcome {
        Outcome::Pass => "pass".to_string(),
        Outcome::Fail { message } => message.clone(),
        Outcome::Unsupported { reason } => reason.clone(),
    }
}

#[tokio::test]
async fn a_healthy_driver_passes_offline_and_is_unsupported_in_use() {
    let row = row_of(Faults {
        list: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(row.cells.len(), 12, "{}", row.to_text());
    assert_eq!(offline_kinds(&row), ["pass"; 6], "{}", row.to_text());
    for op in Op::ALL {
        let cell = row.cell(State::InUse, op.as_str()).expect("in-use cell");
        assert_eq!(cell.outcome.kind(), "unsupported", "{}", row.to_text());
    }
    assert!(
        message(&row, State::InUse, Op::Create).contains("in-use capabilities are empty"),
        "{}",
        row.to_text()
    );
    row.assert_passed();
    assert_eq!((row.driver.as_str(), row.mode.as_str()), ("fake", "copy"));
}

#[tokio::test]
async fn a_refused_list_is_unsupported_with_the_drivers_reason() {
    let row = row_of(Faults::default()).await;
    assert_eq!(
        offline_kinds(&row),
        ["pass", "unsupported", "pass", "pass", "pass", "pass"],
        "{}",
        row.to_text()
    );
    let reason = message(&row, State::Offline, Op::List);
    assert!(
        reason == "fake cannot list snapshots: the fake cannot; use another",
        "{reason}"
    );
}

#[tokio::test]
async fn an_operation_done_without_being_declared_fails() {
    let row = row_of(Faults {
        undeclared_list: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(
        offline_kinds(&row),
        ["pass", "fail", "pass", "pass", "pass", "pass"],
        "{}",
        row.to_text()
    );
    let why = message(&row, State::Offline, Op::List);
    assert!(why.contains("do not declare list"), "{why}");
}

#[tokio::test]
async fn a_revert_that_changes_nothing_fails_revert_and_what_reverts_to_check() {
    let row = row_of(Faults {
        list: true,
        revert_does_nothing: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(
        offline_kinds(&row),
        ["pass", "pass", "fail", "fail", "fail", "fail"],
        "{}",
        row.to_text()
    );
    let why = message(&row, State::Offline, Op::Revert);
    assert!(why.contains("does not hold its content"), "{why}");
    let err = catch_unwind(|| row.assert_passed()).expect_err("failures panic");
    let text = panic_message(&*err);
    assert!(
        text.contains("4 cell(s) failed") && text.contains("offline revert"),
        "{text}"
    );
}

#[tokio::test]
async fn a_panicking_delete_fails_its_cells_and_hides_no_other() {
    let row = row_of(Faults {
        list: true,
        delete_panics: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(
        offline_kinds(&row),
        ["pass", "fail", "pass", "fail", "fail", "fail"],
        "{}",
        row.to_text()
    );
    assert!(
        message(&row, State::Offline, Op::DeleteRebase).contains("the fake's delete blew up"),
        "{}",
        row.to_text()
    );
}

#[tokio::test]
async fn a_refused_rebase_is_unsupported_once_checked_to_change_nothing() {
    let row = row_of(Faults {
        list: true,
        no_rebase: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(
        offline_kinds(&row),
        ["pass", "pass", "pass", "unsupported", "pass", "pass"],
        "{}",
        row.to_text()
    );
    let reason = message(&row, State::Offline, Op::DeleteRebase);
    assert!(
        reason.contains("delete a snapshot with children"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_undeclared_mode_makes_every_offline_cell_unsupported_after_a_real_refusal() {
    let mut h = FakeHarness::new(Faults::default());
    h.mode = SnapshotMode::Internal;
    let dir = tempfile::tempdir().expect("tempdir");
    let row = run_row(&h, dir.path(), "fake").await;
    assert_eq!(offline_kinds(&row), ["unsupported"; 6], "{}", row.to_text());
    assert!(
        message(&row, State::Offline, Op::Revert).starts_with("no snapshot to revert: fake cannot"),
        "{}",
        row.to_text()
    );
}

#[tokio::test]
async fn in_use_capabilities_without_an_in_use_harness_fail() {
    let row = row_of(Faults {
        list: true,
        in_use_copy: true,
        ..Faults::default()
    })
    .await;
    let kinds: Vec<&str> = Op::ALL
        .iter()
        .map(|op| {
            row.cell(State::InUse, op.as_str())
                .expect("cell")
                .outcome
                .kind()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "fail",
            "unsupported",
            "unsupported",
            "unsupported",
            "fail",
            "fail"
        ],
        "{}",
        row.to_text()
    );
    assert!(
        message(&row, State::InUse, Op::Create).contains("no running-guest harness"),
        "{}",
        row.to_text()
    );
}

#[test]
fn rows_round_trip_through_json_and_are_recorded_by_id() {
    let mut row = Row::new("file-raw", "file", "copy");
    row.cells.push(Cell {
        state: State::Offline,
        op: "create".into(),
        outcome: Outcome::Pass,
    });
    row.cells.push(Cell {
        state: State::Offline,
        op: "list".into(),
        outcome: Outcome::unsupported("file cannot \"list\"\nat all"),
    });
    row.cells.push(Cell {
        state: State::InUse,
        op: "revert".into(),
        outcome: Outcome::fail("bytes differ"),
    });
    let text = row.to_json();
    assert!(!text.contains('\n'), "one line: {text}");
    assert_eq!(Row::from_json(&text), Ok(row.clone()));
    let err = Row::from_json("{\"row\":\"x\"}").expect_err("not a row");
    assert!(err.contains("driver"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = record_in(Some(&dir.path().join("m")), &row).expect("recorded");
    assert_eq!(file, dir.path().join("m/file-raw.json"));
    let back = fs::read_to_string(&file).expect("read");
    assert_eq!(Row::from_json(back.trim()), Ok(row.clone()));
    assert_eq!(record_in(None, &row), None);
    row.row = "Bad Name".into();
    let _ = catch_unwind(|| record_in(None, &row)).expect_err("a bad row id panics");
}
