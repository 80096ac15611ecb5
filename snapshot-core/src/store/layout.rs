//! Where the metadata store keeps what, and which names may become file
//! names.
//!
//! ```text
//! $STATE/
//!   domains/NAME.xml                   defined domains
//!   snapshots/domain/NAME/SNAP.xml     one file per snapshot, libvirt's format
//!   snapshots/domain/.NAME.lock        per-owner lock (outside the dir, so the
//!                                      dir's mtime only changes with snapshots)
//!   snapshots/domain/.NAME.index       compact index
//!   snapshots/domain/.NAME.journal     metadata journal (multi-file changes)
//!   snapshots/domain/.NAME.intent      pending multi-step storage operation
//!   snapshots/volume/KEY/...           same for volumes (KEY encoded, see
//!   snapshots/volume/.KEY.lock ...     [`encode_key`])
//!   run/                               pids, sockets
//! ```
//!
//! The per-owner side files start with a `.`: no owner directory can (a
//! domain name may not start with `.`, an encoded key never does), so they
//! can never collide with an owner directory. Without the dot, the lock of
//! domain `x` (`x.lock`) would be the directory of a domain named `x.lock`.
//!
//! Every name is checked here before it becomes a path: nothing can escape
//! its directory, and every component is a valid file name on Linux (at most
//! 255 bytes, no `/`, no NUL). [`check_case_collision`] refuses names that a
//! case-insensitive filesystem would map to one file.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Longest domain name, in bytes (leaves room for `.NAME.journal`).
pub const MAX_DOMAIN_NAME: usize = 200;
/// Longest encoded volume key, in bytes (leaves room for `.KEY.journal`).
pub const MAX_ENCODED_KEY: usize = 240;
/// Longest snapshot name, in bytes (`NAME.xml` stays within 255 bytes).
pub const MAX_SNAPSHOT_NAME: usize = 250;

/// The environment variable that overrides the state directory.
pub const STATE_VAR: &str = "VIRTSNAP_STATE";

const SNAPSHOT_EXT: &str = ".xml";

/// A name or a path that cannot be used in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// An environment variable names a relative state directory.
    #[error(
        "${var} is {value:?}, a relative path; set it to an absolute path \
         (or unset it to use the default state directory)"
    )]
    RelativeStateDir {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: PathBuf,
    },
    /// No state directory can be derived from the environment.
    #[error(
        "cannot find a state directory: $HOME is {problem}; set $VIRTSNAP_STATE \
         (or $XDG_DATA_HOME) to an absolute path"
    )]
    NoStateDir {
        /// What is wrong with `$HOME`.
        problem: &'static str,
    },
    /// A domain name that cannot be a file name.
    #[error("invalid domain name {name:?}: {rule}; choose another name")]
    InvalidDomainName {
        /// The name.
        name: String,
        /// The rule it breaks.
        rule: String,
    },
    /// An empty volume key.
    #[error("invalid volume key: the key is empty; give the volume's path or key")]
    EmptyVolumeKey,
    /// A volume key whose encoded form is too long for a file name.
    #[error(
        "volume key {key:?} is too long: encoded it takes {len} bytes, at most \
         {max} fit in a file name; use a shorter path (e.g. a symbolic link)"
    )]
    VolumeKeyTooLong {
        /// The key.
        key: String,
        /// Length of its encoded form.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A snapshot name that cannot be a file name.
    #[error("invalid snapshot name {name:?}: {rule}; choose another name")]
    InvalidSnapshotName {
        /// The name.
        name: String,
        /// The rule it breaks.
        rule: String,
    },
    /// Two names that a case-insensitive filesystem maps to one file.
    #[error(
        "name {name:?} collides with existing {existing:?}: they differ only in \
         case, and on a case-insensitive filesystem both are one file; choose \
         another name"
    )]
    CaseCollision {
        /// The new name.
        name: String,
        /// The existing name it collides with.
        existing: String,
    },
}

