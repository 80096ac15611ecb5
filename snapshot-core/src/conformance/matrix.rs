//! The integration matrix (`cargo xtask matrix`): for one driver and mode
//! (a [`Harness`], one row of the matrix), every operation in every volume
//! state, each a real check against the storage that passes, fails with
//! what went wrong, or is unsupported by design with the driver's reason.
//!
//! A row's test runs [`run_row`] (or builds its cells with [`cell`], as the
//! running-guest rows do), hands the row to [`record`], which writes it as
//! JSON to `$VIRTSNAP_MATRIX_DIR/ROW.json` when that is set, and fails
//! when a cell failed ([`Row::assert_passed`]); `cargo xtask matrix`
//! gathers the rows into `target/matrix.json` and a table.
//!
//! Each cell runs on its own volume, and a panic in it (the suite's checks
//! panic) becomes that cell's failure, so one failure hides no other.
//!
//! A cell is unsupported only when the driver says so: its capabilities
//! lack the operation *and* calling it is refused with
//! [`DriverError::Unsupported`], which changes nothing; the reason is the
//! refusal's message. A driver that declares an operation it then refuses,
//! or that does what it does not declare, fails the cell. The one
//! exception is the listing of snapshots kept in files of their own
//! (external, copy): see [`Op::List`].
//!
//! Volumes a running guest writes to ([`State::InUse`]): no built-in
//! driver takes those (the hypervisor does, over QMP: the `qemu-qmp-*`
//! rows, tested through a running QEMU). A driver whose
//! `capabilities(InUse)` is empty gets unsupported in-use cells; one that
//! declares anything there fails them until a harness for running guests
//! checks what it declares — never a silent pass.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde_json::{Value, json};

use super::{Harness, Session, file_for};
use crate::driver::{Capabilities, DriverError, SnapshotMode, Volume, VolumeState};

/// Where [`record`] writes rows, when set.
pub const DIR_ENV: &str = "VIRTSNAP_MATRIX_DIR";

/// The volume state of a cell (the matrix's column groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No writer has the volume open.
    Offline,
    /// A running guest writes to it.
    InUse,
}

impl State {
    /// Both, in table order.
    pub const ALL: [Self; 2] = [Self::Offline, Self::InUse];

    /// The name in JSON and tables.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::InUse => "in-use",
        }
    }

    /// The state named `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation of the matrix (its columns within a state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Two snapshots are taken; the volume's content is unchanged and each
    /// snapshot is there (its file, or the storage's list for snapshots
    /// without one).
    Create,
    /// The storage lists what was created, with its mode and file, and no
    /// longer lists what was deleted. For snapshots kept in files of their
    /// own, a driver whose list reports none of them (it lists what the
    /// storage names, like a qcow2's internal snapshots; the files record
    /// no snapshot name) is reported unsupported with that finding.
    List,
    /// Reverts to the older and the newer of two snapshots after writes:
    /// the volume holds each one's content byte for byte, and (when the
    /// driver declares it) a revert keeps the newer snapshots.
    Revert,
    /// Deletes a snapshot with a child (the middle of a chain, then the
    /// current root): the children still revert byte for byte, and the
    /// volume keeps its content ([`crate::ChildPolicy::Rebase`]).
    DeleteRebase,
    /// Deletes a snapshot and its descendants, leaves first, as the volume
    /// API does for [`crate::ChildPolicy::Children`]: nothing of them is
    /// left in the list or beside the volume, the volume keeps its
    /// content, and the rest of the tree still reverts.
    DeleteChildren,
    /// Deletes a snapshot's descendants, leaves first
    /// ([`crate::ChildPolicy::ChildrenOnly`]): the snapshot itself stays
    /// and still reverts.
    DeleteChildrenOnly,
}

impl Op {
    /// Every operation, in table order.
    pub const ALL: [Self; 6] = [
        Self::Create,
        Self::List,
        Self::Revert,
        Self::DeleteRebase,
        Self::DeleteChildren,
        Self::DeleteChildrenOnly,
    ];

