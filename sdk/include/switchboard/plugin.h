/*
 * Switchboard plugin ABI.
 *
 * This header is the whole contract between the Switchboard core and a plugin.
 * Only C types cross it. Vendors may compile plugins with any toolchain that
 * follows the platform C ABI; the header-only C++ layer in plugin.hpp is a
 * convenience on top of it, not a different ABI.
 *
 * Versioning (see docs/sdk.md, "ABI versioning policy"):
 *   - SB_ABI_MAJOR changes when anything already published changes meaning,
 *     size or position. The host refuses a plugin built for another major.
 *   - SB_ABI_MINOR changes when something is appended: a field at the end of
 *     a struct, a function at the end of the host table, a new enum value.
 *     A host accepts plugins built for its own or an older minor, and refuses
 *     a newer one (the plugin might rely on something the host lacks).
 *   - Every public struct starts with `struct_size`, set by whoever fills it
 *     in. Readers look at a field only if it lies inside struct_size
 *     (SB_HAS_FIELD). Structs are append-only.
 *
 * Ownership: unless a function says otherwise, pointers passed in are
 * borrowed for the duration of the call, and pointers returned by the host
 * stay valid as documented on each function. Strings are UTF-8 and NUL
 * terminated unless a length is given with them.
 *
 * Threading: see each hook. In short, lifecycle hooks (create, start, stop,
 * destroy) run on the host's main thread; `poll` runs on a thread the host
 * dedicates to that source instance; `deliver`, `flush` and `erase` run on the
 * thread that the host dedicates to the instance's queue, one call at a time;
 * HTTP handlers run on the host's HTTP worker threads, possibly concurrently;
 * timer callbacks run on the host's timer thread, one at a time per instance.
 * Every host function is safe to call from any thread unless it says so.
 */
#ifndef SWITCHBOARD_PLUGIN_H
#define SWITCHBOARD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SB_ABI_MAJOR 1
#define SB_ABI_MINOR 4

/* The one symbol a plugin library exports. Returns a pointer to a descriptor
 * with static storage duration; it is called once, on the main thread, right
 * after the library is opened. It must not allocate resources: instances
 * are made by `create`. */
#define SB_ENTRY_POINT "switchboard_plugin_descriptor"

#if defined(_WIN32)
#define SB_EXPORT __declspec(dllexport)
#else
#define SB_EXPORT __attribute__((visibility("default")))
#endif

/* True when `field` of the struct pointed to by `ptr` lies within the
 * struct_size that its writer stamped on it. */
#define SB_HAS_FIELD(ptr, type, field) \
    ((ptr)->struct_size >= offsetof(type, field) + sizeof(((type*)0)->field))

/* ------------------------------------------------------------------------ */
/* Status codes                                                             */

typedef enum sb_status {
    SB_OK = 0,
    /* The input or the request was malformed; retrying will not help. */
    SB_ERR_INVALID = 1,
    /* Temporary failure (network, peer busy, 429/5xx): retry later. */
    SB_ERR_TRANSIENT = 2,
    /* Permanent failure for this item (peer said 4xx, record refused):
     * dead-letter it. */
    SB_ERR_PERMANENT = 3,
    /* A bug or an unexpected condition inside the plugin or the host. */
    SB_ERR_INTERNAL = 4,
    /* The hook or the operation is not supported by this plugin or host. */
    SB_ERR_UNSUPPORTED = 5,
    /* The host cannot take the record now (journal unavailable, stopping):
     * do not acknowledge upstream; try again later. */
    SB_ERR_UNAVAILABLE = 6,
    /* emit: the host already holds a record with this source and external
     * id. It is safe to acknowledge upstream. */
    SB_DUPLICATE = 7,
    /* deliver/erase: accepted, completion will be reported later through
     * sb_host_api.complete. */
    SB_PENDING = 8,
    /* poll: nothing to do now; call again after the poll interval. */
    SB_IDLE = 9,
    /* A required item was not found. */
    SB_ERR_NOT_FOUND = 10
} sb_status;

