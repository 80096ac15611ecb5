//! `rust-faults`: a plugin built with the Rust SDK that panics where the
//! host's fault tests ask it to. A snapshot named `panic` makes `create`
//! panic; `capabilities` panics for a volume whose path ends in
//! `.panic`. Everything else is a plain refusal, so nothing is ever
//! written.

use plugin_abi::payload::{
    Capabilities, CapabilitiesRequest, CreateRequest, CreatedSnapshot, DeleteRequest, OpenConfig,
};
use plugin_abi::sdk::{Call, Error, Plugin};

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
}

plugin_abi::export_plugin!(Faults);
