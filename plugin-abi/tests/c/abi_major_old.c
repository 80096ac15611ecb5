/* abi_major_old.c ("major-old"): exports the ABI 1 entry symbol,
 * but the struct it returns says abi_major 0 (a pre-release ABI). */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static const virtsnap_plugin_v1 plugin = {
    .header = {sizeof(virtsnap_plugin_v1), 0, 9}, /* the fault */
    .name = "major-old", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = m_create, .delete_ = m_delete,
};

__attribute__((visibility("default"))) const virtsnap_plugin_v1 *
virtsnap_plugin_entry_v1(const virtsnap_host_v1 *host) {
  (void)host;
  return &plugin;
}
