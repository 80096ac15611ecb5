//! driver-file's full copies served as the `file-plugin` plugin: a
//! `cdylib` built with the Rust SDK around the linked driver
//! ([`plugin_abi::sdk::bridge::Linked`]). The tests load it like any
//! third-party plugin and run the conformance suite through the ABI.

use driver_file::FileDriver;
use plugin_abi::payload::{
    Capabilities, CapabilitiesRequest, CreateRequest, CreatedSnapshot, DeleteRequest, ListRequest,
    ListResult, OpenConfig, RevertRequest, RevertResult, UndoRequest,
};
use plugin_abi::sdk::bridge::Linked;
use plugin_abi::sdk::{Call, Error, Plugin};

/// The plugin: the file driver behind the bridge.
#[derive(Debug)]
pub struct FilePlugin(Linked<FileDriver>);

impl Plugin for FilePlugin {
    const NAME: &'static std::ffi::CStr = c"file-plugin";
    const VERSION: &'static std::ffi::CStr = c"0.1.0";
    const DESCRIPTION: Option<&'static std::ffi::CStr> =
        Some(c"full copies of any file (driver-file as a plugin)");
    const THREAD_MODEL: u32 = plugin_abi::abi::THREAD_MODEL_SERIALIZE_INSTANCE;

    fn open(_config: OpenConfig, _call: &Call<'_>) -> Result<Self, Error> {
        Ok(Self(Linked::new(FileDriver::new())?))
    }

    fn capabilities(&self, r: CapabilitiesRequest, call: &Call<'_>) -> Result<Capabilities, Error> {
        self.0.capabilities(r, call)
    }

    fn create(&self, r: CreateRequest, call: &Call<'_>) -> Result<CreatedSnapshot, Error> {
        self.0.create(r, call)
    }

    fn delete(&self, r: DeleteRequest, call: &Call<'_>) -> Result<(), Error> {
        self.0.delete(r, call)
    }

    fn revert(&self, r: RevertRequest, call: &Call<'_>) -> Result<RevertResult, Error> {
        self.0.revert(r, call)
    }

    fn list(&self, r: ListRequest, call: &Call<'_>) -> Result<ListResult, Error> {
        self.0.list(r, call)
    }

    fn undo(&self, r: UndoRequest, call: &Call<'_>) -> Result<(), Error> {
        self.0.undo(r, call)
    }
}

plugin_abi::export_plugin!(FilePlugin { revert, list, undo });
