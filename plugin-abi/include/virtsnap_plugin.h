/*
 * virtsnap_plugin.h: the stable C ABI of virtsnap storage-driver plugins.
 *
 * ABI 1.1. A plugin is a shared library that exports one function,
 * virtsnap_plugin_entry_v1, returning a static virtsnap_plugin_v1 that
 * names the plugin and points at its operations. virtsnap loads plugins
 * from $VIRTSNAP_PLUGIN_DIR and STATE_DIR/plugins/ (files owned by root or
 * the user running virtsnap, not writable by group or others) with
 * dlopen(RTLD_NOW | RTLD_LOCAL), and never unloads them.
 *
 * The layout below is checked against the Rust definitions
 * (plugin-abi/src/abi.rs) by the plugin-abi tests.
 *
 * VERSIONING
 *  1. The ABI major version is part of the entry symbol's name: a plugin
 *     for ABI 2 exports virtsnap_plugin_entry_v2 (it may export both).
 *  2. Every struct starts with the same 8 bytes: struct_size, abi_major,
 *     abi_minor. A minor version only appends fields; nothing is reordered,
 *     resized or reused.
 *  3. The host copies the prefix of virtsnap_plugin_v1 that both sides
 *     know; slots beyond the plugin's struct_size read as NULL. A NULL
 *     optional slot means "unsupported", never "success".
 *  4. A plugin reads a field the host added in a later minor only when the
 *     host struct's struct_size covers it.
 *  5. Documents evolve on their own: readers ignore unknown fields, but a
 *     request's "requires" array lists features the plugin must know; a
 *     plugin that does not know one fails with VIRTSNAP_E_UNSUPPORTED.
 *     ABI 1.0 defines none; ABI 1.1 defines "network-volume" (NETWORK
 *     VOLUMES below).
 *  6. ABI 1.1 appended two optional slots, export_diff and import_diff,
 *     after undo; the 1.0 table (up to and including undo) is unchanged,
 *     VIRTSNAP_PLUGIN_V1_0_SIZE bytes.
 *     - A 1.0 plugin (struct_size VIRTSNAP_PLUGIN_V1_0_SIZE) loads in a 1.1
 *       host: its export_diff and import_diff read as NULL (unsupported),
 *       and requests about network volumes, which require
 *       "network-volume", are refused by it (it knows no feature), which
 *       the host takes as "declines the volume".
 *     - A 1.1 plugin loads in a 1.0 host, which reads the table only up to
 *       undo: it never calls export_diff or import_diff and never sends a
 *       network volume. A plugin that wants to know checks
 *       host->header.abi_minor in its entry function.
 *
 * MEMORY
 *  1. Pointers passed into a plugin are borrowed, valid only until the
 *     call returns.
 *  2. Results and error messages go back only through the call's
 *     write_result and set_error callbacks, which copy.
 *  3. Neither side frees memory the other allocated.
 *  4. name, version, description and the virtsnap_plugin_v1 itself are
 *     static for the life of the library.
 *  5. An instance is an opaque pointer the plugin owns: made by open,
 *     released by close exactly once; the host never dereferences it.
 *  6. Documents are UTF-8 JSON passed as (pointer, length), without NUL.
 *     Their schema: plugin-abi/schema/virtsnap-plugin-v1.schema.json.
 *
 * OPERATIONS
 *  Every operation has the signature virtsnap_op_fn: it reads a request
 *  document, writes a result document (if its operation has one) with
 *  write_result, and returns VIRTSNAP_OK, or a negative VIRTSNAP_E_* code
 *  after set_error with a message that says what failed and what to do.
 *  Returning VIRTSNAP_OK after set_error, a positive code, or a result
 *  that is not the documented JSON is an error the host reports as the
 *  plugin's fault.
 *
 *    capabilities  {"volume":V,"state":"offline"|"in-use"} ->
 *                  {"internal":b,"external":b,"copy":b,"revert":b,
 *                   "revert_keeps_newer":b,"delete_rebase":b,"list":b,
 *                   "checksums":b}  (absent = false; {} = not taken)
 *    create        {"volume":V,"plan":{"name","mode","file"?,"checksum",
 *                   "writable"}} -> {"name","mode","file"?,"format"?,
 *                   "checksum"?:{"algorithm","value"},"size"?}
 *    delete        {"volume":V,"snapshot":S,"parent":S?,"children":[S],
 *                   "is_current":b} -> no result
 *    revert        {"volume":V,"snapshot":S,"verify":b} -> no result, or
 *                  {"outcome":"done"} / {"outcome":"deferred","message"}
 *    list          {"volume":V} -> {"snapshots":[{"name","mode","id"?,
 *                   "file"?,"created"?,"vm_state_size","invalid"?}]}
 *    undo          {"volume":V,"snapshot":CREATED} -> no result
 *
 *  where V = {"path","format"}, S = {"name","mode","file"?,"checksum"?},
 *  mode is "internal", "external" or "copy", and every request also has
 *  "requires":[...] (absent = empty). A field marked ? may be absent;
 *  "vm_state_size" may be absent too (0). "size" is bytes the snapshot
 *  occupies on the storage. capabilities of a volume that does not exist
 *  is VIRTSNAP_E_NOT_FOUND; of one the plugin does not take, {}.
 *
 *  ABI 1.1 (optional; NULL or absent = VIRTSNAP_E_UNSUPPORTED):
 *    export_diff   {"volume":V,"snapshot":S,"from":S?,"file":"/abs"} ->
 *                  {"file_bytes":u64,"changed_bytes":u64}
 *    import_diff   {"volume":V,"file":"/abs"} ->
 *                  {"snapshot":"name","from":"name"?,"size":u64}
 *
 *  export_diff writes the changes between "from" (absent: the volume's
 *  beginning) and "snapshot" to the new file "file", in a format the
 *  plugin's import_diff replays (RBD's export-diff): it refuses an existing
 *  file with VIRTSNAP_E_EXISTS and leaves no file behind on error;
 *  "file_bytes" is the size of the file written (the host checks it),
 *  "changed_bytes" the volume data that changed. import_diff replays such a
 *  file on the volume, which must hold the diff's start snapshot, and
 *  creates its end snapshot there: "snapshot" is that snapshot (never
 *  empty), "from" the start snapshot (absent for a diff from the
 *  beginning), "size" the volume's size in bytes afterwards. Both report
 *  progress in bytes.
 *
 * NETWORK VOLUMES (ABI 1.1)
 *  V's "path" is an absolute path, or a network volume's name
 *  PROTOCOL:NAME[:OPTION=VALUE...] (rbd:pool/image:conf=/etc/ceph/ceph.conf);
 *  every request about a network volume has "requires":["network-volume"].
 *  A plugin that does not know the feature, or does not take the protocol,
 *  refuses with VIRTSNAP_E_UNSUPPORTED (or answers {} to capabilities):
 *  either way the host takes capabilities' refusal as declining the
 *  volume and asks the plugin nothing else about it.
 *
 * FLATTENING CLONES (ABI 1.1)
 *  A delete may carry "flatten_clones":true (and then "requires" holds
 *  "flatten-clones"): storage-level clones of the snapshot (images made
 *  from it, such as RBD clones) are to be flattened before it is deleted.
 *  Without it, a plugin whose snapshot has such clones refuses the delete
 *  with VIRTSNAP_E_BUSY naming them, changing nothing. A plugin without
 *  clones ignores the flag, but must still refuse the feature if it
 *  checks "requires" against a list it does not extend.
 *
 * ERROR MESSAGES
 *  The host puts a plugin's message into its own sentence, so:
 *    VIRTSNAP_E_EXISTS, VIRTSNAP_E_NOT_FOUND: name the thing only
 *      ("snapshot file /v/disk.img.a"); the host adds "already exists;
 *      choose another name or remove it first" / "does not exist".
 *    VIRTSNAP_E_UNSUPPORTED: why, and what to do instead ("only full
 *      copies; use --mode copy"); the host names the plugin, the operation
 *      and the volume.
 *    Others: what failed and what to do; the host names the plugin and
 *      the operation.
 *  With an os_errno, do not repeat strerror(os_errno): the host adds it.
 *
 * CALLBACKS
 *  Every callback of virtsnap_call_v1 1.0 is non-NULL. They may be called
 *  from any thread while the call lasts, never after it returns. During
 *  open, write_result is ignored.
 *
 * OPTIONS
 *  open receives {"host_version":"..","options":{..}}, where options is
 *  the JSON object in the file beside the library (libNAME.so ->
 *  libNAME.json, with the same ownership rules), or {}.
 *
 * THREADS
 *  thread_model says how many calls the plugin takes at once; the host
 *  never exceeds it. Calls run on host worker threads, never on the
 *  host's async runtime, and not always on the same thread. close never
 *  runs during another call on the same instance. The host calls the
 *  entry function once per library, under a lock.
 */
