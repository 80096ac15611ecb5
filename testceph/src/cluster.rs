//! [`Cluster`]: creating a 1-mon 1-osd cluster in a directory (keys,
//! monmap, mkfs, daemons, readiness, pool `rbd`), joining one that runs
//! already, running the `ceph`/`rbd`/`rados` tools against it, extra pools,
//! and stopping it: on drop for a started cluster, by recorded PIDs for a
//! detached one ([`Cluster::teardown`]).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::{self, Daemon, Lifetime, Stopped};
use crate::error::CephError;
use crate::{KEEP_ENV, TIMEOUT_ENV, cli, config};

/// How long starting a cluster, and any one command, may take unless
/// `VIRTSNAP_TEST_CEPH_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The pool every cluster has, initialised for RBD.
pub const POOL: &str = "rbd";

/// Longest one readiness probe may run before it is retried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between readiness probes.
const PROBE_PAUSE: Duration = Duration::from_millis(100);

/// What this handle may do to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Started here, daemons attached: dropping it stops them and removes
    /// the directory.
    Started,
    /// Started here, daemons detached ([`Cluster::start_detached`]): left
    /// running.
    Detached,
    /// Someone else's ([`Cluster::join`]): never stopped.
    Joined,
}

/// A Ceph cluster the tests use: one monitor and one OSD (bluestore on a
/// sparse 4 GiB file) listening on 127.0.0.1 only, cephx on, no manager
/// (RBD needs none), and the pool `rbd` (size 1) initialised for RBD.
///
/// Get one with [`Cluster::shared`] (one per test process), start a
/// private one with [`Cluster::start`] (about 5 s; dropping it stops the
/// daemons and removes the directory), or join a running one with
/// [`Cluster::join`]. Give each test its own RBD namespace with
/// [`Cluster::namespace`].
///
/// Every command this crate runs points at the cluster with `--conf` (and
/// `CEPH_CONF`), has a deadline ([`Cluster::timeout`]) and is killed past
/// it.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    mon_host: String,
    keyring: PathBuf,
    timeout: Duration,
    kind: Kind,
    daemons: Mutex<Vec<Daemon>>,
    stopped: AtomicBool,
    steps: Vec<(&'static str, Duration)>,
}

impl Cluster {
    /// Creates a cluster in `dir` (empty or absent; created) and waits
    /// until it serves RBD: monitor in quorum, `osd.0` up, a probe object
    /// written and removed in pool `rbd`, `rbd pool init` done. The daemons
    /// run in the foreground as children of this process, their output in
    /// `dir/log/`, their PIDs in `dir/pids/`, and they get SIGKILL if this
    /// process dies. Dropping the cluster stops them (SIGTERM, osd then
    /// mon, SIGKILL after 10 s) and removes `dir` (kept when
    /// `VIRTSNAP_TEST_CEPH_KEEP` is set).
    ///
    /// Takes about 5 s; gives up after `VIRTSNAP_TEST_CEPH_TIMEOUT` seconds
    /// (default 120), or as soon as a daemon exits, with the last lines of
    /// its logs. On failure what was started is stopped and `dir` removed.
    ///
    /// # Errors
    /// A Ceph program is missing ([`CephError::NotInstalled`]), `dir` is
    /// not empty, or a step fails or times out.
    pub fn start(dir: &Path) -> Result<Self, CephError> {
        Self::start_with(dir, Lifetime::Attached)
    }

    /// As [`Cluster::start`], but the daemons outlive this process (no
    /// parent-death signal, a process group of their own) and dropping the
    /// returned handle leaves them running: stop them and remove `dir` with
    /// [`Cluster::teardown`] (`cargo xtask ceph down DIR`). Their PIDs are
    /// in `dir/pids/NAME.pid`.
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub fn start_detached(dir: &Path) -> Result<Self, CephError> {
        Self::start_with(dir, Lifetime::Detached)
    }

