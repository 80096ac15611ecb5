//! `snapshot-create` and `snapshot-create-as`: snapshots of a defined,
//! shut-off domain taken through [`DomainApi`] with the drivers of this
//! build (qemu-img for qcow2, full copies for anything else), or with
//! `--redefine` the metadata of a snapshot taken elsewhere.
//!
//! A create a crash interrupted is rolled back (or, when complete, kept)
//! before anything else, and what recovery did is printed as a warning.
//! `--dry-run` prints the plan, numbered, and changes nothing;
//! `snapshot-create-as --print-xml` prints the `<domainsnapshot>` its
//! arguments make ([`spec`](super::spec)) and does nothing else.

use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args, FromArgMatches};
use snapshot_conf::{DomainSnapshotDef, ParseFlags, ParseOptions, SnapshotState};
use snapshot_core::domain_api::{Created, DomainApi, DomainApiError};
use snapshot_core::exec::{OP_DOMAIN_CREATE, OP_DOMAIN_FINISH, Observer, StepEvent};
use snapshot_core::plan::{CreateFlags, PlanError, Step};
use snapshot_core::store::domains;
use snapshot_core::store::{Access, Layout, MetadataStore, Owner, SnapshotRecord, StoreError};

use super::spec::{DiskSpec, MemSpec, SnapshotArgs, SpecError};

/// The flags both verbs share (libvirt's `virDomainSnapshotCreateFlags`).
#[derive(Debug, Args)]
pub struct TakeFlags {
    /// Take the snapshot but keep no metadata.
    #[arg(long)]
    no_metadata: bool,
    /// Stop the domain after the snapshot (a shut-off domain stays so).
    #[arg(long)]
    halt: bool,
    /// Disks only, no memory: every disk defaults to external.
    #[arg(long)]
    disk_only: bool,
    /// The external files exist already; use them as they are.
    #[arg(long)]
    reuse_external: bool,
    /// Freeze the guest's filesystems around the snapshot (needs
    /// --disk-only and a running guest).
    #[arg(long)]
    quiesce: bool,
    /// All disks or none (always so here: a failure undoes every disk).
    #[arg(long)]
    atomic: bool,
    /// Save memory while the guest runs (a running domain only).
    #[arg(long)]
    live: bool,
    /// Validate the XML against the schema.
    #[arg(long)]
    validate: bool,
}

impl TakeFlags {
    fn flags(&self) -> CreateFlags {
        let mut f = CreateFlags::empty();
        for (on, flag) in [
            (self.no_metadata, CreateFlags::NO_METADATA),
            (self.halt, CreateFlags::HALT),
            (self.disk_only, CreateFlags::DISK_ONLY),
            (self.reuse_external, CreateFlags::REUSE_EXT),
            (self.quiesce, CreateFlags::QUIESCE),
            (self.atomic, CreateFlags::ATOMIC),
            (self.live, CreateFlags::LIVE),
            (self.validate, CreateFlags::VALIDATE),
        ] {
            f.set(flag, on);
        }
        f
    }
}

