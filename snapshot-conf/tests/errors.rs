//! Every rule of `DomainSnapshotDef::parse`, `DomainSnapshotDef::format`,
//! `VolSnapshotDef::parse` and `check_snapshot_name`: each error is checked
//! by kind (the `ConfError` variant and its fields, position included) and
//! by its full message; each default by the value it produces.

use snapshot_conf::limits::{self, MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_NODES};
use snapshot_conf::{
    ConfError, DiskSource, DomainSnapshotDef, EmbeddedDomain, FormatFlags, FormatOptions,
    ParseFlags, ParseOptions, Parsed, Pos, SnapshotDisk, SnapshotMode, SnapshotState, SourceKind,
    StorageFormat, VolSnapshotDef, VolSnapshotMode, check_snapshot_name,
};
use uuid::Uuid;

const UUID: &str = "c7a5fdbd-edaf-9455-926a-d65c16db1809";

fn at(line: u32, column: u32) -> Option<Pos> {
    Some(Pos { line, column })
}

fn opts(flags: ParseFlags) -> ParseOptions {
    ParseOptions::new(flags)
}

fn parse(xml: &str, flags: ParseFlags) -> Parsed<DomainSnapshotDef> {
    DomainSnapshotDef::parse(xml, &opts(flags)).expect("test document is valid")
}

fn parse_err(xml: &str, flags: ParseFlags) -> ConfError {
    DomainSnapshotDef::parse(xml, &opts(flags)).expect_err("test document is refused")
}

/// A redefinition of a running-domain snapshot with `body` appended.
fn redefine(body: &str) -> String {
    format!(
        "<domainsnapshot><name>s1</name><state>running</state><creationTime>1</creationTime>{body}</domainsnapshot>"
    )
}

/// A creation request with `disks` inside `<disks>`.
fn with_disks(disks: &str) -> String {
    format!("<domainsnapshot><name>s1</name><disks>{disks}</disks></domainsnapshot>")
}

// ===== the document as a whole =====

#[test]
fn test_parse_wrong_root_refused_with_position() {
    let err = parse_err(
        "<?xml version='1.0'?>\n<domain type='kvm'/>",
        ParseFlags::empty(),
    );

    assert_eq!(
        err,
        ConfError::WrongRoot {
            expected: "domainsnapshot",
            found: "domain".into(),
            pos: at(2, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "expecting root element of 'domainsnapshot', not 'domain' at line 2, column 1"
    );
}

#[test]
fn test_parse_namespaced_root_refused() {
    let err = parse_err("<s:domainsnapshot xmlns:s='urn:x'/>", ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::WrongRoot {
            expected: "domainsnapshot",
            found: "s:domainsnapshot".into(),
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "expecting root element of 'domainsnapshot', not 's:domainsnapshot' at line 1, column 1"
    );
}

#[test]
fn test_parse_mismatched_end_tag_refused_with_position() {
    let err = parse_err(
        "<domainsnapshot>\n  <name>s1</nam>\n</domainsnapshot>",
        ParseFlags::empty(),
    );

    assert_eq!(
        err,
        ConfError::Syntax {
            message: "expected 'name' tag, not 'nam'".into(),
            pos: at(2, 11)
        }
    );
    assert_eq!(
        err.to_string(),
        "malformed XML at line 2, column 11: expected 'name' tag, not 'nam'"
    );
}

#[test]
fn test_parse_unclosed_root_refused_with_position() {
    let err = parse_err("<domainsnapshot>\n  <name>s1</name>\n", ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::Syntax {
            message: "the root node was opened but never closed".into(),
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "malformed XML at line 1, column 1: the root node was opened but never closed"
    );
}

#[test]
fn test_parse_unknown_entity_refused_with_position() {
    let err = parse_err(
        "<domainsnapshot><name>&lol;</name></domainsnapshot>",
        ParseFlags::empty(),
    );

    assert_eq!(
        err,
        ConfError::Syntax {
            message: "unknown entity reference 'lol'".into(),
            pos: at(1, 23)
        }
    );
    assert_eq!(
        err.to_string(),
        "malformed XML at line 1, column 23: unknown entity reference 'lol'"
    );
}

#[test]
fn test_parse_doctype_refused() {
    let docs = [
        "<!DOCTYPE domainsnapshot>\n<domainsnapshot/>",
        "<!DOCTYPE domainsnapshot SYSTEM 'file:///etc/passwd'>\n<domainsnapshot/>",
        "<!DOCTYPE domainsnapshot [<!ENTITY n 'x'>]>\n<domainsnapshot><name>&n;</name></domainsnapshot>",
    ];
    for xml in docs {
        let err = parse_err(xml, ParseFlags::empty());

        assert_eq!(err, ConfError::Dtd, "{xml}");
        assert_eq!(
            err.to_string(),
            "XML document type declarations (<!DOCTYPE ...>) are refused in snapshot XML because their entities can expand without bound; remove the DOCTYPE"
        );
    }
}

#[test]
fn test_parse_billion_laughs_refused_as_dtd() {
    let mut xml = String::from("<?xml version='1.0'?>\n<!DOCTYPE lolz [\n <!ENTITY lol 'lol'>\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        let refs = format!("&{prev};").repeat(10);
        xml.push_str(&format!(" <!ENTITY lol{i} '{refs}'>\n"));
    }
    xml.push_str("]>\n<domainsnapshot><name>&lol9;</name></domainsnapshot>");

    let err = parse_err(&xml, ParseFlags::REDEFINE);

    assert_eq!(err, ConfError::Dtd);
}

#[test]
fn test_parse_document_over_size_limit_refused() {
    let xml = format!(
        "<domainsnapshot>{}</domainsnapshot>",
        " ".repeat(MAX_DOCUMENT_BYTES)
    );

    let err = parse_err(&xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::TooLarge {
            size: MAX_DOCUMENT_BYTES + 33,
            limit: MAX_DOCUMENT_BYTES
        }
    );
    assert_eq!(
        err.to_string(),
        "XML document is 8388641 bytes, over the 8388608-byte limit for snapshot XML; check that the right file was given"
    );
}

#[test]
fn test_parse_document_at_size_limit_accepted() {
    let xml = format!(
        "<domainsnapshot>{}</domainsnapshot>",
        " ".repeat(MAX_DOCUMENT_BYTES - 33)
    );
    assert_eq!(xml.len(), MAX_DOCUMENT_BYTES);

    let parsed = parse(&xml, ParseFlags::empty());

    assert_eq!(parsed.def, DomainSnapshotDef::default());
}

/// `<domainsnapshot><cookie>` then `levels` nested `<x>` elements.
fn nested_cookie(levels: usize) -> String {
    format!(
        "<domainsnapshot><name>s1</name><state>running</state><creationTime>1</creationTime><cookie>{}{}</cookie></domainsnapshot>",
        "<x>".repeat(levels),
        "</x>".repeat(levels)
    )
}

#[test]
fn test_parse_nesting_over_depth_limit_refused_without_stack_overflow() {
    for levels in [10_000, 400_000] {
        let xml = nested_cookie(levels);

        let err = parse_err(&xml, ParseFlags::REDEFINE);

        // <domainsnapshot> is level 1, <cookie> level 2: the x that reaches
        // level MAX_DEPTH + 1 is the (MAX_DEPTH - 1)th.
        let prefix =
            "<domainsnapshot><name>s1</name><state>running</state><creationTime>1</creationTime><cookie>".len();
        let column = u32::try_from(prefix + 3 * (MAX_DEPTH - 2) + 1).expect("small");
        assert_eq!(
            err,
            ConfError::TooDeep {
                limit: MAX_DEPTH,
                pos: at(1, column)
            },
            "{levels}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "XML elements nest more than 256 levels deep at line 1, column {column}; snapshot XML is never that deep, check the input"
            )
        );
    }
}

#[test]
fn test_parse_nesting_at_depth_limit_parses_and_formats() {
    let xml = nested_cookie(MAX_DEPTH - 2);

    let parsed = parse(&xml, ParseFlags::REDEFINE);
    let out = parsed.def.format(&FormatOptions::default());

    assert_eq!(out.matches("<x>").count(), MAX_DEPTH - 2);
}

#[test]
fn test_parse_too_many_nodes_refused() {
    let xml = format!(
        "<domainsnapshot>{}</domainsnapshot>",
        "<a/>".repeat(usize::try_from(MAX_NODES).expect("fits"))
    );

    let err = parse_err(&xml, ParseFlags::empty());

    assert_eq!(err, ConfError::TooManyNodes { limit: MAX_NODES });
    assert_eq!(
        err.to_string(),
        "XML document has more than 500000 nodes, over the limit for snapshot XML; check that the right file was given"
    );
}

// ===== REDEFINE: name, creationTime, state =====

#[test]
fn test_parse_redefine_without_name_refused() {
    let xml = "<domainsnapshot>\n  <state>running</state>\n  <creationTime>1</creationTime>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::REDEFINE);

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "name",
            parent: "domainsnapshot",
            hint: "a redefined snapshot must have a name",
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <name> in <domainsnapshot> at line 1, column 1; a redefined snapshot must have a name"
    );
}

#[test]
fn test_parse_redefine_with_empty_name_refused_as_missing() {
    // libvirt reads `string(./name)`: an empty name is no name.
    let xml = "<domainsnapshot><name></name><state>running</state><creationTime>1</creationTime></domainsnapshot>";

    let err = parse_err(xml, ParseFlags::REDEFINE);

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "name",
            parent: "domainsnapshot",
            hint: "a redefined snapshot must have a name",
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <name> in <domainsnapshot> at line 1, column 1; a redefined snapshot must have a name"
    );
}

#[test]
fn test_parse_redefine_without_creation_time_refused() {
    let xml = "<domainsnapshot><name>s1</name><state>running</state></domainsnapshot>";

    let err = parse_err(xml, ParseFlags::REDEFINE);

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "creationTime",
            parent: "domainsnapshot",
            hint: "missing creationTime from existing snapshot: a redefined snapshot keeps the time it was taken (seconds since 1970)",
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <creationTime> in <domainsnapshot> at line 1, column 1; missing creationTime from existing snapshot: a redefined snapshot keeps the time it was taken (seconds since 1970)"
    );
}

