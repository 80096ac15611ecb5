//! libvirt's own snapshot XML tests, run against our parser and formatter:
//! the xml2xml cases of `tests/qemudomainsnapshotxml2xmltest.c` with their
//! flags, mock times and UUIDs (byte-identical output), the two
//! `*-invalid.xml` schema negatives, and RelaxNG validation of every output
//! with `xmllint` against libvirt's schemas (`tests/libvirt/README.md`).

mod common;

use std::path::PathBuf;

use snapshot_conf::{
    ConfError, DomainSnapshotDef, FormatFlags, FormatOptions, ParseFlags, ParseOptions,
    SnapshotState,
};
use uuid::Uuid;

const UUID_9D: &str = "9d37b878-a7cc-9f9a-b78f-49b3abad25a8";
const UUID_C7: &str = "c7a5fdbd-edaf-9455-926a-d65c16db1809";
const UUID_14: &str = "14beef2c-8cae-4ea8-bf55-e48fe0cd4b73";

#[derive(Clone, Copy)]
enum Dir {
    /// `DO_TEST_OUT`: the out file is input and expected output.
    OutOut,
    /// `DO_TEST_INOUT`: in file to out file.
    InOut,
    /// `DO_TEST_IN`: the in file against itself.
    InIn,
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    dir: Dir,
    internal: bool,
    redefine: bool,
    running: bool,
    uuid: Option<&'static str>,
    time: i64,
}

const fn case(name: &'static str, dir: Dir, uuid: Option<&'static str>, time: i64) -> Case {
    Case {
        name,
        dir,
        internal: false,
        redefine: matches!(dir, Dir::OutOut),
        running: false,
        uuid,
        time,
    }
}

const fn internal(mut c: Case) -> Case {
    c.internal = true;
    c
}

const fn running(mut c: Case) -> Case {
    c.running = true;
    c
}

/// The table of `qemudomainsnapshotxml2xmltest.c` (libvirt 10.7).
const CASES: &[Case] = &[
    internal(case("all_parameters", Dir::OutOut, Some(UUID_9D), 0)),
    internal(case(
        "disk_snapshot_redefine",
        Dir::OutOut,
        Some(UUID_C7),
        0,
    )),
    internal(case("full_domain", Dir::OutOut, Some(UUID_C7), 0)),
    case("noparent_nodescription_noactive", Dir::OutOut, None, 0),
    internal(case("noparent_nodescription", Dir::OutOut, None, 0)),
    case("noparent", Dir::OutOut, Some(UUID_9D), 0),
    case("metadata", Dir::OutOut, Some(UUID_C7), 0),
    case("external_vm_redefine", Dir::OutOut, Some(UUID_C7), 0),
    case(
        "memory-snapshot-inactivedomain",
        Dir::OutOut,
        Some(UUID_14),
        0,
    ),
    case("empty", Dir::InOut, Some(UUID_9D), 1_386_166_249),
    running(case("noparent", Dir::InOut, Some(UUID_9D), 1_272_917_631)),
    case("external_vm", Dir::InOut, None, 1_555_419_243),
    case("disk_snapshot", Dir::InOut, None, 1_555_419_243),
    case("disk_driver_name_null", Dir::InOut, None, 1_555_419_243),
    case("disk-seclabel", Dir::InOut, Some(UUID_9D), 581_484_660),
    case("name_and_description", Dir::InIn, None, 0),
    case("description_only", Dir::InIn, None, 0),
    case("name_only", Dir::InIn, None, 0),
    case(
        "qcow2-metadata-cache",
        Dir::InOut,
        Some(UUID_9D),
        1_386_166_249,
    ),
];

