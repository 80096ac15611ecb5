//! The QEMU launcher: a defined domain's command line (one `-blockdev`
//! pair and one `-device` per disk, node names derived from the disk's
//! target, the monitor and guest-agent sockets in the domain's run
//! directory, KVM when `/dev/kvm` is usable and the domain asks for it,
//! TCG otherwise, libvirt's `<qemu:commandline>` arguments appended), and
//! starting it daemonized so it outlives the command that started it.

use std::path::{Path, PathBuf};

use serde_json::json;
use snapshot_conf::{DiskDevice, Domain, MachineDef, MemorySource};

/// The run directory of one domain and what lives in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    /// `run/NAME/`.
    pub dir: PathBuf,
}

impl RunPaths {
    /// The run directory of `name` under the state directory's `run/`.
    #[must_use]
    pub fn new(run_root: &Path, name: &str) -> Self {
        Self {
            dir: run_root.join(name),
        }
    }

    /// The QMP socket.
    #[must_use]
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// The guest agent's channel socket (unless the domain names one).
    #[must_use]
    pub fn agent(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// QEMU's pid.
    #[must_use]
    pub fn pid(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }

    /// The serial console's output.
    #[must_use]
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// QEMU's own messages (stderr).
    #[must_use]
    pub fn log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }

    /// The sockets of a QEMU adopted with `attach` (JSON).
    #[must_use]
    pub fn attached(&self) -> PathBuf {
        self.dir.join("attached.json")
    }

    /// Guest RAM for a file-backed domain.
    #[must_use]
    pub fn ram(&self) -> PathBuf {
        self.dir.join("ram")
    }
}

/// The accelerator a domain runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    /// QEMU's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }

    /// KVM for `<domain type='kvm'>` when `/dev/kvm` can be opened, else
    /// TCG (`type='qemu'`, or no usable KVM).
    #[must_use]
    pub fn for_domain(domain: &Domain) -> Self {
        let wants_kvm = domain.def.hypervisor.as_deref() == Some("kvm");
        if wants_kvm && kvm_usable() {
            Self::Kvm
        } else {
            Self::Tcg
        }
    }
}

/// Whether `/dev/kvm` opens for reading and writing.
#[must_use]
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The node names of a disk: its protocol node and its format node (the
/// one the device uses until an external snapshot puts an overlay on it).
#[must_use]
pub fn node_names(target: &str) -> (String, String) {
    (format!("vs-file-{target}"), format!("vs-disk-{target}"))
}

/// How the domain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartMode {
    /// CPUs stopped (`-S`).
    pub paused: bool,
    /// Waiting for its state from an incoming migration
    /// (`-incoming defer`).
    pub incoming: bool,
}

/// Why a domain cannot be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The definition lacks something QEMU needs.
    #[error("domain '{domain}' cannot be started: {why}; {fix}")]
    Definition {
        /// The domain.
        domain: String,
        /// What is wrong.
        why: String,
        /// What to do.
        fix: String,
    },
    /// QEMU is not installed.
    #[error(
        "the emulator {0} is not installed; install qemu-system-x86 (apt-get install qemu-system-x86) or name another in <devices><emulator>"
    )]
    NoEmulator(String),
    /// A socket path longer than a Unix socket allows.
    #[error(
        "the run directory {0} is too deep for a Unix socket path (108 bytes); use a shorter state directory ($VIRTSNAP_STATE)"
    )]
    SocketPathTooLong(PathBuf),
    /// QEMU refused to start.
    #[error("QEMU failed to start domain '{domain}': {message}")]
    Failed {
        /// The domain.
        domain: String,
        /// What QEMU printed.
        message: String,
    },
    /// Files of the run directory.
    #[error("cannot prepare the run directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The emulator for `machine`.
#[must_use]
pub fn emulator(machine: &MachineDef) -> String {
    machine.emulator.clone().unwrap_or_else(|| {
        let arch = machine.arch.as_deref().unwrap_or("x86_64");
        format!("qemu-system-{arch}")
    })
}

