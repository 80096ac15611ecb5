//! [`LvmDriver`]: the trait implementation (see the crate comment): which
//! volumes are logical volumes, how snapshots are named, and create,
//! revert (merge and take again), delete, list and undo with the LVM
//! tools.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use snapshot_core::driver::{
    Capabilities, Checksum, CreatedSnapshot, DeleteContext, DriverError, Progress, RevertOutcome,
    SnapshotMode, SnapshotPlan, SnapshotRef, StorageSnapshot, Volume, VolumeDriver, VolumeState,
};
use snapshot_core::files;

use crate::report::{self, LogicalVolume, lvm};
use crate::size::{SIZE_ENV, SizeError, SizePolicy};

/// The driver's kind.
const KIND: &str = "lvm";
/// The tag every snapshot this driver takes carries.
const TAG: &str = "virtsnap";
/// The checksum algorithm recorded and verified.
const SHA256: &str = "sha256";
/// Substrings LVM reserves for its hidden volumes.
const RESERVED: [&str; 15] = [
    "_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_mimage", "_mlog", "_pmspare", "_rimage",
    "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
];
/// The suffix of the new volume a thin revert renames to the origin's name.
const SWAP_NEW: &str = "virtsnap-revert";
/// The suffix of the old volume a thin revert removes last.
const SWAP_OLD: &str = "virtsnap-old";
/// The longest logical volume name LVM takes.
const NAME_MAX: usize = 127;
/// How long a merge may take to finish before a revert gives up waiting.
const MERGE_WAIT: Duration = Duration::from_secs(600);

/// Snapshots of LVM logical volumes (see the crate comment).
#[derive(Debug, Clone)]
pub struct LvmDriver {
    size: Result<SizePolicy, SizeError>,
}

