//! The host side of the plugin ABI: [`loader`] finds, checks and loads
//! plugin libraries; [`PluginDriver`] drives an instance of one as a
//! [`snapshot_core::driver::VolumeDriver`]. All unsafe code of the host
//! is in `ffi`.

mod driver;
mod ffi;
pub mod loader;

pub use driver::{OpenError, PluginDriver};
pub use loader::{Discovered, LoadError, Plugin, ThreadModel, discover, load, plugin_dirs};
