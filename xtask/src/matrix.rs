//! `cargo xtask matrix`: the integration matrix of the drivers. Every row
//! is a test named `...matrix...` that records its row as JSON in
//! `$VIRTSNAP_MATRIX_DIR/ROW.json` (`snapshot_core::conformance::matrix`);
//! this runs those tests (LVM's inside the test guest), gathers the rows
//! into `target/matrix.json`, prints them as a table and fails when a cell
//! failed or a row of [`EXPECTED_ROWS`] is missing. `--readme` writes the
//! table into README.md between [`README_START`] and [`README_END`].
//!
//! `cargo xtask test` records the rows during its own test run and
//! assembles them after it ([`assemble_and_check`]), without running the
//! tests twice.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{cmd, testvm};

/// The variable the row tests read.
pub const DIR_ENV: &str = "VIRTSNAP_MATRIX_DIR";
/// Makes the LVM guest test run only its matrix rows.
const LVM_ONLY_ENV: &str = "VIRTSNAP_LVM_GUEST_ONLY";
/// The matrix tests, and the LVM host test that carries the guest's rows
/// back (nextest's filter expression).
const FILTER: &str = "test(/matrix/) | test(=lvm_inside_the_test_guest)";
/// The README's markers around the table.
pub const README_START: &str = "<!-- matrix:start -->";
/// See [`README_START`].
pub const README_END: &str = "<!-- matrix:end -->";

/// The rows the matrix must have, in table order, and the test recording
/// each. Add a row here when a test starts recording one; rows nobody
/// expects are shown too, after these.
pub const EXPECTED_ROWS: &[(&str, &str)] = &[
    ("file-raw", "driver-file tests/conformance.rs raw::matrix"),
    (
        "file-plugin-raw",
        "plugin-abi tests/linked_plugins.rs raw::matrix (plugins/file)",
    ),
    (
        "file-qcow2",
        "driver-file tests/conformance.rs qcow2::matrix",
    ),
    (
        "file-plugin-qcow2",
        "plugin-abi tests/linked_plugins.rs qcow2::matrix (plugins/file)",
    ),
    (
        "qemu-internal",
        "driver-qemu tests/conformance.rs internal::matrix",
    ),
    (
        "qemu-plugin-internal",
        "plugin-abi tests/linked_plugins.rs qemu_internal::matrix (plugins/qemu)",
    ),
    (
        "qemu-external",
        "driver-qemu tests/conformance.rs external::matrix",
    ),
    (
        "qemu-plugin-external",
        "plugin-abi tests/linked_plugins.rs qemu_external::matrix (plugins/qemu)",
    ),
    (
        "btrfs-reflink",
        "driver-btrfs tests/conformance.rs file::matrix",
    ),
    (
        "btrfs-plugin-reflink",
        "driver-btrfs tests/conformance.rs plugin_file::matrix (plugins/btrfs)",
    ),
    (
        "btrfs-subvolume",
        "driver-btrfs tests/conformance.rs subvolume::matrix",
    ),
    (
        "btrfs-plugin-subvolume",
        "driver-btrfs tests/conformance.rs plugin_subvolume::matrix (plugins/btrfs)",
    ),
    (
        "lvm-classic",
        "driver-lvm tests/guest.rs, in the test guest",
    ),
    (
        "lvm-plugin-classic",
        "driver-lvm tests/guest.rs, in the test guest (plugins/lvm)",
    ),
    ("lvm-thin", "driver-lvm tests/guest.rs, in the test guest"),
    (
        "qemu-qmp-internal",
        "driver-qemu tests/matrix_qmp.rs, a running QEMU",
    ),
    (
        "qemu-qmp-external",
        "driver-qemu tests/matrix_qmp.rs, a running QEMU",
    ),
    (
        "dircopy-plugin-raw",
        "plugin-abi tests/c_plugin.rs raw::matrix (the C example plugin)",
    ),
    (
        "dircopy-plugin-qcow2",
        "plugin-abi tests/c_plugin.rs qcow2::matrix (the C example plugin)",
    ),
    (
        "rbd-plugin",
        "virtsnap-plugin-rbd tests/conformance.rs matrix (plugins/rbd, a real Ceph cluster)",
    ),
];

/// The table's columns: states, then operations within each.
const STATES: [&str; 2] = ["offline", "in-use"];
const OPS: [&str; 6] = [
    "create",
    "list",
    "revert",
    "delete-rebase",
    "delete-children",
    "delete-children-only",
];

/// `target/matrix`, where the tests record rows.
pub fn rows_dir() -> PathBuf {
    cmd::workspace_root().join("target").join("matrix")
}

