//! `MetadataStore`: the snapshots of one owner (a domain or a volume) as
//! one libvirt-format XML file each (`<active>` included, so a libvirt
//! metadata directory can be read as is), loaded into a [`SnapshotTree`].
//!
//! Opening takes the owner's lock: shared to read, exclusive to write, so
//! writers of one owner are serialised across processes while different
//! owners never block each other. Every file is replaced atomically and
//! durably ([`persist::write_atomic`]), so a reader never sees half a file.
//!
//! Still to come (issue 3): the compact index for fast opening, the intent
//! journal making multi-file changes (current moves, deletes that re-link
//! children) atomic across a crash, import/export and the CLI verbs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use snapshot_conf::{
    ConfError, DomainSnapshotDef, FormatFlags, FormatOptions, ParseFlags, ParseOptions,
    SnapshotState, VolSnapshotDef, VolSnapshotMode, VolSnapshotState,
};

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
    access: Access,
    tree: SnapshotTree,
    records: HashMap<String, SnapshotRecord>,
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
        let mut store = Self {
            owner,
            dir,
            access,
            tree: SnapshotTree::new(),
            records: HashMap::new(),
            warnings: Vec::new(),
            _lock: lock,
        };
        store.load()?;
        Ok(store)
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

    /// Reads every snapshot file and builds the tree, parents first.
    fn load(&mut self) -> Result<(), StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("reading", &self.dir)(e)),
        };
        let mut loaded: Vec<(SnapshotRecord, bool, SystemTime)> = Vec::new();
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
                    loaded.push((
                        record,
                        current,
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    ));
                }
                Ok((record, _)) => self.warnings.push(unreadable(format!(
                    "it defines snapshot '{}', not '{expected}'",
                    record.name().unwrap_or_default()
                ))),
                Err(e) => self.warnings.push(unreadable(e.to_string())),
            }
        }
        self.build(loaded);
        Ok(())
    }

    /// Inserts loaded records parents first. Orphans (parent without
    /// metadata) and loops become roots of the tree; their files keep the
    /// parent they name, so nothing written is lost.
    fn build(&mut self, loaded: Vec<(SnapshotRecord, bool, SystemTime)>) {
        let names: HashSet<String> = loaded
            .iter()
            .filter_map(|(r, _, _)| r.name().map(str::to_string))
            .collect();
        let mut current: Vec<(SystemTime, String)> = Vec::new();
        let mut pending: Vec<(SnapshotRecord, Option<String>)> = Vec::with_capacity(loaded.len());
        for (record, is_current, modified) in loaded {
            let name = record.name().unwrap_or_default().to_string();
            if is_current {
                current.push((modified, name.clone()));
            }
            let mut parent = record.parent().map(str::to_string);
            if let Some(p) = parent.take_if(|p| !names.contains(p.as_str())) {
                self.warnings.push(LoadWarning::Orphan { name, parent: p });
            }
            pending.push((record, parent));
        }
        // Repeated passes insert every record whose parent is in; when a
        // pass inserts nothing, what is left is a loop: cut it at one node.
        loop {
            let before = pending.len();
            let mut rest = Vec::new();
            for (record, parent) in pending {
                if parent.as_deref().is_none_or(|p| self.tree.contains(p)) {
                    self.insert_loaded(record, parent.as_deref());
                } else {
                    rest.push((record, parent));
                }
            }
            pending = rest;
            if pending.is_empty() {
                break;
            }
            if pending.len() == before {
                let (record, parent) = &mut pending[0];
                self.warnings.push(LoadWarning::Orphan {
                    name: record.name().unwrap_or_default().to_string(),
                    parent: parent.take().unwrap_or_default(),
                });
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

    fn insert_loaded(&mut self, record: SnapshotRecord, parent: Option<&str>) {
        let info = record.info(true);
        let name = info.name.clone();
        if self.tree.redefine(info, parent, false).is_ok() {
            self.records.insert(name, record);
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

    fn write_record(&self, name: &str) -> Result<(), StoreError> {
        let Some(record) = self.records.get(name) else {
            return Ok(());
        };
        let file = layout::snapshot_file_name(name)?;
        let xml = record.to_xml(self.tree.is_current(name));
        persist::write_atomic(&self.dir, &file, xml.as_bytes())
            .map_err(io_err("writing", &self.dir.join(&file)))
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
        let written = self.write_record(&name).and_then(|()| match &old_current {
            Some(old) => self.write_record(old),
            None => Ok(()),
        });
        if written.is_err() {
            self.records.remove(&name);
            let _ = self.tree.delete(&name, ChildPolicy::Rebase);
            let _ = self.tree.set_current(old_current.as_deref());
        }
        written
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
        self.write_record(&name)?;
        if make_current && let Some(old) = old_current.filter(|o| *o != name) {
            self.write_record(&old)?;
        }
        Ok(())
    }

    /// Makes `name` the current snapshot, or clears it.
    ///
    /// # Errors
    /// Read-only store, unknown name, or a write failure.
    pub fn set_current(&mut self, name: Option<&str>) -> Result<(), StoreError> {
        self.check_writable()?;
        let old = self.tree.current().map(str::to_string);
        self.tree.set_current(name)?;
        if let Some(new) = name {
            self.write_record(new)?;
        }
        if let Some(old) = old.filter(|o| Some(o.as_str()) != name) {
            self.write_record(&old)?;
        }
        Ok(())
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
        if policy == ChildPolicy::Rebase {
            for child in &children {
                if let Some(r) = self.records.get_mut(child) {
                    r.set_parent(parent.as_deref());
                }
                self.write_record(child)?;
            }
        }
        if let Some(current) = self.tree.current().map(str::to_string) {
            self.write_record(&current)?;
        }
        for gone in &removed {
            self.records.remove(gone);
            let file = layout::snapshot_file_name(gone)?;
            persist::remove_durable(&self.dir, &file)
                .map_err(io_err("removing", &self.dir.join(&file)))?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
