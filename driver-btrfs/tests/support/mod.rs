//! The tests' scratch btrfs (`snapshot_core::conformance::backends::Btrfs`,
//! shared with the other crates' tests) and a `btrfs` runner.

#![allow(dead_code)]

use snapshot_core::conformance::backends;
pub use snapshot_core::conformance::backends::Btrfs;

/// Runs `btrfs` with `args` and returns its stdout.
///
/// # Panics
/// It fails.
pub fn btrfs(args: &[&str]) -> String {
    backends::run("btrfs", args)
}
