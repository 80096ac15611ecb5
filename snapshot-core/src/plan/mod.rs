//! The planner: a domain snapshot request goes in, a [`Plan`] of concrete
//! steps or a precise refusal ([`PlanError`]) comes out. Pure functions,
//! no I/O: everything they need to know about the domain, its disks and
//! the hypervisor arrives as facts ([`DomainFacts`], [`DiskFacts`],
//! [`HypervisorCaps`]), gathered by the caller.
//!
//! - [`plan_create`]: libvirt's `virDomainSnapshotCreateXML` with its
//!   flags, following the seed's combination table (domain state x memory
//!   x disks x disk-only) where libvirt does, and supporting the rows
//!   libvirt refuses as "unsupported" (each disk is taken by its own
//!   mechanism; memory is a separate part).
//! - [`plan_revert`]: `virDomainRevertToSnapshot` (RUNNING / PAUSED /
//!   FORCE).
//! - [`plan_delete`]: `virDomainSnapshotDelete` with every child policy,
//!   external snapshots included (merged into their one dependent image,
//!   or their dependents rebased), so no branch loses data.
//!
//! A plan's steps run in order; each step with a side effect says how it
//! is undone ([`Step::undo`]), which the executor records before running
//! it. [`Plan`] prints as a numbered list: what `--dry-run` shows.
//!
//! Planning touches nothing, so it can be tried anywhere: a running
//! domain with two qcow2 disks, a disk-only snapshot with `vda` kept
//! internal and `vdb` external (row 13 of the seed table mixed with row
//! 11, which libvirt refuses):
//!
//! ```
//! use snapshot_conf::{Domain, DomainSnapshotDef, ParseFlags, ParseOptions};
//! use snapshot_core::plan::{
//!     AgentState, CreateFlags, CreateRequest, DiskFacts, DomainFacts, DomainState,
//!     HypervisorCaps, LiveDiskCaps, Step, plan_create,
//! };
//!
//! let domain = Domain::parse(
//!     "<domain type='kvm'><name>vm</name><devices>
//!        <disk type='file'><driver name='qemu' type='qcow2'/>
//!          <source file='/img/a.qcow2'/><target dev='vda'/></disk>
//!        <disk type='file'><driver name='qemu' type='qcow2'/>
//!          <source file='/img/b.qcow2'/><target dev='vdb'/></disk>
//!      </devices></domain>",
//! )?;
//! // What QEMU can do with each qcow2 disk while the domain runs.
//! let qcow2 = DiskFacts {
//!     live: LiveDiskCaps { internal: true, vmstate: true, external: true },
//!     regular_file: true,
//!     ..DiskFacts::default()
//! };
//! let facts = DomainFacts {
//!     domain,
//!     state: DomainState::Running,
//!     persistent: true,
//!     agent: AgentState::Connected,
//!     managed_save: false,
//!     disks: vec![qcow2.clone(), qcow2],
//!     hypervisor: HypervisorCaps {
//!         snapshot_save: true,
//!         memory_to_file: true,
//!         background_snapshot: false,
//!         transaction: true,
//!     },
//! };
//! let xml = "<domainsnapshot><name>s1</name><disks>
//!              <disk name='vda' snapshot='internal'/>
//!              <disk name='vdb' snapshot='external'/>
//!            </disks></domainsnapshot>";
//! let mut options = ParseOptions::new(ParseFlags::empty());
//! options.creation_time = Some(1_700_000_000);
//! let request = CreateRequest {
//!     def: DomainSnapshotDef::parse(xml, &options)?.def,
//!     flags: CreateFlags::DISK_ONLY | CreateFlags::QUIESCE,
//! };
//! let plan = plan_create(&request, &facts)?;
//! // Frozen filesystems, one transaction for both disks, thawed after.
//! assert_eq!(plan.steps.first(), Some(&Step::Freeze));
//! assert!(matches!(&plan.steps[1], Step::DiskTransaction(d) if d.len() == 2));
//! assert!(plan.has(&Step::Thaw));
//! println!("{plan}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod create;
mod delete;
mod error;
mod facts;
mod revert;
mod step;

pub use create::{CreateFlags, CreateRequest, plan_create};
pub use delete::{DeleteRequest, plan_delete};
pub use error::PlanError;
pub use facts::{
    AgentState, DiskFacts, DomainFacts, DomainState, HypervisorCaps, LiveDiskCaps, StorageOption,
};
pub use revert::{RevertFlags, RevertRequest, plan_revert, state_after};
pub use step::{
    DiskAction, DiskStep, MemoryImage, MemorySave, Performer, Plan, PlanKind, SourceChange, Step,
    Undo,
};