    /// A handle on the running cluster of the configuration file `conf`
    /// (one [`Cluster::start_detached`] made, or any cluster whose
    /// `[client]` keyring has admin rights). Checks that its monitor
    /// answers. The handle never stops anything.
    ///
    /// # Errors
    /// The `ceph`/`rbd`/`rados` tools are missing, `conf` is unreadable or
    /// names no monitor, or the monitor does not answer.
    pub fn join(conf: &Path) -> Result<Self, CephError> {
        cli::require(cli::CLIENT_PROGRAMS)?;
        let bad = |detail: String| CephError::BadConf {
            path: conf.to_path_buf(),
            detail,
        };
        let conf = fs::canonicalize(conf).map_err(|err| {
            bad(format!(
                "{err}; is {} stale? start a cluster with `eval \"$(cargo xtask ceph up)\"`",
                crate::CONF_ENV
            ))
        })?;
        let text = fs::read_to_string(&conf).map_err(|err| bad(err.to_string()))?;
        let mon_host = config::value(&text, "global", "mon_host")
            .as_deref()
            .and_then(config::first_mon)
            .ok_or_else(|| bad("no mon_host in [global]: not a Ceph configuration".into()))?;
        let keyring = config::client_keyring(&conf, &text);
        let dir = conf
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let cluster = Self {
            dir,
            conf,
            mon_host,
            keyring,
            timeout: timeout_from_env(),
            kind: Kind::Joined,
            daemons: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            steps: Vec::new(),
        };
        let mut probe = cli::client("ceph", &cluster.conf);
        probe.args(["--connect-timeout", "5", "mon", "stat"]);
        cli::run(&mut probe, PROBE_TIMEOUT).map_err(|err| CephError::BadConf {
            path: cluster.conf.clone(),
            detail: format!(
                "its monitor {} does not answer: {err}; start a cluster with \
                 `eval \"$(cargo xtask ceph up)\"`",
                cluster.mon_host
            ),
        })?;
        Ok(cluster)
    }

    /// Stops the daemons of the cluster in `dir` by the PIDs recorded in
    /// `dir/pids/` (osd, then mon; SIGTERM, SIGKILL after 10 s), each only
    /// while `/proc/PID/cmdline` still names `dir/ceph.conf`, then removes
    /// `dir`. For clusters of [`Cluster::start_detached`] (and of the
    /// prototype's setup.sh). A zombie daemon counts as stopped.
    ///
    /// # Errors
    /// `dir` holds no `ceph.conf`, is a system directory, or cannot be
    /// removed.
    pub fn teardown(dir: &Path) -> Result<Vec<Stopped>, CephError> {
        let dir = fs::canonicalize(dir)
            .map_err(|err| CephError::io(format!("cluster directory {}", dir.display()), err))?;
        if !dir.join("ceph.conf").is_file() {
            return Err(CephError::BadConf {
                path: dir,
                detail: "not a cluster directory: no ceph.conf in it".into(),
            });
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if dir.parent().is_none_or(|parent| parent == Path::new("/"))
            || home.as_deref() == Some(dir.as_path())
        {
            return Err(CephError::BadConf {
                path: dir,
                detail: "refusing to remove a system or home directory".into(),
            });
        }
        let report = daemon::stop_recorded(&dir)?;
        fs::remove_dir_all(&dir)
            .map_err(|err| CephError::io(format!("removing {}", dir.display()), err))?;
        Ok(report)
    }

    /// Its `ceph.conf`: what `--conf` and `CEPH_CONF` take, and what
    /// `rados_conf_read_file` reads.
    #[must_use]
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The cluster directory (for a joined cluster: its `ceph.conf`'s).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The monitor's address, `127.0.0.1:PORT` (msgr2).
    #[must_use]
    pub fn mon_host(&self) -> String {
        self.mon_host.clone()
    }

    /// The `client.admin` keyring.
    #[must_use]
    pub fn keyring(&self) -> PathBuf {
        self.keyring.clone()
    }

    /// The deadline of each command (and of a start):
    /// `VIRTSNAP_TEST_CEPH_TIMEOUT` seconds, default 120.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether dropping this handle stops the cluster (it was started with
    /// [`Cluster::start`]).
    #[must_use]
    pub fn is_owned(&self) -> bool {
        self.kind == Kind::Started
    }

    /// For a cluster started here: when each readiness step was reached,
    /// counted from the start (`mon quorum`, `osd.0 up`, `pool rbd
    /// writable`, `rbd pool init`); the last is the whole start-up time.
    #[must_use]
    pub fn startup_steps(&self) -> &[(&'static str, Duration)] {
        &self.steps
    }

    /// The names and PIDs of the daemons this handle will stop (none for a
    /// joined or detached cluster).
    #[must_use]
    pub fn daemon_pids(&self) -> Vec<(&'static str, u32)> {
        self.daemons
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|daemon| (daemon.name, daemon.child.id()))
            .collect()
    }

    /// Runs `rbd ARGS` against the cluster; returns its standard output.
    ///
    /// # Errors
    /// It exits non-zero (the error holds its stderr), times out, or a
    /// daemon of this cluster has died.
    pub fn rbd<I, S>(&self, args: I) -> Result<String, CephError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.tool_text("rbd", args)
    }

    /// Runs `ceph ARGS` against the cluster; returns its standard output.
    ///
    /// # Errors
    /// As [`Cluster::rbd`].
    pub fn ceph<I, S>(&self, args: I) -> Result<String, CephError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.tool_text("ceph", args)
    }

