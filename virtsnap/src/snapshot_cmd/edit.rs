//! `snapshot-edit`: virsh's edit loop on one snapshot's XML. The XML, with
//! its security-sensitive parts, goes to a private temporary file that
//! `$VISUAL`, `$EDITOR` or `vi` edits; the result redefines the snapshot
//! through the store, under the same name, or under a new one with
//! `--rename` (children follow) or `--clone` (the original stays).
//!
//! No lock is held while the editor runs: the snapshot is read again
//! before redefining, and a change made meanwhile is reported rather than
//! overwritten. Edited XML is validated against the schema, so a
//! misspelled element is refused instead of silently dropped. A refused
//! edit is offered again on a terminal (`Failed. Try again? [y,n,i,f,?]`,
//! `i` turning validation off); without a terminal the command fails and
//! the snapshot stays as it was.

use std::io::{BufRead, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use clap::Args;
use snapshot_conf::{ConfError, DomainSnapshotDef, ParseFlags, ParseOptions};
use snapshot_core::store::{Access, Layout, MetadataStore, SnapshotRecord, StoreError};

use super::open_in;

/// The editor when neither `$VISUAL` nor `$EDITOR` is set (as virsh).
const DEFAULT_EDITOR: &str = "vi";

/// `snapshot-edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// Domain name.
    domain: String,
    /// Snapshot name (or `--snapshotname NAME`).
    #[arg(
        value_name = "NAME",
        required_unless_present_any = ["current", "snapshotname_opt"],
        conflicts_with = "snapshotname_opt"
    )]
    snapshotname: Option<String>,
    /// Snapshot name, virsh's option form.
    #[arg(long = "snapshotname", value_name = "NAME", id = "snapshotname_opt")]
    snapshotname_opt: Option<String>,
    /// Without a name: edit the current snapshot. With one: also make the
    /// edited snapshot current.
    #[arg(long)]
    current: bool,
    /// Allow a changed <name>: the snapshot is renamed (its children
    /// follow it).
    #[arg(long, conflicts_with = "clone")]
    rename: bool,
    /// Allow a changed <name>: a copy is defined under the new name and
    /// the original is kept.
    #[arg(long)]
    clone: bool,
}

impl EditArgs {
    fn name(&self) -> Option<&str> {
        self.snapshotname
            .as_deref()
            .or(self.snapshotname_opt.as_deref())
    }
}

/// Why `snapshot-edit` failed.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("domain '{domain}' has no current snapshot; name the snapshot to edit")]
    NoCurrent { domain: String },
    #[error(
        "domain '{domain}' has no snapshot '{name}'; list them with `virtsnap snapshot-list {domain}`"
    )]
    NotFound { domain: String, name: String },
    #[error("cannot write the snapshot XML to a temporary file (TMPDIR or /tmp): {source}")]
    TempFile {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the edited file {}: {source}", path.display())]
    ReadBack {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot run the editor '{editor}': {source}; set VISUAL or EDITOR to an editor that is installed"
    )]
    EditorStart {
        editor: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the editor '{editor}' failed ({status}); the snapshot is unchanged")]
    EditorFailed { editor: String, status: ExitStatus },
    #[error(
        "the edited XML of snapshot '{name}' was not applied: {problem}; the snapshot is unchanged \
         (run snapshot-edit from a terminal to be offered to edit again)"
    )]
    Refused { name: String, problem: Box<Problem> },
    #[error(
        "snapshot '{name}' was changed by another command while it was being edited; \
         the edit was not applied: run snapshot-edit again"
    )]
    Changed { name: String },
    #[error("snapshot '{name}' was deleted while it was being edited; the edit was not applied")]
    Gone { name: String },
    #[error("edit of snapshot '{name}' abandoned; the snapshot is unchanged")]
    Abandoned { name: String },
}

