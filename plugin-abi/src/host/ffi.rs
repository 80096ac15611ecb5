//! Every unsafe line of the host: opening a library, calling its entry
//! function, copying its table, and calling its slots with the host's
//! callbacks. Everything above this module is safe Rust that sees only
//! [`Table`] (an owned, validated copy of the plugin's `virtsnap_plugin_v1`),
//! [`Instance`] and [`RawOutcome`].
//!
//! Rules kept here: a library is opened with `RTLD_NOW | RTLD_LOCAL` from
//! an absolute path and never closed; the plugin's table is read only up
//! to the size both sides know; strings are copied out at load; every
//! host callback catches panics and checks its pointers.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;

use crate::abi::{self, CallV1, Header, HostV1, PluginV1};

/// The most a result may hold (a list of thousands of snapshots is far
/// below it): a plugin writing more is told to stop.
pub const MAX_RESULT: usize = 16 << 20;

/// What loading found, before validation.
#[derive(Debug)]
pub enum Entry {
    /// The entry returned this table (copied), with what the plugin
    /// logged meanwhile.
    Table {
        /// The header as the plugin wrote it.
        header: Header,
        /// The copied table (zeroed beyond the plugin's size).
        table: PluginV1,
        /// Log lines.
        log: Vec<String>,
    },
    /// The entry returned NULL.
    Refused {
        /// What it logged (why).
        log: Vec<String>,
    },
    /// The pointer returned is not aligned for the table.
    Misaligned,
    /// The library has no `virtsnap_plugin_entry_v1`; the other majors it
    /// exports, if any.
    Missing {
        /// Majors of `virtsnap_plugin_entry_vN` symbols found.
        other_majors: Vec<u32>,
    },
}

/// Opens `path` (absolute) and calls its entry function. The library is
/// never unloaded: every pointer the plugin hands out stays valid for the
/// rest of the process.
///
/// # Errors
/// `dlopen` failed (the message is `dlerror`'s).
pub fn open_and_enter(path: &Path, host_version: &CStr) -> Result<Entry, String> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's constructors; the caller has
    // checked that the file is owned by root or the user and not writable
    // by others (it is trusted like the virtsnap binary itself).
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
        std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
    })?;
    // Never unloaded (unloading Rust and C libraries with TLS or atexit
    // handlers is unsound); the handle is leaked on purpose.
    let lib: &'static Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol, if present, has the ABI's entry type (the name
    // is the ABI's promise).
    let entry = unsafe { lib.get::<abi::EntryFn>(b"virtsnap_plugin_entry_v1\0") };
    let Ok(entry) = entry else {
        let mut other_majors = Vec::new();
        for major in 2..=16u32 {
            let name = format!("virtsnap_plugin_entry_v{major}\0");
            // SAFETY: only the symbol's presence is checked; it is not called.
            if unsafe { lib.get::<*const c_void>(name.as_bytes()) }.is_ok() {
                other_majors.push(major);
            }
        }
        return Ok(Entry::Missing { other_majors });
    };
    let entry: abi::EntryFn = *entry;
    // Loads are serialised (dlerror is not thread-safe everywhere, and
    // the entry's log goes to one place).
    let _load = LOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    entry_log().clear();
    let host = HostV1 {
        header: Header {
            struct_size: u32::try_from(abi::HOST_V1_0_SIZE).unwrap_or(u32::MAX),
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
        },
        host_version: host_version.as_ptr().cast(),
        // The log goes to a static sink, so a plugin that keeps `host`
        // past the entry call (against the rules) logs harmlessly.
        host_ctx: std::ptr::null_mut(),
        log: Some(host_log),
    };
    // SAFETY: the entry function's contract: it reads `host` during the
    // call only, and returns NULL or a pointer to a static table.
    let table = unsafe { entry(&raw const host) };
    let log = std::mem::take(&mut *entry_log());
    if table.is_null() {
        return Ok(Entry::Refused { log });
    }
    if table.align_offset(align_of::<PluginV1>()) != 0 {
        return Ok(Entry::Misaligned);
    }
    // SAFETY: non-null and aligned; every struct of the ABI starts with
    // the 8-byte header.
    let header = unsafe { table.cast::<Header>().read() };
    let mut copy = zeroed_table();
    let known = size_of::<PluginV1>();
    let theirs = usize::try_from(header.struct_size).unwrap_or(usize::MAX);
    let len = known.min(theirs);
    // SAFETY: the plugin promises `struct_size` readable bytes at
    // `table`; we read at most that many, into a zeroed table whose every
    // field (integers, pointers, nullable fn pointers) is valid as zero.
    unsafe {
        std::ptr::copy_nonoverlapping(table.cast::<u8>(), (&raw mut copy).cast::<u8>(), len);
    }
    Ok(Entry::Table {
        header,
        table: copy,
        log,
    })
}

