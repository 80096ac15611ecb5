//! The `virtsnap` command line as a library: [`command`] is the clap
//! definition that the binary parses and that the shell completions and
//! `cargo xtask man` are generated from; [`run`] parses a command line,
//! turns on logging and hands the command to the module that owns it.
//!
//! One module per command group, each owning its arguments, its errors and
//! its `run` (firecracker's snapshot-editor layout); `help` owns the
//! grouped `--help` and the `help` verb, `logging` the `-v`/`--debug`
//! flags. Data goes to stdout, messages to stderr; the exit status is one
//! of [`EXIT_STATUS`].

mod demo;
mod domain_cmd;
mod help;
mod logging;
mod plugin_cmd;
mod snapshot_cmd;
mod transfer_cmd;
mod vol_cmd;
mod xml_cmd;

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use clap::{ArgAction, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

pub use help::{HelpGroup, Verb};

/// One exit status of `virtsnap` and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatusDoc {
    /// The status.
    pub code: u8,
    /// What it means.
    pub meaning: &'static str,
}

/// Every exit status `virtsnap` uses, documented in `--help`, the man
/// pages and the README.
pub const EXIT_STATUS: &[ExitStatusDoc] = &[
    ExitStatusDoc {
        code: 0,
        meaning: "Success.",
    },
    ExitStatusDoc {
        code: 1,
        meaning: "The command failed: an input was refused (invalid XML, an unknown \
                  domain or snapshot, a change the snapshot tree does not allow) or an \
                  operation failed (an I/O error). The reason is printed on stderr.",
    },
    ExitStatusDoc {
        code: 2,
        meaning: "Usage error: an unknown command or option, a missing or conflicting \
                  argument. Nothing was run.",
    },
];

/// Snapshots of virtual machines and storage volumes.
#[derive(Debug, Parser)]
#[command(name = "virtsnap", version, disable_help_subcommand = true)]
struct Cli {
    /// Log what virtsnap does on stderr: -v info, -vv debug, -vvv trace
    /// (overrides RUST_LOG).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Debug logs on stderr, as -vv.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Domain(domain_cmd::DomainCommand),
    #[command(flatten)]
    Snapshot(snapshot_cmd::SnapshotCommand),
    #[command(flatten)]
    Transfer(transfer_cmd::TransferCommand),
    #[command(flatten)]
    Volume(vol_cmd::VolCommand),
    /// List the storage-driver plugins found (name, ABI, version,
    /// operations, path) and why any was refused.
    PluginList(plugin_cmd::ListArgs),
    /// Show what virtsnap does on three scratch volumes (internal qcow2,
    /// an external qcow2 chain, a raw copy), checking every step.
    Demo,
    /// Snapshot XML documents.
    #[command(subcommand)]
    Xml(xml_cmd::XmlCommand),
    /// Print a command's help, or list a group's commands (`help snapshot`).
    Help(help::HelpArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// `completions`.
#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell, e.g. `virtsnap completions bash > /etc/bash_completion.d/virtsnap`.
    shell: clap_complete::Shell,
}

/// The help groups of `virtsnap --help`, in virsh's style. Every verb
/// belongs to exactly one group (a unit test checks it).
const GROUPS: &[help::GroupSpec] = &[
    help::GroupSpec {
        title: "Domain Management",
        keyword: "domain",
        members: &[help::Members::Flattened(
            <domain_cmd::DomainCommand as Subcommand>::augment_subcommands,
        )],
    },
    help::GroupSpec {
        title: "Snapshot",
        keyword: "snapshot",
        members: &[
            help::Members::Flattened(
                <snapshot_cmd::SnapshotCommand as Subcommand>::augment_subcommands,
            ),
            help::Members::Flattened(
                <transfer_cmd::TransferCommand as Subcommand>::augment_subcommands,
            ),
        ],
    },
    help::GroupSpec {
        title: "Storage Volume Snapshot",
        keyword: "volume",
        members: &[help::Members::Flattened(
            <vol_cmd::VolCommand as Subcommand>::augment_subcommands,
        )],
    },
    help::GroupSpec {
        title: "Snapshot XML",
        keyword: "xmldoc",
        members: &[help::Members::Named("xml")],
    },
    help::GroupSpec {
        title: "virtsnap itself",
        keyword: "virtsnap",
        members: &[
            help::Members::Named("demo"),
            help::Members::Named("plugin-list"),
            help::Members::Named("help"),
            help::Members::Named("completions"),
        ],
    },
];

/// The whole command line: every verb with its arguments, the grouped
/// help and the exit statuses.
#[must_use]
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let exit_status = help::exit_status_text(EXIT_STATUS, Some(cmd.get_styles()));
    let cmd = cmd.after_help(exit_status);
    let groups = help::groups(&cmd, GROUPS);
    help::with_grouped_help(cmd, &groups)
}

