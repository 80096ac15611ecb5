/* no_message.c ("no-message"): create fails with VIRTSNAP_E_IO without
 * calling set_error first. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static int32_t q_create(void *instance, const virtsnap_call_v1 *call,
                        const uint8_t *request, size_t len) {
  (void)instance, (void)call, (void)request, (void)len;
  return VIRTSNAP_E_IO;
}

static virtsnap_plugin_v1 plugin = {
    .name = "no-message", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = q_create, /* the fault */
    .delete_ = m_delete,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
