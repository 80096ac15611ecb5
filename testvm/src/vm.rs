//! A running test guest: [`Options`] for a boot, QEMU's command line (TCG,
//! the built kernel and initramfs, scratch qcow2 disks, a tar payload
//! disk, three Unix sockets), waiting for `TESTVM-READY`, and [`TestVm`]'s
//! clients for the guest's command shell, qemu-guest-agent and QMP.
//! Dropping a [`TestVm`] kills QEMU and removes its run directory.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::Error;
use crate::artefacts::{Artefacts, TAR};
use crate::channel::{LineConn, ReadError};
use crate::error::ConsoleTail;
use crate::slots::{self, Slot};

/// The line the guest prints on its console once it serves commands.
pub(crate) const READY_MARKER: &str = "TESTVM-READY";
/// The virtio-serial port of the guest's command shell.
pub(crate) const SHELL_PORT: &str = "testvm.shell";
/// The virtio-serial port of qemu-guest-agent.
pub(crate) const AGENT_PORT: &str = "org.qemu.guest_agent.0";
/// The serial of the payload disk.
pub(crate) const PAYLOAD_SERIAL: &str = "payload";

/// Environment variable: when set to `1`, a dropped guest's run directory
/// (console log, QEMU's stderr, disks) is kept and its path printed.
pub const KEEP_ENV: &str = "VIRTSNAP_TESTVM_KEEP";

/// Default time for a guest command ([`Options::command_timeout`]).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Time for a qemu-guest-agent or QMP exchange ([`TestVm::qga`], [`TestVm::qmp`]).
const JSON_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the console log shown in errors.
const CONSOLE_TAIL_LINES: usize = 40;

/// How to boot a guest. Every field has a default ([`Options::new`]):
/// no disks, no payload, 1024 MiB, 2 CPUs, 120 s to become ready, 120 s per
/// command, 30 min to wait for a free guest slot (guests queue behind
/// long guest suites: the LVM one runs about 10 min under TCG).
#[derive(Debug, Clone)]
pub struct Options {
    disks: Vec<u64>,
    payload: Option<PathBuf>,
    memory_mib: u32,
    cpus: u32,
    ready_timeout: Duration,
    command_timeout: Duration,
    slot_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            disks: Vec::new(),
            payload: None,
            memory_mib: 1024,
            cpus: 2,
            ready_timeout: Duration::from_secs(120),
            command_timeout: COMMAND_TIMEOUT,
            slot_timeout: Duration::from_secs(1800),
        }
    }
}

impl Options {
    /// The defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an empty scratch disk of `bytes` (a sparse qcow2 file in the run
    /// directory). The guest sees disk `i` (counting from 0 in the order
    /// added) as [`TestVm::scratch_device`]`(i)`; QMP knows its drive as
    /// `scratch<i>`.
    #[must_use]
    pub fn disk(mut self, bytes: u64) -> Self {
        self.disks.push(bytes);
        self
    }

    /// Packs the directory `dir` into a tar archive attached as a read-only
    /// raw disk, which the guest unpacks to `/payload` before it is ready
    /// (how test binaries built on the host get in: the guest has glibc
    /// 2.36 of Debian 12).
    #[must_use]
    pub fn payload(mut self, dir: impl Into<PathBuf>) -> Self {
        self.payload = Some(dir.into());
        self
    }

    /// The guest's memory in MiB (default 1024).
    #[must_use]
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// The guest's CPUs (default 2; under TCG more are rarely faster).
    #[must_use]
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus.max(1);
        self
    }

    /// How long QEMU may take from start to a guest that answers commands
    /// (default 120 s; ~5 s is usual).
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long [`TestVm::run`] waits for a command (default 120 s).
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long to wait for a free guest slot when other tests' guests use
    /// them all (default 30 min; see `VIRTSNAP_TESTVM_PARALLEL`).
    #[must_use]
    pub fn slot_timeout(mut self, timeout: Duration) -> Self {
        self.slot_timeout = timeout;
        self
    }
}

/// What a guest command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Its exit status (255 when the guest could not even start it).
    pub rc: i32,
    /// What it wrote on standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// What it wrote on standard error (invalid UTF-8 replaced).
    pub stderr: String,
}

impl Output {
    /// Whether it exited with status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.rc == 0
    }
}

