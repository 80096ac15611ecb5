//! Saved domains (`virsh save` / `restore`, the proposal's
//! `virDomainSaveFlags`): a file holding QEMU's migration stream of the
//! guest's memory and devices, followed by a trailer naming the domain,
//! its definition when saved, and the snapshot of its disks when they
//! were snapshotted with it (SAVE_DISKS). QEMU stops reading at the end
//! of its stream, so the trailer never disturbs a restore, and a memory
//! file a snapshot wrote becomes a save file by appending one.
//!
//! Trailer: `\n`, one JSON line, `\n`, the JSON's length (8 bytes, little
//! endian), and the magic `VSSAVE01`.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use serde_json::{Value, json};
use snapshot_conf::Domain;
use snapshot_core::plan::MemoryImage;
use snapshot_core::store::Layout;

use crate::domain::{QemuDomain, RuntimeError};
use crate::launch::StartMode;

const MAGIC: &[u8; 8] = b"VSSAVE01";

/// What a save file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveInfo {
    /// The domain.
    pub domain: String,
    /// Its definition when saved.
    pub xml: String,
    /// The snapshot holding its disks, with SAVE_DISKS.
    pub snapshot: Option<String>,
    /// The guest ran when saved (restored running unless asked paused).
    pub running: bool,
}

/// Why a save or restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// Not a save file.
    #[error("{0} is not a virtsnap save file (no trailer); give the file `virtsnap save` wrote")]
    NotASave(String),
    /// The domain.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The file.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The saved definition.
    #[error("the definition saved in {path} is not usable: {why}")]
    Definition {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SaveError {
    let path = path.display().to_string();
    move |source| SaveError::Io { what, path, source }
}

/// Appends the trailer of `info` to `file` and makes it durable.
///
/// # Errors
/// Writing the file.
pub fn append_trailer(file: &Path, info: &SaveInfo) -> Result<(), SaveError> {
    let text = json!({
        "domain": info.domain, "xml": info.xml,
        "snapshot": info.snapshot, "running": info.running,
    })
    .to_string();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .map_err(io("cannot open", file))?;
    let mut bytes = Vec::with_capacity(text.len() + 18);
    bytes.push(b'\n');
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
    bytes.extend_from_slice(MAGIC);
    f.write_all(&bytes).map_err(io("cannot write", file))?;
    f.sync_all().map_err(io("cannot sync", file))
}

/// Reads the trailer of `file`.
///
/// # Errors
/// Not a save file, or unreadable.
pub fn read_trailer(file: &Path) -> Result<SaveInfo, SaveError> {
    let not = || SaveError::NotASave(file.display().to_string());
    let mut f = std::fs::File::open(file).map_err(io("cannot open", file))?;
    let len = f.metadata().map_err(io("cannot read", file))?.len();
    if len < 16 {
        return Err(not());
    }
    let mut tail = [0u8; 16];
    f.seek(SeekFrom::End(-16))
        .map_err(io("cannot read", file))?;
    f.read_exact(&mut tail).map_err(io("cannot read", file))?;
    if &tail[8..] != MAGIC {
        return Err(not());
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&tail[..8]);
    let json_len = u64::from_le_bytes(n);
    if json_len > len.saturating_sub(17) || json_len > 64 << 20 {
        return Err(not());
    }
    let start = len - 17 - json_len;
    f.seek(SeekFrom::Start(start))
        .map_err(io("cannot read", file))?;
    let mut text = vec![0u8; usize::try_from(json_len).map_err(|_| not())?];
    f.read_exact(&mut text).map_err(io("cannot read", file))?;
    let v: Value = serde_json::from_slice(&text).map_err(|_| not())?;
    Ok(SaveInfo {
        domain: v
            .get("domain")
            .and_then(Value::as_str)
            .ok_or_else(not)?
            .to_string(),
        xml: v
            .get("xml")
            .and_then(Value::as_str)
            .ok_or_else(not)?
            .to_string(),
        snapshot: v
            .get("snapshot")
            .and_then(Value::as_str)
            .map(str::to_string),
        running: v.get("running").and_then(Value::as_bool).unwrap_or(true),
    })
}

/// Saves running domain `name`'s memory to `file` (created, never
/// overwritten): the guest is paused (its filesystems frozen first with
/// `quiesce`) for the whole save, then stopped, or resumed with
/// `resume`. The disks are not snapshotted: changing them before a
/// restore makes the save useless.
///
/// # Errors
/// The domain does not run, the file exists, or QEMU fails (the guest
/// is then resumed as it was and the file removed).
pub async fn save(
    layout: &Layout,
    name: &str,
    file: &Path,
    resume: bool,
    quiesce: bool,
) -> Result<SaveInfo, SaveError> {
    use snapshot_core::hypervisor::Hypervisor as _;
    let d = QemuDomain::new(layout, name);
    let state = d.domain_state().await?;
    if !state.is_active() {
        return Err(RuntimeError::NotRunning(name.to_string()).into());
    }
    let running = state == snapshot_core::plan::DomainState::Running;
    let domain = snapshot_core::store::domains::get(layout, name).map_err(RuntimeError::from)?;
    let info = SaveInfo {
        domain: name.to_string(),
        xml: domain.xml.to_xml(true),
        snapshot: None,
        running,
    };
    if quiesce {
        d.freeze().await.map_err(|e| RuntimeError::Failed {
            what: "freezing the guest's filesystems".into(),
            why: e.to_string(),
        })?;
    }
    let saved = async {
        if running {
            d.suspend().await?;
        }
        d.save_memory(file, snapshot_core::plan::MemorySave::Paused)
            .await
            .map_err(|e| RuntimeError::Failed {
                what: "saving memory".into(),
                why: e.to_string(),
            })?;
        append_trailer(file, &info).map_err(|e| RuntimeError::Failed {
            what: "writing the save file's trailer".into(),
            why: e.to_string(),
        })
    }
    .await;
    if quiesce {
        let _ = d.thaw().await;
    }
    match saved {
        Err(e) => {
            let _ = std::fs::remove_file(file);
            if running {
                let _ = d.resume_cpus().await;
            }
            Err(e.into())
        }
        Ok(()) => {
            if resume {
                if running {
                    d.resume_cpus().await?;
                }
            } else {
                d.destroy().await?;
            }
            Ok(info)
        }
    }
}

/// Restores a domain saved without its disks from `file`: QEMU starts
/// with the saved definition and loads the memory, then runs (or stays
/// paused with `paused`, or when it was saved paused).
///
/// # Errors
/// Not a save file, the domain runs, or QEMU fails to load it.
pub async fn restore(layout: &Layout, file: &Path, paused: bool) -> Result<SaveInfo, SaveError> {
    let info = read_trailer(file)?;
    let domain = Domain::parse(&info.xml).map_err(|e| SaveError::Definition {
        path: file.display().to_string(),
        why: e.to_string(),
    })?;
    let d = QemuDomain::new(layout, &info.domain);
    if d.domain_state().await?.is_active() {
        return Err(RuntimeError::AlreadyRunning(info.domain.clone()).into());
    }
    let path = file.to_string_lossy().into_owned();
    d.start_with(
        &domain,
        StartMode {
            paused: true,
            incoming: true,
        },
        Some(&MemoryImage::File(path)),
        paused || !info.running,
    )
    .await?;
    Ok(info)
}
