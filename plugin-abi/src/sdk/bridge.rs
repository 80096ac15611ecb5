//! [`Linked`]: a `snapshot_core` [`VolumeDriver`] served as a plugin.
//! Each call runs the driver's future to completion on the instance's own
//! single-threaded tokio runtime (the plugin's, not the host's: the two
//! never share one). Errors keep their kind across the ABI.

use snapshot_core::driver::{DriverError, Progress, VolumeDriver};

use crate::abi;
use crate::convert;
use crate::payload::{
    Capabilities, CapabilitiesRequest, CreateRequest, CreatedSnapshot, DeleteRequest, ListRequest,
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
        let volume = convert::volume_from_doc(&r.volume);
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
        let volume = convert::volume_from_doc(&r.volume);
        let context = snapshot_core::driver::DeleteContext {
            parent: r.parent.as_ref().map(convert::ref_from_doc),
            children: r.children.iter().map(convert::ref_from_doc).collect(),
            is_current: r.is_current,
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
        let volume = convert::volume_from_doc(&r.volume);
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
        let volume = convert::volume_from_doc(&r.volume);
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
        let volume = convert::volume_from_doc(&r.volume);
        self.runtime
            .block_on(
                self.driver
                    .undo(&volume, &convert::created_from_doc(&r.snapshot)),
            )
            .map_err(|e| error(&e))
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
/// plugins): a [`Plugin`](crate::sdk::Plugin) around [`Linked`] with every
/// optional operation, exported with
/// [`export_plugin!`](crate::export_plugin). The thread model is
/// serialize-instance (each instance runs its driver on its own runtime).
///
/// ```text
/// plugin_abi::export_linked_driver!(driver_file::FileDriver, c"file-plugin", c"0.1.0",
///     c"full copies of any file", driver_file::FileDriver::new());
/// ```
#[macro_export]
macro_rules! export_linked_driver {
    ($ty:ty, $name:expr, $version:expr, $description:expr, $make:expr) => {
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
        }

        $crate::export_plugin!(LinkedPlugin { revert, list, undo });
    };
}
