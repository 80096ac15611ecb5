//! `include/virtsnap_plugin.h` against the Rust definitions in
//! `plugin_abi::abi`: a C probe compiled with the system's compiler prints
//! the size and every field offset of each struct and the value of every
//! constant, and each must equal Rust's. Also: the published JSON Schema
//! is what the payload types generate.

mod support;

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use plugin_abi::abi::{self, CallV1, Header, HostV1, PluginV1};

const PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include "virtsnap_plugin.h"
#define S(t) printf("sizeof %s %zu\n", #t, sizeof(t));
#define O(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(t, f));
#define C(c) printf("const %s %lld\n", #c, (long long)(c));
int main(void) {
  S(virtsnap_header) O(virtsnap_header, struct_size) O(virtsnap_header, abi_major)
  O(virtsnap_header, abi_minor)
  S(virtsnap_host_v1) O(virtsnap_host_v1, host_version) O(virtsnap_host_v1, host_ctx)
  O(virtsnap_host_v1, log)
  S(virtsnap_call_v1) O(virtsnap_call_v1, call_ctx) O(virtsnap_call_v1, write_result)
  O(virtsnap_call_v1, set_error) O(virtsnap_call_v1, log) O(virtsnap_call_v1, progress)
  S(virtsnap_plugin_v1) O(virtsnap_plugin_v1, thread_model) O(virtsnap_plugin_v1, flags)
  O(virtsnap_plugin_v1, name) O(virtsnap_plugin_v1, version)
  O(virtsnap_plugin_v1, description) O(virtsnap_plugin_v1, open)
  O(virtsnap_plugin_v1, close) O(virtsnap_plugin_v1, capabilities)
  O(virtsnap_plugin_v1, create) O(virtsnap_plugin_v1, delete_)
  O(virtsnap_plugin_v1, revert) O(virtsnap_plugin_v1, list) O(virtsnap_plugin_v1, undo)
  O(virtsnap_plugin_v1, export_diff) O(virtsnap_plugin_v1, import_diff)
  C(VIRTSNAP_PLUGIN_V1_0_SIZE)
  C(VIRTSNAP_ABI_MAJOR) C(VIRTSNAP_ABI_MINOR) C(VIRTSNAP_OK)
  C(VIRTSNAP_E_INVALID_ARGUMENT) C(VIRTSNAP_E_NOT_FOUND) C(VIRTSNAP_E_EXISTS)
  C(VIRTSNAP_E_UNSUPPORTED) C(VIRTSNAP_E_BUSY) C(VIRTSNAP_E_PERMISSION) C(VIRTSNAP_E_IO)
  C(VIRTSNAP_E_NO_SPACE) C(VIRTSNAP_E_INCONSISTENT) C(VIRTSNAP_E_CHECKSUM_MISMATCH)
  C(VIRTSNAP_E_CANCELLED) C(VIRTSNAP_E_INTERNAL) C(VIRTSNAP_E_PANIC)
  C(VIRTSNAP_E_INVALID_NAME) C(VIRTSNAP_THREAD_MODEL_SERIALIZE_ALL)
  C(VIRTSNAP_THREAD_MODEL_SERIALIZE_INSTANCE) C(VIRTSNAP_THREAD_MODEL_PARALLEL)
  C(VIRTSNAP_LOG_ERROR) C(VIRTSNAP_LOG_WARN) C(VIRTSNAP_LOG_INFO) C(VIRTSNAP_LOG_DEBUG)
  return 0;
}
"#;