/* ------------------------------------------------------------------------ */
/* Descriptor: what a plugin is, what it needs and what it can do           */

typedef enum sb_plugin_kind {
    SB_KIND_SOURCE = 1,      /* produces records (webhook, file drop, poller) */
    SB_KIND_DESTINATION = 2, /* delivers minimised records to a department */
    SB_KIND_TRANSFORM = 3    /* rewrites records between journal and route */
} sb_plugin_kind;

/* Capability bits. */
#define SB_CAP_ERASE ((uint64_t)1 << 0)      /* implements the erase hook */
#define SB_CAP_HTTP ((uint64_t)1 << 1)       /* registers HTTP routes */
#define SB_CAP_POLL ((uint64_t)1 << 2)       /* implements the poll hook */
#define SB_CAP_TIMERS ((uint64_t)1 << 3)     /* uses host timers */
#define SB_CAP_ASYNC_ACK ((uint64_t)1 << 4)  /* may answer SB_PENDING */
#define SB_CAP_ATTACHMENTS ((uint64_t)1 << 5) /* emits or accepts attachments */
/* A destination that reads a delivered record with record_json and
 * record_get_meta only (ABI 1.4). The host may then hand it a record that
 * holds its JSON and envelope and no field tree: record_field_count gives 0
 * and record_field_at and record_get SB_ERR_UNSUPPORTED on it, and a
 * delivery during which the plugin called one of those fails (dead-lettered,
 * with the reason). */
#define SB_CAP_JSON_RECORDS ((uint64_t)1 << 6)

typedef enum sb_config_type {
    SB_CFG_STRING = 1,
    SB_CFG_INT = 2,      /* 64-bit signed integer */
    SB_CFG_FLOAT = 3,    /* double */
    SB_CFG_BOOL = 4,
    SB_CFG_DURATION = 5, /* "500ms", "30s", "5m", "12h", "28d"; read as ms */
    SB_CFG_PATH = 6,     /* string; relative paths are resolved against the
                            directory of the config file that holds them */
    SB_CFG_SIZE = 7      /* "512", "64KiB", "16MiB", "1GiB"; read as bytes */
} sb_config_type;

/* Config field flags. */
#define SB_CFG_REQUIRED (1u << 0) /* the key must be present */
#define SB_CFG_SECRET (1u << 1)   /* value must be an env:NAME or file:PATH
                                     reference; never logged or echoed */
#define SB_CFG_MULTI (1u << 2)    /* the value is an array of `type` */
#define SB_CFG_HAS_MIN (1u << 3)  /* `min` applies (numbers, durations,
                                     sizes; for MULTI, also the array length
                                     when type is STRING or PATH) */
#define SB_CFG_HAS_MAX (1u << 4)  /* `max` applies */

typedef struct sb_config_field {
    uint32_t struct_size;
    const char* key;           /* [A-Za-z0-9_-]+ */
    sb_config_type type;
    uint32_t flags;            /* SB_CFG_* bits */
    const char* default_value; /* TOML literal text ("30s", "true", "5",
                                  "\"x\"", "[\"a\"]") or NULL */
    double min;                /* with SB_CFG_HAS_MIN */
    double max;                /* with SB_CFG_HAS_MAX */
    const char* description;   /* one sentence, shown by `switchboard plugins` */
    const char* const* choices; /* NULL, or a NULL-terminated list of the
                                   only strings allowed (STRING type) */
} sb_config_field;

typedef struct sb_instance sb_instance;   /* plugin-owned instance state */
typedef struct sb_host_ctx sb_host_ctx;   /* host-owned per-instance context */
typedef struct sb_record sb_record;       /* host-owned record */
typedef struct sb_host_api sb_host_api;
/* A record shape (ABI 1.2): field paths and categories registered once. */
typedef struct sb_shape sb_shape;

