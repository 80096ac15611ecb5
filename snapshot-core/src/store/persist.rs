//! Durable file primitives of the metadata store: atomic replacement of a
//! file (temp file, fsync, rename, fsync of the directory), durable removal
//! and directory creation, cleanup of temp files left by a crashed writer,
//! the per-owner lock (flock(2) through `std::fs::File::lock`) and the
//! crash-injection hook used by the crash tests.
//!
//! Everything here is std only and works on one directory at a time; the
//! store decides which files live where (see DESIGN.md, "State on disk").

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Permissions of every file the store creates (metadata may hold secrets,
/// e.g. with `--security-info`).
const FILE_MODE: u32 = 0o600;

/// Marker between the target name and the writer's identity in a temp file
/// name: `.{file_name}.tmp-{pid}-{counter}`.
const TEMP_MARKER: &str = ".tmp-";

/// Environment variable naming the crash point at which the process kills
/// itself (tests only; see [`crash_point`]).
pub(crate) const CRASH_ENV: &str = "VIRTSNAP_CRASH_AT";

/// Per-process counter making temp names unique between threads.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Kills the process with SIGKILL when `$VIRTSNAP_CRASH_AT` equals `step`.
///
/// Crash tests run the store in a child process with the variable set and
/// check that what is on disk afterwards is the state before or after the
/// operation. The variable is read once per process.
pub(crate) fn crash_point(step: &'static str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    let crash_at = CRASH_AT.get_or_init(|| std::env::var(CRASH_ENV).ok());
    if crash_at.as_deref() != Some(step) {
        return;
    }
    // No unsafe (no libc::kill): let kill(1) deliver SIGKILL. The signal is
    // acted upon before this process returns to user space, so the sleep
    // and abort below only run if kill(1) could not be started or failed.
    let pid = std::process::id().to_string();
    if let Ok(status) = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        && status.success()
    {
        std::thread::sleep(std::time::Duration::from_secs(5));
    }
    std::process::abort();
}

/// Refuses names that are not a single plain component of `dir`.
fn check_file_name(file_name: &str) -> io::Result<()> {
    if file_name.is_empty()
        || file_name == "."
        || file_name == ".."
        || file_name.contains(['/', '\0'])
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file name {file_name:?}"),
        ));
    }
    Ok(())
}

/// Whether `name` has the shape of a temp file written by [`write_atomic`].
fn is_temp_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|rest| rest.rfind(TEMP_MARKER).map(|at| at > 0))
        .unwrap_or(false)
}

