//! `MetadataStore`: the snapshots of one owner (a domain or a volume) as
//! one libvirt-format XML file each (`<active>` included, so a libvirt
//! metadata directory can be read as is), loaded into a [`SnapshotTree`].
//!
//! Opening takes the owner's lock: shared to read, exclusive to write, so
//! writers of one owner are serialised across processes while different
//! owners never block each other. Every file is replaced atomically and
//! durably ([`persist::write_atomic`]), so a reader never sees half a file.
//!
//! A multi-file change (a create that demotes the old current, a delete
//! that re-links children) goes through the owner's intent journal
//! ([`journal`]), so a crash leaves the state before or after it; opening
//! reads the compact index ([`index`]) instead of every file when it still
//! describes the directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use snapshot_conf::{
    ConfError, DomainSnapshotDef, FormatFlags, FormatOptions, ParseFlags, ParseOptions,
    SnapshotState, VolSnapshotDef, VolSnapshotMode, VolSnapshotState,
};

use crate::store::index::{self, Freshness, Index, ParentRef, Records};
use crate::store::intent::{self, Intent, IntentHandler, Recovery};
use crate::store::journal::{self, Journal};
use crate::store::layout::{self, Layout, LayoutError, Owner};
use crate::store::persist::{self, OwnerLock};
use crate::tree::{ChildPolicy, Location, SnapshotInfo, SnapshotTree, StateKind, TreeError};

/// Largest snapshot metadata file read (snapshot-conf's document limit).
const MAX_FILE_BYTES: u64 = snapshot_conf::limits::MAX_DOCUMENT_BYTES as u64;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`reading`, `writing`, ...).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A name or path rule.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The tree refused the change.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A definition is not valid snapshot XML.
    #[error("snapshot '{name}': {source}")]
    Conf {
        /// The snapshot.
        name: String,
        /// The problem.
        #[source]
        source: ConfError,
    },
    /// The definition's kind does not match the owner's.
    #[error("{owner} keeps {expected} snapshots; this definition is a {found} snapshot")]
    WrongKind {
        /// The owner.
        owner: String,
        /// What the owner keeps.
        expected: &'static str,
        /// What was given.
        found: &'static str,
    },
    /// An operation was interrupted (a crash) and left its journal; the
    /// files may be half-way, so reading is refused until a writer
    /// finishes it.
    #[error(
        "an interrupted '{operation}' left {owner}'s snapshot metadata half-way \
         (journal {}); open it for writing (any command that changes its \
         snapshots) to finish that operation, then retry",
        journal.display()
    )]
    Interrupted {
        /// The owner.
        owner: String,
        /// The interrupted operation (`unknown` if the journal is unreadable).
        operation: String,
        /// The journal file.
        journal: PathBuf,
    },
    /// A snapshot whose file must be rewritten cannot be read.
    #[error(
        "snapshot '{name}' of {owner}: its metadata file cannot be read ({reason}); \
         repair the file, or remove the snapshot's metadata with \
         snapshot-delete --metadata"
    )]
    Unreadable {
        /// The owner.
        owner: String,
        /// The snapshot.
        name: String,
        /// Why.
        reason: String,
    },
    /// An earlier write of this handle failed and its state could not be
    /// read back from disk.
    #[error(
        "an earlier change to {owner}'s snapshot metadata failed and it could not be \
         read back; open the store again"
    )]
    Broken {
        /// The owner.
        owner: String,
    },
    /// An interrupted multi-step operation must be recovered first.
    #[error(
        "an interrupted '{operation}' on {owner} stopped after step {step}; recover it \
         (finish or roll back) before starting another operation"
    )]
    IntentPending {
        /// The owner.
        owner: String,
        /// The interrupted operation.
        operation: String,
        /// The steps it completed.
        step: u32,
    },
    /// The owner's intent file cannot be read.
    #[error(
        "{owner} has an interrupted operation whose record {} cannot be read ({reason}); \
         check the storage it names by hand, then discard the record",
        path.display()
    )]
    IntentUnreadable {
        /// The owner.
        owner: String,
        /// The intent file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An intent call without the intent it needs.
    #[error("{owner}: {problem}")]
    IntentMisuse {
        /// The owner.
        owner: String,
        /// What was wrong (no intent begun, one already begun, none
        /// pending, an invalid intent).
        problem: String,
    },
    /// No handler knows how to recover the pending operation.
    #[error(
        "no recovery is known for the interrupted '{operation}' on {owner}; \
         this version of virtsnap did not start it, use the one that did"
    )]
    NoRecoveryHandler {
        /// The owner.
        owner: String,
        /// The operation.
        operation: String,
    },
    /// The recovery asked for is not one the operation offers.
    #[error("the interrupted '{operation}' on {owner} cannot {asked}; it offers: {offered}")]
    RecoveryNotOffered {
        /// The owner.
        owner: String,
        /// The operation.
        operation: String,
        /// What was asked.
        asked: Recovery,
        /// What it offers, comma-separated.
        offered: String,
    },
    /// The handler failed; the intent stays for another try.
    #[error(
        "could not {how} the interrupted '{operation}' on {owner}: {source}; fix the cause and recover again"
    )]
    RecoveryFailed {
        /// The owner.
        owner: String,
        /// The operation.
        operation: String,
        /// What was tried.
        how: Recovery,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A write on a store opened for reading.
    #[error("{owner} was opened read-only; open it for writing to change its snapshots")]
    ReadOnly {
        /// The owner.
        owner: String,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// A snapshot definition of either kind, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRecord {
    /// A domain snapshot.
    Domain(Box<DomainSnapshotDef>),
    /// A volume snapshot.
    Volume(Box<VolSnapshotDef>),
}

impl SnapshotRecord {
    fn kind(&self) -> &'static str {
        match self {
            Self::Domain(_) => "domain",
            Self::Volume(_) => "volume",
        }
    }

    /// The snapshot's name.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Domain(d) => d.name.as_deref(),
            Self::Volume(v) => v.name.as_deref(),
        }
    }

    /// The parent named in the definition.
    #[must_use]
    pub fn parent(&self) -> Option<&str> {
        match self {
            Self::Domain(d) => d.parent.as_deref(),
            Self::Volume(v) => v.parent.as_deref(),
        }
    }

    fn set_parent(&mut self, parent: Option<&str>) {
        let parent = parent.map(str::to_string);
        match self {
            Self::Domain(d) => d.parent = parent,
            Self::Volume(v) => v.parent = parent,
        }
    }

    /// Its `<state>` as written (`shutoff`, `disk-snapshot`, `online`,
    /// ...), or `""` when it has none.
    #[must_use]
    pub fn state_word(&self) -> &'static str {
        match self {
            Self::Domain(d) => d.state.map_or("", SnapshotState::as_str),
            Self::Volume(v) => v.state.map_or("", VolSnapshotState::as_str),
        }
    }

    /// What the tree needs to know of it.
    #[must_use]
    pub fn info(&self, has_metadata: bool) -> SnapshotInfo {
        let (name, state, location, creation_time) = match self {
            Self::Domain(d) => {
                let state = match d.state {
                    Some(SnapshotState::Shutoff) => StateKind::Inactive,
                    Some(SnapshotState::DiskSnapshot) => StateKind::DiskOnly,
                    _ => StateKind::Active,
                };
                let location = if d.is_external() {
                    Location::External
                } else {
                    Location::Internal
                };
                (d.name.clone(), state, location, d.creation_time)
            }
            Self::Volume(v) => {
                let state = match v.state {
                    Some(VolSnapshotState::Offline) | None => StateKind::Inactive,
                    Some(VolSnapshotState::Online | VolSnapshotState::Quiesced) => {
                        StateKind::DiskOnly
                    }
                };
                let location = if matches!(
                    v.target.mode,
                    Some(VolSnapshotMode::External | VolSnapshotMode::Copy)
                ) {
                    Location::External
                } else {
                    Location::Internal
                };
                (v.name.clone(), state, location, v.creation_time)
            }
        };
        SnapshotInfo {
            name: name.unwrap_or_default(),
            state,
            location,
            has_metadata,
            creation_time: creation_time.unwrap_or(0),
        }
    }

    /// The metadata file's content: libvirt's internal format, with
    /// `<active>` saying whether it is the current snapshot.
    #[must_use]
    pub fn to_xml(&self, current: bool) -> String {
        let mut flags = FormatFlags::SECURE | FormatFlags::INTERNAL;
        flags.set(FormatFlags::CURRENT, current);
        let options = FormatOptions::new(flags);
        match self {
            Self::Domain(d) => d.format(&options),
            Self::Volume(v) => v.format(&options),
        }
    }
}