    /// The name in JSON and tables.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::List => "list",
            Self::Revert => "revert",
            Self::DeleteRebase => "delete-rebase",
            Self::DeleteChildren => "delete-children",
            Self::DeleteChildrenOnly => "delete-children-only",
        }
    }

    /// The operation named `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// Whether `caps` declares it (deleting a subtree leaves first needs
    /// only plain deletes, which every snapshot mode implies).
    #[must_use]
    pub fn declared(self, caps: &Capabilities, mode: SnapshotMode) -> bool {
        match self {
            Self::Create | Self::DeleteChildren | Self::DeleteChildrenOnly => caps.supports(mode),
            Self::List => caps.list,
            Self::Revert => caps.revert,
            Self::DeleteRebase => caps.delete_rebase,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a cell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Pass,
    /// A check failed (or the check panicked): what went wrong.
    Fail {
        /// The failure, as the check reported it.
        message: String,
    },
    /// Unsupported by design.
    Unsupported {
        /// Why, in the driver's words where it gave them.
        reason: String,
    },
}

impl Outcome {
    fn fail(message: impl Into<String>) -> Self {
        Self::Fail {
            message: message.into(),
        }
    }

    fn unsupported(reason: impl Into<String>) -> Self {
        Self::Unsupported {
            reason: reason.into(),
        }
    }

    /// `pass`, `fail` or `unsupported`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail { .. } => "fail",
            Self::Unsupported { .. } => "unsupported",
        }
    }
}

/// One cell: an operation in a state, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The volume state.
    pub state: State,
    /// The operation (one of [`Op::ALL`]'s names, or a row's own).
    pub op: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// One row: a driver and mode, through every cell it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Its id (`file-raw`, `qemu-internal`, `lvm-thin`): lowercase
    /// letters, digits and dashes; the JSON file's name.
    pub row: String,
    /// The driver (`file`, `qemu`, a plugin's name).
    pub driver: String,
    /// The snapshot mode under test.
    pub mode: String,
    /// Its cells, in table order.
    pub cells: Vec<Cell>,
}

impl Row {
    /// An empty row.
    #[must_use]
    pub fn new(row: &str, driver: &str, mode: &str) -> Self {
        Self {
            row: row.to_string(),
            driver: driver.to_string(),
            mode: mode.to_string(),
            cells: Vec::new(),
        }
    }

