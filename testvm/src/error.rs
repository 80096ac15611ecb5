//! The crate's error type: what went wrong, and what to do about it. Errors
//! raised once QEMU runs carry the tail of the guest's console log.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::Output;

/// Everything that can go wrong finding, booting or talking to the guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The guest is built for x86-64 hosts only.
    #[error(
        "the Linux test guest runs on x86_64 hosts only (this host is {arch}): \
         its kernel and binaries are Debian amd64 packages"
    )]
    UnsupportedHost {
        /// `std::env::consts::ARCH` of this host.
        arch: &'static str,
    },

    /// A program the guest needs on the host is not installed.
    #[error(
        "`{program}` is not on PATH ({why}): install the Debian package {package} \
         (`cargo xtask deps` does it as root)"
    )]
    ToolMissing {
        /// The missing command.
        program: &'static str,
        /// The Debian package providing it.
        package: &'static str,
        /// What it is needed for.
        why: &'static str,
    },

    /// No directory for the build cache could be chosen.
    #[error(
        "cannot choose the test guest's cache directory: HOME is not set; \
         set VIRTSNAP_TESTVM_CACHE to an absolute directory"
    )]
    NoCacheDir,

    /// The guest of this recipe has not been built.
    #[error(
        "the Linux test guest is not built (recipe key {key}: no {dir}/vmlinuz and \
         initrd.img); run `cargo xtask testvm build`"
    )]
    NotBuilt {
        /// The recipe's cache key ([`crate::recipe::key`]).
        key: String,
        /// Where the build was looked for.
        dir: PathBuf,
    },

    /// An I/O operation on the host failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A host command preparing the guest (a disk image, the payload) failed.
    #[error("preparing the guest: `{command}` failed ({status}): {stderr}")]
    Setup {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },

    /// Too many test guests are running on this host; none finished in time.
    #[error(
        "no test guest slot became free within {waited:?} ({slots} guest(s) at a time, \
         lock files in {dir}); other tests hold them, or a stuck test does: \
         set VIRTSNAP_TESTVM_PARALLEL to allow more"
    )]
    SlotTimeout {
        /// How long it waited.
        waited: Duration,
        /// How many guests may run at once.
        slots: usize,
        /// Where the slot lock files are.
        dir: PathBuf,
    },

    /// QEMU ended before or while the guest was used.
    #[error(
        "QEMU exited ({status}); it also ends when the guest panics, reboots or \
         powers off (-no-reboot){}{console}",
        stderr_block(.stderr)
    )]
    QemuExited {
        /// Its exit status.
        status: String,
        /// What QEMU itself printed on standard error.
        stderr: String,
        /// The end of the guest's console.
        console: ConsoleTail,
    },

    /// The guest did not announce itself ready in time.
    #[error(
        "the test guest did not print TESTVM-READY within {waited:?} (TCG: expect ~5 s \
         on an idle 2-core host; a loaded host is slower){console}"
    )]
    BootTimeout {
        /// How long it waited.
        waited: Duration,
        /// The end of the guest's console.
        console: ConsoleTail,
    },

    /// The guest did not answer in time.
    #[error("{what}: no answer within {waited:?}{console}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// The end of the guest's console.
        console: ConsoleTail,
    },

    /// A channel to the guest broke or carried something unexpected.
    #[error("{channel}: {detail}{console}")]
    Protocol {
        /// Which channel (the command shell, qemu-ga, QMP).
        channel: &'static str,
        /// What happened.
        detail: String,
        /// The end of the guest's console.
        console: ConsoleTail,
    },

    /// A guest command exited non-zero where success was required.
    #[error(
        "guest command exited with status {}: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.rc, script.trim(), output.stdout, output.stderr
    )]
    CommandFailed {
        /// The script.
        script: String,
        /// What it printed and its exit status.
        output: Output,
    },

    /// qemu-guest-agent answered a command with an error.
    #[error("qemu-guest-agent refused `{command}`: {class}: {desc}")]
    Agent {
        /// The command's `execute` name.
        command: String,
        /// The error class (`GenericError`, `CommandNotFound`, ...).
        class: String,
        /// Its description.
        desc: String,
    },

    /// QMP answered a command with an error.
    #[error("QMP refused `{command}`: {class}: {desc}")]
    Qmp {
        /// The command's `execute` name.
        command: String,
        /// The error class.
        class: String,
        /// Its description.
        desc: String,
    },
}

/// QEMU's standard error as a block of an error message.
fn stderr_block(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        "\n--- QEMU printed nothing on stderr ---".to_owned()
    } else {
        format!("\n--- QEMU's stderr ---\n{}", stderr.trim_end())
    }
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// The last lines of the guest's serial console, shown at the end of an
/// error's message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleTail {
    /// The console log file (removed with the guest's run directory unless
    /// `VIRTSNAP_TESTVM_KEEP=1`).
    pub path: PathBuf,
    /// Its last lines.
    pub text: String,
}

impl fmt::Display for ConsoleTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.trim().is_empty() {
            return write!(
                f,
                "\n--- the guest console ({}) is empty: the kernel printed nothing ---",
                self.path.display()
            );
        }
        write!(
            f,
            "\n--- end of the guest console ({}) ---\n{}",
            self.path.display(),
            self.text
        )?;
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            writeln!(f)?;
        }
        write!(
            f,
            "--- (keep the whole run directory with VIRTSNAP_TESTVM_KEEP=1) ---"
        )
    }
}
