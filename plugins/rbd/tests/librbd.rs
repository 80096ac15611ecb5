//! The librbd binding and the RBD diff format against a real cluster
//! (testceph's: one per test process, or the one `VIRTSNAP_TEST_CEPH_CONF`
//! names): every test works in an RBD namespace of its own and checks
//! content, not just return codes. Diff files are exchanged with the
//! `rbd` CLI both ways. Without Ceph installed the tests say why and
//! pass, or fail when `VIRTSNAP_REQUIRE_BACKENDS` is set.

use std::io::{Cursor, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use virtsnap_plugin_rbd::diff::{self, DiffHeader};
use virtsnap_plugin_rbd::librbd::{
    CloneOptions, Cluster, ConnectOptions, DiffExtent, GroupImageState, GroupSnapState, Image,
    IoCtx, RbdError, SnapNamespace, SnapRemoveFlags, errno,
};

const POOL: &str = "rbd";
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// The cluster and a namespace per test (the one place that knows where the
// cluster comes from).

/// A test's view of the cluster: a connection and a fresh RBD namespace.
struct Env {
    conf: PathBuf,
    cluster: Cluster,
    io: IoCtx,
    ns: String,
}

/// The test cluster (`testceph`'s: one per test process, or the one
/// `VIRTSNAP_TEST_CEPH_CONF` names) and a new namespace in its pool
/// `rbd`, or `None` after a skip that says why. The connection is the
/// test's own and ends with it: a librados client still running at
/// process exit crashes in librados's exit handlers.
fn setup(label: &str) -> Option<Env> {
    let conf = testceph::shared_or_skip()?.conf().to_path_buf();
    let cluster = Cluster::connect(&ConnectOptions {
        conf: Some(conf.clone()),
        // Several clients in one process would fight over one socket.
        options: vec![("admin_socket".to_string(), String::new())],
        ..ConnectOptions::default()
    })
    .unwrap_or_else(|e| panic!("connecting to {}: {e}", conf.display()));
    let ns = unique(label);
    cluster
        .ioctx(POOL, None)
        .and_then(|root| root.namespace_create(&ns))
        .unwrap_or_else(|e| panic!("creating namespace {ns}: {e}"));
    let io = cluster.ioctx(POOL, Some(&ns)).expect("ioctx");
    Some(Env {
        conf,
        cluster,
        io,
        ns,
    })
}

/// A name no other test (or earlier run) uses.
fn unique(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{label}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Env {
    /// "rbd/NS/image", as the rbd CLI takes it.
    fn spec(&self, image: &str) -> String {
        format!("{POOL}/{}/{image}", self.ns)
    }

    /// Another namespace of the same pool.
    fn other_namespace(&self, label: &str) -> IoCtx {
        let ns = unique(label);
        self.cluster
            .ioctx(POOL, None)
            .and_then(|root| root.namespace_create(&ns))
            .expect("namespace");
        self.cluster.ioctx(POOL, Some(&ns)).expect("ioctx")
    }

    /// Runs the rbd CLI on this cluster; its stdout, or a panic with its
    /// stderr.
    fn rbd(&self, args: &[&str]) -> Vec<u8> {
        let out = self.rbd_output(args);
        assert!(
            out.status.success(),
            "rbd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn rbd_output(&self, args: &[&str]) -> std::process::Output {
        Command::new("rbd")
            .arg("--conf")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("running rbd")
    }

    /// What `rbd export` reads from `spec` (image or image@snap).
    fn export(&self, spec: &str) -> Vec<u8> {
        self.rbd(&["export", "--no-progress", spec, "-"])
    }

    fn create(&self, name: &str, size: u64) -> Image {
        self.io.create_image(name, size, None).expect("create");
        self.io.open(name).expect("open")
    }
}

/// `len` bytes of a pattern that differs for each seed (and no zeros, so
/// no extent of it reads as a hole).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x.to_le_bytes()[3] % 255) + 1
        })
        .collect()
}

fn read_all(image: &Image) -> Vec<u8> {
    let size = usize::try_from(image.size().expect("size")).expect("fits");
    let mut out = vec![0u8; size];
    let n = image.read(0, &mut out).expect("read");
    assert_eq!(n, size, "short read of {}", image.spec());
    out
}