/// A running test guest: QEMU with TCG, the built kernel and initramfs,
/// and the guest serving commands. Dropping it kills QEMU.
///
/// Every method takes `&self` and may be called from several threads;
/// commands run one at a time.
#[derive(Debug)]
pub struct TestVm {
    child: Mutex<Child>,
    shell: Mutex<Shell>,
    run_dir: Option<tempfile::TempDir>,
    paths: RunPaths,
    disks: Vec<PathBuf>,
    command_timeout: Duration,
    boot_time: Duration,
    _slot: Slot,
}

/// The files of one guest in its run directory.
#[derive(Debug, Clone)]
struct RunPaths {
    dir: PathBuf,
    console: PathBuf,
    qemu_stderr: PathBuf,
    shell: PathBuf,
    qga: PathBuf,
    qmp: PathBuf,
}

impl RunPaths {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            console: dir.join("console.log"),
            qemu_stderr: dir.join("qemu.stderr"),
            shell: dir.join("shell.sock"),
            qga: dir.join("qga.sock"),
            qmp: dir.join("qmp.sock"),
        }
    }
}

/// The command shell's connection (opened at boot, kept for the guest's
/// life: the guest powers off when it closes) and the next request id.
#[derive(Debug)]
struct Shell {
    conn: Option<LineConn>,
    next_id: u64,
}

