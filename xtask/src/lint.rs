//! Project lints that clippy cannot express, run by `cargo xtask test`
//! before clippy: `unsafe_code` is denied workspace-wide, and only the
//! files of [`UNSAFE_ALLOWED`] may allow it (an attribute allowing or
//! expecting `unsafe_code`); no crate manifest may relax the lint.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// The only files (from the workspace root) that may allow `unsafe_code`:
/// each wraps one foreign interface behind a safe API. Adding a file here
/// is a reviewed decision.
pub const UNSAFE_ALLOWED: &[&str] = &[
    // The btrfs ioctls (repr(C) structs checked against linux/btrfs.h).
    "driver-btrfs/src/ioctl.rs",
    // The plugin host's calls into a loaded plugin's C function table.
    "plugin-abi/src/host/ffi.rs",
    // The Rust SDK's exported C entry points.
    "plugin-abi/src/sdk.rs",
    // The rbd plugin's librados/librbd binding (dlopen'ed at run time;
    // repr(C) structs checked against the Ceph 16.2 headers).
    "plugins/rbd/src/librbd.rs",
    // The test Ceph cluster's daemons dying with the test process
    // (prctl(PR_SET_PDEATHSIG) in pre_exec) and its atexit cleanup.
    "testceph/src/sys.rs",
];

/// Fails naming every file outside [`UNSAFE_ALLOWED`] that allows
/// `unsafe_code`, and every crate manifest that sets the lint.
pub fn unsafe_code() -> Result<()> {
    cmd::announce(&format!(
        "lint: unsafe_code allowed only in {}",
        UNSAFE_ALLOWED.join(", ")
    ));
    let found = findings(&cmd::workspace_root())?;
    if !found.is_empty() {
        bail!(
            "unsafe_code outside the allow-list:\n  {}",
            found.join("\n  ")
        );
    }
    Ok(())
}

/// What [`unsafe_code`] reports for the tree at `root`.
fn findings(root: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for file in source_files(root)? {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        let rel_text = rel.to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        if rel_text.ends_with(".rs") {
            if UNSAFE_ALLOWED.contains(&rel_text.as_str()) {
                continue;
            }
            for line in allowing_lines(&text) {
                found.push(format!(
                    "{rel_text}:{line}: allows unsafe_code; only {} may (xtask/src/lint.rs)",
                    UNSAFE_ALLOWED.join(", ")
                ));
            }
        } else if rel_text != "Cargo.toml" && manifest_sets_unsafe_code(&text) {
            found.push(format!(
                "{rel_text}: sets the unsafe_code lint; crates take the workspace's \
                 ([lints] workspace = true)"
            ));
        }
    }
    Ok(found)
}

