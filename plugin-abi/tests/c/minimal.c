/*
 * minimal.c: the smallest working virtsnap plugin ("minimal") for the host's
 * tests, and the base of the fault plugins beside it: each defines
 * MINIMAL_PARTS_ONLY, includes this file for its working parts and adds one
 * fault. capabilities: {"copy":true} for any volume. create: echoes the
 * plan's name, mode and file (found by a plain search of the compact JSON
 * the host sends, escapes kept). delete: OK. No revert, list or undo.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "virtsnap_plugin.h"

#define PART __attribute__((unused)) static

PART int instance_token; /* what open returns: the host never reads it */

PART void *m_open(const virtsnap_call_v1 *call, const uint8_t *config, size_t len) {
  (void)call, (void)config, (void)len;
  return &instance_token;
}

PART void m_close(void *instance) { (void)instance; }

PART int32_t m_fail(const virtsnap_call_v1 *call, int32_t code, const char *msg) {
  call->set_error(call->call_ctx, code, 0, (const uint8_t *)msg, strlen(msg));
  return code;
}

PART int32_t m_write(const virtsnap_call_v1 *call, const char *text, size_t len) {
  if (call->write_result(call->call_ctx, (const uint8_t *)text, len) != 0)
    return m_fail(call, VIRTSNAP_E_INTERNAL, "the host refused the result");
  return VIRTSNAP_OK;
}
#define M_WRITE(call, literal) m_write((call), (literal), sizeof(literal) - 1)

PART int32_t m_capabilities(void *instance, const virtsnap_call_v1 *call,
                            const uint8_t *request, size_t len) {
  (void)instance, (void)request, (void)len;
  return M_WRITE(call, "{\"copy\":true}");
}

/* The raw value of the first string field "KEY":"..." from FROM on. */
PART int m_field(const char *from, const char *end, const char *key, const char **value, int *n) {
  size_t k = strlen(key);
  for (const char *p = from; p + k + 4 <= end; p++) {
    if (p[0] != '"' || memcmp(p + 1, key, k) != 0 || memcmp(p + k + 1, "\":\"", 3) != 0)
      continue;
    const char *q = *value = p + k + 4;
    while (q < end && *q != '"')
      q += *q == '\\' ? 2 : 1;
    *n = (int)(q - *value);
    return q < end;
  }
  return 0;
}

PART int32_t m_create(void *instance, const virtsnap_call_v1 *call,
                      const uint8_t *request, size_t len) {
  const char *req = (const char *)request, *end = req + len, *plan = NULL, *name, *mode, *file;
  int nn, mn, fn, n;
  char out[8192];
  (void)instance;
  for (const char *p = req; p + 7 <= end && plan == NULL; p++)
    if (memcmp(p, "\"plan\":", 7) == 0)
      plan = p;
  if (plan == NULL || !m_field(plan, end, "name", &name, &nn) || !m_field(plan, end, "mode", &mode, &mn))
    return m_fail(call, VIRTSNAP_E_INVALID_ARGUMENT, "minimal: the request has no plan name and mode");
  if (m_field(plan, end, "file", &file, &fn))
    n = snprintf(out, sizeof out, "{\"name\":\"%.*s\",\"mode\":\"%.*s\",\"file\":\"%.*s\"}",
                 nn, name, mn, mode, fn, file);
  else
    n = snprintf(out, sizeof out, "{\"name\":\"%.*s\",\"mode\":\"%.*s\"}", nn, name, mn, mode);
  if (n < 0 || (size_t)n >= sizeof out)
    return m_fail(call, VIRTSNAP_E_INVALID_ARGUMENT, "minimal: the plan is too long");
  return m_write(call, out, (size_t)n);
}

PART int32_t m_delete(void *instance, const virtsnap_call_v1 *call, const uint8_t *request, size_t len) {
  (void)instance, (void)call, (void)request, (void)len;
  return VIRTSNAP_OK;
}

#ifndef MINIMAL_PARTS_ONLY
static virtsnap_plugin_v1 plugin = {
    .thread_model = VIRTSNAP_THREAD_MODEL_SERIALIZE_ALL,
    .name = "minimal", .version = "1.0", .description = "virtsnap test plugin",
    .open = m_open, .close = m_close, .capabilities = m_capabilities,
    .create = m_create, .delete_ = m_delete,
};
VIRTSNAP_DEFINE_PLUGIN(plugin)
#endif
