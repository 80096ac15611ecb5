//! `<volsnapshot>` against its own RelaxNG schema (`schemas/volsnapshot.rng`):
//! every form our formatter writes validates with `xmllint`, the schema
//! refuses what the parser refuses under VALIDATE, and the example shipped
//! in `examples/` is canonical.

mod common;

use std::path::Path;

use snapshot_conf::{
    DiskSource, FormatFlags, FormatOptions, NetworkHost, ParseFlags, ParseOptions, SourceKind,
    StorageFormat, VOLSNAPSHOT_SCHEMA, VolChecksum, VolSnapshotDef, VolSnapshotMode,
    VolSnapshotState, VolSnapshotTarget, VolumeRef,
};

fn base() -> VolSnapshotDef {
    VolSnapshotDef {
        name: Some("s1 & <friends>".into()),
        description: Some("it's \"quoted\"".into()),
        state: Some(VolSnapshotState::Offline),
        parent: Some("base".into()),
        creation_time: Some(1_700_000_000),
        volume: Some(VolumeRef {
            path: Some("/img/disk.qcow2".into()),
            key: None,
            format: Some(StorageFormat::Qcow2),
            driver: Some("qemu".into()),
        }),
        target: VolSnapshotTarget {
            mode: Some(VolSnapshotMode::Internal),
            ..VolSnapshotTarget::default()
        },
    }
}

fn variants() -> Vec<(&'static str, VolSnapshotDef)> {
    let mut external_file = base();
    external_file.target = VolSnapshotTarget {
        mode: Some(VolSnapshotMode::External),
        source: DiskSource::file("/img/disk.s1"),
        format: Some(StorageFormat::Qcow2),
        checksum: None,
    };
    let mut copy = base();
    copy.target = VolSnapshotTarget {
        mode: Some(VolSnapshotMode::Copy),
        source: DiskSource::file("/img/disk.s1.copy"),
        format: Some(StorageFormat::Raw),
        checksum: Some(VolChecksum {
            algorithm: "sha256".into(),
            value: "0123456789abcdef".repeat(4),
        }),
    };
    let mut lvm = base();
    lvm.volume = Some(VolumeRef {
        path: None,
        key: Some("vg0/data".into()),
        format: Some(StorageFormat::Raw),
        driver: Some("lvm".into()),
    });
    lvm.target = VolSnapshotTarget {
        mode: Some(VolSnapshotMode::External),
        source: DiskSource {
            path: Some("/dev/vg0/data-s1".into()),
            ..DiskSource::new(SourceKind::Block)
        },
        format: None,
        checksum: None,
    };
    let mut btrfs = base();
    btrfs.state = Some(VolSnapshotState::Quiesced);
    btrfs.target = VolSnapshotTarget {
        mode: Some(VolSnapshotMode::External),
        source: DiskSource {
            path: Some("/srv/.snapshots/s1".into()),
            ..DiskSource::new(SourceKind::Dir)
        },
        format: None,
        checksum: None,
    };
    let mut rbd = base();
    rbd.volume = Some(VolumeRef {
        path: None,
        key: Some("rbd:pool/image".into()),
        format: Some(StorageFormat::Raw),
        driver: Some("plugin:rbd".into()),
    });
    rbd.target = VolSnapshotTarget {
        mode: Some(VolSnapshotMode::External),
        source: DiskSource {
            protocol: Some("rbd".into()),
            path: Some("pool/image@s1".into()),
            hosts: vec![NetworkHost {
                name: Some("mon1".into()),
                port: Some("6789".into()),
                ..NetworkHost::default()
            }],
            ..DiskSource::new(SourceKind::Network)
        },
        format: None,
        checksum: None,
    };
    let minimal = VolSnapshotDef {
        name: Some("m".into()),
        ..VolSnapshotDef::default()
    };
    vec![
        ("internal", base()),
        ("external-file", external_file),
        ("copy-with-checksum", copy),
        ("lvm-block", lvm),
        ("btrfs-dir", btrfs),
        ("rbd-network", rbd),
        ("minimal", minimal),
    ]
}

