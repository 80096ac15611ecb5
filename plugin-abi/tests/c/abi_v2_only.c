/* abi_v2_only.c ("abi-v2-only"): a plugin for a future ABI 2 only: it
 * exports virtsnap_plugin_entry_v2 and no virtsnap_plugin_entry_v1. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

/* ABI 2 is not defined yet: its plugin struct is assumed to start like
 * version 1's, with the same 8-byte header. */
typedef struct virtsnap_plugin_v2 {
  virtsnap_header header;
  uint32_t thread_model;
  uint32_t flags;
  const char *name;
  const char *version;
  const char *description;
  void *(*open)(const virtsnap_call_v1 *call, const uint8_t *config, size_t len);
  void (*close)(void *instance);
  virtsnap_op_fn capabilities, create, delete_, revert, list, undo;
} virtsnap_plugin_v2;

static const virtsnap_plugin_v2 plugin = {
    .header = {sizeof(virtsnap_plugin_v2), 2, 0},
    .name = "abi-v2-only", .version = "2.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = m_create, .delete_ = m_delete,
};

__attribute__((visibility("default"))) const virtsnap_plugin_v2 *
virtsnap_plugin_entry_v2(const void *host) {
  (void)host;
  return &plugin;
}
