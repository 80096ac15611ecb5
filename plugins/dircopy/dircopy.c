/*
 * dircopy: an example virtsnap storage-driver plugin (ABI 1.1, see
 * plugin-abi/include/virtsnap_plugin.h) that keeps copy snapshots of
 * regular files: each snapshot is an independent full copy of the volume,
 * by default the file VOLUME.NAME beside it.
 *
 *   create  copies the volume into FILE.tmp-XXXXXX beside FILE (holes kept
 *           for all-zero blocks), fsyncs it, links it to FILE (never over
 *           an existing file), removes the temporary name and fsyncs the
 *           directory; with "checksum" it records the content's sha256.
 *   revert  copies the snapshot into a temporary file beside the volume
 *           (hashing it when verifying: the bytes checked are the bytes
 *           installed), gives it the volume's owner and permissions, and
 *           renames it over the volume; the snapshot stays.
 *   delete  removes the snapshot's file (a missing one is fine); copies
 *           are independent, so children keep their contents.
 *   list    the regular files VOLUME.NAME beside the volume.
 *   undo    removes the file create made (and any temporary it left).
 *
 * It has no incremental export (export_diff and import_diff are NULL, so
 * virtsnap says they are unsupported), and it takes no network volume
 * (every request with "requires":["network-volume"] is refused with
 * VIRTSNAP_E_UNSUPPORTED, which virtsnap takes as declining the volume).
 * It loads in every ABI 1.x host: a 1.0 host reads its table up to undo.
 *
 * Option "root" (a directory): take only volumes under it.
 *
 * The instance is read-only after open and every call keeps its state on
 * its own stack, so the plugin takes any number of calls at once.
 *
 * Build: see README.md beside this file.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

#include "virtsnap_plugin.h"

#define PLUGIN_NAME "dircopy"
#define COPY_BUFFER (1024 * 1024) /* bytes read at a time */
#define HOLE_BLOCK (64 * 1024)    /* all-zero blocks of this size are skipped */
#define TEMP_SUFFIX ".tmp-XXXXXX" /* mkstemp template beside the target */
#define TEMP_SUFFIX_LEN (sizeof TEMP_SUFFIX - 1)

/*
 * Whether the host's call struct has FIELD. Every callback used below is in
 * the 1.0 layout, which every ABI-1 host provides; a callback added in a
 * later minor version (say a hypothetical call->cancelled) must be read
 * only when the host's struct covers it:
 *
 *   if (CALL_HAS(call, cancelled) && call->cancelled != NULL) ...
 */
#define CALL_HAS(call, field)                                                  \
  ((call)->header.struct_size >=                                               \
   offsetof(virtsnap_call_v1, field) + sizeof((call)->field))

/* ------------------------------------------------------------------ */
/* SHA-256 (FIPS 180-4)                                                */
/* ------------------------------------------------------------------ */

typedef struct sha256 {
  uint32_t state[8];
  uint64_t length; /* bytes hashed so far */
  uint8_t block[64];
  size_t used; /* bytes in block */
} sha256;

static const uint32_t SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror32(uint32_t x, unsigned n) {
  return (x >> n) | (x << (32 - n));
}

static void sha256_init(sha256 *h) {
  static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                   0xa54ff53a, 0x510e527f, 0x9b05688c,
                                   0x1f83d9ab, 0x5be0cd19};
  memcpy(h->state, init, sizeof init);
  h->length = 0;
  h->used = 0;
}