/// `snapshot-create`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("xml").args(["xmlfile", "file"])))]
pub struct CreateArgs {
    /// Domain name.
    domain: String,
    /// The <domainsnapshot> XML (default: every default, the snapshot
    /// named by its creation time).
    #[arg(long, value_name = "FILE")]
    xmlfile: Option<PathBuf>,
    /// The XML file, virsh's positional form of --xmlfile.
    #[arg(value_name = "XMLFILE")]
    file: Option<PathBuf>,
    /// Redefine the metadata of an existing snapshot (needs the XML; the
    /// storage is not touched).
    #[arg(long, requires = "xml")]
    redefine: bool,
    /// With --redefine: make it the current snapshot.
    #[arg(long, requires = "redefine")]
    current: bool,
    #[command(flatten)]
    flags: TakeFlags,
    /// Print the plan, numbered, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `snapshot-create-as` as clap reads it; [`CreateAsArgs`] assigns the
/// positional words as virsh does.
#[derive(Debug, Args)]
struct CreateAsCli {
    /// Domain name (or --domain).
    #[arg(value_name = "DOMAIN", required_unless_present = "domain_opt")]
    domain: Option<String>,
    /// Snapshot name (or --name; default: the creation time).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Description (or --description).
    #[arg(value_name = "DESCRIPTION")]
    description: Option<String>,
    /// More disk specs, as --diskspec. A word given by its option is
    /// skipped: the words fill DOMAIN, NAME and DESCRIPTION not given
    /// otherwise, then disk specs (virsh's order).
    #[arg(value_name = "DISKSPEC")]
    more_diskspecs: Vec<String>,
    /// Domain name.
    #[arg(long = "domain", id = "domain_opt", value_name = "DOMAIN")]
    domain_opt: Option<String>,
    /// Snapshot name (default: the creation time).
    #[arg(long = "name", id = "name_opt", value_name = "NAME")]
    name_opt: Option<String>,
    /// Description.
    #[arg(long = "description", id = "description_opt", value_name = "TEXT")]
    description_opt: Option<String>,
    /// A disk: disk[,snapshot=type][,driver=type][,stype=type][,file=name].
    /// disk is the target (vda) or the source path; snapshot is no,
    /// internal, external or manual; driver the new image's format; stype
    /// file, block or network (file=PROTOCOL:NAME); file the new image. A
    /// comma inside a value is written ",,". Repeat for each disk; disks
    /// not given take their default (internal when shut off, external
    /// with --disk-only).
    #[arg(long = "diskspec", id = "diskspec_opt", value_name = "SPEC")]
    diskspec: Vec<String>,
    /// Memory: [file=]name[,snapshot=type] (snapshot: no, internal or
    /// external). Only a running domain has memory to save.
    #[arg(long, value_name = "SPEC")]
    memspec: Option<String>,
    #[command(flatten)]
    flags: TakeFlags,
    /// Print the <domainsnapshot> XML the arguments make, as virsh does,
    /// and nothing else.
    #[arg(long, conflicts_with = "dry_run")]
    print_xml: bool,
    /// Print the plan, numbered, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `snapshot-create-as`, its words assigned.
#[derive(Debug)]
pub struct CreateAsArgs {
    domain: String,
    name: Option<String>,
    description: Option<String>,
    /// In command-line order, options and words mixed.
    diskspecs: Vec<String>,
    memspec: Option<String>,
    flags: TakeFlags,
    print_xml: bool,
    dry_run: bool,
}

/// The values of `id` with their positions on the command line.
fn indexed(m: &ArgMatches, id: &str) -> Vec<(usize, String)> {
    match (m.indices_of(id), m.get_many::<String>(id)) {
        (Some(i), Some(v)) => i.zip(v.cloned()).collect(),
        _ => Vec::new(),
    }
}

impl FromArgMatches for CreateAsArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let cli = CreateAsCli::from_arg_matches(m)?;
        // virsh fills the options not given by name with the words, in
        // order (domain, name, description), and the rest are disk specs.
        let mut words: Vec<(usize, String)> = ["domain", "name", "description", "more_diskspecs"]
            .iter()
            .flat_map(|id| indexed(m, id))
            .collect();
        words.sort_by_key(|(i, _)| *i);
        let mut domain = cli.domain_opt;
        let mut name = cli.name_opt;
        let mut description = cli.description_opt;
        let mut diskspecs = indexed(m, "diskspec_opt");
        for (i, word) in words {
            if domain.is_none() {
                domain = Some(word);
            } else if name.is_none() {
                name = Some(word);
            } else if description.is_none() {
                description = Some(word);
            } else {
                diskspecs.push((i, word));
            }
        }
        diskspecs.sort_by_key(|(i, _)| *i);
        let domain = domain.ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::MissingRequiredArgument,
                "snapshot-create-as needs a domain (DOMAIN or --domain)\n",
            )
        })?;
        Ok(Self {
            domain,
            name,
            description,
            diskspecs: diskspecs.into_iter().map(|(_, s)| s).collect(),
            memspec: cli.memspec,
            flags: cli.flags,
            print_xml: cli.print_xml,
            dry_run: cli.dry_run,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for CreateAsArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        CreateAsCli::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        CreateAsCli::augment_args_for_update(cmd)
    }

    fn group_id() -> Option<clap::Id> {
        CreateAsCli::group_id()
    }
}

/// Why a create failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Api(Box<DomainApiError>),
    #[error(transparent)]
    Plan(Box<PlanError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Xml {
        path: PathBuf,
        #[source]
        source: Box<snapshot_conf::ConfError>,
    },
    /// The XML of this file was refused.
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<DomainApiError>,
    },
    /// A refusal that speaks of the XML `snapshot-create-as` built.
    #[error("{source} (snapshot-create-as: --memspec makes <memory>, each --diskspec a <disk>)")]
    FromSpecs {
        #[source]
        source: Box<DomainApiError>,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("domain '{0}' has no current snapshot; name one")]
    NoCurrent(String),
    #[error(
        "domain '{0}' is not defined here, so the storage of its snapshots cannot be examined; \
         define it (virtsnap define FILE), or delete only the metadata (--metadata)"
    )]
    NotDefinedForStorage(String),
}