fn read_at(image: &Image, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let n = image.read(offset, &mut out).expect("read");
    assert_eq!(n, len);
    out
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Names of the user snapshots.
fn snap_names(image: &Image) -> Vec<String> {
    image
        .snap_list()
        .expect("snap list")
        .into_iter()
        .map(|s| s.name)
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------
// Connecting

#[test]
fn connects_with_a_conf_and_with_mon_host_and_keyring() {
    let Some(env) = setup("connect") else { return };
    let lib = env.cluster.library();
    eprintln!(
        "librbd {:?}, librados {:?}",
        lib.rbd_version(),
        lib.rados_version()
    );
    env.create("seen", 4 * MIB);

    // The same cluster with no conf file: the monitors' addresses and the
    // keyring, read from the test conf.
    let text = std::fs::read_to_string(&env.conf).expect("conf");
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let mon_host = value("mon_host").expect("mon_host in the conf");
    let keyring = value("keyring")
        .map(PathBuf::from)
        .expect("a keyring in the conf");
    let other = Cluster::connect(&ConnectOptions {
        mon_host: Some(mon_host.clone()),
        keyring: Some(keyring.clone()),
        id: Some("admin".into()),
        ..ConnectOptions::default()
    })
    .expect("connect with mon_host and keyring");
    let io = other.ioctx(POOL, Some(&env.ns)).expect("ioctx");
    assert_eq!(io.list_images().expect("list"), ["seen"]);
    assert!(io.image_exists("seen").expect("exists"));
    assert!(!io.image_exists("unseen").expect("exists"));
    assert_eq!(io.pool(), POOL);
    assert_eq!(io.namespace(), env.ns);

    // A wrong key is refused with librados's errno, not a hang.
    let err = Cluster::connect(&ConnectOptions {
        mon_host: Some(mon_host),
        key: Some("AQBGxqVjAAAAABAAb3NzaXBsZWJ1dG5vdHJlYWw0PT09PQ==".into()),
        ..ConnectOptions::default()
    })
    .expect_err("a wrong key");
    eprintln!("wrong key: {err}");
    assert!(
        err.errno() > 0 && err.op().starts_with("rados_connect"),
        "{err}"
    );

    // Nothing listens there: an error after the timeout, not a hang.
    let t = Instant::now();
    let err = Cluster::connect(&ConnectOptions {
        mon_host: Some("[v2:127.0.0.1:9]".into()),
        keyring: Some(keyring),
        options: vec![("client_mount_timeout".into(), "3".into())],
        ..ConnectOptions::default()
    })
    .expect_err("no cluster there");
    eprintln!("dead cluster after {}: {err}", ms(t.elapsed()));
    assert_eq!(err.errno(), errno::ETIMEDOUT, "{err}");
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn namespaces_and_images_are_listed() {
    let Some(env) = setup("list") else { return };
    let root = env.cluster.ioctx(POOL, None).expect("root");
    assert!(root.namespace_exists(&env.ns).expect("exists"));
    assert!(root.namespace_list().expect("list").contains(&env.ns));
    for name in ["b", "a", "c"] {
        env.io.create_image(name, MIB, None).expect("create");
    }
    let mut names = env.io.list_images().expect("list");
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    env.io.remove_image("b").expect("remove");
    let mut names = env.io.list_images().expect("list");
    names.sort();
    assert_eq!(names, ["a", "c"]);
    // An image can be made with given features (layering only).
    env.io.create_image("plain", MIB, Some(1)).expect("create");
    let image = env.io.open("plain").expect("open");
    assert_eq!(image.features().expect("features"), 1);
    assert!(!image.id().expect("id").is_empty());
    assert_eq!(image.spec(), env.spec("plain"));
}

// ---------------------------------------------------------------------------
// Snapshots

#[test]
fn a_rollback_restores_the_snapshot_content() {
    let Some(env) = setup("rollback") else { return };
    let image = env.create("img", 64 * MIB);
    let a = pattern(1, usize::try_from(8 * MIB).expect("fits"));
    image.write(0, &a).expect("write");
    image.write(40 * MIB + 123, &a[..5000]).expect("write");
    image.flush().expect("flush");
    let before = read_all(&image);
    image.snap_create("s1").expect("snap");
    assert!(image.snap_exists("s1").expect("exists"));

    let b = pattern(2, usize::try_from(4 * MIB).expect("fits"));
    image.write(2 * MIB, &b).expect("overwrite");
    image.write_zeroes(40 * MIB, MIB).expect("zero");
    image.flush().expect("flush");
    assert_eq!(read_at(&image, 2 * MIB, b.len()), b);
    assert_ne!(read_all(&image), before);

    // The snapshot still reads the old data.
    let at_s1 = env
        .io
        .open_read_only("img", Some("s1"))
        .expect("open at s1");
    assert_eq!(read_all(&at_s1), before);
    assert_eq!(at_s1.snap(), Some("s1"));
    let err = at_s1.write(0, b"x").expect_err("a snapshot is read-only");
    assert_eq!(err.errno(), errno::EROFS, "{err}");
    drop(at_s1);

    let mut calls = Vec::new();
    image
        .snap_rollback_with_progress("s1", |done, total| {
            calls.push((done, total));
            true
        })
        .expect("rollback");
    eprintln!("rollback progress calls: {}", calls.len());
    assert!(!calls.is_empty());
    assert_eq!(read_all(&image), before, "rollback restored the content");

    // A second handle moved to the snapshot and back reads both.
    let mut other = env.io.open("img").expect("open");
    image.write(0, &b[..4096]).expect("write");
    image.flush().expect("flush");
    other.set_snap(Some("s1")).expect("set snap");
    assert_eq!(read_at(&other, 0, 4096), before[..4096]);
    other.set_snap(None).expect("back to head");
    assert_eq!(read_at(&other, 0, 4096), b[..4096]);
    image.snap_rollback("s1").expect("rollback");
    assert_eq!(read_all(&image), before);
}

#[test]
fn a_progress_callback_stops_a_rollback_and_its_panic_does_not_unwind_into_librbd() {
    let Some(env) = setup("panic") else { return };
    let image = env.create("img", 32 * MIB);
    let a = pattern(3, usize::try_from(32 * MIB).expect("fits"));
    image.write(0, &a).expect("write");
    image.snap_create("s1").expect("snap");
    let b = pattern(4, usize::try_from(32 * MIB).expect("fits"));
    let overwrite = || {
        image.write(0, &b).expect("write");
        image.flush().expect("flush");
    };

    // `false` stops the rollback part way.
    overwrite();
    let mut calls = 0;
    let err = image
        .snap_rollback_with_progress("s1", |_, _| {
            calls += 1;
            false
        })
        .expect_err("stopped");
    assert_eq!(err.errno(), errno::ECANCELED, "{err}");
    let now = read_all(&image);
    let rolled = now
        .chunks(usize::try_from(4 * MIB).expect("fits"))
        .zip(a.chunks(usize::try_from(4 * MIB).expect("fits")))
        .filter(|(x, y)| x == y)
        .count();
    eprintln!("stopped after {calls} progress call(s): {rolled} of 8 objects rolled back");
    assert_eq!(calls, 1, "no call after the stop");
    image.snap_rollback("s1").expect("rollback");
    assert_eq!(read_all(&image), a);

    // A panic stops it too, resumes once librbd returned, and leaves the
    // handle working.
    overwrite();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        image.snap_rollback_with_progress("s1", |_, _| panic!("progress panics"))
    }));
    let payload = caught.expect_err("the panic resumes after the call");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"progress panics"));
    image.snap_rollback("s1").expect("rollback again");
    assert_eq!(read_all(&image), a);
}

