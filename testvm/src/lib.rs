//! virtsnap's Linux test guest, for tests that need what this host's kernel
//! lacks: device-mapper and LVM (classic and thin), btrfs inside a guest,
//! and a real qemu-guest-agent to freeze and thaw.
//!
//! The guest is Debian's cloud kernel and a busybox initramfs holding
//! lvm2, thin-provisioning-tools, btrfs-progs, e2fsprogs and
//! qemu-guest-agent, all from Debian packages. `cargo xtask testvm build`
//! builds it by [`recipe`] into a cache outside the source tree (about
//! 20 s; instant when cached), and `cargo xtask test` does so before the
//! tests. It boots under QEMU with TCG in about 5 s.
//!
//! A test boots one with [`TestVm::boot`], or with [`boot_or_skip`], which
//! reports a skip (with the reason) when this host cannot run the guest,
//! and fails instead when `VIRTSNAP_REQUIRE_BACKENDS` is set, as
//! `cargo xtask test` (CI) does:
//!
//! ```no_run
//! use serde_json::json;
//! use testvm::{Options, TestVm};
//!
//! // In a test: #[test] fn volume_group_in_the_guest() { ... }
//! fn volume_group_in_the_guest() -> Result<(), testvm::Error> {
//!     let Some(vm) = testvm::boot_or_skip(&Options::new().disk(256 << 20)) else {
//!         return Ok(()); // skipped: the reason was printed
//!     };
//!     let disk = TestVm::scratch_device(0);
//!     vm.run_ok(&format!("pvcreate -q {disk} && vgcreate -q vg0 {disk}"))?;
//!     let report = vm.run_ok("vgs --reportformat json vg0")?;
//!     assert!(report.contains("\"vg_name\":\"vg0\""));
//!     assert_eq!(vm.qga(&json!({"execute": "guest-ping"}))?, json!({}));
//!     Ok(())
//! }
//! # volume_group_in_the_guest().unwrap();
//! ```
//!
//! What a guest offers: commands over a virtio-serial shell
//! ([`TestVm::run`], stdout and stderr apart), qemu-guest-agent
//! ([`TestVm::qga`], or [`TestVm::qga_socket`] for another client), QMP
//! ([`TestVm::qmp`], [`TestVm::qmp_socket`]), scratch qcow2 disks
//! ([`Options::disk`]), a directory of host files unpacked to `/payload`
//! ([`Options::payload`]) and its console log
//! ([`TestVm::console_log`]). Errors raised after QEMU started end with the
//! console's tail. Dropping the [`TestVm`] kills QEMU; if the test process
//! dies instead, the guest powers itself off.
//!
//! Environment variables:
//! - `VIRTSNAP_TESTVM_CACHE`: where builds are cached (see
//!   [`recipe::cache_root`]).
//! - `VIRTSNAP_TESTVM_PARALLEL`: how many guests may run at once (default:
//!   half the host's cores, at least one). Guests take a slot first, so
//!   parallel tests queue rather than starve each other under TCG.
//! - `VIRTSNAP_TESTVM_KEEP=1`: keep a guest's run directory (console log,
//!   QEMU's stderr, disks) for a post-mortem.
//! - `VIRTSNAP_REQUIRE_BACKENDS`: fail instead of skip ([`require_or_skip`]).

mod artefacts;
mod channel;
mod error;
pub mod recipe;
mod slots;
mod vm;

pub use artefacts::Artefacts;
pub use error::{ConsoleTail, Error};
pub use slots::PARALLEL_ENV;
pub use vm::{KEEP_ENV, Options, Output, TestVm};

/// Environment variable that makes tests fail, instead of skip, when a
/// backend they need is missing (`cargo xtask test` sets it).
pub const REQUIRE_BACKENDS_ENV: &str = "VIRTSNAP_REQUIRE_BACKENDS";

/// Whether tests must fail rather than skip when the guest is unavailable:
/// `VIRTSNAP_REQUIRE_BACKENDS` is set (to anything, as for the project's
/// other backends).
#[must_use]
pub fn backends_required() -> bool {
    std::env::var_os(REQUIRE_BACKENDS_ENV).is_some()
}

/// The guest's artefacts when it can boot here. Otherwise prints
/// `SKIP: <reason>` and returns `None`, or panics with the reason when
/// backends are required ([`backends_required`]).
///
/// # Panics
/// The guest cannot boot here and `VIRTSNAP_REQUIRE_BACKENDS` is set.
#[must_use]
#[track_caller]
pub fn require_or_skip() -> Option<Artefacts> {
    match Artefacts::locate() {
        Ok(artefacts) => Some(artefacts),
        Err(reason) => {
            assert!(
                !backends_required(),
                "{reason} ({REQUIRE_BACKENDS_ENV} is set: the test guest is required)"
            );
            eprintln!("SKIP: {reason}");
            None
        }
    }
}

/// Boots a guest with `options`, or skips as [`require_or_skip`] does.
///
/// # Panics
/// The guest cannot boot here and `VIRTSNAP_REQUIRE_BACKENDS` is set, or
/// it is available but fails to boot (a real failure, never a skip); the
/// message holds the console's tail.
#[must_use]
#[track_caller]
pub fn boot_or_skip(options: &Options) -> Option<TestVm> {
    let artefacts = require_or_skip()?;
    match artefacts.boot(options) {
        Ok(vm) => Some(vm),
        Err(err) => panic!("the test guest failed to boot: {err}"),
    }
}
