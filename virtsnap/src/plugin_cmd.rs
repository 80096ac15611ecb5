//! Plugins in the CLI: loading the plugins of `$VIRTSNAP_PLUGIN_DIR` and
//! `STATE_DIR/plugins` as drivers ([`plugin_drivers`]), and
//! `plugin-list`, which shows each plugin found (name, ABI, version,
//! thread model, operations, path) or why it was refused, and with
//! `--volume` what each can do with that volume.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::Args;
use plugin_abi::host::{self, Discovered, PluginDriver};
use snapshot_core::driver::{Capabilities, Volume, VolumeDriver, VolumeFormat, VolumeState};

/// The names of the built-in drivers, which no plugin may take.
pub const BUILT_IN: &[&str] = &["qemu", "lvm", "btrfs", "file"];

/// `plugin-list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Also show what each plugin can do with this volume, offline and in
    /// use.
    #[arg(long, value_name = "PATH")]
    volume: Option<PathBuf>,
    /// The volume's format (default: sniffed, qcow2 or raw).
    #[arg(long, requires = "volume")]
    format: Option<String>,
}

/// The plugin directories of this process.
fn dirs() -> Vec<PathBuf> {
    let state = snapshot_core::store::layout::state_dir().ok();
    host::plugin_dirs(
        std::env::var_os(host::loader::PLUGIN_DIR_VAR).as_deref(),
        state.as_deref(),
    )
}

/// What discovery found, once per process.
fn discovered() -> &'static [Discovered] {
    static FOUND: OnceLock<Vec<Discovered>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let found = host::discover(&dirs(), BUILT_IN);
        for d in &found {
            if let Err(e) = &d.result {
                tracing::warn!("plugin refused: {e}");
            }
        }
        found
    })
}

/// A driver for every plugin that loaded and opened (a plugin whose
/// instance cannot open is left out with a warning).
#[must_use]
pub fn plugin_drivers() -> Vec<Arc<dyn VolumeDriver>> {
    discovered()
        .iter()
        .filter_map(|d| d.result.as_ref().ok())
        .filter_map(|p| match PluginDriver::open(Arc::clone(p)) {
            Ok(driver) => Some(Arc::new(driver) as Arc<dyn VolumeDriver>),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        })
        .collect()
}

fn caps_text(caps: &Capabilities) -> String {
    let mut words: Vec<String> = caps.modes().iter().map(ToString::to_string).collect();
    for (on, word) in [
        (caps.revert, "revert"),
        (caps.revert_keeps_newer, "revert-keeps-newer"),
        (caps.delete_rebase, "delete-rebase"),
        (caps.list, "list"),
        (caps.checksums, "checksums"),
    ] {
        if on {
            words.push(word.to_string());
        }
    }
    if words.is_empty() {
        "declines".to_string()
    } else {
        words.join(",")
    }
}

/// Runs `plugin-list`.
pub fn run(args: &ListArgs) -> ExitCode {
    match render(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("virtsnap: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(args: &ListArgs) -> Result<String, String> {
    use std::fmt::Write as _;
    let volume = match &args.volume {
        None => None,
        // A network volume (`rbd:pool/image`) is the plugins' to find.
        Some(path)
            if path
                .to_str()
                .is_some_and(|p| snapshot_core::driver::network_protocol(p).is_some()) =>
        {
            let format = args
                .format
                .as_deref()
                .map_or(VolumeFormat::Raw, VolumeFormat::from_name);
            Some(Volume::new(path, format))
        }
        Some(path) => {
            let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if !path.exists() {
                return Err(format!("volume {} does not exist", path.display()));
            }
            let format = args.format.as_deref().map_or_else(
                || snapshot_core::exec::sniff_format(&path),
                VolumeFormat::from_name,
            );
            Some(Volume::new(path, format))
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let mut out = String::new();
    let found = discovered();
    if found.is_empty() {
        let dirs = dirs();
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        let _ = writeln!(
            out,
            "No plugins found (looked in: {}; set ${} to add directories).",
            if shown.is_empty() {
                "nothing".to_string()
            } else {
                shown.join(", ")
            },
            host::loader::PLUGIN_DIR_VAR
        );
        return Ok(out);
    }
    let ops_of = |p: &host::Plugin| {
        let mut ops = vec!["create", "delete"];
        ops.extend(p.optional_ops());
        ops.join(",")
    };
    // The operations column is as wide as the longest list.
    let ops_width = found
        .iter()
        .filter_map(|d| d.result.as_ref().ok())
        .map(|p| ops_of(p).len())
        .max()
        .unwrap_or(0)
        .max("Operations".len());
    let _ = writeln!(
        out,
        " {:<16} {:<5} {:<9} {:<18} {:<ops_width$} Path",
        "Name", "ABI", "Version", "Threads", "Operations"
    );
    let _ = writeln!(out, "{}", "-".repeat(70 + ops_width));
    for d in found {
        match &d.result {
            Ok(p) => {
                let _ = writeln!(
                    out,
                    " {:<16} {:<5} {:<9} {:<18} {:<ops_width$} {}",
                    p.name,
                    format!("{}.{}", p.abi.0, p.abi.1),
                    p.version,
                    p.thread_model.as_str(),
                    ops_of(p),
                    p.path.display()
                );
                if let Some(volume) = &volume {
                    let driver = PluginDriver::open(Arc::clone(p));
                    for state in [VolumeState::Offline, VolumeState::InUse] {
                        let text = match &driver {
                            Err(e) => format!("cannot start: {}", e.message),
                            Ok(driver) => {
                                match runtime.block_on(driver.capabilities(volume, state)) {
                                    Ok(caps) => caps_text(&caps),
                                    Err(e) => format!("error: {e}"),
                                }
                            }
                        };
                        let state = match state {
                            VolumeState::Offline => "offline",
                            VolumeState::InUse => "in use",
                        };
                        let _ = writeln!(out, "   {} {state}: {text}", volume.path.display());
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(out, " {:<16} refused: {e}", "-");
            }
        }
    }
    Ok(out)
}
