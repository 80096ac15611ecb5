//! `cargo xtask ceph up|down`: a throwaway Ceph cluster (1 mon, 1 osd on
//! 127.0.0.1, the `testceph` crate's) that outlives the command, for many
//! test runs or a look by hand. `up` prints `export` lines for
//! `eval "$(cargo xtask ceph up)"`; `down DIR` stops its daemons by the
//! PIDs recorded in `DIR/pids/` and removes `DIR`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use testceph::Cluster;

use crate::cmd;

/// `cargo xtask ceph ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Task {
    /// Start a cluster whose daemons keep running after this command;
    /// print `export VIRTSNAP_TEST_CEPH_CONF=...` and `export CEPH_CONF=...`
    /// for `eval "$(cargo xtask ceph up)"`, so tests join it.
    Up {
        /// The cluster directory, empty or absent (default: a fresh
        /// /tmp/virtsnap-ceph.PID).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Stop the daemons of the cluster in DIR (by the PIDs it recorded)
    /// and remove DIR.
    Down {
        /// The cluster directory `up` printed.
        dir: PathBuf,
    },
}

/// Runs `task`.
pub fn run(task: &Task) -> Result<()> {
    match task {
        Task::Up { dir } => up(dir.as_deref()),
        Task::Down { dir } => down(dir),
    }
}

fn up(dir: Option<&Path>) -> Result<()> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => fresh_dir()?,
    };
    cmd::announce(&format!(
        "ceph: starting a cluster (1 mon, 1 osd on 127.0.0.1) in {}",
        dir.display()
    ));
    let cluster = Cluster::start_detached(&dir)
        .with_context(|| format!("starting a Ceph cluster in {}", dir.display()))?;
    let steps: Vec<String> = cluster
        .startup_steps()
        .iter()
        .map(|(step, at)| format!("{step} {:.1} s", at.as_secs_f64()))
        .collect();
    let conf = quote(cluster.conf());
    println!("export {}={conf}", testceph::CONF_ENV);
    println!("export CEPH_CONF={conf}");
    cmd::announce(&format!(
        "ceph: cluster up in {} (mon {}; {}); stop it with `cargo xtask ceph down {}`",
        cluster.dir().display(),
        cluster.mon_host(),
        steps.join(", "),
        quote(cluster.dir())
    ));
    // The handle of a detached cluster stops nothing when dropped.
    Ok(())
}

fn down(dir: &Path) -> Result<()> {
    let started = Instant::now();
    let stopped = Cluster::teardown(dir)
        .with_context(|| format!("stopping the Ceph cluster in {}", dir.display()))?;
    let what: Vec<String> = stopped
        .iter()
        .map(|daemon| format!("{} (pid {}): {}", daemon.name, daemon.pid, daemon.outcome))
        .collect();
    cmd::announce(&format!(
        "ceph: {}; removed {} in {:.1} s",
        if what.is_empty() {
            "no daemon recorded".to_owned()
        } else {
            what.join(", ")
        },
        dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// A new directory `/tmp/virtsnap-ceph.PID[.N]`.
fn fresh_dir() -> Result<PathBuf> {
    let base = format!("/tmp/virtsnap-ceph.{}", std::process::id());
    for n in 0..100 {
        let dir = if n == 0 {
            PathBuf::from(&base)
        } else {
            PathBuf::from(format!("{base}.{n}"))
        };
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("no free directory name {base}.N under /tmp; remove old ones")
}

/// `path` for a shell command line.
fn quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@%".contains(c))
    {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(quote(Path::new("/tmp/a/ceph.conf")), "/tmp/a/ceph.conf");
        assert_eq!(quote(Path::new("/tmp/a b/it's")), r"'/tmp/a b/it'\''s'");
    }
}
