//! Finding, checking and loading plugins: where they are looked for
//! ([`plugin_dirs`]), which files are trusted (owned by root or the user
//! running virtsnap, not writable by group or others, in a directory that
//! is the same), and the checks a library must pass before anything of it
//! is called beyond its entry function ([`load`]). A library is loaded
//! once per process and never unloaded.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::abi;

use super::ffi::{self, Entry, Slot, Table};

/// The variable naming plugin directories (colon-separated).
pub const PLUGIN_DIR_VAR: &str = "VIRTSNAP_PLUGIN_DIR";

/// How a plugin takes concurrent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadModel {
    /// One call at a time across the plugin.
    SerializeAll,
    /// One call at a time per instance.
    SerializeInstance,
    /// Any number at once.
    Parallel,
}

impl ThreadModel {
    /// Its name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SerializeAll => "serialize-all",
            Self::SerializeInstance => "serialize-instance",
            Self::Parallel => "parallel",
        }
    }
}

/// A loaded, checked plugin library.
#[derive(Debug)]
pub struct Plugin {
    /// Its driver name (leaked once per library: libraries live forever).
    pub name: &'static str,
    /// Its own version.
    pub version: String,
    /// Its description, if any.
    pub description: Option<String>,
    /// Where it was loaded from (canonical).
    pub path: PathBuf,
    /// The ABI version it was built for.
    pub abi: (u16, u16),
    /// How it takes concurrent calls.
    pub thread_model: ThreadModel,
    /// What it logged while loading.
    pub load_log: Vec<String>,
    pub(crate) table: Table,
    /// Held for every call of a serialize-all plugin.
    pub(crate) serial: Mutex<()>,
}

impl Plugin {
    /// The optional operations it implements, in table order: `revert`,
    /// `list`, `undo`, and since ABI 1.1 `export-diff`, `import-diff` (a
    /// 1.0 plugin's table ends before those, so it never has them).
    #[must_use]
    pub fn optional_ops(&self) -> Vec<&'static str> {
        [
            Slot::Revert,
            Slot::List,
            Slot::Undo,
            Slot::ExportDiff,
            Slot::ImportDiff,
        ]
        .into_iter()
        .filter(|s| self.table.has(*s))
        .map(Slot::operation)
        .collect()
    }

    /// Whether it implements `slot`.
    pub(crate) fn has(&self, slot: Slot) -> bool {
        self.table.has(slot)
    }
}

/// Why a plugin was not loaded. Every message names the file and what to
/// do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The path is relative.
    #[error("{}: plugin paths must be absolute", path.display())]
    Relative {
        /// The path.
        path: PathBuf,
    },
    /// The file or its directory could be changed by someone else.
    #[error("{}: not loaded: {problem}", path.display())]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// `dlopen` failed.
    #[error("{}: cannot load the library: {message}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// dlerror's message.
        message: String,
    },
    /// No entry symbol for this ABI.
    #[error("{}: {problem}", path.display())]
    NoEntry {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        problem: String,
    },
    /// The plugin refused this host.
    #[error("{}: the plugin refused to load (its entry returned NULL){}", path.display(), log_suffix(log))]
    Refused {
        /// The file.
        path: PathBuf,
        /// What it logged.
        log: Vec<String>,
    },
    /// The plugin is built for an ABI this host cannot use.
    #[error(
        "{}: the plugin is built for plugin ABI {plugin_major}.{plugin_minor} but this virtsnap \
         speaks ABI {host_major}.{host_minor}; {fix}", path.display()
    )]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// The plugin's major.
        plugin_major: u16,
        /// The plugin's minor.
        plugin_minor: u16,
        /// Ours.
        host_major: u16,
        /// Ours.
        host_minor: u16,
        /// What to do.
        fix: String,
    },
    /// The table breaks a rule of the ABI.
    #[error("{}: not a valid plugin: {problem}; rebuild it against this virtsnap's virtsnap_plugin.h", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Another plugin or a built-in driver has the name.
    #[error("{}: plugin name '{name}' is taken by {other}; rename one of them", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
        /// Who has it.
        other: String,
    },
}

fn log_suffix(log: &[String]) -> String {
    if log.is_empty() {
        "; it logged nothing".to_string()
    } else {
        format!("; it logged: {}", log.join(" / "))
    }
}

