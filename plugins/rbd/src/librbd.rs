//! A safe binding to librados and librbd, loaded at run time.
//!
//! `librados.so.2` and `librbd.so.1` are opened with `dlopen` the first
//! time [`Library::load`] is called (never linked), so virtsnap builds and
//! runs on machines without Ceph; only the `rbd` plugin needs them, and it
//! says which package to install when they are missing. Every entry point
//! is resolved up front, and the libraries are never unloaded.
//!
//! All unsafe code of the plugin lives in this file. The rest of the crate
//! sees [`Cluster`] → [`IoCtx`] → [`Image`], plain Rust values
//! ([`SnapInfo`], [`ChildImage`], …) and one error type, [`RbdError`],
//! which keeps librbd's errno.
//!
//! Rules kept here:
//! - a handle is closed by its owner's `Drop` only after every handle made
//!   from it: an [`Image`] holds its [`IoCtx`], which holds its [`Cluster`];
//! - strings go to C as `CString`s (a name with a NUL byte is an `EINVAL`
//!   error, never a panic) and come back copied, with librbd's own cleanup
//!   function called on what it allocated;
//! - list calls that answer `-ERANGE` are retried with the size librbd
//!   asks for (bounded);
//! - a Rust closure given to librbd as a callback (progress, diff extents)
//!   is called under a mutex (librbd may call it from its own threads, one
//!   at a time or not), never unwinds into C (a panic is caught, librbd is
//!   asked to stop, and the panic resumes once the C call has returned).
//!
//! Thread safety: [`Cluster`] and [`IoCtx`] are `Send + Sync` (a connected
//! librados handle is thread-safe, and an `IoCtx`'s settings are only
//! changed while it is created). [`Image`] is `Send` but not `Sync`: a
//! librbd image handle may move between threads, but to stay on the safe
//! side one handle is used by one thread at a time (only
//! [`Image::set_snap`], which changes what the handle reads, takes
//! `&mut self`).
//!
//! Snapshot namespaces: librbd's `rbd_snap_list` lists every snapshot of an
//! image, including those a group snapshot made (namespace "group", named
//! like `.group.<pool id>_<group id>_<group snap id>`) and removed ones a
//! format 2 clone still needs (namespace "trash", named by a UUID). The
//! by-name calls (`rbd_snap_create`, `rbd_snap_rollback`,
//! `rbd_snap_remove`, `rbd_snap_protect`, `rbd_snap_exists`, …) only see
//! the "user" namespace. So [`Image::snap_list`] returns user snapshots
//! only, like `rbd snap ls`; [`Image::snap_list_all`] returns all, with
//! [`SnapInfo::namespace`] saying which (a group snapshot is rolled back
//! and removed through the group calls).
#![allow(unsafe_code)]

use std::any::Any;
use std::ffi::{CStr, CString, OsStr, c_char, c_int, c_void};
use std::fmt;
use std::mem::ManuallyDrop;
use std::os::unix::ffi::OsStrExt as _;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use libloading::os::unix::{Library as DlLibrary, RTLD_LOCAL, RTLD_NOW};

/// The librados file opened by [`Library::load`].
pub const LIBRADOS: &str = "librados.so.2";
/// The librbd file opened by [`Library::load`].
pub const LIBRBD: &str = "librbd.so.1";

/// How long [`Cluster::connect`] waits for the monitors, and any later
/// monitor or OSD operation may take, unless [`ConnectOptions::options`]
/// set these librados options otherwise: a dead cluster gives
/// `ETIMEDOUT`, not a hang.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The object size of images made by [`IoCtx::create_image`]: 4 MiB.
pub const DEFAULT_ORDER: u64 = 22;

/// Linux errno values librbd returns (negated) that callers test for.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory (image, snapshot, pool, group missing).
    pub const ENOENT: i32 = 2;
    /// Input/output error.
    pub const EIO: i32 = 5;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Permission denied (cephx caps).
    pub const EACCES: i32 = 13;
    /// Device or resource busy (unprotect with clones, remove while open).
    pub const EBUSY: i32 = 16;
    /// File exists (image, snapshot or group already there).
    pub const EEXIST: i32 = 17;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Invalid argument (also: a malformed diff file, a name with a NUL).
    pub const EINVAL: i32 = 22;
    /// Read-only file system (write to a snapshot or read-only handle).
    pub const EROFS: i32 = 30;
    /// Result too large (librbd's "buffer too small").
    pub const ERANGE: i32 = 34;
    /// Function not implemented (a librbd entry point is missing).
    pub const ENOSYS: i32 = 38;
    /// Directory not empty.
    pub const ENOTEMPTY: i32 = 39;
    /// Value too large for defined data type.
    pub const EOVERFLOW: i32 = 75;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
    /// Connection timed out (a dead or unreachable cluster).
    pub const ETIMEDOUT: i32 = 110;
    /// Operation canceled (a callback asked librbd to stop).
    pub const ECANCELED: i32 = 125;
}

// ---------------------------------------------------------------------------
// Errors

/// A failed librados/librbd call (or a check of this binding), with the
/// call and its object ("rbd_snap_create rbd/ns/img@s1") and librbd's
/// errno, kept as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {message} (errno {errno})")]
pub struct RbdError {
    op: String,
    errno: i32,
    message: String,
}

impl RbdError {
    /// An error with its own message.
    pub fn new(op: impl Into<String>, errno: i32, message: impl Into<String>) -> Self {
        Self {
            op: op.into(),
            errno,
            message: message.into(),
        }
    }

    /// An error whose message is the system's text for `errno` (positive).
    pub fn from_errno(op: impl Into<String>, errno: i32) -> Self {
        Self::new(op, errno, strerror(errno))
    }

    /// An I/O error of the standard library (its OS errno, or `EIO`).
    #[must_use]
    pub fn from_io(op: impl Into<String>, err: &std::io::Error) -> Self {
        let errno = err.raw_os_error().unwrap_or(errno::EIO);
        Self::new(op, errno, strip_os_error(err.to_string()))
    }

