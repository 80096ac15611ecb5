//! `cargo xtask bench plugin`: what going through the plugin ABI costs.
//! The same copy-snapshot work is done four ways in one run, on a 256 MiB
//! file of pseudo-random data: driver-file linked in
//! ([`driver_file::FileDriver`]), the same driver as the `file-plugin`
//! plugin (`plugins/file` built in release, loaded through the ABI), the
//! C example plugin
//! `dircopy` (compiled here with the system's C compiler), and `cp`/`rm`
//! as whole processes. Rows: create (a full copy, with fsync), revert
//! (copy back over the volume), delete; and one `capabilities` call, the
//! ABI's fixed cost (JSON both ways, a blocking-thread hop) with no
//! storage work. Median of 7 runs (calls: mean of 2 000); ratios against
//! the linked driver and against `cp`.
//!
//! The plugins and the linked driver sync what they write (a crash loses
//! nothing); `cp` does not, so `cp` + `sync -f` is shown too. Without a C
//! compiler or jansson the dircopy column is left out, with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_abi::host::PluginDriver;
use snapshot_core::driver::{
    DeleteContext, SnapshotMode, SnapshotPlan, SnapshotRef, Volume, VolumeDriver, VolumeFormat,
    VolumeState,
};

const RUNS: usize = 7;
const CALLS: u32 = 2000;
const MIB: usize = 1 << 20;
const VOLUME_MIB: usize = 256;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Pseudo-random bytes (xorshift), so nothing compresses or dedups.
fn random_file(path: &Path, mib: usize) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = vec![0u8; mib * MIB];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(path, &data).expect("writing the volume");
    Command::new("sync").status().expect("sync");
}

fn run(program: &str, args: &[&Path]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?}: {status}");
}

struct Way {
    label: &'static str,
    driver: Arc<dyn VolumeDriver>,
}

/// Create, revert, delete through `driver`: the three medians.
fn storage_rows(rt: &tokio::runtime::Runtime, dir: &Path, way: &Way) -> [Duration; 3] {
    let volume = Volume::new(dir.join(format!("{}.img", way.label)), VolumeFormat::Raw);
    random_file(&volume.path, VOLUME_MIB);
    let (mut create, mut revert, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        let name = format!("s{i}");
        let file = volume.path.with_extension(&name);
        let plan = SnapshotPlan {
            name: name.clone(),
            mode: SnapshotMode::Copy,
            file: Some(file.clone()),
            checksum: false,
            writable: false,
        };
        let t = Instant::now();
        let created = rt
            .block_on(way.driver.create(&volume, &plan, None))
            .unwrap_or_else(|e| panic!("{}: create: {e}", way.label));
        create.push(t.elapsed());
        let snapshot: SnapshotRef = created.as_ref();
        let t = Instant::now();
        rt.block_on(way.driver.revert(&volume, &snapshot, false, None))
            .unwrap_or_else(|e| panic!("{}: revert: {e}", way.label));
        revert.push(t.elapsed());
        let t = Instant::now();
        rt.block_on(
            way.driver
                .delete(&volume, &snapshot, &DeleteContext::default(), None),
        )
        .unwrap_or_else(|e| panic!("{}: delete: {e}", way.label));
        delete.push(t.elapsed());
        assert!(!file.exists(), "{}: the copy is gone", way.label);
    }
    std::fs::remove_file(&volume.path).expect("removing the volume");
    [median(create), median(revert), median(delete)]
}

/// The same work with `cp` and `rm` (and `cp` + `sync -f`).
fn peer_rows(dir: &Path, sync: bool) -> [Duration; 3] {
    let volume = dir.join(if sync { "cp-sync.img" } else { "cp.img" });
    random_file(&volume, VOLUME_MIB);
    let (mut create, mut revert, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        let snap = dir.join(format!("cp.s{i}"));
        let t = Instant::now();
        run("cp", &[&volume, &snap]);
        if sync {
            run("sync", &[Path::new("-f"), &snap]);
        }
        create.push(t.elapsed());
        let t = Instant::now();
        run("cp", &[&snap, &volume]);
        if sync {
            run("sync", &[Path::new("-f"), &volume]);
        }
        revert.push(t.elapsed());
        let t = Instant::now();
        run("rm", &[&snap]);
        delete.push(t.elapsed());
    }
    std::fs::remove_file(&volume).expect("removing the volume");
    [median(create), median(revert), median(delete)]
}

