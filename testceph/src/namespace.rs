//! [`Namespace`]: one test's own RBD namespace in pool `rbd`, so tests
//! share a cluster without seeing each other's images: naming it, the
//! image specs and QEMU-style volume names inside it, creating, importing
//! and exporting images, and purging everything in it when dropped.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::{Cluster, POOL};
use crate::error::CephError;

/// Numbers the namespaces of this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many times a namespace name is tried when it exists already (left
/// by a killed run whose PID this one reuses).
const NAME_ATTEMPTS: usize = 20;

/// An RBD namespace of pool `rbd`, made for one test by
/// [`Cluster::namespace`]. Images created in it are invisible from other
/// namespaces. Dropping it removes every image, snapshot and group in it,
/// then the namespace (best effort: problems go to stderr).
#[derive(Debug)]
pub struct Namespace<'c> {
    cluster: &'c Cluster,
    name: String,
    /// Purged already ([`Namespace::remove`]): nothing left to drop.
    removed: bool,
}

impl Cluster {
    /// Creates a namespace of its own for a test in pool `rbd`, named
    /// `LABEL-PID-N` (`N` counts this process's namespaces; characters of
    /// `label` other than `[A-Za-z0-9_-]` become `_`). Takes about 50 ms.
    ///
    /// # Errors
    /// `rbd namespace create` fails.
    pub fn namespace(&self, label: &str) -> Result<Namespace<'_>, CephError> {
        let label = sanitize(label);
        let pid = std::process::id();
        let mut attempt = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{label}-{pid}-{n}");
            match self.rbd(["namespace", "create", "--pool", POOL, "--namespace", &name]) {
                Ok(_) => {
                    return Ok(Namespace {
                        cluster: self,
                        name,
                        removed: false,
                    });
                }
                Err(CephError::Command { ref stderr, .. })
                    if attempt + 1 < NAME_ATTEMPTS && stderr.contains("File exists") =>
                {
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// `label` with every character outside `[A-Za-z0-9_-]` replaced by `_`
/// (`ns` when empty).
fn sanitize(label: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() { "ns".into() } else { clean }
}

impl Namespace<'_> {
    /// The pool: `rbd`.
    #[must_use]
    pub fn pool(&self) -> &str {
        POOL
    }

    /// The namespace's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster it is in.
    #[must_use]
    pub fn cluster(&self) -> &Cluster {
        self.cluster
    }

    /// `rbd/NS/IMAGE`, the spec the `rbd` tool takes (`IMAGE` may end in
    /// `@SNAP`).
    #[must_use]
    pub fn image_spec(&self, image: &str) -> String {
        format!("{POOL}/{}/{image}", self.name)
    }

    /// `rbd:rbd/NS/IMAGE:conf=CONF`, the QEMU-style name virtsnap takes
    /// for an RBD volume of this cluster.
    #[must_use]
    pub fn volume_name(&self, image: &str) -> String {
        format!(
            "rbd:{}:conf={}",
            self.image_spec(image),
            self.cluster.conf().display()
        )
    }

    /// Creates image `name` of `size_bytes` bytes (the cluster's default
    /// features: layering, exclusive-lock, object-map, fast-diff,
    /// deep-flatten).
    ///
    /// # Errors
    /// `rbd create` fails (the image exists, say).
    pub fn create_image(&self, name: &str, size_bytes: u64) -> Result<(), CephError> {
        let spec = self.image_spec(name);
        self.cluster
            .rbd(["create", "--size", &format!("{size_bytes}B"), &spec])
            .map(drop)
    }

    /// Creates image `name` holding the bytes of `local_file` (`rbd
    /// import`; its size is the file's).
    ///
    /// # Errors
    /// `rbd import` fails.
    pub fn import(&self, name: &str, local_file: &Path) -> Result<(), CephError> {
        let spec = self.image_spec(name);
        self.cluster
            .rbd([
                OsStr::new("import"),
                OsStr::new("--no-progress"),
                local_file.as_os_str(),
                OsStr::new(&spec),
            ])
            .map(drop)
    }

    /// The content of `image` or `image@snap` (`rbd export` to stdout).
    ///
    /// # Errors
    /// `rbd export` fails.
    pub fn export(&self, image: &str) -> Result<Vec<u8>, CephError> {
        let spec = self.image_spec(image);
        self.cluster
            .tool("rbd", ["export", "--no-progress", &spec, "-"])
    }

    /// Writes the content of `image` or `image@snap` to `local_file`,
    /// which must not exist (`rbd export`).
    ///
    /// # Errors
    /// `rbd export` fails.
    pub fn export_to(&self, image: &str, local_file: &Path) -> Result<(), CephError> {
        let spec = self.image_spec(image);
        self.cluster
            .rbd([
                OsStr::new("export"),
                OsStr::new("--no-progress"),
                OsStr::new(&spec),
                local_file.as_os_str(),
            ])
            .map(drop)
    }

    /// Runs `rbd ARGS --pool rbd --namespace NS`: plain image names in
    /// `args` are this namespace's. Returns its standard output.
    ///
    /// # Errors
    /// As [`Cluster::rbd`].
    pub fn rbd<I, S>(&self, args: I) -> Result<String, CephError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let context = ["--pool", POOL, "--namespace", self.name.as_str()];
        let args: Vec<std::ffi::OsString> = args
            .into_iter()
            .map(|arg| arg.as_ref().to_os_string())
            .chain(context.iter().map(std::ffi::OsString::from))
            .collect();
        self.cluster.rbd(args)
    }

    /// The names in a JSON array `rbd ... --format json` printed, each an
    /// object's `key` (or the string itself).
    fn json_names(&self, args: &[&str], key: &str) -> Result<Vec<String>, CephError> {
        let out = self.rbd(args.iter().chain(&["--format", "json"]))?;
        let parse_error = |detail: &str| CephError::Parse {
            command: format!("rbd {}", args.join(" ")),
            detail: detail.to_owned(),
            output: out.trim().to_owned(),
        };
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        let value: serde_json::Value =
            serde_json::from_str(&out).map_err(|_| parse_error("not JSON"))?;
        let items = value
            .as_array()
            .ok_or_else(|| parse_error("not a JSON array"))?;
        Ok(items
            .iter()
            .filter_map(|item| item.as_str().or_else(|| item[key].as_str()))
            .map(str::to_owned)
            .collect())
    }

    /// Removes the namespace now, as dropping it does, but reporting
    /// what could not be removed.
    ///
    /// # Errors
    /// What could not be removed (the rest is removed anyway).
    pub fn remove(mut self) -> Result<(), CephError> {
        self.removed = true;
        self.purge()
    }

    /// Removes every group, trashed image, snapshot and image in the
    /// namespace, then the namespace. Groups go first (`rbd namespace rm`
    /// does not look for them); then, for a namespace with nothing else
    /// left, `rbd namespace rm` is the only other call.
    ///
    /// Images go in passes, since a clone must go before its parent's
    /// snapshot can be unprotected; each pass unprotects protected
    /// snapshots, purges snapshots and removes images, until the namespace
    /// is empty or a pass removes nothing.
    fn purge(&self) -> Result<(), CephError> {
        let mut problems = Vec::new();
        let note = |problems: &mut Vec<String>, result: Result<String, CephError>| {
            if let Err(err) = result {
                problems.push(err.to_string());
            }
        };
        match self.json_names(&["group", "ls"], "name") {
            Ok(groups) => {
                for group in groups {
                    note(&mut problems, self.rbd(["group", "rm", &group]));
                }
            }
            Err(err) => note(&mut problems, Err(err)),
        }
        // Most tests leave nothing else (or remove it themselves): then
        // this is the last call. It fails while images or trashed images
        // are left.
        if problems.is_empty() && self.remove_namespace().is_ok() {
            return Ok(());
        }
        // Restore trashed images, to be purged with the rest.
        match self.json_names(&["trash", "ls"], "id") {
            Ok(ids) => {
                for id in ids {
                    let restored = format!("trashed-{id}");
                    note(
                        &mut problems,
                        self.rbd(["trash", "restore", "--image", &restored, &id]),
                    );
                }
            }
            Err(err) => note(&mut problems, Err(err)),
        }
        let mut remaining = usize::MAX;
        let mut image_problems = Vec::new();
        loop {
            let images = match self.json_names(&["ls"], "name") {
                Ok(images) => images,
                Err(err) => {
                    image_problems.push(err.to_string());
                    break;
                }
            };
            if images.is_empty() || images.len() >= remaining {
                break;
            }
            remaining = images.len();
            image_problems.clear();
            for image in &images {
                if let Err(err) = self.remove_image(image) {
                    image_problems.push(err.to_string());
                }
            }
        }
        problems.extend(image_problems);
        if problems.is_empty() {
            note(&mut problems, self.remove_namespace());
        } else {
            problems.push(format!(
                "namespace {POOL}/{} left in place: it is not empty",
                self.name
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CephError::Cleanup {
                what: format!("RBD namespace {POOL}/{}", self.name),
                problems,
            })
        }
    }

    /// `rbd namespace rm`: fails unless the namespace is empty, but for
    /// groups, which it would leave behind.
    fn remove_namespace(&self) -> Result<String, CephError> {
        self.cluster
            .rbd(["namespace", "rm", "--pool", POOL, "--namespace", &self.name])
    }

    /// Unprotects `image`'s protected snapshots, purges its snapshots and
    /// removes it.
    fn remove_image(&self, image: &str) -> Result<(), CephError> {
        let out = self.rbd(["snap", "ls", "--format", "json", image])?;
        let snaps: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let snaps = snaps.as_array().map_or(&[][..], Vec::as_slice);
        for snap in snaps {
            if snap["protected"] == "true"
                && let Some(name) = snap["name"].as_str()
            {
                // Fails while a clone exists; a later pass retries.
                let _ = self.rbd(["snap", "unprotect", &format!("{image}@{name}")]);
            }
        }
        if !snaps.is_empty() {
            self.rbd(["snap", "purge", "--no-progress", image])?;
        }
        self.rbd(["rm", "--no-progress", image]).map(drop)
    }
}

impl Drop for Namespace<'_> {
    /// Purges the namespace, as [`Namespace::remove`] does; problems are
    /// printed on stderr, never raised.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Err(err) = self.purge() {
            eprintln!("testceph: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_only_namespace_characters() {
        assert_eq!(sanitize("tests::snap create-1"), "tests__snap_create-1");
        assert_eq!(sanitize(""), "ns");
        assert_eq!(sanitize("é"), "_");
    }
}
