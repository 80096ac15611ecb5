//! RBD's incremental diff format, version 1: the files `rbd export-diff`
//! writes and `rbd import-diff` reads (Ceph's `doc/dev/rbd-diff.rst`).
//! Files this module writes are applied by `rbd import-diff`, and files
//! `rbd export-diff` wrote are applied by [`import_diff`].
//!
//! ```text
//! "rbd diff v1\n"
//! metadata records, each once at most, before any data record:
//!   'f' le32 len, name   the snapshot the diff starts from (absent: from nothing)
//!   't' le32 len, name   the snapshot the diff ends at (created by the import)
//!   's' le64 size        the image size at the end snapshot
//! data records:
//!   'w' le64 offset, le64 length, length bytes   data that changed
//!   'z' le64 offset, le64 length                  an extent that reads as zeros
//! 'e'                                             the end
//! ```
//!
//! Like the rbd CLI, [`export_diff`] writes an extent whose data is all
//! zeros as a 'z' record, and [`import_diff`] zeroes 'z' extents with
//! `rbd_write_zeroes` (a discard may leave unaligned parts as they were).
//!
//! Unlike the CLI, [`import_diff`] checks the whole file before changing
//! the image: a malformed or truncated file (`EINVAL`, naming the byte
//! offset), a missing start snapshot (`ENOENT`) or an existing end
//! snapshot (`EEXIST`) leave it untouched. [`import_diff_stream`] reads
//! from a pipe instead, and can only check what comes before the data.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::librbd::{DiffExtent, Image, RbdError, errno};

/// The first bytes of a version 1 diff.
pub const BANNER: &[u8; 12] = b"rbd diff v1\n";

/// The most data one 'w' record written by [`export_diff`] carries, and
/// the most read or written at once: 4 MiB, RBD's default object size.
pub const CHUNK: usize = 4 << 20;

/// Longest snapshot name accepted in a file (the rbd CLI's limit).
const MAX_NAME: u32 = 4096;

const TAG_FROM: u8 = b'f';
const TAG_TO: u8 = b't';
const TAG_SIZE: u8 = b's';
const TAG_WRITE: u8 = b'w';
const TAG_ZERO: u8 = b'z';
const TAG_END: u8 = b'e';

/// The metadata of a diff file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffHeader {
    /// The snapshot the diff starts from (`None`: the whole image).
    pub from: Option<String>,
    /// The snapshot the diff ends at, created by an import.
    pub to: Option<String>,
    /// The image size at the end snapshot.
    pub size: Option<u64>,
}

/// A checked diff file ([`inspect`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffSummary {
    /// Its metadata.
    pub header: DiffHeader,
    /// Data records ('w' and 'z').
    pub records: u64,
    /// Bytes of data ('w').
    pub data_bytes: u64,
    /// Bytes zeroed ('z').
    pub zero_bytes: u64,
    /// Length of the diff in the file, end record included.
    pub file_bytes: u64,
}

/// What [`export_diff`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Bytes of changed data carried ('w' records).
    pub changed_bytes: u64,
    /// Bytes of extents that read as zeros ('z' records).
    pub zero_bytes: u64,
    /// Data records written ('w' and 'z').
    pub records: u64,
    /// The image size at the end snapshot.
    pub size: u64,
    /// Bytes written to the output.
    pub file_bytes: u64,
}

/// What [`import_diff`] applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// The diff's start snapshot, which the image holds.
    pub from: Option<String>,
    /// The diff's end snapshot, created on the image (`None`: the file has
    /// none, and no snapshot was made).
    pub to: Option<String>,
    /// The image size after the import.
    pub size: u64,
    /// Bytes written ('w' records).
    pub written_bytes: u64,
    /// Bytes zeroed ('z' records, and all-zero parts of 'w' records).
    pub zeroed_bytes: u64,
    /// Data records applied.
    pub records: u64,
}

// ---------------------------------------------------------------------------
// Export

