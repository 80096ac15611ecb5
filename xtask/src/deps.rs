//! System packages the tests need: the table of commands that must be on
//! PATH and the Debian packages providing them, detecting which are missing,
//! and installing them with apt-get when running as root.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::cmd;

/// A command that must be on PATH, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemTool {
    /// Executable looked up on PATH.
    pub command: &'static str,
    /// Debian package that provides it.
    pub package: &'static str,
    /// Which part of the project needs it.
    pub why: &'static str,
}

/// Every system command the test suite uses. Add a row when a test starts
/// calling a new external tool.
pub const SYSTEM_TOOLS: &[SystemTool] = &[
    SystemTool {
        command: "xmllint",
        package: "libxml2-utils",
        why: "RelaxNG validation of snapshot XML in snapshot-conf tests",
    },
    SystemTool {
        command: "qemu-img",
        package: "qemu-utils",
        why: "qcow2 images for the qemu driver tests",
    },
    SystemTool {
        command: "qemu-io",
        package: "qemu-utils",
        why: "writing and checking guest data in qcow2 images (driver, volume API and CLI tests, demo)",
    },
    SystemTool {
        command: "qemu-system-x86_64",
        package: "qemu-system-x86",
        why: "running domains (stub guests and the Linux test guest) in the live-domain tests; installed without recommends, which would replace a newer qemu-utils",
    },
    SystemTool {
        command: "gcc",
        package: "gcc",
        why: "assembling the stub guest kernel of the live-domain tests",
    },
    SystemTool {
        command: "ld",
        package: "binutils",
        why: "linking the stub guest kernel of the live-domain tests",
    },
    SystemTool {
        command: "mount",
        package: "mount",
        why: "a small tmpfs for the file driver's no-space tests",
    },
    SystemTool {
        command: "btrfs",
        package: "btrfs-progs",
        why: "btrfs subvolume snapshots (driver-btrfs) and its tests on a loop-mounted btrfs",
    },
    SystemTool {
        command: "mkfs.btrfs",
        package: "btrfs-progs",
        why: "a scratch btrfs on a loop device for the btrfs driver's tests",
    },
    SystemTool {
        command: "dpkg-deb",
        package: "dpkg",
        why: "unpacking Debian packages into the Linux test guest (cargo xtask testvm build)",
    },
    SystemTool {
        command: "gzip",
        package: "gzip",
        why: "compressing the Linux test guest's initramfs (cargo xtask testvm build)",
    },
    SystemTool {
        command: "tar",
        package: "tar",
        why: "packing the Linux test guest's payload disk (testvm)",
    },
    SystemTool {
        command: "ceph-mon",
        package: "ceph-mon",
        why: "the monitor of the throwaway Ceph cluster the RBD tests run against (testceph, cargo xtask ceph up); no ceph-mgr: RBD needs none",
    },
    SystemTool {
        command: "ceph-osd",
        package: "ceph-osd",
        why: "the OSD (bluestore on a sparse file) of the RBD tests' Ceph cluster (testceph)",
    },
    SystemTool {
        command: "ceph",
        package: "ceph-common",
        why: "bootstrapping and checking the RBD tests' Ceph cluster (testceph)",
    },
    SystemTool {
        command: "ceph-authtool",
        package: "ceph-common",
        why: "the cephx keys of the RBD tests' Ceph cluster (testceph)",
    },
    SystemTool {
        command: "rados",
        package: "ceph-common",
        why: "the readiness probe of the RBD tests' Ceph cluster (testceph)",
    },
    SystemTool {
        command: "rbd",
        package: "ceph-common",
        why: "creating, snapshotting and checking RBD images in the RBD tests (testceph)",
    },
];

/// A file that must exist (a C library's development files), and where it
/// comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemFile {
    /// Absolute path of the file.
    pub path: &'static str,
    /// Debian package that provides it.
    pub package: &'static str,
    /// Which part of the project needs it.
    pub why: &'static str,
}

