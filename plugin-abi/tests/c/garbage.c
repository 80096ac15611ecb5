/* garbage.c ("garbage"): loads and answers capabilities properly, then
 * breaks the protocol: create writes "not json {" and returns OK, list
 * writes bytes that are not UTF-8 and returns OK, revert returns OK after
 * set_error, delete returns the positive code 5. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static int32_t g_create(void *instance, const virtsnap_call_v1 *call,
                        const uint8_t *request, size_t len) {
  (void)instance, (void)request, (void)len;
  M_WRITE(call, "not json {");
  return VIRTSNAP_OK;
}

static int32_t g_list(void *instance, const virtsnap_call_v1 *call,
                      const uint8_t *request, size_t len) {
  static const uint8_t bytes[] = {0xff, 0xfe};
  (void)instance, (void)request, (void)len;
  call->write_result(call->call_ctx, bytes, sizeof bytes);
  return VIRTSNAP_OK;
}

static int32_t g_revert(void *instance, const virtsnap_call_v1 *call,
                        const uint8_t *request, size_t len) {
  (void)instance, (void)request, (void)len;
  m_fail(call, VIRTSNAP_E_IO, "garbage: an error it then returns OK for");
  return VIRTSNAP_OK;
}

static int32_t g_delete(void *instance, const virtsnap_call_v1 *call,
                        const uint8_t *request, size_t len) {
  (void)instance, (void)call, (void)request, (void)len;
  return 5;
}

static virtsnap_plugin_v1 plugin = {
    .name = "garbage", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = g_create, .delete_ = g_delete, .revert = g_revert, .list = g_list,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
