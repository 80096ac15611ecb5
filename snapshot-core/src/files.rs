//! Whole-file copies and content hashes, for any driver that copies
//! images: a reflink when the filesystem shares blocks (btrfs, XFS), else
//! a sparse copy that walks the source's data extents (`SEEK_DATA` /
//! `SEEK_HOLE`) and moves them with `copy_file_range` (plain reads and
//! writes where the kernel refuses), so holes stay holes; the sha256 of a
//! file; and the crash-safe steps around a copy ([`TempFile`]: a
//! temporary name beside the target, `fsync`, a rename that never
//! replaces unless asked, [`sync_parent`]).
//!
//! Everything here blocks: async callers run it on
//! `tokio::task::spawn_blocking`. Progress is reported through a
//! callback told the bytes done and the total; an error it returns stops
//! the work with that error (how a caller cancels).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{RenameFlags, SeekFrom};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

/// Bytes moved per `copy_file_range` call, and between progress reports.
const CHUNK: usize = 8 << 20;
/// The buffer of the read/write fallback and of the hasher.
const BUF: usize = 1 << 20;
/// The longest file name most filesystems take.
const NAME_MAX: usize = 255;

/// What a temporary file's name ends with (`.NAME.virtsnap-tmp`).
pub const TEMP_SUFFIX: &str = ".virtsnap-tmp";

/// A progress callback that ignores the reports.
///
/// # Errors
/// Never.
pub fn no_progress(_done: u64, _total: u64) -> io::Result<()> {
    Ok(())
}

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// The content's length in bytes.
    pub len: u64,
    /// The destination shares the source's blocks (a reflink).
    pub reflinked: bool,
    /// Bytes of data actually moved (the holes skipped are not counted;
    /// the whole length for a reflink).
    pub data: u64,
}

/// The length of `file`'s content: its size, or a block device's
/// capacity.
///
/// # Errors
/// The file cannot be examined.
pub fn content_len(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        Ok(rustix::fs::seek(file, SeekFrom::End(0))?)
    } else {
        Ok(meta.len())
    }
}

/// Makes `dst` share `src`'s blocks (`FICLONE`): instant and taking no
/// space until either is written.
///
/// # Errors
/// The filesystem cannot share blocks (`EOPNOTSUPP`, `EXDEV` across
/// filesystems, `EINVAL`), or the files are not regular files.
pub fn reflink(src: &File, dst: &File) -> io::Result<()> {
    Ok(rustix::fs::ioctl_ficlone(dst, src)?)
}

/// Copies `src`'s content into `dst`, which must be empty (a new file):
/// a reflink where the filesystem can, else [`copy_sparse`]. `progress`
/// is told the bytes done of the content's length, and ends with
/// `(len, len)`.
///
/// # Errors
/// A read, write or progress error; `dst` then holds part of the content.
pub fn copy_file(
    src: &File,
    dst: &File,
    progress: &mut dyn FnMut(u64, u64) -> io::Result<()>,
) -> io::Result<Copied> {
    let len = content_len(src)?;
    progress(0, len)?;
    if reflink(src, dst).is_ok() && dst.metadata()?.len() == len {
        progress(len, len)?;
        return Ok(Copied {
            len,
            reflinked: true,
            data: len,
        });
    }
    // A refused clone leaves `dst` as it was; be sure it is empty.
    dst.set_len(0)?;
    let data = copy_sparse(src, dst, progress)?;
    Ok(Copied {
        len,
        reflinked: false,
        data,
    })
}

/// Copies `src`'s content into `dst`, which must be empty (a new file),
/// keeping holes: only the data extents are copied (`SEEK_DATA` /
/// `SEEK_HOLE`, the whole file where the filesystem cannot tell), with
/// `copy_file_range`, or reads and writes that skip zero blocks where the
/// kernel refuses (`EXDEV`, `ENOSYS`, `EINVAL`, `EOPNOTSUPP`); `dst` is
/// then sized to `src`'s length. `progress` is told the offset reached
/// of the length (holes count as done), and ends with `(len, len)`.
/// Returns the bytes of data copied.
///
/// # Errors
/// A read, write or progress error (`ENOSPC` as
/// [`io::ErrorKind::StorageFull`]); `src` shrinking while copied is
/// [`io::ErrorKind::UnexpectedEof`].
pub fn copy_sparse(
    src: &File,
    dst: &File,
    progress: &mut dyn FnMut(u64, u64) -> io::Result<()>,
) -> io::Result<u64> {
    let len = content_len(src)?;
    let mut mover = Mover {
        kernel: true,
        buf: Vec::new(),
    };
    let mut pos = 0;
    let mut copied = 0;
    progress(0, len)?;
    while pos < len {
        let Some((start, end)) = next_data(src, pos, len)? else {
            break;
        };
        mover.copy_range(src, dst, start, end, &mut |off| progress(off, len))?;
        copied += end - start;
        pos = end;
    }
    dst.set_len(len)?;
    progress(len, len)?;
    Ok(copied)
}

