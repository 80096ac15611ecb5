//! The test cluster end to end, on real Ceph daemons: namespaces that
//! isolate tests on the shared cluster, snapshots and rollback through the
//! `rbd` tool, joining a running cluster, two private clusters at once,
//! and a dropped cluster leaving no process and no directory behind.
//!
//! Without Ceph installed each test prints `skipped: <reason>` and passes,
//! or fails when VIRTSNAP_REQUIRE_BACKENDS is set (`cargo xtask test`).

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use testceph::{CephError, Cluster};

const MIB: u64 = 1 << 20;

/// `len` random bytes, from the kernel.
fn random_bytes(len: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    std::fs::File::open("/dev/urandom")
        .expect("/dev/urandom")
        .take(len)
        .read_to_end(&mut bytes)
        .expect("read /dev/urandom");
    bytes
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

#[test]
fn namespaces_isolate_images_and_a_snapshot_rolls_back() {
    let Some(cluster) = testceph::shared_or_skip() else {
        return;
    };
    let started = Instant::now();
    let ns = cluster.namespace("isolation").expect("namespace");
    eprintln!("namespace create: {}", ms(started.elapsed()));
    let other = cluster.namespace("isolation other").expect("namespace");
    assert_ne!(ns.name(), other.name());
    assert!(
        other.name().starts_with("isolation_other-"),
        "{}",
        other.name()
    );
    assert_eq!(ns.pool(), "rbd");
    assert_eq!(ns.image_spec("disk"), format!("rbd/{}/disk", ns.name()));
    assert_eq!(
        ns.volume_name("disk"),
        format!(
            "rbd:rbd/{}/disk:conf={}",
            ns.name(),
            cluster.conf().display()
        )
    );

    // An image imported in one namespace, invisible in the other.
    let dir = tempfile::tempdir().expect("tempdir");
    let original = random_bytes(4 * MIB);
    let file = dir.path().join("original");
    std::fs::write(&file, &original).expect("write");
    ns.import("disk", &file).expect("import");
    ns.create_image("blank", 2 * MIB).expect("create");
    assert_eq!(
        ns.rbd(["ls"])
            .expect("ls")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["blank", "disk"]
    );
    assert_eq!(other.rbd(["ls"]).expect("ls").trim(), "");
    let err = other.rbd(["info", "disk"]).expect_err("not in the other");
    assert!(
        matches!(&err, CephError::Command { stderr, .. } if stderr.contains("No such file")),
        "{err}"
    );
    assert!(
        !cluster.rbd(["ls", "rbd"]).expect("ls").contains("disk"),
        "the default namespace sees nothing either"
    );
    assert_eq!(ns.export("blank").expect("export"), vec![0; 2 << 20]);

    // Snapshot, overwrite, roll back: content compared by export.
    let started = Instant::now();
    ns.rbd(["snap", "create", "disk@before"])
        .expect("snap create");
    eprintln!("snap create: {}", ms(started.elapsed()));
    ns.rbd([
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "64K",
        "--io-total",
        "1M",
        "--io-pattern",
        "seq",
        "disk",
    ])
    .expect("overwrite");
    let changed = ns.export("disk").expect("export");
    assert_eq!(changed.len(), original.len());
    assert_ne!(changed, original, "bench changed the head");
    assert_eq!(ns.export("disk@before").expect("export snap"), original);
    let started = Instant::now();
    ns.rbd(["snap", "rollback", "--no-progress", "disk@before"])
        .expect("rollback");
    eprintln!("snap rollback: {}", ms(started.elapsed()));
    assert_eq!(ns.export("disk").expect("export"), original);
    let exported = dir.path().join("exported");
    ns.export_to("disk@before", &exported)
        .expect("export to a file");
    assert_eq!(std::fs::read(&exported).expect("read"), original);

    // A protected snapshot with a clone and a group: the drop purges it all.
    ns.rbd(["snap", "protect", "disk@before"]).expect("protect");
    ns.rbd([
        "clone",
        &ns.image_spec("disk@before"),
        &ns.image_spec("clone"),
    ])
    .expect("clone");
    ns.rbd(["group", "create", "g"]).expect("group");
    let name = ns.name().to_owned();
    let started = Instant::now();
    drop(ns);
    eprintln!(
        "namespace drop (2 images, a clone, a group): {}",
        ms(started.elapsed())
    );
    let namespaces = cluster
        .rbd(["namespace", "ls", "--pool", "rbd", "--format", "json"])
        .expect("namespace ls");
    assert!(!namespaces.contains(&name), "{name} left: {namespaces}");
    let started = Instant::now();
    other.remove().expect("remove an empty namespace");
    eprintln!("empty namespace remove: {}", ms(started.elapsed()));
}

#[test]
fn a_joined_cluster_is_used_and_never_stopped() {
    let Some(cluster) = testceph::shared_or_skip() else {
        return;
    };
    let joined = Cluster::join(cluster.conf()).expect("join");
    assert!(!joined.is_owned());
    assert_eq!(joined.mon_host(), cluster.mon_host());
    assert_eq!(joined.keyring(), cluster.keyring());
    assert!(joined.mon_host().starts_with("127.0.0.1:"));
    assert!(joined.keyring().is_file());
    let ns = joined.namespace("joined").expect("namespace");
    ns.create_image("x", MIB).expect("create");
    drop(ns);
    drop(joined);
    cluster
        .rbd(["ls", "rbd"])
        .expect("still up after the join dropped");

    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("ceph.conf");
    std::fs::write(&conf, "[global]\nfsid = x\n").expect("write");
    let err = Cluster::join(&conf).expect_err("no mon_host");
    assert!(err.to_string().contains("no mon_host"), "{err}");
}

#[test]
fn a_second_pool_takes_an_incremental_export() {
    let Some(cluster) = testceph::shared_or_skip() else {
        return;
    };
    let pool = format!("replica{}", std::process::id());
    cluster.create_pool(&pool).expect("create pool");
    let ns = cluster.namespace("replay").expect("namespace");
    ns.create_image("src", 4 * MIB).expect("create");
    ns.rbd(["snap", "create", "src@s1"]).expect("snap");
    let dir = tempfile::tempdir().expect("tempdir");
    let diff = dir.path().join("s1.diff");
    ns.rbd([
        "export-diff".as_ref(),
        "--no-progress".as_ref(),
        "src@s1".as_ref(),
        diff.as_os_str(),
    ])
    .expect("export-diff");
    let target = format!("{pool}/dst");
    cluster
        .rbd(["create", "--size", "4M", &target])
        .expect("create dst");
    cluster
        .rbd([
            "import-diff".as_ref(),
            "--no-progress".as_ref(),
            diff.as_os_str(),
            target.as_ref(),
        ])
        .expect("import-diff");
    let snaps = cluster
        .rbd(["snap", "ls", &target, "--format", "json"])
        .expect("snap ls");
    assert!(snaps.contains("\"s1\""), "{snaps}");
    cluster.delete_pool(&pool).expect("delete pool");
}

/// The PIDs of a cluster's daemons are gone (not even zombies: they were
/// reaped) and its directory too.
fn assert_gone(pids: &[(&str, u32)], dir: &Path) {
    for (name, pid) in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) still exists"
        );
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn two_private_clusters_run_at_once() {
    let parent = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let clusters: Vec<Option<Cluster>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["one", "two"]
            .map(|name| {
                let dir = parent.path().join(name);
                scope.spawn(move || testceph::start_or_skip(&dir))
            })
            .into_iter()
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("start thread"))
            .collect()
    });
    let [Some(one), Some(two)] = <[Option<Cluster>; 2]>::try_from(clusters).expect("two") else {
        return;
    };
    eprintln!(
        "two clusters started at once in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for cluster in [&one, &two] {
        eprintln!(
            "  {}: {:?}",
            cluster.dir().display(),
            cluster.startup_steps()
        );
    }
    assert_ne!(one.mon_host(), two.mon_host());
    assert_ne!(one.dir(), two.dir());
    let a = one.namespace("a").expect("namespace");
    let b = two.namespace("b").expect("namespace");
    a.create_image("only-in-one", MIB).expect("create");
    b.create_image("only-in-two", MIB).expect("create");
    assert_eq!(a.rbd(["ls"]).expect("ls").trim(), "only-in-one");
    assert_eq!(b.rbd(["ls"]).expect("ls").trim(), "only-in-two");
    let fsid = |cluster: &Cluster| cluster.ceph(["fsid"]).expect("fsid");
    assert_ne!(fsid(&one), fsid(&two));
    drop((a, b));

    // A daemon that dies is named, with its logs' tail, by the next
    // command that fails.
    let (_, mon) = one.daemon_pids()[0];
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &mon.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let err = one
        .ceph(["--connect-timeout", "2", "mon", "stat"])
        .expect_err("the monitor is dead");
    let message = err.to_string();
    assert!(
        matches!(&err, CephError::DaemonExited { name, .. } if name == "mon.a")
            && message.contains("signal: 9")
            && message.contains("log/mon.a.log"),
        "{message}"
    );
    two.ceph(["mon", "stat"])
        .expect("the other cluster is fine");

    let pids: Vec<_> = one
        .daemon_pids()
        .into_iter()
        .chain(two.daemon_pids())
        .collect();
    let dirs = [one.dir().to_path_buf(), two.dir().to_path_buf()];
    drop((one, two));
    assert_gone(&pids, &dirs[0]);
    assert_gone(&pids, &dirs[1]);
}

