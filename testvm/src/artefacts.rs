//! Whether the guest can boot on this host: the built kernel and initramfs
//! of this recipe, and the host programs that run them. [`Artefacts`] is
//! the answer when it is yes; the error says what is missing otherwise.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::{Error, recipe};

/// The QEMU system emulator the guest runs in.
pub(crate) const QEMU_SYSTEM: HostTool = HostTool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
    why: "it runs the Linux test guest",
};

/// Creates the guest's scratch disks.
pub(crate) const QEMU_IMG: HostTool = HostTool {
    program: "qemu-img",
    package: "qemu-utils",
    why: "it creates the test guest's scratch disks",
};

/// Packs the payload directory into the payload disk.
pub(crate) const TAR: HostTool = HostTool {
    program: "tar",
    package: "tar",
    why: "it packs the test guest's payload disk",
};

/// A host program the guest needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostTool {
    pub(crate) program: &'static str,
    pub(crate) package: &'static str,
    pub(crate) why: &'static str,
}

impl HostTool {
    /// Its path on `$PATH`, or [`Error::ToolMissing`].
    pub(crate) fn find(self) -> Result<PathBuf, Error> {
        std::env::var_os("PATH")
            .and_then(|dirs| find_in_dirs(self.program, &dirs))
            .ok_or(Error::ToolMissing {
                program: self.program,
                package: self.package,
                why: self.why,
            })
    }
}

fn find_in_dirs(program: &str, dirs: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(dirs)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// A bootable guest on this host: the kernel and initramfs built from this
/// crate's [`recipe`], and the QEMU programs to run them.
#[derive(Debug, Clone)]
pub struct Artefacts {
    /// The build's directory (`<cache root>/<key>`).
    pub dir: PathBuf,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// `qemu-system-x86_64`.
    pub(crate) qemu: PathBuf,
    /// `qemu-img`.
    pub(crate) qemu_img: PathBuf,
}

impl Artefacts {
    /// Finds everything the guest needs: an x86-64 host, `qemu-system-x86_64`
    /// and `qemu-img` on PATH, and the build of this recipe in the cache
    /// (see [`recipe::cache_root`]).
    ///
    /// # Errors
    /// What is missing, with what to do about it: [`Error::UnsupportedHost`],
    /// [`Error::ToolMissing`], [`Error::NoCacheDir`], [`Error::NotBuilt`].
    pub fn locate() -> Result<Self, Error> {
        if std::env::consts::ARCH != "x86_64" {
            return Err(Error::UnsupportedHost {
                arch: std::env::consts::ARCH,
            });
        }
        let qemu = QEMU_SYSTEM.find()?;
        let qemu_img = QEMU_IMG.find()?;
        let (kernel, initrd) = built_in(&recipe::artefact_dir()?)?;
        Ok(Self {
            dir: kernel.parent().map(Path::to_path_buf).unwrap_or_default(),
            kernel,
            initrd,
            qemu,
            qemu_img,
        })
    }
}

/// The kernel and initramfs of a complete build in `dir` (its manifest is
/// written last), or [`Error::NotBuilt`].
pub(crate) fn built_in(dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    if recipe::is_built(dir) {
        Ok((dir.join(recipe::KERNEL_FILE), dir.join(recipe::INITRD_FILE)))
    } else {
        Err(Error::NotBuilt {
            key: dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_build_is_not_built_and_says_how_to_build() {
        let cache = tempfile::tempdir().expect("tempdir");
        let dir = cache.path().join(recipe::key());
        let err = built_in(&dir).expect_err("empty cache");
        let message = err.to_string();
        assert!(matches!(err, Error::NotBuilt { .. }), "{message}");
        assert!(message.contains("cargo xtask testvm build"), "{message}");
        assert!(message.contains(&recipe::key()), "{message}");

        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(recipe::KERNEL_FILE), b"k").expect("write");
        std::fs::write(dir.join(recipe::INITRD_FILE), b"i").expect("write");
        assert!(
            built_in(&dir).is_err(),
            "no manifest: the build did not finish"
        );
        std::fs::write(dir.join(recipe::MANIFEST_FILE), b"m").expect("write");
        let (kernel, initrd) = built_in(&dir).expect("complete");
        assert_eq!(kernel, dir.join("vmlinuz"));
        assert_eq!(initrd, dir.join("initrd.img"));
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let tool = HostTool {
            program: "virtsnap-no-such-program",
            package: "no-such-package",
            why: "testing",
        };
        let message = tool.find().expect_err("not installed").to_string();
        assert!(
            message.contains("`virtsnap-no-such-program` is not on PATH"),
            "{message}"
        );
        assert!(
            message.contains("Debian package no-such-package"),
            "{message}"
        );
    }
}
