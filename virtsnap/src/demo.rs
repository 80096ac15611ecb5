//! `virtsnap demo`: volume and domain snapshots end to end in a temporary
//! state directory and work directory, on real images with the real
//! drivers. It creates a qcow2 image and a raw image, writes data, takes
//! internal, external and copy snapshots, shows the trees, reverts,
//! deletes a snapshot in the middle of a chain; then defines a shut-off
//! domain with a qcow2 and a raw disk, shows a dry-run plan, takes two
//! domain snapshots, reverts and deletes one. Every byte is checked
//! against checksums taken along the way, each step printed with what it
//! proved.
//! Everything it made is removed at the end (the temp dirs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use snapshot_core::ChildPolicy;
use snapshot_core::domain_api::Created;
use snapshot_core::driver::{SnapshotMode, Volume, VolumeFormat};
use snapshot_core::plan::{CreateFlags, RevertFlags};
use snapshot_core::store::{Access, Layout, domains};
use snapshot_core::volume::{CreateOptions, DeletePolicy, RevertOptions, VolumeApi};

use crate::snapshot_cmd::tree_text;
use crate::vol_cmd::drivers;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A step failed.
    #[error("step '{step}' failed: {why}")]
    Step {
        /// The step.
        step: String,
        /// Why.
        why: String,
    },
    /// A check found other bytes than expected.
    #[error("check failed after '{step}': {what} has sha256 {found}, expected {expected}")]
    Mismatch {
        /// The step.
        step: String,
        /// What was checked.
        what: String,
        /// Expected digest.
        expected: String,
        /// Found digest.
        found: String,
    },
}

/// Runs the demo, printing to stdout.
pub fn run() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("virtsnap: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtsnap: demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The demo's state: where things are and what each snapshot holds.
struct Demo {
    api: VolumeApi,
    work: PathBuf,
    /// sha256 of the guest-visible content, by `volume/snapshot`.
    expected: BTreeMap<String, String>,
    step: usize,
}

fn fail(step: &str) -> impl FnOnce(String) -> DemoError + '_ {
    move |why| DemoError::Step {
        step: step.to_string(),
        why,
    }
}

