//! The recipe of the Linux test guest and where its builds are cached.
//!
//! This module owns every input of the guest: the Debian packages, the
//! binaries and kernel modules taken from them, the LVM configuration and
//! the init script (`testvm/guest/`), plus [`BUILD_VERSION`] for the
//! builder's own code. `cargo xtask testvm build` (xtask/src/testvm.rs)
//! follows this recipe; [`key`] hashes it, and the build lands in
//! `<cache root>/<key>/`. [`crate::TestVm`] computes the same key, so it
//! boots only a guest built from the recipe of the source tree it was
//! compiled from, and otherwise says to run the build.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::Error;

/// Version of the builder (xtask/src/testvm.rs). Bump it whenever a change
/// there alters what lands in the kernel or initramfs, so that caches built
/// by the old code are not used.
pub const BUILD_VERSION: u32 = 1;

/// The Debian package whose dependency names the kernel (Debian's cloud
/// kernel: small, fast to boot, virtio built in or as modules; it has no 9p,
/// which is why host files go in on a tar payload disk).
pub const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// The userland packages; apt resolves their dependency closure, from
/// which the builder takes [`BINARIES`] and their shared libraries.
pub const PACKAGES: &[&str] = &[
    "busybox-static",
    "lvm2",
    "thin-provisioning-tools",
    "btrfs-progs",
    "e2fsprogs",
    "qemu-guest-agent",
];

/// Binaries copied into the initramfs, as paths inside the packages, each
/// with its shared libraries. The packages' symbolic links to them
/// (`lvcreate` -> `lvm`, `thin_check` -> `pdata_tools`, `mkfs.ext4` ->
/// `mke2fs`) come along; busybox provides every other command.
pub const BINARIES: &[&str] = &[
    "sbin/lvm",
    "sbin/dmsetup",
    "usr/sbin/pdata_tools",
    "sbin/mke2fs",
    "sbin/e2fsck",
    "sbin/tune2fs",
    "sbin/resize2fs",
    "sbin/dumpe2fs",
    "bin/btrfs",
    "sbin/mkfs.btrfs",
    "usr/sbin/qemu-ga",
];

/// Kernel modules copied into the initramfs (their dependencies are added
/// from `modules.dep`). The init script loads the boot-time ones; the rest
/// load on demand (`btrfs` on mount, the `dm_*` targets when LVM asks).
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_rng",
    "loop",
    "dm_mod",
    "dm_snapshot",
    "dm_thin_pool",
    "dm_zero",
    // Fault injection for the LVM driver's tests: failing and slow devices.
    "dm_flakey",
    "dm_delay",
    "btrfs",
    "ext4",
    "crc32c_generic",
    "crc32c_intel",
];

/// The guest's `/init` (PID 1): see `testvm/guest/init.sh`.
pub const INIT_SCRIPT: &str = include_str!("../guest/init.sh");

/// The guest's `/etc/lvm/lvm.conf`: see `testvm/guest/lvm.conf`.
pub const LVM_CONF: &str = include_str!("../guest/lvm.conf");

/// The kernel image, in the artefact directory.
pub const KERNEL_FILE: &str = "vmlinuz";
/// The initramfs (a gzip-compressed newc cpio archive), in the artefact directory.
pub const INITRD_FILE: &str = "initrd.img";
/// What a build took (key, packages and versions, modules), in the
/// artefact directory; written last.
pub const MANIFEST_FILE: &str = "manifest.txt";

/// Environment variable naming the cache root (instead of the default,
/// see [`cache_root`]).
pub const CACHE_ENV: &str = "VIRTSNAP_TESTVM_CACHE";

/// The cache key of this recipe: 16 hex digits of a 128-bit FNV-1a hash
/// of every input above. Stable across Rust versions and platforms.
#[must_use]
pub fn key() -> String {
    let mut hash = Fnv128::new();
    hash.field(b"virtsnap-testvm");
    hash.field(BUILD_VERSION.to_string().as_bytes());
    hash.field(KERNEL_PACKAGE.as_bytes());
    for list in [PACKAGES, BINARIES, MODULES] {
        hash.field(list.len().to_string().as_bytes());
        for item in list {
            hash.field(item.as_bytes());
        }
    }
    hash.field(INIT_SCRIPT.as_bytes());
    hash.field(LVM_CONF.as_bytes());
    let digest = format!("{:032x}", hash.finish());
    digest[..16].to_owned()
}

