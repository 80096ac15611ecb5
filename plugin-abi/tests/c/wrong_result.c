/* wrong_result.c ("wrong-result"): create answers with a valid document for
 * another snapshot ("other") in another mode ("internal") than planned. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static int32_t w_create(void *instance, const virtsnap_call_v1 *call,
                        const uint8_t *request, size_t len) {
  (void)instance, (void)request, (void)len;
  return M_WRITE(call, "{\"name\":\"other\",\"mode\":\"internal\"}");
}

static virtsnap_plugin_v1 plugin = {
    .name = "wrong-result", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = w_create, /* the fault */
    .delete_ = m_delete,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
