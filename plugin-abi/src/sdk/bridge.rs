//! [`Linked`]: a `snapshot_core` [`VolumeDriver`] served as a plugin.
//! Each call runs the driver's future to completion on the instance's own
//! single-threaded tokio runtime (the plugin's, not the host's: the two
//! never share one). Errors keep their kind across the ABI.
//!
//! A volume the driver does not [`handles`](VolumeDriver::handles) (a
//! network volume, for a driver of local files) never reaches it:
//! `capabilities` declines it (all false) and every other operation
//! refuses it with `E_UNSUPPORTED`, as the linked driver's callers skip
//! such a driver.

use std::path::Path;

use snapshot_core::driver::{DriverError, Progress, Volume, VolumeDriver};

use crate::abi;
use crate::convert;
use crate::payload::{
    Capabilities, CapabilitiesRequest, CreateRequest, CreatedSnapshot, DeleteRequest,
    ExportDiffRequest, ExportDiffResult, ImportDiffRequest, ImportDiffResult, ListRequest,
    ListResult, RevertRequest, RevertResult, UndoRequest,
};

use super::{Call, Error};

/// A linked driver and the runtime its futures run on.
#[derive(Debug)]
pub struct Linked<D> {
    driver: D,
    runtime: tokio::runtime::Runtime,
}