/// `target/matrix.json`, the assembled matrix.
fn json_path() -> PathBuf {
    cmd::workspace_root().join("target").join("matrix.json")
}

/// Empties `dir` (made if missing) for a fresh set of rows.
pub fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// `cargo xtask matrix [--readme] [--no-run]`: with `no_run`, the rows
/// the last run recorded (`cargo xtask test`'s or this command's) are
/// assembled again, nothing is run.
pub fn run(readme: bool, no_run: bool) -> Result<()> {
    if no_run {
        return assemble_and_check(&rows_dir(), true, readme);
    }
    // The LVM rows run in the test guest (cached after its first build).
    testvm::ensure_built()?;
    let dir = rows_dir();
    fresh_dir(&dir)?;
    cmd::announce(&format!(
        "matrix: running the matrix tests, rows recorded in {}",
        dir.display()
    ));
    let tests = cmd::run(&mut runner(&dir));
    let checked = assemble_and_check(&dir, true, readme);
    tests.context("the matrix tests failed")?;
    checked
}

/// The test run of the matrix alone: nextest when installed, else
/// `cargo test` with libtest filters.
fn runner(dir: &Path) -> Command {
    let mut cargo = cmd::cargo();
    if crate::test::nextest_available() {
        cargo.args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "-E",
            FILTER,
        ]);
    } else {
        cargo.args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "matrix",
            "lvm_inside_the_test_guest",
        ]);
    }
    cargo
        .env(crate::test::REQUIRE_BACKENDS, "1")
        .env(DIR_ENV, dir)
        .env(LVM_ONLY_ENV, "matrix");
    cargo
}

/// Reads the rows in `dir`, writes `target/matrix.json`, prints the table
/// and (with `readme`, when no row is missing) writes it into README.md.
/// Fails when a cell failed, or (with `require_all`) a row of
/// [`EXPECTED_ROWS`] is missing.
pub fn assemble_and_check(dir: &Path, require_all: bool, readme: bool) -> Result<()> {
    let mut matrix = Matrix::read(dir)?;
    matrix.required = require_all;
    let json = json_path();
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&matrix.to_json())? + "\n",
    )
    .with_context(|| format!("writing {}", json.display()))?;
    println!("{}", matrix.table());
    cmd::announce(&format!(
        "matrix: {} row(s) in {}",
        matrix.rows.len(),
        json.display()
    ));
    if readme {
        if matrix.missing.is_empty() {
            let path = cmd::workspace_root().join("README.md");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let new = replace_between_markers(&text, &matrix.table())?;
            std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
            cmd::announce("matrix: README.md updated");
        } else {
            eprintln!("    README.md not updated: the matrix misses rows");
        }
    }
    let failed = matrix.failed_cells();
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!("{failed} cell(s) failed"));
    }
    if require_all && !matrix.missing.is_empty() {
        let missing: Vec<String> = matrix
            .missing
            .iter()
            .map(|row| {
                let from = EXPECTED_ROWS
                    .iter()
                    .find(|(id, _)| id == row)
                    .map_or("", |(_, from)| from);
                format!("{row} ({from})")
            })
            .collect();
        problems.push(format!(
            "row(s) missing: {} (their tests did not run, or skipped)",
            missing.join(", ")
        ));
    }
    if !problems.is_empty() {
        bail!("the integration matrix: {}", problems.join("; "));
    }
    Ok(())
}

/// One row as recorded.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: String,
    driver: String,
    mode: String,
    /// (state, op) -> (outcome, detail).
    cells: BTreeMap<(String, String), (String, String)>,
    /// The recorded JSON, written back as is.
    json: Value,
}

impl Row {
    fn parse(text: &str) -> Result<Self> {
        let json: Value = serde_json::from_str(text)?;
        let field = |v: &Value, key: &str| -> Result<String> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("no string {key:?}"))
        };
        let mut cells = BTreeMap::new();
        for cell in json
            .get("cells")
            .and_then(Value::as_array)
            .context("no \"cells\" array")?
        {
            let outcome = field(cell, "outcome")?;
            let detail = match outcome.as_str() {
                "pass" => String::new(),
                "fail" => field(cell, "message")?,
                "unsupported" => field(cell, "reason")?,
                other => bail!("unknown outcome {other:?}"),
            };
            cells.insert(
                (field(cell, "state")?, field(cell, "op")?),
                (outcome, detail),
            );
        }
        Ok(Self {
            id: field(&json, "row")?,
            driver: field(&json, "driver")?,
            mode: field(&json, "mode")?,
            cells,
            json,
        })
    }
}

