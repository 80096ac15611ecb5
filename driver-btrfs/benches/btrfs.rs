//! `cargo xtask bench btrfs`: snapshot create, revert and delete by the
//! btrfs driver ([`driver_btrfs::BtrfsDriver`], called through
//! `VolumeDriver` in this process on a current-thread tokio runtime)
//! against the bare tools doing the same storage work in the same run, on
//! a scratch btrfs (a sparse 4 GiB image, `mkfs.btrfs`, `mount -o loop`,
//! unmounted at the end). Median of 7 runs of each row, every run with a
//! fresh snapshot name; ratio = virtsnap / peer.
//!
//! - A 1 GiB file volume of pseudo-random data, really written and synced
//!   (one for the driver, one for the peer): create (a reflinked copy)
//!   against `cp --reflink=always VOL SNAP`; revert (4 KiB of the volume
//!   changed first, untimed) against `cp --reflink=always SNAP VOL`;
//!   delete against `rm SNAP`.
//! - A subvolume holding 10 000 files of 1 KiB (100 directories of 100):
//!   create against `btrfs subvolume snapshot -r`; revert (a file changed
//!   first, untimed) against `mv VOL VOL.old` + `btrfs subvolume snapshot
//!   SNAP VOL`, and against that pair followed by `btrfs subvolume delete
//!   VOL.old` (the driver deletes the old state in the same call); delete
//!   against `btrfs subvolume delete`.
//!
//! The driver does more than its peer in a few rows: it syncs the
//! snapshot's (or volume's) directory so the result survives a crash, and
//! checks what it is given before it acts. The peers' times are whole
//! processes started from this one, while the driver calls the btrfs
//! ioctls itself. Where a loop-mounted btrfs cannot be made (not root,
//! no btrfs-progs, no loop devices) the bench prints why and exits 0.

use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use driver_btrfs::BtrfsDriver;
use snapshot_core::driver::{
    CreatedSnapshot, DeleteContext, SnapshotMode, SnapshotPlan, Volume, VolumeDriver, VolumeFormat,
};

const RUNS: usize = 7;
const MIB: u64 = 1 << 20;
/// The file volume's size.
const FILE_MIB: u64 = 1024;
/// The subvolume's files: directories, files in each, bytes in each.
const DIRS: usize = 100;
const FILES_PER_DIR: usize = 100;
const FILE_BYTES: usize = 1024;
/// The scratch filesystem's size (sparse on the host).
const FS_SIZE: &str = "4G";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn text(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 bench path")
}

/// Runs a command to success, or says why not.
fn try_run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} cannot run ({e})"))?;
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