/* What a destination is asked to deliver. Read-only, valid during the call. */
typedef struct sb_delivery {
    uint32_t struct_size;
    uint64_t delivery_id;       /* host id; pass to complete() with SB_PENDING */
    uint64_t sequence;          /* per-destination sequence number, from 1 */
    const char* record_id;      /* stable across retries: the idempotency key */
    const char* purpose;        /* the route's declared purpose */
    const char* profile;        /* the profile that minimised the payload */
    uint32_t profile_version;
    uint32_t attempt;           /* 1 on the first try */
    const sb_record* record;    /* the minimised record (read with the host API) */
} sb_delivery;

typedef enum sb_erase_reason {
    SB_ERASE_RETENTION = 1, /* the retention clock expired */
    SB_ERASE_REQUEST = 2    /* a data subject's erasure request */
} sb_erase_reason;

/* An erase request: to a source, delete the vendor's copy; to a destination,
 * tell the department to delete what it received. Valid during the call. */
typedef struct sb_erase_request {
    uint32_t struct_size;
    uint64_t request_id;       /* pass to complete() with SB_PENDING */
    const char* record_id;
    const char* external_id;   /* the source's own id for the item, or NULL */
    sb_erase_reason reason;
    const sb_record* record;   /* the record's envelope and the fields the
                                  plugin needs to find the vendor copy
                                  (source refs); may be NULL for destinations */
} sb_erase_request;

/* The plugin descriptor. Returned by the entry point, static storage. */
typedef struct sb_plugin_descriptor {
    uint32_t struct_size; /* sizeof(sb_plugin_descriptor) as built */
    uint16_t abi_major;   /* SB_ABI_MAJOR as built */
    uint16_t abi_minor;   /* SB_ABI_MINOR as built */

    const char* name;        /* unique plugin name, [a-z0-9-]+ */
    const char* version;     /* the plugin's own version, e.g. "1.2.0" */
    const char* vendor;
    const char* licence;     /* SPDX identifier */
    const char* description; /* one line */
    sb_plugin_kind kind;
    uint64_t capabilities;   /* SB_CAP_* bits */

    /* NULL-terminated list of data categories (e.g. "identity.name",
     * "contact.phone", "content.free_text") the plugin emits (source) or
     * accepts (destination). May be NULL. */
    const char* const* data_categories;

    /* Table of n_config_fields elements, each config_fields[0].struct_size
     * bytes apart (so a table built for an older, smaller sb_config_field is
     * read correctly). */
    const sb_config_field* config_fields;
    size_t n_config_fields;

    /* Creates an instance. `host` and `ctx` stay valid until destroy. The
     * instance's configuration, already validated against config_fields and
     * with secrets resolved, is read through host->config_*. On failure,
     * return non-OK, leave *out NULL and explain with host->set_error.
     * Main thread. */
    sb_status (*create)(const sb_host_api* host, sb_host_ctx* ctx, sb_instance** out);

    /* Destroys an instance made by create. Called after stop (if start
     * succeeded). Never called concurrently with any other hook of the same
     * instance. Main thread. Required. */
    void (*destroy)(sb_instance* self);

    /* Starts work: register HTTP routes, timers, open connections. Main
     * thread. Optional (NULL = nothing to do). */
    sb_status (*start)(sb_instance* self);

    /* Stops work. After it returns, the plugin must not call emit, and no
     * timer or HTTP callback of this instance runs any more. Main thread.
     * Optional. */
    sb_status (*stop)(sb_instance* self);

    /* Source: does a bounded amount of work (read a batch, emit it) and
     * returns SB_OK if there may be more right away, SB_IDLE to be called
     * again after the poll interval, or an error (logged, then treated as
     * SB_IDLE). Runs on a thread dedicated to this instance. Optional. */
    sb_status (*poll)(sb_instance* self);

    /* Destination: delivers one minimised record. Returns SB_OK when the
     * record is handed over (the host counts it delivered only after the
     * next flush, if the plugin has one, returns SB_OK), SB_PENDING when
     * completion will come through host->complete(delivery_id, ...),
     * SB_ERR_TRANSIENT to retry later (with backoff), SB_ERR_PERMANENT to
     * dead-letter. Deliveries come in sequence order; after a crash the
     * same record (same record_id and sequence) may be delivered again, so
     * a destination that must not hold duplicates keys on either. One call
     * at a time per instance, on its queue thread. Optional for sources,
     * required for destinations. */
    sb_status (*deliver)(sb_instance* self, const sb_delivery* delivery);

    /* Destination: called after a batch of deliver calls, so a plugin that
     * buffers can make the batch durable (fsync, send) and complete the
     * SB_PENDING deliveries. Queue thread. Optional. */
    sb_status (*flush)(sb_instance* self);

    /* Erase hook (SB_CAP_ERASE). Source: delete the vendor's copy of the
     * item (the request carries the record's id, external_id, subject_ref
     * and channel: what the source put in the envelope is what it gets back
     * to find the copy). Destination: send an erase notice to the
     * department. Returns SB_OK when confirmed, SB_PENDING when confirmation
     * will come through host->complete(request_id, ...), SB_ERR_TRANSIENT to
     * retry later (with backoff), SB_ERR_PERMANENT when it can never be done,
     * SB_ERR_NOT_FOUND when there is no copy (each outcome is audited).
     * Called on the host's retention thread, one request at a time per
     * instance and never at the same time as deliver or flush; for a source
     * it may run while poll or an HTTP handler runs. Optional. */
    sb_status (*erase)(sb_instance* self, const sb_erase_request* request);

    /* Transform: rewrites `record` in place with the host's record-building
     * functions. Returns SB_OK to keep it, SB_ERR_INVALID to quarantine it.
     * Called on pipeline threads, possibly concurrently. Optional. */
    sb_status (*transform)(sb_instance* self, sb_record* record);
} sb_plugin_descriptor;