/// The rows found: expected ones in [`EXPECTED_ROWS`] order, then the
/// others by id.
#[derive(Debug, Default)]
struct Matrix {
    rows: Vec<Row>,
    missing: Vec<String>,
    /// Whether the missing rows were required (else a filtered run did not
    /// run their tests).
    required: bool,
}

impl Matrix {
    fn read(dir: &Path) -> Result<Self> {
        let mut found = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries.collect::<Result<Vec<_>, _>>()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let row = Row::parse(&text)
                .with_context(|| format!("{} is not a matrix row", path.display()))?;
            found.insert(row.id.clone(), row);
        }
        Ok(Self::from_rows(found))
    }

    fn from_rows(mut found: BTreeMap<String, Row>) -> Self {
        let mut matrix = Self {
            required: true,
            ..Self::default()
        };
        for (id, _) in EXPECTED_ROWS {
            match found.remove(*id) {
                Some(row) => matrix.rows.push(row),
                None => matrix.missing.push((*id).to_string()),
            }
        }
        matrix.rows.extend(found.into_values());
        matrix
    }

    fn failed_cells(&self) -> usize {
        self.rows
            .iter()
            .flat_map(|r| r.cells.values())
            .filter(|(outcome, _)| outcome == "fail")
            .count()
    }

    fn to_json(&self) -> Value {
        json!({
            "columns": STATES.iter().flat_map(|s| OPS.iter().map(move |o| json!({"state": s, "op": o}))).collect::<Vec<_>>(),
            "rows": self.rows.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
            "missing": self.missing,
            "failed_cells": self.failed_cells(),
        })
    }

    /// The columns: the fixed ones, then any other (state, op) a row has.
    fn columns(&self) -> Vec<(String, String)> {
        let mut columns: Vec<(String, String)> = STATES
            .iter()
            .flat_map(|s| OPS.iter().map(|o| ((*s).to_string(), (*o).to_string())))
            .collect();
        for row in &self.rows {
            for key in row.cells.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
        columns
    }

    /// The table in Markdown: a row per driver row, a column per state and
    /// operation; `pass`, `FAIL [n]`, `n/a [n]` (notes below the table,
    /// each text once), `—` where a row has no such cell.
    fn table(&self) -> String {
        let columns = self.columns();
        let mut notes: Vec<(String, String)> = Vec::new();
        let mut note = |kind: &str, text: &str| -> usize {
            let key = (kind.to_string(), text.to_string());
            match notes.iter().position(|n| *n == key) {
                Some(i) => i + 1,
                None => {
                    notes.push(key);
                    notes.len()
                }
            }
        };
        let mut out = String::new();
        let header: Vec<String> = columns.iter().map(|(s, o)| format!("{s} {o}")).collect();
        let _ = writeln!(out, "| row | driver | mode | {} |", header.join(" | "));
        let _ = writeln!(out, "|---|---|---|{}", "---|".repeat(columns.len()));
        for row in &self.rows {
            let cells: Vec<String> = columns
                .iter()
                .map(|key| match row.cells.get(key) {
                    None => "—".to_string(),
                    Some((outcome, detail)) => match outcome.as_str() {
                        "pass" => "pass".to_string(),
                        "fail" => format!("**FAIL** [{}]", note("FAIL", detail)),
                        _ => format!("n/a [{}]", note("n/a", detail)),
                    },
                })
                .collect();
            let expected = EXPECTED_ROWS.iter().any(|(id, _)| *id == row.id);
            let id = if expected {
                row.id.clone()
            } else {
                format!("{} (not expected)", row.id)
            };
            let _ = writeln!(
                out,
                "| {id} | {} | {} | {} |",
                row.driver,
                row.mode,
                cells.join(" | ")
            );
        }
        let absent = if self.required {
            "**MISSING**"
        } else {
            "not run"
        };
        for missing in &self.missing {
            let _ = writeln!(
                out,
                "| {missing} | | | {absent}{} |",
                " |".repeat(columns.len().saturating_sub(1))
            );
        }
        if !notes.is_empty() {
            out.push('\n');
        }
        for (i, (kind, text)) in notes.iter().enumerate() {
            let text = text.replace('\n', " ").replace('|', "\\|");
            let _ = writeln!(out, "{}. {kind}: {text}", i + 1);
        }
        out.push_str("\npass: the checks held; n/a: unsupported by design (the driver's reason); —: not part of that row.\n");
        out
    }
}

