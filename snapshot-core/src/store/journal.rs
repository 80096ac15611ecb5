//! The intent journal: makes a change that touches several snapshot files
//! (a create that demotes the old current, a current move, a delete that
//! re-links children) atomic across a crash, by rolling it forward.
//!
//! Before its first side effect an operation writes the owner's journal
//! (`snapshots/KIND/.NAME.journal`, see [`crate::store::layout`]) with
//! [`persist::write_atomic`], so the journal itself is either absent or
//! complete and durable. The journal lists the complete target state of
//! every file the operation touches: "this file has exactly this content"
//! or "this file is gone". The operation then performs the steps and
//! removes the journal. Re-applying a journal is idempotent (writing a file
//! with the same content again, removing a file that is already gone), so
//! a writer opening the store after a crash at any step simply applies the
//! leftover journal again and removes it: the store is in the state after
//! the operation. A crash before the journal is complete leaves no journal
//! (at most a temp file, removed on the next write open): the store is in
//! the state before the operation.
//!
//! Readers: a reader holds the shared lock, so it never runs while a live
//! writer is between steps; a journal it finds was left by a writer that
//! crashed, and the files may be in a mixed state. Rather than apply the
//! journal in memory, a reader refuses to open
//! ([`StoreError::Interrupted`](crate::store::StoreError::Interrupted)) and
//! tells the user to open the store for writing, which finishes the
//! interrupted operation. Readers therefore never see a mix.
//!
//! Format (text header, length-prefixed records, so any name and content
//! is safe; parsed strictly):
//!
//! ```text
//! virtsnap-journal 1 OPERATION\n
//! write NAME-LEN NAME CONTENT-LEN\nCONTENT\n
//! remove NAME-LEN NAME\n
//! end RECORD-COUNT\n
//! ```
//!
//! Lengths are in bytes, decimal, without leading zeros. Names are snapshot
//! file names (`SNAP.xml`, as [`layout::snapshot_name_from_file`] accepts),
//! each at most once; contents are UTF-8. The `end` trailer makes a
//! truncated journal detectable even though [`persist::write_atomic`]
//! never leaves one.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::store::layout;
use crate::store::persist;

/// First word of the header line.
const MAGIC: &str = "virtsnap-journal";
/// The format version written and accepted.
const VERSION: &str = "1";
/// Largest journal read (a delete of many snapshots lists many contents).
const MAX_JOURNAL_BYTES: u64 = 1 << 30;

/// Crash points after each step; steps past the last label have none.
const STEP_LABELS: [&str; 8] = [
    "step-1-done",
    "step-2-done",
    "step-3-done",
    "step-4-done",
    "step-5-done",
    "step-6-done",
    "step-7-done",
    "step-8-done",
];

/// The target state of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The file has exactly this content.
    Write {
        /// The file name in the owner directory.
        file: String,
        /// Its content.
        content: String,
    },
    /// The file does not exist.
    Remove {
        /// The file name in the owner directory.
        file: String,
    },
}

impl Entry {
    pub(crate) fn file(&self) -> &str {
        match self {
            Self::Write { file, .. } | Self::Remove { file } => file,
        }
    }
}

/// What an operation is about to do: the target state of every file it
/// touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Journal {
    operation: String,
    entries: Vec<Entry>,
}

/// Why a journal could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    /// Byte offset of the problem.
    pub(crate) offset: usize,
    /// What is wrong.
    pub(crate) message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid journal at byte {}: {}",
            self.offset, self.message
        )
    }
}

impl std::error::Error for ParseError {}

impl Journal {
    /// An empty journal of `operation` (a word such as `create`).
    ///
    /// # Panics
    /// When `operation` is empty or contains whitespace or control
    /// characters (a programming error: operations are fixed words).
    pub(crate) fn new(operation: &str) -> Self {
        assert!(valid_operation(operation), "bad operation {operation:?}");
        Self {
            operation: operation.to_owned(),
            entries: Vec::new(),
        }
    }