/// QEMU's arguments for `domain` (its runnable part `machine`), not
/// counting the program.
///
/// # Errors
/// A disk that is not a local file or block device, or an unknown bus.
pub fn command_line(
    domain: &Domain,
    machine: &MachineDef,
    paths: &RunPaths,
    accel: Accel,
    mode: StartMode,
) -> Result<Vec<String>, LaunchError> {
    let name = domain.def.name.clone().unwrap_or_default();
    let refuse = |why: String, fix: &str| LaunchError::Definition {
        domain: name.clone(),
        why,
        fix: fix.to_string(),
    };
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_string()));
    push(&["-name", &format!("guest={name}")]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    let machine_type = machine.machine.as_deref().unwrap_or("pc");
    let mem_mib = machine.memory.div_ceil(1 << 20);
    let backend = match machine.memory_source {
        MemorySource::Anonymous if !machine.memory_shared => None,
        MemorySource::Anonymous => Some(json!({"qom-type": "memory-backend-ram", "id": "vs-ram",
            "size": mem_mib << 20, "share": true})),
        MemorySource::Memfd => Some(json!({"qom-type": "memory-backend-memfd", "id": "vs-ram",
            "size": mem_mib << 20, "share": machine.memory_shared})),
        MemorySource::File => Some(json!({"qom-type": "memory-backend-file", "id": "vs-ram",
            "size": mem_mib << 20, "share": machine.memory_shared,
            "mem-path": paths.ram().to_string_lossy()})),
    };
    let mut machine_opt = format!("{machine_type},accel={}", accel.as_str());
    if backend.is_some() {
        machine_opt.push_str(",memory-backend=vs-ram");
    }
    push(&["-machine", &machine_opt]);
    if let Some(b) = &backend {
        push(&["-object", &b.to_string()]);
    }
    push(&["-m", &format!("{mem_mib}M")]);
    push(&["-smp", &machine.vcpus.to_string()]);
    if let Some(k) = &machine.boot.kernel {
        push(&["-kernel", k]);
    }
    if let Some(i) = &machine.boot.initrd {
        push(&["-initrd", i]);
    }
    if let Some(c) = &machine.boot.cmdline {
        push(&["-append", c]);
    }
    if let Some(l) = &machine.boot.loader {
        push(&["-bios", l]);
    }
    let qmp = paths.qmp();
    push(&[
        "-chardev",
        &format!("socket,id=vs-qmp,path={},server=on,wait=off", qmp.display()),
        "-mon",
        "chardev=vs-qmp,mode=control",
    ]);
    push(&[
        "-chardev",
        &format!("file,id=vs-console,path={}", paths.console().display()),
        "-serial",
        "chardev:vs-console",
    ]);
    let mut scsi = false;
    for d in &domain.def.disks {
        let Some(path) = d.source.local_path() else {
            return Err(refuse(
                format!("disk {} has no local source", d.target),
                "give it a file or block device source",
            ));
        };
        let (file_node, disk_node) = node_names(&d.target);
        let protocol = if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_file()) {
            "file"
        } else {
            "host_device"
        };
        let read_only = d.readonly || d.device == DiskDevice::Cdrom;
        push(&[
            "-blockdev",
            &json!({"driver": protocol, "filename": path, "node-name": file_node,
                "read-only": read_only, "cache": {"direct": false, "no-flush": false}})
            .to_string(),
        ]);
        let format = d.driver_type.as_deref().unwrap_or("raw");
        push(&[
            "-blockdev",
            &json!({"driver": format, "file": file_node, "node-name": disk_node,
                "read-only": read_only})
            .to_string(),
        ]);
        let bus = d.bus.as_deref().unwrap_or_else(|| {
            if d.target.starts_with("vd") {
                "virtio"
            } else if d.target.starts_with("sd") {
                "scsi"
            } else {
                "ide"
            }
        });
        let device = match (bus, d.device) {
            (_, DiskDevice::Cdrom) => "ide-cd".to_string(),
            ("virtio", _) => "virtio-blk-pci".to_string(),
            ("ide" | "sata", _) => "ide-hd".to_string(),
            ("scsi", _) => {
                if !scsi {
                    push(&["-device", "virtio-scsi-pci,id=vs-scsi"]);
                    scsi = true;
                }
                "scsi-hd,bus=vs-scsi.0".to_string()
            }
            (other, _) => {
                return Err(refuse(
                    format!(
                        "disk {} uses bus '{other}', which virtsnap cannot start",
                        d.target
                    ),
                    "use bus virtio, scsi, sata or ide",
                ));
            }
        };
        push(&[
            "-device",
            &format!("{device},drive={disk_node},id={}", d.target),
        ]);
    }
    if let Some(agent) = &machine.agent {
        let path = agent.as_ref().map_or_else(|| paths.agent(), PathBuf::from);
        push(&[
            "-device",
            "virtio-serial-pci,id=vs-serial",
            "-chardev",
            &format!(
                "socket,id=vs-agent,path={},server=on,wait=off",
                path.display()
            ),
            "-device",
            &format!(
                "virtserialport,bus=vs-serial.0,chardev=vs-agent,name={}",
                snapshot_conf::machine::AGENT_PORT
            ),
        ]);
    }
    if mode.paused || mode.incoming {
        push(&["-S"]);
    }
    if mode.incoming {
        push(&["-incoming", "defer"]);
    }
    push(&["-daemonize", "-pidfile", &paths.pid().to_string_lossy()]);
    a.extend(machine.qemu_args.iter().cloned());
    Ok(a)
}

