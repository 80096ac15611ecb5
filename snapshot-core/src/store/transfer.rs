//! Import and export of libvirt snapshot metadata directories: a directory
//! like libvirt's `/var/lib/libvirt/qemu/snapshot/DOMAIN/` holding one
//! `NAME.xml` per snapshot in libvirt's internal format (`<active>`
//! included), read into a [`MetadataStore`] ([`import_dir`]) or written
//! from one ([`export_dir`]). This module owns the checks that make an
//! import all-or-nothing up to I/O errors and the ordering of its writes;
//! the store owns the files, their atomicity and the lock.
//!
//! # Import
//!
//! Every `*.xml` file of the directory is parsed as the store parses its
//! own files (`REDEFINE | INTERNAL`); a file without `<active>` (the public
//! XML of `virsh snapshot-dumpxml`) is accepted as not current and listed
//! in [`ImportReport::without_active`]. Entries that are not `NAME.xml`
//! files (other extensions, hidden files, directories) are skipped and
//! listed in [`ImportReport::skipped`]. Before anything is written the
//! whole directory is checked, and the import is refused
//! ([`TransferError`]) when:
//!
//! - a file cannot be read or parsed, or defines another name than its
//!   file name says (libvirt names every file after its snapshot);
//! - a file holds the other kind of snapshot than the store keeps;
//! - two files say `<active>1</active>`;
//! - a snapshot's `<domain>` (or `<inactiveDomain>`) names another domain
//!   than the target domain's definition, when the caller passes one
//!   ([`ImportOptions::domain`], see [`defined_domain`]): another UUID
//!   when both have one (a renamed domain keeps its UUID), else another
//!   name; for a volume, a `<volume>` path or key other than the owner's
//!   key;
//! - two names would be one file on a case-insensitive filesystem;
//! - a name already in the store has a different definition, unless
//!   [`ImportOptions::replace`] (an identical one is not a conflict);
//! - a parent is neither in the directory nor in the store;
//! - parents form a loop (through the store's snapshots too).
//!
//! Then the snapshots are redefined through the public store API,
//! parents first (by depth in the resulting tree, then creation time, then
//! name), never as current; a snapshot whose stored definition is already
//! identical is left alone. Last, the one marked `<active>1` becomes the
//! current snapshot (no file marked: the store's current one stays).
//!
//! Crash safety: each redefine is atomic (one file replaced by rename; the
//! final current move goes through the store's intent journal), and
//! parents come first, so a crash or an I/O error half-way leaves a
//! consistent store holding a parents-first part of the directory (some
//! snapshots replaced, the others as they were), with no orphan. Running
//! the same import again (same directory, same options) completes it: what
//! was already imported is identical, hence skipped, and the current
//! snapshot is set at the end. A finished import run again writes nothing.
//!
//! # Export
//!
//! Every snapshot is written as `NAME.xml` in the store's own format
//! (libvirt's internal format, byte for byte what the store keeps), each
//! file atomically and durably, into a directory created when missing. An
//! existing file with other content is refused before anything is written,
//! unless [`ExportOptions::force`]; an identical one is left alone.
//! Exporting, then importing into another owner gives identical files.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use snapshot_conf::{
    ConfError, DomainDef, EmbeddedDomain, ParseFlags, ParseOptions, SnapshotDocument,
};

use crate::store::domains::{self, DomainError};
use crate::store::layout::{self, Layout, LayoutError, Owner};
use crate::store::metadata::{Access, LoadWarning, MetadataStore, SnapshotRecord, StoreError};
use crate::store::persist;
use crate::tree::ListFilter;

/// Largest file read (as the store: the largest snapshot document).
const MAX_FILE_BYTES: u64 = snapshot_conf::limits::MAX_DOCUMENT_BYTES as u64;

/// Crash points after the n-th snapshot written by an import (tests).
const IMPORT_STEPS: [&str; 4] = [
    "import-1-done",
    "import-2-done",
    "import-3-done",
    "import-4-done",
];
/// Crash point after every snapshot is written, before the current one is
/// set (tests).
const IMPORT_BEFORE_CURRENT: &str = "import-before-current";