    /// The operation recorded.
    pub(crate) fn operation(&self) -> &str {
        &self.operation
    }

    /// The target states, in the order they are applied.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Records that `file` will contain `content` (replacing an earlier
    /// entry for the same file).
    pub(crate) fn write(&mut self, file: String, content: String) {
        self.set(Entry::Write { file, content });
    }

    /// Records that `file` will be removed (replacing an earlier entry for
    /// the same file).
    pub(crate) fn remove(&mut self, file: String) {
        self.set(Entry::Remove { file });
    }

    fn set(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.file() == entry.file()) {
            Some(e) => *e = entry,
            None => self.entries.push(entry),
        }
    }

    /// The journal's bytes (see the module documentation).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = format!("{MAGIC} {VERSION} {}\n", self.operation).into_bytes();
        for entry in &self.entries {
            match entry {
                Entry::Write { file, content } => {
                    out.extend_from_slice(
                        format!("write {} {file} {}\n", file.len(), content.len()).as_bytes(),
                    );
                    out.extend_from_slice(content.as_bytes());
                    out.push(b'\n');
                }
                Entry::Remove { file } => {
                    out.extend_from_slice(format!("remove {} {file}\n", file.len()).as_bytes());
                }
            }
        }
        out.extend_from_slice(format!("end {}\n", self.entries.len()).as_bytes());
        out
    }

    /// Parses what [`Journal::encode`] wrote, strictly.
    ///
    /// # Errors
    /// [`ParseError`] for anything else: a bad header or version, an
    /// unknown record, a bad or oversized length, a name that is not a
    /// snapshot file name or appears twice, content that is not UTF-8, a
    /// missing or wrong `end` trailer, bytes after it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut p = Parser { bytes, pos: 0 };
        p.literal(MAGIC.as_bytes(), "the header 'virtsnap-journal'")?;
        p.literal(b" ", "a space after the magic word")?;
        let version = p.word()?;
        if version != VERSION.as_bytes() {
            return Err(p.error_at(
                p.pos - version.len(),
                format!(
                    "unsupported version {:?} (this virtsnap reads version {VERSION})",
                    String::from_utf8_lossy(version)
                ),
            ));
        }
        p.literal(b" ", "a space after the version")?;
        let start = p.pos;
        let operation = p.line()?;
        let operation = std::str::from_utf8(operation)
            .ok()
            .filter(|o| valid_operation(o))
            .ok_or_else(|| p.error_at(start, "invalid operation name".to_owned()))?
            .to_owned();
        let mut journal = Self {
            operation,
            entries: Vec::new(),
        };
        loop {
            let start = p.pos;
            let keyword = p.word()?;
            match keyword {
                b"write" | b"remove" => {
                    p.literal(b" ", "a space after the record type")?;
                    let file = p.name()?;
                    if journal.entries.iter().any(|e| e.file() == file) {
                        return Err(p.error_at(start, format!("file {file:?} is listed twice")));
                    }
                    if keyword == b"write" {
                        p.literal(b" ", "a space before the content length")?;
                        let len = p.number()?;
                        p.literal(b"\n", "a newline after the content length")?;
                        let content_at = p.pos;
                        let content = p.take(len)?;
                        let content = String::from_utf8(content.to_vec()).map_err(|_| {
                            p.error_at(content_at, format!("content of {file:?} is not UTF-8"))
                        })?;
                        p.literal(b"\n", "a newline after the content")?;
                        journal.entries.push(Entry::Write { file, content });
                    } else {
                        p.literal(b"\n", "a newline after the file name")?;
                        journal.entries.push(Entry::Remove { file });
                    }
                }
                b"end" => {
                    p.literal(b" ", "a space after 'end'")?;
                    let count_at = p.pos;
                    let count = p.number()?;
                    p.literal(b"\n", "a newline after the record count")?;
                    if count != journal.entries.len() {
                        return Err(p.error_at(
                            count_at,
                            format!(
                                "the trailer counts {count} records, the journal has {}",
                                journal.entries.len()
                            ),
                        ));
                    }
                    if p.pos != bytes.len() {
                        return Err(p.error_at(p.pos, "bytes after the trailer".to_owned()));
                    }
                    return Ok(journal);
                }
                other => {
                    return Err(p.error_at(
                        start,
                        format!(
                            "unknown record {:?} (expected write, remove or end)",
                            String::from_utf8_lossy(other)
                        ),
                    ));
                }
            }
        }
    }

    /// Brings every listed file of `dir` to its target state: idempotent,
    /// so it may run again after a crash. With `crash_points`, a
    /// `step-N-done` crash point follows each of the first steps.
    ///
    /// # Errors
    /// The first write or removal that fails, with the file's path.
    pub(crate) fn apply(&self, dir: &Path, crash_points: bool) -> Result<(), (PathBuf, io::Error)> {
        for (i, entry) in self.entries.iter().enumerate() {
            let path = dir.join(entry.file());
            match entry {
                Entry::Write { file, content } => {
                    persist::replace_file(dir, file, content.as_bytes()).map_err(|e| (path, e))?;
                }
                Entry::Remove { file } => {
                    persist::remove_file(dir, file).map_err(|e| (path, e))?;
                }
            }
            if crash_points && let Some(label) = STEP_LABELS.get(i) {
                persist::crash_point(label);
            }
        }
        // Each file's content was fsynced before its rename; one fsync of
        // the directory makes every rename and removal durable.
        persist::sync_dir(dir).map_err(|e| (dir.to_path_buf(), e))
    }
}