/// Locks `mutex`, also after a panic in another holder (the data stays
/// usable: a connection, a child process).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TestVm {
    /// Boots the guest built for this source tree ([`Artefacts::locate`],
    /// then [`Artefacts::boot`]).
    ///
    /// # Errors
    /// See [`Artefacts::locate`] and [`Artefacts::boot`].
    pub fn boot(options: &Options) -> Result<Self, Error> {
        Artefacts::locate()?.boot(options)
    }

    /// Why the guest cannot be booted on this host (`qemu-system-x86_64`
    /// missing, the guest not built, ...), or `None` when it can.
    #[must_use]
    pub fn skip_reason() -> Option<String> {
        Artefacts::locate().err().map(|err| err.to_string())
    }

    /// The guest path of scratch disk `index`:
    /// `/dev/disk/by-id/virtio-scratch<index>`.
    #[must_use]
    pub fn scratch_device(index: usize) -> String {
        format!("/dev/disk/by-id/virtio-scratch{index}")
    }

    /// Runs `script` with `sh` in the guest (as root, in `/root`, stdin
    /// from `/dev/null`), waiting up to the boot's command timeout.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it does not finish in time (it goes on in the
    /// guest, and later commands wait for it), [`Error::QemuExited`] or
    /// [`Error::Protocol`] when the guest is gone. A non-zero exit status
    /// is not an error: see [`Output::rc`] or [`TestVm::run_ok`].
    pub fn run(&self, script: &str) -> Result<Output, Error> {
        self.run_timeout(script, self.command_timeout)
    }

    /// [`TestVm::run`] with its own timeout.
    ///
    /// # Errors
    /// See [`TestVm::run`].
    pub fn run_timeout(&self, script: &str, timeout: Duration) -> Result<Output, Error> {
        let deadline = Instant::now() + timeout;
        let what = || format!("guest command `{}`", script_head(script));
        let mut shell = lock(&self.shell);
        let id = shell.next_id;
        shell.next_id += 1;
        let mut conn = match shell.conn.take() {
            Some(conn) => conn,
            None => LineConn::connect(&self.paths.shell, deadline).map_err(|err| {
                self.broken(
                    "command shell",
                    &format!("cannot connect to {}: {err}", self.paths.shell.display()),
                )
            })?,
        };
        let request = format!("{id} {}\n", BASE64.encode(script));
        if let Err(err) = conn.send(request.as_bytes(), deadline) {
            return Err(self.broken("command shell", &format!("sending {}: {err}", what())));
        }
        loop {
            match conn.read_line(deadline) {
                Ok(line) => match parse_answer(&line) {
                    Ok((answer_id, output)) if answer_id == id => {
                        shell.conn = Some(conn);
                        return Ok(output);
                    }
                    // The late answer of a command that timed out earlier.
                    Ok(_) => {}
                    Err(detail) => {
                        // Keep the connection: closing it would power the
                        // guest off, and later answers are told apart by id.
                        shell.conn = Some(conn);
                        return Err(self.broken("command shell", &format!("{}: {detail}", what())));
                    }
                },
                Err(ReadError::Timeout) => {
                    // Keep the connection: closing it would power the guest off.
                    shell.conn = Some(conn);
                    return Err(Error::Timeout {
                        what: format!("{} (it goes on in the guest)", what()),
                        waited: timeout,
                        console: self.console_tail(),
                    });
                }
                Err(ReadError::Eof) => {
                    return Err(self.broken(
                        "command shell",
                        &format!("{}: the guest closed the port", what()),
                    ));
                }
                Err(ReadError::Io(err)) => {
                    return Err(self.broken("command shell", &format!("{}: {err}", what())));
                }
            }
        }
    }

    /// Runs `script` like [`TestVm::run`] and returns its standard output,
    /// requiring exit status 0.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] (with both outputs) on a non-zero status;
    /// see [`TestVm::run`] for the rest.
    pub fn run_ok(&self, script: &str) -> Result<String, Error> {
        let output = self.run(script)?;
        if output.success() {
            Ok(output.stdout)
        } else {
            Err(Error::CommandFailed {
                script: script.to_owned(),
                output,
            })
        }
    }

    /// Sends one command to qemu-guest-agent, e.g.
    /// `json!({"execute": "guest-fsfreeze-status"})`, and returns its
    /// `return` value. Each call connects, synchronises with
    /// `guest-sync-delimited` (dropping anything stale) and disconnects, so
    /// another client may use [`TestVm::qga_socket`] between calls (one
    /// client at a time). Waits up to 60 s; commands that never answer
    /// (`guest-shutdown`, `guest-suspend-*`) time out.
    ///
    /// # Errors
    /// [`Error::Agent`] when the agent answers with an error,
    /// [`Error::Timeout`] or [`Error::Protocol`] when it does not answer.
    pub fn qga(&self, command: &Value) -> Result<Value, Error> {
        self.qga_timeout(command, JSON_TIMEOUT)
    }

    /// [`TestVm::qga`] with its own timeout.
    ///
    /// # Errors
    /// See [`TestVm::qga`].
    pub fn qga_timeout(&self, command: &Value, timeout: Duration) -> Result<Value, Error> {
        const CHANNEL: &str = "qemu-guest-agent";
        let name = command_name(command)?;
        let deadline = Instant::now() + timeout;
        let mut conn = self.connect_json(CHANNEL, &self.paths.qga, deadline)?;
        let sync_id = sync_id();
        // 0xFF first: it makes the agent drop a partial request of an
        // earlier client; its (error) answer is skipped with the rest.
        let mut sync = vec![0xFF];
        sync.extend_from_slice(
            json!({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}})
                .to_string()
                .as_bytes(),
        );
        sync.push(b'\n');
        self.send_json(CHANNEL, &mut conn, &sync, deadline, timeout)?;
        loop {
            // Anything before the sync answer is stale, even half a line.
            let reply = self.read_json(
                CHANNEL,
                &mut conn,
                deadline,
                timeout,
                "guest-sync-delimited",
                false,
            )?;
            if reply.get("return") == Some(&json!(sync_id)) {
                break;
            }
        }
        self.exchange(CHANNEL, &mut conn, command, deadline, timeout)?
            .map_err(|(class, desc)| Error::Agent {
                command: name.to_owned(),
                class,
                desc,
            })
    }

    /// Sends one QMP command, e.g. `json!({"execute": "query-status"})`,
    /// and returns its `return` value. Each call connects (greeting,
    /// `qmp_capabilities`), skips events and disconnects, so another client
    /// may use [`TestVm::qmp_socket`] between calls (one at a time). Waits
    /// up to 60 s.
    ///
    /// # Errors
    /// [`Error::Qmp`] when QEMU answers with an error, [`Error::Timeout`] or
    /// [`Error::Protocol`] when it does not answer.
    pub fn qmp(&self, command: &Value) -> Result<Value, Error> {
        const CHANNEL: &str = "QMP";
        let name = command_name(command)?;
        let timeout = JSON_TIMEOUT;
        let deadline = Instant::now() + timeout;
        let mut conn = self.connect_json(CHANNEL, &self.paths.qmp, deadline)?;
        loop {
            let greeting =
                self.read_json(CHANNEL, &mut conn, deadline, timeout, "the greeting", true)?;
            if greeting.get("QMP").is_some() {
                break;
            }
        }
        let qmp_error = |command: &str| {
            let command = command.to_owned();
            move |(class, desc)| Error::Qmp {
                command,
                class,
                desc,
            }
        };
        let capabilities = json!({"execute": "qmp_capabilities"});
        self.exchange(CHANNEL, &mut conn, &capabilities, deadline, timeout)?
            .map_err(qmp_error("qmp_capabilities"))?;
        self.exchange(CHANNEL, &mut conn, command, deadline, timeout)?
            .map_err(qmp_error(name))
    }

    /// QEMU's QMP socket (a chardev server: one client at a time).
    #[must_use]
    pub fn qmp_socket(&self) -> &Path {
        &self.paths.qmp
    }

    /// The host end of qemu-guest-agent's virtio-serial port (one client at
    /// a time; start with `guest-sync-delimited`).
    #[must_use]
    pub fn qga_socket(&self) -> &Path {
        &self.paths.qga
    }

    /// The host file of scratch disk `index` (a qcow2 image QEMU has open).
    #[must_use]
    pub fn scratch_image(&self, index: usize) -> Option<&Path> {
        self.disks.get(index).map(PathBuf::as_path)
    }

    /// Everything the guest printed on its serial console so far (the
    /// kernel's errors, the init script's messages, `TESTVM-READY`).
    #[must_use]
    pub fn console_log(&self) -> String {
        read_lossy(&self.paths.console)
    }

    /// The guest's run directory: sockets, console log, disks.
    #[must_use]
    pub fn run_dir(&self) -> &Path {
        &self.paths.dir
    }

    /// QEMU's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// How long the boot took, from starting QEMU to the guest's first
    /// answer on the command shell.
    #[must_use]
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    fn console_tail(&self) -> ConsoleTail {
        ConsoleTail {
            path: self.paths.console.clone(),
            text: tail_lines(&self.console_log(), CONSOLE_TAIL_LINES),
        }
    }

    /// [`Error::QemuExited`] when QEMU has ended (waiting up to `grace` for
    /// it to be reaped), else `None`.
    fn exited(&self, grace: Duration) -> Option<Error> {
        let deadline = Instant::now() + grace;
        loop {
            let status = lock(&self.child).try_wait();
            match status {
                Ok(Some(status)) => {
                    return Some(Error::QemuExited {
                        status: status.to_string(),
                        stderr: read_lossy(&self.paths.qemu_stderr).trim().to_owned(),
                        console: self.console_tail(),
                    });
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The error for a broken channel: QEMU's exit when it has ended,
    /// else a protocol error.
    fn broken(&self, channel: &'static str, detail: &str) -> Error {
        self.exited(Duration::from_secs(2))
            .unwrap_or_else(|| Error::Protocol {
                channel,
                detail: detail.to_owned(),
                console: self.console_tail(),
            })
    }

    fn connect_json(
        &self,
        channel: &'static str,
        path: &Path,
        deadline: Instant,
    ) -> Result<LineConn, Error> {
        LineConn::connect(path, deadline).map_err(|err| {
            self.broken(
                channel,
                &format!("cannot connect to {}: {err}", path.display()),
            )
        })
    }

    fn send_json(
        &self,
        channel: &'static str,
        conn: &mut LineConn,
        bytes: &[u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), Error> {
        conn.send(bytes, deadline).map_err(|err| {
            if err.kind() == std::io::ErrorKind::TimedOut
                || err.kind() == std::io::ErrorKind::WouldBlock
            {
                Error::Timeout {
                    what: format!("{channel}: sending a command (is another client connected?)"),
                    waited: timeout,
                    console: self.console_tail(),
                }
            } else {
                self.broken(channel, &format!("sending a command: {err}"))
            }
        })
    }

    /// Sends `request` and reads up to its answer, skipping events:
    /// `Ok(return)` or `Err((class, desc))`.
    fn exchange(
        &self,
        channel: &'static str,
        conn: &mut LineConn,
        request: &Value,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Result<Value, (String, String)>, Error> {
        let name = request
            .get("execute")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');
        self.send_json(channel, conn, &bytes, deadline, timeout)?;
        loop {
            let reply = self.read_json(channel, conn, deadline, timeout, name, true)?;
            if let Some(result) = reply_result(&reply) {
                return Ok(result);
            }
        }
    }

    /// The next JSON object on `conn` (leading 0xFF sync bytes and blank
    /// lines skipped). A line that is no JSON object is an error when
    /// `strict`, and skipped otherwise.
    fn read_json(
        &self,
        channel: &'static str,
        conn: &mut LineConn,
        deadline: Instant,
        timeout: Duration,
        waiting_for: &str,
        strict: bool,
    ) -> Result<Value, Error> {
        loop {
            let line = match conn.read_line(deadline) {
                Ok(line) => line,
                Err(ReadError::Timeout) => {
                    return Err(Error::Timeout {
                        what: format!(
                            "{channel}: waiting for the answer to `{waiting_for}` \
                             (is another client connected?)"
                        ),
                        waited: timeout,
                        console: self.console_tail(),
                    });
                }
                Err(ReadError::Eof) => {
                    return Err(self.broken(
                        channel,
                        &format!("closed while waiting for `{waiting_for}`"),
                    ));
                }
                Err(ReadError::Io(err)) => {
                    return Err(
                        self.broken(channel, &format!("waiting for `{waiting_for}`: {err}"))
                    );
                }
            };
            let text = strip_sync_bytes(&line);
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(text) {
                Ok(value) if value.is_object() => return Ok(value),
                _ if !strict => {}
                _ => {
                    return Err(self.broken(
                        channel,
                        &format!(
                            "waiting for `{waiting_for}`, got a line that is not a JSON object: {}",
                            String::from_utf8_lossy(text)
                        ),
                    ));
                }
            }
        }
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
        if std::env::var_os(KEEP_ENV).is_some_and(|v| v == "1")
            && let Some(dir) = self.run_dir.take()
        {
            eprintln!("testvm: kept the run directory {}", dir.keep().display());
        }
    }
}

impl Artefacts {
    /// Boots these artefacts: takes a guest slot, creates the run directory
    /// (scratch disks, payload disk, sockets, console log), starts
    /// `qemu-system-x86_64` with TCG, waits for `TESTVM-READY` and for the
    /// guest's first answer on the command shell.
    ///
    /// # Errors
    /// [`Error::SlotTimeout`], [`Error::Setup`] or [`Error::Io`] while
    /// preparing; [`Error::QemuExited`] or [`Error::BootTimeout`] (with the
    /// console's tail) while booting.
    pub fn boot(&self, options: &Options) -> Result<TestVm, Error> {
        let tar = match &options.payload {
            Some(_) => Some(TAR.find()?),
            None => None,
        };
        let slot = slots::acquire(options.slot_timeout)?;
        remove_orphaned_run_dirs(&std::env::temp_dir());
        let run_dir = tempfile::Builder::new()
            .prefix(RUN_DIR_PREFIX)
            .tempdir()
            .map_err(|err| Error::io("creating the guest's run directory", err))?;
        let owner = run_dir.path().join(OWNER_FILE);
        std::fs::write(&owner, std::process::id().to_string())
            .map_err(|err| Error::io(format!("writing {}", owner.display()), err))?;
        let paths = RunPaths::new(run_dir.path());
        check_socket_path(&paths.shell)?;

        let mut disks = Vec::new();
        for (index, bytes) in options.disks.iter().enumerate() {
            let image = paths.dir.join(format!("scratch{index}.qcow2"));
            let mut create = Command::new(&self.qemu_img);
            create
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&image)
                .arg(bytes.to_string());
            run_setup(&mut create)?;
            disks.push(image);
        }
        let payload = match (&options.payload, tar) {
            (Some(dir), Some(tar)) => {
                let archive = paths.dir.join("payload.tar");
                let mut pack = Command::new(tar);
                pack.arg("--create")
                    .arg("--file")
                    .arg(&archive)
                    .arg("--directory")
                    .arg(dir)
                    .args(["--numeric-owner", "--owner=0", "--group=0", "."]);
                run_setup(&mut pack)?;
                Some(archive)
            }
            _ => None,
        };

        let stderr = File::create(&paths.qemu_stderr)
            .map_err(|err| Error::io(format!("creating {}", paths.qemu_stderr.display()), err))?;
        let args = qemu_args(self, options, &paths, &disks, payload.as_deref())?;
        let started = Instant::now();
        let child = Command::new(&self.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|err| Error::io(format!("starting {}", self.qemu.display()), err))?;
        // From here on, dropping `vm` (also on an error) kills QEMU.
        let mut vm = TestVm {
            child: Mutex::new(child),
            shell: Mutex::new(Shell {
                conn: None,
                next_id: 1,
            }),
            run_dir: Some(run_dir),
            paths,
            disks,
            command_timeout: options.command_timeout,
            boot_time: Duration::ZERO,
            _slot: slot,
        };
        vm.wait_ready(started, options.ready_timeout)?;
        vm.boot_time = started.elapsed();
        eprintln!(
            "testvm: guest ready in {:.1} s (QEMU pid {}, run directory {})",
            vm.boot_time.as_secs_f64(),
            vm.pid(),
            vm.paths.dir.display()
        );
        Ok(vm)
    }
}

impl TestVm {
    /// Waits for the ready line, then for the answer to a first command,
    /// which also arms the guest's power-off when the host goes away.
    fn wait_ready(&self, started: Instant, timeout: Duration) -> Result<(), Error> {
        let deadline = started + timeout;
        loop {
            if let Some(err) = self.exited(Duration::ZERO) {
                return Err(err);
            }
            if self
                .console_log()
                .lines()
                .any(|line| line.starts_with(READY_MARKER))
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::BootTimeout {
                    waited: timeout,
                    console: self.console_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let output = self.run_timeout("echo ready", left.max(Duration::from_secs(30)))?;
        if output.stdout == "ready\n" {
            Ok(())
        } else {
            Err(self.broken(
                "command shell",
                &format!("the first command answered {output:?}"),
            ))
        }
    }
}

/// The name prefix of run directories in the temporary directory.
const RUN_DIR_PREFIX: &str = "virtsnap-testvm.";
/// The file of a run directory naming the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// Removes the run directories of test processes that died without
/// dropping their guest (the guest powered itself off; its disks and logs
/// stayed). A directory is left alone while its owner lives, and for a
/// minute after its creation when it names no owner yet. Best effort.
fn remove_orphaned_run_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let is_run_dir = entry
            .file_name()
            .to_string_lossy()
            .starts_with(RUN_DIR_PREFIX)
            && entry.file_type().is_ok_and(|kind| kind.is_dir());
        if is_run_dir && is_orphaned(&entry.path()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn is_orphaned(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join(OWNER_FILE)) {
        Ok(pid) => pid
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()),
        Err(_) => std::fs::metadata(dir)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60)),
    }
}

/// QEMU's command line for one guest. Always TCG: the guest is a stock
/// kernel, and this project's hosts may offer only a paravirtual KVM
/// (`kvm_pvm`) on which such a kernel crawls or dies.
fn qemu_args(
    artefacts: &Artefacts,
    options: &Options,
    paths: &RunPaths,
    disks: &[PathBuf],
    payload: Option<&Path>,
) -> Result<Vec<OsString>, Error> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
    let console = option_path(&paths.console)?;
    let shell = option_path(&paths.shell)?;
    let qga = option_path(&paths.qga)?;
    let qmp = option_path(&paths.qmp)?;
    push(&["-accel", "tcg,thread=multi", "-cpu", "max"]);
    push(&[
        "-smp",
        &options.cpus.to_string(),
        "-m",
        &options.memory_mib.to_string(),
    ]);
    push(&[
        "-machine",
        "q35",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-append", "console=ttyS0 quiet panic=-1"]);
    push(&[
        "-chardev",
        &format!("file,id=console,path={console}"),
        "-serial",
        "chardev:console",
    ]);
    push(&["-device", "virtio-rng-pci"]);
    push(&[
        "-chardev",
        &format!("socket,id=qmp,path={qmp},server=on,wait=off"),
        "-mon",
        "chardev=qmp,mode=control",
    ]);
    push(&["-device", "virtio-serial-pci"]);
    push(&[
        "-chardev",
        &format!("socket,id=qga,path={qga},server=on,wait=off"),
    ]);
    push(&[
        "-device",
        &format!("virtserialport,chardev=qga,name={AGENT_PORT}"),
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=shell,path={shell},server=on,wait=off"),
    ]);
    push(&[
        "-device",
        &format!("virtserialport,chardev=shell,name={SHELL_PORT}"),
    ]);
    for (index, image) in disks.iter().enumerate() {
        let image = option_path(image)?;
        push(&[
            "-drive",
            &format!(
                "file={image},if=none,id=scratch{index},format=qcow2,cache=unsafe,discard=unmap"
            ),
            "-device",
            &format!("virtio-blk-pci,drive=scratch{index},serial=scratch{index}"),
        ]);
    }
    if let Some(archive) = payload {
        let archive = option_path(archive)?;
        push(&[
            "-drive",
            &format!("file={archive},if=none,id={PAYLOAD_SERIAL},format=raw,readonly=on"),
            "-device",
            &format!("virtio-blk-pci,drive={PAYLOAD_SERIAL},serial={PAYLOAD_SERIAL}"),
        ]);
    }
    args.extend([
        OsString::from("-kernel"),
        artefacts.kernel.clone().into_os_string(),
        OsString::from("-initrd"),
        artefacts.initrd.clone().into_os_string(),
    ]);
    Ok(args)
}

/// `path` inside a QEMU option string, where `,` is written `,,`.
fn option_path(path: &Path) -> Result<String, Error> {
    path.to_str()
        .map(|text| text.replace(',', ",,"))
        .ok_or_else(|| {
            Error::io(
                format!("the guest's run directory {} is not UTF-8", path.display()),
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            )
        })
}

/// Unix socket paths are limited to 107 bytes.
fn check_socket_path(path: &Path) -> Result<(), Error> {
    if path.as_os_str().len() < 100 {
        Ok(())
    } else {
        Err(Error::io(
            format!(
                "the guest's socket path {} is too long for a Unix socket; \
                 set TMPDIR to a shorter directory",
                path.display()
            ),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ))
    }
}

/// Runs a host command preparing the guest; fails with its stderr.
fn run_setup(cmd: &mut Command) -> Result<(), Error> {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Error::io(format!("running `{line}`"), err))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Setup {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Parses the guest's answer `R ID RC BASE64(stdout) BASE64(stderr)`.
fn parse_answer(line: &[u8]) -> Result<(u64, Output), String> {
    let text = std::str::from_utf8(line).map_err(|_| "an answer that is not ASCII".to_owned())?;
    let bad = || {
        format!(
            "a malformed answer: {:?}",
            text.chars().take(200).collect::<String>()
        )
    };
    let mut fields = text.split(' ');
    let (Some("R"), Some(id), Some(rc), Some(stdout), Some(stderr), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(bad());
    };
    let id = id.parse().map_err(|_| bad())?;
    let rc = rc.parse().map_err(|_| bad())?;
    let decode = |field: &str| {
        BASE64
            .decode(field)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|err| format!("{}: {err}", bad()))
    };
    Ok((
        id,
        Output {
            rc,
            stdout: decode(stdout)?,
            stderr: decode(stderr)?,
        },
    ))
}

/// The `execute` name of a QMP or qemu-ga command.
fn command_name(command: &Value) -> Result<&str, Error> {
    command
        .get("execute")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::io(
                format!("not a command (an object with an \"execute\" name): {command}"),
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            )
        })
}

/// `Some(Ok(return))`, `Some(Err((class, desc)))` for an answer; `None` for
/// anything else (an event).
fn reply_result(reply: &Value) -> Option<Result<Value, (String, String)>> {
    if let Some(value) = reply.get("return") {
        return Some(Ok(value.clone()));
    }
    let error = reply.get("error")?;
    let field = |name: &str| {
        error
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    Some(Err((field("class"), field("desc"))))
}

/// The part of a line after its last 0xFF (qemu-ga's sync delimiter),
/// without surrounding whitespace.
fn strip_sync_bytes(line: &[u8]) -> &[u8] {
    let start = line.iter().rposition(|&b| b == 0xFF).map_or(0, |i| i + 1);
    line[start..].trim_ascii()
}

/// A number for `guest-sync-delimited` that no earlier client used.
fn sync_id() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    (std::process::id().rotate_left(16) ^ nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed))
        & 0x7fff_ffff
}

/// The first line of a script, shortened, for messages.
fn script_head(script: &str) -> String {
    let first = script.trim().lines().next().unwrap_or_default();
    let mut head: String = first.chars().take(80).collect();
    if head.len() < first.len() || script.trim().lines().nth(1).is_some() {
        head.push_str(" ...");
    }
    head
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The last `count` lines of `text`.
fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    let mut tail = lines[start..].join("\n");
    if !tail.is_empty() {
        tail.push('\n');
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artefacts() -> Artefacts {
        Artefacts {
            dir: PathBuf::from("/cache/k"),
            kernel: PathBuf::from("/cache/k/vmlinuz"),
            initrd: PathBuf::from("/cache/k/initrd.img"),
            qemu: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            qemu_img: PathBuf::from("/usr/bin/qemu-img"),
        }
    }

    #[test]
    fn answers_parse_with_empty_outputs_and_reject_garbage() {
        let (id, output) = parse_answer(b"R 7 3 aGkK ").expect("valid");
        assert_eq!(id, 7);
        assert_eq!(
            output,
            Output {
                rc: 3,
                stdout: "hi\n".into(),
                stderr: String::new()
            }
        );
        for bad in [
            &b"R 7 0 aGkK"[..],
            b"X 7 0  ",
            b"R x 0  ",
            b"R 7 0 !! ",
            b"R 7 0   extra",
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn qemu_runs_tcg_with_escaped_paths_disks_and_payload() {
        let paths = RunPaths::new(Path::new("/tmp/a,b"));
        let disks = [PathBuf::from("/tmp/a,b/scratch0.qcow2")];
        let args = qemu_args(
            &artefacts(),
            &Options::new().memory_mib(512).cpus(1),
            &paths,
            &disks,
            Some(Path::new("/tmp/a,b/payload.tar")),
        )
        .expect("UTF-8 paths");
        let line = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.starts_with("-accel tcg,thread=multi -cpu max -smp 1 -m 512 "),
            "{line}"
        );
        assert!(
            line.contains("path=/tmp/a,,b/shell.sock,server=on,wait=off"),
            "{line}"
        );
        assert!(
            line.contains("file=/tmp/a,,b/scratch0.qcow2,if=none,id=scratch0,"),
            "{line}"
        );
        assert!(
            line.contains("virtio-blk-pci,drive=scratch0,serial=scratch0"),
            "{line}"
        );
        assert!(line.contains("format=raw,readonly=on"), "{line}");
        assert!(line.contains("name=org.qemu.guest_agent.0"), "{line}");
        assert!(
            line.ends_with("-kernel /cache/k/vmlinuz -initrd /cache/k/initrd.img"),
            "{line}"
        );
    }

    #[test]
    fn sync_bytes_and_blanks_are_stripped() {
        assert_eq!(strip_sync_bytes(b"\xff{\"return\": 1}"), b"{\"return\": 1}");
        assert_eq!(
            strip_sync_bytes(b"{\"x\":1}\xff {\"return\": 2} "),
            b"{\"return\": 2}"
        );
        assert_eq!(strip_sync_bytes(b"  "), b"");
    }

    #[test]
    fn replies_are_returns_errors_or_events() {
        assert_eq!(reply_result(&json!({"return": {}})), Some(Ok(json!({}))));
        assert_eq!(
            reply_result(&json!({"error": {"class": "GenericError", "desc": "no"}})),
            Some(Err(("GenericError".into(), "no".into())))
        );
        assert_eq!(reply_result(&json!({"event": "STOP"})), None);
    }

    #[test]
    fn command_names_are_required() {
        assert_eq!(
            command_name(&json!({"execute": "guest-ping"})).ok(),
            Some("guest-ping")
        );
        command_name(&json!({"exec": "guest-ping"})).expect_err("no execute");
    }

    #[test]
    fn messages_show_the_script_head_and_the_console_tail() {
        assert_eq!(script_head("  lvs\n"), "lvs");
        assert_eq!(script_head("set -e\nlvs"), "set -e ...");
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("", 2), "");
    }

    #[test]
    fn long_socket_paths_are_refused_with_advice() {
        let long = PathBuf::from(format!("/{}/shell.sock", "d".repeat(120)));
        let message = check_socket_path(&long).expect_err("too long").to_string();
        assert!(message.contains("TMPDIR"), "{message}");
        check_socket_path(Path::new("/tmp/virtsnap-testvm.abc/shell.sock")).expect("short");
    }

    #[test]
    fn only_run_directories_of_dead_owners_are_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let make = |name: &str, owner: Option<String>| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).expect("mkdir");
            if let Some(owner) = owner {
                std::fs::write(dir.join(OWNER_FILE), owner).expect("write");
            }
            dir
        };
        let alive = make(
            "virtsnap-testvm.alive",
            Some(std::process::id().to_string()),
        );
        // Beyond the kernel's pid_max: certainly not running.
        let dead = make("virtsnap-testvm.dead", Some("4294967295".into()));
        let young = make("virtsnap-testvm.young", None);
        let other = make("other-dir", Some("4294967295".into()));
        remove_orphaned_run_dirs(tmp.path());
        assert!(alive.exists() && young.exists() && other.exists());
        assert!(!dead.exists());
    }

    #[test]
    fn a_guest_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TestVm>();
    }
}