/* Signature of the entry point named SB_ENTRY_POINT. */
typedef const sb_plugin_descriptor* (*sb_entry_fn)(void);

/* ------------------------------------------------------------------------ */
/* Values and records                                                       */

typedef enum sb_value_type {
    SB_VALUE_NULL = 0,
    SB_VALUE_STRING = 1,
    SB_VALUE_INT = 2,
    SB_VALUE_FLOAT = 3,
    SB_VALUE_BOOL = 4
} sb_value_type;

typedef struct sb_value {
    sb_value_type type;
    const char* str;  /* STRING: bytes, UTF-8, not necessarily NUL terminated */
    size_t len;       /* STRING: length in bytes */
    int64_t i;        /* INT; BOOL as 0 or 1 */
    double f;         /* FLOAT */
} sb_value;

/* One leaf of a record's field tree, as read through the host API.
 * Pointers are owned by the record and stay valid until the record is
 * modified or released. */
typedef struct sb_field {
    uint32_t struct_size;
    const char* path;     /* dotted path with array indexes:
                             "citizen.address.postcode", "content.turns[2].text" */
    const char* category; /* data category, e.g. "contact.phone"; never NULL
                             ("unknown" when the source gave none) */
    sb_value value;
} sb_field;

/* An attachment (audio, scan, image) held by reference, never inline. */
typedef struct sb_attachment {
    uint32_t struct_size;
    const char* name;       /* logical name, e.g. "recording" */
    const char* uri;        /* file:///abs/path or a vendor URI */
    const char* media_type; /* e.g. "audio/wav" */
    int64_t size;           /* bytes, -1 if unknown */
    const char* sha256;     /* lowercase hex, or NULL */
    const char* category;   /* data category, e.g. "media.voice" */
} sb_attachment;

/* Envelope keys that a source may set with record_set_meta. The host sets
 * "id", "source", "received_at", "expires_at" and "category" itself. */
