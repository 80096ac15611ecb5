/* bad_name.c: its name, "Bad Name!", is not [a-z0-9][a-z0-9-]*. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static virtsnap_plugin_v1 plugin = {
    .name = "Bad Name!", /* the fault */
    .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = m_create, .delete_ = m_delete,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
