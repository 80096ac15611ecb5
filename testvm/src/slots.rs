//! How many test guests run at once on this host. Each guest under TCG
//! keeps about one core busy, and test runners start tests in parallel
//! (nextest: one process per test), so guests take a slot first: an
//! exclusive lock on one of N files in a shared directory, held until the
//! guest is dropped. The kernel releases it when the process dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;

/// Environment variable: how many guests may run at once (default: half the
/// host's cores, at least one).
pub const PARALLEL_ENV: &str = "VIRTSNAP_TESTVM_PARALLEL";

/// A held slot: released when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _lock: File,
}

/// Takes a free slot, waiting up to `timeout` for one.
pub(crate) fn acquire(timeout: Duration) -> Result<Slot, Error> {
    let dir = std::env::temp_dir().join("virtsnap-testvm-slots");
    acquire_in(&dir, slot_count(), timeout)
}

fn slot_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    parse_count(std::env::var(PARALLEL_ENV).ok().as_deref(), cores)
}

/// The slot count from the environment's value, or half of `cores`.
fn parse_count(value: Option<&str>, cores: usize) -> usize {
    value
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(cores / 2)
        .max(1)
}

fn acquire_in(dir: &Path, slots: usize, timeout: Duration) -> Result<Slot, Error> {
    create_shared_dir(dir)?;
    let deadline = Instant::now() + timeout;
    loop {
        for index in 0..slots {
            let path = dir.join(format!("slot-{index}.lock"));
            let file = open_lock_file(&path)?;
            match file.try_lock() {
                Ok(()) => return Ok(Slot { _lock: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(err)) => {
                    return Err(Error::io(format!("locking {}", path.display()), err));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::SlotTimeout {
                waited: timeout,
                slots,
                dir: dir.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The slot directory, writable by every user (sticky, like /tmp), so that
/// root's and users' tests share the host's cores.
fn create_shared_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            // Best effort: without it, other users fall back to read-only opens.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(Error::io(format!("creating {}", dir.display()), err)),
    }
}

/// Opens (creating) a lock file; another user's file opens read-only, which
/// locks just as well.
fn open_lock_file(path: &PathBuf) -> Result<File, Error> {
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(path);
    match created {
        Ok(file) => Ok(file),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            File::open(path).map_err(|err| Error::io(format!("opening {}", path.display()), err))
        }
        Err(err) => Err(Error::io(format!("opening {}", path.display()), err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_is_half_the_cores_unless_set() {
        assert_eq!(parse_count(None, 2), 1);
        assert_eq!(parse_count(None, 1), 1);
        assert_eq!(parse_count(None, 16), 8);
        assert_eq!(parse_count(Some("3"), 2), 3);
        assert_eq!(parse_count(Some("0"), 2), 1);
        assert_eq!(parse_count(Some("many"), 8), 4);
    }

    #[test]
    fn slots_are_exclusive_and_freed_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = dir.path().join("slots");
        let wait = Duration::from_millis(300);
        let first = acquire_in(&slots, 2, wait).expect("slot 0");
        let second = acquire_in(&slots, 2, wait).expect("slot 1");
        let err = acquire_in(&slots, 2, wait).expect_err("both taken");
        assert!(matches!(err, Error::SlotTimeout { slots: 2, .. }), "{err}");
        assert!(err.to_string().contains(PARALLEL_ENV), "{err}");
        drop(first);
        let third = acquire_in(&slots, 2, wait).expect("slot 0 is free again");
        drop((second, third));
    }
}