    /// The cell of `op` in `state`, if the row has it.
    #[must_use]
    pub fn cell(&self, state: State, op: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.state == state && c.op == op)
    }

    /// The cells that failed.
    #[must_use]
    pub fn failures(&self) -> Vec<&Cell> {
        self.cells
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Fail { .. }))
            .collect()
    }

    /// Panics naming every failed cell and why it failed.
    ///
    /// # Panics
    /// A cell failed.
    pub fn assert_passed(&self) {
        let failed: Vec<String> = self
            .failures()
            .iter()
            .map(|c| {
                let Outcome::Fail { message } = &c.outcome else {
                    unreachable!("failures() holds failures")
                };
                format!("  {} {}: {message}", c.state, c.op)
            })
            .collect();
        assert!(
            failed.is_empty(),
            "matrix row {}: {} cell(s) failed:\n{}",
            self.row,
            failed.len(),
            failed.join("\n")
        );
    }

    /// The row as one line of JSON:
    /// `{"row":..,"driver":..,"mode":..,"cells":[{"state":..,"op":..,
    /// "outcome":"pass"|"fail"|"unsupported","message"|"reason":..}]}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        let cells: Vec<Value> = self
            .cells
            .iter()
            .map(|c| {
                let mut cell = json!({
                    "state": c.state.as_str(),
                    "op": c.op,
                    "outcome": c.outcome.kind(),
                });
                match &c.outcome {
                    Outcome::Pass => {}
                    Outcome::Fail { message } => cell["message"] = json!(message),
                    Outcome::Unsupported { reason } => cell["reason"] = json!(reason),
                }
                cell
            })
            .collect();
        json!({
            "row": self.row,
            "driver": self.driver,
            "mode": self.mode,
            "cells": cells,
        })
        .to_string()
    }

    /// A row from [`Row::to_json`]'s form.
    ///
    /// # Errors
    /// Not JSON, or not a row: what is wrong.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let text_of = |v: &Value, key: &str| -> Result<String, String> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("no string \"{key}\" in {v}"))
        };
        let mut row = Self::new(
            &text_of(&v, "row")?,
            &text_of(&v, "driver")?,
            &text_of(&v, "mode")?,
        );
        let cells = v
            .get("cells")
            .and_then(Value::as_array)
            .ok_or("no \"cells\" array")?;
        for c in cells {
            let state = text_of(c, "state")?;
            let state =
                State::from_name(&state).ok_or_else(|| format!("unknown state {state:?}"))?;
            let outcome = match text_of(c, "outcome")?.as_str() {
                "pass" => Outcome::Pass,
                "fail" => Outcome::fail(text_of(c, "message")?),
                "unsupported" => Outcome::unsupported(text_of(c, "reason")?),
                other => return Err(format!("unknown outcome {other:?}")),
            };
            row.cells.push(Cell {
                state,
                op: text_of(c, "op")?,
                outcome,
            });
        }
        Ok(row)
    }

    /// The row as text, one cell a line (for test logs).
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out = format!("matrix row {} ({} {}):\n", self.row, self.driver, self.mode);
        for c in &self.cells {
            let detail = match &c.outcome {
                Outcome::Pass => String::new(),
                Outcome::Fail { message } => format!(": {message}"),
                Outcome::Unsupported { reason } => format!(": {reason}"),
            };
            out.push_str(&format!(
                "  {:<8} {:<21} {}{detail}\n",
                c.state.as_str(),
                c.op,
                c.outcome.kind()
            ));
        }
        out
    }
}

/// Prints `row` on stderr and, when `$VIRTSNAP_MATRIX_DIR` is set, writes
/// it to `DIR/ROW.json` ([`record_in`]). Returns the file.
///
/// # Panics
/// See [`record_in`].
pub fn record(row: &Row) -> Option<PathBuf> {
    let dir = std::env::var_os(DIR_ENV).map(PathBuf::from);
    record_in(dir.as_deref(), row)
}

/// Prints `row` on stderr and, with a `dir`, writes it to `DIR/ROW.json`
/// (replacing it atomically). Returns the file.
///
/// # Panics
/// The row's id is not lowercase letters, digits and dashes, or the file
/// cannot be written.
pub fn record_in(dir: Option<&Path>, row: &Row) -> Option<PathBuf> {
    assert!(
        !row.row.is_empty()
            && row
                .row
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "a matrix row id is lowercase letters, digits and dashes: {:?}",
        row.row
    );
    eprint!("{}", row.to_text());
    let dir = dir?;
    std::fs::create_dir_all(dir)
        .unwrap_or_else(|e| panic!("creating {} ({DIR_ENV}): {e}", dir.display()));
    let file = dir.join(format!("{}.json", row.row));
    let temp = dir.join(format!(".{}.json.tmp", row.row));
    std::fs::write(&temp, row.to_json() + "\n")
        .and_then(|()| std::fs::rename(&temp, &file))
        .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    Some(file)
}

/// Runs the row `row` on `h` in `dir` ([`run_row`]), records it
/// ([`record`]) and fails when a cell failed: a driver's `matrix` test.
///
/// # Panics
/// A cell failed, or the row cannot be recorded.
pub async fn test(h: &dyn Harness, dir: &Path, row: &str) {
    let row = run_row(h, dir, row).await;
    record(&row);
    row.assert_passed();
}

/// A future with a panic in it caught (it borrows the harness, so it
/// cannot be spawned as a task of its own).
struct CatchUnwind<'a, T>(Pin<Box<dyn Future<Output = T> + Send + 'a>>);

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "the check panicked with a non-text payload".to_string())
}