#[test]
fn test_parse_redefine_without_state_refused() {
    let xml = "<domainsnapshot><name>s1</name><creationTime>1</creationTime></domainsnapshot>";

    let err = parse_err(xml, ParseFlags::REDEFINE);

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "state",
            parent: "domainsnapshot",
            hint: "missing state from existing snapshot: give the domain state it was taken in (running, paused, shutoff, disk-snapshot, ...)",
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <state> in <domainsnapshot> at line 1, column 1; missing state from existing snapshot: give the domain state it was taken in (running, paused, shutoff, disk-snapshot, ...)"
    );
}

#[test]
fn test_parse_redefine_invalid_state_refused_with_position() {
    for state in ["bogus", "nostate", "Running", ""] {
        let xml = format!(
            "<domainsnapshot>\n  <name>s1</name>\n  <creationTime>1</creationTime>\n  <state>{state}</state>\n</domainsnapshot>"
        );

        let err = parse_err(&xml, ParseFlags::REDEFINE);

        assert_eq!(
            err,
            ConfError::InvalidValue {
                what: "<state>".into(),
                value: state.into(),
                expected: "one of running, blocked, paused, shutdown, shutoff, crashed, pmsuspended, disk-snapshot".into(),
                pos: at(4, 3)
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "invalid value '{state}' for <state> at line 4, column 3; expected one of running, blocked, paused, shutdown, shutoff, crashed, pmsuspended, disk-snapshot"
            )
        );
    }
}

#[test]
fn test_parse_redefine_every_state_accepted() {
    for state in SnapshotState::ALL {
        let xml = format!(
            "<domainsnapshot><name>s1</name><creationTime>1</creationTime><state>{state}</state></domainsnapshot>"
        );

        let parsed = parse(&xml, ParseFlags::REDEFINE);

        assert_eq!(parsed.def.state, Some(*state));
    }
}

#[test]
fn test_parse_redefine_invalid_creation_time_refused_with_position() {
    for time in ["yesterday", "1.5", "", "99999999999999999999"] {
        let xml = format!(
            "<domainsnapshot>\n  <name>s1</name>\n  <state>running</state>\n  <creationTime>{time}</creationTime>\n</domainsnapshot>"
        );

        let err = parse_err(&xml, ParseFlags::REDEFINE);

        assert_eq!(
            err,
            ConfError::InvalidValue {
                what: "<creationTime>".into(),
                value: time.into(),
                expected: "seconds since 1970-01-01 as an integer".into(),
                pos: at(4, 3)
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "invalid value '{time}' for <creationTime> at line 4, column 3; expected seconds since 1970-01-01 as an integer"
            )
        );
    }
}

#[test]
fn test_parse_redefine_reads_parent_domain_and_revert_disks() {
    let xml = redefine(&format!(
        "<parent><name>base</name></parent><domain><uuid>{UUID}</uuid></domain>
         <revertDisks><disk name='vda' snapshot='external'><source file='/img/vm.s0'/></disk></revertDisks>"
    ));

    let def = parse(&xml, ParseFlags::REDEFINE).def;

    assert_eq!(def.creation_time, Some(1));
    assert_eq!(def.parent.as_deref(), Some("base"));
    assert_eq!(
        def.domain,
        Some(EmbeddedDomain::Uuid(Uuid::parse_str(UUID).expect("uuid")))
    );
    assert_eq!(def.revert_disks.len(), 1);
    assert_eq!(
        def.revert_disks[0].source.path.as_deref(),
        Some("/img/vm.s0")
    );
}

// ===== creation requests =====

#[test]
fn test_parse_creation_ignores_redefine_only_elements() {
    let xml = format!(
        "<domainsnapshot><name>s1</name><state>not-a-state</state><creationTime>soon</creationTime>
           <parent><name>p</name></parent><domain type='kvm'><name>vm</name></domain>
           <inactiveDomain type='kvm'><name>vm</name></inactiveDomain>
           <revertDisks><disk/></revertDisks><cookie><c/></cookie>
           <domain><uuid>{UUID}</uuid></domain></domainsnapshot>"
    );

    let def = parse(&xml, ParseFlags::empty()).def;

    assert_eq!(
        def,
        DomainSnapshotDef {
            name: Some("s1".into()),
            ..DomainSnapshotDef::default()
        }
    );
}

