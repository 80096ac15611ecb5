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

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use snapshot_conf::{
    ConfError, DomainSnapshotDef, FormatFlags, FormatOptions, ParseFlags, ParseOptions,
    SnapshotState, VolSnapshotDef, VolSnapshotMode, VolSnapshotState,
};

use crate::store::index::{self, Freshness, Index, Records};
use crate::store::journal::{self, Journal};
use crate::store::layout::{self, Layout, LayoutError, Owner};
use crate::store::persist::{self, OwnerLock};
use crate::tree::{ChildPolicy, Location, SnapshotInfo, SnapshotTree, StateKind, TreeError};

/// Largest snapshot metadata file read (libvirt reads at most 1 MiB).
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
                let location = if v.target.mode == Some(VolSnapshotMode::External) {
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

    /// The metadata file's content (libvirt's internal format).
    fn to_xml(&self, current: bool) -> String {
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
    /// Several files said `<active>1`; the most recently written won.
    SeveralCurrent {
        /// The ones that said so.
        names: Vec<String>,
        /// The one kept.
        kept: String,
    },
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

    /// The owner's lock file, its directory created.
    fn lock_path(layout: &Layout, owner: &Owner) -> Result<PathBuf, StoreError> {
        let lock_path = layout.owner_lock(owner)?;
        if let Some(parent) = lock_path.parent() {
            persist::create_dir_durable(parent).map_err(io_err("creating", parent))?;
        }
        Ok(lock_path)
    }

    fn open_locked(
        layout: &Layout,
        owner: Owner,
        access: Access,
        lock: OwnerLock,
    ) -> Result<Self, StoreError> {
        let dir = layout.owner_dir(&owner)?;
        if access == Access::Write {
            persist::create_dir_durable(&dir).map_err(io_err("creating", &dir))?;
            persist::remove_stale_temps(&dir).map_err(io_err("cleaning", &dir))?;
        }
        let (journal, recovered) = Self::recover_journal(layout, &owner, &dir, access)?;
        let mut store = Self {
            owner,
            dir,
            journal,
            access,
            tree: SnapshotTree::new(),
            records: Records::default(),
            from_index: false,
            warnings: recovered.into_iter().collect(),
            _lock: lock,
        };
        store.load()?;
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
    /// writes a new one when dropped (see [`index`]).
    fn load(&mut self) -> Result<(), StoreError> {
        self.records.set_source(&self.dir, self.is_domain());
        let index_path = self.index_path();
        // Taken before the directory is looked at: a later change gets a
        // later mtime, or falls in the racy window.
        let started = index::nanos(SystemTime::now());
        let dir_mtime = match fs::metadata(&self.dir) {
            Ok(m) => index::nanos(m.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("reading", &self.dir)(e)),
        };
        if let Some(path) = &index_path
            && let Ok(Some(found)) = Index::read(path)
            && found.freshness(&self.dir, dir_mtime) != Freshness::Stale
        {
            self.load_index(found);
            self.from_index = true;
            if self.access == Access::Write {
                let _ = fs::remove_file(path);
            }
            return Ok(());
        }
        let loaded = self.load_files()?;
        self.build(loaded);
        if let Some(path) = &index_path {
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
    /// definitions are parsed when asked for.
    fn load_index(&mut self, found: Index) {
        for (file, reason) in found.unreadable {
            self.warnings.push(LoadWarning::Unreadable { file, reason });
        }
        let loaded = found
            .entries
            .into_iter()
            .map(|e| Loaded {
                info: SnapshotInfo {
                    name: e.name,
                    state: e.state,
                    location: e.location,
                    has_metadata: e.has_metadata,
                    creation_time: e.creation_time,
                },
                parent: e.parent,
                current: e.current,
                mtime_ns: e.mtime_ns,
                record: None,
            })
            .collect();
        self.build(loaded);
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
    /// tree), then breadth first from the roots. Orphans (parent without
    /// metadata) and loops become roots of the tree; their files keep the
    /// parent they name, so nothing written is lost.
    fn build(&mut self, mut loaded: Vec<Loaded>) {
        loaded.sort_unstable_by(|a, b| {
            (a.info.creation_time, &a.info.name).cmp(&(b.info.creation_time, &b.info.name))
        });
        let names: Vec<String> = loaded.iter().map(|l| l.info.name.clone()).collect();
        let position: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut current: Vec<(u128, String)> = Vec::new();
        let mut parent_of: Vec<Option<usize>> = vec![None; loaded.len()];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); loaded.len()];
        for (i, l) in loaded.iter().enumerate() {
            if l.current {
                current.push((l.mtime_ns, names[i].clone()));
            }
            let Some(p) = &l.parent else { continue };
            match position.get(p.as_str()) {
                Some(&j) => {
                    parent_of[i] = Some(j);
                    children[j].push(i);
                }
                None => self.warnings.push(LoadWarning::Orphan {
                    name: names[i].clone(),
                    parent: p.clone(),
                }),
            }
        }
        // Breadth first from the roots; what no root reaches is a loop:
        // cut it at its first node and go on from there.
        let mut order = Vec::with_capacity(loaded.len());
        let mut seen = vec![false; loaded.len()];
        let mut queue = std::collections::VecDeque::new();
        let roots: Vec<usize> = (0..loaded.len())
            .filter(|&i| parent_of[i].is_none())
            .collect();
        let mut next_cut = 0;
        let mut roots = roots.into_iter();
        loop {
            let start = if let Some(r) = roots.next() {
                r
            } else {
                while next_cut < seen.len() && seen[next_cut] {
                    next_cut += 1;
                }
                if next_cut == seen.len() {
                    break;
                }
                let cut = next_cut;
                self.warnings.push(LoadWarning::Orphan {
                    name: names[cut].clone(),
                    parent: loaded[cut].parent.clone().unwrap_or_default(),
                });
                parent_of[cut] = None;
                cut
            };
            seen[start] = true;
            queue.push_back(start);
            while let Some(n) = queue.pop_front() {
                order.push(n);
                for &c in &children[n] {
                    if !seen[c] {
                        seen[c] = true;
                        queue.push_back(c);
                    }
                }
            }
        }
        let mut slots: Vec<Option<Loaded>> = loaded.into_iter().map(Some).collect();
        for i in order {
            if let Some(l) = slots[i].take() {
                let parent = parent_of[i].map(|j| names[j].as_str());
                self.insert_loaded(l, parent);
            }
        }
        current.sort();
        if let Some((_, kept)) = current.last() {
            if current.len() > 1 {
                self.warnings.push(LoadWarning::SeveralCurrent {
                    names: current.iter().map(|(_, n)| n.clone()).collect(),
                    kept: kept.clone(),
                });
            }
            // Every name in `current` was inserted above.
            let _ = self.tree.set_current(Some(kept));
        }
    }

    fn insert_loaded(&mut self, loaded: Loaded, parent: Option<&str>) {
        let name = loaded.info.name.clone();
        if self.tree.redefine(loaded.info, parent, false).is_ok() {
            self.records
                .insert_loaded(name, loaded.parent, loaded.mtime_ns, loaded.record);
        }
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.access == Access::Read {
            return Err(StoreError::ReadOnly {
                owner: self.owner.to_string(),
            });
        }
        Ok(())
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

    /// Records in `journal` the file of `name` as the tree and records now
    /// say (nothing for an unknown name).
    fn stage_write(&self, journal: &mut Journal, name: &str) -> Result<(), StoreError> {
        let Some(record) = self.records.get(name) else {
            return Ok(());
        };
        let file = layout::snapshot_file_name(name)?;
        journal.write(file, record.to_xml(self.tree.is_current(name)));
        Ok(())
    }

    /// Performs `journal` atomically across a crash (see [`journal`]). On
    /// error, the flag says whether the journal was written: then the
    /// files may be half-way and the operation is finished by the next
    /// commit or the next open for writing.
    fn commit(&self, journal: &Journal) -> Result<(), (StoreError, bool)> {
        if journal.entries().is_empty() {
            return Ok(());
        }
        // A journal left by an earlier commit of this store that failed
        // half-way: finish it first, or the new journal would replace it.
        if fs::symlink_metadata(&self.journal).is_ok() {
            journal::recover(&self.journal, &self.dir)
                .map_err(|(op, path, source)| (StoreError::Io { op, path, source }, false))?;
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
        record.set_parent(old_current.as_deref());
        self.tree.create(record.info(true))?;
        self.records.insert(name.clone(), record);
        let mut journal = Journal::new("create");
        let staged = self
            .stage_write(&mut journal, &name)
            .and_then(|()| match &old_current {
                Some(old) => self.stage_write(&mut journal, old),
                None => Ok(()),
            });
        let result = staged
            .map_err(|e| (e, false))
            .and_then(|()| self.commit(&journal));
        match result {
            Ok(()) => Ok(()),
            Err((e, journaled)) => {
                // Nothing changed on disk without a journal: undo in memory
                // too. With one, the disk will reach the new state.
                if !journaled {
                    self.records.remove(&name);
                    let _ = self.tree.delete(&name, ChildPolicy::Rebase);
                    let _ = self.tree.set_current(old_current.as_deref());
                }
                Err(e)
            }
        }
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
        self.tree
            .redefine(record.info(true), record.parent(), make_current)?;
        self.records.insert(name.clone(), record);
        let mut journal = Journal::new("redefine");
        self.stage_write(&mut journal, &name)?;
        if make_current && let Some(old) = old_current.filter(|o| *o != name) {
            self.stage_write(&mut journal, &old)?;
        }
        self.commit(&journal).map_err(|(e, _)| e)
    }

    /// Makes `name` the current snapshot, or clears it.
    ///
    /// # Errors
    /// Read-only store, unknown name, or a write failure.
    pub fn set_current(&mut self, name: Option<&str>) -> Result<(), StoreError> {
        self.check_writable()?;
        let old = self.tree.current().map(str::to_string);
        self.tree.set_current(name)?;
        let mut journal = Journal::new("set-current");
        if let Some(new) = name {
            self.stage_write(&mut journal, new)?;
        }
        if let Some(old) = old.filter(|o| Some(o.as_str()) != name) {
            self.stage_write(&mut journal, &old)?;
        }
        self.commit(&journal).map_err(|(e, _)| e)
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
        let removed = self.tree.delete(name, policy)?;
        let mut journal = Journal::new("delete");
        if policy == ChildPolicy::Rebase {
            for child in &children {
                if let Some(r) = self.records.get_mut(child) {
                    r.set_parent(parent.as_deref());
                }
                self.stage_write(&mut journal, child)?;
            }
        }
        if let Some(current) = self.tree.current().map(str::to_string) {
            self.stage_write(&mut journal, &current)?;
        }
        for gone in &removed {
            self.records.remove(gone);
            journal.remove(layout::snapshot_file_name(gone)?);
        }
        self.commit(&journal).map_err(|(e, _)| e)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod crash_tests;
/// A snapshot found on open, from its file or from the index.
struct Loaded {
    info: SnapshotInfo,
    /// The parent its file names.
    parent: Option<String>,
    /// Its file's `<active>`.
    current: bool,
    /// Its file's mtime.
    mtime_ns: u128,
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
