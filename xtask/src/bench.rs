//! `cargo xtask bench`: the table of known benchmarks and running them with
//! `cargo bench`. Each benchmark is a `harness = false` bench target that
//! prints its own report.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::cmd;

/// One benchmark: a bench target of a workspace package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bench {
    /// Name given to `cargo xtask bench NAME`.
    pub name: &'static str,
    /// Package that owns the bench target.
    pub package: &'static str,
    /// The `[[bench]]` target name in that package.
    pub target: &'static str,
    /// What it measures.
    pub about: &'static str,
}

/// Every benchmark `cargo xtask bench` knows, run in this order by
/// `cargo xtask bench` without a name. Add a row for a new bench target.
pub const BENCHES: &[Bench] = &[
    Bench {
        name: "conf",
        package: "snapshot-conf",
        target: "conf",
        about: "snapshot XML parse, format and validate",
    },
    Bench {
        name: "store",
        package: "virtsnap",
        target: "store",
        about: "virtsnap metadata commands as whole processes at 1 000 and 10 000 snapshots",
    },
    Bench {
        name: "volume",
        package: "virtsnap",
        target: "volume",
        about: "vol-snapshot-* against qemu-img, mv and cp doing the same storage work",
    },
    Bench {
        name: "live",
        package: "driver-qemu",
        target: "live",
        about: "snapshots of a running 1 GiB QEMU guest: paused and total time against libvirt's",
    },
    Bench {
        name: "btrfs",
        package: "driver-btrfs",
        target: "btrfs",
        about: "btrfs driver create/revert/delete of a 1 GiB file and a 10 000-file subvolume \
                against cp --reflink, rm and btrfs subvolume snapshot/delete",
    },
    Bench {
        name: "plugin",
        package: "plugin-abi",
        target: "plugin",
        about: "the plugin ABI's cost: driver-file linked, as a plugin, the C example plugin \
                and cp/rm doing the same copies, and one call's fixed cost",
    },
    Bench {
        name: "rbd",
        package: "virtsnap-plugin-rbd",
        target: "rbd",
        about: "Ceph RBD snapshots of a 256 MiB image (a cluster of its own): virtsnap as a \
                library and as a CLI against raw librbd and the rbd tool; checksums against \
                rbd export | sha256sum; export-diff/import-diff",
    },
];

/// Runs the benchmark called `name`, or all of them, forwarding `args` to
/// each benchmark binary.
pub fn run(name: Option<&str>, args: &[String]) -> Result<()> {
    for bench in select(BENCHES, name)? {
        cmd::announce(&format!(
            "bench {}: {} ({} --bench {})",
            bench.name, bench.about, bench.package, bench.target
        ));
        let started = Instant::now();
        let mut cargo = cmd::cargo();
        cargo.args(["bench", "--package", bench.package, "--bench", bench.target]);
        if !args.is_empty() {
            cargo.arg("--").args(args);
        }
        cmd::run(&mut cargo)?;
        cmd::announce(&format!(
            "bench {}: done in {:.1}s",
            bench.name,
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

/// The benchmarks to run: the one called `name`, or all of `table` when no
/// name is given.
fn select<'t>(table: &'t [Bench], name: Option<&str>) -> Result<Vec<&'t Bench>> {
    let Some(name) = name else {
        return Ok(table.iter().collect());
    };
    match table.iter().find(|bench| bench.name == name) {
        Some(bench) => Ok(vec![bench]),
        None => {
            let known: Vec<_> = table.iter().map(|bench| bench.name).collect();
            bail!(
                "unknown benchmark `{name}`; known benchmarks: {}",
                known.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Bench] = &[
        Bench {
            name: "conf",
            package: "snapshot-conf",
            target: "conf",
            about: "xml",
        },
        Bench {
            name: "tree",
            package: "snapshot-core",
            target: "tree",
            about: "tree",
        },
    ];

    #[test]
    fn no_name_selects_all_in_order() {
        let names: Vec<_> = select(TABLE, None)
            .unwrap()
            .iter()
            .map(|bench| bench.name)
            .collect();
        assert_eq!(names, ["conf", "tree"]);
    }

    #[test]
    fn a_name_selects_that_bench() {
        assert_eq!(select(TABLE, Some("tree")).unwrap(), [&TABLE[1]]);
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = select(TABLE, Some("nope")).unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown benchmark `nope`; known benchmarks: conf, tree"
        );
    }

    #[test]
    fn bench_names_are_unique() {
        for (i, bench) in BENCHES.iter().enumerate() {
            assert!(
                BENCHES[i + 1..]
                    .iter()
                    .all(|other| other.name != bench.name),
                "{} listed twice",
                bench.name
            );
        }
    }
}
