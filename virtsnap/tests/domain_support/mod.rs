//! Shared fixture of the domain snapshot tests: a state directory with
//! domain `vm` and its three disks on real images, and what the tests
//! read back (sources, contents hashed, internal snapshots, files). A
//! loop-mounted btrfs for disks the btrfs driver takes is snapshot-core's
//! test backend (`conformance::backends::Btrfs`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use driver_qemu::qcow2;
use snapshot_core::conformance::backends;
use snapshot_core::domain_api::DomainApi;
use snapshot_core::driver::{
    Capabilities, ChainInfo, CreatedSnapshot, DeleteContext, DriverError, Progress, RevertOutcome,
    SnapshotPlan, SnapshotRef, StorageSnapshot, Volume, VolumeDriver, VolumeState,
};
use snapshot_core::store::{Access, Layout, MetadataStore, Owner, domains};

pub const MIB: u64 = 1 << 20;

/// A state directory with domain `vm`: vda qcow2, vdb qcow2 (its default
/// mode external), vdc raw.
pub struct Fixture {
    pub dir: PathBuf,
    pub layout: Layout,
}

impl Fixture {
    pub fn new(dir: &Path) -> Self {
        let f = Self {
            dir: dir.to_path_buf(),
            layout: Layout::new(dir.join("state")),
        };
        backends::qcow2_create(&f.path("vda.qcow2"), 4 * MIB, &[]);
        backends::qcow2_create(&f.path("vdb.qcow2"), 4 * MIB, &[]);
        std::fs::write(f.path("vdc.raw"), vec![0u8; 4 << 20]).expect("raw image");
        backends::write(&f.path("vda.qcow2"), "qcow2", 0, 65_536, 0xa1);
        backends::write(&f.path("vdb.qcow2"), "qcow2", 0, 65_536, 0xb1);
        backends::write(&f.path("vdc.raw"), "raw", 0, 65_536, 0xc1);
        let xml = format!(
            "<domain type='kvm'>
  <name>vm</name>
  <memory unit='MiB'>64</memory>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{a}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk' snapshot='external'>
      <driver name='qemu' type='qcow2'/>
      <source file='{b}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{c}'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
  </devices>
</domain>",
            a = f.path("vda.qcow2").display(),
            b = f.path("vdb.qcow2").display(),
            c = f.path("vdc.raw").display(),
        );
        f.define(&xml);
        f
    }

    /// A state directory in `dir` with the domain `xml` (named `vm`)
    /// defined; its images are the caller's.
    pub fn with_domain(dir: &Path, xml: &str) -> Self {
        let f = Self {
            dir: dir.to_path_buf(),
            layout: Layout::new(dir.join("state")),
        };
        f.define(xml);
        f
    }

    fn define(&self, xml: &str) {
        domains::define(&self.layout, xml).expect("domain defined");
    }

    /// The domain's current definition, as stored.
    pub fn definition(&self) -> String {
        domains::get(&self.layout, "vm")
            .expect("domain")
            .xml
            .to_xml(true)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn api(&self, drivers: Vec<Arc<dyn VolumeDriver>>) -> DomainApi {
        DomainApi::new(self.layout.clone(), drivers)
    }

    /// The domain's current disk sources, vda, vdb, vdc.
    pub fn sources(&self) -> Vec<String> {
        domains::get(&self.layout, "vm")
            .expect("domain")
            .def
            .disks
            .iter()
            .map(|d| d.source.path.clone().unwrap_or_default())
            .collect()
    }

    /// What the guest sees on each disk, hashed.
    pub fn contents(&self) -> Vec<String> {
        domains::get(&self.layout, "vm")
            .expect("domain")
            .def
            .disks
            .iter()
            .map(|d| {
                let source = d.source.path.clone().unwrap_or_default();
                let format = d.driver_type.clone().unwrap_or_else(|| "raw".into());
                let bytes = backends::content(Path::new(&source), &format);
                driver_file::copy::sha256_bytes(&bytes)
            })
            .collect()
    }

    pub fn store(&self) -> MetadataStore {
        MetadataStore::open(&self.layout, Owner::Domain("vm".into()), Access::Read).expect("store")
    }

    /// Internal snapshot names inside the image.
    pub fn internal(&self, image: &str) -> Vec<String> {
        qcow2::read_snapshots(&self.path(image))
            .expect("snapshot table")
            .1
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    /// Everything in the fixture directory except the state.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "state")
            .collect();
        v.sort();
        v
    }
}

pub fn real_drivers() -> Vec<Arc<dyn VolumeDriver>> {
    vec![
        Arc::new(driver_qemu::QemuDriver::new()),
        Arc::new(driver_file::FileDriver::new()),
    ]
}

/// The drivers of the command line, in its order (`vol_cmd::drivers()`,
/// private to the binary's library): qemu, btrfs, file.
pub fn cli_drivers() -> Vec<Arc<dyn VolumeDriver>> {
    vec![
        Arc::new(driver_qemu::QemuDriver::new()),
        Arc::new(driver_btrfs::BtrfsDriver::new()),
        Arc::new(driver_file::FileDriver::new()),
    ]
}

/// A fault injected into a real driver.
#[derive(Debug)]
pub enum Fault {
    /// Creating a snapshot of (or an overlay on) the image whose path
    /// ends so fails, disk full, nothing done.
    CreateOn(String),
    /// The first merge of image layers fails, nothing done.
    FirstMerge(std::sync::atomic::AtomicBool),
}

/// The real driver `inner` with `fault` injected; everything else goes
/// through unchanged.
pub struct Faulty {
    pub inner: Arc<dyn VolumeDriver>,
    pub fault: Fault,
}

impl Faulty {
    /// Every real driver with `fault` (a fresh one each: `make`).
    pub fn drivers(make: impl Fn() -> Fault) -> Vec<Arc<dyn VolumeDriver>> {
        real_drivers()
            .into_iter()
            .map(|inner| {
                Arc::new(Self {
                    inner,
                    fault: make(),
                }) as Arc<dyn VolumeDriver>
            })
            .collect()
    }