#define SB_META_CHANNEL "channel"         /* "phone", "web_chat", "whatsapp", ... */
#define SB_META_OCCURRED_AT "occurred_at" /* RFC 3339 time of the contact */
#define SB_META_EXTERNAL_ID "external_id" /* the vendor's id; idempotency key */
#define SB_META_SUBJECT_REF "subject_ref" /* vendor key for erasure
                                              (e.g. Landbot customer id) */

/* ------------------------------------------------------------------------ */
/* HTTP                                                                      */

typedef struct sb_http_request sb_http_request;   /* host-owned */
typedef struct sb_http_response sb_http_response; /* host-owned */

/* Called on an HTTP worker thread, possibly concurrently with itself.
 * `request` and `response` are valid only during the call. */
typedef void (*sb_http_handler)(void* user, const sb_http_request* request,
                                sb_http_response* response);

/* ------------------------------------------------------------------------ */
/* Logging                                                                  */

typedef enum sb_log_level {
    SB_LOG_TRACE = 0,
    SB_LOG_DEBUG = 1,
    SB_LOG_INFO = 2,
    SB_LOG_WARN = 3,
    SB_LOG_ERROR = 4
} sb_log_level;

typedef void (*sb_timer_fn)(void* user);

/* ------------------------------------------------------------------------ */
/* Host API: the table of services the core hands to every instance.        */
/* Check SB_HAS_FIELD(host, sb_host_api, fn) before using a function added   */
/* after the minor you require.                                             */

struct sb_host_api {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;

    /* --- errors and logging ------------------------------------------- */

    /* Explains the failure of the hook being run on this thread; the host
     * logs it with the instance name when the hook returns non-OK. The text
     * is copied. Must not contain personal data. */
    void (*set_error)(sb_host_ctx* ctx, const char* message);

    /* Writes one log line, prefixed by the component and instance name.
     * The text is copied. Must not contain personal data. */
    void (*log)(sb_host_ctx* ctx, sb_log_level level, const char* message);

    /* Whether a line at `level` would be written (skip formatting if not). */
    int (*log_enabled)(sb_host_ctx* ctx, sb_log_level level);

    /* --- metrics ------------------------------------------------------ */

    /* Adds `delta` to the counter `name` ([a-z0-9_]+) of this instance. */
    void (*counter_add)(sb_host_ctx* ctx, const char* name, uint64_t delta);
    /* Sets the gauge `name` of this instance. */
    void (*gauge_set)(sb_host_ctx* ctx, const char* name, double value);

    /* --- clock -------------------------------------------------------- */

    /* Unix time in milliseconds, from the host's clock (which tests may
     * replace). Use it instead of the system clock for anything that the
     * retention clock compares. */
    int64_t (*now_ms)(sb_host_ctx* ctx);

    /* --- configuration (validated, defaults applied, secrets resolved) - */

    /* Each returns 1 and sets *out if the key has a value (given or
     * default), 0 if not. Strings stay valid until destroy. DURATION is
     * read with config_int in milliseconds, SIZE in bytes. */
    int (*config_string)(sb_host_ctx* ctx, const char* key, const char** out);
    int (*config_int)(sb_host_ctx* ctx, const char* key, int64_t* out);
    int (*config_float)(sb_host_ctx* ctx, const char* key, double* out);
    int (*config_bool)(sb_host_ctx* ctx, const char* key, int* out);
    /* MULTI keys: number of elements (0 if absent), and element `index`
     * as a string (numbers and booleans in their TOML spelling). */
    size_t (*config_list_size)(sb_host_ctx* ctx, const char* key);
    int (*config_list_string)(sb_host_ctx* ctx, const char* key, size_t index,
                              const char** out);

    /* The instance's name (as in config), and a directory reserved for its
     * own files under the data directory (created by the host). Valid until
     * destroy. */
    const char* (*instance_name)(sb_host_ctx* ctx);
    const char* (*data_dir)(sb_host_ctx* ctx);

    /* --- building records --------------------------------------------- */

