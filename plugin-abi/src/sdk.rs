//! The Rust SDK: implement [`Plugin`] for a type and call
//! [`export_plugin!`](crate::export_plugin) once in a `cdylib` crate, and
//! the library is a virtsnap plugin. The SDK writes the C side: the static
//! table, the entry symbol, and trampolines that parse each request,
//! refuse features they do not know, call the method, write its result
//! and turn errors and panics into the ABI's codes. A panic poisons the
//! instance: later calls fail with `E_PANIC` without entering the
//! plugin's code again. Plugins must be built with `panic = "unwind"`
//! (the default); the macro refuses `panic = "abort"`.
//!
//! With the `bridge` feature, [`bridge::Linked`] serves any
//! `snapshot_core` [`VolumeDriver`](snapshot_core::driver::VolumeDriver)
//! as a plugin (the built-in drivers built as plugins).
#![allow(unsafe_code)]

use std::any::Any;
use std::ffi::{CStr, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::abi::{self, CallV1, Header, PluginV1};
use crate::payload::{
    Capabilities, CapabilitiesRequest, CreateRequest, CreatedSnapshot, DeleteRequest,
    ExportDiffRequest, ExportDiffResult, ImportDiffRequest, ImportDiffResult, ListRequest,
    ListResult, OpenConfig, RevertRequest, RevertResult, UndoRequest, unknown_feature,
};

#[cfg(feature = "bridge")]
pub mod bridge;

/// An error a plugin returns: a negative `abi::E_*` code, the OS errno
/// (0 if none) and a message that says what failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The code.
    pub code: i32,
    /// The OS errno, or 0.
    pub os_errno: i32,
    /// The message.
    pub message: String,
}

impl Error {
    /// An error with `code` and `message`.
    #[must_use]
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            os_errno: 0,
            message: message.into(),
        }
    }

    /// `E_UNSUPPORTED`: say why and what to do instead.
    #[must_use]
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(abi::E_UNSUPPORTED, message)
    }

    /// `E_INVALID_ARGUMENT`.
    #[must_use]
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(abi::E_INVALID_ARGUMENT, message)
    }

    /// `E_INTERNAL`.
    #[must_use]
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(abi::E_INTERNAL, message)
    }

    /// An I/O error while doing `what` (`E_NO_SPACE`, `E_NOT_FOUND`,
    /// `E_PERMISSION` or `E_IO` by its kind, with its errno).
    #[must_use]
    pub fn io(what: &str, error: &std::io::Error) -> Self {
        let code = match error.kind() {
            std::io::ErrorKind::NotFound => abi::E_NOT_FOUND,
            std::io::ErrorKind::AlreadyExists => abi::E_EXISTS,
            std::io::ErrorKind::PermissionDenied => abi::E_PERMISSION,
            std::io::ErrorKind::StorageFull => abi::E_NO_SPACE,
            _ => abi::E_IO,
        };
        Self {
            code,
            os_errno: error.raw_os_error().unwrap_or(0),
            message: format!("{what}: {error}"),
        }
    }
}