/// Every system file (headers and libraries, not commands) the test suite
/// uses. Add a row when a test starts building against a new C library.
pub const SYSTEM_FILES: &[SystemFile] = &[SystemFile {
    // The C example plugin's tests compile it with gcc against jansson
    // (its JSON), so they need the header and the library.
    path: "/usr/include/jansson.h",
    package: "libjansson-dev",
    why: "compiling the C example plugin (jansson for JSON) in plugin-abi's tests",
}];

/// Whether missing packages may be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Install with apt-get when running as root and apt-get exists.
    IfRoot,
    /// Only report what is missing.
    Never,
}

impl Install {
    pub fn from_no_install(no_install: bool) -> Self {
        if no_install {
            Self::Never
        } else {
            Self::IfRoot
        }
    }
}

/// Makes sure every command of [`SYSTEM_TOOLS`] is on PATH and every file
/// of [`SYSTEM_FILES`] exists, installing the missing packages when allowed
/// and possible. Fails naming what is missing and how to install it.
pub fn ensure(install: Install) -> Result<()> {
    let names: Vec<_> = SYSTEM_TOOLS
        .iter()
        .map(|tool| tool.command)
        .chain(SYSTEM_FILES.iter().map(|file| file.path))
        .collect();
    cmd::announce(&format!("system packages: checking {}", names.join(", ")));

    let missing = missing_tools(SYSTEM_TOOLS);
    let missing_files = absent_files(SYSTEM_FILES);
    if missing.is_empty() && missing_files.is_empty() {
        cmd::announce(&format!(
            "system packages: all present ({})",
            describe_present(SYSTEM_TOOLS)
        ));
        return Ok(());
    }
    for tool in &missing {
        eprintln!(
            "    missing: {} (Debian package {}; needed for {})",
            tool.command, tool.package, tool.why
        );
    }
    for file in &missing_files {
        eprintln!(
            "    missing: {} (Debian package {}; needed for {})",
            file.path, file.package, file.why
        );
    }

    let packages = all_packages(&missing, &missing_files);
    let is_root = running_as_root();
    let has_apt = find_on_path("apt-get").is_some();
    if install == Install::IfRoot && is_root && has_apt {
        apt_install(&packages);
        // Every tool again, not only those that were missing: an install
        // can remove a package that conflicts with it (qemu-system-x86 7.2
        // removes a newer qemu-utils from backports, taking qemu-img).
        let mut still_missing = missing_tools(SYSTEM_TOOLS);
        let mut still_missing_files = absent_files(SYSTEM_FILES);
        let mut installed = packages.clone();
        let removed: Vec<_> = still_missing
            .iter()
            .filter(|t| !missing.iter().any(|m| m.command == t.command))
            .copied()
            .collect();
        if !removed.is_empty() {
            let again = all_packages(&removed, &[]);
            for tool in &removed {
                eprintln!(
                    "    removed by that install: {} (Debian package {}, which conflicted with \
                     what was installed); installing Debian's {} to match",
                    tool.command, tool.package, tool.package
                );
            }
            apt_install(&again);
            installed.extend(again);
            still_missing = missing_tools(SYSTEM_TOOLS);
            still_missing_files = absent_files(SYSTEM_FILES);
        }
        if still_missing.is_empty() && still_missing_files.is_empty() {
            cmd::announce(&format!(
                "system packages: installed {}; all present ({})",
                installed.join(" "),
                describe_present(SYSTEM_TOOLS)
            ));
            return Ok(());
        }
        bail!(missing_error(
            &still_missing,
            &still_missing_files,
            is_root,
            has_apt
        ));
    }
    if install == Install::IfRoot {
        let reason = if is_root {
            "apt-get is not on PATH"
        } else {
            "not running as root"
        };
        eprintln!("    not installing: {reason}");
    }
    bail!(missing_error(&missing, &missing_files, is_root, has_apt));
}

