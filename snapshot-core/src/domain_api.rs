//! Domain snapshots as a program calls them (libvirt's
//! `virDomainSnapshotCreateXML` and friends) for domains defined in the
//! state directory: the request is parsed, the facts about the domain's
//! disks gathered from the storage drivers, the planner consulted, and the
//! plan run by the executor under the domain's snapshot lock. A create a
//! crash interrupted is rolled back the next time the domain's snapshots
//! are opened for writing, before anything else happens.
//!
//! Domains are shut off here: running ones come with the hypervisor.

use std::path::Path;
use std::sync::Arc;

use snapshot_conf::{ConfError, Domain, DomainSnapshotDef, ParseFlags, ParseOptions};

use crate::driver::{Capabilities, VolumeDriver, VolumeState};
use crate::exec::{self, ExecError, Executor, OP_DOMAIN_CREATE, Observer};
use crate::plan::{
    CreateFlags, CreateRequest, DiskFacts, DomainFacts, DomainState, Plan, PlanError, PlanKind,
    StorageOption, plan_create,
};
use crate::store::domains::{self, DomainError};
use crate::store::{Access, Layout, MetadataStore, Owner, SnapshotRecord, StoreError};

/// Why a domain snapshot call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DomainApiError {
    /// The request XML.
    #[error("invalid <domainsnapshot>: {0}")]
    Xml(#[source] ConfError),
    /// The planner refused.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Running the plan failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The metadata store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The domain definition.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A snapshot of that name exists.
    #[error("domain '{domain}' already has a snapshot named '{name}'; choose another name")]
    NameTaken {
        /// The domain.
        domain: String,
        /// The name.
        name: String,
    },
    /// A disk's image is missing.
    #[error(
        "disk {disk} of domain '{domain}' uses {path}, which does not exist; fix the domain \
         definition (define) or restore the image"
    )]
    MissingImage {
        /// The domain.
        domain: String,
        /// The disk.
        disk: String,
        /// Its image.
        path: String,
    },
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// `--dry-run`: the plan, nothing done.
    Planned(Plan),
    /// The snapshot was taken; its stored definition (none with
    /// NO_METADATA) and the plan run.
    Taken {
        /// The definition stored, with its parent.
        def: Option<Box<DomainSnapshotDef>>,
        /// The plan that ran.
        plan: Plan,
    },
}

/// Domain snapshots over the registered storage drivers.
pub struct DomainApi {
    layout: Layout,
    drivers: Vec<Arc<dyn VolumeDriver>>,
}