/// The verbs by help group, as `virtsnap --help` lists them.
#[must_use]
pub fn help_groups() -> Vec<HelpGroup> {
    help::groups(&Cli::command(), GROUPS)
}

/// Parses `args` (the program name first) and runs the command.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = command();
    let cli = match cmd
        .try_get_matches_from_mut(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e.format(&mut cmd)),
    };
    logging::init(cli.verbose, cli.debug);
    let started = Instant::now();
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), "virtsnap started");
    let code = match cli.command {
        Command::Domain(c) => domain_cmd::run(&c),
        Command::Snapshot(c) => snapshot_cmd::run(&c),
        Command::Transfer(c) => transfer_cmd::run(&c),
        Command::Volume(c) => vol_cmd::run(&c),
        Command::PluginList(a) => plugin_cmd::run(&a),
        Command::Demo => demo::run(),
        Command::Xml(c) => xml_cmd::run(&c),
        Command::Help(a) => help::run(&a, command(), &help::groups(&cmd, GROUPS)),
        Command::Completions(a) => completions(a.shell),
    };
    tracing::debug!(
        success = (code == ExitCode::SUCCESS),
        elapsed_ms = started.elapsed().as_millis(),
        "virtsnap finished"
    );
    code
}

/// Prints a clap error (or the help or version it stands for) and gives
/// its exit status: 2 for usage errors, 0 for help and version.
fn clap_exit(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "virtsnap", &mut script);
    tracing::debug!(%shell, bytes = script.len(), "completion script generated");
    // A closed stdout (piped into `head`) is not an error worth a message.
    let _ = std::io::stdout().write_all(&script);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn test_every_verb_is_in_exactly_one_help_group() {
        let cmd = command();
        let groups = help_groups();
        for sub in cmd.get_subcommands() {
            let homes: Vec<&str> = groups
                .iter()
                .filter(|g| g.verbs.iter().any(|v| v.name == sub.get_name()))
                .map(|g| g.keyword)
                .collect();
            assert_eq!(
                homes.len(),
                1,
                "verb '{}' is in groups {homes:?}; list it in exactly one of lib.rs's GROUPS",
                sub.get_name()
            );
        }
        for group in &groups {
            assert!(
                !group.verbs.is_empty(),
                "group '{}' is empty",
                group.keyword
            );
            for verb in &group.verbs {
                assert!(
                    cmd.find_subcommand(&verb.name).is_some(),
                    "group '{}' lists '{}', which is not a command",
                    group.keyword,
                    verb.name
                );
            }
        }
    }

    #[test]
    fn test_help_keywords_are_not_command_names() {
        let cmd = command();
        for group in help_groups() {
            assert!(
                cmd.find_subcommand(group.keyword).is_none(),
                "help keyword '{}' is also a command: `help {}` could not reach the group",
                group.keyword,
                group.keyword
            );
        }
    }

    #[test]
    fn test_verbose_counts_and_is_global() {
        let cli =
            Cli::try_parse_from(["virtsnap", "-vvv", "list", "--all"]).expect("valid command line");
        assert_eq!(cli.verbose, 3);
        assert!(!cli.debug);
        // After the verb too (clap counts one side only: `-v list -v` is 1).
        let cli = Cli::try_parse_from(["virtsnap", "list", "-v", "--verbose"])
            .expect("valid command line");
        assert_eq!(cli.verbose, 2);
        let cli = Cli::try_parse_from(["virtsnap", "snapshot-list", "vm", "--debug"])
            .expect("valid command line");
        assert!(cli.debug);
    }

    #[test]
    fn test_exit_statuses_are_zero_one_two() {
        let codes: Vec<u8> = EXIT_STATUS.iter().map(|s| s.code).collect();
        assert_eq!(codes, [0, 1, 2]);
    }
}