impl From<DomainApiError> for CreateError {
    fn from(e: DomainApiError) -> Self {
        Self::Api(Box::new(e))
    }
}

impl From<PlanError> for CreateError {
    fn from(e: PlanError) -> Self {
        Self::Plan(Box::new(e))
    }
}

/// Runs `future` to completion on a runtime of its own.
pub(super) fn block_on<F: Future>(future: F) -> Result<F::Output, CreateError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CreateError::Runtime)?;
    Ok(runtime.block_on(future))
}

/// `snapshot-create`.
///
/// # Errors
/// The XML file, the flags, the planner's refusal or a failed step.
pub fn create(layout: &Layout, a: &CreateArgs) -> Result<String, CreateError> {
    let path = a.xmlfile.as_ref().or(a.file.as_ref());
    if a.redefine && !a.dry_run {
        return redefine(layout, a, path.map_or(Path::new(""), PathBuf::as_path));
    }
    let xml = path
        .map(|p| {
            std::fs::read_to_string(p).map_err(|source| CreateError::Read {
                path: p.clone(),
                source,
            })
        })
        .transpose()?;
    let mut flags = a.flags.flags();
    flags.set(CreateFlags::REDEFINE, a.redefine);
    flags.set(CreateFlags::CURRENT, a.current);
    let created = block_on(take(layout, &a.domain, xml.as_deref(), flags, a.dry_run))?.map_err(
        |e| match (e, path) {
            (e @ DomainApiError::Xml(_), Some(p)) => CreateError::InFile {
                path: p.clone(),
                source: Box::new(e),
            },
            (e, _) => e.into(),
        },
    )?;
    Ok(report(&created, path.map(PathBuf::as_path)))
}

/// `snapshot-create-as`.
///
/// # Errors
/// A bad spec, the planner's refusal or a failed step.
pub fn create_as(layout: &Layout, a: &CreateAsArgs) -> Result<String, CreateError> {
    let args = SnapshotArgs {
        name: a.name.clone(),
        description: a.description.clone(),
        memory: a.memspec.as_deref().map(MemSpec::parse).transpose()?,
        disks: a
            .diskspecs
            .iter()
            .map(|s| DiskSpec::parse(s))
            .collect::<Result<_, _>>()?,
    };
    let xml = args.to_xml();
    if a.print_xml {
        // virsh prints the document and a newline.
        return Ok(format!("{xml}\n"));
    }
    let created = block_on(take(
        layout,
        &a.domain,
        Some(&xml),
        a.flags.flags(),
        a.dry_run,
    ))?
    .map_err(|e| {
        let text = e.to_string();
        let about_xml = matches!(e, DomainApiError::Plan(_) | DomainApiError::Xml(_))
            && ["<memory", "<disk", "<source", "<driver"]
                .iter()
                .any(|t| text.contains(t));
        if about_xml {
            CreateError::FromSpecs {
                source: Box::new(e),
            }
        } else {
            e.into()
        }
    })?;
    Ok(report(&created, None))
}

/// What a create prints: the plan of a dry run, or virsh's line.
fn report(created: &Created, from: Option<&Path>) -> String {
    match created {
        Created::Planned(plan) => plan.to_string(),
        Created::Taken { def, plan } => {
            for note in &plan.notes {
                eprintln!("virtsnap: note: {note}");
            }
            let name = def
                .as_ref()
                .and_then(|d| d.name.clone())
                .unwrap_or_else(|| plan.snapshot.clone());
            match from {
                Some(f) => format!("Domain snapshot {name} created from '{}'\n", f.display()),
                None => format!("Domain snapshot {name} created\n"),
            }
        }
    }
}

/// Opens `domain`'s snapshot metadata for writing through
/// [`DomainApi::open_for_write`], which first rolls back (or, when it was
/// complete, keeps) a create a crash interrupted; what loading found odd
/// and what recovery did are printed as warnings. The store holds the
/// domain's lock until it is dropped.
async fn open_recovered(api: &DomainApi, domain: &str) -> Result<MetadataStore, DomainApiError> {
    let (store, note) = api.open_for_write(domain).await?;
    tracing::debug!(
        owner = %store.owner(),
        snapshots = store.tree().len(),
        recovered = note.is_some(),
        "snapshot metadata opened for writing"
    );
    for w in store.warnings() {
        eprintln!("virtsnap: warning: {w}");
    }
    if let Some(note) = note {
        eprintln!("virtsnap: warning: {note}");
    }
    Ok(store)
}

