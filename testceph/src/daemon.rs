//! The cluster's daemons as processes: spawning `ceph-mon`/`ceph-osd` in
//! the foreground with their output in a log file and their PID recorded,
//! stopping them (SIGTERM, SIGKILL after a grace period), the tail of their
//! logs for errors, and stopping a detached cluster's daemons by the PIDs
//! it recorded.
//!
//! Daemons of an attached cluster die with the test process through
//! `PR_SET_PDEATHSIG`. The kernel sends that signal when the *thread* that
//! spawned the child ends, not the process, and test harnesses run each
//! test on a thread of its own: a daemon spawned by one test's thread would
//! be killed when that test returned. So attached daemons are spawned by
//! one keeper thread that lives as long as the process.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::cli;
use crate::error::CephError;
use crate::sys;

/// How long a daemon gets to stop after SIGTERM before SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Lines of a daemon's logs shown in an error.
const LOG_TAIL_LINES: usize = 15;

/// Whether daemons die with the process that started them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// SIGKILL when the process ends (tests).
    Attached,
    /// Outlive it, in a process group of their own (`cargo xtask ceph up`).
    Detached,
}

/// A running daemon this process started.
#[derive(Debug)]
pub(crate) struct Daemon {
    /// `mon.a` or `osd.0`.
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    /// The cluster directory, for its logs.
    dir: PathBuf,
}

/// Starts `program -c CONF ARGS -f` for daemon `name` of the cluster in
/// `dir`, its output to `dir/log/NAME.out` and its PID in
/// `dir/pids/NAME.pid` (the cmdline starts with `-c CONF`, which
/// [`stop_recorded`] checks).
pub(crate) fn spawn(
    dir: &Path,
    name: &'static str,
    program: &str,
    args: &[&str],
    lifetime: Lifetime,
) -> Result<Daemon, CephError> {
    let out_path = dir.join("log").join(format!("{name}.out"));
    let out = File::create(&out_path)
        .map_err(|err| CephError::io(format!("creating {}", out_path.display()), err))?;
    let err = out
        .try_clone()
        .map_err(|err| CephError::io(format!("opening {}", out_path.display()), err))?;
    let mut cmd = Command::new(program);
    cmd.arg("-c")
        .arg(dir.join("ceph.conf"))
        .args(args)
        .arg("-f")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let child = match lifetime {
        Lifetime::Attached => spawn_kept(cmd),
        Lifetime::Detached => {
            use std::os::unix::process::CommandExt as _;
            // Its own process group: a ^C in the terminal that ran
            // `cargo xtask ceph up` must not reach it later.
            cmd.process_group(0);
            cmd.spawn()
        }
    }
    .map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            CephError::NotInstalled {
                program: program.to_owned(),
                package: cli::package_of(program),
            }
        } else {
            CephError::io(format!("starting {program} for {name}"), err)
        }
    })?;
    let daemon = Daemon {
        name,
        child,
        dir: dir.to_path_buf(),
    };
    let pid_file = dir.join("pids").join(format!("{name}.pid"));
    if let Err(err) = fs::write(&pid_file, format!("{}\n", daemon.child.id())) {
        let mut daemon = daemon;
        daemon.stop();
        return Err(CephError::io(
            format!("writing {}", pid_file.display()),
            err,
        ));
    }
    Ok(daemon)
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The keeper thread's mailbox; the thread lives while this sender does,
/// which is for the rest of the process.
static KEEPER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

/// Spawns `cmd` from the keeper thread, with [`sys::die_with_parent`].
fn spawn_kept(cmd: Command) -> std::io::Result<Child> {
    let sender = {
        let mut keeper = KEEPER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keeper.is_none() {
            let (sender, requests) = mpsc::channel::<SpawnRequest>();
            thread::Builder::new()
                .name("testceph-daemons".into())
                .spawn(move || {
                    for (mut cmd, reply) in requests {
                        sys::die_with_parent(&mut cmd);
                        let _ = reply.send(cmd.spawn());
                    }
                })?;
            *keeper = Some(sender);
        }
        keeper.clone().unwrap_or_else(|| unreachable!("set above"))
    };
    let (reply, answer) = mpsc::channel();
    sender
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("the testceph daemon keeper thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the testceph daemon keeper thread is gone"))?
}

