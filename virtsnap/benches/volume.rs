//! `cargo xtask bench volume`: the `virtsnap vol-snapshot-*` commands as
//! whole processes against the bare tools doing the same storage work in
//! the same run, with the ratio of each pair (median of 7 runs):
//!
//! - internal snapshots of a qcow2: create, list, revert, delete against
//!   `qemu-img snapshot -c/-l/-a/-d`;
//! - an external snapshot of a qcow2 (the volume keeps its path) against
//!   `mv` + `qemu-img create -b`, and deleting the middle of a chain of
//!   three against `qemu-img commit` + `mv`;
//! - a full copy of a 1 GiB sparse file (16 MiB of data) against
//!   `cp --sparse=always`, and against `cp` then `sync FILE` (virtsnap
//!   syncs its copy before recording it; cp alone does not).
//!
//! - the same internal create/revert/delete as library calls in one
//!   process (what a program embedding snapshot-core pays per call: the
//!   metadata store, its lock and its fsyncs, no process of its own)
//!   against spawning `qemu-img` from that process.
//!
//! Targets (issue 4): ≤ 1.10x bare qemu-img per call, list faster than
//! `qemu-img snapshot -l`, copy ≥ 0.9x cp's speed (ratio ≤ 1.11).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs a command to success and returns its wall time.
fn timed(program: &str, args: &[&str], state: &Path) -> Duration {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .env("VIRTSNAP_STATE", state)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qcow2(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let p = path.to_string_lossy().into_owned();
    run("qemu-img", &["create", "-q", "-f", "qcow2", &p, "256M"]);
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 7 0 8M", &p]);
    path
}

/// Internal snapshots through `VolumeApi` in this process against
/// `qemu-img` spawned from it: the cost of the library alone.
fn embedded(dir: &Path) -> Vec<Row> {
    use snapshot_core::driver::{SnapshotMode, VolumeDriver};
    use snapshot_core::store::Layout;
    use snapshot_core::volume::{CreateOptions, DeletePolicy, RevertOptions, VolumeApi};
    use std::sync::Arc;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ours = qcow2(dir, "embedded-ours.qcow2");
    let bare = qcow2(dir, "embedded-bare.qcow2");
    let b = bare.to_string_lossy().into_owned();
    let drivers: Vec<Arc<dyn VolumeDriver>> = vec![Arc::new(driver_qemu::QemuDriver::new())];
    let api = VolumeApi::new(Layout::new(dir.join("embedded-state")), drivers);
    let qemu_img = |args: &[&str]| {
        let started = Instant::now();
        let status = rt
            .block_on(async {
                tokio::process::Command::new("qemu-img")
                    .args(args)
                    .status()
                    .await
            })
            .expect("qemu-img runs");
        assert!(status.success(), "qemu-img {args:?} failed");
        started.elapsed()
    };
    let mut times: [(Vec<Duration>, Vec<Duration>); 3] = Default::default();
    for phase in 0..3 {
        for r in 0..RUNS {
            let name = format!("e{r}");
            let started = Instant::now();
            let volume = api.volume(&ours, None).expect("volume");
            match phase {
                0 => {
                    let options = CreateOptions {
                        name: Some(name.clone()),
                        mode: Some(SnapshotMode::Internal),
                        ..CreateOptions::default()
                    };
                    rt.block_on(api.snapshot_create_xml(&volume, None, &options, None))
                        .map(drop)
                }
                1 => rt
                    .block_on(api.revert_to_snapshot(
                        &volume,
                        &name,
                        RevertOptions::default(),
                        None,
                    ))
                    .map(drop),
                _ => rt
                    .block_on(api.snapshot_delete(&volume, &name, DeletePolicy::Rebase, None))
                    .map(drop),
            }
            .unwrap_or_else(|e| panic!("embedded phase {phase} of {name}: {e}"));
            times[phase].0.push(started.elapsed());
            let flag = ["-c", "-a", "-d"][phase];
            times[phase]
                .1
                .push(qemu_img(&["snapshot", flag, &name, &b]));
        }
    }
    let [create, revert, delete] = times;
    [
        ("embedded create", create),
        ("embedded revert", revert),
        ("embedded delete", delete),
    ]
    .into_iter()
    .map(|(what, (ours, bare))| Row {
        what,
        ours: median(ours),
        bare: median(bare),
        target: 1.10,
    })
    .collect()
}

struct Row {
    what: &'static str,
    ours: Duration,
    bare: Duration,
    target: f64,
}

fn main() {
    let exe = env!("CARGO_BIN_EXE_virtsnap");
    for tool in ["qemu-img", "qemu-io", "cp"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("volume bench: {tool} is missing (cargo xtask deps installs it)");
            std::process::exit(1);
        }
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let state = dir.join("state");
    let mut rows = Vec::new();

    // Internal snapshots: one image for virtsnap, one for bare qemu-img.
    let ours = qcow2(dir, "ours.qcow2");
    let bare = qcow2(dir, "bare.qcow2");
    let (o, b) = (
        ours.to_string_lossy().into_owned(),
        bare.to_string_lossy().into_owned(),
    );
    let mut phases: Vec<(&'static str, Vec<Duration>, Vec<Duration>)> = vec![
        ("internal create", Vec::new(), Vec::new()),
        ("internal list", Vec::new(), Vec::new()),
        ("internal revert", Vec::new(), Vec::new()),
        ("internal delete", Vec::new(), Vec::new()),
    ];
    for r in 0..RUNS {
        let name = format!("s{r}");
        phases[0].1.push(timed(
            exe,
            &[
                "vol-snapshot-create",
                &o,
                "--name",
                &name,
                "--mode",
                "internal",
            ],
            &state,
        ));
        phases[0]
            .2
            .push(timed("qemu-img", &["snapshot", "-c", &name, &b], &state));
        phases[1]
            .1
            .push(timed(exe, &["vol-snapshot-list", &o], &state));
        phases[1]
            .2
            .push(timed("qemu-img", &["snapshot", "-l", &b], &state));
    }
    for r in 0..RUNS {
        let name = format!("s{r}");
        phases[2]
            .1
            .push(timed(exe, &["vol-snapshot-revert", &o, &name], &state));
        phases[2]
            .2
            .push(timed("qemu-img", &["snapshot", "-a", &name, &b], &state));
    }
    for r in 0..RUNS {
        let name = format!("s{r}");
        phases[3]
            .1
            .push(timed(exe, &["vol-snapshot-delete", &o, &name], &state));
        phases[3]
            .2
            .push(timed("qemu-img", &["snapshot", "-d", &name, &b], &state));
    }
    for (what, ours, bare) in phases {
        rows.push(Row {
            what,
            ours: median(ours),
            bare: median(bare),
            target: if what == "internal list" { 1.0 } else { 1.10 },
        });
    }

    // External: create (the volume keeps its path) and a middle delete.
    let mut create = (Vec::new(), Vec::new());
    let mut delete = (Vec::new(), Vec::new());
    for r in 0..RUNS {
        let ours = qcow2(dir, &format!("ext-ours-{r}.qcow2"));
        let bare = qcow2(dir, &format!("ext-bare-{r}.qcow2"));
        let (o, b) = (
            ours.to_string_lossy().into_owned(),
            bare.to_string_lossy().into_owned(),
        );
        for (i, name) in ["x1", "x2", "x3"].into_iter().enumerate() {
            let t = timed(
                exe,
                &[
                    "vol-snapshot-create",
                    &o,
                    "--name",
                    name,
                    "--mode",
                    "external",
                ],
                &state,
            );
            let file = format!("{b}.{name}");
            let started = Instant::now();
            run("mv", &[&b, &file]);
            run(
                "qemu-img",
                &[
                    "create", "-q", "-f", "qcow2", "-b", &file, "-F", "qcow2", &b,
                ],
            );
            let bare_t = started.elapsed();
            if i == 0 {
                create.0.push(t);
                create.1.push(bare_t);
            }
            run(
                "qemu-io",
                &["-f", "qcow2", "-c", &format!("write -P {} 0 1M", i + 1), &o],
            );
            run(
                "qemu-io",
                &["-f", "qcow2", "-c", &format!("write -P {} 0 1M", i + 1), &b],
            );
        }
        // Delete x2 (middle): bare = commit x3's file into x2's, then put
        // the result under x3's name.
        delete
            .0
            .push(timed(exe, &["vol-snapshot-delete", &o, "x2"], &state));
        let (x2, x3) = (format!("{b}.x2"), format!("{b}.x3"));
        let started = Instant::now();
        run("qemu-img", &["commit", "-q", "-f", "qcow2", &x3]);
        run("mv", &[&x2, &x3]);
        delete.1.push(started.elapsed());
    }
    rows.push(Row {
        what: "external create",
        ours: median(create.0),
        bare: median(create.1),
        target: 1.10,
    });
    rows.push(Row {
        what: "external middle delete",
        ours: median(delete.0),
        bare: median(delete.1),
        target: 1.10,
    });

    // A full copy of a 1 GiB sparse file with 16 MiB of data.
    // virtsnap syncs the copy before recording it (a snapshot must survive
    // a power cut); cp does not, so the durable peer is cp then sync of
    // the copy, the two processes' times added.
    let mut copy = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..RUNS {
        let src = dir.join(format!("sparse-{r}.img"));
        let s = src.to_string_lossy().into_owned();
        run("truncate", &["-s", "1G", &s]);
        for off in 0..16 {
            run(
                "dd",
                &[
                    "if=/dev/urandom",
                    &format!("of={s}"),
                    "bs=1M",
                    "count=1",
                    &format!("seek={}", off * 61),
                    "conv=notrunc",
                    "status=none",
                ],
            );
        }
        run("sync", &["-f", &s]);
        let dst = format!("{s}.cp");
        let ours = |copy: &mut (Vec<Duration>, Vec<Duration>, Vec<Duration>)| {
            copy.0.push(timed(
                exe,
                &["vol-snapshot-create", &s, "--name", "c", "--mode", "copy"],
                &state,
            ));
        };
        // Alternate who goes first, so neither always meets a warm cache.
        if r % 2 == 0 {
            ours(&mut copy);
        }
        let cp = timed("cp", &["--sparse=always", &s, &dst], &state);
        let sync = timed("sync", &[&dst], &state);
        copy.1.push(cp);
        copy.2.push(cp + sync);
        if r % 2 == 1 {
            ours(&mut copy);
        }
    }
    let ours = median(copy.0);
    rows.push(Row {
        what: "copy 1 GiB sparse",
        ours,
        bare: median(copy.1),
        target: 1.11,
    });
    rows.push(Row {
        what: "  against cp + sync",
        ours,
        bare: median(copy.2),
        target: 1.11,
    });

    rows.extend(embedded(dir));

    let spawn = median((0..RUNS).map(|_| timed("true", &[], &state)).collect());
    println!("volume bench: whole processes, median of {RUNS}; ratio = virtsnap / bare tool");
    println!(
        "(starting a process costs {:.2} ms here: `true`, the floor of every row)",
        ms(spawn)
    );
    println!(
        "{:<24} {:>12} {:>12} {:>8} {:>8}",
        "operation", "virtsnap ms", "bare ms", "ratio", "target"
    );
    let mut over = Vec::new();
    for row in &rows {
        let ratio = row.ours.as_secs_f64() / row.bare.as_secs_f64();
        println!(
            "{:<24} {:>12.2} {:>12.2} {:>8.2} {:>8.2}",
            row.what,
            ms(row.ours),
            ms(row.bare),
            ratio,
            row.target
        );
        if ratio > row.target {
            over.push(row.what);
        }
    }
    if over.is_empty() {
        println!("all within target");
    } else {
        println!("over target: {}", over.join(", "));
    }
}