/// What the Rust side says, in the probe's words.
fn rust_view() -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: usize| {
        m.insert(k.to_string(), i64::try_from(v).expect("small"));
    };
    put("sizeof virtsnap_header", size_of::<Header>());
    put(
        "offset virtsnap_header.struct_size",
        offset_of!(Header, struct_size),
    );
    put(
        "offset virtsnap_header.abi_major",
        offset_of!(Header, abi_major),
    );
    put(
        "offset virtsnap_header.abi_minor",
        offset_of!(Header, abi_minor),
    );
    put("sizeof virtsnap_host_v1", size_of::<HostV1>());
    put(
        "offset virtsnap_host_v1.host_version",
        offset_of!(HostV1, host_version),
    );
    put(
        "offset virtsnap_host_v1.host_ctx",
        offset_of!(HostV1, host_ctx),
    );
    put("offset virtsnap_host_v1.log", offset_of!(HostV1, log));
    put("sizeof virtsnap_call_v1", size_of::<CallV1>());
    put(
        "offset virtsnap_call_v1.call_ctx",
        offset_of!(CallV1, call_ctx),
    );
    put(
        "offset virtsnap_call_v1.write_result",
        offset_of!(CallV1, write_result),
    );
    put(
        "offset virtsnap_call_v1.set_error",
        offset_of!(CallV1, set_error),
    );
    put("offset virtsnap_call_v1.log", offset_of!(CallV1, log));
    put(
        "offset virtsnap_call_v1.progress",
        offset_of!(CallV1, progress),
    );
    put("sizeof virtsnap_plugin_v1", size_of::<PluginV1>());
    put(
        "offset virtsnap_plugin_v1.thread_model",
        offset_of!(PluginV1, thread_model),
    );
    put(
        "offset virtsnap_plugin_v1.flags",
        offset_of!(PluginV1, flags),
    );
    put("offset virtsnap_plugin_v1.name", offset_of!(PluginV1, name));
    put(
        "offset virtsnap_plugin_v1.version",
        offset_of!(PluginV1, version),
    );
    put(
        "offset virtsnap_plugin_v1.description",
        offset_of!(PluginV1, description),
    );
    put("offset virtsnap_plugin_v1.open", offset_of!(PluginV1, open));
    put(
        "offset virtsnap_plugin_v1.close",
        offset_of!(PluginV1, close),
    );
    put(
        "offset virtsnap_plugin_v1.capabilities",
        offset_of!(PluginV1, capabilities),
    );
    put(
        "offset virtsnap_plugin_v1.create",
        offset_of!(PluginV1, create),
    );
    put(
        "offset virtsnap_plugin_v1.delete_",
        offset_of!(PluginV1, delete),
    );
    put(
        "offset virtsnap_plugin_v1.revert",
        offset_of!(PluginV1, revert),
    );
    put("offset virtsnap_plugin_v1.list", offset_of!(PluginV1, list));
    put("offset virtsnap_plugin_v1.undo", offset_of!(PluginV1, undo));
    put(
        "offset virtsnap_plugin_v1.export_diff",
        offset_of!(PluginV1, export_diff),
    );
    put(
        "offset virtsnap_plugin_v1.import_diff",
        offset_of!(PluginV1, import_diff),
    );
    put("const VIRTSNAP_PLUGIN_V1_0_SIZE", abi::PLUGIN_V1_0_SIZE);
    let consts: [(&str, i64); 24] = [
        ("VIRTSNAP_ABI_MAJOR", abi::ABI_MAJOR.into()),
        ("VIRTSNAP_ABI_MINOR", abi::ABI_MINOR.into()),
        ("VIRTSNAP_OK", abi::OK.into()),
        (
            "VIRTSNAP_E_INVALID_ARGUMENT",
            abi::E_INVALID_ARGUMENT.into(),
        ),
        ("VIRTSNAP_E_NOT_FOUND", abi::E_NOT_FOUND.into()),
        ("VIRTSNAP_E_EXISTS", abi::E_EXISTS.into()),
        ("VIRTSNAP_E_UNSUPPORTED", abi::E_UNSUPPORTED.into()),
        ("VIRTSNAP_E_BUSY", abi::E_BUSY.into()),
        ("VIRTSNAP_E_PERMISSION", abi::E_PERMISSION.into()),
        ("VIRTSNAP_E_IO", abi::E_IO.into()),
        ("VIRTSNAP_E_NO_SPACE", abi::E_NO_SPACE.into()),
        ("VIRTSNAP_E_INCONSISTENT", abi::E_INCONSISTENT.into()),
        (
            "VIRTSNAP_E_CHECKSUM_MISMATCH",
            abi::E_CHECKSUM_MISMATCH.into(),
        ),
        ("VIRTSNAP_E_CANCELLED", abi::E_CANCELLED.into()),
        ("VIRTSNAP_E_INTERNAL", abi::E_INTERNAL.into()),
        ("VIRTSNAP_E_PANIC", abi::E_PANIC.into()),
        ("VIRTSNAP_E_INVALID_NAME", abi::E_INVALID_NAME.into()),
        (
            "VIRTSNAP_THREAD_MODEL_SERIALIZE_ALL",
            abi::THREAD_MODEL_SERIALIZE_ALL.into(),
        ),
        (
            "VIRTSNAP_THREAD_MODEL_SERIALIZE_INSTANCE",
            abi::THREAD_MODEL_SERIALIZE_INSTANCE.into(),
        ),
        (
            "VIRTSNAP_THREAD_MODEL_PARALLEL",
            abi::THREAD_MODEL_PARALLEL.into(),
        ),
        ("VIRTSNAP_LOG_ERROR", abi::LOG_ERROR.into()),
        ("VIRTSNAP_LOG_WARN", abi::LOG_WARN.into()),
        ("VIRTSNAP_LOG_INFO", abi::LOG_INFO.into()),
        ("VIRTSNAP_LOG_DEBUG", abi::LOG_DEBUG.into()),
    ];
    for (k, v) in consts {
        m.insert(format!("const {k}"), v);
    }
    m
}

