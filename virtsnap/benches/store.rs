//! `cargo xtask bench store`: wall time of the real `virtsnap` binary,
//! as whole processes (spawn to exit, output read), for domains of 1 000
//! and 10 000 snapshots (a chain with a branch of 2 every 500), with a
//! valid index ("warm") and without one ("cold": the index file is
//! removed first): `snapshot-list`, `snapshot-list --tree` (on a domain
//! of the same size in chains of 100, since virsh's tree layout indents
//! every level and a 10 000-deep chain prints ~400 MB; the chain's tree is
//! measured at 1 000), `snapshot-list --topological`, `snapshot-info`,
//! `snapshot-current`,
//! and `snapshot-delete --metadata` of a snapshot in the middle of the
//! chain; median of 5 runs each.
//!
//! The domains' files are generated directly in libvirt's format (what the
//! store writes: snapshot-conf's internal format with `<active>`), since
//! creating 10 000 snapshots through the durable store costs tens of
//! thousands of fsyncs.
//!
//! Targets (issue 3): each ≤ 30 ms at 10 000. libvirt 9.0 for reference
//! (not installed here): snapshot-list 0.99 s, middle delete 3.9 s at 5000.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snapshot_conf::{DomainSnapshotDef, FormatFlags, FormatOptions, ParseFlags, ParseOptions};
use snapshot_core::store::{Layout, Owner};

const RUNS: usize = 5;
const TARGET: Duration = Duration::from_millis(30);

fn name(i: usize) -> String {
    format!("snap{i:05}")
}

/// The parents of a chain of `n`, plus a branch of two every 500; the
/// current snapshot is the chain's tip.
fn chain(n: usize) -> (Vec<Option<String>>, Option<String>) {
    let mut parents: Vec<Option<String>> = Vec::with_capacity(n);
    let mut tip: Option<String> = None;
    let mut i = 0;
    while i < n {
        if i % 500 == 499 && i + 2 < n {
            let base = Some(name(i - 250));
            parents.push(base);
            parents.push(Some(name(i)));
            i += 2;
            continue;
        }
        parents.push(tip.clone());
        tip = Some(name(i));
        i += 1;
    }
    (parents, tip)
}

/// The parents of `n` snapshots in chains of 100 from 1 % of them (roots):
/// the same count at depth 100, for `--tree`, whose output virsh's layout
/// makes quadratic in the depth.
fn wide(n: usize) -> (Vec<Option<String>>, Option<String>) {
    let parents = (0..n)
        .map(|i| (i % 100 != 0).then(|| name(i - 1)))
        .collect();
    (parents, Some(name(n - 1)))
}

/// Writes one snapshot file per entry of `shape`.
fn generate(layout: &Layout, owner: &Owner, shape: (Vec<Option<String>>, Option<String>)) {
    let dir = layout.owner_dir(owner).expect("owner dir");
    std::fs::create_dir_all(&dir).expect("create owner dir");
    let (parents, tip) = shape;
    for (i, parent) in parents.iter().enumerate() {
        let mut xml = format!(
            "<domainsnapshot><name>{}</name><state>shutoff</state><creationTime>{}</creationTime>",
            name(i),
            1_700_000_000 + i
        );
        if let Some(p) = parent {
            let _ = write!(xml, "<parent><name>{p}</name></parent>");
        }
        xml.push_str("</domainsnapshot>");
        let def = DomainSnapshotDef::parse(&xml, &ParseOptions::new(ParseFlags::REDEFINE))
            .expect("definition")
            .def;
        let mut flags = FormatFlags::SECURE | FormatFlags::INTERNAL;
        flags.set(FormatFlags::CURRENT, Some(name(i)) == tip);
        let text = def.format(&FormatOptions::new(flags));
        std::fs::write(dir.join(format!("{}.xml", name(i))), text).expect("write");
    }
}