// The methods take requests by value, as `Plugin`'s do, so a plugin's
// methods forward with no borrow dance.
#[allow(clippy::needless_pass_by_value)]
impl<D: VolumeDriver> Linked<D> {
    /// Serves `driver`.
    ///
    /// # Errors
    /// The runtime cannot start.
    pub fn new(driver: D) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the plugin's runtime", &e))?;
        Ok(Self { driver, runtime })
    }

    /// The volume of a request, when the driver handles it; else the
    /// refusal every operation but `capabilities` gives.
    fn volume(&self, doc: &crate::payload::Volume) -> Result<Volume, Error> {
        let volume = convert::volume_from_doc(doc);
        if self.driver.handles(&volume) {
            return Ok(volume);
        }
        let kind = self.driver.kind();
        Err(Error::unsupported(match volume.network_protocol() {
            Some(protocol) => format!(
                "the {kind} driver does not handle network volumes (protocol {protocol}); use \
                 a driver for {protocol} volumes"
            ),
            None => format!("the {kind} driver does not handle this volume; use another driver"),
        }))
    }

    /// See [`super::Plugin::capabilities`].
    ///
    /// # Errors
    /// The driver's.
    pub fn capabilities(
        &self,
        r: CapabilitiesRequest,
        _call: &Call<'_>,
    ) -> Result<Capabilities, Error> {
        let volume = convert::volume_from_doc(&r.volume);
        if !self.driver.handles(&volume) {
            // Declined, as callers of the linked driver skip it.
            return Ok(Capabilities::default());
        }
        let caps = self
            .runtime
            .block_on(
                self.driver
                    .capabilities(&volume, convert::state_from_doc(r.state)),
            )
            .map_err(|e| error(&e))?;
        Ok(convert::caps_to_doc(&caps))
    }

    /// See [`super::Plugin::create`].
    ///
    /// # Errors
    /// The driver's.
    pub fn create(&self, r: CreateRequest, call: &Call<'_>) -> Result<CreatedSnapshot, Error> {
        let volume = self.volume(&r.volume)?;
        let plan = convert::plan_from_doc(&r.plan);
        let progress = forward(call);
        let created = self
            .runtime
            .block_on(self.driver.create(&volume, &plan, Some(&*progress)))
            .map_err(|e| error(&e))?;
        convert::created_to_doc(&created).map_err(|e| Error::internal(e.to_string()))
    }

    /// See [`super::Plugin::delete`].
    ///
    /// # Errors
    /// The driver's.
    pub fn delete(&self, r: DeleteRequest, call: &Call<'_>) -> Result<(), Error> {
        let volume = self.volume(&r.volume)?;
        let context = snapshot_core::driver::DeleteContext {
            parent: r.parent.as_ref().map(convert::ref_from_doc),
            children: r.children.iter().map(convert::ref_from_doc).collect(),
            is_current: r.is_current,
            flatten_clones: r.flatten_clones,
        };
        let progress = forward(call);
        self.runtime
            .block_on(self.driver.delete(
                &volume,
                &convert::ref_from_doc(&r.snapshot),
                &context,
                Some(&*progress),
            ))
            .map_err(|e| error(&e))
    }

    /// See [`super::Plugin::revert`].
    ///
    /// # Errors
    /// The driver's.
    pub fn revert(&self, r: RevertRequest, call: &Call<'_>) -> Result<RevertResult, Error> {
        let volume = self.volume(&r.volume)?;
        let progress = forward(call);
        let outcome = self
            .runtime
            .block_on(self.driver.revert(
                &volume,
                &convert::ref_from_doc(&r.snapshot),
                r.verify,
                Some(&*progress),
            ))
            .map_err(|e| error(&e))?;
        Ok(convert::outcome_to_doc(&outcome))
    }

    /// See [`super::Plugin::list`].
    ///
    /// # Errors
    /// The driver's.
    pub fn list(&self, r: ListRequest, _call: &Call<'_>) -> Result<ListResult, Error> {
        let volume = self.volume(&r.volume)?;
        let list = self
            .runtime
            .block_on(self.driver.list(&volume))
            .map_err(|e| error(&e))?;
        Ok(ListResult {
            snapshots: list
                .iter()
                .map(convert::storage_to_doc)
                .collect::<Result<_, _>>()
                .map_err(|e| Error::internal(e.to_string()))?,
        })
    }

    /// See [`super::Plugin::undo`].
    ///
    /// # Errors
    /// The driver's.
    pub fn undo(&self, r: UndoRequest, _call: &Call<'_>) -> Result<(), Error> {
        let volume = self.volume(&r.volume)?;
        self.runtime
            .block_on(
                self.driver
                    .undo(&volume, &convert::created_from_doc(&r.snapshot)),
            )
            .map_err(|e| error(&e))
    }

    /// See [`super::Plugin::export_diff`].
    ///
    /// # Errors
    /// The driver's.
    pub fn export_diff(
        &self,
        r: ExportDiffRequest,
        call: &Call<'_>,
    ) -> Result<ExportDiffResult, Error> {
        let volume = self.volume(&r.volume)?;
        let snapshot = convert::ref_from_doc(&r.snapshot);
        let from = r.from.as_ref().map(convert::ref_from_doc);
        let progress = forward(call);
        let exported = self
            .runtime
            .block_on(self.driver.export_diff(
                &volume,
                &snapshot,
                from.as_ref(),
                Path::new(&r.file),
                Some(&*progress),
            ))
            .map_err(|e| error(&e))?;
        Ok(ExportDiffResult {
            file_bytes: exported.file_bytes,
            changed_bytes: exported.changed_bytes,
        })
    }

    /// See [`super::Plugin::import_diff`].
    ///
    /// # Errors
    /// The driver's.
    pub fn import_diff(
        &self,
        r: ImportDiffRequest,
        call: &Call<'_>,
    ) -> Result<ImportDiffResult, Error> {
        let volume = self.volume(&r.volume)?;
        let progress = forward(call);
        let imported = self
            .runtime
            .block_on(
                self.driver
                    .import_diff(&volume, Path::new(&r.file), Some(&*progress)),
            )
            .map_err(|e| error(&e))?;
        Ok(ImportDiffResult {
            snapshot: imported.snapshot,
            from: imported.from,
            size: imported.size,
        })
    }
}

/// A progress callback forwarding to the host, for the duration of the
/// call (the driver's future is run to completion inside it).
fn forward(call: &Call<'_>) -> Box<Progress> {
    let forwarder = call.forwarder();
    Box::new(move |done, total| {
        // A linked driver cannot be stopped midway; a host that asks to
        // stop stops waiting for progress instead.
        let _ = forwarder.progress(done, total);
    })
}