static void sha256_block(sha256 *h, const uint8_t *p) {
  uint32_t w[64];
  for (int t = 0; t < 16; t++)
    w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
           (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
  for (int t = 16; t < 64; t++) {
    uint32_t s0 = ror32(w[t - 15], 7) ^ ror32(w[t - 15], 18) ^ (w[t - 15] >> 3);
    uint32_t s1 = ror32(w[t - 2], 17) ^ ror32(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = h->state[0], b = h->state[1], c = h->state[2], d = h->state[3];
  uint32_t e = h->state[4], f = h->state[5], g = h->state[6], k = h->state[7];
  for (int t = 0; t < 64; t++) {
    uint32_t s1 = ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25);
    uint32_t ch = (e & f) ^ (~e & g);
    uint32_t t1 = k + s1 + ch + SHA256_K[t] + w[t];
    uint32_t s0 = ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22);
    uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    uint32_t t2 = s0 + maj;
    k = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h->state[0] += a;
  h->state[1] += b;
  h->state[2] += c;
  h->state[3] += d;
  h->state[4] += e;
  h->state[5] += f;
  h->state[6] += g;
  h->state[7] += k;
}

static void sha256_update(sha256 *h, const uint8_t *data, size_t len) {
  h->length += len;
  if (h->used > 0) {
    size_t take = 64 - h->used < len ? 64 - h->used : len;
    memcpy(h->block + h->used, data, take);
    h->used += take;
    data += take;
    len -= take;
    if (h->used < 64)
      return;
    sha256_block(h, h->block);
    h->used = 0;
  }
  for (; len >= 64; data += 64, len -= 64)
    sha256_block(h, data);
  memcpy(h->block, data, len);
  h->used = len;
}

/* Writes the digest as 64 lowercase hex digits and a NUL. */
static void sha256_hex(sha256 *h, char out[65]) {
  uint64_t bits = h->length * 8;
  h->block[h->used++] = 0x80;
  if (h->used > 56) {
    memset(h->block + h->used, 0, 64 - h->used);
    sha256_block(h, h->block);
    h->used = 0;
  }
  memset(h->block + h->used, 0, 56 - h->used);
  for (int i = 0; i < 8; i++)
    h->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
  sha256_block(h, h->block);
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 4; j++) {
      uint8_t byte = (uint8_t)(h->state[i] >> (24 - 8 * j));
      out[8 * i + 2 * j] = digits[byte >> 4];
      out[8 * i + 2 * j + 1] = digits[byte & 15];
    }
  out[64] = '\0';
}

/* ------------------------------------------------------------------ */
/* Errors, logs and results                                            */
/* ------------------------------------------------------------------ */

/*
 * Error messages (see ERROR MESSAGES in virtsnap_plugin.h): virtsnap puts
 * them into its own sentence, so
 *   E_EXISTS, E_NOT_FOUND  name the thing only ("snapshot file /v/d.img.a");
 *                          virtsnap adds "already exists; ..." / "does not
 *                          exist";
 *   E_UNSUPPORTED          say why and what to do instead; virtsnap names
 *                          the plugin, the operation and the volume;
 *   the others             say what failed and what to do; virtsnap names
 *                          the plugin and the operation.
 * None starts with the plugin's name, and none with an os_errno repeats
 * strerror(os_errno): virtsnap adds it.
 */

/* Records the error CODE (errno OS_ERRNO, or 0) with a formatted message
 * and returns CODE. */
__attribute__((format(printf, 4, 5))) static int32_t
fail(const virtsnap_call_v1 *call, int32_t code, int os_errno,
     const char *fmt, ...) {
  char small[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  char *msg = small;
  if (n < 0) {
    n = snprintf(small, sizeof small, "an error (code %d) whose message "
                 "could not be formatted; report this to the plugin's author",
                 (int)code);
  } else if ((size_t)n >= sizeof small) {
    char *big = malloc((size_t)n + 1);
    if (big != NULL) {
      va_start(ap, fmt);
      vsnprintf(big, (size_t)n + 1, fmt, ap);
      va_end(ap);
      msg = big;
    } else {
      n = (int)sizeof small - 1; /* the truncated message */
    }
  }
  call->set_error(call->call_ctx, code, os_errno, (const uint8_t *)msg,
                  (size_t)n);
  if (msg != small)
    free(msg);
  return code;
}

static int32_t code_for_errno(int e) {
  switch (e) {
  case ENOENT:
  case ENOTDIR:
    return VIRTSNAP_E_NOT_FOUND;
  case EEXIST:
    return VIRTSNAP_E_EXISTS;
  case EACCES:
  case EPERM:
  case EROFS:
    return VIRTSNAP_E_PERMISSION;
  case ENOSPC:
  case EDQUOT:
    return VIRTSNAP_E_NO_SPACE;
  case EBUSY:
  case ETXTBSY:
    return VIRTSNAP_E_BUSY;
  default:
    return VIRTSNAP_E_IO;
  }
}

/* The error E of a system call DOING (a gerund: "reading") the THING
 * (a noun: "volume") at PATH: "DOING the THING PATH failed; FIX", virtsnap
 * adding strerror(E). When E says the thing is missing or exists, the
 * message is "THING PATH", as E_NOT_FOUND and E_EXISTS want. A full device
 * gets its own advice. */
static int32_t fail_os(const virtsnap_call_v1 *call, int e, const char *doing,
                       const char *thing, const char *path, const char *fix) {
  int32_t code = code_for_errno(e);
  if (code == VIRTSNAP_E_NOT_FOUND || code == VIRTSNAP_E_EXISTS)
    return fail(call, code, e, "%s %s", thing, path);
  if (e == ENOSPC || e == EDQUOT)
    fix = "free some space on that filesystem and retry (what was started "
          "was removed)";
  return fail(call, code, e, "%s the %s %s failed; %s", doing, thing, path,
              fix);
}

/* E_INTERNAL for memory that ran out. */
static int32_t out_of_memory(const virtsnap_call_v1 *call) {
  return fail(call, VIRTSNAP_E_INTERNAL, ENOMEM,
              "memory ran out; free some memory and retry");
}

/* What virtsnap should do about a request the plugin cannot read. */
#define ABI_FIX                                                                \
  "virtsnap and the plugin disagree on the ABI: update one of them"

static void log_msg(const virtsnap_call_v1 *call, int32_t level,
                    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void log_msg(const virtsnap_call_v1 *call, int32_t level,
                    const char *fmt, ...) {
  if (call->log == NULL)
    return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n >= sizeof msg)
    n = (int)sizeof msg - 1;
  call->log(call->call_ctx, level, (const uint8_t *)msg, (size_t)n);
}

/* Hands TEXT (LEN bytes) to the host as the result document. */
static int32_t write_text(const virtsnap_call_v1 *call, const char *op,
                          const char *text, size_t len) {
  int32_t refused = call->write_result(call->call_ctx, (const uint8_t *)text, len);
  if (refused != 0)
    return fail(call, VIRTSNAP_E_INTERNAL, 0,
                "virtsnap refused the %zu-byte result of %s (code %d); "
                "nothing was kept: report this to the plugin's author",
                len, op, (int)refused);
  return VIRTSNAP_OK;
}

/* Serialises DOC (consumed) to a malloc'd string, or NULL after set_error. */
static char *dump(const virtsnap_call_v1 *call, const char *op, json_t *doc) {
  char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (text == NULL)
    fail(call, VIRTSNAP_E_INTERNAL, ENOMEM,
         "building the result of %s failed; free some memory and retry", op);
  return text;
}

/* Writes DOC (consumed) as the result. */
static int32_t reply(const virtsnap_call_v1 *call, const char *op, json_t *doc) {
  char *text = dump(call, op, doc);
  if (text == NULL)
    return VIRTSNAP_E_INTERNAL;
  int32_t rc = write_text(call, op, text, strlen(text));
  free(text);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

/* Parses the request of OP into *OUT and refuses features it requires. */
static int32_t parse_request(const virtsnap_call_v1 *call, const char *op,
                             const uint8_t *request, size_t len, json_t **out) {
  json_error_t err;
  json_t *root = json_loadb((const char *)request, len, JSON_REJECT_DUPLICATES, &err);
  if (root == NULL)
    return fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
                "the %s request is not valid JSON (%s, at byte %d); " ABI_FIX,
                op, err.text, err.position);
  if (!json_is_object(root)) {
    json_decref(root);
    return fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
                "the %s request is not a JSON object; " ABI_FIX, op);
  }
  json_t *requires = json_object_get(root, "requires");
  if (requires != NULL && !json_is_array(requires)) {
    json_decref(root);
    return fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
                "the %s request's \"requires\" is not an array; " ABI_FIX, op);
  }
  if (json_array_size(requires) > 0) {
    /* The plugin carries out no feature, so it refuses every request that
     * requires one. ABI 1.1's "network-volume" (the volume is a network
     * volume's name, PROTOCOL:NAME, not a path) it knows, and refuses
     * because it takes only local files: virtsnap takes the refusal of
     * capabilities as declining the volume. Any other feature is newer
     * than the plugin. */
    const char *feature = json_string_value(json_array_get(requires, 0));
    int32_t rc;
    if (feature != NULL && strcmp(feature, "network-volume") == 0) {
      json_t *volume = json_object_get(root, "volume");
      const char *name = json_string_value(json_object_get(volume, "path"));
      rc = fail(call, VIRTSNAP_E_UNSUPPORTED, 0,
                "it takes only local files, and %s is a network volume; use "
                "a driver for its protocol",
                name != NULL ? name : "the volume");
    } else {
      rc = fail(call, VIRTSNAP_E_UNSUPPORTED, 0,
                "the request requires the feature \"%s\", which this "
                "version of the plugin does not know; update the plugin",
                feature != NULL ? feature : "(not a string)");
    }
    json_decref(root);
    return rc;
  }
  *out = root;
  return VIRTSNAP_OK;
}

/* The string KEY of OBJ (described as WHERE in messages) into *OUT, NULL
 * when absent and not REQUIRED. */
