//! The `virtsnap` binary with the rbd plugin in its plugin directory
//! (`VIRTSNAP_PLUGIN_DIR`), on images of a real cluster: the volume
//! verbs on `rbd:` names, content checked through librbd reads at every
//! step; an incremental export replayed into a second pool, and into
//! `rbd import-diff` (and `rbd export-diff` into ours), byte for byte;
//! snapshots with clones refused by default, flattened when the delete
//! asks (`--flatten-clones`) or by the plugin's `clones` option; and clear refusals for names and images that do not
//! exist.

mod support;

use support::{Cli, open, sha256};
use testceph::Namespace;

const MIB: u64 = 1 << 20;

/// Writes `len` bytes of `pattern` at `offset` of image `volume`.
fn write(volume: &str, offset: u64, len: u64, pattern: u8) {
    let image = open(volume, None);
    image
        .write(offset, &vec![pattern; usize::try_from(len).expect("fits")])
        .expect("write");
    image.flush().expect("flush");
}

/// A new image of `size` bytes in `ns`, and its volume name.
fn image(ns: &Namespace<'_>, name: &str, size: u64) -> String {
    ns.create_image(name, size).expect("image");
    ns.volume_name(name)
}

#[test]
fn volume_verbs_on_an_rbd_image() {
    let Some(ns) = support::namespace("cli-verbs") else {
        return;
    };
    let cli = Cli::new(support::plugin_dir());
    let vol = image(&ns, "disk", 8 * MIB);

    let listing = cli.ok(&["plugin-list"]);
    assert!(
        listing.contains("rbd") && listing.contains("export-diff"),
        "plugin-list does not show the rbd plugin with its operations:\n{listing}"
    );

    write(&vol, 0, MIB, 0xa1);
    let at_s1 = sha256(&vol, None);
    cli.ok(&["vol-snapshot-create", &vol, "--name", "s1", "--checksum"]);
    assert_eq!(sha256(&vol, Some("s1")), at_s1, "s1 holds the image's data");
    let xml = cli.ok(&["vol-snapshot-dumpxml", &vol, "s1"]);
    // The volume is named by its key (a network name is no absolute
    // path), with the driver that took the snapshot and its checksum.
    assert!(
        xml.contains("<checksum")
            && xml.contains(&format!("<key>{vol}</key>"))
            && xml.contains("<driver name='rbd'/>"),
        "{xml}"
    );

    write(&vol, 2 * MIB, MIB, 0xb2);
    let at_s2 = sha256(&vol, None);
    assert_ne!(at_s1, at_s2);
    cli.ok(&["vol-snapshot-create", &vol, "--name", "s2"]);
    let list = cli.ok(&["vol-snapshot-list", &vol]);
    assert!(list.contains("s1") && list.contains("s2"), "{list}");

    // Revert keeps the newer snapshot.
    write(&vol, 4 * MIB, MIB, 0xc3);
    cli.ok(&["vol-snapshot-revert", &vol, "s1", "--verify"]);
    assert_eq!(sha256(&vol, None), at_s1, "the revert to s1");
    assert_eq!(sha256(&vol, Some("s2")), at_s2, "s2 after the revert");
    assert_eq!(
        cli.ok(&["vol-snapshot-current", &vol, "--name"]).trim(),
        "s1"
    );
    let rbd_snaps = ns
        .rbd(["snap", "ls", &ns.image_spec("disk")])
        .expect("snap ls");
    assert!(
        rbd_snaps.contains("s1") && rbd_snaps.contains("s2"),
        "{rbd_snaps}"
    );

    cli.ok(&["vol-snapshot-revert", &vol, "s2"]);
    assert_eq!(sha256(&vol, None), at_s2, "the revert to s2");
    cli.ok(&["vol-snapshot-delete", &vol, "s1"]);
    let rbd_snaps = ns
        .rbd(["snap", "ls", &ns.image_spec("disk")])
        .expect("snap ls");
    assert!(
        !rbd_snaps.contains("s1") && rbd_snaps.contains("s2"),
        "{rbd_snaps}"
    );
    assert_eq!(sha256(&vol, Some("s2")), at_s2, "s2 after deleting s1");
    assert_eq!(sha256(&vol, None), at_s2, "the image after deleting s1");
    cli.ok(&["vol-snapshot-delete", &vol, "s2"]);
    assert_eq!(cli.ok(&["vol-snapshot-list", &vol, "--name"]).trim(), "");
}

