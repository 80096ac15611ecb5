/* entry_null.c ("entry-null"): the entry refuses the host: it logs
 * "refusing: test" through host->log and returns NULL. */
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

static virtsnap_plugin_v1 plugin = {
    .header = {sizeof(virtsnap_plugin_v1), VIRTSNAP_ABI_MAJOR, VIRTSNAP_ABI_MINOR},
    .name = "entry-null", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = m_create, .delete_ = m_delete,
};

__attribute__((visibility("default"))) const virtsnap_plugin_v1 *
virtsnap_plugin_entry_v1(const virtsnap_host_v1 *host) {
  static const char msg[] = "refusing: test";
  (void)plugin; /* what it would have returned */
  if (host != NULL && host->log != NULL)
    host->log(host->host_ctx, VIRTSNAP_LOG_ERROR, (const uint8_t *)msg, sizeof msg - 1);
  return NULL;
}