    /// The call and object that failed, e.g. `rbd_snap_create rbd/ns/img@s1`.
    #[must_use]
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The (positive) errno, e.g. 17 for `EEXIST`.
    #[must_use]
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// What went wrong, without the op and errno.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The system's text for `errno` ("File exists").
fn strerror(errno: i32) -> String {
    strip_os_error(std::io::Error::from_raw_os_error(errno).to_string())
}

/// "File exists (os error 17)" → "File exists".
fn strip_os_error(text: String) -> String {
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

type Result<T, E = RbdError> = std::result::Result<T, E>;

/// `Ok(r)` for `r >= 0`, else the error for `-r`.
fn check(r: c_int, op: impl FnOnce() -> String) -> Result<c_int> {
    if r < 0 {
        Err(RbdError::from_errno(op(), r.saturating_neg()))
    } else {
        Ok(r)
    }
}

/// [`check`] for the `ssize_t` results of I/O calls.
fn check_size(r: isize, op: impl FnOnce() -> String) -> Result<usize> {
    usize::try_from(r).map_err(|_| {
        let errno = i32::try_from(r.saturating_neg()).unwrap_or(errno::EIO);
        RbdError::from_errno(op(), errno)
    })
}

/// `value` as a C string; a NUL byte inside is an `EINVAL` error.
fn c_string(what: &str, value: &str, op: impl FnOnce() -> String) -> Result<CString> {
    CString::new(value).map_err(|_| {
        RbdError::new(
            op(),
            errno::EINVAL,
            format!("{what} {value:?} contains a NUL byte"),
        )
    })
}

/// A path as a C string (paths are bytes on Unix).
fn c_path(path: &Path, op: impl FnOnce() -> String) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        RbdError::new(
            op(),
            errno::EINVAL,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

/// Copies a C string librbd returned (NULL → "").
fn copy_string(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: every non-NULL string pointer this file copies comes from
    // librbd/librados, which return NUL-terminated strings that stay valid
    // until the matching cleanup call, made after the copy.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    String::from_utf8_lossy(bytes).into_owned()
}

/// The NUL-separated names of a buffer librbd filled (`rbd_group_list`,
/// `rbd_namespace_list`): empty entries (the padding) are dropped.
fn split_names(buf: &[u8]) -> Vec<String> {
    buf.split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect()
}

/// Bound on the `-ERANGE` retries of list calls (the size librbd asks for
/// is exact, so one retry is the norm; more means the list keeps growing).
const MAX_RETRIES: usize = 16;

// ---------------------------------------------------------------------------
// The C interface (librados.h, librbd.h of Ceph 16.2)

type RadosT = *mut c_void;
type IoctxT = *mut c_void;
type ImageT = *mut c_void;
type OptionsT = *mut c_void;
/// `librbd_progress_fn_t`.
type ProgressFn = unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int;
/// The callback of `rbd_diff_iterate2`.
type DiffFn = unsafe extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int;

/// `RBD_IMAGE_OPTION_FEATURES`.
const RBD_IMAGE_OPTION_FEATURES: c_int = 1;
/// `RBD_IMAGE_OPTION_ORDER`.
const RBD_IMAGE_OPTION_ORDER: c_int = 2;
/// `RBD_IMAGE_OPTION_CLONE_FORMAT`.
const RBD_IMAGE_OPTION_CLONE_FORMAT: c_int = 12;
/// `RBD_SNAP_REMOVE_UNPROTECT`.
const RBD_SNAP_REMOVE_UNPROTECT: u32 = 1 << 0;
/// `RBD_SNAP_REMOVE_FLATTEN`.
const RBD_SNAP_REMOVE_FLATTEN: u32 = 1 << 1;

/// `rbd_image_spec_t`.
#[repr(C)]
struct CImageSpec {
    id: *mut c_char,
    name: *mut c_char,
}

/// `rbd_linked_image_spec_t`.
#[repr(C)]
struct CLinkedImageSpec {
    pool_id: i64,
    pool_name: *mut c_char,
    pool_namespace: *mut c_char,
    image_id: *mut c_char,
    image_name: *mut c_char,
    trash: bool,
}

/// `rbd_image_watcher_t`.
#[repr(C)]
struct CWatcher {
    addr: *mut c_char,
    id: i64,
    cookie: u64,
}

/// `rbd_snap_spec_t`.
#[repr(C)]
struct CSnapSpec {
    id: u64,
    namespace_type: c_int,
    name: *mut c_char,
}

/// `rbd_snap_info_t`.
#[repr(C)]
struct CSnapInfo {
    id: u64,
    size: u64,
    name: *const c_char,
}

/// `rbd_group_image_info_t`.
#[repr(C)]
struct CGroupImageInfo {
    name: *mut c_char,
    pool: i64,
    state: c_int,
}

/// `rbd_group_snap_info_t`.
#[repr(C)]
struct CGroupSnapInfo {
    name: *mut c_char,
    state: c_int,
}

/// `rbd_snap_group_namespace_t`.
#[repr(C)]
struct CSnapGroupNamespace {
    group_pool: i64,
    group_name: *mut c_char,
    group_snap_name: *mut c_char,
}

/// `struct timespec` of glibc on 64-bit Linux (`time_t` and `long` are
/// 64-bit); on other targets snapshot timestamps are not read.
#[repr(C)]
struct CTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

// The layouts, as `cc` computed them from the Ceph 16.2 headers on x86_64.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<CImageSpec>() == 16);
    assert!(size_of::<CLinkedImageSpec>() == 48);
    assert!(std::mem::offset_of!(CLinkedImageSpec, trash) == 40);
    assert!(size_of::<CSnapSpec>() == 24);
    assert!(size_of::<CWatcher>() == 24);
    assert!(std::mem::offset_of!(CSnapSpec, name) == 16);
    assert!(size_of::<CSnapInfo>() == 24);
    assert!(size_of::<CGroupImageInfo>() == 24);
    assert!(std::mem::offset_of!(CGroupImageInfo, state) == 16);
    assert!(size_of::<CGroupSnapInfo>() == 16);
    assert!(size_of::<CSnapGroupNamespace>() == 24);
    assert!(size_of::<CTimespec>() == 16);
};

impl CLinkedImageSpec {
    const EMPTY: Self = Self {
        pool_id: 0,
        pool_name: ptr::null_mut(),
        pool_namespace: ptr::null_mut(),
        image_id: ptr::null_mut(),
        image_name: ptr::null_mut(),
        trash: false,
    };
}

/// Declares the entry points: each is resolved from its library when the
/// libraries are loaded, and called through the field of the same name.
macro_rules! entry_points {
    ($( $lib:ident fn $name:ident($($arg:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
        /// The resolved entry points.
        struct Fns {
            $( $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
        }

        impl Fns {
            fn resolve(rados: &DlLibrary, rbd: &DlLibrary) -> Result<Self> {
                Ok(Self {
                    $( $name: {
                        let (lib, file) = entry_points!(@pick $lib, rados, rbd);
                        // SAFETY: the symbol, from the library librados.h or
                        // librbd.h declares it in, has the type declared here
                        // (transcribed from the Ceph 16.2 headers; the struct
                        // layouts are checked above).
                        let sym = unsafe {
                            lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                                stringify!($name),
                            )
                        };
                        match sym {
                            Ok(sym) => *sym,
                            Err(err) => return Err(missing_symbol(file, stringify!($name), &err)),
                        }
                    }, )*
                })
            }
        }
    };
    (@pick rados, $rados:ident, $rbd:ident) => { ($rados, LIBRADOS) };
    (@pick rbd, $rados:ident, $rbd:ident) => { ($rbd, LIBRBD) };
}

entry_points! {
    rados fn rados_version(*mut c_int, *mut c_int, *mut c_int);
    rados fn rados_create(*mut RadosT, *const c_char) -> c_int;
    rados fn rados_conf_read_file(RadosT, *const c_char) -> c_int;
    rados fn rados_conf_set(RadosT, *const c_char, *const c_char) -> c_int;
    rados fn rados_connect(RadosT) -> c_int;
    rados fn rados_shutdown(RadosT);
    rados fn rados_pool_reverse_lookup(RadosT, i64, *mut c_char, usize) -> c_int;
    rados fn rados_ioctx_create(RadosT, *const c_char, *mut IoctxT) -> c_int;
    rados fn rados_ioctx_destroy(IoctxT);
    rados fn rados_ioctx_set_namespace(IoctxT, *const c_char);

    rbd fn rbd_version(*mut c_int, *mut c_int, *mut c_int);
    rbd fn rbd_image_options_create(*mut OptionsT);
    rbd fn rbd_image_options_destroy(OptionsT);
    rbd fn rbd_image_options_set_uint64(OptionsT, c_int, u64) -> c_int;
    rbd fn rbd_create4(IoctxT, *const c_char, u64, OptionsT) -> c_int;
    rbd fn rbd_clone3(IoctxT, *const c_char, *const c_char, IoctxT, *const c_char, OptionsT) -> c_int;
    rbd fn rbd_remove(IoctxT, *const c_char) -> c_int;
    rbd fn rbd_list2(IoctxT, *mut CImageSpec, *mut usize) -> c_int;
    rbd fn rbd_image_spec_list_cleanup(*mut CImageSpec, usize);
    rbd fn rbd_open(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int;
    rbd fn rbd_open_read_only(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int;
    rbd fn rbd_open_by_id_read_only(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int;
    rbd fn rbd_close(ImageT) -> c_int;
    rbd fn rbd_get_size(ImageT, *mut u64) -> c_int;
    rbd fn rbd_get_features(ImageT, *mut u64) -> c_int;
    rbd fn rbd_resize(ImageT, u64) -> c_int;
    rbd fn rbd_get_id(ImageT, *mut c_char, usize) -> c_int;
    rbd fn rbd_get_parent(ImageT, *mut CLinkedImageSpec, *mut CSnapSpec) -> c_int;
    rbd fn rbd_linked_image_spec_cleanup(*mut CLinkedImageSpec);
    rbd fn rbd_linked_image_spec_list_cleanup(*mut CLinkedImageSpec, usize);
    rbd fn rbd_snap_spec_cleanup(*mut CSnapSpec);
    rbd fn rbd_read(ImageT, u64, usize, *mut c_char) -> isize;
    rbd fn rbd_write(ImageT, u64, usize, *const c_char) -> isize;
    rbd fn rbd_discard(ImageT, u64, u64) -> c_int;
    rbd fn rbd_write_zeroes(ImageT, u64, usize, c_int, c_int) -> isize;
    rbd fn rbd_flush(ImageT) -> c_int;
    rbd fn rbd_watchers_list(ImageT, *mut CWatcher, *mut usize) -> c_int;
    rbd fn rbd_watchers_list_cleanup(*mut CWatcher, usize);
    rbd fn rbd_snap_list(ImageT, *mut CSnapInfo, *mut c_int) -> c_int;
    rbd fn rbd_snap_list_end(*mut CSnapInfo);
    rbd fn rbd_snap_exists(ImageT, *const c_char, *mut bool) -> c_int;
    rbd fn rbd_snap_create(ImageT, *const c_char) -> c_int;
    rbd fn rbd_snap_remove(ImageT, *const c_char) -> c_int;
    rbd fn rbd_snap_remove2(ImageT, *const c_char, u32, Option<ProgressFn>, *mut c_void) -> c_int;
    rbd fn rbd_snap_rollback(ImageT, *const c_char) -> c_int;
    rbd fn rbd_snap_rollback_with_progress(ImageT, *const c_char, Option<ProgressFn>, *mut c_void) -> c_int;
    rbd fn rbd_snap_protect(ImageT, *const c_char) -> c_int;
    rbd fn rbd_snap_unprotect(ImageT, *const c_char) -> c_int;
    rbd fn rbd_snap_is_protected(ImageT, *const c_char, *mut c_int) -> c_int;
    rbd fn rbd_snap_get_timestamp(ImageT, u64, *mut CTimespec) -> c_int;
    rbd fn rbd_snap_set(ImageT, *const c_char) -> c_int;
    rbd fn rbd_snap_get_namespace_type(ImageT, u64, *mut c_int) -> c_int;
    rbd fn rbd_snap_get_group_namespace(ImageT, u64, *mut CSnapGroupNamespace, usize) -> c_int;
    rbd fn rbd_snap_group_namespace_cleanup(*mut CSnapGroupNamespace, usize) -> c_int;
    rbd fn rbd_snap_get_trash_namespace(ImageT, u64, *mut c_char, usize) -> c_int;
    rbd fn rbd_flatten(ImageT) -> c_int;
    rbd fn rbd_flatten_with_progress(ImageT, Option<ProgressFn>, *mut c_void) -> c_int;
    rbd fn rbd_list_children3(ImageT, *mut CLinkedImageSpec, *mut usize) -> c_int;
    rbd fn rbd_diff_iterate2(ImageT, *const c_char, u64, u64, u8, u8, Option<DiffFn>, *mut c_void) -> c_int;
    rbd fn rbd_group_create(IoctxT, *const c_char) -> c_int;
    rbd fn rbd_group_remove(IoctxT, *const c_char) -> c_int;
    rbd fn rbd_group_list(IoctxT, *mut c_char, *mut usize) -> c_int;
    rbd fn rbd_group_image_add(IoctxT, *const c_char, IoctxT, *const c_char) -> c_int;
    rbd fn rbd_group_image_remove(IoctxT, *const c_char, IoctxT, *const c_char) -> c_int;
    rbd fn rbd_group_image_list(IoctxT, *const c_char, *mut CGroupImageInfo, usize, *mut usize) -> c_int;
    rbd fn rbd_group_image_list_cleanup(*mut CGroupImageInfo, usize, usize) -> c_int;
    rbd fn rbd_group_snap_create(IoctxT, *const c_char, *const c_char) -> c_int;
    rbd fn rbd_group_snap_remove(IoctxT, *const c_char, *const c_char) -> c_int;
    rbd fn rbd_group_snap_list(IoctxT, *const c_char, *mut CGroupSnapInfo, usize, *mut usize) -> c_int;
    rbd fn rbd_group_snap_list_cleanup(*mut CGroupSnapInfo, usize, usize) -> c_int;
    rbd fn rbd_group_snap_rollback_with_progress(IoctxT, *const c_char, *const c_char, Option<ProgressFn>, *mut c_void) -> c_int;
    rbd fn rbd_namespace_create(IoctxT, *const c_char) -> c_int;
    rbd fn rbd_namespace_remove(IoctxT, *const c_char) -> c_int;
    rbd fn rbd_namespace_exists(IoctxT, *const c_char, *mut bool) -> c_int;
    rbd fn rbd_namespace_list(IoctxT, *mut c_char, *mut usize) -> c_int;
}

fn missing_symbol(file: &str, name: &str, err: &libloading::Error) -> RbdError {
    RbdError::new(
        format!("dlsym {file}"),
        errno::ENOSYS,
        format!(
            "{name} not found in {file} ({}); the Ceph client libraries are too old \
             (Ceph 15 or later is needed)",
            dl_message(err)
        ),
    )
}

/// `dlerror`'s text for a libloading error.
fn dl_message(err: &libloading::Error) -> String {
    std::error::Error::source(err).map_or_else(|| err.to_string(), ToString::to_string)
}

// ---------------------------------------------------------------------------
// Library

/// librados and librbd, opened and resolved. Only `&'static Library`
/// exists: the libraries are never unloaded.
pub struct Library {
    fns: Fns,
    // Kept (not dropped: a `Library` is never dropped) so the handles are
    // visibly owned.
    _rados: ManuallyDrop<DlLibrary>,
    _rbd: ManuallyDrop<DlLibrary>,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.rbd_version();
        write!(f, "Library {{ librbd: {a}.{b}.{c} }}")
    }
}

static DEFAULT_LIBRARY: OnceLock<&'static Library> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

impl Library {
    /// Opens `librados.so.2` and `librbd.so.1` (once per process) and
    /// resolves every entry point.
    ///
    /// # Errors
    /// A library is missing (`ENOENT`, the message names the package to
    /// install), does not load, or lacks an entry point (`ENOSYS`). A
    /// failure is not remembered: a later call tries again.
    pub fn load() -> Result<&'static Library> {
        if let Some(lib) = DEFAULT_LIBRARY.get() {
            return Ok(lib);
        }
        let _one = LOADING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lib) = DEFAULT_LIBRARY.get() {
            return Ok(lib);
        }
        let lib = Self::open(OsStr::new(LIBRADOS), OsStr::new(LIBRBD))?;
        Ok(DEFAULT_LIBRARY.get_or_init(|| lib))
    }

    /// Opens the given files (names searched like `dlopen` does, or
    /// paths) instead of the default ones. Each successful call keeps the
    /// libraries loaded for the rest of the process; use [`Library::load`]
    /// unless the files differ.
    ///
    /// # Errors
    /// As [`Library::load`].
    pub fn open(librados: &OsStr, librbd: &OsStr) -> Result<&'static Library> {
        let rados = dlopen(librados)?;
        let rbd = dlopen(librbd)?;
        let fns = Fns::resolve(&rados, &rbd)?;
        Ok(Box::leak(Box::new(Library {
            fns,
            _rados: ManuallyDrop::new(rados),
            _rbd: ManuallyDrop::new(rbd),
        })))
    }

    /// librbd's version (`rbd_version`), e.g. (1, 16, 0) for Ceph 16.2.
    #[must_use]
    pub fn rbd_version(&self) -> (i32, i32, i32) {
        let (mut a, mut b, mut c) = (0, 0, 0);
        // SAFETY: rbd_version writes three ints through valid pointers.
        unsafe { (self.fns.rbd_version)(&raw mut a, &raw mut b, &raw mut c) };
        (a, b, c)
    }

    /// librados's version (`rados_version`), e.g. (3, 0, 0) for Ceph 16.2.
    #[must_use]
    pub fn rados_version(&self) -> (i32, i32, i32) {
        let (mut a, mut b, mut c) = (0, 0, 0);
        // SAFETY: rados_version writes three ints through valid pointers.
        unsafe { (self.fns.rados_version)(&raw mut a, &raw mut b, &raw mut c) };
        (a, b, c)
    }
}

/// The package that ships each default library, for the error message.
fn package_hint(file: &OsStr) -> Option<&'static str> {
    match file.to_str()? {
        LIBRBD => Some("librbd1"),
        LIBRADOS => Some("librados2"),
        _ => None,
    }
}

fn dlopen(file: &OsStr) -> Result<DlLibrary> {
    // SAFETY: loading runs the library's constructors. librados and librbd
    // are the system's Ceph client libraries (trusted like libc); they are
    // opened RTLD_LOCAL and never closed.
    let opened = unsafe { DlLibrary::open(Some(file), RTLD_NOW | RTLD_LOCAL) };
    opened.map_err(|err| load_error(file, &dl_message(&err)))
}

/// The error for a failed `dlopen` of `file` (`detail`: dlerror's text).
fn load_error(file: &OsStr, detail: &str) -> RbdError {
    let name = file.to_string_lossy();
    let op = format!("dlopen {name}");
    let not_found = detail.contains("No such file") || detail.contains("cannot open shared");
    match (not_found, package_hint(file)) {
        (true, Some(package)) => RbdError::new(
            op,
            errno::ENOENT,
            format!("{name} not found: install {package} (Debian: apt-get install {package})"),
        ),
        (true, None) => RbdError::new(op, errno::ENOENT, format!("{name} not found ({detail})")),
        (false, _) => RbdError::new(op, errno::EIO, detail),
    }
}

// ---------------------------------------------------------------------------
// Callbacks: Rust closures handed to librbd

/// The first panic of a callback, resumed once the C call returned.
type Panic = Mutex<Option<Box<dyn Any + Send>>>;

/// A progress closure behind a `librbd_progress_fn_t` and its `void *`.
struct Progress<'a> {
    f: Mutex<&'a mut (dyn FnMut(u64, u64) -> bool + Send)>,
    stopped: Mutex<bool>,
    panic: Panic,
}

/// Calls the closure of the `Progress` that `arg` points to. Its `false`
/// or a panic (caught: it must not unwind into C) answers `-ECANCELED`,
/// which stops the operation where librbd honours it; later calls are not
/// passed on.
unsafe extern "C" fn progress_trampoline(offset: u64, total: u64, arg: *mut c_void) -> c_int {
    if arg.is_null() {
        return 0;
    }
    // SAFETY: `arg` is the `&Progress` made by `with_progress` for the C
    // call in progress; librbd calls back only until that call returns,
    // and the `Progress` outlives the call. It is `Sync`, so calls from
    // librbd's threads share it soundly.
    let ctx = unsafe { &*arg.cast::<Progress<'_>>() };
    let mut panic = ctx.panic.lock().unwrap_or_else(PoisonError::into_inner);
    let mut stopped = ctx.stopped.lock().unwrap_or_else(PoisonError::into_inner);
    if panic.is_some() || *stopped {
        return -errno::ECANCELED;
    }
    let called = catch_unwind(AssertUnwindSafe(|| {
        let mut f = ctx.f.lock().unwrap_or_else(PoisonError::into_inner);
        f(offset, total)
    }));
    match called {
        Ok(true) => 0,
        Ok(false) => {
            *stopped = true;
            -errno::ECANCELED
        }
        Err(payload) => {
            *panic = Some(payload);
            -errno::ECANCELED
        }
    }
}

/// Runs `call` with a C progress callback and argument calling `progress`;
/// resumes the closure's panic, if any, after `call` returned.
fn with_progress<R>(
    progress: &mut (dyn FnMut(u64, u64) -> bool + Send),
    call: impl FnOnce(Option<ProgressFn>, *mut c_void) -> R,
) -> R {
    let ctx = Progress {
        f: Mutex::new(progress),
        stopped: Mutex::new(false),
        panic: Mutex::new(None),
    };
    let arg = ptr::from_ref(&ctx).cast_mut().cast::<c_void>();
    let r = call(Some(progress_trampoline), arg);
    if let Some(payload) = ctx
        .panic
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        resume_unwind(payload);
    }
    r
}

/// A diff closure behind `rbd_diff_iterate2`'s callback and `void *`.
struct DiffCtx<'a, E> {
    f: Mutex<&'a mut (dyn FnMut(u64, u64, bool) -> Result<(), E> + Send)>,
    error: Mutex<Option<E>>,
    panic: Panic,
}

/// Calls the closure of the `DiffCtx<E>` that `arg` points to; its error
/// or panic stops the iteration (`-ECANCELED`) and is kept for the caller.
unsafe extern "C" fn diff_trampoline<E: Send>(
    offset: u64,
    len: usize,
    exists: c_int,
    arg: *mut c_void,
) -> c_int {
    if arg.is_null() {
        return -errno::EINVAL;
    }
    // SAFETY: `arg` is the `&DiffCtx<E>` made by `Image::diff_iterate` (same
    // `E`, the trampoline is instantiated with it) for the
    // `rbd_diff_iterate2` call in progress, which outlives every callback;
    // `DiffCtx<E>` is `Sync` for `E: Send`.
    let ctx = unsafe { &*arg.cast::<DiffCtx<'_, E>>() };
    let mut panic = ctx.panic.lock().unwrap_or_else(PoisonError::into_inner);
    let mut error = ctx.error.lock().unwrap_or_else(PoisonError::into_inner);
    if panic.is_some() || error.is_some() {
        return -errno::ECANCELED;
    }
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    let called = catch_unwind(AssertUnwindSafe(|| {
        let mut f = ctx.f.lock().unwrap_or_else(PoisonError::into_inner);
        f(offset, len, exists != 0)
    }));
    match called {
        Ok(Ok(())) => 0,
        Ok(Err(err)) => {
            *error = Some(err);
            -errno::ECANCELED
        }
        Err(payload) => {
            *panic = Some(payload);
            -errno::ECANCELED
        }
    }
}

// The callbacks' contexts are shared with librbd's threads.
const _: () = {
    const fn sync<T: Sync>() {}
    sync::<Progress<'static>>();
    sync::<DiffCtx<'static, RbdError>>();
};

// ---------------------------------------------------------------------------
// Cluster

/// How to reach and log in to a cluster (what a connection is keyed by).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConnectOptions {
    /// A ceph.conf to read. `None`: without `mon_host`, librados's default
    /// search ($CEPH_CONF, /etc/ceph/ceph.conf, ~/.ceph/config,
    /// ./ceph.conf); with `mon_host`, no file at all.
    pub conf: Option<PathBuf>,
    /// The client id, without "client." (default "admin").
    pub id: Option<String>,
    /// Monitor addresses (`mon_host`), e.g. "[v2:10.0.0.1:3300]".
    pub mon_host: Option<String>,
    /// A keyring file (`keyring`).
    pub keyring: Option<PathBuf>,
    /// The secret key itself, base64 (`key`).
    pub key: Option<String>,
    /// Other librados options (`rados_conf_set`), applied last: they
    /// override what this binding sets over the conf file:
    /// [`DEFAULT_TIMEOUT`] for `client_mount_timeout`,
    /// `rados_mon_op_timeout` and `rados_osd_op_timeout` ("0" waits
    /// forever), and false for `log_to_stderr` and `err_to_stderr`
    /// (errors come back as [`RbdError`]s; `log_file` still logs).
    pub options: Vec<(String, String)>,
}

struct ClusterInner {
    lib: &'static Library,
    handle: RadosT,
}

// SAFETY: a librados cluster handle is thread-safe once connected; it is
// only configured inside `Cluster::connect_with`, before any other thread
// can see it.
unsafe impl Send for ClusterInner {}
// SAFETY: as above.
unsafe impl Sync for ClusterInner {}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        // SAFETY: the handle came from rados_create and is shut down once;
        // every ioctx and image made from it holds this value alive, so
        // none is left (rados_shutdown is also right for a handle that
        // never connected).
        unsafe { (self.lib.fns.rados_shutdown)(self.handle) };
    }
}