fn corpus_file(sub: &str, name: &str) -> PathBuf {
    common::libvirt_dir().join(sub).join(format!("{name}.xml"))
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs one case the way libvirt's harness does; returns our output.
fn run_case(c: &Case) -> (String, String) {
    let (input, expected) = match c.dir {
        Dir::OutOut => (
            corpus_file("xml2xml-out", c.name),
            corpus_file("xml2xml-out", c.name),
        ),
        Dir::InOut => (
            corpus_file("xml2xml-in", c.name),
            corpus_file("xml2xml-out", c.name),
        ),
        Dir::InIn => (
            corpus_file("xml2xml-in", c.name),
            corpus_file("xml2xml-in", c.name),
        ),
    };
    let mut flags = ParseFlags::empty();
    if c.redefine {
        flags |= ParseFlags::REDEFINE;
    }
    if c.internal {
        flags |= ParseFlags::INTERNAL;
    }
    let options = ParseOptions {
        flags,
        creation_time: (c.time != 0).then_some(c.time),
    };
    let parsed = DomainSnapshotDef::parse(&read(&input), &options)
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
    assert!(
        c.internal || !parsed.current,
        "{}: <active>1 read without INTERNAL",
        c.name
    );
    let mut def = parsed.def;
    if c.running {
        assert_eq!(
            def.state, None,
            "{}: creation parse must not set state",
            c.name
        );
        def.state = Some(SnapshotState::Running);
    }
    let mut format = FormatFlags::SECURE;
    if c.internal {
        format |= FormatFlags::INTERNAL;
        if parsed.current {
            format |= FormatFlags::CURRENT;
        }
    }
    let options = FormatOptions {
        flags: format,
        domain_uuid: c.uuid.map(|u| Uuid::parse_str(u).expect("test uuid")),
    };
    (def.format(&options), read(&expected))
}

#[test]
fn test_libvirt_xml2xml_cases_are_byte_identical() {
    let mut failures = Vec::new();
    for c in CASES {
        let (ours, expected) = run_case(c);
        if ours != expected {
            failures.push(format!(
                "--- {} expected:\n{expected}--- ours:\n{ours}",
                c.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn test_libvirt_outputs_validate_against_libvirt_schema() {
    let Some(xmllint) = common::xmllint() else {
        return;
    };
    let schema = common::libvirt_dir().join("schemas/domainsnapshot.rng");
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, c) in CASES.iter().enumerate() {
        let (ours, _) = run_case(c);
        let path = dir.path().join(format!("{i}-{}.xml", c.name));
        std::fs::write(&path, ours).expect("write output");
        common::assert_valid(&xmllint, &schema, &path);
    }
}

#[test]
fn test_libvirt_invalid_inputs_fail_schema_and_validate_parse() {
    let xmllint = common::xmllint();
    let schema = common::libvirt_dir().join("schemas/domainsnapshot.rng");
    let cases: [(&str, &str); 2] = [
        (
            "disk-invalid",
            "attribute 'startupPolicy' on a snapshot disk <source>",
        ),
        (
            "disk-network-seclabel-invalid",
            "<seclabel> inside a network <source>",
        ),
    ];
    for (name, what_expected) in cases {
        let path = corpus_file("xml2xml-in", name);
        if let Some(x) = &xmllint {
            common::assert_invalid(x, &schema, &path);
        }
        let err = DomainSnapshotDef::parse(&read(&path), &ParseOptions::new(ParseFlags::VALIDATE))
            .expect_err(name);
        match &err {
            ConfError::NotAllowed { what, pos, .. } => {
                assert_eq!(what, what_expected, "{name}");
                assert!(pos.is_some(), "{name}: error without position");
            }
            other => panic!("{name}: unexpected error {other}"),
        }
    }
}

#[test]
fn test_every_corpus_file_parses_with_validate() {
    for sub in ["xml2xml-in", "xml2xml-out"] {
        for entry in std::fs::read_dir(common::libvirt_dir().join(sub)).expect("corpus dir") {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.contains("-invalid.") {
                continue;
            }
            let text = read(&path);
            let flags = ParseFlags::VALIDATE
                | if text.contains("<state>") {
                    ParseFlags::REDEFINE | ParseFlags::INTERNAL
                } else {
                    ParseFlags::empty()
                };
            // Files without <active> are parsed without INTERNAL.
            let flags = if text.contains("<active>") {
                flags
            } else {
                flags - ParseFlags::INTERNAL
            };
            // Redefine files need a creation time; the two in-files with
            // <state> are creation requests whose state is ignored.
            let flags = if text.contains("<creationTime>") || !text.contains("<state>") {
                flags
            } else {
                flags - ParseFlags::REDEFINE
            };
            DomainSnapshotDef::parse(&text, &ParseOptions::new(flags))
                .unwrap_or_else(|e| panic!("{sub}/{name}: {e}"));
        }
    }
}

#[test]
fn test_virsh_redefine_files_parse_and_round_trip() {
    for name in ["snapshot-s2", "snapshot-s3"] {
        let path = common::libvirt_dir()
            .join("virsh")
            .join(format!("{name}.xml"));
        let text = read(&path);
        let parsed = DomainSnapshotDef::parse(
            &text,
            &ParseOptions::new(ParseFlags::REDEFINE | ParseFlags::VALIDATE),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = parsed.def.format(&FormatOptions::new(FormatFlags::SECURE));
        let again = DomainSnapshotDef::parse(&out, &ParseOptions::new(ParseFlags::REDEFINE))
            .expect("our output parses");
        assert_eq!(
            again.def.format(&FormatOptions::new(FormatFlags::SECURE)),
            out
        );
        assert_eq!(parsed.def.name.as_deref(), Some(&name[9..]));
    }
}

#[test]
fn test_libvirt_invalid_inputs_without_validate_drop_what_the_schema_refuses() {
    let xmllint = common::xmllint();
    let schema = common::libvirt_dir().join("schemas/domainsnapshot.rng");
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["disk-invalid", "disk-network-seclabel-invalid"] {
        let text = read(&corpus_file("xml2xml-in", name));
        let parsed = DomainSnapshotDef::parse(&text, &ParseOptions::default()).expect(name);
        let out = parsed.def.format(&FormatOptions::new(FormatFlags::SECURE));
        assert!(
            !out.contains("startupPolicy") && !out.contains("seclabel"),
            "{name}:\n{out}"
        );
        if let Some(x) = &xmllint {
            let path = dir.path().join(format!("{name}.xml"));
            std::fs::write(&path, &out).expect("write output");
            common::assert_valid(x, &schema, &path);
        }
    }
}