/// Runs one cell's check: its outcome, or [`Outcome::Fail`] with the
/// panic's message when it panics (checks fail by panicking).
pub async fn cell(state: State, op: &str, check: impl Future<Output = Outcome> + Send) -> Cell {
    let outcome = CatchUnwind(Box::pin(check))
        .await
        .unwrap_or_else(Outcome::fail);
    Cell {
        state,
        op: op.to_string(),
        outcome,
    }
}

/// The row `row` for the harness's driver and mode: every [`Op`] offline
/// and in use, each offline cell on its own volume in `dir`.
pub async fn run_row(h: &dyn Harness, dir: &Path, row: &str) -> Row {
    let mut out = Row::new(row, h.driver().kind(), h.mode().as_str());
    for op in Op::ALL {
        out.cells
            .push(cell(State::Offline, op.as_str(), offline(h, dir, op)).await);
    }
    // One look at the in-use capabilities decides every in-use cell.
    let in_use = CatchUnwind(Box::pin(async {
        let volume = h.new_volume(dir, "mx-in-use");
        h.driver()
            .capabilities(&volume, VolumeState::InUse)
            .await
            .map_err(|e| format!("capabilities(in-use) failed: {e}"))
    }))
    .await
    .and_then(|caps| caps);
    for op in Op::ALL {
        let outcome = match &in_use {
            Ok(caps) => in_use_outcome(h, op, caps),
            Err(message) => Outcome::fail(message.clone()),
        };
        out.cells.push(Cell {
            state: State::InUse,
            op: op.as_str().to_string(),
            outcome,
        });
    }
    out
}

/// An in-use cell: unsupported when the driver declares nothing for a
/// volume a running guest writes to, failed when it declares what no
/// harness here checks.
fn in_use_outcome(h: &dyn Harness, op: Op, caps: &Capabilities) -> Outcome {
    let kind = h.driver().kind();
    if op.declared(caps, h.mode()) {
        return Outcome::fail(format!(
            "{kind} declares {op} for a volume a running guest writes to ({caps:?}), but this \
             matrix row has no running-guest harness to check it: add one"
        ));
    }
    if caps.modes().is_empty() {
        Outcome::unsupported(
            "the driver declares no snapshot mode for a volume a running guest writes to \
             (its in-use capabilities are empty): the hypervisor snapshots those, over QMP \
             (rows qemu-qmp-*)",
        )
    } else {
        Outcome::unsupported(format!(
            "{kind} declares no {op} for a volume a running guest writes to ({caps:?})"
        ))
    }
}

/// The offline capabilities for `volume`.
async fn capabilities(h: &dyn Harness, volume: &Volume) -> Capabilities {
    h.driver()
        .capabilities(volume, VolumeState::Offline)
        .await
        .unwrap_or_else(|e| panic!("capabilities(offline) of {}: {e}", volume.path.display()))
}

/// One offline cell: [`Outcome::Pass`] or a refusal checked to be real
/// ([`Outcome::Unsupported`]); panics on a failed check.
async fn offline(h: &dyn Harness, dir: &Path, op: Op) -> Outcome {
    let mut s = Session::new(h, dir, &format!("mx-{op}"));
    let caps = capabilities(h, &s.volume).await;
    if !caps.supports(h.mode()) {
        // No snapshot can be made: the create cell checks the refusal.
        let reason = refused_create(&mut s).await;
        return Outcome::unsupported(if op == Op::Create {
            reason
        } else {
            format!("no snapshot to {op}: {reason}")
        });
    }
    if !op.declared(&caps, h.mode()) {
        return Outcome::unsupported(refused(&mut s, op, &caps).await);
    }
    match op {
        Op::Create => create(&mut s, &caps).await,
        Op::List => return list(&mut s).await,
        Op::Revert => revert(&mut s, &caps).await,
        Op::DeleteRebase => delete_rebase(&mut s, &caps).await,
        Op::DeleteChildren => delete_subtree(&mut s, &caps, true).await,
        Op::DeleteChildrenOnly => delete_subtree(&mut s, &caps, false).await,
    }
    Outcome::Pass
}