/// Whether `op` can be the operation word of a header.
fn valid_operation(op: &str) -> bool {
    !op.is_empty() && !op.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A cursor over a journal's bytes.
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error_at(&self, offset: usize, message: String) -> ParseError {
        ParseError { offset, message }
    }

    fn literal(&mut self, expected: &[u8], what: &str) -> Result<(), ParseError> {
        if self.bytes[self.pos..].starts_with(expected) {
            self.pos += expected.len();
            Ok(())
        } else if self.pos + expected.len() > self.bytes.len() {
            Err(self.error_at(self.pos, format!("truncated: expected {what}")))
        } else {
            Err(self.error_at(self.pos, format!("expected {what}")))
        }
    }

    /// Bytes up to (excluding) the next space or newline.
    fn word(&mut self) -> Result<&'a [u8], ParseError> {
        let rest = &self.bytes[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b' ' || b == b'\n')
            .ok_or_else(|| self.error_at(self.pos, "truncated: expected a word".to_owned()))?;
        if len == 0 {
            return Err(self.error_at(self.pos, "expected a word".to_owned()));
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    /// Bytes up to the next newline, which is consumed.
    fn line(&mut self) -> Result<&'a [u8], ParseError> {
        let rest = &self.bytes[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.error_at(self.pos, "truncated: expected a line".to_owned()))?;
        self.pos += len + 1;
        Ok(&rest[..len])
    }

    /// A decimal length: ASCII digits, no sign, no leading zero.
    fn number(&mut self) -> Result<usize, ParseError> {
        let start = self.pos;
        let digits = self.bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.bytes[start..start + digits];
        if digits == 0 {
            return Err(self.error_at(start, "expected a decimal number".to_owned()));
        }
        if digits > 1 && text[0] == b'0' {
            return Err(self.error_at(start, "leading zero in a number".to_owned()));
        }
        let n = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
            .ok_or_else(|| self.error_at(start, "number too large".to_owned()))?;
        self.pos += digits;
        Ok(n)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ParseError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                self.error_at(
                    self.pos,
                    format!(
                        "truncated: {len} bytes announced, {} left",
                        self.bytes.len() - self.pos
                    ),
                )
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// `LEN NAME`: a snapshot file name of LEN bytes.
    fn name(&mut self) -> Result<String, ParseError> {
        let len = self.number()?;
        self.literal(b" ", "a space after the name length")?;
        let start = self.pos;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .ok()
            .filter(|n| layout::snapshot_name_from_file(n).is_some())
            .map(str::to_owned)
            .ok_or_else(|| {
                self.error_at(
                    start,
                    format!(
                        "{:?} is not a snapshot file name",
                        String::from_utf8_lossy(raw)
                    ),
                )
            })
    }
}

/// The directory and file name of a journal path.
fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let dir = path.parent();
    let name = path.file_name().and_then(|n| n.to_str());
    match (dir, name) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid journal path {}", path.display()),
        )),
    }
}