static int32_t get_string(const virtsnap_call_v1 *call, json_t *obj,
                          const char *where, const char *key, bool required,
                          const char **out) {
  json_t *value = json_object_get(obj, key);
  *out = NULL;
  if (value == NULL || (json_is_null(value) && !required)) {
    if (!required)
      return VIRTSNAP_OK;
    return fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
                "%s has no \"%s\"; " ABI_FIX, where, key);
  }
  if (!json_is_string(value) ||
      strlen(json_string_value(value)) != json_string_length(value))
    return fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
                "%s's \"%s\" is not a string (or holds a NUL); " ABI_FIX,
                where, key);
  *out = json_string_value(value);
  return VIRTSNAP_OK;
}

/* The boolean KEY of OBJ, false when absent. */
static int32_t get_bool(const virtsnap_call_v1 *call, json_t *obj,
                        const char *where, const char *key, bool *out) {
  json_t *value = json_object_get(obj, key);
  *out = false;
  if (value == NULL)
    return VIRTSNAP_OK;
  if (!json_is_boolean(value))
    return fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
                "%s's \"%s\" is not a boolean; " ABI_FIX, where, key);
  *out = json_is_true(value);
  return VIRTSNAP_OK;
}

/* The object KEY of OBJ. */
static int32_t get_object(const virtsnap_call_v1 *call, json_t *obj,
                          const char *where, const char *key, json_t **out) {
  *out = json_object_get(obj, key);
  if (!json_is_object(*out))
    return fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
                "%s has no \"%s\" object; " ABI_FIX, where, key);
  return VIRTSNAP_OK;
}

typedef struct volume {
  const char *path;
  const char *format;
} volume;

static int32_t get_volume(const virtsnap_call_v1 *call, json_t *root,
                          const char *where, volume *v) {
  json_t *obj;
  int32_t rc = get_object(call, root, where, "volume", &obj);
  if (rc == VIRTSNAP_OK)
    rc = get_string(call, obj, "the volume", "path", true, &v->path);
  if (rc == VIRTSNAP_OK)
    rc = get_string(call, obj, "the volume", "format", true, &v->format);
  if (rc == VIRTSNAP_OK && v->path[0] != '/')
    rc = fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
              "the volume path \"%s\" is not absolute; " ABI_FIX, v->path);
  return rc;
}

/* A snapshot: a request's "snapshot" (SnapshotRef or CreatedSnapshot). */
typedef struct snapshot {
  const char *name;
  const char *mode;
  const char *file;          /* NULL when none */
  const char *sum_algorithm; /* NULL when no checksum */
  const char *sum_value;
} snapshot;

static int32_t get_mode(const virtsnap_call_v1 *call, json_t *obj,
                        const char *where, const char **out) {
  int32_t rc = get_string(call, obj, where, "mode", true, out);
  if (rc == VIRTSNAP_OK && strcmp(*out, "internal") != 0 &&
      strcmp(*out, "external") != 0 && strcmp(*out, "copy") != 0)
    rc = fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
              "%s's mode \"%s\" is none of internal, external, copy; "
              ABI_FIX, where, *out);
  return rc;
}

static int32_t get_snapshot(const virtsnap_call_v1 *call, json_t *root,
                            const char *where, snapshot *s) {
  json_t *obj, *sum;
  memset(s, 0, sizeof *s);
  int32_t rc = get_object(call, root, where, "snapshot", &obj);
  if (rc == VIRTSNAP_OK)
    rc = get_string(call, obj, "the snapshot", "name", true, &s->name);
  if (rc == VIRTSNAP_OK)
    rc = get_mode(call, obj, "the snapshot", &s->mode);
  if (rc == VIRTSNAP_OK)
    rc = get_string(call, obj, "the snapshot", "file", false, &s->file);
  if (rc == VIRTSNAP_OK && (sum = json_object_get(obj, "checksum")) != NULL &&
      !json_is_null(sum)) {
    if (!json_is_object(sum))
      return fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
                  "the snapshot's \"checksum\" is not an object; " ABI_FIX);
    rc = get_string(call, sum, "the snapshot's checksum", "algorithm", true,
                    &s->sum_algorithm);
    if (rc == VIRTSNAP_OK)
      rc = get_string(call, sum, "the snapshot's checksum", "value", true,
                      &s->sum_value);
  }
  return rc;
}

/* E_UNSUPPORTED for a snapshot MODE other than copy: one to take when
 * CREATING, else one that exists (made by another driver). */
static int32_t not_a_copy(const virtsnap_call_v1 *call, bool creating,
                          const char *mode) {
  if (creating)
    return fail(call, VIRTSNAP_E_UNSUPPORTED, 0,
                "it takes only full copies (mode copy), not %s snapshots; use "
                "--mode copy, or the qemu driver for %s snapshots of qcow2 "
                "images",
                mode, mode);
  return fail(call, VIRTSNAP_E_UNSUPPORTED, 0,
              "it keeps only full copies (mode copy), and this is an %s "
              "snapshot, made by another driver; use the driver that made it "
              "(qemu for qcow2 images)",
              mode);
}

/* ------------------------------------------------------------------ */
/* Paths and files                                                     */
/* ------------------------------------------------------------------ */

static const char *base_of(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash != NULL ? slash + 1 : path;
}

/* The directory holding PATH, malloc'd ("." or "/" when it has none). */
static char *dir_of(const char *path) {
  const char *base = base_of(path);
  if (base == path)
    return strdup(".");
  size_t len = (size_t)(base - path) - 1;
  return len == 0 ? strdup("/") : strndup(path, len);
}

/* DIR/NAME, malloc'd. */
static char *join(const char *dir, const char *name) {
  size_t dl = strlen(dir);
  bool slash = dl > 0 && dir[dl - 1] == '/';
  char *out = malloc(dl + !slash + strlen(name) + 1);
  if (out != NULL)
    sprintf(out, "%s%s%s", dir, slash ? "" : "/", name);
  return out;
}

/* Whether NAME is one of this plugin's temporary names (*.tmp-XXXXXX). */
static bool is_temp_name(const char *name) {
  size_t len = strlen(name);
  if (len < TEMP_SUFFIX_LEN ||
      strncmp(name + len - TEMP_SUFFIX_LEN, ".tmp-", 5) != 0)
    return false;
  for (const char *p = name + len - 6; *p != '\0'; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9')))
      return false;
  return true;
}

/* fsyncs the directory holding PATH: 0 or an errno. */
static int sync_dir_of(const char *path) {
  char *dir = dir_of(path);
  if (dir == NULL)
    return ENOMEM;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0)
    return errno;
  /* A filesystem that cannot sync directories says EINVAL: nothing to do. */
  int e = fsync(fd) == 0 || errno == EINVAL ? 0 : errno;
  close(fd);
  return e;
}

