//! Domain snapshots as a program calls them (libvirt's
//! `virDomainSnapshotCreateXML` and friends) for domains defined in the
//! state directory: the request is parsed, the facts about the domain's
//! disks gathered from the storage drivers, the planner consulted, and the
//! plan run by the executor under the domain's snapshot lock. A create a
//! crash interrupted is rolled back the next time the domain's snapshots
//! are opened for writing, before anything else happens.
//!
//! Domains are shut off here: running ones come with the hypervisor.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use snapshot_conf::{
    ConfError, Domain, DomainSnapshotDef, EmbeddedDomain, ParseFlags, ParseOptions,
    SnapshotMode as XmlMode,
};

use crate::driver::{Capabilities, VolumeDriver, VolumeState};
use crate::exec::{self, ExecError, Executor, OP_DOMAIN_CREATE, OP_DOMAIN_FINISH, Observer};
use crate::hypervisor::{Hypervisor, HypervisorProvider};
use crate::plan::{
    CreateFlags, CreateRequest, DeleteRequest, DiskFacts, DomainFacts, Plan, PlanError, PlanKind,
    RevertFlags, RevertRequest, StorageOption, plan_create, plan_delete, plan_revert,
};
use crate::store::domains::{self, DomainError};
use crate::store::{Access, Layout, MetadataStore, Owner, SnapshotRecord, StoreError};
use crate::tree::{ChildPolicy, ListFilter};

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
    /// No snapshot of that name.
    #[error("domain '{domain}' has no snapshot named '{name}'; see snapshot-list")]
    NoSnapshot {
        /// The domain.
        domain: String,
        /// The name.
        name: String,
    },
    /// The hypervisor could not tell the domain's state.
    #[error("cannot ask the hypervisor about the domain: {0}")]
    Hypervisor(#[source] crate::hypervisor::HypervisorError),
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
    hypervisors: Option<Arc<dyn HypervisorProvider>>,
}

