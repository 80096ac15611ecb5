//! `cargo xtask bench rbd`: what virtsnap costs on Ceph RBD, against
//! librbd and the `rbd` tool doing the same work, in one run on one
//! cluster (started here in a temporary directory and stopped at the end,
//! or the one `VIRTSNAP_TEST_CEPH_CONF` names). Each way works on a
//! 256 MiB image of pseudo-random data (written through librbd) in an RBD
//! namespace of its own:
//!
//! - snapshot create, rollback (8 MiB overwritten first, so there is
//!   something to roll back) and remove, four ways: virtsnap as a library
//!   (`VolumeApi` with the rbd plugin loaded through the ABI, metadata in
//!   a state directory: what embedding virtsnap costs), the `virtsnap`
//!   binary with the plugin in `VIRTSNAP_PLUGIN_DIR`, the `rbd` tool, and
//!   raw librbd calls on an image held open (connecting and opening
//!   untimed: the floor). Ratios: library / raw librbd and virtsnap /
//!   `rbd`.
//! - checksums: create with a checksum and rollback with `--verify`, each
//!   a sha256 of the whole snapshot read through librbd; the `rbd` tool's
//!   way is `rbd export IMG@SNAP - | sha256sum`, and that pass alone (and
//!   the same read + sha256 in process) is the peer of the checksum cost.
//! - incremental export and import of 32 MiB of changes:
//!   `vol-snapshot-export --from` and `vol-snapshot-import` against
//!   `rbd export-diff --from-snap` and `rbd import-diff`, and the files'
//!   sizes (the same format: they should match).
//! - fixed costs that explain the differences: starting each binary,
//!   loading the plugin, connecting to the cluster, opening an image.
//!
//! Median (min–max) of 7 runs, in milliseconds; within each run the ways
//! take turns (each first in turn), so they share the cluster's drift. The plugin and the
//! binary are release builds. Every rollback is checked (the overwritten
//! data is gone) and every checksum compared with the sha256 of the data
//! written.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_abi::host::{self, PluginDriver};
use sha2::{Digest as _, Sha256};
use snapshot_core::driver::{Volume, VolumeDriver, VolumeState};
use snapshot_core::store::Layout;
use snapshot_core::volume::{CreateOptions, DeletePolicy, RevertOptions, VolumeApi};
use testceph::{Cluster, Namespace};
use virtsnap_plugin_rbd::librbd::{self, ConnectOptions, Image, IoCtx};

const RUNS: usize = 7;
const MIB: u64 = 1 << 20;
const IMAGE_MIB: u64 = 256;
/// MiB overwritten (in 1 MiB pieces spread over the image) before each
/// rollback.
const SCRIBBLE_MIB: u64 = 8;
/// MiB changed (in 1 MiB pieces) between the two snapshots of the
/// incremental export.
const DIFF_MIB: u64 = 32;
/// Bytes read at once for a checksum, as the plugin reads.
const CHUNK: usize = 4 << 20;
const IMAGE: &str = "disk";
const REPLICA: &str = "replica";
const POOL: &str = testceph::POOL;

// ---------------------------------------------------------------------------
// Measurements

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, min and max of some samples.
#[derive(Debug, Clone, Copy)]
struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Self {
        assert!(!samples.is_empty(), "no samples");
        let mut v = samples.to_vec();
        v.sort();
        Self {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    fn cell(self) -> String {
        format!(
            "{:.1} ({:.1}–{:.1})",
            ms(self.median),
            ms(self.min),
            ms(self.max)
        )
    }
}

/// The samples of every (way, operation).
#[derive(Debug, Default)]
struct Times(Vec<((&'static str, &'static str), Vec<Duration>)>);

impl Times {
    fn add(&mut self, way: &'static str, op: &'static str, took: Duration) {
        match self.0.iter_mut().find(|(key, _)| *key == (way, op)) {
            Some((_, v)) => v.push(took),
            None => self.0.push(((way, op), vec![took])),
        }
    }

    fn get(&self, way: &str, op: &str) -> Option<Stats> {
        self.0
            .iter()
            .find(|((w, o), _)| *w == way && *o == op)
            .map(|(_, v)| Stats::of(v))
    }
}

/// `a / b` of two medians, as `1.23x`, or `-`.
fn ratio(a: Option<Stats>, b: Option<Stats>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", ms(a.median) / ms(b.median)),
        _ => "-".to_string(),
    }
}

fn cell(s: Option<Stats>) -> String {
    s.map_or_else(|| "-".to_string(), Stats::cell)
}

// ---------------------------------------------------------------------------
// Data