/// Why an import or an export was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file is larger than any snapshot metadata file.
    #[error(
        "{} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit of snapshot \
         metadata files; remove it from the directory, then import again",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A file is not valid snapshot metadata.
    #[error("{}: {source}; fix or remove this file, then import again", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The problem.
        #[source]
        source: ConfError,
    },
    /// A file defines another snapshot than its name says.
    #[error(
        "{} defines snapshot '{found}', but a metadata file is named after its \
         snapshot; rename it to '{found}.xml' (or fix its <name>), then import again",
        path.display()
    )]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// The name inside.
        found: String,
    },
    /// A file holds the other kind of snapshot.
    #[error(
        "{} is a {found} snapshot, but {owner} keeps {expected} snapshots; \
         import it into a {found}'s snapshots, or remove it from the directory",
        path.display()
    )]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// The target owner.
        owner: String,
        /// What the owner keeps.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// Several files mark themselves current.
    #[error(
        "{} files say <active>1</active> ({}); at most one snapshot is current: \
         set <active>0</active> in all but one of them, then import again",
        files.len(), files.join(", ")
    )]
    SeveralCurrent {
        /// The files, sorted.
        files: Vec<String>,
    },
    /// A snapshot was taken of another domain (or volume).
    #[error(
        "snapshot '{name}' ({}) was taken of {found}, but {target}; import the \
         directory into the snapshots it belongs to",
        path.display()
    )]
    OwnerMismatch {
        /// The snapshot.
        name: String,
        /// Its file.
        path: PathBuf,
        /// What the snapshot says (`the domain with UUID ...`).
        found: String,
        /// The target owner and what it has (`domain 'vm1' has UUID ...`).
        target: String,
    },
    /// Two names would be one file on a case-insensitive filesystem.
    #[error("{}: {source}", path.display())]
    Collision {
        /// The file being imported.
        path: PathBuf,
        /// The collision.
        #[source]
        source: LayoutError,
    },
    /// Names already in the store with other definitions.
    #[error(
        "{owner} already has {} with a different definition ({}); pass --replace \
         to overwrite {}, or delete {} first",
        if names.len() == 1 { "a snapshot" } else { "snapshots" },
        quoted(names),
        if names.len() == 1 { "it" } else { "them" },
        if names.len() == 1 { "it" } else { "them" },
    )]
    Exists {
        /// The target owner.
        owner: String,
        /// The names, sorted.
        names: Vec<String>,
    },
    /// A parent that is nowhere.
    #[error(
        "snapshot '{name}' ({}) names parent '{parent}', which is neither in the \
         directory nor in {owner}'s snapshots; add '{parent}.xml' to the directory \
         or redefine '{parent}' first, then import again",
        path.display()
    )]
    MissingParent {
        /// The snapshot.
        name: String,
        /// Its file.
        path: PathBuf,
        /// The missing parent.
        parent: String,
        /// The target owner.
        owner: String,
    },
    /// Parents that form a loop.
    #[error(
        "the parents of {} form a loop; fix the <parent> of one of them, then import again",
        chain(names)
    )]
    Loop {
        /// The snapshots of the loop, each the parent of the one before.
        names: Vec<String>,
    },
    /// The store refused a write half-way; what was written is consistent.
    #[error(
        "import into {owner} stopped after {done} of {total} snapshots: {source}; \
         what was imported is consistent (parents first): fix the cause and run \
         the same import again to finish it"
    )]
    Interrupted {
        /// The target owner.
        owner: String,
        /// Snapshots written before the failure.
        done: usize,
        /// Snapshots to write.
        total: usize,
        /// The failure.
        #[source]
        source: Box<StoreError>,
    },
    /// A snapshot's definition can no longer be read from the store.
    #[error(
        "the metadata file of snapshot '{name}' of {owner} can no longer be read; \
         open the domain's snapshots again (see the warnings), then export again"
    )]
    Unreadable {
        /// The snapshot.
        name: String,
        /// The owner.
        owner: String,
    },
    /// Export would overwrite files with other content.
    #[error(
        "{} already {} with other content ({}); pass --force to overwrite, or \
         export into another directory",
        dir.display(),
        if files.len() == 1 { "holds a file" } else { "holds files" },
        files.join(", ")
    )]
    WouldOverwrite {
        /// The export directory.
        dir: PathBuf,
        /// The files, sorted.
        files: Vec<String>,
    },
    /// A name or owner breaks a layout rule.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The store refused before anything was written (e.g. it was opened
    /// read-only).
    #[error(transparent)]
    Store(Box<StoreError>),
    /// Reading the target domain's definition failed.
    #[error(transparent)]
    Domain(Box<DomainError>),
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `'a' -> 'b' -> 'a'`: a loop, back to its start.
fn chain(names: &[String]) -> String {
    names
        .iter()
        .chain(names.first())
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TransferError {
    let path = path.to_path_buf();
    move |source| TransferError::Io { op, path, source }
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Overwrite snapshots already in the store with another definition
    /// (an identical one is never a conflict).
    pub replace: bool,
    /// The target domain's definition, when it is defined: snapshots whose
    /// `<domain>` names another domain name or UUID are refused. See
    /// [`defined_domain`]; `None` skips this check.
    pub domain: Option<DomainDef>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Snapshots written, in the order written (parents first); includes
    /// the replaced ones.
    pub imported: Vec<String>,
    /// Of `imported`, those that replaced another definition.
    pub replaced: Vec<String>,
    /// Snapshots already in the store with the same definition, untouched.
    pub unchanged: Vec<String>,
    /// The snapshot the directory marks current (now current), if any.
    pub current: Option<String>,
    /// Directory entries that are not snapshot files, ignored, sorted.
    pub skipped: Vec<String>,
    /// Files without `<active>`, imported as not current, sorted.
    pub without_active: Vec<String>,
}

/// How to export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Overwrite files that exist with other content.
    pub force: bool,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Snapshots whose file was written, parents first.
    pub written: Vec<String>,
    /// Snapshots whose file was already there, identical.
    pub unchanged: Vec<String>,
    /// The current snapshot (its file says `<active>1</active>`).
    pub current: Option<String>,
    /// `*.xml` files already in the directory that are no snapshot of this
    /// owner (importing the directory would import them too), sorted.
    pub foreign: Vec<String>,
}