/// A connection to a Ceph cluster (librados `rados_t`). Cheap to clone;
/// shut down when the last clone, [`IoCtx`] and [`Image`] are dropped.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Loads the libraries ([`Library::load`]) and connects.
    ///
    /// # Errors
    /// See [`Library::load`] and [`Cluster::connect_with`].
    pub fn connect(opts: &ConnectOptions) -> Result<Cluster> {
        Self::connect_with(Library::load()?, opts)
    }

    /// Connects through the given libraries.
    ///
    /// # Errors
    /// A conf file that cannot be read, an option librados rejects, a name
    /// with a NUL byte (`EINVAL`), or `rados_connect` failing (e.g.
    /// `ETIMEDOUT` for a dead cluster, `EACCES`/`EPERM` for a bad key).
    pub fn connect_with(lib: &'static Library, opts: &ConnectOptions) -> Result<Cluster> {
        let fns = &lib.fns;
        let id = opts.id.as_deref().unwrap_or("admin");
        let c_id = c_string("client id", id, || "rados_create".into())?;
        let mut handle: RadosT = ptr::null_mut();
        // SAFETY: valid out-pointer and C string; on success the handle is
        // owned by `inner` right below.
        let r = unsafe { (fns.rados_create)(&raw mut handle, c_id.as_ptr()) };
        check(r, || format!("rados_create client.{id}"))?;
        let inner = ClusterInner { lib, handle };

        if let Some(conf) = &opts.conf {
            let op = || format!("rados_conf_read_file {}", conf.display());
            let path = c_path(conf, op)?;
            // SAFETY: an unconnected handle and a C string path.
            let r = unsafe { (fns.rados_conf_read_file)(handle, path.as_ptr()) };
            check(r, op)?;
        } else if opts.mon_host.is_none() {
            // SAFETY: NULL asks librados to search its default paths.
            let r = unsafe { (fns.rados_conf_read_file)(handle, ptr::null()) };
            check(r, || {
                "rados_conf_read_file (default search: $CEPH_CONF, /etc/ceph/ceph.conf, \
                 ~/.ceph/config, ./ceph.conf)"
                    .into()
            })?;
        }

        let secs = DEFAULT_TIMEOUT.as_secs().to_string();
        let mut settings: Vec<(&str, String)> = vec![
            ("client_mount_timeout", secs.clone()),
            ("rados_mon_op_timeout", secs.clone()),
            ("rados_osd_op_timeout", secs),
            // Every failure comes back as an RbdError: librados's own
            // error lines on stderr would only repeat it.
            ("log_to_stderr", "false".into()),
            ("err_to_stderr", "false".into()),
        ];
        if let Some(mon_host) = &opts.mon_host {
            settings.push(("mon_host", mon_host.clone()));
        }
        if let Some(keyring) = &opts.keyring {
            settings.push(("keyring", keyring.to_string_lossy().into_owned()));
        }
        if let Some(key) = &opts.key {
            settings.push(("key", key.clone()));
        }
        for (name, value) in &opts.options {
            settings.push((name.as_str(), value.clone()));
        }
        for (name, value) in &settings {
            let op = || format!("rados_conf_set {name}");
            let c_name = c_string("option", name, op)?;
            let c_value = c_string("value", value, op)?;
            // SAFETY: an unconnected handle and two C strings.
            let r = unsafe { (fns.rados_conf_set)(handle, c_name.as_ptr(), c_value.as_ptr()) };
            check(r, op)?;
        }

        // SAFETY: a configured, unconnected handle.
        let r = unsafe { (fns.rados_connect)(handle) };
        check(r, || format!("rados_connect client.{id}"))?;
        Ok(Cluster {
            inner: Arc::new(inner),
        })
    }

    /// The libraries this cluster uses.
    #[must_use]
    pub fn library(&self) -> &'static Library {
        self.inner.lib
    }

    /// An I/O context for `pool`, in the RBD namespace `namespace`
    /// (`None` or "": the default namespace).
    ///
    /// # Errors
    /// The pool does not exist (`ENOENT`), or a name has a NUL byte.
    pub fn ioctx(&self, pool: &str, namespace: Option<&str>) -> Result<IoCtx> {
        let fns = &self.inner.lib.fns;
        let namespace = namespace.unwrap_or("");
        let op = || format!("rados_ioctx_create {pool}");
        let c_pool = c_string("pool", pool, op)?;
        let c_ns = c_string("namespace", namespace, op)?;
        let mut handle: IoctxT = ptr::null_mut();
        // SAFETY: a connected cluster, a C string and a valid out-pointer.
        let r = unsafe {
            (fns.rados_ioctx_create)(self.inner.handle, c_pool.as_ptr(), &raw mut handle)
        };
        check(r, op)?;
        let inner = IoCtxInner {
            cluster: Arc::clone(&self.inner),
            handle,
            pool: pool.to_string(),
            namespace: namespace.to_string(),
        };
        // SAFETY: the new ioctx is not shared yet (setting the namespace is
        // not thread-safe); NULL is never passed, "" is the default.
        unsafe { (fns.rados_ioctx_set_namespace)(handle, c_ns.as_ptr()) };
        Ok(IoCtx {
            inner: Arc::new(inner),
        })
    }

    /// The name of pool `id` (`rados_pool_reverse_lookup`).
    ///
    /// # Errors
    /// No such pool (`ENOENT`).
    pub fn pool_name(&self, id: i64) -> Result<String> {
        let fns = &self.inner.lib.fns;
        let mut buf = vec![0u8; 128];
        for _ in 0..MAX_RETRIES {
            // SAFETY: a connected cluster and a writable buffer of the
            // length given.
            let r = unsafe {
                (fns.rados_pool_reverse_lookup)(
                    self.inner.handle,
                    id,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if r == -errno::ERANGE {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            check(r, || format!("rados_pool_reverse_lookup {id}"))?;
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        Err(RbdError::from_errno(
            format!("rados_pool_reverse_lookup {id}"),
            errno::ERANGE,
        ))
    }
}

// ---------------------------------------------------------------------------
// IoCtx

struct IoCtxInner {
    cluster: Arc<ClusterInner>,
    handle: IoctxT,
    pool: String,
    namespace: String,
}

// SAFETY: the ioctx's settings (the namespace) are only changed in
// `Cluster::ioctx`, before it is shared; librados I/O and the librbd calls
// taking an ioctx (which copy it) are thread-safe.
unsafe impl Send for IoCtxInner {}
// SAFETY: as above.
unsafe impl Sync for IoCtxInner {}

impl Drop for IoCtxInner {
    fn drop(&mut self) {
        // SAFETY: created by rados_ioctx_create and destroyed once; images
        // opened from it hold this value, so none is left; the cluster
        // (held by `self.cluster`) is still connected.
        unsafe { (self.cluster.lib.fns.rados_ioctx_destroy)(self.handle) };
    }
}

impl IoCtxInner {
    fn fns(&self) -> &'static Fns {
        &self.cluster.lib.fns
    }

    /// "pool/name" or "pool/namespace/name", as the rbd CLI writes it.
    fn spec(&self, name: &str) -> String {
        if self.namespace.is_empty() {
            format!("{}/{name}", self.pool)
        } else {
            format!("{}/{}/{name}", self.pool, self.namespace)
        }
    }
}

/// A pool and RBD namespace (librados `rados_ioctx_t`): images, clones,
/// groups and namespaces are made and listed here. Cheap to clone.
#[derive(Clone)]
pub struct IoCtx {
    inner: Arc<IoCtxInner>,
}

impl fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoCtx")
            .field("pool", &self.inner.pool)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// How [`IoCtx::clone_image_with`] makes a clone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloneOptions {
    /// Clone format: 1 (the parent snapshot must be protected; same
    /// namespace only) or 2 (Ceph 13+ clients; a removed parent snapshot
    /// waits in the trash namespace for its clones). `None`: the
    /// cluster's `rbd_default_clone_format` ("auto": 2 when the cluster
    /// requires mimic clients, else 1).
    pub format: Option<u8>,
    /// Feature bits (`None`: the cluster's `rbd_default_features`).
    pub features: Option<u64>,
}

/// An image of a consistency group (`rbd_group_image_info_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupImage {
    /// Image name.
    pub name: String,
    /// Id of the image's pool ([`Cluster::pool_name`] names it).
    pub pool_id: i64,
    /// Whether adding the image finished.
    pub state: GroupImageState,
}

