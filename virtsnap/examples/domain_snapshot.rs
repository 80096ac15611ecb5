//! Embedding virtsnap for domains: define a shut-off domain with two
//! scratch disks (a qcow2 and a raw image), plan and take a snapshot
//! through the library API, change the disks, revert and check, then
//! delete the snapshot.
//!
//! ```sh
//! cargo run -p virtsnap --example domain_snapshot
//! ```

use std::process::Command;
use std::sync::Arc;

use snapshot_core::ChildPolicy;
use snapshot_core::domain_api::{Created, DomainApi};
use snapshot_core::driver::VolumeDriver;
use snapshot_core::plan::{CreateFlags, RevertFlags};
use snapshot_core::store::{Layout, domains};

type Error = Box<dyn std::error::Error>;

fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    let (sys, data) = (dir.join("sys.qcow2"), dir.join("data.img"));
    let (s, d) = (sys.to_str().ok_or("path")?, data.to_str().ok_or("path")?);
    run("qemu-img", &["create", "-q", "-f", "qcow2", s, "16M"])?;
    run("qemu-img", &["create", "-q", "-f", "raw", d, "16M"])?;
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 0x11 0 1M", s])?;

    // A real program would use `snapshot_core::store::layout::state_dir()`.
    let layout = Layout::new(dir.join("state"));
    domains::define(
        &layout,
        &format!(
            "<domain type='kvm'><name>example</name><devices>
               <disk type='file'><driver name='qemu' type='qcow2'/><source file='{s}'/><target dev='vda'/></disk>
               <disk type='file'><driver name='qemu' type='raw'/><source file='{d}'/><target dev='vdb'/></disk>
             </devices></domain>"
        ),
    )?;
    let drivers: Vec<Arc<dyn VolumeDriver>> = vec![
        Arc::new(driver_qemu::QemuDriver::new()),
        Arc::new(driver_file::FileDriver::new()),
    ];
    let api = DomainApi::new(layout, drivers);
    let xml = "<domainsnapshot><name>before</name></domainsnapshot>";

    // The plan first: nothing is changed.
    if let Created::Planned(plan) = api
        .snapshot_create_xml("example", Some(xml), CreateFlags::empty(), true, None)
        .await?
    {
        print!("{plan}");
    }
    api.snapshot_create_xml("example", Some(xml), CreateFlags::empty(), false, None)
        .await?;

    // The guest changes vda; revert brings it back.
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 0x22 0 1M", s])?;
    api.revert_to_snapshot("example", "before", RevertFlags::empty(), false, None)
        .await?;
    let read = run("qemu-io", &["-f", "qcow2", "-c", "read -P 0x11 0 1M", s])?;
    if read.contains("Pattern verification failed") {
        return Err("vda did not go back to 'before'".into());
    }
    println!("reverted: vda reads its 'before' content again");

    let plan = api
        .snapshot_delete("example", "before", ChildPolicy::Rebase, false, false, None)
        .await?;
    println!("deleted 'before' in {} steps", plan.steps.len());
    Ok(())
}