#[test]
fn test_parse_validate_creation_still_checks_ignored_elements() {
    let xml = "<domainsnapshot>\n  <name>s1</name>\n  <state>bogus</state>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);
    let lenient = parse(xml, ParseFlags::empty()).def;

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "<state>".into(),
            value: "bogus".into(),
            expected: "one of running, blocked, paused, shutdown, shutoff, crashed, pmsuspended, disk-snapshot".into(),
            pos: at(3, 3)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'bogus' for <state> at line 3, column 3; expected one of running, blocked, paused, shutdown, shutoff, crashed, pmsuspended, disk-snapshot"
    );
    assert_eq!(lenient.state, None);
}

#[test]
fn test_parse_creation_time_option_sets_time_and_default_name() {
    let options = ParseOptions {
        flags: ParseFlags::empty(),
        creation_time: Some(1_700_000_000),
    };

    let unnamed = DomainSnapshotDef::parse("<domainsnapshot/>", &options).expect("valid");
    let empty_name = DomainSnapshotDef::parse("<domainsnapshot><name/></domainsnapshot>", &options)
        .expect("valid");
    let named =
        DomainSnapshotDef::parse("<domainsnapshot><name>s1</name></domainsnapshot>", &options)
            .expect("valid");

    assert_eq!(unnamed.def.name.as_deref(), Some("1700000000"));
    assert_eq!(unnamed.def.creation_time, Some(1_700_000_000));
    assert_eq!(empty_name.def.name.as_deref(), Some("1700000000"));
    assert_eq!(named.def.name.as_deref(), Some("s1"));
    assert_eq!(named.def.creation_time, Some(1_700_000_000));
}

#[test]
fn test_parse_creation_without_time_option_applies_no_default() {
    let def = parse("<domainsnapshot/>", ParseFlags::empty()).def;

    assert_eq!(def, DomainSnapshotDef::default());
}

#[test]
fn test_parse_redefine_ignores_creation_time_option() {
    let options = ParseOptions {
        flags: ParseFlags::REDEFINE,
        creation_time: Some(1_700_000_000),
    };

    let def = DomainSnapshotDef::parse(&redefine(""), &options)
        .expect("valid")
        .def;

    assert_eq!(def.creation_time, Some(1));
}

#[test]
fn test_parse_redefine_empty_parent_name_is_no_parent() {
    let def = parse(
        &redefine("<parent><name></name></parent>"),
        ParseFlags::REDEFINE,
    )
    .def;

    assert_eq!(def.parent, None);
}

#[test]
fn test_parse_empty_description_is_no_description() {
    let def = parse(
        "<domainsnapshot><name>s1</name><description></description></domainsnapshot>",
        ParseFlags::empty(),
    )
    .def;

    assert_eq!(def.description, None);
}

// ===== memory =====

#[test]
fn test_parse_manual_memory_refused_with_position() {
    let xml = "<domainsnapshot>\n  <memory snapshot='manual'/>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::empty());

    assert_eq!(err, ConfError::ManualMemory { pos: at(2, 11) });
    assert_eq!(
        err.to_string(),
        "'manual' memory snapshot mode not supported at line 2, column 11; use snapshot='manual' on the disks and <memory snapshot='no'/>"
    );
}

#[test]
fn test_parse_unknown_memory_mode_refused() {
    let xml = "<domainsnapshot>\n  <memory snapshot='disk'/>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "attribute 'snapshot' of <memory>".into(),
            value: "disk".into(),
            expected: "one of no, internal, external".into(),
            pos: at(2, 11)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'disk' for attribute 'snapshot' of <memory> at line 2, column 11; expected one of no, internal, external"
    );
}

#[test]
fn test_parse_memory_file_with_non_external_mode_refused() {
    for mode in ["internal", "no"] {
        let xml = format!(
            "<domainsnapshot>\n  <memory snapshot='{mode}' file='/img/mem'/>\n</domainsnapshot>"
        );

        let err = parse_err(&xml, ParseFlags::empty());

        assert_eq!(
            err,
            ConfError::MemoryFileNeedsExternal {
                file: "/img/mem".into(),
                pos: at(2, 3)
            }
        );
        assert_eq!(
            err.to_string(),
            "memory filename '/img/mem' requires external snapshot at line 2, column 3; set snapshot='external' or remove the file attribute"
        );
    }
}

#[test]
fn test_parse_external_memory_without_file_refused() {
    let xml = "<domainsnapshot>\n  <memory snapshot='external'/>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::empty());

    assert_eq!(err, ConfError::ExternalMemoryNeedsFile { pos: at(2, 3) });
    assert_eq!(
        err.to_string(),
        "external memory snapshots require a filename at line 2, column 3; add file='/absolute/path' to <memory>"
    );
}

#[test]
fn test_parse_memory_with_offline_flag_refused() {
    for memory in [
        "<memory snapshot='internal'/>",
        "<memory snapshot='external' file='/img/mem'/>",
        "<memory file='/img/mem'/>",
    ] {
        let xml = format!("<domainsnapshot>\n  {memory}\n</domainsnapshot>");

        let err = parse_err(&xml, ParseFlags::OFFLINE);

        assert_eq!(
            err,
            ConfError::MemoryWithOffline { pos: at(2, 3) },
            "{memory}"
        );
        assert_eq!(
            err.to_string(),
            "memory state cannot be saved with offline or disk-only snapshot at line 2, column 3; use <memory snapshot='no'/> or drop the disk-only request"
        );
    }
}

#[test]
fn test_parse_memory_no_with_offline_flag_accepted() {
    let def = parse(
        "<domainsnapshot><memory snapshot='no'/></domainsnapshot>",
        ParseFlags::OFFLINE,
    )
    .def;

    assert_eq!(def.memory, Some(SnapshotMode::No));
}

#[test]
fn test_parse_redefine_offline_state_with_memory_refused() {
    for state in ["shutoff", "disk-snapshot"] {
        let xml = format!(
            "<domainsnapshot>\n  <name>s1</name>\n  <state>{state}</state>\n  <creationTime>1</creationTime>\n  <memory snapshot='internal'/>\n</domainsnapshot>"
        );

        let err = parse_err(&xml, ParseFlags::REDEFINE);

        assert_eq!(
            err,
            ConfError::MemoryWithOffline { pos: at(5, 3) },
            "{state}"
        );
        assert_eq!(
            err.to_string(),
            "memory state cannot be saved with offline or disk-only snapshot at line 5, column 3; use <memory snapshot='no'/> or drop the disk-only request"
        );
    }
}

#[test]
fn test_parse_redefine_running_state_overrides_offline_flag() {
    let xml = redefine("<memory snapshot='internal'/>");

    let def = parse(&xml, ParseFlags::REDEFINE | ParseFlags::OFFLINE).def;

    assert_eq!(def.memory, Some(SnapshotMode::Internal));
}

#[test]
fn test_parse_relative_memory_file_refused_with_position() {
    let xml =
        "<domainsnapshot>\n  <memory snapshot='external' file='mem.save'/>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::RelativePath {
            what: "memory snapshot file",
            path: "mem.save".into(),
            pos: at(2, 31)
        }
    );
    assert_eq!(
        err.to_string(),
        "memory snapshot file path (mem.save) must be absolute at line 2, column 31; give the full path starting with '/'"
    );
}