impl std::fmt::Debug for DomainApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainApi")
            .field("layout", &self.layout)
            .field(
                "drivers",
                &self.drivers.iter().map(|d| d.kind()).collect::<Vec<_>>(),
            )
            .field("hypervisors", &self.hypervisors.is_some())
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
        Self {
            layout,
            drivers,
            hypervisors: None,
        }
    }

    /// The same, with the hypervisor of each domain from `provider`:
    /// running domains can then be snapshotted, and reverts can start
    /// domains.
    #[must_use]
    pub fn with_hypervisors(mut self, provider: Arc<dyn HypervisorProvider>) -> Self {
        self.hypervisors = Some(provider);
        self
    }

    /// The hypervisor of `domain`, when one is configured.
    #[must_use]
    pub fn hypervisor(&self, domain: &str) -> Option<Arc<dyn Hypervisor>> {
        self.hypervisors.as_ref().map(|p| p.for_domain(domain))
    }

    fn executor<'a>(
        &'a self,
        hypervisor: Option<&'a Arc<dyn Hypervisor>>,
        observer: Option<&'a Observer>,
    ) -> Executor<'a> {
        Executor {
            layout: &self.layout,
            drivers: &self.drivers,
            hypervisor: hypervisor.map(|h| &**h as &dyn Hypervisor),
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
        let hv = self.hypervisor(domain);
        if store
            .pending_intent()
            .is_some_and(|i| i.operation == OP_DOMAIN_FINISH)
        {
            exec::recover_finish(&self.executor(hv.as_ref(), None), &mut store).await?;
            note = Some(format!(
                "an interrupted revert or delete on domain '{domain}' was finished"
            ));
            tracing::info!(domain, "finished an interrupted revert or delete");
        }
        if store
            .pending_intent()
            .is_some_and(|i| i.operation == OP_DOMAIN_CREATE)
        {
            let (name, kept) =
                exec::recover_create(&self.executor(hv.as_ref(), None), &mut store).await?;
            note = Some(if kept {
                format!(
                    "an interrupted snapshot '{name}' of domain '{domain}' was complete; its record was cleared"
                )
            } else {
                format!("an interrupted snapshot '{name}' of domain '{domain}' was rolled back")
            });
            tracing::info!(domain, snapshot = %name, kept, "recovered an interrupted create");
        }
        Ok((store, note))
    }

    /// What is known of `domain`: its state and, while it runs, what the
    /// hypervisor can do with it; what the drivers can do with each disk
    /// (shut off, and in use by the running guest).
    ///
    /// # Errors
    /// A disk whose image is missing, or a hypervisor that cannot say
    /// what state the domain is in.
    pub async fn facts(&self, domain: &Domain) -> Result<DomainFacts, DomainApiError> {
        let name = domain.def.name.clone().unwrap_or_default();
        let hv = self.hypervisor(&name);
        let (state, live) = match &hv {
            Some(h) => {
                let state = h.state().await.map_err(DomainApiError::Hypervisor)?;
                if state.is_active() {
                    let live = h
                        .live_facts(domain)
                        .await
                        .map_err(DomainApiError::Hypervisor)?;
                    (state, Some(live))
                } else {
                    (state, None)
                }
            }
            None => (crate::plan::DomainState::Shutoff, None),
        };
        let mut disks = Vec::with_capacity(domain.def.disks.len());
        for d in &domain.def.disks {
            let (live_caps, block_job) = live
                .as_ref()
                .and_then(|l| l.disks.get(&d.target).copied())
                .unwrap_or_default();
            let Some(path) = d.source.volume_name() else {
                disks.push(DiskFacts {
                    live: live_caps,
                    block_job,
                    ..DiskFacts::default()
                });
                continue;
            };
            // A network image (`rbd:pool/image`) is the driver's to find.
            let network = d.source.local_path().is_none();
            let meta = std::fs::metadata(&path);
            if meta.is_err() && !network {
                return Err(DomainApiError::MissingImage {
                    domain: name.clone(),
                    disk: d.target.clone(),
                    path,
                });
            }
            let format = d.driver_type.as_deref().map_or_else(
                || {
                    if network {
                        crate::driver::VolumeFormat::Raw
                    } else {
                        exec::sniff_format(Path::new(&path))
                    }
                },
                crate::driver::VolumeFormat::from_name,
            );
            let volume = crate::driver::Volume::new(&path, format);
            let mut offline = Vec::new();
            let mut in_use = Vec::new();
            for driver in self.drivers.iter().filter(|d| d.handles(&volume)) {
                if let Ok(caps) = driver.capabilities(&volume, VolumeState::Offline).await
                    && caps != Capabilities::default()
                {
                    offline.push(StorageOption::new(driver.kind(), caps));
                }
                if live.is_some()
                    && let Ok(caps) = driver.capabilities(&volume, VolumeState::InUse).await
                    && caps != Capabilities::default()
                {
                    in_use.push(StorageOption::new(driver.kind(), caps));
                }
            }
            disks.push(DiskFacts {
                offline,
                in_use,
                live: live_caps,
                regular_file: meta.is_ok_and(|m| m.is_file()),
                block_job,
            });
        }
        let mut facts = DomainFacts::offline(domain.clone(), disks);
        facts.state = state;
        if let Some(live) = live {
            facts.agent = live.agent;
            facts.hypervisor = live.caps;
        } else if let Some(h) = &hv {
            facts.hypervisor = h.offline_caps(domain).await;
        }
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
        // The lock first, and an interrupted operation dealt with, so the
        // plan sees the domain as it really is.
        let (mut store, recovered) = self.open_for(domain_name, dry_run).await?;
        let domain = domains::get(&self.layout, domain_name)?;
        if !flags.contains(CreateFlags::REDEFINE)
            && let Some(name) = &def.name
            && store.tree().contains(name)
        {
            return Err(DomainApiError::NameTaken {
                domain: domain_name.to_string(),
                name: name.clone(),
            });
        }
        let request = CreateRequest { def, flags };
        let facts = self.facts(&domain).await?;
        let mut plan = plan_create(&request, &facts)?;
        if let Some(note) = recovered {
            plan.notes.insert(0, note);
        }
        if dry_run {
            if let Some(pending) = store.pending_intent() {
                plan.notes.insert(
                    0,
                    format!(
                        "an interrupted '{}' is pending: it is finished or rolled back before                          the next change, and this plan may then differ",
                        pending.operation
                    ),
                );
            }
            return Ok(Created::Planned(plan));
        }
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
        let hv = self.hypervisor(domain_name);
        let def = self
            .executor(hv.as_ref(), observer)
            .create(&plan, &domain, &mut store)
            .await?;
        Ok(Created::Taken {
            def: def.map(Box::new),
            plan,
        })
    }

    /// For a dry run, the metadata to read (nothing recovered: nothing may
    /// change); else opened for writing, after recovery, with its note.
    async fn open_for(
        &self,
        domain: &str,
        dry_run: bool,
    ) -> Result<(MetadataStore, Option<String>), DomainApiError> {
        if dry_run {
            Ok((self.store_for(domain, Access::Read)?, None))
        } else {
            self.open_for_write(domain).await
        }
    }

    fn store_for(&self, domain: &str, access: Access) -> Result<MetadataStore, DomainApiError> {
        Ok(MetadataStore::open(
            &self.layout,
            Owner::Domain(domain.to_string()),
            access,
        )?)
    }

    /// Every stored snapshot definition of the store's domain.
    fn definitions(store: &MetadataStore) -> HashMap<String, DomainSnapshotDef> {
        let names: Vec<String> = store
            .tree()
            .list(&ListFilter::default())
            .map(|v| v.into_iter().map(str::to_string).collect())
            .unwrap_or_default();
        names
            .into_iter()
            .filter_map(|n| match store.get(&n) {
                Some(SnapshotRecord::Domain(d)) => Some((n, (**d).clone())),
                _ => None,
            })
            .collect()
    }

    /// The images a snapshot's disks used when it was taken, by disk.
    fn frozen_images(def: &DomainSnapshotDef) -> Vec<(String, String, XmlMode)> {
        let Some(EmbeddedDomain::Full(d)) = &def.domain else {
            return Vec::new();
        };
        def.disks
            .iter()
            .filter_map(|sd| {
                let mode = sd.mode?;
                let image = d.def.disk_by_target(&sd.name)?.source.volume_name()?;
                Some((sd.name.clone(), image, mode))
            })
            .collect()
    }

    /// What the drivers read of each image the snapshots and the domain
    /// name: its backing image, and whether a child can merge into it.
    async fn chains(
        &self,
        defs: &HashMap<String, DomainSnapshotDef>,
        domain: &Domain,
    ) -> (HashMap<String, Option<String>>, HashSet<String>) {
        let mut images = BTreeSet::new();
        for def in defs.values() {
            for (_, image, _) in Self::frozen_images(def) {
                images.insert(image);
            }
            for sd in &def.disks {
                if let Some(p) = sd.source.local_path() {
                    images.insert(p.to_string());
                }
            }
        }
        for d in &domain.def.disks {
            if let Some(p) = d.source.local_path() {
                images.insert(p.to_string());
            }
        }
        let mut backing = HashMap::new();
        let mut blocked = HashSet::new();
        for image in images {
            if !Path::new(&image).exists() {
                continue;
            }
            let mut info = None;
            for driver in &self.drivers {
                if let Ok(Some(i)) = driver.chain_info(Path::new(&image)).await {
                    info = Some(i);
                    break;
                }
            }
            match info {
                Some(i) => {
                    if i.internal_snapshots > 0 {
                        blocked.insert(image.clone());
                    }
                    backing.insert(image, i.backing.map(|b| b.to_string_lossy().into_owned()));
                }
                None => {
                    // Raw bytes: nothing merges into them.
                    blocked.insert(image.clone());
                    backing.insert(image, None);
                }
            }
        }
        (backing, blocked)
    }

    /// `virDomainRevertToSnapshot` on a defined, shut-off domain. With
    /// `dry_run`, only the plan.
    ///
    /// # Errors
    /// An unknown snapshot, the planner's refusal, or a step's failure.
    pub async fn revert_to_snapshot(
        &self,
        domain_name: &str,
        name: &str,
        flags: RevertFlags,
        dry_run: bool,
        observer: Option<&Observer>,
    ) -> Result<Plan, DomainApiError> {
        let (mut store, recovered) = self.open_for(domain_name, dry_run).await?;
        let domain = domains::get(&self.layout, domain_name)?;
        let defs = Self::definitions(&store);
        let Some(snapshot) = defs.get(name).cloned() else {
            return Err(DomainApiError::NoSnapshot {
                domain: domain_name.to_string(),
                name: name.to_string(),
            });
        };
        let needed: HashSet<String> = defs
            .values()
            .flat_map(Self::frozen_images)
            .filter(|(_, _, m)| matches!(m, XmlMode::Internal | XmlMode::External))
            .map(|(_, image, _)| image)
            .collect();
        let (backing, _) = self.chains(&defs, &domain).await;
        let backing_images: HashSet<String> = backing.values().flatten().cloned().collect();
        let facts = self.facts(&domain).await?;
        // New overlays are named by the time; a name already taken (two
        // reverts in one second) moves to the next second.
        let mut now = now();
        let plan = loop {
            let request = RevertRequest {
                snapshot: snapshot.clone(),
                flags,
                now,
                needed_images: needed.clone(),
                backing_images: backing_images.clone(),
            };
            let mut plan = plan_revert(&request, &facts)?;
            plan.notes.splice(0..0, recovered.clone());
            let taken = plan.disk_steps().any(|d| match &d.action {
                crate::plan::DiskAction::External { target, .. } => Path::new(target).exists(),
                _ => false,
            });
            if !taken {
                break plan;
            }
            now += 1;
        };
        if dry_run {
            return Ok(plan);
        }
        let definition = match &snapshot.domain {
            Some(EmbeddedDomain::Full(d)) => Some((**d).clone()),
            _ => None,
        };
        let hv = self.hypervisor(domain_name);
        self.executor(hv.as_ref(), observer)
            .finish(&plan, definition.as_ref(), &mut store)
            .await?;
        Ok(plan)
    }

    /// `virDomainSnapshotDelete` on a defined, shut-off domain, with the
    /// child policy and METADATA_ONLY. With `dry_run`, only the plan.
    ///
    /// # Errors
    /// An unknown snapshot, the planner's refusal, or a step's failure.
    pub async fn snapshot_delete(
        &self,
        domain_name: &str,
        name: &str,
        policy: ChildPolicy,
        metadata_only: bool,
        dry_run: bool,
        observer: Option<&Observer>,
    ) -> Result<Plan, DomainApiError> {
        let (mut store, recovered) = self.open_for(domain_name, dry_run).await?;
        if !store.tree().contains(name) {
            return Err(DomainApiError::NoSnapshot {
                domain: domain_name.to_string(),
                name: name.to_string(),
            });
        }
        let domain = domains::get(&self.layout, domain_name)?;
        let defs = Self::definitions(&store);
        let (backing, merge_blocked) = self.chains(&defs, &domain).await;
        let request = DeleteRequest {
            name: name.to_string(),
            policy,
            metadata_only,
            snapshots: defs,
            backing,
            merge_blocked,
        };
        let facts = self.facts(&domain).await?;
        let mut plan = plan_delete(&request, store.tree(), &facts)?;
        plan.notes.splice(0..0, recovered);
        if dry_run {
            return Ok(plan);
        }
        let hv = self.hypervisor(domain_name);
        self.executor(hv.as_ref(), observer)
            .finish(&plan, None, &mut store)
            .await?;
        Ok(plan)
    }
}