/* The error E (ENOENT or ENOTDIR) of making a file beside TARGET, the THING
 * being made ("snapshot file"): E_NOT_FOUND "directory DIR (for THING
 * TARGET)" when DIR is missing; else (a filesystem such as /proc that
 * takes no new files says ENOENT too) E_IO. */
static int32_t no_dir(const virtsnap_call_v1 *call, int e, const char *target,
                      const char *thing) {
  char *dir = dir_of(target);
  const char *d = dir != NULL ? dir : ".";
  struct stat st;
  int32_t rc;
  if (stat(d, &st) == 0 && S_ISDIR(st.st_mode))
    rc = fail(call, VIRTSNAP_E_IO, e,
              "creating a file in the directory %s (for %s %s) failed; choose "
              "a directory on a filesystem that takes new files",
              d, thing, target);
  else
    rc = fail(call, VIRTSNAP_E_NOT_FOUND, e, "directory %s (for %s %s)", d,
              thing, target);
  free(dir);
  return rc;
}

/* Creates the temporary file beside TARGET, the THING being made ("snapshot
 * file"): *FD and its malloc'd *PATH. */
static int32_t make_temp(const virtsnap_call_v1 *call, const char *target,
                         const char *thing, int *fd, char **path) {
  const char *base = base_of(target);
  size_t dir_len = (size_t)(base - target), base_len = strlen(base);
  if (base_len > NAME_MAX - TEMP_SUFFIX_LEN)
    base_len = NAME_MAX - TEMP_SUFFIX_LEN; /* the template must fit NAME_MAX */
  char *tmpl = malloc(dir_len + base_len + TEMP_SUFFIX_LEN + 1);
  if (tmpl == NULL)
    return out_of_memory(call);
  memcpy(tmpl, target, dir_len + base_len);
  memcpy(tmpl + dir_len + base_len, TEMP_SUFFIX, TEMP_SUFFIX_LEN + 1);
  *fd = mkostemp(tmpl, O_CLOEXEC);
  if (*fd < 0) {
    int e = errno;
    int32_t rc;
    if (e == ENOENT || e == ENOTDIR)
      rc = no_dir(call, e, target, thing);
    else if (e == EEXIST) /* mkostemp found every name it tried taken */
      rc = fail(call, VIRTSNAP_E_IO, e,
                "creating a temporary file beside %s %s failed; remove the "
                "leftover *.tmp-* files beside it",
                thing, target);
    else
      rc = fail_os(call, e, "creating a temporary file beside", thing, target,
                   "check that its directory is writable");
    free(tmpl);
    return rc;
  }
  *path = tmpl;
  return VIRTSNAP_OK;
}

static bool all_zero(const uint8_t *p, size_t len) {
  return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

static int write_all(int fd, const uint8_t *p, size_t len, off_t off) {
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
    off += n;
  }
  return 0;
}

/* Reports DONE of TOTAL bytes; E_CANCELLED (after set_error) when the host
 * asks to stop. */
static int32_t report(const virtsnap_call_v1 *call, uint64_t done,
                      uint64_t total, const char *doing) {
  if (CALL_HAS(call, progress) && call->progress != NULL &&
      call->progress(call->call_ctx, done, total > done ? total : done) != 0)
    return fail(call, VIRTSNAP_E_CANCELLED, 0,
                "cancelled by virtsnap while %s; nothing was changed", doing);
  return VIRTSNAP_OK;
}

/* A copy from IN (at offset 0) into the new, empty file OUT, all-zero
 * blocks left as holes, hashed into HASH when not NULL. */
typedef struct copy_job {
  int in;
  const char *in_thing; /* "volume", "snapshot file" */
  const char *in_path;
  int out;
  const char *out_path;
  uint64_t total; /* expected bytes, for progress */
  sha256 *hash;
  const char *doing; /* "copying A to B", for the cancel message */
} copy_job;

static int32_t copy_data(const virtsnap_call_v1 *call, const copy_job *job) {
  uint8_t *buf = malloc(COPY_BUFFER);
  if (buf == NULL)
    return out_of_memory(call);
  int32_t rc = report(call, 0, job->total, job->doing);
  uint64_t done = 0;
  while (rc == VIRTSNAP_OK) {
    ssize_t n = read(job->in, buf, COPY_BUFFER);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = fail_os(call, errno, "reading", job->in_thing, job->in_path,
                   "check that it is readable and its storage healthy; "
                   "nothing was changed");
      break;
    }
    if (n == 0)
      break;
    if (job->hash != NULL)
      sha256_update(job->hash, buf, (size_t)n);
    for (size_t at = 0; at < (size_t)n; at += HOLE_BLOCK) {
      size_t len = (size_t)n - at < HOLE_BLOCK ? (size_t)n - at : HOLE_BLOCK;
      if (!all_zero(buf + at, len) &&
          write_all(job->out, buf + at, len, (off_t)(done + at)) != 0) {
        rc = fail_os(call, errno, "writing", "temporary file", job->out_path,
                     "check the filesystem holding it; nothing was changed");
        break;
      }
    }
    done += (uint64_t)n;
    if (rc == VIRTSNAP_OK)
      rc = report(call, done, job->total, job->doing);
  }
  free(buf);
  /* Trailing holes: the length comes from ftruncate. */
  if (rc == VIRTSNAP_OK && ftruncate(job->out, (off_t)done) != 0)
    rc = fail_os(call, errno, "setting the length of", "temporary file",
                 job->out_path,
                 "check the filesystem holding it; nothing was changed");
  if (rc == VIRTSNAP_OK && fsync(job->out) != 0)
    rc = fail_os(call, errno, "syncing", "temporary file", job->out_path,
                 "check the filesystem holding it; nothing was changed");
  return rc;
}

/* Renames FROM to TO unless TO exists: a hard link then the removal of
 * FROM, or renameat2(RENAME_NOREPLACE) where the filesystem has no hard
 * links. 0 or an errno (EEXIST when TO exists). */
static int place_new(const char *from, const char *to) {
  if (link(from, to) == 0) {
    unlink(from); /* a leftover name only; the caller removes it again */
    return 0;
  }
  int e = errno;
#ifdef RENAME_NOREPLACE
  if (e == EPERM || e == EOPNOTSUPP || e == EMLINK || e == ENOSYS) {
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
      return 0;
    e = errno;
  }
#endif
  return e;
}

/* ------------------------------------------------------------------ */
/* The instance                                                        */
/* ------------------------------------------------------------------ */

typedef struct dircopy {
  char *root; /* resolved "root" option, or NULL: any file */
} dircopy;

/* 1 when PATH resolves under the instance's root (or there is no root),
 * 0 when not, or a negative code after set_error. */