/// The state directory from an environment (`var`) and whether we run as
/// root: `$VIRTSNAP_STATE` if set and non-empty (must be absolute), else
/// `$XDG_DATA_HOME/virtsnap` if absolute (a relative or empty value is
/// ignored, as the XDG Base Directory spec says), else `/var/lib/virtsnap`
/// for root, else `$HOME/.local/share/virtsnap`.
///
/// # Errors
/// [`LayoutError::RelativeStateDir`] for a relative `$VIRTSNAP_STATE`,
/// [`LayoutError::NoStateDir`] when `$HOME` is needed but unset, empty or
/// relative.
pub fn state_dir_from(
    var: impl Fn(&str) -> Option<OsString>,
    is_root: bool,
) -> Result<PathBuf, LayoutError> {
    if let Some(value) = var(STATE_VAR).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if path.is_absolute() {
            return Ok(path);
        }
        return Err(LayoutError::RelativeStateDir {
            var: STATE_VAR,
            value: path,
        });
    }
    if let Some(value) = var("XDG_DATA_HOME") {
        let path = PathBuf::from(value);
        if path.is_absolute() {
            return Ok(path.join("virtsnap"));
        }
    }
    if is_root {
        return Ok(PathBuf::from("/var/lib/virtsnap"));
    }
    let home = match var("HOME") {
        None => return Err(LayoutError::NoStateDir { problem: "not set" }),
        Some(h) if h.is_empty() => return Err(LayoutError::NoStateDir { problem: "empty" }),
        Some(h) => PathBuf::from(h),
    };
    if !home.is_absolute() {
        return Err(LayoutError::NoStateDir {
            problem: "a relative path",
        });
    }
    Ok(home.join(".local/share/virtsnap"))
}

/// The state directory of this process (see [`state_dir_from`]).
///
/// # Errors
/// As [`state_dir_from`].
pub fn state_dir() -> Result<PathBuf, LayoutError> {
    state_dir_from(|k| std::env::var_os(k), effective_uid_is_root())
}

/// Whether the effective uid is 0, from `/proc/self/status`. Without a
/// readable `/proc` we are taken not to be root (the per-user default is
/// the safe choice: it never writes to system directories).
fn effective_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| euid_from_status(&status))
        == Some(0)
}

/// The effective uid (second field of the `Uid:` line) of a
/// `/proc/PID/status` text.
fn euid_from_status(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

/// Whose snapshots: a domain's or a volume's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A domain, by name.
    Domain(String),
    /// A volume, by key (a path like `/var/lib/images/a.qcow2`, `vg0/data`,
    /// `rbd:pool/img`).
    Volume(String),
}

impl Owner {
    /// `"domain"` or `"volume"`: also the directory under `snapshots/`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Domain(_) => "domain",
            Self::Volume(_) => "volume",
        }
    }

    /// The owner's name or key.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Domain(n) | Self::Volume(n) => n,
        }
    }

    /// The owner's directory name under `snapshots/KIND/`: the domain name,
    /// or the encoded volume key.
    ///
    /// # Errors
    /// [`LayoutError::InvalidDomainName`], [`LayoutError::EmptyVolumeKey`],
    /// [`LayoutError::VolumeKeyTooLong`].
    pub fn dir_name(&self) -> Result<String, LayoutError> {
        match self {
            Self::Domain(name) => {
                check_domain_name(name)?;
                Ok(name.clone())
            }
            Self::Volume(key) => {
                if key.is_empty() {
                    return Err(LayoutError::EmptyVolumeKey);
                }
                let encoded = encode_key(key);
                if encoded.len() > MAX_ENCODED_KEY {
                    return Err(LayoutError::VolumeKeyTooLong {
                        key: key.clone(),
                        len: encoded.len(),
                        max: MAX_ENCODED_KEY,
                    });
                }
                Ok(encoded)
            }
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.kind(), self.name())
    }
}

/// Refuse a domain name that is not a valid single file-name component:
/// empty, `.` or `..`, containing `/` or NUL, starting with `.`, or longer
/// than [`MAX_DOMAIN_NAME`] bytes.
///
/// # Errors
/// [`LayoutError::InvalidDomainName`], naming the rule.
pub fn check_domain_name(name: &str) -> Result<(), LayoutError> {
    component_rule(name, MAX_DOMAIN_NAME).map_or(Ok(()), |rule| {
        Err(LayoutError::InvalidDomainName {
            name: name.to_owned(),
            rule,
        })
    })
}

