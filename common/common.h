/*
 * common.h — the leaf module every other module may use: the error space, logging, allocation,
 * growable buffers, a per-request arena, clocks, ID generation, the cluster-settings registry and
 * the metrics primitives (histograms, Prometheus text, sample rings).
 *
 * common/ includes no other mlrelay module. Everything here is thread-safe unless a comment says
 * otherwise.
 */
#ifndef MLR_COMMON_H
#define MLR_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define MLR_VERSION "0.1.0"
#define MLR_API_LEVEL "2.19.0" /* the ML Commons API level we answer as (GET /) */

#define UNUSED(x) ((void)(x))

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * The one error space of the project. Foreign codes (SQLite rc, CURLcode, uv/errno) are translated
 * into these at the module boundary that meets them, and nowhere else.
 */
#define MLR_ERR_MAP(XX)                                                                         \
    XX(EINVAL, -1, "invalid argument")                                                         \
    XX(ENOTFOUND, -2, "not found")                                                              \
    XX(EEXIST, -3, "already exists")                                                            \
    XX(ECONFLICT, -4, "conflicts with the current state")                                       \
    XX(ENOMEM, -5, "out of memory")                                                             \
    XX(EIO, -6, "i/o error")                                                                    \
    XX(ENOSPC, -7, "no space left on device")                                                   \
    XX(EBUSY, -8, "resource busy")                                                              \
    XX(ETOOBIG, -9, "too large")                                                                \
    XX(ETIMEDOUT, -10, "timed out")                                                             \
    XX(ECORRUPT, -11, "corrupt data")                                                           \
    XX(ETOONEW, -12, "database is newer than this binary")                                     \
    XX(ECLOSED, -13, "closed")                                                                  \
    XX(EPERM, -14, "permission denied")                                                         \
    XX(EAGAIN, -15, "try again")                                                                \
    XX(EINTERNAL, -16, "internal error")

typedef enum mlr_err {
    MLR_OK = 0,
#define XX(name, code, msg) MLR_##name = (code),
    MLR_ERR_MAP(XX)
#undef XX
} mlr_err;

/** Returns a static, human-readable description of @err ("unknown error" when not ours). */
const char *mlr_strerror(int err);

/** Returns the static symbolic name of @err ("MLR_EINVAL"), or "MLR_UNKNOWN". */
const char *mlr_err_name(int err);

/* ------------------------------------------------------------------------------------------ */
/* Logging                                                                                    */
/* ------------------------------------------------------------------------------------------ */

enum mlr_log_level { MLR_LOG_DEBUG = 0, MLR_LOG_INFO, MLR_LOG_WARN, MLR_LOG_ERROR };
enum mlr_log_format { MLR_LOG_TEXT = 0, MLR_LOG_JSON };

/**
 * Sets the process-wide log threshold and line format. Call once from main() before threads
 * start; later calls race with loggers only benignly (a line may use the old format).
 */
void mlr_log_setup(enum mlr_log_level level, enum mlr_log_format format);

/** Parses "debug|info|warn|error" into @out. Returns MLR_OK or MLR_EINVAL (@out untouched). */
int mlr_log_level_parse(const char *s, enum mlr_log_level *out);

/** Parses "text|json" into @out. Returns MLR_OK or MLR_EINVAL (@out untouched). */
int mlr_log_format_parse(const char *s, enum mlr_log_format *out);

/** Returns non-zero when a line at @level would be written. */
int mlr_log_enabled(enum mlr_log_level level);

/**
 * Writes one structured event to stderr as a single line: a timestamp, the level, the component
 * (@comp, e.g. "http", "store"), the message, then @nkv key/value pairs from @kv
 * (kv[0]=key, kv[1]=value, ...). Text format: `ts level comp: msg key=value ...`; JSON format:
 * one object per line. Thread-safe: a line is written with one write(2).
 */
void mlr_log_kv(enum mlr_log_level level, const char *comp, const char *msg, const char *const *kv,
                size_t nkv);