#[test]
fn snapshots_are_listed_with_protection_and_timestamps() {
    let Some(env) = setup("snaplist") else { return };
    let image = env.create("img", 8 * MIB);
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("now")
        .as_secs();
    image.snap_create("first").expect("snap");
    image.resize(16 * MIB).expect("resize");
    image.snap_create("second").expect("snap");
    image.snap_protect("second").expect("protect");

    let snaps = image.snap_list().expect("list");
    eprintln!("{snaps:#?}");
    assert_eq!(snaps.len(), 2);
    assert_eq!(
        (snaps[0].name.as_str(), snaps[0].size, snaps[0].protected),
        ("first", 8 * MIB, false)
    );
    assert_eq!(
        (snaps[1].name.as_str(), snaps[1].size, snaps[1].protected),
        ("second", 16 * MIB, true)
    );
    assert!(snaps[0].id < snaps[1].id);
    for s in &snaps {
        assert_eq!(s.namespace, SnapNamespace::User);
        let ts = u64::try_from(s.timestamp.expect("a timestamp")).expect("positive");
        assert!(ts + 60 >= t0 && ts <= t0 + 60, "timestamp {ts} vs now {t0}");
    }
    assert!(image.snap_is_protected("second").expect("protected"));
    assert!(!image.snap_is_protected("first").expect("protected"));
    let err = image.snap_protect("second").expect_err("already protected");
    assert_eq!(err.errno(), errno::EBUSY, "{err}");
    image.snap_unprotect("second").expect("unprotect");
    assert!(!image.snap_is_protected("second").expect("protected"));
}

#[test]
fn a_clone_blocks_unprotect_until_flattened() {
    let Some(env) = setup("clone") else { return };
    let parent = env.create("parent", 32 * MIB);
    let data = pattern(5, usize::try_from(12 * MIB).expect("fits"));
    parent.write(3 * MIB, &data).expect("write");
    parent.snap_create("base").expect("snap");
    parent.snap_protect("base").expect("protect");
    // The parent moves on; the clone sees the snapshot.
    parent.write(3 * MIB, &pattern(6, 4096)).expect("write");
    let expect = read_all(&env.io.open_read_only("parent", Some("base")).expect("open"));

    // Into another namespace (clone format 2), and into the same one
    // (the cluster's default, format 1 here).
    let other = env.other_namespace("clones");
    env.io
        .clone_image("parent", "base", &other, "child")
        .expect("clone");
    env.io
        .clone_image("parent", "base", &env.io, "sibling")
        .expect("clone");
    let mut children = parent.list_children("base").expect("children");
    children.sort_by(|a, b| a.image.cmp(&b.image));
    assert_eq!(
        children
            .iter()
            .map(|c| (
                c.pool.as_str(),
                c.namespace.as_deref(),
                c.image.as_str(),
                c.trash
            ))
            .collect::<Vec<_>>(),
        [
            (POOL, Some(other.namespace()), "child", false),
            (POOL, Some(env.ns.as_str()), "sibling", false)
        ]
    );
    assert!(!children[0].id.is_empty());

    let child = other.open("child").expect("open child");
    let p = child
        .parent()
        .expect("parent")
        .expect("a clone has a parent");
    assert_eq!(
        (
            p.pool.as_str(),
            p.namespace.as_str(),
            p.image.as_str(),
            p.snap.as_str()
        ),
        (POOL, env.ns.as_str(), "parent", "base")
    );
    assert_eq!(read_all(&child), expect);

    let err = parent
        .snap_unprotect("base")
        .expect_err("the clones need it");
    assert_eq!(err.errno(), errno::EBUSY, "{err}");
    let err = parent.snap_remove("base").expect_err("protected");
    assert_eq!(err.errno(), errno::EBUSY, "{err}");

    let t = Instant::now();
    let mut calls = 0u32;
    child
        .flatten_with_progress(|_, _| {
            calls += 1;
            true
        })
        .expect("flatten");
    eprintln!(
        "flatten (32 MiB clone): {} ({calls} progress calls)",
        ms(t.elapsed())
    );
    assert_eq!(child.parent().expect("parent"), None);
    assert_eq!(read_all(&child), expect);
    let left = parent.list_children("base").expect("children");
    assert_eq!(
        left.iter().map(|c| c.image.as_str()).collect::<Vec<_>>(),
        ["sibling"]
    );
    let err = parent
        .snap_unprotect("base")
        .expect_err("the sibling needs it");
    assert_eq!(err.errno(), errno::EBUSY, "{err}");
    let sibling = env.io.open("sibling").expect("open");
    sibling.flatten().expect("flatten");
    drop(sibling);
    assert!(parent.list_children("base").expect("children").is_empty());

    parent.snap_unprotect("base").expect("unprotect");
    parent.snap_remove("base").expect("remove");
    assert!(snap_names(&parent).is_empty());
    assert_eq!(
        read_all(&child),
        expect,
        "the flattened clone keeps its data"
    );
}

