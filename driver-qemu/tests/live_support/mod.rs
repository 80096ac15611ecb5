//! What the live-domain tests share: the stub guest kernel (assembled
//! once per test binary), a state directory with a domain of qcow2 disks
//! whose RAM comes from a file of random bytes, the domain API over QEMU,
//! and checks of disk and RAM content through the real QEMU.
//!
//! Without qemu-system-x86_64 (or gcc/ld to build the stub) a test says
//! so and returns; with `VIRTSNAP_REQUIRE_BACKENDS` set it fails instead.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use driver_qemu::QemuDriver;
use driver_qemu::domain::{QemuDomain, QemuHypervisors};
use driver_qemu::qmp::Qmp;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use snapshot_core::domain_api::DomainApi;
use snapshot_core::store::{Layout, domains};

/// Guest RAM in MiB.
pub const RAM_MIB: u64 = 64;
/// The RAM window the tests compare (guest-physical, untouched by the
/// stub and the firmware).
pub const RAM_WINDOW: (u64, u64) = (8 << 20, 16 << 20);

fn missing(what: &str) -> Option<String> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {what}")])
        .output()
        .is_ok_and(|o| o.status.success());
    (!found).then(|| format!("{what} is not installed"))
}

/// Why live tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    ["qemu-system-x86_64", "gcc", "ld", "qemu-img"]
        .iter()
        .find_map(|w| missing(w))
}

/// Returns `false` (after saying why) when the backend is missing; panics
/// instead under `VIRTSNAP_REQUIRE_BACKENDS`.
pub fn backend_ready(test: &str) -> bool {
    match skip_reason() {
        None => true,
        Some(why) => {
            assert!(
                std::env::var_os("VIRTSNAP_REQUIRE_BACKENDS").is_none(),
                "{test}: {why} (VIRTSNAP_REQUIRE_BACKENDS is set: install it, e.g. cargo xtask deps)"
            );
            eprintln!("SKIP {test}: {why}");
            false
        }
    }
}

/// The stub kernel, assembled once.
pub fn stub_kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("virtsnap-stub-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("stub dir");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/stub.S");
            let obj = dir.join("stub.o");
            let elf = dir.join("stub.elf");
            let ok = Command::new("gcc")
                .args(["-m32", "-c"])
                .arg(&src)
                .arg("-o")
                .arg(&obj)
                .status()
                .expect("gcc runs")
                .success();
            assert!(ok, "assembling {}", src.display());
            let ok = Command::new("ld")
                .args(["-m", "elf_i386", "-Ttext=0x100000", "-e", "_start", "-o"])
                .arg(&elf)
                .arg(&obj)
                .status()
                .expect("ld runs")
                .success();
            assert!(ok, "linking the stub guest");
            elf
        })
        .clone()
}

/// Deterministic pseudo-random bytes (xorshift), `len` of them.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A state directory with one domain `g` of `disks` qcow2 disks (vda,
/// vdb, ...), 64 MiB each, RAM backed by `ram.img`.
pub struct Fixture {
    /// Kept alive.
    pub dir: tempfile::TempDir,
    /// The state directory.
    pub layout: Layout,
    /// The domain.
    pub name: String,
    /// The disks' images.
    pub images: Vec<PathBuf>,
    /// The RAM file (none without `file_ram`).
    pub ram: PathBuf,
}

impl Fixture {
    /// Defines the domain (not started), its RAM from the random file.
    pub fn new(disks: usize, agent: bool) -> Self {
        Self::with(disks, agent, true)
    }