/// Writes the diff between snapshot `from_snap` (or nothing: every
/// allocated extent) and snapshot `to_snap` of `image` to `out`, calling
/// `progress(done, total)` with bytes of image extents processed.
///
/// `image` may be open at `to_snap` (then it is read directly) or at
/// anything else (then a read-only handle at `to_snap` is opened). For a
/// clone, a diff from nothing includes the parent's data.
///
/// # Errors
/// `ENOENT` if either snapshot is missing, `EINVAL` if `from_snap` is not
/// older than `to_snap`, librbd's errors reading, and the output's write
/// errors (with their errno). The output then holds part of a diff.
pub fn export_diff<W: Write + ?Sized>(
    image: &Image,
    to_snap: &str,
    from_snap: Option<&str>,
    out: &mut W,
    mut progress: impl FnMut(u64, u64),
) -> Result<DiffStats, RbdError> {
    let reopened;
    let at = if image.snap() == Some(to_snap) {
        image
    } else {
        reopened = image.open_read_only_at(Some(to_snap))?;
        &reopened
    };
    let op = format!("export-diff {}", at.spec());
    if let Some(from) = from_snap
        && !at.snap_exists(from)?
    {
        return Err(RbdError::new(
            op,
            errno::ENOENT,
            format!("the start snapshot '{from}' does not exist"),
        ));
    }
    let size = at.size()?;
    let extents = at.diff_extents(from_snap, false)?;
    let total: u64 = extents.iter().map(|e| e.len).sum();

    let mut w = RecordWriter::new(out, &op);
    w.bytes(BANNER)?;
    if let Some(from) = from_snap {
        w.name(TAG_FROM, from)?;
    }
    w.name(TAG_TO, to_snap)?;
    w.tag(TAG_SIZE)?;
    w.u64(size)?;

    let mut done = 0u64;
    let mut buf = Vec::new();
    progress(0, total);
    for DiffExtent {
        offset,
        len,
        exists,
    } in extents
    {
        if !exists {
            w.zero(offset, len)?;
            done += len;
            progress(done, total);
            continue;
        }
        let mut at_offset = offset;
        let end = offset + len;
        while at_offset < end {
            let want = usize::try_from(end - at_offset).unwrap_or(CHUNK).min(CHUNK);
            buf.resize(want, 0);
            let got = at.read(at_offset, &mut buf)?;
            if got != want {
                return Err(RbdError::new(
                    op,
                    errno::EIO,
                    format!("short read at byte {at_offset}: {got} of {want} bytes"),
                ));
            }
            let n = u64::try_from(want).unwrap_or(u64::MAX);
            if buf.iter().all(|b| *b == 0) {
                w.zero(at_offset, n)?;
            } else {
                w.data(at_offset, &buf)?;
            }
            at_offset += n;
            done += n;
            progress(done, total);
        }
    }
    w.flush_zero()?;
    w.tag(TAG_END)?;
    Ok(DiffStats {
        changed_bytes: w.data_bytes,
        zero_bytes: w.zero_bytes,
        records: w.records,
        size,
        file_bytes: w.written,
    })
}

/// Writes records, merging adjacent 'z' extents into one record.
struct RecordWriter<'a, W: Write + ?Sized> {
    out: &'a mut W,
    op: &'a str,
    pending_zero: Option<(u64, u64)>,
    written: u64,
    data_bytes: u64,
    zero_bytes: u64,
    records: u64,
}

impl<'a, W: Write + ?Sized> RecordWriter<'a, W> {
    fn new(out: &'a mut W, op: &'a str) -> Self {
        Self {
            out,
            op,
            pending_zero: None,
            written: 0,
            data_bytes: 0,
            zero_bytes: 0,
            records: 0,
        }
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), RbdError> {
        self.out
            .write_all(bytes)
            .map_err(|e| RbdError::from_io(format!("{}: writing the diff", self.op), &e))?;
        self.written += u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        Ok(())
    }

    fn tag(&mut self, tag: u8) -> Result<(), RbdError> {
        self.bytes(&[tag])
    }