/// A driver error as an ABI error, its message in the header's shape: the
/// code says its kind; NOT_FOUND and EXISTS name the thing, UNSUPPORTED
/// says why and what to do, the rest carry the whole message.
fn error(e: &DriverError) -> Error {
    match e {
        DriverError::Unsupported { reason, hint, .. } => {
            Error::unsupported(format!("{reason}; {hint}"))
        }
        DriverError::NotFound { what } => Error::new(abi::E_NOT_FOUND, what.clone()),
        DriverError::Exists { what } => Error::new(abi::E_EXISTS, what.clone()),
        DriverError::InvalidName { .. } => Error::new(abi::E_INVALID_NAME, e.to_string()),
        DriverError::NoSpace { .. } => Error::new(abi::E_NO_SPACE, e.to_string()),
        DriverError::InUse { .. } => Error::new(abi::E_BUSY, e.to_string()),
        DriverError::ChecksumMismatch { found, .. } => {
            Error::new(abi::E_CHECKSUM_MISMATCH, format!("{e} [found {found}]"))
        }
        DriverError::Io { source, .. } => Error {
            code: abi::E_IO,
            os_errno: source.raw_os_error().unwrap_or(0),
            message: e.to_string(),
        },
        DriverError::Inconsistent(m) => Error::new(abi::E_INCONSISTENT, m.clone()),
        _ => Error::internal(e.to_string()),
    }
}