/// Mean time of one `capabilities` call.
fn call_cost(rt: &tokio::runtime::Runtime, dir: &Path, way: &Way) -> Duration {
    let volume = Volume::new(dir.join("caps.img"), VolumeFormat::Raw);
    std::fs::write(&volume.path, b"x").expect("writing");
    let t = Instant::now();
    for _ in 0..CALLS {
        let caps = rt
            .block_on(way.driver.capabilities(&volume, VolumeState::Offline))
            .unwrap_or_else(|e| panic!("{}: capabilities: {e}", way.label));
        assert!(caps.copy);
    }
    t.elapsed() / CALLS
}

fn open(path: &Path) -> Arc<dyn VolumeDriver> {
    let plugin = plugin_abi::host::load(path).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(PluginDriver::open(plugin).unwrap_or_else(|e| panic!("{e}")))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let scratch = tempfile::tempdir_in(
        std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from),
    )
    .expect("a scratch directory");
    let dir = scratch.path();
    let mut ways = vec![
        Way {
            label: "linked",
            driver: Arc::new(driver_file::FileDriver::new()),
        },
        Way {
            label: "file-plugin",
            driver: open(&plugin_abi::testing::cargo_plugin_release(
                "virtsnap-plugin-file",
                "virtsnap_plugin_file",
            )),
        },
    ];
    let dircopy = Path::new("/usr/include/jansson.h").exists().then(|| {
        plugin_abi::testing::compile_c(
            "virtsnap_dircopy_bench",
            &[plugin_abi::testing::workspace().join("plugins/dircopy/dircopy.c")],
            &["-O2", "-ljansson"],
        )
    });
    match dircopy.flatten() {
        Some(path) => ways.push(Way {
            label: "dircopy (C)",
            driver: open(&path),
        }),
        None => println!("(dircopy left out: no C compiler or no jansson.h)"),
    }

    println!(
        "plugin ABI cost, {VOLUME_MIB} MiB volume of random data in {}, median of {RUNS} runs (ms)\n",
        dir.display()
    );
    let linked = storage_rows(&rt, dir, &ways[0]);
    let cp = peer_rows(dir, false);
    let cp_sync = peer_rows(dir, true);
    println!(
        "{:<14} {:>10} {:>10} {:>10}   {:>12} {:>12}",
        "way", "create", "revert", "delete", "vs linked", "vs cp+sync"
    );
    let line = |label: &str, rows: [Duration; 3]| {
        let ratio = |a: [Duration; 3], b: [Duration; 3]| {
            let (x, y): (f64, f64) = (
                a.iter().map(|d| ms(*d)).sum(),
                b.iter().map(|d| ms(*d)).sum(),
            );
            x / y
        };
        println!(
            "{label:<14} {:>10.1} {:>10.1} {:>10.1}   {:>11.2}x {:>11.2}x",
            ms(rows[0]),
            ms(rows[1]),
            ms(rows[2]),
            ratio(rows, linked),
            ratio(rows, cp_sync)
        );
    };
    line("linked", linked);
    for way in &ways[1..] {
        line(way.label, storage_rows(&rt, dir, way));
    }
    line("cp, rm", cp);
    line("cp+sync, rm", cp_sync);
    println!("\none capabilities call, mean of {CALLS} (µs):");
    for way in &ways {
        println!(
            "{:<14} {:>8.1}",
            way.label,
            call_cost(&rt, dir, way).as_secs_f64() * 1e6
        );
    }
    println!(
        "\nratios are summed create+revert+delete times; the plugins and the linked driver \
         fsync the copy and its directory."
    );
}
