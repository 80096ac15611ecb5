/* null_result.c ("null-result"): capabilities and create return OK without
 * writing the result their operations must have. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static int32_t no_result(void *instance, const virtsnap_call_v1 *call,
                         const uint8_t *request, size_t len) {
  (void)instance, (void)call, (void)request, (void)len;
  return VIRTSNAP_OK;
}

static virtsnap_plugin_v1 plugin = {
    .name = "null-result", .version = "1.0",
    .open = m_open, .close = m_close,
    .capabilities = no_result, .create = no_result, /* the fault */
    .delete_ = m_delete,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