/** printf-style convenience over mlr_log_kv() with no extra fields. */
void mlr_log(enum mlr_log_level level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------------------------------------ */
/* Allocation: allocate or abort (OOM is not survivable; SQLite is the durability boundary).   */
/* ------------------------------------------------------------------------------------------ */

void *mlr_xmalloc(size_t n);
void *mlr_xcalloc(size_t count, size_t size);
void *mlr_xrealloc(void *p, size_t n);
char *mlr_xstrdup(const char *s);
char *mlr_xstrndup(const char *s, size_t n);
/** printf into a fresh heap string the caller frees. */
char *mlr_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------------------------------------ */
/* Buffers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/*
 * A growable byte buffer with a hard cap, so no input can make it grow without bound. The data is
 * always NUL-terminated (the terminator is not counted in len).
 */
struct mlr_buf {
    char *data;   /* heap bytes, NULL while empty */
    size_t len;   /* bytes used, excluding the NUL */
    size_t cap;   /* bytes allocated */
    size_t max;   /* hard cap on len; 0 = unlimited */
};

/** Initialises @b empty with hard cap @max bytes (0 = unlimited). */
void mlr_buf_init(struct mlr_buf *b, size_t max);
/** Frees the bytes; @b stays usable (empty, same cap). Accepts a zeroed struct. */
void mlr_buf_cleanup(struct mlr_buf *b);
/** Drops the contents but keeps the allocation. */
void mlr_buf_reset(struct mlr_buf *b);
/** Appends @n bytes. Returns MLR_OK or MLR_ETOOBIG (nothing appended) past the cap. */
int mlr_buf_append(struct mlr_buf *b, const void *p, size_t n);
/** Appends a NUL-terminated string. Same returns as mlr_buf_append(). */
int mlr_buf_puts(struct mlr_buf *b, const char *s);
/** Appends formatted text. Same returns as mlr_buf_append(). */
int mlr_buf_printf(struct mlr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Removes the first @n bytes (n <= len), moving the rest down. */
void mlr_buf_consume(struct mlr_buf *b, size_t n);

/* ------------------------------------------------------------------------------------------ */
/* Arena: many small allocations released together (one per HTTP request).                     */
/* ------------------------------------------------------------------------------------------ */

struct mlr_pool_chunk;
struct mlr_pool {
    struct mlr_pool_chunk *_head; /* newest chunk first */
};

/** Initialises an empty pool (no allocation yet). */
void mlr_pool_init(struct mlr_pool *p);
/** Frees every allocation made from @p; the pool is reusable afterwards. */
void mlr_pool_cleanup(struct mlr_pool *p);
/** Returns @n bytes aligned for any type, valid until mlr_pool_cleanup(). Aborts on OOM. */
void *mlr_pool_alloc(struct mlr_pool *p, size_t n);
/** Copies @n bytes of @s into the pool and NUL-terminates the copy. */
char *mlr_pool_strndup(struct mlr_pool *p, const char *s, size_t n);
/** Copies a NUL-terminated string into the pool. */
char *mlr_pool_strdup(struct mlr_pool *p, const char *s);

/* ------------------------------------------------------------------------------------------ */
/* Clocks and IDs                                                                             */
/* ------------------------------------------------------------------------------------------ */

/** Wall clock, epoch milliseconds (the timestamps clients see). */
int64_t mlr_now_ms(void);
/** Monotonic clock in milliseconds (for timeouts and durations; unrelated to the epoch). */
int64_t mlr_mono_ms(void);

#define MLR_ID_LEN 20
/**
 * Writes a fresh 20-character URL-safe base64 ID (15 random bytes from the OpenSSL CSPRNG) and a
 * NUL into @out. Returns MLR_OK or MLR_EIO when the CSPRNG fails.
 */
int mlr_id_new(char out[MLR_ID_LEN + 1]);

/**
 * Parses an OpenSearch byte-size value ("100mb", "16kb", "1g", "512", "10b") into @out bytes.
 * Units are case-insensitive b, k/kb, m/mb, g/gb, t/tb (powers of 1024). Returns MLR_EINVAL
 * for anything else, including negative values and overflow.
 */
int mlr_parse_bytes(const char *s, int64_t *out);

/**
 * Parses an OpenSearch time value ("60s", "500ms", "7d", "1h", "30m") into @out milliseconds.
 * A bare number is rejected, as OpenSearch does, unless @bare_unit_ms is non-zero, in which case
 * it is multiplied by it. Returns MLR_OK or MLR_EINVAL.
 */
int mlr_parse_time_ms(const char *s, int64_t bare_unit_ms, int64_t *out);

/* ------------------------------------------------------------------------------------------ */
/* Cluster settings (`/_cluster/settings`): the registry of known keys and immutable snapshots. */
/* ------------------------------------------------------------------------------------------ */

/*
 * A settings *layer* is a json-c object with flat dotted keys whose values are canonical: a JSON
 * string, or a JSON array of strings for list settings (OpenSearch returns every value as a
 * string). Layers, lowest precedence first: built-in defaults < config file < persistent (stored)
 * < transient (memory only).
 *
 * A *snapshot* (struct mlr_settings) is the resolved, typed, immutable view of all layers, with
 * regex lists compiled (PCRE2, JIT). It is reference counted so any thread may hold one while the
 * loop thread swaps in a newer one after a PUT commits.
 */
struct json_object;
struct mlr_settings;

/* Known settings that code reads. Keys are in the registry table in common/settings.c. */
enum mlr_setting_id {
    MLR_S_TRUSTED_ENDPOINTS = 0,      /* plugins.ml_commons.trusted_connector_endpoints_regex */
    MLR_S_TRUSTED_PRIVATE_ENDPOINTS,  /* ...trusted_connector_private_endpoints_regex */
    MLR_S_RESTRICTED_IP_PATTERNS,     /* ...connector.restricted_ip_patterns (static) */
    MLR_S_PRIVATE_IP_ENABLED,         /* ...connector.private_ip_enabled */
    MLR_S_CONNECTOR_ACCESS_CONTROL,   /* ...connector_access_control_enabled */
    MLR_S_MODEL_ACCESS_CONTROL,       /* ...model_access_control_enabled */
    MLR_S_REMOTE_INFERENCE_ENABLED,   /* ...remote_inference.enabled */
    MLR_S_AUTO_DEPLOY,                /* ...model_auto_deploy.enable */
    MLR_S_AUTO_REDEPLOY,              /* ...model_auto_redeploy.enable */
    MLR_S_AUTO_REDEPLOY_RETRIES,      /* ...model_auto_redeploy.lifetime_retry_times */
    MLR_S_AUTO_REDEPLOY_RATIO,        /* ...model_auto_redeploy_success_ratio */
    MLR_S_SYNC_UP_INTERVAL,           /* ...sync_up_job_interval_in_seconds */
    MLR_S_TASK_TIMEOUT,               /* ...ml_task_timeout_in_seconds */
    MLR_S_MAX_REGISTER_TASKS,         /* ...max_register_model_tasks_per_node */
    MLR_S_MAX_DEPLOY_TASKS,           /* ...max_deploy_model_tasks_per_node */
    MLR_S_MAX_MODEL_ON_NODE,          /* ...max_model_on_node */
    MLR_S_MAX_ML_TASK_PER_NODE,       /* ...max_ml_task_per_node */
    MLR_S_ELIGIBLE_NODE_ROLE,         /* ...task_dispatcher.eligible_node_role.remote_model */
    MLR_S_ALLOW_CUSTOM_DEPLOY_PLAN,   /* ...allow_custom_deployment_plan */
    MLR_S_SAFE_DELETE_MODEL,          /* ...safe_delete_model */
    MLR_S_OFFLINE_BATCH_ENABLED,      /* ...offline_batch_inference_enabled */
    MLR_S_MAX_BATCH_TASKS,            /* ...max_batch_inference_tasks */
    MLR_S_REMOTE_JOB_STATUS_FIELD,    /* ...remote_job.status_field */
    MLR_S_REMOTE_JOB_COMPLETED,       /* ...remote_job.status_regex.completed */
    MLR_S_REMOTE_JOB_CANCELLED,       /* ...remote_job.status_regex.cancelled */
    MLR_S_REMOTE_JOB_CANCELLING,      /* ...remote_job.status_regex.cancelling */
    MLR_S_REMOTE_JOB_EXPIRED,         /* ...remote_job.status_regex.expired */
    MLR_S_REMOTE_JOB_FAILED,          /* ...remote_job.status_regex.failed */
    MLR_S_MONITORING_REQUEST_COUNT,   /* ...monitoring_request_count */
    MLR_S_MASTER_KEY_CACHE_TTL,       /* ...master_key_cache_ttl_minutes (static) */
    MLR_S_MAX_JSON_SIZE,              /* ...max_json_size */
    MLR_S_TASK_RETENTION,             /* mlrelay.task_retention (ours; time value, default 7d) */
    MLR_S_BATCH_POLL_INTERVAL,        /* mlrelay.batch_predict.poll_interval (ours; default 60s) */
    MLR_S__COUNT
};

/** Returns the full dotted key of @id (static string). */
const char *mlr_settings_key(enum mlr_setting_id id);

/**
 * Validates and canonicalises one section of a PUT body (the value of "persistent" or
 * "transient"; nested objects and flat dotted keys may be mixed) into a new flat layer @out whose
 * values are canonical or JSON null (= reset to default). @scope is "persistent" or "transient"
 * and only appears in messages. Known keys are type- and range-checked and regexes compiled;
 * unknown `plugins.ml_commons.*` keys are accepted as strings (or lists of strings); any other key
 * is refused. On failure returns MLR_EINVAL, writes the OpenSearch reason (e.g.
 * "persistent setting [x.y], not recognized") into @err, and leaves @out untouched.
 * The caller owns *@out (json_object_put()).
 * @scope "config" normalises the config-file layer instead: static settings are allowed there,
 * and keys outside `plugins.ml_commons.*` and `mlrelay.*` (node settings) are skipped.
 */
int mlr_settings_normalize(struct json_object *section, const char *scope, struct json_object **out,
                           char *err, size_t errlen);

/**
 * Applies a normalised change set @changes (from mlr_settings_normalize()) to a copy of @layer
 * (NULL = empty): string/array values replace, JSON null removes the key. Returns the new layer;
 * the caller owns it. @layer is not modified.
 */
struct json_object *mlr_settings_layer_apply(struct json_object *layer, struct json_object *changes);

/**
 * Builds a snapshot from the three layers (each may be NULL = empty; they are copied, not kept).
 * Returns MLR_OK, or MLR_EINVAL with a reason in @err if a value in a layer is invalid (only
 * possible for a hand-edited config file or database; PUT input is normalised first).
 */
int mlr_settings_new(struct json_object *config, struct json_object *persistent,
                     struct json_object *transient, struct mlr_settings **out, char *err,
                     size_t errlen);

/** Takes one more reference to @s and returns it. Thread-safe. */
struct mlr_settings *mlr_settings_ref(struct mlr_settings *s);
/** Drops one reference; frees at zero. Accepts NULL. Thread-safe. */
void mlr_settings_unref(struct mlr_settings *s);

/** The snapshot's copies of its layers (borrowed; valid while @s is referenced). */
struct json_object *mlr_settings_persistent(const struct mlr_settings *s);
struct json_object *mlr_settings_transient(const struct mlr_settings *s);
struct json_object *mlr_settings_config(const struct mlr_settings *s);

/** Effective typed values (transient > persistent > config > default). @id must have that type. */
int mlr_settings_bool(const struct mlr_settings *s, enum mlr_setting_id id);
int64_t mlr_settings_int(const struct mlr_settings *s, enum mlr_setting_id id);
double mlr_settings_double(const struct mlr_settings *s, enum mlr_setting_id id);
/** Time settings, in milliseconds. */
int64_t mlr_settings_time_ms(const struct mlr_settings *s, enum mlr_setting_id id);

/**
 * Returns 1 when @subject (of @len bytes) fully matches at least one regex of the regex-list or
 * regex setting @id, 0 otherwise (also for an empty list). The remote_job.status_regex.* settings
 * are the exception: like ML Commons they match anywhere in @subject, ignoring case. Thread-safe.
 */
int mlr_settings_match(const struct mlr_settings *s, enum mlr_setting_id id, const char *subject,
                       size_t len);

/**
 * The effective value of the string-list setting @id: a JSON array of strings, borrowed (valid
 * while @s is referenced). Thread-safe.
 */
struct json_object *mlr_settings_strings(const struct mlr_settings *s, enum mlr_setting_id id);

/** The number of compiled regexes of the regex or regex-list setting @id (0 for an empty list). */
size_t mlr_settings_list_len(const struct mlr_settings *s, enum mlr_setting_id id);

/**
 * Renders a flat layer for GET/PUT responses: nested objects (`{"plugins":{"ml_commons":{...}}}`)
 * unless @flat, values as strings / arrays of strings. Returns a new object the caller owns.
 */
struct json_object *mlr_settings_render(struct json_object *layer, int flat);

/**
 * Returns a new flat layer holding the effective default (config file value, else built-in
 * default) of every known setting that is set in neither the persistent nor the transient layer
 * of @s — the "defaults" section of `GET /_cluster/settings?include_defaults=true`.
 */
struct json_object *mlr_settings_defaults(const struct mlr_settings *s);

/* ------------------------------------------------------------------------------------------ */
/* Secrets at rest: the master key and AES-256-GCM sealing of credential values (crypto.c).   */
/* ------------------------------------------------------------------------------------------ */

#define MLR_MASTER_KEY_LEN 32 /* bytes (AES-256) */
#define MLR_MASTER_KEY_B64 44 /* characters of its padded base64 */
/* Largest plaintext (and context string) mlr_secret_encrypt() accepts, in bytes. */
#define MLR_SECRET_MAX_LEN ((size_t)16 << 20)

/**
 * Loads the master key into @key.
 *
 * When @env_b64 (the value of MLRELAY_MASTER_KEY) is non-NULL and non-empty it wins: it must be
 * standard padded base64 of exactly 32 bytes (trailing whitespace is ignored), else MLR_EINVAL;
 * the key file is then neither read nor created. Otherwise the key is read from
 * <@data_dir>/master.key (the same base64, trailing newline allowed). If that file does not exist,
 * 32 bytes from the OpenSSL CSPRNG are written to it with mode 0600, fsynced, and published with
 * link(2) so that concurrent starters, even in different processes, all end up with the one key
 * that won. A key file accessible by group or others is logged as a warning, not refused.
 *
 * Returns MLR_OK; MLR_EINVAL (bad @env_b64); MLR_ECORRUPT (the key file is malformed or not a
 * regular file); MLR_EIO or MLR_ENOSPC (file system or CSPRNG failure). On failure a message that
 * names the file but never contains key material is written to @err (@errlen bytes; NULL/0 allowed)
 * and @key is untouched. @data_dir must exist. Thread-safe.
 */
int mlr_master_key_load(const char *data_dir, const char *env_b64,
                        unsigned char key[MLR_MASTER_KEY_LEN], char *err, size_t errlen);

/**
 * Seals @len bytes of @plain (NULL allowed when @len is 0; embedded NULs are fine) under @key.
 *
 * *@out receives a new NUL-terminated string "v1:" + base64(nonce[12] || ciphertext || tag[16]),
 * AES-256-GCM with a fresh random nonce per call, so sealing the same value twice gives different
 * text. @aad is the value's context (e.g. "connector:<id>:<credential key>"); it is authenticated
 * but not stored, so mlr_secret_decrypt() must be given the same string. NULL means "".
 * The output is not secret: release it with free().
 *
 * Returns MLR_OK, MLR_ETOOBIG (@len or strlen(@aad) above MLR_SECRET_MAX_LEN), MLR_EIO (CSPRNG
 * failure) or MLR_EINTERNAL (OpenSSL failure); *@out is written only on success. Thread-safe.
 */
int mlr_secret_encrypt(const unsigned char key[MLR_MASTER_KEY_LEN], const char *aad,
                       const char *plain, size_t len, char **out);

/**
 * Opens @text produced by mlr_secret_encrypt() under the same @key and @aad.
 *
 * Returns MLR_OK; MLR_ECORRUPT when @text is not our format ("v1:" prefix, strict canonical
 * base64, at least 28 decoded bytes, no larger than encrypt can produce); MLR_EPERM when
 * authentication fails (wrong key, wrong context, or tampered/truncated data); MLR_EINTERNAL on an
 * OpenSSL failure. Unauthenticated bytes are never returned. On success *@out is a new heap copy
 * of the plaintext with a NUL after it and *@outlen (@outlen may be NULL) its length; release it
 * with mlr_secret_free(*out, *outlen). Nothing is written on failure. Thread-safe.
 */
int mlr_secret_decrypt(const unsigned char key[MLR_MASTER_KEY_LEN], const char *aad,
                       const char *text, char **out, size_t *outlen);

/** Wipes the first @len bytes of @p with OPENSSL_cleanse(), then frees it. Accepts NULL. */
void mlr_secret_free(char *p, size_t len);

/* Key rotation (`mlrelay rotate-master-key`): a fresh key is staged as master.key.new, the
 * database switches to it in one transaction, then the staged file replaces master.key. */

/** Fills @key with 32 fresh random bytes. MLR_OK or MLR_EIO. */
int mlr_master_key_new(unsigned char key[MLR_MASTER_KEY_LEN]);
/** Writes @key as base64 (MLR_MASTER_KEY_B64 characters and a NUL) to @out. */
void mlr_master_key_encode(const unsigned char key[MLR_MASTER_KEY_LEN],
                           char out[MLR_MASTER_KEY_B64 + 1]);
/** Writes @key to <@data_dir>/master.key.new (0600, fsynced). */
int mlr_master_key_stage(const char *data_dir, const unsigned char key[MLR_MASTER_KEY_LEN],
                         char *err, size_t errlen);
/** Reads a staged master.key.new into @key: MLR_OK, MLR_ENOTFOUND when there is none. */
int mlr_master_key_staged(const char *data_dir, unsigned char key[MLR_MASTER_KEY_LEN]);
/** Renames master.key.new over master.key (@keep) or removes it (!@keep); fsyncs the dir. */
int mlr_master_key_commit(const char *data_dir, int keep, char *err, size_t errlen);

/* PBKDF2-HMAC-SHA256 iterations of new password hashes (OWASP's 2023 figure). */
#define MLR_PASSWORD_ITERATIONS 600000

/**
 * Hashes @password for storage: "pbkdf2_sha256$<iterations>$<salt>$<hash>" with a fresh 16-byte
 * salt, into *@out (heap). @iterations <= 0 means MLR_PASSWORD_ITERATIONS. Slow by design (a few
 * hundred ms): never on the loop thread. Returns MLR_OK or MLR_EINTERNAL. Thread-safe.
 */
int mlr_password_hash(const char *password, int iterations, char **out);

/**
 * Checks @password against @stored (from mlr_password_hash()) in constant time: MLR_OK when it
 * matches, MLR_EPERM when not, MLR_EINVAL for a malformed @stored. As slow as hashing.
 */
int mlr_password_verify(const char *password, const char *stored);

/**
 * Decodes standard padded base64 @s[0..@n) into @out (room for @cap bytes; needs n / 4 * 3).
 * Returns MLR_OK with *@outlen, MLR_ETOOBIG when @cap is short, MLR_EINVAL for bad base64.
 */
int mlr_base64_decode(const char *s, size_t n, unsigned char *out, size_t cap, size_t *outlen);

/* ------------------------------------------------------------------------------------------ */
/* Metrics primitives (metrics.c): fixed-bucket histograms, Prometheus text rendering, a ring  */
/* of recent samples with percentiles, and process figures from /proc.                        */
/* ------------------------------------------------------------------------------------------ */

#define MLR_HIST_MAX_BOUNDS 24 /* most finite bucket bounds a histogram may have */

/*
 * A histogram with fixed bucket bounds over unsigned integer observations in a unit the owner
 * picks (microseconds for latencies, items for sizes); rendering scales to the exposed unit.
 * Fields are atomics so that any thread may read a histogram while its writer updates it:
 * mlr_histogram_observe() is for a histogram with one writing thread (it costs what plain
 * increments cost), mlr_histogram_observe_shared() for one with several.
 */
struct mlr_histogram {
    const uint64_t *bounds;                           /* ascending upper bounds (inclusive) */
    int nbounds;                                      /* entries of bounds */
    _Atomic uint64_t buckets[MLR_HIST_MAX_BOUNDS + 1]; /* per bucket, not cumulative; the last
                                                       * counts values above every bound */
    _Atomic uint64_t sum;                             /* sum of observations, owner's unit */
};

/** Latency bucket bounds in microseconds, 100 µs to 60 s (for the *_seconds histograms). */
extern const uint64_t mlr_metrics_latency_us[];
/** The number of entries of mlr_metrics_latency_us. */
extern const int mlr_metrics_latency_us_count;

/** Initialises @h empty with @nbounds (<= MLR_HIST_MAX_BOUNDS) bounds; @bounds must outlive @h. */
void mlr_histogram_init(struct mlr_histogram *h, const uint64_t *bounds, int nbounds);
/** Records @v. Only one thread may write @h this way; any thread may read it. */
void mlr_histogram_observe(struct mlr_histogram *h, uint64_t v);
/** Records @v with atomic read-modify-writes: any number of threads may write @h. */
void mlr_histogram_observe_shared(struct mlr_histogram *h, uint64_t v);
/** Adds the counts of @from into @into (same bounds). @into has one writer: the caller. */
void mlr_histogram_merge(struct mlr_histogram *into, const struct mlr_histogram *from);
/** The number of observations recorded in @h. */
uint64_t mlr_histogram_count(const struct mlr_histogram *h);
/**
 * The value below which fraction @q (0..1) of the observations fall, interpolated linearly
 * within its bucket (as Prometheus' histogram_quantile()); 0 when @h is empty; the highest bound
 * when the quantile falls above every bound.
 */
double mlr_histogram_quantile(const struct mlr_histogram *h, double q);

/*
 * Prometheus text exposition format (version 0.0.4). Every writer appends to @out; @labels is
 * a rendered label list without braces (`route="/x",code="200"`, built with
 * mlr_metrics_label()) or NULL/"" for none.
 */

/** Appends the "# HELP" and "# TYPE" lines of family @name (@type "counter", "gauge", ...). */
void mlr_metrics_family(struct mlr_buf *out, const char *name, const char *type,
                        const char *help);
/** Appends `key="value"` to the label list @labels (a comma first when it is not empty), with
 * the backslash, double quote and newline of @value escaped. */
void mlr_metrics_label(struct mlr_buf *labels, const char *key, const char *value);
/** Appends one sample line with an integer value. */
void mlr_metrics_u64(struct mlr_buf *out, const char *name, const char *labels, uint64_t v);
/** Appends one sample line with a floating-point value. */
void mlr_metrics_f64(struct mlr_buf *out, const char *name, const char *labels, double v);
/**
 * Appends the samples of histogram @h as family @name: cumulative `<name>_bucket{le=...}` lines
 * ending with le="+Inf", then `<name>_sum` and `<name>_count`. Bounds and the sum are divided
 * by @divisor (1e6 to expose microsecond observations as seconds; dividing, unlike multiplying
 * by 1e-6, keeps round values round).
 */
void mlr_metrics_histogram(struct mlr_buf *out, const char *name, const char *labels,
                           const struct mlr_histogram *h, double divisor);

#define MLR_SAMPLES_MAX 100000 /* most samples a ring keeps, whatever its owner asks for */

/*
 * The last N observations (a ring), for percentiles over a sliding window such as ML Commons'
 * monitoring_request_count. Not thread-safe: one thread owns a ring.
 */
struct mlr_samples {
    double *v;    /* heap ring of cap values */
    size_t cap;   /* capacity (values) */
    size_t n;     /* values held, <= cap */
    size_t next;  /* index the next value goes to */
};

/** Summary statistics over a ring (ML Commons' predict_request_stats). */
struct mlr_sample_stats {
    size_t count;
    double min, max, average, p50, p90, p99;
};

/** Initialises an empty ring (no allocation yet). */
void mlr_samples_init(struct mlr_samples *s);
/** Frees the ring; @s stays usable (empty). Accepts a zeroed struct. */
void mlr_samples_cleanup(struct mlr_samples *s);
/**
 * Appends @v to a ring holding at most @cap values (clamped to MLR_SAMPLES_MAX); when @cap
 * differs from the ring's capacity the ring is resized first, keeping the newest values. @cap 0
 * empties the ring and records nothing.
 */
void mlr_samples_push(struct mlr_samples *s, double v, size_t cap);
/** Sets the ring's capacity to @cap (clamped to MLR_SAMPLES_MAX), keeping the newest values;
 * 0 frees it. */
void mlr_samples_resize(struct mlr_samples *s, size_t cap);
/**
 * Computes count, min, max, average and the 50th/90th/99th percentiles (see mlr_percentile())
 * of the newest @last values held (all of them when fewer), so a window that was just shrunk
 * reports at once what its next push would keep. Returns 0 with @out filled, or -1 when there
 * is no value to summarise (an empty ring, or @last 0).
 */
int mlr_samples_stats(const struct mlr_samples *s, size_t last, struct mlr_sample_stats *out);
/**
 * The @p-th percentile (0..100) of @n ascending values, interpolating linearly between the
 * closest ranks at position p/100 * (n - 1) (the method behind the figures in ML Commons'
 * profile documentation). @n must be at least 1.
 */
double mlr_percentile(const double *sorted, size_t n, double p);

/** Resident set size of this process in bytes (/proc/self/statm), or -1. */
int64_t mlr_process_rss_bytes(void);
/** Open file descriptors of this process (/proc/self/fd), or -1. */
int64_t mlr_process_open_fds(void);

/* ------------------------------------------------------------------------------------------ */
/* Fault injection (fault.c; STYLE rule 29)                                                   */
/* ------------------------------------------------------------------------------------------ */

/** Places where a fault can be injected. */
enum mlr_fault_point {
    MLR_FAULT_DISK_WRITE = 0, /* a database write or truncate (store's SQLite VFS shim) */
    MLR_FAULT_DISK_SYNC,      /* a database fsync */
};

/** A fault seam: returns MLR_OK to let @point proceed, or the mlr_err it fails with. */
typedef int (*mlr_fault_fn)(enum mlr_fault_point point, void *data);

/** Installs @fn with @data (NULL = no faults). For tests; call before the threads that check
 * start, or accept that a check racing the swap sees either seam. Thread-safe. */
void mlr_fault_set(mlr_fault_fn fn, void *data);

/** MLR_OK, or the error the installed seam injects at @point. One atomic load when none is
 * installed. Thread-safe. */
int mlr_fault_check(enum mlr_fault_point point);

/**
 * Test builds only (-DMLR_FAULT_INJECTION=ON): when the environment names MLRELAY_FAULT_FILE,
 * installs a seam that fails every disk write while that file exists (its first word: "enospc",
 * the default, or "eio", which fails syncs too) and returns 1. Otherwise, and always in other
 * builds, does nothing and returns 0.
 */
int mlr_fault_env_install(void);

/** 1 when this build has the fault-injection seams compiled in (test builds). */
int mlr_fault_enabled(void);

#endif /* MLR_COMMON_H */
