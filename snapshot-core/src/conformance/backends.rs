//! What the drivers' tests share to reach real backends: finding the
//! tools (and failing, not skipping, when `VIRTSNAP_REQUIRE_BACKENDS` is
//! set), running them, qcow2 images made, written and read with
//! `qemu-img` and `qemu-io`, [`Harness`]es for qcow2 and raw volumes, a
//! loop-mounted scratch btrfs ([`Btrfs`]), and a small
//! tmpfs for filling a filesystem.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Harness, VOLUME_SIZE};
use crate::driver::{SnapshotMode, Volume, VolumeDriver, VolumeFormat};

/// Whether backends must be present (CI sets `VIRTSNAP_REQUIRE_BACKENDS`).
fn required() -> bool {
    std::env::var_os("VIRTSNAP_REQUIRE_BACKENDS").is_some()
}

/// Skips (prints `SKIP: reason` and answers `false`) or, when backends
/// are required, fails with `reason`.
///
/// # Panics
/// When backends are required.
#[must_use]
pub fn skip(reason: &str) -> bool {
    assert!(!required(), "{reason} (VIRTSNAP_REQUIRE_BACKENDS is set)");
    eprintln!("SKIP: {reason}");
    false
}

/// Whether every one of `tools` runs; otherwise see [`skip`].
///
/// # Panics
/// A tool is missing and backends are required.
#[must_use]
pub fn tools_present(tools: &[&str]) -> bool {
    match tools
        .iter()
        .find(|t| Command::new(t).arg("--version").output().is_err())
    {
        None => true,
        Some(tool) => skip(&format!("{tool} is not installed; install qemu-utils")),
    }
}

/// The qemu tools the qcow2 tests need.
#[must_use]
pub fn qemu_tools_present() -> bool {
    tools_present(&["qemu-img", "qemu-io"])
}

/// Runs `program` with `args` to success and returns its stdout.
///
/// # Panics
/// It cannot run or fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e})"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 test path")
}

/// Creates a qcow2 image of `size` bytes at `path` (`extra` options
/// before the path, e.g. `-o compat=0.10`).
pub fn qcow2_create(path: &Path, size: u64, extra: &[&str]) {
    let size = size.to_string();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[utf8(path), &size]);
    run("qemu-img", &args);
}

/// Writes `len` bytes of `pattern` at `offset` of the image at `path` in
/// `format`, as a guest would.
pub fn write(path: &Path, format: &str, offset: u64, len: u64, pattern: u8) {
    run(
        "qemu-io",
        &[
            "-f",
            format,
            "-c",
            &format!("write -P {pattern} {offset} {len}"),
            utf8(path),
        ],
    );
}

/// The guest-visible content of the image at `path` in `format`.
#[must_use]
pub fn content(path: &Path, format: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("content.raw");
    run(
        "qemu-img",
        &["convert", "-f", format, "-O", "raw", utf8(path), utf8(&raw)],
    );
    std::fs::read(raw).expect("reading the converted image")
}

/// A [`Harness`] for qcow2 volumes, for any driver and mode.
#[derive(Debug)]
pub struct Qcow2Harness<D> {
    /// The driver under test.
    pub driver: D,
    /// The mode under test.
    pub mode: SnapshotMode,
}

impl<D: VolumeDriver> Harness for Qcow2Harness<D> {
    fn driver(&self) -> &dyn VolumeDriver {
        &self.driver
    }

    fn mode(&self) -> SnapshotMode {
        self.mode
    }

    fn new_volume(&self, dir: &Path, name: &str) -> Volume {
        let path = dir.join(format!("{name}.qcow2"));
        qcow2_create(&path, VOLUME_SIZE, &[]);
        Volume::new(path, VolumeFormat::Qcow2)
    }

    fn write(&self, volume: &Volume, offset: u64, len: u64, pattern: u8) {
        write(&volume.path, "qcow2", offset, len, pattern);
    }

    fn content(&self, volume: &Volume) -> Vec<u8> {
        content(&volume.path, "qcow2")
    }
}

/// A [`Harness`] for raw files written and read with plain file I/O (a
/// raw file's bytes are what a guest sees), for any driver and mode.
#[derive(Debug)]
pub struct RawHarness<D> {
    /// The driver under test.
    pub driver: D,
    /// The mode under test.
    pub mode: SnapshotMode,
}