#[test]
fn a_removed_snapshot_with_a_v2_clone_waits_in_the_trash() {
    let Some(env) = setup("trash") else { return };
    let parent = env.create("parent", 8 * MIB);
    parent.write(0, &pattern(8, 4096)).expect("write");
    parent.snap_create("base").expect("snap");
    // Format 2 clones need no protection, and do not block a removal.
    env.io
        .clone_image_with(
            "parent",
            "base",
            &env.io,
            "child",
            &CloneOptions {
                format: Some(2),
                features: None,
            },
        )
        .expect("clone v2");
    parent.snap_remove("base").expect("remove");
    assert!(!parent.snap_exists("base").expect("exists"));
    assert!(parent.snap_list().expect("list").is_empty());
    let snaps = parent.snap_list_all().expect("list");
    eprintln!("{snaps:#?}");
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        snaps[0].namespace,
        SnapNamespace::Trash {
            original_name: "base".into()
        }
    );
    let child = env.io.open("child").expect("open");
    assert_eq!(read_at(&child, 0, 4096), pattern(8, 4096));
    // Once the clone is gone, so is the trashed snapshot.
    drop(child);
    env.io.remove_image("child").expect("remove child");
    assert!(parent.snap_list_all().expect("list").is_empty());
}

#[test]
fn snapshots_are_removed() {
    let Some(env) = setup("remove") else { return };
    let image = env.create("img", 8 * MIB);
    for s in ["a", "b", "c"] {
        image.write(0, s.as_bytes()).expect("write");
        image.snap_create(s).expect("snap");
    }
    image.snap_remove("b").expect("remove");
    assert_eq!(snap_names(&image), ["a", "c"]);
    assert!(!image.snap_exists("b").expect("exists"));
    let err = image.snap_remove("b").expect_err("gone");
    assert_eq!(err.errno(), errno::ENOENT, "{err}");
    // The others keep their content.
    let at_c = env.io.open_read_only("img", Some("c")).expect("open");
    assert_eq!(read_at(&at_c, 0, 1), b"c");
    drop(at_c);

    // A protected snapshot is removed with the unprotect flag.
    image.snap_protect("c").expect("protect");
    image
        .snap_remove_with(
            "c",
            SnapRemoveFlags {
                unprotect: true,
                flatten: false,
            },
            |_, _| true,
        )
        .expect("remove protected");
    assert_eq!(snap_names(&image), ["a"]);
    let err = env.io.remove_image("img").expect_err("has a snapshot");
    assert_eq!(err.errno(), errno::ENOTEMPTY, "{err}");
    image.snap_remove("a").expect("remove");
    drop(image);
    env.io.remove_image("img").expect("remove image");
    assert!(!env.io.image_exists("img").expect("exists"));
}

// ---------------------------------------------------------------------------
// Diffs