    /// Runs `rados ARGS` against the cluster; returns its standard output.
    ///
    /// # Errors
    /// As [`Cluster::rbd`].
    pub fn rados<I, S>(&self, args: I) -> Result<String, CephError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.tool_text("rados", args)
    }

    /// Creates pool `name` (8 placement groups, size 1) and initialises it
    /// for RBD, for tests that need a second pool (say, to replay an
    /// incremental export into). On a shared or joined cluster the name
    /// must be unique to the test; [`Cluster::delete_pool`] removes it.
    ///
    /// # Errors
    /// The pool exists, or a command fails.
    pub fn create_pool(&self, name: &str) -> Result<(), CephError> {
        self.ceph([
            "osd",
            "pool",
            "create",
            name,
            "8",
            "8",
            "replicated",
            "--size",
            "1",
        ])?;
        // Blocks until the pool's placement groups take writes.
        self.rbd(["pool", "init", name]).map(drop)
    }

    /// Deletes pool `name` and everything in it.
    ///
    /// # Errors
    /// A command fails.
    pub fn delete_pool(&self, name: &str) -> Result<(), CephError> {
        self.ceph([
            "osd",
            "pool",
            "delete",
            name,
            name,
            "--yes-i-really-really-mean-it",
        ])
        .map(drop)
    }

    /// `program ARGS` against the cluster, as text.
    fn tool_text<I, S>(&self, program: &str, args: I) -> Result<String, CephError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.tool(program, args)
            .map(|out| String::from_utf8_lossy(&out).into_owned())
    }

    /// `program ARGS` against the cluster, its standard output as bytes.
    /// When it fails and a daemon turns out dead, that is the error.
    pub(crate) fn tool<I, S>(&self, program: &str, args: I) -> Result<Vec<u8>, CephError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = cli::client(program, &self.conf);
        cmd.args(args);
        cli::run(&mut cmd, self.timeout).map_err(|err| {
            let during = format!("running `{}`", cli::display(&cmd));
            self.check_daemons(&during).err().unwrap_or(err)
        })
    }

    fn start_with(dir: &Path, lifetime: Lifetime) -> Result<Self, CephError> {
        let began = Instant::now();
        cli::require(cli::START_PROGRAMS)?;
        let timeout = timeout_from_env();
        let dir = prepare_dir(dir)?;
        let port = free_port()?;
        let fsid = new_uuid()?;
        let conf = dir.join("ceph.conf");
        write(&conf, &config::render(&dir, &fsid, port))?;
        let mut cluster = Self {
            keyring: dir.join("client.admin.keyring"),
            dir,
            conf,
            mon_host: format!("127.0.0.1:{port}"),
            timeout,
            kind: Kind::Started,
            daemons: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            steps: Vec::new(),
        };
        // From here, an error drops `cluster`: the daemons are stopped and
        // the directory removed.
        cluster.bootstrap(&fsid, port, lifetime, began, began + timeout)?;
        if lifetime == Lifetime::Detached {
            // Let go of the children: dropping a Child neither kills nor
            // waits for it.
            cluster
                .daemons
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            cluster.kind = Kind::Detached;
        }
        Ok(cluster)
    }

    /// The steps of the prototype's setup.sh after the configuration file.
    fn bootstrap(
        &mut self,
        fsid: &str,
        port: u16,
        lifetime: Lifetime,
        began: Instant,
        deadline: Instant,
    ) -> Result<(), CephError> {
        self.make_keys(deadline)?;
        self.start_mon(fsid, port, lifetime, began, deadline)?;
        self.start_osd(lifetime, began, deadline)?;
        self.create_first_pool(began, deadline)
    }

    /// The keys: the monitor's, and client.admin's imported into it.
    fn make_keys(&self, deadline: Instant) -> Result<(), CephError> {
        let mon_keyring = self.dir.join("keyrings/mon.keyring");
        let admin_keyring = &self.keyring;
        let authtool = |cmd: &mut Command| cli::run(cmd, left(deadline)).map(drop);
        authtool(
            Command::new("ceph-authtool")
                .arg("--create-keyring")
                .arg(&mon_keyring)
                .args(["--gen-key", "-n", "mon.", "--cap", "mon", "allow *"]),
        )?;
        let mut admin = Command::new("ceph-authtool");
        admin
            .arg("--create-keyring")
            .arg(admin_keyring)
            .args(["--gen-key", "-n", "client.admin"]);
        for service in ["mon", "osd", "mgr", "mds"] {
            admin.args(["--cap", service, "allow *"]);
        }
        authtool(&mut admin)?;
        authtool(
            Command::new("ceph-authtool")
                .arg(&mon_keyring)
                .arg("--import-keyring")
                .arg(admin_keyring),
        )
    }

    /// The monitor: monmap, mkfs, start, quorum. Its data dir must not
    /// exist before mkfs (a non-empty one makes mkfs exit 0 without
    /// creating a store).
    fn start_mon(
        &mut self,
        fsid: &str,
        port: u16,
        lifetime: Lifetime,
        began: Instant,
        deadline: Instant,
    ) -> Result<(), CephError> {
        let d = self.dir.clone();
        let mon_keyring = d.join("keyrings/mon.keyring");
        let monmap = d.join("monmap");
        cli::run(
            Command::new("monmaptool")
                .args(["-c", "/dev/null", "--create", "--fsid", fsid, "--addv", "a"])
                .arg(format!("[v2:127.0.0.1:{port}]"))
                .arg(&monmap),
            left(deadline),
        )?;
        let mut mkfs = Command::new("ceph-mon");
        mkfs.arg("-c")
            .arg(&self.conf)
            .args(["--mkfs", "-i", "a", "--monmap"])
            .arg(&monmap)
            .arg("--keyring")
            .arg(&mon_keyring);
        self.mkfs("ceph-mon", "mon.a", &mut mkfs, deadline)?;
        if !d.join("mon/ceph-a/store.db/CURRENT").is_file() {
            let log = d.join("log/mon.a.mkfs.out");
            return Err(CephError::Mkfs {
                daemon: "ceph-mon",
                detail: "exited 0 but created no store (mon/ceph-a/store.db/CURRENT)".into(),
                output: fs::read_to_string(&log).unwrap_or_default(),
                log,
            });
        }
        self.spawn("mon.a", "ceph-mon", &["-i", "a"], lifetime)?;
        self.wait_for("mon quorum", began, deadline, |cluster, limit| {
            let mut cmd = cli::client("ceph", &cluster.conf);
            cmd.args(["--connect-timeout", "5", "mon", "stat"]);
            cli::run(&mut cmd, limit).map(|_| true)
        })
    }

    /// The OSD: a key registered with `ceph osd new`, mkfs, start, up.
    fn start_osd(
        &mut self,
        lifetime: Lifetime,
        began: Instant,
        deadline: Instant,
    ) -> Result<(), CephError> {
        let d = self.dir.clone();
        let secret = String::from_utf8_lossy(&cli::run(
            Command::new("ceph-authtool").arg("--gen-print-key"),
            left(deadline),
        )?)
        .trim()
        .to_owned();
        let secrets = d.join("osd-secrets.json");
        write(
            &secrets,
            &serde_json::json!({ "cephx_secret": secret }).to_string(),
        )?;
        let osd_uuid = new_uuid()?;
        let id = self.run_client(
            "ceph",
            [
                OsStr::new("osd"),
                OsStr::new("new"),
                OsStr::new(&osd_uuid),
                OsStr::new("-i"),
                secrets.as_os_str(),
            ],
            deadline,
        );
        let _ = fs::remove_file(&secrets);
        let id = id?;
        if id.trim() != "0" {
            return Err(CephError::Parse {
                command: format!("ceph osd new {osd_uuid} -i {}", secrets.display()),
                detail: "expected osd id 0 in a new cluster".into(),
                output: id.trim().to_owned(),
            });
        }
        cli::run(
            Command::new("ceph-authtool")
                .arg("--create-keyring")
                .arg(d.join("osd/ceph-0/keyring"))
                .args(["--name", "osd.0", "--add-key", &secret]),
            left(deadline),
        )?;
        let mut mkfs = Command::new("ceph-osd");
        mkfs.arg("-c")
            .arg(&self.conf)
            .args(["-i", "0", "--mkfs", "--osd-uuid", &osd_uuid]);
        self.mkfs("ceph-osd", "osd.0", &mut mkfs, deadline)?;
        self.spawn("osd.0", "ceph-osd", &["-i", "0"], lifetime)?;
        self.wait_for("osd.0 up", began, deadline, |cluster, limit| {
            let mut cmd = cli::client("ceph", &cluster.conf);
            cmd.args(["osd", "dump", "--format", "json"]);
            let out = cli::run_text(&mut cmd, limit)?;
            osd0_up(&out).map_err(|detail| CephError::Parse {
                command: "ceph osd dump --format json".into(),
                detail,
                output: out.trim().to_owned(),
            })
        })
    }

    /// Pool `rbd`: created, writable (a probe object), initialised.
    fn create_first_pool(&mut self, began: Instant, deadline: Instant) -> Result<(), CephError> {
        self.run_client(
            "ceph",
            [
                "osd",
                "pool",
                "create",
                POOL,
                "8",
                "8",
                "replicated",
                "--size",
                "1",
            ],
            deadline,
        )?;
        self.wait_for("pool rbd writable", began, deadline, |cluster, limit| {
            let mut cmd = cli::client("rados", &cluster.conf);
            cmd.args(["-p", POOL, "put", "__ready"]).arg(&cluster.conf);
            cli::run(&mut cmd, limit).map(|_| true)
        })?;
        self.run_client("rados", ["-p", POOL, "rm", "__ready"], deadline)?;
        self.run_client("rbd", ["pool", "init", POOL], deadline)?;
        self.steps.push(("rbd pool init", began.elapsed()));
        Ok(())
    }

    /// Runs a daemon's `--mkfs` (output in `log/NAME.mkfs.out`).
    fn mkfs(
        &self,
        daemon: &'static str,
        name: &str,
        cmd: &mut Command,
        deadline: Instant,
    ) -> Result<(), CephError> {
        let log = self.dir.join(format!("log/{name}.mkfs.out"));
        let file = fs::File::create(&log)
            .map_err(|err| CephError::io(format!("creating {}", log.display()), err))?;
        let err_file = file
            .try_clone()
            .map_err(|err| CephError::io(format!("opening {}", log.display()), err))?;
        // Output to the file, so cli::run's pipes stay empty.
        cmd.stdout(file).stderr(err_file);
        let mut child = {
            cmd.stdin(std::process::Stdio::null());
            crate::sys::die_with_parent(cmd);
            cmd.spawn()
                .map_err(|err| CephError::io(format!("starting `{}`", cli::display(cmd)), err))?
        };
        let status = cli::wait_until(&mut child, deadline)
            .map_err(|err| CephError::io(format!("waiting for {daemon} --mkfs"), err))?;
        let detail = match status {
            Some(status) if status.success() => return Ok(()),
            Some(status) => format!("exit {status}"),
            None => format!("no end within the start timeout ({:?})", self.timeout),
        };
        Err(CephError::Mkfs {
            daemon,
            detail,
            output: fs::read_to_string(&log).unwrap_or_default(),
            log,
        })
    }

    fn spawn(
        &self,
        name: &'static str,
        program: &str,
        args: &[&str],
        lifetime: Lifetime,
    ) -> Result<(), CephError> {
        let daemon = daemon::spawn(&self.dir, name, program, args, lifetime)?;
        self.daemons
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(daemon);
        Ok(())
    }

    /// A one-shot client command during start-up, bounded by `deadline`.
    fn run_client<I, S>(
        &self,
        program: &str,
        args: I,
        deadline: Instant,
    ) -> Result<String, CephError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = cli::client(program, &self.conf);
        cmd.args(args);
        cli::run_text(&mut cmd, left(deadline)).map_err(|err| {
            let during = format!("running `{}`", cli::display(&cmd));
            self.check_daemons(&during).err().unwrap_or(err)
        })
    }

    /// Retries `probe` (given how long one attempt may take) until it
    /// returns `true`; fails fast when a daemon exits, and at `deadline`.
    fn wait_for(
        &mut self,
        step: &'static str,
        began: Instant,
        deadline: Instant,
        mut probe: impl FnMut(&Self, Duration) -> Result<bool, CephError>,
    ) -> Result<(), CephError> {
        loop {
            self.check_daemons(&format!("waiting for {step}"))?;
            let last = match probe(self, left(deadline).min(PROBE_TIMEOUT)) {
                Ok(true) => {
                    self.steps.push((step, began.elapsed()));
                    return Ok(());
                }
                Ok(false) => "not yet".to_owned(),
                Err(err @ CephError::NotInstalled { .. }) => return Err(err),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(CephError::NotReady {
                    dir: self.dir.clone(),
                    step,
                    waited: began.elapsed(),
                    last,
                });
            }
            thread::sleep(PROBE_PAUSE);
        }
    }

    /// Fails with the logs' tail when a daemon this handle started has
    /// exited.
    pub(crate) fn check_daemons(&self, during: &str) -> Result<(), CephError> {
        let mut daemons = match self.daemons.try_lock() {
            Ok(daemons) => daemons,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        for daemon in daemons.iter_mut() {
            if let Some(status) = daemon.exited() {
                return Err(daemon.exited_error(status, during));
            }
        }
        Ok(())
    }

    /// Stops the daemons (osd, then mon) and removes the directory, once,
    /// for a cluster started here; problems go to stderr.
    pub(crate) fn stop(&self) {
        if self.kind != Kind::Started || self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut daemons = match self.daemons.try_lock() {
            Ok(daemons) => daemons,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                eprintln!(
                    "testceph: the cluster in {} is busy starting; its daemons die with this \
                     process, its directory is left",
                    self.dir.display()
                );
                return;
            }
        };
        for daemon in daemons.iter_mut().rev() {
            if let Some(complaint) = daemon.stop() {
                eprintln!("testceph: {complaint}");
            }
        }
        daemons.clear();
        drop(daemons);
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!(
                "testceph: kept the cluster directory {} ({KEEP_ENV} is set)",
                self.dir.display()
            );
        } else if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("testceph: removing {}: {err}", self.dir.display());
        }
    }
}

