//! The crate's error types: [`CephError`], what went wrong starting,
//! joining or using a cluster and what to do about it, and [`Skip`], why a
//! test cannot get a cluster on this host.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong starting, joining, using or stopping a
/// cluster. Messages name what failed and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CephError {
    /// A Ceph program is not installed.
    #[error(
        "{program} not found on PATH (Debian package {package}): install ceph-mon ceph-osd \
         ceph-common (`cargo xtask deps` does it as root)"
    )]
    NotInstalled {
        /// The missing command.
        program: String,
        /// The Debian package providing it.
        package: &'static str,
    },

    /// The directory given to [`crate::Cluster::start`] holds something.
    #[error(
        "{}: not an empty directory; a cluster is created in an empty or absent \
         directory (stop an old one with `cargo xtask ceph down DIR`)",
        dir.display()
    )]
    DirNotEmpty {
        /// The directory.
        dir: PathBuf,
    },

    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path or program.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A command exited non-zero.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },

    /// A command did not finish in time and was killed.
    #[error(
        "`{command}` did not finish within {waited:?} and was killed; is the cluster up? \
         (daemon logs are in its directory's log/; set VIRTSNAP_TEST_CEPH_TIMEOUT to wait \
         longer)"
    )]
    Timeout {
        /// The command line.
        command: String,
        /// How long it ran.
        waited: Duration,
    },

    /// `ceph-mon --mkfs` or `ceph-osd --mkfs` did not create its store.
    #[error("{daemon} --mkfs failed: {detail}\n--- {} ---\n{output}", log.display())]
    Mkfs {
        /// `ceph-mon` or `ceph-osd`.
        daemon: &'static str,
        /// What is wrong.
        detail: String,
        /// Where its output is.
        log: PathBuf,
        /// Its output.
        output: String,
    },

    /// A daemon exited while the cluster started or was used.
    #[error("{name} exited ({status}) while {during}\n--- last lines of its logs ---\n{log_tail}")]
    DaemonExited {
        /// `mon.a` or `osd.0`.
        name: String,
        /// Its exit status.
        status: String,
        /// What the cluster was doing.
        during: String,
        /// The last 15 lines of its output and log file.
        log_tail: String,
    },

    /// A readiness step did not succeed in time.
    #[error(
        "the cluster in {} was not ready ({step}) within {waited:?}; last attempt: {last}\n\
         (set VIRTSNAP_TEST_CEPH_TIMEOUT to wait longer, VIRTSNAP_TEST_CEPH_KEEP=1 to keep \
         the directory and its logs)",
        dir.display()
    )]
    NotReady {
        /// The cluster directory.
        dir: PathBuf,
        /// The step (`mon quorum`, `osd.0 up`, ...).
        step: &'static str,
        /// How long it waited.
        waited: Duration,
        /// The last attempt's error.
        last: String,
    },

    /// A configuration file given to [`crate::Cluster::join`] is unusable.
    #[error("{}: {detail}", path.display())]
    BadConf {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// A command printed something this crate cannot read.
    #[error("`{command}` printed unexpected output ({detail}): {output}")]
    Parse {
        /// The command line.
        command: String,
        /// What was expected.
        detail: String,
        /// What it printed, trimmed.
        output: String,
    },

    /// Purging or removing what a test left behind failed.
    #[error("cleaning up {what} failed:\n  {}", problems.join("\n  "))]
    Cleanup {
        /// What was being cleaned up.
        what: String,
        /// Each step that failed.
        problems: Vec<String>,
    },
}

impl CephError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Why a test cannot have a cluster here: the Ceph programs are not
/// installed. Tests report it and pass, unless `VIRTSNAP_REQUIRE_BACKENDS`
/// is set ([`crate::shared_or_skip`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    reason: String,
}

impl Skip {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// Why, and what to install.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Skip {}