#[test]
fn diff_iterate_reports_exactly_the_written_extents() {
    let Some(env) = setup("diffiter") else { return };
    let image = env.create("img", 64 * MIB);
    // Every object exists (at full size) before s0: then RADOS tracks
    // exactly the bytes written since.
    image
        .write(0, &pattern(7, usize::try_from(64 * MIB).expect("fits")))
        .expect("write");
    image.snap_create("s0").expect("snap");
    let writes = [
        (MIB, 4096usize),
        (10 * MIB + 12345, 70000),
        (20 * MIB - 100, 200), // across an object boundary
    ];
    for (i, (offset, len)) in writes.iter().enumerate() {
        image
            .write(*offset, &pattern(10 + i as u64, *len))
            .expect("write");
    }
    image.flush().expect("flush");

    let extents = image.diff_extents(Some("s0"), false).expect("diff");
    eprintln!("{extents:?}");
    assert_eq!(
        merge(&extents),
        [
            (MIB, 4096, true),
            (10 * MIB + 12345, 70000, true),
            (20 * MIB - 100, 200, true),
        ]
    );
    // Whole objects: the objects written, each 4 MiB.
    let whole = image.diff_extents(Some("s0"), true).expect("diff");
    assert_eq!(
        whole
            .iter()
            .map(|e| (e.offset, e.len, e.exists))
            .collect::<Vec<_>>(),
        [0, 8, 16, 20].map(|m| (m * MIB, 4 * MIB, true))
    );

    // Zeroing whole objects deletes them: holes. From the beginning, every
    // allocated extent shows.
    image.snap_create("s1").expect("snap");
    image.write_zeroes(8 * MIB, 8 * MIB).expect("zero");
    image.flush().expect("flush");
    assert_eq!(
        merge(&image.diff_extents(Some("s1"), false).expect("diff")),
        [(8 * MIB, 8 * MIB, false)]
    );
    assert_eq!(
        merge(&image.diff_extents(None, false).expect("diff")),
        [(0, 8 * MIB, true), (16 * MIB, 48 * MIB, true)]
    );

    // An object that did not exist at the start snapshot is reported from
    // its start to the end of what was written (RADOS compares object
    // sizes), zeros included.
    let sparse = env.create("sparse", 16 * MIB);
    sparse.snap_create("e0").expect("snap");
    sparse
        .write(5 * MIB + 1000, &pattern(15, 4096))
        .expect("write");
    sparse.flush().expect("flush");
    assert_eq!(
        merge(&sparse.diff_extents(Some("e0"), false).expect("diff")),
        [(4 * MIB, MIB + 1000 + 4096, true)]
    );

    // An error of the callback stops the iteration and comes back.
    let mut seen = 0;
    let err = image
        .diff_iterate(Some("s0"), 0, 64 * MIB, false, |_, _, _| {
            seen += 1;
            Err(RbdError::new("test", errno::ECANCELED, "stop here"))
        })
        .expect_err("stopped");
    assert_eq!((seen, err.op()), (1, "test"));
    let err = image
        .diff_extents(Some("nope"), false)
        .expect_err("no snapshot");
    assert_eq!(err.errno(), errno::ENOENT, "{err}");
}

/// Extents with adjacent ones of the same kind merged.
fn merge(extents: &[DiffExtent]) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for e in extents {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == e.offset && last.2 == e.exists => last.1 += e.len,
            _ => out.push((e.offset, e.len, e.exists)),
        }
    }
    out
}

/// An image with two snapshots: s1 (data in a few places), s2 (some of
/// it overwritten, one object zeroed, the image grown).
fn two_snapshots(env: &Env, name: &str) -> Image {
    let image = env.create(name, 48 * MIB);
    image
        .write(0, &pattern(20, 3 * usize::try_from(MIB).expect("fits")))
        .expect("write");
    image
        .write(17 * MIB + 5, &pattern(21, 100_000))
        .expect("write");
    image
        .write(
            40 * MIB,
            &pattern(22, 4 * usize::try_from(MIB).expect("fits")),
        )
        .expect("write");
    image.snap_create("s1").expect("snap");
    image.write(MIB + 7, &pattern(23, 5000)).expect("write");
    image.write_zeroes(40 * MIB, 4 * MIB).expect("zero");
    image.resize(56 * MIB).expect("grow");
    image.write(50 * MIB, &pattern(24, 65536)).expect("write");
    image.flush().expect("flush");
    image.snap_create("s2").expect("snap");
    // Head moves on: exports are of snapshots.
    image.write(0, &pattern(25, 4096)).expect("write");
    image.flush().expect("flush");
    image
}

