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
//! virtsnap-index 3 <dir mtime ns> <xml entries> <written ns> <writer clean 0|1>
//! S <name> <parent> <I|A|D> <state word|-> <i|e> <has_metadata 0|1> <current 0|1> <creation time> <file mtime ns>
//! U <file> <reason>            (a file that could not be loaded)
//! #fnv1a64 <16 hex digits>     (checksum of every byte before this line)
//! ```
//!
//! `S` lines come in the order loading the XML files puts the snapshots
//! in the tree ([`parents_first`]), so loading the index is one pass that
//! appends each snapshot under an earlier one, with no sorting and no name
//! lookups. `parent` is `-` (a root), `@N` (the snapshot of the N-th `S`
//! line, N counted from 0 and always earlier), or `+NAME` for a file
//! naming a parent the tree does not link (a missing parent, or a loop
//! cut open): the snapshot is a root and an orphan warning is repeated.
//! `current` is what the file's `<active>` says and `file mtime` its mtime,
//! so loading from the index repeats what loading the XML files does,
//! warnings included.
//!
//! Trusting it on open ([`Freshness`]): the header's directory mtime must
//! equal the directory's (creating, renaming or removing a snapshot file
//! changes it). Timestamps are coarse, so a change made in the same clock
//! tick as the recorded mtime would go unseen: when the recorded mtime is
//! less than [`racy_window`] before the index was written, the index is
//! "racy" and is trusted only after listing the directory and finding
//! exactly the `*.xml` names it holds (one `readdir`, no file read); a
//! reader doing so once the window has passed writes the index again with
//! its own time, so the commands after it trust the mtime alone.
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

use snapshot_conf::{SnapshotState, VolSnapshotState};

use crate::store::layout;
use crate::store::metadata::{SnapshotRecord, read_snapshot_file};
use crate::tree::{Location, SnapshotInfo, SnapshotTree, StateKind};

/// Format version in the header; another version is rebuilt.
const VERSION: u32 = 3;
const MAGIC: &str = "virtsnap-index";
const CHECKSUM: &str = "#fnv1a64 ";

/// A directory mtime this close before the index's write time might hide a
/// later change in the same timestamp tick.
/// How long after a directory change a listing is still needed, for a
/// filesystem whose timestamps are whole seconds or milliseconds (FAT's
/// are 2 s).
pub(crate) const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The same for a filesystem with finer timestamps (ext4, xfs, btrfs,
/// tmpfs: the kernel's coarse clock, a few milliseconds per tick).
pub(crate) const RACY_WINDOW_FINE: Duration = Duration::from_millis(100);

/// The racy window for a directory whose mtime is `mtime_ns`: a
/// timestamp with digits below the millisecond comes from a filesystem
/// with fine timestamps (a coarse one would have zeros there; a fine one
/// shows zeros only once in a million times, and then gets the long
/// window, which is only slower).
pub(crate) fn racy_window(mtime_ns: u128) -> u128 {
    if mtime_ns.is_multiple_of(1_000_000) {
        RACY_WINDOW.as_nanos()
    } else {
        RACY_WINDOW_FINE.as_nanos()
    }
}

/// One snapshot as the index keeps it.
/// The parent of an index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParentRef {
    /// A root whose file names no parent.
    Root,
    /// The entry at this position, always an earlier one.
    Entry(usize),
    /// A root whose file names this parent, which the tree does not link
    /// (no such snapshot, or a loop cut open there).
    Unlinked(String),
}

