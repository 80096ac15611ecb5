//! The btrfs subvolume ioctls the driver uses, behind safe functions:
//! [`snapshot`] (`BTRFS_IOC_SNAP_CREATE_V2`) and [`destroy`]
//! (`BTRFS_IOC_SNAP_DESTROY`), with the `#[repr(C)]` argument structs of
//! `linux/btrfs.h` they pass and [`SubvolName`], the checked name they
//! take.
//!
//! This module owns the workspace's only `unsafe` code: the two `ioctl`
//! calls. What makes them sound is kept here too: the structs' sizes and
//! field offsets are asserted at compile time against the kernel's
//! layout, the opcodes are computed from those sizes (and checked against
//! the header's values in the tests), and a name always fits its buffer
//! with the terminating NUL the kernel expects.

#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::mem::offset_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::io;
use rustix::ioctl::{Opcode, Setter, ioctl, opcode};

/// `BTRFS_IOCTL_MAGIC`: the ioctl group of btrfs.
const BTRFS_IOCTL_MAGIC: u8 = 0x94;
/// `BTRFS_PATH_NAME_MAX`: the longest name in [`VolArgs`].
const PATH_NAME_MAX: usize = 4087;
/// `BTRFS_SUBVOL_NAME_MAX`: the longest name in [`VolArgsV2`], so the
/// longest a [`SubvolName`] can be.
pub(crate) const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_SUBVOL_RDONLY`: the snapshot is read-only.
const SUBVOL_RDONLY: u64 = 1 << 1;

/// `struct btrfs_ioctl_vol_args` (4096 bytes).
#[repr(C)]
struct VolArgs {
    /// `__s64 fd`: unused by `SNAP_DESTROY`.
    fd: i64,
    /// `char name[BTRFS_PATH_NAME_MAX + 1]`, NUL-terminated.
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (4096 bytes). Its two unions are
/// given as the member this driver uses: `unused` stands for
/// `{ __u64 size; struct btrfs_qgroup_inherit *qgroup_inherit; }` (no
/// qgroup inheritance: all zero), and `name` for the union of
/// `name`, `devid` and `subvolid` (it is 8-aligned at offset 56, as the
/// `__u64` members need).
#[repr(C)]
struct VolArgsV2 {
    /// `__s64 fd`: the source subvolume of a snapshot.
    fd: i64,
    /// `__u64 transid`: output of the removed async snapshots; 0.
    transid: u64,
    /// `__u64 flags`: `BTRFS_SUBVOL_*`.
    flags: u64,
    /// `__u64 unused[4]`.
    unused: [u64; 4],
    /// `char name[BTRFS_SUBVOL_NAME_MAX + 1]`, NUL-terminated.
    name: [u8; SUBVOL_NAME_MAX + 1],
}

const _: () = assert!(size_of::<VolArgs>() == 4096);
const _: () = assert!(offset_of!(VolArgs, name) == 8);
const _: () = assert!(size_of::<VolArgsV2>() == 4096);
const _: () = assert!(offset_of!(VolArgsV2, flags) == 16);
const _: () = assert!(offset_of!(VolArgsV2, unused) == 24);
const _: () = assert!(offset_of!(VolArgsV2, name) == 56);

/// `BTRFS_IOC_SNAP_CREATE_V2`: `_IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)`.
const SNAP_CREATE_V2: Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 23);
/// `BTRFS_IOC_SNAP_DESTROY`: `_IOW(0x94, 15, struct btrfs_ioctl_vol_args)`.
/// Deleting by name needs nothing of `SNAP_DESTROY_V2` (Linux 5.7+, for
/// deleting by id), and this one works on every kernel.
const SNAP_DESTROY: Opcode = opcode::write::<VolArgs>(BTRFS_IOCTL_MAGIC, 15);

/// A name a subvolume can take in a directory: not empty, not `.` or
/// `..`, without `/` or NUL, at most [`SUBVOL_NAME_MAX`] bytes (btrfs
/// itself refuses names longer than 255 bytes, with `ENAMETOOLONG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubvolName<'a>(&'a [u8]);

impl<'a> SubvolName<'a> {
    /// `name`, checked; the error says why it cannot be one.
    pub(crate) fn new(name: &'a OsStr) -> Result<Self, &'static str> {
        let bytes = name.as_bytes();
        if bytes.is_empty() {
            Err("it is empty")
        } else if bytes == b"." || bytes == b".." {
            Err("'.' and '..' name other directories")
        } else if bytes.contains(&b'/') {
            Err("it contains '/'")
        } else if bytes.contains(&0) {
            Err("it contains a NUL byte")
        } else if bytes.len() > SUBVOL_NAME_MAX {
            Err("it is longer than 4039 bytes (BTRFS_SUBVOL_NAME_MAX)")
        } else {
            Ok(Self(bytes))
        }
    }
}

/// Copies `name` into the zeroed `buf`, whose last byte stays the NUL.
fn put_name<const N: usize>(buf: &mut [u8; N], name: SubvolName<'_>) {
    // Always true: a SubvolName has at most SUBVOL_NAME_MAX bytes and
    // both buffers hold at least SUBVOL_NAME_MAX + 1.
    assert!(name.0.len() < N, "a checked name fits its buffer");
    buf[..name.0.len()].copy_from_slice(name.0);
}

/// The arguments of `SNAP_CREATE_V2`.
fn snapshot_args(source: BorrowedFd<'_>, name: SubvolName<'_>, readonly: bool) -> VolArgsV2 {
    let mut args = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: if readonly { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    };
    put_name(&mut args.name, name);
    args
}

/// The arguments of `SNAP_DESTROY`.
fn destroy_args(name: SubvolName<'_>) -> VolArgs {
    let mut args = VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    };
    put_name(&mut args.name, name);
    args
}

