//! `snapshot-edit` end to end with the real binary, the editor being a
//! small shell script (`$EDITOR` / `$VISUAL`) that edits the file with
//! `sed`: unchanged, edited, renamed (children and current follow),
//! cloned, refused (name change without a flag, invalid XML: exit 1 and
//! the snapshot untouched), and the retry question on a terminal (through
//! `script`, which gives the command a pseudo-terminal).

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Output;

struct Cli {
    state: tempfile::TempDir,
    /// Editor scripts, and TMPDIR of the command (the temp file's home).
    work: tempfile::TempDir,
    tmpdir: PathBuf,
}

impl Cli {
    fn new() -> Self {
        let work = tempfile::tempdir().expect("work dir");
        let tmpdir = work.path().join("tmp");
        std::fs::create_dir(&tmpdir).expect("tmp dir");
        Self {
            state: tempfile::tempdir().expect("state dir"),
            work,
            tmpdir,
        }
    }

    fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_virtsnap"));
        cmd.args(args)
            .env("VIRTSNAP_STATE", self.state.path())
            .env("TMPDIR", &self.tmpdir)
            .env_remove("VISUAL")
            .env_remove("EDITOR")
            .env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        self.command(args, envs).output().expect("run virtsnap")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, &[]);
        assert!(
            out.status.success(),
            "virtsnap {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// An executable editor script running `body` with the file as `$1`.
    fn editor(&self, name: &str, body: &str) -> String {
        let path = self.work.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).expect("write editor");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.to_str().expect("path").to_string()
    }

    /// `snapshot-edit ARGS` with `$EDITOR` set to `editor`.
    fn edit(&self, editor: &str, args: &[&str]) -> Output {
        let mut all = vec!["snapshot-edit", "vm"];
        all.extend(args);
        self.run(&all, &[("EDITOR", editor)])
    }

    fn redefine(&self, name: &str, parent: Option<&str>) {
        let parent = parent
            .map(|p| format!("<parent><name>{p}</name></parent>"))
            .unwrap_or_default();
        let xml = format!(
            "<domainsnapshot><name>{name}</name><description>old {name}</description><state>shutoff</state>{parent}<creationTime>1</creationTime></domainsnapshot>"
        );
        let file = self.work.path().join(format!("{name}.xml"));
        std::fs::write(&file, xml).expect("write");
        self.ok(&[
            "snapshot-create",
            "vm",
            "--redefine",
            "--xmlfile",
            file.to_str().expect("path"),
        ]);
    }

    fn parent(&self, name: &str) -> Option<String> {
        let out = self.run(&["snapshot-parent", "vm", name], &[]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ok(&["snapshot-list", "vm", "--name"])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    fn current(&self) -> String {
        self.ok(&["snapshot-current", "vm", "--name"])
            .trim()
            .to_string()
    }

    /// The temporary files the command left behind.
    fn leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.tmpdir)
            .expect("tmp dir")
            .map(|e| e.expect("entry").path())
            .collect()
    }
}