#ifndef VIRTSNAP_PLUGIN_H
#define VIRTSNAP_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VIRTSNAP_ABI_MAJOR 1
#define VIRTSNAP_ABI_MINOR 1

/* Return codes. */
#define VIRTSNAP_OK 0
#define VIRTSNAP_E_INVALID_ARGUMENT (-1)  /* malformed request */
#define VIRTSNAP_E_NOT_FOUND (-2)         /* volume or snapshot missing */
#define VIRTSNAP_E_EXISTS (-3)            /* what would be created exists */
#define VIRTSNAP_E_UNSUPPORTED (-4)       /* not for this volume; say why */
#define VIRTSNAP_E_BUSY (-5)              /* volume in use */
#define VIRTSNAP_E_PERMISSION (-6)        /* permission denied */
#define VIRTSNAP_E_IO (-7)                /* I/O error (os_errno says) */
#define VIRTSNAP_E_NO_SPACE (-8)          /* storage full, nothing changed */
#define VIRTSNAP_E_INCONSISTENT (-9)      /* storage differs from request */
#define VIRTSNAP_E_CHECKSUM_MISMATCH (-10)/* verify failed, nothing changed */
#define VIRTSNAP_E_CANCELLED (-11)        /* progress() asked to stop */
#define VIRTSNAP_E_INTERNAL (-12)         /* anything else */
#define VIRTSNAP_E_PANIC (-13)            /* Rust SDK: the plugin panicked */
#define VIRTSNAP_E_INVALID_NAME (-14)     /* name the storage cannot take */

