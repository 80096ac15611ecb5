//! `DomainSnapshotDef::align_disks`: libvirt's `virDomainSnapshotAlignDisks`
//! and `virDomainSnapshotDefAssignExternalNames`, plus the image conflicts
//! we refuse on top of libvirt.
//!
//! Domains and snapshots are built from XML. The filesystem question
//! ("is this source a regular file?") is answered by [`Files`], a fixed set
//! of paths, except in the tests that use the real [`HostFiles`] probe.

use super::*;
use crate::domain::Domain;
use crate::flags::{ParseFlags, ParseOptions};

/// Answers the probe from a fixed list of regular files.
struct Files(&'static [&'static str]);

impl SourceProbe for Files {
    fn is_regular_file(&self, path: &str) -> bool {
        self.0.contains(&path)
    }
}

/// The regular files of [`DOMAIN`].
const FILES: Files = Files(&["/img/vm.qcow2", "/img/data.qcow2"]);

/// Three disks: vda and vdb are qcow2 files, hdc an empty read-only CD-ROM.
const DOMAIN: &str = "<domain type='kvm'>
  <name>vm1</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/vm.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/data.qcow2'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
  </devices>
</domain>";

/// A domain whose `<devices>` holds `disks`.
fn domain_with(disks: &str) -> DomainDef {
    domain(&format!(
        "<domain type='kvm'><name>vm1</name><devices>{disks}</devices></domain>"
    ))
}

fn domain(xml: &str) -> DomainDef {
    Domain::parse(xml).expect("test domain is valid").def
}

/// A creation request named `s1` with `disks` inside `<disks>`.
fn snapshot(disks: &str) -> DomainSnapshotDef {
    parse(&format!(
        "<domainsnapshot><name>s1</name><disks>{disks}</disks></domainsnapshot>"
    ))
}

fn parse(xml: &str) -> DomainSnapshotDef {
    DomainSnapshotDef::parse(xml, &ParseOptions::default())
        .expect("test snapshot is valid")
        .def
}

/// Default external, no uniform internal rule, domain defaults honoured.
fn external() -> AlignParams {
    AlignParams {
        default_mode: SnapshotMode::External,
        uniform_internal: false,
        force_default: false,
    }
}

/// Default internal, as qemu aligns an internal snapshot: uniform.
fn uniform_internal() -> AlignParams {
    AlignParams::new(SnapshotMode::Internal)
}

/// Default internal without the uniform rule.
fn loose_internal() -> AlignParams {
    AlignParams {
        uniform_internal: false,
        ..uniform_internal()
    }
}

/// Aligns `snap` against `dom` with the fixed probe.
fn align_with(
    snap: &mut DomainSnapshotDef,
    dom: &DomainDef,
    params: AlignParams,
) -> Result<Vec<(String, SnapshotMode, Option<String>)>> {
    snap.align_disks(Some(dom), params, &FILES)?;
    Ok(summary(snap))
}

/// `(name, mode, new image path)` of every disk.
fn summary(snap: &DomainSnapshotDef) -> Vec<(String, SnapshotMode, Option<String>)> {
    snap.disks
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                d.mode.expect("aligned disks have a mode"),
                d.source.path.clone(),
            )
        })
        .collect()
}

fn entry(
    name: &str,
    mode: SnapshotMode,
    path: Option<&str>,
) -> (String, SnapshotMode, Option<String>) {
    (name.to_string(), mode, path.map(str::to_string))
}

// ----- shape of the result -----

#[test]
fn test_align_requested_out_of_order_one_entry_per_domain_disk_in_domain_order() {
    let mut snap =
        snapshot("<disk name='vdb' snapshot='no'/><disk name='vda' snapshot='internal'/>");

    let disks = align_with(&mut snap, &domain(DOMAIN), loose_internal()).expect("aligns");

    assert_eq!(
        disks,
        [
            entry("vda", SnapshotMode::Internal, None),
            entry("vdb", SnapshotMode::No, None),
            entry("hdc", SnapshotMode::No, None),
        ]
    );
}

#[test]
fn test_align_no_disks_requested_every_domain_disk_gets_default() {
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

    let disks = align_with(&mut snap, &domain(DOMAIN), loose_internal()).expect("aligns");

    assert_eq!(
        disks,
        [
            entry("vda", SnapshotMode::Internal, None),
            entry("vdb", SnapshotMode::Internal, None),
            entry("hdc", SnapshotMode::No, None),
        ]
    );
}