fn zeroed_table() -> PluginV1 {
    PluginV1 {
        header: Header {
            struct_size: 0,
            abi_major: 0,
            abi_minor: 0,
        },
        thread_model: 0,
        flags: 0,
        name: std::ptr::null(),
        version: std::ptr::null(),
        description: std::ptr::null(),
        open: None,
        close: None,
        capabilities: None,
        create: None,
        delete: None,
        revert: None,
        list: None,
        undo: None,
        export_diff: None,
        import_diff: None,
    }
}

/// A static string of the plugin's table: `None` for NULL, `Some(Err)`
/// for bytes that are not UTF-8 (lossy copy for the message).
#[must_use]
pub fn table_string(ptr: *const u8) -> Option<Result<String, String>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-NULL string of the table is NUL-terminated and static
    // (the ABI's memory rule 4; the library is never unloaded).
    let bytes = unsafe { CStr::from_ptr(ptr.cast()) }.to_bytes();
    Some(
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| String::from_utf8_lossy(bytes).into_owned()),
    )
}

/// The fields of a plugin's table the host calls, copied and checked
/// (required slots present) by the loader.
#[derive(Debug, Clone, Copy)]
pub struct Table(pub PluginV1);

// SAFETY: the table holds function pointers and pointers to static,
// immutable strings of a library that is never unloaded.
unsafe impl Send for Table {}
// SAFETY: as above; nothing in it is ever written after the copy.
unsafe impl Sync for Table {}

/// One of the operation slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `capabilities`.
    Capabilities,
    /// `create`.
    Create,
    /// `delete`.
    Delete,
    /// `revert`.
    Revert,
    /// `list`.
    List,
    /// `undo`.
    Undo,
    /// `export_diff` (ABI 1.1).
    ExportDiff,
    /// `import_diff` (ABI 1.1).
    ImportDiff,
}

impl Slot {
    /// Its name in the header.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Capabilities => "capabilities",
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Revert => "revert",
            Self::List => "list",
            Self::Undo => "undo",
            Self::ExportDiff => "export_diff",
            Self::ImportDiff => "import_diff",
        }
    }

    /// Its name as an operation of `plugin-list` (`export-diff`).
    #[must_use]
    pub fn operation(self) -> &'static str {
        match self {
            Self::ExportDiff => "export-diff",
            Self::ImportDiff => "import-diff",
            other => other.name(),
        }
    }
}

impl Table {
    fn op(&self, slot: Slot) -> abi::OpFn {
        match slot {
            Slot::Capabilities => self.0.capabilities,
            Slot::Create => self.0.create,
            Slot::Delete => self.0.delete,
            Slot::Revert => self.0.revert,
            Slot::List => self.0.list,
            Slot::Undo => self.0.undo,
            Slot::ExportDiff => self.0.export_diff,
            Slot::ImportDiff => self.0.import_diff,
        }
    }

    /// Whether the plugin fills `slot`.
    #[must_use]
    pub fn has(&self, slot: Slot) -> bool {
        self.op(slot).is_some()
    }