/// Every `.rs` file and `Cargo.toml` under `root`, skipping `target` and
/// hidden directories.
fn source_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    dirs.push(entry.path());
                }
            } else if kind.is_file() && (name.ends_with(".rs") || name == "Cargo.toml") {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The lines (1-based) where an attribute allows or expects `unsafe_code`
/// (`#![allow(unsafe_code)]`, `#[allow(dead_code, unsafe_code)]`,
/// `#[cfg_attr(test, expect(unsafe_code))]`, spread over lines or not);
/// comments do not count.
fn allowing_lines(text: &str) -> Vec<usize> {
    let code = strip_comments(text);
    let bytes = code.as_bytes();
    let mut lines = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'#' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if bytes.get(j) == Some(&b'!') {
            j += 1;
        }
        if bytes.get(j) != Some(&b'[') {
            i += 1;
            continue;
        }
        // The attribute runs to its matching bracket.
        let mut depth = 0usize;
        let mut end = j;
        while end < bytes.len() {
            match bytes[end] {
                b'[' => depth += 1,
                b']' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            end += 1;
        }
        let attr: String = code[j..end.min(code.len())]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if attr.contains("unsafe_code") && (attr.contains("allow(") || attr.contains("expect(")) {
            lines.push(code[..i].matches('\n').count() + 1);
        }
        i = end.max(i + 1);
    }
    lines
}

/// `text` with comments and the contents of string and character
/// literals blanked (newlines kept, so line numbers hold): only code is
/// left to look for attributes in.
fn strip_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                blank(&mut out, chars[i]);
                i += 1;
            }
            i += 2;
        } else if c == 'r' && matches!(next, Some('"' | '#')) && {
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            chars.get(i + 1 + hashes) == Some(&'"')
        } {
            // A raw string: to the quote followed by as many hashes.
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            i += hashes + 2;
            while i < chars.len() {
                if chars[i] == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|c| **c == '#')
                        .count()
                        == hashes
                {
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    blank(&mut out, c);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A character literal ('"'); otherwise a lifetime.
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether a crate manifest sets the `unsafe_code` lint itself.
fn manifest_sets_unsafe_code(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.split('#').next().unwrap_or("");
        line.trim_start().starts_with("unsafe_code")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `#![allow(unsafe_code)]`, built so this file does not hold it.
    fn attr(inner: bool, body: &str) -> String {
        format!("#{}[{body}]", if inner { "!" } else { "" })
    }

    #[test]
    fn attributes_allowing_unsafe_code_are_found_on_their_line() {
        let allow = format!("{}(unsafe_code)", "allow");
        let text = format!(
            "//! doc\n{}\nfn a() {{}}\n{}\n{}\n",
            attr(true, &allow),
            attr(
                false,
                &format!("cfg_attr(test, {}(dead_code,\n unsafe_code))", "expect")
            ),
            attr(false, "deny(unsafe_code)")
        );
        assert_eq!(allowing_lines(&text), [2, 4]);
    }

    #[test]
    fn comments_strings_and_character_literals_do_not_count() {
        let allow = format!("{}(unsafe_code)", "allow");
        let text = format!(
            "// {a}\n/* {a}\n */\nconst S: &str = \"{a}\";\nconst R: &str = r#\"{a}\"#;\n\
             const Q: char = '\"'; fn f<'a>(x: &'a str) {{}}\n{a}\n",
            a = attr(true, &allow)
        );
        assert_eq!(allowing_lines(&text), [7], "only the attribute on line 7");
        let code = strip_comments(&text);
        assert_eq!(code.lines().count(), text.lines().count(), "{code}");
        assert!(code.contains("fn f<'a>(x: &'a str)"), "{code}");
    }

    #[test]
    fn manifests_that_set_the_lint_are_found() {
        assert!(manifest_sets_unsafe_code(
            "[lints.rust]\nunsafe_code = \"allow\"\n"
        ));
        assert!(!manifest_sets_unsafe_code(
            "[lints]\nworkspace = true\n# unsafe_code = \"allow\"\n"
        ));
    }

    #[test]
    fn a_tree_is_checked_but_for_the_allow_list_target_and_hidden_dirs() {
        for file in UNSAFE_ALLOWED {
            assert!(file.ends_with(".rs") && !file.starts_with('/'), "{file}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let allow = attr(true, &format!("{}(unsafe_code)", "allow"));
        for (path, text) in [
            ("driver-btrfs/src/ioctl.rs", allow.as_str()),
            ("target/debug/build/x.rs", allow.as_str()),
            (".git/x.rs", allow.as_str()),
            ("a/src/lib.rs", "fn main() {}\n"),
            ("a/src/bad.rs", &format!("\n{allow}\n")),
            ("a/Cargo.toml", "[lints.rust]\nunsafe_code = \"allow\"\n"),
            (
                "Cargo.toml",
                "[workspace.lints.rust]\nunsafe_code = \"deny\"\n",
            ),
        ] {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&file, text).expect("write");
        }
        let found = findings(root).expect("findings");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("a/Cargo.toml: sets the unsafe_code lint"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("a/src/bad.rs:2: allows unsafe_code"),
            "{found:?}"
        );
    }
}