#[test]
fn test_align_domain_without_disks_gives_no_disks() {
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

    let disks = align_with(&mut snap, &domain_with(""), external()).expect("aligns");

    assert_eq!(disks, []);
}

#[test]
fn test_align_disk_named_by_source_path_normalised_to_target() {
    let mut snap = snapshot("<disk name='/img/data.qcow2' snapshot='no'/>");

    let disks = align_with(&mut snap, &domain(DOMAIN), loose_internal()).expect("aligns");

    assert_eq!(disks[1], entry("vdb", SnapshotMode::No, None));
}

#[test]
fn test_align_requested_disk_keeps_its_image_description() {
    let mut snap = snapshot(
        "<disk name='vda'><driver type='qcow2'><metadata_cache><max_size unit='KiB'>4</max_size></metadata_cache></driver><source file='/img/new.qcow2'/></disk>",
    );

    snap.align_disks(Some(&domain(DOMAIN)), external(), &FILES)
        .expect("aligns");

    let vda = &snap.disks[0];
    assert_eq!(vda.format, Some(crate::source::StorageFormat::Qcow2));
    assert_eq!(vda.metadata_cache_max_size, Some(4096));
    assert_eq!(vda.source.path.as_deref(), Some("/img/new.qcow2"));
}

// ----- default modes -----