/// What an undeclared operation answers: its refusal's message, after
/// checking it is [`DriverError::Unsupported`] and changed nothing.
async fn refused(s: &mut Session<'_>, op: Op, caps: &Capabilities) -> String {
    let driver = s.h.driver();
    let undeclared = |what: &str| format!("capabilities do not declare {op}, {what}");
    match op {
        Op::Create | Op::DeleteChildren | Op::DeleteChildrenOnly => {
            unreachable!("declared with the mode")
        }
        Op::List => match driver.list(&s.volume).await {
            Err(e @ DriverError::Unsupported { .. }) => reason_of(&e),
            Err(e) => panic!("{}", undeclared(&format!("and list() failed with: {e}"))),
            Ok(listed) => panic!("{}", undeclared(&format!("yet list() answered {listed:?}"))),
        },
        Op::Revert => {
            s.write(0, 0x61);
            s.create("refused", false).await;
            s.write(0, 0x62);
            let before = s.content();
            let result = driver
                .revert(&s.volume, &s.refs["refused"], false, None)
                .await;
            assert!(
                s.content() == before,
                "{}",
                undeclared("and the refused revert changed the volume")
            );
            match result {
                Err(e @ DriverError::Unsupported { .. }) => reason_of(&e),
                Err(e) => panic!("{}", undeclared(&format!("and revert failed with: {e}"))),
                Ok(outcome) => panic!(
                    "{}",
                    undeclared(&format!("yet revert answered {outcome:?}"))
                ),
            }
        }
        Op::DeleteRebase => {
            s.write(0, 0x63);
            s.create("parent", false).await;
            s.write(0, 0x64);
            s.create("child", false).await;
            s.write(0, 0x65);
            let before = s.content();
            let target = s.refs["parent"].clone();
            let context = s.context("parent");
            let result = driver.delete(&s.volume, &target, &context, None).await;
            assert!(
                s.content() == before,
                "{}",
                undeclared("and the refused delete changed the volume")
            );
            if let Some(file) = &target.file {
                assert!(
                    file.exists(),
                    "{}",
                    undeclared(&format!(
                        "and the refused delete removed {}",
                        file.display()
                    ))
                );
            }
            let reason = match result {
                Err(e @ DriverError::Unsupported { .. }) => reason_of(&e),
                Err(e) => panic!("{}", undeclared(&format!("and delete failed with: {e}"))),
                Ok(()) => panic!(
                    "{}",
                    undeclared("yet deleting a snapshot with a child succeeded")
                ),
            };
            if caps.revert {
                s.verify_all().await;
            }
            reason
        }
    }
}

/// A refusal's message without the volume's path (a scratch path would
/// make every run's matrix differ).
fn reason_of(e: &DriverError) -> String {
    match e {
        DriverError::Unsupported {
            driver,
            operation,
            reason,
            hint,
            ..
        } => format!("{driver} cannot {operation}: {reason}; {hint}"),
        other => other.to_string(),
    }
}

/// A create of an undeclared mode: refused with
/// [`DriverError::Unsupported`], nothing made, the volume unchanged.
async fn refused_create(s: &mut Session<'_>) -> String {
    s.write(0, 0x66);
    let before = s.content();
    let plan = s.plan("refused", false);
    let mode = s.h.mode();
    let result = s.h.driver().create(&s.volume, &plan, None).await;
    assert!(
        s.content() == before,
        "capabilities do not declare {mode} snapshots, and the refused create changed the volume"
    );
    if let Some(file) = &plan.file {
        assert!(
            !file.exists(),
            "the refused create left {} behind",
            file.display()
        );
    }
    match result {
        Err(e @ DriverError::Unsupported { .. }) => reason_of(&e),
        Err(e) => panic!(
            "capabilities do not declare {mode} snapshots, and create failed with: {e} \
             (expected DriverError::Unsupported)"
        ),
        Ok(created) => {
            panic!("capabilities do not declare {mode} snapshots, yet create made {created:?}")
        }
    }
}