/// Whether a store is opened to read or to change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Shared lock: other readers may open it too.
    Read,
    /// Exclusive lock: the only one.
    Write,
}

/// Something odd found while loading, reported rather than fixed silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadWarning {
    /// A file that could not be read or parsed; left in place.
    Unreadable {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A snapshot whose parent has no metadata; loaded as a root.
    Orphan {
        /// The snapshot.
        name: String,
        /// Its missing parent.
        parent: String,
    },
    /// An operation interrupted by a crash was finished from its journal
    /// (opening for writing does this before loading).
    Recovered {
        /// The operation (`create`, `redefine`, `set-current`, `delete`).
        operation: String,
        /// How many files its journal listed.
        files: usize,
    },
    /// A multi-step operation was interrupted (see [`intent`]): recover it
    /// with [`MetadataStore::recover_intent`] before starting another.
    Interrupted {
        /// The operation.
        operation: String,
        /// The steps it completed.
        step: u32,
        /// The recoveries it offers, the preferred first.
        recoveries: Vec<Recovery>,
        /// The process that ran it.
        pid: u32,
    },
    /// The record of an interrupted multi-step operation cannot be read.
    UnreadableIntent {
        /// The intent file.
        file: String,
        /// Why.
        reason: String,
    },
    /// Several files said `<active>1`; the most recently written won.
    SeveralCurrent {
        /// The ones that said so.
        names: Vec<String>,
        /// The one kept.
        kept: String,
    },
}

impl std::fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable { file, reason } => write!(
                f,
                "snapshot metadata file {file} was skipped: {reason}; repair or remove it"
            ),
            Self::Orphan { name, parent } => write!(
                f,
                "snapshot '{name}' names parent '{parent}', which has no metadata; \
                 it is listed as a root"
            ),
            Self::Recovered { operation, files } => write!(
                f,
                "an interrupted '{operation}' was finished ({files} metadata files)"
            ),
            Self::Interrupted {
                operation,
                step,
                recoveries,
                pid,
            } => {
                let offered: Vec<String> = recoveries.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "an interrupted '{operation}' (process {pid}) stopped after step {step}; \
                     it must be recovered ({}) before another operation",
                    offered.join(" or ")
                )
            }
            Self::UnreadableIntent { file, reason } => write!(
                f,
                "the record of an interrupted operation, {file}, cannot be read ({reason}); \
                 check the storage by hand, then discard the record"
            ),
            Self::SeveralCurrent { names, kept } => write!(
                f,
                "several snapshots are marked current ({}); '{kept}' (written last) is kept",
                names.join(", ")
            ),
        }
    }
}

/// The snapshot metadata of one owner.
#[derive(Debug)]
pub struct MetadataStore {
    owner: Owner,
    dir: PathBuf,
    /// The owner's intent journal (see [`journal`]).
    journal: PathBuf,
    access: Access,
    tree: SnapshotTree,
    /// The definitions, parsed on demand when opened from the index.
    records: Records,
    /// Whether the tree came from the index (no snapshot file read).
    from_index: bool,
    warnings: Vec<LoadWarning>,
    /// A failed write could not be undone in memory: refuse further ones.
    broken: bool,
    /// The owner's intent file and what it holds.
    intent_path: PathBuf,
    intent: IntentState,
    _lock: OwnerLock,
}