    /// Makes an instance from `config`.
    ///
    /// # Errors
    /// The plugin returned NULL: its outcome (error and log).
    pub fn open(&self, config: &[u8]) -> Result<Instance, RawOutcome> {
        let Some(open) = self.0.open else {
            return Err(RawOutcome::missing());
        };
        let state = CallState::new(None);
        let call = state.call();
        // SAFETY: `call` and `config` live until `open` returns (the
        // plugin may not keep them); `open` returns an opaque pointer.
        let ptr = unsafe { open(&raw const call, config.as_ptr(), config.len()) };
        let outcome = state.finish(0);
        if ptr.is_null() {
            return Err(outcome);
        }
        Ok(Instance {
            ptr,
            close: self.0.close,
        })
    }

    /// Calls `slot` on `instance` with `request`, forwarding progress to
    /// `progress` (its `false` asks the plugin to stop). `None` when the
    /// plugin has no such slot.
    pub fn call(
        &self,
        slot: Slot,
        instance: &Instance,
        request: &[u8],
        progress: Option<&(dyn Fn(u64, u64) -> bool + Sync)>,
    ) -> Option<RawOutcome> {
        let op = self.op(slot)?;
        let state = CallState::new(progress);
        let call = state.call();
        // SAFETY: the slot's contract: it reads `call` and `request`
        // during the call only and reports through the callbacks, whose
        // context (`state`) outlives the call. The instance pointer came
        // from this table's `open` and is not closed (the Instance is
        // borrowed).
        let rc = unsafe {
            op(
                instance.ptr,
                &raw const call,
                request.as_ptr(),
                request.len(),
            )
        };
        Some(state.finish(rc))
    }
}

/// An open instance of a plugin; closed (exactly once) when dropped.
#[derive(Debug)]
pub struct Instance {
    ptr: *mut c_void,
    close: Option<unsafe extern "C" fn(*mut c_void)>,
}

// SAFETY: the instance is opaque to the host; the plugin's thread model
// (enforced by the caller's locks) says which calls may overlap, and the
// ABI lets calls and `close` run on any thread.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(close) = self.close {
            // SAFETY: `ptr` came from `open` and is closed once, here, when
            // nothing can call it any more (the Instance is owned).
            unsafe { close(self.ptr) };
        }
    }
}

/// What a call left: its return code, the result bytes, the error it set
/// and whether it broke a rule of the callbacks.
#[derive(Debug, Default)]
pub struct RawOutcome {
    /// The return code.
    pub rc: i32,
    /// The result document's bytes.
    pub result: Vec<u8>,
    /// Whether `write_result` was called at all.
    pub wrote: bool,
    /// The error set: code, errno, message.
    pub error: Option<(i32, i32, String)>,
    /// A rule broken through the callbacks (a NULL pointer with a length,
    /// a result beyond [`MAX_RESULT`]).
    pub violation: Option<String>,
    /// Log lines (level, message).
    pub log: Vec<(i32, String)>,
}

impl RawOutcome {
    fn missing() -> Self {
        Self {
            rc: abi::E_UNSUPPORTED,
            ..Self::default()
        }
    }
}

struct CallState<'p> {
    outcome: Mutex<RawOutcome>,
    progress: Option<&'p (dyn Fn(u64, u64) -> bool + Sync)>,
}

impl<'p> CallState<'p> {
    fn new(progress: Option<&'p (dyn Fn(u64, u64) -> bool + Sync)>) -> Self {
        Self {
            outcome: Mutex::new(RawOutcome::default()),
            progress,
        }
    }

    fn call(&self) -> CallV1 {
        CallV1 {
            header: Header {
                struct_size: u32::try_from(abi::CALL_V1_0_SIZE).unwrap_or(u32::MAX),
                abi_major: abi::ABI_MAJOR,
                abi_minor: abi::ABI_MINOR,
            },
            call_ctx: std::ptr::from_ref(self).cast_mut().cast(),
            write_result: Some(write_result),
            set_error: Some(set_error),
            log: Some(call_log),
            progress: Some(progress),
        }
    }