/// `rbd_group_image_state_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupImageState {
    /// In the group.
    Attached,
    /// Being added (or the add was interrupted).
    Incomplete,
    /// A value this binding does not know.
    Unknown(i32),
}

/// A snapshot of a consistency group (`rbd_group_snap_info_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapInfo {
    /// Group snapshot name.
    pub name: String,
    /// Whether every image's snapshot was taken.
    pub state: GroupSnapState,
}

/// `rbd_group_snap_state_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSnapState {
    /// Interrupted while being taken (remove it).
    Incomplete,
    /// Taken on every image.
    Complete,
    /// A value this binding does not know.
    Unknown(i32),
}

impl IoCtx {
    /// The pool's name.
    #[must_use]
    pub fn pool(&self) -> &str {
        &self.inner.pool
    }

    /// The RBD namespace ("" for the default one).
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The cluster this context belongs to.
    #[must_use]
    pub fn cluster(&self) -> Cluster {
        Cluster {
            inner: Arc::clone(&self.inner.cluster),
        }
    }

    /// "pool/name" or "pool/namespace/name", as the rbd CLI writes it.
    #[must_use]
    pub fn spec(&self, name: &str) -> String {
        self.inner.spec(name)
    }

    fn fns(&self) -> &'static Fns {
        self.inner.fns()
    }

    /// Creates image `name` of `size` bytes with 4 MiB objects
    /// ([`DEFAULT_ORDER`]) and `features` (`None`: the cluster's
    /// `rbd_default_features`), with `rbd_create4`.
    ///
    /// # Errors
    /// `EEXIST` if it exists; others from librbd.
    pub fn create_image(&self, name: &str, size: u64, features: Option<u64>) -> Result<()> {
        let op = || format!("rbd_create4 {}", self.spec(name));
        let c_name = c_string("image name", name, op)?;
        let opts = ImageOptions::new(self.fns());
        opts.set(RBD_IMAGE_OPTION_ORDER, DEFAULT_ORDER, op)?;
        if let Some(features) = features {
            opts.set(RBD_IMAGE_OPTION_FEATURES, features, op)?;
        }
        // SAFETY: a valid ioctx, C string and options handle.
        let r = unsafe {
            (self.fns().rbd_create4)(self.inner.handle, c_name.as_ptr(), size, opts.handle)
        };
        check(r, op).map(drop)
    }

    /// Removes image `name` (which must have no snapshots).
    ///
    /// # Errors
    /// `ENOENT`, `ENOTEMPTY` (it has snapshots), `EBUSY` (open elsewhere
    /// or has clones), …
    pub fn remove_image(&self, name: &str) -> Result<()> {
        let op = || format!("rbd_remove {}", self.spec(name));
        let c_name = c_string("image name", name, op)?;
        // SAFETY: a valid ioctx and C string.
        let r = unsafe { (self.fns().rbd_remove)(self.inner.handle, c_name.as_ptr()) };
        check(r, op).map(drop)
    }

    /// The names of the images in this pool and namespace (`rbd_list2`).
    ///
    /// # Errors
    /// From librbd.
    pub fn list_images(&self) -> Result<Vec<String>> {
        let op = || format!("rbd_list2 {}", self.spec("").trim_end_matches('/'));
        let mut cap = 64usize;
        for _ in 0..MAX_RETRIES {
            let mut buf: Vec<CImageSpec> = (0..cap)
                .map(|_| CImageSpec {
                    id: ptr::null_mut(),
                    name: ptr::null_mut(),
                })
                .collect();
            let mut n = cap;
            // SAFETY: a buffer of `n` specs and its length.
            let r =
                unsafe { (self.fns().rbd_list2)(self.inner.handle, buf.as_mut_ptr(), &raw mut n) };
            if r == -errno::ERANGE && n > cap {
                cap = n;
                continue;
            }
            check(r, op)?;
            let n = n.min(cap);
            let names = buf[..n].iter().map(|s| copy_string(s.name)).collect();
            // SAFETY: librbd filled `n` entries, freed here once.
            unsafe { (self.fns().rbd_image_spec_list_cleanup)(buf.as_mut_ptr(), n) };
            return Ok(names);
        }
        Err(RbdError::from_errno(op(), errno::ERANGE))
    }

    /// Opens image `name` read-write at its head.
    ///
    /// # Errors
    /// `ENOENT` if there is no such image.
    pub fn open(&self, name: &str) -> Result<Image> {
        self.open_image(name, None, false)
    }

    /// Opens image `name` read-only, at snapshot `snap` or at its head.
    ///
    /// # Errors
    /// `ENOENT` if there is no such image or snapshot.
    pub fn open_read_only(&self, name: &str, snap: Option<&str>) -> Result<Image> {
        self.open_image(name, snap, true)
    }

    fn open_image(&self, name: &str, snap: Option<&str>, read_only: bool) -> Result<Image> {
        let call = if read_only {
            "rbd_open_read_only"
        } else {
            "rbd_open"
        };
        let op = || format!("{call} {}", at_snap(&self.spec(name), snap));
        let c_name = c_string("image name", name, op)?;
        let c_snap = snap.map(|s| c_string("snapshot name", s, op)).transpose()?;
        let c_snap_ptr = c_snap.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        let open = if read_only {
            self.fns().rbd_open_read_only
        } else {
            self.fns().rbd_open
        };
        let mut handle: ImageT = ptr::null_mut();
        // SAFETY: a valid ioctx, C strings (or NULL for the head) and a
        // valid out-pointer; on success the handle is owned by the Image.
        let r = unsafe {
            open(
                self.inner.handle,
                c_name.as_ptr(),
                &raw mut handle,
                c_snap_ptr,
            )
        };
        check(r, op)?;
        Ok(Image {
            handle,
            io: Arc::clone(&self.inner),
            name: name.to_string(),
            snap: snap.map(str::to_string),
            read_only,
        })
    }

    /// Opens image `id` read-only at `snap` (used to look at one snapshot
    /// without moving a caller's handle).
    fn open_by_id_read_only(&self, id: &str, name: &str, snap: Option<&str>) -> Result<Image> {
        let op = || {
            format!(
                "rbd_open_by_id_read_only {}",
                at_snap(&self.spec(name), snap)
            )
        };
        let c_id = c_string("image id", id, op)?;
        let c_snap = snap.map(|s| c_string("snapshot name", s, op)).transpose()?;
        let c_snap_ptr = c_snap.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        let mut handle: ImageT = ptr::null_mut();
        // SAFETY: as in `open_image`.
        let r = unsafe {
            (self.fns().rbd_open_by_id_read_only)(
                self.inner.handle,
                c_id.as_ptr(),
                &raw mut handle,
                c_snap_ptr,
            )
        };
        check(r, op)?;
        Ok(Image {
            handle,
            io: Arc::clone(&self.inner),
            name: name.to_string(),
            snap: snap.map(str::to_string),
            read_only: true,
        })
    }

    /// Whether image `name` exists (opens it read-only).
    ///
    /// # Errors
    /// Errors other than `ENOENT`.
    pub fn image_exists(&self, name: &str) -> Result<bool> {
        match self.open_read_only(name, None) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == errno::ENOENT => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Clones `parent_image@parent_snap` (in this context) to `child_name`
    /// in `child` (`rbd_clone3`), with the cluster's default features and
    /// clone format, except that a clone into another namespace is made
    /// in format 2 (format 1 cannot cross namespaces: `EXDEV`). Format 1
    /// needs the snapshot protected; format 2 does not.
    ///
    /// # Errors
    /// `ENOENT`, `EEXIST`, `EINVAL` (snapshot not protected, clone v1), …
    pub fn clone_image(
        &self,
        parent_image: &str,
        parent_snap: &str,
        child: &IoCtx,
        child_name: &str,
    ) -> Result<()> {
        let format = (self.namespace() != child.namespace()).then_some(2);
        self.clone_image_with(
            parent_image,
            parent_snap,
            child,
            child_name,
            &CloneOptions {
                format,
                features: None,
            },
        )
    }

    /// [`IoCtx::clone_image`] with the clone format and features given.
    ///
    /// # Errors
    /// As [`IoCtx::clone_image`].
    pub fn clone_image_with(
        &self,
        parent_image: &str,
        parent_snap: &str,
        child: &IoCtx,
        child_name: &str,
        options: &CloneOptions,
    ) -> Result<()> {
        let op = || {
            format!(
                "rbd_clone3 {}@{parent_snap} -> {}",
                self.spec(parent_image),
                child.spec(child_name)
            )
        };
        let c_parent = c_string("image name", parent_image, op)?;
        let c_snap = c_string("snapshot name", parent_snap, op)?;
        let c_child = c_string("image name", child_name, op)?;
        let opts = ImageOptions::new(self.fns());
        if let Some(format) = options.format {
            opts.set(RBD_IMAGE_OPTION_CLONE_FORMAT, u64::from(format), op)?;
        }
        if let Some(features) = options.features {
            opts.set(RBD_IMAGE_OPTION_FEATURES, features, op)?;
        }
        // SAFETY: two valid ioctxs, C strings and an options handle.
        let r = unsafe {
            (self.fns().rbd_clone3)(
                self.inner.handle,
                c_parent.as_ptr(),
                c_snap.as_ptr(),
                child.inner.handle,
                c_child.as_ptr(),
                opts.handle,
            )
        };
        check(r, op).map(drop)
    }

    // --- namespaces -----------------------------------------------------

    /// Creates RBD namespace `name` in this pool (`rbd_namespace_create`).
    ///
    /// # Errors
    /// `EEXIST`, …
    pub fn namespace_create(&self, name: &str) -> Result<()> {
        self.namespace_call(
            "rbd_namespace_create",
            name,
            self.fns().rbd_namespace_create,
        )
    }

    /// Removes RBD namespace `name` of this pool (it must be empty).
    ///
    /// # Errors
    /// `ENOENT`, `EBUSY` (not empty), …
    pub fn namespace_remove(&self, name: &str) -> Result<()> {
        self.namespace_call(
            "rbd_namespace_remove",
            name,
            self.fns().rbd_namespace_remove,
        )
    }

    fn namespace_call(
        &self,
        call: &str,
        name: &str,
        f: unsafe extern "C" fn(IoctxT, *const c_char) -> c_int,
    ) -> Result<()> {
        let op = || format!("{call} {}/{name}", self.inner.pool);
        let c_name = c_string("namespace", name, op)?;
        // SAFETY: a valid ioctx and C string.
        let r = unsafe { f(self.inner.handle, c_name.as_ptr()) };
        check(r, op).map(drop)
    }

    /// Whether RBD namespace `name` exists in this pool.
    ///
    /// # Errors
    /// From librbd.
    pub fn namespace_exists(&self, name: &str) -> Result<bool> {
        let op = || format!("rbd_namespace_exists {}/{name}", self.inner.pool);
        let c_name = c_string("namespace", name, op)?;
        let mut exists = false;
        // SAFETY: a valid ioctx, C string and out-pointer.
        let r = unsafe {
            (self.fns().rbd_namespace_exists)(self.inner.handle, c_name.as_ptr(), &raw mut exists)
        };
        check(r, op)?;
        Ok(exists)
    }

    /// The RBD namespaces of this pool.
    ///
    /// # Errors
    /// From librbd.
    pub fn namespace_list(&self) -> Result<Vec<String>> {
        let op = || format!("rbd_namespace_list {}", self.inner.pool);
        self.name_list(op, |buf, len| {
            // SAFETY: a valid ioctx, a writable buffer and its length.
            unsafe { (self.fns().rbd_namespace_list)(self.inner.handle, buf, len) }
        })
    }

    /// Runs a "NUL-separated names" list call, growing on `-ERANGE`.
    fn name_list(
        &self,
        op: impl Fn() -> String,
        call: impl Fn(*mut c_char, *mut usize) -> c_int,
    ) -> Result<Vec<String>> {
        let mut cap = 1024usize;
        for _ in 0..MAX_RETRIES {
            // One spare byte: some of these calls end the list with a NUL
            // past the names.
            let mut buf = vec![0u8; cap + 1];
            let mut len = cap;
            let r = call(buf.as_mut_ptr().cast(), &raw mut len);
            if r == -errno::ERANGE && len > cap {
                cap = len;
                continue;
            }
            check(r, &op)?;
            return Ok(split_names(&buf[..cap]));
        }
        Err(RbdError::from_errno(op(), errno::ERANGE))
    }

    // --- groups ---------------------------------------------------------

    /// Creates consistency group `name`.
    ///
    /// # Errors
    /// `EEXIST`, …
    pub fn group_create(&self, name: &str) -> Result<()> {
        self.group_call("rbd_group_create", name, self.fns().rbd_group_create)
    }

    /// Removes group `name` (and its group snapshots; the images stay).
    ///
    /// # Errors
    /// `ENOENT`, …
    pub fn group_remove(&self, name: &str) -> Result<()> {
        self.group_call("rbd_group_remove", name, self.fns().rbd_group_remove)
    }

    fn group_call(
        &self,
        call: &str,
        name: &str,
        f: unsafe extern "C" fn(IoctxT, *const c_char) -> c_int,
    ) -> Result<()> {
        let op = || format!("{call} {}", self.spec(name));
        let c_name = c_string("group name", name, op)?;
        // SAFETY: a valid ioctx and C string.
        let r = unsafe { f(self.inner.handle, c_name.as_ptr()) };
        check(r, op).map(drop)
    }

    /// The groups of this pool and namespace.
    ///
    /// # Errors
    /// From librbd.
    pub fn group_list(&self) -> Result<Vec<String>> {
        let op = || format!("rbd_group_list {}", self.spec("").trim_end_matches('/'));
        self.name_list(op, |buf, len| {
            // SAFETY: a valid ioctx, a writable buffer and its length.
            unsafe { (self.fns().rbd_group_list)(self.inner.handle, buf, len) }
        })
    }

    /// Adds image `image` (of `image_ioctx`) to group `group` (of this
    /// context).
    ///
    /// # Errors
    /// `ENOENT`, `EEXIST` (already in a group), …
    pub fn group_image_add(&self, group: &str, image_ioctx: &IoCtx, image: &str) -> Result<()> {
        self.group_image_call(
            "rbd_group_image_add",
            group,
            image_ioctx,
            image,
            self.fns().rbd_group_image_add,
        )
    }

    /// Removes image `image` (of `image_ioctx`) from group `group`.
    ///
    /// # Errors
    /// `ENOENT`, …
    pub fn group_image_remove(&self, group: &str, image_ioctx: &IoCtx, image: &str) -> Result<()> {
        self.group_image_call(
            "rbd_group_image_remove",
            group,
            image_ioctx,
            image,
            self.fns().rbd_group_image_remove,
        )
    }

    fn group_image_call(
        &self,
        call: &str,
        group: &str,
        image_ioctx: &IoCtx,
        image: &str,
        f: unsafe extern "C" fn(IoctxT, *const c_char, IoctxT, *const c_char) -> c_int,
    ) -> Result<()> {
        let op = || format!("{call} {} {}", self.spec(group), image_ioctx.spec(image));
        let c_group = c_string("group name", group, op)?;
        let c_image = c_string("image name", image, op)?;
        // SAFETY: two valid ioctxs and C strings.
        let r = unsafe {
            f(
                self.inner.handle,
                c_group.as_ptr(),
                image_ioctx.inner.handle,
                c_image.as_ptr(),
            )
        };
        check(r, op).map(drop)
    }

    /// The images of group `group` (none if the group does not exist:
    /// librbd answers an empty list).
    ///
    /// # Errors
    /// From librbd.
    pub fn group_image_list(&self, group: &str) -> Result<Vec<GroupImage>> {
        let op = || format!("rbd_group_image_list {}", self.spec(group));
        let c_group = c_string("group name", group, op)?;
        let fns = self.fns();
        let mut cap = 16usize;
        for _ in 0..MAX_RETRIES {
            let mut buf: Vec<CGroupImageInfo> = (0..cap)
                .map(|_| CGroupImageInfo {
                    name: ptr::null_mut(),
                    pool: 0,
                    state: 0,
                })
                .collect();
            let mut n = cap;
            // SAFETY: a valid ioctx, C string, a buffer of `n` entries of
            // the size given, and its length.
            let r = unsafe {
                (fns.rbd_group_image_list)(
                    self.inner.handle,
                    c_group.as_ptr(),
                    buf.as_mut_ptr(),
                    size_of::<CGroupImageInfo>(),
                    &raw mut n,
                )
            };
            if r == -errno::ERANGE && n > cap {
                cap = n;
                continue;
            }
            check(r, op)?;
            let n = n.min(cap);
            let images = buf[..n]
                .iter()
                .map(|i| GroupImage {
                    name: copy_string(i.name),
                    pool_id: i.pool,
                    state: match i.state {
                        0 => GroupImageState::Attached,
                        1 => GroupImageState::Incomplete,
                        other => GroupImageState::Unknown(other),
                    },
                })
                .collect();
            // SAFETY: librbd filled `n` entries, freed here once.
            unsafe {
                (fns.rbd_group_image_list_cleanup)(
                    buf.as_mut_ptr(),
                    size_of::<CGroupImageInfo>(),
                    n,
                )
            };
            return Ok(images);
        }
        Err(RbdError::from_errno(op(), errno::ERANGE))
    }

    /// Takes group snapshot `snap` of every image of `group` (each image
    /// gets a snapshot in the "group" namespace).
    ///
    /// # Errors
    /// `ENOENT`, `EEXIST`, …
    pub fn group_snap_create(&self, group: &str, snap: &str) -> Result<()> {
        self.group_snap_call(
            "rbd_group_snap_create",
            group,
            snap,
            self.fns().rbd_group_snap_create,
        )
    }

    /// Removes group snapshot `snap` (and the images' snapshots of it).
    ///
    /// # Errors
    /// `ENOENT`, …
    pub fn group_snap_remove(&self, group: &str, snap: &str) -> Result<()> {
        self.group_snap_call(
            "rbd_group_snap_remove",
            group,
            snap,
            self.fns().rbd_group_snap_remove,
        )
    }

    fn group_snap_call(
        &self,
        call: &str,
        group: &str,
        snap: &str,
        f: unsafe extern "C" fn(IoctxT, *const c_char, *const c_char) -> c_int,
    ) -> Result<()> {
        let op = || format!("{call} {}@{snap}", self.spec(group));
        let c_group = c_string("group name", group, op)?;
        let c_snap = c_string("snapshot name", snap, op)?;
        // SAFETY: a valid ioctx and C strings.
        let r = unsafe { f(self.inner.handle, c_group.as_ptr(), c_snap.as_ptr()) };
        check(r, op).map(drop)
    }

    /// Rolls every image of `group` back to group snapshot `snap`.
    ///
    /// # Errors
    /// `ENOENT`, `EBUSY` (an image is open with its exclusive lock held
    /// elsewhere), …
    pub fn group_snap_rollback(&self, group: &str, snap: &str) -> Result<()> {
        self.group_snap_rollback_with_progress(group, snap, |_, _| true)
    }

    /// [`IoCtx::group_snap_rollback`], calling `progress(done, total)`
    /// (possibly from librbd's threads, one call at a time).
    ///
    /// # Errors
    /// As [`IoCtx::group_snap_rollback`].
    pub fn group_snap_rollback_with_progress(
        &self,
        group: &str,
        snap: &str,
        mut progress: impl FnMut(u64, u64) -> bool + Send,
    ) -> Result<()> {
        let op = || format!("rbd_group_snap_rollback {}@{snap}", self.spec(group));
        let c_group = c_string("group name", group, op)?;
        let c_snap = c_string("snapshot name", snap, op)?;
        let r = with_progress(&mut progress, |cb, arg| {
            // SAFETY: a valid ioctx, C strings, and a callback whose
            // argument stays valid for the call (see `with_progress`).
            unsafe {
                (self.fns().rbd_group_snap_rollback_with_progress)(
                    self.inner.handle,
                    c_group.as_ptr(),
                    c_snap.as_ptr(),
                    cb,
                    arg,
                )
            }
        });
        check(r, op).map(drop)
    }

    /// The snapshots of group `group`.
    ///
    /// # Errors
    /// `ENOENT` (no such group), …
    pub fn group_snap_list(&self, group: &str) -> Result<Vec<GroupSnapInfo>> {
        let op = || format!("rbd_group_snap_list {}", self.spec(group));
        let c_group = c_string("group name", group, op)?;
        let fns = self.fns();
        let mut cap = 16usize;
        for _ in 0..MAX_RETRIES {
            let mut buf: Vec<CGroupSnapInfo> = (0..cap)
                .map(|_| CGroupSnapInfo {
                    name: ptr::null_mut(),
                    state: 0,
                })
                .collect();
            let mut n = cap;
            // SAFETY: as in `group_image_list`.
            let r = unsafe {
                (fns.rbd_group_snap_list)(
                    self.inner.handle,
                    c_group.as_ptr(),
                    buf.as_mut_ptr(),
                    size_of::<CGroupSnapInfo>(),
                    &raw mut n,
                )
            };
            if r == -errno::ERANGE && n > cap {
                cap = n;
                continue;
            }
            check(r, op)?;
            let n = n.min(cap);
            let snaps = buf[..n]
                .iter()
                .map(|s| GroupSnapInfo {
                    name: copy_string(s.name),
                    state: match s.state {
                        0 => GroupSnapState::Incomplete,
                        1 => GroupSnapState::Complete,
                        other => GroupSnapState::Unknown(other),
                    },
                })
                .collect();
            // SAFETY: librbd filled `n` entries, freed here once.
            unsafe {
                (fns.rbd_group_snap_list_cleanup)(buf.as_mut_ptr(), size_of::<CGroupSnapInfo>(), n)
            };
            return Ok(snaps);
        }
        Err(RbdError::from_errno(op(), errno::ERANGE))
    }
}