impl Drop for Cluster {
    /// For a cluster started with [`Cluster::start`]: stops the daemons
    /// and removes the directory. Nothing otherwise.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Time left until `deadline`, at least a moment (so a last attempt can
/// still fail with its own error rather than a zero timeout).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(500))
}

/// `VIRTSNAP_TEST_CEPH_TIMEOUT` (seconds) or [`DEFAULT_TIMEOUT`].
pub(crate) fn timeout_from_env() -> Duration {
    let Some(value) = std::env::var_os(TIMEOUT_ENV) else {
        return DEFAULT_TIMEOUT;
    };
    match value.to_str().and_then(|v| v.trim().parse::<f64>().ok()) {
        Some(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
        _ => {
            eprintln!(
                "testceph: {TIMEOUT_ENV}={value:?} is not a positive number of seconds; \
                 using {DEFAULT_TIMEOUT:?}"
            );
            DEFAULT_TIMEOUT
        }
    }
}

/// `dir`, created, checked empty, made absolute, with the cluster's
/// subdirectories.
fn prepare_dir(dir: &Path) -> Result<PathBuf, CephError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CephError::DirNotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)
                .map_err(|err| CephError::io(format!("creating {}", dir.display()), err))?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(CephError::DirNotEmpty {
                dir: dir.to_path_buf(),
            });
        }
        Err(err) => return Err(CephError::io(format!("reading {}", dir.display()), err)),
    }
    let dir = fs::canonicalize(dir)
        .map_err(|err| CephError::io(format!("resolving {}", dir.display()), err))?;
    for sub in [
        "run",
        "log",
        "pids",
        "crash",
        "keyrings",
        "mon",
        "osd/ceph-0",
    ] {
        let path = dir.join(sub);
        fs::create_dir_all(&path)
            .map_err(|err| CephError::io(format!("creating {}", path.display()), err))?;
    }
    Ok(dir)
}