#[test]
fn refusals_name_the_volume_and_what_to_do() {
    let Some(ns) = support::namespace("cli-refusals") else {
        return;
    };
    let cli = Cli::new(support::plugin_dir());
    let missing = ns.volume_name("nosuch");
    let err = cli.refused(&["vol-snapshot-create", &missing, "--name", "s1"]);
    assert!(
        err.contains("nosuch") && err.contains("does not exist"),
        "{err}"
    );

    // A cluster that cannot be reached is not a missing image.
    let unreachable = format!("rbd:{}/disk:conf=/nonexistent/ceph.conf", ns.pool());
    let err = cli.refused(&["vol-snapshot-create", &unreachable, "--name", "s1"]);
    assert!(
        err.contains("/nonexistent/ceph.conf") && !err.contains("does not exist"),
        "{err}"
    );
    let listing = cli.ok(&["plugin-list", "--volume", &ns.volume_name("nosuch")]);
    assert!(
        listing.contains("nosuch") && listing.contains("does not exist"),
        "{listing}"
    );

    let err = cli.refused(&["vol-snapshot-create", "rbd:only-a-pool", "--name", "s1"]);
    assert!(err.contains("POOL/IMAGE"), "{err}");

    let vol = image(&ns, "disk", 4 * MIB);
    let err = cli.refused(&[
        "vol-snapshot-create",
        &vol,
        "--name",
        "s1",
        "--mode",
        "copy",
    ]);
    assert!(err.contains("copy"), "{err}");
    let err = cli.refused(&["vol-snapshot-create", &vol, "--name", "a@b"]);
    assert!(err.contains("a@b"), "{err}");
    let rbd_snaps = ns
        .rbd(["snap", "ls", &ns.image_spec("disk")])
        .expect("snap ls");
    assert_eq!(rbd_snaps.trim(), "", "a refused create left a snapshot");

    // Without the plugin, an rbd: name is refused with what to install.
    let empty = tempfile::tempdir().expect("dir");
    let bare = Cli::new(empty.path());
    let err = bare.refused(&["vol-snapshot-list", &vol]);
    assert!(err.contains("plugin"), "{err}");
}