/// Why [`commit`] failed.
#[derive(Debug)]
pub(crate) struct CommitError {
    /// Whether the journal was written: if so, the operation will be
    /// finished by the next write open (the files may be mid-way now).
    pub(crate) journaled: bool,
    /// What failed (`writing`, `removing`).
    pub(crate) op: &'static str,
    /// The path.
    pub(crate) path: PathBuf,
    /// The cause.
    pub(crate) source: io::Error,
}

/// Performs `journal` on the owner directory `dir`: writes the journal to
/// `journal_path` (atomically and durably), applies it, removes it. Crash
/// points: `journal-written`, then `step-N-done` after each step.
///
/// # Errors
/// [`CommitError`], saying whether the journal was written.
pub(crate) fn commit(
    journal_path: &Path,
    dir: &Path,
    journal: &Journal,
) -> Result<(), CommitError> {
    let fail = |journaled, op, path: &Path| {
        let path = path.to_path_buf();
        move |source| CommitError {
            journaled,
            op,
            path,
            source,
        }
    };
    let (jdir, jname) = split(journal_path).map_err(fail(false, "writing", journal_path))?;
    persist::write_atomic(jdir, jname, &journal.encode()).map_err(fail(
        false,
        "writing",
        journal_path,
    ))?;
    persist::crash_point("journal-written");
    journal
        .apply(dir, true)
        .map_err(|(path, source)| CommitError {
            journaled: true,
            op: "writing",
            path,
            source,
        })?;
    persist::remove_durable(jdir, jname).map_err(fail(true, "removing", journal_path))?;
    Ok(())
}

/// What [`recover`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// A journal was applied and removed.
    Applied {
        /// Its operation.
        operation: String,
        /// How many files it listed.
        files: usize,
    },
    /// A journal that does not parse was removed.
    Unreadable {
        /// The journal's file name.
        file: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// Reads the journal at `path`: `None` when there is none.
///
/// # Errors
/// The journal cannot be read.
pub(crate) fn read(path: &Path) -> io::Result<Option<Result<Journal, ParseError>>> {
    let bytes = match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(meta) if meta.len() > MAX_JOURNAL_BYTES => {
            return Ok(Some(Err(ParseError {
                offset: 0,
                message: format!("larger than {MAX_JOURNAL_BYTES} bytes"),
            })));
        }
        Ok(_) => match fs::read(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => other?,
        },
    };
    Ok(Some(Journal::decode(&bytes)))
}

/// Finishes an interrupted operation of the owner whose directory is `dir`
/// and journal `path`: removes temp files a crashed journal write left,
/// then applies a leftover journal and removes it (or removes it when it
/// does not parse). The caller holds the owner's exclusive lock.
///
/// # Errors
/// What failed (`reading`, `writing`, `removing`, `cleaning`) and where.
pub(crate) fn recover(
    path: &Path,
    dir: &Path,
) -> Result<Option<Recovery>, (&'static str, PathBuf, io::Error)> {
    let (jdir, jname) = split(path).map_err(|e| ("reading", path.to_path_buf(), e))?;
    remove_stale_temps_of(jdir, jname).map_err(|e| ("cleaning", jdir.to_path_buf(), e))?;
    let recovery = match read(path).map_err(|e| ("reading", path.to_path_buf(), e))? {
        None => return Ok(None),
        Some(Ok(journal)) => {
            journal
                .apply(dir, false)
                .map_err(|(p, e)| ("writing", p, e))?;
            Recovery::Applied {
                operation: journal.operation,
                files: journal.entries.len(),
            }
        }
        Some(Err(e)) => Recovery::Unreadable {
            file: jname.to_owned(),
            reason: e.to_string(),
        },
    };
    persist::remove_durable(jdir, jname).map_err(|e| ("removing", path.to_path_buf(), e))?;
    Ok(Some(recovery))
}