#[test]
fn a_dropped_cluster_leaves_no_process_and_no_directory() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("cluster");
    let started = Instant::now();
    let Some(cluster) = testceph::start_or_skip(&dir) else {
        return;
    };
    eprintln!(
        "start: {:.1} s; steps {:?}",
        started.elapsed().as_secs_f64(),
        cluster.startup_steps()
    );
    assert!(cluster.is_owned());
    let pids = cluster.daemon_pids();
    assert_eq!(
        pids.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        ["mon.a", "osd.0"]
    );
    for (name, pid) in &pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("running");
        assert!(
            String::from_utf8_lossy(&cmdline).contains(&cluster.conf().display().to_string()),
            "{name}"
        );
        let recorded = std::fs::read_to_string(cluster.dir().join(format!("pids/{name}.pid")))
            .expect("pid file");
        assert_eq!(recorded.trim(), pid.to_string());
    }
    let dir = cluster.dir().to_path_buf();
    let started = Instant::now();
    drop(cluster);
    eprintln!("drop (stop + remove): {}", ms(started.elapsed()));
    assert_gone(&pids, &dir);

    // A directory that is not empty is refused, and left alone.
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("precious"), "x").expect("write");
    let err = Cluster::start(&dir).expect_err("not empty");
    assert!(matches!(err, CephError::DirNotEmpty { .. }), "{err}");
    assert!(dir.join("precious").exists());
}
