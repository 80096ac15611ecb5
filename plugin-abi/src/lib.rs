//! The stable C ABI of virtsnap storage-driver plugins, and both of its
//! sides: the host (`host`: find, check and load plugins, and drive each
//! as a [`snapshot_core::driver::VolumeDriver`]) and the Rust SDK (`sdk`:
//! the [`sdk::Plugin`] trait and [`export_plugin!`], which turn a Rust type
//! into a plugin).
//!
//! # The contract
//!
//! A plugin is a shared library exporting `virtsnap_plugin_entry_v1`,
//! which returns a static [`abi::PluginV1`]: its name, version, thread
//! model and a table of operation slots. The C declarations are in
//! `include/virtsnap_plugin.h` (checked against [`abi`] by the tests), the
//! documents in [`payload`] and `schema/virtsnap-plugin-v1.schema.json`.
//!
//! - **Versions.** The major version is in the symbol name; each struct
//!   starts with `struct_size`, `abi_major`, `abi_minor`, and a minor
//!   version only appends fields. The host reads the prefix both sides
//!   know, so a plugin built for 1.0 keeps loading in every 1.x host, and
//!   a slot the plugin lacks is "unsupported", never success.
//! - **Memory.** Inputs are borrowed for the call; results and errors go
//!   back through host callbacks that copy them; neither side frees what
//!   the other allocated. Static strings and the table live as long as
//!   the library, and the host never unloads a library.
//! - **Errors.** A negative code from [`abi`] (`E_NOT_FOUND`, ...) with an
//!   OS errno and a message that says what to do.
//! - **Threads.** The plugin declares how many calls it takes at once; the
//!   host runs calls on blocking worker threads, never on its async
//!   runtime, and never more at once than declared.
//! - **ABI 1.1** appended the optional `export_diff` and `import_diff`
//!   slots (incremental export and import, as RBD's `export-diff`) and
//!   defined the request feature `network-volume`: a request about a
//!   network volume (`PROTOCOL:NAME[:OPTION=VALUE...]` instead of a path)
//!   requires it, so a 1.0 plugin refuses it, which the host takes as
//!   declining the volume.
//!
//! The plugin authors' guide is `docs/plugins.md` at the workspace root.

pub mod abi;
pub mod payload;

#[cfg(any(feature = "host", feature = "bridge"))]
pub mod convert;
#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "sdk")]
pub mod sdk;
#[cfg(feature = "testing")]
pub mod testing;
