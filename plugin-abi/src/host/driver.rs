//! [`PluginDriver`]: a loaded plugin's instance as a
//! [`VolumeDriver`]. Each operation becomes a request document; the call
//! runs on a blocking worker thread under the lock the plugin's thread
//! model asks for, never on the async runtime; the result is parsed and
//! checked against the request before the caller sees it. A plugin that
//! breaks the ABI (a malformed, missing or contradictory result, a code
//! the ABI does not define, a panic) gives [`DriverError::PluginFault`],
//! never success.
//!
//! Network volumes (ABI 1.1): a plugin may be asked about any volume
//! ([`VolumeDriver::handles`] is always true: the plugin decides). A
//! request about a network volume requires the feature `network-volume`;
//! a plugin that refuses such a volume in `capabilities` with
//! `E_UNSUPPORTED` (a 1.0 plugin, which cannot know the feature, or one
//! for another protocol) declines it: all capabilities false.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::driver::{
    Capabilities, CreatedSnapshot, DeleteContext, DriverError, ExportedDiff, ImportedDiff,
    Progress, RevertOutcome, SnapshotMode, SnapshotPlan, SnapshotRef, StorageSnapshot, Volume,
    VolumeDriver, VolumeState,
};

use crate::abi;
use crate::convert::{self, NotUtf8};
use crate::payload as doc;

use super::ffi::{Instance, RawOutcome, Slot};
use super::loader::{Plugin, ThreadModel};

/// A plugin instance driving storage (see the module comment).
#[derive(Debug, Clone)]
pub struct PluginDriver {
    plugin: Arc<Plugin>,
    instance: Arc<InstanceCell>,
}

#[derive(Debug)]
struct InstanceCell {
    instance: Instance,
    /// Held for every call when the plugin serialises per instance.
    lock: Mutex<()>,
}

/// Why an instance could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin '{plugin}' ({}) cannot start: {message}", path.display())]
pub struct OpenError {
    /// The plugin's name.
    pub plugin: String,
    /// Its library.
    pub path: std::path::PathBuf,
    /// Why.
    pub message: String,
}

impl PluginDriver {
    /// Opens an instance of `plugin`, with the options in the JSON file
    /// beside its library (`NAME.so` -> `NAME.json`), if there is one.
    ///
    /// # Errors
    /// The options file is not a JSON object, or the plugin's `open`
    /// failed.
    pub fn open(plugin: Arc<Plugin>) -> Result<Self, OpenError> {
        let options_file = plugin.path.with_extension("json");
        let options = match std::fs::read(&options_file) {
            Ok(bytes) => {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
                    .map_err(|e| OpenError {
                        plugin: plugin.name.to_string(),
                        path: plugin.path.clone(),
                        message: format!(
                            "its options file {} is not a JSON object: {e}",
                            options_file.display()
                        ),
                    })?
            }
            Err(_) => serde_json::Map::new(),
        };
        Self::open_with(plugin, options)
    }

