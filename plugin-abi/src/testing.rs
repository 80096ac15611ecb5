//! Test support for plugins (feature `testing`, for tests only): building
//! the workspace's Rust plugins (cargo cannot hand a test a `cdylib`, so
//! the test builds it), compiling C plugins with the system's C compiler,
//! and a trusted directory to put them in. Without a C compiler a C test
//! is skipped with the reason, or fails when `VIRTSNAP_REQUIRE_BACKENDS`
//! is set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use snapshot_core::conformance::backends;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("plugin-abi sits in the workspace")
        .to_path_buf()
}

/// The target directory this test binary was built in
/// (`TARGET/debug/deps/TEST`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace().join(dir)
        };
    }
    let exe = std::env::current_exe().expect("the test's path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary sits in TARGET/PROFILE/deps")
        .to_path_buf()
}

/// Runs `cargo build --quiet ARGS` for the workspace into the test's
/// target directory (a no-op when it is up to date) and returns the
/// profile directory the outputs are in.
fn cargo_build(args: &[&str]) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = target_dir();
    let status = Command::new(&cargo)
        .args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
        .arg(&target)
        .current_dir(workspace())
        .status()
        .unwrap_or_else(|e| panic!("running cargo build {args:?}: {e}"));
    assert!(status.success(), "cargo build {args:?} failed ({status})");
    target.join("debug")
}

/// Builds the workspace's plugin `package` and returns its library,
/// `lib{lib}.so`.
pub fn cargo_plugin(package: &str, lib: &str) -> PathBuf {
    let path = cargo_build(&["-p", package]).join(format!("lib{lib}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// [`cargo_plugin`] in the release profile (for benchmarks).
pub fn cargo_plugin_release(package: &str, lib: &str) -> PathBuf {
    let debug = cargo_build(&["--release", "-p", package]);
    let path = debug.with_file_name("release").join(format!("lib{lib}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Builds the workspace binary `bin` of `package` and returns its path.
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    cargo_build(&["-p", package, "--bin", bin]).join(bin)
}

/// A directory for compiled plugins, private to this process (mode 0700,
/// owned by us: trusted by the loader).
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

/// The C compiler (`$CC`, else `cc`), or `None` (skipped) when there is
/// none.
fn compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let found = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        Some(cc)
    } else {
        let _ = backends::skip(&format!("no C compiler ({cc}) to build the C plugins"));
        None
    }
}

/// Compiles `sources` into `DIR/lib{name}.so` with the header's
/// directory on the include path and `libs` linked, or `None` (skipped)
/// without a compiler.
pub fn compile_c(name: &str, sources: &[PathBuf], libs: &[&str]) -> Option<PathBuf> {
    let cc = compiler()?;
    // Tests of one process compile the same plugin at once: one compiles.
    static COMPILING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = COMPILING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = plugin_dir().join(format!("lib{name}.so"));
    if out.exists() {
        return Some(out);
    }
    let tmp = plugin_dir().join(format!(".lib{name}.so.{}", std::process::id()));
    let output = Command::new(&cc)
        .args([
            "-shared", "-fPIC", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-I",
        ])
        .arg(workspace().join("plugin-abi/include"))
        .args(sources)
        .args(libs)
        .arg("-o")
        .arg(&tmp)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(
        output.status.success(),
        "{cc} failed on {sources:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &out).expect("moving the compiled plugin into place");
    Some(out)
}
