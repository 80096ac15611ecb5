//! The C side of the plugin ABI, version 1: the `#[repr(C)]` structs, the
//! error codes and the constants `include/virtsnap_plugin.h` declares.
//! Nothing here allocates or depends on anything; a test compiles a C
//! probe against the header and compares every size and offset with these
//! definitions.
//!
//! Rules every struct follows (see the crate docs for the whole contract):
//! fields are fixed-width integers, pointers and nullable function
//! pointers, naturally aligned, no `bool`, `enum` or bitfield; each struct
//! starts with the frozen 8-byte [`Header`]; later minor versions only
//! append fields.

use std::ffi::c_void;

/// The ABI major version this host and SDK speak. It is part of the entry
/// symbol's name ([`ENTRY_SYMBOL`]): a plugin for another major exports
/// another symbol.
pub const ABI_MAJOR: u16 = 1;
/// The ABI minor version this host and SDK speak (fields appended in a
/// minor are read only when the other side's `struct_size` covers them).
/// 1.1 appended the `export_diff` and `import_diff` slots to
/// [`PluginV1`] and defined the request feature `network-volume`.
pub const ABI_MINOR: u16 = 1;

/// The entry symbol of ABI major 1, NUL-terminated.
pub const ENTRY_SYMBOL: &str = "virtsnap_plugin_entry_v1";

/// Operation finished.
pub const OK: i32 = 0;
/// The request is malformed or names something the plugin cannot take.
pub const E_INVALID_ARGUMENT: i32 = -1;
/// The volume or snapshot does not exist.
pub const E_NOT_FOUND: i32 = -2;
/// What the operation would create exists already.
pub const E_EXISTS: i32 = -3;
/// The plugin cannot do this for this volume (the message says what to do
/// instead).
pub const E_UNSUPPORTED: i32 = -4;
/// The volume is in use (a running guest has it open).
pub const E_BUSY: i32 = -5;
/// Permission denied.
pub const E_PERMISSION: i32 = -6;
/// An I/O error (`os_errno` says which).
pub const E_IO: i32 = -7;
/// The storage is full; nothing was changed.
pub const E_NO_SPACE: i32 = -8;
/// The storage is not what the request says (a snapshot's data missing).
pub const E_INCONSISTENT: i32 = -9;
/// A snapshot's content does not match its recorded checksum; nothing
/// was changed.
pub const E_CHECKSUM_MISMATCH: i32 = -10;
/// The host asked to stop (a `progress` callback returned non-zero).
pub const E_CANCELLED: i32 = -11;
/// Anything else: a bug or an unexpected state in the plugin.
pub const E_INTERNAL: i32 = -12;
/// The plugin panicked (Rust SDK); the instance refuses further calls.
pub const E_PANIC: i32 = -13;
/// The snapshot name is not one the storage can take.
pub const E_INVALID_NAME: i32 = -14;

/// One call at a time across the whole plugin (the safe default).
pub const THREAD_MODEL_SERIALIZE_ALL: u32 = 0;
/// One call at a time per instance.
pub const THREAD_MODEL_SERIALIZE_INSTANCE: u32 = 1;
/// Any number of calls at once, on any thread.
pub const THREAD_MODEL_PARALLEL: u32 = 2;

/// Log levels of the `log` callbacks.
pub const LOG_ERROR: i32 = 1;
/// Something unexpected that did not stop the operation.
pub const LOG_WARN: i32 = 2;
/// What the plugin is doing.
pub const LOG_INFO: i32 = 3;
/// Details for debugging.
pub const LOG_DEBUG: i32 = 4;

/// The frozen first 8 bytes of every ABI struct, in every major version.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `sizeof` the whole struct as its author compiled it.
    pub struct_size: u32,
    /// The ABI major version it was compiled for.
    pub abi_major: u16,
    /// The ABI minor version it was compiled for.
    pub abi_minor: u16,
}

/// A log callback: `level` is one of the `LOG_*` levels, the message is
/// UTF-8 of `len` bytes (no NUL), borrowed for the call.
pub type LogFn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, level: i32, msg: *const u8, len: usize)>;