/// Why one attempt to redefine from the edited XML was refused: something
/// the user can fix in the editor.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("the edited file is not UTF-8 text")]
    NotUtf8,
    #[error("invalid snapshot XML: {0}")]
    Xml(ConfError),
    #[error(transparent)]
    Store(StoreError),
    #[error(
        "the edited XML changes the name from '{old}' to '{new}'; pass --rename to rename \
         the snapshot or --clone to define a copy under the new name"
    )]
    NameChanged { old: String, new: String },
    #[error("snapshot '{new}' already exists; choose another name, or edit '{new}' itself")]
    NameTaken { new: String },
    #[error(
        "'{new}' cannot have parent '{parent}': that is '{old}', the snapshot being renamed, \
         or one of its descendants"
    )]
    UnderItself {
        old: String,
        new: String,
        parent: String,
    },
}

/// What the user chose after a refused attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// `y`: edit the file again.
    Reedit,
    /// `n`: throw the changes away.
    Abandon,
    /// `i`: redefine again without schema validation.
    NoValidate,
    /// `f`: redefine again as it is.
    Force,
}

/// The person (or script) editing: runs the editor and answers questions.
pub(crate) trait Session {
    /// Lets the user edit `file` in place.
    fn edit(&mut self, file: &Path) -> Result<(), EditError>;
    /// Shows `problem` and asks what to do after `message` (`Failed.`);
    /// `None` when nobody can answer (no terminal).
    fn ask(&mut self, message: &str, problem: &str) -> Option<Choice>;
}

/// The real session: the editor from the environment, questions on the
/// terminal when stdin is one.
#[derive(Debug)]
struct Terminal {
    editor: String,
    interactive: bool,
}

impl Session for Terminal {
    fn edit(&mut self, file: &Path) -> Result<(), EditError> {
        tracing::debug!(editor = %self.editor, file = %file.display(), "running the editor");
        let status = editor_command(&self.editor, file)
            .status()
            .map_err(|source| EditError::EditorStart {
                editor: self.editor.clone(),
                source,
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(EditError::EditorFailed {
                editor: self.editor.clone(),
                status,
            })
        }
    }

    fn ask(&mut self, message: &str, problem: &str) -> Option<Choice> {
        if !self.interactive {
            return None;
        }
        eprintln!("virtsnap: error: {problem}");
        let stdin = std::io::stdin();
        Some(ask_with(&mut stdin.lock(), &mut std::io::stderr(), message))
    }
}

/// virsh's question after a failed redefine, one answer per line; the
/// end of input counts as `n`.
fn ask_with(input: &mut impl BufRead, out: &mut impl Write, message: &str) -> Choice {
    loop {
        let _ = write!(out, "{message} Try again? [y,n,i,f,?]: ");
        let _ = out.flush();
        let mut line = String::new();
        if matches!(input.read_line(&mut line), Ok(0) | Err(_)) {
            let _ = writeln!(out);
            return Choice::Abandon;
        }
        match line.trim().chars().next().map(|c| c.to_ascii_lowercase()) {
            Some('y') => return Choice::Reedit,
            Some('n') => return Choice::Abandon,
            Some('i') => return Choice::NoValidate,
            Some('f') => return Choice::Force,
            Some('?') => {
                let _ = writeln!(
                    out,
                    "y - yes, start editor again\n\
                     n - no, throw away my changes\n\
                     i - turn off validation and try to redefine again\n\
                     f - force, try to redefine again\n\
                     ? - print this help"
                );
            }
            _ => {}
        }
    }
}

/// `$VISUAL`, else `$EDITOR`, else `vi`; empty values are skipped.
fn editor_from_env() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_EDITOR.to_string())
}

/// The editor's command line. A plain program name runs directly; one
/// with arguments or shell syntax (`EDITOR="code --wait"`) runs through
/// `sh -c`, the file passed as `"$@"` so its name is never parsed.
fn editor_command(editor: &str, file: &Path) -> std::process::Command {
    let plain = !editor.is_empty()
        && editor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@/".contains(c));
    let mut cmd = if plain {
        std::process::Command::new(editor)
    } else {
        let mut sh = std::process::Command::new("sh");
        sh.arg("-c").arg(format!("{editor} \"$@\"")).arg("sh");
        sh
    };
    cmd.arg(file);
    cmd
}

/// Runs `snapshot-edit` with the editor and terminal of this process.
pub(crate) fn run(layout: &Layout, args: &EditArgs) -> Result<String, EditError> {
    let mut session = Terminal {
        editor: editor_from_env(),
        interactive: std::io::stdin().is_terminal(),
    };
    edit(layout, args, &mut session)
}