impl MetadataStore {
    /// Opens (creating its directory when writing) the store of `owner`.
    ///
    /// # Errors
    /// The owner's name breaks a layout rule, or a directory or file cannot
    /// be read. Unparsable snapshot files are reported in
    /// [`MetadataStore::warnings`], not fatal (as libvirt does).
    pub fn open(layout: &Layout, owner: Owner, access: Access) -> Result<Self, StoreError> {
        let lock_path = Self::lock_path(layout, &owner)?;
        let lock = match access {
            Access::Write => OwnerLock::acquire(&lock_path),
            Access::Read => OwnerLock::acquire_shared(&lock_path),
        }
        .map_err(io_err("locking", &lock_path))?;
        Self::open_locked(layout, owner, access, lock)
    }

    /// Like [`MetadataStore::open`], but `Ok(None)` at once when another
    /// process holds a conflicting lock (a writer, or readers for
    /// [`Access::Write`]).
    ///
    /// # Errors
    /// As [`MetadataStore::open`].
    pub fn try_open(
        layout: &Layout,
        owner: Owner,
        access: Access,
    ) -> Result<Option<Self>, StoreError> {
        let lock_path = Self::lock_path(layout, &owner)?;
        let lock = match access {
            Access::Write => OwnerLock::try_acquire(&lock_path),
            Access::Read => OwnerLock::try_acquire_shared(&lock_path),
        }
        .map_err(io_err("locking", &lock_path))?;
        lock.map(|l| Self::open_locked(layout, owner, access, l))
            .transpose()
    }

    /// The owner's lock file, its directory created (durably) when
    /// missing. An existing one is left alone: every open would otherwise
    /// pay two fsyncs, readers included; a writer makes what it writes
    /// durable itself.
    fn lock_path(layout: &Layout, owner: &Owner) -> Result<PathBuf, StoreError> {
        let lock_path = layout.owner_lock(owner)?;
        if let Some(parent) = lock_path.parent()
            && !parent.is_dir()
        {
            persist::create_dir_durable(parent).map_err(io_err("creating", parent))?;
        }
        Ok(lock_path)
    }

