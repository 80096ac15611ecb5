//! The rbd plugin, discovered in a plugin directory and loaded through
//! the ABI, passes the driver conformance suite against a real Ceph
//! cluster (one per test process, or `VIRTSNAP_TEST_CEPH_CONF`'s), each
//! test on images of its own RBD namespace; and records the integration
//! matrix's `rbd-plugin` row.

mod support;

use support::RbdHarness;

fn harness() -> Option<RbdHarness> {
    RbdHarness::new("conformance")
}

snapshot_core::conformance_tests!(harness(), "rbd-plugin");