static int32_t within_root(const dircopy *dc, const virtsnap_call_v1 *call,
                           const char *path) {
  if (dc->root == NULL)
    return 1;
  char *real = realpath(path, NULL);
  if (real == NULL) {
    return fail_os(call, errno, "resolving the path of", "volume", path,
                   "check its path and the permissions of its directories");
  }
  size_t len = strlen(dc->root);
  int32_t inside = strcmp(dc->root, "/") == 0 ||
                   (strncmp(real, dc->root, len) == 0 && real[len] == '/');
  free(real);
  return inside;
}

/* E_UNSUPPORTED unless PATH is under the root. */
static int32_t require_root(const dircopy *dc, const virtsnap_call_v1 *call,
                            const char *path) {
  int32_t inside = within_root(dc, call, path);
  if (inside == 0)
    return fail(call, VIRTSNAP_E_UNSUPPORTED, 0,
                "the volume is outside %s, the only directory this plugin is "
                "set to take volumes from (option \"root\" in its .json "
                "options file); use another driver, or change the option",
                dc->root);
  return inside < 0 ? inside : VIRTSNAP_OK;
}

static void *dc_open(const virtsnap_call_v1 *call, const uint8_t *config,
                     size_t len) {
  json_error_t err;
  json_t *root = json_loadb((const char *)config, len, JSON_REJECT_DUPLICATES, &err);
  dircopy *dc = NULL;
  if (!json_is_object(root)) {
    fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
         "the configuration is not a JSON object (%s); " ABI_FIX,
         root == NULL ? err.text : "another JSON value");
    goto done;
  }
  json_t *options = json_object_get(root, "options");
  if (options != NULL && !json_is_null(options) && !json_is_object(options)) {
    fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
         "the options are not a JSON object; fix the plugin's .json options "
         "file");
    goto done;
  }
  const char *key, *root_dir = NULL;
  json_t *value;
  json_object_foreach(options, key, value) {
    if (strcmp(key, "root") != 0) {
      /* A misspelt "root" must not silently widen what the plugin takes. */
      fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
           "unknown option \"%s\" (it knows only \"root\"); fix the plugin's "
           ".json options file", key);
      goto done;
    }
    root_dir = json_string_value(value);
    if (root_dir == NULL || root_dir[0] != '/') {
      fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
           "the option \"root\" must be an absolute directory path; fix the "
           "plugin's .json options file");
      goto done;
    }
  }
  dc = calloc(1, sizeof *dc);
  if (dc == NULL) {
    out_of_memory(call);
    goto done;
  }
  if (root_dir != NULL) {
    struct stat st;
    dc->root = realpath(root_dir, NULL);
    if (dc->root == NULL || stat(dc->root, &st) != 0 || !S_ISDIR(st.st_mode)) {
      int e = dc->root == NULL ? errno : ENOTDIR;
      fail(call, VIRTSNAP_E_INVALID_ARGUMENT, e,
           "the option \"root\" names %s, which is not a directory this "
           "plugin can reach; create it or fix the plugin's .json options "
           "file",
           root_dir);
      free(dc->root);
      free(dc);
      dc = NULL;
      goto done;
    }
  }
done:
  json_decref(root);
  return dc;
}

static void dc_close(void *instance) {
  dircopy *dc = instance;
  if (dc != NULL)
    free(dc->root);
  free(dc);
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */
/* ------------------------------------------------------------------ */

static int32_t dc_capabilities(void *instance, const virtsnap_call_v1 *call,
                               const uint8_t *request, size_t len) {
  static const char all[] =
      "{\"copy\":true,\"revert\":true,\"revert_keeps_newer\":true,"
      "\"delete_rebase\":true,\"list\":true,\"checksums\":true}";
  json_t *root;
  volume v;
  const char *state;
  struct stat st;
  int32_t rc = parse_request(call, "capabilities", request, len, &root);
  if (rc != VIRTSNAP_OK)
    return rc;
  rc = get_volume(call, root, "the capabilities request", &v);
  if (rc == VIRTSNAP_OK)
    rc = get_string(call, root, "the capabilities request", "state", true,
                    &state);
  if (rc == VIRTSNAP_OK && strcmp(state, "offline") != 0 &&
      strcmp(state, "in-use") != 0)
    rc = fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
              "unknown volume state \"%s\"; " ABI_FIX, state);
  if (rc != VIRTSNAP_OK)
    goto done;
  if (stat(v.path, &st) != 0) {
    rc = fail_os(call, errno, "examining", "volume", v.path,
                 "check its path and the permissions of its directories");
    goto done;
  }
  const char *why = NULL;
  if (strcmp(state, "in-use") == 0)
    why = "a running guest writes to it, and its copy would be torn";
  else if (!S_ISREG(st.st_mode))
    why = "it is not a regular file";
  else {
    int32_t inside = within_root(instance, call, v.path);
    if (inside < 0) {
      rc = inside;
      goto done;
    }
    if (inside == 0)
      why = "it is outside the directory of the option \"root\"";
  }
  if (why != NULL) {
    log_msg(call, VIRTSNAP_LOG_DEBUG, PLUGIN_NAME " does not take %s: %s",
            v.path, why);
    rc = write_text(call, "capabilities", "{}", 2);
  } else {
    rc = write_text(call, "capabilities", all, sizeof all - 1);
  }
done:
  json_decref(root);
  return rc;
}