    /// The same; with `file_ram` false, the guest has ordinary anonymous
    /// RAM (which background snapshots need) and there is no RAM file.
    pub fn with(disks: usize, agent: bool, file_ram: bool) -> Self {
        // Short paths: the sockets live under the state directory.
        let dir = tempfile::Builder::new()
            .prefix("vs")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let layout = Layout::new(dir.path().join("s"));
        let mut images = Vec::new();
        let mut xml_disks = String::new();
        for i in 0..disks {
            let target = format!("vd{}", (b'a' + u8::try_from(i).expect("few disks")) as char);
            let img = dir.path().join(format!("{target}.qcow2"));
            let ok = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&img)
                .arg("64M")
                .status()
                .expect("qemu-img")
                .success();
            assert!(ok);
            xml_disks.push_str(&format!(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='{target}' bus='virtio'/></disk>",
                img.display()
            ));
            images.push(img);
        }
        let ram = dir.path().join("ram.img");
        if file_ram {
            std::fs::write(
                &ram,
                random_bytes(1, usize::try_from(RAM_MIB << 20).expect("fits")),
            )
            .expect("ram file");
        }
        let kind = if driver_qemu::launch::kvm_usable() {
            "kvm"
        } else {
            "qemu"
        };
        let channel = if agent {
            "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        } else {
            ""
        };
        let backend = if file_ram {
            format!(
                "<qemu:commandline>\
                   <qemu:arg value='-object'/><qemu:arg value='memory-backend-file,id=ram0,mem-path={},size={RAM_MIB}M,share=off'/>\
                   <qemu:arg value='-machine'/><qemu:arg value='memory-backend=ram0'/>\
                 </qemu:commandline>",
                ram.display()
            )
        } else {
            String::new()
        };
        let xml = format!(
            "<domain type='{kind}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\
             <name>g</name><memory unit='MiB'>{RAM_MIB}</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel></os>\
             <devices>{xml_disks}{channel}</devices>\
             {backend}</domain>",
            stub_kernel().display(),
        );
        domains::define(&layout, &xml).expect("define");
        Self {
            dir,
            layout,
            name: "g".into(),
            images,
            ram,
        }
    }

    /// The domain API over qemu-img and QEMU.
    pub fn api(&self) -> DomainApi {
        DomainApi::new(self.layout.clone(), vec![Arc::new(QemuDriver::new())])
            .with_hypervisors(Arc::new(QemuHypervisors::new(&self.layout)))
    }

    /// A handle on the running domain (its own monitor connection: drop
    /// it before the API talks to QEMU, which serves one client at a
    /// time).
    pub fn qemu(&self) -> QemuDomain {
        QemuDomain::new(&self.layout, &self.name)
    }

    /// Runs an HMP command line on the running domain.
    pub async fn hmp(&self, line: &str) -> String {
        let d = self.qemu();
        let qmp = d.monitor().await.expect("monitor");
        let out = qmp
            .execute(
                "human-monitor-command",
                Some(json!({ "command-line": line })),
            )
            .await
            .expect("hmp");
        out.as_str().unwrap_or_default().to_string()
    }

    /// Writes `pattern` over the first MiB of disk `target` through the
    /// running QEMU (qemu-io on the device, then a flush so the image
    /// files hold it).
    pub async fn write_disk(&self, target: &str, pattern: u8) {
        let dev = format!("{target}/virtio-backend");
        self.hmp(&format!("qemu-io -d {dev} \"write -P {pattern} 0 1M\""))
            .await;
        self.hmp(&format!("qemu-io -d {dev} \"flush\"")).await;
        self.check_disk(target, pattern).await;
    }

    /// Checks the first MiB of disk `target` reads `pattern`: QEMU
    /// flushes, then qemu-io reads the chain of the image QEMU uses (with
    /// shared locks: QEMU holds it).
    pub async fn check_disk(&self, target: &str, pattern: u8) {
        let dev = format!("{target}/virtio-backend");
        self.hmp(&format!("qemu-io -d {dev} \"flush\"")).await;
        let top = {
            let d = self.qemu();
            let disks = d.live_disks().await.expect("live disks");
            disks[target].file.clone()
        };
        let out = Command::new("qemu-io")
            .args([
                "-U",
                "-r",
                "-f",
                "qcow2",
                "-c",
                &format!("read -P {pattern} 0 1M"),
            ])
            .arg(&top)
            .output()
            .expect("qemu-io");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success()
                && text.contains("read 1048576")
                && !text.contains("Pattern verification failed"),
            "disk {target} ({top}) should read pattern {pattern}: {text}"
        );
    }

    /// sha256 of the guest RAM window, read from the running QEMU.
    pub async fn ram_digest(&self) -> String {
        let out = self.dir.path().join("pmem.bin");
        let _ = std::fs::remove_file(&out);
        let d = self.qemu();
        let qmp = d.monitor().await.expect("monitor");
        qmp.execute(
            "pmemsave",
            Some(
                json!({"val": RAM_WINDOW.0, "size": RAM_WINDOW.1 - RAM_WINDOW.0,
                "filename": out.to_string_lossy()}),
            ),
        )
        .await
        .expect("pmemsave");
        hex(&Sha256::digest(std::fs::read(&out).expect("pmem")))
    }

    /// sha256 of the same window of the RAM file.
    pub fn ram_file_digest(&self) -> String {
        let bytes = std::fs::read(&self.ram).expect("ram");
        let (a, b) = (
            usize::try_from(RAM_WINDOW.0).expect("fits"),
            usize::try_from(RAM_WINDOW.1).expect("fits"),
        );
        hex(&Sha256::digest(&bytes[a..b]))
    }

    /// Replaces the RAM file's content (a restored guest must not see it).
    /// Written in place, never truncated: QEMU maps the file, and a
    /// mapping whose file shrinks kills it (SIGBUS).
    pub fn scramble_ram_file(&self, seed: u64) {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.ram)
            .expect("ram file");
        file.write_all(&random_bytes(
            seed,
            usize::try_from(RAM_MIB << 20).expect("fits"),
        ))
        .expect("ram file written");
    }

    /// The domain's current source of `target`.
    pub fn source(&self, target: &str) -> String {
        domains::get(&self.layout, &self.name)
            .expect("domain")
            .def
            .disk_by_target(target)
            .and_then(|d| d.source.local_path().map(str::to_string))
            .expect("source")
    }

    /// The stored snapshots of the domain.
    pub fn snapshot_names(&self) -> Vec<String> {
        let store = snapshot_core::store::MetadataStore::open(
            &self.layout,
            snapshot_core::store::Owner::Domain(self.name.clone()),
            snapshot_core::store::Access::Read,
        )
        .expect("store");
        store
            .tree()
            .list(&snapshot_core::tree::ListFilter::default())
            .map(|v| v.into_iter().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Stops QEMU if it runs (end of test).
    pub async fn stop(&self) {
        let _ = self.qemu().destroy().await;
    }

    /// The files in the fixture directory.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// Collects the STOP and RESUME events on a separate subscription.
    pub async fn monitor(&self) -> Arc<Qmp> {
        self.qemu().monitor().await.expect("monitor")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Never leave a QEMU behind, even when a test panicked.
        let pid = std::fs::read_to_string(self.layout.run_dir().join("g/qemu.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