impl Daemon {
    /// `Some(status)` when the daemon has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("cannot wait for it: {err}")),
        }
    }

    /// The error for its having exited with `status` during `during`.
    pub(crate) fn exited_error(&self, status: String, during: &str) -> CephError {
        CephError::DaemonExited {
            name: self.name.to_owned(),
            status,
            during: during.to_owned(),
            log_tail: log_tail(&self.dir, self.name),
        }
    }

    /// Stops it: SIGTERM, SIGKILL after [`STOP_GRACE`], then reaps it.
    /// Returns a complaint when it needed SIGKILL or could not be reaped.
    pub(crate) fn stop(&mut self) -> Option<String> {
        if self.child.try_wait().ok().flatten().is_some() {
            return None;
        }
        let pid = Pid::from_child(&self.child);
        let _ = kill_process(pid, Signal::TERM);
        match cli::wait_until(&mut self.child, Instant::now() + STOP_GRACE) {
            Ok(Some(_)) => None,
            Ok(None) => Some(format!(
                "{} (pid {pid:?}) ignored SIGTERM for {STOP_GRACE:?}; killed it",
                self.name
            )),
            Err(err) => Some(format!("{} (pid {pid:?}): {err}", self.name)),
        }
    }
}

/// The last lines of daemon `name`'s output (`log/NAME.out`) and log file
/// (`log/NAME.log`) in cluster `dir`.
pub(crate) fn log_tail(dir: &Path, name: &str) -> String {
    let mut text = String::new();
    for file in [format!("{name}.out"), format!("{name}.log")] {
        let path = dir.join("log").join(file);
        let body = match fs::read(&path) {
            Ok(bytes) => {
                let body = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = body.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                if tail.is_empty() {
                    "(empty)".to_owned()
                } else {
                    tail.join("\n")
                }
            }
            Err(err) => format!("({err})"),
        };
        text.push_str(&format!("==> {} <==\n{body}\n", path.display()));
    }
    text
}

/// What [`crate::Cluster::teardown`] did with each recorded daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// `mon.a` or `osd.0` (or `mgr.x`, for a prototype's cluster).
    pub name: String,
    /// Its recorded PID.
    pub pid: i32,
    /// What happened: `stopped`, `killed after SIGTERM timed out`, `not
    /// running`, or `PID now belongs to another process; left alone`.
    pub outcome: &'static str,
}

/// Stops the daemons recorded in `dir/pids/NAME.pid` (osd, then mgr, then
/// mon), each only while its `/proc/PID/cmdline` still names `-c
/// DIR/ceph.conf` (a guard against reused PIDs); a zombie counts as
/// stopped (the daemons of a detached cluster are reaped by whoever
/// adopted them, PID 1 maybe, at its own pace).
pub(crate) fn stop_recorded(dir: &Path) -> Result<Vec<Stopped>, CephError> {
    let conf = dir.join("ceph.conf");
    let mut report = Vec::new();
    for name in ["osd.0", "mgr.x", "mon.a"] {
        let pid_file = dir.join("pids").join(format!("{name}.pid"));
        let Ok(text) = fs::read_to_string(&pid_file) else {
            continue;
        };
        let pid: i32 = text.trim().parse().map_err(|_| CephError::BadConf {
            path: pid_file.clone(),
            detail: format!("not a PID: {:?}", text.trim()),
        })?;
        let outcome = match Pid::from_raw(pid) {
            None => "not running",
            Some(_) if !alive(pid) => "not running",
            Some(_) if !cmdline_names(pid, &conf) => {
                "PID now belongs to another process; left alone"
            }
            Some(raw) => {
                let _ = kill_process(raw, Signal::TERM);
                if gone_within(pid, STOP_GRACE) {
                    "stopped"
                } else {
                    let _ = kill_process(raw, Signal::KILL);
                    gone_within(pid, STOP_GRACE);
                    "killed after SIGTERM timed out"
                }
            }
        };
        let _ = fs::remove_file(&pid_file);
        report.push(Stopped {
            name: name.to_owned(),
            pid,
            outcome,
        });
    }
    Ok(report)
}

/// Whether process `pid` exists and is not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .as_deref()
        .and_then(proc_state)
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The state letter of a `/proc/PID/stat` line (after the command name,
/// which may hold spaces and parentheses).
fn proc_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Whether `pid`'s command line holds `-c CONF` (or `--conf CONF`).
fn cmdline_names(pid: i32, conf: &Path) -> bool {
    let Ok(bytes) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let conf = conf.as_os_str().as_encoded_bytes();
    let args: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|pair| (pair[0] == b"-c" || pair[0] == b"--conf") && pair[1] == conf)
}

/// Polls until `pid` is gone or a zombie; whether it was within `limit`.
fn gone_within(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_command_name() {
        assert_eq!(proc_state("12 (ceph-osd) S 1 12 12"), Some('S'));
        assert_eq!(proc_state("12 (a) b (c)) Z 1"), Some('Z'));
        assert_eq!(proc_state("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_its_cmdline_is_read() {
        let me = i32::try_from(std::process::id()).expect("a pid");
        assert!(alive(me));
        assert!(!cmdline_names(me, Path::new("/no/such/ceph.conf")));
    }

    #[test]
    fn a_missing_log_is_said_so() {
        let tail = log_tail(Path::new("/nonexistent"), "mon.a");
        assert!(
            tail.contains("/nonexistent/log/mon.a.out") && tail.contains("No such file"),
            "{tail}"
        );
    }
}
