/* missing_required.c ("missing-required"): the required create slot is
 * NULL. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static virtsnap_plugin_v1 plugin = {
    .name = "missing-required", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = NULL, /* the fault */
    .delete_ = m_delete,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