    /// Opens an instance of `plugin` with `options`.
    ///
    /// # Errors
    /// The plugin's `open` failed.
    pub fn open_with(
        plugin: Arc<Plugin>,
        options: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, OpenError> {
        let config = doc::OpenConfig {
            host_version: env!("CARGO_PKG_VERSION").to_string(),
            options,
        };
        let bytes = serde_json::to_vec(&config).unwrap_or_default();
        let opened = {
            let _serial = plugin
                .serial
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            plugin.table.open(&bytes)
        };
        let instance = opened.map_err(|outcome| OpenError {
            plugin: plugin.name.to_string(),
            path: plugin.path.clone(),
            message: outcome.error.map_or_else(
                || "its open returned NULL without saying why".to_string(),
                |(code, errno, message)| {
                    let os = if errno > 0 {
                        format!(" ({})", std::io::Error::from_raw_os_error(errno))
                    } else {
                        String::new()
                    };
                    format!(
                        "{message}{os} [{}]",
                        abi::error_name(code).unwrap_or("unknown")
                    )
                },
            ),
        })?;
        Ok(Self {
            plugin,
            instance: Arc::new(InstanceCell {
                instance,
                lock: Mutex::new(()),
            }),
        })
    }

    /// The plugin it drives.
    #[must_use]
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    fn fault(&self, operation: &str, problem: impl Into<String>) -> DriverError {
        DriverError::PluginFault {
            plugin: self.plugin.name.to_string(),
            operation: operation.to_string(),
            problem: problem.into(),
        }
    }

    fn not_utf8(&self, e: &NotUtf8, operation: &str, volume: &Volume) -> DriverError {
        DriverError::Unsupported {
            driver: self.plugin.name,
            operation: operation.to_string(),
            volume: volume.path.display().to_string(),
            reason: e.to_string(),
            hint: "use a path that is valid UTF-8".to_string(),
        }
    }

    fn missing(&self, slot: Slot, operation: &str, volume: &Volume) -> DriverError {
        DriverError::Unsupported {
            driver: self.plugin.name,
            operation: operation.to_string(),
            volume: volume.path.display().to_string(),
            reason: format!(
                "plugin '{}' {} has no {} operation",
                self.plugin.name,
                self.plugin.version,
                slot.name()
            ),
            hint: "use another driver, or a version of the plugin that has it".to_string(),
        }
    }

    /// Runs `slot` with `request` on a blocking thread and returns the
    /// raw outcome.
    async fn raw(
        &self,
        slot: Slot,
        operation: &str,
        request: Vec<u8>,
        progress: Option<&Progress>,
    ) -> Result<RawOutcome, DriverError> {
        let plugin = Arc::clone(&self.plugin);
        let cell = Arc::clone(&self.instance);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        let mut handle = tokio::task::spawn_blocking(move || {
            let _all = (plugin.thread_model == ThreadModel::SerializeAll).then(|| {
                plugin
                    .serial
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            });
            let _one = (plugin.thread_model == ThreadModel::SerializeInstance).then(|| {
                cell.lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            });
            // A dropped receiver (the caller gave up) asks the plugin to stop.
            let forward = move |done: u64, total: u64| tx.send((done, total)).is_ok();
            plugin
                .table
                .call(slot, &cell.instance, &request, Some(&forward))
        });
        let joined = loop {
            tokio::select! {
                joined = &mut handle => break joined,
                Some((done, total)) = rx.recv() => {
                    if let Some(p) = progress {
                        p(done, total);
                    }
                }
            }
        };
        while let Ok((done, total)) = rx.try_recv() {
            if let Some(p) = progress {
                p(done, total);
            }
        }
        let outcome = joined.map_err(|e| self.fault(operation, format!("its call died: {e}")))?;
        for (level, line) in &outcome.as_ref().map_or(&[][..], |o| &o.log[..]).to_vec() {
            log_line(self.plugin.name, *level, line);
        }
        outcome.ok_or_else(|| self.fault(operation, format!("it has no {} operation", slot.name())))
    }

    /// Runs `slot` and interprets the outcome: `Ok(Some(bytes))` for a
    /// success with a result, `Ok(None)` for one without.
    async fn call(
        &self,
        slot: Slot,
        operation: &str,
        volume: &Volume,
        request: &impl Serialize,
        progress: Option<&Progress>,
    ) -> Result<Option<Vec<u8>>, DriverError> {
        if !self.plugin.has(slot) {
            return Err(self.missing(slot, operation, volume));
        }
        let bytes =
            serde_json::to_vec(request).map_err(|e| self.fault(operation, e.to_string()))?;
        let outcome = self.raw(slot, operation, bytes, progress).await?;
        if let Some(violation) = outcome.violation {
            return Err(self.fault(operation, violation));
        }
        match outcome.rc {
            abi::OK => {
                if let Some((code, _, message)) = outcome.error {
                    return Err(self.fault(
                        operation,
                        format!(
                            "it returned success after reporting an error ({message} [{}])",
                            abi::error_name(code).unwrap_or("unknown code")
                        ),
                    ));
                }
                Ok(outcome.wrote.then_some(outcome.result))
            }
            rc if rc > 0 => Err(self.fault(
                operation,
                format!("it returned {rc}, which is not a return code of the plugin ABI (0 or a negative VIRTSNAP_E_*)"),
            )),
            rc => Err(self.error(operation, volume, rc, outcome.error)),
        }
    }

    /// The error for a negative return code.
    fn error(
        &self,
        operation: &str,
        volume: &Volume,
        rc: i32,
        error: Option<(i32, i32, String)>,
    ) -> DriverError {
        let error_given = error.as_ref().is_some_and(|(_, _, m)| !m.is_empty());
        let (message, errno) = match error {
            Some((_, errno, message)) => (message, errno),
            None => (
                format!(
                    "it failed with code {rc} ({}) without a message",
                    abi::error_name(rc).unwrap_or("unknown")
                ),
                0,
            ),
        };
        let names_a_thing = rc == abi::E_NOT_FOUND || rc == abi::E_EXISTS;
        let message = if errno > 0 && !names_a_thing {
            format!("{message} ({})", std::io::Error::from_raw_os_error(errno))
        } else {
            message
        };
        let plugin = self.plugin.name;
        let said = error_given;
        match rc {
            abi::E_UNSUPPORTED => DriverError::Unsupported {
                driver: plugin,
                operation: operation.to_string(),
                volume: volume.path.display().to_string(),
                reason: message,
                // The volume is named already (and the matrix's notes
                // must not change with temporary paths).
                hint: "`virtsnap plugin-list --volume VOLUME` shows what it takes".to_string(),
            },
            abi::E_NOT_FOUND => DriverError::NotFound { what: message },
            abi::E_EXISTS => DriverError::Exists { what: message },
            abi::E_NO_SPACE => DriverError::NoSpace {
                path: volume.path.clone(),
            },
            // A plugin's own reason (clones that depend on a snapshot,
            // another client holding the image) says more than the
            // generic message.
            abi::E_BUSY if said => DriverError::Plugin {
                plugin: plugin.to_string(),
                operation: operation.to_string(),
                code: "busy".to_string(),
                message,
            },
            abi::E_BUSY => DriverError::InUse {
                path: volume.path.clone(),
                operation: operation.to_string(),
            },
            abi::E_INCONSISTENT => DriverError::Inconsistent(format!(
                "plugin '{plugin}' could not {operation}: {message}"
            )),
            abi::E_PANIC => self.fault(operation, format!("it panicked: {message}")),
            code => match abi::error_name(code) {
                Some(name) => DriverError::Plugin {
                    plugin: plugin.to_string(),
                    operation: operation.to_string(),
                    code: name.to_string(),
                    message,
                },
                None => self.fault(
                    operation,
                    format!("it returned {code}, which is not a code of the plugin ABI: {message}"),
                ),
            },
        }
    }

    fn parse<T: DeserializeOwned>(
        &self,
        operation: &str,
        bytes: Option<Vec<u8>>,
    ) -> Result<T, DriverError> {
        let bytes =
            bytes.ok_or_else(|| self.fault(operation, "it returned success without a result"))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| self.fault(operation, format!("its result is not UTF-8 ({e})")))?;
        serde_json::from_str(text).map_err(|e| {
            let start: String = text.chars().take(80).collect();
            self.fault(
                operation,
                format!("its result is not the documented JSON ({e}): {start:?}"),
            )
        })
    }
}