/// A storage driver served as a plugin. The optional operations have
/// defaults that refuse; list the ones a type implements in
/// [`export_plugin!`](crate::export_plugin) so the host sees their slots
/// (a slot left out is "unsupported" to the host, whatever the method
/// does).
///
/// Network volumes (ABI 1.1): a request whose `requires` holds
/// [`FEATURE_NETWORK_VOLUME`](crate::payload::FEATURE_NETWORK_VOLUME)
/// names its volume `PROTOCOL:NAME[:OPTION=VALUE...]` in `volume.path`
/// instead of an absolute path. The SDK knows the feature, so such
/// requests reach the methods: `capabilities` answers
/// `Capabilities::default()` for a volume the plugin does not take (the
/// host then never asks it anything else about that volume), and the
/// other methods refuse it with `E_UNSUPPORTED`.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The driver's name (`[a-z0-9][a-z0-9-]*`).
    const NAME: &'static CStr;
    /// The plugin's version.
    const VERSION: &'static CStr;
    /// One line on what it snapshots.
    const DESCRIPTION: Option<&'static CStr> = None;
    /// How many calls it takes at once (`abi::THREAD_MODEL_*`).
    const THREAD_MODEL: u32 = abi::THREAD_MODEL_SERIALIZE_ALL;

    /// Makes an instance from the host's configuration.
    ///
    /// # Errors
    /// The options are wrong, or the storage cannot be reached.
    fn open(config: OpenConfig, call: &Call<'_>) -> Result<Self, Error>;

    /// What it can do with a volume in a state (`Capabilities::default()`
    /// when it does not take the volume).
    ///
    /// # Errors
    /// The volume cannot be examined.
    fn capabilities(
        &self,
        request: CapabilitiesRequest,
        call: &Call<'_>,
    ) -> Result<Capabilities, Error>;

    /// Takes a snapshot; on error nothing is left behind.
    ///
    /// # Errors
    /// As the operation's documentation says.
    fn create(&self, request: CreateRequest, call: &Call<'_>) -> Result<CreatedSnapshot, Error>;

    /// Removes a snapshot's storage (what is gone is deleted).
    ///
    /// # Errors
    /// As the operation's documentation says.
    fn delete(&self, request: DeleteRequest, call: &Call<'_>) -> Result<(), Error>;

    /// Reverts the volume to a snapshot.
    ///
    /// # Errors
    /// Unsupported unless implemented.
    fn revert(&self, request: RevertRequest, call: &Call<'_>) -> Result<RevertResult, Error> {
        let _ = (request, call);
        Err(Error::unsupported("this plugin cannot revert"))
    }

    /// The snapshots the storage holds.
    ///
    /// # Errors
    /// Unsupported unless implemented.
    fn list(&self, request: ListRequest, call: &Call<'_>) -> Result<ListResult, Error> {
        let _ = (request, call);
        Err(Error::unsupported("this plugin cannot list snapshots"))
    }

    /// Undoes a create.
    ///
    /// # Errors
    /// Unsupported unless implemented.
    fn undo(&self, request: UndoRequest, call: &Call<'_>) -> Result<(), Error> {
        let _ = (request, call);
        Err(Error::unsupported("this plugin cannot undo a create"))
    }

    /// Writes the changes between `request.from` (or the volume's
    /// beginning) and `request.snapshot` to the new file `request.file`
    /// (ABI 1.1): refuse an existing file with `E_EXISTS`, and leave no
    /// file behind on error.
    ///
    /// # Errors
    /// Unsupported unless implemented.
    fn export_diff(
        &self,
        request: ExportDiffRequest,
        call: &Call<'_>,
    ) -> Result<ExportDiffResult, Error> {
        let _ = (request, call);
        Err(Error::unsupported(
            "this plugin has no incremental export; copy the volume whole (a copy snapshot) \
             instead",
        ))
    }

    /// Replays a file [`Plugin::export_diff`] wrote on the volume,
    /// creating the export's end snapshot (ABI 1.1).
    ///
    /// # Errors
    /// Unsupported unless implemented.
    fn import_diff(
        &self,
        request: ImportDiffRequest,
        call: &Call<'_>,
    ) -> Result<ImportDiffResult, Error> {
        let _ = (request, call);
        Err(Error::unsupported(
            "this plugin has no incremental import; import the file with the plugin that \
             exported it",
        ))
    }
}

/// The host's side of one call: progress and logging.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    raw: &'a CallV1,
}

// SAFETY: the ABI lets a plugin use a call's callbacks from any thread
// while the call lasts; the host's callbacks are thread-safe.
unsafe impl Send for Call<'_> {}
// SAFETY: as above.
unsafe impl Sync for Call<'_> {}

impl Call<'_> {
    /// Reports progress; `false` when the host asks to stop (clean up and
    /// return `E_CANCELLED`).
    #[must_use]
    pub fn progress(&self, done: u64, total: u64) -> bool {
        match self.raw.progress {
            // SAFETY: a callback of the live call, with its context.
            Some(f) => unsafe { f(self.raw.call_ctx, done, total) == 0 },
            None => true,
        }
    }

    /// Logs through the host (`abi::LOG_*` levels).
    pub fn log(&self, level: i32, message: &str) {
        if let Some(f) = self.raw.log {
            // SAFETY: a callback of the live call; the message is borrowed
            // for it.
            unsafe { f(self.raw.call_ctx, level, message.as_ptr(), message.len()) };
        }
    }

    /// A `'static` handle on the progress callback, for drivers whose
    /// progress closures must be `'static`; valid only while the call
    /// lasts.
    #[cfg(feature = "bridge")]
    pub(crate) fn forwarder(&self) -> Forwarder {
        Forwarder {
            progress: self.raw.progress,
            ctx: self.raw.call_ctx as usize,
        }
    }

    fn write(&self, data: &[u8]) -> Result<(), Error> {
        let Some(f) = self.raw.write_result else {
            return Err(Error::internal("the host gave no write_result"));
        };
        // SAFETY: a callback of the live call; `data` is borrowed for it.
        if unsafe { f(self.raw.call_ctx, data.as_ptr(), data.len()) } == 0 {
            Ok(())
        } else {
            Err(Error::internal("the host refused the result (too large?)"))
        }
    }

    fn fail(&self, error: &Error) -> i32 {
        if let Some(f) = self.raw.set_error {
            // SAFETY: a callback of the live call; the message is borrowed
            // for it.
            unsafe {
                f(
                    self.raw.call_ctx,
                    error.code,
                    error.os_errno,
                    error.message.as_ptr(),
                    error.message.len(),
                );
            }
        }
        if error.code < 0 {
            error.code
        } else {
            abi::E_INTERNAL
        }
    }
}