/// The first rule `name` breaks as a file-name component of at most `max`
/// bytes, or `None`.
fn component_rule(name: &str, max: usize) -> Option<String> {
    let rule = if name.is_empty() {
        "the name is empty".to_owned()
    } else if name == "." || name == ".." {
        "'.' and '..' are not names".to_owned()
    } else if name.contains('/') {
        "the name can't contain '/'".to_owned()
    } else if name.contains('\0') {
        "the name can't contain a NUL character".to_owned()
    } else if name.starts_with('.') {
        "the name can't start with '.'".to_owned()
    } else if name.len() > max {
        format!(
            "the name is {} bytes long, at most {max} are allowed",
            name.len()
        )
    } else {
        return None;
    };
    Some(rule)
}

/// Whether `b` stays as is in an encoded key.
fn key_byte_is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'+' | b'-')
}

/// Encode a volume key into one file-name component, reversibly: every byte
/// outside `[A-Za-z0-9._:@+-]` (so `%`, `/`, NUL, spaces, non-ASCII...)
/// becomes `%XX` (upper-case hex), and so does a leading `.`. The result never
/// contains `/` or NUL and never starts with `.`; it is empty only for an
/// empty key. Length is not checked here (see [`Owner::dir_name`]).
#[must_use]
pub fn encode_key(key: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(key.len());
    for (i, &b) in key.as_bytes().iter().enumerate() {
        if key_byte_is_plain(b) && !(i == 0 && b == b'.') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decode what [`encode_key`] made. Only the canonical encoding is accepted
/// (`decode_key(s) == Some(k)` exactly when `encode_key(k) == s`), so one key
/// has one directory; anything else (a stray character, lower-case or bad
/// hex, bytes that are not UTF-8) gives `None`.
#[must_use]
pub fn decode_key(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = upper_hex_digit(*bytes.get(i + 1)?)?;
            let lo = upper_hex_digit(*bytes.get(i + 2)?)?;
            let decoded = hi << 4 | lo;
            // A byte that would have stayed plain is not canonical.
            if key_byte_is_plain(decoded) && !(out.is_empty() && decoded == b'.') {
                return None;
            }
            out.push(decoded);
            i += 3;
        } else if key_byte_is_plain(b) && !(i == 0 && b == b'.') {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

fn upper_hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The file name of a snapshot: `NAME.xml`. Refuses names that would escape
/// the directory or are not valid file names: empty, `.` or `..`, containing
/// `/` or NUL, starting with `.` (libvirt: "name can't contain '/'", "can't
/// start with '.'"), longer than [`MAX_SNAPSHOT_NAME`] bytes.
///
/// # Errors
/// [`LayoutError::InvalidSnapshotName`], naming the rule.
pub fn snapshot_file_name(name: &str) -> Result<String, LayoutError> {
    match component_rule(name, MAX_SNAPSHOT_NAME) {
        None => Ok(format!("{name}{SNAPSHOT_EXT}")),
        Some(rule) => Err(LayoutError::InvalidSnapshotName {
            name: name.to_owned(),
            rule,
        }),
    }
}

/// The snapshot name of a file in an owner directory: `NAME.xml` gives
/// `NAME`; anything else (other extensions, temp files starting with `.`,
/// names [`snapshot_file_name`] would refuse) gives `None`.
#[must_use]
pub fn snapshot_name_from_file(file: &str) -> Option<&str> {
    let name = file.strip_suffix(SNAPSHOT_EXT)?;
    component_rule(name, MAX_SNAPSHOT_NAME)
        .is_none()
        .then_some(name)
}

/// Refuse `name` when one of `existing` is a different name that is equal to
/// it after Unicode lower-casing ([`str::to_lowercase`]): on a
/// case-insensitive filesystem both would be one file. `name` itself being
/// in `existing` is not a collision. (Lower-casing approximates what such
/// filesystems do; it does not cover Unicode normalisation, e.g. macOS's
/// NFD.)
///
/// # Errors
/// [`LayoutError::CaseCollision`], naming both.
pub fn check_case_collision<'a>(
    name: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> Result<(), LayoutError> {
    let folded = name.to_lowercase();
    match existing
        .into_iter()
        .find(|e| *e != name && e.to_lowercase() == folded)
    {
        None => Ok(()),
        Some(e) => Err(LayoutError::CaseCollision {
            name: name.to_owned(),
            existing: e.to_owned(),
        }),
    }
}

/// The paths of a state directory (see the module documentation). Only
/// computes paths; creates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the state directory `root`.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The state directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `domains/`: the defined domains.
    #[must_use]
    pub fn domains_dir(&self) -> PathBuf {
        self.root.join("domains")
    }

    /// `domains/NAME.xml`.
    ///
    /// # Errors
    /// [`LayoutError::InvalidDomainName`].
    pub fn domain_file(&self, name: &str) -> Result<PathBuf, LayoutError> {
        check_domain_name(name)?;
        Ok(self.domains_dir().join(format!("{name}.xml")))
    }

    /// `snapshots/KIND/`: the owner directories of one kind
    /// (`"domain"`/`"volume"`, see [`Owner::kind`]).
    #[must_use]
    pub fn owners_dir(&self, kind: &str) -> PathBuf {
        self.root.join("snapshots").join(kind)
    }

    /// `snapshots/KIND/NAME/`: one file per snapshot.
    ///
    /// # Errors
    /// As [`Owner::dir_name`].
    pub fn owner_dir(&self, owner: &Owner) -> Result<PathBuf, LayoutError> {
        Ok(self.owners_dir(owner.kind()).join(owner.dir_name()?))
    }

    /// `snapshots/KIND/.NAME.SUFFIX`, beside the owner directory.
    fn owner_side_file(&self, owner: &Owner, suffix: &str) -> Result<PathBuf, LayoutError> {
        let dir = owner.dir_name()?;
        Ok(self
            .owners_dir(owner.kind())
            .join(format!(".{dir}.{suffix}")))
    }

    /// `snapshots/KIND/.NAME.lock`: the owner's lock file.
    ///
    /// # Errors
    /// As [`Owner::dir_name`].
    pub fn owner_lock(&self, owner: &Owner) -> Result<PathBuf, LayoutError> {
        self.owner_side_file(owner, "lock")
    }

    /// `snapshots/KIND/.NAME.index`: the owner's compact index.
    ///
    /// # Errors
    /// As [`Owner::dir_name`].
    pub fn owner_index(&self, owner: &Owner) -> Result<PathBuf, LayoutError> {
        self.owner_side_file(owner, "index")
    }

    /// `snapshots/KIND/.NAME.journal`: the owner's intent journal.
    ///
    /// # Errors
    /// As [`Owner::dir_name`].
    pub fn owner_journal(&self, owner: &Owner) -> Result<PathBuf, LayoutError> {
        self.owner_side_file(owner, "journal")
    }

    /// `snapshots/KIND/.NAME.intent`: the owner's pending multi-step
    /// operation (see [`crate::store::intent`]).
    ///
    /// # Errors
    /// As [`Owner::dir_name`].
    pub fn owner_intent(&self, owner: &Owner) -> Result<PathBuf, LayoutError> {
        self.owner_side_file(owner, "intent")
    }

    /// `run/`: pids, sockets.
    #[must_use]
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        move |k| map.get(k).map(OsString::from)
    }

    fn state(vars: &[(&str, &str)], root: bool) -> Result<PathBuf, LayoutError> {
        state_dir_from(env(vars), root)
    }

    #[test]
    fn state_dir_precedence() {
        let all = [
            ("VIRTSNAP_STATE", "/s"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(state(&all, true), Ok(PathBuf::from("/s")));
        assert_eq!(state(&all[1..], true), Ok(PathBuf::from("/x/virtsnap")));
        assert_eq!(state(&all[1..], false), Ok(PathBuf::from("/x/virtsnap")));
        assert_eq!(
            state(&all[2..], true),
            Ok(PathBuf::from("/var/lib/virtsnap"))
        );
        assert_eq!(
            state(&all[2..], false),
            Ok(PathBuf::from("/h/.local/share/virtsnap"))
        );
    }

    #[test]
    fn state_dir_empty_virtsnap_state_is_unset() {
        let vars = [("VIRTSNAP_STATE", ""), ("HOME", "/h")];
        assert_eq!(
            state(&vars, false),
            Ok(PathBuf::from("/h/.local/share/virtsnap"))
        );
    }

    #[test]
    fn state_dir_relative_virtsnap_state_is_an_error() {
        let vars = [("VIRTSNAP_STATE", "rel/dir"), ("HOME", "/h")];
        let err = state(&vars, false).unwrap_err();
        assert_eq!(
            err,
            LayoutError::RelativeStateDir {
                var: "VIRTSNAP_STATE",
                value: PathBuf::from("rel/dir"),
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("$VIRTSNAP_STATE"), "{msg}");
        assert!(msg.contains("\"rel/dir\""), "{msg}");
        assert!(msg.contains("absolute path"), "{msg}");
    }

    #[test]
    fn state_dir_relative_or_empty_xdg_is_ignored() {
        for xdg in ["rel", "", "./x"] {
            let vars = [("XDG_DATA_HOME", xdg), ("HOME", "/h")];
            assert_eq!(
                state(&vars, false),
                Ok(PathBuf::from("/h/.local/share/virtsnap")),
                "{xdg:?}"
            );
            assert_eq!(
                state(&vars, true),
                Ok(PathBuf::from("/var/lib/virtsnap")),
                "{xdg:?}"
            );
        }
    }

    #[test]
    fn state_dir_without_home() {
        for (vars, problem) in [
            (&[][..], "not set"),
            (&[("HOME", "")][..], "empty"),
            (&[("HOME", "h")][..], "a relative path"),
            (
                &[("XDG_DATA_HOME", "x"), ("HOME", "h")][..],
                "a relative path",
            ),
        ] {
            let err = state(vars, false).unwrap_err();
            assert_eq!(err, LayoutError::NoStateDir { problem });
            let msg = err.to_string();
            assert!(msg.contains("set $VIRTSNAP_STATE"), "{msg}");
            assert!(msg.contains(problem), "{msg}");
        }
        // Root does not need HOME.
        assert_eq!(state(&[], true), Ok(PathBuf::from("/var/lib/virtsnap")));
    }

    #[test]
    fn euid_parsing() {
        let status = "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(euid_from_status(status), Some(0));
        assert_eq!(euid_from_status("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(euid_from_status("Name:\tx\n"), None);
        assert_eq!(euid_from_status("Uid:\t0\n"), None);
        assert_eq!(euid_from_status("Uid:\t0\tx\n"), None);
    }

    #[test]
    fn state_dir_of_this_process_is_absolute() {
        // Whatever the environment, a successful answer is absolute.
        if let Ok(dir) = state_dir() {
            assert!(dir.is_absolute(), "{dir:?}");
        }
    }

    #[test]
    fn owner_kind_and_display() {
        let d = Owner::Domain("x".into());
        let v = Owner::Volume("/a/b.qcow2".into());
        assert_eq!(d.kind(), "domain");
        assert_eq!(v.kind(), "volume");
        assert_eq!(d.to_string(), "domain 'x'");
        assert_eq!(v.to_string(), "volume '/a/b.qcow2'");
        assert_eq!(v.name(), "/a/b.qcow2");
    }

    #[test]
    fn layout_paths() {
        let l = Layout::new("/st");
        let d = Owner::Domain("vm1".into());
        let v = Owner::Volume("/var/lib/images/a.qcow2".into());
        assert_eq!(l.root(), Path::new("/st"));
        assert_eq!(l.domains_dir(), Path::new("/st/domains"));
        assert_eq!(
            l.domain_file("vm1").unwrap(),
            Path::new("/st/domains/vm1.xml")
        );
        assert_eq!(
            l.owner_dir(&d).unwrap(),
            Path::new("/st/snapshots/domain/vm1")
        );
        assert_eq!(
            l.owner_lock(&d).unwrap(),
            Path::new("/st/snapshots/domain/.vm1.lock")
        );
        assert_eq!(
            l.owner_index(&d).unwrap(),
            Path::new("/st/snapshots/domain/.vm1.index")
        );
        assert_eq!(
            l.owner_journal(&d).unwrap(),
            Path::new("/st/snapshots/domain/.vm1.journal")
        );
        assert_eq!(
            l.owner_dir(&v).unwrap(),
            Path::new("/st/snapshots/volume/%2Fvar%2Flib%2Fimages%2Fa.qcow2")
        );
        assert_eq!(
            l.owner_lock(&v).unwrap(),
            Path::new("/st/snapshots/volume/.%2Fvar%2Flib%2Fimages%2Fa.qcow2.lock")
        );
        assert_eq!(l.run_dir(), Path::new("/st/run"));
    }

    #[test]
    fn side_files_never_collide_with_owner_dirs() {
        let l = Layout::new("/st");
        let x = Owner::Domain("x".into());
        let x_lock = Owner::Domain("x.lock".into());
        assert_ne!(l.owner_lock(&x).unwrap(), l.owner_dir(&x_lock).unwrap());
        let k = Owner::Volume("k".into());
        let k_index = Owner::Volume("k.index".into());
        assert_ne!(l.owner_index(&k).unwrap(), l.owner_dir(&k_index).unwrap());
    }

    #[test]
    fn layout_refuses_bad_owners() {
        let l = Layout::new("/st");
        let bad = Owner::Domain("../etc".into());
        assert!(matches!(
            l.owner_dir(&bad),
            Err(LayoutError::InvalidDomainName { .. })
        ));
        assert!(matches!(
            l.owner_lock(&bad),
            Err(LayoutError::InvalidDomainName { .. })
        ));
        assert!(matches!(
            l.owner_index(&bad),
            Err(LayoutError::InvalidDomainName { .. })
        ));
        assert!(matches!(
            l.owner_journal(&bad),
            Err(LayoutError::InvalidDomainName { .. })
        ));
        assert!(matches!(
            l.domain_file("a/b"),
            Err(LayoutError::InvalidDomainName { .. })
        ));
        assert_eq!(
            l.owner_dir(&Owner::Volume(String::new())),
            Err(LayoutError::EmptyVolumeKey)
        );
    }

    fn domain_rule(name: &str) -> String {
        match check_domain_name(name) {
            Err(LayoutError::InvalidDomainName { name: n, rule }) => {
                assert_eq!(n, name);
                rule
            }
            other => panic!("{name:?}: {other:?}"),
        }
    }

    #[test]
    fn domain_name_rules() {
        assert_eq!(domain_rule(""), "the name is empty");
        assert_eq!(domain_rule("."), "'.' and '..' are not names");
        assert_eq!(domain_rule(".."), "'.' and '..' are not names");
        assert_eq!(domain_rule("a/b"), "the name can't contain '/'");
        assert_eq!(domain_rule("/"), "the name can't contain '/'");
        assert_eq!(
            domain_rule("a\0b"),
            "the name can't contain a NUL character"
        );
        assert_eq!(domain_rule(".hidden"), "the name can't start with '.'");
        assert_eq!(
            domain_rule(&"a".repeat(201)),
            "the name is 201 bytes long, at most 200 are allowed"
        );
        // Bytes, not characters: 101 two-byte characters.
        assert_eq!(
            domain_rule(&"é".repeat(101)),
            "the name is 202 bytes long, at most 200 are allowed"
        );
        for ok in ["vm1", "a.b", "a..", "web server", "é", "x.lock", "-x"] {
            assert_eq!(check_domain_name(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(check_domain_name(&"a".repeat(200)), Ok(()));
    }

    #[test]
    fn domain_name_error_message() {
        let msg = check_domain_name("a/b").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid domain name \"a/b\": the name can't contain '/'; choose another name"
        );
        let msg = check_domain_name("a\0b").unwrap_err().to_string();
        assert!(msg.contains("\"a\\0b\""), "{msg}");
    }

    #[test]
    fn encode_examples() {
        assert_eq!(
            encode_key("/var/lib/images/a.qcow2"),
            "%2Fvar%2Flib%2Fimages%2Fa.qcow2"
        );
        assert_eq!(encode_key("vg0/data"), "vg0%2Fdata");
        assert_eq!(encode_key("rbd:pool/img"), "rbd:pool%2Fimg");
        assert_eq!(encode_key("100%"), "100%25");
        assert_eq!(encode_key("a\0b"), "a%00b");
        assert_eq!(encode_key("a b"), "a%20b");
        assert_eq!(encode_key("é"), "%C3%A9");
        assert_eq!(encode_key("."), "%2E");
        assert_eq!(encode_key(".."), "%2E.");
        assert_eq!(encode_key(".x"), "%2Ex");
        assert_eq!(encode_key("x."), "x.");
        assert_eq!(encode_key("A-z_0.9:@+"), "A-z_0.9:@+");
        assert_eq!(encode_key(""), "");
    }

    #[test]
    fn decode_examples() {
        assert_eq!(decode_key("vg0%2Fdata").as_deref(), Some("vg0/data"));
        assert_eq!(decode_key("%2E.").as_deref(), Some(".."));
        assert_eq!(decode_key("").as_deref(), Some(""));
        // Not canonical or not valid.
        for bad in [
            "%2f", "%2", "%", "%G0", "a/b", "a b", ".x", "%61", "x%2E", "%FF", "é", "a\0",
        ] {
            assert_eq!(decode_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn volume_key_too_long() {
        let l = Layout::new("/st");
        let ok = "a".repeat(240);
        assert_eq!(
            l.owner_dir(&Owner::Volume(ok.clone())),
            Ok(Path::new("/st/snapshots/volume").join(ok))
        );
        // 80 slashes encode to 240 bytes; one more byte is too many.
        let key = format!("{}x", "/".repeat(80));
        let err = l.owner_dir(&Owner::Volume(key.clone())).unwrap_err();
        assert_eq!(
            err,
            LayoutError::VolumeKeyTooLong {
                key: key.clone(),
                len: 241,
                max: 240
            }
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("{key:?}")), "{msg}");
        assert!(msg.contains("241 bytes"), "{msg}");
        assert!(
            matches!(
                l.owner_journal(&Owner::Volume("/".repeat(81))),
                Err(LayoutError::VolumeKeyTooLong { len: 243, .. })
            ),
            "side files check the length too"
        );
        assert_eq!(
            LayoutError::EmptyVolumeKey.to_string(),
            "invalid volume key: the key is empty; give the volume's path or key"
        );
    }

    fn snapshot_rule(name: &str) -> String {
        match snapshot_file_name(name) {
            Err(LayoutError::InvalidSnapshotName { name: n, rule }) => {
                assert_eq!(n, name);
                rule
            }
            other => panic!("{name:?}: {other:?}"),
        }
    }

    #[test]
    fn snapshot_name_rules() {
        assert_eq!(snapshot_file_name("s1").as_deref(), Ok("s1.xml"));
        assert_eq!(snapshot_file_name("a.b").as_deref(), Ok("a.b.xml"));
        let longest = "s".repeat(250);
        assert_eq!(snapshot_file_name(&longest), Ok(format!("{longest}.xml")));
        assert_eq!(snapshot_rule(""), "the name is empty");
        assert_eq!(snapshot_rule("."), "'.' and '..' are not names");
        assert_eq!(snapshot_rule(".."), "'.' and '..' are not names");
        assert_eq!(snapshot_rule("../x"), "the name can't contain '/'");
        assert_eq!(
            snapshot_rule("a\0"),
            "the name can't contain a NUL character"
        );
        assert_eq!(snapshot_rule(".s"), "the name can't start with '.'");
        assert_eq!(
            snapshot_rule(&"s".repeat(251)),
            "the name is 251 bytes long, at most 250 are allowed"
        );
        let msg = snapshot_file_name(".s").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid snapshot name \".s\": the name can't start with '.'; choose another name"
        );
    }

    #[test]
    fn snapshot_names_from_files() {
        assert_eq!(snapshot_name_from_file("s1.xml"), Some("s1"));
        assert_eq!(snapshot_name_from_file("a.xml.xml"), Some("a.xml"));
        for other in [
            "s1",
            "s1.XML",
            "s1.xml.tmp",
            ".xml",
            ".s1.xml",
            "..xml",
            ".tmp-s1.xml",
            "",
        ] {
            assert_eq!(snapshot_name_from_file(other), None, "{other:?}");
        }
        let too_long = format!("{}.xml", "s".repeat(251));
        assert_eq!(snapshot_name_from_file(&too_long), None);
    }

    #[test]
    fn case_collisions() {
        let existing = ["Alpha", "beta", "ΣΊΣΥΦΟΣ"];
        assert_eq!(check_case_collision("gamma", existing), Ok(()));
        assert_eq!(check_case_collision("Alpha", existing), Ok(()));
        assert_eq!(check_case_collision("alpha2", existing), Ok(()));
        let err = check_case_collision("ALPHA", existing).unwrap_err();
        assert_eq!(
            err,
            LayoutError::CaseCollision {
                name: "ALPHA".into(),
                existing: "Alpha".into()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("\"ALPHA\"") && msg.contains("\"Alpha\""),
            "{msg}"
        );
        assert!(msg.contains("case-insensitive"), "{msg}");
        // Unicode lower-casing, not just ASCII.
        assert!(matches!(
            check_case_collision("σίσυφος", existing),
            Err(LayoutError::CaseCollision { .. })
        ));
        assert_eq!(check_case_collision("x", []), Ok(()));
    }

    /// Strings rich in the characters the encoding cares about.
    fn tricky() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                ".",
                "/",
                "%",
                "\0",
                "a",
                "Z",
                "9",
                "_",
                ":",
                "@",
                "+",
                "-",
                " ",
                "é",
                "%2F",
                "\u{1F600}",
            ]),
            0..30,
        )
        .prop_map(|parts| parts.concat())
    }

    fn assert_single_component(encoded: &str) {
        assert!(!encoded.is_empty());
        assert!(encoded != "." && encoded != "..");
        assert!(!encoded.starts_with('.'), "{encoded:?}");
        assert!(
            encoded.bytes().all(|b| key_byte_is_plain(b) || b == b'%'),
            "{encoded:?}"
        );
        assert_eq!(component_rule(encoded, usize::MAX), None, "{encoded:?}");
    }

    proptest! {
        #[test]
        fn key_round_trip(key in any::<String>()) {
            let encoded = encode_key(&key);
            prop_assert_eq!(decode_key(&encoded), Some(key.clone()));
            if !key.is_empty() {
                assert_single_component(&encoded);
            }
        }

        #[test]
        fn tricky_key_round_trip(key in tricky()) {
            let encoded = encode_key(&key);
            prop_assert_eq!(decode_key(&encoded), Some(key.clone()));
            if !key.is_empty() {
                assert_single_component(&encoded);
            }
        }

        #[test]
        fn decode_accepts_only_canonical(s in tricky()) {
            if let Some(key) = decode_key(&s) {
                prop_assert_eq!(encode_key(&key), s);
            }
        }

        #[test]
        fn valid_owner_dirs_are_components(key in any::<String>(), name in any::<String>()) {
            if let Ok(dir) = Owner::Volume(key).dir_name() {
                prop_assert!(dir.len() <= MAX_ENCODED_KEY);
                assert_single_component(&dir);
            }
            if let Ok(dir) = Owner::Domain(name).dir_name() {
                prop_assert_eq!(component_rule(&dir, MAX_DOMAIN_NAME), None);
            }
        }

        #[test]
        fn snapshot_file_name_round_trip(name in any::<String>()) {
            match snapshot_file_name(&name) {
                Ok(file) => {
                    prop_assert!(file.len() <= 255);
                    prop_assert!(!file.contains('/') && !file.starts_with('.'));
                    prop_assert_eq!(snapshot_name_from_file(&file), Some(name.as_str()));
                }
                Err(_) => {
                    let file = format!("{name}.xml");
                    prop_assert_eq!(snapshot_name_from_file(&file), None);
                }
            }
        }
    }
}