    /// Whether `dir` holds a snapshot file. Writers create such files
    /// only after making the directory durable (fsync of it and its
    /// parent), so one being there proves an earlier writer did that
    /// already, and the two fsyncs can be skipped on every later open. A
    /// writer that crashed between creating the directory and those
    /// fsyncs left it empty, and the next writer does them.
    fn holds_snapshot_files(dir: &Path) -> bool {
        fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                !name.starts_with('.') && name.ends_with(".xml")
            })
        })
    }

    fn open_locked(
        layout: &Layout,
        owner: Owner,
        access: Access,
        lock: OwnerLock,
    ) -> Result<Self, StoreError> {
        let dir = layout.owner_dir(&owner)?;
        if access == Access::Write && !Self::holds_snapshot_files(&dir) {
            persist::create_dir_durable(&dir).map_err(io_err("creating", &dir))?;
        }
        let (journal, recovered) = Self::recover_journal(layout, &owner, &dir, access)?;
        let owner_for_intent = owner.clone();
        let mut store = Self {
            owner,
            dir,
            journal,
            access,
            tree: SnapshotTree::new(),
            records: Records::default(),
            from_index: false,
            warnings: recovered.into_iter().collect(),
            broken: false,
            intent_path: layout.owner_intent(&owner_for_intent)?,
            intent: IntentState::None,
            _lock: lock,
        };
        let clean = store.load()?;
        // Temp files are left only by a writer that crashed, and such a
        // writer left no clean index (it removed the index on open): the
        // directory need not be listed for them otherwise.
        if access == Access::Write && !clean {
            persist::remove_stale_temps(&store.dir).map_err(io_err("cleaning", &store.dir))?;
            journal::remove_stale_side_temps(&store.intent_path)
                .map_err(io_err("cleaning", &store.intent_path))?;
        }
        store.find_intent()?;
        Ok(store)
    }

    /// The owner's journal path, and what recovering a leftover journal
    /// found. A writer finishes the interrupted operation (roll forward); a
    /// reader refuses to open ([`StoreError::Interrupted`]), since the
    /// files may be half-way (see [`journal`]).
    fn recover_journal(
        layout: &Layout,
        owner: &Owner,
        dir: &Path,
        access: Access,
    ) -> Result<(PathBuf, Option<LoadWarning>), StoreError> {
        let path = layout.owner_journal(owner)?;
        if access == Access::Read {
            return match journal::read(&path) {
                Ok(None) => Ok((path, None)),
                found => Err(StoreError::Interrupted {
                    owner: owner.to_string(),
                    operation: match found {
                        Ok(Some(Ok(j))) => j.operation().to_owned(),
                        _ => "unknown".to_owned(),
                    },
                    journal: path,
                }),
            };
        }
        let warning = journal::recover(&path, dir)
            .map_err(|(op, path, source)| StoreError::Io { op, path, source })?
            .map(|r| match r {
                journal::Recovery::Applied { operation, files } => {
                    LoadWarning::Recovered { operation, files }
                }
                journal::Recovery::Unreadable { file, reason } => {
                    LoadWarning::Unreadable { file, reason }
                }
            });
        Ok((path, warning))
    }

    /// How the store was opened.
    #[must_use]
    pub fn access(&self) -> Access {
        self.access
    }

    /// The owner.
    #[must_use]
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The tree of snapshots.
    #[must_use]
    pub fn tree(&self) -> &SnapshotTree {
        &self.tree
    }

    /// The `<state>` word of `name` (`shutoff`, `running`, ...; `""` when
    /// its definition has none), known without parsing its file.
    #[must_use]
    pub fn state_word(&self, name: &str) -> Option<&'static str> {
        self.records.state_word(name)
    }

    /// The stored definition of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&SnapshotRecord> {
        self.records.get(name)
    }

    /// What loading found odd.
    #[must_use]
    pub fn warnings(&self) -> &[LoadWarning] {
        &self.warnings
    }

    fn is_domain(&self) -> bool {
        matches!(self.owner, Owner::Domain(_))
    }

    fn parse_file(&self, text: &str) -> Result<(SnapshotRecord, bool), ConfError> {
        let options = ParseOptions::new(ParseFlags::REDEFINE | ParseFlags::INTERNAL);
        if self.is_domain() {
            DomainSnapshotDef::parse(text, &options)
                .map(|p| (SnapshotRecord::Domain(Box::new(p.def)), p.current))
        } else {
            VolSnapshotDef::parse(text, &options)
                .map(|p| (SnapshotRecord::Volume(Box::new(p.def)), p.current))
        }
    }

    /// Builds the tree from the owner's index when it still describes
    /// the directory, else from every snapshot file (then a reader leaves
    /// a fresh index behind). A writer removes the index it read and
    /// writes a new one when dropped (see [`index`]). Whether the tree
    /// came from an index a writer left when it finished cleanly.
    fn load(&mut self) -> Result<bool, StoreError> {
        self.records.set_source(&self.dir, self.is_domain());
        let index_path = self.index_path();
        // Taken before the directory is looked at: a later change gets a
        // later mtime, or falls in the racy window.
        let started = index::nanos(SystemTime::now());
        let dir_mtime = match fs::metadata(&self.dir) {
            Ok(m) => index::nanos(m.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("reading", &self.dir)(e)),
        };
        if let Some(path) = &index_path
            && let Ok(Some(mut found)) = Index::read(path)
        {
            let freshness = found.freshness(&self.dir, dir_mtime);
            if freshness == Freshness::Stale {
                self.load_from_files(index_path.as_deref(), started, dir_mtime)?;
                return Ok(false);
            }
            // Trusted after listing the directory, but out of the racy
            // window by now: stamp it again so later opens skip the listing.
            if self.access == Access::Read
                && freshness == Freshness::FreshAfterListing
                && started >= dir_mtime + index::racy_window(dir_mtime)
            {
                found.written_ns = started;
                let _ = found.write(path);
            }
            let clean = found.writer_clean;
            self.load_index(found);
            self.from_index = true;
            if self.access == Access::Write {
                let _ = fs::remove_file(path);
            }
            return Ok(clean);
        }
        self.load_from_files(index_path.as_deref(), started, dir_mtime)?;
        Ok(false)
    }

    /// Builds the tree from every snapshot file; a reader then leaves a
    /// fresh index at `index_path`, a writer removes a stale one.
    fn load_from_files(
        &mut self,
        index_path: Option<&Path>,
        started: u128,
        dir_mtime: u128,
    ) -> Result<(), StoreError> {
        let loaded = self.load_files()?;
        self.build(loaded);
        if let Some(path) = index_path {
            match self.access {
                Access::Read => self.save_index(path, started, dir_mtime),
                Access::Write => {
                    let _ = fs::remove_file(path);
                }
            }
        }
        Ok(())
    }

    /// `snapshots/KIND/.NAME.index` (as [`Layout::owner_index`]), beside
    /// the owner directory.
    fn index_path(&self) -> Option<PathBuf> {
        let name = self.dir.file_name()?.to_str()?;
        Some(self.dir.parent()?.join(format!(".{name}.index")))
    }

    /// Writes the index of the tree as it is, for a directory whose mtime
    /// was `dir_mtime` at `started`; best effort (a cache).
    fn save_index(&self, path: &Path, started: u128, dir_mtime: u128) {
        let unreadable: Vec<(String, String)> = self
            .warnings
            .iter()
            .filter_map(|w| match w {
                LoadWarning::Unreadable { file, reason }
                    if layout::snapshot_name_from_file(file).is_some() =>
                {
                    Some((file.clone(), reason.clone()))
                }
                _ => None,
            })
            .collect();
        let mut out = self.records.to_index(&self.tree, &unreadable);
        out.dir_mtime_ns = dir_mtime;
        out.written_ns = started;
        out.writer_clean = self.access == Access::Write;
        let _ = out.write(path);
    }

    /// Whether this store was opened from its index, without reading the
    /// snapshot files (for tests and benchmarks).
    #[must_use]
    pub fn opened_from_index(&self) -> bool {
        self.from_index
    }

    /// Snapshot files parsed on demand since opening.
    #[cfg(test)]
    pub(crate) fn parses_on_demand(&self) -> usize {
        self.records.parses()
    }

    /// The tree from a trusted index: no snapshot file is read; their
    /// definitions are parsed when asked for. The entries come parents
    /// first, so each is appended under an earlier one.
    fn load_index(&mut self, found: Index) {
        for (file, reason) in found.unreadable {
            self.warnings.push(LoadWarning::Unreadable { file, reason });
        }
        self.tree.reserve(found.entries.len());
        self.records.reserve(found.entries.len());
        let mut current = Vec::new();
        let mut unlinked = Vec::new();
        for e in found.entries {
            let (tree_parent, unlinked_parent) = match e.parent {
                ParentRef::Root => (None, None),
                ParentRef::Entry(i) => (Some(i), None),
                ParentRef::Unlinked(p) => (None, Some(p)),
            };
            let name = e.name.clone();
            let info = SnapshotInfo {
                name: e.name,
                state: e.state,
                location: e.location,
                has_metadata: e.has_metadata,
                creation_time: e.creation_time,
            };
            // A checksummed index written from a tree cannot fail here;
            // an entry that did would be left out of the tree, and a
            // later entry naming it as parent would fail too.
            if self.tree.append_loaded(info, tree_parent).is_err() {
                continue;
            }
            if let Some(p) = &unlinked_parent {
                unlinked.push((name.clone(), p.clone()));
            }
            if e.current {
                current.push((e.mtime_ns, name.clone()));
            }
            self.records
                .insert_loaded(name, unlinked_parent, e.mtime_ns, e.state_word, None);
        }
        for (name, parent) in unlinked {
            self.warnings.push(LoadWarning::Orphan { name, parent });
        }
        self.resolve_current(current);
    }

    /// Reads and parses every snapshot file.
    fn load_files(&mut self) -> Result<Vec<Loaded>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", &self.dir)(e)),
        };
        let mut loaded = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("reading", &self.dir))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(expected) = layout::snapshot_name_from_file(&file) else {
                continue;
            };
            let path = entry.path();
            let unreadable = |reason: String| LoadWarning::Unreadable {
                file: file.clone(),
                reason,
            };
            let meta = entry.metadata().map_err(io_err("reading", &path))?;
            if meta.len() > MAX_FILE_BYTES {
                self.warnings
                    .push(unreadable(format!("larger than {MAX_FILE_BYTES} bytes")));
                continue;
            }
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    self.warnings.push(unreadable(e.to_string()));
                    continue;
                }
            };
            match self.parse_file(&text) {
                Ok((record, current)) if record.name() == Some(expected) => {
                    loaded.push(Loaded {
                        info: record.info(true),
                        parent: record.parent().map(str::to_string),
                        current,
                        mtime_ns: index::nanos(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
                        state_word: record.state_word(),
                        record: Some(record),
                    });
                }
                Ok((record, _)) => self.warnings.push(unreadable(format!(
                    "it defines snapshot '{}', not '{expected}'",
                    record.name().unwrap_or_default()
                ))),
                Err(e) => self.warnings.push(unreadable(e.to_string())),
            }
        }
        Ok(loaded)
    }

    /// Inserts loaded snapshots parents first, in O(n): ordered by
    /// creation time then name (so the index and the files give the same
    /// tree), then breadth first from the roots ([`index::parents_first`]).
    /// Orphans (parent without metadata) and loops become roots of the
    /// tree; their files keep the parent they name, so nothing written is
    /// lost.
    fn build(&mut self, mut loaded: Vec<Loaded>) {
        loaded.sort_unstable_by(|a, b| {
            (a.info.creation_time, &a.info.name).cmp(&(b.info.creation_time, &b.info.name))
        });
        let keys: Vec<(&str, Option<&str>)> = loaded
            .iter()
            .map(|l| (l.info.name.as_str(), l.parent.as_deref()))
            .collect();
        let ordered = index::parents_first(&index::resolve_names(&keys));
        drop(keys);
        for &i in &ordered.unlinked {
            self.warnings.push(LoadWarning::Orphan {
                name: loaded[i].info.name.clone(),
                parent: loaded[i].parent.clone().unwrap_or_default(),
            });
        }
        let current: Vec<(u128, String)> = loaded
            .iter()
            .filter(|l| l.current)
            .map(|l| (l.mtime_ns, l.info.name.clone()))
            .collect();
        self.tree.reserve(loaded.len());
        self.records.reserve(loaded.len());
        let mut position = vec![0; loaded.len()];
        for (at, &i) in ordered.order.iter().enumerate() {
            position[i] = at;
        }
        let mut slots: Vec<Option<Loaded>> = loaded.into_iter().map(Some).collect();
        for &i in &ordered.order {
            let Some(l) = slots[i].take() else { continue };
            let name = l.info.name.clone();
            let parent = ordered.parent[i].map(|j| position[j]);
            let unlinked_parent = l.parent.filter(|_| parent.is_none());
            if self.tree.append_loaded(l.info, parent).is_ok() {
                self.records.insert_loaded(
                    name,
                    unlinked_parent,
                    l.mtime_ns,
                    l.state_word,
                    l.record,
                );
            }
        }
        self.resolve_current(current);
    }

    /// Makes the most recently written of the files saying `<active>1`
    /// current, warning when there were several.
    fn resolve_current(&mut self, mut current: Vec<(u128, String)>) {
        current.sort();
        if let Some((_, kept)) = current.last() {
            if current.len() > 1 {
                self.warnings.push(LoadWarning::SeveralCurrent {
                    names: current.iter().map(|(_, n)| n.clone()).collect(),
                    kept: kept.clone(),
                });
            }
            // Every name in `current` was inserted.
            let _ = self.tree.set_current(Some(kept));
        }
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.access == Access::Read {
            return Err(StoreError::ReadOnly {
                owner: self.owner.to_string(),
            });
        }
        if self.broken {
            return Err(StoreError::Broken {
                owner: self.owner.to_string(),
            });
        }
        Ok(())
    }

    /// Ends a change made in memory first: on failure before its journal
    /// was written nothing changed on disk, so the tree and records are
    /// read back from the files (a writer holds no index); after it, the
    /// disk reaches the new state (the next commit or open finishes it),
    /// which memory already holds.
    fn settle<T>(&mut self, result: Result<T, (StoreError, bool)>) -> Result<T, StoreError> {
        match result {
            Ok(v) => Ok(v),
            Err((e, true)) => Err(e),
            Err((e, false)) => {
                self.tree = SnapshotTree::new();
                self.records = Records::default();
                let warnings = self.warnings.len();
                if self.load().is_err() {
                    self.broken = true;
                }
                self.warnings.truncate(warnings);
                Err(e)
            }
        }
    }

    fn check_kind(&self, record: &SnapshotRecord) -> Result<(), StoreError> {
        let expected = if self.is_domain() { "domain" } else { "volume" };
        if record.kind() != expected {
            return Err(StoreError::WrongKind {
                owner: self.owner.to_string(),
                expected,
                found: record.kind(),
            });
        }
        Ok(())
    }

    /// The definition of `name`, parsed now if it was not yet.
    fn record(&self, name: &str) -> Result<&SnapshotRecord, StoreError> {
        self.records
            .load(name)
            .map_err(|reason| StoreError::Unreadable {
                owner: self.owner.to_string(),
                name: name.to_string(),
                reason,
            })
    }

    /// Parses now the definitions of `names` an operation may rewrite, so
    /// that it fails before changing anything when one cannot be read.
    fn check_loadable<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<(), StoreError> {
        for name in names {
            self.record(name)?;
        }
        Ok(())
    }

    /// Records in `journal` the file of `name` as the tree and records now
    /// say.
    ///
    /// # Errors
    /// [`StoreError::Unreadable`]: its definition cannot be read.
    fn stage_write(&self, journal: &mut Journal, name: &str) -> Result<(), StoreError> {
        let record = self.record(name)?;
        let file = layout::snapshot_file_name(name)?;
        journal.write(file, record.to_xml(self.tree.is_current(name)));
        Ok(())
    }

    /// Performs `journal` atomically across a crash (see [`journal`]). On
    /// error, the flag says whether the journal was written: then the
    /// files may be half-way and the operation is finished by the next
    /// commit or the next open for writing.
    fn commit(&self, journal: &Journal) -> Result<(), (StoreError, bool)> {
        // A journal left by an earlier commit of this store that failed
        // half-way: finish it first, or the new journal would replace it.
        if fs::symlink_metadata(&self.journal).is_ok() {
            journal::recover(&self.journal, &self.dir)
                .map_err(|(op, path, source)| (StoreError::Io { op, path, source }, false))?;
        }
        // One file: its atomic replacement or removal needs no journal.
        if let [entry] = journal.entries() {
            let path = self.dir.join(entry.file());
            let done = match entry {
                journal::Entry::Write { file, content } => {
                    persist::write_atomic(&self.dir, file, content.as_bytes()).map(|()| true)
                }
                journal::Entry::Remove { file } => persist::remove_durable(&self.dir, file),
            };
            return done.map(|_| ()).map_err(|source| {
                let op = match entry {
                    journal::Entry::Write { .. } => "writing",
                    journal::Entry::Remove { .. } => "removing",
                };
                (StoreError::Io { op, path, source }, false)
            });
        }
        if journal.entries().is_empty() {
            return Ok(());
        }
        journal::commit(&self.journal, &self.dir, journal).map_err(|e| {
            let err = StoreError::Io {
                op: e.op,
                path: e.path,
                source: e.source,
            };
            (err, e.journaled)
        })
    }

    fn checked_name(&self, record: &SnapshotRecord, new: bool) -> Result<String, StoreError> {
        self.check_writable()?;
        self.check_kind(record)?;
        let name = record.name().unwrap_or_default().to_string();
        layout::snapshot_file_name(&name)?;
        if new {
            layout::check_case_collision(&name, self.records.keys().map(String::as_str))?;
        }
        Ok(name)
    }

    /// Records a new snapshot: its parent is the current snapshot and it
    /// becomes current.
    ///
    /// # Errors
    /// Read-only store, wrong kind, a name that cannot be a file name or
    /// collides, an existing name, or a write failure.
    pub fn create(&mut self, mut record: SnapshotRecord) -> Result<(), StoreError> {
        let name = self.checked_name(&record, true)?;
        let old_current = self.tree.current().map(str::to_string);
        self.check_loadable(old_current.as_deref())?;
        record.set_parent(old_current.as_deref());
        self.tree.create(record.info(true))?;
        self.records.insert(name.clone(), record);
        let mut journal = Journal::new("create");
        let result = self.stage_write(&mut journal, &name).and_then(|()| {
            old_current
                .as_deref()
                .map_or(Ok(()), |old| self.stage_write(&mut journal, old))
        });
        let result = result
            .map_err(|e| (e, false))
            .and_then(|()| self.commit(&journal));
        self.settle(result)
    }

    /// Adds or replaces a snapshot with the parent its definition names
    /// (libvirt's redefine); with `make_current` it becomes current.
    ///
    /// # Errors
    /// As [`MetadataStore::create`], plus a missing parent (redefine
    /// parents first) or a loop.
    pub fn redefine(
        &mut self,
        record: SnapshotRecord,
        make_current: bool,
    ) -> Result<(), StoreError> {
        let exists = self.records.contains_key(record.name().unwrap_or_default());
        let name = self.checked_name(&record, !exists)?;
        let old_current = self.tree.current().map(str::to_string);
        self.check_loadable(old_current.as_deref().filter(|_| make_current))?;
        self.tree
            .redefine(record.info(true), record.parent(), make_current)?;
        self.records.insert(name.clone(), record);
        let mut journal = Journal::new("redefine");
        let result = self.stage_write(&mut journal, &name).and_then(|()| {
            match old_current.filter(|o| make_current && *o != name) {
                Some(old) => self.stage_write(&mut journal, &old),
                None => Ok(()),
            }
        });
        let result = result
            .map_err(|e| (e, false))
            .and_then(|()| self.commit(&journal));
        self.settle(result)
    }

    /// Renames snapshot `old` to the name `record` defines, replacing its
    /// definition (libvirt's redefine under a new name, as `virsh
    /// snapshot-edit --rename` does): its children now name the new one as
    /// parent, and it stays current if it was (with `make_current` it
    /// becomes current). One journaled change: a crash leaves the old name
    /// or the new one, never both.
    ///
    /// # Errors
    /// As [`MetadataStore::redefine`], plus an unknown `old`, a new name
    /// that exists (or differs from `old` only in case), and a parent that
    /// is `old` or below it.
    pub fn rename(
        &mut self,
        old: &str,
        record: SnapshotRecord,
        make_current: bool,
    ) -> Result<(), StoreError> {
        let new = record.name().unwrap_or_default().to_string();
        if new == old {
            return self.redefine(record, make_current);
        }
        let new = self.checked_name(&record, true)?;
        let children: Vec<String> = self
            .tree
            .children(old)?
            .into_iter()
            .map(str::to_string)
            .collect();
        let old_current = self.tree.current().map(str::to_string);
        let demoted = old_current.as_deref().filter(|c| make_current && *c != old);
        self.check_loadable(children.iter().map(String::as_str).chain(demoted))?;
        self.tree.rename(old, record.info(true), record.parent())?;
        if make_current {
            self.tree.set_current(Some(&new))?;
        }
        self.records.insert(new.clone(), record);
        let mut journal = Journal::new("rename");
        let result = (|| {
            self.stage_write(&mut journal, &new)?;
            for child in &children {
                if let Some(r) = self.records.get_mut(child) {
                    r.set_parent(Some(&new));
                }
                self.stage_write(&mut journal, child)?;
            }
            if let Some(d) = demoted {
                self.stage_write(&mut journal, d)?;
            }
            journal.remove(layout::snapshot_file_name(old)?);
            Ok(())
        })();
        let result = result
            .map_err(|e| (e, false))
            .and_then(|()| self.commit(&journal));
        self.settle(result)?;
        self.records.remove(old);
        Ok(())
    }

    /// Makes `name` the current snapshot, or clears it.
    ///
    /// # Errors
    /// Read-only store, unknown name, or a write failure.
    pub fn set_current(&mut self, name: Option<&str>) -> Result<(), StoreError> {
        self.check_writable()?;
        let old = self.tree.current().map(str::to_string);
        if old.as_deref() == name {
            return Ok(());
        }
        // An unknown name is the tree's NotFound, not an unreadable file.
        if let Some(n) = name
            && !self.tree.contains(n)
        {
            return Err(TreeError::NotFound {
                name: n.to_string(),
            }
            .into());
        }
        self.check_loadable(name.into_iter().chain(old.as_deref()))?;
        self.tree.set_current(name)?;
        let mut journal = Journal::new("set-current");
        let result = name
            .map_or(Ok(()), |new| self.stage_write(&mut journal, new))
            .and_then(|()| {
                old.as_deref()
                    .map_or(Ok(()), |old| self.stage_write(&mut journal, old))
            });
        let result = result
            .map_err(|e| (e, false))
            .and_then(|()| self.commit(&journal));
        self.settle(result)
    }

    /// Deletes the metadata of `name` (and of its descendants, per
    /// `policy`); children of a rebased snapshot are re-linked to its
    /// parent. Returns the names removed.
    ///
    /// # Errors
    /// Read-only store, unknown name, or a write failure.
    pub fn delete(&mut self, name: &str, policy: ChildPolicy) -> Result<Vec<String>, StoreError> {
        self.check_writable()?;
        let parent = self.tree.parent(name)?.map(str::to_string);
        let children: Vec<String> = self
            .tree
            .children(name)?
            .into_iter()
            .map(str::to_string)
            .collect();
        let old_current = self.tree.current().map(str::to_string);
        // What may be rewritten: the re-linked children, and whichever
        // may become current (the parent, or the snapshot itself when
        // only its descendants go).
        let relinked = if policy == ChildPolicy::Rebase {
            children.as_slice()
        } else {
            &[]
        };
        let heir = if policy == ChildPolicy::ChildrenOnly {
            Some(name)
        } else {
            parent.as_deref()
        };
        self.check_loadable(relinked.iter().map(String::as_str).chain(heir))?;
        let removed = self.tree.delete(name, policy)?;
        let mut journal = Journal::new("delete");
        let result = (|| {
            if policy == ChildPolicy::Rebase {
                for child in &children {
                    self.record(child)?;
                    if let Some(r) = self.records.get_mut(child) {
                        r.set_parent(parent.as_deref());
                    }
                    self.stage_write(&mut journal, child)?;
                }
            }
            let current = self.tree.current().map(str::to_string);
            if let Some(current) = current.filter(|c| old_current.as_ref() != Some(c)) {
                self.stage_write(&mut journal, &current)?;
            }
            for gone in &removed {
                journal.remove(layout::snapshot_file_name(gone)?);
            }
            Ok(())
        })();
        let result = result
            .map_err(|e| (e, false))
            .and_then(|()| self.commit(&journal));
        self.settle(result)?;
        for gone in &removed {
            self.records.remove(gone);
        }
        Ok(removed)
    }
}