/// The progress callback of a call, detached from its lifetime (see
/// [`Call::forwarder`]).
#[cfg(feature = "bridge")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarder {
    progress: Option<unsafe extern "C" fn(*mut c_void, u64, u64) -> i32>,
    ctx: usize,
}

#[cfg(feature = "bridge")]
impl Forwarder {
    /// As [`Call::progress`]; only while the call it came from lasts.
    pub(crate) fn progress(&self, done: u64, total: u64) -> bool {
        match self.progress {
            // SAFETY: the bridge uses a forwarder only inside the call it
            // came from (the driver's future is run to completion there),
            // so the callback and its context are live.
            Some(f) => unsafe { f(self.ctx as *mut c_void, done, total) == 0 },
            None => true,
        }
    }
}

/// Which optional operations a plugin implements (filled by
/// [`export_plugin!`](crate::export_plugin)).
#[derive(Debug, Clone, Copy)]
pub struct Optional {
    /// `revert`.
    pub revert: bool,
    /// `list`.
    pub list: bool,
    /// `undo`.
    pub undo: bool,
    /// `export_diff` (ABI 1.1).
    pub export_diff: bool,
    /// `import_diff` (ABI 1.1).
    pub import_diff: bool,
}

impl Optional {
    /// None of them.
    pub const NONE: Self = Self {
        revert: false,
        list: false,
        undo: false,
        export_diff: false,
        import_diff: false,
    };
}

/// A plugin's static table (what the entry symbol returns).
#[repr(transparent)]
#[derive(Debug)]
pub struct StaticPlugin(PluginV1);

// SAFETY: the table is immutable and holds only function pointers and
// pointers to static C strings.
unsafe impl Sync for StaticPlugin {}

impl StaticPlugin {
    /// The table of `T` with the optional slots `optional` names.
    #[must_use]
    pub const fn new<T: Plugin>(optional: Optional) -> Self {
        #[allow(clippy::cast_possible_truncation)]
        let size = size_of::<PluginV1>() as u32;
        Self(PluginV1 {
            header: Header {
                struct_size: size,
                abi_major: abi::ABI_MAJOR,
                abi_minor: abi::ABI_MINOR,
            },
            thread_model: T::THREAD_MODEL,
            flags: 0,
            name: T::NAME.as_ptr().cast(),
            version: T::VERSION.as_ptr().cast(),
            description: match T::DESCRIPTION {
                Some(d) => d.as_ptr().cast(),
                None => std::ptr::null(),
            },
            open: Some(open::<T>),
            close: Some(close::<T>),
            capabilities: Some(capabilities::<T>),
            create: Some(create::<T>),
            delete: Some(delete::<T>),
            revert: if optional.revert {
                Some(revert::<T>)
            } else {
                None
            },
            list: if optional.list { Some(list::<T>) } else { None },
            undo: if optional.undo { Some(undo::<T>) } else { None },
            export_diff: if optional.export_diff {
                Some(export_diff::<T>)
            } else {
                None
            },
            import_diff: if optional.import_diff {
                Some(import_diff::<T>)
            } else {
                None
            },
        })
    }