/// What the host offers a plugin when it loads it (`virtsnap_host_v1`):
/// borrowed for the entry call only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostV1 {
    /// The header (`abi_major` 1).
    pub header: Header,
    /// The host's version, NUL-terminated UTF-8, valid during the entry
    /// call.
    pub host_version: *const u8,
    /// The context for `log`.
    pub host_ctx: *mut c_void,
    /// Logs a message through the host.
    pub log: LogFn,
}

/// What the host hands every operation (`virtsnap_call_v1`): borrowed for
/// that call only. Results and errors go back through its callbacks,
/// which copy what they are given.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CallV1 {
    /// The header (`abi_major` 1).
    pub header: Header,
    /// The context every callback takes first.
    pub call_ctx: *mut c_void,
    /// Appends `len` bytes to the call's result document (UTF-8 JSON).
    /// Returns 0, or non-zero when the host refuses (the result is too
    /// large): the plugin then returns an error.
    pub write_result:
        Option<unsafe extern "C" fn(ctx: *mut c_void, data: *const u8, len: usize) -> i32>,
    /// Records the call's error: a negative `E_*` code, the OS errno (0
    /// if none) and a UTF-8 message of `len` bytes saying what failed and
    /// what to do. The last call wins.
    pub set_error: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            code: i32,
            os_errno: i32,
            msg: *const u8,
            len: usize,
        ),
    >,
    /// Logs a message through the host.
    pub log: LogFn,
    /// Reports progress of a long operation in bytes. Returns non-zero
    /// when the host asks the plugin to stop (it then cleans up and
    /// returns `E_CANCELLED`).
    pub progress: Option<unsafe extern "C" fn(ctx: *mut c_void, done: u64, total: u64) -> i32>,
}

/// An operation slot: `request` is a UTF-8 JSON document of `len` bytes
/// borrowed for the call. Returns [`OK`] or a negative `E_*` code (after
/// `set_error`).
pub type OpFn = Option<
    unsafe extern "C" fn(
        instance: *mut c_void,
        call: *const CallV1,
        request: *const u8,
        len: usize,
    ) -> i32,
>;

/// What a plugin is (`virtsnap_plugin_v1`): returned by the entry
/// function, static for the life of the library (the host never unloads
/// it). The host copies the prefix it knows and treats slots beyond the
/// plugin's `struct_size` as NULL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginV1 {
    /// The header (`abi_major` 1, `struct_size` = `sizeof` this struct).
    pub header: Header,
    /// One of the `THREAD_MODEL_*` values.
    pub thread_model: u32,
    /// Reserved: must be 0.
    pub flags: u32,
    /// The driver's name (`[a-z0-9][a-z0-9-]*`, at most 63 bytes),
    /// NUL-terminated: what users pass to `--driver` and what snapshot
    /// metadata records.
    pub name: *const u8,
    /// The plugin's own version, NUL-terminated UTF-8.
    pub version: *const u8,
    /// One line on what it snapshots, NUL-terminated UTF-8, or NULL.
    pub description: *const u8,
    /// Required. Makes an instance from the configuration document
    /// (`{"host_version": ..., "options": {...}}`), or returns NULL after
    /// `set_error`.
    pub open: Option<
        unsafe extern "C" fn(call: *const CallV1, config: *const u8, len: usize) -> *mut c_void,
    >,
    /// Required. Releases an instance; called exactly once per instance,
    /// never during another call on it.
    pub close: Option<unsafe extern "C" fn(instance: *mut c_void)>,
    /// Required. What it can do with a volume in a state.
    pub capabilities: OpFn,
    /// Required. Takes a snapshot.
    pub create: OpFn,
    /// Required. Removes a snapshot's storage.
    pub delete: OpFn,
    /// Optional. Reverts a volume to a snapshot.
    pub revert: OpFn,
    /// Optional. Lists the snapshots the storage holds.
    pub list: OpFn,
    /// Optional. Undoes a create that succeeded; when NULL the host
    /// deletes the snapshot as the volume's current one, without parent
    /// or children.
    pub undo: OpFn,
    // ---- ABI 1.1 ----
    /// Optional (1.1). Writes the changes between two snapshots of a
    /// volume to a new file (an incremental export); NULL, or beyond a
    /// 1.0 plugin's `struct_size`, means unsupported.
    pub export_diff: OpFn,
    /// Optional (1.1). Replays a file `export_diff` wrote on a volume,
    /// creating the export's end snapshot there.
    pub import_diff: OpFn,
}

