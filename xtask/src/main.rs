//! The `cargo xtask` command line: parses the subcommand and hands it to the
//! module that owns it (`test`, `matrix`, `bench`, `deps`, `man`, `testvm`,
//! `ceph`). Errors end up here and are printed once, as `error: ...`, with a
//! non-zero exit code.

mod bench;
mod ceph;
mod cmd;
mod deps;
mod lint;
mod man;
mod matrix;
mod test;
mod testvm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer tasks for the virtsnap workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// The project's test command (what CI runs): system packages, fmt,
    /// clippy, then every test of the workspace.
    Test {
        /// Never run apt-get; only report missing system packages.
        #[arg(long)]
        no_install: bool,
        /// Skip `cargo fmt --check` and `cargo clippy` (quick local runs).
        #[arg(long)]
        skip_lint: bool,
        /// Extra arguments for the test runner (`cargo nextest run` or
        /// `cargo test`), given after `--`.
        #[arg(last = true)]
        runner_args: Vec<String>,
    },
    /// The integration matrix: the drivers' checks over every volume state
    /// and operation, as a table (and target/matrix.json).
    Matrix {
        /// Also write the table into README.md (between its matrix markers).
        #[arg(long)]
        readme: bool,
        /// Run nothing: assemble the rows the last run recorded (after
        /// `cargo xtask test`, say).
        #[arg(long)]
        no_run: bool,
    },
    /// Run a benchmark, or all of them when no name is given.
    Bench {
        /// Benchmark name, e.g. `conf` (an unknown name lists the known ones);
        /// all benchmarks when omitted.
        name: Option<String>,
        /// Extra arguments for the benchmark binary, given after `--`.
        #[arg(last = true)]
        bench_args: Vec<String>,
    },
    /// Check (and, as root, install) the system packages the tests need.
    Deps {
        /// Never run apt-get; only report missing system packages.
        #[arg(long)]
        no_install: bool,
    },
    /// Generate the man pages of `virtsnap`: virtsnap.1 and one
    /// virtsnap-COMMAND.1 per subcommand.
    Man {
        /// Where to write them (default: target/man).
        out_dir: Option<PathBuf>,
    },
    /// Build the Linux test guest (LVM, btrfs, qemu-guest-agent) the
    /// `testvm` crate boots, or print where it is.
    Testvm {
        #[command(subcommand)]
        task: testvm::Task,
    },
    /// Start or stop a throwaway Ceph cluster (1 mon, 1 osd on 127.0.0.1)
    /// for the RBD tests: `eval "$(cargo xtask ceph up)"`, then
    /// `cargo xtask ceph down DIR`.
    Ceph {
        #[command(subcommand)]
        task: ceph::Task,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Test {
            no_install,
            skip_lint,
            runner_args,
        } => test::run(&test::Options {
            install: deps::Install::from_no_install(no_install),
            skip_lint,
            runner_args,
        }),
        Task::Matrix { readme, no_run } => matrix::run(readme, no_run),
        Task::Bench { name, bench_args } => bench::run(name.as_deref(), &bench_args),
        Task::Deps { no_install } => deps::ensure(deps::Install::from_no_install(no_install)),
        Task::Man { out_dir } => man::run(out_dir.as_deref()),
        Task::Testvm { task } => testvm::run(&task),
        Task::Ceph { task } => ceph::run(&task),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn args_after_double_dash_go_to_the_runner() {
        let cli = Cli::try_parse_from([
            "xtask",
            "test",
            "--skip-lint",
            "--",
            "roundtrip",
            "--nocapture",
        ])
        .expect("valid command line");
        let Task::Test {
            skip_lint,
            no_install,
            runner_args,
        } = cli.task
        else {
            panic!("parsed as another task: {:?}", cli.task);
        };
        assert!(skip_lint);
        assert!(!no_install);
        assert_eq!(runner_args, ["roundtrip", "--nocapture"]);
    }

    #[test]
    fn matrix_takes_readme() {
        let cli = Cli::try_parse_from(["xtask", "matrix", "--readme"]).expect("valid");
        assert!(
            matches!(
                cli.task,
                Task::Matrix {
                    readme: true,
                    no_run: false
                }
            ),
            "{cli:?}"
        );
        let cli = Cli::try_parse_from(["xtask", "matrix"]).expect("valid");
        assert!(
            matches!(cli.task, Task::Matrix { readme: false, .. }),
            "{cli:?}"
        );
    }

    #[test]
    fn ceph_up_takes_a_dir_and_down_requires_one() {
        let cli = Cli::try_parse_from(["xtask", "ceph", "up"]).expect("valid");
        assert!(
            matches!(
                cli.task,
                Task::Ceph {
                    task: ceph::Task::Up { dir: None }
                }
            ),
            "{cli:?}"
        );
        let cli = Cli::try_parse_from(["xtask", "ceph", "up", "--dir", "/tmp/c"]).expect("valid");
        assert!(
            matches!(&cli.task, Task::Ceph { task: ceph::Task::Up { dir: Some(dir) } } if dir == &PathBuf::from("/tmp/c")),
            "{cli:?}"
        );
        Cli::try_parse_from(["xtask", "ceph", "down"]).expect_err("DIR is required");
    }

    #[test]
    fn bench_name_is_optional_and_args_follow_double_dash() {
        let cli =
            Cli::try_parse_from(["xtask", "bench", "--", "--quick"]).expect("valid command line");
        let Task::Bench { name, bench_args } = cli.task else {
            panic!("parsed as another task: {:?}", cli.task);
        };
        assert_eq!(name, None);
        assert_eq!(bench_args, ["--quick"]);
    }
}