/// An `rbd_image_options_t`, destroyed on drop.
struct ImageOptions {
    fns: &'static Fns,
    handle: OptionsT,
}

impl ImageOptions {
    fn new(fns: &'static Fns) -> Self {
        let mut handle: OptionsT = ptr::null_mut();
        // SAFETY: a valid out-pointer; destroyed in Drop.
        unsafe { (fns.rbd_image_options_create)(&raw mut handle) };
        Self { fns, handle }
    }

    fn set(&self, option: c_int, value: u64, op: impl FnOnce() -> String) -> Result<()> {
        // SAFETY: a live options handle.
        let r = unsafe { (self.fns.rbd_image_options_set_uint64)(self.handle, option, value) };
        check(r, op).map(drop)
    }
}

impl Drop for ImageOptions {
    fn drop(&mut self) {
        // SAFETY: created by rbd_image_options_create, destroyed once.
        unsafe { (self.fns.rbd_image_options_destroy)(self.handle) };
    }
}

/// "spec" or "spec@snap".
fn at_snap(spec: &str, snap: Option<&str>) -> String {
    match snap {
        Some(snap) => format!("{spec}@{snap}"),
        None => spec.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Image

/// The namespace of an image snapshot (`rbd_snap_namespace_type_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapNamespace {
    /// An ordinary snapshot (`rbd snap create`).
    User,
    /// The image's part of a group snapshot.
    Group {
        /// Id of the group's pool.
        pool: i64,
        /// Group name.
        group: String,
        /// Group snapshot name.
        group_snap: String,
    },
    /// A removed snapshot kept for its clones.
    Trash {
        /// Its name before removal.
        original_name: String,
    },
    /// A mirroring snapshot.
    Mirror,
    /// A value this binding does not know.
    Unknown(i32),
}

/// A snapshot of an image (`rbd_snap_list` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// Snapshot id (increasing with creation).
    pub id: u64,
    /// Name (for group snapshots, librbd's generated name).
    pub name: String,
    /// Image size at the snapshot.
    pub size: u64,
    /// Creation time, seconds since the epoch (`rbd_snap_get_timestamp`).
    pub timestamp: Option<i64>,
    /// Protected against removal (user snapshots only; false otherwise).
    pub protected: bool,
    /// Which namespace the snapshot is in.
    pub namespace: SnapNamespace,
}

