//! What the rbd plugin's tests share: the cluster (one per test process,
//! or the one `VIRTSNAP_TEST_CEPH_CONF` names), the plugin loaded through
//! the ABI from a plugin directory, and reads and writes of RBD images
//! through librbd (the plugin crate's binding), as a guest would make
//! them.

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use plugin_abi::host::{self, PluginDriver};
use snapshot_core::conformance::backends;
use snapshot_core::conformance::{CHUNK, Harness, VOLUME_SIZE};
use snapshot_core::driver::{CreatedSnapshot, SnapshotMode, Volume, VolumeDriver, VolumeFormat};
use testceph::{Cluster, Namespace};
use virtsnap_plugin_rbd::librbd::{self, ConnectOptions, Image};
use virtsnap_plugin_rbd::name;

/// The test cluster, or `None` after a skip (or a failure when backends
/// are required) that says why.
pub fn cluster() -> Option<&'static Cluster> {
    match Cluster::shared() {
        Ok(c) => Some(c),
        Err(skip) => {
            let _ = backends::skip(skip.reason());
            None
        }
    }
}

/// A namespace of its own for one test.
pub fn namespace(label: &str) -> Option<Namespace<'static>> {
    let cluster = cluster()?;
    Some(
        cluster
            .namespace(label)
            .unwrap_or_else(|e| panic!("creating an RBD namespace: {e}")),
    )
}

/// The built plugin library.
pub fn plugin_library() -> PathBuf {
    plugin_abi::testing::cargo_plugin("virtsnap-plugin-rbd", "virtsnap_plugin_rbd")
}

/// A trusted plugin directory holding the rbd plugin (and nothing else),
/// as an administrator installs it.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = plugin_abi::testing::plugin_dir().join("rbd");
        std::fs::create_dir_all(&dir).expect("plugin dir");
        let target = dir.join("libvirtsnap_plugin_rbd.so");
        std::fs::copy(plugin_library(), &target).expect("installing the plugin");
        dir
    })
}

/// The rbd plugin, discovered in [`plugin_dir`] and opened as a driver.
pub fn plugin() -> PluginDriver {
    let found = host::discover(
        &[plugin_dir().to_path_buf()],
        &["file", "qemu", "lvm", "btrfs"],
    );
    let plugin = found
        .into_iter()
        .map(|d| {
            d.result
                .unwrap_or_else(|e| panic!("loading the rbd plugin: {e}"))
        })
        .find(|p| p.name == "rbd")
        .expect("the plugin directory holds a plugin named rbd");
    PluginDriver::open(plugin).unwrap_or_else(|e| panic!("opening the rbd plugin: {e}"))
}

/// A librbd connection for the tests' own reads and writes. Never kept
/// in a static: a librados client still running when the process exits
/// crashes in librados's own exit handlers, so every connection ends
/// with the image that holds it.
fn connection(spec: &ConnectOptions) -> librbd::Cluster {
    let mut options = spec.clone();
    // Several clients in one process would fight over one admin socket.
    options
        .options
        .push(("admin_socket".to_string(), String::new()));
    librbd::Cluster::connect(&options).unwrap_or_else(|e| panic!("connecting: {e}"))
}

/// The image a volume name names, opened through librbd (at `snapshot`,
/// read-only, when given).
pub fn open(volume: &str, snapshot: Option<&str>) -> Image {
    let n = name::parse(volume).unwrap_or_else(|e| panic!("{e}"));
    let io = connection(&n.cluster)
        .ioctx(&n.pool, n.namespace.as_deref())
        .unwrap_or_else(|e| panic!("{e}"));
    match snapshot {
        Some(s) => io.open_read_only(&n.image, Some(s)),
        None => io.open(&n.image),
    }
    .unwrap_or_else(|e| panic!("opening {volume}: {e}"))
}

/// Everything `image` holds.
pub fn read_all(image: &Image) -> Vec<u8> {
    let size = image.size().expect("size");
    let mut out = vec![0u8; usize::try_from(size).expect("fits")];
    let mut done = 0usize;
    while done < out.len() {
        let n = image
            .read(done as u64, &mut out[done..])
            .unwrap_or_else(|e| panic!("reading: {e}"));
        assert!(n > 0, "short read at {done}");
        done += n;
    }
    out
}