#[test]
fn test_volsnapshot_every_form_round_trips_and_validates() {
    let xmllint = common::xmllint();
    let schema = common::schema_dir().join("volsnapshot.rng");
    let dir = tempfile::tempdir().expect("temp dir");
    for (label, def) in variants() {
        for (format, parse) in [
            (FormatFlags::empty(), ParseFlags::REDEFINE),
            (
                FormatFlags::INTERNAL | FormatFlags::CURRENT,
                ParseFlags::REDEFINE | ParseFlags::INTERNAL,
            ),
        ] {
            if def.volume.is_none() && parse.contains(ParseFlags::REDEFINE) {
                // A redefinition must name its volume; checked without REDEFINE below.
                let xml = def.format(&FormatOptions::new(format));
                let back = VolSnapshotDef::parse(
                    &xml,
                    &ParseOptions::new(ParseFlags::VALIDATE | (parse - ParseFlags::REDEFINE)),
                )
                .unwrap_or_else(|e| panic!("{label}: {e}\n{xml}"));
                assert_eq!(back.def.format(&FormatOptions::new(format)), xml, "{label}");
                continue;
            }
            let xml = def.format(&FormatOptions::new(format));
            let back =
                VolSnapshotDef::parse(&xml, &ParseOptions::new(parse | ParseFlags::VALIDATE))
                    .unwrap_or_else(|e| panic!("{label}: {e}\n{xml}"));
            assert_eq!(back.def, def, "{label}");
            assert_eq!(
                back.current,
                format.contains(FormatFlags::CURRENT),
                "{label}"
            );
            if let Some(x) = &xmllint {
                let path = dir.path().join(format!("{label}-{}.xml", format.bits()));
                std::fs::write(&path, &xml).expect("write");
                common::assert_valid(x, &schema, &path);
            }
        }
    }
}

#[test]
fn test_volsnapshot_schema_refuses_what_validate_refuses() {
    let xmllint = common::xmllint();
    let schema = common::schema_dir().join("volsnapshot.rng");
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = [
        (
            "unknown-element",
            "<volsnapshot><name>a</name><colour>red</colour></volsnapshot>",
        ),
        (
            "relative-path",
            "<volsnapshot><volume><path>img.qcow2</path></volume></volsnapshot>",
        ),
        (
            "internal-with-source",
            "<volsnapshot><snapshot mode='internal' type='file'><source file='/a'/></snapshot></volsnapshot>",
        ),
        (
            "bad-state",
            "<volsnapshot><state>running</state></volsnapshot>",
        ),
        (
            "volume-without-id",
            "<volsnapshot><volume><format type='raw'/></volume></volsnapshot>",
        ),
    ];
    for (label, xml) in bad {
        if let Ok(p) = VolSnapshotDef::parse(xml, &ParseOptions::new(ParseFlags::VALIDATE)) {
            panic!("{label}: parser accepted {xml} as {p:?}");
        }
        if let Some(x) = &xmllint {
            let path = dir.path().join(format!("{label}.xml"));
            std::fs::write(&path, xml).expect("write");
            common::assert_invalid(x, &schema, &path);
        }
    }
}

#[test]
fn test_volsnapshot_example_is_canonical_and_schema_is_embedded() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/volsnapshot.xml");
    let text = std::fs::read_to_string(&path).expect("example");
    let parsed = VolSnapshotDef::parse(&text, &ParseOptions::new(ParseFlags::VALIDATE))
        .expect("example parses");
    assert_eq!(parsed.def.format(&FormatOptions::default()), text);
    let on_disk =
        std::fs::read_to_string(common::schema_dir().join("volsnapshot.rng")).expect("schema");
    assert_eq!(VOLSNAPSHOT_SCHEMA, on_disk);
}
