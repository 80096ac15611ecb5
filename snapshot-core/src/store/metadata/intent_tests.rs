//! Intents under crashes: a real child process runs a multi-step storage
//! operation (move a volume's file aside, put a new file at its path,
//! record the snapshot) and is SIGKILLed after each step; the parent then
//! reopens the store, finds the interrupted operation, checks that nothing
//! new can start, and recovers it both ways, checking the files and the
//! metadata each time. A crash during recovery is recovered again.
//!
//! The child is this test binary run again with only the ignored test
//! `intent_child_op` (as in `crash_tests`).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use snapshot_conf::{DomainSnapshotDef, ParseFlags, ParseOptions};

use super::*;
use crate::store::persist::{CRASH_ENV, crash_point};

const CHILD_DIR_ENV: &str = "VIRTSNAP_TEST_INTENT_DIR";
const CHILD_MODE_ENV: &str = "VIRTSNAP_TEST_INTENT_MODE";
const OPERATION: &str = "test-move-and-overlay";
const BASE: &[u8] = b"base data\n";
const OVERLAY: &[u8] = b"overlay of vol.s1\n";

fn layout(root: &Path) -> Layout {
    Layout::new(root.join("state"))
}

fn owner() -> Owner {
    Owner::Domain("vm1".into())
}

fn open(root: &Path) -> MetadataStore {
    MetadataStore::open(&layout(root), owner(), Access::Write).expect("open store")
}

fn snap(name: &str) -> SnapshotRecord {
    let xml = format!(
        "<domainsnapshot><name>{name}</name><state>disk-snapshot</state>\
         <creationTime>1700000000</creationTime></domainsnapshot>"
    );
    let def = DomainSnapshotDef::parse(&xml, &ParseOptions::new(ParseFlags::REDEFINE))
        .expect("definition")
        .def;
    SnapshotRecord::Domain(Box::new(def))
}

/// The operation's files.
struct Files {
    vol: PathBuf,
    aside: PathBuf,
}

impl Files {
    fn of(root: &Path) -> Self {
        Self {
            vol: root.join("vol"),
            aside: root.join("vol.s1"),
        }
    }

    fn from_payload(payload: &str) -> Self {
        let mut lines = payload.lines();
        let vol = PathBuf::from(lines.next().expect("vol line"));
        let aside = PathBuf::from(lines.next().expect("aside line"));
        Self { vol, aside }
    }

    fn payload(&self) -> String {
        format!("{}\n{}\n", self.vol.display(), self.aside.display())
    }
}

/// Writes `bytes` at `path` by temp file and rename.
fn put(path: &Path, bytes: &[u8]) {
    let temp = path.with_extension("new");
    fs::write(&temp, bytes).expect("write temp");
    fs::rename(&temp, path).expect("rename");
}

/// The operation, with a crash point after each step.
fn operate(root: &Path) {
    let files = Files::of(root);
    let mut store = open(root);
    let recoveries = [Recovery::RollBack, Recovery::Finish];
    store
        .begin_intent(Intent::new(OPERATION, &recoveries, &files.payload()))
        .expect("begin");
    crash_point("op-begun");
    fs::rename(&files.vol, &files.aside).expect("move aside");
    crash_point("op-moved");
    store.advance_intent(1, None).expect("advance 1");
    crash_point("op-advanced-1");
    put(&files.vol, OVERLAY);
    crash_point("op-overlaid");
    store.advance_intent(2, None).expect("advance 2");
    crash_point("op-advanced-2");
    store.create(snap("s1")).expect("record s1");
    crash_point("op-recorded");
    store.end_intent().expect("end");
}

/// Recovers the operation from any step, idempotently.
struct MoveAndOverlay;

impl IntentHandler for MoveAndOverlay {
    fn operation(&self) -> &str {
        OPERATION
    }

    fn recover(
        &self,
        store: &mut MetadataStore,
        intent: &Intent,
        how: Recovery,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let files = Files::from_payload(&intent.payload);
        let vol = fs::read(&files.vol).ok();
        match how {
            Recovery::Finish => {
                if !files.aside.exists() {
                    fs::rename(&files.vol, &files.aside)?;
                }
                crash_point("recover-moved");
                if vol.as_deref() != Some(OVERLAY) {
                    put(&files.vol, OVERLAY);
                }
                if !store.tree().contains("s1") {
                    store.create(snap("s1"))?;
                }
            }
            Recovery::RollBack => {
                if store.tree().contains("s1") {
                    store.delete("s1", ChildPolicy::Rebase)?;
                }
                crash_point("recover-unrecorded");
                if files.aside.exists() {
                    fs::rename(&files.aside, &files.vol)?;
                }
            }
        }
        Ok(())
    }
}