/* Thread models. */
#define VIRTSNAP_THREAD_MODEL_SERIALIZE_ALL 0      /* one call at a time */
#define VIRTSNAP_THREAD_MODEL_SERIALIZE_INSTANCE 1 /* one per instance */
#define VIRTSNAP_THREAD_MODEL_PARALLEL 2           /* any number */

/* Log levels. */
#define VIRTSNAP_LOG_ERROR 1
#define VIRTSNAP_LOG_WARN 2
#define VIRTSNAP_LOG_INFO 3
#define VIRTSNAP_LOG_DEBUG 4

/* The frozen first 8 bytes of every struct. */
typedef struct virtsnap_header {
  uint32_t struct_size; /* sizeof the struct as its author compiled it */
  uint16_t abi_major;
  uint16_t abi_minor;
} virtsnap_header;

typedef void (*virtsnap_log_fn)(void *ctx, int32_t level, const uint8_t *msg,
                                size_t len);

/* What the host offers at load time; borrowed for the entry call. */
typedef struct virtsnap_host_v1 {
  virtsnap_header header;
  const char *host_version; /* NUL-terminated UTF-8 */
  void *host_ctx;           /* first argument of log */
  virtsnap_log_fn log;
} virtsnap_host_v1;

/* What the host hands every call; borrowed for that call. */
typedef struct virtsnap_call_v1 {
  virtsnap_header header;
  void *call_ctx; /* first argument of every callback */
  /* Appends len bytes to the result document; non-zero = refused (too
   * large): return an error. */
  int32_t (*write_result)(void *call_ctx, const uint8_t *data, size_t len);
  /* Records the error: negative code, errno or 0, UTF-8 message. */
  void (*set_error)(void *call_ctx, int32_t code, int32_t os_errno,
                    const uint8_t *msg, size_t len);
  virtsnap_log_fn log;
  /* Progress in bytes; non-zero = stop, clean up, VIRTSNAP_E_CANCELLED. */
  int32_t (*progress)(void *call_ctx, uint64_t done, uint64_t total);
} virtsnap_call_v1;