/// A clone of a snapshot (`rbd_list_children3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildImage {
    /// Pool name.
    pub pool: String,
    /// RBD namespace (`None` for the default one).
    pub namespace: Option<String>,
    /// Image name.
    pub image: String,
    /// Image id.
    pub id: String,
    /// In the trash.
    pub trash: bool,
}

/// The parent of a clone (`rbd_get_parent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentSpec {
    /// Pool name.
    pub pool: String,
    /// RBD namespace.
    pub namespace: String,
    /// Image name.
    pub image: String,
    /// Image id.
    pub id: String,
    /// Snapshot name.
    pub snap: String,
    /// Snapshot id.
    pub snap_id: u64,
    /// The parent image is in the trash.
    pub trash: bool,
}

/// One extent reported by [`Image::diff_iterate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffExtent {
    /// Byte offset in the image.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// True: data changed; false: the extent is now a hole (zeros).
    pub exists: bool,
}

/// A client watching an image (`rbd_image_watcher_t`): every open,
/// writable handle is one, this process's included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// The client's address.
    pub addr: String,
    /// The client's global id.
    pub id: i64,
    /// The watch cookie.
    pub cookie: u64,
}

/// What [`Image::snap_remove_with`] may do besides removing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapRemoveFlags {
    /// Unprotect the snapshot first.
    pub unprotect: bool,
    /// Flatten its clones first.
    pub flatten: bool,
}

/// An open image (librbd `rbd_image_t`), closed on drop.
pub struct Image {
    handle: ImageT,
    io: Arc<IoCtxInner>,
    name: String,
    snap: Option<String>,
    read_only: bool,
}

// SAFETY: a librbd image handle is not tied to the thread that opened it
// (librbd's own threads complete its I/O). `Image` is not `Sync`: one
// thread uses a handle at a time.
unsafe impl Send for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: opened by rbd_open*, closed once; the ioctx and
            // cluster it came from are held by `self.io`.
            unsafe { (self.io.fns().rbd_close)(self.handle) };
        }
    }
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("spec", &self.spec())
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// The most one librbd read or write call is given (larger buffers are
/// split).
const IO_CHUNK: usize = 64 << 20;