#[test]
#[ignore = "child process of the intent tests; does nothing on its own"]
fn intent_child_op() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let root = Path::new(&dir);
    match std::env::var(CHILD_MODE_ENV).as_deref() {
        Ok("operate") => operate(root),
        Ok("finish") => {
            open(root)
                .recover_intent(&[&MoveAndOverlay], Some(Recovery::Finish))
                .expect("recover");
        }
        Ok("roll-back") => {
            open(root)
                .recover_intent(&[&MoveAndOverlay], Some(Recovery::RollBack))
                .expect("recover");
        }
        other => panic!("unknown mode {other:?}"),
    }
    panic!("crash point {:?} was not reached", std::env::var(CRASH_ENV));
}

fn run_child(root: &Path, mode: &str, point: &str) {
    let test_name = format!(
        "{}::intent_child_op",
        module_path!().split_once("::").expect("crate::module").1
    );
    let status = std::process::Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", &test_name, "--ignored", "--nocapture"])
        .env(CHILD_DIR_ENV, root)
        .env(CHILD_MODE_ENV, mode)
        .env(CRASH_ENV, point)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn child");
    assert_eq!(
        status.signal(),
        Some(9),
        "{mode} at {point}: child not SIGKILLed (crash point never hit?): {status}"
    );
}

/// The files and the metadata: (vol, vol.s1, snapshots, current).
type State = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<String>,
    Option<String>,
);

fn state(root: &Path, store: &MetadataStore) -> State {
    let files = Files::of(root);
    let mut names: Vec<String> = store
        .tree()
        .list(&crate::tree::ListFilter::default())
        .expect("list")
        .into_iter()
        .map(str::to_string)
        .collect();
    names.sort();
    (
        fs::read(&files.vol).ok(),
        fs::read(&files.aside).ok(),
        names,
        store.tree().current().map(str::to_string),
    )
}

fn before() -> State {
    (Some(BASE.to_vec()), None, vec![], None)
}

fn after() -> State {
    (
        Some(OVERLAY.to_vec()),
        Some(BASE.to_vec()),
        vec!["s1".into()],
        Some("s1".into()),
    )
}

fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    fs::write(tmp.path().join("vol"), BASE).expect("vol");
    tmp
}

const STEPS: [(&str, u32); 6] = [
    ("op-begun", 0),
    ("op-moved", 0),
    ("op-advanced-1", 1),
    ("op-overlaid", 1),
    ("op-advanced-2", 2),
    ("op-recorded", 2),
];

#[test]
fn test_intent_killed_at_every_step_is_reported_blocks_new_work_and_recovers_both_ways() {
    // The reference: the operation run to its end.
    let tmp = setup();
    operate(tmp.path());
    let store = open(tmp.path());
    assert_eq!(state(tmp.path(), &store), after());
    assert_eq!(store.pending_intent(), None);
    assert_eq!(store.warnings(), []);
    drop(store);

    for (point, step) in STEPS {
        for how in [Recovery::Finish, Recovery::RollBack] {
            let what = format!("killed at {point}, then {how}");
            let tmp = setup();
            run_child(tmp.path(), "operate", point);

            // Readers see it reported.
            let reader =
                MetadataStore::open(&layout(tmp.path()), owner(), Access::Read).expect("read");
            let reported = LoadWarning::Interrupted {
                operation: OPERATION.into(),
                step,
                recoveries: vec![Recovery::RollBack, Recovery::Finish],
                pid: reader.pending_intent().map_or(0, |i| i.pid),
            };
            assert_eq!(reader.warnings(), std::slice::from_ref(&reported), "{what}");
            assert!(
                reported
                    .to_string()
                    .contains("must be recovered (roll-back or finish)"),
                "{reported}"
            );
            drop(reader);

            // Nothing new starts until it is recovered.
            let mut store = open(tmp.path());
            let refused = store
                .begin_intent(Intent::new("other", &[Recovery::Finish], ""))
                .expect_err("a second intent");
            assert!(
                matches!(&refused, StoreError::IntentPending { operation, step: s, .. }
                    if operation == OPERATION && *s == step),
                "{what}: {refused:?}"
            );
            assert!(refused.to_string().contains("recover it"), "{refused}");
            let (intent, done) = store
                .recover_intent(&[&MoveAndOverlay], Some(how))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((intent.step, done), (step, how), "{what}");
            let expected = if how == Recovery::Finish {
                after()
            } else {
                before()
            };
            assert_eq!(state(tmp.path(), &store), expected, "{what}");
            assert_eq!(store.pending_intent(), None, "{what}");
            drop(store);

            // Reopened: the same state, nothing pending, free to work.
            let mut store = open(tmp.path());
            assert_eq!(state(tmp.path(), &store), expected, "{what}: reopened");
            assert_eq!(store.warnings(), [], "{what}: reopened");
            store
                .begin_intent(Intent::new("next", &[Recovery::Finish], ""))
                .expect("free again");
            store.end_intent().expect("end");
        }
    }
}