static int32_t dc_create(void *instance, const virtsnap_call_v1 *call,
                         const uint8_t *request, size_t len) {
  json_t *root, *plan;
  volume v;
  const char *name, *mode, *file = NULL;
  bool want_sum = false;
  int in = -1, out = -1;
  char *tmp = NULL, *text = NULL, *doing = NULL;
  struct stat st;
  int32_t rc = parse_request(call, "create", request, len, &root);
  if (rc != VIRTSNAP_OK)
    return rc;
  rc = get_volume(call, root, "the create request", &v);
  if (rc == VIRTSNAP_OK)
    rc = get_object(call, root, "the create request", "plan", &plan);
  if (rc == VIRTSNAP_OK)
    rc = get_string(call, plan, "the plan", "name", true, &name);
  if (rc == VIRTSNAP_OK)
    rc = get_mode(call, plan, "the plan", &mode);
  if (rc == VIRTSNAP_OK)
    rc = get_string(call, plan, "the plan", "file", false, &file);
  if (rc == VIRTSNAP_OK)
    rc = get_bool(call, plan, "the plan", "checksum", &want_sum);
  /* "writable" is ignored: a copy is an ordinary file, never read-only. */
  if (rc != VIRTSNAP_OK)
    goto done;
  if (strcmp(mode, "copy") != 0) {
    rc = not_a_copy(call, true, mode);
    goto done;
  }
  if (file == NULL) {
    rc = fail(call, VIRTSNAP_E_INVALID_ARGUMENT, 0,
              "the copy snapshot '%s' of %s was given no file to copy to; "
              "give one with --file, or let virtsnap derive VOLUME.NAME beside "
              "the volume",
              name, v.path);
    goto done;
  }

  in = open(v.path, O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    rc = fail_os(call, errno, "opening", "volume", v.path,
                 "check its path and that it is readable");
    goto done;
  }
  if (fstat(in, &st) != 0) {
    rc = fail_os(call, errno, "examining", "volume", v.path,
                 "check that it is readable");
    goto done;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = fail(call, VIRTSNAP_E_UNSUPPORTED, 0,
              "it copies only regular files, and the volume is not one; use a "
              "driver for its kind of storage (file or lvm for a block "
              "device)");
    goto done;
  }
  if ((rc = require_root(instance, call, v.path)) != VIRTSNAP_OK)
    goto done;
  /* Refused early, before a long copy; link() refuses it again at the end. */
  struct stat existing;
  if (lstat(file, &existing) == 0) {
    rc = fail(call, VIRTSNAP_E_EXISTS, 0, "snapshot file %s", file);
    goto done;
  } else if (errno != ENOENT && errno != ENOTDIR) {
    /* ENOTDIR: a missing directory, which make_temp reports. */
    rc = fail_os(call, errno, "examining", "snapshot file", file,
                 "check the permissions of its directory");
    goto done;
  }

  if ((rc = make_temp(call, file, "snapshot file", &out, &tmp)) != VIRTSNAP_OK)
    goto done;
  /* The copy holds the volume's data: it gets the volume's permissions. */
  if (fchmod(out, st.st_mode & 0777) != 0) {
    rc = fail_os(call, errno, "setting the permissions of", "temporary file",
                 tmp, "check that the filesystem allows chmod");
    goto done;
  }
  sha256 hash;
  sha256_init(&hash);
  if (asprintf(&doing, "copying %s to %s", v.path, file) < 0) {
    doing = NULL;
    rc = out_of_memory(call);
    goto done;
  }
  copy_job job = {in, "volume", v.path, out, tmp, (uint64_t)st.st_size,
                  want_sum ? &hash : NULL, doing};
  if ((rc = copy_data(call, &job)) != VIRTSNAP_OK)
    goto done;
  struct stat copied;
  if (fstat(out, &copied) != 0) {
    rc = fail_os(call, errno, "examining", "temporary file", tmp,
                 "check the filesystem holding it; nothing was changed");
    goto done;
  }

  /* The result is built before the copy is placed, so that nothing but
   * the host's refusal can fail after it. */
  json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:I}", "name", name, "mode",
                          "copy", "file", file, "format", v.format, "size",
                          (json_int_t)copied.st_blocks * 512);
  if (doc != NULL && want_sum) {
    char hex[65];
    sha256_hex(&hash, hex);
    if (json_object_set_new(doc, "checksum",
                            json_pack("{s:s, s:s}", "algorithm", "sha256",
                                      "value", hex)) != 0) {
      json_decref(doc);
      doc = NULL;
    }
  }
  if ((text = dump(call, "create", doc)) == NULL) {
    rc = VIRTSNAP_E_INTERNAL;
    goto done;
  }

  int e = place_new(tmp, file);
  if (e == EEXIST) { /* it appeared while the copy ran */
    rc = fail(call, VIRTSNAP_E_EXISTS, EEXIST, "snapshot file %s", file);
    goto done;
  } else if (e == ENOENT || e == ENOTDIR) { /* its directory went away */
    rc = no_dir(call, e, file, "snapshot file");
    goto done;
  } else if (e != 0) {
    rc = fail_os(call, e, "moving the finished copy to", "snapshot file", file,
                 "check that its directory is writable; nothing was changed");
    goto done;
  }
  if ((e = sync_dir_of(file)) != 0) {
    unlink(file);
    rc = e == ENOENT || e == ENOTDIR
             ? no_dir(call, e, file, "snapshot file")
             : fail_os(call, e, "syncing the directory of", "snapshot file",
                       file, "check the filesystem; the copy was removed");
    goto done;
  }
  if ((rc = write_text(call, "create", text, strlen(text))) != VIRTSNAP_OK) {
    unlink(file);
    sync_dir_of(file);
  }
done:
  if (out >= 0)
    close(out);
  if (tmp != NULL) {
    unlink(tmp); /* ENOENT once placed */
    free(tmp);
  }
  if (in >= 0)
    close(in);
  free(doing);
  free(text);
  json_decref(root);
  return rc;
}

