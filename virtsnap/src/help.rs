//! The grouped help. `virtsnap --help` lists the verbs in groups the way
//! `virsh help` does ("Snapshot (help keyword 'snapshot'):"), through a
//! clap help template; the `help` verb prints one command's help as clap
//! would (`help snapshot-list`, `help xml check`) or the verbs of one
//! group (`help snapshot`, as `virsh help snapshot`).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use clap::error::ErrorKind;

/// Where a group's verbs come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Members {
    /// Every subcommand that a flattened `Subcommand` enum adds (its
    /// `augment_subcommands`).
    Flattened(fn(clap::Command) -> clap::Command),
    /// One subcommand, by name.
    Named(&'static str),
}

/// A help group as declared: title, keyword and members.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupSpec {
    pub title: &'static str,
    pub keyword: &'static str,
    pub members: &'static [Members],
}

/// A help group with its verbs resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpGroup {
    /// Its title, e.g. `Snapshot`.
    pub title: &'static str,
    /// Its keyword for `virtsnap help KEYWORD`, e.g. `snapshot`.
    pub keyword: &'static str,
    /// Its verbs, sorted by name.
    pub verbs: Vec<Verb>,
}

/// One verb of a help group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verb {
    /// The subcommand's name.
    pub name: String,
    /// Its one-line description.
    pub about: String,
}

impl HelpGroup {
    /// `Snapshot (help keyword 'snapshot')`, as virsh titles a group.
    #[must_use]
    pub fn heading(&self) -> String {
        format!("{} (help keyword '{}')", self.title, self.keyword)
    }
}

/// `help`.
#[derive(Debug, Args)]
pub struct HelpArgs {
    /// A command (`snapshot-list`, `xml check`) or a help group's keyword
    /// (`domain`, `snapshot`, `xmldoc`, `virtsnap`); every command when
    /// omitted.
    #[arg(value_name = "COMMAND|KEYWORD")]
    topic: Vec<String>,
}

/// Resolves `specs` against the subcommands of `cmd`.
pub(crate) fn groups(cmd: &clap::Command, specs: &[GroupSpec]) -> Vec<HelpGroup> {
    specs
        .iter()
        .map(|spec| {
            let mut names: Vec<String> = spec
                .members
                .iter()
                .flat_map(|m| match m {
                    Members::Flattened(augment) => augment(clap::Command::new("group"))
                        .get_subcommands()
                        .map(|s| s.get_name().to_string())
                        .collect(),
                    Members::Named(name) => vec![(*name).to_string()],
                })
                .collect();
            names.sort_unstable();
            let verbs = names
                .into_iter()
                .map(|name| {
                    let about = cmd
                        .find_subcommand(&name)
                        .and_then(clap::Command::get_about)
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    Verb { name, about }
                })
                .collect();
            HelpGroup {
                title: spec.title,
                keyword: spec.keyword,
                verbs,
            }
        })
        .collect()
}

/// The widest verb name, for aligning the descriptions of all groups.
fn name_width(groups: &[HelpGroup]) -> usize {
    groups
        .iter()
        .flat_map(|g| &g.verbs)
        .map(|v| v.name.chars().count())
        .max()
        .unwrap_or(0)
}

/// One group as `--help` and `help KEYWORD` print it; with `styles`, the
/// heading and verb names are styled as clap styles its own.
fn group_text(group: &HelpGroup, width: usize, styles: Option<&clap::builder::Styles>) -> String {
    let (header, literal) = match styles {
        Some(s) => (*s.get_header(), *s.get_literal()),
        None => Default::default(),
    };
    let mut out = format!("{header}{}:{header:#}\n", group.heading());
    for verb in &group.verbs {
        let pad = width.saturating_sub(verb.name.chars().count());
        let _ = writeln!(
            out,
            "  {literal}{}{literal:#}{:pad$}  {}",
            verb.name, "", verb.about
        );
    }
    out
}

/// `cmd` with a help template listing its verbs by group instead of
/// clap's single "Commands:" list.
pub(crate) fn with_grouped_help(cmd: clap::Command, groups: &[HelpGroup]) -> clap::Command {
    let width = name_width(groups);
    let styles = cmd.get_styles().clone();
    let header = styles.get_header();
    let mut template =
        String::from("{before-help}{about-with-newline}\n{usage-heading} {usage}\n\n");
    for group in groups {
        // The template language reads `{...}` as a tag: keep braces out.
        template.push_str(&group_text(group, width, Some(&styles)).replace(['{', '}'], ""));
        template.push('\n');
    }
    let _ = write!(
        template,
        "{header}Options:{header:#}\n{{options}}{{after-help}}"
    );
    cmd.help_template(template)
}

