//! `cargo xtask bench live`: snapshots of a running QEMU guest through the
//! domain API, as a program embedding virtsnap makes them
//! (`DomainApi::new(..).with_hypervisors(QemuHypervisors)`), with 2 and
//! with 8 qcow2 disks (256 MiB each, 16 MiB of data in each). The guest
//! is the stub kernel of the live tests (driver-qemu/tests/guest/stub.S)
//! with 1 GiB of RAM backed by a file of random bytes, so every page of
//! its memory is non-trivial. Median of 3 runs of each row that saves or
//! loads the 1 GiB of memory and of 7 runs of the disk-only row (`-- --runs
//! N` for N of every row), each run with a fresh snapshot name, the
//! snapshot deleted through the API between runs:
//!
//! 1. full system internal (`snapshot-save`: pause, save, resume);
//! 2. full system external, LIVE (memory to a file while the guest runs,
//!    the disks' overlays in one transaction at switchover);
//! 3. full system external, not live (paused for the whole save);
//! 4. disk-only atomic (every disk external, one QMP transaction);
//! 5. internal revert of the running domain to an internal checkpoint of
//!    its own images (in place, `snapshot-load`).
//!
//! For each: the wall time of the API call, and the time the guest was
//! paused, from QEMU's own `timestamp` fields of the STOP and RESUME
//! events during the call (summed STOP→RESUME intervals). The events are
//! read on a second QMP monitor the bench gives the domain
//! (`-qmp unix:...` through `<qemu:commandline>`): QEMU serves one client
//! per monitor and the API opens its own. Each row is set beside libvirt's
//! figure for the same operation on this machine kind (issue 6: internal
//! 1.36 s paused, external --live 0.71 s paused, disk-only 57 ms, internal
//! revert 3.7 s as libvirt restarts QEMU) with the ratio virtsnap/libvirt.
//! The time each plan step took is printed after the table, so a row over
//! its target shows where its pause goes.
//!
//! Targets (issue 6): external live full system paused ≤ 50 ms at 1 GiB;
//! disk-only atomic ≤ 20 ms total.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver_qemu::domain::{QemuDomain, QemuHypervisors};
use driver_qemu::qmp::Qmp;
use snapshot_core::ChildPolicy;
use snapshot_core::domain_api::{Created, DomainApi};
use snapshot_core::exec::StepEvent;
use snapshot_core::plan::{CreateFlags, DomainState, RevertFlags, Step};
use snapshot_core::store::{Layout, domains};

/// Runs of a row that saves or loads the guest's memory (several seconds
/// each), and of the disk-only row.
const MEMORY_RUNS: usize = 3;
const DISK_ONLY_RUNS: usize = 7;
/// Guest RAM in MiB.
const RAM_MIB: u64 = 1024;
/// Each disk's virtual size, and the data written into it first.
const DISK_SIZE: &str = "256M";
const DISK_DATA: &str = "write -P 1 0 16M";
const DISK_COUNTS: [usize; 2] = [2, 8];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median<T: Ord + Copy + Default>(mut v: Vec<T>) -> T {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stub guest kernel, assembled as the live tests do.
fn stub_kernel(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/stub.S");
    let obj = dir.join("stub.o");
    let elf = dir.join("stub.elf");
    run(
        "gcc",
        &[
            "-m32",
            "-c",
            &src.to_string_lossy(),
            "-o",
            &obj.to_string_lossy(),
        ],
    );
    run(
        "ld",
        &[
            "-m",
            "elf_i386",
            "-Ttext=0x100000",
            "-e",
            "_start",
            "-o",
            &elf.to_string_lossy(),
            &obj.to_string_lossy(),
        ],
    );
    elf
}

/// A file of `mib` MiB of pseudo-random bytes (xorshift): the guest's RAM.
fn random_file(path: &Path, mib: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("RAM file"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        out.write_all(&chunk).expect("RAM file written");
    }
    out.flush().expect("RAM file flushed");
}

/// One operation measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Internal,
    ExternalLive,
    ExternalPaused,
    DiskOnly,
    Revert,
}

/// Which of the two figures libvirt's is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Paused,
    Total,
}