#[test]
fn test_parse_memory_mode_defaults() {
    let cases: [(String, ParseFlags, Option<SnapshotMode>); 6] = [
        (
            "<domainsnapshot><memory file='/img/mem'/></domainsnapshot>".into(),
            ParseFlags::empty(),
            Some(SnapshotMode::External),
        ),
        (
            redefine("<memory file='/img/mem'/>"),
            ParseFlags::REDEFINE,
            Some(SnapshotMode::External),
        ),
        (redefine(""), ParseFlags::REDEFINE, Some(SnapshotMode::Internal)),
        (
            "<domainsnapshot><name>s1</name><state>shutoff</state><creationTime>1</creationTime></domainsnapshot>".into(),
            ParseFlags::REDEFINE,
            Some(SnapshotMode::No),
        ),
        ("<domainsnapshot/>".into(), ParseFlags::empty(), None),
        ("<domainsnapshot><memory/></domainsnapshot>".into(), ParseFlags::OFFLINE, None),
    ];
    for (xml, flags, expected) in cases {
        let def = parse(&xml, flags).def;

        assert_eq!(def.memory, expected, "{xml}");
    }
}

// ===== disks =====

#[test]
fn test_parse_disk_without_name_refused() {
    let xml =
        "<domainsnapshot>\n  <disks>\n    <disk snapshot='no'/>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::MissingAttribute {
            attribute: "name",
            element: "disk",
            hint: "missing name from disk snapshot element: name the disk by its target (vda) or its source path",
            pos: at(3, 5)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing attribute 'name' on <disk> at line 3, column 5; missing name from disk snapshot element: name the disk by its target (vda) or its source path"
    );
}

#[test]
fn test_parse_unknown_disk_snapshot_mode_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda' snapshot='yes'/>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "attribute 'snapshot' of <disk>".into(),
            value: "yes".into(),
            expected: "one of no, internal, external, manual".into(),
            pos: at(3, 22)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'yes' for attribute 'snapshot' of <disk> at line 3, column 22; expected one of no, internal, external, manual"
    );
}

#[test]
fn test_parse_disk_type_other_than_file_block_network_refused() {
    for kind in ["dir", "volume", "nvme", "vhostuser", "floppy"] {
        let xml = format!(
            "<domainsnapshot>\n  <disks>\n    <disk name='vda' type='{kind}'/>\n  </disks>\n</domainsnapshot>"
        );

        let err = parse_err(&xml, ParseFlags::empty());

        assert_eq!(
            err,
            ConfError::InvalidValue {
                what: "attribute 'type' of <disk>".into(),
                value: kind.into(),
                expected: "file, block or network: unsupported disk snapshot type (a new snapshot image cannot be a directory or a pool volume)".into(),
                pos: at(3, 22)
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "invalid value '{kind}' for attribute 'type' of <disk> at line 3, column 22; expected file, block or network: unsupported disk snapshot type (a new snapshot image cannot be a directory or a pool volume)"
            )
        );
    }
}

#[test]
fn test_parse_unknown_driver_type_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda'>\n      <driver type='qcow3'/>\n    </disk>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "attribute 'type' of <driver>".into(),
            value: "qcow3".into(),
            expected:
                "a known image format (unknown disk snapshot driver): raw, qcow2, qed, vmdk, ..."
                    .into(),
            pos: at(4, 15)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'qcow3' for attribute 'type' of <driver> at line 4, column 15; expected a known image format (unknown disk snapshot driver): raw, qcow2, qed, vmdk, ..."
    );
}

#[test]
fn test_parse_relative_disk_source_path_refused() {
    for (kind, attr) in [("file", "file"), ("block", "dev")] {
        let xml = format!(
            "<domainsnapshot>\n  <disks>\n    <disk name='vda' type='{kind}'>\n      <source {attr}='overlay.qcow2'/>\n    </disk>\n  </disks>\n</domainsnapshot>"
        );

        let err = parse_err(&xml, ParseFlags::empty());

        assert_eq!(
            err,
            ConfError::RelativePath {
                what: "disk snapshot image",
                path: "overlay.qcow2".into(),
                pos: at(4, 7)
            },
            "{kind}"
        );
        assert_eq!(
            err.to_string(),
            "disk snapshot image path (overlay.qcow2) must be absolute at line 4, column 7; give the full path starting with '/'"
        );
    }
}

#[test]
fn test_parse_invalid_metadata_cache_unit_refused() {
    let xml = with_disks(
        "<disk name='vda'><driver type='qcow2'><metadata_cache><max_size unit='parsec'>1</max_size></metadata_cache></driver></disk>",
    );

    let err = parse_err(&xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "attribute 'unit' of <max_size>".into(),
            value: "parsec".into(),
            expected:
                "b, bytes, k, KiB, KB, M, MiB, MB, G, GiB, GB, T, TiB, TB, P, PiB, PB, E, EiB or EB"
                    .into(),
            pos: at(1, 103)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'parsec' for attribute 'unit' of <max_size> at line 1, column 103; expected b, bytes, k, KiB, KB, M, MiB, MB, G, GiB, GB, T, TiB, TB, P, PiB, PB, E, EiB or EB"
    );
}

#[test]
fn test_parse_disk_mode_defaults_to_external_with_path_or_format() {
    let cases = [
        (
            "<disk name='vda'><source file='/img/new.qcow2'/></disk>",
            Some(SnapshotMode::External),
        ),
        (
            "<disk name='vda'><driver type='qcow2'/></disk>",
            Some(SnapshotMode::External),
        ),
        (
            "<disk name='vda' type='network'><source protocol='rbd' name='pool/new'/></disk>",
            Some(SnapshotMode::External),
        ),
        ("<disk name='vda'/>", None),
        ("<disk name='vda'><driver/><source/></disk>", None),
        (
            "<disk name='vda' snapshot='manual'/>",
            Some(SnapshotMode::Manual),
        ),
    ];
    for (disk, expected) in cases {
        let def = parse(&with_disks(disk), ParseFlags::empty()).def;

        assert_eq!(def.disks[0].mode, expected, "{disk}");
    }
}

#[test]
fn test_parse_disk_image_fields_read() {
    let xml = with_disks(
        "<disk name='vda' type='block'><source dev='/dev/vg/snap'/><driver type='qcow2'><metadata_cache><max_size unit='KiB'>2</max_size></metadata_cache></driver></disk>",
    );

    let disk = &parse(&xml, ParseFlags::empty()).def.disks[0];

    assert_eq!(disk.source.kind, SourceKind::Block);
    assert_eq!(disk.source.path.as_deref(), Some("/dev/vg/snap"));
    assert_eq!(disk.format, Some(StorageFormat::Qcow2));
    assert_eq!(disk.metadata_cache_max_size, Some(2048));
}

#[test]
fn test_parse_snapshot_delete_in_progress_read_only_on_redefine() {
    let disk = "<disks><disk name='vda' snapshot='external'><snapshotDeleteInProgress/><source file='/img/vm.s1'/></disk></disks>";

    let redefined = parse(&redefine(disk), ParseFlags::REDEFINE).def;
    let created = parse(
        &format!("<domainsnapshot>{disk}</domainsnapshot>"),
        ParseFlags::empty(),
    )
    .def;

    assert!(redefined.disks[0].delete_in_progress);
    assert!(!created.disks[0].delete_in_progress);
}

// ===== <active> =====