/// s1 { s2 (current) { s3 } }.
fn chain() -> Cli {
    let cli = Cli::new();
    cli.redefine("s1", None);
    cli.redefine("s2", Some("s1"));
    cli.redefine("s3", Some("s2"));
    cli.ok(&["snapshot-current", "vm", "s2"]);
    cli
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn test_unchanged_xml_is_reported_and_nothing_written() {
    let cli = chain();
    let before = cli.ok(&["snapshot-dumpxml", "vm", "s2", "--security-info"]);
    let out = cli.edit("true", &["s2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Snapshot s2 XML configuration not changed.\n");
    assert_eq!(
        cli.ok(&["snapshot-dumpxml", "vm", "s2", "--security-info"]),
        before
    );
    assert!(cli.leftovers().is_empty(), "{:?}", cli.leftovers());
}

#[test]
fn test_edit_redefines_in_place_keeping_tree_and_current() {
    let cli = chain();
    let editor = cli.editor("ed", "sed -i 's/old s2/new s2/' \"$1\"");
    let out = cli.edit(&editor, &["s2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Snapshot s2 edited.\n");
    let xml = cli.ok(&["snapshot-dumpxml", "vm", "s2"]);
    assert!(xml.contains("<description>new s2</description>"), "{xml}");
    assert_eq!(cli.current(), "s2");
    assert_eq!(cli.parent("s3").as_deref(), Some("s2"));
    assert!(cli.leftovers().is_empty(), "{:?}", cli.leftovers());
}

#[test]
fn test_editor_with_arguments_runs_through_sh_and_visual_wins() {
    let cli = chain();
    // A command line with arguments, as EDITOR often is.
    let out = cli.run(
        &["snapshot-edit", "vm", "s1"],
        &[("VISUAL", "sed -i -e s/old/visual/"), ("EDITOR", "false")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let xml = cli.ok(&["snapshot-dumpxml", "vm", "s1"]);
    assert!(
        xml.contains("<description>visual s1</description>"),
        "{xml}"
    );
}

#[test]
fn test_changed_name_without_rename_or_clone_is_refused() {
    let cli = chain();
    let before = cli.ok(&["snapshot-dumpxml", "vm", "s2"]);
    let editor = cli.editor("ed", "sed -i 's|<name>s2</name>|<name>t2</name>|' \"$1\"");
    let out = cli.edit(&editor, &["s2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("changes the name from 's2' to 't2'")
            && err.contains("--rename")
            && err.contains("--clone"),
        "{err}"
    );
    assert_eq!(cli.names(), ["s1", "s2", "s3"]);
    assert_eq!(cli.ok(&["snapshot-dumpxml", "vm", "s2"]), before);
    assert!(cli.leftovers().is_empty(), "{:?}", cli.leftovers());
}

#[test]
fn test_rename_moves_children_and_current_to_the_new_name() {
    let cli = chain();
    let editor = cli.editor("ed", "sed -i 's|<name>s2</name>|<name>t2</name>|' \"$1\"");
    // --current without a name: edit the current snapshot (s2).
    let out = cli.edit(&editor, &["--current", "--rename"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Snapshot s2 renamed to t2.\n");
    assert_eq!(cli.names(), ["s1", "s3", "t2"]);
    assert_eq!(cli.parent("t2").as_deref(), Some("s1"));
    assert_eq!(cli.parent("s3").as_deref(), Some("t2"));
    assert_eq!(cli.current(), "t2");
    let xml = cli.ok(&["snapshot-dumpxml", "vm", "t2"]);
    assert!(xml.contains("<description>old s2</description>"), "{xml}");
}

#[test]
fn test_clone_keeps_the_original_and_its_children() {
    let cli = chain();
    let editor = cli.editor(
        "ed",
        "sed -i -e 's|<name>s2</name>|<name>c2</name>|' -e 's/old s2/copy/' \"$1\"",
    );
    let out = cli.edit(&editor, &["--snapshotname", "s2", "--clone"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Snapshot s2 cloned to c2.\n");
    assert_eq!(cli.names(), ["c2", "s1", "s2", "s3"]);
    assert_eq!(cli.parent("c2").as_deref(), Some("s1"));
    assert_eq!(cli.parent("s3").as_deref(), Some("s2"));
    assert_eq!(cli.current(), "s2");
    assert!(cli.ok(&["snapshot-dumpxml", "vm", "c2"]).contains("copy"));
    assert!(cli.ok(&["snapshot-dumpxml", "vm", "s2"]).contains("old s2"));
}

#[test]
fn test_clone_onto_an_existing_name_is_refused() {
    let cli = chain();
    let editor = cli.editor("ed", "sed -i 's|<name>s3</name>|<name>s1</name>|' \"$1\"");
    let out = cli.edit(&editor, &["s3", "--clone"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("snapshot 's1' already exists"),
        "{}",
        stderr(&out)
    );
    assert!(cli.ok(&["snapshot-dumpxml", "vm", "s1"]).contains("old s1"));
}

#[test]
fn test_current_with_a_name_makes_it_current_even_unchanged() {
    let cli = chain();
    let out = cli.edit("true", &["s1", "--current"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Snapshot s1 edited.\n");
    assert_eq!(cli.current(), "s1");
}

#[test]
fn test_invalid_xml_without_terminal_exits_1_and_keeps_the_original() {
    let cli = chain();
    let before = cli.ok(&["snapshot-dumpxml", "vm", "s2", "--security-info"]);
    for (name, body) in [
        // Not well-formed.
        ("broken", "sed -i 's|</description>|</descr>|' \"$1\""),
        // Well-formed, but an element the schema does not know.
        ("unknown", "sed -i 's|<state>|<bogus/><state>|' \"$1\""),
        // A parent that does not exist.
        (
            "orphan",
            "sed -i 's|<name>s1</name>|<name>nope</name>|' \"$1\"",
        ),
    ] {
        let editor = cli.editor(name, body);
        let out = cli.edit(&editor, &["s2"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("virtsnap: error: the edited XML of snapshot 's2' was not applied: "),
            "{name}: {err}"
        );
        assert!(
            !err.contains("Try again?"),
            "{name}: asked without a terminal: {err}"
        );
        assert_eq!(stdout(&out), "", "{name}");
        assert_eq!(
            cli.ok(&["snapshot-dumpxml", "vm", "s2", "--security-info"]),
            before,
            "{name}"
        );
    }
    assert!(cli.leftovers().is_empty(), "{:?}", cli.leftovers());
}

#[test]
fn test_failing_or_missing_editor_exits_1() {
    let cli = chain();
    let out = cli.edit("false", &["s2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the editor 'false' failed"),
        "{}",
        stderr(&out)
    );
    let out = cli.edit("/nonexistent/editor", &["s2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("set VISUAL or EDITOR"),
        "{}",
        stderr(&out)
    );
    let out = cli.edit("true", &["nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no snapshot 'nope'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn test_security_info_is_given_to_the_editor() {
    let cli = Cli::new();
    let xml = "<domainsnapshot><name>s1</name><state>shutoff</state><creationTime>1</creationTime>\
               <domain type='kvm'><name>vm</name><devices><graphics type='vnc' passwd='s3cret'/>\
               </devices></domain></domainsnapshot>";
    let file = cli.work.path().join("s1.xml");
    std::fs::write(&file, xml).expect("write");
    cli.ok(&[
        "snapshot-create",
        "vm",
        "--redefine",
        "--xmlfile",
        file.to_str().expect("path"),
    ]);
    assert!(!cli.ok(&["snapshot-dumpxml", "vm", "s1"]).contains("s3cret"));
    let seen = cli.work.path().join("seen.xml");
    let editor = cli.editor("ed", &format!("cp \"$1\" '{}'", seen.display()));
    let out = cli.edit(&editor, &["s1"]);
    assert_eq!(stdout(&out), "Snapshot s1 XML configuration not changed.\n");
    let given = std::fs::read_to_string(&seen).expect("the editor saw the file");
    assert!(given.contains("passwd='s3cret'"), "{given}");
}

/// `script` runs the command on a pseudo-terminal, so stdin is a tty and
/// the retry question is asked; the answer comes from script's stdin.
fn script_available() -> bool {
    let found = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let message = "`script` (util-linux, Debian package bsdutils) is not installed: \
                       the terminal retry test of snapshot-edit cannot run";
        assert!(
            std::env::var_os("VIRTSNAP_REQUIRE_BACKENDS").is_none(),
            "{message}"
        );
        eprintln!("SKIPPED: {message}");
    }
    found
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn on_terminal(cli: &Cli, editor: &str, args: &[&str], answers: &str) -> Output {
    use std::io::Write as _;
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_virtsnap"))
        .chain(["snapshot-edit", "vm"])
        .chain(args.iter().copied())
        .map(shell_quote)
        .collect();
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env("VIRTSNAP_STATE", cli.state.path())
        .env("TMPDIR", &cli.tmpdir)
        .env("EDITOR", editor)
        .env_remove("VISUAL")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run script");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(answers.as_bytes()).expect("answers");
    drop(stdin);
    child.wait_with_output().expect("script output")
}

#[test]
fn test_terminal_is_asked_to_edit_again_after_a_refused_edit() {
    if !script_available() {
        return;
    }
    let cli = chain();
    let ran = cli.work.path().join("ran");
    // First run breaks the XML; the second (after `y`) writes a good edit.
    let editor = cli.editor(
        "ed",
        &format!(
            "if [ -e '{ran}' ]; then sed -i 's|<bogus/>|<description>fixed</description>|' \"$1\"; \
             else touch '{ran}'; sed -i 's|<description>old s2</description>|<bogus/>|' \"$1\"; fi",
            ran = ran.display()
        ),
    );
    let out = on_terminal(&cli, &editor, &["s2"], "?\ny\n");
    let screen = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{screen}{}", stderr(&out));
    assert!(
        screen.contains("Failed. Try again? [y,n,i,f,?]"),
        "{screen}"
    );
    assert!(screen.contains("i - turn off validation"), "{screen}");
    assert!(screen.contains("Snapshot s2 edited."), "{screen}");
    let xml = cli.ok(&["snapshot-dumpxml", "vm", "s2"]);
    assert!(xml.contains("<description>fixed</description>"), "{xml}");
}

#[test]
fn test_terminal_answer_n_abandons_and_keeps_the_original() {
    if !script_available() {
        return;
    }
    let cli = chain();
    let before = cli.ok(&["snapshot-dumpxml", "vm", "s2"]);
    let editor = cli.editor("ed", "sed -i 's|</description>|</descr>|' \"$1\"");
    let out = on_terminal(&cli, &editor, &["s2"], "n\n");
    let screen = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{screen}");
    assert!(
        screen.contains("edit of snapshot 's2' abandoned"),
        "{screen}"
    );
    assert_eq!(cli.ok(&["snapshot-dumpxml", "vm", "s2"]), before);
}