    /// What the entry function returns.
    #[must_use]
    pub const fn as_ptr(&self) -> *const PluginV1 {
        &raw const self.0
    }
}

struct Instance<T> {
    plugin: T,
    poisoned: AtomicBool,
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// The documents a request may be.
trait Request: DeserializeOwned {
    fn requires(&self) -> &[String];
}

macro_rules! requests {
    ($($t:ty),*) => {$(
        impl Request for $t {
            fn requires(&self) -> &[String] {
                &self.requires
            }
        }
    )*};
}
requests!(
    CapabilitiesRequest,
    CreateRequest,
    DeleteRequest,
    RevertRequest,
    ListRequest,
    UndoRequest,
    ExportDiffRequest,
    ImportDiffRequest
);

/// The body of every operation trampoline.
///
/// # Safety
/// `instance` came from `open::<T>` and is not closed; `call` points to a
/// live call; `request` is readable for `len` bytes.
unsafe fn dispatch<T: Plugin, Q: Request, R: Serialize>(
    instance: *mut c_void,
    call: *const CallV1,
    request: *const u8,
    len: usize,
    writes: bool,
    op: fn(&T, Q, &Call<'_>) -> Result<R, Error>,
) -> i32 {
    // SAFETY: the caller's promise (the host hands a valid call).
    let Some(raw) = (unsafe { call.as_ref() }) else {
        return abi::E_INVALID_ARGUMENT;
    };
    let call = Call { raw };
    // SAFETY: the caller's promise: an instance made by `open::<T>`.
    let Some(instance) = (unsafe { instance.cast::<Instance<T>>().as_ref() }) else {
        return call.fail(&Error::invalid("NULL instance"));
    };
    if instance.poisoned.load(Ordering::Acquire) {
        return call.fail(&Error::new(
            abi::E_PANIC,
            "this plugin instance panicked earlier and refuses further calls; restart virtsnap",
        ));
    }
    let bytes: &[u8] = if len == 0 {
        &[]
    } else if request.is_null() {
        return call.fail(&Error::invalid("NULL request"));
    } else {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(request, len) }
    };
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), Error> {
        let request: Q = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("malformed request: {e}")))?;
        if let Some(feature) = unknown_feature(request.requires()) {
            return Err(Error::unsupported(format!(
                "the request requires feature '{feature}', which this plugin (built with plugin \
                 SDK {}.{}) does not know; rebuild the plugin with a newer SDK",
                abi::ABI_MAJOR,
                abi::ABI_MINOR
            )));
        }
        let out = op(&instance.plugin, request, &call)?;
        if writes {
            let json = serde_json::to_vec(&out).map_err(|e| Error::internal(e.to_string()))?;
            call.write(&json)?;
        }
        Ok(())
    }));
    match result {
        Ok(Ok(())) => abi::OK,
        Ok(Err(e)) => call.fail(&e),
        Err(payload) => {
            instance.poisoned.store(true, Ordering::Release);
            call.fail(&Error::new(abi::E_PANIC, panic_message(payload.as_ref())))
        }
    }
}

unsafe extern "C" fn open<T: Plugin>(
    call: *const CallV1,
    config: *const u8,
    len: usize,
) -> *mut c_void {
    // SAFETY: the host hands a valid call.
    let Some(raw) = (unsafe { call.as_ref() }) else {
        return std::ptr::null_mut();
    };
    let call = Call { raw };
    let bytes: &[u8] = if len == 0 || config.is_null() {
        &[]
    } else {
        // SAFETY: the ABI: `config` readable for `len` bytes.
        unsafe { std::slice::from_raw_parts(config, len) }
    };
    let made = catch_unwind(AssertUnwindSafe(|| {
        let config: OpenConfig = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("malformed configuration: {e}")))?;
        T::open(config, &call)
    }));
    match made {
        Ok(Ok(plugin)) => Box::into_raw(Box::new(Instance {
            plugin,
            poisoned: AtomicBool::new(false),
        }))
        .cast(),
        Ok(Err(e)) => {
            call.fail(&e);
            std::ptr::null_mut()
        }
        Err(payload) => {
            call.fail(&Error::new(abi::E_PANIC, panic_message(payload.as_ref())));
            std::ptr::null_mut()
        }
    }
}