#[test]
fn test_parse_internal_without_active_refused() {
    let err = parse_err(&redefine(""), ParseFlags::REDEFINE | ParseFlags::INTERNAL);

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "active",
            parent: "domainsnapshot",
            hint: "could not find 'active' element: snapshot metadata files record <active>1</active> on the current snapshot and <active>0</active> on the others",
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <active> in <domainsnapshot> at line 1, column 1; could not find 'active' element: snapshot metadata files record <active>1</active> on the current snapshot and <active>0</active> on the others"
    );
}

#[test]
fn test_parse_internal_active_sets_current() {
    let flags = ParseFlags::REDEFINE | ParseFlags::INTERNAL;

    let one = parse(&redefine("<active>1</active>"), flags);
    let zero = parse(&redefine("<active>0</active>"), flags);

    assert!(one.current);
    assert!(!zero.current);
}

#[test]
fn test_parse_active_ignored_without_internal_flag() {
    let parsed = parse(&redefine("<active>1</active>"), ParseFlags::REDEFINE);

    assert!(!parsed.current);
}

#[test]
fn test_parse_internal_non_numeric_active_refused() {
    let xml = "<domainsnapshot>\n  <name>s1</name>\n  <active>yes</active>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::INTERNAL);

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "<active>".into(),
            value: "yes".into(),
            expected: "0 or 1".into(),
            pos: at(3, 3)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'yes' for <active> at line 3, column 3; expected 0 or 1"
    );
}

// ===== VALIDATE =====

#[test]
fn test_parse_validate_unknown_top_level_element_refused() {
    let xml = "<domainsnapshot>\n  <name>s1</name>\n  <colour>blue</colour>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::UnexpectedElement {
            element: "colour".into(),
            parent: "domainsnapshot".into(),
            pos: at(3, 3)
        }
    );
    assert_eq!(
        err.to_string(),
        "element <colour> is not allowed in <domainsnapshot> at line 3, column 3; remove it or check its spelling"
    );
}

#[test]
fn test_parse_without_validate_unknown_element_ignored() {
    let with_unknown = "<domainsnapshot><name>s1</name><colour>blue</colour></domainsnapshot>";

    let def = parse(with_unknown, ParseFlags::empty()).def;

    assert_eq!(
        def,
        parse(
            "<domainsnapshot><name>s1</name></domainsnapshot>",
            ParseFlags::empty()
        )
        .def
    );
}

#[test]
fn test_parse_validate_unknown_memory_attribute_refused() {
    let xml = "<domainsnapshot>\n  <memory snapshot='no' size='1'/>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::UnexpectedAttribute {
            attribute: "size".into(),
            element: "memory".into(),
            pos: at(2, 25)
        }
    );
    assert_eq!(
        err.to_string(),
        "attribute 'size' is not allowed on <memory> at line 2, column 25; remove it or check its spelling"
    );
}

#[test]
fn test_parse_validate_text_in_disks_refused() {
    let xml = "<domainsnapshot>\n  <disks>vda<disk name='vda'/></disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::UnexpectedText {
            element: "disks".into(),
            pos: at(2, 10)
        }
    );
    assert_eq!(
        err.to_string(),
        "text is not allowed directly inside <disks> at line 2, column 10; remove it"
    );
}

#[test]
fn test_parse_validate_duplicate_name_refused() {
    let xml = "<domainsnapshot>\n  <name>a</name>\n  <name>b</name>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::DuplicateElement {
            element: "name".into(),
            parent: "domainsnapshot".into(),
            pos: at(3, 3)
        }
    );
    assert_eq!(
        err.to_string(),
        "element <name> appears more than once in <domainsnapshot> at line 3, column 3; keep one"
    );
}

#[test]
fn test_parse_without_validate_first_duplicate_name_wins() {
    let xml = "<domainsnapshot><name>a</name><name>b</name></domainsnapshot>";

    let def = parse(xml, ParseFlags::empty()).def;

    assert_eq!(def.name.as_deref(), Some("a"));
}

#[test]
fn test_parse_validate_pmsuspended_state_refused() {
    let xml = "<domainsnapshot>\n  <name>s1</name>\n  <creationTime>1</creationTime>\n  <state>pmsuspended</state>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::REDEFINE | ParseFlags::VALIDATE);
    let lenient = parse(xml, ParseFlags::REDEFINE).def;

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "<state>".into(),
            value: "pmsuspended".into(),
            expected: "one of running, blocked, paused, shutdown, shutoff, crashed, disk-snapshot"
                .into(),
            pos: at(4, 3)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'pmsuspended' for <state> at line 4, column 3; expected one of running, blocked, paused, shutdown, shutoff, crashed, disk-snapshot"
    );
    assert_eq!(lenient.state, Some(SnapshotState::PmSuspended));
}

#[test]
fn test_parse_validate_disk_name_neither_target_nor_absolute_path_refused() {
    for name in ["disk1", "vd", "my disk", "img/vm.qcow2", "/", "vda-1"] {
        let xml = format!(
            "<domainsnapshot>\n  <disks>\n    <disk name='{name}' snapshot='no'/>\n  </disks>\n</domainsnapshot>"
        );

        let err = parse_err(&xml, ParseFlags::VALIDATE);

        assert_eq!(
            err,
            ConfError::InvalidValue {
                what: "attribute 'name' of <disk>".into(),
                value: name.into(),
                expected: "a disk target such as vda or hdb, or an absolute source path".into(),
                pos: at(3, 11)
            },
            "{name}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "invalid value '{name}' for attribute 'name' of <disk> at line 3, column 11; expected a disk target such as vda or hdb, or an absolute source path"
            )
        );
    }
}

#[test]
fn test_parse_validate_disk_targets_and_absolute_paths_accepted() {
    for name in [
        "vda",
        "hdc",
        "sdaa",
        "xvdb",
        "ubda",
        "fda",
        "vd_1",
        "ioemu:hda",
        "/img/vm.qcow2",
    ] {
        let xml = with_disks(&format!("<disk name='{name}' snapshot='no'/>"));

        let def = parse(&xml, ParseFlags::VALIDATE).def;

        assert_eq!(def.disks[0].name, name);
    }
}

#[test]
fn test_parse_without_validate_any_disk_name_accepted() {
    let def = parse(&with_disks("<disk name='my disk'/>"), ParseFlags::empty()).def;

    assert_eq!(def.disks[0].name, "my disk");
}

#[test]
fn test_parse_validate_driver_type_without_backing_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda'>\n      <driver type='raw'/>\n    </disk>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);
    let lenient = parse(xml, ParseFlags::empty()).def;

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "attribute 'type' of <driver>".into(),
            value: "raw".into(),
            expected: "a format that can have a backing file: cow, qcow, qcow2, qed or vmdk".into(),
            pos: at(4, 15)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'raw' for attribute 'type' of <driver> at line 4, column 15; expected a format that can have a backing file: cow, qcow, qcow2, qed or vmdk"
    );
    assert_eq!(lenient.disks[0].format, Some(StorageFormat::Raw));
}

#[test]
fn test_parse_validate_source_attribute_not_allowed_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda'>\n      <source file='/img/new' dev='/dev/sdb'/>\n    </disk>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::UnexpectedAttribute {
            attribute: "dev".into(),
            element: "source".into(),
            pos: at(4, 31)
        }
    );
    assert_eq!(
        err.to_string(),
        "attribute 'dev' is not allowed on <source> at line 4, column 31; remove it or check its spelling"
    );
}

