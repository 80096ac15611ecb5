//! `virtsnap`: the command-line face of virtsnap, with virsh-style verbs.
//! Everything but the entry point lives in the library (`lib.rs`), so that
//! `cargo xtask man` and the completions see the same command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    virtsnap::run(std::env::args_os())
}
