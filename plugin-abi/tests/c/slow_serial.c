/* slow_serial.c ("slow-serial"): declares SERIALIZE_ALL and checks the host
 * keeps to it: capabilities takes 20 ms and aborts the process when another
 * call is in flight at the same time. */
#define _DEFAULT_SOURCE /* usleep */
#include <stdlib.h>
#include <unistd.h>
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static int in_flight;

static int32_t s_capabilities(void *instance, const virtsnap_call_v1 *call,
                              const uint8_t *request, size_t len) {
  (void)instance, (void)request, (void)len;
  if (__atomic_add_fetch(&in_flight, 1, __ATOMIC_SEQ_CST) != 1)
    abort(); /* two calls at once */
  usleep(20000);
  if (__atomic_load_n(&in_flight, __ATOMIC_SEQ_CST) != 1)
    abort();
  __atomic_sub_fetch(&in_flight, 1, __ATOMIC_SEQ_CST);
  return M_WRITE(call, "{\"copy\":true}");
}

static virtsnap_plugin_v1 plugin = {
    .thread_model = VIRTSNAP_THREAD_MODEL_SERIALIZE_ALL,
    .name = "slow-serial", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = s_capabilities,
    .create = m_create, .delete_ = m_delete,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
