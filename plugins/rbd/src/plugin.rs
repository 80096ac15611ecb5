//! The `rbd` plugin: virtsnap's driver for Ceph RBD images, written
//! against the plugin SDK like any third-party plugin. It takes network
//! volumes named `rbd:POOL/[NAMESPACE/]IMAGE[:OPTION=VALUE...]`
//! ([`crate::name`]) and declines everything else.
//!
//! - Snapshots are RBD snapshots (internal mode): create, list, rollback
//!   (newer snapshots are kept), remove; a checksum is a sha256 of the
//!   snapshot read through librbd, verified before a rollback.
//! - RBD snapshots are independent of each other, so deleting one never
//!   touches another's content: children in virtsnap's tree need no
//!   rebase.
//! - A snapshot that clones depend on is not deleted: the refusal names
//!   the clones, unless the delete asks to flatten them
//!   (`flatten_clones`, `vol-snapshot-delete --flatten-clones`) or the
//!   plugin's `clones` option is `flatten`. A protected snapshot without
//!   clones is unprotected and removed.
//! - A rollback is refused while another client has the image open (a
//!   running guest: librbd would take its exclusive lock away).
//! - Incremental export and import (ABI 1.1) write and read RBD's
//!   `export-diff` format ([`crate::diff`]), so files interchange with
//!   `rbd export-diff` / `rbd import-diff`.
//!
//! Options (the JSON file beside the library, `libvirtsnap_plugin_rbd.json`): `conf` and
//! `id`, the defaults for volumes whose name does not give them, and
//! `clones` (`refuse`, the default, or `flatten`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use plugin_abi::abi;
use plugin_abi::payload::{
    Capabilities, CapabilitiesRequest, Checksum, CreateRequest, CreatedSnapshot, DeleteRequest,
    ExportDiffRequest, ExportDiffResult, ImportDiffRequest, ImportDiffResult, ListRequest,
    ListResult, Mode, OpenConfig, RevertRequest, RevertResult, State, StorageSnapshot, UndoRequest,
    Volume,
};
use plugin_abi::sdk::{Call, Error, Plugin};
use sha2::{Digest as _, Sha256};

use crate::librbd::{self, ConnectOptions, Image, IoCtx, RbdError, SnapNamespace};
use crate::name::{self, NameError, RbdName};

/// Bytes read at once for checksums.
const CHUNK: usize = 4 << 20;

/// What to do with clones of a snapshot being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClonePolicy {
    /// Refuse, naming them.
    Refuse,
    /// Flatten them (they stop depending on it), then delete.
    Flatten,
}

/// The plugin instance: its options and one connection per cluster.
#[derive(Debug)]
pub struct RbdPlugin {
    defaults: ConnectOptions,
    clones: ClonePolicy,
    clusters: Mutex<HashMap<ConnectOptions, Arc<librbd::Cluster>>>,
}

/// A librbd error as the ABI's: the code by errno, the errno kept.
fn rbd_error(e: &RbdError, hint: &str) -> Error {
    let errno = e.errno();
    let code = match errno {
        2 => abi::E_NOT_FOUND,       // ENOENT
        17 => abi::E_EXISTS,         // EEXIST
        16 => abi::E_BUSY,           // EBUSY
        1 | 13 => abi::E_PERMISSION, // EPERM, EACCES
        28 | 122 => abi::E_NO_SPACE, // ENOSPC, EDQUOT
        22 => abi::E_INVALID_ARGUMENT,
        125 => abi::E_CANCELLED, // ECANCELED
        _ => abi::E_IO,
    };
    let mut message = e.to_string();
    if !hint.is_empty() {
        message.push_str("; ");
        message.push_str(hint);
    }
    Error {
        code,
        os_errno: errno,
        message,
    }
}

/// A librbd error under `code`: for `E_NOT_FOUND`, `text` names the
/// missing thing (the host adds "does not exist"); otherwise it follows
/// the error as what to do.
fn with_code(code: i32, e: &RbdError, text: &str) -> Error {
    let message = if code == abi::E_NOT_FOUND {
        text.to_string()
    } else {
        format!("{e}; {text}")
    };
    Error {
        code,
        os_errno: e.errno(),
        message,
    }
}

/// An error opening the image `name`: a missing image is named as such.
fn image_error(e: &RbdError, name: &RbdName) -> Error {
    if e.errno() == 2 {
        with_code(abi::E_NOT_FOUND, e, &format!("RBD image {}", name.spec()))
    } else {
        rbd_error(e, "")
    }
}

fn name_error(e: &NameError) -> Error {
    Error::invalid(e.to_string())
}

