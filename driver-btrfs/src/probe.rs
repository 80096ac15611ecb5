//! What a path is as far as the driver cares: on btrfs or not (`statfs`),
//! and a regular file, a subvolume, or something else.

use std::fs;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{FileType, StatFs};

/// `statfs`'s `f_type` of a btrfs filesystem.
pub const BTRFS_SUPER_MAGIC: u32 = 0x9123_683E;

/// The inode number of a subvolume's root directory
/// (`BTRFS_FIRST_FREE_OBJECTID`): how btrfs-progs recognise a subvolume.
const SUBVOLUME_ROOT_INO: u64 = 256;

/// Whether `path` is on a btrfs filesystem.
///
/// # Errors
/// `statfs` fails (the path does not exist, a directory on the way is
/// not searchable).
pub fn is_btrfs(path: &Path) -> io::Result<bool> {
    Ok(is_btrfs_statfs(&rustix::fs::statfs(path)?))
}

/// Whether `st` is of a btrfs filesystem.
fn is_btrfs_statfs(st: &StatFs) -> bool {
    // `f_type` is a signed word of the architecture's size: compare its
    // low 32 bits, where the magic number lives.
    i128::from(st.f_type) & 0xFFFF_FFFF == i128::from(BTRFS_SUPER_MAGIC)
}

/// What a volume's path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file on btrfs.
    File,
    /// The root of a btrfs subvolume.
    Subvolume,
    /// Anything else, or not on btrfs: not this driver's.
    Other,
}

/// What `path` is (following symbolic links).
///
/// # Errors
/// The path cannot be examined.
pub(crate) fn kind(path: &Path) -> io::Result<Kind> {
    let meta = fs::metadata(path)?;
    if !is_btrfs(path)? {
        return Ok(Kind::Other);
    }
    Ok(if meta.is_file() {
        Kind::File
    } else if is_subvolume_meta(&meta) {
        Kind::Subvolume
    } else {
        Kind::Other
    })
}

/// Whether `meta` (of a path on btrfs) is a subvolume's root.
pub(crate) fn is_subvolume_meta(meta: &fs::Metadata) -> bool {
    meta.is_dir() && meta.ino() == SUBVOLUME_ROOT_INO
}

/// Whether the open directory `fd` is a subvolume's root on btrfs: what
/// a snapshot ioctl must be given (for any other directory it would
/// snapshot the whole subvolume around it).
///
/// # Errors
/// `fstat` or `fstatfs` fails.
pub(crate) fn is_subvolume_fd(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let st = rustix::fs::fstat(fd)?;
    Ok(FileType::from_raw_mode(st.st_mode) == FileType::Directory
        && st.st_ino == SUBVOLUME_ROOT_INO
        && is_btrfs_statfs(&rustix::fs::fstatfs(fd)?))
}

/// Whether `path` is a subvolume's root on btrfs, without following a
/// final symbolic link; `Ok(None)` when nothing is there.
///
/// # Errors
/// The path cannot be examined.
pub(crate) fn subvolume_at(path: &Path) -> io::Result<Option<bool>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(is_subvolume_meta(&meta) && is_btrfs(path)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether two metadata are of the same file.
pub(crate) fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}
