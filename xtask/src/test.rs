//! `cargo xtask test`, the project's test command and exactly what CI runs:
//! system packages, `cargo fmt --check`, the `unsafe_code` allow-list,
//! `cargo clippy -D warnings`, the Linux test guest (built unless cached),
//! one Ceph cluster the RBD tests share, then all tests (nextest when installed, plus doctests; `cargo test`
//! otherwise), which record the integration matrix's rows, and the matrix
//! assembled from them. Stops at the first failing step and ends with the
//! time of each step.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::{cmd, deps, lint, matrix, testvm};

/// What the tests build with `plugin_abi::testing` (`cargo build -p
/// PACKAGE [--bin BIN]`), built before them.
const PREBUILT: &[(&str, &str)] = &[
    ("virtsnap-plugin-file", ""),
    ("virtsnap-plugin-qemu", ""),
    ("virtsnap-plugin-btrfs", ""),
    ("virtsnap-plugin-lvm", ""),
    ("virtsnap-plugin-test-faults", ""),
    ("virtsnap-plugin-rbd", ""),
    ("virtsnap", "--bin virtsnap"),
];

/// Environment variable that makes tests fail, instead of skip, when the
/// backend they need (a system tool, a device) is missing.
pub const REQUIRE_BACKENDS: &str = "VIRTSNAP_REQUIRE_BACKENDS";

#[derive(Debug)]
pub struct Options {
    pub install: deps::Install,
    pub skip_lint: bool,
    /// Forwarded to `cargo nextest run` / `cargo test`.
    pub runner_args: Vec<String>,
}

pub fn run(options: &Options) -> Result<()> {
    let mut steps = Steps::default();
    let result = run_steps(options, &mut steps);
    match &result {
        Ok(()) => cmd::announce(&format!("all steps passed: {}", steps.summary())),
        Err(_) => cmd::announce(&format!("stopped: {}", steps.summary())),
    }
    result
}