fn run(program: &str, args: &[&str]) {
    try_run(program, args).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs a command to success and returns its wall time.
fn timed(program: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    run(program, args);
    started.elapsed()
}

/// A loop-mounted btrfs on a temporary directory, unmounted when dropped
/// (also when the bench panics).
struct Btrfs {
    mount: PathBuf,
    /// Holds the image and the mount point; removed after the unmount.
    _dir: tempfile::TempDir,
}

impl Btrfs {
    fn new() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let image = dir.path().join("btrfs.img");
        let mount = dir.path().join("mnt");
        fs::create_dir(&mount).map_err(|e| format!("mkdir: {e}"))?;
        try_run("truncate", &["-s", FS_SIZE, text(&image)])?;
        try_run("mkfs.btrfs", &["-q", text(&image)])?;
        try_run("mount", &["-o", "loop", text(&image), text(&mount)])?;
        Ok(Self { mount, _dir: dir })
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        for _ in 0..20 {
            if try_run("umount", &[text(&self.mount)]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = try_run("umount", &["-l", text(&self.mount)]);
    }
}

/// Writes `mib` MiB of pseudo-random bytes (xorshift, seeded by `seed`)
/// to `path` and syncs them.
fn random_file(path: &Path, mib: u64, seed: u64) {
    let mut out = File::create(path).expect("creating the volume");
    let mut block = vec![0u8; usize::try_from(MIB).expect("1 MiB")];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    for _ in 0..mib {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        out.write_all(&block).expect("writing the volume");
    }
    out.sync_all().expect("syncing the volume");
}

/// A subvolume at `path` holding `DIRS` x `FILES_PER_DIR` small files.
fn small_files_subvolume(path: &Path) {
    run("btrfs", &["subvolume", "create", text(path)]);
    let mut content = vec![0u8; FILE_BYTES];
    for d in 0..DIRS {
        let dir = path.join(format!("d{d:03}"));
        fs::create_dir(&dir).expect("mkdir");
        for f in 0..FILES_PER_DIR {
            let stamp = format!("{d}/{f}\n");
            for (i, byte) in content.iter_mut().enumerate() {
                *byte = stamp.as_bytes()[i % stamp.len()];
            }
            fs::write(dir.join(format!("f{f:03}")), &content).expect("write");
        }
    }
}

/// Changes 4 KiB in the middle of a file volume.
fn scribble(path: &Path, r: usize) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the volume");
    let fill = u8::try_from(r).expect("few runs");
    f.write_all_at(&[fill; 4096], FILE_MIB / 2 * MIB)
        .expect("write the volume");
}

fn plan(name: &str, mode: SnapshotMode, file: Option<PathBuf>) -> SnapshotPlan {
    SnapshotPlan {
        name: name.to_string(),
        mode,
        file,
        checksum: false,
        writable: false,
    }
}

/// One row of the table.
struct Row {
    what: &'static str,
    peer: &'static str,
    ours: Duration,
    bare: Duration,
}

/// The driver's and the peer's times of one operation.
#[derive(Default)]
struct Times {
    ours: Vec<Duration>,
    bare: Vec<Duration>,
}

impl Times {
    /// Measures one run of each, alternating who goes first so neither
    /// always meets the state the other left.
    fn pair(&mut self, r: usize, ours: impl FnOnce() -> Duration, bare: impl FnOnce() -> Duration) {
        if r.is_multiple_of(2) {
            self.ours.push(ours());
            self.bare.push(bare());
        } else {
            self.bare.push(bare());
            self.ours.push(ours());
        }
    }

    fn row(self, what: &'static str, peer: &'static str) -> Row {
        Row {
            what,
            peer,
            ours: median(self.ours),
            bare: median(self.bare),
        }
    }
}

/// Measures the driver's future.
fn timed_call<T, E: std::fmt::Display>(
    rt: &tokio::runtime::Runtime,
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> (Duration, T) {
    let started = Instant::now();
    let out = rt
        .block_on(call)
        .unwrap_or_else(|e| panic!("the driver failed to {what}: {e}"));
    (started.elapsed(), out)
}

/// The 1 GiB file volume's rows.
fn file_rows(rt: &tokio::runtime::Runtime, driver: &BtrfsDriver, mnt: &Path) -> Vec<Row> {
    let ours = mnt.join("ours.img");
    let bare = mnt.join("bare.img");
    random_file(&ours, FILE_MIB, 1);
    random_file(&bare, FILE_MIB, 2);
    let volume = Volume::new(&ours, VolumeFormat::Raw);
    let snap = |base: &Path, r: usize| PathBuf::from(format!("{}.s{r}", base.display()));

    let mut create = Times::default();
    let mut created: Vec<CreatedSnapshot> = Vec::new();
    for r in 0..RUNS {
        let (b, bs) = (text(&bare).to_owned(), text(&snap(&bare, r)).to_owned());
        create.pair(
            r,
            || {
                let p = plan(&format!("s{r}"), SnapshotMode::Copy, Some(snap(&ours, r)));
                let (t, c) = timed_call(rt, "create", driver.create(&volume, &p, None));
                created.push(c);
                t
            },
            || timed("cp", &["--reflink=always", &b, &bs]),
        );
    }
    let mut revert = Times::default();
    for (r, c) in created.iter().enumerate() {
        scribble(&ours, r + 1);
        scribble(&bare, r + 1);
        let (b, bs) = (text(&bare).to_owned(), text(&snap(&bare, r)).to_owned());
        revert.pair(
            r,
            || {
                timed_call(
                    rt,
                    "revert",
                    driver.revert(&volume, &c.as_ref(), false, None),
                )
                .0
            },
            || timed("cp", &["--reflink=always", &bs, &b]),
        );
    }
    let mut delete = Times::default();
    let context = DeleteContext::default();
    for (r, c) in created.iter().enumerate() {
        let bs = text(&snap(&bare, r)).to_owned();
        delete.pair(
            r,
            || {
                timed_call(
                    rt,
                    "delete",
                    driver.delete(&volume, &c.as_ref(), &context, None),
                )
                .0
            },
            || timed("rm", &[&bs]),
        );
    }
    fs::remove_file(&ours).expect("rm");
    fs::remove_file(&bare).expect("rm");
    vec![
        create.row("1 GiB file create", "cp --reflink=always"),
        revert.row("1 GiB file revert", "cp --reflink=always"),
        delete.row("1 GiB file delete", "rm"),
    ]
}

/// The 10 000-file subvolume's rows.
fn subvolume_rows(rt: &tokio::runtime::Runtime, driver: &BtrfsDriver, mnt: &Path) -> Vec<Row> {
    let ours = mnt.join("ours");
    let bare = mnt.join("bare");
    let bare_snaps = mnt.join("bare-snapshots");
    small_files_subvolume(&ours);
    small_files_subvolume(&bare);
    fs::create_dir(&bare_snaps).expect("mkdir");
    run("btrfs", &["filesystem", "sync", text(mnt)]);
    let volume = Volume::new(&ours, VolumeFormat::Other("subvolume".into()));
    let b = text(&bare).to_owned();

    let mut create = Times::default();
    let mut created: Vec<CreatedSnapshot> = Vec::new();
    for r in 0..RUNS {
        let bs = text(&bare_snaps.join(format!("s{r}"))).to_owned();
        create.pair(
            r,
            || {
                let p = plan(&format!("s{r}"), SnapshotMode::Internal, None);
                let (t, c) = timed_call(rt, "create", driver.create(&volume, &p, None));
                created.push(c);
                t
            },
            || timed("btrfs", &["subvolume", "snapshot", "-r", &b, &bs]),
        );
    }
    // The bare revert: move the volume away, snapshot the snapshot into
    // its place; then, for the second figure, delete the old state as the
    // driver does.
    let mut revert = Times::default();
    let mut with_delete = Vec::new();
    for (r, c) in created.iter().enumerate() {
        for v in [&ours, &bare] {
            fs::write(v.join("d000/f000"), format!("changed {r}")).expect("write");
        }
        let bs = text(&bare_snaps.join(format!("s{r}"))).to_owned();
        let old = format!("{b}.old{r}");
        revert.pair(
            r,
            || {
                timed_call(
                    rt,
                    "revert",
                    driver.revert(&volume, &c.as_ref(), false, None),
                )
                .0
            },
            || {
                let pair =
                    timed("mv", &[&b, &old]) + timed("btrfs", &["subvolume", "snapshot", &bs, &b]);
                with_delete.push(pair + timed("btrfs", &["subvolume", "delete", &old]));
                pair
            },
        );
    }
    let ours_revert = median(revert.ours.clone());
    let mut delete = Times::default();
    let context = DeleteContext::default();
    for (r, c) in created.iter().enumerate() {
        let bs = text(&bare_snaps.join(format!("s{r}"))).to_owned();
        delete.pair(
            r,
            || {
                timed_call(
                    rt,
                    "delete",
                    driver.delete(&volume, &c.as_ref(), &context, None),
                )
                .0
            },
            || timed("btrfs", &["subvolume", "delete", &bs]),
        );
    }
    vec![
        create.row("10k-file subvol create", "btrfs subvolume snapshot -r"),
        revert.row("10k-file subvol revert", "mv + btrfs subvolume snapshot"),
        Row {
            what: "  against + delete old",
            peer: "mv + snapshot + subvolume delete",
            ours: ours_revert,
            bare: median(with_delete),
        },
        delete.row("10k-file subvol delete", "btrfs subvolume delete"),
    ]
}

fn main() {
    let fs = match Btrfs::new() {
        Ok(fs) => fs,
        Err(reason) => {
            println!(
                "btrfs bench: skipped, a loop-mounted btrfs cannot be made here: {reason} \
                 (run as root with btrfs-progs and loop devices)"
            );
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let driver = BtrfsDriver::new();
    let mut rows = file_rows(&rt, &driver, &fs.mount);
    rows.extend(subvolume_rows(&rt, &driver, &fs.mount));
    drop(rt);
    drop(fs);

    println!(
        "btrfs bench: BtrfsDriver in process against the bare tools on a loop-mounted btrfs, \
         median of {RUNS}; ratio = virtsnap / peer"
    );
    println!(
        "{:<24} {:>12} {:>10} {:>8}  peer",
        "operation", "virtsnap ms", "peer ms", "ratio"
    );
    for row in &rows {
        println!(
            "{:<24} {:>12.2} {:>10.2} {:>8.2}  {}",
            row.what,
            ms(row.ours),
            ms(row.bare),
            row.ours.as_secs_f64() / row.bare.as_secs_f64(),
            row.peer
        );
    }
}