#[test]
fn test_intent_recovery_killed_half_way_runs_again() {
    for (mode, point, how, expected) in [
        ("finish", "recover-moved", Recovery::Finish, after()),
        (
            "roll-back",
            "recover-unrecorded",
            Recovery::RollBack,
            before(),
        ),
    ] {
        let tmp = setup();
        run_child(tmp.path(), "operate", "op-recorded");
        run_child(tmp.path(), mode, point);
        let mut store = open(tmp.path());
        assert!(store.pending_intent().is_some(), "{mode}: still pending");
        store
            .recover_intent(&[&MoveAndOverlay], Some(how))
            .expect("recover again");
        assert_eq!(state(tmp.path(), &store), expected, "{mode}");
    }
}

#[test]
fn test_intent_refusals_name_the_problem_and_keep_the_record() {
    let tmp = setup();
    run_child(tmp.path(), "operate", "op-moved");
    let intent_path = layout(tmp.path()).owner_intent(&owner()).expect("path");
    let mut store = open(tmp.path());

    let none: [&dyn IntentHandler; 0] = [];
    let err = store.recover_intent(&none, None).expect_err("no handler");
    assert!(err.to_string().contains("no recovery is known"), "{err}");

    /// Offers nothing this test asks for: a handler for another name.
    struct Other;
    impl IntentHandler for Other {
        fn operation(&self) -> &str {
            "other"
        }
        fn recover(
            &self,
            _: &mut MetadataStore,
            _: &Intent,
            _: Recovery,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Err("must not run".into())
        }
    }
    let err = store
        .recover_intent(&[&Other], None)
        .expect_err("wrong handler");
    assert!(
        matches!(err, StoreError::NoRecoveryHandler { .. }),
        "{err:?}"
    );

    /// Fails: the intent must stay.
    struct Failing;
    impl IntentHandler for Failing {
        fn operation(&self) -> &str {
            OPERATION
        }
        fn recover(
            &self,
            _: &mut MetadataStore,
            _: &Intent,
            _: Recovery,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Err("disk on fire".into())
        }
    }
    let err = store.recover_intent(&[&Failing], None).expect_err("fails");
    let message = err.to_string();
    assert!(
        message.contains("could not roll-back") && message.contains("disk on fire"),
        "{message}"
    );
    assert!(intent_path.exists(), "kept after a failed recovery");
    assert!(store.pending_intent().is_some());

    // Advancing or ending is for the handle that began the operation.
    let err = store.end_intent().expect_err("not begun here");
    assert!(err.to_string().contains("no operation was begun"), "{err}");

    // Discarding forgets it (the storage is left as it is).
    let discarded = store.discard_intent().expect("discard").expect("readable");
    assert_eq!(discarded.operation, OPERATION);
    assert!(!intent_path.exists());
    assert!(Files::of(tmp.path()).aside.exists(), "storage untouched");
}

#[test]
fn test_intent_unreadable_record_is_reported_and_blocks_until_discarded() {
    let tmp = setup();
    let intent_path = layout(tmp.path()).owner_intent(&owner()).expect("path");
    drop(open(tmp.path()));
    fs::write(&intent_path, "virtsnap-intent 1\noperation half").expect("garble");
    let mut store = open(tmp.path());
    assert!(
        matches!(store.warnings(), [LoadWarning::UnreadableIntent { reason, .. }]
            if reason.contains("truncated")),
        "{:?}",
        store.warnings()
    );
    let err = store
        .begin_intent(Intent::new("op", &[Recovery::Finish], ""))
        .expect_err("blocked");
    assert!(err.to_string().contains("cannot be read"), "{err}");
    assert_eq!(store.discard_intent().expect("discard"), None);
    store
        .begin_intent(Intent::new("op", &[Recovery::Finish], ""))
        .expect("free again");
}