/// Takes (or with `dry_run` plans) a snapshot of `domain`: first any
/// create a crash interrupted is recovered and reported, then
/// [`DomainApi::snapshot_create_xml`] runs.
async fn take(
    layout: &Layout,
    domain: &str,
    xml: Option<&str>,
    flags: CreateFlags,
    dry_run: bool,
) -> Result<Created, DomainApiError> {
    let api = crate::vol_cmd::domain_api(layout);
    // An unknown domain is refused before its snapshot directory is made.
    domains::get(layout, domain)?;
    if dry_run {
        // Nothing may change, so nothing is recovered: say that the plan
        // is of a domain a crash left half-way.
        let store = MetadataStore::open(layout, Owner::Domain(domain.to_string()), Access::Read)?;
        let what = match store.pending_intent().map(|i| i.operation.as_str()) {
            Some(OP_DOMAIN_CREATE) => Some("a snapshot create"),
            Some(OP_DOMAIN_FINISH) => Some("a revert or delete"),
            _ => None,
        };
        if let Some(what) = what {
            eprintln!(
                "virtsnap: warning: {what} on domain '{domain}' was interrupted; the next \
                 create recovers it first, so its plan may differ from this one"
            );
        }
    } else {
        // Recovery runs here, and the store (its lock) is dropped before
        // the API opens it again: the plan then sees the domain as
        // recovery left it (the API reads the domain before it recovers).
        drop(open_recovered(&api, domain).await?);
    }
    let observer = |i: usize, step: &Step, event: StepEvent| match event {
        StepEvent::Begin => tracing::info!(index = i + 1, %step, "step begins"),
        StepEvent::Done => tracing::debug!(index = i + 1, "step done"),
    };
    let created = api
        .snapshot_create_xml(domain, xml, flags, dry_run, Some(&observer as &Observer))
        .await?;
    match &created {
        Created::Planned(plan) => {
            tracing::debug!(snapshot = %plan.snapshot, steps = plan.steps.len(), "planned only");
        }
        Created::Taken { def, plan } => {
            tracing::info!(
                snapshot = %plan.snapshot,
                steps = plan.steps.len(),
                metadata = def.is_some(),
                "snapshot created"
            );
        }
    }
    Ok(created)
}

/// `snapshot-create --redefine`: the metadata alone, straight into the
/// store (the domain need not be defined here, nor its images present),
/// under libvirt's flag rules.
///
/// A create a crash interrupted is recovered first: a redefinition of its
/// name would otherwise make it look complete.
fn redefine(layout: &Layout, a: &CreateArgs, path: &Path) -> Result<String, CreateError> {
    let flags = a.flags.flags();
    for (flag, name) in [
        (CreateFlags::NO_METADATA, "NO_METADATA"),
        (CreateFlags::HALT, "HALT"),
        (CreateFlags::LIVE, "LIVE"),
    ] {
        if flags.contains(flag) {
            return Err(PlanError::FlagsExclusive {
                first: "REDEFINE",
                second: name,
            }
            .into());
        }
    }
    if flags.contains(CreateFlags::QUIESCE) && !flags.contains(CreateFlags::DISK_ONLY) {
        return Err(PlanError::FlagRequired {
            required: "DISK_ONLY",
            by: "QUIESCE",
        }
        .into());
    }
    let text = std::fs::read_to_string(path).map_err(|source| CreateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut parse = ParseFlags::REDEFINE;
    parse.set(ParseFlags::VALIDATE, a.flags.validate);
    let parsed = DomainSnapshotDef::parse(&text, &ParseOptions::new(parse)).map_err(|source| {
        CreateError::Xml {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    })?;
    let name = parsed.def.name.clone().unwrap_or_default();
    if a.flags.disk_only && parsed.def.state != Some(SnapshotState::DiskSnapshot) {
        let state = parsed.def.state.map(|s| s.to_string()).unwrap_or_default();
        return Err(PlanError::Invalid {
            reason: format!(
                "--disk-only needs redefined snapshot '{name}' to be in state disk-snapshot, not {state}"
            ),
            fix: "drop --disk-only or correct <state>".to_string(),
        }
        .into());
    }
    let api = crate::vol_cmd::domain_api(layout);
    let mut store = block_on(open_recovered(&api, &a.domain))??;
    store.redefine(SnapshotRecord::Domain(Box::new(parsed.def)), a.current)?;
    tracing::info!(snapshot = %name, current = a.current, "snapshot redefined");
    Ok(format!(
        "Domain snapshot {name} created from '{}'\n",
        path.display()
    ))
}