async fn tool(program: &str, args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e} (install qemu-utils)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Demo {
    fn say(&mut self, what: &str, proved: &str) {
        self.step += 1;
        println!("{:>2}. {what}", self.step);
        if !proved.is_empty() {
            println!("    -> {proved}");
        }
    }

    /// sha256 of what a guest would read from `volume`.
    async fn content(&self, volume: &Volume) -> Result<String, String> {
        let raw = self.work.join("content.raw");
        let path = volume.path.to_string_lossy().into_owned();
        let raw_arg = raw.to_string_lossy().into_owned();
        tool(
            "qemu-img",
            &[
                "convert",
                "-O",
                "raw",
                "-f",
                volume.format.as_str(),
                &path,
                &raw_arg,
            ],
        )
        .await?;
        let digest = tokio::task::spawn_blocking({
            let raw = raw.clone();
            move || driver_file::copy::sha256_file(&raw)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string());
        let _ = tokio::fs::remove_file(&raw).await;
        digest
    }

    /// Writes `len` bytes of `pattern` at `offset`.
    async fn write(
        &self,
        volume: &Volume,
        pattern: u8,
        offset: u64,
        len: u64,
    ) -> Result<(), String> {
        let path = volume.path.to_string_lossy().into_owned();
        let cmd = format!("write -P {pattern} {offset} {len}");
        tool(
            "qemu-io",
            &["-f", volume.format.as_str(), "-c", &cmd, &path],
        )
        .await
    }

    async fn check(&self, step: &str, volume: &Volume, key: &str) -> Result<(), DemoError> {
        let found = self.content(volume).await.map_err(fail(step))?;
        let expected = self.expected.get(key).cloned().unwrap_or_default();
        if found == expected {
            Ok(())
        } else {
            Err(DemoError::Mismatch {
                step: step.to_string(),
                what: format!("{} (expected the content of {key})", volume.path.display()),
                expected,
                found,
            })
        }
    }

    async fn snapshot(
        &mut self,
        volume: &Volume,
        label: &str,
        name: &str,
        mode: SnapshotMode,
    ) -> Result<(), DemoError> {
        let step = format!("{mode} snapshot {name} of {label}");
        let digest = self.content(volume).await.map_err(fail(&step))?;
        let options = CreateOptions {
            name: Some(name.to_string()),
            mode: Some(mode),
            checksum: mode == SnapshotMode::Copy,
            ..CreateOptions::default()
        };
        let def = self
            .api
            .snapshot_create_xml(volume, None, &options, None)
            .await
            .map_err(|e| fail(&step)(e.to_string()))?;
        self.expected.insert(format!("{label}/{name}"), digest);
        let file = def
            .target
            .source
            .path
            .map(|p| format!(" (file {p})"))
            .unwrap_or_default();
        let article = if mode == SnapshotMode::Internal {
            "an"
        } else {
            "a"
        };
        self.say(
            &format!("took {article} {mode} snapshot '{name}' of {label}{file}"),
            "",
        );
        Ok(())
    }

    fn tree(&self, volume: &Volume) -> Result<String, DemoError> {
        let store = self
            .api
            .store(volume, Access::Read)
            .map_err(|e| fail("show the tree")(e.to_string()))?;
        let tree = store.tree();
        let names = tree
            .list(&snapshot_core::ListFilter::default())
            .map_err(|e| fail("show the tree")(e.to_string()))?;
        let mut out = String::new();
        for line in tree_text(tree, None, &names).lines() {
            let _ = writeln!(out, "      {line}");
        }
        Ok(out)
    }
}

async fn demo() -> Result<(), DemoError> {
    let state = tempfile::tempdir().map_err(|e| fail("make a state dir")(e.to_string()))?;
    let work = tempfile::tempdir().map_err(|e| fail("make a work dir")(e.to_string()))?;
    let mut d = Demo {
        api: VolumeApi::new(Layout::new(state.path()), drivers()),
        work: work.path().to_path_buf(),
        expected: BTreeMap::new(),
        step: 0,
    };
    println!("virtsnap demo: volume snapshots on real images");
    println!("  state dir {}", state.path().display());
    println!("  work dir  {}", work.path().display());

    // Three volumes: a qcow2 for internal snapshots, a qcow2 for external
    // ones, and a raw image for copies.
    let step = "create the images";
    let internal = work.path().join("internal.qcow2");
    let external = work.path().join("external.qcow2");
    let raw = work.path().join("plain.img");
    for path in [&internal, &external] {
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                &path.to_string_lossy(),
                "16M",
            ],
        )
        .await
        .map_err(fail(step))?;
    }
    tool(
        "qemu-img",
        &["create", "-q", "-f", "raw", &raw.to_string_lossy(), "16M"],
    )
    .await
    .map_err(fail(step))?;
    let vol = |p: &Path| d.api.volume(p, None).map_err(|e| fail(step)(e.to_string()));
    let (vi, ve, vr) = (vol(&internal)?, vol(&external)?, vol(&raw)?);
    d.say(
        "created internal.qcow2, external.qcow2 (qcow2, 16 MiB) and plain.img (raw, 16 MiB)",
        "formats detected from the files' first bytes",
    );

    // Internal snapshots: a, b on one qcow2.
    for (volume, label) in [
        (&vi, "internal.qcow2"),
        (&ve, "external.qcow2"),
        (&vr, "plain.img"),
    ] {
        d.write(volume, 0x11, 0, 1 << 20)
            .await
            .map_err(fail("write data"))?;
        let _ = label;
    }
    d.say("wrote 1 MiB of 0x11 at offset 0 of each image", "");
    d.snapshot(&vi, "internal.qcow2", "a", SnapshotMode::Internal)
        .await?;
    d.write(&vi, 0x22, 1 << 20, 1 << 20)
        .await
        .map_err(fail("write data"))?;
    d.snapshot(&vi, "internal.qcow2", "b", SnapshotMode::Internal)
        .await?;
    d.write(&vi, 0x33, 0, 4096)
        .await
        .map_err(fail("write data"))?;

    // External snapshots: a chain e1 <- e2 <- e3 on the other qcow2.
    for (name, pattern) in [("e1", 0x44u8), ("e2", 0x55), ("e3", 0x66)] {
        d.snapshot(&ve, "external.qcow2", name, SnapshotMode::External)
            .await?;
        d.write(&ve, pattern, u64::from(pattern) << 12, 8192)
            .await
            .map_err(fail("write data"))?;
    }
    d.say(
        "the external volume kept its path: external.qcow2 is now an overlay on external.qcow2.e3",
        "whatever refers to the volume by path keeps working",
    );

    // A copy of the raw image, with a checksum.
    d.snapshot(&vr, "plain.img", "c1", SnapshotMode::Copy)
        .await?;
    d.write(&vr, 0x77, 0, 1 << 20)
        .await
        .map_err(fail("write data"))?;

    let tree = d.tree(&ve)?;
    d.say("the external volume's snapshot tree:", "");
    print!("{tree}");

    // Revert each volume and check its bytes.
    let step = "revert internal.qcow2 to a";
    d.api
        .revert_to_snapshot(&vi, "a", RevertOptions::default(), None)
        .await
        .map_err(|e| fail(step)(e.to_string()))?;
    d.check(step, &vi, "internal.qcow2/a").await?;
    d.say(
        "reverted internal.qcow2 to 'a'",
        "its content is byte for byte what it was when 'a' was taken; 'b' is still there",
    );
    let step = "revert internal.qcow2 to b";
    d.api
        .revert_to_snapshot(&vi, "b", RevertOptions::default(), None)
        .await
        .map_err(|e| fail(step)(e.to_string()))?;
    d.check(step, &vi, "internal.qcow2/b").await?;
    d.say(
        "reverted internal.qcow2 to the newer 'b'",
        "reverting kept newer snapshots",
    );

    let step = "revert plain.img to c1 (verified)";
    d.api
        .revert_to_snapshot(
            &vr,
            "c1",
            RevertOptions {
                verify: true,
                drop_newer: false,
            },
            None,
        )
        .await
        .map_err(|e| fail(step)(e.to_string()))?;
    d.check(step, &vr, "plain.img/c1").await?;
    d.say(
        "reverted plain.img to its copy 'c1' after verifying the copy's sha256",
        "the copy was intact and the image is as it was",
    );

    // Delete the middle of the external chain; every other snapshot keeps
    // its content.
    let step = "delete e2 from the middle of the chain";
    d.api
        .snapshot_delete(&ve, "e2", DeletePolicy::Rebase, None)
        .await
        .map_err(|e| fail(step)(e.to_string()))?;
    d.say("deleted 'e2', in the middle of the external chain", "");
    for name in ["e1", "e3"] {
        let step = format!("revert external.qcow2 to {name}");
        d.api
            .revert_to_snapshot(&ve, name, RevertOptions::default(), None)
            .await
            .map_err(|e| fail(&step)(e.to_string()))?;
        d.check(&step, &ve, &format!("external.qcow2/{name}"))
            .await?;
    }
    d.say(
        "reverted to 'e1' and to 'e3' and checked their bytes",
        "deleting a middle snapshot lost no other snapshot's data",
    );
    let tree = d.tree(&ve)?;
    d.say("the external volume's tree now:", "");
    print!("{tree}");

    domain_part(&mut d, state.path(), work.path()).await?;

    println!("demo passed: every check held; removing the temporary directories");
    Ok(())
}