/// `text` with what lies between the README markers replaced by `table`.
fn replace_between_markers(text: &str, table: &str) -> Result<String> {
    let (Some(start), Some(end)) = (text.find(README_START), text.find(README_END)) else {
        bail!("README.md has no {README_START} ... {README_END} markers");
    };
    if end < start {
        bail!("README.md has {README_END} before {README_START}");
    }
    let head = &text[..start + README_START.len()];
    let tail = &text[end..];
    Ok(format!("{head}\n{}\n{tail}", table.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, cells: &[(&str, &str, &str, &str)]) -> String {
        let cells: Vec<Value> = cells
            .iter()
            .map(|(state, op, outcome, detail)| {
                let mut c = json!({"state": state, "op": op, "outcome": outcome});
                match *outcome {
                    "fail" => c["message"] = json!(detail),
                    "unsupported" => c["reason"] = json!(detail),
                    _ => {}
                }
                c
            })
            .collect();
        json!({"row": id, "driver": "d", "mode": "m", "cells": cells}).to_string()
    }

    fn matrix(rows: &[String]) -> Matrix {
        Matrix::from_rows(
            rows.iter()
                .map(|text| {
                    let row = Row::parse(text).expect("a row");
                    (row.id.clone(), row)
                })
                .collect(),
        )
    }

    #[test]
    fn rows_come_in_expected_order_then_the_others_and_missing_ones_are_named() {
        let m = matrix(&[
            row("zz-plugin", &[("offline", "create", "pass", "")]),
            row("qemu-internal", &[("offline", "create", "pass", "")]),
            row("file-raw", &[("offline", "create", "pass", "")]),
        ]);
        let ids: Vec<&str> = m.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["file-raw", "qemu-internal", "zz-plugin"]);
        assert_eq!(m.missing.len(), EXPECTED_ROWS.len() - 2);
        assert!(m.missing.contains(&"lvm-thin".to_string()));
        let table = m.table();
        assert!(table.contains("| zz-plugin (not expected) |"), "{table}");
        assert!(table.contains("| lvm-thin | | | **MISSING**"), "{table}");
        let filtered = Matrix {
            required: false,
            ..m
        };
        assert!(filtered.table().contains("| lvm-thin | | | not run"));
    }

    #[test]
    fn the_table_shows_each_reason_once_as_a_note_and_failures_in_bold() {
        let m = matrix(&[
            row(
                "file-raw",
                &[
                    ("offline", "create", "pass", ""),
                    ("offline", "list", "unsupported", "file cannot list"),
                    ("in-use", "create", "unsupported", "declines in use"),
                    ("in-use", "list", "unsupported", "declines in use"),
                ],
            ),
            row(
                "file-qcow2",
                &[
                    ("offline", "revert", "fail", "bytes | differ"),
                    ("offline", "extra-op", "pass", ""),
                ],
            ),
        ]);
        let table = m.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("| row | driver | mode | offline create | offline list |"));
        assert!(lines[0].ends_with("| offline extra-op |"), "{}", lines[0]);
        assert!(
            lines[2].starts_with("| file-raw | d | m | pass | n/a [1] | — |"),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("| n/a [2] | n/a [2] |"), "{}", lines[2]);
        assert!(lines[3].contains("| **FAIL** [3] |"), "{}", lines[3]);
        assert!(table.contains("1. n/a: file cannot list\n"), "{table}");
        assert!(table.contains("3. FAIL: bytes \\| differ\n"), "{table}");
        assert_eq!(m.failed_cells(), 1);
        let json = m.to_json();
        assert_eq!(json["failed_cells"], 1);
        assert_eq!(json["rows"][0]["row"], "file-raw");
        assert_eq!(json["columns"].as_array().map(Vec::len), Some(12));
    }

    #[test]
    fn the_readme_table_is_replaced_between_the_markers_only() {
        let text = format!("# x\n\n{README_START}\nold\ntable\n{README_END}\nafter\n");
        let new = replace_between_markers(&text, "| new |\n").expect("markers");
        assert_eq!(
            new,
            format!("# x\n\n{README_START}\n| new |\n{README_END}\nafter\n")
        );
        let err = replace_between_markers("# no markers\n", "x").expect_err("no markers");
        assert!(err.to_string().contains("markers"), "{err}");
    }

    #[test]
    fn rows_are_read_from_a_directory_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("file-raw.json"),
            row("file-raw", &[("offline", "create", "pass", "")]),
        )
        .expect("write");
        std::fs::write(dir.path().join(".file-raw.json.tmp"), "partial").expect("write");
        let m = Matrix::read(dir.path()).expect("read");
        assert_eq!(m.rows.len(), 1);
        std::fs::write(dir.path().join("bad.json"), "{}").expect("write");
        let err = Matrix::read(dir.path()).expect_err("a bad row");
        assert!(format!("{err:#}").contains("bad.json"), "{err:#}");
        let none = Matrix::read(&dir.path().join("absent")).expect("no dir: no rows");
        assert_eq!(none.missing.len(), EXPECTED_ROWS.len());
    }
}