#[test]
fn our_export_diff_is_applied_by_rbd_import_diff() {
    let Some(env) = setup("export") else { return };
    let src = two_snapshots(&env, "src");
    let dir = tempfile::tempdir().expect("tempdir");

    // The CLI's files, to compare with.
    let cli_full = dir.path().join("cli-full.diff");
    let cli_inc = dir.path().join("cli-inc.diff");
    env.rbd(&[
        "export-diff",
        "--no-progress",
        &format!("{}@s1", env.spec("src")),
        &cli_full.to_string_lossy(),
    ]);
    env.rbd(&[
        "export-diff",
        "--no-progress",
        "--from-snap",
        "s1",
        &format!("{}@s2", env.spec("src")),
        &cli_inc.to_string_lossy(),
    ]);
    let cli_full = std::fs::read(&cli_full).expect("read");
    let cli_inc = std::fs::read(&cli_inc).expect("read");

    // Ours: from a handle at the head (a handle at the end snapshot is
    // opened inside), and from a handle at the end snapshot.
    let full = dir.path().join("full.diff");
    let inc = dir.path().join("inc.diff");
    let mut out = Vec::new();
    let t = Instant::now();
    let stats = diff::export_diff(&src, "s1", None, &mut out, |_, _| {}).expect("export full");
    eprintln!("export full: {stats:?} in {}", ms(t.elapsed()));
    std::fs::write(&full, &out).expect("write");
    assert_eq!(stats.size, 48 * MIB);
    assert_eq!(stats.file_bytes, out.len() as u64);
    let theirs = diff::inspect(&mut Cursor::new(&cli_full)).expect("rbd's file");
    assert_eq!(stats.changed_bytes, theirs.data_bytes);
    eprintln!(
        "full diff byte-identical to rbd export-diff: {}",
        out == cli_full
    );

    let at_s2 = env
        .io
        .open_read_only("src", Some("s2"))
        .expect("open at s2");
    let mut out = Vec::new();
    let mut calls = Vec::new();
    let stats = diff::export_diff(&at_s2, "s2", Some("s1"), &mut out, |d, t| {
        calls.push((d, t));
    })
    .expect("export inc");
    eprintln!("export s1..s2: {stats:?}, {} progress calls", calls.len());
    std::fs::write(&inc, &out).expect("write");
    assert_eq!(stats.size, 56 * MIB);
    assert_eq!(stats.zero_bytes, 4 * MIB, "{stats:?}");
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(calls.last().map(|c| c.0), calls.last().map(|c| c.1));
    let header = diff::read_header(&mut Cursor::new(&out)).expect("header");
    assert_eq!(
        header,
        DiffHeader {
            from: Some("s1".into()),
            to: Some("s2".into()),
            size: Some(56 * MIB)
        }
    );
    let ours = diff::inspect(&mut Cursor::new(&out)).expect("ours");
    let theirs = diff::inspect(&mut Cursor::new(&cli_inc)).expect("rbd's file");
    eprintln!("ours {ours:?}\nrbd  {theirs:?}");
    eprintln!(
        "incremental diff byte-identical to rbd export-diff: {}",
        out == cli_inc
    );
    assert_eq!(ours.header, theirs.header);
    assert_eq!(
        (ours.data_bytes, ours.zero_bytes),
        (theirs.data_bytes, theirs.zero_bytes)
    );

    // The CLI applies both to a small empty image, which then equals src.
    env.io.create_image("dst", MIB, None).expect("create");
    let dst = env.spec("dst");
    env.rbd(&[
        "import-diff",
        "--no-progress",
        &full.to_string_lossy(),
        &dst,
    ]);
    env.rbd(&["import-diff", "--no-progress", &inc.to_string_lossy(), &dst]);
    let s1 = env.export(&format!("{}@s1", env.spec("src")));
    let s2 = env.export(&format!("{}@s2", env.spec("src")));
    assert_eq!(s2.len() as u64, 56 * MIB);
    assert_eq!(sha(&env.export(&format!("{dst}@s1"))), sha(&s1));
    assert_eq!(sha(&env.export(&format!("{dst}@s2"))), sha(&s2));
    assert_eq!(sha(&env.export(&dst)), sha(&s2));
}

#[test]
fn rbd_export_diff_is_applied_by_our_import_diff() {
    let Some(env) = setup("import") else { return };
    two_snapshots(&env, "src");
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full.diff");
    let inc = dir.path().join("inc.diff");
    env.rbd(&[
        "export-diff",
        "--no-progress",
        &format!("{}@s1", env.spec("src")),
        &full.to_string_lossy(),
    ]);
    env.rbd(&[
        "export-diff",
        "--no-progress",
        "--from-snap",
        "s1",
        &format!("{}@s2", env.spec("src")),
        &inc.to_string_lossy(),
    ]);

    // A small image grows to the diff's size.
    let mut dst = env.create("dst", MIB);
    let mut file = std::fs::File::open(&full).expect("open");
    let stats = diff::import_diff(&mut dst, &mut file, |_, _| {}).expect("import full");
    eprintln!("import full: {stats:?}");
    assert_eq!(
        (stats.from.as_deref(), stats.to.as_deref(), stats.size),
        (None, Some("s1"), 48 * MIB)
    );
    let mut file = std::io::BufReader::new(std::fs::File::open(&inc).expect("open"));
    let mut calls = Vec::new();
    let t = Instant::now();
    let stats =
        diff::import_diff(&mut dst, &mut file, |d, t| calls.push((d, t))).expect("import inc");
    eprintln!("import s1..s2: {stats:?} in {}", ms(t.elapsed()));
    assert_eq!(
        (stats.from.as_deref(), stats.to.as_deref(), stats.size),
        (Some("s1"), Some("s2"), 56 * MIB)
    );
    let inc_len = std::fs::metadata(&inc).expect("len").len();
    assert_eq!(calls.last(), Some(&(inc_len, inc_len)));

    assert_eq!(snap_names(&dst), ["s1", "s2"]);
    let src_s2 = env.io.open_read_only("src", Some("s2")).expect("open");
    let dst_s2 = env.io.open_read_only("dst", Some("s2")).expect("open");
    assert_eq!(sha(&read_all(&dst_s2)), sha(&read_all(&src_s2)));
    assert_eq!(sha(&read_all(&dst)), sha(&read_all(&src_s2)));
    let src_s1 = env.io.open_read_only("src", Some("s1")).expect("open");
    let dst_s1 = env.io.open_read_only("dst", Some("s1")).expect("open");
    assert_eq!(sha(&read_all(&dst_s1)), sha(&read_all(&src_s1)));

    // The same through a pipe-like reader.
    let mut dst2 = env.create("dst2", MIB);
    let full_bytes = std::fs::read(&full).expect("read");
    let mut reader: &[u8] = &full_bytes;
    diff::import_diff_stream(&mut dst2, &mut reader, |_, _| {}).expect("stream");
    assert_eq!(sha(&read_all(&dst2)), sha(&read_all(&src_s1)));
}

