//! Helpers shared by the integration tests: where libvirt's corpus lives and
//! RelaxNG validation through `xmllint` (Debian package libxml2-utils).
//!
//! A missing `xmllint` fails the test with the fix (`cargo xtask deps`),
//! unless `VIRTSNAP_SKIP_XMLLINT=1` asks to skip knowingly; the skip is then
//! written straight to the terminal, where the test harness cannot hide it.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/libvirt/`: libvirt's snapshot XML corpus and schemas.
pub fn libvirt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libvirt")
}

/// `schemas/`: our own schemas.
pub fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// Path of `xmllint`, or `None` when the caller asked to skip without it.
pub fn xmllint() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("xmllint"))
            .find(|p| p.is_file())
    });
    if found.is_some() {
        return found;
    }
    if std::env::var_os("VIRTSNAP_SKIP_XMLLINT").is_some_and(|v| v == "1") {
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIP: xmllint not found, RelaxNG validation not run (VIRTSNAP_SKIP_XMLLINT=1)"
        );
        return None;
    }
    panic!(
        "xmllint not found on PATH: install Debian's libxml2-utils (`cargo xtask deps` does it as root), \
         or set VIRTSNAP_SKIP_XMLLINT=1 to skip schema validation knowingly"
    );
}

fn run(xmllint: &Path, schema: &Path, file: &Path) -> std::process::Output {
    Command::new(xmllint)
        .arg("--noout")
        .arg("--relaxng")
        .arg(schema)
        .arg(file)
        .output()
        .expect("run xmllint")
}

/// Asserts `file` validates against `schema`.
pub fn assert_valid(xmllint: &Path, schema: &Path, file: &Path) {
    let out = run(xmllint, schema, file);
    assert!(
        out.status.success(),
        "{} does not validate against {}:\n{}\n{}",
        file.display(),
        schema.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// Asserts `file` fails validation against `schema`.
pub fn assert_invalid(xmllint: &Path, schema: &Path, file: &Path) {
    let out = run(xmllint, schema, file);
    assert!(
        !out.status.success(),
        "{} validates against {} but must not",
        file.display(),
        schema.display()
    );
}
