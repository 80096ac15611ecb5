//! Whether a process has an image open for writing, by QEMU's own image
//! locks: QEMU (and `qemu-img`, `qemu-io`) holds an open file description
//! lock on byte `100 + n` of the image for every permission bit `n` it
//! uses, and byte 101 stands for writing. The driver checks it before the
//! steps `qemu-img` does not guard: an external snapshot, revert or
//! delete renames files under the volume's path, and a running guest
//! would go on writing to the file it opened, which is then a snapshot's
//! (or no longer anyone's): its writes would corrupt the snapshot or be
//! lost.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

/// QEMU's lock byte for the write permission (`RAW_LOCK_PERM_BASE` + the
/// bit of `BLK_PERM_WRITE`).
const WRITE_PERM_BYTE: libc::off_t = 101;

/// Whether another process holds the image at `path` open for writing.
/// The probe lock is released before returning (the file is closed). A
/// file this process may not open for writing (read-only permissions or
/// filesystem) cannot be probed and counts as not held: the probe needs a
/// writable descriptor.
///
/// # Errors
/// The file cannot be opened or locks cannot be probed.
pub fn held_for_writing(path: &Path) -> io::Result<bool> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied
                || e.kind() == io::ErrorKind::ReadOnlyFilesystem =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    // The constants are small (1 and 0); the struct's fields are shorts.
    #[allow(clippy::cast_possible_truncation)]
    let probe = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: WRITE_PERM_BYTE,
        l_len: 1,
        l_pid: 0,
    };
    match fcntl(&file, FcntlArg::F_OFD_SETLK(&probe)) {
        Ok(_) => Ok(false),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(true),
        Err(e) => Err(io::Error::from(e)),
    }
}