/// The owner's intent as this handle knows it.
#[derive(Debug)]
enum IntentState {
    /// None.
    None,
    /// Left by an operation that did not finish (found on open).
    Pending(Result<Intent, String>),
    /// Begun by this handle and not yet ended.
    Active(Intent),
}

/// Intents: the record of a multi-step operation while it runs (see
/// [`intent`]).
impl MetadataStore {
    /// Reads a leftover intent on open and reports it.
    fn find_intent(&mut self) -> Result<(), StoreError> {
        let found =
            intent::read(&self.intent_path).map_err(io_err("reading", &self.intent_path))?;
        let Some(found) = found else {
            return Ok(());
        };
        self.warnings.push(match &found {
            Ok(i) => LoadWarning::Interrupted {
                operation: i.operation.clone(),
                step: i.step,
                recoveries: i.recoveries.clone(),
                pid: i.pid,
            },
            Err(reason) => LoadWarning::UnreadableIntent {
                file: self.intent_path.display().to_string(),
                reason: reason.clone(),
            },
        });
        self.intent = IntentState::Pending(found);
        Ok(())
    }

    fn intent_misuse(&self, problem: &str) -> StoreError {
        StoreError::IntentMisuse {
            owner: self.owner.to_string(),
            problem: problem.to_string(),
        }
    }

