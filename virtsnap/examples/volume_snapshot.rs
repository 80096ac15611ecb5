//! Embedding virtsnap: snapshot a disk image and revert it through the
//! library API, with the drivers the CLI uses (qcow2 through qemu-img,
//! full copies of anything else).
//!
//! ```sh
//! cargo run -p virtsnap --example volume_snapshot            # a scratch qcow2
//! cargo run -p virtsnap --example volume_snapshot -- disk.qcow2
//! ```
//!
//! With a path, the image gets a snapshot named `example-<time>`, which
//! is listed and then deleted again; the image's content is unchanged.
//! Without one, a scratch qcow2 is made, written, snapshotted, changed
//! and reverted, and the revert is checked.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use snapshot_core::driver::VolumeDriver;
use snapshot_core::store::Layout;
use snapshot_core::volume::{CreateOptions, DeletePolicy, RevertOptions, VolumeApi};

type Error = Box<dyn std::error::Error>;

fn qemu(program: &str, args: &[&str]) -> Result<(), Error> {
    let status = Command::new(program).args(args).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {args:?} failed: {status}").into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let scratch = tempfile::tempdir()?;
    let drivers: Vec<Arc<dyn VolumeDriver>> = vec![
        Arc::new(driver_qemu::QemuDriver::new()),
        Arc::new(driver_file::FileDriver::new()),
    ];
    // Metadata in a scratch state directory; a real program would use
    // `snapshot_core::store::layout::state_dir()`.
    let api = VolumeApi::new(Layout::new(scratch.path().join("state")), drivers);

    let given = std::env::args().nth(1).map(PathBuf::from);
    let path = match &given {
        Some(p) => p.clone(),
        None => {
            let p = scratch.path().join("scratch.qcow2");
            let s = p.to_str().ok_or("non-UTF-8 temp path")?;
            qemu("qemu-img", &["create", "-q", "-f", "qcow2", s, "16M"])?;
            qemu("qemu-io", &["-c", "write -P 0x11 0 1M", s])?;
            p
        }
    };
    let volume = api.volume(&path, None)?;
    println!("volume {} ({})", volume.path.display(), volume.format);

    let name = format!("example-{}", std::process::id());
    let def = api
        .snapshot_create_xml(
            &volume,
            None,
            &CreateOptions {
                name: Some(name.clone()),
                description: Some("taken by the embedding example".into()),
                ..CreateOptions::default()
            },
            None,
        )
        .await?;
    println!(
        "took snapshot {name} ({})",
        def.target.mode.map_or("internal", |m| m.as_str())
    );
    println!("snapshots: {:?}", api.snapshot_list_names(&volume)?);

    if given.is_none() {
        let s = path.to_str().ok_or("non-UTF-8 temp path")?;
        qemu("qemu-io", &["-c", "write -P 0x22 0 1M", s])?;
        api.revert_to_snapshot(&volume, &name, RevertOptions::default(), None)
            .await?;
        // The first megabyte holds 0x11 again.
        qemu("qemu-io", &["-c", "read -P 0x11 0 1M", s])?;
        println!("reverted to {name}: content checked");
    }
    api.snapshot_delete(&volume, &name, DeletePolicy::Rebase, None)
        .await?;
    println!("deleted {name}");
    Ok(())
}
