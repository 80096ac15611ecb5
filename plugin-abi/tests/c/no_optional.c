/* no_optional.c ("no-optional"): only the required slots, yet capabilities
 * claims revert and list: the host must treat them as unsupported. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static int32_t n_capabilities(void *instance, const virtsnap_call_v1 *call,
                              const uint8_t *request, size_t len) {
  (void)instance, (void)request, (void)len;
  return M_WRITE(call, "{\"copy\":true,\"revert\":true,\"list\":true}");
}

static virtsnap_plugin_v1 plugin = {
    .name = "no-optional", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = n_capabilities,
    .create = m_create, .delete_ = m_delete,
    .revert = NULL, .list = NULL, .undo = NULL,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
