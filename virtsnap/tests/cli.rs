//! The command line itself, end to end with the real binary: the grouped
//! `--help` and `help KEYWORD`, `help COMMAND` as clap prints it, the exit
//! statuses (0, 1 refused, 2 usage), shell completions, and the `-v` /
//! `--debug` / `RUST_LOG` logs on stderr.

use std::process::Output;

fn virtsnap(args: &[&str], envs: &[(&str, &str)]) -> (Output, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state dir");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_virtsnap"));
    cmd.args(args)
        .env("VIRTSNAP_STATE", state.path())
        .env_remove("RUST_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    (cmd.output().expect("run virtsnap"), state)
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lines of `text` after `heading`, up to the next blank line.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

#[test]
fn test_help_lists_commands_by_virsh_group() {
    let (out, _state) = virtsnap(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    assert!(!help.contains("Commands:"), "{help}");
    let snapshot = section(&help, "Snapshot (help keyword 'snapshot'):");
    let verbs: Vec<&str> = snapshot
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(verbs.contains(&"snapshot-edit"), "{help}");
    assert!(verbs.contains(&"snapshot-list"), "{help}");
    assert!(
        verbs.iter().all(|v| v.starts_with("snapshot-")),
        "{verbs:?}"
    );
    let domain = section(&help, "Domain Management (help keyword 'domain'):");
    assert!(
        domain.iter().any(|l| l.trim_start().starts_with("define ")),
        "{help}"
    );
    let own = section(&help, "virtsnap itself (help keyword 'virtsnap'):");
    assert!(
        own.iter()
            .any(|l| l.trim_start().starts_with("completions ")),
        "{help}"
    );
    let exit = section(&help, "Exit status:");
    assert!(exit[0].starts_with("  0 "), "{exit:?}");
    assert!(exit.iter().any(|l| l.starts_with("  1 ")), "{exit:?}");
    assert!(
        exit.iter().any(|l| l.starts_with("  2 Usage error")),
        "{exit:?}"
    );
}

#[test]
fn test_help_keyword_lists_only_that_group() {
    let (out, _state) = virtsnap(&["help", "snapshot"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Snapshot (help keyword 'snapshot'):"));
    let verbs: Vec<&str> = lines.filter_map(|l| l.split_whitespace().next()).collect();
    assert!(verbs.contains(&"snapshot-edit"), "{text}");
    assert!(verbs.iter().all(|v| v.starts_with("snapshot-")), "{text}");

    let (out, _state) = virtsnap(&["help", "domain"], &[]);
    assert!(stdout(&out).contains("  undefine "), "{}", stdout(&out));
    assert!(!stdout(&out).contains("snapshot-"), "{}", stdout(&out));
}

#[test]
fn test_help_command_is_clap_help_of_that_command() {
    let (via_help, _s1) = virtsnap(&["help", "snapshot-edit"], &[]);
    let (via_flag, _s2) = virtsnap(&["snapshot-edit", "--help"], &[]);
    assert_eq!(via_help.status.code(), Some(0));
    assert_eq!(stdout(&via_help), stdout(&via_flag));
    assert!(stdout(&via_help).contains("--rename"));

    let (nested, _s3) = virtsnap(&["help", "xml", "check"], &[]);
    assert_eq!(nested.status.code(), Some(0));
    assert!(
        stdout(&nested).contains("Usage: virtsnap xml check"),
        "{}",
        stdout(&nested)
    );
}

#[test]
fn test_help_unknown_topic_is_a_usage_error_naming_the_keywords() {
    let (out, _state) = virtsnap(&["help", "snapshots"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the keywords are: domain, snapshot, volume, xmldoc, virtsnap"),
        "{}",
        stderr(&out)
    );
    let (out, _state) = virtsnap(&["help", "xml", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn test_exit_status_usage_error_is_2_and_refused_input_is_1() {
    for usage in [
        &["no-such-verb"][..],
        &["snapshot-list"],
        &["snapshot-list", "vm", "--no-such-flag"],
        &["snapshot-edit", "vm", "s1", "--rename", "--clone"],
        &["completions", "tcsh"],
    ] {
        let (out, _state) = virtsnap(usage, &[]);
        assert_eq!(out.status.code(), Some(2), "{usage:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("error: "),
            "{usage:?}: {}",
            stderr(&out)
        );
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.xml");
    std::fs::write(&bad, "<domainsnapshot><name>a/b</name></domainsnapshot>").expect("write");
    let bad = bad.to_str().expect("path");
    for refused in [
        &["snapshot-dumpxml", "vm", "nope"][..],
        &["snapshot-create", "vm", "--redefine", "--xmlfile", bad],
        &["xml", "check", bad],
    ] {
        let (out, _state) = virtsnap(refused, &[]);
        assert_eq!(out.status.code(), Some(1), "{refused:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("virtsnap: error: "),
            "{refused:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn test_completions_for_every_shell_know_the_verbs() {
    for (shell, marker) in [
        ("bash", "complete -F _virtsnap"),
        ("zsh", "#compdef virtsnap"),
        ("fish", "complete -c virtsnap"),
        ("elvish", "edit:completion:arg-completer[virtsnap]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (out, _state) = virtsnap(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: no {marker}");
        assert!(
            script.contains("snapshot-edit"),
            "{shell}: no snapshot-edit"
        );
        // snapshot-edit's option (fish spells it `-l rename`).
        assert!(script.contains("rename"), "{shell}: no --rename");
    }
}

#[test]
fn test_bash_completion_script_is_valid_bash() {
    let (out, _state) = virtsnap(&["completions", "bash"], &[]);
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("virtsnap.bash");
    std::fs::write(&file, &out.stdout).expect("write");
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash is installed");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

fn redefine_one(envs: &[(&str, &str)], extra: &[&str]) -> Output {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("s1.xml");
    std::fs::write(
        &file,
        "<domainsnapshot><name>s1</name><state>shutoff</state><creationTime>1</creationTime></domainsnapshot>",
    )
    .expect("write");
    let mut args: Vec<&str> = extra.to_vec();
    args.extend([
        "snapshot-create",
        "vm",
        "--redefine",
        "--xmlfile",
        file.to_str().expect("path"),
    ]);
    virtsnap(&args, envs).0
}

#[test]
fn test_logs_are_off_by_default_and_on_stderr_with_flags() {
    let quiet = redefine_one(&[], &[]);
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(stderr(&quiet), "");

    let info = redefine_one(&[], &["-v"]);
    assert_eq!(info.status.code(), Some(0));
    assert!(
        stderr(&info).contains("snapshot redefined"),
        "{}",
        stderr(&info)
    );
    assert!(!stderr(&info).contains("DEBUG"), "{}", stderr(&info));
    // Logs never mix into the data on stdout.
    assert!(
        stdout(&info).starts_with("Domain snapshot s1 created"),
        "{}",
        stdout(&info)
    );
    assert!(!stdout(&info).contains("INFO"));

    let debug = redefine_one(&[], &["--debug"]);
    let log = stderr(&debug);
    assert!(log.contains("snapshot metadata opened"), "{log}");
    assert!(log.contains("owner=domain 'vm'"), "{log}");
    assert!(log.contains("virtsnap finished"), "{log}");
}

#[test]
fn test_rust_log_is_honoured_without_flags() {
    let out = redefine_one(&[("RUST_LOG", "virtsnap=debug")], &[]);
    assert!(
        stderr(&out).contains("snapshot metadata opened"),
        "{}",
        stderr(&out)
    );
    let out = redefine_one(&[("RUST_LOG", "snapshot_core=debug")], &[]);
    assert_eq!(stderr(&out), "", "virtsnap's events are filtered out");
}

/// The README's CLI section names every verb of `virtsnap --help` and
/// every help keyword, so it cannot fall behind the command line.
#[test]
fn test_readme_cli_section_lists_every_verb_and_keyword() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("README.md");
    let start = readme
        .find("## The `virtsnap` command line")
        .expect("README has the CLI section");
    let rest = &readme[start + 3..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    for group in virtsnap::help_groups() {
        assert!(
            section.contains(&format!("`help {}`", group.keyword)),
            "README's CLI section misses the help keyword '{}'",
            group.keyword
        );
        for verb in &group.verbs {
            assert!(
                section.contains(&format!("`{}", verb.name)),
                "README's CLI section misses the verb '{}' (group '{}')",
                verb.name,
                group.keyword
            );
        }
    }
    for status in virtsnap::EXIT_STATUS {
        assert!(
            section.contains(&format!("| {} |", status.code)),
            "README's exit status table misses {}",
            status.code
        );
    }
}