#[test]
fn test_parse_validate_source_child_not_allowed_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda'>\n      <source file='/img/new'>\n        <host name='h'/>\n      </source>\n    </disk>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::UnexpectedElement {
            element: "host".into(),
            parent: "source".into(),
            pos: at(5, 9)
        }
    );
    assert_eq!(
        err.to_string(),
        "element <host> is not allowed in <source> at line 5, column 9; remove it or check its spelling"
    );
}

#[test]
fn test_parse_validate_source_startup_policy_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda'>\n      <source file='/img/new' startupPolicy='optional'/>\n    </disk>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::NotAllowed {
            what: "attribute 'startupPolicy' on a snapshot disk <source>".into(),
            why: "a new snapshot image has no startup policy; remove the attribute (it belongs on the domain's <disk> <source>)",
            pos: at(4, 31)
        }
    );
    assert_eq!(
        err.to_string(),
        "attribute 'startupPolicy' on a snapshot disk <source> is not allowed at line 4, column 31: a new snapshot image has no startup policy; remove the attribute (it belongs on the domain's <disk> <source>)"
    );
}

#[test]
fn test_parse_validate_seclabel_in_network_source_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda' type='network'>\n      <source protocol='rbd' name='pool/new'>\n        <seclabel model='dac' relabel='no'/>\n      </source>\n    </disk>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::NotAllowed {
            what: "<seclabel> inside a network <source>".into(),
            why: "only file and block sources carry security labels; remove the <seclabel>",
            pos: at(5, 9)
        }
    );
    assert_eq!(
        err.to_string(),
        "<seclabel> inside a network <source> is not allowed at line 5, column 9: only file and block sources carry security labels; remove the <seclabel>"
    );
}

#[test]
fn test_parse_validate_block_source_without_dev_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda' type='block'>\n      <source/>\n    </disk>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::MissingAttribute {
            attribute: "dev",
            element: "source",
            hint: "a block snapshot image is named by dev='/dev/...'",
            pos: at(4, 7)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing attribute 'dev' on <source> at line 4, column 7; a block snapshot image is named by dev='/dev/...'"
    );
}

#[test]
fn test_parse_validate_image_on_non_external_disk_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda' snapshot='no'>\n      <source file='/img/new'/>\n    </disk>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::UnexpectedElement {
            element: "source".into(),
            parent: "disk".into(),
            pos: at(4, 7)
        }
    );
    assert_eq!(
        err.to_string(),
        "element <source> is not allowed in <disk> at line 4, column 7; remove it or check its spelling"
    );
}

#[test]
fn test_parse_validate_type_on_non_external_disk_refused() {
    let xml = "<domainsnapshot>\n  <disks>\n    <disk name='vda' snapshot='internal' type='file'/>\n  </disks>\n</domainsnapshot>";

    let err = parse_err(xml, ParseFlags::VALIDATE);

    assert_eq!(
        err,
        ConfError::UnexpectedAttribute {
            attribute: "type".into(),
            element: "disk".into(),
            pos: at(3, 42)
        }
    );
    assert_eq!(
        err.to_string(),
        "attribute 'type' is not allowed on <disk> at line 3, column 42; remove it or check its spelling"
    );
}

// ===== format =====

/// A redefinition with a full domain and inactive domain holding a VNC
/// password.
fn with_passwords() -> DomainSnapshotDef {
    let xml = redefine(
        "<domain type='kvm'><name>vm</name><devices><graphics type='vnc' passwd='s3cret' port='-1'/></devices></domain>
         <inactiveDomain type='kvm'><name>vm</name><devices><graphics type='vnc' passwd='0ther' port='-1'/></devices></inactiveDomain>",
    );
    parse(&xml, ParseFlags::REDEFINE).def
}

#[test]
fn test_format_secure_keeps_graphics_password() {
    let out = with_passwords().format(&FormatOptions::new(FormatFlags::SECURE));

    assert!(
        out.contains("<graphics type='vnc' passwd='s3cret' port='-1'/>"),
        "{out}"
    );
    assert!(
        out.contains("<graphics type='vnc' passwd='0ther' port='-1'/>"),
        "{out}"
    );
}

#[test]
fn test_format_without_secure_drops_graphics_password() {
    let out = with_passwords().format(&FormatOptions::default());

    assert_eq!(
        out.matches("<graphics type='vnc' port='-1'/>").count(),
        2,
        "{out}"
    );
    assert!(!out.contains("passwd"), "{out}");
}

#[test]
fn test_format_no_domain_omits_domain_and_inactive_domain() {
    let options = FormatOptions {
        flags: FormatFlags::NO_DOMAIN,
        domain_uuid: Some(Uuid::parse_str(UUID).expect("uuid")),
    };

    let out = with_passwords().format(&options);

    assert_eq!(
        out,
        "<domainsnapshot>\n  <name>s1</name>\n  <state>running</state>\n  <creationTime>1</creationTime>\n  <memory snapshot='internal'/>\n</domainsnapshot>\n"
    );
}

#[test]
fn test_format_internal_writes_active_from_current_flag() {
    let def = DomainSnapshotDef {
        name: Some("s1".into()),
        ..DomainSnapshotDef::default()
    };
    let cases = [
        (FormatFlags::INTERNAL, "  <active>0</active>\n"),
        (
            FormatFlags::INTERNAL | FormatFlags::CURRENT,
            "  <active>1</active>\n",
        ),
        (FormatFlags::CURRENT, ""),
        (FormatFlags::empty(), ""),
    ];
    for (flags, active) in cases {
        let out = def.format(&FormatOptions::new(flags));

        assert_eq!(
            out,
            format!("<domainsnapshot>\n  <name>s1</name>\n{active}</domainsnapshot>\n"),
            "{flags:?}"
        );
    }
}

#[test]
fn test_format_domain_uuid_option_used_only_without_domain() {
    let option = Uuid::parse_str("9d37b878-a7cc-9f9a-b78f-49b3abad25a8").expect("uuid");
    let own = Uuid::parse_str(UUID).expect("uuid");
    let options = FormatOptions {
        flags: FormatFlags::empty(),
        domain_uuid: Some(option),
    };
    let mut def = DomainSnapshotDef {
        name: Some("s1".into()),
        ..DomainSnapshotDef::default()
    };

    let without = def.format(&options);
    def.domain = Some(EmbeddedDomain::Uuid(own));
    let with_uuid = def.format(&options);
    let full = parse(
        &redefine("<domain type='kvm'><name>vm</name></domain>"),
        ParseFlags::REDEFINE,
    )
    .def
    .format(&options);

    assert_eq!(
        without,
        format!(
            "<domainsnapshot>\n  <name>s1</name>\n  <domain>\n    <uuid>{option}</uuid>\n  </domain>\n</domainsnapshot>\n"
        )
    );
    assert_eq!(
        with_uuid,
        format!(
            "<domainsnapshot>\n  <name>s1</name>\n  <domain>\n    <uuid>{own}</uuid>\n  </domain>\n</domainsnapshot>\n"
        )
    );
    assert!(
        full.contains("  <domain type='kvm'>\n    <name>vm</name>\n  </domain>\n"),
        "{full}"
    );
    assert!(!full.contains(&option.to_string()), "{full}");
}