/// The directory holding every build: `$VIRTSNAP_TESTVM_CACHE` when set;
/// otherwise `/var/cache/virtsnap/testvm` for root, and
/// `$XDG_CACHE_HOME/virtsnap/testvm` (or `~/.cache/virtsnap/testvm`) for
/// anyone else. Always outside the source tree.
///
/// # Errors
/// [`Error::NoCacheDir`] when none of these can be determined.
pub fn cache_root() -> Result<PathBuf, Error> {
    choose_cache_root(|name| std::env::var_os(name), running_as_root()).ok_or(Error::NoCacheDir)
}

/// The directory of this recipe's build: `<cache root>/<key>`.
///
/// # Errors
/// See [`cache_root`].
pub fn artefact_dir() -> Result<PathBuf, Error> {
    Ok(cache_root()?.join(key()))
}

/// Whether `dir` holds a finished build: the kernel, the initramfs and the
/// manifest, which the builder writes last (and it renames the whole
/// directory into place, so a build is there whole or not at all).
#[must_use]
pub fn is_built(dir: &Path) -> bool {
    [KERNEL_FILE, INITRD_FILE, MANIFEST_FILE]
        .iter()
        .all(|file| dir.join(file).is_file())
}

/// [`cache_root`] with the environment and the user given.
fn choose_cache_root(env: impl Fn(&str) -> Option<OsString>, is_root: bool) -> Option<PathBuf> {
    let absolute = |name: &str| {
        env(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(dir) = absolute(CACHE_ENV) {
        return Some(dir);
    }
    let base = if is_root {
        PathBuf::from("/var/cache")
    } else if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        xdg
    } else {
        absolute("HOME")?.join(".cache")
    };
    Some(base.join(Path::new("virtsnap/testvm")))
}

/// Whether the effective user is root, from `/proc/self/status`.
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(effective_uid)
        == Some(0)
}

/// The effective uid: the second number of the `Uid:` line of
/// `/proc/self/status` (real, effective, saved, filesystem).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

/// 128-bit FNV-1a over length-prefixed fields (so that `["ab", "c"]` and
/// `["a", "bc"]` differ). Not cryptographic: it only names cache entries.
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u128::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    fn finish(&self) -> u128 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn fnv128_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): FNV-1a 128 of "" and "a".
        assert_eq!(
            Fnv128::new().finish(),
            0x6c62_272e_07bb_0142_62b8_2175_6295_c58d
        );
        let mut hash = Fnv128::new();
        hash.bytes(b"a");
        assert_eq!(hash.finish(), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }

    #[test]
    fn fields_are_length_prefixed() {
        let hash = |fields: &[&str]| {
            let mut hash = Fnv128::new();
            for field in fields {
                hash.field(field.as_bytes());
            }
            hash.finish()
        };
        assert_ne!(hash(&["ab", "c"]), hash(&["a", "bc"]));
        assert_eq!(hash(&["ab", "c"]), hash(&["ab", "c"]));
    }

    #[test]
    fn key_is_16_hex_digits_and_stable() {
        let key = key();
        assert_eq!(key.len(), 16);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
        assert_eq!(key, super::key());
    }

    #[test]
    fn the_cache_env_wins_then_root_then_xdg_then_home() {
        let all = [
            (CACHE_ENV, "/srv/testvm"),
            ("XDG_CACHE_HOME", "/home/u/.xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            choose_cache_root(env(&all), true),
            Some(PathBuf::from("/srv/testvm"))
        );
        assert_eq!(
            choose_cache_root(env(&all[1..]), true),
            Some(PathBuf::from("/var/cache/virtsnap/testvm"))
        );
        assert_eq!(
            choose_cache_root(env(&all[1..]), false),
            Some(PathBuf::from("/home/u/.xdg/virtsnap/testvm"))
        );
        assert_eq!(
            choose_cache_root(env(&all[2..]), false),
            Some(PathBuf::from("/home/u/.cache/virtsnap/testvm"))
        );
        assert_eq!(choose_cache_root(env(&[]), false), None);
        // Relative values are ignored, as the XDG specification says.
        assert_eq!(
            choose_cache_root(env(&[(CACHE_ENV, "rel"), ("HOME", "/h")]), false),
            Some(PathBuf::from("/h/.cache/virtsnap/testvm"))
        );
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        assert_eq!(effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn the_init_script_speaks_the_protocol_the_host_expects() {
        assert!(INIT_SCRIPT.contains(crate::vm::READY_MARKER));
        assert!(INIT_SCRIPT.contains(crate::vm::SHELL_PORT));
        assert!(INIT_SCRIPT.contains(crate::vm::AGENT_PORT));
        assert!(INIT_SCRIPT.contains(crate::vm::PAYLOAD_SERIAL));
    }
}