/// Runs `apt-get update` then `apt-get install` for `packages`, non-interactively.
/// Failures are reported but not fatal: the caller checks PATH again.
fn apt_install(packages: &[&str]) {
    let mut update = apt_get();
    update.arg("update");
    let mut install = apt_get();
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages);
    cmd::announce(&format!(
        "system packages: running as root; will run, with DEBIAN_FRONTEND=noninteractive, `{}` then `{}`",
        cmd::display(&update),
        cmd::display(&install)
    ));
    if let Err(err) = cmd::run(&mut update) {
        eprintln!("    warning: {err:#}; trying the install anyway");
    }
    if let Err(err) = cmd::run(&mut install) {
        eprintln!("    warning: {err:#}");
    }
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

/// One line naming the missing commands and files, their packages and how
/// to install them.
fn missing_error(
    missing: &[SystemTool],
    missing_files: &[SystemFile],
    is_root: bool,
    has_apt: bool,
) -> String {
    let commands: Vec<_> = missing
        .iter()
        .map(|tool| format!("`{}`", tool.command))
        .collect();
    let files: Vec<_> = missing_files.iter().map(|file| file.path).collect();
    let mut what = Vec::new();
    if !commands.is_empty() {
        what.push(format!("{} not on PATH", commands.join(", ")));
    }
    if !files.is_empty() {
        what.push(format!("{} missing", files.join(", ")));
    }
    let packages = all_packages(missing, missing_files);
    let noun = if packages.len() == 1 {
        "package"
    } else {
        "packages"
    };
    let packages = packages.join(" ");
    format!(
        "{} (Debian {noun} {packages}); install with: {}",
        what.join(", "),
        install_hint(&packages, is_root, has_apt)
    )
}

/// The files of `files` that do not exist.
fn absent_files(files: &[SystemFile]) -> Vec<SystemFile> {
    files
        .iter()
        .filter(|file| !Path::new(file.path).exists())
        .copied()
        .collect()
}

/// The packages to install for the missing tools and files, each once.
fn all_packages(missing: &[SystemTool], missing_files: &[SystemFile]) -> Vec<&'static str> {
    let mut packages = packages_for(missing);
    for file in missing_files {
        if !packages.contains(&file.package) {
            packages.push(file.package);
        }
    }
    packages
}

/// The command a person should run to install `package` (one or several,
/// space-separated).
fn install_hint(package: &str, is_root: bool, has_apt: bool) -> String {
    match (has_apt, is_root) {
        (true, true) => format!("apt-get update && apt-get install -y {package}"),
        (true, false) => format!("sudo apt-get update && sudo apt-get install -y {package}"),
        (false, _) => format!("your package manager (Debian/Ubuntu: apt-get install {package})"),
    }
}

/// The tools of `tools` whose command is not on PATH.
fn missing_tools(tools: &[SystemTool]) -> Vec<SystemTool> {
    tools
        .iter()
        .filter(|tool| find_on_path(tool.command).is_none())
        .copied()
        .collect()
}

/// The packages to install for `missing`, each once, in table order.
fn packages_for(missing: &[SystemTool]) -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = Vec::new();
    for tool in missing {
        if !packages.contains(&tool.package) {
            packages.push(tool.package);
        }
    }
    packages
}