/// Creates a fresh temp file for `file_name` in `dir` (O_EXCL, mode 0600).
fn create_temp(dir: &Path, file_name: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    // Keep the temp name within NAME_MAX (255) however long `file_name` is:
    // only its first 64 characters name the temp file.
    let short: String = file_name.chars().take(64).collect();
    // A stale temp of a dead process with the same pid may still be there
    // (cleanup runs when the store is opened); just take the next number.
    let mut attempts = 0;
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{short}{TEMP_MARKER}{pid}-{n}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Replaces `dir/file_name` with `bytes` atomically and durably.
///
/// The bytes go to a temp file `.{file_name}.tmp-{pid}-{counter}` in `dir`
/// (created with O_EXCL, mode 0600) which is fsynced, renamed over the
/// target, and the directory is fsynced. Readers see the old or the new
/// file, never a partial one. On error the temp file is removed (best
/// effort) and the error returned.
pub(crate) fn write_atomic(dir: &Path, file_name: &str, bytes: &[u8]) -> io::Result<()> {
    replace_file(dir, file_name, bytes)?;
    sync_dir(dir)
}

/// [`write_atomic`] without the final fsync of `dir`: the new content is
/// durable, its name is not until the caller fsyncs `dir` (one fsync for
/// the several files of a journaled change).
pub(crate) fn replace_file(dir: &Path, file_name: &str, bytes: &[u8]) -> io::Result<()> {
    check_file_name(file_name)?;
    let (temp, mut file) = create_temp(dir, file_name)?;
    let target = dir.join(file_name);
    let mut renamed = false;
    let result = (|| {
        file.write_all(bytes)?;
        crash_point("temp-written");
        file.sync_all()?;
        drop(file);
        crash_point("temp-synced");
        fs::rename(&temp, &target)?;
        renamed = true;
        crash_point("renamed");
        Ok(())
    })();
    if result.is_err() && !renamed {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Removes `dir/file_name` without fsyncing `dir`; `Ok(false)` if it did
/// not exist. The removal is durable once the caller fsyncs `dir`.
pub(crate) fn remove_file(dir: &Path, file_name: &str) -> io::Result<bool> {
    check_file_name(file_name)?;
    match fs::remove_file(dir.join(file_name)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    crash_point("unlinked");
    Ok(true)
}

/// Removes `dir/file_name` and fsyncs `dir`; `Ok(false)` if it did not exist.
pub(crate) fn remove_durable(dir: &Path, file_name: &str) -> io::Result<bool> {
    let removed = remove_file(dir, file_name)?;
    if removed {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Fsyncs a directory, making the creation, rename and removal of its
/// entries durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The parent of `path`, with `.` for a relative single component.
fn parent_or_dot(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

/// Creates `path` and its missing ancestors (`create_dir_all`), then fsyncs
/// every directory it created and the existing parent of the topmost one,
/// so the new directories survive a crash. When `path` already exists, it
/// and its parent are fsynced anyway (a crashed process may have created it
/// without doing so).
pub(crate) fn create_dir_durable(path: &Path) -> io::Result<()> {
    // Directories that do not exist yet, deepest first.
    let mut missing = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || fs::symlink_metadata(p).is_ok() {
            break;
        }
        missing.push(p);
        cur = p.parent();
    }
    fs::create_dir_all(path)?;
    let to_sync: Vec<&Path> = match missing.last() {
        // Created directories may have been created concurrently by someone
        // else; syncing them is harmless either way.
        Some(&top) => missing.iter().copied().chain(parent_or_dot(top)).collect(),
        None => std::iter::once(path).chain(parent_or_dot(path)).collect(),
    };
    for dir in to_sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Deletes temp files (`.*.tmp-*`) that a crashed writer left in `dir` and
/// returns their names, sorted. The caller holds the owner lock, so no live
/// writer of `dir` exists. Directories are never touched.
pub(crate) fn remove_stale_temps(dir: &Path) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_temp_name(&name) || entry.file_type()?.is_dir() {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    removed.sort();
    Ok(removed)
}

/// A lock on an owner's lock file (flock(2)), exclusive for writers and
/// shared for readers; released when dropped (the file is closed).
///
/// flock locks belong to the open file description: two `OwnerLock`s of the
/// same file conflict even inside one process. Lock files are never
/// deleted, so the file locked is always the one others open.
#[derive(Debug)]
pub(crate) struct OwnerLock {
    file: File,
}

impl OwnerLock {
    /// Takes the exclusive lock on `path` (created, mode 0600, if needed),
    /// waiting for other holders to release it.
    pub(crate) fn acquire(path: &Path) -> io::Result<Self> {
        let file = Self::open_rw(path)?;
        retry_interrupted(|| file.lock())?;
        Ok(Self { file })
    }

    /// Takes the exclusive lock on `path` (created if needed) without
    /// waiting: `Ok(None)` when another holder has it.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<Self>> {
        let file = Self::open_rw(path)?;
        Self::finish_try(file.try_lock(), file)
    }

    /// Takes a shared (reader) lock on `path`, waiting while a writer holds
    /// the exclusive lock. Opens the file read-only when it exists, so a
    /// reader without write access to it can still lock it.
    pub(crate) fn acquire_shared(path: &Path) -> io::Result<Self> {
        let file = Self::open_for_shared(path)?;
        retry_interrupted(|| file.lock_shared())?;
        Ok(Self { file })
    }

    /// Takes a shared lock without waiting: `Ok(None)` while a writer holds
    /// the exclusive lock.
    pub(crate) fn try_acquire_shared(path: &Path) -> io::Result<Option<Self>> {
        let file = Self::open_for_shared(path)?;
        Self::finish_try(file.try_lock_shared(), file)
    }

    fn open_rw(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)
    }

    fn open_for_shared(path: &Path) -> io::Result<File> {
        match File::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::open_rw(path),
            other => other,
        }
    }

    fn finish_try(result: Result<(), TryLockError>, file: File) -> io::Result<Option<Self>> {
        match result {
            Ok(()) => Ok(Some(Self { file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes the
        // release explicit and independent of other handles to the file.
        let _ = self.file.unlock();
    }
}

/// Runs a blocking lock call again when a signal interrupted it.
fn retry_interrupted(mut f: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Names in `dir` that look like temp files (for tests and diagnostics).
#[cfg(test)]
fn temp_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
        .filter(|n| is_temp_name(n))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).expect("read")
    }

    #[test]
    fn write_atomic_creates_and_replaces_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomic(dir.path(), "a.xml", b"old").expect("first write");
        assert_eq!(read(&dir.path().join("a.xml")), b"old");
        write_atomic(dir.path(), "a.xml", b"new content").expect("second write");
        assert_eq!(read(&dir.path().join("a.xml")), b"new content");
        let mode = fs::metadata(dir.path().join("a.xml"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(temp_names(dir.path()).is_empty());
    }

    #[test]
    fn concurrent_reader_sees_old_or_new_never_partial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let versions: Vec<Vec<u8>> = (0u8..4).map(|v| vec![b'a' + v; 256 * 1024]).collect();
        write_atomic(dir.path(), "s.xml", &versions[0]).expect("initial write");
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop);
            let path = dir.path().join("s.xml");
            let versions = versions.clone();
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(Ordering::Relaxed) || reads == 0 {
                    let got = fs::read(&path).expect("target always exists");
                    assert!(versions.contains(&got), "partial read, {} bytes", got.len());
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..40 {
            write_atomic(dir.path(), "s.xml", &versions[i % versions.len()]).expect("write");
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("reader thread") > 0);
        assert!(temp_names(dir.path()).is_empty());
    }

    #[test]
    fn failed_write_removes_temp_and_keeps_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Renaming a file over a (non-empty) directory fails with EISDIR.
        fs::create_dir(dir.path().join("target")).expect("mkdir");
        fs::write(dir.path().join("target/keep"), b"x").expect("write keep");
        let err = write_atomic(dir.path(), "target", b"data").expect_err("rename must fail");
        assert_ne!(err.kind(), io::ErrorKind::NotFound);
        assert!(temp_names(dir.path()).is_empty(), "temp left behind");
        assert!(dir.path().join("target/keep").exists());
    }

    #[test]
    fn invalid_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["", ".", "..", "a/b", "../x", "a\0b"] {
            let err = write_atomic(dir.path(), name, b"x").expect_err(name);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
            let err = remove_durable(dir.path(), name).expect_err(name);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
        assert_eq!(fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }

    #[test]
    fn write_into_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = write_atomic(&dir.path().join("nope"), "a", b"x").expect_err("no dir");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn remove_durable_reports_existence() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomic(dir.path(), "gone.xml", b"x").expect("write");
        assert!(remove_durable(dir.path(), "gone.xml").expect("remove"));
        assert!(!dir.path().join("gone.xml").exists());
        assert!(!remove_durable(dir.path(), "gone.xml").expect("remove again"));
    }

    #[test]
    fn create_dir_durable_creates_nested_and_accepts_existing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("snapshots/domain/vm1");
        create_dir_durable(&nested).expect("create");
        assert!(nested.is_dir());
        create_dir_durable(&nested).expect("create again");
        fs::write(dir.path().join("file"), b"x").expect("write");
        create_dir_durable(&dir.path().join("file")).expect_err("a file is in the way");
    }

    #[test]
    fn stale_temps_are_removed_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for name in [
            ".a.xml.tmp-123-0",
            ".b.xml.tmp-99-7",
            "a.xml",
            ".hidden",
            "x.tmp-1-1",
            ".tmp-1-1",
        ] {
            fs::write(d.join(name), b"x").expect("write");
        }
        fs::create_dir(d.join(".dir.tmp-1-1")).expect("mkdir");
        let removed = remove_stale_temps(d).expect("cleanup");
        assert_eq!(removed, [".a.xml.tmp-123-0", ".b.xml.tmp-99-7"]);
        for kept in ["a.xml", ".hidden", "x.tmp-1-1", ".tmp-1-1", ".dir.tmp-1-1"] {
            assert!(d.join(kept).exists(), "{kept} must be kept");
        }
        assert!(remove_stale_temps(d).expect("cleanup again").is_empty());
    }

    #[test]
    fn exclusive_lock_excludes_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("owner.lock");
        let held = OwnerLock::acquire(&path).expect("acquire");
        // flock locks are per open file description: a second open conflicts.
        assert!(OwnerLock::try_acquire(&path).expect("try").is_none());
        assert!(
            OwnerLock::try_acquire_shared(&path)
                .expect("try shared")
                .is_none()
        );
        drop(held);
        let again = OwnerLock::try_acquire(&path).expect("try after drop");
        assert!(again.is_some());
    }

    #[test]
    fn shared_locks_coexist_and_exclude_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("owner.lock");
        let r1 = OwnerLock::acquire_shared(&path).expect("shared 1");
        let r2 = OwnerLock::acquire_shared(&path).expect("shared 2");
        let r3 = OwnerLock::try_acquire_shared(&path).expect("try shared");
        assert!(r3.is_some());
        assert!(OwnerLock::try_acquire(&path).expect("try").is_none());
        drop((r1, r2, r3));
        assert!(
            OwnerLock::try_acquire(&path)
                .expect("try after drop")
                .is_some()
        );
    }

    #[test]
    fn blocking_acquire_waits_for_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("owner.lock");
        let held = OwnerLock::acquire(&path).expect("acquire");
        let released = Arc::new(AtomicBool::new(false));
        let waiter = {
            let path = path.clone();
            let released = Arc::clone(&released);
            std::thread::spawn(move || {
                let _lock = OwnerLock::acquire(&path).expect("acquire in thread");
                released.load(Ordering::SeqCst)
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        released.store(true, Ordering::SeqCst);
        drop(held);
        assert!(waiter.join().expect("waiter"), "acquired before release");
    }

    // Crash tests re-execute this test binary (`std::env::current_exe()`)
    // running only the ignored test `crash_child`:
    //   <exe> --exact store::persist::tests::crash_child --ignored --nocapture
    // with CHILD_DIR_ENV naming the directory to work in, CHILD_OP_ENV the
    // operation and VIRTSNAP_CRASH_AT the step at which the child kills
    // itself. Without CHILD_DIR_ENV, `crash_child` does nothing, so running
    // the ignored tests by hand is harmless.
    const CHILD_DIR_ENV: &str = "VIRTSNAP_TEST_CRASH_DIR";
    const CHILD_OP_ENV: &str = "VIRTSNAP_TEST_CRASH_OP";
    const OLD: &[u8] = b"<domainsnapshot>old</domainsnapshot>\n";
    const NEW: &[u8] = b"<domainsnapshot>new, longer content</domainsnapshot>\n";

    #[test]
    #[ignore = "child process of the crash tests; does nothing on its own"]
    fn crash_child() {
        let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
            return;
        };
        let dir = PathBuf::from(dir);
        match std::env::var(CHILD_OP_ENV).as_deref() {
            Ok("write") => write_atomic(&dir, "snap.xml", NEW).expect("write"),
            Ok("remove") => {
                remove_durable(&dir, "snap.xml").expect("remove");
            }
            other => panic!("unknown crash child operation {other:?}"),
        }
        panic!("crash point {:?} was not reached", std::env::var(CRASH_ENV));
    }

    fn run_crash_child(dir: &Path, op: &str, step: &str) -> std::process::ExitStatus {
        let test_name = format!(
            "{}::crash_child",
            module_path!().split_once("::").expect("crate::module").1
        );
        std::process::Command::new(std::env::current_exe().expect("current_exe"))
            .args(["--exact", &test_name, "--ignored", "--nocapture"])
            .env(CHILD_DIR_ENV, dir)
            .env(CHILD_OP_ENV, op)
            .env(CRASH_ENV, step)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("spawn crash child")
    }

    #[test]
    fn crash_at_every_step_leaves_old_or_new() {
        for (op, step, expected) in [
            ("write", "temp-written", Some(OLD)),
            ("write", "temp-synced", Some(OLD)),
            ("write", "renamed", Some(NEW)),
            ("remove", "unlinked", None),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path();
            write_atomic(d, "snap.xml", OLD).expect("initial write");
            let status = run_crash_child(d, op, step);
            assert_eq!(
                status.signal(),
                Some(9),
                "{step}: child not SIGKILLed: {status}"
            );

            let content = fs::read(d.join("snap.xml")).ok();
            assert_eq!(content.as_deref(), expected, "{step}: wrong content");
            if let Some(content) = content {
                assert!(content == OLD || content == NEW, "{step}: mixed content");
            }
            let temps_before = temp_names(d);
            let removed = remove_stale_temps(d).expect("cleanup");
            assert_eq!(removed, temps_before, "{step}: cleanup report");
            let expect_temp = matches!(step, "temp-written" | "temp-synced");
            assert_eq!(
                removed.len(),
                usize::from(expect_temp),
                "{step}: {removed:?}"
            );
            assert!(temp_names(d).is_empty(), "{step}: temp survived cleanup");
            // The store keeps working after the crash.
            write_atomic(d, "snap.xml", NEW).expect("write after crash");
            assert_eq!(read(&d.join("snap.xml")), NEW);
        }
    }
}