#[test]
fn test_format_escapes_specials_and_drops_control_characters() {
    let mut disk = SnapshotDisk::new("/img/it's <vm>", Some(SnapshotMode::External));
    disk.source = DiskSource::file("/img/a&b\"c");
    let def = DomainSnapshotDef {
        name: Some("a<b>&'\"".into()),
        description: Some("bell\u{7}\u{1b} tab\tnewline\n end".into()),
        memory: Some(SnapshotMode::External),
        memory_file: Some("/img/mem'1".into()),
        disks: vec![disk],
        ..DomainSnapshotDef::default()
    };

    let out = def.format(&FormatOptions::default());

    assert_eq!(
        out,
        "<domainsnapshot>\n  <name>a&lt;b&gt;&amp;&apos;&quot;</name>\n  <description>bell tab\tnewline\n end</description>\n  <memory snapshot='external' file='/img/mem&apos;1'/>\n  <disks>\n    <disk name='/img/it&apos;s &lt;vm&gt;' snapshot='external' type='file'>\n      <source file='/img/a&amp;b&quot;c'/>\n    </disk>\n  </disks>\n</domainsnapshot>\n"
    );
}

// ===== <volsnapshot> =====

fn vol_parse(xml: &str, flags: ParseFlags) -> Parsed<VolSnapshotDef> {
    VolSnapshotDef::parse(xml, &opts(flags)).expect("test document is valid")
}

fn vol_err(xml: &str, flags: ParseFlags) -> ConfError {
    VolSnapshotDef::parse(xml, &opts(flags)).expect_err("test document is refused")
}

#[test]
fn test_vol_parse_wrong_root_refused() {
    let err = vol_err("<domainsnapshot/>", ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::WrongRoot {
            expected: "volsnapshot",
            found: "domainsnapshot".into(),
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "expecting root element of 'volsnapshot', not 'domainsnapshot' at line 1, column 1"
    );
}

#[test]
fn test_vol_parse_redefine_without_name_refused() {
    let xml = "<volsnapshot><creationTime>1</creationTime><volume><path>/img/d</path></volume></volsnapshot>";

    let err = vol_err(xml, ParseFlags::REDEFINE);

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "name",
            parent: "volsnapshot",
            hint: "a redefined snapshot must have a name",
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <name> in <volsnapshot> at line 1, column 1; a redefined snapshot must have a name"
    );
}

#[test]
fn test_vol_parse_redefine_without_volume_refused() {
    let xml = "<volsnapshot><name>v1</name><creationTime>1</creationTime></volsnapshot>";

    let err = vol_err(xml, ParseFlags::REDEFINE);

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "volume",
            parent: "volsnapshot",
            hint: "a redefined volume snapshot names its volume with <volume><path> or <volume><key>",
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <volume> in <volsnapshot> at line 1, column 1; a redefined volume snapshot names its volume with <volume><path> or <volume><key>"
    );
}

#[test]
fn test_vol_parse_redefine_without_creation_time_refused() {
    let xml = "<volsnapshot><name>v1</name><volume><path>/img/d</path></volume></volsnapshot>";

    let err = vol_err(xml, ParseFlags::REDEFINE);

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "creationTime",
            parent: "volsnapshot",
            hint: "missing creationTime from existing snapshot: a redefined snapshot keeps the time it was taken (seconds since 1970)",
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <creationTime> in <volsnapshot> at line 1, column 1; missing creationTime from existing snapshot: a redefined snapshot keeps the time it was taken (seconds since 1970)"
    );
}

#[test]
fn test_vol_parse_redefine_invalid_state_refused() {
    let xml = "<volsnapshot>\n  <name>v1</name>\n  <creationTime>1</creationTime>\n  <volume><path>/img/d</path></volume>\n  <state>running</state>\n</volsnapshot>";

    let err = vol_err(xml, ParseFlags::REDEFINE);

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "<state>".into(),
            value: "running".into(),
            expected: "one of offline, online, quiesced".into(),
            pos: at(5, 3)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'running' for <state> at line 5, column 3; expected one of offline, online, quiesced"
    );
}

#[test]
fn test_vol_parse_volume_without_path_or_key_refused() {
    let xml = "<volsnapshot>\n  <volume><format type='qcow2'/></volume>\n</volsnapshot>";

    let err = vol_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "path",
            parent: "volume",
            hint: "name the volume with <path>/absolute/path</path> or <key>...</key>",
            pos: at(2, 3)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <path> in <volume> at line 2, column 3; name the volume with <path>/absolute/path</path> or <key>...</key>"
    );
}

#[test]
fn test_vol_parse_relative_volume_path_refused() {
    let xml = "<volsnapshot>\n  <volume><path>disk.qcow2</path></volume>\n</volsnapshot>";

    let err = vol_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::RelativePath {
            what: "volume",
            path: "disk.qcow2".into(),
            pos: at(2, 3)
        }
    );
    assert_eq!(
        err.to_string(),
        "volume path (disk.qcow2) must be absolute at line 2, column 3; give the full path starting with '/'"
    );
}

#[test]
fn test_vol_parse_relative_snapshot_image_refused() {
    let xml = "<volsnapshot>\n  <snapshot mode='external'>\n    <source file='disk.snap'/>\n  </snapshot>\n</volsnapshot>";

    let err = vol_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::RelativePath {
            what: "volume snapshot image",
            path: "disk.snap".into(),
            pos: at(3, 5)
        }
    );
    assert_eq!(
        err.to_string(),
        "volume snapshot image path (disk.snap) must be absolute at line 3, column 5; give the full path starting with '/'"
    );
}

#[test]
fn test_vol_parse_unknown_volume_format_refused() {
    let xml = "<volsnapshot>\n  <volume><path>/img/d</path><format type='qcow3'/></volume>\n</volsnapshot>";

    let err = vol_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "attribute 'type' of <format>".into(),
            value: "qcow3".into(),
            expected: StorageFormat::expected(),
            pos: at(2, 38)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'qcow3' for attribute 'type' of <format> at line 2, column 38; expected one of raw, dir, bochs, cloop, dmg, iso, vpc, vdi, fat, vhd, ploop, luks, cow, qcow, qcow2, qed, vmdk"
    );
}

#[test]
fn test_vol_parse_unknown_snapshot_driver_type_refused() {
    let xml =
        "<volsnapshot>\n  <snapshot>\n    <driver type='qcow3'/>\n  </snapshot>\n</volsnapshot>";

    let err = vol_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "attribute 'type' of <driver>".into(),
            value: "qcow3".into(),
            expected: StorageFormat::expected(),
            pos: at(3, 13)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'qcow3' for attribute 'type' of <driver> at line 3, column 13; expected one of raw, dir, bochs, cloop, dmg, iso, vpc, vdi, fat, vhd, ploop, luks, cow, qcow, qcow2, qed, vmdk"
    );
}

#[test]
fn test_vol_parse_invalid_driver_name_refused() {
    let xml = "<volsnapshot>\n  <volume><path>/img/d</path><driver name='my driver'/></volume>\n</volsnapshot>";

    let err = vol_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "attribute 'name' of <driver>".into(),
            value: "my driver".into(),
            expected: "a driver name of letters, digits, '-', '_', '.' or ':'".into(),
            pos: at(2, 38)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'my driver' for attribute 'name' of <driver> at line 2, column 38; expected a driver name of letters, digits, '-', '_', '.' or ':'"
    );
}