/// A port free on 127.0.0.1 right now (the kernel's pick), for the
/// monitor.
fn free_port() -> Result<u16, CephError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| CephError::io("choosing a free port on 127.0.0.1", err))
}

/// A random UUID from the kernel.
fn new_uuid() -> Result<String, CephError> {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|uuid| uuid.trim().to_owned())
        .map_err(|err| CephError::io("reading /proc/sys/kernel/random/uuid", err))
}

fn write(path: &Path, text: &str) -> Result<(), CephError> {
    fs::write(path, text).map_err(|err| CephError::io(format!("writing {}", path.display()), err))
}

/// Whether `osd.0` is up in the JSON of `ceph osd dump --format json`.
fn osd0_up(json: &str) -> Result<bool, String> {
    let dump: serde_json::Value =
        serde_json::from_str(json).map_err(|err| format!("not JSON: {err}"))?;
    let osds = dump["osds"]
        .as_array()
        .ok_or_else(|| "no `osds` array".to_owned())?;
    Ok(osds.iter().any(|osd| osd["osd"] == 0 && osd["up"] == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osd_up_is_read_from_the_dump() {
        assert_eq!(osd0_up(r#"{"osds":[]}"#), Ok(false));
        assert_eq!(osd0_up(r#"{"osds":[{"osd":0,"up":0,"in":1}]}"#), Ok(false));
        assert_eq!(osd0_up(r#"{"osds":[{"osd":0,"up":1,"in":1}]}"#), Ok(true));
        osd0_up("{}").expect_err("no osds");
        osd0_up("nope").expect_err("not JSON");
    }

    #[test]
    fn a_non_empty_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("x"), "x").expect("write");
        let err = prepare_dir(dir.path()).expect_err("not empty");
        assert!(matches!(err, CephError::DirNotEmpty { .. }), "{err}");
        let fresh = dir.path().join("a/b");
        let made = prepare_dir(&fresh).expect("created");
        assert!(made.is_absolute() && made.join("osd/ceph-0").is_dir());
    }

    #[test]
    fn teardown_refuses_what_is_not_a_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Cluster::teardown(dir.path()).expect_err("no ceph.conf");
        assert!(err.to_string().contains("no ceph.conf"), "{err}");
        assert!(dir.path().exists());
    }
}
