/* newer_minor.c ("newer-minor"): a plugin built for ABI 1.7, whose struct
 * has two more slots than this host's (1.1) virtsnap_plugin_v1. It is not a
 * fault: the host must load it and ignore the extra slots (calling one
 * aborts); its 1.1 slots export_diff and import_diff are NULL. */
#include <stdlib.h>
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static int32_t unknown_slot(void *instance, const virtsnap_call_v1 *call,
                            const uint8_t *request, size_t len) {
  (void)instance, (void)call, (void)request, (void)len;
  abort(); /* the host called a slot ABI 1.0 does not have */
}

typedef struct plugin_v1_7 {
  virtsnap_plugin_v1 v1_0;
  virtsnap_op_fn later_a; /* slots of minor versions 2..7 */
  virtsnap_op_fn later_b;
} plugin_v1_7;
_Static_assert(sizeof(plugin_v1_7) == sizeof(virtsnap_plugin_v1) + 16, "two trailing pointers");

static const plugin_v1_7 plugin = {
    .v1_0 = {
        .header = {sizeof(plugin_v1_7), VIRTSNAP_ABI_MAJOR, 7},
        .name = "newer-minor", .version = "1.7",
        .open = m_open, .close = m_close, .capabilities = m_capabilities,
        .create = m_create, .delete_ = m_delete,
    },
    .later_a = unknown_slot,
    .later_b = unknown_slot,
};

__attribute__((visibility("default"))) const virtsnap_plugin_v1 *
virtsnap_plugin_entry_v1(const virtsnap_host_v1 *host) {
  (void)host;
  return &plugin.v1_0;
}