#[test]
fn an_incremental_export_replays_on_a_second_pool_byte_for_byte() {
    let Some(ns) = support::namespace("cli-export") else {
        return;
    };
    let cluster = ns.cluster();
    let pool = format!("replica{}", std::process::id());
    cluster.create_pool(&pool).expect("second pool");
    let cli = Cli::new(support::plugin_dir());
    let src = image(&ns, "src", 8 * MIB);
    write(&src, 0, 2 * MIB, 0x11);
    cli.ok(&["vol-snapshot-create", &src, "--name", "base"]);
    write(&src, MIB, MIB, 0x22);
    write(&src, 6 * MIB, 512 * 1024, 0x33);
    cli.ok(&["vol-snapshot-create", &src, "--name", "next"]);

    let dir = tempfile::tempdir().expect("dir");
    let full = dir.path().join("base.diff");
    let incr = dir.path().join("next.diff");
    let out = cli.ok(&[
        "vol-snapshot-export",
        &src,
        "base",
        full.to_str().expect("utf-8"),
    ]);
    assert!(out.contains("exported"), "{out}");
    let out = cli.ok(&[
        "vol-snapshot-export",
        &src,
        "next",
        "--from",
        "base",
        incr.to_str().expect("utf-8"),
    ]);
    assert!(out.contains("since base"), "{out}");
    // The incremental file holds what changed, as RBD itself sees it:
    // no bigger than `rbd export-diff --from-snap` of the same snapshots,
    // and far smaller than the image.
    let incr_len = std::fs::metadata(&incr).expect("incr").len();
    let rbd_incr = dir.path().join("rbd-next.diff");
    ns.rbd([
        "export-diff",
        "--from-snap",
        "base",
        &format!("{}@next", ns.image_spec("src")),
        rbd_incr.to_str().expect("utf-8"),
    ])
    .expect("rbd export-diff --from-snap");
    let rbd_len = std::fs::metadata(&rbd_incr).expect("rbd's diff").len();
    assert!(
        incr_len <= rbd_len && (3 * MIB / 2..8 * MIB).contains(&incr_len),
        "the incremental export is {incr_len} bytes, rbd export-diff's {rbd_len}"
    );
    // An existing file is refused and kept.
    let err = cli.refused(&[
        "vol-snapshot-export",
        &src,
        "next",
        incr.to_str().expect("utf-8"),
    ]);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::metadata(&incr).expect("incr").len(), incr_len);

    // Replayed on an empty image in the second pool.
    cluster
        .rbd(["create", "--size", "8M", &format!("{pool}/replica")])
        .expect("replica image");
    let replica = format!("rbd:{pool}/replica:conf={}", cluster.conf().display());
    // The incremental diff alone is refused: the replica lacks base.
    let err = cli.refused(&[
        "vol-snapshot-import",
        &replica,
        incr.to_str().expect("utf-8"),
    ]);
    assert!(err.contains("base"), "{err}");
    cli.ok(&[
        "vol-snapshot-import",
        &replica,
        full.to_str().expect("utf-8"),
    ]);
    cli.ok(&[
        "vol-snapshot-import",
        &replica,
        incr.to_str().expect("utf-8"),
    ]);
    for snap in ["base", "next"] {
        assert_eq!(
            sha256(&replica, Some(snap)),
            sha256(&src, Some(snap)),
            "the replica's {snap}"
        );
    }
    assert_eq!(
        support::read_all(&open(&replica, Some("next"))),
        support::read_all(&open(&src, Some("next"))),
        "byte for byte"
    );
    let list = cli.ok(&["vol-snapshot-list", &replica, "--tree"]);
    assert!(list.contains("base") && list.contains("next"), "{list}");
    assert_eq!(
        cli.ok(&["vol-snapshot-current", &replica, "--name"]).trim(),
        "next"
    );

    // Our files are RBD's: `rbd import-diff` takes them, and ours takes
    // `rbd export-diff`'s.
    cluster
        .rbd(["create", "--size", "8M", &format!("{pool}/by-rbd")])
        .expect("image");
    for f in [&full, &incr] {
        cluster
            .rbd([
                "import-diff",
                f.to_str().expect("utf-8"),
                &format!("{pool}/by-rbd"),
            ])
            .expect("rbd import-diff of our export");
    }
    let by_rbd = format!("rbd:{pool}/by-rbd:conf={}", cluster.conf().display());
    assert_eq!(sha256(&by_rbd, Some("next")), sha256(&src, Some("next")));
    let theirs = dir.path().join("theirs.diff");
    ns.rbd([
        "export-diff",
        &format!("{}@next", ns.image_spec("src")),
        theirs.to_str().expect("utf-8"),
    ])
    .expect("rbd export-diff");
    cluster
        .rbd(["create", "--size", "8M", &format!("{pool}/from-rbd")])
        .expect("image");
    let from_rbd = format!("rbd:{pool}/from-rbd:conf={}", cluster.conf().display());
    cli.ok(&[
        "vol-snapshot-import",
        &from_rbd,
        theirs.to_str().expect("utf-8"),
    ]);
    assert_eq!(sha256(&from_rbd, Some("next")), sha256(&src, Some("next")));

    cluster.delete_pool(&pool).expect("pool removed");
}