/// The tools with where they are, then the files of [`SYSTEM_FILES`].
fn describe_present(tools: &[SystemTool]) -> String {
    tools
        .iter()
        .map(|tool| match find_on_path(tool.command) {
            Some(path) => format!("{} at {}", tool.command, path.display()),
            None => tool.command.to_owned(),
        })
        .chain(SYSTEM_FILES.iter().map(|file| file.path.to_owned()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds `command` on `$PATH`.
pub fn find_on_path(command: &str) -> Option<PathBuf> {
    find_in_dirs(command, &std::env::var_os("PATH")?)
}

/// Finds an executable regular file named `command` in a PATH-style list of
/// directories.
fn find_in_dirs(command: &str, path_list: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_list)
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether the effective user is root: from `/proc/self/status`, or from
/// `id -u` where there is no /proc.
pub(crate) fn running_as_root() -> bool {
    if let Some(uid) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(effective_uid)
    {
        return uid == 0;
    }
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The effective uid from the text of `/proc/self/status`, whose `Uid:` line
/// lists the real, effective, saved and filesystem uids.
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn tool(command: &'static str, package: &'static str) -> SystemTool {
        SystemTool {
            command,
            package,
            why: "test",
        }
    }

    #[test]
    fn each_package_is_installed_once_in_table_order() {
        let missing = [
            tool("qemu-img", "qemu-utils"),
            tool("xmllint", "libxml2-utils"),
            tool("qemu-io", "qemu-utils"),
        ];
        assert_eq!(packages_for(&missing), ["qemu-utils", "libxml2-utils"]);
        assert!(packages_for(&[]).is_empty());
    }

    #[test]
    fn table_has_no_duplicate_commands_and_no_blank_cells() {
        for (i, tool) in SYSTEM_TOOLS.iter().enumerate() {
            assert!(
                !tool.command.is_empty() && !tool.package.is_empty() && !tool.why.is_empty(),
                "blank cell in {tool:?}"
            );
            assert!(
                !tool.command.contains('/'),
                "{} must be a bare command name",
                tool.command
            );
            assert!(
                SYSTEM_TOOLS[i + 1..]
                    .iter()
                    .all(|other| other.command != tool.command),
                "{} listed twice",
                tool.command
            );
        }
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status =
            "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tcat\n"), None);
        assert_eq!(effective_uid("Uid:\t0\n"), None);
    }

    #[test]
    fn missing_error_names_commands_packages_and_the_install_command() {
        let missing = [
            tool("xmllint", "libxml2-utils"),
            tool("qemu-img", "qemu-utils"),
        ];
        assert_eq!(
            missing_error(&missing, &[], false, true),
            "`xmllint`, `qemu-img` not on PATH (Debian packages libxml2-utils qemu-utils); \
             install with: sudo apt-get update && sudo apt-get install -y libxml2-utils qemu-utils"
        );
        let header = SystemFile {
            path: "/usr/include/jansson.h",
            package: "libjansson-dev",
            why: "test",
        };
        assert_eq!(
            missing_error(&missing[..1], &[header], true, true),
            "`xmllint` not on PATH, /usr/include/jansson.h missing (Debian packages \
             libxml2-utils libjansson-dev); install with: apt-get update && apt-get install -y \
             libxml2-utils libjansson-dev"
        );
        assert_eq!(
            all_packages(&[], &[header, header]),
            ["libjansson-dev"],
            "each package once"
        );
    }

    #[test]
    fn system_files_are_absolute_and_jansson_is_among_them() {
        for file in SYSTEM_FILES {
            assert!(Path::new(file.path).is_absolute(), "{file:?}");
            assert!(!file.package.is_empty() && !file.why.is_empty(), "{file:?}");
        }
        assert!(
            SYSTEM_FILES.iter().any(|f| f.package == "libjansson-dev"),
            "the C example plugin's tests need libjansson-dev"
        );
        let gone = SystemFile {
            path: "/nonexistent/virtsnap/x.h",
            package: "x",
            why: "test",
        };
        assert_eq!(absent_files(&[gone]), [gone]);
    }

    #[test]
    fn install_hint_matches_privileges() {
        assert_eq!(
            install_hint("libxml2-utils", true, true),
            "apt-get update && apt-get install -y libxml2-utils"
        );
        assert!(install_hint("libxml2-utils", false, true).starts_with("sudo apt-get update"));
        assert!(!install_hint("libxml2-utils", true, false).contains("sudo"));
    }

    #[test]
    fn lookup_finds_only_executable_files() {
        let dir = std::env::temp_dir().join(format!("xtask-path-{}", std::process::id()));
        let bin = dir.join("bin");
        let other = dir.join("other");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(other.join("subdir-tool")).unwrap();
        for (name, mode) in [("tool", 0o755), ("data", 0o644)] {
            let file = bin.join(name);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let path_list = std::env::join_paths([&other, &bin]).unwrap();

        let found = find_in_dirs("tool", &path_list);
        let not_executable = find_in_dirs("data", &path_list);
        let directory = find_in_dirs("subdir-tool", &path_list);
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(found, Some(bin.join("tool")));
        assert_eq!(not_executable, None);
        assert_eq!(directory, None);
    }
}