/// The sha256 of what a guest reads from `volume` (at `snapshot`).
pub fn sha256(volume: &str, snapshot: Option<&str>) -> String {
    use sha2::Digest as _;
    format!(
        "{:x}",
        sha2::Sha256::digest(read_all(&open(volume, snapshot)))
    )
}

/// The conformance suite's harness: the plugin through the ABI, volumes
/// as images of one test namespace.
pub struct RbdHarness {
    pub driver: PluginDriver,
    pub ns: Namespace<'static>,
}

impl RbdHarness {
    /// A harness on a namespace of its own, or `None` after a skip.
    pub fn new(label: &str) -> Option<Self> {
        let ns = namespace(label)?;
        Some(Self {
            driver: plugin(),
            ns,
        })
    }
}

impl Harness for RbdHarness {
    fn driver(&self) -> &dyn VolumeDriver {
        &self.driver
    }

    fn mode(&self) -> SnapshotMode {
        SnapshotMode::Internal
    }

    fn new_volume(&self, _dir: &Path, name: &str) -> Volume {
        self.ns
            .create_image(name, VOLUME_SIZE)
            .unwrap_or_else(|e| panic!("creating image {name}: {e}"));
        Volume::new(self.ns.volume_name(name), VolumeFormat::Raw)
    }

    fn write(&self, volume: &Volume, offset: u64, len: u64, pattern: u8) {
        let image = open(&volume.path.to_string_lossy(), None);
        let data = vec![pattern; usize::try_from(len).expect("fits")];
        image
            .write(offset, &data)
            .unwrap_or_else(|e| panic!("writing: {e}"));
        image.flush().unwrap_or_else(|e| panic!("flushing: {e}"));
    }

    fn content(&self, volume: &Volume) -> Vec<u8> {
        read_all(&open(&volume.path.to_string_lossy(), None))
    }

    /// RBD snapshots cannot be written: the damage is a snapshot of the
    /// same name that holds other data (removed and taken again after a
    /// write), which its recorded checksum no longer matches. The volume
    /// ends as it was.
    fn damage(&self, volume: &Volume, snapshot: &CreatedSnapshot) {
        let name = volume.path.to_string_lossy().into_owned();
        let image = open(&name, None);
        let before = read_all(&image);
        image
            .snap_remove(&snapshot.name)
            .unwrap_or_else(|e| panic!("{e}"));
        image
            .write(0, &vec![0x99; usize::try_from(CHUNK).expect("fits")])
            .unwrap_or_else(|e| panic!("{e}"));
        image
            .snap_create(&snapshot.name)
            .unwrap_or_else(|e| panic!("{e}"));
        image
            .write(0, &before[..usize::try_from(CHUNK).expect("fits")])
            .unwrap_or_else(|e| panic!("{e}"));
        image.flush().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The `virtsnap` binary with a state directory of its own and a plugin
/// directory.
pub struct Cli {
    state: Arc<tempfile::TempDir>,
    plugins: PathBuf,
}

impl Cli {
    /// With a fresh state directory and the plugins in `plugins`.
    pub fn new(plugins: &Path) -> Self {
        Self {
            state: Arc::new(tempfile::tempdir().expect("state dir")),
            plugins: plugins.to_path_buf(),
        }
    }

    /// The same state directory with the plugins in `plugins`.
    pub fn with_plugins(&self, plugins: &Path) -> Self {
        Self {
            state: Arc::clone(&self.state),
            plugins: plugins.to_path_buf(),
        }
    }

    /// The state directory.
    pub fn state(&self) -> &Path {
        self.state.path()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(plugin_abi::testing::cargo_bin("virtsnap", "virtsnap"))
            .args(args)
            .env("VIRTSNAP_STATE", self.state.path())
            .env("VIRTSNAP_PLUGIN_DIR", &self.plugins)
            .output()
            .expect("running virtsnap")
    }

    /// Runs it, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "virtsnap {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs it, which must fail; its stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "virtsnap {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