impl Op {
    const ALL: [Self; 5] = [
        Self::Internal,
        Self::ExternalLive,
        Self::ExternalPaused,
        Self::DiskOnly,
        Self::Revert,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Internal => "full system internal",
            Self::ExternalLive => "full system external live",
            Self::ExternalPaused => "full system external",
            Self::DiskOnly => "disk-only atomic",
            Self::Revert => "internal revert (running)",
        }
    }

    /// Snapshot names of this row start with it.
    fn prefix(self) -> &'static str {
        match self {
            Self::Internal => "i",
            Self::ExternalLive => "l",
            Self::ExternalPaused => "n",
            Self::DiskOnly => "d",
            Self::Revert => "r",
        }
    }

    /// libvirt's figure on this machine kind (issue 6), and which of ours
    /// it compares with.
    fn libvirt(self) -> Option<(Duration, Measure)> {
        match self {
            Self::Internal => Some((Duration::from_millis(1360), Measure::Paused)),
            Self::ExternalLive => Some((Duration::from_millis(710), Measure::Paused)),
            Self::ExternalPaused => None,
            Self::DiskOnly => Some((Duration::from_millis(57), Measure::Total)),
            Self::Revert => Some((Duration::from_millis(3700), Measure::Total)),
        }
    }

    /// How many runs, unless `--runs` says.
    fn runs(self) -> usize {
        if self == Self::DiskOnly {
            DISK_ONLY_RUNS
        } else {
            MEMORY_RUNS
        }
    }

    /// The issue's target.
    fn target(self) -> Option<(Duration, Measure)> {
        match self {
            Self::ExternalLive => Some((Duration::from_millis(50), Measure::Paused)),
            Self::DiskOnly => Some((Duration::from_millis(20), Measure::Total)),
            _ => None,
        }
    }
}

/// One call, measured.
#[derive(Debug, Clone, Default)]
struct Sample {
    total: Duration,
    paused: Duration,
    stops: usize,
    /// A STOP without its RESUME when the call returned.
    left_paused: bool,
    /// How long each step of the plan took (by step kind).
    steps: Vec<(String, Duration)>,
}

/// A step's index in the plan, kind, begin or end, and when.
type Mark = (usize, String, StepEvent, Instant);