/// The next data extent at or after `pos`, clipped to `len`.
fn next_data(src: &File, pos: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let cannot_tell = |e: Errno| e == Errno::INVAL || e == Errno::OPNOTSUPP || e == Errno::NOSYS;
    let start = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
        Ok(start) => start,
        Err(e) if e == Errno::NXIO => return Ok(None),
        Err(e) if cannot_tell(e) => return Ok(Some((pos, len))),
        Err(e) => return Err(e.into()),
    };
    if start >= len {
        return Ok(None);
    }
    let end = match rustix::fs::seek(src, SeekFrom::Hole(start)) {
        Ok(end) => end.clamp(start, len),
        Err(e) if e == Errno::NXIO || cannot_tell(e) => len,
        Err(e) => return Err(e.into()),
    };
    Ok(Some((start, end)))
}

/// Moves byte ranges between two files at the same offsets.
struct Mover {
    /// `copy_file_range` still works for these files.
    kernel: bool,
    /// The read/write fallback's buffer (allocated on first use).
    buf: Vec<u8>,
}

impl Mover {
    fn copy_range(
        &mut self,
        src: &File,
        dst: &File,
        start: u64,
        end: u64,
        report: &mut dyn FnMut(u64) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut off = start;
        while off < end {
            let want = usize::try_from(end - off).unwrap_or(usize::MAX).min(CHUNK);
            let n = if self.kernel {
                let (mut off_in, mut off_out) = (off, off);
                match rustix::fs::copy_file_range(
                    src,
                    Some(&mut off_in),
                    dst,
                    Some(&mut off_out),
                    want,
                ) {
                    Ok(n) if n > 0 => n,
                    // Some filesystems answer 0 rather than an error: the
                    // fallback tells a real end of file.
                    Ok(_) => {
                        self.kernel = false;
                        continue;
                    }
                    Err(e)
                        if e == Errno::XDEV
                            || e == Errno::NOSYS
                            || e == Errno::INVAL
                            || e == Errno::OPNOTSUPP =>
                    {
                        self.kernel = false;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                self.read_write(src, dst, off, want)?
            };
            off += n as u64;
            report(off)?;
        }
        Ok(())
    }

    /// Copies up to `want` bytes at `off` through the buffer, leaving
    /// all-zero blocks unwritten (holes in the new file).
    fn read_write(&mut self, src: &File, dst: &File, off: u64, want: usize) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.buf = vec![0; BUF];
        }
        let want = want.min(self.buf.len());
        let got = loop {
            match src.read_at(&mut self.buf[..want], off) {
                Ok(got) => break got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the source ended early: it shrank while being copied (stop what writes to it \
                 and retry)",
            ));
        }
        let data = &self.buf[..got];
        if data.iter().any(|&b| b != 0) {
            dst.write_all_at(data, off)?;
        }
        Ok(got)
    }
}

/// The sha256 of `file`'s content, as lowercase hex. `progress` is told
/// the bytes hashed of the content's length.
///
/// # Errors
/// A read or progress error.
pub fn sha256(
    file: &File,
    progress: &mut dyn FnMut(u64, u64) -> io::Result<()>,
) -> io::Result<String> {
    let len = content_len(file)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; BUF];
    let mut off = 0u64;
    let mut reported = 0u64;
    progress(0, len)?;
    loop {
        let n = match file.read_at(&mut buf, off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        off += n as u64;
        if off - reported >= CHUNK as u64 {
            reported = off;
            progress(off, len.max(off))?;
        }
    }
    progress(off, len.max(off))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The sha256 of `bytes`, as lowercase hex.
#[must_use]
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The sha256 of the file at `path`, as lowercase hex.
///
/// # Errors
/// The file cannot be opened or read.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    sha256(&File::open(path)?, &mut no_progress)
}