/// What the guest of domain `demo` would read from each disk now (its
/// sources change with external snapshots), hashed.
async fn domain_view(d: &Demo, layout: &Layout, step: &str) -> Result<Vec<String>, DemoError> {
    let domain = domains::get(layout, "demo").map_err(|e| fail(step)(e.to_string()))?;
    let mut out = Vec::new();
    for disk in &domain.def.disks {
        let path = disk.source.path.clone().unwrap_or_default();
        let format = VolumeFormat::from_name(disk.driver_type.as_deref().unwrap_or("raw"));
        let volume = Volume::new(path, format);
        out.push(d.content(&volume).await.map_err(fail(step))?);
    }
    Ok(out)
}

/// Domain snapshots: a shut-off domain with a qcow2 system disk and a raw
/// data disk, each snapshotted by its own mechanism, reverted and a
/// snapshot deleted, every disk checked.
async fn domain_part(d: &mut Demo, state: &Path, work: &Path) -> Result<(), DemoError> {
    let layout = Layout::new(state);
    let step = "define domain demo";
    let sys = work.join("sys.qcow2");
    let data = work.join("data.img");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &sys.to_string_lossy(), "16M"],
    )
    .await
    .map_err(fail(step))?;
    tool(
        "qemu-img",
        &["create", "-q", "-f", "raw", &data.to_string_lossy(), "16M"],
    )
    .await
    .map_err(fail(step))?;
    let xml = format!(
        "<domain type='kvm'>\n  <name>demo</name>\n  <memory unit='MiB'>64</memory>\n  <devices>\n    \
         <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      \
         <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n    \
         <disk type='file' device='disk' snapshot='external'>\n      <driver name='qemu' type='raw'/>\n      \
         <source file='{}'/>\n      <target dev='vdb' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n",
        sys.display(),
        data.display()
    );
    domains::define(&layout, &xml).map_err(|e| fail(step)(e.to_string()))?;
    d.say(
        "defined domain 'demo' (shut off): vda sys.qcow2, vdb data.img (raw, snapshot='external')",
        "",
    );
    let api = crate::vol_cmd::domain_api(&layout);
    for (disk, pattern) in [(&sys, 0x81u8), (&data, 0x82)] {
        let format = if disk == &sys {
            VolumeFormat::Qcow2
        } else {
            VolumeFormat::Raw
        };
        d.write(&Volume::new(disk, format), pattern, 0, 1 << 20)
            .await
            .map_err(fail("write data"))?;
    }
    let step = "plan snapshot s1 of demo";
    let xml = "<domainsnapshot><name>s1</name></domainsnapshot>";
    let Created::Planned(plan) = api
        .snapshot_create_xml("demo", Some(xml), CreateFlags::empty(), true, None)
        .await
        .map_err(|e| fail(step)(e.to_string()))?
    else {
        return Err(fail(step)("a dry run took a snapshot".into()));
    };
    d.say(
        "the dry run of snapshot 's1' of domain demo (nothing done):",
        "",
    );
    for line in plan.to_string().lines() {
        println!("      {line}");
    }
    let at_s1 = domain_view(d, &layout, step).await?;
    let step = "snapshot s1 of demo";
    api.snapshot_create_xml("demo", Some(xml), CreateFlags::empty(), false, None)
        .await
        .map_err(|e| fail(step)(e.to_string()))?;
    if domain_view(d, &layout, step).await? != at_s1 {
        return Err(fail(step)(
            "taking the snapshot changed what the guest sees".into(),
        ));
    }
    d.say(
        "took domain snapshot 's1': vda inside sys.qcow2, vdb as a new qcow2 overlay data.s1 that is now its source",
        "what the guest sees did not change",
    );
    let domain = domains::get(&layout, "demo").map_err(|e| fail(step)(e.to_string()))?;
    let vdb = domain.def.disks[1].source.path.clone().unwrap_or_default();
    d.write(&Volume::new(&sys, VolumeFormat::Qcow2), 0x91, 0, 1 << 20)
        .await
        .map_err(fail("write data"))?;
    d.write(&Volume::new(&vdb, VolumeFormat::Qcow2), 0x92, 0, 1 << 20)
        .await
        .map_err(fail("write data"))?;
    let step = "snapshot s2 of demo";
    let at_s2 = domain_view(d, &layout, step).await?;
    api.snapshot_create_xml(
        "demo",
        Some("<domainsnapshot><name>s2</name></domainsnapshot>"),
        CreateFlags::empty(),
        false,
        None,
    )
    .await
    .map_err(|e| fail(step)(e.to_string()))?;
    d.say("wrote both disks and took 's2'", "");
    let step = "revert demo to s1";
    api.revert_to_snapshot("demo", "s1", RevertFlags::empty(), false, None)
        .await
        .map_err(|e| fail(step)(e.to_string()))?;
    if domain_view(d, &layout, step).await? != at_s1 {
        return Err(fail(step)("the disks are not what they were at s1".into()));
    }
    d.say(
        "reverted domain demo to 's1'",
        "both disks read byte for byte what they held at 's1'",
    );
    let step = "delete s1 of demo";
    api.snapshot_delete("demo", "s1", ChildPolicy::Rebase, false, false, None)
        .await
        .map_err(|e| fail(step)(e.to_string()))?;
    let step = "revert demo to s2";
    api.revert_to_snapshot("demo", "s2", RevertFlags::empty(), false, None)
        .await
        .map_err(|e| fail(step)(e.to_string()))?;
    if domain_view(d, &layout, step).await? != at_s2 {
        return Err(fail(step)("the disks are not what they were at s2".into()));
    }
    d.say(
        "deleted 's1' (its frozen images merged or rebased into what was built on them) and reverted to 's2'",
        "deleting a domain snapshot lost no other snapshot's data",
    );
    Ok(())
}