impl<D: VolumeDriver> Harness for RawHarness<D> {
    fn driver(&self) -> &dyn VolumeDriver {
        &self.driver
    }

    fn mode(&self) -> SnapshotMode {
        self.mode
    }

    fn new_volume(&self, dir: &Path, name: &str) -> Volume {
        let path = dir.join(format!("{name}.img"));
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(VOLUME_SIZE))
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Volume::new(path, VolumeFormat::Raw)
    }

    fn write(&self, volume: &Volume, offset: u64, len: u64, pattern: u8) {
        use std::os::unix::fs::FileExt;
        let data = vec![pattern; usize::try_from(len).expect("a small write")];
        std::fs::OpenOptions::new()
            .write(true)
            .open(&volume.path)
            .and_then(|f| f.write_all_at(&data, offset))
            .unwrap_or_else(|e| panic!("writing {}: {e}", volume.path.display()));
    }

    fn content(&self, volume: &Volume) -> Vec<u8> {
        std::fs::read(&volume.path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", volume.path.display()))
    }
}

/// A tmpfs mounted on a directory, unmounted when dropped.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`4m`) on the existing directory `dir`.
    ///
    /// # Errors
    /// `mount` cannot run or refuses (not root, no tmpfs).
    pub fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Self(dir.to_path_buf()))
        } else {
            Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Mounts one, or skips (see [`skip`]) when it cannot.
    ///
    /// # Panics
    /// It cannot be mounted and backends are required.
    #[must_use]
    pub fn mount_or_skip(dir: &Path, size: &str) -> Option<Self> {
        match Self::mount(dir, size) {
            Ok(m) => Some(m),
            Err(reason) => {
                let _ = skip(&format!("a small tmpfs is needed: {reason}"));
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A scratch btrfs: an image file formatted with `mkfs.btrfs` and
/// loop-mounted on a temporary directory, unmounted when dropped (also
/// when the test panics). Where the machine cannot make one (not root, no
/// btrfs-progs, no loop devices) [`Btrfs::new_or_skip`] skips with the
/// reason, or fails when backends are required.
#[derive(Debug)]
pub struct Btrfs {
    mount: PathBuf,
    /// Holds the image and the mount point; removed after the unmount.
    _dir: tempfile::TempDir,
}

impl Btrfs {
    /// A btrfs of `size` (`300M`, sparse on the host), or `None` after a
    /// skip.
    ///
    /// # Panics
    /// It cannot be made and backends are required.
    #[must_use]
    pub fn new_or_skip(size: &str) -> Option<Self> {
        match Self::new(size) {
            Ok(fs) => Some(fs),
            Err(reason) => {
                let _ = skip(&format!("a loop-mounted btrfs is needed: {reason}"));
                None
            }
        }
    }

    fn new(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let image = dir.path().join("btrfs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| format!("mkdir: {e}"))?;
        try_run("truncate", &["-s", size, utf8(&image)])?;
        try_run("mkfs.btrfs", &["-q", utf8(&image)])?;
        try_run("mount", &["-o", "loop", utf8(&image), utf8(&mount)])?;
        Ok(Self { mount, _dir: dir })
    }

    /// Where it is mounted.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        // A process that just closed a file can keep the mount busy for a
        // moment; as a last resort detach it lazily.
        for _ in 0..20 {
            if try_run("umount", &[utf8(&self.mount)]).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = try_run("umount", &["-l", utf8(&self.mount)]);
    }
}

/// Runs a command to success, or says why not and what to do.
fn try_run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} cannot run ({e}); install btrfs-progs and run as root"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The bytes of `file` (on btrfs) that no other file shares, as `btrfs
/// filesystem du` counts them: 0 for a reflinked copy of an unchanged
/// file.
///
/// # Panics
/// `btrfs` fails or prints something else.
#[must_use]
pub fn btrfs_exclusive_bytes(file: &Path) -> u64 {
    let out = run("btrfs", &["filesystem", "du", "-s", "--raw", utf8(file)]);
    // "Total Exclusive Set-shared Filename" heading, then one row.
    let row = out.lines().nth(1).unwrap_or_else(|| {
        panic!(
            "btrfs filesystem du printed no row for {}: {out}",
            file.display()
        )
    });
    row.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exclusive byte count in {row:?}"))
}