/// What to redefine.
#[derive(Debug)]
struct Target<'a> {
    domain: &'a str,
    name: String,
    make_current: bool,
    rename: bool,
    clone: bool,
}

/// The outcome of one attempt to redefine.
#[derive(Debug)]
enum Attempt {
    /// Done; the message for stdout.
    Done(String),
    /// Refused for a reason the user can fix.
    Refused(Problem),
    /// The snapshot changed since it was read; its XML now.
    Changed(String),
}

/// The edit loop, virsh's `virsh-edit.c`.
fn edit(layout: &Layout, args: &EditArgs, session: &mut impl Session) -> Result<String, EditError> {
    let (name, mut original) = {
        let store = open_in(layout, &args.domain, Access::Read)?;
        let name = match args.name() {
            Some(n) => n.to_string(),
            None => store
                .tree()
                .current()
                .ok_or_else(|| EditError::NoCurrent {
                    domain: args.domain.clone(),
                })?
                .to_string(),
        };
        let xml = secure_xml(&store, &name).ok_or_else(|| EditError::NotFound {
            domain: args.domain.clone(),
            name: name.clone(),
        })?;
        (name, xml)
    };
    let target = Target {
        domain: &args.domain,
        // virsh: --current with a name also makes it current; alone it
        // only picks the snapshot.
        make_current: args.current && args.name().is_some(),
        rename: args.rename,
        clone: args.clone,
        name,
    };
    let file = temp_file(&original)?;
    loop {
        session.edit(&file)?;
        let edited = std::fs::read(&file).map_err(|source| EditError::ReadBack {
            path: file.to_path_buf(),
            source,
        })?;
        let unchanged = edited == original.as_bytes();
        tracing::debug!(unchanged, bytes = edited.len(), "editor finished");
        // With --current an unchanged snapshot is still redefined, to
        // make it current (as virsh).
        if unchanged && !target.make_current {
            return Ok(format!(
                "Snapshot {} XML configuration not changed.\n",
                target.name
            ));
        }
        let mut validate = true;
        loop {
            let (message, problem) = match attempt(layout, &target, &original, &edited, validate)? {
                Attempt::Done(message) => return Ok(message),
                Attempt::Refused(problem) => ("Failed.", Some(problem)),
                Attempt::Changed(now) => {
                    original = now;
                    ("The XML configuration was changed by another user.", None)
                }
            };
            let shown = problem.as_ref().map_or_else(
                || {
                    format!(
                        "snapshot '{}' changed while it was being edited",
                        target.name
                    )
                },
                ToString::to_string,
            );
            tracing::debug!(problem = %shown, "redefine refused");
            match session.ask(message, &shown) {
                None => {
                    let name = target.name.clone();
                    return Err(match problem {
                        Some(problem) => EditError::Refused {
                            name,
                            problem: Box::new(problem),
                        },
                        None => EditError::Changed { name },
                    });
                }
                Some(Choice::Abandon) => {
                    return Err(EditError::Abandoned {
                        name: target.name.clone(),
                    });
                }
                Some(Choice::Reedit) => break,
                Some(Choice::NoValidate) => validate = false,
                Some(Choice::Force) => {}
            }
        }
    }
}

/// The snapshot's XML as `snapshot-dumpxml --security-info` prints it.
fn secure_xml(store: &MetadataStore, name: &str) -> Option<String> {
    super::dumpxml(store, name, true).ok()
}

/// A private (0600) temporary file holding `xml`, removed when dropped.
fn temp_file(xml: &str) -> Result<tempfile::TempPath, EditError> {
    let to_err = |source| EditError::TempFile { source };
    let mut file = tempfile::Builder::new()
        .prefix("virtsnap-")
        .suffix(".xml")
        .tempfile()
        .map_err(to_err)?;
    file.write_all(xml.as_bytes()).map_err(to_err)?;
    file.flush().map_err(to_err)?;
    Ok(file.into_temp_path())
}