/// The definition of domain `owner` when it is defined (for
/// [`ImportOptions::domain`]); `None` for an undefined domain or a volume.
///
/// # Errors
/// The definition exists but cannot be read or parsed.
pub fn defined_domain(layout: &Layout, owner: &Owner) -> Result<Option<DomainDef>, TransferError> {
    let Owner::Domain(name) = owner else {
        return Ok(None);
    };
    match domains::get(layout, name) {
        Ok(d) => Ok(Some(d.def)),
        Err(DomainError::NotDefined { .. }) => Ok(None),
        Err(e) => Err(TransferError::Domain(Box::new(e))),
    }
}

/// One snapshot file of the imported directory.
#[derive(Debug)]
struct Candidate {
    path: PathBuf,
    name: String,
    record: SnapshotRecord,
    current: bool,
}

/// What to do with a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Not in the store.
    New,
    /// In the store, same definition, same parent in the tree.
    Unchanged,
    /// In the store, same definition, but the tree links it elsewhere (an
    /// orphan whose parent arrives now): written again.
    Relink,
    /// In the store with another definition (or an unreadable file).
    Replace,
}

/// Imports the libvirt metadata directory `dir` into `store` (see the
/// module documentation for the checks, the order and the guarantee on a
/// crash).
///
/// # Errors
/// A refusal (nothing written), or [`TransferError::Interrupted`] when the
/// store failed half-way (what was written is consistent; running the
/// same import again finishes it).
pub fn import_dir(
    store: &mut MetadataStore,
    dir: &Path,
    opts: &ImportOptions,
) -> Result<ImportReport, TransferError> {
    if store.access() == Access::Read {
        return Err(TransferError::Store(Box::new(StoreError::ReadOnly {
            owner: store.owner().to_string(),
        })));
    }
    let mut report = ImportReport::default();
    let candidates = scan(store.owner(), dir, &mut report)?;
    let plan = check(store, opts, &candidates)?;

    let total = plan.iter().filter(|(_, a)| *a != Action::Unchanged).count();
    let owner = store.owner().to_string();
    for &(i, action) in &plan {
        let c = &candidates[i];
        if action == Action::Unchanged {
            report.unchanged.push(c.name.clone());
            continue;
        }
        store
            .redefine(c.record.clone(), false)
            .map_err(|source| TransferError::Interrupted {
                owner: owner.clone(),
                done: report.imported.len(),
                total,
                source: Box::new(source),
            })?;
        if let Some(step) = IMPORT_STEPS.get(report.imported.len()) {
            persist::crash_point(step);
        }
        report.imported.push(c.name.clone());
        if action == Action::Replace {
            report.replaced.push(c.name.clone());
        }
    }
    persist::crash_point(IMPORT_BEFORE_CURRENT);
    report.current = candidates
        .iter()
        .find(|c| c.current)
        .map(|c| c.name.clone());
    if let Some(current) = &report.current
        && store.tree().current() != Some(current.as_str())
    {
        store
            .set_current(Some(current))
            .map_err(|source| TransferError::Interrupted {
                owner,
                done: total,
                total,
                source: Box::new(source),
            })?;
    }
    Ok(report)
}