impl std::fmt::Debug for DomainApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainApi")
            .field("layout", &self.layout)
            .field(
                "drivers",
                &self.drivers.iter().map(|d| d.kind()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl DomainApi {
    /// The API over `layout` with `drivers`, preferred first.
    #[must_use]
    pub fn new(layout: Layout, drivers: Vec<Arc<dyn VolumeDriver>>) -> Self {
        Self { layout, drivers }
    }

    fn executor<'a>(&'a self, observer: Option<&'a Observer>) -> Executor<'a> {
        Executor {
            layout: &self.layout,
            drivers: &self.drivers,
            hypervisor: None,
            observer,
        }
    }

    /// Opens `domain`'s snapshot metadata for writing, first rolling back
    /// a create a crash interrupted. Returns the store and a note of what
    /// recovery did.
    ///
    /// # Errors
    /// The store's, or a recovery that failed (the record stays).
    pub async fn open_for_write(
        &self,
        domain: &str,
    ) -> Result<(MetadataStore, Option<String>), DomainApiError> {
        let mut store = MetadataStore::open(
            &self.layout,
            Owner::Domain(domain.to_string()),
            Access::Write,
        )?;
        let mut note = None;
        if store
            .pending_intent()
            .is_some_and(|i| i.operation == OP_DOMAIN_CREATE)
        {
            let (name, kept) = exec::recover_create(&self.executor(None), &mut store).await?;
            note = Some(if kept {
                format!(
                    "an interrupted snapshot '{name}' of domain '{domain}' was complete; its record was cleared"
                )
            } else {
                format!("an interrupted snapshot '{name}' of domain '{domain}' was rolled back")
            });
            tracing::warn!(domain, snapshot = %name, kept, "recovered an interrupted create");
        }
        Ok((store, note))
    }

    /// What the drivers can do with each disk of `domain`, shut off.
    ///
    /// # Errors
    /// A disk whose image is missing.
    pub async fn facts(&self, domain: &Domain) -> Result<DomainFacts, DomainApiError> {
        let mut disks = Vec::with_capacity(domain.def.disks.len());
        for d in &domain.def.disks {
            let Some(path) = d.source.local_path() else {
                disks.push(DiskFacts::default());
                continue;
            };
            let meta = std::fs::metadata(path);
            if meta.is_err() {
                return Err(DomainApiError::MissingImage {
                    domain: domain.def.name.clone().unwrap_or_default(),
                    disk: d.target.clone(),
                    path: path.to_string(),
                });
            }
            let format = d.driver_type.as_deref().map_or_else(
                || exec::sniff_format(Path::new(path)),
                crate::driver::VolumeFormat::from_name,
            );
            let volume = crate::driver::Volume::new(path, format);
            let mut offline = Vec::new();
            for driver in &self.drivers {
                let Ok(caps) = driver.capabilities(&volume, VolumeState::Offline).await else {
                    continue;
                };
                if caps != Capabilities::default() {
                    offline.push(StorageOption::new(driver.kind(), caps));
                }
            }
            disks.push(DiskFacts {
                offline,
                in_use: Vec::new(),
                live: crate::plan::LiveDiskCaps::default(),
                regular_file: meta.is_ok_and(|m| m.is_file()),
                block_job: false,
            });
        }
        let mut facts = DomainFacts::offline(domain.clone(), disks);
        facts.state = DomainState::Shutoff;
        Ok(facts)
    }

    /// `virDomainSnapshotCreateXML` on a defined, shut-off domain: `xml`
    /// (a `<domainsnapshot>`, or none for all defaults) with `flags`.
    /// With `dry_run`, only the plan. `observer` is told of each step.
    ///
    /// # Errors
    /// The XML, a taken name, the planner's refusal, or a step's failure
    /// (everything done undone).
    pub async fn snapshot_create_xml(
        &self,
        domain_name: &str,
        xml: Option<&str>,
        flags: CreateFlags,
        dry_run: bool,
        observer: Option<&Observer>,
    ) -> Result<Created, DomainApiError> {
        let domain = domains::get(&self.layout, domain_name)?;
        let mut parse = ParseFlags::empty();
        parse.set(ParseFlags::REDEFINE, flags.contains(CreateFlags::REDEFINE));
        parse.set(ParseFlags::VALIDATE, flags.contains(CreateFlags::VALIDATE));
        let mut options = ParseOptions::new(parse);
        if !flags.contains(CreateFlags::REDEFINE) {
            options.creation_time = Some(now());
        }
        let text = xml.unwrap_or("<domainsnapshot/>");
        let def = DomainSnapshotDef::parse(text, &options)
            .map_err(DomainApiError::Xml)?
            .def;
        let request = CreateRequest { def, flags };
        let facts = self.facts(&domain).await?;
        let plan = plan_create(&request, &facts)?;
        if dry_run {
            if plan.kind != PlanKind::Redefine {
                let store = MetadataStore::open(
                    &self.layout,
                    Owner::Domain(domain_name.to_string()),
                    Access::Read,
                )?;
                if store.tree().contains(&plan.snapshot) {
                    return Err(DomainApiError::NameTaken {
                        domain: domain_name.to_string(),
                        name: plan.snapshot.clone(),
                    });
                }
            }
            return Ok(Created::Planned(plan));
        }
        let (mut store, _) = self.open_for_write(domain_name).await?;
        if plan.kind == PlanKind::Redefine {
            let def = plan.def.clone().unwrap_or_default();
            store.redefine(
                SnapshotRecord::Domain(Box::new(def.clone())),
                flags.contains(CreateFlags::CURRENT),
            )?;
            return Ok(Created::Taken {
                def: Some(Box::new(def)),
                plan,
            });
        }
        if store.tree().contains(&plan.snapshot) {
            return Err(DomainApiError::NameTaken {
                domain: domain_name.to_string(),
                name: plan.snapshot.clone(),
            });
        }
        let def = self
            .executor(observer)
            .create(&plan, &domain, &mut store)
            .await?;
        Ok(Created::Taken {
            def: def.map(Box::new),
            plan,
        })
    }
}