    fn u64(&mut self, value: u64) -> Result<(), RbdError> {
        self.bytes(&value.to_le_bytes())
    }

    fn name(&mut self, tag: u8, name: &str) -> Result<(), RbdError> {
        let len = u32::try_from(name.len())
            .ok()
            .filter(|len| *len <= MAX_NAME)
            .ok_or_else(|| {
                RbdError::new(
                    self.op,
                    errno::EINVAL,
                    format!("snapshot name of {} bytes is too long", name.len()),
                )
            })?;
        self.tag(tag)?;
        self.bytes(&len.to_le_bytes())?;
        self.bytes(name.as_bytes())
    }

    fn zero(&mut self, offset: u64, len: u64) -> Result<(), RbdError> {
        if len == 0 {
            return Ok(());
        }
        match &mut self.pending_zero {
            Some((start, pending)) if *start + *pending == offset => *pending += len,
            _ => {
                self.flush_zero()?;
                self.pending_zero = Some((offset, len));
            }
        }
        Ok(())
    }

    fn flush_zero(&mut self) -> Result<(), RbdError> {
        if let Some((offset, len)) = self.pending_zero.take() {
            self.tag(TAG_ZERO)?;
            self.u64(offset)?;
            self.u64(len)?;
            self.zero_bytes += len;
            self.records += 1;
        }
        Ok(())
    }

    fn data(&mut self, offset: u64, data: &[u8]) -> Result<(), RbdError> {
        self.flush_zero()?;
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        self.tag(TAG_WRITE)?;
        self.u64(offset)?;
        self.u64(len)?;
        self.bytes(data)?;
        self.data_bytes += len;
        self.records += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Parsing

/// One record's header ('w' data follows it in the input).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    From(String),
    To(String),
    Size(u64),
    Write { offset: u64, len: u64 },
    Zero { offset: u64, len: u64 },
    End,
}

/// Reads records, knowing the byte offset (from the diff's start) of
/// everything it reads, for error messages.
struct Parser<'a, R: ?Sized> {
    input: &'a mut R,
    pos: u64,
    op: String,
}

impl<'a, R: Read + ?Sized> Parser<'a, R> {
    fn new(input: &'a mut R, op: String) -> Self {
        Self { input, pos: 0, op }
    }

    fn malformed(&self, at: u64, what: &str) -> RbdError {
        RbdError::new(
            self.op.clone(),
            errno::EINVAL,
            format!("malformed diff at byte {at}: {what}"),
        )
    }