#[test]
fn a_refused_import_changes_nothing() {
    let Some(env) = setup("refuse") else { return };
    let src = two_snapshots(&env, "src");
    let mut full = Vec::new();
    diff::export_diff(&src, "s1", None, &mut full, |_, _| {}).expect("export");
    let mut inc = Vec::new();
    diff::export_diff(&src, "s2", Some("s1"), &mut inc, |_, _| {}).expect("export");

    let mut dst = env.create("dst", 8 * MIB);
    dst.write(0, &pattern(30, 65536)).expect("write");
    dst.snap_create("mine").expect("snap");
    dst.flush().expect("flush");
    let state = |image: &Image| {
        (
            sha(&read_all(image)),
            image.size().expect("size"),
            snap_names(image),
        )
    };
    let before = state(&dst);

    // No s1 on dst: the incremental diff is refused.
    let err = diff::import_diff(&mut dst, &mut Cursor::new(&inc), |_, _| {}).expect_err("no s1");
    eprintln!("{err}");
    assert_eq!(err.errno(), errno::ENOENT, "{err}");
    assert!(err.message().contains("'s1'"), "{err}");
    assert_eq!(state(&dst), before);

    // s1 already there: the full diff (ending at s1) is refused.
    dst.snap_create("s1").expect("snap");
    let before = state(&dst);
    let err = diff::import_diff(&mut dst, &mut Cursor::new(&full), |_, _| {}).expect_err("has s1");
    eprintln!("{err}");
    assert_eq!(err.errno(), errno::EEXIST, "{err}");
    assert_eq!(state(&dst), before);
    dst.snap_remove("s1").expect("remove");
    let before = state(&dst);

    // Truncated, in a data record and at the end: refused before any write.
    for cut in [full.len() / 2, full.len() - 1] {
        let mut file = Cursor::new(full[..cut].to_vec());
        let err = diff::import_diff(&mut dst, &mut file, |_, _| {}).expect_err("truncated");
        eprintln!("{err}");
        assert_eq!(err.errno(), errno::EINVAL, "{err}");
        assert!(err.message().contains("malformed diff at byte"), "{err}");
        assert_eq!(state(&dst), before);
    }
    // Garbage.
    let err = diff::import_diff(
        &mut dst,
        &mut Cursor::new(b"not a diff at all".to_vec()),
        |_, _| {},
    )
    .expect_err("garbage");
    assert_eq!(err.errno(), errno::EINVAL, "{err}");
    assert_eq!(state(&dst), before);

    // A diff that starts after the banner in a longer file works from the
    // reader's position.
    let mut file = Cursor::new([b"prefix".as_slice(), &full].concat());
    file.seek(SeekFrom::Start(6)).expect("seek");
    diff::import_diff(&mut dst, &mut file, |_, _| {}).expect("import");
    let src_s1 = env.io.open_read_only("src", Some("s1")).expect("open");
    assert_eq!(sha(&read_all(&dst)), sha(&read_all(&src_s1)));
}

// ---------------------------------------------------------------------------
// Groups