static int32_t dc_revert(void *instance, const virtsnap_call_v1 *call,
                         const uint8_t *request, size_t len) {
  json_t *root;
  volume v;
  snapshot s;
  bool verify = false;
  int in = -1, out = -1;
  char *target = NULL, *tmp = NULL, *doing = NULL;
  struct stat sst, vst;
  int32_t rc = parse_request(call, "revert", request, len, &root);
  if (rc != VIRTSNAP_OK)
    return rc;
  rc = get_volume(call, root, "the revert request", &v);
  if (rc == VIRTSNAP_OK)
    rc = get_snapshot(call, root, "the revert request", &s);
  if (rc == VIRTSNAP_OK)
    rc = get_bool(call, root, "the revert request", "verify", &verify);
  if (rc != VIRTSNAP_OK)
    goto done;
  if (strcmp(s.mode, "copy") != 0) {
    rc = not_a_copy(call, false, s.mode);
    goto done;
  }
  if (s.file == NULL) {
    rc = fail(call, VIRTSNAP_E_INCONSISTENT, 0,
              "the copy snapshot '%s' of %s records no file; its metadata is "
              "damaged: redefine it with the path of its copy",
              s.name, v.path);
    goto done;
  }
  bool check = verify && s.sum_algorithm != NULL;
  if (check && strcasecmp(s.sum_algorithm, "sha256") != 0) {
    rc = fail(call, VIRTSNAP_E_UNSUPPORTED, 0,
              "the snapshot's checksum is %s, and it can verify only sha256; "
              "revert without --verify",
              s.sum_algorithm);
    goto done;
  }

  in = open(s.file, O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    /* The storage differs from virtsnap's record: E_INCONSISTENT, whose
     * message virtsnap shows as it is, so it says all (and "missing"
     * already says what ENOENT would). */
    if (errno == ENOENT || errno == ENOTDIR)
      rc = fail(call, VIRTSNAP_E_INCONSISTENT, 0,
                "the file %s of snapshot '%s' is missing; put it "
                "back, or drop the snapshot's record with `virtsnap "
                "vol-snapshot-delete --metadata`",
                s.file, s.name);
    else
      rc = fail_os(call, errno, "opening", "snapshot file", s.file,
                   "check that it is readable");
    goto done;
  }
  if (fstat(in, &sst) != 0) {
    rc = fail_os(call, errno, "examining", "snapshot file", s.file,
                 "check that it is readable");
    goto done;
  }
  /* Through a symbolic link, the link stays and its target is reverted. */
  target = realpath(v.path, NULL);
  if (target == NULL || stat(target, &vst) != 0) {
    rc = fail_os(call, errno, "examining", "volume", v.path,
                 "check its path and the permissions of its directories");
    goto done;
  }
  if (!S_ISREG(vst.st_mode)) {
    rc = fail(call, VIRTSNAP_E_UNSUPPORTED, 0,
              "the volume is not a regular file, and only a file can be "
              "replaced atomically; copy %s onto it by hand (dd conv=sparse)",
              s.file);
    goto done;
  }
  if ((rc = require_root(instance, call, v.path)) != VIRTSNAP_OK)
    goto done;
  if (!S_ISREG(sst.st_mode) ||
      (sst.st_dev == vst.st_dev && sst.st_ino == vst.st_ino)) {
    rc = fail(call, VIRTSNAP_E_INCONSISTENT, 0,
              "the file %s of snapshot '%s' is %s; its metadata is "
              "damaged: redefine the snapshot with the path of its copy",
              s.file, s.name,
              S_ISREG(sst.st_mode) ? "the volume itself" : "not a regular file");
    goto done;
  }

  if ((rc = make_temp(call, target, "volume", &out, &tmp)) != VIRTSNAP_OK)
    goto done;
  /* Verification hashes what is copied, so the bytes checked are exactly
   * the bytes installed; a mismatch removes the copy, changing nothing. */
  sha256 hash;
  sha256_init(&hash);
  if (asprintf(&doing, "copying %s back to %s", s.file, target) < 0) {
    doing = NULL;
    rc = out_of_memory(call);
    goto done;
  }
  copy_job job = {in, "snapshot file", s.file, out, tmp, (uint64_t)sst.st_size,
                  check ? &hash : NULL, doing};
  if ((rc = copy_data(call, &job)) != VIRTSNAP_OK)
    goto done;
  if (check) {
    char found[65];
    sha256_hex(&hash, found);
    if (strcasecmp(found, s.sum_value) != 0) {
      /* virtsnap takes the found digest from the message: the first
       * 64-hex-digit word other than the recorded one, so it comes first. */
      rc = fail(call, VIRTSNAP_E_CHECKSUM_MISMATCH, 0,
                "found sha256 %s, not the recorded %s, in the snapshot file "
                "%s of snapshot '%s'; the volume was not changed: the copy is "
                "damaged; revert to another snapshot, or without --verify at "
                "your own risk",
                found, s.sum_value, s.file, s.name);
      goto done;
    }
  }
  /* The volume keeps its owner and permissions (chown first: it clears
   * set-id bits). */
  struct stat tst;
  if (fstat(out, &tst) != 0) {
    rc = fail_os(call, errno, "examining", "temporary file", tmp,
                 "check the filesystem holding it; nothing was changed");
    goto done;
  }
  if ((tst.st_uid != vst.st_uid || tst.st_gid != vst.st_gid) &&
      fchown(out, vst.st_uid, vst.st_gid) != 0) {
    rc = fail_os(call, errno, "giving the volume's owner to", "temporary file",
                 tmp, "run virtsnap as root or as the volume's owner; nothing "
                 "was changed");
    goto done;
  }
  if (fchmod(out, vst.st_mode & 07777) != 0) {
    rc = fail_os(call, errno, "giving the volume's permissions to",
                 "temporary file", tmp, "check that the filesystem allows "
                 "chmod; nothing was changed");
    goto done;
  }
  if (rename(tmp, target) != 0) {
    rc = fail_os(call, errno, "replacing", "volume", target,
                 "check that its directory is writable; nothing was changed");
    goto done;
  }
  free(tmp);
  tmp = NULL;
  int e = sync_dir_of(target);
  if (e != 0)
    rc = e == ENOENT || e == ENOTDIR
             ? no_dir(call, e, target, "volume")
             : fail_os(call, e, "syncing the directory of", "volume", target,
                       "check the filesystem: the volume was reverted but may "
                       "not survive a crash");
  /* Success: no result document means {"outcome":"done"}. */
done:
  if (out >= 0)
    close(out);
  if (tmp != NULL) {
    unlink(tmp);
    free(tmp);
  }
  if (in >= 0)
    close(in);
  free(target);
  free(doing);
  json_decref(root);
  return rc;
}

/* Removes the copy FILE of snapshot NAME (a missing one is fine), never
 * the volume itself. */
static int32_t remove_copy(const virtsnap_call_v1 *call, const volume *v,
                           const char *file, const char *name) {
  struct stat fst, vst;
  if (lstat(file, &fst) != 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      return VIRTSNAP_OK; /* deleted already: recovery re-runs deletes */
    return fail_os(call, errno, "examining", "snapshot file", file,
                   "check the permissions of its directory");
  }
  if (!S_ISREG(fst.st_mode) && !S_ISLNK(fst.st_mode))
    return fail(call, VIRTSNAP_E_INCONSISTENT, 0,
                "the file %s of snapshot '%s' is not a regular file; "
                "nothing was removed: redefine the snapshot with the path of "
                "its copy",
                file, name);
  if (stat(v->path, &vst) == 0 && stat(file, &fst) == 0 &&
      fst.st_dev == vst.st_dev && fst.st_ino == vst.st_ino)
    return fail(call, VIRTSNAP_E_INCONSISTENT, 0,
                "the file %s of snapshot '%s' is the volume %s "
                "itself; nothing was removed: redefine the snapshot with the "
                "path of its copy",
                file, name, v->path);
  if (unlink(file) != 0 && errno != ENOENT)
    return fail_os(call, errno, "removing", "snapshot file", file,
                   "check the permissions of its directory");
  int e = sync_dir_of(file);
  if (e != 0 && e != ENOENT && e != ENOTDIR)
    return fail_os(call, e, "syncing the directory of", "snapshot file", file,
                   "check the filesystem; the file was removed");
  return VIRTSNAP_OK;
}

