//! The compact per-owner index: what the tree needs of every snapshot, so
//! that opening an owner with 10 000 snapshots reads one file instead of
//! parsing 10 000 XML files. The XML files stay the truth; the index is a
//! cache, rebuilt from them whenever it is missing, stale or corrupt.
//!
//! It lives beside the owner directory (`snapshots/KIND/.NAME.index`, see
//! [`Layout::owner_index`](crate::store::Layout::owner_index)), so writing
//! it does not change the directory's mtime. Format (UTF-8 text, one record
//! per line, fields separated by tabs; text fields escape `\`, tab, CR and
//! LF as `\\`, `\t`, `\r`, `\n`):
//!
//! ```text
//! virtsnap-index 1 <dir mtime ns> <xml entries> <written ns>
//! S <name> <-|+parent> <I|A|D> <i|e> <has_metadata 0|1> <current 0|1> <creation time> <file mtime ns>
//! U <file> <reason>            (a file that could not be loaded)
//! #fnv1a64 <16 hex digits>     (checksum of every byte before this line)
//! ```
//!
//! `parent` is the parent the file names (an orphan's missing parent too),
//! `current` what the file's `<active>` says and `file mtime` its mtime, so
//! loading from the index repeats exactly what loading the XML files does,
//! warnings included.
//!
//! Trusting it on open ([`Freshness`]): the header's directory mtime must
//! equal the directory's (creating, renaming or removing a snapshot file
//! changes it). Timestamps are coarse, so a change made in the same clock
//! tick as the recorded mtime would go unseen: when the recorded mtime is
//! less than [`RACY_WINDOW`] before the index was written, the index is
//! "racy" and is trusted only after listing the directory and finding
//! exactly the `*.xml` names it holds (one `readdir`, no file read).
//! Editing a file in place (not by rename) changes no directory mtime and
//! is not detected; every writer of the store replaces files by rename.
//!
//! A writer ([`Access::Write`](crate::store::Access::Write)) removes the
//! index on open and writes a fresh one when the store is dropped (unless
//! an intent-journal record is left, i.e. an operation did not finish), so
//! a writer that crashes leaves no index to trust.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::layout;
use crate::store::metadata::{SnapshotRecord, read_snapshot_file};
use crate::tree::{ListFilter, Location, SnapshotTree, StateKind};

/// Format version in the header; another version is rebuilt.
const VERSION: u32 = 1;
const MAGIC: &str = "virtsnap-index";
const CHECKSUM: &str = "#fnv1a64 ";

/// A directory mtime this close before the index's write time might hide a
/// later change in the same timestamp tick.
pub(crate) const RACY_WINDOW: Duration = Duration::from_secs(2);

/// One snapshot as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    /// The parent named in the file (may be missing from the owner).
    pub parent: Option<String>,
    pub state: StateKind,
    pub location: Location,
    pub has_metadata: bool,
    /// The file's `<active>`.
    pub current: bool,
    pub creation_time: i64,
    /// The file's mtime, nanoseconds since the epoch.
    pub mtime_ns: u128,
}

/// The whole index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Index {
    /// The owner directory's mtime when the index was written.
    pub dir_mtime_ns: u128,
    /// Number of `*.xml` entries in the directory then.
    pub xml_entries: usize,
    /// When the directory was looked at for this index.
    pub written_ns: u128,
    pub entries: Vec<Entry>,
    /// Files that could not be loaded: (file name, reason).
    pub unreadable: Vec<(String, String)>,
}

