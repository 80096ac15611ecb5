/* too_small.c ("too-small"): its struct_size says 40 bytes, less than
 * ABI 1.0's virtsnap_plugin_v1 (it would end before the open slot). */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static const virtsnap_plugin_v1 plugin = {
    .header = {40, VIRTSNAP_ABI_MAJOR, VIRTSNAP_ABI_MINOR}, /* the fault */
    .name = "too-small", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = m_create, .delete_ = m_delete,
};

__attribute__((visibility("default"))) const virtsnap_plugin_v1 *
virtsnap_plugin_entry_v1(const virtsnap_host_v1 *host) {
  (void)host;
  return &plugin;
}