/// The `virtsnap` arguments of an operation on `domain`.
fn args<'a>(op: &str, domain: &'a str, target: &'a str) -> Vec<&'a str> {
    match op {
        "list" => vec!["snapshot-list", domain],
        "tree" | "tree-chain" => vec!["snapshot-list", domain, "--tree"],
        "topological" => vec!["snapshot-list", domain, "--topological"],
        "info" => vec!["snapshot-info", domain, target],
        "current" => vec!["snapshot-current", domain, "--name"],
        "delete" => vec!["snapshot-delete", domain, target, "--metadata"],
        other => panic!("unknown op {other}"),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let exe = env!("CARGO_BIN_EXE_virtsnap");
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(tmp.path());
    println!(
        "store bench: the virtsnap binary as whole processes, median of {RUNS}; \
         target ≤ {} ms at 10 000",
        TARGET.as_millis()
    );
    println!(
        "libvirt 9.0 reference (not installed here, from the issue): \
         snapshot-list 0.99 s, middle delete 3.9 s at 5000"
    );
    println!(
        "{:>6} {:<12} {:>10} {:>10}",
        "n", "operation", "warm ms", "cold ms"
    );
    let mut over = Vec::new();
    for n in [1_000usize, 10_000] {
        let domain = format!("vm{n}");
        let wide_domain = format!("wide{n}");
        let owner = Owner::Domain(domain.clone());
        let wide_owner = Owner::Domain(wide_domain.clone());
        generate(&layout, &owner, chain(n));
        generate(&layout, &wide_owner, wide(n));
        let index = layout.owner_index(&owner).expect("index path");
        let wide_index = layout.owner_index(&wide_owner).expect("index path");
        let output_bytes = std::cell::RefCell::new(std::collections::BTreeMap::new());
        let run = |op: &str, target: &str, cold: bool| -> Duration {
            let (domain, index) = if op == "tree" {
                (&wide_domain, &wide_index)
            } else {
                (&domain, &index)
            };
            if cold {
                let _ = std::fs::remove_file(index);
            }
            let started = Instant::now();
            let output = Command::new(exe)
                .args(args(op, domain, target))
                .env("VIRTSNAP_STATE", tmp.path())
                .stdin(Stdio::null())
                .output()
                .expect("spawn virtsnap");
            let took = started.elapsed();
            assert!(
                output.status.success(),
                "virtsnap {op} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                op == "delete" || !output.stdout.is_empty(),
                "virtsnap {op} printed nothing"
            );
            output_bytes
                .borrow_mut()
                .insert(op.to_string(), output.stdout.len());
            took
        };
        // A valid index, then out of the racy window so the warm runs
        // trust the directory's mtime alone.
        run("current", "", true);
        run("tree", "", true);
        std::thread::sleep(Duration::from_millis(2100));
        run("current", "", false);
        run("tree", "", false);
        let middle = n / 2;
        // --tree of the 10 000-deep chain prints hundreds of megabytes in
        // virsh's layout: measured at 1 000 only.
        let ops: &[&str] = if n <= 1_000 {
            &[
                "list",
                "tree",
                "tree-chain",
                "topological",
                "info",
                "current",
                "delete",
            ]
        } else {
            &["list", "tree", "topological", "info", "current", "delete"]
        };
        for &op in ops {
            let mut results = [Vec::new(), Vec::new()];
            for (c, cold) in [false, true].into_iter().enumerate() {
                for r in 0..RUNS {
                    let target = if op == "delete" {
                        name(middle + c * RUNS + r + 1)
                    } else {
                        name(middle)
                    };
                    results[c].push(run(op, &target, cold));
                }
            }
            let warm = median(std::mem::take(&mut results[0]));
            let cold = median(std::mem::take(&mut results[1]));
            println!(
                "{n:>6} {op:<12} {:>10.2} {:>10.2}   ({} bytes out)",
                warm.as_secs_f64() * 1e3,
                cold.as_secs_f64() * 1e3,
                output_bytes.borrow().get(op).copied().unwrap_or(0),
            );
            if n == 10_000 && warm > TARGET {
                over.push(op);
            }
        }
    }
    if over.is_empty() {
        println!(
            "all warm operations within {} ms at 10 000",
            TARGET.as_millis()
        );
    } else {
        println!(
            "over {} ms at 10 000 (warm): {}",
            TARGET.as_millis(),
            over.join(", ")
        );
    }
}