/// One snapshot of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    pub parent: ParentRef,
    pub state: StateKind,
    /// The `<state>` word (`""`: none).
    pub state_word: &'static str,
    pub location: Location,
    pub has_metadata: bool,
    pub current: bool,
    pub creation_time: i64,
    pub mtime_ns: u128,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Index {
    /// The owner directory's mtime when the index was written.
    pub dir_mtime_ns: u128,
    /// Number of `*.xml` entries in the directory then.
    pub xml_entries: usize,
    /// When the directory was looked at for this index.
    pub written_ns: u128,
    /// Written by a writer that finished cleanly: no temp file of a
    /// crashed write can be left in the directory.
    pub writer_clean: bool,
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
            "{MAGIC}\t{VERSION}\t{}\t{}\t{}\t{}",
            self.dir_mtime_ns,
            self.xml_entries,
            self.written_ns,
            u8::from(self.writer_clean)
        );
        for e in &self.entries {
            out.push_str("S\t");
            escape(&mut out, &e.name);
            out.push('\t');
            match &e.parent {
                ParentRef::Root => out.push('-'),
                ParentRef::Entry(i) => {
                    let _ = write!(out, "@{i}");
                }
                ParentRef::Unlinked(p) => {
                    out.push('+');
                    escape(&mut out, p);
                }
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
                "\t{state}\t{}\t{location}\t{}\t{}\t{}\t{}",
                if e.state_word.is_empty() {
                    "-"
                } else {
                    e.state_word
                },
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
            writer_clean: match head.next()? {
                "0" => false,
                "1" => true,
                _ => return None,
            },
            ..Self::default()
        };
        if head.next().is_some() {
            return None;
        }
        index
            .entries
            .reserve(index.xml_entries.min(body.len() / 16));
        for line in lines {
            let mut f = line.split('\t');
            match f.next()? {
                "S" => {
                    let name = unescape(f.next()?)?;
                    let parent = match f.next()? {
                        "-" => ParentRef::Root,
                        p if p.starts_with('@') => {
                            let digits = &p[1..];
                            if !digits.bytes().all(|b| b.is_ascii_digit())
                                || (digits.len() > 1 && digits.starts_with('0'))
                            {
                                return None;
                            }
                            let i: usize = digits.parse().ok()?;
                            // Parents first: only an earlier entry.
                            if i >= index.entries.len() {
                                return None;
                            }
                            ParentRef::Entry(i)
                        }
                        p => ParentRef::Unlinked(unescape(p.strip_prefix('+')?)?),
                    };
                    let state = match f.next()? {
                        "I" => StateKind::Inactive,
                        "A" => StateKind::Active,
                        "D" => StateKind::DiskOnly,
                        _ => return None,
                    };
                    let state_word = match f.next()? {
                        "-" => "",
                        word => known_state_word(word)?,
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
                        state_word,
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
        let racy = self.written_ns < self.dir_mtime_ns + racy_window(self.dir_mtime_ns);
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
    /// The parent the file names when the tree does not link it (an
    /// orphan, or a loop cut open); otherwise the file names the parent
    /// the tree links (until the definition is parsed and changed).
    unlinked_parent: Option<String>,
    /// The file's mtime when loaded (orders several `<active>1`).
    mtime_ns: u128,
    /// The `<state>` word of the definition (listing needs no parse).
    state_word: &'static str,
    /// `Err` inside: why the file could not be read or parsed any more.
    record: OnceLock<Result<SnapshotRecord, String>>,
}

/// The definitions of an owner's snapshots by name, filled on demand:
/// opened from the index, a definition is parsed from its XML file the
/// first time [`Records::get`] asks for it. The methods mirror the
/// `HashMap<String, SnapshotRecord>` this replaces.
#[derive(Debug, Default)]
pub(crate) struct Records {
    map: HashMap<String, Slot, foldhash::fast::RandomState>,
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
        self.load(name).ok()
    }

    /// The definition of `name` (parsed now if it was not yet), or why it
    /// cannot be had.
    pub(crate) fn load(&self, name: &str) -> Result<&SnapshotRecord, String> {
        let slot = self
            .map
            .get(name)
            .ok_or_else(|| "no such snapshot is loaded".to_string())?;
        slot.record
            .get_or_init(|| {
                self.parses.fetch_add(1, Ordering::Relaxed);
                read_snapshot_file(&self.dir, name, self.domain)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The definition of `name`, to change it in memory.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut SnapshotRecord> {
        self.get(name)?;
        self.map.get_mut(name)?.record.get_mut()?.as_mut().ok()
    }

    /// Adds or replaces the definition of `name`.
    pub(crate) fn insert(&mut self, name: String, record: SnapshotRecord) {
        let slot = Slot {
            unlinked_parent: None,
            mtime_ns: nanos(SystemTime::now()),
            state_word: record.state_word(),
            record: OnceLock::from(Ok(record)),
        };
        self.map.insert(name, slot);
    }

    /// Room for `additional` more snapshots.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    /// Adds a loaded snapshot; its definition is `record` when already
    /// parsed, else parsed on demand.
    pub(crate) fn insert_loaded(
        &mut self,
        name: String,
        unlinked_parent: Option<String>,
        mtime_ns: u128,
        state_word: &'static str,
        record: Option<SnapshotRecord>,
    ) {
        let cell = OnceLock::new();
        if let Some(r) = record {
            let _ = cell.set(Ok(r));
        }
        self.map.insert(
            name,
            Slot {
                unlinked_parent,
                mtime_ns,
                state_word,
                record: cell,
            },
        );
    }

    /// The `<state>` word of `name`: from its definition when parsed,
    /// else as loaded.
    pub(crate) fn state_word(&self, name: &str) -> Option<&'static str> {
        let slot = self.map.get(name)?;
        Some(match slot.record.get() {
            Some(Ok(r)) => r.state_word(),
            _ => slot.state_word,
        })
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

    /// The index describing `tree` and these records, entries in the
    /// order loading the files would give ([`parents_first`] over the
    /// parents the files name); `unreadable` files are kept unless a
    /// snapshot of that name now exists. O(n log n), with name lookups
    /// only for files naming a parent the tree does not link.
    pub(crate) fn to_index(&self, tree: &SnapshotTree, unreadable: &[(String, String)]) -> Index {
        // Dense positions in arena order.
        let mut dense = vec![usize::MAX; tree.slot_count()];
        let mut nodes: Vec<(&SnapshotInfo, Option<usize>, Option<&Slot>)> =
            Vec::with_capacity(tree.len());
        for (slot, info, parent) in tree.slots() {
            dense[slot] = nodes.len();
            nodes.push((info, parent, self.map.get(&info.name)));
        }
        // The parent each file names, as a dense position when it is the
        // one the tree links.
        let mut by_name: Option<HashMap<&str, usize>> = None;
        let named: Vec<(Named, Option<&str>)> = nodes
            .iter()
            .map(|&(_, parent, slot)| {
                let linked = parent.map(|p| dense[p]);
                let file_parent = match slot.map(|s| (s.record.get(), &s.unlinked_parent)) {
                    Some((Some(Ok(r)), _)) => r.parent(),
                    Some((_, Some(p))) => Some(p.as_str()),
                    _ => linked.map(|j| nodes[j].0.name.as_str()),
                };
                let link = match (file_parent, linked) {
                    (None, _) => Named::None,
                    (Some(p), Some(j)) if nodes[j].0.name == p => Named::At(j),
                    (Some(p), _) => {
                        let map = by_name.get_or_insert_with(|| {
                            nodes
                                .iter()
                                .enumerate()
                                .map(|(i, n)| (n.0.name.as_str(), i))
                                .collect()
                        });
                        map.get(p).map_or(Named::Missing, |&j| Named::At(j))
                    }
                };
                (link, file_parent)
            })
            .collect();
        // Sorted by creation time then name, as loading the files does.
        let mut sorted: Vec<usize> = (0..nodes.len()).collect();
        sorted.sort_unstable_by(|&a, &b| {
            let (a, b) = (nodes[a].0, nodes[b].0);
            (a.creation_time, &a.name).cmp(&(b.creation_time, &b.name))
        });
        let mut rank = vec![0; nodes.len()];
        for (r, &i) in sorted.iter().enumerate() {
            rank[i] = r;
        }
        let links: Vec<Named> = sorted
            .iter()
            .map(|&i| match named[i].0 {
                Named::At(j) => Named::At(rank[j]),
                other => other,
            })
            .collect();
        let ordered = parents_first(&links);
        let mut position = vec![0; nodes.len()];
        for (at, &r) in ordered.order.iter().enumerate() {
            position[r] = at;
        }
        let current = tree.current();
        let entries = ordered
            .order
            .iter()
            .map(|&r| {
                let i = sorted[r];
                let (info, _, slot) = nodes[i];
                let parent = match (ordered.parent[r], named[i].1) {
                    (Some(j), _) => ParentRef::Entry(position[j]),
                    (None, Some(p)) => ParentRef::Unlinked(p.to_string()),
                    (None, None) => ParentRef::Root,
                };
                Entry {
                    name: info.name.clone(),
                    parent,
                    state: info.state,
                    state_word: slot.map_or("", |s| match s.record.get() {
                        Some(Ok(r)) => r.state_word(),
                        _ => s.state_word,
                    }),
                    location: info.location,
                    has_metadata: info.has_metadata,
                    current: current == Some(info.name.as_str()),
                    creation_time: info.creation_time,
                    mtime_ns: slot.map_or(0, |s| s.mtime_ns),
                }
            })
            .collect::<Vec<_>>();
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

/// The `'static` spelling of a `<state>` word of either kind of snapshot.
fn known_state_word(word: &str) -> Option<&'static str> {
    if let Ok(s) = word.parse::<SnapshotState>() {
        return Some(s.as_str());
    }
    word.parse::<VolSnapshotState>()
        .ok()
        .map(VolSnapshotState::as_str)
}

/// The parent a snapshot's file names, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named {
    /// It names none.
    None,
    /// The snapshot at this input position.
    At(usize),
    /// One that is not there.
    Missing,
}

/// Resolves the parents that snapshots (`(name, parent the file names)`)
/// name to input positions.
pub(crate) fn resolve_names(nodes: &[(&str, Option<&str>)]) -> Vec<Named> {
    let position: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, i))
        .collect();
    nodes
        .iter()
        .map(|(_, parent)| match parent {
            None => Named::None,
            Some(p) => position.get(p).map_or(Named::Missing, |&j| Named::At(j)),
        })
        .collect()
}

/// Where [`parents_first`] puts each snapshot.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ParentsFirst {
    /// Positions in the input, parents before children.
    pub order: Vec<usize>,
    /// The linked parent of each input position.
    pub parent: Vec<Option<usize>>,
    /// Input positions naming a parent they are not linked to: missing
    /// parents first (in input order), then loops cut open (in cut order).
    pub unlinked: Vec<usize>,
}

/// Orders snapshots, given the parent each names ([`resolve_names`]) and
/// already sorted by creation time then name, so that parents come before
/// children: breadth first from the roots, children in input order. A
/// parent that is not there leaves its child a root (an orphan);
/// snapshots no root reaches form loops, each cut open at its first
/// snapshot in input order, which becomes a root. O(n).
pub(crate) fn parents_first(named: &[Named]) -> ParentsFirst {
    let n = named.len();
    let mut out = ParentsFirst {
        order: Vec::with_capacity(n),
        parent: vec![None; n],
        unlinked: Vec::new(),
    };
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, link) in named.iter().enumerate() {
        match *link {
            Named::None => {}
            Named::At(j) => {
                out.parent[i] = Some(j);
                children[j].push(i);
            }
            Named::Missing => out.unlinked.push(i),
        }
    }
    let mut seen = vec![false; n];
    let mut queue = std::collections::VecDeque::new();
    let roots: Vec<usize> = (0..n).filter(|&i| out.parent[i].is_none()).collect();
    let mut roots = roots.into_iter();
    let mut next_cut = 0;
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
            out.parent[next_cut] = None;
            out.unlinked.push(next_cut);
            next_cut
        };
        seen[start] = true;
        queue.push_back(start);
        while let Some(n) = queue.pop_front() {
            out.order.push(n);
            for &c in &children[n] {
                if !seen[c] {
                    seen[c] = true;
                    queue.push_back(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, parent: ParentRef) -> Entry {
        Entry {
            name: name.into(),
            parent,
            state: StateKind::DiskOnly,
            state_word: "disk-snapshot",
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
            xml_entries: 5,
            written_ns: 4242,
            writer_clean: true,
            entries: vec![
                entry("plain", ParentRef::Root),
                entry("tab\there\nnew\rline\\slash", ParentRef::Entry(0)),
                entry("+-", ParentRef::Unlinked(String::new())),
                entry("é ünï", ParentRef::Unlinked("@1".into())),
                entry("@0", ParentRef::Entry(1)),
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
        let text = sample().encode().replacen("index\t3\t", "index\t4\t", 1);
        assert_eq!(Index::decode(resum(&text).as_bytes()), None);
    }

    /// `text` with its checksum line recomputed.
    fn resum(text: &str) -> String {
        let body = &text[..text.rfind(CHECKSUM).expect("checksum line")];
        format!("{body}{CHECKSUM}{:016x}\n", fnv1a64(body.as_bytes()))
    }

    #[test]
    fn test_index_parent_must_be_an_earlier_entry() {
        let text = sample().encode();
        assert!(Index::decode(resum(&text).as_bytes()).is_some());
        for bad in ["@4", "@5", "@01", "@+1", "@", "@x"] {
            let edited = text.replacen("\t@1\t", &format!("\t{bad}\t"), 1);
            assert_ne!(edited, text);
            assert_eq!(Index::decode(resum(&edited).as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn test_index_state_words_of_both_kinds_round_trip_and_unknown_is_refused() {
        let mut index = sample();
        index.entries[0].state_word = "";
        index.entries[1].state_word = "quiesced";
        index.entries[2].state_word = "shutoff";
        let text = index.encode();
        assert_eq!(Index::decode(text.as_bytes()), Some(index));
        let edited = text.replacen("\tquiesced\t", "\tfrozen\t", 1);
        assert_ne!(edited, text);
        assert_eq!(Index::decode(resum(&edited).as_bytes()), None);
    }

    #[test]
    fn test_parents_first_orders_breadth_first_and_cuts_loops() {
        // 0 <- 2, 1 orphan of "gone", 3 <- 4 <- 3 a loop, 5 a root.
        let nodes = [
            ("a", None),
            ("b", Some("gone")),
            ("c", Some("a")),
            ("d", Some("e")),
            ("e", Some("d")),
            ("f", None),
        ];
        let got = parents_first(&resolve_names(&nodes));
        assert_eq!(got.order, vec![0, 2, 1, 5, 3, 4]);
        assert_eq!(got.parent, vec![None, None, Some(0), None, Some(3), None]);
        assert_eq!(got.unlinked, vec![1, 3]);
    }

    // The store opened from its index.

    use crate::store::{Access, Layout, LoadWarning, MetadataStore, Owner, SnapshotRecord};
    use crate::tree::{ChildPolicy, ListFilter};
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
        found.written_ns = mtime + racy_window(mtime);
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
