//! [`Cluster::shared`]: the one cluster of a test process, joined from
//! `VIRTSNAP_TEST_CEPH_CONF` or started on first use, and its cleanup when
//! the process exits.

use std::path::Path;
use std::sync::OnceLock;

use crate::cluster::Cluster;
use crate::error::Skip;
use crate::{CONF_ENV, cli, daemon, sys};

/// What the first call of [`Cluster::shared`] found; every later call
/// gets the same.
#[derive(Debug)]
enum Shared {
    Ready(Cluster),
    Skipped(Skip),
    Failed(String),
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// How the directories of shared clusters start, under `$TMPDIR`.
const PREFIX: &str = "virtsnap-ceph-";

/// The file in a shared cluster's directory holding the test process's
/// PID.
const OWNER_FILE: &str = "owner.pid";

impl Cluster {
    /// The cluster of this test process, the same for every test (and
    /// thread) of it; the first call sets it up, the others wait for it:
    ///
    /// - when `VIRTSNAP_TEST_CEPH_CONF` names a `ceph.conf`, that cluster
    ///   is joined ([`Cluster::join`]) and nothing is started or stopped
    ///   (`eval "$(cargo xtask ceph up)"` sets it, to keep one cluster for
    ///   many test runs);
    /// - otherwise one is started ([`Cluster::start`], about 5 s) in a
    ///   fresh directory under `$TMPDIR`.
    ///
    /// A started cluster is never dropped (it is a static), so its
    /// cleanup is tied to the process instead: the daemons get SIGKILL
    /// from the kernel when the process ends, however it ends
    /// (`PR_SET_PDEATHSIG`), and an `atexit` hook stops them and removes
    /// the directory when it ends normally, which is how the test harness
    /// ends whether tests pass or fail. Only a process killed outright
    /// (SIGKILL, an abort) leaves its directory behind (`virtsnap-ceph-*`
    /// under `$TMPDIR`, its daemons dead); the next test process that
    /// starts a shared cluster removes such directories (their
    /// `owner.pid` names a process that is gone).
    ///
    /// # Errors
    /// A [`Skip`] when the Ceph programs are not installed; see
    /// [`crate::shared_or_skip`] for the project's skip policy.
    ///
    /// # Panics
    /// The programs are there but the cluster fails to start, or the one
    /// of `VIRTSNAP_TEST_CEPH_CONF` cannot be joined: a real failure, never
    /// a skip. Every later call panics with the same message.
    #[track_caller]
    pub fn shared() -> Result<&'static Self, Skip> {
        match SHARED.get_or_init(set_up) {
            Shared::Ready(cluster) => Ok(cluster),
            Shared::Skipped(skip) => Err(skip.clone()),
            Shared::Failed(message) => panic!("{message}"),
        }
    }
}

fn set_up() -> Shared {
    if let Some(conf) = std::env::var_os(CONF_ENV).filter(|conf| !conf.is_empty()) {
        if let Err(err) = cli::require(cli::CLIENT_PROGRAMS) {
            return Shared::Skipped(Skip::new(format!("ceph not installed: {err}")));
        }
        return match Cluster::join(Path::new(&conf)) {
            Ok(cluster) => Shared::Ready(cluster),
            Err(err) => Shared::Failed(format!(
                "cannot join the Ceph cluster of {CONF_ENV}={}: {err}",
                Path::new(&conf).display()
            )),
        };
    }
    if let Err(skip) = crate::installed() {
        return Shared::Skipped(skip);
    }
    sweep_stale(&std::env::temp_dir());
    let dir = match tempfile::Builder::new().prefix(PREFIX).tempdir() {
        Ok(dir) => dir.keep(),
        Err(err) => {
            return Shared::Failed(format!(
                "cannot create a directory for the test Ceph cluster under {}: {err}",
                std::env::temp_dir().display()
            ));
        }
    };
    match Cluster::start(&dir) {
        Ok(cluster) => {
            // For a later process's sweep_stale, should this one be killed.
            let owner = dir.join(OWNER_FILE);
            if let Err(err) = std::fs::write(&owner, format!("{}\n", std::process::id())) {
                eprintln!("testceph: writing {}: {err}", owner.display());
            }
            if !sys::at_exit(stop_shared) {
                eprintln!(
                    "testceph: atexit failed; {} will be left behind (its daemons die with \
                     this process)",
                    dir.display()
                );
            }
            let took = cluster
                .startup_steps()
                .last()
                .map_or(0.0, |(_, at)| at.as_secs_f64());
            eprintln!(
                "testceph: started a Ceph cluster in {} ({took:.1} s)",
                dir.display()
            );
            Shared::Ready(cluster)
        }
        Err(err) => Shared::Failed(format!(
            "the test Ceph cluster failed to start in {}: {err}",
            dir.display()
        )),
    }
}

/// Removes the directories that shared clusters of killed test processes
/// left under `tmp`: named `virtsnap-ceph-*`, with an `owner.pid` naming a
/// process that is gone, and no recorded daemon alive. Anything else
/// (clusters of `cargo xtask ceph up`, of running tests) is left alone.
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let pid_in = |file: &Path| -> Option<i32> {
            std::fs::read_to_string(file).ok()?.trim().parse().ok()
        };
        let Some(owner) = pid_in(&dir.join(OWNER_FILE)) else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let daemons_alive = ["mon.a", "osd.0"].iter().any(|daemon| {
            pid_in(&dir.join(format!("pids/{daemon}.pid"))).is_some_and(daemon::alive)
        });
        if !daemons_alive && std::fs::remove_dir_all(&dir).is_ok() {
            eprintln!(
                "testceph: removed {}, left by a killed test process",
                dir.display()
            );
        }
    }
}

/// At exit: stops the shared cluster if this process started it, and
/// removes its directory.
extern "C" fn stop_shared() {
    // Nothing may unwind into the C library.
    let _ = std::panic::catch_unwind(|| {
        if let Some(Shared::Ready(cluster)) = SHARED.get() {
            cluster.stop();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dirs_of_dead_owners_are_swept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let make = |name: &str, owner: Option<&str>| {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(dir.join("pids")).expect("mkdir");
            if let Some(owner) = owner {
                std::fs::write(dir.join(OWNER_FILE), owner).expect("write");
            }
            dir
        };
        // No such PID: beyond the kernel's pid_max.
        let dead = make("virtsnap-ceph-dead", Some("99999999\n"));
        let me = std::process::id().to_string();
        let live = make("virtsnap-ceph-live", Some(&me));
        let daemon_alive = make("virtsnap-ceph-daemon", Some("99999999\n"));
        std::fs::write(daemon_alive.join("pids/mon.a.pid"), &me).expect("write");
        let unowned = make("virtsnap-ceph-unowned", None);
        let other = make("something-else", Some("99999999\n"));
        sweep_stale(tmp.path());
        assert!(!dead.exists());
        for kept in [live, daemon_alive, unowned, other] {
            assert!(kept.exists(), "{}", kept.display());
        }
    }
}
