//! What the engine asks of the hypervisor that runs (or would start) a
//! domain: its state and abilities for the planner's facts, and one call
//! per hypervisor step of a plan. The engine knows no hypervisor by name;
//! QEMU over QMP implements this trait in driver-qemu.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use snapshot_conf::Domain;

use crate::plan::{
    AgentState, DiskStep, DomainState, HypervisorCaps, LiveDiskCaps, MemoryImage, MemorySave,
};

/// An error of the hypervisor, as its implementation words it.
pub type HypervisorError = Box<dyn std::error::Error + Send + Sync>;

/// What the hypervisor tells the planner about a running domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveFacts {
    /// What it can do for the whole domain.
    pub caps: HypervisorCaps,
    /// The guest agent.
    pub agent: AgentState,
    /// Per disk target: what it can do with the disk, and whether a block
    /// job runs on it.
    pub disks: HashMap<String, (LiveDiskCaps, bool)>,
}

/// The hypervisor for one domain. Each step call does its step and fails
/// without side effects, or says what it left.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// The domain's state (shut off when no process runs it).
    async fn state(&self) -> Result<DomainState, HypervisorError>;
    /// What it can do with the running `domain` (its definition).
    async fn live_facts(&self, domain: &Domain) -> Result<LiveFacts, HypervisorError>;
    /// What it could do with `domain` once started (reverts of a shut-off
    /// domain to a snapshot with memory).
    async fn offline_caps(&self, domain: &Domain) -> HypervisorCaps;
    /// Freezes the guest's filesystems (guest agent).
    async fn freeze(&self) -> Result<(), HypervisorError>;
    /// Thaws them.
    async fn thaw(&self) -> Result<(), HypervisorError>;
    /// Pauses the guest's CPUs.
    async fn pause(&self) -> Result<(), HypervisorError>;
    /// Resumes them.
    async fn resume(&self) -> Result<(), HypervisorError>;
    /// Takes internal system checkpoint `name`: memory in `vmstate`'s
    /// image, internal snapshots of `disks`.
    async fn save_memory_internal(
        &self,
        name: &str,
        vmstate: &str,
        disks: &[String],
    ) -> Result<(), HypervisorError>;
    /// Drops internal checkpoint `name` from `disks` (an undo).
    async fn delete_memory_internal(
        &self,
        name: &str,
        disks: &[String],
    ) -> Result<(), HypervisorError>;
    /// Saves memory to `file`. With [`MemorySave::Live`] or
    /// [`MemorySave::Background`], the guest is left paused at the
    /// consistency point, for the disk steps that follow.
    async fn save_memory(&self, file: &Path, how: MemorySave) -> Result<(), HypervisorError>;
    /// Makes ready what the transaction of `disks` needs (new overlays),
    /// so that the transaction itself is all that happens while the guest
    /// stands still (a live memory save pauses it at switchover). Undone
    /// by [`Hypervisor::undo_disk_transaction`].
    async fn prepare_disk_transaction(
        &self,
        _name: &str,
        _disks: &[DiskStep],
    ) -> Result<(), HypervisorError> {
        Ok(())
    }
    /// Snapshots `disks` in one transaction (internal ones named `name`).
    async fn disk_transaction(&self, name: &str, disks: &[DiskStep])
    -> Result<(), HypervisorError>;
    /// Undoes a transaction: drops the internal snapshots, takes the
    /// overlays back out of the chains (their data merged down).
    async fn undo_disk_transaction(
        &self,
        name: &str,
        disks: &[DiskStep],
    ) -> Result<(), HypervisorError>;
    /// Drops internal snapshot `name` from the image of `step` while the
    /// domain runs on it. Nothing to do when it is gone already.
    async fn delete_disk_snapshot(
        &self,
        step: &DiskStep,
        name: &str,
    ) -> Result<(), HypervisorError>;
    /// Pulls the data `into` reads from `image` into `into` while the
    /// domain runs on it (`block-stream`), so that `into` no longer needs
    /// `image` (its backing becomes `image`'s). Returns `false` when
    /// `into` does not use `image` (done before, or not in the running
    /// chain of disk `disk`).
    async fn stream_layer(
        &self,
        disk: &str,
        image: &str,
        into: &str,
    ) -> Result<bool, HypervisorError>;
    /// Loads internal checkpoint `name` of `disks` into the running
    /// domain in place, then leaves its CPUs paused or running.
    async fn load_checkpoint(
        &self,
        name: &str,
        disks: &[String],
        paused: bool,
    ) -> Result<(), HypervisorError>;
    /// Stops the domain after a snapshot (HALT): the guest is shut off.
    async fn halt(&self) -> Result<(), HypervisorError>;
    /// Stops the domain at once, whatever its guest does (a revert
    /// replaces its state). Nothing to do when it does not run.
    async fn stop(&self) -> Result<(), HypervisorError>;
    /// Starts `domain`, paused or running, with `memory` loaded.
    async fn start(
        &self,
        domain: &Domain,
        paused: bool,
        memory: Option<&MemoryImage>,
    ) -> Result<(), HypervisorError>;
}

/// Gives the hypervisor of each domain (the CLI's is QEMU's).
pub trait HypervisorProvider: Send + Sync {
    /// The hypervisor of domain `name`.
    fn for_domain(&self, name: &str) -> Arc<dyn Hypervisor>;
}
