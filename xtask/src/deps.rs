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
];

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

/// Makes sure every command of [`SYSTEM_TOOLS`] is on PATH, installing the
/// missing packages when allowed and possible. Fails naming what is missing
/// and how to install it.
pub fn ensure(install: Install) -> Result<()> {
    let names: Vec<_> = SYSTEM_TOOLS.iter().map(|tool| tool.command).collect();
    cmd::announce(&format!("system packages: checking {}", names.join(", ")));

    let missing = missing_tools(SYSTEM_TOOLS);
    if missing.is_empty() {
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

    let packages = packages_for(&missing);
    let is_root = running_as_root();
    let has_apt = find_on_path("apt-get").is_some();
    if install == Install::IfRoot && is_root && has_apt {
        apt_install(&packages);
        let still_missing = missing_tools(&missing);
        if still_missing.is_empty() {
            cmd::announce(&format!(
                "system packages: installed {}; all present ({})",
                packages.join(" "),
                describe_present(SYSTEM_TOOLS)
            ));
            return Ok(());
        }
        bail!(missing_error(&still_missing, is_root, has_apt));
    }
    if install == Install::IfRoot {
        let reason = if is_root {
            "apt-get is not on PATH"
        } else {
            "not running as root"
        };
        eprintln!("    not installing: {reason}");
    }
    bail!(missing_error(&missing, is_root, has_apt));
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

/// One line naming the missing commands, their packages and how to install them.
fn missing_error(missing: &[SystemTool], is_root: bool, has_apt: bool) -> String {
    let commands: Vec<_> = missing
        .iter()
        .map(|tool| format!("`{}`", tool.command))
        .collect();
    let packages = packages_for(missing);
    let noun = if packages.len() == 1 {
        "package"
    } else {
        "packages"
    };
    let packages = packages.join(" ");
    format!(
        "{} not on PATH (Debian {noun} {packages}); install with: {}",
        commands.join(", "),
        install_hint(&packages, is_root, has_apt)
    )
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

fn describe_present(tools: &[SystemTool]) -> String {
    tools
        .iter()
        .map(|tool| match find_on_path(tool.command) {
            Some(path) => format!("{} at {}", tool.command, path.display()),
            None => tool.command.to_owned(),
        })
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
            missing_error(&missing, false, true),
            "`xmllint`, `qemu-img` not on PATH (Debian packages libxml2-utils qemu-utils); \
             install with: sudo apt-get update && sudo apt-get install -y libxml2-utils qemu-utils"
        );
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
