//! A throwaway Ceph cluster for virtsnap's RBD tests: one monitor and one
//! OSD on 127.0.0.1, from Debian's ceph 16.2 packages (`ceph-mon`,
//! `ceph-osd`, `ceph-common`; `cargo xtask deps` installs them as root),
//! run without systemd or a manager. It is ready about 5 s after start and
//! uses about 280 MiB of memory and 1–3 GiB of sparse disk.
//!
//! A test gets the process's cluster with [`shared_or_skip`] (or
//! [`Cluster::shared`]), which reports a skip (with the reason) when Ceph
//! is not installed, and fails instead when `VIRTSNAP_REQUIRE_BACKENDS` is
//! set, as `cargo xtask test` (CI) does. Each test then works in an RBD
//! namespace of its own ([`Cluster::namespace`]), so tests run in parallel
//! on one cluster without seeing each other's images:
//!
//! ```no_run
//! // In a test: #[test] fn snapshot_keeps_the_old_content() { ... }
//! fn snapshot_keeps_the_old_content() -> Result<(), testceph::CephError> {
//!     let Some(cluster) = testceph::shared_or_skip() else {
//!         return Ok(()); // skipped: the reason was printed
//!     };
//!     let ns = cluster.namespace("snapshot_keeps_the_old_content")?;
//!     ns.create_image("disk", 8 << 20)?;
//!     ns.rbd(["snap", "create", "disk@s1"])?;
//!     assert_eq!(ns.export("disk@s1")?, vec![0; 8 << 20]);
//!     // virtsnap names the image `rbd:rbd/NS/disk:conf=/tmp/.../ceph.conf`:
//!     let _volume = ns.volume_name("disk");
//!     Ok(()) // dropping `ns` removes its images, snapshots and itself
//! }
//! # snapshot_keeps_the_old_content().unwrap();
//! ```
//!
//! Where the cluster comes from ([`Cluster::shared`]): the one
//! `VIRTSNAP_TEST_CEPH_CONF` names, or else one started for the test
//! process and cleaned up when it exits. Test runners that run each test
//! in a process of its own (nextest) would start one per test (5 s each):
//! start one beforehand with `eval "$(cargo xtask ceph up)"` (stop it with
//! `cargo xtask ceph down DIR`), which exports `VIRTSNAP_TEST_CEPH_CONF`
//! and `CEPH_CONF`. A test that needs a cluster to itself (to stop it, say)
//! starts one with [`Cluster::start`] and drops it.
//!
//! The daemons of a cluster started here are children of the test
//! process, spawned with `-f` (foreground), and die with it
//! (`PR_SET_PDEATHSIG`); their output and logs are in the cluster
//! directory's `log/`, and errors about them end with the last lines of
//! their logs.
//!
//! Environment variables:
//! - `VIRTSNAP_TEST_CEPH_CONF`: join this cluster instead of starting one
//!   ([`CONF_ENV`]).
//! - `VIRTSNAP_TEST_CEPH_TIMEOUT`: seconds a start, or any one command, may
//!   take (default 120; [`TIMEOUT_ENV`]).
//! - `VIRTSNAP_TEST_CEPH_KEEP=1`: keep a started cluster's directory (logs,
//!   data) when it stops, for a post-mortem ([`KEEP_ENV`]).
//! - `VIRTSNAP_REQUIRE_BACKENDS`: fail instead of skip ([`shared_or_skip`]).

mod cli;
mod cluster;
mod config;
mod daemon;
mod error;
mod namespace;
mod shared;
mod sys;

pub use cluster::{Cluster, DEFAULT_TIMEOUT, POOL};
pub use daemon::Stopped;
pub use error::{CephError, Skip};
pub use namespace::Namespace;

/// Environment variable naming the `ceph.conf` of a running cluster for
/// [`Cluster::shared`] to join instead of starting one.
pub const CONF_ENV: &str = "VIRTSNAP_TEST_CEPH_CONF";

/// Environment variable: seconds a cluster start, or any one command, may
/// take (default [`DEFAULT_TIMEOUT`]).
pub const TIMEOUT_ENV: &str = "VIRTSNAP_TEST_CEPH_TIMEOUT";

/// Environment variable: when set, a stopped cluster's directory is kept.
pub const KEEP_ENV: &str = "VIRTSNAP_TEST_CEPH_KEEP";

/// Environment variable that makes tests fail, instead of skip, when a
/// backend they need is missing (`cargo xtask test` sets it); the same as
/// `testvm`'s.
pub const REQUIRE_BACKENDS_ENV: &str = "VIRTSNAP_REQUIRE_BACKENDS";

/// Whether tests must fail rather than skip when Ceph is unavailable:
/// `VIRTSNAP_REQUIRE_BACKENDS` is set (to anything, as for the project's
/// other backends).
#[must_use]
pub fn backends_required() -> bool {
    std::env::var_os(REQUIRE_BACKENDS_ENV).is_some()
}

/// The process's cluster ([`Cluster::shared`]) when Ceph is installed.
/// Otherwise prints `skipped: <reason>` and returns `None`, or panics with
/// the reason when backends are required ([`backends_required`]).
///
/// # Panics
/// Ceph is not installed and `VIRTSNAP_REQUIRE_BACKENDS` is set, or it is
/// installed but the cluster fails to start (a real failure, never a
/// skip).
#[must_use]
#[track_caller]
pub fn shared_or_skip() -> Option<&'static Cluster> {
    match Cluster::shared() {
        Ok(cluster) => Some(cluster),
        Err(skip) => {
            report_skip(&skip);
            None
        }
    }
}

/// Starts a cluster of the test's own in `dir` ([`Cluster::start`]) when
/// Ceph is installed; otherwise skips as [`shared_or_skip`] does. For
/// tests that stop or break their cluster.
///
/// # Panics
/// As [`shared_or_skip`]: Ceph is required but not installed, or the
/// cluster fails to start.
#[must_use]
#[track_caller]
pub fn start_or_skip(dir: &std::path::Path) -> Option<Cluster> {
    if let Err(skip) = installed() {
        report_skip(&skip);
        return None;
    }
    match Cluster::start(dir) {
        Ok(cluster) => Some(cluster),
        Err(err) => panic!("the test Ceph cluster failed to start: {err}"),
    }
}

/// Whether the programs [`Cluster::start`] runs are installed.
///
/// # Errors
/// A [`Skip`] naming the first missing one and what to install.
pub fn installed() -> Result<(), Skip> {
    cli::require(cli::START_PROGRAMS).map_err(|err| Skip::new(format!("ceph not installed: {err}")))
}

/// Prints `skipped: <reason>`, or panics when backends are required.
#[track_caller]
fn report_skip(skip: &Skip) {
    assert!(
        !backends_required(),
        "{skip} ({REQUIRE_BACKENDS_ENV} is set: the Ceph cluster is required)"
    );
    eprintln!("skipped: {skip}");
}