#[test]
fn test_align_unlisted_disk_takes_mode_from_domain_snapshot_attribute() {
    let dom = domain_with(
        "<disk type='file'><source file='/img/vm.qcow2'/><target dev='vda'/></disk>
         <disk type='file' snapshot='no'><source file='/img/data.qcow2'/><target dev='vdb'/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

    let disks = align_with(&mut snap, &dom, external()).expect("aligns");

    assert_eq!(
        disks,
        [
            entry("vda", SnapshotMode::External, Some("/img/vm.s1")),
            entry("vdb", SnapshotMode::No, None),
        ]
    );
}

#[test]
fn test_align_listed_disk_without_mode_takes_mode_from_domain_snapshot_attribute() {
    let dom = domain_with(
        "<disk type='file' snapshot='external'><source file='/img/vm.qcow2'/><target dev='vda'/></disk>",
    );
    let mut snap = snapshot("<disk name='vda'/>");

    let disks = align_with(&mut snap, &dom, loose_internal()).expect("aligns");

    assert_eq!(
        disks,
        [entry("vda", SnapshotMode::External, Some("/img/vm.s1"))]
    );
}

#[test]
fn test_align_readonly_disk_without_attribute_defaults_to_no() {
    let dom = domain_with(
        "<disk type='file'><source file='/img/base.iso'/><target dev='vda'/><readonly/></disk>
         <disk type='file'><source file='/img/other.iso'/><target dev='vdb'/><readonly/></disk>",
    );
    let mut snap = snapshot("<disk name='vdb'/>");

    let disks = align_with(&mut snap, &dom, external()).expect("aligns");

    assert_eq!(
        disks,
        [
            entry("vda", SnapshotMode::No, None),
            entry("vdb", SnapshotMode::No, None),
        ]
    );
}

#[test]
fn test_align_readonly_disk_with_attribute_uses_attribute() {
    let dom = domain_with(
        "<disk type='file' snapshot='internal'><source file='/img/base.iso'/><target dev='vda'/><readonly/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

    let disks = align_with(&mut snap, &dom, external()).expect("aligns");

    assert_eq!(disks, [entry("vda", SnapshotMode::Internal, None)]);
}

#[test]
fn test_align_empty_drive_defaults_to_no_even_with_own_mode_and_force_default() {
    // Not read-only, so only the missing medium makes it `no`.
    let dom = domain_with(
        "<disk type='file' device='cdrom' snapshot='external'><target dev='hdc'/></disk>
         <disk type='block' device='cdrom'><target dev='hdd'/></disk>
         <disk type='network' device='cdrom'><target dev='hde'/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");
    let params = AlignParams {
        force_default: true,
        ..external()
    };

    let disks = align_with(&mut snap, &dom, params).expect("aligns");

    assert_eq!(
        disks,
        [
            entry("hdc", SnapshotMode::No, None),
            entry("hdd", SnapshotMode::No, None),
            entry("hde", SnapshotMode::No, None),
        ]
    );
}

#[test]
fn test_align_file_drive_with_source_attributes_but_no_file_is_empty() {
    // libvirt's virStorageSourceIsEmpty: local storage without a path.
    let dom = domain_with(
        "<disk type='file' device='cdrom'><source startupPolicy='optional'/><target dev='hdc'/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

    let disks = align_with(&mut snap, &dom, external()).expect("aligns");

    assert_eq!(disks, [entry("hdc", SnapshotMode::No, None)]);
}

#[test]
fn test_align_force_default_overrides_domain_attribute_of_unlisted_disk() {
    let dom = domain_with(
        "<disk type='file' snapshot='no'><source file='/img/vm.qcow2'/><target dev='vda'/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");
    let params = AlignParams {
        force_default: true,
        ..loose_internal()
    };

    let disks = align_with(&mut snap, &dom, params).expect("aligns");

    assert_eq!(disks, [entry("vda", SnapshotMode::Internal, None)]);
}

#[test]
fn test_align_force_default_overrides_readonly_default_of_unlisted_disk() {
    let dom = domain_with(
        "<disk type='file'><source file='/img/vm.qcow2'/><target dev='vda'/><readonly/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");
    let params = AlignParams {
        force_default: true,
        ..loose_internal()
    };

    let disks = align_with(&mut snap, &dom, params).expect("aligns");

    assert_eq!(disks, [entry("vda", SnapshotMode::Internal, None)]);
}

// ----- uniform internal snapshots (require_match) -----

#[test]
fn test_align_uniform_internal_explicit_other_mode_refused() {
    for mode in ["external", "manual", "no"] {
        let mut snap = snapshot(&format!("<disk name='vdb' snapshot='{mode}'/>"));

        let err = align_with(&mut snap, &domain(DOMAIN), uniform_internal())
            .expect_err("internal snapshots cover every disk");

        assert_eq!(
            err,
            ConfError::DiskMustUseMode {
                disk: "vdb".into(),
                mode: "internal"
            },
            "{mode}"
        );
        assert_eq!(
            err.to_string(),
            "disk 'vdb' must use snapshot mode 'internal'; internal snapshots cover every disk the same way: change its snapshot attribute or make the snapshot external"
        );
    }
}

#[test]
fn test_align_uniform_internal_error_names_target_when_disk_named_by_path() {
    let mut snap = snapshot("<disk name='/img/vm.qcow2' snapshot='external'/>");

    let err = align_with(&mut snap, &domain(DOMAIN), uniform_internal()).expect_err("mixed");

    assert_eq!(
        err,
        ConfError::DiskMustUseMode {
            disk: "vda".into(),
            mode: "internal"
        }
    );
    assert_eq!(
        err.to_string(),
        "disk 'vda' must use snapshot mode 'internal'; internal snapshots cover every disk the same way: change its snapshot attribute or make the snapshot external"
    );
}

#[test]
fn test_align_uniform_internal_no_on_disk_whose_domain_mode_is_no_allowed() {
    let dom = domain_with(
        "<disk type='file'><source file='/img/vm.qcow2'/><target dev='vda'/></disk>
         <disk type='file' snapshot='no'><source file='/img/data.qcow2'/><target dev='vdb'/></disk>
         <disk type='file'><source file='/img/ro.iso'/><target dev='vdc'/><readonly/></disk>",
    );
    let mut snap = snapshot("<disk name='vdb' snapshot='no'/><disk name='vdc' snapshot='no'/>");

    let disks = align_with(&mut snap, &dom, uniform_internal()).expect("allowed exception");

    assert_eq!(
        disks,
        [
            entry("vda", SnapshotMode::Internal, None),
            entry("vdb", SnapshotMode::No, None),
            entry("vdc", SnapshotMode::No, None),
        ]
    );
}

#[test]
fn test_align_uniform_internal_listed_disk_ignores_domain_mode_other_than_no() {
    let dom = domain_with(
        "<disk type='file' snapshot='external'><source file='/img/vm.qcow2'/><target dev='vda'/></disk>",
    );
    let mut snap = snapshot("<disk name='vda'/>");

    let disks = align_with(&mut snap, &dom, uniform_internal()).expect("aligns");

    assert_eq!(disks, [entry("vda", SnapshotMode::Internal, None)]);
}

#[test]
fn test_align_uniform_rule_applies_only_when_default_is_internal() {
    let mut snap =
        snapshot("<disk name='vda' snapshot='internal'/><disk name='vdb' snapshot='no'/>");
    let params = AlignParams::new(SnapshotMode::External);

    let disks = align_with(&mut snap, &domain(DOMAIN), params).expect("mixing allowed");

    assert_eq!(
        disks,
        [
            entry("vda", SnapshotMode::Internal, None),
            entry("vdb", SnapshotMode::No, None),
            entry("hdc", SnapshotMode::No, None),
        ]
    );
}

#[test]
fn test_align_non_uniform_internal_explicit_modes_kept() {
    let mut snap = snapshot("<disk name='vda' snapshot='manual'/><disk name='vdb' snapshot='no'/>");

    let disks = align_with(&mut snap, &domain(DOMAIN), loose_internal()).expect("aligns");

    assert_eq!(
        disks,
        [
            entry("vda", SnapshotMode::Manual, None),
            entry("vdb", SnapshotMode::No, None),
            entry("hdc", SnapshotMode::No, None),
        ]
    );
}

// ----- requested disks that cannot be matched -----

#[test]
fn test_align_path_on_non_external_disk_refused() {
    // Without VALIDATE the parser keeps a <source> on an internal disk.
    let mut snap = snapshot(
        "<disk name='/img/vm.qcow2' snapshot='internal'><source file='/img/new.qcow2'/></disk>",
    );

    let err = align_with(&mut snap, &domain(DOMAIN), loose_internal()).expect_err("path");

    assert_eq!(
        err,
        ConfError::PathRequiresExternal {
            path: "/img/new.qcow2".into(),
            disk: "vda".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "file '/img/new.qcow2' for disk 'vda' requires use of external snapshot mode; set snapshot='external' or drop the <source>"
    );
}

#[test]
fn test_align_path_on_disk_whose_domain_mode_is_no_refused() {
    let dom = domain_with(
        "<disk type='file' snapshot='no'><source file='/img/vm.qcow2'/><target dev='vda'/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");
    let mut disk = SnapshotDisk::new("vda", None);
    disk.source = DiskSource::file("/img/new.qcow2");
    snap.disks.push(disk);

    let err = align_with(&mut snap, &dom, external()).expect_err("path on a `no` disk");

    assert_eq!(
        err,
        ConfError::PathRequiresExternal {
            path: "/img/new.qcow2".into(),
            disk: "vda".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "file '/img/new.qcow2' for disk 'vda' requires use of external snapshot mode; set snapshot='external' or drop the <source>"
    );
}

#[test]
fn test_align_more_disks_than_domain_refused() {
    let mut snap =
        snapshot("<disk name='vda'/><disk name='vdb'/><disk name='hdc'/><disk name='vdz'/>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("four for three");

    assert_eq!(
        err,
        ConfError::TooManyDisks {
            requested: 4,
            available: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "too many disk snapshot requests for domain: the snapshot lists 4 disks but the domain has 3; remove the extra <disk> entries"
    );
}

#[test]
fn test_align_unknown_disk_refused_listing_targets() {
    let mut snap = snapshot("<disk name='vdz' snapshot='no'/>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("no vdz");

    assert_eq!(
        err,
        ConfError::NoSuchDisk {
            name: "vdz".into(),
            targets: "vda, vdb, hdc".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "no disk named 'vdz'; name a disk by its target (vda, vdb, hdc) or its source path"
    );
}

#[test]
fn test_align_unknown_path_refused() {
    let mut snap = snapshot("<disk name='/img/other.qcow2' snapshot='no'/>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("unknown path");

    assert_eq!(
        err,
        ConfError::NoSuchDisk {
            name: "/img/other.qcow2".into(),
            targets: "vda, vdb, hdc".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "no disk named '/img/other.qcow2'; name a disk by its target (vda, vdb, hdc) or its source path"
    );
}

#[test]
fn test_align_path_shared_by_two_disks_is_ambiguous() {
    let dom = domain_with(
        "<disk type='file'><source file='/img/shared.img'/><target dev='vda'/><shareable/></disk>
         <disk type='file'><source file='/img/shared.img'/><target dev='vdb'/><shareable/></disk>",
    );
    let mut snap = snapshot("<disk name='/img/shared.img' snapshot='no'/>");

    let err = align_with(&mut snap, &dom, external()).expect_err("ambiguous");

    assert_eq!(
        err,
        ConfError::AmbiguousDisk {
            name: "/img/shared.img".into(),
            first: "vda".into(),
            second: "vdb".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "disk name '/img/shared.img' is ambiguous: it is the source of both 'vda' and 'vdb'; name the disk by its target"
    );
}

#[test]
fn test_align_same_disk_by_target_and_by_path_refused() {
    let mut snap =
        snapshot("<disk name='vda' snapshot='no'/><disk name='/img/vm.qcow2' snapshot='no'/>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("twice");

    assert_eq!(err, ConfError::DiskTwice { name: "vda".into() });
    assert_eq!(
        err.to_string(),
        "disk 'vda' specified twice; keep one <disk> entry for it"
    );
}

#[test]
fn test_align_same_target_twice_refused() {
    let mut snap = snapshot("<disk name='vdb' snapshot='no'/><disk name='vdb' snapshot='no'/>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("twice");

    assert_eq!(err, ConfError::DiskTwice { name: "vdb".into() });
    assert_eq!(
        err.to_string(),
        "disk 'vdb' specified twice; keep one <disk> entry for it"
    );
}

// ----- which domain -----

#[test]
fn test_align_without_any_domain_refused() {
    let mut snap = snapshot("<disk name='vda'/>");

    let err = snap
        .align_disks(None, external(), &FILES)
        .expect_err("nothing to align with");

    assert_eq!(err, ConfError::MissingDomain);
    assert_eq!(
        err.to_string(),
        "missing domain in snapshot; a snapshot's disks can only be checked against a domain definition: pass the domain or include <domain> in the snapshot"
    );
}

#[test]
fn test_align_uuid_only_domain_is_not_a_domain_definition() {
    let xml = "<domainsnapshot><name>s1</name><state>running</state><creationTime>1</creationTime>
      <domain><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid></domain></domainsnapshot>";
    let mut snap = DomainSnapshotDef::parse(xml, &ParseOptions::new(ParseFlags::REDEFINE))
        .expect("valid redefinition")
        .def;

    let err = snap
        .align_disks(None, external(), &FILES)
        .expect_err("uuid is not enough");

    assert_eq!(err, ConfError::MissingDomain);
    assert_eq!(
        err.to_string(),
        "missing domain in snapshot; a snapshot's disks can only be checked against a domain definition: pass the domain or include <domain> in the snapshot"
    );
}

#[test]
fn test_align_uuid_only_domain_falls_back_to_existing() {
    let xml = "<domainsnapshot><name>s1</name><state>shutoff</state><creationTime>1</creationTime>
      <domain><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid></domain></domainsnapshot>";
    let mut snap = DomainSnapshotDef::parse(xml, &ParseOptions::new(ParseFlags::REDEFINE))
        .expect("valid redefinition")
        .def;

    let disks = align_with(&mut snap, &domain(DOMAIN), loose_internal()).expect("aligns");

    assert_eq!(
        disks.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(),
        ["vda", "vdb", "hdc"]
    );
}

#[test]
fn test_align_embedded_full_domain_preferred_over_existing() {
    let xml = "<domainsnapshot><name>s1</name><state>shutoff</state><creationTime>1</creationTime>
      <domain type='kvm'><name>vm1</name><devices>
        <disk type='file'><source file='/img/old.qcow2'/><target dev='sda'/></disk>
      </devices></domain></domainsnapshot>";
    let mut snap = DomainSnapshotDef::parse(xml, &ParseOptions::new(ParseFlags::REDEFINE))
        .expect("valid redefinition")
        .def;

    let disks = align_with(&mut snap, &domain(DOMAIN), loose_internal()).expect("aligns");

    assert_eq!(disks, [entry("sda", SnapshotMode::Internal, None)]);
}

// ----- default external names -----

#[test]
fn test_align_external_disk_without_path_gets_default_name() {
    let cases = [
        ("/img/vm.qcow2", "s1", "/img/vm.s1"),
        ("/img/vm", "s1", "/img/vm.s1"),
        ("/img.d/vm", "s1", "/img.d/vm.s1"),
        ("/img/vm.tar.gz", "s1", "/img/vm.tar.s1"),
        ("/img/vm.qcow2", "before upgrade", "/img/vm.before upgrade"),
    ];
    for (source, name, expected) in cases {
        let dom = domain_with(&format!(
            "<disk type='file'><source file='{source}'/><target dev='vda'/></disk>"
        ));
        let mut snap = parse(&format!(
            "<domainsnapshot><name>{name}</name></domainsnapshot>"
        ));
        let probe = AnyFile;

        snap.align_disks(Some(&dom), external(), &probe)
            .expect("aligns");

        assert_eq!(
            summary(&snap),
            [entry("vda", SnapshotMode::External, Some(expected))],
            "{source} + {name}"
        );
        assert_eq!(snap.disks[0].source.kind, SourceKind::File);
    }
}

/// Every path is a regular file.
struct AnyFile;

impl SourceProbe for AnyFile {
    fn is_regular_file(&self, _: &str) -> bool {
        true
    }
}

#[test]
fn test_external_name_drops_only_last_suffix_of_last_component() {
    let cases = [
        ("/img/vm.qcow2", "s1", "/img/vm.s1"),
        ("/img/vm", "s1", "/img/vm.s1"),
        ("/img.d/vm", "s1", "/img.d/vm.s1"),
        ("/img/vm.tar.gz", "s1", "/img/vm.tar.s1"),
        ("vm.qcow2", "s1", "vm.s1"),
        ("vm", "s1", "vm.s1"),
        ("/img/vm.qcow2", "my snap name", "/img/vm.my snap name"),
    ];
    for (current, snapshot, expected) in cases {
        assert_eq!(external_name(current, snapshot), expected, "{current}");
    }
}

#[test]
fn test_align_explicit_external_path_not_renamed() {
    let mut snap = snapshot("<disk name='vda'><source file='/other/new.qcow2'/></disk>");

    let disks = align_with(&mut snap, &domain(DOMAIN), external()).expect("aligns");

    assert_eq!(
        disks[0],
        entry("vda", SnapshotMode::External, Some("/other/new.qcow2"))
    );
}

#[test]
fn test_align_default_name_for_block_new_image_refused() {
    let mut snap = snapshot("<disk name='vda' snapshot='external' type='block'/>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("block");

    assert_eq!(
        err,
        ConfError::CannotGenerateName {
            disk: "vda".into(),
            reason: "its new image is a 'block' source, which has no file name to derive; give one with <source>".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot generate external snapshot name for disk 'vda': its new image is a 'block' source, which has no file name to derive; give one with <source>"
    );
}

#[test]
fn test_align_default_name_for_network_new_image_refused() {
    let mut snap = snapshot("<disk name='vdb' snapshot='external' type='network'/>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("network");

    assert_eq!(
        err,
        ConfError::CannotGenerateName {
            disk: "vdb".into(),
            reason: "its new image is a 'network' source, which has no file name to derive; give one with <source>".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot generate external snapshot name for disk 'vdb': its new image is a 'network' source, which has no file name to derive; give one with <source>"
    );
}

#[test]
fn test_align_default_name_for_disk_without_local_source_refused() {
    let dom = domain_with(
        "<disk type='network'><source protocol='rbd' name='pool/img'><host name='mon1'/></source><target dev='vda'/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

    let err = align_with(&mut snap, &dom, external()).expect_err("network source");

    assert_eq!(
        err,
        ConfError::CannotGenerateName {
            disk: "vda".into(),
            reason: "the disk has no local source; give the new image with <source file='/absolute/path'/>".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot generate external snapshot name for disk 'vda': the disk has no local source; give the new image with <source file='/absolute/path'/>"
    );
}

#[test]
fn test_align_default_name_for_non_regular_source_refused() {
    let dom = domain_with("<disk type='block'><source dev='/dev/sdb'/><target dev='sdb'/></disk>");
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

    let err = align_with(&mut snap, &dom, external()).expect_err("block device");

    assert_eq!(
        err,
        ConfError::CannotGenerateName {
            disk: "sdb".into(),
            reason: "source '/dev/sdb' is not a regular file; refusing to generate external snapshot name: give the new image with <source file='/absolute/path'/>".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot generate external snapshot name for disk 'sdb': source '/dev/sdb' is not a regular file; refusing to generate external snapshot name: give the new image with <source file='/absolute/path'/>"
    );
}

#[test]
fn test_align_default_name_for_unnamed_snapshot_refused() {
    let mut snap = parse("<domainsnapshot/>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("no name");

    assert_eq!(
        err,
        ConfError::CannotGenerateName {
            disk: "vda".into(),
            reason: "the snapshot has no name yet; name it first".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot generate external snapshot name for disk 'vda': the snapshot has no name yet; name it first"
    );
}

#[test]
fn test_align_default_name_not_needed_for_disks_not_external() {
    // vdb's source is not a regular file, but vdb is not snapshotted.
    let mut snap = snapshot("<disk name='vdb' snapshot='no'/>");
    let probe = Files(&["/img/vm.qcow2"]);

    snap.align_disks(Some(&domain(DOMAIN)), external(), &probe)
        .expect("vdb needs no name");

    assert_eq!(
        summary(&snap),
        [
            entry("vda", SnapshotMode::External, Some("/img/vm.s1")),
            entry("vdb", SnapshotMode::No, None),
            entry("hdc", SnapshotMode::No, None),
        ]
    );
}

// ----- new images that clash -----

#[test]
fn test_align_two_disks_same_explicit_path_refused() {
    let mut snap = snapshot(
        "<disk name='vda'><source file='/img/new.qcow2'/></disk><disk name='vdb'><source file='/img/new.qcow2'/></disk>",
    );

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("collision");

    assert_eq!(
        err,
        ConfError::TargetCollision {
            disk: "vdb".into(),
            other: "vda".into(),
            path: "/img/new.qcow2".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "disks 'vdb' and 'vda' would both write the new image '/img/new.qcow2'; give each disk its own <source file=.../>"
    );
}

#[test]
fn test_align_two_disks_same_generated_name_refused() {
    let dom = domain_with(
        "<disk type='file'><source file='/img/a.qcow2'/><target dev='vda'/></disk>
         <disk type='file'><source file='/img/a.raw'/><target dev='vdb'/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");
    let probe = Files(&["/img/a.qcow2", "/img/a.raw"]);

    let err = snap
        .align_disks(Some(&dom), external(), &probe)
        .expect_err("collision");

    assert_eq!(
        err,
        ConfError::TargetCollision {
            disk: "vdb".into(),
            other: "vda".into(),
            path: "/img/a.s1".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "disks 'vdb' and 'vda' would both write the new image '/img/a.s1'; give each disk its own <source file=.../>"
    );
}

#[test]
fn test_align_new_image_is_another_disks_source_refused() {
    let mut snap = snapshot("<disk name='vda'><source file='/img/data.qcow2'/></disk>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("overwrites vdb");

    assert_eq!(
        err,
        ConfError::TargetIsExistingSource {
            disk: "vda".into(),
            other: "vdb".into(),
            path: "/img/data.qcow2".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "new image '/img/data.qcow2' for disk 'vda' is already used by disk 'vdb'; an external snapshot must write a new file: give the disk another <source file='...'/> or choose another snapshot name"
    );
}

#[test]
fn test_align_new_image_is_own_current_source_refused() {
    let mut snap = snapshot("<disk name='vda'><source file='/img/vm.qcow2'/></disk>");

    let err = align_with(&mut snap, &domain(DOMAIN), external()).expect_err("overwrites vda");

    assert_eq!(
        err,
        ConfError::TargetIsExistingSource {
            disk: "vda".into(),
            other: "vda".into(),
            path: "/img/vm.qcow2".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "new image '/img/vm.qcow2' for disk 'vda' is already used by disk 'vda'; an external snapshot must write a new file: give the disk another <source file='...'/> or choose another snapshot name"
    );
}

#[test]
fn test_align_new_image_is_backing_layer_refused() {
    let dom = domain_with(
        "<disk type='file'><source file='/img/top.qcow2'/>
           <backingStore type='file'><format type='qcow2'/><source file='/img/base.qcow2'/><backingStore/></backingStore>
           <target dev='vda'/></disk>
         <disk type='file'><source file='/img/data.qcow2'/><target dev='vdb'/></disk>",
    );
    let mut snap = snapshot(
        "<disk name='vda' snapshot='no'/><disk name='vdb'><source file='/img/base.qcow2'/></disk>",
    );

    let err = align_with(&mut snap, &dom, external()).expect_err("overwrites vda's base");

    assert_eq!(
        err,
        ConfError::TargetIsExistingSource {
            disk: "vdb".into(),
            other: "vda".into(),
            path: "/img/base.qcow2".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "new image '/img/base.qcow2' for disk 'vdb' is already used by disk 'vda'; an external snapshot must write a new file: give the disk another <source file='...'/> or choose another snapshot name"
    );
}

#[test]
fn test_align_generated_name_is_existing_source_refused() {
    // A second snapshot called s1 would write over the first one's overlay.
    let dom = domain_with(
        "<disk type='file'><source file='/img/vm.qcow2'/><target dev='vda'/></disk>
         <disk type='file' snapshot='no'><source file='/img/vm.s1'/><target dev='vdb'/></disk>",
    );
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

    let err = align_with(&mut snap, &dom, external()).expect_err("overwrites vdb");

    assert_eq!(
        err,
        ConfError::TargetIsExistingSource {
            disk: "vda".into(),
            other: "vdb".into(),
            path: "/img/vm.s1".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "new image '/img/vm.s1' for disk 'vda' is already used by disk 'vdb'; an external snapshot must write a new file: give the disk another <source file='...'/> or choose another snapshot name"
    );
}

#[test]
fn test_align_shared_source_not_snapshotted_does_not_clash() {
    let dom = domain_with(
        "<disk type='file'><source file='/img/vm.qcow2'/><target dev='vda'/></disk>
         <disk type='file'><source file='/img/vm.qcow2'/><target dev='vdb'/><shareable/></disk>",
    );
    let mut snap = snapshot("<disk name='vda' snapshot='no'/><disk name='vdb' snapshot='no'/>");

    let disks = align_with(&mut snap, &dom, external()).expect("nothing written");

    assert_eq!(
        disks,
        [
            entry("vda", SnapshotMode::No, None),
            entry("vdb", SnapshotMode::No, None),
        ]
    );
}

// ----- failure leaves the definition alone -----

#[test]
fn test_align_error_leaves_definition_unchanged() {
    let cases: [(&str, AlignParams); 4] = [
        (
            "<disk name='/img/vm.qcow2' snapshot='no'/><disk name='vdz'/>",
            external(),
        ),
        (
            "<disk name='/img/vm.qcow2' snapshot='external'/>",
            uniform_internal(),
        ),
        (
            "<disk name='vdb' snapshot='no'/><disk name='vda'><source file='/img/data.qcow2'/></disk>",
            external(),
        ),
        (
            "<disk name='vdb' snapshot='external' type='block'/>",
            external(),
        ),
    ];
    for (disks, params) in cases {
        let mut snap = snapshot(disks);
        let before = snap.clone();

        snap.align_disks(Some(&domain(DOMAIN)), params, &FILES)
            .expect_err(disks);

        assert_eq!(snap, before, "{disks}");
    }
}

// ----- the real filesystem -----

#[test]
fn test_align_host_files_regular_file_gets_default_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("vm.qcow2");
    std::fs::write(&image, b"QFI\xfb").expect("write image");
    let image = image.to_str().expect("utf-8 temp path");
    let dom = domain_with(&format!(
        "<disk type='file'><source file='{image}'/><target dev='vda'/></disk>"
    ));
    let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

    snap.align_disks(Some(&dom), external(), &HostFiles)
        .expect("regular file");

    let expected = dir.path().join("vm.s1");
    assert_eq!(snap.disks[0].source.path.as_deref(), expected.to_str());
}

#[test]
fn test_align_host_files_directory_or_missing_source_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.qcow2");
    for path in [dir.path(), missing.as_path()] {
        let path = path.to_str().expect("utf-8 temp path");
        let dom = domain_with(&format!(
            "<disk type='file'><source file='{path}'/><target dev='vda'/></disk>"
        ));
        let mut snap = parse("<domainsnapshot><name>s1</name></domainsnapshot>");

        let err = snap
            .align_disks(Some(&dom), external(), &HostFiles)
            .expect_err("not a regular file");

        assert_eq!(
            err,
            ConfError::CannotGenerateName {
                disk: "vda".into(),
                reason: format!(
                    "source '{path}' is not a regular file; refusing to generate external snapshot name: give the new image with <source file='/absolute/path'/>"
                )
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "cannot generate external snapshot name for disk 'vda': source '{path}' is not a regular file; refusing to generate external snapshot name: give the new image with <source file='/absolute/path'/>"
            )
        );
    }
}