/// Makes the crate a plugin serving the linked driver `$ty`, made by
/// `$make` when an instance opens (the built-in drivers built as
/// plugins): a [`Plugin`](crate::sdk::Plugin) around [`Linked`], exported
/// with [`export_plugin!`](crate::export_plugin) with the slots `revert`,
/// `list` and `undo`, or those listed in braces after `$make` (a driver
/// that implements the ABI 1.1 incremental export lists `export_diff` and
/// `import_diff` too). The thread model is serialize-instance (each
/// instance runs its driver on its own runtime).
///
/// ```text
/// plugin_abi::export_linked_driver!(driver_file::FileDriver, c"file-plugin", c"0.1.0",
///     c"full copies of any file", driver_file::FileDriver::new());
/// plugin_abi::export_linked_driver!(my::Driver, c"mine", c"1.0", c"...", my::Driver::new(),
///     { revert, list, undo, export_diff, import_diff });
/// ```
#[macro_export]
macro_rules! export_linked_driver {
    ($ty:ty, $name:expr, $version:expr, $description:expr, $make:expr $(,)?) => {
        $crate::export_linked_driver!(
            $ty, $name, $version, $description, $make, { revert, list, undo }
        );
    };
    (
        $ty:ty, $name:expr, $version:expr, $description:expr, $make:expr,
        { $($op:ident),* $(,)? } $(,)?
    ) => {
        /// The linked driver served as a plugin.
        #[derive(Debug)]
        pub struct LinkedPlugin($crate::sdk::bridge::Linked<$ty>);

        impl $crate::sdk::Plugin for LinkedPlugin {
            const NAME: &'static ::std::ffi::CStr = $name;
            const VERSION: &'static ::std::ffi::CStr = $version;
            const DESCRIPTION: Option<&'static ::std::ffi::CStr> = Some($description);
            const THREAD_MODEL: u32 = $crate::abi::THREAD_MODEL_SERIALIZE_INSTANCE;

            fn open(
                _config: $crate::payload::OpenConfig,
                _call: &$crate::sdk::Call<'_>,
            ) -> Result<Self, $crate::sdk::Error> {
                Ok(Self($crate::sdk::bridge::Linked::new($make)?))
            }

            fn capabilities(
                &self,
                r: $crate::payload::CapabilitiesRequest,
                call: &$crate::sdk::Call<'_>,
            ) -> Result<$crate::payload::Capabilities, $crate::sdk::Error> {
                self.0.capabilities(r, call)
            }

            fn create(
                &self,
                r: $crate::payload::CreateRequest,
                call: &$crate::sdk::Call<'_>,
            ) -> Result<$crate::payload::CreatedSnapshot, $crate::sdk::Error> {
                self.0.create(r, call)
            }

            fn delete(
                &self,
                r: $crate::payload::DeleteRequest,
                call: &$crate::sdk::Call<'_>,
            ) -> Result<(), $crate::sdk::Error> {
                self.0.delete(r, call)
            }

            fn revert(
                &self,
                r: $crate::payload::RevertRequest,
                call: &$crate::sdk::Call<'_>,
            ) -> Result<$crate::payload::RevertResult, $crate::sdk::Error> {
                self.0.revert(r, call)
            }

            fn list(
                &self,
                r: $crate::payload::ListRequest,
                call: &$crate::sdk::Call<'_>,
            ) -> Result<$crate::payload::ListResult, $crate::sdk::Error> {
                self.0.list(r, call)
            }

            fn undo(
                &self,
                r: $crate::payload::UndoRequest,
                call: &$crate::sdk::Call<'_>,
            ) -> Result<(), $crate::sdk::Error> {
                self.0.undo(r, call)
            }

            fn export_diff(
                &self,
                r: $crate::payload::ExportDiffRequest,
                call: &$crate::sdk::Call<'_>,
            ) -> Result<$crate::payload::ExportDiffResult, $crate::sdk::Error> {
                self.0.export_diff(r, call)
            }

            fn import_diff(
                &self,
                r: $crate::payload::ImportDiffRequest,
                call: &$crate::sdk::Call<'_>,
            ) -> Result<$crate::payload::ImportDiffResult, $crate::sdk::Error> {
                self.0.import_diff(r, call)
            }
        }

        $crate::export_plugin!(LinkedPlugin { $($op),* });
    };
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use snapshot_core::driver::{
        Capabilities as CoreCaps, CreatedSnapshot as CoreCreated, DeleteContext, DriverError,
        ExportedDiff, ImportedDiff, Progress, RevertOutcome, SnapshotPlan, SnapshotRef as CoreRef,
        StorageSnapshot, Volume, VolumeDriver, VolumeState,
    };

    use super::Linked;
    use crate::abi::{self, CallV1, Header};
    use crate::payload as doc;
    use crate::sdk::Call;

    /// A driver of local files that records what reaches it.
    #[derive(Debug, Default)]
    struct Recorder {
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Recorder {
        fn saw(&self, what: String) {
            self.calls.lock().unwrap().push(what);
        }
    }

    #[async_trait]
    impl VolumeDriver for Recorder {
        fn kind(&self) -> &'static str {
            "recorder"
        }
        async fn capabilities(&self, v: &Volume, _s: VolumeState) -> Result<CoreCaps, DriverError> {
            self.saw(format!("capabilities {}", v.path.display()));
            Ok(CoreCaps {
                copy: true,
                ..CoreCaps::default()
            })
        }
        async fn create(
            &self,
            v: &Volume,
            _p: &SnapshotPlan,
            _g: Option<&Progress>,
        ) -> Result<CoreCreated, DriverError> {
            self.saw(format!("create {}", v.path.display()));
            Err(DriverError::Inconsistent("not here".into()))
        }
        async fn revert(
            &self,
            v: &Volume,
            _s: &CoreRef,
            _verify: bool,
            _g: Option<&Progress>,
        ) -> Result<RevertOutcome, DriverError> {
            self.saw(format!("revert {}", v.path.display()));
            Ok(RevertOutcome::Done)
        }
        async fn delete(
            &self,
            v: &Volume,
            _s: &CoreRef,
            _c: &DeleteContext,
            _g: Option<&Progress>,
        ) -> Result<(), DriverError> {
            self.saw(format!("delete {}", v.path.display()));
            Ok(())
        }
        async fn list(&self, v: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
            self.saw(format!("list {}", v.path.display()));
            Ok(Vec::new())
        }
        async fn undo(&self, v: &Volume, _c: &CoreCreated) -> Result<(), DriverError> {
            self.saw(format!("undo {}", v.path.display()));
            Ok(())
        }
        async fn export_diff(
            &self,
            v: &Volume,
            snapshot: &CoreRef,
            from: Option<&CoreRef>,
            file: &Path,
            progress: Option<&Progress>,
        ) -> Result<ExportedDiff, DriverError> {
            self.saw(format!(
                "export_diff {} {} {:?} {}",
                v.path.display(),
                snapshot.name,
                from.map(|f| f.name.as_str()),
                file.display()
            ));
            if snapshot.name == "exists" {
                return Err(DriverError::Exists {
                    what: format!("export file {}", file.display()),
                });
            }
            if let Some(p) = progress {
                p(5, 10);
            }
            Ok(ExportedDiff {
                file_bytes: 7,
                changed_bytes: 9,
            })
        }
        async fn import_diff(
            &self,
            v: &Volume,
            file: &Path,
            _g: Option<&Progress>,
        ) -> Result<ImportedDiff, DriverError> {
            self.saw(format!(
                "import_diff {} {}",
                v.path.display(),
                file.display()
            ));
            Ok(ImportedDiff {
                snapshot: "b".into(),
                from: Some("a".into()),
                size: 42,
            })
        }
    }

    static PROGRESS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

    extern "C" fn progress(_ctx: *mut std::ffi::c_void, done: u64, total: u64) -> i32 {
        PROGRESS.lock().unwrap().push((done, total));
        0
    }

    fn raw_call() -> CallV1 {
        CallV1 {
            header: Header {
                struct_size: u32::try_from(abi::CALL_V1_0_SIZE).unwrap(),
                abi_major: abi::ABI_MAJOR,
                abi_minor: abi::ABI_MINOR,
            },
            call_ctx: std::ptr::null_mut(),
            write_result: None,
            set_error: None,
            log: None,
            progress: Some(progress),
        }
    }

    fn volume(path: &str) -> doc::Volume {
        doc::Volume {
            path: path.into(),
            format: "raw".into(),
        }
    }

    fn snapshot(name: &str) -> doc::SnapshotRef {
        doc::SnapshotRef {
            name: name.into(),
            mode: doc::Mode::Copy,
            file: Some(format!("/v/disk.{name}")),
            checksum: None,
        }
    }

    fn linked() -> (Linked<Recorder>, Arc<Mutex<Vec<String>>>) {
        let recorder = Recorder::default();
        let calls = Arc::clone(&recorder.calls);
        (Linked::new(recorder).expect("runtime"), calls)
    }

    #[test]
    fn export_and_import_reach_the_linked_driver() {
        let (linked, calls) = linked();
        let raw = raw_call();
        let call = Call { raw: &raw };
        let out = linked
            .export_diff(
                doc::ExportDiffRequest {
                    requires: Vec::new(),
                    volume: volume("/v/disk"),
                    snapshot: snapshot("b"),
                    from: Some(snapshot("a")),
                    file: "/v/a-b.diff".into(),
                },
                &call,
            )
            .expect("export");
        assert_eq!(
            out,
            doc::ExportDiffResult {
                file_bytes: 7,
                changed_bytes: 9
            }
        );
        assert!(PROGRESS.lock().unwrap().contains(&(5, 10)), "progress");
        let back = linked
            .import_diff(
                doc::ImportDiffRequest {
                    requires: Vec::new(),
                    volume: volume("/w/disk"),
                    file: "/v/a-b.diff".into(),
                },
                &call,
            )
            .expect("import");
        assert_eq!(
            back,
            doc::ImportDiffResult {
                snapshot: "b".into(),
                from: Some("a".into()),
                size: 42
            }
        );
        let e = linked
            .export_diff(
                doc::ExportDiffRequest {
                    requires: Vec::new(),
                    volume: volume("/v/disk"),
                    snapshot: snapshot("exists"),
                    from: None,
                    file: "/v/x.diff".into(),
                },
                &call,
            )
            .expect_err("exists");
        assert_eq!(e.code, abi::E_EXISTS);
        assert_eq!(e.message, "export file /v/x.diff");
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "export_diff /v/disk b Some(\"a\") /v/a-b.diff",
                "import_diff /w/disk /v/a-b.diff",
                "export_diff /v/disk exists None /v/x.diff",
            ]
        );
    }

    #[test]
    fn network_volumes_never_reach_a_driver_of_local_files() {
        let (linked, calls) = linked();
        let raw = raw_call();
        let call = Call { raw: &raw };
        let rbd = || volume("rbd:pool/image:conf=/etc/ceph/ceph.conf");
        let requires = || vec![doc::FEATURE_NETWORK_VOLUME.to_string()];
        let caps = linked
            .capabilities(
                doc::CapabilitiesRequest {
                    requires: requires(),
                    volume: rbd(),
                    state: doc::State::Offline,
                },
                &call,
            )
            .expect("declined");
        assert_eq!(caps, doc::Capabilities::default());
        let created = doc::CreatedSnapshot {
            name: "a".into(),
            mode: doc::Mode::Copy,
            file: None,
            format: None,
            checksum: None,
            size: None,
        };
        let errors = [
            linked
                .create(
                    doc::CreateRequest {
                        requires: requires(),
                        volume: rbd(),
                        plan: doc::SnapshotPlan {
                            name: "a".into(),
                            mode: doc::Mode::Copy,
                            file: None,
                            checksum: false,
                            writable: false,
                        },
                    },
                    &call,
                )
                .map(|_| ()),
            linked
                .revert(
                    doc::RevertRequest {
                        requires: requires(),
                        volume: rbd(),
                        snapshot: snapshot("a"),
                        verify: false,
                    },
                    &call,
                )
                .map(|_| ()),
            linked.delete(
                doc::DeleteRequest {
                    requires: requires(),
                    volume: rbd(),
                    snapshot: snapshot("a"),
                    parent: None,
                    children: Vec::new(),
                    is_current: false,
                    flatten_clones: false,
                },
                &call,
            ),
            linked
                .list(
                    doc::ListRequest {
                        requires: requires(),
                        volume: rbd(),
                    },
                    &call,
                )
                .map(|_| ()),
            linked.undo(
                doc::UndoRequest {
                    requires: requires(),
                    volume: rbd(),
                    snapshot: created,
                },
                &call,
            ),
            linked
                .export_diff(
                    doc::ExportDiffRequest {
                        requires: requires(),
                        volume: rbd(),
                        snapshot: snapshot("b"),
                        from: None,
                        file: "/v/x.diff".into(),
                    },
                    &call,
                )
                .map(|_| ()),
            linked
                .import_diff(
                    doc::ImportDiffRequest {
                        requires: requires(),
                        volume: rbd(),
                        file: "/v/x.diff".into(),
                    },
                    &call,
                )
                .map(|_| ()),
        ];
        for e in errors {
            let e = e.expect_err("refused");
            assert_eq!(e.code, abi::E_UNSUPPORTED, "{e:?}");
            assert!(
                e.message
                    .contains("the recorder driver does not handle network volumes (protocol rbd)"),
                "{e:?}"
            );
        }
        assert!(calls.lock().unwrap().is_empty(), "{:?}", calls.lock());

        // A local volume reaches it.
        let caps = linked
            .capabilities(
                doc::CapabilitiesRequest {
                    requires: Vec::new(),
                    volume: volume("/v/disk"),
                    state: doc::State::Offline,
                },
                &call,
            )
            .expect("capabilities");
        assert!(caps.copy);
        assert_eq!(*calls.lock().unwrap(), ["capabilities /v/disk"]);
    }
}