static int32_t dc_delete(void *instance, const virtsnap_call_v1 *call,
                         const uint8_t *request, size_t len) {
  (void)instance; /* a snapshot is deleted wherever its volume now is */
  json_t *root;
  volume v;
  snapshot s;
  int32_t rc = parse_request(call, "delete", request, len, &root);
  if (rc != VIRTSNAP_OK)
    return rc;
  /* parent, children and is_current do not matter: copies are independent. */
  rc = get_volume(call, root, "the delete request", &v);
  if (rc == VIRTSNAP_OK)
    rc = get_snapshot(call, root, "the delete request", &s);
  if (rc == VIRTSNAP_OK && strcmp(s.mode, "copy") != 0)
    rc = not_a_copy(call, false, s.mode);
  if (rc == VIRTSNAP_OK && s.file == NULL)
    rc = fail(call, VIRTSNAP_E_INCONSISTENT, 0,
              "the copy snapshot '%s' of %s records no file; its metadata is "
              "damaged: redefine it with the path of its copy, or delete only "
              "its record (`virtsnap vol-snapshot-delete --metadata`)",
              s.name, v.path);
  if (rc == VIRTSNAP_OK)
    rc = remove_copy(call, &v, s.file, s.name);
  json_decref(root);
  return rc;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int32_t dc_list(void *instance, const virtsnap_call_v1 *call,
                       const uint8_t *request, size_t len) {
  json_t *root, *snaps = NULL;
  volume v;
  char *dir = NULL, **names = NULL;
  size_t count = 0, cap = 0;
  DIR *d = NULL;
  struct stat vst;
  int32_t rc = parse_request(call, "list", request, len, &root);
  if (rc != VIRTSNAP_OK)
    return rc;
  if ((rc = get_volume(call, root, "the list request", &v)) != VIRTSNAP_OK)
    goto done;
  if (stat(v.path, &vst) != 0) {
    rc = fail_os(call, errno, "examining", "volume", v.path,
                 "check its path and the permissions of its directories");
    goto done;
  }
  if ((rc = require_root(instance, call, v.path)) !=
      VIRTSNAP_OK)
    goto done;
  const char *base = base_of(v.path);
  size_t base_len = strlen(base);
  if ((dir = dir_of(v.path)) == NULL || (snaps = json_array()) == NULL) {
    rc = out_of_memory(call);
    goto done;
  }
  if ((d = opendir(dir)) == NULL) {
    rc = fail_os(call, errno, "reading", "directory", dir,
                 "check that it is readable");
    goto done;
  }
  for (;;) {
    errno = 0;
    struct dirent *entry = readdir(d);
    if (entry == NULL) {
      if (errno != 0) {
        rc = fail_os(call, errno, "reading", "directory", dir,
                     "check the filesystem holding it");
        goto done;
      }
      break;
    }
    const char *n = entry->d_name;
    struct stat st;
    if (strncmp(n, base, base_len) != 0 || n[base_len] != '.' ||
        n[base_len + 1] == '\0' || is_temp_name(n) ||
        fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode) ||
        (st.st_dev == vst.st_dev && st.st_ino == vst.st_ino))
      continue;
    if (count == cap) {
      cap = cap ? 2 * cap : 16;
      char **more = realloc(names, cap * sizeof *names);
      if (more == NULL) {
        rc = out_of_memory(call);
        goto done;
      }
      names = more;
    }
    if ((names[count] = strdup(n)) == NULL) {
      rc = out_of_memory(call);
      goto done;
    }
    count++;
  }
  qsort(names, count, sizeof *names, cmp_names);
  for (size_t i = 0; i < count; i++) {
    char *path = join(dir, names[i]);
    json_t *name = json_string(names[i] + base_len + 1);
    if (name == NULL) {
      /* Not UTF-8: no snapshot virtsnap named. */
      log_msg(call, VIRTSNAP_LOG_WARN,
              PLUGIN_NAME ": skipping a file beside %s whose name is not "
              "UTF-8", v.path);
      free(path);
      continue;
    }
    json_t *item = path != NULL ? json_pack("{s:O, s:s, s:s, s:i}", "name",
                                            name, "mode", "copy", "file", path,
                                            "vm_state_size", 0)
                                : NULL;
    free(path);
    json_decref(name);
    if (item == NULL || json_array_append_new(snaps, item) != 0) {
      rc = out_of_memory(call);
      goto done;
    }
  }
  json_t *doc = json_object();
  if (doc != NULL && json_object_set(doc, "snapshots", snaps) != 0) {
    json_decref(doc);
    doc = NULL;
  }
  rc = reply(call, "list", doc);
done:
  if (d != NULL)
    closedir(d);
  for (size_t i = 0; i < count; i++)
    free(names[i]);
  free(names);
  free(dir);
  json_decref(snaps);
  json_decref(root);
  return rc;
}

/* Removes the temporaries a create of FILE left when it was killed. */
static void remove_leftovers(const virtsnap_call_v1 *call, const char *file) {
  char *dir = dir_of(file);
  DIR *d = dir != NULL ? opendir(dir) : NULL;
  const char *base = base_of(file);
  size_t base_len = strlen(base);
  if (base_len > NAME_MAX - TEMP_SUFFIX_LEN)
    base_len = NAME_MAX - TEMP_SUFFIX_LEN;
  struct dirent *entry;
  while (d != NULL && (entry = readdir(d)) != NULL) {
    const char *n = entry->d_name;
    if (strncmp(n, base, base_len) != 0 ||
        strlen(n) != base_len + TEMP_SUFFIX_LEN || !is_temp_name(n))
      continue;
    if (unlinkat(dirfd(d), n, 0) != 0 && errno != ENOENT)
      log_msg(call, VIRTSNAP_LOG_WARN,
              PLUGIN_NAME ": could not remove the unfinished copy %s/%s: %s; "
              "remove it by hand",
              dir, n, strerror(errno));
  }
  if (d != NULL)
    closedir(d);
  free(dir);
}

static int32_t dc_undo(void *instance, const virtsnap_call_v1 *call,
                       const uint8_t *request, size_t len) {
  (void)instance;
  json_t *root;
  volume v;
  snapshot s;
  int32_t rc = parse_request(call, "undo", request, len, &root);
  if (rc != VIRTSNAP_OK)
    return rc;
  rc = get_volume(call, root, "the undo request", &v);
  if (rc == VIRTSNAP_OK)
    rc = get_snapshot(call, root, "the undo request", &s);
  if (rc == VIRTSNAP_OK && strcmp(s.mode, "copy") != 0)
    rc = not_a_copy(call, false, s.mode);
  if (rc == VIRTSNAP_OK && s.file != NULL) { /* no file: nothing was made */
    remove_leftovers(call, s.file);
    rc = remove_copy(call, &v, s.file, s.name);
  }
  json_decref(root);
  return rc;
}

static virtsnap_plugin_v1 plugin = {
    .thread_model = VIRTSNAP_THREAD_MODEL_PARALLEL,
    .flags = 0,
    .name = PLUGIN_NAME,
    .version = "1.0.0",
    .description = "full-copy snapshots of regular files, kept beside them",
    .open = dc_open,
    .close = dc_close,
    .capabilities = dc_capabilities,
    .create = dc_create,
    .delete_ = dc_delete,
    .revert = dc_revert,
    .list = dc_list,
    .undo = dc_undo,
    /* ABI 1.1: no incremental export (NULL = unsupported). */
    .export_diff = NULL,
    .import_diff = NULL,
};

VIRTSNAP_DEFINE_PLUGIN(plugin)