/// The names the storage lists (when it lists), else `None`.
async fn listed(s: &Session<'_>, caps: &Capabilities) -> Option<Vec<String>> {
    if !caps.list {
        return None;
    }
    let listed =
        s.h.driver()
            .list(&s.volume)
            .await
            .unwrap_or_else(|e| panic!("list() declared but failed: {e}"));
    Some(listed.into_iter().map(|x| x.name).collect())
}

/// Whether the storage lists snapshots of the session's mode (see
/// [`Op::List`]): always for internal snapshots.
fn lists_mode(s: &Session<'_>, caps: &Capabilities) -> bool {
    caps.list && s.h.mode() == SnapshotMode::Internal
}

async fn create(s: &mut Session<'_>, caps: &Capabilities) {
    // `Session::create` checks the content is unchanged and the file is
    // where the plan put it.
    s.write(0, 0x11);
    s.create("c1", false).await;
    s.write(1, 0x12);
    s.create("c2", false).await;
    if lists_mode(s, caps) {
        let names = listed(s, caps).await.unwrap_or_default();
        for name in ["c1", "c2"] {
            assert!(
                names.iter().any(|n| n == name),
                "the storage does not list the new snapshot '{name}': {names:?}"
            );
        }
    }
    let kind = s.h.driver().kind();
    assert!(
        s.h.mode() != SnapshotMode::Internal || caps.list || caps.revert,
        "{kind}'s internal snapshots can neither be listed nor reverted to: nothing shows \
         they exist"
    );
}

async fn list(s: &mut Session<'_>) -> Outcome {
    let mode = s.h.mode();
    s.write(0, 0x21);
    let l1 = s.create("l1", false).await;
    s.write(1, 0x22);
    let l2 = s.create("l2", false).await;
    let listed =
        s.h.driver()
            .list(&s.volume)
            .await
            .unwrap_or_else(|e| panic!("list() declared but failed: {e}"));
    let ours: Vec<_> = listed
        .iter()
        .filter(|x| x.name == "l1" || x.name == "l2")
        .collect();
    if ours.is_empty() && mode != SnapshotMode::Internal && listed.iter().all(|x| x.mode != mode) {
        let kind = s.h.driver().kind();
        return Outcome::unsupported(format!(
            "{kind} declares list for this volume, but its list() reports none of the {mode} \
             snapshots taken (it lists what the storage names; {mode} snapshots are files of \
             their own that record no snapshot name, known only to the snapshot metadata)"
        ));
    }
    for created in [&l1, &l2] {
        let found: Vec<_> = ours.iter().filter(|x| x.name == created.name).collect();
        assert!(
            found.len() == 1,
            "the storage lists '{}' {} time(s): {listed:?}",
            created.name,
            found.len()
        );
        let x = found[0];
        assert_eq!(x.mode, mode, "the listed mode of '{}'", x.name);
        if let (Some(file), Some(expected)) = (&x.file, &created.file) {
            assert_eq!(file, expected, "the listed file of '{}'", x.name);
        }
        assert!(
            x.invalid.is_none(),
            "'{}' is listed invalid: {:?}",
            x.name,
            x.invalid
        );
    }
    // Deleted: no longer listed; the other one still is.
    s.delete("l2").await;
    let names: Vec<String> =
        s.h.driver()
            .list(&s.volume)
            .await
            .unwrap_or_else(|e| panic!("list() after a delete: {e}"))
            .into_iter()
            .map(|x| x.name)
            .collect();
    assert!(
        !names.iter().any(|n| n == "l2"),
        "the deleted 'l2' is still listed: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "l1"),
        "'l1' is no longer listed after deleting 'l2': {names:?}"
    );
    Outcome::Pass
}