/// One attempt to redefine the snapshot from `edited`, under the owner's
/// write lock.
fn attempt(
    layout: &Layout,
    target: &Target<'_>,
    original: &str,
    edited: &[u8],
    validate: bool,
) -> Result<Attempt, EditError> {
    let mut store = open_in(layout, target.domain, Access::Write)?;
    let old = target.name.as_str();
    let now = secure_xml(&store, old).ok_or_else(|| EditError::Gone {
        name: old.to_string(),
    })?;
    if now != original {
        return Ok(Attempt::Changed(now));
    }
    let Ok(text) = std::str::from_utf8(edited) else {
        return Ok(Attempt::Refused(Problem::NotUtf8));
    };
    let mut flags = ParseFlags::REDEFINE;
    flags.set(ParseFlags::VALIDATE, validate);
    let def = match DomainSnapshotDef::parse(text, &ParseOptions::new(flags)) {
        Ok(parsed) => parsed.def,
        Err(e) => return Ok(Attempt::Refused(Problem::Xml(e))),
    };
    let new = def.name.clone().unwrap_or_default();
    let record = SnapshotRecord::Domain(Box::new(def));
    if new == old {
        return Ok(match store.redefine(record, target.make_current) {
            Ok(()) => {
                tracing::info!(snapshot = old, "snapshot redefined from the edit");
                Attempt::Done(format!("Snapshot {old} edited.\n"))
            }
            Err(e) => Attempt::Refused(Problem::Store(e)),
        });
    }
    if !target.rename && !target.clone {
        return Ok(Attempt::Refused(Problem::NameChanged {
            old: old.to_string(),
            new,
        }));
    }
    if store.tree().contains(&new) {
        return Ok(Attempt::Refused(Problem::NameTaken { new }));
    }
    if target.clone {
        return Ok(match store.redefine(record, target.make_current) {
            Ok(()) => {
                tracing::info!(snapshot = old, clone = %new, "snapshot cloned");
                Attempt::Done(format!("Snapshot {old} cloned to {new}.\n"))
            }
            Err(e) => Attempt::Refused(Problem::Store(e)),
        });
    }
    rename(&mut store, target, record, new)
}

/// `--rename`: one journaled store change defines `new` in place of the
/// old snapshot, its children now under `new`; the current snapshot stays
/// current under its new name.
fn rename(
    store: &mut MetadataStore,
    target: &Target<'_>,
    record: SnapshotRecord,
    new: String,
) -> Result<Attempt, EditError> {
    let old = target.name.as_str();
    if let Some(parent) = record.parent()
        && is_self_or_descendant(store, parent, old)
    {
        return Ok(Attempt::Refused(Problem::UnderItself {
            old: old.to_string(),
            parent: parent.to_string(),
            new,
        }));
    }
    let children = store.tree().child_count(old, false).unwrap_or(0);
    if let Err(e) = store.rename(old, record, target.make_current) {
        return Ok(Attempt::Refused(Problem::Store(e)));
    }
    tracing::info!(snapshot = old, renamed = %new, children, "snapshot renamed");
    Ok(Attempt::Done(format!("Snapshot {old} renamed to {new}.\n")))
}