/// `sizeof(virtsnap_plugin_v1)` in ABI 1.0 (up to and including `undo`,
/// 104 bytes on LP64): the least a plugin may declare.
pub const PLUGIN_V1_0_SIZE: usize = std::mem::offset_of!(PluginV1, export_diff);
/// `sizeof(virtsnap_plugin_v1)` in ABI 1.1 (up to and including
/// `import_diff`).
pub const PLUGIN_V1_1_SIZE: usize = size_of::<PluginV1>();
/// `sizeof(virtsnap_call_v1)` in ABI 1.0.
pub const CALL_V1_0_SIZE: usize = size_of::<CallV1>();
/// `sizeof(virtsnap_host_v1)` in ABI 1.0.
pub const HOST_V1_0_SIZE: usize = size_of::<HostV1>();

/// The entry function's type: returns the plugin's description, or NULL
/// to refuse this host (after logging why).
pub type EntryFn = unsafe extern "C" fn(host: *const HostV1) -> *const PluginV1;

// The layout is the ABI: these fail the build if a field moves (x86_64
// and aarch64 Linux, LP64).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Header>() == 8);
    assert!(size_of::<HostV1>() == 32);
    assert!(offset_of!(HostV1, host_version) == 8);
    assert!(offset_of!(HostV1, host_ctx) == 16);
    assert!(offset_of!(HostV1, log) == 24);
    assert!(size_of::<CallV1>() == 48);
    assert!(offset_of!(CallV1, call_ctx) == 8);
    assert!(offset_of!(CallV1, write_result) == 16);
    assert!(offset_of!(CallV1, set_error) == 24);
    assert!(offset_of!(CallV1, log) == 32);
    assert!(offset_of!(CallV1, progress) == 40);
    assert!(size_of::<PluginV1>() == 120);
    assert!(offset_of!(PluginV1, thread_model) == 8);
    assert!(offset_of!(PluginV1, flags) == 12);
    assert!(offset_of!(PluginV1, name) == 16);
    assert!(offset_of!(PluginV1, version) == 24);
    assert!(offset_of!(PluginV1, description) == 32);
    assert!(offset_of!(PluginV1, open) == 40);
    assert!(offset_of!(PluginV1, close) == 48);
    assert!(offset_of!(PluginV1, capabilities) == 56);
    assert!(offset_of!(PluginV1, create) == 64);
    assert!(offset_of!(PluginV1, delete) == 72);
    assert!(offset_of!(PluginV1, revert) == 80);
    assert!(offset_of!(PluginV1, list) == 88);
    assert!(offset_of!(PluginV1, undo) == 96);
    // ABI 1.1: appended after the 1.0 table, whose size stays 104.
    assert!(offset_of!(PluginV1, export_diff) == 104);
    assert!(offset_of!(PluginV1, import_diff) == 112);
    assert!(PLUGIN_V1_0_SIZE == 104);
    assert!(PLUGIN_V1_1_SIZE == 120);
};

/// A stable name for an error code (`E_NOT_FOUND` -> `"not-found"`), for
/// messages; `None` for a code this ABI does not define.
#[must_use]
pub fn error_name(code: i32) -> Option<&'static str> {
    Some(match code {
        OK => "ok",
        E_INVALID_ARGUMENT => "invalid-argument",
        E_NOT_FOUND => "not-found",
        E_EXISTS => "exists",
        E_UNSUPPORTED => "unsupported",
        E_BUSY => "busy",
        E_PERMISSION => "permission",
        E_IO => "io",
        E_NO_SPACE => "no-space",
        E_INCONSISTENT => "inconsistent",
        E_CHECKSUM_MISMATCH => "checksum-mismatch",
        E_CANCELLED => "cancelled",
        E_INTERNAL => "internal",
        E_PANIC => "panic",
        E_INVALID_NAME => "invalid-name",
        _ => return None,
    })
}
