//! `rust-faults`: a plugin built with the Rust SDK that panics where the
//! host's fault tests ask it to, and echoes the ABI 1.1 operations so the
//! tests can see what crosses the ABI.
//!
//! - A snapshot named `panic` makes `create` panic; `capabilities` panics
//!   for a volume whose path ends in `.panic`. Other creates are plain
//!   refusals, so `create` never writes anything.
//! - Network volumes (`requires: ["network-volume"]`): it takes those of
//!   the protocol `faults` (`faults:pool/image`: internal snapshots, as
//!   far as `capabilities` says) and declines the others (`{}`).
//! - `export_diff` writes the request it received, as JSON, to the new
//!   file (refusing an existing one with `E_EXISTS`), reports progress and
//!   returns the file's size and `changed_bytes` [`CHANGED_BYTES`] (plus
//!   one with a `from`). For a snapshot named `lie` it reports one byte
//!   more than it wrote.
//! - `import_diff` reads such a file back and returns its snapshot and
//!   `from` names and the file's size as `size`; for a volume whose path
//!   ends in `.nameless` it names no snapshot (a malformed result).

use plugin_abi::payload::{
    Capabilities, CapabilitiesRequest, CreateRequest, CreatedSnapshot, DeleteRequest,
    ExportDiffRequest, ExportDiffResult, FEATURE_NETWORK_VOLUME, ImportDiffRequest,
    ImportDiffResult, OpenConfig,
};
use plugin_abi::sdk::{Call, Error, Plugin};

/// What `export_diff` reports as changed (without a `from`).
pub const CHANGED_BYTES: u64 = 3 << 20;

/// The plugin.
#[derive(Debug)]
pub struct Faults;

impl Plugin for Faults {
    const NAME: &'static std::ffi::CStr = c"rust-faults";
    const VERSION: &'static std::ffi::CStr = c"0.1.0";

    fn open(config: OpenConfig, _call: &Call<'_>) -> Result<Self, Error> {
        if config.options.contains_key("panic-on-open") {
            panic!("asked to panic in open");
        }
        Ok(Self)
    }

    fn capabilities(
        &self,
        r: CapabilitiesRequest,
        _call: &Call<'_>,
    ) -> Result<Capabilities, Error> {
        assert!(
            !r.volume.path.ends_with(".panic"),
            "asked to panic in capabilities"
        );
        if r.requires.iter().any(|f| f == FEATURE_NETWORK_VOLUME) {
            return Ok(Capabilities {
                internal: r.volume.path.starts_with("faults:"),
                ..Capabilities::default()
            });
        }
        Ok(Capabilities {
            copy: true,
            ..Capabilities::default()
        })
    }

    fn create(&self, r: CreateRequest, _call: &Call<'_>) -> Result<CreatedSnapshot, Error> {
        if r.plan.name == "panic" {
            panic!("asked to panic in create");
        }
        Err(Error::unsupported("rust-faults never creates anything"))
    }

    fn delete(&self, _r: DeleteRequest, _call: &Call<'_>) -> Result<(), Error> {
        Ok(())
    }

    fn export_diff(
        &self,
        r: ExportDiffRequest,
        call: &Call<'_>,
    ) -> Result<ExportDiffResult, Error> {
        use std::io::Write;
        let text = serde_json::to_vec(&r).map_err(|e| Error::internal(e.to_string()))?;
        let total = text.len() as u64;
        if !call.progress(0, total) {
            return Err(Error::new(plugin_abi::abi::E_CANCELLED, "cancelled"));
        }
        let mut file = match std::fs::File::create_new(&r.file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::new(
                    plugin_abi::abi::E_EXISTS,
                    format!("export file {}", r.file),
                ));
            }
            Err(e) => return Err(Error::io(&format!("creating {}", r.file), &e)),
        };
        if let Err(e) = file.write_all(&text).and_then(|()| file.sync_all()) {
            drop(file);
            let _ = std::fs::remove_file(&r.file);
            return Err(Error::io(&format!("writing {}", r.file), &e));
        }
        // The host's progress reaches its caller: report the end too.
        let _ = call.progress(total, total);
        Ok(ExportDiffResult {
            file_bytes: total + u64::from(r.snapshot.name == "lie"),
            changed_bytes: CHANGED_BYTES + u64::from(r.from.is_some()),
        })
    }

    fn import_diff(
        &self,
        r: ImportDiffRequest,
        call: &Call<'_>,
    ) -> Result<ImportDiffResult, Error> {
        let text = std::fs::read(&r.file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::new(
                    plugin_abi::abi::E_NOT_FOUND,
                    format!("diff file {}", r.file),
                )
            } else {
                Error::io(&format!("reading {}", r.file), &e)
            }
        })?;
        let exported: ExportDiffRequest = serde_json::from_slice(&text).map_err(|e| {
            Error::invalid(format!("{} is not an export of rust-faults: {e}", r.file))
        })?;
        let size = text.len() as u64;
        let _ = call.progress(size, size);
        Ok(ImportDiffResult {
            snapshot: if r.volume.path.ends_with(".nameless") {
                String::new()
            } else {
                exported.snapshot.name
            },
            from: exported.from.map(|f| f.name),
            size,
        })
    }
}

plugin_abi::export_plugin!(Faults {
    export_diff,
    import_diff
});