    fn finish(self, rc: i32) -> RawOutcome {
        let mut outcome = self
            .outcome
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        outcome.rc = rc;
        outcome
    }

    fn with(&self, f: impl FnOnce(&mut RawOutcome)) {
        let mut guard = self
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard);
    }
}

/// The bytes at `ptr` (`len` of them), or `None` for NULL with a length.
///
/// # Safety
/// A non-NULL `ptr` must be readable for `len` bytes during the call.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// `ctx` must be the `call_ctx` of a live call.
unsafe fn state<'a>(ctx: *mut c_void) -> Option<&'a CallState<'a>> {
    // SAFETY: the caller's promise: `call_ctx` points at the CallState of
    // the call in progress.
    unsafe { ctx.cast::<CallState<'a>>().as_ref() }
}

unsafe extern "C" fn write_result(ctx: *mut c_void, data: *const u8, len: usize) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the ABI: `ctx` is this call's context, `data` readable
        // for `len` bytes during the callback.
        let (Some(state), data) = (unsafe { state(ctx) }, unsafe { bytes(data, len) }) else {
            return -1;
        };
        let mut rc = 0;
        state.with(|o| {
            o.wrote = true;
            match data {
                None => {
                    o.violation = Some(format!("write_result was given NULL with length {len}"));
                    rc = -1;
                }
                Some(_) if o.result.len().saturating_add(len) > MAX_RESULT => {
                    o.violation = Some(format!("its result exceeds {MAX_RESULT} bytes"));
                    rc = -1;
                }
                Some(d) => o.result.extend_from_slice(d),
            }
        });
        rc
    }))
    .unwrap_or(-1)
}

unsafe extern "C" fn set_error(
    ctx: *mut c_void,
    code: i32,
    errno: i32,
    msg: *const u8,
    len: usize,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `write_result`.
        let (Some(state), msg) = (unsafe { state(ctx) }, unsafe { bytes(msg, len) }) else {
            return;
        };
        let text = msg.map_or_else(
            || "(the plugin passed a NULL message)".to_string(),
            |m| String::from_utf8_lossy(m).into_owned(),
        );
        state.with(|o| o.error = Some((code, errno, text)));
    }));
}

unsafe extern "C" fn call_log(ctx: *mut c_void, level: i32, msg: *const u8, len: usize) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `write_result`.
        let (Some(state), Some(msg)) = (unsafe { state(ctx) }, unsafe { bytes(msg, len) }) else {
            return;
        };
        let text = String::from_utf8_lossy(msg).into_owned();
        state.with(|o| o.log.push((level, text)));
    }));
}

unsafe extern "C" fn progress(ctx: *mut c_void, done: u64, total: u64) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `write_result`.
        let Some(state) = (unsafe { state(ctx) }) else {
            return 1;
        };
        match state.progress {
            Some(f) if !f(done, total) => 1,
            _ => 0,
        }
    }))
    .unwrap_or(1)
}

static LOAD: Mutex<()> = Mutex::new(());
static ENTRY_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn entry_log() -> std::sync::MutexGuard<'static, Vec<String>> {
    ENTRY_LOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

unsafe extern "C" fn host_log(_ctx: *mut c_void, level: i32, msg: *const u8, len: usize) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the ABI: `msg` is readable for `len` bytes during the
        // callback.
        let Some(msg) = (unsafe { bytes(msg, len) }) else {
            return;
        };
        let line = format!("[{}] {}", level_name(level), String::from_utf8_lossy(msg));
        if let Ok(mut log) = ENTRY_LOG.try_lock()
            && log.len() < 100
        {
            log.push(line);
        }
    }));
}

/// The name of a log level.
#[must_use]
pub fn level_name(level: i32) -> &'static str {
    match level {
        abi::LOG_ERROR => "error",
        abi::LOG_WARN => "warn",
        abi::LOG_INFO => "info",
        _ => "debug",
    }
}