impl Image {
    fn fns(&self) -> &'static Fns {
        self.io.fns()
    }

    /// The image name it was opened with.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The snapshot the handle reads (`None`: the head).
    #[must_use]
    pub fn snap(&self) -> Option<&str> {
        self.snap.as_deref()
    }

    /// Whether the handle was opened read-only.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// `pool/[namespace/]name[@snap]`.
    #[must_use]
    pub fn spec(&self) -> String {
        at_snap(&self.io.spec(&self.name), self.snap.as_deref())
    }

    /// The context the image was opened in.
    #[must_use]
    pub fn ioctx(&self) -> IoCtx {
        IoCtx {
            inner: Arc::clone(&self.io),
        }
    }

    fn op(&self, call: &str) -> String {
        format!("{call} {}", self.spec())
    }

    fn op_snap(&self, call: &str, snap: &str) -> String {
        format!("{call} {}@{snap}", self.io.spec(&self.name))
    }

    /// Closes the handle, reporting librbd's error (drop ignores it).
    ///
    /// # Errors
    /// From `rbd_close` (e.g. a failed flush of cached writes).
    pub fn close(mut self) -> Result<()> {
        let handle = std::mem::replace(&mut self.handle, ptr::null_mut());
        // SAFETY: the open handle, closed once (Drop sees NULL after this).
        let r = unsafe { (self.fns().rbd_close)(handle) };
        check(r, || self.op("rbd_close")).map(drop)
    }

    /// The image id (`rbd_get_id`).
    ///
    /// # Errors
    /// From librbd.
    pub fn id(&self) -> Result<String> {
        let mut buf = vec![0u8; 64];
        for _ in 0..MAX_RETRIES {
            // SAFETY: an open handle and a writable buffer of that length.
            let r =
                unsafe { (self.fns().rbd_get_id)(self.handle, buf.as_mut_ptr().cast(), buf.len()) };
            if r == -errno::ERANGE {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            check(r, || self.op("rbd_get_id"))?;
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        Err(RbdError::from_errno(self.op("rbd_get_id"), errno::ERANGE))
    }

    /// Size in bytes (of the snapshot the handle reads, or the head).
    ///
    /// # Errors
    /// From librbd.
    pub fn size(&self) -> Result<u64> {
        let mut size = 0u64;
        // SAFETY: an open handle and a valid out-pointer.
        let r = unsafe { (self.fns().rbd_get_size)(self.handle, &raw mut size) };
        check(r, || self.op("rbd_get_size"))?;
        Ok(size)
    }

    /// The feature bits (`RBD_FEATURE_*`).
    ///
    /// # Errors
    /// From librbd.
    pub fn features(&self) -> Result<u64> {
        let mut features = 0u64;
        // SAFETY: an open handle and a valid out-pointer.
        let r = unsafe { (self.fns().rbd_get_features)(self.handle, &raw mut features) };
        check(r, || self.op("rbd_get_features"))?;
        Ok(features)
    }

    /// Grows or shrinks the image to `size` bytes.
    ///
    /// # Errors
    /// `EROFS` on a read-only handle, …
    pub fn resize(&self, size: u64) -> Result<()> {
        // SAFETY: an open handle.
        let r = unsafe { (self.fns().rbd_resize)(self.handle, size) };
        check(r, || format!("rbd_resize {} to {size}", self.spec())).map(drop)
    }

    /// Reads into `buf` from `offset`; returns the bytes read (fewer than
    /// `buf.len()` only at the end of the image).
    ///
    /// # Errors
    /// `EINVAL` past the end, …
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0usize;
        while done < buf.len() {
            let chunk = &mut buf[done..];
            let len = chunk.len().min(IO_CHUNK);
            let at = offset + u64::try_from(done).unwrap_or(u64::MAX);
            // SAFETY: an open handle and a writable buffer of `len` bytes.
            let r =
                unsafe { (self.fns().rbd_read)(self.handle, at, len, chunk.as_mut_ptr().cast()) };
            let n = check_size(r, || format!("rbd_read {} at {at}", self.spec()))?;
            done += n.min(len);
            if n < len {
                break;
            }
        }
        Ok(done)
    }

    /// Writes all of `data` at `offset`.
    ///
    /// # Errors
    /// `EROFS` on a read-only handle or snapshot, `EINVAL` past the end, …
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < data.len() {
            let chunk = &data[done..];
            let len = chunk.len().min(IO_CHUNK);
            let at = offset + u64::try_from(done).unwrap_or(u64::MAX);
            let op = || format!("rbd_write {} at {at}", self.spec());
            // SAFETY: an open handle and a readable buffer of `len` bytes.
            let r = unsafe { (self.fns().rbd_write)(self.handle, at, len, chunk.as_ptr().cast()) };
            let n = check_size(r, op)?;
            if n != len {
                return Err(RbdError::new(
                    op(),
                    errno::EIO,
                    format!("short write: {n} of {len} bytes"),
                ));
            }
            done += len;
        }
        Ok(())
    }

    /// Discards `len` bytes at `offset` (`rbd_discard`). librbd may leave
    /// parts smaller than `rbd_discard_granularity_bytes` as they were: use
    /// [`Image::write_zeroes`] to get zeros.
    ///
    /// # Errors
    /// `EROFS`, …
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        // SAFETY: an open handle.
        let r = unsafe { (self.fns().rbd_discard)(self.handle, offset, len) };
        check(r, || format!("rbd_discard {} {offset}+{len}", self.spec())).map(drop)
    }

    /// Makes `len` bytes at `offset` read as zeros (`rbd_write_zeroes`,
    /// deallocating whole objects where it can).
    ///
    /// # Errors
    /// `EROFS`, …
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        const CHUNK: u64 = 1 << 30;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK);
            let at = offset + done;
            let n_usize = usize::try_from(n).unwrap_or(IO_CHUNK);
            // SAFETY: an open handle.
            let r = unsafe { (self.fns().rbd_write_zeroes)(self.handle, at, n_usize, 0, 0) };
            check_size(r, || format!("rbd_write_zeroes {} {at}+{n}", self.spec()))?;
            done += u64::try_from(n_usize).unwrap_or(n);
        }
        Ok(())
    }

    /// Waits until every write is on the OSDs.
    ///
    /// # Errors
    /// From librbd.
    pub fn flush(&self) -> Result<()> {
        // SAFETY: an open handle.
        let r = unsafe { (self.fns().rbd_flush)(self.handle) };
        check(r, || self.op("rbd_flush")).map(drop)
    }

    /// The clients watching the image (`rbd_watchers_list`): each open,
    /// writable handle, this one included. A read-only handle does not
    /// watch.
    ///
    /// # Errors
    /// From librbd.
    pub fn watcher_list(&self) -> Result<Vec<Watcher>> {
        let fns = self.fns();
        let op = || self.op("rbd_watchers_list");
        let mut cap = 8usize;
        for _ in 0..MAX_RETRIES {
            let mut buf: Vec<CWatcher> = (0..cap)
                .map(|_| CWatcher {
                    addr: ptr::null_mut(),
                    id: 0,
                    cookie: 0,
                })
                .collect();
            let mut n = cap;
            // SAFETY: an open handle, a buffer of `n` entries and its
            // length.
            let r = unsafe { (fns.rbd_watchers_list)(self.handle, buf.as_mut_ptr(), &raw mut n) };
            if r == -errno::ERANGE && n > cap {
                cap = n;
                continue;
            }
            check(r, op)?;
            let n = n.min(cap);
            let watchers = buf[..n]
                .iter()
                .map(|w| Watcher {
                    addr: copy_string(w.addr),
                    id: w.id,
                    cookie: w.cookie,
                })
                .collect();
            // SAFETY: librbd filled `n` entries, freed here once.
            unsafe { (fns.rbd_watchers_list_cleanup)(buf.as_mut_ptr(), n) };
            return Ok(watchers);
        }
        Err(RbdError::from_errno(op(), errno::ERANGE))
    }

    /// How many clients watch the image ([`Image::watcher_list`]): more
    /// than one, for a writable handle, means another client has it open.
    ///
    /// # Errors
    /// From librbd.
    pub fn watchers(&self) -> Result<usize> {
        self.watcher_list().map(|w| w.len())
    }

    /// Makes the handle read snapshot `snap`, or the head for `None`
    /// (`rbd_snap_set`; a writable handle gives up its exclusive lock while
    /// at a snapshot).
    ///
    /// # Errors
    /// `ENOENT` (no such user snapshot).
    pub fn set_snap(&mut self, snap: Option<&str>) -> Result<()> {
        let op = || format!("rbd_snap_set {}", at_snap(&self.io.spec(&self.name), snap));
        let c_snap = snap.map(|s| c_string("snapshot name", s, op)).transpose()?;
        let c_snap_ptr = c_snap.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        // SAFETY: an open handle and a C string or NULL (the head).
        let r = unsafe { (self.fns().rbd_snap_set)(self.handle, c_snap_ptr) };
        check(r, op)?;
        self.snap = snap.map(str::to_string);
        Ok(())
    }

    /// Opens another, read-only handle on the same image at `snap` (or the
    /// head), leaving this one as it is.
    ///
    /// # Errors
    /// `ENOENT` (no such snapshot), …
    pub fn open_read_only_at(&self, snap: Option<&str>) -> Result<Image> {
        let id = self.id()?;
        self.ioctx().open_by_id_read_only(&id, &self.name, snap)
    }

    // --- snapshots ------------------------------------------------------

    fn snap_call(
        &self,
        call: &str,
        snap: &str,
        f: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    ) -> Result<()> {
        let op = || self.op_snap(call, snap);
        let c_snap = c_string("snapshot name", snap, op)?;
        // SAFETY: an open handle and a C string.
        let r = unsafe { f(self.handle, c_snap.as_ptr()) };
        check(r, op).map(drop)
    }

    /// Takes snapshot `name` of the head.
    ///
    /// # Errors
    /// `EEXIST`, `EROFS`, …
    pub fn snap_create(&self, name: &str) -> Result<()> {
        self.snap_call("rbd_snap_create", name, self.fns().rbd_snap_create)
    }

    /// Removes (user) snapshot `name`.
    ///
    /// # Errors
    /// `ENOENT`, `EBUSY` (protected), …
    pub fn snap_remove(&self, name: &str) -> Result<()> {
        self.snap_call("rbd_snap_remove", name, self.fns().rbd_snap_remove)
    }

    /// Removes snapshot `name`, first unprotecting it and/or flattening
    /// its clones as `flags` says (`rbd_snap_remove2`), calling
    /// `progress(done, total)`.
    ///
    /// # Errors
    /// As [`Image::snap_remove`].
    pub fn snap_remove_with(
        &self,
        name: &str,
        flags: SnapRemoveFlags,
        mut progress: impl FnMut(u64, u64) -> bool + Send,
    ) -> Result<()> {
        let op = || self.op_snap("rbd_snap_remove2", name);
        let c_snap = c_string("snapshot name", name, op)?;
        let mut bits = 0u32;
        if flags.unprotect {
            bits |= RBD_SNAP_REMOVE_UNPROTECT;
        }
        if flags.flatten {
            bits |= RBD_SNAP_REMOVE_FLATTEN;
        }
        let r = with_progress(&mut progress, |cb, arg| {
            // SAFETY: an open handle, a C string, and a callback whose
            // argument stays valid for the call (see `with_progress`).
            unsafe { (self.fns().rbd_snap_remove2)(self.handle, c_snap.as_ptr(), bits, cb, arg) }
        });
        check(r, op).map(drop)
    }

    /// Rolls the head back to snapshot `name`.
    ///
    /// # Errors
    /// `ENOENT`, `EROFS`, …
    pub fn snap_rollback(&self, name: &str) -> Result<()> {
        self.snap_call("rbd_snap_rollback", name, self.fns().rbd_snap_rollback)
    }

    /// [`Image::snap_rollback`], calling `progress(done, total)` (objects
    /// done, from librbd's threads, one call at a time). `progress`
    /// returning `false` stops the rollback: it fails with `ECANCELED`,
    /// leaving the image partly rolled back (roll back again to finish).
    /// A panic of `progress` stops it too, and resumes when the rollback
    /// returns.
    ///
    /// # Errors
    /// As [`Image::snap_rollback`].
    pub fn snap_rollback_with_progress(
        &self,
        name: &str,
        mut progress: impl FnMut(u64, u64) -> bool + Send,
    ) -> Result<()> {
        let op = || self.op_snap("rbd_snap_rollback", name);
        let c_snap = c_string("snapshot name", name, op)?;
        let r = with_progress(&mut progress, |cb, arg| {
            // SAFETY: an open handle, a C string, and a callback whose
            // argument stays valid for the call (see `with_progress`).
            unsafe {
                (self.fns().rbd_snap_rollback_with_progress)(self.handle, c_snap.as_ptr(), cb, arg)
            }
        });
        check(r, op).map(drop)
    }

    /// Protects snapshot `name` (needed to clone it with clone format 1).
    ///
    /// # Errors
    /// `EBUSY` if already protected, …
    pub fn snap_protect(&self, name: &str) -> Result<()> {
        self.snap_call("rbd_snap_protect", name, self.fns().rbd_snap_protect)
    }

    /// Unprotects snapshot `name`.
    ///
    /// # Errors
    /// `EBUSY` while it has clones, `EINVAL` if not protected, …
    pub fn snap_unprotect(&self, name: &str) -> Result<()> {
        self.snap_call("rbd_snap_unprotect", name, self.fns().rbd_snap_unprotect)
    }

    /// Whether (user) snapshot `name` is protected.
    ///
    /// # Errors
    /// `ENOENT`, …
    pub fn snap_is_protected(&self, name: &str) -> Result<bool> {
        let op = || self.op_snap("rbd_snap_is_protected", name);
        let c_snap = c_string("snapshot name", name, op)?;
        let mut protected: c_int = 0;
        // SAFETY: an open handle, a C string and a valid out-pointer.
        let r = unsafe {
            (self.fns().rbd_snap_is_protected)(self.handle, c_snap.as_ptr(), &raw mut protected)
        };
        check(r, op)?;
        Ok(protected != 0)
    }

    /// Whether user snapshot `name` exists.
    ///
    /// # Errors
    /// From librbd.
    pub fn snap_exists(&self, name: &str) -> Result<bool> {
        let op = || self.op_snap("rbd_snap_exists", name);
        let c_snap = c_string("snapshot name", name, op)?;
        let mut exists = false;
        // SAFETY: an open handle, a C string and a valid out-pointer.
        let r =
            unsafe { (self.fns().rbd_snap_exists)(self.handle, c_snap.as_ptr(), &raw mut exists) };
        check(r, op)?;
        Ok(exists)
    }

    /// The user snapshots of the image (what `rbd snap ls` shows), in id
    /// order, with timestamps and protection: [`Image::snap_list_all`]
    /// without the group, trash and mirror namespaces.
    ///
    /// # Errors
    /// From librbd.
    pub fn snap_list(&self) -> Result<Vec<SnapInfo>> {
        let mut all = self.snap_list_all()?;
        all.retain(|s| s.namespace == SnapNamespace::User);
        Ok(all)
    }

    /// Every snapshot of the image, as `rbd_snap_list` returns them: all
    /// namespaces (`rbd snap ls --all`), in id order, with timestamps,
    /// protection and namespace details.
    ///
    /// # Errors
    /// From librbd.
    pub fn snap_list_all(&self) -> Result<Vec<SnapInfo>> {
        let fns = self.fns();
        let op = || self.op("rbd_snap_list");
        let mut raw: Option<Vec<(u64, u64, String)>> = None;
        let mut cap: c_int = 16;
        for _ in 0..MAX_RETRIES {
            let cap_usize = usize::try_from(cap).unwrap_or(0);
            let mut buf: Vec<CSnapInfo> = (0..cap_usize)
                .map(|_| CSnapInfo {
                    id: 0,
                    size: 0,
                    name: ptr::null(),
                })
                .collect();
            let mut max = cap;
            // SAFETY: an open handle, a buffer of `max` entries and its
            // length.
            let r = unsafe { (fns.rbd_snap_list)(self.handle, buf.as_mut_ptr(), &raw mut max) };
            if r == -errno::ERANGE && max > cap {
                cap = max;
                continue;
            }
            let n = usize::try_from(check(r, op)?).unwrap_or(0).min(cap_usize);
            let list = buf[..n]
                .iter()
                .map(|s| (s.id, s.size, copy_string(s.name)))
                .collect();
            // SAFETY: on success librbd filled `n` entries and a NULL-named
            // terminator (it asks for n + 1 entries); freed here once.
            unsafe { (fns.rbd_snap_list_end)(buf.as_mut_ptr()) };
            raw = Some(list);
            break;
        }
        let Some(raw) = raw else {
            return Err(RbdError::from_errno(op(), errno::ERANGE));
        };
        raw.into_iter()
            .map(|(id, size, name)| {
                let namespace = self.snap_namespace(id)?;
                let protected =
                    namespace == SnapNamespace::User && self.snap_is_protected(&name)?;
                Ok(SnapInfo {
                    id,
                    timestamp: self.snap_timestamp(id),
                    name,
                    size,
                    protected,
                    namespace,
                })
            })
            .collect()
    }

    /// Creation time of snapshot `id`, seconds since the epoch.
    fn snap_timestamp(&self, id: u64) -> Option<i64> {
        if cfg!(not(all(target_os = "linux", target_pointer_width = "64"))) {
            return None;
        }
        let mut ts = CTimespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: an open handle and a valid out-pointer to a timespec of
        // this target's layout (64-bit Linux, checked above).
        let r = unsafe { (self.fns().rbd_snap_get_timestamp)(self.handle, id, &raw mut ts) };
        (r >= 0).then_some(ts.tv_sec)
    }

    fn snap_namespace(&self, id: u64) -> Result<SnapNamespace> {
        let fns = self.fns();
        let op = || format!("rbd_snap_get_namespace_type {} snap id {id}", self.spec());
        let mut kind: c_int = 0;
        // SAFETY: an open handle and a valid out-pointer (the C enum is an
        // int).
        let r = unsafe { (fns.rbd_snap_get_namespace_type)(self.handle, id, &raw mut kind) };
        check(r, op)?;
        Ok(match kind {
            0 => SnapNamespace::User,
            1 => {
                let op = || format!("rbd_snap_get_group_namespace {} snap id {id}", self.spec());
                let mut ns = CSnapGroupNamespace {
                    group_pool: 0,
                    group_name: ptr::null_mut(),
                    group_snap_name: ptr::null_mut(),
                };
                let size = size_of::<CSnapGroupNamespace>();
                // SAFETY: an open handle, a valid out-struct and its size.
                let r = unsafe {
                    (fns.rbd_snap_get_group_namespace)(self.handle, id, &raw mut ns, size)
                };
                check(r, op)?;
                let namespace = SnapNamespace::Group {
                    pool: ns.group_pool,
                    group: copy_string(ns.group_name),
                    group_snap: copy_string(ns.group_snap_name),
                };
                // SAFETY: filled by librbd above, freed once.
                unsafe { (fns.rbd_snap_group_namespace_cleanup)(&raw mut ns, size) };
                namespace
            }
            2 => {
                let mut buf = vec![0u8; 256];
                let mut found = None;
                for _ in 0..MAX_RETRIES {
                    // SAFETY: an open handle and a writable buffer of that
                    // length.
                    let r = unsafe {
                        (fns.rbd_snap_get_trash_namespace)(
                            self.handle,
                            id,
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                        )
                    };
                    if r == -errno::ERANGE {
                        buf.resize(buf.len() * 2, 0);
                        continue;
                    }
                    check(r, || {
                        format!("rbd_snap_get_trash_namespace {} snap id {id}", self.spec())
                    })?;
                    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
                    found = Some(String::from_utf8_lossy(&buf[..end]).into_owned());
                    break;
                }
                SnapNamespace::Trash {
                    original_name: found.unwrap_or_default(),
                }
            }
            3 => SnapNamespace::Mirror,
            other => SnapNamespace::Unknown(other),
        })
    }

    /// The clones of snapshot `snap` (`rbd_list_children3`, through a
    /// read-only handle opened at the snapshot; this one is untouched).
    ///
    /// # Errors
    /// `ENOENT` (no such snapshot), …
    pub fn list_children(&self, snap: &str) -> Result<Vec<ChildImage>> {
        let at = self.open_read_only_at(Some(snap))?;
        let fns = self.fns();
        let op = || self.op_snap("rbd_list_children3", snap);
        let mut cap = 16usize;
        for _ in 0..MAX_RETRIES {
            let mut buf: Vec<CLinkedImageSpec> =
                (0..cap).map(|_| CLinkedImageSpec::EMPTY).collect();
            let mut n = cap;
            // SAFETY: an open handle, a buffer of `n` entries and its
            // length.
            let r = unsafe { (fns.rbd_list_children3)(at.handle, buf.as_mut_ptr(), &raw mut n) };
            if r == -errno::ERANGE && n > cap {
                cap = n;
                continue;
            }
            check(r, op)?;
            let n = n.min(cap);
            let children = buf[..n]
                .iter()
                .map(|c| ChildImage {
                    pool: copy_string(c.pool_name),
                    namespace: Some(copy_string(c.pool_namespace)).filter(|ns| !ns.is_empty()),
                    image: copy_string(c.image_name),
                    id: copy_string(c.image_id),
                    trash: c.trash,
                })
                .collect();
            // SAFETY: librbd filled `n` entries, freed here once.
            unsafe { (fns.rbd_linked_image_spec_list_cleanup)(buf.as_mut_ptr(), n) };
            return Ok(children);
        }
        Err(RbdError::from_errno(op(), errno::ERANGE))
    }

    /// The parent of a clone, `None` if the image has none (any more).
    ///
    /// # Errors
    /// From librbd (other than `ENOENT`).
    pub fn parent(&self) -> Result<Option<ParentSpec>> {
        let fns = self.fns();
        let mut image = CLinkedImageSpec::EMPTY;
        let mut snap = CSnapSpec {
            id: 0,
            namespace_type: 0,
            name: ptr::null_mut(),
        };
        // SAFETY: an open handle and two valid out-structs.
        let r = unsafe { (fns.rbd_get_parent)(self.handle, &raw mut image, &raw mut snap) };
        if r == -errno::ENOENT {
            return Ok(None);
        }
        check(r, || self.op("rbd_get_parent"))?;
        let parent = ParentSpec {
            pool: copy_string(image.pool_name),
            namespace: copy_string(image.pool_namespace),
            image: copy_string(image.image_name),
            id: copy_string(image.image_id),
            snap: copy_string(snap.name),
            snap_id: snap.id,
            trash: image.trash,
        };
        // SAFETY: both filled by librbd above, each freed once.
        unsafe {
            (fns.rbd_linked_image_spec_cleanup)(&raw mut image);
            (fns.rbd_snap_spec_cleanup)(&raw mut snap);
        }
        Ok(Some(parent))
    }

    /// Copies the parent's data into this clone and detaches it.
    ///
    /// # Errors
    /// `EINVAL` (not a clone), `EROFS`, …
    pub fn flatten(&self) -> Result<()> {
        // SAFETY: an open handle.
        let r = unsafe { (self.fns().rbd_flatten)(self.handle) };
        check(r, || self.op("rbd_flatten")).map(drop)
    }

    /// [`Image::flatten`], calling `progress(done, total)` (possibly from
    /// librbd's threads, one call at a time).
    ///
    /// # Errors
    /// As [`Image::flatten`].
    pub fn flatten_with_progress(
        &self,
        mut progress: impl FnMut(u64, u64) -> bool + Send,
    ) -> Result<()> {
        let r = with_progress(&mut progress, |cb, arg| {
            // SAFETY: an open handle and a callback whose argument stays
            // valid for the call (see `with_progress`).
            unsafe { (self.fns().rbd_flatten_with_progress)(self.handle, cb, arg) }
        });
        check(r, || self.op("rbd_flatten")).map(drop)
    }

    /// Reports the extents of `offset..offset + len` that differ between
    /// snapshot `from_snap` (or, for `None`, nothing: every allocated
    /// extent) and what this handle reads (its snapshot or the head), with
    /// `rbd_diff_iterate2` including the parent's data for clones.
    /// `whole_object` widens extents to whole objects (and uses the fast-
    /// diff object map when the image has it).
    ///
    /// `callback(offset, len, exists)` may be called from librbd's threads
    /// (one call at a time) and must not do I/O on this image; collect the
    /// extents ([`Image::diff_extents`]) and act afterwards. An error it
    /// returns stops the iteration and is returned.
    ///
    /// # Errors
    /// The callback's error, or librbd's (`ENOENT`: no such `from_snap`;
    /// `EINVAL`: `from_snap` is newer than the handle's snapshot).
    pub fn diff_iterate<E, F>(
        &self,
        from_snap: Option<&str>,
        offset: u64,
        len: u64,
        whole_object: bool,
        mut callback: F,
    ) -> Result<(), E>
    where
        E: From<RbdError> + Send,
        F: FnMut(u64, u64, bool) -> Result<(), E> + Send,
    {
        let op = || {
            format!(
                "rbd_diff_iterate2 {} from {}",
                self.spec(),
                from_snap.unwrap_or("the beginning")
            )
        };
        let c_from = from_snap
            .map(|s| c_string("snapshot name", s, op))
            .transpose()?;
        let c_from_ptr = c_from.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        let ctx: DiffCtx<'_, E> = DiffCtx {
            f: Mutex::new(&mut callback),
            error: Mutex::new(None),
            panic: Mutex::new(None),
        };
        let arg = ptr::from_ref(&ctx).cast_mut().cast::<c_void>();
        // SAFETY: an open handle, a C string or NULL, and a callback whose
        // argument (`ctx`, of the type the trampoline is instantiated
        // with) outlives the call; librbd calls back only during it.
        let r = unsafe {
            (self.fns().rbd_diff_iterate2)(
                self.handle,
                c_from_ptr,
                offset,
                len,
                1,
                u8::from(whole_object),
                Some(diff_trampoline::<E>),
                arg,
            )
        };
        if let Some(payload) = ctx
            .panic
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            resume_unwind(payload);
        }
        if let Some(err) = ctx
            .error
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Err(err);
        }
        check(r, op).map_err(E::from)?;
        Ok(())
    }

    /// [`Image::diff_iterate`] over the whole image, collected and sorted
    /// by offset.
    ///
    /// # Errors
    /// As [`Image::diff_iterate`].
    pub fn diff_extents(
        &self,
        from_snap: Option<&str>,
        whole_object: bool,
    ) -> Result<Vec<DiffExtent>> {
        let size = self.size()?;
        let mut extents = Vec::new();
        self.diff_iterate(from_snap, 0, size, whole_object, |offset, len, exists| {
            extents.push(DiffExtent {
                offset,
                len,
                exists,
            });
            Ok::<(), RbdError>(())
        })?;
        extents.sort_by_key(|e| e.offset);
        Ok(extents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_the_call_the_message_and_errno() {
        let err = RbdError::from_errno("rbd_snap_create rbd/ns/img@s1", errno::EEXIST);
        assert_eq!(
            err.to_string(),
            "rbd_snap_create rbd/ns/img@s1: File exists (errno 17)"
        );
        assert_eq!(err.errno(), 17);
        assert_eq!(err.op(), "rbd_snap_create rbd/ns/img@s1");
        assert_eq!(err.message(), "File exists");
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let io = std::io::Error::from_raw_os_error(errno::ENOENT);
        let err = RbdError::from_io("open diff", &io);
        assert_eq!(err.errno(), errno::ENOENT);
        assert_eq!(err.message(), "No such file or directory");
        let other = std::io::Error::other("boom");
        assert_eq!(RbdError::from_io("x", &other).errno(), errno::EIO);
    }

    #[test]
    fn names_with_nul_bytes_are_errors() {
        let err = c_string("snapshot name", "a\0b", || "rbd_snap_create x".into())
            .expect_err("NUL must be refused");
        assert_eq!(err.errno(), errno::EINVAL);
        assert!(err.message().contains("NUL"), "{err}");
    }

    #[test]
    fn connections_are_shared_between_threads_and_images_move() {
        const fn send<T: Send>() {}
        const fn sync<T: Sync>() {}
        send::<Cluster>();
        sync::<Cluster>();
        send::<IoCtx>();
        sync::<IoCtx>();
        send::<Image>();
        sync::<Library>();
    }

    #[test]
    fn name_buffers_split_on_nul() {
        assert_eq!(split_names(b"a\0bc\0\0\0"), ["a", "bc"]);
        assert!(split_names(b"\0\0").is_empty());
    }

    #[test]
    fn a_missing_library_names_the_package() {
        let err = dlopen(OsStr::new("librbd-does-not-exist.so.9")).expect_err("missing");
        assert_eq!(err.errno(), errno::ENOENT);
        assert!(err.message().contains("not found"), "{err}");
        let err = load_error(
            OsStr::new(LIBRBD),
            "librbd.so.1: cannot open shared object file: No such file or directory",
        );
        assert_eq!(
            err.to_string(),
            "dlopen librbd.so.1: librbd.so.1 not found: install librbd1 \
             (Debian: apt-get install librbd1) (errno 2)"
        );
        let err = load_error(
            OsStr::new(LIBRADOS),
            "librados.so.2: cannot open shared object file",
        );
        assert!(err.message().contains("apt-get install librados2"), "{err}");
        let err = load_error(OsStr::new(LIBRBD), "librbd.so.1: undefined symbol: foo");
        assert_eq!(err.errno(), errno::EIO);
    }

    #[test]
    fn the_installed_libraries_load_once() {
        // Skipped where Ceph's client libraries are not installed.
        let Ok(lib) = Library::load() else {
            eprintln!("skipped: {LIBRBD} not installed");
            return;
        };
        assert!(ptr::eq(lib, Library::load().expect("loaded")));
        assert!(lib.rbd_version().0 >= 1, "{lib:?}");
    }
}