/// Reads and parses every snapshot file of `dir`, sorted by file name.
fn scan(
    owner: &Owner,
    dir: &Path,
    report: &mut ImportReport,
) -> Result<Vec<Candidate>, TransferError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("reading", dir))? {
        let entry = entry.map_err(io_err("reading", dir))?;
        // A name that is not UTF-8 is no snapshot's.
        let file = match entry.file_name().into_string() {
            Ok(f) => f,
            Err(raw) => {
                report.skipped.push(raw.to_string_lossy().into_owned());
                continue;
            }
        };
        let is_file = fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        match layout::snapshot_name_from_file(&file) {
            Some(name) if is_file => files.push((file.clone(), name.to_string())),
            _ => report.skipped.push(file),
        }
    }
    files.sort();
    report.skipped.sort();
    let mut candidates = Vec::with_capacity(files.len());
    for (file, name) in files {
        let path = dir.join(&file);
        let (record, current, had_active) = read_candidate(owner, &path)?;
        if record.name() != Some(name.as_str()) {
            return Err(TransferError::NameMismatch {
                path,
                found: record.name().unwrap_or_default().to_string(),
            });
        }
        if !had_active {
            report.without_active.push(file);
        }
        candidates.push(Candidate {
            path,
            name,
            record,
            current,
        });
    }
    Ok(candidates)
}