#[test]
fn test_vol_parse_internal_mode_with_new_image_refused() {
    for inner in ["<source file='/img/d.snap'/>", "<driver type='qcow2'/>"] {
        let xml = format!(
            "<volsnapshot>\n  <snapshot mode='internal'>{inner}</snapshot>\n</volsnapshot>"
        );

        let err = vol_err(&xml, ParseFlags::empty());

        assert_eq!(
            err,
            ConfError::NotAllowed {
                what: "a new image in an internal volume snapshot".into(),
                why: "internal snapshots live inside the volume; set mode='external' or remove <source> and <driver>",
                pos: at(2, 3)
            },
            "{inner}"
        );
        assert_eq!(
            err.to_string(),
            "a new image in an internal volume snapshot is not allowed at line 2, column 3: internal snapshots live inside the volume; set mode='external' or remove <source> and <driver>"
        );
    }
}

#[test]
fn test_vol_parse_unknown_mode_refused() {
    let xml = "<volsnapshot>\n  <snapshot mode='manual'/>\n</volsnapshot>";

    let err = vol_err(xml, ParseFlags::empty());

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "attribute 'mode' of <snapshot>".into(),
            value: "manual".into(),
            expected: "one of internal, external, copy".into(),
            pos: at(2, 13)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'manual' for attribute 'mode' of <snapshot> at line 2, column 13; expected one of internal, external, copy"
    );
}

#[test]
fn test_vol_parse_mode_defaults_to_external_with_new_image() {
    let xml = "<volsnapshot><snapshot><source file='/img/d.snap'/></snapshot></volsnapshot>";

    let def = vol_parse(xml, ParseFlags::empty()).def;

    assert_eq!(def.target.mode, Some(VolSnapshotMode::External));
}

#[test]
fn test_vol_parse_internal_without_active_refused() {
    let err = vol_err("<volsnapshot/>", ParseFlags::INTERNAL);

    assert_eq!(
        err,
        ConfError::MissingElement {
            element: "active",
            parent: "volsnapshot",
            hint: "snapshot metadata files record <active>1</active> on the current snapshot and <active>0</active> on the others",
            pos: at(1, 1)
        }
    );
    assert_eq!(
        err.to_string(),
        "missing <active> in <volsnapshot> at line 1, column 1; snapshot metadata files record <active>1</active> on the current snapshot and <active>0</active> on the others"
    );
}

#[test]
fn test_vol_parse_invalid_active_refused() {
    let xml = "<volsnapshot>\n  <active>2</active>\n</volsnapshot>";

    let err = vol_err(xml, ParseFlags::INTERNAL);

    assert_eq!(
        err,
        ConfError::InvalidValue {
            what: "<active>".into(),
            value: "2".into(),
            expected: "0 or 1".into(),
            pos: at(2, 3)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value '2' for <active> at line 2, column 3; expected 0 or 1"
    );
}

#[test]
fn test_vol_parse_dtd_refused() {
    let err = vol_err(
        "<!DOCTYPE volsnapshot>\n<volsnapshot/>",
        ParseFlags::empty(),
    );

    assert_eq!(err, ConfError::Dtd);
    assert_eq!(
        err.to_string(),
        "XML document type declarations (<!DOCTYPE ...>) are refused in snapshot XML because their entities can expand without bound; remove the DOCTYPE"
    );
}

// ===== snapshot names =====

#[test]
fn test_check_snapshot_name_refuses_unusable_file_names() {
    let cases = [
        ("", "name can't be empty"),
        ("a/b", "name can't contain '/'"),
        ("/abs", "name can't contain '/'"),
        (".hidden", "name can't start with '.'"),
        ("..", "name can't start with '.'"),
        ("nul\0byte", "name can't contain a NUL character"),
    ];
    for (name, reason) in cases {
        let err = check_snapshot_name(name).expect_err(name);

        assert_eq!(
            err,
            ConfError::InvalidName {
                name: name.into(),
                reason
            }
        );
        assert_eq!(
            err.to_string(),
            format!("invalid snapshot name '{name}': {reason}; choose another name")
        );
    }
}

#[test]
fn test_check_snapshot_name_accepts_ordinary_names() {
    for name in [
        "s1",
        "my snap name",
        "1386166249",
        "a.b",
        "trailing.",
        "ünïcode",
        "-dash",
    ] {
        assert_eq!(check_snapshot_name(name), Ok(()), "{name}");
    }
}

#[test]
fn test_parse_element_with_too_many_attributes_refused_before_parsing() {
    let attrs: String = (0..=limits::MAX_ATTRIBUTES)
        .map(|i| format!(" a{i}='v'"))
        .collect();
    let xml = format!("<domainsnapshot>\n  <name{attrs}>x</name>\n</domainsnapshot>");
    let err = DomainSnapshotDef::parse(&xml, &ParseOptions::default()).expect_err("too many");
    assert_eq!(
        err,
        ConfError::TooManyAttributes {
            limit: limits::MAX_ATTRIBUTES,
            pos: Some(Pos { line: 2, column: 3 }),
        }
    );
    assert_eq!(
        err.to_string(),
        "an element has more than 128 attributes at line 2, column 3; snapshot XML never has that many, check the input"
    );
}

#[test]
fn test_parse_equals_signs_outside_start_tags_do_not_count_as_attributes() {
    let many = "=".repeat(4 * limits::MAX_ATTRIBUTES);
    let attrs: String = (0..limits::MAX_ATTRIBUTES)
        .map(|i| format!(" a{i}='{many}'"))
        .collect();
    let xml = format!(
        "<domainsnapshot><!-- {many} --><name{attrs}><![CDATA[{many}]]>{many}</name><?pi {many}?></domainsnapshot>"
    );
    let parsed = DomainSnapshotDef::parse(&xml, &ParseOptions::default()).expect("at the limit");
    assert_eq!(
        parsed.def.name.as_deref(),
        Some(format!("{many}{many}").as_str())
    );
}

#[test]
fn test_vol_parse_checksum_must_be_a_sha256_digest() {
    let digest = "ab".repeat(32);
    let good = format!(
        "<volsnapshot><snapshot mode='copy'><source file='/i/d.c'/>\
         <checksum type='sha256'>{digest}</checksum></snapshot></volsnapshot>"
    );
    let def = VolSnapshotDef::parse(&good, &ParseOptions::new(ParseFlags::VALIDATE))
        .expect("a sha256 checksum")
        .def;
    assert_eq!(def.target.mode, Some(VolSnapshotMode::Copy));
    assert_eq!(def.target.checksum.map(|c| c.value), Some(digest.clone()));
    for (bad, says) in [
        (good.replace("sha256", "md5"), "expected sha256"),
        (
            good.replace(&digest, &digest.to_uppercase()),
            "64 lowercase hex digits",
        ),
        (
            good.replace(&digest, &digest[2..]),
            "64 lowercase hex digits",
        ),
        (good.replace(" type='sha256'", ""), "name the algorithm"),
    ] {
        let err = VolSnapshotDef::parse(&bad, &ParseOptions::new(ParseFlags::empty()))
            .expect_err(says)
            .to_string();
        assert!(err.contains(says), "{says}: {err}");
    }
}