typedef int32_t (*virtsnap_op_fn)(void *instance, const virtsnap_call_v1 *call,
                                  const uint8_t *request, size_t len);

/* What a plugin is: static for the life of the library. */
typedef struct virtsnap_plugin_v1 {
  virtsnap_header header;
  uint32_t thread_model; /* VIRTSNAP_THREAD_MODEL_* */
  uint32_t flags;        /* reserved, 0 */
  const char *name;      /* [a-z0-9][a-z0-9-]*, at most 63 bytes */
  const char *version;   /* the plugin's own version */
  const char *description; /* one line, or NULL */
  /* Required: an instance from {"host_version":..,"options":{..}}, or NULL
   * after set_error. */
  void *(*open)(const virtsnap_call_v1 *call, const uint8_t *config,
                size_t len);
  /* Required: releases an instance, exactly once. */
  void (*close)(void *instance);
  virtsnap_op_fn capabilities; /* required */
  virtsnap_op_fn create;       /* required */
  virtsnap_op_fn delete_;      /* required */
  virtsnap_op_fn revert;       /* optional */
  virtsnap_op_fn list;         /* optional */
  /* Optional: when NULL the host undoes a create by deleting the snapshot
   * as the volume's current one, without parent or children. */
  virtsnap_op_fn undo;
  /* ---- ABI 1.1: a 1.0 plugin's table ends here (see VERSIONING 6). ---- */
  virtsnap_op_fn export_diff; /* optional: incremental export to a file */
  virtsnap_op_fn import_diff; /* optional: replays an export_diff file */
} virtsnap_plugin_v1;

/* sizeof(virtsnap_plugin_v1) of ABI 1.0: the least struct_size the host
 * takes, and what a plugin built against the 1.0 header declares. */
#define VIRTSNAP_PLUGIN_V1_0_SIZE                                              \
  (offsetof(virtsnap_plugin_v1, undo) + sizeof(virtsnap_op_fn))

/* The entry function: the plugin's description, or NULL to refuse this
 * host (log why through host->log first). */
typedef const virtsnap_plugin_v1 *(*virtsnap_entry_v1_fn)(
    const virtsnap_host_v1 *host);

/* Defines virtsnap_plugin_entry_v1 returning VAR, a static
 * virtsnap_plugin_v1 whose header this macro fills in:
 *
 *   static virtsnap_plugin_v1 plugin = {
 *     .name = "mydriver", .version = "1.0",
 *     .open = my_open, .close = my_close, ...
 *   };
 *   VIRTSNAP_DEFINE_PLUGIN(plugin)
 */
#define VIRTSNAP_DEFINE_PLUGIN(var)                                            \
  __attribute__((visibility("default"))) const virtsnap_plugin_v1 *            \
  virtsnap_plugin_entry_v1(const virtsnap_host_v1 *host) {                     \
    (void)host;                                                                \
    (var).header.struct_size = (uint32_t)sizeof(virtsnap_plugin_v1);           \
    (var).header.abi_major = VIRTSNAP_ABI_MAJOR;                               \
    (var).header.abi_minor = VIRTSNAP_ABI_MINOR;                               \
    return &(var);                                                             \
  }

#ifdef __cplusplus
}
#endif

#endif /* VIRTSNAP_PLUGIN_H */