    /// The interrupted operation found on open, if any (also reported in
    /// [`MetadataStore::warnings`]).
    #[must_use]
    pub fn pending_intent(&self) -> Option<&Intent> {
        match &self.intent {
            IntentState::Pending(Ok(i)) => Some(i),
            _ => None,
        }
    }

    /// Records that `intent` starts, durably, before its first side
    /// effect.
    ///
    /// # Errors
    /// Read-only store, an interrupted operation not yet recovered
    /// ([`StoreError::IntentPending`]), one already begun on this handle,
    /// an invalid intent, or a write failure.
    pub fn begin_intent(&mut self, intent: Intent) -> Result<(), StoreError> {
        self.check_writable()?;
        match &self.intent {
            IntentState::None => {}
            IntentState::Pending(Ok(p)) => {
                return Err(StoreError::IntentPending {
                    owner: self.owner.to_string(),
                    operation: p.operation.clone(),
                    step: p.step,
                });
            }
            IntentState::Pending(Err(reason)) => {
                return Err(StoreError::IntentUnreadable {
                    owner: self.owner.to_string(),
                    path: self.intent_path.clone(),
                    reason: reason.clone(),
                });
            }
            IntentState::Active(a) => {
                let problem = format!("'{}' is already in progress; end it first", a.operation);
                return Err(self.intent_misuse(&problem));
            }
        }
        intent
            .check()
            .map_err(|problem| self.intent_misuse(&problem))?;
        intent::write(&self.intent_path, &intent).map_err(io_err("writing", &self.intent_path))?;
        self.intent = IntentState::Active(intent);
        Ok(())
    }