    /* A new empty record owned by the caller until it is passed to emit
     * (which takes ownership whatever it returns) or record_free. */
    sb_record* (*record_new)(sb_host_ctx* ctx);
    void (*record_free)(sb_host_ctx* ctx, sb_record* record);

    /* Sets an envelope value (SB_META_* keys). Copies. SB_ERR_INVALID for an
     * unknown key or a malformed time. */
    sb_status (*record_set_meta)(sb_record* record, const char* key, const char* value);

    /* Sets the field at `path` (created with its parents) to `value`, with
     * data category `category` (NULL = "unknown"). Copies. SB_ERR_INVALID for
     * a malformed path. Setting a path again replaces its value. */
    sb_status (*record_set)(sb_record* record, const char* path, const sb_value* value,
                            const char* category);

    /* Adds an attachment by reference. Copies. */
    sb_status (*record_add_attachment)(sb_record* record, const sb_attachment* attachment);

    /* --- reading records ---------------------------------------------- */

    /* Envelope value, or NULL. Valid until the record changes or is freed. */
    const char* (*record_get_meta)(const sb_record* record, const char* key);
    size_t (*record_field_count)(const sb_record* record);
    /* Fills *out with leaf `index` (0-based, in path order). The caller sets
     * out->struct_size; the host writes only the fields that fit, so a plugin
     * built for an older minor is safe (the same holds for every struct the
     * host fills in). */
    sb_status (*record_field_at)(const sb_record* record, size_t index, sb_field* out);
    /* Fills *out with the leaf at `path`; SB_ERR_NOT_FOUND if none. */
    sb_status (*record_get)(const sb_record* record, const char* path, sb_field* out);
    size_t (*record_attachment_count)(const sb_record* record);
    sb_status (*record_attachment_at)(const sb_record* record, size_t index,
                                      sb_attachment* out);
    /* The record as one JSON object: {"id":…, "meta":{…}, "fields":{…tree…},
     * "attachments":[…]}. Owned by the record; valid until it changes or is
     * freed. *len receives the length. Like every record function, not to be
     * called on the same record from two threads at once. */
    const char* (*record_json)(const sb_record* record, size_t* len);

    /* --- emitting (sources) ------------------------------------------- */

    /* Hands a record to the journal and blocks until it is durably
     * committed. Takes ownership of `record` whatever the result.
     * SB_OK: committed, acknowledge upstream. SB_DUPLICATE: already held
     * (same source and external id), acknowledge upstream.
     * SB_ERR_INVALID: refused (reason logged; nothing to retry).
     * SB_ERR_UNAVAILABLE: not committed (or the instance is not between
     * start and stop); do not acknowledge, retry later.
     * Any thread. */
    sb_status (*emit)(sb_host_ctx* ctx, sb_record* record);

    /* Emits `n` records in one durable commit, together with an optional
     * cursor (state_key = state_value) so that a source's read position is
     * committed atomically with what it read. Takes ownership of every
     * record. `results` (may be NULL) receives one status per record. The
     * return value is SB_OK if the commit happened (individual records may
     * still be SB_DUPLICATE or SB_ERR_INVALID), SB_ERR_UNAVAILABLE if not. */
    sb_status (*emit_batch)(sb_host_ctx* ctx, sb_record* const* records, size_t n,
                            const char* state_key, const char* state_value,
                            sb_status* results);

    /* Stores raw input that could not be parsed, with a reason, in the
     * quarantine (which expires on the retention clock). Copies. The bytes
     * are never logged. `ref` is a short non-personal reference (file name
     * and line, request id) or NULL; it and `reason` go into the audit
     * trail, which outlives the data, so neither may hold personal data. */
    sb_status (*quarantine)(sb_host_ctx* ctx, const void* bytes, size_t len,
                            const char* reason, const char* ref);

    /* --- durable per-instance state (cursors, seen ids) ----------------- */