    /// Fills `buf`; the end of the input is a truncated file.
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), RbdError> {
        let at = self.pos;
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(self.malformed(
                        at,
                        &format!(
                            "truncated: the file ends inside {what} ({filled} of {} bytes)",
                            buf.len()
                        ),
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(RbdError::from_io(
                        format!(
                            "{}: reading the diff at byte {}",
                            self.op,
                            at + filled as u64
                        ),
                        &e,
                    ));
                }
            }
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u64(&mut self, what: &str) -> Result<u64, RbdError> {
        let mut b = [0u8; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    fn banner(&mut self) -> Result<(), RbdError> {
        let mut b = [0u8; BANNER.len()];
        self.exact(&mut b, "the \"rbd diff v1\" banner")?;
        if &b != BANNER {
            let shown = String::from_utf8_lossy(&b).into_owned();
            let hint = if b.starts_with(b"rbd diff v2") {
                " (a version 2 diff, from rbd export --export-format 2, is not supported)"
            } else {
                ""
            };
            return Err(self.malformed(0, &format!("not an RBD diff: starts {shown:?}{hint}")));
        }
        Ok(())
    }

    fn name(&mut self, at: u64, tag: u8) -> Result<String, RbdError> {
        let mut b = [0u8; 4];
        self.exact(&mut b, "a snapshot name length")?;
        let len = u32::from_le_bytes(b);
        if len == 0 || len > MAX_NAME {
            return Err(self.malformed(
                at,
                &format!("'{}' record with a name of {len} bytes", char::from(tag)),
            ));
        }
        let mut name = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.exact(&mut name, "a snapshot name")?;
        String::from_utf8(name).map_err(|_| {
            self.malformed(
                at,
                &format!(
                    "'{}' record: the snapshot name is not UTF-8",
                    char::from(tag)
                ),
            )
        })
    }

    /// The next record and the byte offset of its tag.
    fn next(&mut self) -> Result<(u64, Record), RbdError> {
        let at = self.pos;
        let mut tag = [0u8; 1];
        self.exact(&mut tag, "a record tag (the end record 'e' is missing)")?;
        let record = match tag[0] {
            TAG_FROM => Record::From(self.name(at, TAG_FROM)?),
            TAG_TO => Record::To(self.name(at, TAG_TO)?),
            TAG_SIZE => Record::Size(self.u64("an 's' record")?),
            TAG_WRITE | TAG_ZERO => {
                let offset = self.u64("a data record's offset")?;
                let len = self.u64("a data record's length")?;
                if tag[0] == TAG_WRITE {
                    Record::Write { offset, len }
                } else {
                    Record::Zero { offset, len }
                }
            }
            TAG_END => Record::End,
            other => {
                return Err(self.malformed(at, &format!("unknown record tag 0x{other:02x}")));
            }
        };
        Ok((at, record))
    }

    /// Reads the next `buf.len()` bytes of a 'w' record's data.
    fn data(&mut self, buf: &mut [u8]) -> Result<(), RbdError> {
        self.exact(buf, "a 'w' record's data")
    }
}

/// The order rules of a diff: metadata once each, before the data; data
/// inside the image size; nothing after the end record.
#[derive(Default)]
struct Rules {
    header: DiffHeader,
    in_data: bool,
}

impl Rules {
    fn check<R: Read + ?Sized>(
        &mut self,
        parser: &Parser<'_, R>,
        at: u64,
        record: &Record,
    ) -> Result<(), RbdError> {
        let meta = |this: &Self, tag: char, dup: bool| {
            if this.in_data {
                Err(parser.malformed(at, &format!("'{tag}' record after the data records")))
            } else if dup {
                Err(parser.malformed(at, &format!("second '{tag}' record")))
            } else {
                Ok(())
            }
        };
        match record {
            Record::From(name) => {
                meta(self, 'f', self.header.from.is_some())?;
                self.header.from = Some(name.clone());
            }
            Record::To(name) => {
                meta(self, 't', self.header.to.is_some())?;
                self.header.to = Some(name.clone());
            }
            Record::Size(size) => {
                meta(self, 's', self.header.size.is_some())?;
                self.header.size = Some(*size);
            }
            Record::Write { offset, len } | Record::Zero { offset, len } => {
                self.in_data = true;
                let Some(end) = offset.checked_add(*len) else {
                    return Err(parser.malformed(at, &format!("extent {offset}+{len} overflows")));
                };
                if let Some(size) = self.header.size
                    && end > size
                {
                    return Err(parser.malformed(
                        at,
                        &format!("extent {offset}+{len} ends past the image size {size}"),
                    ));
                }
            }
            Record::End => {}
        }
        Ok(())
    }
}

/// Reads the banner and the metadata records of a diff, stopping at the
/// first data or end record (which it consumes in part: use it to look at
/// a file, not before applying the rest).
///
/// # Errors
/// `EINVAL` for anything but a version 1 diff, naming the byte offset;
/// the input's read errors.
pub fn read_header<R: Read + ?Sized>(input: &mut R) -> Result<DiffHeader, RbdError> {
    let mut parser = Parser::new(input, "rbd diff".to_string());
    parser.banner()?;
    let mut rules = Rules::default();
    loop {
        let (at, record) = parser.next()?;
        match record {
            Record::Write { .. } | Record::Zero { .. } | Record::End => return Ok(rules.header),
            _ => rules.check(&parser, at, &record)?,
        }
    }
}

/// Checks a whole diff from the input's position: the records, their
/// order, and that every 'w' record's data is there, seeking over it.
/// Leaves the input after the end record.
///
/// # Errors
/// `EINVAL` naming the byte offset of what is wrong; the input's errors.
pub fn inspect<R: Read + Seek + ?Sized>(input: &mut R) -> Result<DiffSummary, RbdError> {
    scan(input, "rbd diff".to_string())
}

fn scan<R: Read + Seek + ?Sized>(input: &mut R, op: String) -> Result<DiffSummary, RbdError> {
    let io_err =
        |op: &str, e: &io::Error| RbdError::from_io(format!("{op}: seeking in the diff"), e);
    let start = input.stream_position().map_err(|e| io_err(&op, &e))?;
    let end = input.seek(SeekFrom::End(0)).map_err(|e| io_err(&op, &e))?;
    input
        .seek(SeekFrom::Start(start))
        .map_err(|e| io_err(&op, &e))?;
    let file_len = end.saturating_sub(start);

    let mut parser = Parser::new(input, op);
    parser.banner()?;
    let mut rules = Rules::default();
    let mut summary = DiffSummary::default();
    loop {
        let (at, record) = parser.next()?;
        rules.check(&parser, at, &record)?;
        match record {
            Record::Write { len, .. } => {
                let data_end = parser.pos.checked_add(len).filter(|e| *e <= file_len);
                let Some(data_end) = data_end else {
                    return Err(parser.malformed(
                        at,
                        &format!(
                            "truncated: the 'w' record's {len} bytes of data run past the end \
                             of the file ({file_len} bytes)"
                        ),
                    ));
                };
                let target = start + data_end;
                parser
                    .input
                    .seek(SeekFrom::Start(target))
                    .map_err(|e| io_err(&parser.op, &e))?;
                parser.pos = data_end;
                summary.records += 1;
                summary.data_bytes += len;
            }
            Record::Zero { len, .. } => {
                summary.records += 1;
                summary.zero_bytes += len;
            }
            Record::End => break,
            Record::From(_) | Record::To(_) | Record::Size(_) => {}
        }
    }
    if parser.pos != file_len {
        return Err(parser.malformed(
            parser.pos,
            &format!("{} bytes after the end record", file_len - parser.pos),
        ));
    }
    summary.header = rules.header;
    summary.file_bytes = parser.pos;
    Ok(summary)
}

// ---------------------------------------------------------------------------
// Import

/// Applies the diff read from `input` (from its position) to the head of
/// `image` (open read-write), then takes the diff's end snapshot, as
/// `rbd import-diff` does; calls `progress(done, total)` with bytes of the
/// file consumed.
///
/// The whole file is checked first (see [`inspect`]), then the image: it
/// must hold the start snapshot and must not hold the end snapshot. Only
/// then is anything changed: the image is resized to the diff's size, the
/// 'w' data written, the 'z' extents zeroed, the writes flushed and the
/// end snapshot taken. The image's head should equal the start snapshot
/// (nothing checks it, as with the CLI).
///
/// # Errors
/// `EINVAL` (malformed or truncated file, naming the byte offset),
/// `ENOENT` (the image lacks the start snapshot), `EEXIST` (it already
/// has the end snapshot): the image is unchanged. librbd's errors while
/// applying (the image then holds part of the diff, and no end snapshot).
pub fn import_diff<R: Read + Seek + ?Sized>(
    image: &mut Image,
    input: &mut R,
    progress: impl FnMut(u64, u64),
) -> Result<ImportStats, RbdError> {
    let op = format!("import-diff into {}", image.spec());
    let start = input
        .stream_position()
        .map_err(|e| RbdError::from_io(format!("{op}: seeking in the diff"), &e))?;
    let summary = scan(input, op.clone())?;
    input
        .seek(SeekFrom::Start(start))
        .map_err(|e| RbdError::from_io(format!("{op}: seeking in the diff"), &e))?;
    apply(image, input, summary.file_bytes, progress, &op)
}

/// [`import_diff`] for an input that cannot seek (a pipe): the file is
/// checked as it is read, so the checks of the snapshots and everything
/// before the first data record still come before any change, but a
/// malformed or truncated file is found only when reached, with the
/// image holding part of the diff (and no end snapshot). `progress`
/// gets a total of 0.
///
/// # Errors
/// As [`import_diff`].
pub fn import_diff_stream<R: Read + ?Sized>(
    image: &mut Image,
    input: &mut R,
    progress: impl FnMut(u64, u64),
) -> Result<ImportStats, RbdError> {
    let op = format!("import-diff into {}", image.spec());
    apply(image, input, 0, progress, &op)
}

fn apply<R: Read + ?Sized>(
    image: &mut Image,
    input: &mut R,
    total: u64,
    mut progress: impl FnMut(u64, u64),
    op: &str,
) -> Result<ImportStats, RbdError> {
    let mut parser = Parser::new(input, op.to_string());
    parser.banner()?;
    let mut rules = Rules::default();
    let mut stats = ImportStats::default();
    let mut prepared = false;
    let mut buf = Vec::new();
    progress(parser.pos, total);
    loop {
        let (at, record) = parser.next()?;
        rules.check(&parser, at, &record)?;
        let is_data = matches!(
            record,
            Record::Write { .. } | Record::Zero { .. } | Record::End
        );
        if is_data && !prepared {
            stats.size = prepare(image, &rules.header, op)?;
            prepared = true;
        }
        match record {
            Record::Write { offset, len } => {
                let mut done = 0u64;
                while done < len {
                    let n = usize::try_from(len - done).unwrap_or(CHUNK).min(CHUNK);
                    buf.resize(n, 0);
                    parser.data(&mut buf)?;
                    let n64 = u64::try_from(n).unwrap_or(u64::MAX);
                    if buf.iter().all(|b| *b == 0) {
                        image.write_zeroes(offset + done, n64)?;
                        stats.zeroed_bytes += n64;
                    } else {
                        image.write(offset + done, &buf)?;
                        stats.written_bytes += n64;
                    }
                    done += n64;
                    progress(parser.pos, total);
                }
                stats.records += 1;
            }
            Record::Zero { offset, len } => {
                image.write_zeroes(offset, len)?;
                stats.zeroed_bytes += len;
                stats.records += 1;
                progress(parser.pos, total);
            }
            Record::End => break,
            Record::From(_) | Record::To(_) | Record::Size(_) => {}
        }
    }
    image.flush()?;
    let header = rules.header;
    if let Some(to) = &header.to {
        image.snap_create(to)?;
    }
    progress(parser.pos, total);
    stats.from = header.from;
    stats.to = header.to;
    Ok(stats)
}

/// Checks the snapshots the header names against the image and resizes
/// it to the diff's size; returns the size.
fn prepare(image: &Image, header: &DiffHeader, op: &str) -> Result<u64, RbdError> {
    if let Some(from) = &header.from
        && !image.snap_exists(from)?
    {
        return Err(RbdError::new(
            op,
            errno::ENOENT,
            format!("the diff starts from snapshot '{from}', which the image does not have"),
        ));
    }
    if let Some(to) = &header.to
        && image.snap_exists(to)?
    {
        return Err(RbdError::new(
            op,
            errno::EEXIST,
            format!("the diff ends at snapshot '{to}', which the image already has"),
        ));
    }
    let current = image.size()?;
    match header.size {
        Some(size) if size != current => {
            image.resize(size)?;
            Ok(size)
        }
        _ => Ok(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A diff built by hand: f, t, s, one 'w', one 'z', e.
    fn sample() -> Vec<u8> {
        let mut v = BANNER.to_vec();
        v.push(b'f');
        v.extend(2u32.to_le_bytes());
        v.extend(b"s1");
        v.push(b't');
        v.extend(2u32.to_le_bytes());
        v.extend(b"s2");
        v.push(b's');
        v.extend((1u64 << 20).to_le_bytes());
        v.push(b'w');
        v.extend(4096u64.to_le_bytes());
        v.extend(3u64.to_le_bytes());
        v.extend(b"abc");
        v.push(b'z');
        v.extend(8192u64.to_le_bytes());
        v.extend(4096u64.to_le_bytes());
        v.push(b'e');
        v
    }

    #[test]
    fn a_diff_is_inspected() {
        let diff = sample();
        let summary = inspect(&mut Cursor::new(&diff)).expect("valid");
        assert_eq!(
            summary.header,
            DiffHeader {
                from: Some("s1".into()),
                to: Some("s2".into()),
                size: Some(1 << 20)
            }
        );
        assert_eq!(
            (summary.records, summary.data_bytes, summary.zero_bytes),
            (2, 3, 4096)
        );
        assert_eq!(summary.file_bytes, diff.len() as u64);
        assert_eq!(
            read_header(&mut Cursor::new(&diff)).expect("header"),
            summary.header
        );
    }

    #[test]
    fn every_truncation_is_refused_with_its_offset() {
        let diff = sample();
        for cut in 0..diff.len() {
            let err = inspect(&mut Cursor::new(&diff[..cut])).expect_err("truncated");
            assert_eq!(err.errno(), errno::EINVAL, "cut at {cut}: {err}");
            assert!(err.message().contains("malformed diff at byte"), "{err}");
        }
    }

    #[test]
    fn malformed_files_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"rbd diff v2\n".to_vec(), "version 2"),
            (b"hello world!".to_vec(), "not an RBD diff"),
            (
                [BANNER.as_slice(), b"x"].concat(),
                "unknown record tag 0x78",
            ),
            (
                [BANNER.as_slice(), b"f\0\0\0\0e"].concat(),
                "name of 0 bytes",
            ),
            (
                [
                    BANNER.as_slice(),
                    b"z",
                    &0u64.to_le_bytes(),
                    &1u64.to_le_bytes(),
                    b"t\x01\0\0\0ae",
                ]
                .concat(),
                "after the data records",
            ),
            (
                [
                    BANNER.as_slice(),
                    b"s",
                    &10u64.to_le_bytes(),
                    b"z",
                    &8u64.to_le_bytes(),
                    &4u64.to_le_bytes(),
                    b"e",
                ]
                .concat(),
                "past the image size",
            ),
            (
                [
                    BANNER.as_slice(),
                    b"z",
                    &u64::MAX.to_le_bytes(),
                    &1u64.to_le_bytes(),
                    b"e",
                ]
                .concat(),
                "overflows",
            ),
            (
                [sample(), b"junk".to_vec()].concat(),
                "4 bytes after the end record",
            ),
            (
                [
                    BANNER.as_slice(),
                    b"w",
                    &0u64.to_le_bytes(),
                    &(1u64 << 62).to_le_bytes(),
                    b"e",
                ]
                .concat(),
                "run past the end",
            ),
        ];
        for (diff, expect) in cases {
            let err = inspect(&mut Cursor::new(&diff)).expect_err(expect);
            assert_eq!(err.errno(), errno::EINVAL, "{err}");
            assert!(err.to_string().contains(expect), "{expect:?} not in: {err}");
        }
    }

    #[test]
    fn the_writer_merges_adjacent_zero_extents() {
        let mut out = Vec::new();
        let mut w = RecordWriter::new(&mut out, "t");
        w.zero(0, 10).expect("z");
        w.zero(10, 5).expect("z");
        w.data(15, b"x").expect("w");
        w.zero(20, 1).expect("z");
        w.flush_zero().expect("flush");
        assert_eq!((w.records, w.zero_bytes, w.data_bytes), (3, 16, 1));
        let mut expect = vec![b'z'];
        expect.extend(0u64.to_le_bytes());
        expect.extend(15u64.to_le_bytes());
        expect.push(b'w');
        expect.extend(15u64.to_le_bytes());
        expect.extend(1u64.to_le_bytes());
        expect.push(b'x');
        expect.push(b'z');
        expect.extend(20u64.to_le_bytes());
        expect.extend(1u64.to_le_bytes());
        assert_eq!(out, expect);
    }
}