    /// Records, durably, that the operation begun on this handle has
    /// completed `step` steps, with a new payload when given.
    ///
    /// # Errors
    /// No operation begun on this handle, or a write failure.
    pub fn advance_intent(&mut self, step: u32, payload: Option<&str>) -> Result<(), StoreError> {
        let IntentState::Active(active) = &self.intent else {
            return Err(self.intent_misuse("no operation was begun on this handle"));
        };
        let mut next = active.clone();
        next.step = step;
        if let Some(p) = payload {
            next.payload = p.to_string();
        }
        intent::write(&self.intent_path, &next).map_err(io_err("writing", &self.intent_path))?;
        self.intent = IntentState::Active(next);
        Ok(())
    }

    /// Records, durably, that the operation begun on this handle is done.
    ///
    /// # Errors
    /// No operation begun on this handle, or a write failure.
    pub fn end_intent(&mut self) -> Result<(), StoreError> {
        if !matches!(self.intent, IntentState::Active(_)) {
            return Err(self.intent_misuse("no operation was begun on this handle"));
        }
        intent::remove(&self.intent_path).map_err(io_err("removing", &self.intent_path))?;
        self.intent = IntentState::None;
        Ok(())
    }

    /// Recovers the interrupted operation found on open with the handler
    /// registered for it among `handlers`: `how`, or the operation's
    /// preferred recovery. The intent is removed once the handler
    /// succeeds; the store is usable for new operations then. Returns the
    /// intent and what was done.
    ///
    /// # Errors
    /// Read-only store, nothing pending, an unreadable intent, no handler,
    /// a recovery the operation does not offer, or the handler's failure
    /// (the intent stays).
    pub fn recover_intent(
        &mut self,
        handlers: &[&dyn IntentHandler],
        how: Option<Recovery>,
    ) -> Result<(Intent, Recovery), StoreError> {
        self.check_writable()?;
        let pending = match &self.intent {
            IntentState::Pending(Ok(p)) => p.clone(),
            IntentState::Pending(Err(reason)) => {
                return Err(StoreError::IntentUnreadable {
                    owner: self.owner.to_string(),
                    path: self.intent_path.clone(),
                    reason: reason.clone(),
                });
            }
            _ => return Err(self.intent_misuse("no interrupted operation is pending")),
        };
        let owner = self.owner.to_string();
        let handler = handlers
            .iter()
            .find(|h| h.operation() == pending.operation)
            .ok_or_else(|| StoreError::NoRecoveryHandler {
                owner: owner.clone(),
                operation: pending.operation.clone(),
            })?;
        let how = how.unwrap_or(pending.recoveries[0]);
        if !pending.recoveries.contains(&how) {
            let offered: Vec<String> = pending.recoveries.iter().map(ToString::to_string).collect();
            return Err(StoreError::RecoveryNotOffered {
                owner,
                operation: pending.operation,
                asked: how,
                offered: offered.join(", "),
            });
        }
        handler
            .recover(self, &pending, how)
            .map_err(|source| StoreError::RecoveryFailed {
                owner: owner.clone(),
                operation: pending.operation.clone(),
                how,
                source,
            })?;
        intent::remove(&self.intent_path).map_err(io_err("removing", &self.intent_path))?;
        self.intent = IntentState::None;
        self.warnings.retain(|w| {
            !matches!(
                w,
                LoadWarning::Interrupted { .. } | LoadWarning::UnreadableIntent { .. }
            )
        });
        Ok((pending, how))
    }