    /* Reads a value stored with state_set or emit_batch. Returns 1 and sets
     * *out to a copy that the caller frees with host->free, or 0. */
    int (*state_get)(sb_host_ctx* ctx, const char* key, char** out);
    /* Durably stores a value (NULL deletes the key). State is at rest in the
     * journal: never put card data in it (the core strips card numbers from
     * records and quarantine, but state is the plugin's own format and is
     * stored as given). */
    sb_status (*state_set)(sb_host_ctx* ctx, const char* key, const char* value);
    /* Frees memory that the host allocated for the caller. */
    void (*free)(void* ptr);

    /* --- asynchronous completion --------------------------------------- */

    /* Completes a delivery or erase request that returned SB_PENDING.
     * `status` is SB_OK, SB_ERR_TRANSIENT or SB_ERR_PERMANENT; `receipt`
     * (may be NULL) is a short reference to store with it (case number,
     * deletion receipt): it goes into the audit entry of the delivery or
     * erase (control characters replaced, at most 128 bytes kept), so it must
     * never carry personal data. Any thread. */
    void (*complete)(sb_host_ctx* ctx, uint64_t id, sb_status status, const char* receipt);

    /* --- HTTP (SB_CAP_HTTP) --------------------------------------------- */

    /* Registers `handler` for `method` ("POST", ... or "*" for any) on every
     * path that equals `path` or starts with `path` + "/"; the longest
     * matching path wins. Paths must begin with "/hooks/" or "/plugins/".
     * Needs SB_CAP_HTTP (else SB_ERR_UNSUPPORTED). Call from start only
     * (else SB_ERR_INVALID); the host removes the routes before stop.
     * SB_ERR_INVALID if the same method and path are already registered. */
    sb_status (*http_route)(sb_host_ctx* ctx, const char* method, const char* path,
                            sb_http_handler handler, void* user);
    /* Request accessors; returned pointers are valid during the handler. */
    const char* (*http_method)(const sb_http_request* request);
    const char* (*http_path)(const sb_http_request* request);
    const char* (*http_query)(const sb_http_request* request); /* "" if none */
    /* Header value (case-insensitive name) or NULL. */
    const char* (*http_header)(const sb_http_request* request, const char* name);
    /* The whole body (already bounded by the listener's max_body). */
    const char* (*http_body)(const sb_http_request* request, size_t* len);
    /* Response: status, content type and body; copies. Call once. */
    void (*http_respond)(sb_http_response* response, int status, const char* content_type,
                         const char* body, size_t len);
    void (*http_set_header)(sb_http_response* response, const char* name, const char* value);

    /* --- timers (SB_CAP_TIMERS) ------------------------------------------- */

    /* Calls fn(user) after `delay_ms`, then every `interval_ms` if that is
     * > 0. Needs SB_CAP_TIMERS. Returns a timer id (> 0), or 0 on failure
     * (explained with set_error). Timer thread. */
    uint64_t (*timer_start)(sb_host_ctx* ctx, int64_t delay_ms, int64_t interval_ms,
                            sb_timer_fn fn, void* user);
    /* Cancels a timer. When called from outside the timer's own callback,
     * fn is not running when it returns and will not run again; from inside
     * it, the timer just does not fire again. */
    void (*timer_cancel)(sb_host_ctx* ctx, uint64_t id);

    /* --- audit (ABI 1.1) ------------------------------------------------ */