#[test]
fn a_group_snapshot_rolls_back_every_image() {
    let Some(env) = setup("group") else { return };
    let names = ["vol-a", "vol-b"];
    let mut before = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let image = env.create(name, 16 * MIB);
        image
            .write(0, &pattern(40 + i as u64, 6 << 20))
            .expect("write");
        image.flush().expect("flush");
        before.push(read_all(&image));
    }
    env.io.group_create("g").expect("group");
    assert_eq!(env.io.group_list().expect("groups"), ["g"]);
    for name in names {
        env.io.group_image_add("g", &env.io, name).expect("add");
    }
    let mut members = env.io.group_image_list("g").expect("members");
    members.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        members
            .iter()
            .map(|m| (m.name.as_str(), m.state))
            .collect::<Vec<_>>(),
        [
            ("vol-a", GroupImageState::Attached),
            ("vol-b", GroupImageState::Attached)
        ]
    );
    let pool_id = members[0].pool_id;
    assert_eq!(env.cluster.pool_name(pool_id).expect("pool"), POOL);

    let t = Instant::now();
    env.io.group_snap_create("g", "gs").expect("group snap");
    eprintln!("group snap create (2 images): {}", ms(t.elapsed()));
    let snaps = env.io.group_snap_list("g").expect("group snaps");
    assert_eq!(
        snaps
            .iter()
            .map(|s| (s.name.as_str(), s.state))
            .collect::<Vec<_>>(),
        [("gs", GroupSnapState::Complete)]
    );

    // On each image the group snapshot is a snapshot in the group
    // namespace, under a generated name; the user namespace does not see
    // it by the group snapshot's name.
    for name in names {
        let image = env.io.open(name).expect("open");
        assert!(image.snap_list().expect("list").is_empty());
        let list = image.snap_list_all().expect("list");
        eprintln!("{name}: {list:#?}");
        assert_eq!(list.len(), 1);
        assert_eq!(
            list[0].namespace,
            SnapNamespace::Group {
                pool: pool_id,
                group: "g".into(),
                group_snap: "gs".into()
            }
        );
        assert_ne!(list[0].name, "gs");
        assert!(!list[0].protected);
        assert!(!image.snap_exists("gs").expect("exists"));
        assert!(!image.snap_exists(&list[0].name).expect("exists"));
        let err = image
            .snap_rollback(&list[0].name)
            .expect_err("not a user snapshot");
        assert_eq!(err.errno(), errno::ENOENT, "{err}");
        // The `rbd` CLI hides it unless asked for all namespaces.
        let cli = env.rbd(&["snap", "ls", &env.spec(name)]);
        assert!(String::from_utf8_lossy(&cli).trim().is_empty(), "{cli:?}");
        let cli = env.rbd(&["snap", "ls", "--all", &env.spec(name)]);
        assert!(String::from_utf8_lossy(&cli).contains("group"), "{cli:?}");

        image.write(MIB, &pattern(50, 2 << 20)).expect("write");
        image.flush().expect("flush");
        assert_ne!(
            read_all(&image),
            before[names.iter().position(|n| *n == name).expect("i")]
        );
    }

    let t = Instant::now();
    env.io
        .group_snap_rollback("g", "gs")
        .expect("group rollback");
    eprintln!("group snap rollback (2 images): {}", ms(t.elapsed()));
    for (name, expect) in names.iter().zip(&before) {
        let image = env.io.open(name).expect("open");
        assert_eq!(read_all(&image), *expect, "{name} rolled back");
    }

    env.io
        .group_snap_remove("g", "gs")
        .expect("group snap remove");
    assert!(env.io.group_snap_list("g").expect("list").is_empty());
    for name in names {
        let image = env.io.open(name).expect("open");
        assert!(image.snap_list_all().expect("list").is_empty(), "{name}");
        env.io
            .group_image_remove("g", &env.io, name)
            .expect("remove from group");
    }
    assert!(env.io.group_image_list("g").expect("members").is_empty());
    env.io.group_remove("g").expect("group remove");
    assert!(env.io.group_list().expect("groups").is_empty());
    let err = env.io.group_snap_create("g", "x").expect_err("no group");
    assert_eq!(err.errno(), errno::ENOENT, "{err}");
}

// ---------------------------------------------------------------------------
// Errors

#[test]
fn errors_keep_librbd_errno() {
    let Some(env) = setup("errors") else { return };
    let err = env.io.open("missing").expect_err("no such image");
    assert_eq!(err.errno(), errno::ENOENT);
    assert_eq!(
        err.to_string(),
        format!(
            "rbd_open {}: No such file or directory (errno 2)",
            env.spec("missing")
        )
    );
    let image = env.create("img", MIB);
    let err = env.io.create_image("img", MIB, None).expect_err("exists");
    assert_eq!(err.errno(), errno::EEXIST, "{err}");
    image.snap_create("s1").expect("snap");
    let err = image.snap_create("s1").expect_err("exists");
    assert_eq!(
        err.to_string(),
        format!(
            "rbd_snap_create {}@s1: File exists (errno 17)",
            env.spec("img")
        )
    );
    let err = image.snap_rollback("nope").expect_err("no snapshot");
    assert_eq!(err.errno(), errno::ENOENT, "{err}");
    let err = env
        .io
        .open_read_only("img", Some("nope"))
        .expect_err("no snapshot");
    assert_eq!(err.errno(), errno::ENOENT, "{err}");
    let err = image.snap_unprotect("s1").expect_err("not protected");
    assert_eq!(err.errno(), errno::EINVAL, "{err}");

    // Names with NUL bytes are errors, not panics.
    let err = env.io.open("a\0b").expect_err("NUL");
    assert_eq!(err.errno(), errno::EINVAL, "{err}");
    let err = image.snap_create("s\0").expect_err("NUL");
    assert_eq!(err.errno(), errno::EINVAL, "{err}");
    let err = env.cluster.ioctx("rbd\0", None).expect_err("NUL");
    assert_eq!(err.errno(), errno::EINVAL, "{err}");

    let err = env
        .cluster
        .ioctx("no-such-pool", None)
        .expect_err("no pool");
    assert_eq!(err.errno(), errno::ENOENT, "{err}");
    let ghost = env
        .cluster
        .ioctx(POOL, Some("no-such-namespace"))
        .expect("rados does not check");
    let err = ghost.open("img").expect_err("no namespace");
    assert_eq!(err.errno(), errno::ENOENT, "{err}");

    let ro = env.io.open_read_only("img", None).expect("open");
    let err = ro.write(0, b"x").expect_err("read-only");
    assert_eq!(err.errno(), errno::EROFS, "{err}");
    let past_end = image.read(2 * MIB, &mut [0u8; 16]);
    eprintln!("read past the end: {past_end:?}");
    assert!(!matches!(past_end, Ok(n) if n > 0), "{past_end:?}");
}

// ---------------------------------------------------------------------------
// Timings