    /// Forgets the interrupted operation without recovering it, for when
    /// its storage was repaired by hand (or its record is unreadable).
    /// Returns it when it could be read.
    ///
    /// # Errors
    /// Read-only store, nothing pending, or a write failure.
    pub fn discard_intent(&mut self) -> Result<Option<Intent>, StoreError> {
        self.check_writable()?;
        let IntentState::Pending(found) = std::mem::replace(&mut self.intent, IntentState::None)
        else {
            return Err(self.intent_misuse("no interrupted operation is pending"));
        };
        if let Err(e) = intent::remove(&self.intent_path) {
            self.intent = IntentState::Pending(found);
            return Err(io_err("removing", &self.intent_path)(e));
        }
        Ok(found.ok())
    }
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod intent_tests;
/// A snapshot found on open, from its file or from the index.
struct Loaded {
    info: SnapshotInfo,
    /// The parent its file names.
    parent: Option<String>,
    /// Its file's `<active>`.
    current: bool,
    /// Its file's mtime.
    mtime_ns: u128,
    /// Its `<state>` word.
    state_word: &'static str,
    /// Its definition, when its file was parsed.
    record: Option<SnapshotRecord>,
}

/// Reads and parses the file of snapshot `name` in `dir` (for definitions
/// loaded on demand).
pub(crate) fn read_snapshot_file(
    dir: &Path,
    name: &str,
    domain: bool,
) -> Result<SnapshotRecord, String> {
    let path = dir.join(layout::snapshot_file_name(name).map_err(|e| e.to_string())?);
    let meta = fs::metadata(&path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let options = ParseOptions::new(ParseFlags::REDEFINE | ParseFlags::INTERNAL);
    let record = if domain {
        DomainSnapshotDef::parse(&text, &options).map(|p| SnapshotRecord::Domain(Box::new(p.def)))
    } else {
        VolSnapshotDef::parse(&text, &options).map(|p| SnapshotRecord::Volume(Box::new(p.def)))
    }
    .map_err(|e| e.to_string())?;
    if record.name() != Some(name) {
        return Err(format!(
            "it defines snapshot '{}', not '{name}'",
            record.name().unwrap_or_default()
        ));
    }
    Ok(record)
}

impl Drop for MetadataStore {
    /// A writer leaves a fresh index behind (it removed the one it read on
    /// open), unless an operation left its journal (the files may be
    /// half-way: the next writer finishes it and rebuilds from the files).
    fn drop(&mut self) {
        if self.access != Access::Write
            || std::thread::panicking()
            || fs::symlink_metadata(&self.journal).is_ok()
        {
            return;
        }
        let Some(path) = self.index_path() else {
            return;
        };
        let started = index::nanos(SystemTime::now());
        if let Ok(meta) = fs::metadata(&self.dir) {
            let dir_mtime = index::nanos(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            self.save_index(&path, started, dir_mtime);
        }
    }
}

#[cfg(test)]
mod tests;