    /* Writes an entry about this instance to the hash-chained audit trail
     * (kind "plugin", with the instance and plugin named): for what the
     * plugin alone sees and an auditor must be able to find later, such as a
     * refused handshake. `event` is a token, [a-z_]{1,32} ("handshake_refused").
     * `record_id` is the id of the record the entry is about, as the host
     * handed it to the plugin ([A-Za-z0-9._:-]{1,64}), or NULL. `detail`
     * (may be NULL) is one short line: the host replaces control characters
     * (newlines included) with spaces and keeps at most 256 bytes. The trail
     * outlives the records it describes, so neither `event` nor `detail` may
     * ever carry personal data (no names, phone numbers, addresses, message
     * text, error text that might quote input): only ids, keys, counts,
     * network addresses of systems. Copies.
     *
     * SB_OK: taken; the entry is committed with the journal's next group
     * commit, by the journal's writer thread (the call does not wait for the
     * disk; an entry written after the journal has stopped, while the host
     * shuts down, is not kept). SB_ERR_INVALID: `event` or `record_id` is
     * malformed (nothing written; explained with set_error).
     * SB_ERR_UNAVAILABLE: the host has no audit trail (a node without a
     * journal).
     * A plugin that may audit often (one entry per connection attempt from
     * the network) must rate-limit itself. Any thread.
     *
     * Added in ABI 1.1: check SB_HAS_FIELD(host, sb_host_api, audit) before
     * calling it (sb::Host::audit does). */
    sb_status (*audit)(sb_host_ctx* ctx, const char* event, const char* record_id,
                       const char* detail);

    /* --- record shapes (ABI 1.2) ------------------------------------------ */

    /* A source whose records mostly have the same fields (the lines of one
     * export, the rows of one query) may register that shape once and then
     * set a whole record's fields in one call: the host checks, canonicalises
     * and orders the paths at registration instead of for every record.
     *
     * shape_new registers `n` field paths (any valid spelling, any order)
     * with their data categories (`categories` may be NULL, and any element
     * NULL or "": "unknown"). Copies. Returns NULL, registering nothing,
     * when a path is malformed or two of them name the same leaf or
     * conflict (one inside the other): set such a record's fields one by
     * one with record_set, which says which. The shape stays valid until
     * shape_free (NULL: nothing), and records set with it do not depend on
     * it. Any thread; a shape may be used by several threads at once.
     *
     * record_set_shape sets `values[i]` at `paths[i]` (as registered) with
     * its category, on a record that has no fields yet: the same as calling
     * record_set for each, in one call. SB_ERR_INVALID, setting nothing, if
     * the record already has fields or a value is one record_set refuses.
     * Switchboard redacts card data in the values as it sets them, as the
     * journal would at ingest.
     *
     * Added in ABI 1.2: check SB_HAS_FIELD(host, sb_host_api,
     * record_set_shape) before using them. */
    sb_shape* (*shape_new)(const char* const* paths, const char* const* categories, size_t n);
    void (*shape_free)(sb_shape* shape);
    sb_status (*record_set_shape)(sb_record* record, const sb_shape* shape,
                                  const sb_value* values);

    /* --- emitting ahead (ABI 1.3) ------------------------------------------ */

    /* emit_batch in two steps, so that a source can read its next batch
     * while the last one commits. emit_begin takes the records (ownership of
     * every one, whatever the result) and the cursor as emit_batch does, and
     * returns once the host has them, before the commit: SB_OK and *ticket
     * set; or SB_ERR_UNAVAILABLE / SB_ERR_INVALID, nothing handed over and
     * no ticket. emit_wait(ticket) blocks until that batch is committed or
     * not and returns what emit_batch would have; `results` (may be NULL)
     * receives one status per record. Every ticket must be waited for, once;
     * an unknown ticket is SB_ERR_INVALID.
     *
     * A batch begun while an earlier batch of the same instance has not yet
     * been waited for commits only if that one does: a source that reads
     * ahead waits for its batches in order and, at the first that did not
     * commit, knows that none after it did either (and rewinds to it).
     * Batches commit in the order they were begun when one thread begins
     * them.
     *
     * Added in ABI 1.3: check SB_HAS_FIELD(host, sb_host_api, emit_wait)
     * before using them (sb::Host::can_emit_ahead does). */
    sb_status (*emit_begin)(sb_host_ctx* ctx, sb_record* const* records, size_t n,
                            const char* state_key, const char* state_value, uint64_t* ticket);
    sb_status (*emit_wait)(sb_host_ctx* ctx, uint64_t ticket, sb_status* results);
};

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SWITCHBOARD_PLUGIN_H */
