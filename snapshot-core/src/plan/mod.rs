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
    DiskAction, DiskStep, MemorySave, Performer, Plan, PlanKind, SourceChange, Step, Undo,
};