impl Default for LvmDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl LvmDriver {
    /// The driver, classic snapshots getting [`SizePolicy::default`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            size: Ok(SizePolicy::default()),
        }
    }

    /// The driver, classic snapshots getting `size`.
    #[must_use]
    pub fn with_size(size: SizePolicy) -> Self {
        Self { size: Ok(size) }
    }

    /// The driver, classic snapshots getting the size in
    /// `$VIRTSNAP_LVM_SNAPSHOT_SIZE` ([`SIZE_ENV`]: `20%`, `512M`), or the
    /// default when it is unset. An invalid value makes classic snapshots
    /// fail with a message naming the variable, rather than taking a
    /// size nobody asked for.
    #[must_use]
    pub fn from_env() -> Self {
        match std::env::var(SIZE_ENV) {
            Ok(text) if !text.trim().is_empty() => Self { size: text.parse() },
            _ => Self::new(),
        }
    }

    /// The logical volume `volume` is, with all of its volume group (one
    /// `lvs`), or `None` when it is none.
    async fn group(
        volume: &Volume,
    ) -> Result<Option<(LogicalVolume, Vec<LogicalVolume>)>, DriverError> {
        let path = volume.path.clone();
        let names = tokio::task::spawn_blocking(move || is_logical_volume(&path))
            .await
            .map_err(|e| DriverError::Inconsistent(format!("the probe task failed: {e}")))?
            .map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    DriverError::NotFound {
                        what: format!("volume {}", volume.path.display()),
                    }
                } else {
                    DriverError::Io {
                        op: "examining",
                        path: volume.path.clone(),
                        source,
                    }
                }
            })?;
        let Some((vg, lv)) = names else {
            return Ok(None);
        };
        let all = report::lvs(&vg).await?;
        Ok(all
            .iter()
            .find(|v| v.name == lv)
            .cloned()
            .map(|origin| (origin, all)))
    }

    /// The logical volume `volume` is, or `None` when it is none.
    async fn logical_volume(volume: &Volume) -> Result<Option<LogicalVolume>, DriverError> {
        Ok(Self::group(volume).await?.map(|(origin, _)| origin))
    }

    /// The logical volume `volume` is and its volume group; a refusal
    /// naming `operation` when it is none.
    async fn origin_in_group(
        volume: &Volume,
        operation: &str,
    ) -> Result<(LogicalVolume, Vec<LogicalVolume>), DriverError> {
        Self::group(volume)
            .await?
            .ok_or_else(|| Self::not_lv(volume, operation))
    }

    /// The logical volume `volume` is; a refusal naming `operation` when
    /// it is none.
    async fn origin(volume: &Volume, operation: &str) -> Result<LogicalVolume, DriverError> {
        Ok(Self::origin_in_group(volume, operation).await?.0)
    }

    fn not_lv(volume: &Volume, operation: &str) -> DriverError {
        DriverError::Unsupported {
            driver: KIND,
            operation: operation.to_string(),
            volume: volume.path.display().to_string(),
            reason: "it is not an LVM logical volume".into(),
            hint: "name the volume by its device, /dev/VG/LV".into(),
        }
    }

    /// The volumes of `origin`'s group, and the snapshot `name` of it
    /// among them.
    async fn find(
        origin: &LogicalVolume,
        name: &str,
    ) -> Result<(Vec<LogicalVolume>, Option<LogicalVolume>), DriverError> {
        let all = report::lvs(&origin.vg).await?;
        let found = all.iter().find(|lv| lv.name == name).cloned();
        Ok((all, found))
    }

    /// Takes the snapshot `lv_name` of `origin`: classic with `cow` bytes
    /// of space, or thin when `origin` is thin. A failure removes what
    /// LVM left behind.
    async fn take(
        origin: &LogicalVolume,
        lv_name: &str,
        cow: Option<u64>,
        writable: bool,
    ) -> Result<(), DriverError> {
        let size = cow.map(|b| format!("{b}b"));
        let full = origin.full_name();
        let mut args = vec![
            "lvcreate",
            "--yes",
            "--snapshot",
            "--name",
            lv_name,
            "--addtag",
            TAG,
            "--permission",
        ];
        args.push(if writable { "rw" } else { "r" });
        if let Some(size) = &size {
            args.extend(["--size", size.as_str()]);
        }
        args.push(&full);
        if let Err(e) = lvm(&args).await {
            // LVM can fail half-way (a suspend refused) and leave the
            // snapshot's volume behind: it must go.
            let left = Self::find(origin, lv_name).await.ok().and_then(|(_, s)| s);
            if left.is_some() {
                let target = format!("{}/{lv_name}", origin.vg);
                if let Err(cleanup) = lvm(&["lvremove", "--yes", &target]).await {
                    return Err(DriverError::Inconsistent(format!(
                        "{e}; and removing the half-made snapshot {target} failed: {cleanup}; \
                         remove it with `lvremove {target}`"
                    )));
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// The sha256 of the snapshot volume `snap`'s content (activated
    /// first: thin snapshots skip activation).
    async fn hash(snap: &LogicalVolume) -> Result<String, DriverError> {
        if !snap.active {
            lvm(&[
                "lvchange",
                "--activate",
                "y",
                "--ignoreactivationskip",
                &snap.full_name(),
            ])
            .await?;
        }
        let device = snap.device();
        tokio::task::spawn_blocking(move || {
            File::open(&device)
                .and_then(|f| files::sha256(&f, &mut files::no_progress))
                .map_err(DriverError::io("hashing", &device))
        })
        .await
        .map_err(|e| DriverError::Inconsistent(format!("the hashing task failed: {e}")))?
    }

    /// Checks the snapshot volume `snap` (snapshot `name`) against its
    /// `recorded` checksum.
    async fn verify(
        snap: &LogicalVolume,
        name: &str,
        recorded: &Checksum,
    ) -> Result<(), DriverError> {
        let found = Self::hash(snap).await?;
        if found == recorded.value {
            return Ok(());
        }
        Err(DriverError::ChecksumMismatch {
            name: name.to_string(),
            file: snap.device(),
            algorithm: recorded.algorithm.clone(),
            expected: recorded.value.clone(),
            found,
        })
    }

    /// Reverts the thin volume `origin` to its thin snapshot `snap`
    /// without consuming it: a new thin snapshot of `snap` takes the
    /// origin's name (`ORIGIN.virtsnap-revert` renamed to `ORIGIN`, the old
    /// one renamed out of the way to `ORIGIN.virtsnap-old` first and
    /// removed last). Thin snapshots do not depend on each other, so the
    /// others stay as they are; a swap cut short by a crash is finished by
    /// [`LvmDriver::finish_swap`].
    async fn swap_in(
        origin: &LogicalVolume,
        snap: &LogicalVolume,
        all: &[LogicalVolume],
    ) -> Result<(), DriverError> {
        let (vg, name) = (&origin.vg, &origin.name);
        let new = format!("{name}.{SWAP_NEW}");
        let old = format!("{name}.{SWAP_OLD}");
        if all.iter().any(|lv| lv.name == new) {
            // Left by a revert cut short before the renames: scratch.
            lvm(&["lvremove", "--yes", &format!("{vg}/{new}")]).await?;
        }
        let mut args = vec![
            "lvcreate".to_string(),
            "--yes".into(),
            "--snapshot".into(),
            "--setactivationskip".into(),
            "n".into(),
            "--permission".into(),
            "rw".into(),
            "--name".into(),
            new.clone(),
        ];
        for tag in origin
            .tags
            .iter()
            .filter(|t| !t.starts_with("virtsnap_revert:"))
        {
            args.extend(["--addtag".to_string(), tag.clone()]);
        }
        args.push(snap.full_name());
        // Without activation skip, lvcreate activates it.
        lvm(&args.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        lvm(&["lvrename", vg, name, &old]).await?;
        lvm(&["lvrename", vg, &new, name]).await?;
        lvm(&["lvremove", "--yes", &format!("{vg}/{old}")]).await?;
        Ok(())
    }

    /// Finishes a thin revert ([`LvmDriver::swap_in`]) cut short by a
    /// crash, for the volume `/dev/VG/LV`: the new volume renamed to the
    /// volume's name if it has none, the old one removed.
    async fn finish_swap(volume: &Volume) -> Result<(), DriverError> {
        let mut parts = volume
            .path
            .strip_prefix("/dev")
            .ok()
            .into_iter()
            .flat_map(Path::components);
        let (Some(vg), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(());
        };
        let (vg, name) = (
            vg.as_os_str().to_string_lossy(),
            name.as_os_str().to_string_lossy(),
        );
        let new = format!("{name}.{SWAP_NEW}");
        let old = format!("{name}.{SWAP_OLD}");
        let Ok(all) = report::lvs(&vg).await else {
            // Not a volume group.
            return Ok(());
        };
        let has = |n: &str| all.iter().any(|lv| lv.name == n);
        if !has(&old) {
            return Ok(());
        }
        if !has(&name) {
            if !has(&new) {
                return Err(DriverError::Inconsistent(format!(
                    "{vg}/{name} is missing, and only {vg}/{old} (its state before an \
                     interrupted revert) is left; rename it back with `lvrename {vg} {old} {name}`"
                )));
            }
            lvm(&["lvrename", &vg, &new, &name]).await?;
        }
        lvm(&["lvremove", "--yes", &format!("{vg}/{old}")]).await?;
        Ok(())
    }

    /// Waits for the merge of `lv_name` into `origin` to finish (the
    /// snapshot's volume gone).
    async fn wait_merged(origin: &LogicalVolume, lv_name: &str) -> Result<(), DriverError> {
        let started = std::time::Instant::now();
        loop {
            if Self::find(origin, lv_name).await?.1.is_none() {
                return Ok(());
            }
            if started.elapsed() > MERGE_WAIT {
                return Err(DriverError::Inconsistent(format!(
                    "the merge of {}/{lv_name} into {} has not finished after {} s; \
                     check it with `lvs -a {}`, then revert again",
                    origin.vg,
                    origin.full_name(),
                    MERGE_WAIT.as_secs(),
                    origin.vg
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What a deferred revert says.
    fn deferred(origin: &LogicalVolume, snapshot: &str) -> RevertOutcome {
        let full = origin.full_name();
        RevertOutcome::Deferred {
            message: format!(
                "{full} is open (a mounted filesystem or a running guest), so LVM merges \
                 snapshot '{snapshot}' into it when it is next activated: close it, then run \
                 `lvchange -an {full} && lvchange -ay {full}`; the merge consumes the \
                 snapshot, so it is no longer listed"
            ),
        }
    }

    fn not_internal(volume: &Volume, operation: String) -> DriverError {
        DriverError::Unsupported {
            driver: KIND,
            operation,
            volume: volume.path.display().to_string(),
            reason: "LVM snapshots are logical volumes beside their origin".into(),
            hint: "use --mode internal".into(),
        }
    }
}

/// Whether `path` is the device of an LVM logical volume: a block device
/// whose device-mapper uuid is LVM's (`LVM-` and the two uuids, no
/// suffix: `-cow`, `-real` and `-tpool` devices are LVM's own).
fn is_logical_volume(path: &Path) -> io::Result<Option<(String, String)>> {
    let meta = fs::metadata(path)?;
    if !meta.file_type().is_block_device() {
        return Ok(None);
    }
    let rdev = meta.rdev();
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    let dm = format!("/sys/dev/block/{major}:{minor}/dm");
    let uuid = match fs::read_to_string(format!("{dm}/uuid")) {
        Ok(uuid) => uuid,
        // Not a device-mapper device.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let uuid = uuid.trim();
    if !uuid.starts_with("LVM-") || uuid[4..].contains('-') {
        return Ok(None);
    }
    Ok(split_dm_name(
        fs::read_to_string(format!("{dm}/name"))?.trim(),
    ))
}

/// `VG` and `LV` of LVM's device-mapper name `VG-LV`, in which a `-` of
/// either name is doubled.
fn split_dm_name(name: &str) -> Option<(String, String)> {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            if bytes.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let (vg, lv) = (&name[..i], &name[i + 1..]);
            return Some((vg.replace("--", "-"), lv.replace("--", "-")));
        }
        i += 1;
    }
    None
}

/// The logical volume holding snapshot `name` of the volume `origin`:
/// `ORIGIN.NAME`, checked against LVM's name rules.
fn snapshot_lv(origin: &str, name: &str) -> Result<String, DriverError> {
    let invalid = |reason: String| DriverError::InvalidName {
        driver: KIND,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '.' | '-')))
    {
        return Err(invalid(format!(
            "LVM names take letters, digits, '+', '_', '.' and '-', not {c:?}"
        )));
    }
    if name == SWAP_NEW || name == SWAP_OLD {
        return Err(invalid(format!(
            "virtsnap names its own volumes ORIGIN.{SWAP_NEW} and ORIGIN.{SWAP_OLD} during a revert"
        )));
    }
    let lv = format!("{origin}.{name}");
    if lv.len() > NAME_MAX {
        return Err(invalid(format!(
            "the snapshot's volume {lv} would be longer than LVM's {NAME_MAX} characters"
        )));
    }
    if let Some(r) = RESERVED.iter().find(|r| lv.contains(*r)) {
        return Err(invalid(format!(
            "LVM reserves {r:?} for its hidden volumes"
        )));
    }
    Ok(lv)
}

/// The tag an origin carries while the snapshot `lv_name` is merged into
/// it and taken again: how to take it again (`r`/`rw`, the classic
/// snapshot's bytes or `thin`).
fn revert_tag(lv_name: &str, writable: bool, cow: Option<u64>) -> String {
    let permission = if writable { "rw" } else { "r" };
    let space = cow.map_or_else(|| "thin".to_string(), |b| b.to_string());
    format!("virtsnap_revert:{permission}:{space}:{lv_name}")
}

/// The tag of [`revert_tag`] for `lv_name` on `origin`, read back.
fn pending_revert(origin: &LogicalVolume, lv_name: &str) -> Option<(bool, Option<u64>)> {
    origin.tags.iter().find_map(|tag| {
        let mut parts = tag.strip_prefix("virtsnap_revert:")?.splitn(3, ':');
        let writable = parts.next()? == "rw";
        let space = parts.next()?;
        (parts.next()? == lv_name).then_some(())?;
        let cow = if space == "thin" {
            None
        } else {
            Some(space.parse().ok()?)
        };
        Some((writable, cow))
    })
}

fn done(progress: Option<&Progress>) {
    if let Some(p) = progress {
        p(1, 1);
    }
}

#[async_trait]
impl VolumeDriver for LvmDriver {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn capabilities(
        &self,
        volume: &Volume,
        state: VolumeState,
    ) -> Result<Capabilities, DriverError> {
        // Only a block device can be a logical volume; the LVM tools are
        // not run for anything else (nor needed: a host without them has
        // no logical volumes).
        let Some(lv) = Self::logical_volume(volume).await? else {
            return Ok(Capabilities::default());
        };
        // Snapshots of a classic snapshot, and of LVM's own volumes, are
        // not possible; a volume a guest writes to is its hypervisor's.
        let origin_kind =
            lv.is_thin() || matches!(lv.attr_char(0), '-' | 'o' | 'O' | 'r' | 'R' | 'm' | 'M');
        if state == VolumeState::InUse || !origin_kind {
            return Ok(Capabilities::default());
        }
        Ok(Capabilities {
            internal: true,
            revert: true,
            revert_keeps_newer: true,
            // LVM snapshots are independent of each other.
            delete_rebase: true,
            list: true,
            checksums: true,
            ..Capabilities::default()
        })
    }

    async fn create(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
        progress: Option<&Progress>,
    ) -> Result<CreatedSnapshot, DriverError> {
        if plan.mode != SnapshotMode::Internal {
            return Err(Self::not_internal(
                volume,
                format!("take a {} snapshot", plan.mode),
            ));
        }
        let origin = Self::origin(volume, "take a snapshot").await?;
        let lv_name = snapshot_lv(&origin.name, &plan.name)?;
        if origin.has_merging_snapshot() {
            return Err(DriverError::Unsupported {
                driver: KIND,
                operation: format!("take snapshot '{}'", plan.name),
                volume: volume.path.display().to_string(),
                reason: format!(
                    "a snapshot is merging into {} (a deferred revert)",
                    origin.full_name()
                ),
                hint: format!(
                    "let the merge finish: close the volume, then `lvchange -an {0} && lvchange -ay {0}`",
                    origin.full_name()
                ),
            });
        }
        if Self::find(&origin, &lv_name).await?.1.is_some() {
            return Err(DriverError::Exists {
                what: format!("logical volume {}/{lv_name}", origin.vg),
            });
        }
        let cow = if origin.is_thin() {
            None
        } else {
            let policy = self.size.clone().map_err(|e| DriverError::Unsupported {
                driver: KIND,
                operation: format!("take snapshot '{}'", plan.name),
                volume: volume.path.display().to_string(),
                reason: format!("${SIZE_ENV}: {e}"),
                hint: format!("fix or unset {SIZE_ENV}"),
            })?;
            Some(policy.bytes_for(origin.size, origin.extent_size))
        };
        // Never freeze the filesystem first: LVM suspends (and so freezes)
        // the device itself, and a freeze held already makes that fail.
        Self::take(&origin, &lv_name, cow, plan.writable).await?;
        let snap = Self::find(&origin, &lv_name).await?.1.ok_or_else(|| {
            DriverError::Inconsistent(format!(
                "lvcreate reported {}/{lv_name} created, but lvs does not list it",
                origin.vg
            ))
        })?;
        let checksum = if plan.checksum {
            match Self::hash(&snap).await {
                Ok(value) => Some(Checksum {
                    algorithm: SHA256.into(),
                    value,
                }),
                Err(e) => {
                    let _ = lvm(&["lvremove", "--yes", &snap.full_name()]).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        done(progress);
        Ok(CreatedSnapshot {
            name: plan.name.clone(),
            mode: SnapshotMode::Internal,
            file: None,
            format: None,
            checksum,
            size: cow,
        })
    }

    async fn revert(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        verify: bool,
        progress: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError> {
        if snapshot.mode != SnapshotMode::Internal {
            return Err(Self::not_internal(
                volume,
                format!(
                    "revert to the {} snapshot '{}'",
                    snapshot.mode, snapshot.name
                ),
            ));
        }
        let (origin, all) = match Self::origin_in_group(volume, "revert").await {
            // Nothing at the volume's path: a thin revert cut short
            // between its renames, finished now.
            Err(DriverError::NotFound { .. }) => {
                Self::finish_swap(volume).await?;
                Self::origin_in_group(volume, "revert").await?
            }
            other => other?,
        };
        let old = format!("{}.{SWAP_OLD}", origin.name);
        if all.iter().any(|lv| lv.name == old) {
            // A thin revert cut short before it removed the old state.
            lvm(&["lvremove", "--yes", &format!("{}/{old}", origin.vg)]).await?;
        }
        let lv_name = snapshot_lv(&origin.name, &snapshot.name)?;
        let found = all.iter().find(|lv| lv.name == lv_name).cloned();
        if origin.is_thin()
            && pending_revert(&origin, &lv_name).is_none()
            && let Some(snap) = &found
            && !snap.merging
        {
            if verify && let Some(recorded) = &snapshot.checksum {
                Self::verify(snap, &snapshot.name, recorded).await?;
            }
            if !origin.open {
                Self::swap_in(&origin, snap, &all).await?;
                done(progress);
                return Ok(RevertOutcome::Done);
            }
            // Open: only a merge, deferred to the next activation, can
            // bring the snapshot back, and LVM merges a thin snapshot
            // only into the volume it was taken of.
            if snap.origin != origin.name {
                return Err(DriverError::InUse {
                    path: volume.path.clone(),
                    operation: format!(
                        "revert to snapshot '{}' (taken before an earlier revert, so LVM \
                         cannot merge it into the open volume)",
                        snapshot.name
                    ),
                });
            }
        }
        let (writable, cow) = match (&found, pending_revert(&origin, &lv_name)) {
            // A revert cut short: the merge was started (it finishes by
            // itself) and the snapshot is taken again after it.
            (None | Some(LogicalVolume { merging: true, .. }), Some(pending)) => pending,
            (None, None) => {
                return Err(DriverError::NotFound {
                    what: format!(
                        "snapshot '{}' of {} (logical volume {}/{lv_name})",
                        snapshot.name,
                        origin.full_name(),
                        origin.vg
                    ),
                });
            }
            (Some(snap), _) => {
                if snap.invalid {
                    return Err(DriverError::Inconsistent(format!(
                        "snapshot '{}' ({}) overflowed its {} bytes of copy-on-write space and \
                         is invalid: its data is lost and the volume was not changed; delete it \
                         (and give classic snapshots more space: {SIZE_ENV})",
                        snapshot.name,
                        snap.full_name(),
                        snap.size
                    )));
                }
                if snap.merging {
                    return Ok(Self::deferred(&origin, &snapshot.name));
                }
                if verify && let Some(recorded) = &snapshot.checksum {
                    Self::verify(snap, &snapshot.name, recorded).await?;
                }
                let cow = snap.is_classic_snapshot().then_some(snap.size);
                let writable = snap.writable();
                if origin.open {
                    lvm(&["lvconvert", "--merge", "--yes", &snap.full_name()]).await?;
                    return Ok(Self::deferred(&origin, &snapshot.name));
                }
                let tag = revert_tag(&lv_name, writable, cow);
                lvm(&["lvchange", "--addtag", &tag, &origin.full_name()]).await?;
                lvm(&[
                    "lvconvert",
                    "--merge",
                    "--yes",
                    "--interval",
                    "1",
                    &snap.full_name(),
                ])
                .await?;
                (writable, cow)
            }
        };
        let (origin, all) = Self::origin_in_group(volume, "revert").await?;
        if all.iter().any(|lv| lv.name == lv_name) {
            if origin.open {
                // Opened since: LVM merges on its next activation.
                return Ok(Self::deferred(&origin, &snapshot.name));
            }
            Self::wait_merged(&origin, &lv_name).await?;
        }
        // The origin holds the snapshot's content now: taking the snapshot
        // again keeps it, as every other driver's revert does.
        Self::take(&origin, &lv_name, cow, writable).await?;
        lvm(&[
            "lvchange",
            "--deltag",
            &revert_tag(&lv_name, writable, cow),
            &origin.full_name(),
        ])
        .await?;
        done(progress);
        Ok(RevertOutcome::Done)
    }

    async fn delete(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        _context: &DeleteContext,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        if snapshot.mode != SnapshotMode::Internal {
            return Err(Self::not_internal(
                volume,
                format!("delete the {} snapshot '{}'", snapshot.mode, snapshot.name),
            ));
        }
        let origin = Self::origin(volume, "delete a snapshot").await?;
        let lv_name = snapshot_lv(&origin.name, &snapshot.name)?;
        match Self::find(&origin, &lv_name).await?.1 {
            // Deleted already (a delete cut short, run again).
            None => {}
            Some(snap) if snap.merging => {
                return Err(DriverError::Unsupported {
                    driver: KIND,
                    operation: format!("delete snapshot '{}'", snapshot.name),
                    volume: volume.path.display().to_string(),
                    reason: format!(
                        "it is merging into {} (a deferred revert)",
                        origin.full_name()
                    ),
                    hint: "it disappears by itself when the merge finishes".into(),
                });
            }
            Some(snap) => {
                lvm(&["lvremove", "--yes", &snap.full_name()]).await?;
            }
        }
        done(progress);
        Ok(())
    }

    async fn list(&self, volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
        let origin = Self::origin(volume, "list snapshots").await?;
        let prefix = format!("{}.", origin.name);
        let mut found: Vec<StorageSnapshot> = report::lvs(&origin.vg)
            .await?
            .into_iter()
            .filter(|lv| !lv.merging)
            .filter_map(|lv| {
                let ours = lv
                    .has_tag(TAG)
                    .then(|| lv.name.strip_prefix(&prefix))
                    .flatten();
                // Snapshots taken by hand are listed by their volume's name.
                let name = match ours {
                    Some(n) => n.to_string(),
                    None if lv.origin == origin.name => lv.name.clone(),
                    None => return None,
                };
                Some(StorageSnapshot {
                    name,
                    mode: SnapshotMode::Internal,
                    id: Some(lv.full_name()),
                    file: None,
                    created: lv.time,
                    vm_state_size: 0,
                    invalid: lv.invalid.then(|| {
                        format!(
                            "it overflowed its {} bytes of copy-on-write space: its data is lost",
                            lv.size
                        )
                    }),
                })
            })
            .collect();
        found.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        Ok(found)
    }

    async fn undo(&self, volume: &Volume, created: &CreatedSnapshot) -> Result<(), DriverError> {
        let origin = Self::origin(volume, "undo a snapshot").await?;
        let lv_name = snapshot_lv(&origin.name, &created.name)?;
        if let Some(snap) = Self::find(&origin, &lv_name).await?.1 {
            lvm(&["lvremove", "--yes", &snap.full_name()]).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_volumes_are_named_beside_their_origin() {
        assert_eq!(
            snapshot_lv("root", "before-upgrade").ok(),
            Some("root.before-upgrade".into())
        );
        assert_eq!(
            snapshot_lv("data", "v1.2+b_3").ok(),
            Some("data.v1.2+b_3".into())
        );
    }

    #[test]
    fn names_lvm_cannot_take_are_refused_with_the_rule() {
        for (bad, why) in [
            ("", "empty"),
            ("a b", "not ' '"),
            ("é", "not 'é'"),
            ("a/b", "not '/'"),
            ("x_tmeta", "_tmeta"),
            ("_rimage_0", "_rimage"),
        ] {
            let err = snapshot_lv("vol", bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let long = "n".repeat(NAME_MAX);
        assert!(
            snapshot_lv("vol", &long)
                .unwrap_err()
                .to_string()
                .contains("127")
        );
    }

    #[test]
    fn a_pending_revert_is_read_back_from_its_tag() {
        let mut origin = report::parse_lvs(
            r#"{"report":[{"lv":[{"vg_name":"vg0", "lv_name":"o", "lv_attr":"owi-a-s---", "origin":"", "pool_lv":"", "lv_size":"8388608", "segtype":"linear", "lv_tags":"", "lv_time":"1", "snap_percent":"", "lv_device_open":"", "lv_merging":"", "lv_snapshot_invalid":"unknown", "vg_extent_size":"1048576", "lv_active":"active"}]}]}"#,
        )
        .expect("report")
        .remove(0);
        assert_eq!(pending_revert(&origin, "o.s"), None);
        origin.tags = vec![
            revert_tag("o.s", false, Some(4 << 20)),
            revert_tag("o.t", true, None),
        ];
        assert_eq!(origin.tags[0], "virtsnap_revert:r:4194304:o.s");
        assert_eq!(pending_revert(&origin, "o.s"), Some((false, Some(4 << 20))));
        assert_eq!(pending_revert(&origin, "o.t"), Some((true, None)));
        assert_eq!(pending_revert(&origin, "o"), None);
    }

    #[test]
    fn device_mapper_names_split_into_group_and_volume() {
        let split = |n: &str| split_dm_name(n);
        assert_eq!(split("vg0-root"), Some(("vg0".into(), "root".into())));
        assert_eq!(
            split("my--vg-thin--chain--7.s01"),
            Some(("my-vg".into(), "thin-chain-7.s01".into()))
        );
        assert_eq!(split("vg-a-b"), Some(("vg".into(), "a-b".into())));
        assert_eq!(split("nodash"), None);
    }

    #[test]
    fn only_block_devices_of_lvm_are_logical_volumes() {
        assert!(
            is_logical_volume(Path::new("/dev/null"))
                .expect("a character device")
                .is_none()
        );
        let dir = std::env::temp_dir();
        assert!(is_logical_volume(&dir).expect("a directory").is_none());
        assert_eq!(
            is_logical_volume(Path::new("/nonexistent/lv"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