async fn revert(s: &mut Session<'_>, caps: &Capabilities) {
    // `Session::revert` checks the content byte for byte.
    s.write(0, 0x31);
    s.create("r1", false).await;
    s.write(0, 0x32);
    s.write(2, 0x33);
    s.create("r2", false).await;
    s.write(4, 0x34);
    let now = s.content();
    assert!(
        now != s.contents["r1"] && now != s.contents["r2"],
        "the writes changed nothing"
    );
    s.revert("r1").await;
    if caps.revert_keeps_newer {
        // The newer snapshot survived the revert, and the older one the
        // revert to the newer.
        s.write(6, 0x35);
        s.revert("r2").await;
        s.write(8, 0x36);
        s.revert("r1").await;
    }
}

async fn delete_rebase(s: &mut Session<'_>, caps: &Capabilities) {
    // d1 <- d2 <- d3, current d3.
    for (index, pattern, name) in [(0, 0x41, "d1"), (1, 0x42, "d2"), (2, 0x43, "d3")] {
        s.write(index, pattern);
        s.create(name, false).await;
    }
    s.write(9, 0x44);
    // A snapshot in the middle: its child keeps its content.
    s.delete("d2").await;
    gone(s, caps, &["d2"]).await;
    if caps.revert {
        // Newest first: d1 ends current.
        s.revert("d3").await;
        s.revert("d1").await;
    }
    // The current snapshot (when the driver reverts), a root with a
    // child.
    s.write(10, 0x45);
    s.delete("d1").await;
    gone(s, caps, &["d1"]).await;
    if caps.revert {
        s.revert("d3").await;
    }
}

/// `root <- top <- {leaf1, leaf2}`: deletes the subtree of `top` (or
/// only its descendants), leaves first.
async fn delete_subtree(s: &mut Session<'_>, caps: &Capabilities, with_top: bool) {
    s.write(0, 0x51);
    s.create("root", false).await;
    s.write(1, 0x52);
    s.create("top", false).await;
    s.write(2, 0x53);
    s.create("leaf1", false).await;
    if caps.revert {
        s.revert("top").await;
        s.write(3, 0x54);
    }
    // Without revert the second leaf is a grandchild: still a subtree.
    s.create("leaf2", false).await;
    s.write(4, 0x55);
    let before = s.content();
    let order = leaves_first(s, "top", with_top);
    for name in &order {
        assert!(
            s.tree.children(name).expect("tree").is_empty(),
            "'{name}' is a leaf when its turn comes"
        );
        // Checks the content and the snapshot's file.
        s.delete(name).await;
    }
    assert!(
        s.content() == before,
        "deleting the subtree changed the volume"
    );
    let names: Vec<&str> = order.iter().map(String::as_str).collect();
    gone(s, caps, &names).await;
    if caps.revert {
        s.verify_all().await;
    }
}

/// The subtree of `top` in the order the volume API deletes it: each
/// snapshot after all its descendants (reversed pre-order).
fn leaves_first(s: &Session<'_>, top: &str, with_top: bool) -> Vec<String> {
    let mut order = Vec::new();
    let mut stack = vec![top.to_string()];
    while let Some(n) = stack.pop() {
        for c in s.tree.children(&n).expect("tree") {
            stack.push(c.to_string());
        }
        order.push(n);
    }
    if !with_top {
        order.remove(0);
    }
    order.reverse();
    order
}

/// Nothing of the deleted `names` is left: not listed, no file beside
/// the volume named after them (a leftover temporary file included).
async fn gone(s: &Session<'_>, caps: &Capabilities, names: &[&str]) {
    if let Some(listed) = listed(s, caps).await {
        for name in names {
            assert!(
                !listed.iter().any(|n| n == name),
                "the deleted '{name}' is still listed: {listed:?}"
            );
        }
    }
    let Some(dir) = s.volume.path.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefixes: Vec<String> = names
        .iter()
        .map(|n| {
            file_for(&s.volume, n)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let stem = file.trim_start_matches('.');
        assert!(
            !prefixes.iter().any(|p| stem.starts_with(p.as_str())),
            "{} is left after deleting {names:?}",
            entry.path().display()
        );
    }
}

#[cfg(test)]
mod tests;