/// The 1.0 table is frozen: ABI 1.1 only appended its two slots, so a
/// plugin built against the 1.0 header (104 bytes) keeps every offset.
#[test]
#[cfg(target_pointer_width = "64")]
fn the_1_0_table_is_a_prefix_of_the_1_1_table() {
    assert_eq!(abi::ABI_MAJOR, 1);
    assert_eq!(abi::ABI_MINOR, 1);
    assert_eq!(abi::PLUGIN_V1_0_SIZE, 104);
    assert_eq!(offset_of!(PluginV1, undo), 96);
    assert_eq!(offset_of!(PluginV1, export_diff), 104);
    assert_eq!(offset_of!(PluginV1, import_diff), 112);
    assert_eq!(size_of::<PluginV1>(), 120);
    assert_eq!(abi::PLUGIN_V1_1_SIZE, 120);
    // The call and host structs did not change in 1.1.
    assert_eq!(abi::CALL_V1_0_SIZE, size_of::<CallV1>());
    assert_eq!(abi::HOST_V1_0_SIZE, size_of::<HostV1>());
}

#[test]
fn header_matches_the_rust_definitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("probe.c");
    std::fs::write(&src, PROBE).expect("writing the probe");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    if Command::new(&cc).arg("--version").output().is_err() {
        let _ = snapshot_core::conformance::backends::skip(&format!("no C compiler ({cc})"));
        return;
    }
    let exe = dir.path().join("probe");
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(support::workspace().join("plugin-abi/include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("running the C compiler");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().expect("running the probe");
    let c: BTreeMap<String, i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("KEY VALUE");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect();
    let rust = rust_view();
    assert_eq!(
        c.len(),
        rust.len(),
        "the probe and the Rust view list the same items"
    );
    for (k, v) in &rust {
        assert_eq!(
            c.get(k),
            Some(v),
            "{k}: C says {:?}, Rust says {v}",
            c.get(k)
        );
    }
}

/// The schema published next to the header is the one the payload types
/// generate (`VIRTSNAP_BLESS=1` rewrites it).
#[test]
fn published_schema_is_current() {
    let path = support::workspace().join("plugin-abi/schema/virtsnap-plugin-v1.schema.json");
    let generated = plugin_abi::payload::schema_json();
    if std::env::var_os("VIRTSNAP_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing the schema");
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == generated,
        "{} is out of date; regenerate it with VIRTSNAP_BLESS=1 cargo test -p plugin-abi --test header",
        path.display()
    );
}
