//! Running child processes: where the workspace is, which `cargo` to call,
//! announcing a step with a `==> ` line on stderr, and turning a non-zero
//! exit status into an error that shows the command line.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The workspace root: the parent of this crate's folder.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A `cargo` command run from the workspace root. Uses `$CARGO` (the cargo
/// that started `cargo xtask`, so the same toolchain) when it is set.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// Prints a `==> ` progress line on stderr.
pub fn announce(message: &str) {
    eprintln!("==> {message}");
}

/// Runs `cmd` with inherited stdio after printing it; fails on a non-zero
/// exit status or when it cannot be started.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("    $ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Whether `cmd` starts and exits with status 0; its output is discarded.
pub fn succeeds_quietly(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The command as a shell-like line, for messages. The program is shown by
/// its file name (`cargo`, not the toolchain path behind `$CARGO`); words
/// with spaces or quotes are single-quoted.
pub fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_else(|| cmd.get_program());
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_program_name_and_quotes_odd_words() {
        let mut cmd = Command::new("/opt/toolchain/bin/cargo");
        cmd.args(["clippy", "--", "-D", "warnings", "two words", "it's", ""]);
        assert_eq!(
            display(&cmd),
            r"cargo clippy -- -D warnings 'two words' 'it'\''s' ''"
        );
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml"))
            .expect("workspace Cargo.toml is readable");
        assert!(manifest.contains("[workspace]"));
    }
}
