//! What the plugin tests share beyond `plugin_abi::testing`: the fault
//! plugins of `tests/c/`, the example C plugin, and loading.

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plugin_abi::host::{self, Plugin, PluginDriver};
pub use plugin_abi::testing::{cargo_bin, cargo_plugin, compile_c, workspace};
use snapshot_core::conformance::backends;

/// Compiles the fault plugin `plugin-abi/tests/c/{file}.c`.
pub fn c_test_plugin(file: &str) -> Option<PathBuf> {
    compile_c(
        &format!("test_{file}"),
        &[workspace().join(format!("plugin-abi/tests/c/{file}.c"))],
        &[],
    )
}

/// Whether jansson's header is installed (the example plugin needs it).
fn jansson_present() -> bool {
    Path::new("/usr/include/jansson.h").exists()
}

/// Compiles the example C plugin `plugins/dircopy`, or `None` (skipped)
/// without a compiler or jansson.
pub fn dircopy() -> Option<PathBuf> {
    if !jansson_present() {
        let _ = backends::skip(
            "libjansson-dev is not installed (the dircopy example plugin needs jansson.h)",
        );
        return None;
    }
    compile_c(
        "virtsnap_dircopy",
        &[workspace().join("plugins/dircopy/dircopy.c")],
        &["-ljansson"],
    )
}

/// Loads the plugin at `path`, panicking with the loader's message.
pub fn load(path: &Path) -> Arc<Plugin> {
    host::load(path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// An instance of the plugin at `path` as a driver.
pub fn driver(path: &Path) -> PluginDriver {
    PluginDriver::open(load(path)).unwrap_or_else(|e| panic!("{e}"))
}