/// The directories plugins are loaded from, in order: each of
/// `$VIRTSNAP_PLUGIN_DIR` (colon-separated), then `STATE_DIR/plugins`.
#[must_use]
pub fn plugin_dirs(var: Option<&std::ffi::OsStr>, state_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = var
        .map(|v| {
            std::env::split_paths(v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(state) = state_dir {
        dirs.push(state.join("plugins"));
    }
    dirs
}

/// What discovery found at one path.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The library file.
    pub path: PathBuf,
    /// The plugin, or why it was refused.
    pub result: Result<Arc<Plugin>, LoadError>,
}

/// Loads every `*.so` in `dirs` (missing directories are skipped), in
/// name order per directory. A plugin whose name is in `reserved` (the
/// built-in drivers) or was loaded from an earlier file is refused.
#[must_use]
pub fn discover(dirs: &[PathBuf], reserved: &[&str]) -> Vec<Discovered> {
    let mut found = Vec::new();
    let mut names: HashMap<&'static str, PathBuf> = HashMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "so"))
            .collect();
        files.sort();
        for path in files {
            let result = load(&path).and_then(|plugin| {
                if reserved.contains(&plugin.name) {
                    return Err(LoadError::Duplicate {
                        path: path.clone(),
                        name: plugin.name.to_string(),
                        other: "a built-in driver".to_string(),
                    });
                }
                if let Some(other) = names.get(plugin.name)
                    && *other != plugin.path
                {
                    return Err(LoadError::Duplicate {
                        path: path.clone(),
                        name: plugin.name.to_string(),
                        other: format!("{} (loaded first)", other.display()),
                    });
                }
                names.insert(plugin.name, plugin.path.clone());
                Ok(plugin)
            });
            found.push(Discovered { path, result });
        }
    }
    found
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<Plugin>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Plugin>>>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Checks and loads the plugin at `path` (absolute), or returns the one
/// already loaded from it.
///
/// # Errors
/// See [`LoadError`].
pub fn load(path: &Path) -> Result<Arc<Plugin>, LoadError> {
    if !path.is_absolute() {
        return Err(LoadError::Relative {
            path: path.to_path_buf(),
        });
    }
    let real = std::fs::canonicalize(path).map_err(|e| LoadError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    check_trusted(&real).map_err(|problem| LoadError::Untrusted {
        path: path.to_path_buf(),
        problem,
    })?;
    let mut loaded = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = loaded.get(&real) {
        return Ok(Arc::clone(p));
    }
    let plugin = Arc::new(load_new(path, &real)?);
    loaded.insert(real, Arc::clone(&plugin));
    Ok(plugin)
}

fn load_new(path: &Path, real: &Path) -> Result<Plugin, LoadError> {
    let host_version = CString::new(env!("CARGO_PKG_VERSION")).unwrap_or_default();
    let entry = ffi::open_and_enter(real, &host_version).map_err(|message| LoadError::Open {
        path: path.to_path_buf(),
        message,
    })?;
    let invalid = |problem: String| LoadError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    let (header, table, log) = match entry {
        Entry::Table { header, table, log } => (header, table, log),
        Entry::Refused { log } => {
            return Err(LoadError::Refused {
                path: path.to_path_buf(),
                log,
            });
        }
        Entry::Misaligned => return Err(invalid("its entry returned a misaligned pointer".into())),
        Entry::Missing { other_majors } => {
            let problem = match other_majors.last() {
                Some(major) => format!(
                    "the plugin is built for plugin ABI {major} (it exports \
                     virtsnap_plugin_entry_v{major}) but this virtsnap speaks ABI {}.{}; \
                     upgrade virtsnap, or rebuild the plugin against this virtsnap's \
                     virtsnap_plugin.h",
                    abi::ABI_MAJOR,
                    abi::ABI_MINOR
                ),
                None => "not a virtsnap plugin: it exports no virtsnap_plugin_entry_v1 \
                         (C plugins define it with VIRTSNAP_DEFINE_PLUGIN, Rust plugins with \
                         plugin_abi::export_plugin!)"
                    .to_string(),
            };
            return Err(LoadError::NoEntry {
                path: path.to_path_buf(),
                problem,
            });
        }
    };
    if header.abi_major != abi::ABI_MAJOR {
        let fix = if header.abi_major > abi::ABI_MAJOR {
            "upgrade virtsnap or use a build of the plugin for this ABI"
        } else {
            "rebuild the plugin against this virtsnap's virtsnap_plugin.h"
        };
        return Err(LoadError::Incompatible {
            path: path.to_path_buf(),
            plugin_major: header.abi_major,
            plugin_minor: header.abi_minor,
            host_major: abi::ABI_MAJOR,
            host_minor: abi::ABI_MINOR,
            fix: fix.to_string(),
        });
    }
    let size = usize::try_from(header.struct_size).unwrap_or(usize::MAX);
    if size < abi::PLUGIN_V1_0_SIZE {
        return Err(invalid(format!(
            "its virtsnap_plugin_v1 is {size} bytes, less than the {} of ABI 1.0 (its \
             struct_size must be sizeof(virtsnap_plugin_v1); VIRTSNAP_DEFINE_PLUGIN sets it)",
            abi::PLUGIN_V1_0_SIZE
        )));
    }
    if table.flags != 0 {
        return Err(invalid(format!(
            "its flags are {:#x}, which this virtsnap does not know (reserved, must be 0)",
            table.flags
        )));
    }
    let name = match ffi::table_string(table.name) {
        None => return Err(invalid("its name is NULL".into())),
        Some(Err(lossy)) => return Err(invalid(format!("its name {lossy:?} is not UTF-8"))),
        Some(Ok(name)) => name,
    };
    check_name(&name).map_err(|p| invalid(format!("its name {name:?} {p}")))?;
    let version = match ffi::table_string(table.version) {
        None => return Err(invalid("its version is NULL".into())),
        Some(Err(lossy)) => return Err(invalid(format!("its version {lossy:?} is not UTF-8"))),
        Some(Ok(v)) => v,
    };
    let description = match ffi::table_string(table.description) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(lossy)) => return Err(invalid(format!("its description {lossy:?} is not UTF-8"))),
    };
    let mut missing = Vec::new();
    if table.open.is_none() {
        missing.push("open");
    }
    if table.close.is_none() {
        missing.push("close");
    }
    let table = Table(table);
    for slot in [Slot::Capabilities, Slot::Create, Slot::Delete] {
        if !table.has(slot) {
            missing.push(slot.name());
        }
    }
    if !missing.is_empty() {
        return Err(invalid(format!(
            "it lacks the required operation(s) {}",
            missing.join(", ")
        )));
    }
    let thread_model = match table.0.thread_model {
        abi::THREAD_MODEL_PARALLEL => ThreadModel::Parallel,
        abi::THREAD_MODEL_SERIALIZE_INSTANCE => ThreadModel::SerializeInstance,
        abi::THREAD_MODEL_SERIALIZE_ALL => ThreadModel::SerializeAll,
        other => {
            tracing::warn!(plugin = %name, thread_model = other, "unknown thread model: calls are serialised");
            ThreadModel::SerializeAll
        }
    };
    Ok(Plugin {
        name: Box::leak(name.into_boxed_str()),
        version,
        description,
        path: real.to_path_buf(),
        abi: (header.abi_major, header.abi_minor),
        thread_model,
        load_log: log,
        table,
        serial: Mutex::new(()),
    })
}

/// Why `name` is not a plugin name, if it is not.
fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok {
        return Err("must start with a lowercase letter or digit");
    }
    if name.len() > 63 {
        return Err("is longer than 63 bytes");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("may only hold lowercase letters, digits and '-'");
    }
    Ok(())
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Why `file` (canonical) and its directory are not trusted, if they are
/// not: each must be owned by root or the user running virtsnap and not
/// writable by group or others.
fn check_trusted(file: &Path) -> Result<(), String> {
    let me = euid();
    let check = |path: &Path, what: &str| -> Result<(), String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot examine {what}: {e}"))?;
        if meta.uid() != 0 && meta.uid() != me {
            return Err(format!(
                "{what} {} is owned by uid {}, neither root nor you (uid {me}); \
                 chown it to root or to yourself",
                path.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{what} {} is writable by group or others (mode {:o}); chmod go-w it",
                path.display(),
                meta.mode() & 0o7777
            ));
        }
        Ok(())
    };
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot examine it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    check(file, "the file")?;
    if let Some(dir) = file.parent() {
        check(dir, "its directory")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert_eq!(check_name("dircopy"), Ok(()));
        assert_eq!(check_name("rbd-2"), Ok(()));
        assert_eq!(
            check_name(""),
            Err("must start with a lowercase letter or digit")
        );
        assert_eq!(
            check_name("-x"),
            Err("must start with a lowercase letter or digit")
        );
        assert_eq!(
            check_name("Bad Name"),
            Err("must start with a lowercase letter or digit")
        );
        assert_eq!(
            check_name("bad name"),
            Err("may only hold lowercase letters, digits and '-'")
        );
        assert_eq!(check_name(&"a".repeat(64)), Err("is longer than 63 bytes"));
    }

    #[test]
    fn dirs_come_from_the_variable_then_the_state_dir() {
        let dirs = plugin_dirs(
            Some(std::ffi::OsStr::new("/a:/b::")),
            Some(Path::new("/var/lib/virtsnap")),
        );
        assert_eq!(
            dirs,
            [
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                PathBuf::from("/var/lib/virtsnap/plugins")
            ]
        );
        assert!(plugin_dirs(None, None).is_empty());
    }
}
