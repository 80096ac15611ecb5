//! A scratch btrfs for the domain tests, as driver-btrfs's test support
//! makes it (test support cannot be shared across crates): an image file
//! formatted with `mkfs.btrfs` and loop-mounted on a temporary directory,
//! unmounted when dropped (also when the test panics). Where the machine
//! cannot make one (not root, no btrfs-progs, no loop devices) the tests
//! print `SKIP` with the reason, or fail when `VIRTSNAP_REQUIRE_BACKENDS`
//! is set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use snapshot_core::conformance::backends;

/// A loop-mounted btrfs (see the module comment).
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
    pub fn new_or_skip(size: &str) -> Option<Self> {
        match Self::new(size) {
            Ok(fs) => Some(fs),
            Err(reason) => {
                let _ = backends::skip(&format!("a loop-mounted btrfs is needed: {reason}"));
                None
            }
        }
    }

    fn new(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let image = dir.path().join("btrfs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| format!("mkdir: {e}"))?;
        run("truncate", &["-s", size, path(&image)])?;
        run("mkfs.btrfs", &["-q", path(&image)])?;
        run("mount", &["-o", "loop", path(&image), path(&mount)])?;
        Ok(Self { mount, _dir: dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        // A process that just closed a file can keep the mount busy for a
        // moment; as a last resort detach it lazily.
        for _ in 0..20 {
            if run("umount", &[path(&self.mount)]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = run("umount", &["-l", path(&self.mount)]);
    }
}

/// The bytes of `file` (on btrfs) that no other file shares, as `btrfs
/// filesystem du` counts them: 0 for a reflinked copy of an unchanged
/// file.
///
/// # Panics
/// `btrfs` fails or prints something else.
pub fn exclusive_bytes(file: &Path) -> u64 {
    let out = backends::run("btrfs", &["filesystem", "du", "-s", "--raw", path(file)]);
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

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 test path")
}

/// Runs a command to success.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
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
