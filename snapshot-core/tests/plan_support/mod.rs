//! Shared builders for the planner tests: domains with qcow2 and raw
//! disks, the facts a caller would gather for them, requests parsed from
//! `<domainsnapshot>` text.

#![allow(dead_code)]

use snapshot_conf::{Domain, DomainSnapshotDef, ParseFlags, ParseOptions};
use snapshot_core::driver::Capabilities;
use snapshot_core::plan::{
    AgentState, CreateFlags, CreateRequest, DiskFacts, DomainFacts, DomainState, HypervisorCaps,
    LiveDiskCaps, StorageOption,
};

/// A disk of a test domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Qcow2,
    Raw,
    /// An empty CD-ROM drive.
    Cdrom,
    /// A network disk no driver handles.
    Network,
}

/// A `<domain>` named `vm` with disks vda, vdb, ... of these kinds.
pub fn domain(kinds: &[Kind]) -> Domain {
    let mut devices = String::new();
    for (i, kind) in kinds.iter().enumerate() {
        let target = target(i);
        devices.push_str(&match kind {
            Kind::Qcow2 => format!(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/{target}.qcow2'/><target dev='{target}' bus='virtio'/></disk>"
            ),
            Kind::Raw => format!(
                "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/img/{target}.raw'/><target dev='{target}' bus='virtio'/></disk>"
            ),
            Kind::Cdrom => format!(
                "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='{target}' bus='sata'/><readonly/></disk>"
            ),
            Kind::Network => format!(
                "<disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='rbd' name='pool/{target}'/><target dev='{target}' bus='virtio'/></disk>"
            ),
        });
    }
    Domain::parse(&format!(
        "<domain type='kvm'><name>vm</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid><devices>{devices}</devices></domain>"
    ))
    .expect("test domain parses")
}

/// `vda`, `vdb`, ...
pub fn target(i: usize) -> String {
    format!(
        "vd{}",
        char::from(b'a' + u8::try_from(i).expect("few disks"))
    )
}

/// What the qemu driver can do with a qcow2 image offline.
pub fn qcow2_caps() -> Capabilities {
    Capabilities {
        internal: true,
        external: true,
        overlay: true,
        revert: true,
        delete_rebase: true,
        list: true,
        ..Capabilities::default()
    }
}

/// What a caller learns of a disk of this kind with the domain in
/// `state`: qcow2 through the qemu driver (and QEMU while running), raw
/// through the file driver (copies) and the qemu driver (overlays) while
/// offline, overlays by QEMU while running.
pub fn disk_facts(kind: Kind, state: DomainState) -> DiskFacts {
    let running = state.is_active();
    let live = |internal: bool| LiveDiskCaps {
        internal: running && internal,
        vmstate: running && internal,
        external: running,
    };
    match kind {
        Kind::Qcow2 => DiskFacts {
            offline: vec![StorageOption::new("qemu", qcow2_caps())],
            in_use: Vec::new(),
            live: live(true),
            regular_file: true,
            block_job: false,
        },
        Kind::Raw => DiskFacts {
            offline: vec![
                StorageOption::new(
                    "file",
                    Capabilities {
                        copy: true,
                        revert: true,
                        checksums: true,
                        ..Capabilities::default()
                    },
                ),
                StorageOption::new(
                    "qemu",
                    Capabilities {
                        overlay: true,
                        ..Capabilities::default()
                    },
                ),
            ],
            in_use: Vec::new(),
            live: live(false),
            regular_file: true,
            block_job: false,
        },
        Kind::Cdrom => DiskFacts::default(),
        Kind::Network => DiskFacts {
            live: LiveDiskCaps {
                external: running,
                ..LiveDiskCaps::default()
            },
            ..DiskFacts::default()
        },
    }
}

/// A QEMU that can do everything.
pub fn qemu() -> HypervisorCaps {
    HypervisorCaps {
        snapshot_save: true,
        memory_to_file: true,
        background_snapshot: false,
        transaction: true,
    }
}

/// Facts for domain `vm` with these disks in `state`.
pub fn facts(kinds: &[Kind], state: DomainState) -> DomainFacts {
    DomainFacts {
        domain: domain(kinds),
        state,
        persistent: true,
        agent: AgentState::Connected,
        managed_save: false,
        disks: kinds.iter().map(|k| disk_facts(*k, state)).collect(),
        hypervisor: if state.is_active() {
            qemu()
        } else {
            HypervisorCaps::default()
        },
    }
}

/// Two qcow2 disks, the seed table's domain.
pub fn two_qcow2(state: DomainState) -> DomainFacts {
    facts(&[Kind::Qcow2, Kind::Qcow2], state)
}

/// A `<domainsnapshot>` named `s1` with this inner XML, parsed as a
/// creation request (no OFFLINE flag: the planner judges memory).
pub fn def(inner: &str) -> DomainSnapshotDef {
    let xml = format!("<domainsnapshot><name>s1</name>{inner}</domainsnapshot>");
    let mut options = ParseOptions::new(ParseFlags::empty());
    options.creation_time = Some(1_700_000_000);
    DomainSnapshotDef::parse(&xml, &options)
        .unwrap_or_else(|e| panic!("test XML {xml} parses: {e}"))
        .def
}

/// A request from inner XML and flags.
pub fn request(inner: &str, flags: CreateFlags) -> CreateRequest {
    CreateRequest {
        def: def(inner),
        flags,
    }
}