/// Starts QEMU for `domain` and returns once it runs daemonized with its
/// monitor listening (`-daemonize` returns then).
///
/// # Errors
/// A definition QEMU cannot run, QEMU missing, or QEMU's refusal (its
/// message included).
pub async fn start(
    domain: &Domain,
    paths: &RunPaths,
    mode: StartMode,
) -> Result<Accel, LaunchError> {
    let name = domain.def.name.clone().unwrap_or_default();
    let machine = MachineDef::of(domain).map_err(|e| LaunchError::Definition {
        domain: name.clone(),
        why: e.to_string(),
        fix: "fix the domain definition (define)".into(),
    })?;
    if paths.qmp().as_os_str().len() >= 108 {
        return Err(LaunchError::SocketPathTooLong(paths.dir.clone()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LaunchError::Io { path, source }
    };
    std::fs::create_dir_all(&paths.dir).map_err(io(&paths.dir))?;
    for stale in [paths.qmp(), paths.agent(), paths.pid(), paths.attached()] {
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&stale)(e)),
        }
    }
    let accel = Accel::for_domain(domain);
    let args = command_line(domain, &machine, paths, accel, mode)?;
    let program = emulator(&machine);
    let log = std::fs::File::create(paths.log()).map_err(io(&paths.log()))?;
    let log_err = log.try_clone().map_err(io(&paths.log()))?;
    tracing::info!(domain = %name, program, ?args, "starting QEMU");
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .envs(machine.qemu_env.iter().cloned())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let status = cmd.status().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LaunchError::NoEmulator(program.clone())
        } else {
            LaunchError::Failed {
                domain: name.clone(),
                message: e.to_string(),
            }
        }
    })?;
    if !status.success() {
        let message = std::fs::read_to_string(paths.log()).unwrap_or_default();
        return Err(LaunchError::Failed {
            domain: name,
            message: message.trim().to_string(),
        });
    }
    Ok(accel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(xml_disks: &str, extra: &str) -> Domain {
        Domain::parse(&format!(
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>g</name>\
             <memory unit='MiB'>32</memory><os><type>hvm</type><kernel>/k.elf</kernel></os>\
             <devices>{xml_disks}</devices>{extra}</domain>"
        ))
        .expect("domain")
    }

    #[test]
    fn every_disk_gets_its_nodes_and_a_device_named_by_its_target() {
        let d = domain(
            "<disk type='file'><driver name='qemu' type='qcow2'/><source file='/i/a.qcow2'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file'><source file='/i/b.raw'/><target dev='sdb'/><readonly/></disk>\
             <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
            "<qemu:commandline><qemu:arg value='-no-reboot'/></qemu:commandline>",
        );
        let m = MachineDef::of(&d).expect("machine");
        let paths = RunPaths::new(Path::new("/run/vs"), "g");
        let args = command_line(&d, &m, &paths, Accel::Tcg, StartMode::default()).expect("argv");
        let line = args.join(" ");
        assert!(
            line.contains(r#""driver":"qcow2","file":"vs-file-vda","node-name":"vs-disk-vda""#),
            "{line}"
        );
        assert!(
            line.contains("virtio-blk-pci,drive=vs-disk-vda,id=vda"),
            "{line}"
        );
        assert!(
            line.contains("scsi-hd,bus=vs-scsi.0,drive=vs-disk-sdb,id=sdb"),
            "{line}"
        );
        assert!(
            line.contains(
                r#""driver":"raw","file":"vs-file-sdb","node-name":"vs-disk-sdb","read-only":true"#
            ),
            "{line}"
        );
        assert!(line.contains("-machine pc,accel=tcg"), "{line}");
        assert!(
            line.contains("path=/run/vs/g/qmp.sock,server=on,wait=off"),
            "{line}"
        );
        assert!(line.contains("path=/run/vs/g/agent.sock"), "{line}");
        assert!(line.contains("name=org.qemu.guest_agent.0"), "{line}");
        assert!(!line.contains(" -S"), "{line}");
        assert_eq!(args.last().map(String::as_str), Some("-no-reboot"));
        let paused = command_line(
            &d,
            &m,
            &paths,
            Accel::Tcg,
            StartMode {
                paused: true,
                incoming: true,
            },
        )
        .expect("argv")
        .join(" ");
        assert!(paused.contains("-S -incoming defer"), "{paused}");
    }

    #[test]
    fn a_network_disk_is_refused_with_the_disk_named() {
        let d = domain(
            "<disk type='network'><source protocol='nbd' name='x'><host name='h'/></source><target dev='vda'/></disk>",
            "",
        );
        let m = MachineDef::of(&d).expect("machine");
        let e = command_line(
            &d,
            &m,
            &RunPaths::new(Path::new("/r"), "g"),
            Accel::Tcg,
            StartMode::default(),
        )
        .expect_err("refused");
        assert!(
            e.to_string().contains("disk vda has no local source"),
            "{e}"
        );
    }
}