    /// `drivers` with `fault` injected into the one of `kind` only.
    ///
    /// # Panics
    /// No driver is of `kind`.
    pub fn only(
        drivers: Vec<Arc<dyn VolumeDriver>>,
        kind: &str,
        fault: Fault,
    ) -> Vec<Arc<dyn VolumeDriver>> {
        assert!(
            drivers.iter().any(|d| d.kind() == kind),
            "no driver of kind {kind} to inject a fault into"
        );
        let mut fault = Some(fault);
        drivers
            .into_iter()
            .map(|inner| match fault.take_if(|_| inner.kind() == kind) {
                Some(fault) => Arc::new(Self { inner, fault }) as Arc<dyn VolumeDriver>,
                None => inner,
            })
            .collect()
    }

    fn create_fault(&self, path: &Path) -> Result<(), DriverError> {
        match &self.fault {
            Fault::CreateOn(image) if path.ends_with(image) => Err(DriverError::NoSpace {
                path: path.to_path_buf(),
            }),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl VolumeDriver for Faulty {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn capabilities(&self, v: &Volume, s: VolumeState) -> Result<Capabilities, DriverError> {
        self.inner.capabilities(v, s).await
    }
    async fn create(
        &self,
        v: &Volume,
        plan: &SnapshotPlan,
        p: Option<&Progress>,
    ) -> Result<CreatedSnapshot, DriverError> {
        self.create_fault(&v.path)?;
        self.inner.create(v, plan, p).await
    }
    async fn revert(
        &self,
        v: &Volume,
        s: &SnapshotRef,
        verify: bool,
        p: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError> {
        self.inner.revert(v, s, verify, p).await
    }
    async fn delete(
        &self,
        v: &Volume,
        s: &SnapshotRef,
        c: &DeleteContext,
        p: Option<&Progress>,
    ) -> Result<(), DriverError> {
        self.inner.delete(v, s, c, p).await
    }
    async fn list(&self, v: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
        self.inner.list(v).await
    }
    async fn undo(&self, v: &Volume, c: &CreatedSnapshot) -> Result<(), DriverError> {
        self.inner.undo(v, c).await
    }
    async fn create_overlay(
        &self,
        base: &Volume,
        o: &Path,
        reuse: bool,
    ) -> Result<(), DriverError> {
        self.create_fault(&base.path)?;
        self.inner.create_overlay(base, o, reuse).await
    }
    async fn chain_info(&self, image: &Path) -> Result<Option<ChainInfo>, DriverError> {
        self.inner.chain_info(image).await
    }
    async fn merge_layer(
        &self,
        image: &Path,
        top: &Path,
        p: Option<&Progress>,
    ) -> Result<(), DriverError> {
        if let Fault::FirstMerge(done) = &self.fault
            && !done.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(DriverError::NoSpace {
                path: image.to_path_buf(),
            });
        }
        self.inner.merge_layer(image, top, p).await
    }
    async fn rebase_layers(
        &self,
        image: &Path,
        children: &[PathBuf],
        onto: Option<&Path>,
        p: Option<&Progress>,
    ) -> Result<(), DriverError> {
        self.inner.rebase_layers(image, children, onto, p).await
    }
}

/// Kills this process with SIGKILL, as a crash would stop it: no unwinding,
/// no destructors, no flushing.
pub fn kill_self() -> ! {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    // The signal is delivered before kill returns; never reached.
    std::process::abort()
}

/// Runs the ignored test `child` of this test binary in a process of its
/// own with `env` (its crash point and state directory) and checks that a
/// SIGKILL ended it, as a crash at that point would. `what` names the
/// case in the failure message.
pub fn run_killed_child(child: &str, env: &[(&str, String)], what: &str) {
    use std::os::unix::process::ExitStatusExt as _;
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            child,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("the child runs");
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{what}: the child was not killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An observer that SIGKILLs this process when step `index` reaches
/// `event`.
pub fn kill_at(
    index: usize,
    event: snapshot_core::exec::StepEvent,
) -> impl Fn(usize, &snapshot_core::plan::Step, snapshot_core::exec::StepEvent) + Send + Sync {
    move |i, _, e| {
        if i == index && e == event {
            kill_self();
        }
    }
}