fn run_steps(options: &Options, steps: &mut Steps) -> Result<()> {
    steps.run("deps", || deps::ensure(options.install))?;

    if options.skip_lint {
        cmd::announce("fmt, clippy: skipped (--skip-lint)");
    } else {
        steps.run("fmt", || {
            cmd::announce("fmt: checking formatting");
            cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
        })?;
    }
    // Instant, and a rule rather than style: never skipped.
    steps.run("unsafe-lint", lint::unsafe_code)?;
    if !options.skip_lint {
        steps.run("clippy", || {
            cmd::announce("clippy: lints, warnings are errors");
            cmd::run(cmd::cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
    }

    // The guest tests (LVM, qemu-guest-agent) need it; with backends
    // required they fail without it. Cached: instant after the first build.
    steps.run("testvm", || testvm::ensure_built().map(drop))?;

    // The plugin tests load the workspace's plugins and run the virtsnap
    // binary, which they build themselves (cargo cannot hand a test a
    // cdylib). Built here, with the very commands the tests run, their
    // builds are no-ops instead of compiles competing with the guests.
    steps.run("plugins", || {
        for (package, target) in PREBUILT {
            cmd::announce(&format!("plugins: cargo build -p {package} {target}"));
            let mut command = cmd::cargo();
            command.args(["build", "--quiet", "-p", package]);
            command.args(target.split_whitespace());
            cmd::run(&mut command)?;
        }
        Ok(())
    })?;

    // One Ceph cluster for the whole run: nextest runs each test in a
    // process of its own, which would otherwise start one each. Stopped
    // when this function returns (the handle's drop), whatever happened.
    let mut ceph = None;
    steps.run("ceph", || {
        ceph = ceph_cluster()?;
        Ok(())
    })?;
    let ceph_conf = ceph
        .as_ref()
        .map(|(c, _)| c.conf().to_path_buf())
        .or_else(|| std::env::var_os(testceph::CONF_ENV).map(std::path::PathBuf::from));

    // The matrix's tests record their rows during the one test run.
    let rows = matrix::rows_dir();
    matrix::fresh_dir(&rows)?;
    // A filtered run records only some rows: shown, not required.
    let all_rows = options.runner_args.is_empty();
    let run_tests = |args: &[&str]| -> Result<()> {
        let mut command = test_command(args, &options.runner_args);
        command.env(matrix::DIR_ENV, &rows);
        if let Some(conf) = &ceph_conf {
            command.env(testceph::CONF_ENV, conf);
        }
        let result = cmd::run(&mut command);
        if result.is_err() {
            // Still show which cells failed.
            let _ = matrix::assemble_and_check(&rows, false, false);
        }
        result
    };
    if nextest_available() {
        // Doctests first, so the run closes on nextest's summary line.
        steps.run("doctests", || {
            cmd::announce("doctests: cargo test --doc (nextest does not run doctests)");
            cmd::run(&mut test_command(&["test", "--workspace", "--doc"], &[]))
        })?;
        steps.run("tests", || {
            cmd::announce("tests: cargo nextest");
            run_tests(&["nextest", "run", "--workspace", "--no-fail-fast"])
        })?;
    } else {
        steps.run("tests", || {
            cmd::announce("tests: cargo test (cargo-nextest is not installed)");
            run_tests(&["test", "--workspace", "--no-fail-fast"])
        })?;
    }
    steps.run("matrix", || {
        cmd::announce("matrix: the rows the tests recorded");
        matrix::assemble_and_check(&rows, all_rows, false)
    })?;
    Ok(())
}

/// The Ceph cluster the RBD tests join: started here in a fresh
/// directory (with the directory, removed after the handle stops the
/// daemons), or none when `VIRTSNAP_TEST_CEPH_CONF` names one already.
fn ceph_cluster() -> Result<Option<(testceph::Cluster, tempfile::TempDir)>> {
    if let Some(conf) = std::env::var_os(testceph::CONF_ENV) {
        cmd::announce(&format!(
            "ceph: the tests join the cluster of {}",
            std::path::Path::new(&conf).display()
        ));
        return Ok(None);
    }
    let parent = tempfile::Builder::new()
        .prefix("virtsnap-ci-ceph.")
        .tempdir()
        .context("a directory for the test cluster")?;
    let dir = parent.path().join("cluster");
    cmd::announce(&format!(
        "ceph: starting the RBD tests' cluster (1 mon, 1 osd on 127.0.0.1) in {}",
        dir.display()
    ));
    let cluster = testceph::Cluster::start(&dir)
        .with_context(|| format!("starting a Ceph cluster in {}", dir.display()))?;
    cmd::announce(&format!("ceph: cluster up, mon {}", cluster.mon_host()));
    Ok(Some((cluster, parent)))
}

/// A cargo test-runner command with backends required.
fn test_command(args: &[&str], extra: &[String]) -> Command {
    let mut cargo = cmd::cargo();
    cargo.args(args).args(extra).env(REQUIRE_BACKENDS, "1");
    cargo
}

pub fn nextest_available() -> bool {
    cmd::succeeds_quietly(cmd::cargo().args(["nextest", "--version"]))
}

/// The steps run so far and how long each took.
#[derive(Debug, Default)]
struct Steps {
    done: Vec<(&'static str, Duration, bool)>,
}

impl Steps {
    /// Runs one step, timing it; a failure names the step.
    fn run(&mut self, name: &'static str, step: impl FnOnce() -> Result<()>) -> Result<()> {
        let started = Instant::now();
        let result = step();
        self.done.push((name, started.elapsed(), result.is_ok()));
        result.with_context(|| format!("step `{name}` failed"))
    }

    /// `deps 0.0s, fmt 0.4s, clippy FAILED after 3.1s`.
    fn summary(&self) -> String {
        self.done
            .iter()
            .map(|(name, took, ok)| {
                let secs = took.as_secs_f64();
                if *ok {
                    format!("{name} {secs:.1}s")
                } else {
                    format!("{name} FAILED after {secs:.1}s")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_step_is_named_and_marked_in_the_summary() {
        let mut steps = Steps::default();
        steps.run("fmt", || Ok(())).unwrap();
        let err = steps
            .run("clippy", || anyhow::bail!("exit status 101"))
            .unwrap_err();
        assert_eq!(format!("{err:#}"), "step `clippy` failed: exit status 101");

        let summary = steps.summary();
        assert!(
            summary.starts_with("fmt 0.0s, clippy FAILED after "),
            "{summary}"
        );
    }

    #[test]
    fn runner_args_follow_the_fixed_ones_and_backends_are_required() {
        let cmd = test_command(&["nextest", "run"], &["roundtrip".to_owned()]);
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["nextest", "run", "roundtrip"]);
        let require = cmd
            .get_envs()
            .find(|(key, _)| *key == REQUIRE_BACKENDS)
            .and_then(|(_, value)| value);
        assert_eq!(require, Some("1".as_ref()));
    }
}