/// Parses one file as the store parses its own (a missing `<active>` is
/// taken as not current): the record, whether current, whether `<active>`
/// was there.
fn read_candidate(
    owner: &Owner,
    path: &Path,
) -> Result<(SnapshotRecord, bool, bool), TransferError> {
    let size = fs::metadata(path).map_err(io_err("reading", path))?.len();
    if size > MAX_FILE_BYTES {
        return Err(TransferError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let text = fs::read_to_string(path).map_err(io_err("reading", path))?;
    let internal = ParseOptions::new(ParseFlags::REDEFINE | ParseFlags::INTERNAL);
    let (doc, had_active) = match SnapshotDocument::parse(&text, &internal) {
        Ok(doc) => (doc, true),
        Err(ConfError::MissingElement {
            element: "active", ..
        }) => {
            let public = ParseOptions::new(ParseFlags::REDEFINE);
            let doc =
                SnapshotDocument::parse(&text, &public).map_err(|source| TransferError::Parse {
                    path: path.to_path_buf(),
                    source,
                })?;
            (doc, false)
        }
        Err(source) => {
            return Err(TransferError::Parse {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let current = doc.is_current();
    let record = match doc {
        SnapshotDocument::Domain(p) => SnapshotRecord::Domain(Box::new(p.def)),
        SnapshotDocument::Volume(p) => SnapshotRecord::Volume(Box::new(p.def)),
    };
    let found = kind_of(&record);
    if found != owner.kind() {
        return Err(TransferError::WrongKind {
            path: path.to_path_buf(),
            owner: owner.to_string(),
            expected: owner.kind(),
            found,
        });
    }
    Ok((record, current, had_active))
}

fn kind_of(record: &SnapshotRecord) -> &'static str {
    match record {
        SnapshotRecord::Domain(_) => "domain",
        SnapshotRecord::Volume(_) => "volume",
    }
}

/// Every refusal, before any write; the candidates to write, parents
/// first, with what to do with each.
fn check(
    store: &MetadataStore,
    opts: &ImportOptions,
    candidates: &[Candidate],
) -> Result<Vec<(usize, Action)>, TransferError> {
    let owner = store.owner();
    let marked: Vec<String> = candidates
        .iter()
        .filter(|c| c.current)
        .map(|c| format!("{}.xml", c.name))
        .collect();
    if marked.len() > 1 {
        return Err(TransferError::SeveralCurrent { files: marked });
    }
    for c in candidates {
        check_owner(owner, opts.domain.as_ref(), c)?;
    }

    // Case collisions, among the directory's names and with the store's.
    let all = ListFilter::default();
    let stored: Vec<&str> = store.tree().list(&all).unwrap_or_default();
    let mut seen: Vec<&str> = Vec::with_capacity(candidates.len());
    for c in candidates {
        layout::check_case_collision(&c.name, stored.iter().copied().chain(seen.iter().copied()))
            .map_err(|source| TransferError::Collision {
            path: c.path.clone(),
            source,
        })?;
        seen.push(&c.name);
    }

    // Conflicts with the store.
    let unreadable: HashSet<&str> = store
        .warnings()
        .iter()
        .filter_map(|w| match w {
            LoadWarning::Unreadable { file, .. } => layout::snapshot_name_from_file(file),
            _ => None,
        })
        .collect();
    let mut actions = Vec::with_capacity(candidates.len());
    let mut conflicts = Vec::new();
    for c in candidates {
        let action = match store.get(&c.name) {
            Some(r) if *r == c.record => {
                let linked = store.tree().parent(&c.name).ok().flatten();
                if linked == c.record.parent() {
                    Action::Unchanged
                } else {
                    Action::Relink
                }
            }
            Some(_) => Action::Replace,
            None if store.tree().contains(&c.name) || unreadable.contains(c.name.as_str()) => {
                Action::Replace
            }
            None => Action::New,
        };
        if action == Action::Replace && !opts.replace {
            conflicts.push(c.name.clone());
        }
        actions.push(action);
    }
    if !conflicts.is_empty() {
        conflicts.sort();
        return Err(TransferError::Exists {
            owner: owner.to_string(),
            names: conflicts,
        });
    }

    // Parents: in the directory or in the store; no loop; depth in the
    // resulting tree orders the writes parents first.
    let by_name: HashMap<&str, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    for c in candidates {
        if let Some(p) = c.record.parent()
            && !by_name.contains_key(p)
            && !store.tree().contains(p)
        {
            return Err(TransferError::MissingParent {
                name: c.name.clone(),
                path: c.path.clone(),
                parent: p.to_string(),
                owner: owner.to_string(),
            });
        }
    }
    let parent_of = |name: &str| -> Option<String> {
        match by_name.get(name) {
            Some(&i) => candidates[i].record.parent().map(str::to_string),
            None => store.tree().parent(name).ok().flatten().map(str::to_string),
        }
    };
    let mut depth: HashMap<String, usize> = HashMap::new();
    for c in candidates {
        depth_of(&c.name, &parent_of, &mut depth)?;
    }
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| {
        let c = &candidates[i];
        let created = c.record.info(true).creation_time;
        (depth[&c.name], created, c.name.clone())
    });
    Ok(order.into_iter().map(|i| (i, actions[i])).collect())
}

/// Depth of `name` in the resulting tree (a root is 0), memoised in
/// `depth`; a loop is refused, naming its members.
fn depth_of(
    name: &str,
    parent_of: &impl Fn(&str) -> Option<String>,
    depth: &mut HashMap<String, usize>,
) -> Result<usize, TransferError> {
    // Walk up until a known depth or a root, then fill in on the way down.
    let mut path: Vec<String> = Vec::new();
    let mut on_path: HashMap<String, usize> = HashMap::new();
    let mut cur = Some(name.to_string());
    let base = loop {
        let Some(n) = cur else { break 0 };
        if let Some(&d) = depth.get(&n) {
            break d + 1;
        }
        if let Some(&at) = on_path.get(&n) {
            return Err(TransferError::Loop {
                names: path[at..].iter().rev().cloned().collect(),
            });
        }
        on_path.insert(n.clone(), path.len());
        cur = parent_of(&n);
        path.push(n);
    };
    for (d, n) in (base..).zip(path.into_iter().rev()) {
        depth.insert(n, d);
    }
    Ok(depth[name])
}

/// Refuses a snapshot taken of another domain or volume than `owner`.
fn check_owner(
    owner: &Owner,
    domain: Option<&DomainDef>,
    c: &Candidate,
) -> Result<(), TransferError> {
    let mismatch = |found: String, has: String| {
        Err(TransferError::OwnerMismatch {
            name: c.name.clone(),
            path: c.path.clone(),
            found,
            target: format!("{owner} has {has}"),
        })
    };
    match (&c.record, owner) {
        (SnapshotRecord::Domain(def), Owner::Domain(_)) => {
            let Some(target) = domain else {
                return Ok(());
            };
            let mut seen = Vec::new();
            match &def.domain {
                Some(EmbeddedDomain::Uuid(u)) => seen.push((None, Some(*u))),
                Some(EmbeddedDomain::Full(d)) => seen.push((d.def.name.as_deref(), d.def.uuid)),
                None => {}
            }
            if let Some(d) = &def.inactive_domain {
                seen.push((d.def.name.as_deref(), d.def.uuid));
            }
            for (name, uuid) in seen {
                match (uuid, target.uuid) {
                    // A renamed domain keeps its UUID: when both sides have
                    // one, the UUID decides (as libvirt's redefine checks).
                    (Some(found), Some(expected)) if found != expected => {
                        return mismatch(
                            format!("the domain with UUID {found}"),
                            format!("UUID {expected}"),
                        );
                    }
                    (Some(_), Some(_)) => {}
                    _ => {
                        if let (Some(found), Some(expected)) = (name, target.name.as_deref())
                            && found != expected
                        {
                            return mismatch(
                                format!("the domain named '{found}'"),
                                format!("the name '{expected}'"),
                            );
                        }
                    }
                }
            }
            Ok(())
        }
        (SnapshotRecord::Volume(def), Owner::Volume(key)) => {
            let Some(volume) = &def.volume else {
                return Ok(());
            };
            let (path, vkey) = (volume.path.as_deref(), volume.key.as_deref());
            if path == Some(key.as_str()) || vkey == Some(key.as_str()) {
                return Ok(());
            }
            let found = match (path, vkey) {
                (Some(p), Some(k)) => format!("the volume with path '{p}' and key '{k}'"),
                (Some(p), None) => format!("the volume '{p}'"),
                (None, Some(k)) => format!("the volume with key '{k}'"),
                (None, None) => return Ok(()),
            };
            mismatch(found, format!("the key '{key}'"))
        }
        // The kind was checked when the file was read.
        _ => Ok(()),
    }
}

/// Exports every snapshot of `store` into `dir` as libvirt metadata files
/// (see the module documentation).
///
/// # Errors
/// A file with other content exists and `opts.force` is off (nothing
/// written), a definition can no longer be read, or an I/O error (files
/// written before it are complete).
pub fn export_dir(
    store: &MetadataStore,
    dir: &Path,
    opts: ExportOptions,
) -> Result<ExportReport, TransferError> {
    let tree = store.tree();
    let topological = ListFilter {
        topological: true,
        ..ListFilter::default()
    };
    let mut files: HashSet<String> = HashSet::new();
    let mut planned = Vec::new();
    for name in tree.list(&topological).unwrap_or_default() {
        let record = store.get(name).ok_or_else(|| TransferError::Unreadable {
            name: name.to_string(),
            owner: store.owner().to_string(),
        })?;
        let file = layout::snapshot_file_name(name)?;
        let xml = record.to_xml(tree.is_current(name));
        files.insert(file.clone());
        planned.push((name.to_string(), file, xml));
    }

    let mut report = ExportReport {
        current: tree.current().map(str::to_string),
        ..ExportReport::default()
    };
    let mut differing = Vec::new();
    let mut writes = Vec::new();
    for (name, file, xml) in planned {
        let path = dir.join(&file);
        match fs::read(&path) {
            Ok(bytes) if bytes == xml.as_bytes() => report.unchanged.push(name),
            Ok(_) => {
                differing.push(file.clone());
                writes.push((name, file, xml));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => writes.push((name, file, xml)),
            Err(e) => return Err(io_err("reading", &path)(e)),
        }
    }
    if !differing.is_empty() && !opts.force {
        differing.sort();
        return Err(TransferError::WouldOverwrite {
            dir: dir.to_path_buf(),
            files: differing,
        });
    }
    persist::create_dir_durable(dir).map_err(io_err("creating", dir))?;
    for (name, file, xml) in writes {
        persist::write_atomic(dir, &file, xml.as_bytes())
            .map_err(io_err("writing", &dir.join(&file)))?;
        report.written.push(name);
    }
    for entry in fs::read_dir(dir).map_err(io_err("reading", dir))? {
        let entry = entry.map_err(io_err("reading", dir))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if layout::snapshot_name_from_file(&file).is_some() && !files.contains(&file) {
            report.foreign.push(file);
        }
    }
    report.foreign.sort();
    Ok(report)
}
