/* flags_set.c ("flags-set"): sets the reserved flags field, which must be
 * 0 in ABI 1.0. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static virtsnap_plugin_v1 plugin = {
    .flags = 1, /* the fault */
    .name = "flags-set", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = m_create, .delete_ = m_delete,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