/// Whether `name` is `ancestor` or one of its descendants.
fn is_self_or_descendant(store: &MetadataStore, name: &str, ancestor: &str) -> bool {
    let mut at = Some(name);
    while let Some(n) = at {
        if n == ancestor {
            return true;
        }
        at = store.tree().parent(n).ok().flatten();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    type Edit = Box<dyn FnMut(&Path)>;

    /// A scripted user: one closure per editor run, one answer per
    /// question; records the questions.
    struct Scripted {
        edits: VecDeque<Edit>,
        answers: VecDeque<Option<Choice>>,
        asked: Vec<(String, String)>,
    }

    impl Scripted {
        fn new(edits: Vec<Edit>, answers: Vec<Option<Choice>>) -> Self {
            Self {
                edits: edits.into(),
                answers: answers.into(),
                asked: Vec::new(),
            }
        }
    }

    impl Session for Scripted {
        fn edit(&mut self, file: &Path) -> Result<(), EditError> {
            let mut next = self.edits.pop_front().expect("an unexpected editor run");
            next(file);
            Ok(())
        }

        fn ask(&mut self, message: &str, problem: &str) -> Option<Choice> {
            self.asked.push((message.to_string(), problem.to_string()));
            self.answers.pop_front().expect("an unexpected question")
        }
    }

    fn replace(from: &'static str, to: &'static str) -> Edit {
        Box::new(move |file| {
            let text = std::fs::read_to_string(file).expect("read");
            assert!(text.contains(from), "{text}");
            std::fs::write(file, text.replace(from, to)).expect("write");
        })
    }

    fn redefine(layout: &Layout, xml: &str, current: bool) {
        let def = DomainSnapshotDef::parse(xml, &ParseOptions::new(ParseFlags::REDEFINE))
            .expect("valid XML")
            .def;
        open_in(layout, "vm", Access::Write)
            .expect("open")
            .redefine(SnapshotRecord::Domain(Box::new(def)), current)
            .expect("redefine");
    }

    fn snap(name: &str, parent: Option<&str>) -> String {
        let parent = parent
            .map(|p| format!("<parent><name>{p}</name></parent>"))
            .unwrap_or_default();
        format!(
            "<domainsnapshot><name>{name}</name><description>old</description><state>shutoff</state>{parent}<creationTime>1</creationTime></domainsnapshot>"
        )
    }

    fn setup() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().expect("state dir");
        let layout = Layout::new(dir.path());
        redefine(&layout, &snap("s1", None), false);
        redefine(&layout, &snap("s2", Some("s1")), true);
        redefine(&layout, &snap("s3", Some("s2")), false);
        (dir, layout)
    }

    fn args(name: &str) -> EditArgs {
        EditArgs {
            domain: "vm".into(),
            snapshotname: Some(name.into()),
            snapshotname_opt: None,
            current: false,
            rename: false,
            clone: false,
        }
    }

    fn xml_of(layout: &Layout, name: &str) -> Option<String> {
        secure_xml(&open_in(layout, "vm", Access::Read).expect("open"), name)
    }

    #[test]
    fn test_edit_reedit_after_invalid_xml_then_applies() {
        let (_dir, layout) = setup();
        let mut user = Scripted::new(
            vec![
                replace("<description>old</description>", "<description>new"),
                replace("<description>new", "<description>new</description>"),
            ],
            vec![Some(Choice::Reedit)],
        );
        let out = edit(&layout, &args("s2"), &mut user).expect("edit applies");
        assert_eq!(out, "Snapshot s2 edited.\n");
        assert_eq!(user.asked.len(), 1);
        assert_eq!(user.asked[0].0, "Failed.");
        assert!(
            user.asked[0].1.starts_with("invalid snapshot XML"),
            "{:?}",
            user.asked
        );
        let xml = xml_of(&layout, "s2").expect("s2");
        assert!(xml.contains("<description>new</description>"), "{xml}");
    }

    #[test]
    fn test_edit_without_terminal_refuses_and_keeps_the_original() {
        let (_dir, layout) = setup();
        let before = xml_of(&layout, "s2");
        let mut user = Scripted::new(vec![replace("</name>", "</nam>")], vec![None]);
        let err = edit(&layout, &args("s2"), &mut user).expect_err("refused");
        assert!(matches!(err, EditError::Refused { .. }), "{err}");
        assert_eq!(xml_of(&layout, "s2"), before);
    }

    #[test]
    fn test_edit_i_turns_validation_off() {
        let (_dir, layout) = setup();
        // An element the schema does not know: refused when validating,
        // ignored otherwise (as libvirt's parser does).
        let mut user = Scripted::new(
            vec![replace(
                "<description>old</description>",
                "<description>x</description><bogus/>",
            )],
            vec![Some(Choice::NoValidate)],
        );
        let out = edit(&layout, &args("s2"), &mut user).expect("applies without validation");
        assert_eq!(out, "Snapshot s2 edited.\n");
        assert_eq!(user.asked.len(), 1);
        let xml = xml_of(&layout, "s2").expect("s2");
        assert!(xml.contains("<description>x</description>"), "{xml}");
        assert!(!xml.contains("bogus"), "{xml}");
    }

    #[test]
    fn test_edit_change_meanwhile_is_reported_then_forced() {
        let (_dir, layout) = setup();
        let other = layout.clone();
        let mut user = Scripted::new(
            vec![Box::new(move |file: &Path| {
                // Another command changes s2 while the editor runs.
                let changed = snap("s2", Some("s1")).replace(">old<", ">theirs<");
                redefine(&other, &changed, false);
                let text = std::fs::read_to_string(file).expect("read");
                std::fs::write(file, text.replace(">old<", ">mine<")).expect("write");
            })],
            vec![Some(Choice::Force)],
        );
        let out = edit(&layout, &args("s2"), &mut user).expect("forced");
        assert_eq!(out, "Snapshot s2 edited.\n");
        assert_eq!(
            user.asked[0].0,
            "The XML configuration was changed by another user."
        );
        let xml = xml_of(&layout, "s2").expect("s2");
        assert!(xml.contains(">mine<"), "{xml}");
    }

    #[test]
    fn test_edit_change_meanwhile_without_terminal_keeps_theirs() {
        let (_dir, layout) = setup();
        let other = layout.clone();
        let mut user = Scripted::new(
            vec![Box::new(move |file: &Path| {
                let changed = snap("s2", Some("s1")).replace(">old<", ">theirs<");
                redefine(&other, &changed, false);
                let text = std::fs::read_to_string(file).expect("read");
                std::fs::write(file, text.replace(">old<", ">mine<")).expect("write");
            })],
            vec![None],
        );
        let err = edit(&layout, &args("s2"), &mut user).expect_err("refused");
        assert!(matches!(err, EditError::Changed { .. }), "{err}");
        let xml = xml_of(&layout, "s2").expect("s2");
        assert!(xml.contains(">theirs<"), "{xml}");
    }

    #[test]
    fn test_rename_under_own_descendant_is_refused_before_any_change() {
        let (_dir, layout) = setup();
        let mut a = args("s2");
        a.rename = true;
        let mut user = Scripted::new(
            vec![Box::new(|file: &Path| {
                let text = std::fs::read_to_string(file).expect("read");
                let text = text
                    .replace("<name>s2</name>", "<name>t2</name>")
                    .replace("<name>s1</name>", "<name>s3</name>");
                std::fs::write(file, text).expect("write");
            })],
            vec![None],
        );
        let err = edit(&layout, &a, &mut user).expect_err("refused");
        let EditError::Refused { problem, .. } = err else {
            panic!("not a refusal: {err}");
        };
        assert!(matches!(*problem, Problem::UnderItself { .. }), "{problem}");
        assert!(xml_of(&layout, "s2").is_some());
        assert!(xml_of(&layout, "t2").is_none());
    }

    #[test]
    fn test_ask_with_reads_one_answer_per_line_and_explains_on_question_mark() {
        let mut out = Vec::new();
        let choice = ask_with(&mut "?\nz\nI\n".as_bytes(), &mut out, "Failed.");
        assert_eq!(choice, Choice::NoValidate);
        let shown = String::from_utf8(out).expect("utf-8");
        assert_eq!(shown.matches("Failed. Try again? [y,n,i,f,?]: ").count(), 3);
        assert!(
            shown.contains("f - force, try to redefine again"),
            "{shown}"
        );
        assert_eq!(
            ask_with(&mut "".as_bytes(), &mut Vec::new(), "Failed."),
            Choice::Abandon
        );
    }

    #[test]
    fn test_editor_command_runs_plain_names_directly_and_others_through_sh() {
        let file = Path::new("/tmp/virtsnap-x.xml");
        let plain = editor_command("/usr/bin/vi", file);
        assert_eq!(plain.get_program(), "/usr/bin/vi");
        assert_eq!(plain.get_args().collect::<Vec<_>>(), [file.as_os_str()]);
        let shell = editor_command("sed -i 's/a/b/'", file);
        assert_eq!(shell.get_program(), "sh");
        let args: Vec<_> = shell.get_args().collect();
        assert_eq!(
            args,
            ["-c", "sed -i 's/a/b/' \"$@\"", "sh", "/tmp/virtsnap-x.xml"]
        );
    }
}