unsafe extern "C" fn close<T: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A panic in a destructor is swallowed: the host cannot act on it.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the ABI: `close` is called once per instance made by
        // `open::<T>`, after every call on it.
        drop(unsafe { Box::from_raw(instance.cast::<Instance<T>>()) });
    }));
}

macro_rules! trampolines {
    ($($name:ident: $req:ty => $method:ident, $writes:expr;)*) => {$(
        unsafe extern "C" fn $name<T: Plugin>(
            instance: *mut c_void,
            call: *const CallV1,
            request: *const u8,
            len: usize,
        ) -> i32 {
            // SAFETY: the host's promises for an operation slot.
            unsafe { dispatch::<T, $req, _>(instance, call, request, len, $writes, T::$method) }
        }
    )*};
}

trampolines! {
    capabilities: CapabilitiesRequest => capabilities, true;
    create: CreateRequest => create, true;
    delete: DeleteRequest => delete, false;
    revert: RevertRequest => revert, true;
    list: ListRequest => list, true;
    undo: UndoRequest => undo, false;
    export_diff: ExportDiffRequest => export_diff, true;
    import_diff: ImportDiffRequest => import_diff, true;
}

/// Makes the crate a plugin serving `$ty` (a [`sdk::Plugin`](crate::sdk::Plugin)),
/// with the optional operations listed in braces (any of `revert`,
/// `list`, `undo`, `export_diff`, `import_diff`:
/// `export_plugin!(T { revert, list, undo, export_diff, import_diff })`).
/// It defines the static table and `virtsnap_plugin_entry_v1`; call it
/// once per `cdylib`.
///
/// ```
/// use plugin_abi::payload::{
///     Capabilities, CapabilitiesRequest, CreateRequest, CreatedSnapshot, DeleteRequest,
///     ListRequest, ListResult, OpenConfig,
/// };
/// use plugin_abi::sdk::{Call, Error, Plugin};
///
/// /// Declines every volume: a plugin that does nothing, correctly.
/// struct Nothing;
///
/// impl Plugin for Nothing {
///     const NAME: &'static std::ffi::CStr = c"nothing";
///     const VERSION: &'static std::ffi::CStr = c"1.0";
///
///     fn open(_config: OpenConfig, _call: &Call<'_>) -> Result<Self, Error> {
///         Ok(Self)
///     }
///     fn capabilities(&self, _r: CapabilitiesRequest, _c: &Call<'_>) -> Result<Capabilities, Error> {
///         Ok(Capabilities::default())
///     }
///     fn create(&self, r: CreateRequest, _c: &Call<'_>) -> Result<CreatedSnapshot, Error> {
///         Err(Error::unsupported(format!("nothing takes {}", r.volume.path)))
///     }
///     fn delete(&self, _r: DeleteRequest, _c: &Call<'_>) -> Result<(), Error> {
///         Ok(())
///     }
///     fn list(&self, _r: ListRequest, _c: &Call<'_>) -> Result<ListResult, Error> {
///         Ok(ListResult::default())
///     }
/// }
///
/// plugin_abi::export_plugin!(Nothing { list });
///
/// // What the host sees:
/// let table = virtsnap_plugin_entry_v1(std::ptr::null());
/// assert!(!table.is_null());
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        $crate::export_plugin!($ty {});
    };
    ($ty:ty { $($op:ident),* $(,)? }) => {
        #[cfg(panic = "abort")]
        compile_error!(
            "virtsnap plugins must be built with panic = \"unwind\": the SDK turns a panic \
             into an error the host reports, which abort would make a crash of virtsnap"
        );

        #[doc(hidden)]
        #[allow(clippy::needless_update)]
        static __VIRTSNAP_PLUGIN: $crate::sdk::StaticPlugin =
            $crate::sdk::StaticPlugin::new::<$ty>($crate::sdk::Optional {
                $($op: true,)*
                ..$crate::sdk::Optional::NONE
            });

        /// The plugin's entry point (ABI 1).
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn virtsnap_plugin_entry_v1(
            _host: *const $crate::abi::HostV1,
        ) -> *const $crate::abi::PluginV1 {
            __VIRTSNAP_PLUGIN.as_ptr()
        }
    };
}