/// The `Exit status:` part of `--help`, wrapped to 80 columns, its
/// heading styled as clap styles its own.
pub(crate) fn exit_status_text(
    statuses: &[crate::ExitStatusDoc],
    styles: Option<&clap::builder::Styles>,
) -> String {
    let header = styles.map(|s| *s.get_header()).unwrap_or_default();
    let mut out = format!("{header}Exit status:{header:#}\n");
    for s in statuses {
        let mut line = format!("  {}", s.code);
        for word in s.meaning.split_whitespace() {
            if line.len() + 1 + word.len() > 80 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("    ");
            } else {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// Runs `help [COMMAND...|KEYWORD]`.
pub(crate) fn run(args: &HelpArgs, mut cmd: clap::Command, groups: &[HelpGroup]) -> ExitCode {
    let Some(first) = args.topic.first() else {
        let _ = cmd.print_long_help();
        return ExitCode::SUCCESS;
    };
    if cmd.find_subcommand(first).is_some() {
        return command_help(&mut cmd, &args.topic);
    }
    let Some(group) = groups.iter().find(|g| g.keyword == first.as_str()) else {
        let keywords: Vec<&str> = groups.iter().map(|g| g.keyword).collect();
        return usage_error(
            &mut cmd,
            &format!(
                "'{first}' is neither a command nor a help keyword; the keywords are: {}",
                keywords.join(", ")
            ),
        );
    };
    if let Some(extra) = args.topic.get(1) {
        return usage_error(
            &mut cmd,
            &format!("unexpected '{extra}' after the help keyword '{first}'"),
        );
    }
    tracing::debug!(keyword = group.keyword, "help for a group");
    print!("{}", group_text(group, name_width(groups), None));
    ExitCode::SUCCESS
}

/// The help of the (sub)command at `path`, exactly as `PATH --help`
/// prints it.
fn command_help(cmd: &mut clap::Command, path: &[String]) -> ExitCode {
    let mut at: &clap::Command = cmd;
    for (depth, name) in path.iter().enumerate() {
        match at.find_subcommand(name) {
            Some(sub) => at = sub,
            None => {
                let parent = path[..depth].join(" ");
                return usage_error(cmd, &format!("'{parent}' has no subcommand '{name}'"));
            }
        }
    }
    let argv = std::iter::once("virtsnap")
        .chain(path.iter().map(String::as_str))
        .chain(std::iter::once("--help"));
    match cmd.try_get_matches_from_mut(argv) {
        Err(e) => crate::clap_exit(&e),
        // `--help` always stops parsing with a DisplayHelp "error".
        Ok(_) => ExitCode::SUCCESS,
    }
}

fn usage_error(cmd: &mut clap::Command, message: &str) -> ExitCode {
    crate::clap_exit(&cmd.error(ErrorKind::InvalidSubcommand, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<HelpGroup> {
        vec![HelpGroup {
            title: "Snapshot",
            keyword: "snapshot",
            verbs: vec![
                Verb {
                    name: "snapshot-list".into(),
                    about: "List snapshots".into(),
                },
                Verb {
                    name: "snapshot-info".into(),
                    about: "Show one".into(),
                },
            ],
        }]
    }

    #[test]
    fn test_exit_status_text_wraps_with_a_hanging_indent() {
        let text = exit_status_text(
            &[crate::ExitStatusDoc {
                code: 1,
                meaning: "The command was refused or failed: invalid XML, an unknown domain or snapshot, a change.",
            }],
            None,
        );
        assert_eq!(
            text,
            "Exit status:\n  1 The command was refused or failed: invalid XML, an unknown domain or\n    snapshot, a change."
        );
        assert!(text.lines().all(|l| l.len() <= 80), "{text}");
    }

    #[test]
    fn test_group_text_aligns_descriptions_like_virsh() {
        let groups = sample();
        let text = group_text(&groups[0], name_width(&groups), None);
        assert_eq!(
            text,
            "Snapshot (help keyword 'snapshot'):\n  snapshot-list  List snapshots\n  snapshot-info  Show one\n"
        );
    }

    #[test]
    fn test_grouped_help_replaces_commands_list_and_keeps_options() {
        let mut groups = sample();
        groups[0].verbs[0].about = "List {snapshots}".into();
        let cmd = clap::Command::new("x")
            .arg(clap::Arg::new("verbose").long("verbose").num_args(0))
            .subcommand(clap::Command::new("snapshot-list"))
            .subcommand(clap::Command::new("snapshot-info"))
            .after_help("Exit status: 0");
        let help = with_grouped_help(cmd, &groups).render_help().to_string();
        assert!(
            help.contains("Snapshot (help keyword 'snapshot'):\n  snapshot-list  List snapshots\n"),
            "{help}"
        );
        assert!(!help.contains("Commands:"), "{help}");
        assert!(help.contains("Options:\n      --verbose"), "{help}");
        assert!(help.trim_end().ends_with("Exit status: 0"), "{help}");
    }
}