/// `len` pseudo-random bytes (splitmix64-seeded xorshift64), so nothing
/// compresses and no two pieces are alike.
fn random(seed: u64, len: u64) -> Vec<u8> {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let mut state = (z ^ (z >> 31)) | 1;
    let mut data = vec![0u8; usize::try_from(len).expect("fits")];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// The offsets of `pieces` 1 MiB pieces spread evenly over the image,
/// shifted by `shift` MiB.
fn offsets(pieces: u64, shift: u64) -> Vec<u64> {
    let stride = IMAGE_MIB / pieces;
    (0..pieces)
        .map(|k| (k * stride + shift % stride) * MIB)
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// The sha256 of what `image` (opened at a snapshot) holds, read as the
/// plugin reads it.
fn digest(image: &Image) -> String {
    let size = image.size().expect("size");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from((size - offset).min(CHUNK as u64)).expect("fits");
        let got = image
            .read(offset, &mut buf[..want])
            .unwrap_or_else(|e| panic!("reading: {e}"));
        assert!(got > 0, "short read at {offset}");
        hasher.update(&buf[..got]);
        offset += got as u64;
    }
    format!("{:x}", hasher.finalize())
}

fn write_pieces(image: &Image, pieces: &[(u64, Vec<u8>)]) {
    for (offset, data) in pieces {
        image
            .write(*offset, data)
            .unwrap_or_else(|e| panic!("writing at {offset}: {e}"));
    }
    image.flush().unwrap_or_else(|e| panic!("flushing: {e}"));
}

// ---------------------------------------------------------------------------
// Running programs

/// Runs `cmd` to success; its wall time and standard output.
fn timed(cmd: &mut Command) -> (Duration, String) {
    cmd.stdin(Stdio::null());
    let started = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the binary `bin` of `package` in the release profile into the
/// bench's target directory and returns its path.
fn release_bin(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = plugin_abi::testing::target_dir();
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(plugin_abi::testing::workspace())
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "cargo build --release -p {package} failed"
    );
    let path = target.join("release").join(bin);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// What every way shares: the programs, the cluster's configuration, the
/// runtime for the library calls.
struct Env {
    virtsnap: PathBuf,
    plugins: PathBuf,
    state: PathBuf,
    conf: PathBuf,
    rt: tokio::runtime::Runtime,
    /// The sha256 of the data every image is filled with.
    filled: String,
}

impl Env {
    fn virtsnap(&self, args: &[&str]) -> (Duration, String) {
        timed(
            Command::new(&self.virtsnap)
                .args(args)
                .env("VIRTSNAP_STATE", &self.state)
                .env("VIRTSNAP_PLUGIN_DIR", &self.plugins),
        )
    }

    fn rbd(&self, args: &[&str]) -> Duration {
        timed(Command::new("rbd").arg("--conf").arg(&self.conf).args(args)).0
    }

    /// `rbd export SPEC - | sha256sum`: its time and the digest.
    fn rbd_sha256(&self, spec: &str) -> (Duration, String) {
        let started = Instant::now();
        let mut rbd = Command::new("rbd")
            .arg("--conf")
            .arg(&self.conf)
            .args(["export", "--no-progress", spec, "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running rbd export");
        let sum = Command::new("sha256sum")
            .stdin(rbd.stdout.take().expect("a pipe"))
            .output()
            .expect("running sha256sum");
        let status = rbd.wait().expect("waiting for rbd export");
        let took = started.elapsed();
        assert!(
            status.success() && sum.status.success(),
            "rbd export {spec} - | sha256sum failed"
        );
        let text = String::from_utf8_lossy(&sum.stdout);
        let hex = text.split_whitespace().next().unwrap_or_default();
        (took, hex.to_string())
    }
}

// ---------------------------------------------------------------------------
// The ways

enum How {
    /// `VolumeApi` with the plugin loaded through the ABI.
    Library { api: VolumeApi, volume: Volume },
    /// The `virtsnap` binary.
    Cli,
    /// The `rbd` tool.
    Rbd,
    /// librbd calls on an image held open.
    Raw { image: Image },
}

/// One way of doing the work, on image `disk` of a namespace of its own.
struct Way {
    label: &'static str,
    /// The namespace, for this bench's own reads and writes.
    io: IoCtx,
    /// `rbd/NS/disk`.
    spec: String,
    /// `rbd:rbd/NS/disk:conf=CONF`.
    volume: String,
    /// The same for the replica of the import.
    replica_spec: String,
    replica_volume: String,
    how: How,
}

/// What one timed operation did.
struct Done {
    took: Duration,
    /// The sha256 the operation computed, when it says.
    digest: Option<String>,
    /// The checksum pass alone, when it can be timed apart.
    pass: Option<Duration>,
}

impl Done {
    fn took(took: Duration) -> Self {
        Self {
            took,
            digest: None,
            pass: None,
        }
    }
}

impl Way {
    fn new(label: &'static str, ns: &Namespace<'_>, conn: &librbd::Cluster, how: How) -> Self {
        let io = conn
            .ioctx(POOL, Some(ns.name()))
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            label,
            io,
            spec: ns.image_spec(IMAGE),
            volume: ns.volume_name(IMAGE),
            replica_spec: ns.image_spec(REPLICA),
            replica_volume: ns.volume_name(REPLICA),
            how,
        }
    }

    /// Runs `f` on the image: the raw way's own handle, else a handle of
    /// this bench's connection, closed afterwards (so that no other client
    /// holds the image when the way runs).
    fn with_image<R>(&self, f: impl FnOnce(&Image) -> R) -> R {
        match &self.how {
            How::Raw { image } => f(image),
            _ => f(&self.io.open(IMAGE).unwrap_or_else(|e| panic!("{e}"))),
        }
    }

    fn lib(&self) -> Option<(&VolumeApi, &Volume)> {
        match &self.how {
            How::Library { api, volume } => Some((api, volume)),
            _ => None,
        }
    }

    /// The sha256 of snapshot `snap`, read through this bench's
    /// connection: the time of that pass and the digest.
    fn read_digest(&self, snap: &str) -> (Duration, String) {
        let started = Instant::now();
        let image = self
            .io
            .open_read_only(IMAGE, Some(snap))
            .unwrap_or_else(|e| panic!("{e}"));
        let sum = digest(&image);
        drop(image);
        (started.elapsed(), sum)
    }

    fn create(&self, env: &Env, snap: &str, checksum: bool) -> Done {
        match &self.how {
            How::Library { api, volume } => {
                let options = CreateOptions {
                    name: Some(snap.to_string()),
                    checksum,
                    ..CreateOptions::default()
                };
                let started = Instant::now();
                let def = env
                    .rt
                    .block_on(api.snapshot_create_xml(volume, None, &options, None))
                    .unwrap_or_else(|e| panic!("library create {snap}: {e}"));
                Done {
                    took: started.elapsed(),
                    digest: def.target.checksum.map(|c| c.value),
                    pass: None,
                }
            }
            How::Cli => {
                let mut args = vec!["vol-snapshot-create", &self.volume, "--name", snap];
                if checksum {
                    args.push("--checksum");
                }
                let took = env.virtsnap(&args).0;
                let digest = checksum.then(|| {
                    let xml = env
                        .virtsnap(&["vol-snapshot-dumpxml", &self.volume, snap])
                        .1;
                    assert!(
                        xml.contains(&env.filled),
                        "the CLI's checksum of {snap} is not the data's:\n{xml}"
                    );
                    env.filled.clone()
                });
                Done {
                    took,
                    digest,
                    pass: None,
                }
            }
            How::Rbd => {
                let at = format!("{}@{snap}", self.spec);
                let mut took = env.rbd(&["snap", "create", "--no-progress", &at]);
                if !checksum {
                    return Done::took(took);
                }
                let (pass, sum) = env.rbd_sha256(&at);
                took += pass;
                Done {
                    took,
                    digest: Some(sum),
                    pass: Some(pass),
                }
            }
            How::Raw { image } => {
                let started = Instant::now();
                image
                    .snap_create(snap)
                    .unwrap_or_else(|e| panic!("snap_create {snap}: {e}"));
                if !checksum {
                    return Done::took(started.elapsed());
                }
                let (pass, sum) = self.read_digest(snap);
                Done {
                    took: started.elapsed(),
                    digest: Some(sum),
                    pass: Some(pass),
                }
            }
        }
    }

    /// Rolls back to `snap`, verifying its checksum first when `verify`
    /// (the peers compare with `expected` as the plugin compares with
    /// the recorded one).
    fn rollback(&self, env: &Env, snap: &str, verify: bool, expected: &str) -> Done {
        match &self.how {
            How::Library { api, volume } => {
                let options = RevertOptions {
                    verify,
                    drop_newer: false,
                };
                let started = Instant::now();
                env.rt
                    .block_on(api.revert_to_snapshot(volume, snap, options, None))
                    .unwrap_or_else(|e| panic!("library revert {snap}: {e}"));
                Done::took(started.elapsed())
            }
            How::Cli => {
                let mut args = vec!["vol-snapshot-revert", &self.volume, snap];
                if verify {
                    args.push("--verify");
                }
                Done::took(env.virtsnap(&args).0)
            }
            How::Rbd => {
                let at = format!("{}@{snap}", self.spec);
                let mut done = Done::took(Duration::ZERO);
                if verify {
                    let (pass, sum) = env.rbd_sha256(&at);
                    assert_eq!(sum, expected, "rbd export of {at}");
                    done.pass = Some(pass);
                    done.took += pass;
                }
                done.took += env.rbd(&["snap", "rollback", "--no-progress", &at]);
                done
            }
            How::Raw { image } => {
                let started = Instant::now();
                let mut pass = None;
                if verify {
                    let (took, sum) = self.read_digest(snap);
                    assert_eq!(sum, expected, "raw read of {snap}");
                    pass = Some(took);
                }
                image
                    .snap_rollback(snap)
                    .unwrap_or_else(|e| panic!("snap_rollback {snap}: {e}"));
                Done {
                    took: started.elapsed(),
                    digest: None,
                    pass,
                }
            }
        }
    }

    fn remove(&self, env: &Env, snap: &str) -> Done {
        match &self.how {
            How::Library { api, volume } => {
                let started = Instant::now();
                env.rt
                    .block_on(api.snapshot_delete(volume, snap, DeletePolicy::Rebase, None))
                    .unwrap_or_else(|e| panic!("library delete {snap}: {e}"));
                Done::took(started.elapsed())
            }
            How::Cli => Done::took(env.virtsnap(&["vol-snapshot-delete", &self.volume, snap]).0),
            How::Rbd => Done::took(env.rbd(&[
                "snap",
                "rm",
                "--no-progress",
                &format!("{}@{snap}", self.spec),
            ])),
            How::Raw { image } => {
                let started = Instant::now();
                image
                    .snap_remove(snap)
                    .unwrap_or_else(|e| panic!("snap_remove {snap}: {e}"));
                Done::took(started.elapsed())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 1 and 2: create, rollback, remove; with checksums

const CREATE: &str = "create";
const ROLLBACK: &str = "rollback";
const REMOVE: &str = "remove";
const CREATE_SUM: &str = "create + checksum";
const ROLLBACK_VERIFY: &str = "rollback --verify";
const PASS: &str = "checksum pass";

/// One run of one way: create, overwrite, rollback, remove; then the
/// same with a checksum and a verified rollback.
fn snapshot_round(env: &Env, way: &Way, run: usize, fill: &[u8], times: &mut Times) {
    let run64 = run as u64;
    let scribble = |round: u64| {
        let pieces: Vec<(u64, Vec<u8>)> = offsets(SCRIBBLE_MIB, run64)
            .into_iter()
            .enumerate()
            .map(|(k, offset)| (offset, random(1000 * run64 + 100 * round + k as u64, MIB)))
            .collect();
        way.with_image(|image| write_pieces(image, &pieces));
    };
    // The overwritten data is gone again.
    let check = |snap: &str| {
        let offset = offsets(SCRIBBLE_MIB, run64)[1];
        let at = usize::try_from(offset).expect("fits");
        let mut buf = vec![0u8; usize::try_from(MIB).expect("fits")];
        way.with_image(|image| {
            let n = image.read(offset, &mut buf).expect("read");
            assert_eq!(n, buf.len(), "short read");
        });
        assert!(
            buf == fill[at..at + buf.len()],
            "{}: the rollback to {snap} left the overwritten data",
            way.label
        );
    };

    let plain = format!("s{run}");
    times.add(way.label, CREATE, way.create(env, &plain, false).took);
    scribble(0);
    let done = way.rollback(env, &plain, false, &env.filled);
    times.add(way.label, ROLLBACK, done.took);
    check(&plain);
    times.add(way.label, REMOVE, way.remove(env, &plain).took);

    let summed = format!("k{run}");
    let done = way.create(env, &summed, true);
    times.add(way.label, CREATE_SUM, done.took);
    if let Some(pass) = done.pass {
        times.add(way.label, PASS, pass);
    }
    assert_eq!(
        done.digest.as_deref(),
        Some(env.filled.as_str()),
        "{}: the checksum of {summed}",
        way.label
    );
    scribble(1);
    let done = way.rollback(env, &summed, true, &env.filled);
    times.add(way.label, ROLLBACK_VERIFY, done.took);
    check(&summed);
    way.remove(env, &summed);
}

// ---------------------------------------------------------------------------
// 3: incremental export and import

const EXPORT: &str = "export --from";
const EXPORT_SYNC: &str = "export --from, + sync FILE";
const IMPORT: &str = "import of it";

/// Sizes of the files each way wrote: the full export and the
/// incremental one.
#[derive(Debug, Default, Clone, Copy)]
struct Sizes {
    full: u64,
    incremental: u64,
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

struct Transfer<'w> {
    way: &'w Way,
    dir: PathBuf,
    full: PathBuf,
    incremental: PathBuf,
    sizes: Sizes,
    /// One run each: the full export of `base` and its import.
    full_times: (Duration, Duration),
    /// The replica as a volume of the library.
    replica: Option<Volume>,
}

impl<'w> Transfer<'w> {
    fn new(way: &'w Way, scratch: &Path) -> Self {
        let dir = scratch.join(format!("transfer-{}", way.label.replace(' ', "-")));
        std::fs::create_dir_all(&dir).expect("a directory for the exports");
        Self {
            way,
            full: dir.join("full.diff"),
            incremental: dir.join("incremental.diff"),
            dir,
            sizes: Sizes::default(),
            full_times: (Duration::ZERO, Duration::ZERO),
            replica: None,
        }
    }

    fn snapshot(&self, env: &Env, name: &str) {
        self.way.create(env, name, false);
    }

    /// Exports `to` (since `from`) into `file`: the time, and the time of
    /// `sync FILE` where the way does not sync itself.
    fn export(
        &self,
        env: &Env,
        to: &str,
        from: Option<&str>,
        file: &Path,
    ) -> (Duration, Option<Duration>) {
        let way = self.way;
        match &way.how {
            How::Library { api, volume } => {
                let started = Instant::now();
                env.rt
                    .block_on(api.snapshot_export(volume, to, from, file, None))
                    .unwrap_or_else(|e| panic!("library export {to}: {e}"));
                (started.elapsed(), None)
            }
            How::Cli => {
                let mut args = vec!["vol-snapshot-export", &way.volume, to];
                if let Some(from) = from {
                    args.extend(["--from", from]);
                }
                args.push(utf8(file));
                (env.virtsnap(&args).0, None)
            }
            How::Rbd => {
                let at = format!("{}@{to}", way.spec);
                let mut args = vec!["export-diff", "--no-progress"];
                if let Some(from) = from {
                    args.extend(["--from-snap", from]);
                }
                args.extend([at.as_str(), utf8(file)]);
                let took = env.rbd(&args);
                let sync = timed(Command::new("sync").arg(file)).0;
                (took, Some(sync))
            }
            How::Raw { .. } => unreachable!("the raw way exports nothing"),
        }
    }

    fn import(&self, env: &Env, file: &Path) -> Duration {
        let way = self.way;
        match &way.how {
            How::Library { api, .. } => {
                let replica = self.replica.as_ref().expect("the replica");
                let started = Instant::now();
                env.rt
                    .block_on(api.snapshot_import(replica, file, None, None))
                    .unwrap_or_else(|e| panic!("library import {}: {e}", file.display()));
                started.elapsed()
            }
            How::Cli => {
                env.virtsnap(&["vol-snapshot-import", &way.replica_volume, utf8(file)])
                    .0
            }
            How::Rbd => env.rbd(&[
                "import-diff",
                "--no-progress",
                utf8(file),
                &way.replica_spec,
            ]),
            How::Raw { .. } => unreachable!("the raw way imports nothing"),
        }
    }

    /// Forgets the imported `next` on the replica and rolls it back to
    /// `base`, for the next import.
    fn reset_replica(&self, env: &Env) {
        let way = self.way;
        match &way.how {
            How::Library { api, .. } => {
                let replica = self.replica.as_ref().expect("the replica");
                env.rt
                    .block_on(api.snapshot_delete(replica, "next", DeletePolicy::Rebase, None))
                    .unwrap_or_else(|e| panic!("library delete of the imported next: {e}"));
            }
            How::Cli => {
                env.virtsnap(&["vol-snapshot-delete", &way.replica_volume, "next"]);
            }
            How::Rbd => {
                env.rbd(&[
                    "snap",
                    "rm",
                    "--no-progress",
                    &format!("{}@next", way.replica_spec),
                ]);
            }
            How::Raw { .. } => unreachable!(),
        }
        let replica = way.io.open(REPLICA).unwrap_or_else(|e| panic!("{e}"));
        replica
            .snap_rollback("base")
            .unwrap_or_else(|e| panic!("rolling the replica back: {e}"));
    }

    /// `base`, 32 MiB of changes, `next`; the full export of `base`
    /// imported on an empty replica.
    fn set_up(&mut self, env: &Env, changes: &[(u64, Vec<u8>)]) {
        self.snapshot(env, "base");
        self.way.with_image(|image| write_pieces(image, changes));
        self.snapshot(env, "next");
        self.way
            .io
            .create_image(REPLICA, IMAGE_MIB * MIB, None)
            .unwrap_or_else(|e| panic!("creating the replica: {e}"));
        if let Some((api, _)) = self.way.lib() {
            self.replica = Some(
                api.volume(Path::new(&self.way.replica_volume), None)
                    .expect("the replica volume"),
            );
        }
        let (export, sync) = self.export(env, "base", None, &self.full);
        let import = self.import(env, &self.full);
        self.full_times = (export + sync.unwrap_or_default(), import);
        self.sizes.full = len(&self.full);
    }

    fn round(&mut self, env: &Env, run: usize, expected_next: &str, times: &mut Times) {
        let label = self.way.label;
        let file = self.dir.join(format!("incremental-{run}.diff"));
        let (took, sync) = self.export(env, "next", Some("base"), &file);
        times.add(label, EXPORT, took);
        if let Some(sync) = sync {
            times.add(label, EXPORT_SYNC, took + sync);
        }
        let size = len(&file);
        if run == 0 {
            self.sizes.incremental = size;
            std::fs::rename(&file, &self.incremental).expect("keeping the first export");
        } else {
            assert_eq!(size, self.sizes.incremental, "{label}: export {run}'s size");
            std::fs::remove_file(&file).expect("removing an export");
        }
        times.add(label, IMPORT, self.import(env, &self.incremental));
        if run == 0 {
            let replica = self
                .way
                .io
                .open_read_only(REPLICA, Some("next"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                digest(&replica),
                expected_next,
                "{label}: the replica's next after the import"
            );
        }
        self.reset_replica(env);
    }
}

// ---------------------------------------------------------------------------
// Fixed costs

fn fixed_costs(
    env: &Env,
    cluster: &Cluster,
    ways: &[Way],
    driver: &Arc<dyn VolumeDriver>,
) -> Vec<(&'static str, Stats)> {
    let (_, library_volume) = ways[0].lib().expect("the library way");
    let (cli, raw) = (&ways[1], &ways[3]);
    let mut rows: Vec<(&'static str, Vec<Duration>)> = vec![
        ("virtsnap --version (process start-up)", Vec::new()),
        ("virtsnap plugin-list (+ plugin dlopen)", Vec::new()),
        (
            "virtsnap vol-snapshot-list VOL (+ plugin open: librbd load; metadata only)",
            Vec::new(),
        ),
        (
            "virtsnap plugin-list --volume VOL (+ connect, 2 capabilities calls)",
            Vec::new(),
        ),
        ("rbd --version (process start-up)", Vec::new()),
        ("rbd ls (+ connect, list)", Vec::new()),
        ("librados connect, in process", Vec::new()),
        ("librados shutdown, in process", Vec::new()),
        ("librbd image open + close, in process", Vec::new()),
        (
            "rbd plugin capabilities call through the ABI (image open + close)",
            Vec::new(),
        ),
    ];
    for _ in 0..RUNS {
        rows[0].1.push(env.virtsnap(&["--version"]).0);
        rows[1].1.push(env.virtsnap(&["plugin-list"]).0);
        rows[2]
            .1
            .push(env.virtsnap(&["vol-snapshot-list", &cli.volume]).0);
        rows[3]
            .1
            .push(env.virtsnap(&["plugin-list", "--volume", &cli.volume]).0);
        rows[4].1.push(env.rbd(&["--version"]));
        rows[5]
            .1
            .push(env.rbd(&["ls", "--pool", POOL, "--namespace", raw.io.namespace()]));
        let started = Instant::now();
        let conn = connect(cluster);
        rows[6].1.push(started.elapsed());
        let started = Instant::now();
        drop(conn);
        rows[7].1.push(started.elapsed());
        let started = Instant::now();
        let image = raw.io.open(IMAGE).unwrap_or_else(|e| panic!("{e}"));
        drop(image);
        rows[8].1.push(started.elapsed());
        let started = Instant::now();
        let caps = env
            .rt
            .block_on(driver.capabilities(library_volume, VolumeState::Offline))
            .unwrap_or_else(|e| panic!("capabilities: {e}"));
        rows[9].1.push(started.elapsed());
        assert!(caps.internal);
    }
    rows.into_iter().map(|(l, v)| (l, Stats::of(&v))).collect()
}

// ---------------------------------------------------------------------------

/// A connection of this bench's own.
fn connect(cluster: &Cluster) -> librbd::Cluster {
    librbd::Cluster::connect(&ConnectOptions {
        conf: Some(cluster.conf().to_path_buf()),
        // Several clients in one process would fight over one admin
        // socket: the plugin's client keeps it.
        options: vec![("admin_socket".to_string(), String::new())],
        ..ConnectOptions::default()
    })
    .unwrap_or_else(|e| panic!("connecting to the cluster: {e}"))
}

/// The rbd plugin, discovered in `dir` and opened as a driver.
fn plugin(dir: &Path) -> PluginDriver {
    let plugin = host::discover(&[dir.to_path_buf()], &["file", "qemu", "lvm", "btrfs"])
        .into_iter()
        .map(|d| {
            d.result
                .unwrap_or_else(|e| panic!("loading the plugin: {e}"))
        })
        .find(|p| p.name == "rbd")
        .expect("the plugin directory holds the rbd plugin");
    PluginDriver::open(plugin).unwrap_or_else(|e| panic!("opening the rbd plugin: {e}"))
}

const WAYS: [&str; 4] = ["library", "virtsnap CLI", "rbd CLI", "raw librbd"];

fn print_table(title: &str, rows: &[&str], times: &Times) {
    println!("\n{title}\n");
    println!(
        "{:<22} {:>24} {:>24} {:>24} {:>24} {:>8} {:>8}",
        "op", WAYS[0], WAYS[1], WAYS[2], WAYS[3], "lib/raw", "cli/rbd"
    );
    for op in rows {
        let s = WAYS.map(|w| times.get(w, op));
        println!(
            "{op:<22} {:>24} {:>24} {:>24} {:>24} {:>8} {:>8}",
            cell(s[0]),
            cell(s[1]),
            cell(s[2]),
            cell(s[3]),
            ratio(s[0], s[3]),
            ratio(s[1], s[2]),
        );
    }
}

/// `a - b` of two medians, in ms.
fn diff(times: &Times, way: &str, a: &str, b: &str) -> String {
    match (times.get(way, a), times.get(way, b)) {
        (Some(a), Some(b)) => format!("{:+.1}", ms(a.median) - ms(b.median)),
        _ => "-".to_string(),
    }
}

fn mib_per_s(d: Duration) -> f64 {
    IMAGE_MIB as f64 / d.as_secs_f64()
}

fn bench(cluster: &Cluster, scratch: &Path) {
    // The programs: the plugin in a trusted directory, the CLI.
    let plugins = scratch.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    std::fs::copy(
        plugin_abi::testing::cargo_plugin_release("virtsnap-plugin-rbd", "virtsnap_plugin_rbd"),
        plugins.join("libvirtsnap_plugin_rbd.so"),
    )
    .expect("installing the plugin");
    let fill = random(0, IMAGE_MIB * MIB);
    let env = Env {
        virtsnap: release_bin("virtsnap", "virtsnap"),
        state: scratch.join("cli-state"),
        plugins,
        conf: cluster.conf().to_path_buf(),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime"),
        filled: sha256_hex(&fill),
    };

    // Dropped after the ways (which hold images open in them).
    let namespaces: Vec<Namespace<'_>> = ["bench-library", "bench-cli", "bench-rbd", "bench-raw"]
        .iter()
        .map(|label| {
            cluster
                .namespace(label)
                .unwrap_or_else(|e| panic!("creating a namespace: {e}"))
        })
        .collect();
    let conn = connect(cluster);
    for ns in &namespaces {
        let io = conn
            .ioctx(POOL, Some(ns.name()))
            .unwrap_or_else(|e| panic!("{e}"));
        io.create_image(IMAGE, IMAGE_MIB * MIB, None)
            .unwrap_or_else(|e| panic!("creating the image: {e}"));
        let image = io.open(IMAGE).unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        for (k, chunk) in fill.chunks(CHUNK).enumerate() {
            image
                .write(k as u64 * CHUNK as u64, chunk)
                .unwrap_or_else(|e| panic!("filling: {e}"));
        }
        image.flush().expect("flush");
        drop(image);
        println!(
            "filled {} with {IMAGE_MIB} MiB through librbd in {:.0} ms",
            ns.image_spec(IMAGE),
            ms(started.elapsed())
        );
    }

    let driver: Arc<dyn VolumeDriver> = Arc::new(plugin(&env.plugins));
    let api = VolumeApi::new(
        Layout::new(scratch.join("library-state")),
        vec![Arc::clone(&driver)],
    );
    let library_volume = api
        .volume(Path::new(&namespaces[0].volume_name(IMAGE)), None)
        .expect("the library's volume");
    let raw_image = conn
        .ioctx(POOL, Some(namespaces[3].name()))
        .and_then(|io| io.open(IMAGE))
        .unwrap_or_else(|e| panic!("{e}"));
    let ways = [
        Way::new(
            WAYS[0],
            &namespaces[0],
            &conn,
            How::Library {
                api,
                volume: library_volume,
            },
        ),
        Way::new(WAYS[1], &namespaces[1], &conn, How::Cli),
        Way::new(WAYS[2], &namespaces[2], &conn, How::Rbd),
        Way::new(
            WAYS[3],
            &namespaces[3],
            &conn,
            How::Raw { image: raw_image },
        ),
    ];

    // 1 and 2.
    let mut times = Times::default();
    let started = Instant::now();
    for run in 0..RUNS {
        // Each way in each place of the order in turn.
        for i in 0..ways.len() {
            snapshot_round(&env, &ways[(run + i) % ways.len()], run, &fill, &mut times);
        }
    }
    println!(
        "snapshot runs done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 3: the same changes on every image.
    let changes: Vec<(u64, Vec<u8>)> = offsets(DIFF_MIB, 2)
        .into_iter()
        .enumerate()
        .map(|(k, offset)| (offset, random(1_000_000 + k as u64, MIB)))
        .collect();
    let expected_next = {
        let mut next = fill.clone();
        for (offset, data) in &changes {
            let at = usize::try_from(*offset).expect("fits");
            next[at..at + data.len()].copy_from_slice(data);
        }
        sha256_hex(&next)
    };
    let mut transfers: Vec<Transfer<'_>> = ways[..3]
        .iter()
        .map(|way| Transfer::new(way, scratch))
        .collect();
    for t in &mut transfers {
        t.set_up(&env, &changes);
    }
    for run in 0..RUNS {
        let n = transfers.len();
        for i in 0..n {
            transfers[(run + i) % n].round(&env, run, &expected_next, &mut times);
        }
    }

    let fixed = fixed_costs(&env, cluster, &ways, &driver);

    // The report.
    println!(
        "\nvirtsnap on Ceph RBD: {IMAGE_MIB} MiB images of random data, one namespace per way, \
         cluster {}\nms: median (min–max) of {RUNS} runs; ratios of medians",
        cluster.conf().display()
    );
    print_table(
        &format!(
            "1. snapshots ({SCRIBBLE_MIB} MiB overwritten before each rollback) and 2. checksums \
             (sha256 of all {IMAGE_MIB} MiB)"
        ),
        &[CREATE, ROLLBACK, REMOVE, CREATE_SUM, ROLLBACK_VERIFY],
        &times,
    );
    println!(
        "\n{:<34} {:>12} {:>14} {:>12} {:>12}",
        "cost of, ms (Δ of medians)", WAYS[0], WAYS[1], WAYS[2], WAYS[3]
    );
    for (what, a, b) in [
        ("the checksum (Δ create)", CREATE_SUM, CREATE),
        ("the verification (Δ rollback)", ROLLBACK_VERIFY, ROLLBACK),
    ] {
        println!(
            "{what:<34} {:>12} {:>14} {:>12} {:>12}",
            diff(&times, WAYS[0], a, b),
            diff(&times, WAYS[1], a, b),
            diff(&times, WAYS[2], a, b),
            diff(&times, WAYS[3], a, b),
        );
    }
    println!(
        "\n{:<34} {:>12} {:>14} {:>12}",
        "per-call overhead, ms (Δ of medians)", CREATE, ROLLBACK, REMOVE
    );
    for (a, b) in [
        (WAYS[0], WAYS[3]),
        (WAYS[1], WAYS[0]),
        (WAYS[2], WAYS[3]),
        (WAYS[1], WAYS[2]),
    ] {
        let cells =
            [CREATE, ROLLBACK, REMOVE].map(|op| match (times.get(a, op), times.get(b, op)) {
                (Some(a), Some(b)) => format!("{:+.1}", ms(a.median) - ms(b.median)),
                _ => "-".to_string(),
            });
        println!(
            "{:<34} {:>12} {:>14} {:>12}",
            format!("{a} − {b}"),
            cells[0],
            cells[1],
            cells[2]
        );
    }
    let peer = times.get(WAYS[2], PASS).expect("rbd's checksum passes");
    let raw_pass = times.get(WAYS[3], PASS).expect("raw checksum passes");
    println!("\nchecksum pass alone, over the snapshot of {IMAGE_MIB} MiB:");
    println!(
        "  {:<44} {:>24}  {:>6.0} MiB/s",
        "rbd export IMG@SNAP - | sha256sum (peer)",
        peer.cell(),
        mib_per_s(peer.median)
    );
    println!(
        "  {:<44} {:>24}  {:>6.0} MiB/s",
        "librbd open + 4 MiB reads + sha256, in process",
        raw_pass.cell(),
        mib_per_s(raw_pass.median)
    );
    for way in [WAYS[0], WAYS[1]] {
        if let (Some(a), Some(b)) = (times.get(way, CREATE_SUM), times.get(way, CREATE)) {
            let cost = a.median.saturating_sub(b.median);
            println!(
                "  {:<44} {:>24}  {:>6.0} MiB/s, {:.2}x the peer",
                format!("{way}: checksum cost (Δ create)"),
                format!("{:.1}", ms(cost)),
                mib_per_s(cost),
                ms(cost) / ms(peer.median)
            );
        }
    }

    println!(
        "\n3. incremental export of {DIFF_MIB} MiB of changes (next since base) and its import \
         on a replica holding base\n"
    );
    println!(
        "{:<28} {:>24} {:>24} {:>24} {:>8} {:>8}",
        "op", WAYS[0], WAYS[1], WAYS[2], "cli/rbd", "lib/rbd"
    );
    for op in [EXPORT, EXPORT_SYNC, IMPORT] {
        let s = [WAYS[0], WAYS[1], WAYS[2]].map(|w| times.get(w, op));
        // The virtsnap ways sync their file: compare them with rbd + sync.
        let rbd = if op == EXPORT {
            times.get(WAYS[2], EXPORT_SYNC)
        } else {
            s[2]
        };
        let (cli, lib) = if op == EXPORT_SYNC {
            ("-".to_string(), "-".to_string())
        } else {
            (ratio(s[1], rbd), ratio(s[0], rbd))
        };
        println!(
            "{op:<28} {:>24} {:>24} {:>24} {cli:>8} {lib:>8}",
            cell(s[0]),
            cell(s[1]),
            cell(s[2]),
        );
    }
    println!(
        "(virtsnap fsyncs its export; the export ratios are against rbd export-diff + sync FILE)"
    );
    println!(
        "\nfiles, bytes                 incremental          full (base)   full export ms  full import ms (one run)"
    );
    for t in &transfers {
        println!(
            "{:<28} {:>12} {:>20} {:>16.0} {:>15.0}",
            t.way.label,
            t.sizes.incremental,
            t.sizes.full,
            ms(t.full_times.0),
            ms(t.full_times.1)
        );
    }
    let sizes: Vec<Sizes> = transfers.iter().map(|t| t.sizes).collect();
    let same = sizes
        .iter()
        .all(|s| s.incremental == sizes[2].incremental && s.full == sizes[2].full);
    println!(
        "{}",
        if same {
            "the files of all three ways are the same size".to_string()
        } else {
            format!(
                "SIZES DIFFER: virtsnap's incremental is {:+} bytes against rbd export-diff's",
                i128::from(sizes[1].incremental) - i128::from(sizes[2].incremental)
            )
        }
    );

    println!("\nfixed costs, ms: median (min–max) of {RUNS}\n");
    for (what, s) in &fixed {
        println!("{what:<76} {:>24}", s.cell());
    }

    drop(transfers);
    drop(ways);
    drop(driver);
    drop(conn);
    drop(namespaces);
}

fn main() {
    let scratch = tempfile::tempdir_in(
        std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from),
    )
    .expect("a scratch directory");
    let started = Instant::now();
    let cluster = match std::env::var_os(testceph::CONF_ENV).filter(|c| !c.is_empty()) {
        Some(conf) => Cluster::join(Path::new(&conf))
            .unwrap_or_else(|e| panic!("joining the cluster of {}: {e}", testceph::CONF_ENV)),
        None => {
            if let Err(skip) = testceph::installed() {
                eprintln!("rbd bench: {skip} (cargo xtask deps installs it)");
                std::process::exit(1);
            }
            let dir = tempfile::Builder::new()
                .prefix("virtsnap-bench-ceph-")
                .tempdir()
                .expect("a directory for the cluster")
                .keep();
            // Stopped, and its directory removed, when dropped.
            Cluster::start(&dir).unwrap_or_else(|e| panic!("starting a Ceph cluster: {e}"))
        }
    };
    println!(
        "{} cluster in {:.1} s ({})",
        if cluster.is_owned() {
            "started a"
        } else {
            "joined the"
        },
        started.elapsed().as_secs_f64(),
        cluster.conf().display()
    );
    bench(&cluster, scratch.path());
    drop(cluster);
}