/// What a volume's name says, or the refusal for a volume that is not
/// ours.
fn rbd_volume(volume: &Volume) -> Result<RbdName, Error> {
    name::parse(&volume.path).map_err(|e| match e {
        NameError::NotRbd(_) => Error::unsupported(format!(
            "{} is not an RBD image; the rbd plugin takes rbd:POOL/IMAGE volumes",
            volume.path
        )),
        invalid @ NameError::Invalid { .. } => name_error(&invalid),
    })
}

fn check_mode(mode: Mode, what: &str) -> Result<(), Error> {
    if mode == Mode::Internal {
        Ok(())
    } else {
        Err(Error::unsupported(format!(
            "RBD keeps snapshots inside the image; cannot {what} a {} snapshot (use \
             --mode internal)",
            match mode {
                Mode::External => "external",
                _ => "copy",
            }
        )))
    }
}

impl RbdPlugin {
    /// The connection to the cluster `name` names (made once).
    fn cluster(&self, name: &RbdName) -> Result<Arc<librbd::Cluster>, Error> {
        let mut spec = name.cluster.clone();
        if spec.conf.is_none() && spec.mon_host.is_none() {
            spec.conf.clone_from(&self.defaults.conf);
        }
        if spec.id.is_none() {
            spec.id.clone_from(&self.defaults.id);
        }
        let mut clusters = self
            .clusters
            .lock()
            .map_err(|_| Error::internal("the connection table was poisoned by a panic"))?;
        if let Some(c) = clusters.get(&spec) {
            return Ok(Arc::clone(c));
        }
        let cluster = librbd::Cluster::connect(&spec).map_err(|e| {
            // Whatever its errno (a missing ceph.conf is ENOENT), a failed
            // connection is not a missing volume.
            with_code(
                abi::E_IO,
                &e,
                &format!(
                    "check that the cluster of {name} is up and that its ceph.conf ({}) and \
                     keyring let client.{} in",
                    spec.conf
                        .as_deref()
                        .map_or_else(|| "the default".to_string(), |c| c.display().to_string()),
                    spec.id.as_deref().unwrap_or("admin")
                ),
            )
        })?;
        let cluster = Arc::new(cluster);
        clusters.insert(spec, Arc::clone(&cluster));
        Ok(cluster)
    }

    fn ioctx(&self, name: &RbdName) -> Result<IoCtx, Error> {
        let cluster = self.cluster(name)?;
        cluster
            .ioctx(&name.pool, name.namespace.as_deref())
            .map_err(|e| match e.errno() {
                // The host adds "does not exist".
                2 => with_code(
                    abi::E_NOT_FOUND,
                    &e,
                    &format!("RBD pool '{}' (or namespace) of {name}", name.pool),
                ),
                _ => rbd_error(&e, ""),
            })
    }

    fn open(&self, name: &RbdName) -> Result<Image, Error> {
        self.ioctx(name)?
            .open(&name.image)
            .map_err(|e| match e.errno() {
                2 => with_code(abi::E_NOT_FOUND, &e, &format!("RBD image {}", name.spec())),
                _ => rbd_error(&e, ""),
            })
    }

    fn open_at(&self, name: &RbdName, snapshot: &str) -> Result<Image, Error> {
        self.ioctx(name)?
            .open_read_only(&name.image, Some(snapshot))
            .map_err(|e| rbd_error(&e, ""))
    }
}