#[test]
fn clones_block_a_delete_unless_the_plugin_flattens_them() {
    let Some(ns) = support::namespace("cli-clones") else {
        return;
    };
    let cli = Cli::new(support::plugin_dir());
    let vol = image(&ns, "golden", 4 * MIB);
    write(&vol, 0, MIB, 0x5a);
    cli.ok(&["vol-snapshot-create", &vol, "--name", "gold"]);
    let gold = sha256(&vol, Some("gold"));
    let spec = ns.image_spec("golden");
    ns.rbd(["snap", "protect", &format!("{spec}@gold")])
        .expect("protect");
    ns.rbd(["clone", &format!("{spec}@gold"), &ns.image_spec("child")])
        .expect("clone");

    let err = cli.refused(&["vol-snapshot-delete", &vol, "gold"]);
    assert!(
        err.contains("child") && err.contains("flatten"),
        "the refusal names the clone and what to do: {err}"
    );
    let snaps = ns.rbd(["snap", "ls", &spec]).expect("snap ls");
    assert!(
        snaps.contains("gold"),
        "the refused delete removed it: {snaps}"
    );
    assert!(cli.ok(&["vol-snapshot-list", &vol]).contains("gold"));

    // Asked on the command line: a second clone is flattened too.
    ns.rbd(["clone", &format!("{spec}@gold"), &ns.image_spec("child2")])
        .expect("second clone");
    cli.ok(&["vol-snapshot-create", &vol, "--name", "gold2"]);
    ns.rbd(["snap", "protect", &format!("{spec}@gold2")])
        .expect("protect");
    ns.rbd(["clone", &format!("{spec}@gold2"), &ns.image_spec("child3")])
        .expect("clone of gold2");
    let err = cli.refused(&["vol-snapshot-delete", &vol, "gold2"]);
    assert!(
        err.contains("child3") && err.contains("--flatten-clones"),
        "{err}"
    );
    cli.ok(&["vol-snapshot-delete", &vol, "gold2", "--flatten-clones"]);
    let info = ns.rbd(["info", &ns.image_spec("child3")]).expect("info");
    assert!(
        !info.contains("parent:"),
        "child3 still has a parent:\n{info}"
    );
    assert_eq!(sha256(&ns.volume_name("child3"), None), gold);
    let err = cli.refused(&["vol-snapshot-delete", &vol, "gold"]);
    assert!(err.contains("child") && err.contains("child2"), "{err}");

    // The same plugin with "clones": "flatten" beside it.
    let dir = tempfile::tempdir().expect("dir");
    let lib = dir.path().join("libvirtsnap_plugin_rbd.so");
    std::fs::copy(support::plugin_library(), &lib).expect("plugin copy");
    std::fs::write(
        dir.path().join("libvirtsnap_plugin_rbd.json"),
        r#"{"clones": "flatten"}"#,
    )
    .expect("options");
    let flattening = cli.with_plugins(dir.path());
    flattening.ok(&["vol-snapshot-delete", &vol, "gold"]);
    let snaps = ns.rbd(["snap", "ls", &spec]).expect("snap ls");
    assert!(!snaps.contains("gold"), "{snaps}");
    let info = ns.rbd(["info", &ns.image_spec("child")]).expect("info");
    assert!(
        !info.contains("parent:"),
        "the clone still has a parent:\n{info}"
    );
    for child in ["child", "child2"] {
        let info = ns.rbd(["info", &ns.image_spec(child)]).expect("info");
        assert!(
            !info.contains("parent:"),
            "{child} still has a parent:\n{info}"
        );
        assert_eq!(
            sha256(&ns.volume_name(child), None),
            gold,
            "the flattened clone {child}'s data"
        );
    }
}

#[test]
fn a_rollback_is_refused_while_another_client_has_the_image_open() {
    let Some(ns) = support::namespace("cli-busy") else {
        return;
    };
    let cli = Cli::new(support::plugin_dir());
    let vol = image(&ns, "disk", 4 * MIB);
    write(&vol, 0, MIB, 0x01);
    cli.ok(&["vol-snapshot-create", &vol, "--name", "s1"]);
    write(&vol, 0, MIB, 0x02);
    let written = sha256(&vol, None);

    // A guest's librbd client: a writable handle watches the image.
    let guest = open(&vol, None);
    let err = cli.refused(&["vol-snapshot-revert", &vol, "s1"]);
    assert!(
        err.contains("open by") && err.contains("other client"),
        "the refusal says why: {err}"
    );
    assert_eq!(
        sha256(&vol, None),
        written,
        "the refused revert changed the image"
    );
    // Nothing is left for a recovery to do: the next revert just runs.
    drop(guest);
    cli.ok(&["vol-snapshot-revert", &vol, "s1"]);
    assert_eq!(sha256(&vol, None), sha256(&vol, Some("s1")));
}