/// Nanoseconds since the epoch (0 before it).
pub(crate) fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(match chars.next()? {
                '\\' => '\\',
                't' => '\t',
                'n' => '\n',
                'r' => '\r',
                _ => return None,
            });
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl Index {
    /// The file's bytes.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::with_capacity(64 + self.entries.len() * 96);
        let _ = writeln!(
            out,
            "{MAGIC}\t{VERSION}\t{}\t{}\t{}",
            self.dir_mtime_ns, self.xml_entries, self.written_ns
        );
        for e in &self.entries {
            out.push_str("S\t");
            escape(&mut out, &e.name);
            out.push('\t');
            match &e.parent {
                Some(p) => {
                    out.push('+');
                    escape(&mut out, p);
                }
                None => out.push('-'),
            }
            let state = match e.state {
                StateKind::Inactive => 'I',
                StateKind::Active => 'A',
                StateKind::DiskOnly => 'D',
            };
            let location = match e.location {
                Location::Internal => 'i',
                Location::External => 'e',
            };
            let _ = writeln!(
                out,
                "\t{state}\t{location}\t{}\t{}\t{}\t{}",
                u8::from(e.has_metadata),
                u8::from(e.current),
                e.creation_time,
                e.mtime_ns
            );
        }
        for (file, reason) in &self.unreadable {
            out.push_str("U\t");
            escape(&mut out, file);
            out.push('\t');
            escape(&mut out, reason);
            out.push('\n');
        }
        let sum = fnv1a64(out.as_bytes());
        let _ = writeln!(out, "{CHECKSUM}{sum:016x}");
        out
    }

    /// Parses the file's bytes; `None` when corrupt or of another version.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        // The checksum line is the last one.
        let body_end = bytes.strip_suffix(b"\n")?;
        let split = body_end
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let (body, last) = bytes.split_at(split);
        let last = std::str::from_utf8(last).ok()?.strip_suffix('\n')?;
        let sum = u64::from_str_radix(last.strip_prefix(CHECKSUM)?, 16).ok()?;
        if sum != fnv1a64(body) {
            return None;
        }
        let body = std::str::from_utf8(body).ok()?;
        let mut lines = body.lines();
        let mut head = lines.next()?.split('\t');
        if head.next()? != MAGIC || head.next()?.parse::<u32>().ok()? != VERSION {
            return None;
        }
        let mut index = Self {
            dir_mtime_ns: head.next()?.parse().ok()?,
            xml_entries: head.next()?.parse().ok()?,
            written_ns: head.next()?.parse().ok()?,
            ..Self::default()
        };
        if head.next().is_some() {
            return None;
        }
        for line in lines {
            let mut f = line.split('\t');
            match f.next()? {
                "S" => {
                    let name = unescape(f.next()?)?;
                    let parent = match f.next()? {
                        "-" => None,
                        p => Some(unescape(p.strip_prefix('+')?)?),
                    };
                    let state = match f.next()? {
                        "I" => StateKind::Inactive,
                        "A" => StateKind::Active,
                        "D" => StateKind::DiskOnly,
                        _ => return None,
                    };
                    let location = match f.next()? {
                        "i" => Location::Internal,
                        "e" => Location::External,
                        _ => return None,
                    };
                    let flag = |s: &str| match s {
                        "0" => Some(false),
                        "1" => Some(true),
                        _ => None,
                    };
                    index.entries.push(Entry {
                        name,
                        parent,
                        state,
                        location,
                        has_metadata: flag(f.next()?)?,
                        current: flag(f.next()?)?,
                        creation_time: f.next()?.parse().ok()?,
                        mtime_ns: f.next()?.parse().ok()?,
                    });
                }
                "U" => {
                    let file = unescape(f.next()?)?;
                    let reason = unescape(f.next()?)?;
                    index.unreadable.push((file, reason));
                }
                _ => return None,
            }
            if f.next().is_some() {
                return None;
            }
        }
        Some(index)
    }

    /// Reads the index at `path`; `Ok(None)` when missing or corrupt.
    pub(crate) fn read(path: &Path) -> io::Result<Option<Self>> {
        match fs::read(path) {
            Ok(bytes) => Ok(Self::decode(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the index at `path` by rename (a temp file named after the
    /// pid, so concurrent readers refreshing it do not collide). Not
    /// fsynced: it is a cache, and a torn or lost index fails its checksum
    /// or its mtime check and is rebuilt.
    pub(crate) fn write(&self, path: &Path) -> io::Result<()> {
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!(".tmp-{}", std::process::id()));
        let temp = PathBuf::from(temp);
        let result = (|| {
            let mut f = fs::File::create(&temp)?;
            f.write_all(self.encode().as_bytes())?;
            drop(f);
            fs::rename(&temp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Whether the index still describes `dir`, whose mtime is
    /// `dir_mtime_ns` now.
    pub(crate) fn freshness(&self, dir: &Path, dir_mtime_ns: u128) -> Freshness {
        if dir_mtime_ns != self.dir_mtime_ns {
            return Freshness::Stale;
        }
        let racy = self.written_ns < self.dir_mtime_ns + RACY_WINDOW.as_nanos();
        if !racy {
            return Freshness::Fresh;
        }
        if self.names_match(dir).unwrap_or(false) {
            Freshness::FreshAfterListing
        } else {
            Freshness::Stale
        }
    }

    /// Whether the `*.xml` files in `dir` are exactly those of the index.
    fn names_match(&self, dir: &Path) -> io::Result<bool> {
        let mut known: HashSet<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        let unreadable: HashSet<&str> = self.unreadable.iter().map(|(f, _)| f.as_str()).collect();
        let mut seen = 0usize;
        for entry in fs::read_dir(dir)? {
            let file = entry?.file_name();
            let Some(file) = file.to_str() else {
                continue;
            };
            let Some(name) = layout::snapshot_name_from_file(file) else {
                continue;
            };
            if !known.remove(name) && !unreadable.contains(file) {
                return Ok(false);
            }
            seen += 1;
        }
        Ok(known.is_empty() && seen == self.xml_entries)
    }
}

/// Whether an index can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// The directory's mtime matches, well after any change.
    Fresh,
    /// Within the racy window, but the directory lists the same files.
    FreshAfterListing,
    /// Something changed: load from the XML files.
    Stale,
}

/// One snapshot of [`Records`]: what its file said, and its definition,
/// parsed when first asked for.
#[derive(Debug)]
struct Slot {
    /// The parent named in the file when it was loaded or last replaced.
    file_parent: Option<String>,
    /// The file's mtime when loaded (orders several `<active>1`).
    mtime_ns: u128,
    /// `None` inside: the file could not be read or parsed any more.
    record: OnceLock<Option<SnapshotRecord>>,
}

/// The definitions of an owner's snapshots by name, filled on demand:
/// opened from the index, a definition is parsed from its XML file the
/// first time [`Records::get`] asks for it. The methods mirror the
/// `HashMap<String, SnapshotRecord>` this replaces.
#[derive(Debug, Default)]
pub(crate) struct Records {
    map: HashMap<String, Slot>,
    /// The owner directory and kind, for loading on demand.
    dir: PathBuf,
    domain: bool,
    /// XML files parsed so far (tests check the index spares them).
    parses: AtomicUsize,
}

impl Records {
    /// Where to load definitions from.
    pub(crate) fn set_source(&mut self, dir: &Path, domain: bool) {
        self.dir = dir.to_path_buf();
        self.domain = domain;
    }

    /// The definition of `name` (parsed now if it was not yet).
    pub(crate) fn get(&self, name: &str) -> Option<&SnapshotRecord> {
        let slot = self.map.get(name)?;
        slot.record
            .get_or_init(|| {
                self.parses.fetch_add(1, Ordering::Relaxed);
                read_snapshot_file(&self.dir, name, self.domain).ok()
            })
            .as_ref()
    }

    /// The definition of `name`, to change it in memory.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut SnapshotRecord> {
        self.get(name)?;
        self.map.get_mut(name)?.record.get_mut()?.as_mut()
    }

    /// Adds or replaces the definition of `name`.
    pub(crate) fn insert(&mut self, name: String, record: SnapshotRecord) {
        let slot = Slot {
            file_parent: record.parent().map(str::to_string),
            mtime_ns: nanos(SystemTime::now()),
            record: OnceLock::from(Some(record)),
        };
        self.map.insert(name, slot);
    }

    /// Adds a loaded snapshot; its definition is `record` when already
    /// parsed, else parsed on demand.
    pub(crate) fn insert_loaded(
        &mut self,
        name: String,
        file_parent: Option<String>,
        mtime_ns: u128,
        record: Option<SnapshotRecord>,
    ) {
        let cell = OnceLock::new();
        if let Some(r) = record {
            let _ = cell.set(Some(r));
        }
        self.map.insert(
            name,
            Slot {
                file_parent,
                mtime_ns,
                record: cell,
            },
        );
    }

    /// Forgets `name`; whether it was there.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        self.map.remove(name).is_some()
    }

    /// Whether `name` is known.
    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Every name, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }

    /// XML files parsed on demand so far (the load of every file on a
    /// cold open is not counted here).
    #[cfg(test)]
    pub(crate) fn parses(&self) -> usize {
        self.parses.load(Ordering::Relaxed)
    }

    /// The parent the file of `name` names: from its definition when
    /// parsed (it may have been changed since), else as loaded.
    fn file_parent(&self, name: &str) -> Option<Option<&str>> {
        let slot = self.map.get(name)?;
        Some(match slot.record.get() {
            Some(Some(r)) => r.parent(),
            _ => slot.file_parent.as_deref(),
        })
    }

    /// The index describing `tree` and these records, entries parents
    /// first; `unreadable` files are kept unless a snapshot of that name
    /// now exists.
    pub(crate) fn to_index(&self, tree: &SnapshotTree, unreadable: &[(String, String)]) -> Index {
        let topo = ListFilter {
            topological: true,
            ..ListFilter::default()
        };
        let names = tree.list(&topo).unwrap_or_default();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let (Some(info), Some(parent)) = (tree.get(name), self.file_parent(name)) else {
                continue;
            };
            entries.push(Entry {
                name: name.to_string(),
                parent: parent.map(str::to_string),
                state: info.state,
                location: info.location,
                has_metadata: info.has_metadata,
                current: tree.is_current(name),
                creation_time: info.creation_time,
                mtime_ns: self.map.get(name).map_or(0, |s| s.mtime_ns),
            });
        }
        let unreadable: Vec<(String, String)> = unreadable
            .iter()
            .filter(|(file, _)| {
                layout::snapshot_name_from_file(file).is_none_or(|n| !tree.contains(n))
            })
            .cloned()
            .collect();
        Index {
            xml_entries: entries.len() + unreadable.len(),
            entries,
            unreadable,
            ..Index::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, parent: Option<&str>) -> Entry {
        Entry {
            name: name.into(),
            parent: parent.map(Into::into),
            state: StateKind::DiskOnly,
            location: Location::External,
            has_metadata: true,
            current: false,
            creation_time: -5,
            mtime_ns: 1_700_000_000_123_456_789,
        }
    }

    fn sample() -> Index {
        Index {
            dir_mtime_ns: 42,
            xml_entries: 4,
            written_ns: 4242,
            entries: vec![
                entry("plain", None),
                entry("tab\there\nnew\rline\\slash", Some("plain")),
                entry("+-", Some("")),
                entry("é ünï", Some("tab\there\nnew\rline\\slash")),
            ],
            unreadable: vec![("bad\t.xml".into(), "line 1:\nbroken".into())],
        }
    }

    #[test]
    fn test_index_round_trips_nasty_names() {
        let index = sample();
        let text = index.encode();
        assert_eq!(Index::decode(text.as_bytes()), Some(index));
    }

    #[test]
    fn test_index_any_flipped_byte_is_rejected() {
        let text = sample().encode().into_bytes();
        for i in 0..text.len() {
            let mut bad = text.clone();
            bad[i] ^= 0x01;
            assert_eq!(Index::decode(&bad), None, "byte {i} flipped");
        }
        assert_eq!(Index::decode(&text[..text.len() - 1]), None);
        assert_eq!(Index::decode(b""), None);
    }

    #[test]
    fn test_index_other_version_is_rejected() {
        let text = sample().encode().replacen("index\t1\t", "index\t2\t", 1);
        let body = &text[..text.rfind(CHECKSUM).unwrap()];
        let resummed = format!("{body}{CHECKSUM}{:016x}\n", fnv1a64(body.as_bytes()));
        assert_eq!(Index::decode(resummed.as_bytes()), None);
    }

    // The store opened from its index.

    use crate::store::{Access, Layout, LoadWarning, MetadataStore, Owner, SnapshotRecord};
    use crate::tree::ChildPolicy;
    use snapshot_conf::{DomainSnapshotDef, ParseFlags, ParseOptions};

    fn owner() -> Owner {
        Owner::Domain("vm1".into())
    }

    fn snap(name: &str, time: i64) -> SnapshotRecord {
        let escaped = name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('\t', "&#9;")
            .replace('\n', "&#10;");
        let xml = format!(
            "<domainsnapshot><name>{escaped}</name><state>shutoff</state><creationTime>{time}</creationTime></domainsnapshot>"
        );
        let parsed = DomainSnapshotDef::parse(&xml, &ParseOptions::new(ParseFlags::REDEFINE))
            .expect("test definition");
        SnapshotRecord::Domain(Box::new(parsed.def))
    }

    fn open(root: &Path, access: Access) -> MetadataStore {
        MetadataStore::open(&Layout::new(root), owner(), access).expect("open store")
    }

    fn index_path(root: &Path) -> PathBuf {
        Layout::new(root).owner_index(&owner()).expect("index path")
    }

    fn owner_dir(root: &Path) -> PathBuf {
        Layout::new(root).owner_dir(&owner()).expect("owner dir")
    }

    /// Everything listing shows: each snapshot's info and parent, in
    /// topological order, the current one, and the warnings.
    fn shape(store: &MetadataStore) -> (Vec<(SnapshotInfoView, Option<String>)>, Option<String>) {
        let tree = store.tree();
        let topo = ListFilter {
            topological: true,
            ..ListFilter::default()
        };
        let nodes = tree
            .list(&topo)
            .expect("list")
            .into_iter()
            .map(|n| {
                let info = tree.get(n).expect("info").clone();
                (
                    SnapshotInfoView(format!("{info:?}")),
                    tree.parent(n).expect("parent").map(str::to_string),
                )
            })
            .collect();
        (nodes, tree.current().map(str::to_string))
    }

    #[derive(Debug, PartialEq, Eq)]
    struct SnapshotInfoView(String);

    /// A chain with a branch and names that need escaping:
    /// a -> b\tc -> d\ne, and a branch b\tc -> "x y".
    fn populate(root: &Path) {
        let mut store = open(root, Access::Write);
        store.create(snap("a", 1)).expect("a");
        store.create(snap("b\tc", 2)).expect("b");
        store.create(snap("d\ne", 3)).expect("d");
        store.set_current(Some("b\tc")).expect("revert");
        store.create(snap("x y \\ é", 4)).expect("x");
    }

    #[test]
    fn test_store_writer_leaves_an_index_and_readers_trust_it_without_parsing() {
        let tmp = tempfile::tempdir().expect("temp dir");
        populate(tmp.path());
        assert!(index_path(tmp.path()).exists(), "written on drop");
        let cold = {
            fs::remove_file(index_path(tmp.path())).expect("remove index");
            let store = open(tmp.path(), Access::Read);
            assert!(!store.opened_from_index());
            shape(&store)
        };
        assert_eq!(cold.0.len(), 4);
        assert_eq!(cold.1.as_deref(), Some("x y \\ é"));
        // The reader above wrote the index back.
        let store = open(tmp.path(), Access::Read);
        assert!(store.opened_from_index());
        assert_eq!(shape(&store), cold);
        assert_eq!(store.parses_on_demand(), 0);
        assert_eq!(store.warnings(), []);
        let d = store.get("d\ne").expect("loaded on demand");
        assert_eq!(d.parent(), Some("b\tc"));
        assert_eq!(store.parses_on_demand(), 1);
        store.get("d\ne").expect("cached");
        assert_eq!(store.parses_on_demand(), 1);
    }

    #[test]
    fn test_store_trusted_index_reads_no_snapshot_file() {
        let tmp = tempfile::tempdir().expect("temp dir");
        populate(tmp.path());
        let before = shape(&open(tmp.path(), Access::Read));
        // Garbage written in place: the directory's mtime does not change.
        let file = owner_dir(tmp.path()).join("a.xml");
        fs::write(&file, "not xml").expect("garble");
        let store = open(tmp.path(), Access::Read);
        assert!(store.opened_from_index());
        assert_eq!(shape(&store), before);
        assert_eq!(store.get("a"), None, "the garbled file, parsed on demand");
        assert_eq!(store.parses_on_demand(), 1);
    }

    #[test]
    fn test_store_corrupt_index_is_rebuilt_from_the_files() {
        let tmp = tempfile::tempdir().expect("temp dir");
        populate(tmp.path());
        let before = shape(&open(tmp.path(), Access::Read));
        let path = index_path(tmp.path());
        let mut bytes = fs::read(&path).expect("read index");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        fs::write(&path, &bytes).expect("corrupt index");
        let store = open(tmp.path(), Access::Read);
        assert!(!store.opened_from_index());
        assert_eq!(shape(&store), before);
        drop(store);
        let store = open(tmp.path(), Access::Read);
        assert!(store.opened_from_index(), "rewritten by the reader");
        assert_eq!(shape(&store), before);
    }

    #[test]
    fn test_store_file_added_behind_its_back_makes_the_index_stale() {
        let tmp = tempfile::tempdir().expect("temp dir");
        populate(tmp.path());
        open(tmp.path(), Access::Read);
        let xml = "<domainsnapshot><name>late</name><state>shutoff</state>\
                   <parent><name>a</name></parent><creationTime>9</creationTime>\
                   <active>0</active></domainsnapshot>";
        fs::write(owner_dir(tmp.path()).join("late.xml"), xml).expect("add behind");
        let store = open(tmp.path(), Access::Read);
        assert!(!store.opened_from_index());
        assert_eq!(store.tree().parent("late"), Ok(Some("a")));
        let seen = shape(&store);
        drop(store);
        fs::remove_file(index_path(tmp.path())).expect("remove index");
        assert_eq!(shape(&open(tmp.path(), Access::Read)), seen);
    }

    #[test]
    fn test_store_file_removed_within_the_racy_window_is_seen() {
        let tmp = tempfile::tempdir().expect("temp dir");
        populate(tmp.path());
        let path = index_path(tmp.path());
        let dir = owner_dir(tmp.path());
        let mut found = Index::read(&path).expect("read").expect("valid");
        // Pretend the removal below kept the directory's mtime (same tick).
        fs::remove_file(dir.join("d\ne.xml")).expect("remove behind");
        let mtime = nanos(
            fs::metadata(&dir)
                .and_then(|m| m.modified())
                .expect("mtime"),
        );
        found.dir_mtime_ns = mtime;
        found.written_ns = mtime + 1;
        assert_eq!(found.freshness(&dir, mtime), Freshness::Stale);
        // Outside the window the mtime alone is trusted (no listing).
        found.written_ns = mtime + RACY_WINDOW.as_nanos();
        assert_eq!(found.freshness(&dir, mtime), Freshness::Fresh);
        // Within it, a listing that matches is trusted.
        found.entries.retain(|e| e.name != "d\ne");
        found.xml_entries -= 1;
        found.written_ns = mtime + 1;
        assert_eq!(found.freshness(&dir, mtime), Freshness::FreshAfterListing);
    }

    #[test]
    fn test_store_writer_updates_the_index_after_a_middle_delete() {
        let tmp = tempfile::tempdir().expect("temp dir");
        populate(tmp.path());
        {
            let mut store = open(tmp.path(), Access::Write);
            assert!(store.opened_from_index());
            assert!(!index_path(tmp.path()).exists(), "removed while writing");
            store.delete("b\tc", ChildPolicy::Rebase).expect("delete");
        }
        let store = open(tmp.path(), Access::Read);
        assert!(store.opened_from_index());
        let indexed = shape(&store);
        assert_eq!(store.tree().parent("d\ne"), Ok(Some("a")));
        assert_eq!(
            store.get("d\ne").and_then(SnapshotRecord::parent),
            Some("a")
        );
        drop(store);
        fs::remove_file(index_path(tmp.path())).expect("remove index");
        let store = open(tmp.path(), Access::Read);
        assert!(!store.opened_from_index());
        assert_eq!(shape(&store), indexed);
    }

    #[test]
    fn test_store_unreadable_files_are_reported_from_the_index_too() {
        let tmp = tempfile::tempdir().expect("temp dir");
        populate(tmp.path());
        fs::write(owner_dir(tmp.path()).join("junk.xml"), "<oops").expect("junk");
        let cold = open(tmp.path(), Access::Read);
        assert!(!cold.opened_from_index());
        let warnings = cold.warnings().to_vec();
        assert!(
            matches!(&warnings[..], [LoadWarning::Unreadable { file, .. }] if file == "junk.xml")
        );
        drop(cold);
        let warm = open(tmp.path(), Access::Read);
        assert!(warm.opened_from_index());
        assert_eq!(warm.warnings(), warnings);
    }

    #[test]
    fn test_store_index_path_is_the_layouts() {
        let tmp = tempfile::tempdir().expect("temp dir");
        populate(tmp.path());
        assert!(index_path(tmp.path()).exists());
        assert!(
            index_path(tmp.path())
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".index"))
        );
    }
}