/// The temporary name beside `target`: `.NAME.virtsnap-tmp`, the name
/// shortened to fit 255 bytes.
#[must_use]
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target.file_name().map_or(&[][..], OsStrExt::as_bytes);
    let name = &name[..name.len().min(NAME_MAX - 1 - TEMP_SUFFIX.len())];
    let mut temp = Vec::with_capacity(1 + name.len() + TEMP_SUFFIX.len());
    temp.push(b'.');
    temp.extend_from_slice(name);
    temp.extend_from_slice(TEMP_SUFFIX.as_bytes());
    target.with_file_name(OsStr::from_bytes(&temp))
}

/// `fsync`s the directory holding `path`, so that a rename or removal in
/// it survives a crash.
///
/// # Errors
/// The directory cannot be opened or synced.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` unless `to` exists (`renameat2` with
/// `RENAME_NOREPLACE`; where the filesystem lacks it, a hard link then
/// the removal of `from`).
///
/// # Errors
/// [`io::ErrorKind::AlreadyExists`] when `to` exists, or the rename fails.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP => {
            fs::hard_link(from, to)?;
            // The content is in place; a leftover second name is only
            // untidy.
            let _ = fs::remove_file(from);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// What [`TempFile::commit`] does when the target exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail with [`io::ErrorKind::AlreadyExists`], changing nothing.
    Refuse,
    /// Replace it, atomically.
    Replace,
}

/// A new file under a temporary name beside its target
/// ([`temp_path`]), removed when dropped unless committed: a copy is
/// written there, then [`TempFile::commit`]ted into place, so the target
/// never holds half a copy.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: File,
    committed: bool,
}

impl TempFile {
    /// Creates the temporary file for `target` (mode 0600, readable and
    /// writable), replacing a stale one left by a crash.
    ///
    /// # Errors
    /// The directory does not exist or is not writable.
    pub fn beside(target: &Path) -> io::Result<Self> {
        let path = temp_path(target);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            path,
            file,
            committed: false,
        })
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    #[must_use]
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `fsync`s the file and renames it to `target`; the caller then
    /// syncs the directory ([`sync_parent`]).
    ///
    /// # Errors
    /// The sync or the rename failed (the temporary file is removed), or
    /// `target` exists with [`Existing::Refuse`]
    /// ([`io::ErrorKind::AlreadyExists`]).
    pub fn commit(mut self, target: &Path, existing: Existing) -> io::Result<()> {
        self.file.sync_all()?;
        match existing {
            Existing::Refuse => rename_noreplace(&self.path, target)?,
            Existing::Replace => fs::rename(&self.path, target)?,
        }
        self.committed = true;
        Ok(())
    }

    /// Puts the file at `target`, which must not exist, durably: the
    /// file and its directory are synced. When the directory cannot be
    /// synced the target is removed again: nothing half-durable is left.
    ///
    /// # Errors
    /// Which step failed ([`Placing`]).
    pub fn place_new(self, target: &Path) -> Result<(), Placing> {
        self.commit(target, Existing::Refuse).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Placing::Exists
            } else {
                Placing::Move(e)
            }
        })?;
        sync_parent(target).map_err(|e| {
            let _ = fs::remove_file(target);
            Placing::Sync(e)
        })
    }
}

/// Why [`TempFile::place_new`] failed.
#[derive(Debug)]
pub enum Placing {
    /// The target exists (it is left as it was).
    Exists,
    /// Syncing the file or renaming it failed.
    Move(io::Error),
    /// Syncing the directory failed (the target was removed).
    Sync(io::Error),
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The read/write fallback (taken where `copy_file_range` is refused)
    /// copies the data and leaves zero blocks as holes.
    #[test]
    fn read_write_fallback_skips_zero_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let mut content = vec![0u8; 8 * BUF];
        content[..BUF].fill(7);
        content[5 * BUF..5 * BUF + 10].fill(9);
        fs::write(&src_path, &content).unwrap();
        let src = File::open(&src_path).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = File::create(&dst_path).unwrap();
        let mut mover = Mover {
            kernel: false,
            buf: Vec::new(),
        };
        let mut reached = 0;
        mover
            .copy_range(&src, &dst, 0, content.len() as u64, &mut |off| {
                reached = off;
                Ok(())
            })
            .unwrap();
        dst.set_len(content.len() as u64).unwrap();
        assert_eq!(reached, content.len() as u64);
        assert_eq!(fs::read(&dst_path).unwrap(), content);
        // Two 1 MiB blocks written of eight (512-byte units, some slack).
        let blocks = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&dst_path).unwrap());
        assert!(blocks <= 2 * 2048 + 256, "{blocks} blocks");

        // A source shorter than asked is an early end, not a short copy.
        let err = mover
            .copy_range(&src, &dst, 0, content.len() as u64 + 1, &mut |_| Ok(()))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