/// The sha256 of `image`'s content (opened at a snapshot), reporting
/// progress; a caller that asks to stop gets `E_CANCELLED`.
fn digest(image: &Image, call: &Call<'_>) -> Result<String, Error> {
    let size = image.size().map_err(|e| rbd_error(&e, ""))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from((size - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
        let got = image
            .read(offset, &mut buf[..want])
            .map_err(|e| rbd_error(&e, ""))?;
        if got == 0 {
            return Err(Error::new(
                abi::E_IO,
                format!("short read at byte {offset} of {size} while checksumming"),
            ));
        }
        hasher.update(&buf[..got]);
        offset += got as u64;
        if !call.progress(offset, size) {
            return Err(Error::new(abi::E_CANCELLED, "checksum cancelled"));
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn validate_snapshot_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 255 || name.contains(['/', '@', '\0']) {
        return Err(Error::new(
            abi::E_INVALID_NAME,
            format!(
                "RBD cannot name a snapshot {name:?}: a snapshot name is 1 to 255 bytes \
                 without '/', '@' or NUL"
            ),
        ));
    }
    Ok(())
}

impl Plugin for RbdPlugin {
    const NAME: &'static std::ffi::CStr = c"rbd";
    const VERSION: &'static std::ffi::CStr = c"0.1.0";
    const DESCRIPTION: Option<&'static std::ffi::CStr> =
        Some(c"Ceph RBD image snapshots through librbd (rbd:POOL/IMAGE volumes)");
    const THREAD_MODEL: u32 = abi::THREAD_MODEL_SERIALIZE_INSTANCE;

    fn open(config: OpenConfig, _call: &Call<'_>) -> Result<Self, Error> {
        let mut defaults = ConnectOptions::default();
        let mut clones = ClonePolicy::Refuse;
        for (key, value) in &config.options {
            let text = value.as_str().ok_or_else(|| {
                Error::invalid(format!("option '{key}' must be a string, not {value}"))
            })?;
            match key.as_str() {
                "conf" => defaults.conf = Some(PathBuf::from(text)),
                "id" => defaults.id = Some(text.to_string()),
                "clones" => {
                    clones = match text {
                        "refuse" => ClonePolicy::Refuse,
                        "flatten" => ClonePolicy::Flatten,
                        other => {
                            return Err(Error::invalid(format!(
                                "option 'clones' is 'refuse' or 'flatten', not '{other}'"
                            )));
                        }
                    }
                }
                other => {
                    return Err(Error::invalid(format!(
                        "unknown option '{other}'; the rbd plugin knows conf, id and clones"
                    )));
                }
            }
        }
        // Fail here, with the reason, when librbd is not installed.
        librbd::Library::load().map_err(|e| rbd_error(&e, ""))?;
        Ok(Self {
            defaults,
            clones,
            clusters: Mutex::new(HashMap::new()),
        })
    }

    fn capabilities(
        &self,
        request: CapabilitiesRequest,
        _call: &Call<'_>,
    ) -> Result<Capabilities, Error> {
        let name = match name::parse(&request.volume.path) {
            Ok(name) => name,
            // Not an RBD volume: not ours.
            Err(NameError::NotRbd(_)) => return Ok(Capabilities::default()),
            // Ours, but malformed: say how.
            Err(invalid) => return Err(name_error(&invalid)),
        };
        // The image must exist: an error names it. A read-only open, the
        // cheapest check librbd has (no watch, no lock).
        self.ioctx(&name)?
            .open_read_only(&name.image, None)
            .map_err(|e| image_error(&e, &name))?;
        if request.state == State::InUse {
            // An image a running guest writes through its own librbd
            // client: a snapshot taken from here would be crash-consistent
            // (librbd asks the lock owner to flush), but nothing here has
            // been checked against a running guest yet, and a rollback
            // would pull the data from under it. Declared only when tested.
            return Ok(Capabilities::default());
        }
        Ok(Capabilities {
            internal: true,
            external: false,
            copy: false,
            revert: true,
            revert_keeps_newer: true,
            // RBD snapshots are independent: deleting one never changes
            // another's data, so children need no rebase.
            delete_rebase: true,
            list: true,
            checksums: true,
        })
    }

    fn create(&self, request: CreateRequest, call: &Call<'_>) -> Result<CreatedSnapshot, Error> {
        let name = rbd_volume(&request.volume)?;
        let plan = &request.plan;
        check_mode(plan.mode, "take")?;
        if plan.writable {
            return Err(Error::unsupported(
                "RBD snapshots are read-only; take the snapshot without --writable and clone \
                 it (rbd clone) for a writable image",
            ));
        }
        validate_snapshot_name(&plan.name)?;
        let image = self.open(&name)?;
        image.snap_create(&plan.name).map_err(|e| {
            rbd_error(
                &e,
                if e.errno() == 17 {
                    "choose another name or remove that snapshot first"
                } else {
                    ""
                },
            )
        })?;
        let checksum = if plan.checksum {
            let sum = self
                .open_at(&name, &plan.name)
                .and_then(|snap| digest(&snap, call));
            match sum {
                Ok(value) => Some(Checksum {
                    algorithm: "sha256".into(),
                    value,
                }),
                Err(e) => {
                    // Nothing is left behind.
                    if let Err(undo) = image.snap_remove(&plan.name) {
                        call.log(
                            abi::LOG_ERROR,
                            &format!("could not remove the new snapshot again: {undo}"),
                        );
                    }
                    return Err(e);
                }
            }
        } else {
            None
        };
        Ok(CreatedSnapshot {
            name: plan.name.clone(),
            mode: Mode::Internal,
            file: None,
            format: None,
            checksum,
            size: None,
        })
    }

    fn revert(&self, request: RevertRequest, call: &Call<'_>) -> Result<RevertResult, Error> {
        let name = rbd_volume(&request.volume)?;
        let snapshot = &request.snapshot;
        check_mode(snapshot.mode, "revert to")?;
        let image = self.open(&name)?;
        if !image
            .snap_exists(&snapshot.name)
            .map_err(|e| rbd_error(&e, ""))?
        {
            return Err(Error::new(
                abi::E_NOT_FOUND,
                format!("RBD snapshot {}@{}", name.spec(), snapshot.name),
            ));
        }
        let watchers = image.watchers().map_err(|e| rbd_error(&e, ""))?;
        // Our own open handle watches the image too.
        if watchers > 1 {
            return Err(Error::new(
                abi::E_BUSY,
                format!(
                    "{} is open by {} other client(s) (a running guest?); rolling it back \
                     would change data under them: stop them first",
                    name.spec(),
                    watchers - 1
                ),
            ));
        }
        if request.verify
            && let Some(recorded) = &snapshot.checksum
        {
            let found = digest(&self.open_at(&name, &snapshot.name)?, call)?;
            if found != recorded.value {
                return Err(Error::new(
                    abi::E_CHECKSUM_MISMATCH,
                    format!(
                        "found {found}, recorded {}: snapshot '{}' of {} is not what was \
                         taken; the image was not changed",
                        recorded.value,
                        snapshot.name,
                        name.spec()
                    ),
                ));
            }
        }
        // Once started, a rollback runs to the end: librbd stops a
        // cancelled one with part of the objects rolled back.
        image
            .snap_rollback_with_progress(&snapshot.name, |done, total| {
                let _ = call.progress(done, total);
                true
            })
            .map_err(|e| {
                rbd_error(
                    &e,
                    &format!(
                        "{} may hold part of the rollback: revert to '{}' again",
                        name.spec(),
                        snapshot.name
                    ),
                )
            })?;
        Ok(RevertResult::Done)
    }

    fn delete(&self, request: DeleteRequest, call: &Call<'_>) -> Result<(), Error> {
        let name = rbd_volume(&request.volume)?;
        check_mode(request.snapshot.mode, "delete")?;
        let flatten = request.flatten_clones || self.clones == ClonePolicy::Flatten;
        self.remove_snapshot(&name, &request.snapshot.name, flatten, call)
    }

    fn list(&self, request: ListRequest, _call: &Call<'_>) -> Result<ListResult, Error> {
        let name = rbd_volume(&request.volume)?;
        let image = self.open(&name)?;
        let snapshots = image
            .snap_list()
            .map_err(|e| rbd_error(&e, ""))?
            .into_iter()
            // Group snapshots' parts and trashed snapshots are not the
            // image's own snapshots.
            .filter(|s| s.namespace == SnapNamespace::User)
            .map(|s| StorageSnapshot {
                name: s.name,
                mode: Mode::Internal,
                id: Some(s.id.to_string()),
                file: None,
                created: s.timestamp,
                vm_state_size: 0,
                invalid: None,
            })
            .collect();
        Ok(ListResult { snapshots })
    }

    fn undo(&self, request: UndoRequest, call: &Call<'_>) -> Result<(), Error> {
        let name = rbd_volume(&request.volume)?;
        // Undoing a create: nothing can have been cloned from it yet.
        self.remove_snapshot(&name, &request.snapshot.name, false, call)
    }

    fn export_diff(
        &self,
        request: ExportDiffRequest,
        call: &Call<'_>,
    ) -> Result<ExportDiffResult, Error> {
        let name = rbd_volume(&request.volume)?;
        check_mode(request.snapshot.mode, "export")?;
        let path = Path::new(&request.file);
        let image = self.open_at(&name, &request.snapshot.name)?;
        let from = request.from.as_ref().map(|f| f.name.as_str());
        if let Some(f) = from
            && !self
                .open(&name)?
                .snap_exists(f)
                .map_err(|e| rbd_error(&e, ""))?
        {
            return Err(Error::new(
                abi::E_NOT_FOUND,
                format!("RBD snapshot {}@{f}", name.spec()),
            ));
        }
        let file = File::create_new(path)
            .map_err(|e| Error::io(&format!("creating {}", path.display()), &e))?;
        let written = (|| {
            let mut out = BufWriter::new(&file);
            let stats = crate::diff::export_diff(
                &image,
                &request.snapshot.name,
                from,
                &mut out,
                |done, total| {
                    let _ = call.progress(done, total);
                },
            )
            .map_err(|e| rbd_error(&e, ""))?;
            out.flush()
                .map_err(|e| Error::io(&format!("writing {}", path.display()), &e))?;
            drop(out);
            file.sync_all()
                .map_err(|e| Error::io(&format!("syncing {}", path.display()), &e))?;
            Ok(stats)
        })();
        match written {
            Ok(stats) => {
                let file_bytes = file
                    .metadata()
                    .map_err(|e| Error::io(&format!("reading {}", path.display()), &e))?
                    .len();
                Ok(ExportDiffResult {
                    file_bytes,
                    changed_bytes: stats.changed_bytes,
                })
            }
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    fn import_diff(
        &self,
        request: ImportDiffRequest,
        call: &Call<'_>,
    ) -> Result<ImportDiffResult, Error> {
        let name = rbd_volume(&request.volume)?;
        let path = Path::new(&request.file);
        let file =
            File::open(path).map_err(|e| Error::io(&format!("opening {}", path.display()), &e))?;
        let mut input = BufReader::new(file);
        // Checked whole before anything changes: a diff without an end
        // snapshot would change the image and record nothing.
        let summary = crate::diff::inspect(&mut input).map_err(|e| rbd_error(&e, ""))?;
        if summary.header.to.is_none() {
            return Err(Error::invalid(format!(
                "{} has no end snapshot (no 't' record): it was not written by an export of a \
                 snapshot, and importing it would change {} without recording anything",
                path.display(),
                name.spec()
            )));
        }
        input
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::io(&format!("reading {}", path.display()), &e))?;
        let mut image = self.open(&name)?;
        let stats = crate::diff::import_diff(&mut image, &mut input, |done, total| {
            let _ = call.progress(done, total);
        })
        .map_err(|e| {
            rbd_error(
                &e,
                &format!(
                    "nothing is recorded; {} may hold part of the changes until the import is \
                     run again",
                    name.spec()
                ),
            )
        })?;
        let snapshot = stats.to.ok_or_else(|| {
            Error::invalid(format!(
                "{} has no end snapshot record; it was not written by an export of a snapshot",
                path.display()
            ))
        })?;
        Ok(ImportDiffResult {
            snapshot,
            from: stats.from,
            size: stats.size,
        })
    }
}

impl RbdPlugin {
    /// Removes snapshot `snap` of `name`: refused while clones depend on
    /// it, unless `flatten` (then they are flattened first); a protected
    /// snapshot is unprotected.
    fn remove_snapshot(
        &self,
        name: &RbdName,
        snap: &str,
        flatten: bool,
        call: &Call<'_>,
    ) -> Result<(), Error> {
        let image = self.open(name)?;
        if !image.snap_exists(snap).map_err(|e| rbd_error(&e, ""))? {
            // Already gone: a delete is idempotent.
            return Ok(());
        }
        let clones = image.list_children(snap).map_err(|e| rbd_error(&e, ""))?;
        if !clones.is_empty() {
            let names: Vec<String> = clones
                .iter()
                .map(|c| {
                    let spec = match &c.namespace {
                        Some(ns) if !ns.is_empty() => format!("{}/{ns}/{}", c.pool, c.image),
                        _ => format!("{}/{}", c.pool, c.image),
                    };
                    if c.trash {
                        format!("{spec} (in the trash)")
                    } else {
                        spec
                    }
                })
                .collect();
            if !flatten || clones.iter().any(|c| c.trash) {
                return Err(Error::new(
                    abi::E_BUSY,
                    format!(
                        "snapshot '{snap}' of {} has clones that depend on it: {}; delete it \
                         with --flatten-clones to make them independent first, or flatten \
                         (rbd flatten) or remove them yourself (a clone in the trash: rbd \
                         trash rm) and delete it again; nothing was changed",
                        name.spec(),
                        names.join(", ")
                    ),
                ));
            }
            let cluster = self.cluster(name)?;
            for clone in &clones {
                call.log(
                    abi::LOG_INFO,
                    &format!("flattening clone {} of {}@{snap}", clone.image, name.spec()),
                );
                let ns = clone.namespace.as_deref().filter(|n| !n.is_empty());
                let child = cluster
                    .ioctx(&clone.pool, ns)
                    .and_then(|io| io.open(&clone.image))
                    .map_err(|e| rbd_error(&e, ""))?;
                child
                    .flatten()
                    .map_err(|e| rbd_error(&e, "the clone keeps depending on the snapshot"))?;
            }
        }
        if image
            .snap_is_protected(snap)
            .map_err(|e| rbd_error(&e, ""))?
        {
            image.snap_unprotect(snap).map_err(|e| rbd_error(&e, ""))?;
        }
        image.snap_remove(snap).map_err(|e| rbd_error(&e, ""))
    }
}

plugin_abi::export_plugin!(RbdPlugin {
    revert,
    list,
    undo,
    export_diff,
    import_diff
});
