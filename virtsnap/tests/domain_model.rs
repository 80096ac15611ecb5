//! Random sequences of domain snapshot operations on real images against
//! a model of what each snapshot holds: creates with a random mode per
//! disk (internal, external, none; the raw disk's internal snapshots are
//! copies), guest writes, reverts, and deletes with every child policy.
//! After every operation the disks read what the model says; an operation
//! that is refused changes nothing at all (disks, snapshot list, pending
//! record); at the end every remaining snapshot is reverted to and must
//! read exactly what it held when taken.

mod domain_support;

use std::collections::BTreeMap;
use std::path::Path;

use domain_support::{Fixture, real_drivers};
use snapshot_core::conformance::backends;
use snapshot_core::domain_api::DomainApi;
use snapshot_core::plan::{CreateFlags, RevertFlags};
use snapshot_core::tree::{ChildPolicy, ListFilter};

/// A small deterministic generator (xorshift), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

fn names(f: &Fixture) -> Vec<String> {
    let store = f.store();
    let mut v: Vec<String> = store
        .tree()
        .list(&ListFilter::default())
        .expect("list")
        .into_iter()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Everything an operation could change, for "refused means unchanged".
fn world(f: &Fixture) -> (Vec<String>, Vec<String>, Vec<String>, bool) {
    let pending = f.store().pending_intent().is_some();
    (f.contents(), f.sources(), names(f), pending)
}

#[allow(clippy::too_many_lines)]
async fn run_seed(seed: u64, ops: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = Fixture::new(tmp.path());
    let api: DomainApi = f.api(real_drivers());
    let mut rng = Rng(seed);
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut counter = 0;
    let mut log = Vec::new();
    for _ in 0..ops {
        let before = world(&f);
        let existing: Vec<String> = held.keys().cloned().collect();
        let op = rng.below(10);
        let outcome = match op {
            // Create, a random mode per disk.
            0..=3 => {
                counter += 1;
                let name = format!("s{counter}");
                let modes = ["internal", "external", "no"];
                let disks: String = ["vda", "vdb", "vdc"]
                    .iter()
                    .map(|d| format!("<disk name='{d}' snapshot='{}'/>", modes[rng.below(3)]))
                    .collect();
                let xml = format!(
                    "<domainsnapshot><name>{name}</name><disks>{disks}</disks></domainsnapshot>"
                );
                log.push(format!("create {name} {disks}"));
                let r = api
                    .snapshot_create_xml("vm", Some(&xml), CreateFlags::empty(), false, None)
                    .await
                    .map(drop);
                if r.is_ok() {
                    // A snapshot holds what the disks read now... for the
                    // disks it covers; the model compares only those.
                    held.insert(name, before.0.clone());
                }
                r.map_err(|e| e.to_string())
            }
            // A guest write.
            4..=5 => {
                let disk = rng.below(3);
                let source = f.sources()[disk].clone();
                let format = if source.ends_with(".raw") {
                    "raw"
                } else {
                    "qcow2"
                };
                let pattern = u8::try_from(rng.below(250) + 1).unwrap_or(1);
                let offset = (rng.below(8) as u64) * 65_536;
                log.push(format!(
                    "write vd{} {pattern:#x} at {offset}",
                    ["a", "b", "c"][disk]
                ));
                backends::write(Path::new(&source), format, offset, 65_536, pattern);
                Ok(())
            }
            // Revert.
            6..=7 if !existing.is_empty() => {
                let name = existing[rng.below(existing.len())].clone();
                log.push(format!("revert {name}"));
                api.revert_to_snapshot("vm", &name, RevertFlags::empty(), false, None)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            // Delete.
            8..=9 if !existing.is_empty() => {
                let name = existing[rng.below(existing.len())].clone();
                let policy = [
                    ChildPolicy::Rebase,
                    ChildPolicy::Children,
                    ChildPolicy::ChildrenOnly,
                ][rng.below(3)];
                log.push(format!("delete {name} {policy:?}"));
                let r = api
                    .snapshot_delete("vm", &name, policy, false, false, None)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string());
                if r.is_ok() {
                    let now: Vec<String> = names(&f);
                    held.retain(|n, _| now.contains(n));
                }
                r
            }
            _ => Ok(()),
        };
        if std::env::var("VIRTSNAP_MODEL_TRACE").is_ok() {
            eprintln!(
                "seed {seed}: {}",
                log.iter()
                    .rev()
                    .take(2)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        let after = world(&f);
        match outcome {
            Err(e) => {
                log.push(format!("  refused: {e}"));
                assert_eq!(
                    after,
                    before,
                    "seed {seed}: a refusal changed something\n{}",
                    log.join("\n")
                );
            }
            Ok(()) => {
                assert!(
                    !after.3,
                    "seed {seed}: a record is left pending\n{}",
                    log.join("\n")
                );
                assert_eq!(
                    after.2,
                    held.keys().cloned().collect::<Vec<_>>(),
                    "seed {seed}: the snapshot list\n{}",
                    log.join("\n")
                );
            }
        }
        // A revert brings back exactly the disks the snapshot covers: with
        // all three recorded, check those it did cover.
        if let Some(last) = log.iter().rev().find(|l| !l.starts_with("  "))
            && let Some(name) = last.strip_prefix("revert ")
            && !log.last().is_some_and(|l| l.starts_with("  refused"))
        {
            let covered = covered_disks(&f, name);
            let want = &held[name];
            for (i, covers) in covered.iter().enumerate() {
                if *covers {
                    assert_eq!(
                        after.0[i],
                        want[i],
                        "seed {seed}: disk {i} after revert to {name}\n{}",
                        log.join("\n")
                    );
                }
            }
        }
    }
    // Every remaining snapshot still holds what it held.
    for (name, want) in &held {
        if api
            .revert_to_snapshot("vm", name, RevertFlags::empty(), false, None)
            .await
            .is_err()
        {
            // Refused reverts were checked above to change nothing.
            continue;
        }
        let now = f.contents();
        for (i, covers) in covered_disks(&f, name).iter().enumerate() {
            if *covers {
                assert_eq!(
                    now[i],
                    want[i],
                    "seed {seed}: final revert to {name}, disk {i}\n{}",
                    log.join("\n")
                );
            }
        }
    }
}

/// Which of vda, vdb, vdc snapshot `name` covers.
fn covered_disks(f: &Fixture, name: &str) -> Vec<bool> {
    let store = f.store();
    let Some(snapshot_core::store::SnapshotRecord::Domain(def)) = store.get(name) else {
        return vec![false; 3];
    };
    ["vda", "vdb", "vdc"]
        .iter()
        .map(|d| {
            def.disks.iter().any(|sd| {
                sd.name == *d
                    && matches!(
                        sd.mode,
                        Some(
                            snapshot_conf::SnapshotMode::Internal
                                | snapshot_conf::SnapshotMode::External
                        )
                    )
            })
        })
        .collect()
}

#[tokio::test]
async fn random_operations_keep_every_snapshot_whole() {
    if !backends::qemu_tools_present() {
        return;
    }
    let seeds: u64 = std::env::var("VIRTSNAP_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for seed in 1..=seeds {
        run_seed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, 14).await;
    }
}
