//! The crate's only unsafe code, two calls into the C library's process
//! machinery: a `pre_exec` hook that makes a child die with its parent
//! (`prctl(PR_SET_PDEATHSIG, SIGKILL)`), and `atexit` registration for the
//! shared cluster's cleanup. Listed in `xtask/src/lint.rs`'s allow-list.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};

/// Makes the child `cmd` spawns receive SIGKILL when the thread that
/// spawns it ends (the kernel's "parent" is a thread, not the process: see
/// `crate::daemon` for why daemons are spawned from a thread that lives as
/// long as the process). If the parent is already gone when the hook runs,
/// the spawn fails instead of leaving an orphan.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    let parent = getpid();
    let hook = move || -> std::io::Result<()> {
        set_parent_process_death_signal(Some(Signal::KILL))?;
        // The parent may have died between fork and prctl: then the
        // signal will never come, so give up on this child.
        if getppid() != Some(parent) {
            return Err(rustix::io::Errno::SRCH.into());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe work is allowed. It makes two raw system calls
    // (prctl and getppid, through rustix, which neither allocates nor
    // takes locks) and builds its error from an errno value, which does
    // not allocate either. It touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Registers `hook` to run when the process exits normally (`exit` or a
/// return from `main`; the test harness does one or the other, whatever
/// the tests' outcome). Returns whether it was registered.
pub(crate) fn at_exit(hook: extern "C" fn()) -> bool {
    // SAFETY: atexit only records the function pointer, which is a plain
    // `extern "C" fn` with no captured state, valid for the whole life of
    // the process. The hooks this crate passes catch every panic, so none
    // unwinds into the C library.
    unsafe { libc::atexit(hook) == 0 }
}