/// Removes temp files of a crashed write of the side file at `path` (the
/// owner's intent, say), as [`recover`] does for the journal.
///
/// # Errors
/// The side directory cannot be listed or a temp removed.
pub(crate) fn remove_stale_side_temps(path: &Path) -> io::Result<()> {
    let (dir, name) = split(path)?;
    remove_stale_temps_of(dir, name)
}

/// Removes temp files of a crashed write of the journal `jname` in `jdir`
/// (shared with other owners' side files, so only this journal's temps:
/// `.{first 64 chars of jname}.tmp-PID-N`, see [`persist::write_atomic`]).
/// When the journal name is longer than the 64 characters a temp name
/// keeps, another owner's journal temp could share the prefix: then only
/// temps of processes that are gone (no `/proc/PID`) are removed.
fn remove_stale_temps_of(jdir: &Path, jname: &str) -> io::Result<()> {
    let short: String = jname.chars().take(64).collect();
    let ambiguous = short.len() < jname.len();
    let prefix = format!(".{short}.tmp-");
    let mut removed = false;
    let entries = match fs::read_dir(jdir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if ambiguous {
            let pid = rest.split('-').next().unwrap_or_default();
            if pid.is_empty() || Path::new("/proc").join(pid).exists() {
                continue;
            }
        }
        if entry.file_type()?.is_dir() {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if removed {
        persist::sync_dir(jdir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Journal {
        let mut j = Journal::new("delete");
        j.write(
            "b.xml".into(),
            "<domainsnapshot>b</domainsnapshot>\n".into(),
        );
        j.write(
            "odd name\nwith newline.xml".into(),
            "content\nwith write 3 x.xml 9\nlines and end 0\n".into(),
        );
        j.write("empty.xml".into(), String::new());
        j.remove("a.xml".into());
        j
    }

    #[test]
    fn round_trip() {
        for j in [Journal::new("create"), sample()] {
            let bytes = j.encode();
            assert_eq!(Journal::decode(&bytes), Ok(j));
        }
    }

    #[test]
    fn encoding_is_the_documented_format() {
        let mut j = Journal::new("set-current");
        j.write("a.xml".into(), "xy".into());
        j.remove("b.xml".into());
        assert_eq!(
            j.encode(),
            b"virtsnap-journal 1 set-current\nwrite 5 a.xml 2\nxy\nremove 5 b.xml\nend 2\n"
        );
    }

    #[test]
    fn later_entries_replace_earlier_ones_for_a_file() {
        let mut j = Journal::new("delete");
        j.write("a.xml".into(), "1".into());
        j.write("b.xml".into(), "2".into());
        j.write("a.xml".into(), "3".into());
        j.remove("b.xml".into());
        assert_eq!(
            j.entries(),
            [
                Entry::Write {
                    file: "a.xml".into(),
                    content: "3".into()
                },
                Entry::Remove {
                    file: "b.xml".into()
                },
            ]
        );
        assert_eq!(j.operation(), "delete");
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                Journal::decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    fn err(bytes: &[u8]) -> String {
        match Journal::decode(bytes) {
            Ok(j) => panic!("accepted {:?}: {j:?}", String::from_utf8_lossy(bytes)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn strict_parsing() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "truncated"),
            (b"virtsnap-journal 2 create\nend 0\n", "unsupported version"),
            (b"other-journal 1 create\nend 0\n", "header"),
            (b"virtsnap-journal 1 \nend 0\n", "invalid operation"),
            (
                b"virtsnap-journal 1 two words\nend 0\n",
                "invalid operation",
            ),
            (b"virtsnap-journal 1 create\nend 1\n", "trailer counts 1"),
            (b"virtsnap-journal 1 create\nend 0\nx", "after the trailer"),
            (b"virtsnap-journal 1 create\nend 00\n", "leading zero"),
            (b"virtsnap-journal 1 create\nend -0\n", "decimal number"),
            (
                b"virtsnap-journal 1 create\nrename 5 a.xml\nend 1\n",
                "unknown record",
            ),
            (
                b"virtsnap-journal 1 create\nremove 5 a.xml \nend 1\n",
                "expected a newline",
            ),
            (
                b"virtsnap-journal 1 create\nremove 5 a.txt\nend 1\n",
                "not a snapshot file",
            ),
            (
                b"virtsnap-journal 1 create\nremove 8 ../a.xml\nend 1\n",
                "not a snapshot file",
            ),
            (
                b"virtsnap-journal 1 create\nremove 6 .a.xml\nend 1\n",
                "not a snapshot file",
            ),
            (
                b"virtsnap-journal 1 create\nremove 5 a.xml\nremove 5 a.xml\nend 2\n",
                "listed twice",
            ),
            (
                b"virtsnap-journal 1 create\nwrite 5 a.xml 3\nab\nend 1\n",
                "after the content",
            ),
            (
                b"virtsnap-journal 1 create\nwrite 5 a.xml 99\nab\nend 1\n",
                "truncated: 99 bytes",
            ),
            (
                b"virtsnap-journal 1 create\nwrite 5 a.xml 1\n\xff\nend 1\n",
                "not UTF-8",
            ),
            (
                b"virtsnap-journal 1 create\nwrite 5 a.xml 99999999999999999999999\n",
                "too large",
            ),
        ];
        for (bytes, expected) in cases {
            let e = err(bytes);
            assert!(
                e.contains(expected),
                "{:?}: {e:?} lacks {expected:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn apply_is_idempotent_and_recover_clears_the_journal() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("vm");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("a.xml"), "old a").expect("write a");
        fs::write(dir.join("b.xml"), "old b").expect("write b");
        let mut j = Journal::new("delete");
        j.write("b.xml".into(), "new b".into());
        j.write("c.xml".into(), "new c".into());
        j.remove("a.xml".into());
        j.apply(&dir, false).expect("apply");
        j.apply(&dir, false).expect("apply again");
        let path = tmp.path().join(".vm.journal");
        persist::write_atomic(tmp.path(), ".vm.journal", &j.encode()).expect("journal");
        fs::write(tmp.path().join("..vm.journal.tmp-1-1"), "stale").ok();
        let recovered = recover(&path, &dir).expect("recover");
        assert_eq!(
            recovered,
            Some(Recovery::Applied {
                operation: "delete".into(),
                files: 3
            })
        );
        assert!(!path.exists());
        assert!(!dir.join("a.xml").exists());
        assert_eq!(fs::read_to_string(dir.join("b.xml")).expect("b"), "new b");
        assert_eq!(fs::read_to_string(dir.join("c.xml")).expect("c"), "new c");
        assert_eq!(recover(&path, &dir).expect("nothing left"), None);
        let left: Vec<_> = fs::read_dir(tmp.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["vm"]);
    }

    #[test]
    fn unreadable_journal_is_removed_and_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(".vm.journal");
        fs::write(&path, "garbage").expect("write");
        let recovered = recover(&path, tmp.path()).expect("recover");
        assert!(
            matches!(&recovered, Some(Recovery::Unreadable { file, .. }) if file == ".vm.journal"),
            "{recovered:?}"
        );
        assert!(!path.exists());
    }
}