/// A step's kind: `SaveMemory`, `DiskTransaction`, ...
fn step_kind(step: &Step) -> String {
    let debug = format!("{step:?}");
    debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A state directory with one domain `g` running the stub guest, its
/// disks, and the bench's own monitor on it.
struct Guest {
    dir: PathBuf,
    layout: Layout,
    name: String,
    targets: Vec<String>,
    monitor: Option<Qmp>,
}

impl Guest {
    /// Defines the domain in a new state directory under `dir` and starts
    /// it with `kind` (`kvm` or `qemu`).
    async fn start(dir: PathBuf, disks: usize, kernel: &Path, ram: &Path, kind: &str) -> Self {
        Self::try_start(dir, disks, kernel, ram, kind)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same, saying why QEMU did not start.
    async fn try_start(
        dir: PathBuf,
        disks: usize,
        kernel: &Path,
        ram: &Path,
        kind: &str,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(&dir).expect("guest dir");
        let layout = Layout::new(dir.join("s"));
        let mut targets = Vec::new();
        let mut xml_disks = String::new();
        for i in 0..disks {
            let target = format!(
                "vd{}",
                char::from(b'a' + u8::try_from(i).expect("few disks"))
            );
            let img = dir.join(format!("{target}.qcow2"));
            let p = img.to_string_lossy();
            run("qemu-img", &["create", "-q", "-f", "qcow2", &p, DISK_SIZE]);
            run("qemu-io", &["-f", "qcow2", "-c", DISK_DATA, &p]);
            xml_disks.push_str(&format!(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                 <source file='{p}'/><target dev='{target}' bus='virtio'/></disk>"
            ));
            targets.push(target);
        }
        let qmp = dir.join("bench.qmp");
        let xml = format!(
            "<domain type='{kind}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\
             <name>g</name><memory unit='MiB'>{RAM_MIB}</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel></os>\
             <devices>{xml_disks}</devices>\
             <qemu:commandline>\
               <qemu:arg value='-object'/><qemu:arg value='memory-backend-file,id=ram0,mem-path={},size={RAM_MIB}M,share=off'/>\
               <qemu:arg value='-machine'/><qemu:arg value='memory-backend=ram0'/>\
               <qemu:arg value='-qmp'/><qemu:arg value='unix:{},server=on,wait=off'/>\
             </qemu:commandline></domain>",
            kernel.display(),
            ram.display(),
            qmp.display()
        );
        domains::define(&layout, &xml).expect("define");
        let domain = QemuDomain::new(&layout, "g");
        if let Err(e) = domain.start_domain(false).await {
            return Err(format!(
                "starting the guest (domain type '{kind}'): {e}\n{}",
                std::fs::read_to_string(domain.paths().log()).unwrap_or_default()
            ));
        }
        drop(domain);
        let mut guest = Self {
            dir,
            layout,
            name: "g".into(),
            targets,
            monitor: None,
        };
        let monitor = Qmp::connect(&qmp, Duration::from_secs(10))
            .await
            .map_err(|e| format!("the bench's monitor: {e}"))?;
        guest.monitor = Some(monitor);
        Ok(guest)
    }

    fn api(&self) -> DomainApi {
        DomainApi::new(
            self.layout.clone(),
            vec![Arc::new(driver_qemu::QemuDriver::new())],
        )
        .with_hypervisors(Arc::new(QemuHypervisors::new(&self.layout)))
    }

    fn monitor(&self) -> &Qmp {
        self.monitor.as_ref().expect("monitor")
    }

    /// `running` from QEMU's status, read on the bench's monitor.
    async fn running(&self) -> bool {
        let status = self
            .monitor()
            .execute("query-status", None)
            .await
            .expect("query-status");
        status.get("running").and_then(serde_json::Value::as_bool) == Some(true)
    }

    /// `<domainsnapshot>` of `name` with memory to `mem` (when given) and
    /// every disk external.
    fn external_xml(&self, name: &str, mem: Option<&Path>) -> String {
        let memory = mem.map_or_else(String::new, |m| {
            format!("<memory snapshot='external' file='{}'/>", m.display())
        });
        let disks: String = self
            .targets
            .iter()
            .map(|t| format!("<disk name='{t}' snapshot='external'/>"))
            .collect();
        format!(
            "<domainsnapshot><name>{name}</name>{memory}<disks>{disks}</disks></domainsnapshot>"
        )
    }

    /// Runs `call` (one API call), timing it, its steps, and the guest's
    /// pauses from the STOP/RESUME events QEMU sends the bench's monitor.
    async fn measure<T>(
        &self,
        call: impl AsyncFnOnce(&snapshot_core::exec::Observer) -> T,
    ) -> (T, Sample) {
        // A round trip first, so no earlier event arrives as if it were
        // this call's.
        self.running().await;
        let mut events = self.monitor().subscribe();
        let marks: Arc<Mutex<Vec<Mark>>> = Arc::default();
        let seen = marks.clone();
        let observer = move |i: usize, step: &Step, event: StepEvent| {
            if let Ok(mut m) = seen.lock() {
                m.push((i, step_kind(step), event, Instant::now()));
            }
        };
        let started = Instant::now();
        let out = call(&observer).await;
        let total = started.elapsed();
        // QEMU sent every event of the call before this reply.
        self.running().await;
        let mut sample = Sample {
            total,
            ..Sample::default()
        };
        let mut stopped_at = None;
        while let Ok(ev) = events.try_recv() {
            match ev.name.as_str() {
                "STOP" => {
                    sample.stops += 1;
                    stopped_at.get_or_insert(ev.timestamp);
                }
                "RESUME" => {
                    if let Some(at) = stopped_at.take() {
                        sample.paused += ev.timestamp.saturating_sub(at);
                    }
                }
                _ => {}
            }
        }
        if let Some(at) = stopped_at {
            sample.left_paused = true;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            sample.paused += now.saturating_sub(at);
        }
        let marks = marks.lock().map(|m| m.clone()).unwrap_or_default();
        for (i, kind, event, at) in &marks {
            if *event != StepEvent::Begin {
                continue;
            }
            if let Some((.., done)) = marks
                .iter()
                .find(|(j, _, e, _)| j == i && *e == StepEvent::Done)
            {
                sample.steps.push((kind.clone(), done.duration_since(*at)));
            }
        }
        (out, sample)
    }

    /// Deletes snapshot `name` (untimed, between runs), saying so when the
    /// library refuses.
    async fn delete(&self, name: &str) {
        if let Err(e) = self
            .api()
            .snapshot_delete(&self.name, name, ChildPolicy::Rebase, false, false, None)
            .await
        {
            println!("  note: deleting snapshot {name} between runs failed: {e}");
        }
    }

    async fn stop(mut self) {
        self.monitor = None;
        QemuDomain::new(&self.layout, &self.name)
            .destroy()
            .await
            .expect("destroy");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Never leave a QEMU behind, even when the bench panicked.
        if let Some(pid) = QemuDomain::new(&self.layout, &self.name).pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    op: Op,
    disks: usize,
    samples: Vec<Sample>,
}

impl Row {
    fn total(&self) -> Duration {
        median(self.samples.iter().map(|s| s.total).collect())
    }

    fn paused(&self) -> Duration {
        median(self.samples.iter().map(|s| s.paused).collect())
    }

    fn figure(&self, m: Measure) -> Duration {
        match m {
            Measure::Paused => self.paused(),
            Measure::Total => self.total(),
        }
    }

    /// Median time of each step kind, in plan order.
    fn steps(&self) -> Vec<(String, Duration)> {
        let mut order: Vec<String> = Vec::new();
        let mut by: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        for s in &self.samples {
            let mut per: BTreeMap<&str, Duration> = BTreeMap::new();
            for (kind, d) in &s.steps {
                if !order.contains(kind) {
                    order.push(kind.clone());
                }
                *per.entry(kind).or_default() += *d;
            }
            for (kind, d) in per {
                by.entry(kind.to_string()).or_default().push(d);
            }
        }
        order
            .into_iter()
            .map(|k| {
                let d = median(by.remove(&k).unwrap_or_default());
                (k, d)
            })
            .collect()
    }
}

/// What a row's runs found beside the timings.
#[derive(Debug, Default)]
struct Findings {
    /// The smallest and largest memory file of each row: a live save
    /// writes every page QEMU sends, and it sends pages again that it
    /// finds dirty after its first pass.
    memory_file: BTreeMap<&'static str, (u64, u64)>,
    vmstate: Option<u64>,
    notes: Vec<String>,
}

/// Measures `op` on a new guest with `disks` disks, `runs` times.
async fn row(op: Op, disks: usize, runs: usize, guest: Guest, findings: &mut Findings) -> Row {
    let mut samples = Vec::new();
    let api = guest.api();
    if op == Op::Revert {
        // The checkpoint the runs go back to.
        api.snapshot_create_xml(
            &guest.name,
            Some("<domainsnapshot><name>base</name></domainsnapshot>"),
            CreateFlags::empty(),
            false,
            None,
        )
        .await
        .expect("checkpoint base");
    }
    let pid = QemuDomain::new(&guest.layout, &guest.name).pid();
    for r in 0..runs {
        let name = format!("{}{r}", op.prefix());
        let mem = guest.dir.join(format!("{name}.mem"));
        let (result, sample) = match op {
            Op::Internal | Op::ExternalLive | Op::ExternalPaused | Op::DiskOnly => {
                let (xml, flags) = match op {
                    Op::Internal => (
                        format!("<domainsnapshot><name>{name}</name></domainsnapshot>"),
                        CreateFlags::empty(),
                    ),
                    Op::ExternalLive => (guest.external_xml(&name, Some(&mem)), CreateFlags::LIVE),
                    Op::ExternalPaused => {
                        (guest.external_xml(&name, Some(&mem)), CreateFlags::empty())
                    }
                    _ => (guest.external_xml(&name, None), CreateFlags::DISK_ONLY),
                };
                let (created, sample) = guest
                    .measure(async |observer| {
                        api.snapshot_create_xml(
                            &guest.name,
                            Some(&xml),
                            flags,
                            false,
                            Some(observer),
                        )
                        .await
                    })
                    .await;
                (
                    created.map(|c| match c {
                        Created::Taken { plan, .. } => plan,
                        Created::Planned(plan) => plan,
                    }),
                    sample,
                )
            }
            Op::Revert => {
                guest
                    .measure(async |observer| {
                        api.revert_to_snapshot(
                            &guest.name,
                            "base",
                            RevertFlags::empty(),
                            false,
                            Some(observer),
                        )
                        .await
                    })
                    .await
            }
        };
        let plan = result.unwrap_or_else(|e| panic!("{} ({disks} disks) {name}: {e}", op.label()));
        if r == 0 {
            let kinds: Vec<String> = plan.steps.iter().map(step_kind).collect();
            println!(
                "  {} / {disks} disks: plan {}",
                op.label(),
                kinds.join(", ")
            );
        }
        if !guest.running().await {
            findings.notes.push(format!(
                "{} ({disks} disks) run {r}: the guest is not running after the call",
                op.label()
            ));
        }
        if sample.left_paused {
            findings.notes.push(format!(
                "{} ({disks} disks) run {r}: a STOP had no RESUME when the call returned",
                op.label()
            ));
        }
        if op == Op::Revert && QemuDomain::new(&guest.layout, &guest.name).pid() != pid {
            findings.notes.push(format!(
                "internal revert ({disks} disks) run {r}: QEMU was restarted, not loaded in place"
            ));
        }
        if let Ok(meta) = std::fs::metadata(&mem) {
            let len = meta.len();
            let seen = findings.memory_file.entry(op.label()).or_insert((len, len));
            *seen = (seen.0.min(len), seen.1.max(len));
        }
        if op == Op::Internal && findings.vmstate.is_none() {
            let d = QemuDomain::new(&guest.layout, &guest.name);
            if let Ok(live) = d.live_disks().await {
                findings.vmstate = live
                    .values()
                    .flat_map(|l| &l.snapshots)
                    .filter(|(n, _)| *n == name)
                    .map(|(_, size)| *size)
                    .max();
            }
        }
        samples.push(sample);
        if op != Op::Revert {
            guest.delete(&name).await;
            if mem.exists() {
                let _ = std::fs::remove_file(&mem);
            }
        }
    }
    drop(api);
    guest.stop().await;
    Row { op, disks, samples }
}

/// `--runs N` (cargo bench also passes `--bench`, ignored).
fn parse_runs() -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse::<usize>().expect("--runs N").max(1))
}

fn main() {
    for tool in ["qemu-system-x86_64", "qemu-img", "qemu-io", "gcc", "ld"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("live bench: {tool} is missing (cargo xtask deps installs it)");
            std::process::exit(1);
        }
    }
    let runs = parse_runs();
    let started = Instant::now();
    // Short paths: the monitor sockets live under it.
    let tmp = tempfile::Builder::new()
        .prefix("vsb")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let dir = tmp.path();
    let kernel = stub_kernel(dir);
    let ram = dir.join("ram.img");
    random_file(&ram, RAM_MIB);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut findings = Findings::default();
    let (rows, accel, version) = rt.block_on(async {
        // KVM when it runs this guest, else TCG, said once.
        let mut kind = "kvm";
        let probe = |kind: &'static str| {
            let (kernel, ram) = (&kernel, &ram);
            async move {
                let guest =
                    Guest::try_start(dir.join(format!("probe-{kind}")), 1, kernel, ram, kind)
                        .await?;
                // Give the guest a moment to fail (KVM internal error).
                tokio::time::sleep(Duration::from_millis(300)).await;
                let info = QemuDomain::new(&guest.layout, &guest.name)
                    .info()
                    .await
                    .map_err(|e| e.to_string())?;
                guest.stop().await;
                if info.state == DomainState::Running {
                    Ok(info)
                } else {
                    Err(format!("the guest is {:?}, not running", info.state))
                }
            }
        };
        let info = match probe(kind).await {
            Ok(info) if info.accel.as_deref() == Some("kvm") => info,
            Ok(info) => {
                println!("KVM cannot run the guest here (/dev/kvm is not usable): TCG is used");
                kind = "qemu";
                info
            }
            Err(e) => {
                println!("KVM cannot run the guest here ({e}): TCG is used");
                kind = "qemu";
                probe(kind).await.expect("the guest under TCG")
            }
        };
        let accel = info.accel.clone().unwrap_or_else(|| "?".into());
        let mut rows = Vec::new();
        for disks in DISK_COUNTS {
            for op in Op::ALL {
                let gdir = dir.join(format!("g{disks}{}", op.prefix()));
                let guest = Guest::start(gdir, disks, &kernel, &ram, kind).await;
                let n = runs.unwrap_or_else(|| op.runs());
                rows.push(row(op, disks, n, guest, &mut findings).await);
            }
        }
        (rows, accel, info.version.unwrap_or_default())
    });

    println!();
    println!(
        "live bench: QEMU {version}, accel {accel}, guest of {RAM_MIB} MiB RAM (a file of random bytes), \
         qcow2 disks of {DISK_SIZE} with 16 MiB of data; medians"
    );
    println!(
        "paused = sum of STOP→RESUME intervals (QEMU's event timestamps) during the call; \
         ratio = virtsnap / libvirt on the figure libvirt's is"
    );
    println!(
        "{:<27} {:>5} {:>4} {:>10} {:>10} {:>5} {:>16} {:>7} {:>14} {:>4}",
        "operation",
        "disks",
        "runs",
        "total ms",
        "paused ms",
        "stops",
        "libvirt ms",
        "ratio",
        "target",
        "met"
    );
    let mut missed = Vec::new();
    for row in &rows {
        let stops = median(row.samples.iter().map(|s| s.stops).collect());
        let what = |m: Measure| match m {
            Measure::Paused => "paused",
            Measure::Total => "total",
        };
        let (libvirt, ratio) = row.op.libvirt().map_or_else(
            || ("-".to_string(), "-".to_string()),
            |(d, m)| {
                (
                    format!("{:.0} {}", ms(d), what(m)),
                    format!("{:.3}", row.figure(m).as_secs_f64() / d.as_secs_f64()),
                )
            },
        );
        let (target, met) = row.op.target().map_or_else(
            || ("-".to_string(), "-"),
            |(d, m)| {
                let ok = row.figure(m) <= d;
                if !ok {
                    missed.push(format!("{} ({} disks)", row.op.label(), row.disks));
                }
                (
                    format!("≤ {:.0} {}", ms(d), what(m)),
                    if ok { "yes" } else { "NO" },
                )
            },
        );
        println!(
            "{:<27} {:>5} {:>4} {:>10.1} {:>10.1} {:>5} {:>16} {:>7} {:>14} {:>4}",
            row.op.label(),
            row.disks,
            row.samples.len(),
            ms(row.total()),
            ms(row.paused()),
            stops,
            libvirt,
            ratio,
            target,
            met
        );
    }
    let ram_bytes = f64::from(u32::try_from(RAM_MIB << 20).expect("fits"));
    for (what, (least, most)) in &findings.memory_file {
        println!(
            "memory file of {what}: {least} to {most} bytes ({:.2} to {:.2} x the guest's RAM)",
            *least as f64 / ram_bytes,
            *most as f64 / ram_bytes
        );
    }
    if let Some(bytes) = findings.vmstate {
        println!(
            "vmstate of a full system internal checkpoint: {bytes} bytes ({:.2} x the guest's RAM)",
            bytes as f64 / ram_bytes
        );
    }
    println!();
    println!("where the time goes (median ms per plan step):");
    for row in &rows {
        let steps: Vec<String> = row
            .steps()
            .into_iter()
            .map(|(k, d)| format!("{k} {:.1}", ms(d)))
            .collect();
        println!(
            "  {:<27} {:>1} disks: {}",
            row.op.label(),
            row.disks,
            steps.join(", ")
        );
    }
    for note in &findings.notes {
        println!("note: {note}");
    }
    if missed.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed: {}", missed.join(", "));
    }
    println!("(bench ran {:.0} s)", started.elapsed().as_secs_f64());
}
