/* abi_1_0.c ("abi-one-oh"): a plugin as built against the ABI 1.0 header.
 * Its struct_size is the 1.0 table's (VIRTSNAP_PLUGIN_V1_0_SIZE: it ends
 * after undo) and its abi_minor 0. Like every 1.0 plugin it knows no
 * feature, so it refuses any request whose "requires" is not empty with
 * VIRTSNAP_E_UNSUPPORTED (what a 1.0 plugin does with a network volume).
 * Not a fault: a 1.1 host must load it, treat the slots beyond its
 * struct_size as NULL and take its refusal of a network volume as
 * declining it. The memory after its 1.0 table holds slots that abort, so
 * a host that read past struct_size would crash the test. */
#include <stdlib.h>
#define MINIMAL_PARTS_ONLY
#include "minimal.c"

/* VIRTSNAP_E_UNSUPPORTED when the request requires a feature. */
static int32_t refuses_features(const virtsnap_call_v1 *call, const uint8_t *request,
                                size_t len) {
  static const char key[] = "\"requires\":[";
  const char *req = (const char *)request, *end = req + len;
  for (const char *p = req; p + sizeof key - 1 < end; p++)
    if (memcmp(p, key, sizeof key - 1) == 0 && p[sizeof key - 1] != ']')
      return m_fail(call, VIRTSNAP_E_UNSUPPORTED,
                    "the request requires a feature this 1.0 plugin does not know");
  return VIRTSNAP_OK;
}

static int32_t o_capabilities(void *instance, const virtsnap_call_v1 *call,
                              const uint8_t *request, size_t len) {
  int32_t rc = refuses_features(call, request, len);
  return rc != VIRTSNAP_OK ? rc : m_capabilities(instance, call, request, len);
}

static int32_t o_create(void *instance, const virtsnap_call_v1 *call,
                        const uint8_t *request, size_t len) {
  int32_t rc = refuses_features(call, request, len);
  return rc != VIRTSNAP_OK ? rc : m_create(instance, call, request, len);
}

static int32_t o_delete(void *instance, const virtsnap_call_v1 *call,
                        const uint8_t *request, size_t len) {
  int32_t rc = refuses_features(call, request, len);
  return rc != VIRTSNAP_OK ? rc : m_delete(instance, call, request, len);
}

static int32_t beyond_the_table(void *instance, const virtsnap_call_v1 *call,
                                const uint8_t *request, size_t len) {
  (void)instance, (void)call, (void)request, (void)len;
  abort(); /* the host read a slot past this plugin's struct_size */
}

static const virtsnap_plugin_v1 plugin = {
    .header = {VIRTSNAP_PLUGIN_V1_0_SIZE, VIRTSNAP_ABI_MAJOR, 0},
    .name = "abi-one-oh", .version = "1.0",
    .open = m_open, .close = m_close, .capabilities = o_capabilities,
    .create = o_create, .delete_ = o_delete,
    /* Not part of a 1.0 table: what happens to follow it in memory. */
    .export_diff = beyond_the_table, .import_diff = beyond_the_table,
};

__attribute__((visibility("default"))) const virtsnap_plugin_v1 *
virtsnap_plugin_entry_v1(const virtsnap_host_v1 *host) {
  (void)host;
  return &plugin;
}
