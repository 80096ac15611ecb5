//! `snapshot-revert` and `snapshot-delete` on the storage of a defined,
//! shut-off domain, through [`DomainApi`]: the planner says what goes
//! back, is merged, discarded or kept (`--dry-run` prints it and changes
//! nothing), the executor does it, and an interrupted revert or delete is
//! finished the next time the domain's snapshots are changed.
//! `snapshot-delete --metadata` stays metadata only and works for any
//! domain with snapshot metadata, defined here or not.

use clap::Args;
use snapshot_core::ChildPolicy;
use snapshot_core::plan::{Plan, RevertFlags};
use snapshot_core::store::{Access, Layout, MetadataStore, Owner, domains};

use super::DeleteArgs;
use super::create::{CreateError, block_on};

/// `snapshot-revert`.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// Domain name.
    domain: String,
    /// Snapshot name (or --snapshotname, or --current).
    #[arg(value_name = "NAME", required_unless_present_any = ["current", "snapshotname_opt"])]
    snapshotname: Option<String>,
    /// Snapshot name, virsh's option form.
    #[arg(long = "snapshotname", value_name = "NAME", id = "snapshotname_opt")]
    snapshotname_opt: Option<String>,
    /// Revert to the current snapshot.
    #[arg(long)]
    current: bool,
    /// Run the domain afterwards, whatever the snapshot's state.
    #[arg(long, conflicts_with = "paused")]
    running: bool,
    /// Leave the domain paused afterwards.
    #[arg(long)]
    paused: bool,
    /// Accept a risky revert (a snapshot without its domain definition, a
    /// managed save image that would be discarded).
    #[arg(long)]
    force: bool,
    /// Recreate the NVRAM from its template when starting.
    #[arg(long)]
    reset_nvram: bool,
    /// Print the plan, numbered, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The snapshot named, or the current one.
fn resolve(layout: &Layout, domain: &str, name: Option<&String>) -> Result<String, CreateError> {
    if let Some(n) = name {
        return Ok(n.clone());
    }
    let store = MetadataStore::open(layout, Owner::Domain(domain.to_string()), Access::Read)
        .map_err(|e| CreateError::Api(Box::new(e.into())))?;
    store
        .tree()
        .current()
        .map(str::to_string)
        .ok_or_else(|| CreateError::NoCurrent(domain.to_string()))
}

fn notes(plan: &Plan) {
    for note in &plan.notes {
        eprintln!("virtsnap: note: {note}");
    }
}

/// `snapshot-revert`.
///
/// # Errors
/// An unknown snapshot, the planner's refusal or a failed step.
pub fn revert(layout: &Layout, a: &RevertArgs) -> Result<String, CreateError> {
    let name = resolve(
        layout,
        &a.domain,
        a.snapshotname.as_ref().or(a.snapshotname_opt.as_ref()),
    )?;
    let mut flags = RevertFlags::empty();
    flags.set(RevertFlags::RUNNING, a.running);
    flags.set(RevertFlags::PAUSED, a.paused);
    flags.set(RevertFlags::FORCE, a.force);
    flags.set(RevertFlags::RESET_NVRAM, a.reset_nvram);
    let api = crate::vol_cmd::domain_api(layout);
    let plan = block_on(api.revert_to_snapshot(&a.domain, &name, flags, a.dry_run, None))??;
    if a.dry_run {
        return Ok(plan.to_string());
    }
    notes(&plan);
    // virsh prints nothing on success.
    Ok(String::new())
}

/// `snapshot-delete` of a snapshot's storage and metadata.
///
/// # Errors
/// An unknown snapshot, the planner's refusal or a failed step.
pub fn delete(layout: &Layout, a: &DeleteArgs) -> Result<String, CreateError> {
    if domains::get(layout, &a.domain).is_err() && !a.metadata {
        return Err(CreateError::NotDefinedForStorage(a.domain.clone()));
    }
    let name = resolve(layout, &a.domain, a.snapshotname.as_ref())?;
    let policy = if a.children {
        ChildPolicy::Children
    } else if a.children_only {
        ChildPolicy::ChildrenOnly
    } else {
        ChildPolicy::Rebase
    };
    let api = crate::vol_cmd::domain_api(layout);
    let plan =
        block_on(api.snapshot_delete(&a.domain, &name, policy, a.metadata, a.dry_run, None))??;
    if a.dry_run {
        return Ok(plan.to_string());
    }
    notes(&plan);
    Ok(if a.children_only {
        format!("Domain snapshot {name} children deleted\n")
    } else {
        format!("Domain snapshot {name} deleted\n")
    })
}

/// `snapshot-recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Domain name.
    domain: String,
    /// Forget the interrupted operation instead of finishing or rolling
    /// it back (when it cannot complete and its storage was repaired by
    /// hand): the steps it did stay as they are.
    #[arg(long)]
    discard: bool,
}

/// `snapshot-recover`: finishes (a revert, a delete) or rolls back (a
/// create) what a crash or failure interrupted, or forgets it.
///
/// # Errors
/// The recovery fails again, or the store's.
pub fn recover(layout: &Layout, a: &RecoverArgs) -> Result<String, CreateError> {
    let store_err = |e: snapshot_core::store::StoreError| CreateError::Api(Box::new(e.into()));
    if a.discard {
        let mut store = MetadataStore::open(layout, Owner::Domain(a.domain.clone()), Access::Write)
            .map_err(store_err)?;
        if store.pending_intent().is_none() {
            return Ok(format!(
                "Domain '{}' has no interrupted snapshot operation\n",
                a.domain
            ));
        }
        let forgotten = store.discard_intent().map_err(store_err)?;
        let what = forgotten.map_or_else(|| "unreadable".to_string(), |i| i.operation);
        return Ok(format!(
            "Forgot the interrupted '{what}' of domain '{}'; what it did stays as it is\n",
            a.domain
        ));
    }
    let api = crate::vol_cmd::domain_api(layout);
    let (_, note) = block_on(api.open_for_write(&a.domain))??;
    Ok(match note {
        Some(n) => format!("{n}\n"),
        None => format!(
            "Domain '{}' has no interrupted snapshot operation\n",
            a.domain
        ),
    })
}
