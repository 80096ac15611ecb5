//! Running the Ceph command-line tools: every call has a deadline (the
//! child is killed when it passes), dies with the calling thread, and turns
//! a non-zero exit into an error carrying its standard error. Also where a
//! program's Debian package is looked up, for "not installed" errors.

use std::ffi::OsStr;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::CephError;
use crate::sys;

/// The programs [`crate::Cluster::start`] runs.
pub(crate) const START_PROGRAMS: &[&str] = &[
    "ceph-mon",
    "ceph-osd",
    "monmaptool",
    "ceph-authtool",
    "ceph",
    "rados",
    "rbd",
];

/// The programs a test needs to use a running cluster.
pub(crate) const CLIENT_PROGRAMS: &[&str] = &["ceph", "rados", "rbd"];

/// The Debian package that provides `program`.
pub(crate) fn package_of(program: &str) -> &'static str {
    match program {
        "ceph-mon" => "ceph-mon",
        "ceph-osd" => "ceph-osd",
        "monmaptool" => "ceph-base, a dependency of ceph-mon",
        _ => "ceph-common",
    }
}

/// Fails naming the first of `programs` that is not on PATH.
pub(crate) fn require(programs: &[&str]) -> Result<(), CephError> {
    match programs
        .iter()
        .find(|program| find_on_path(program).is_none())
    {
        Some(program) => Err(not_installed(program)),
        None => Ok(()),
    }
}

fn not_installed(program: &str) -> CephError {
    CephError::NotInstalled {
        program: program.to_owned(),
        package: package_of(program),
    }
}

/// Finds an executable `program` on `$PATH`.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// A Ceph client tool (`ceph`, `rbd`, `rados`) pointed at the cluster of
/// `conf`: `--conf CONF` first, and `CEPH_CONF` for anything it runs.
pub(crate) fn client(program: &str, conf: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("--conf").arg(conf).env("CEPH_CONF", conf);
    cmd
}

/// Runs `cmd` to completion within `timeout`; returns its standard output.
/// Its standard input is empty. Fails when it cannot start (a missing
/// program is [`CephError::NotInstalled`]), exits non-zero, or overruns
/// (it is killed).
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Result<Vec<u8>, CephError> {
    let line = display(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    sys::die_with_parent(cmd);
    let mut child = cmd.spawn().map_err(|err| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if err.kind() == std::io::ErrorKind::NotFound {
            not_installed(&program)
        } else {
            CephError::io(format!("starting `{line}`"), err)
        }
    })?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = wait_until(&mut child, Instant::now() + timeout)
        .map_err(|err| CephError::io(format!("waiting for `{line}`"), err))?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(CephError::Timeout {
            command: line,
            waited: timeout,
        });
    };
    if !status.success() {
        return Err(CephError::Command {
            command: line,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
        });
    }
    Ok(stdout)
}

/// [`run`], with the output as text.
pub(crate) fn run_text(cmd: &mut Command, timeout: Duration) -> Result<String, CephError> {
    run(cmd, timeout).map(|out| String::from_utf8_lossy(&out).into_owned())
}

/// Reads a pipe to its end on a thread of its own, so a chatty child never
/// blocks on a full pipe while it is waited for.
fn collect(pipe: Option<impl std::io::Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the capture; the exit status still tells.
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits for `child` until `deadline`; then kills it, reaps it and
/// returns `None`.
pub(crate) fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The command as a shell-like line, for messages: the program's file
/// name, then its arguments, quoted when they hold anything unusual.
pub(crate) fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_else(|| cmd.get_program());
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` as the shell would need it: bare when plain, else single-quoted.
pub(crate) fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_status_and_stderr_come_back() {
        let out = run_text(
            Command::new("sh").args(["-c", "echo hello; echo noise >&2"]),
            Duration::from_secs(10),
        )
        .expect("sh runs");
        assert_eq!(out, "hello\n");
        let err = run(
            Command::new("sh").args(["-c", "echo bad thing >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .expect_err("exit 3");
        let message = err.to_string();
        assert!(
            message.contains("exit status: 3") && message.contains("bad thing"),
            "{message}"
        );
    }

    #[test]
    fn an_overrunning_command_is_killed() {
        let started = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200))
            .expect_err("times out");
        assert!(matches!(err, CephError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let err = run(
            &mut Command::new("ceph-no-such-tool"),
            Duration::from_secs(5),
        )
        .expect_err("missing");
        let message = err.to_string();
        assert!(
            message.contains("ceph-no-such-tool not found") && message.contains("cargo xtask deps"),
            "{message}"
        );
    }

    #[test]
    fn big_output_does_not_block() {
        let out = run(
            Command::new("head").args(["-c", "3000000", "/dev/zero"]),
            Duration::from_secs(20),
        )
        .expect("head runs");
        assert_eq!(out.len(), 3_000_000);
    }

    #[test]
    fn command_lines_quote_odd_words() {
        let mut cmd = Command::new("/usr/bin/rbd");
        cmd.args(["ls", "a b", "it's"]);
        assert_eq!(display(&cmd), r"rbd ls 'a b' 'it'\''s'");
    }
}