fn log_line(plugin: &str, level: i32, line: &str) {
    match level {
        abi::LOG_ERROR => tracing::error!(plugin, "{line}"),
        abi::LOG_WARN => tracing::warn!(plugin, "{line}"),
        abi::LOG_INFO => tracing::info!(plugin, "{line}"),
        _ => tracing::debug!(plugin, "{line}"),
    }
}

/// A plugin's `checksum-mismatch` as the driver error callers match on:
/// the snapshot, its file and the recorded sum are the request's; the
/// digest found is the 64-hex word of the plugin's message, if it has one.
fn checksum_mismatch(e: DriverError, snapshot: &SnapshotRef) -> DriverError {
    match e {
        DriverError::Plugin { code, message, .. } if code == "checksum-mismatch" => {
            let (algorithm, expected) = snapshot.checksum.as_ref().map_or_else(
                || ("sha256".to_string(), "(none recorded)".to_string()),
                |c| (c.algorithm.clone(), c.value.clone()),
            );
            let found = message
                .split(|c: char| !c.is_ascii_hexdigit())
                .find(|w| w.len() == 64 && *w != expected)
                .map_or_else(|| format!("(the plugin says: {message})"), str::to_string);
            DriverError::ChecksumMismatch {
                name: snapshot.name.clone(),
                file: snapshot.file.clone().unwrap_or_default(),
                algorithm,
                expected,
                found,
            }
        }
        other => other,
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The features a request about `volume` requires: `network-volume` for a
/// network volume (its path is a name, not an absolute path), none
/// otherwise.
fn requires(volume: &Volume) -> Vec<String> {
    if volume.is_network() {
        vec![doc::FEATURE_NETWORK_VOLUME.to_string()]
    } else {
        Vec::new()
    }
}

#[async_trait]
impl VolumeDriver for PluginDriver {
    fn kind(&self) -> &'static str {
        self.plugin.name
    }

    /// Every volume: the plugin decides (`capabilities` declines what it
    /// does not take, network volumes of other protocols included).
    fn handles(&self, _volume: &Volume) -> bool {
        true
    }

    async fn capabilities(
        &self,
        volume: &Volume,
        state: VolumeState,
    ) -> Result<Capabilities, DriverError> {
        const OP: &str = "examine a volume";
        let request = doc::CapabilitiesRequest {
            requires: requires(volume),
            volume: convert::volume_to_doc(volume).map_err(|e| self.not_utf8(&e, OP, volume))?,
            state: convert::state_to_doc(state),
        };
        let bytes = match self
            .call(Slot::Capabilities, OP, volume, &request, None)
            .await
        {
            // A plugin that refuses a network volume declines it (a 1.0
            // plugin does not know the feature it requires).
            Err(DriverError::Unsupported { reason, .. }) if volume.is_network() => {
                tracing::debug!(
                    plugin = self.plugin.name,
                    volume = %volume.path.display(),
                    "declines the network volume: {reason}"
                );
                return Ok(Capabilities::default());
            }
            other => other?,
        };
        let caps: doc::Capabilities = self.parse(OP, bytes)?;
        let mut caps = convert::caps_from_doc(&caps);
        // A capability without its slot is not one: degrade, never pretend.
        caps.revert &= self.plugin.has(Slot::Revert);
        caps.revert_keeps_newer &= caps.revert;
        caps.list &= self.plugin.has(Slot::List);
        Ok(caps)
    }

    async fn create(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
        progress: Option<&Progress>,
    ) -> Result<CreatedSnapshot, DriverError> {
        let op = match plan.mode {
            SnapshotMode::Internal => "take an internal snapshot",
            SnapshotMode::External => "take an external snapshot",
            SnapshotMode::Copy => "take a copy snapshot",
        };
        let request = doc::CreateRequest {
            requires: requires(volume),
            volume: convert::volume_to_doc(volume).map_err(|e| self.not_utf8(&e, op, volume))?,
            plan: convert::plan_to_doc(plan).map_err(|e| self.not_utf8(&e, op, volume))?,
        };
        let bytes = self
            .call(Slot::Create, op, volume, &request, progress)
            .await?;
        let created: doc::CreatedSnapshot = self.parse(op, bytes)?;
        let created = convert::created_from_doc(&created);
        let expected = (&plan.name, plan.mode, plan.file.as_ref());
        let got = (&created.name, created.mode, created.file.as_ref());
        if expected != got {
            return Err(self.fault(
                op,
                format!(
                    "it reports snapshot '{}' ({}, file {}) but was asked for '{}' ({}, file {}); \
                     check the storage for a snapshot virtsnap does not know",
                    created.name,
                    created.mode,
                    created
                        .file
                        .as_deref()
                        .map_or_else(|| "none".into(), path_str),
                    plan.name,
                    plan.mode,
                    plan.file.as_deref().map_or_else(|| "none".into(), path_str),
                ),
            ));
        }
        Ok(created)
    }

    async fn revert(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        verify: bool,
        progress: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError> {
        let op = format!("revert to snapshot '{}'", snapshot.name);
        let request = doc::RevertRequest {
            requires: requires(volume),
            volume: convert::volume_to_doc(volume).map_err(|e| self.not_utf8(&e, &op, volume))?,
            snapshot: convert::ref_to_doc(snapshot).map_err(|e| self.not_utf8(&e, &op, volume))?,
            verify,
        };
        let bytes = self
            .call(Slot::Revert, &op, volume, &request, progress)
            .await
            .map_err(|e| checksum_mismatch(e, snapshot))?;
        match bytes {
            None => Ok(RevertOutcome::Done),
            Some(b) if b.is_empty() => Ok(RevertOutcome::Done),
            some => {
                let result: doc::RevertResult = self.parse(&op, some)?;
                Ok(convert::outcome_from_doc(&result))
            }
        }
    }

    async fn delete(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        context: &DeleteContext,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        let op = format!("delete snapshot '{}'", snapshot.name);
        let to_doc =
            |r: &SnapshotRef| convert::ref_to_doc(r).map_err(|e| self.not_utf8(&e, &op, volume));
        let mut features = requires(volume);
        if context.flatten_clones {
            features.push(doc::FEATURE_FLATTEN_CLONES.to_string());
        }
        let request = doc::DeleteRequest {
            requires: features,
            volume: convert::volume_to_doc(volume).map_err(|e| self.not_utf8(&e, &op, volume))?,
            snapshot: to_doc(snapshot)?,
            parent: context.parent.as_ref().map(to_doc).transpose()?,
            children: context
                .children
                .iter()
                .map(to_doc)
                .collect::<Result<_, _>>()?,
            is_current: context.is_current,
            flatten_clones: context.flatten_clones,
        };
        self.call(Slot::Delete, &op, volume, &request, progress)
            .await?;
        Ok(())
    }

    async fn list(&self, volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
        const OP: &str = "list snapshots";
        let request = doc::ListRequest {
            requires: requires(volume),
            volume: convert::volume_to_doc(volume).map_err(|e| self.not_utf8(&e, OP, volume))?,
        };
        let bytes = self.call(Slot::List, OP, volume, &request, None).await?;
        let list: doc::ListResult = self.parse(OP, bytes)?;
        Ok(list
            .snapshots
            .iter()
            .map(convert::storage_from_doc)
            .collect())
    }

    async fn undo(&self, volume: &Volume, created: &CreatedSnapshot) -> Result<(), DriverError> {
        let op = format!("undo snapshot '{}'", created.name);
        if !self.plugin.has(Slot::Undo) {
            // The documented fallback: delete it as the current snapshot.
            let context = DeleteContext {
                parent: None,
                children: Vec::new(),
                is_current: true,
                flatten_clones: false,
            };
            return self.delete(volume, &created.as_ref(), &context, None).await;
        }
        let request = doc::UndoRequest {
            requires: requires(volume),
            volume: convert::volume_to_doc(volume).map_err(|e| self.not_utf8(&e, &op, volume))?,
            snapshot: convert::created_to_doc(created)
                .map_err(|e| self.not_utf8(&e, &op, volume))?,
        };
        self.call(Slot::Undo, &op, volume, &request, None).await?;
        Ok(())
    }

    async fn export_diff(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        from: Option<&SnapshotRef>,
        file: &Path,
        progress: Option<&Progress>,
    ) -> Result<ExportedDiff, DriverError> {
        let op = match from {
            Some(from) => format!(
                "export the changes from snapshot '{}' to '{}'",
                from.name, snapshot.name
            ),
            None => format!("export snapshot '{}' as a diff", snapshot.name),
        };
        let to_doc =
            |r: &SnapshotRef| convert::ref_to_doc(r).map_err(|e| self.not_utf8(&e, &op, volume));
        let request = doc::ExportDiffRequest {
            requires: requires(volume),
            volume: convert::volume_to_doc(volume).map_err(|e| self.not_utf8(&e, &op, volume))?,
            snapshot: to_doc(snapshot)?,
            from: from.map(to_doc).transpose()?,
            file: file
                .to_str()
                .ok_or_else(|| self.not_utf8(&NotUtf8(file.to_path_buf()), &op, volume))?
                .to_string(),
        };
        let bytes = self
            .call(Slot::ExportDiff, &op, volume, &request, progress)
            .await?;
        let result: doc::ExportDiffResult = self.parse(&op, bytes)?;
        // The file is what an export leaves: it must be there, and hold
        // what the plugin says it wrote.
        let problem = match std::fs::metadata(file) {
            Ok(meta) if meta.is_file() && meta.len() == result.file_bytes => None,
            Ok(meta) if meta.is_file() => Some(format!(
                "it reports {} bytes written to {}, which holds {} (the file is left as it \
                 is: do not import it)",
                result.file_bytes,
                file.display(),
                meta.len()
            )),
            Ok(_) => Some(format!(
                "it reports success, but {} is not a regular file",
                file.display()
            )),
            Err(e) => Some(format!(
                "it reports success, but its file {} cannot be examined ({e})",
                file.display()
            )),
        };
        if let Some(problem) = problem {
            return Err(self.fault(&op, problem));
        }
        Ok(ExportedDiff {
            file_bytes: result.file_bytes,
            changed_bytes: result.changed_bytes,
        })
    }

    async fn import_diff(
        &self,
        volume: &Volume,
        file: &Path,
        progress: Option<&Progress>,
    ) -> Result<ImportedDiff, DriverError> {
        let op = format!("import the diff {}", file.display());
        let request = doc::ImportDiffRequest {
            requires: requires(volume),
            volume: convert::volume_to_doc(volume).map_err(|e| self.not_utf8(&e, &op, volume))?,
            file: file
                .to_str()
                .ok_or_else(|| self.not_utf8(&NotUtf8(file.to_path_buf()), &op, volume))?
                .to_string(),
        };
        let bytes = self
            .call(Slot::ImportDiff, &op, volume, &request, progress)
            .await?;
        let result: doc::ImportDiffResult = self.parse(&op, bytes)?;
        let problem = if result.snapshot.trim().is_empty() {
            Some("it reports success but names no snapshot it created".to_string())
        } else {
            match &result.from {
                Some(from) if from.trim().is_empty() => Some(format!(
                    "it reports snapshot '{}' created from a snapshot with an empty name",
                    result.snapshot
                )),
                Some(from) if *from == result.snapshot => Some(format!(
                    "it reports snapshot '{}' created from itself",
                    result.snapshot
                )),
                _ => None,
            }
        };
        if let Some(problem) = problem {
            return Err(self.fault(
                &op,
                format!("{problem}; check the volume for a snapshot virtsnap does not know"),
            ));
        }
        Ok(ImportedDiff {
            snapshot: result.snapshot,
            from: result.from,
            size: result.size,
        })
    }
}