/// Snapshots the subvolume whose root directory `source` is open as
/// `name` in the directory `parent` (on the same filesystem), read-only
/// when `readonly`. The kernel commits the transaction before it returns:
/// the snapshot exists whole, durably, or not at all. A `source` that is
/// a directory inside a subvolume snapshots that whole subvolume: callers
/// check it is a subvolume's root.
///
/// # Errors
/// The kernel's: `EEXIST`, `ENOSPC`, `EXDEV` (another filesystem),
/// `EPERM`/`EACCES`, `EROFS`, `ENAMETOOLONG`, `ENOTTY` (not btrfs), ...
pub(crate) fn snapshot(
    source: BorrowedFd<'_>,
    parent: BorrowedFd<'_>,
    name: SubvolName<'_>,
    readonly: bool,
) -> io::Result<()> {
    let args = snapshot_args(source, name, readonly);
    // SAFETY: SNAP_CREATE_V2 is `_IOW` of `struct btrfs_ioctl_vol_args_v2`,
    // which `VolArgsV2` lays out exactly (size and offsets asserted
    // above); the kernel only reads it (a setter), its name is
    // NUL-terminated within the buffer, its qgroup pointer is null (no
    // BTRFS_SUBVOL_QGROUP_INHERIT flag), and the fd it names is borrowed
    // for the whole call.
    unsafe { ioctl(parent, Setter::<SNAP_CREATE_V2, VolArgsV2>::new(args)) }
}

/// Deletes the subvolume `name` in the directory `parent`. Its directory
/// entry goes at once; the kernel frees its data in the background.
///
/// # Errors
/// The kernel's: `ENOENT`, `EINVAL` (not a subvolume), `EPERM`/`EACCES`
/// (not root, and no `user_subvol_rm_allowed`), `ENOTEMPTY` (it holds
/// subvolumes), `EBUSY` (mounted, or the default subvolume), `EROFS`, ...
pub(crate) fn destroy(parent: BorrowedFd<'_>, name: SubvolName<'_>) -> io::Result<()> {
    let args = destroy_args(name);
    // SAFETY: SNAP_DESTROY is `_IOW` of `struct btrfs_ioctl_vol_args`,
    // which `VolArgs` lays out exactly (size and offset asserted above);
    // the kernel only reads it (a setter), and its name is NUL-terminated
    // within the buffer.
    unsafe { ioctl(parent, Setter::<SNAP_DESTROY, VolArgs>::new(args)) }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// The opcodes as `linux/btrfs.h` gives them on the architectures
    /// with the generic `_IOC` encoding (checked with a C program printing
    /// `BTRFS_IOC_*` from the header of linux-libc-dev 6.x on x86_64).
    #[test]
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    ))]
    fn opcodes_are_the_headers() {
        assert_eq!(u64::from(SNAP_CREATE_V2), 0x5000_9417);
        assert_eq!(u64::from(SNAP_DESTROY), 0x5000_940F);
        // BTRFS_IOC_SNAP_DESTROY_V2, unused, would be 0x5000_943F.
        assert_eq!(
            u64::from(opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 63)),
            0x5000_943F
        );
    }

    #[test]
    fn names_are_checked() {
        for (bad, why) in [
            ("", "empty"),
            (".", "'.'"),
            ("..", "'..'"),
            ("a/b", "'/'"),
            ("/", "'/'"),
            ("x\0y", "NUL"),
        ] {
            let err = SubvolName::new(OsStr::new(bad)).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let longest = "n".repeat(SUBVOL_NAME_MAX);
        SubvolName::new(OsStr::new(&longest)).expect("the longest name");
        let err = SubvolName::new(OsStr::new(&format!("{longest}n"))).expect_err("too long");
        assert!(err.contains("4039"), "{err}");
        SubvolName::new(OsStr::new("...")).expect("dots are a name");
        SubvolName::new(OsStr::from_bytes(b"\xff.snap")).expect("any bytes but '/' and NUL");
    }

    #[test]
    fn arguments_carry_the_name_flags_and_fd() {
        let file = std::fs::File::open("/").expect("open /");
        let longest = "n".repeat(SUBVOL_NAME_MAX);
        let name = SubvolName::new(OsStr::new(&longest)).expect("a name");

        let args = snapshot_args(file.as_fd(), name, true);
        assert_eq!(args.fd, i64::from(file.as_raw_fd()));
        assert_eq!((args.transid, args.flags, args.unused), (0, 2, [0; 4]));
        assert_eq!(&args.name[..SUBVOL_NAME_MAX], longest.as_bytes());
        assert_eq!(args.name[SUBVOL_NAME_MAX], 0, "NUL-terminated");
        let args = snapshot_args(file.as_fd(), name, false);
        assert_eq!(args.flags, 0, "writable");

        let short = SubvolName::new(OsStr::new("snap")).expect("a name");
        let args = destroy_args(short);
        assert_eq!(args.fd, 0);
        assert_eq!(&args.name[..5], b"snap\0");
        assert!(args.name[4..].iter().all(|&b| b == 0));
    }
}
