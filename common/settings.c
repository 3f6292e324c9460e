/*
 * settings.c — the cluster-settings registry, the normaliser for `PUT /_cluster/settings`
 * sections, and immutable, reference-counted snapshots of the resolved settings.
 *
 * The registry is one const table with a row per enum mlr_setting_id: the full dotted key, the
 * type (bool, int or double with inclusive bounds, time value, regex, regex list, string list),
 * the built-in default in canonical form, and whether a PUT may change it (static settings come
 * only from the config file). Parsing and checking are driven by a second table indexed by type,
 * so adding a setting is one row and needs no new code.
 *
 * Values move through three forms. Input JSON (nested or flat, booleans, numbers or strings) is
 * normalised into a *layer*: a flat object whose values are canonical strings, arrays of
 * strings, or JSON null for "reset". A *snapshot* resolves the layers (transient > persistent >
 * config > default) into typed values; regexes are compiled once per snapshot, anchored at both
 * ends at compile time (PCRE2_ANCHORED | PCRE2_ENDANCHORED, which gives Java's Matcher.matches()
 * semantics and still lets PCRE2 use the JIT), and shared read-only by every thread that holds a
 * reference. Each match allocates its own match data and runs under a match limit, so a regex can
 * never stall a worker; a regex that hits the limit simply does not match (fail closed).
 *
 * The same normaliser checks PUT input and the layers a snapshot is built from, so a hand-edited
 * config file or database row with a bad value is refused with the same reason a PUT would get.
 * Everything that comes from input is bounded: nesting depth (32), key length (1024 bytes), list
 * length (1024 elements), regex length (256 characters). Recursion follows only object nesting,
 * so it is bounded by the depth cap.
 *
 * Threading: normalise, apply, render and the constructors touch only their arguments; a snapshot
 * is immutable after mlr_settings_new() returns, so getters and matching are thread-safe. The
 * layer getters hand out the snapshot's own json-c objects, whose serialisation cache is not
 * thread-safe: render them (render makes deep copies) before serialising from another thread.
 * Numbers are parsed and printed with the C library, which assumes the "C" locale.
 *
 * Costs: normalising is linear in the input; building a snapshot compiles every regex of every
 * regex setting (microseconds each, once per settings change); a match runs the setting's
 * regexes in order until one matches, with one small allocation for the match data.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "common.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <pcre2.h>

#define MAX_DEPTH 32          /* object nesting levels in one section, the section included */
#define MAX_KEY_LEN 1024      /* bytes in one flattened key */
#define MAX_LIST_LEN 1024     /* elements in one list value */
#define MAX_REGEX_CHARS 256   /* characters (UTF-8 code points) in one regex */
#define MATCH_LIMIT 1000000   /* PCRE2 match limit per pattern per subject */
#define ML_PREFIX "plugins.ml_commons."

/* Regexes are UTF-8. A subject with invalid UTF-8 is matched without an error, but no pattern
 * item (not even `.`) matches the invalid bytes, so such a URL fails closed. \C is refused
 * because it can split a UTF-8 character. */
#define RX_OPTIONS                                                                                 \
    (PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C | PCRE2_ANCHORED |              \
     PCRE2_ENDANCHORED)

/* ------------------------------------------------------------------------------------------ */
/* The registry                                                                               */
/* ------------------------------------------------------------------------------------------ */

enum stype { T_BOOL, T_INT, T_DOUBLE, T_TIME, T_REGEX, T_REGEX_LIST, T_STR_LIST };

struct setting_def {
    const char *key;          /* full dotted key */
    enum stype type;
    int dynamic;              /* 1 = a PUT may change it; 0 = static (config file only) */
    int64_t min, max;         /* T_INT: inclusive bounds */
    double dmin, dmax;        /* T_DOUBLE: inclusive bounds */
    const char *def;          /* scalar types: the built-in default, canonical string */
    const char *const *list;  /* list types: the default, NULL-terminated; NULL = empty list */
    int find;                 /* T_REGEX: matches anywhere, case-insensitively (Java's
                               * Pattern.CASE_INSENSITIVE with Matcher.find()), not in full */
};

/* The allow-list ML Commons ships (mlcommons-reference.md §2.2). */
static const char *const trusted_endpoints[] = {
    "^https://runtime\\.sagemaker\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://api\\.sagemaker\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://api\\.openai\\.com/.*$",
    "^https://api\\.cohere\\.ai/.*$",
    "^https://api\\.deepseek\\.com/.*$",
    "^https://generativelanguage\\.googleapis\\.com/.*$",
    "^https://bedrock-runtime\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://bedrock-agent-runtime\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://bedrock\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://textract\\..*[a-z0-9-]\\.amazonaws\\.com$",
    "^https://comprehend\\..*[a-z0-9-]\\.amazonaws\\.com$",
    "^https://rekognition(-fips)?\\..*[a-z0-9-]\\.amazonaws\\.com$",
    NULL,
};
static const char *const eligible_roles[] = {"data", "ml", NULL};
static const char *const status_fields[] = {"status", "Status", "TransformJobStatus", NULL};

#define BOOL(k, d) {.key = (ML_PREFIX k), .type = T_BOOL, .dynamic = 1, .def = (d)}
#define INT(k, lo, hi, d)                                                                          \
    {.key = (ML_PREFIX k), .type = T_INT, .dynamic = 1, .min = (lo), .max = (hi), .def = (d)}
#define REGEX(k, d) {.key = (ML_PREFIX k), .type = T_REGEX, .dynamic = 1, .def = (d)}
/* ML Commons reads provider job statuses with find(), so "PartiallyCompleted" hits "completed". */
#define STATUS_REGEX(k, d)                                                                         \
    {.key = (ML_PREFIX k), .type = T_REGEX, .dynamic = 1, .def = (d), .find = 1}
#define LIST(k, t, dyn, l) {.key = (ML_PREFIX k), .type = (t), .dynamic = (dyn), .list = (l)}

static const struct setting_def registry[MLR_S__COUNT] = {
    [MLR_S_TRUSTED_ENDPOINTS] =
        LIST("trusted_connector_endpoints_regex", T_REGEX_LIST, 1, trusted_endpoints),
    [MLR_S_TRUSTED_PRIVATE_ENDPOINTS] =
        LIST("trusted_connector_private_endpoints_regex", T_REGEX_LIST, 1, NULL),
    [MLR_S_RESTRICTED_IP_PATTERNS] =
        LIST("connector.restricted_ip_patterns", T_REGEX_LIST, 0, NULL),
    [MLR_S_PRIVATE_IP_ENABLED] = BOOL("connector.private_ip_enabled", "false"),
    [MLR_S_CONNECTOR_ACCESS_CONTROL] = BOOL("connector_access_control_enabled", "false"),
    [MLR_S_MODEL_ACCESS_CONTROL] = BOOL("model_access_control_enabled", "false"),
    [MLR_S_REMOTE_INFERENCE_ENABLED] = BOOL("remote_inference.enabled", "true"),
    [MLR_S_AUTO_DEPLOY] = BOOL("model_auto_deploy.enable", "true"),
    [MLR_S_AUTO_REDEPLOY] = BOOL("model_auto_redeploy.enable", "true"),
    [MLR_S_AUTO_REDEPLOY_RETRIES] = INT("model_auto_redeploy.lifetime_retry_times", 0, 1000, "3"),
    [MLR_S_AUTO_REDEPLOY_RATIO] = {.key = ML_PREFIX "model_auto_redeploy_success_ratio",
                                   .type = T_DOUBLE, .dynamic = 1, .dmin = 0.0, .dmax = 1.0,
                                   .def = "0.8"},
    [MLR_S_SYNC_UP_INTERVAL] = INT("sync_up_job_interval_in_seconds", 0, 86400, "10"),
    [MLR_S_TASK_TIMEOUT] = INT("ml_task_timeout_in_seconds", 1, 86400, "600"),
    [MLR_S_MAX_REGISTER_TASKS] = INT("max_register_model_tasks_per_node", 0, 10, "10"),
    [MLR_S_MAX_DEPLOY_TASKS] = INT("max_deploy_model_tasks_per_node", 0, 10, "10"),
    [MLR_S_MAX_MODEL_ON_NODE] = INT("max_model_on_node", 0, 10000, "10"),
    [MLR_S_MAX_ML_TASK_PER_NODE] = INT("max_ml_task_per_node", 0, 10000, "10"),
    [MLR_S_ELIGIBLE_NODE_ROLE] = LIST("task_dispatcher.eligible_node_role.remote_model",
                                      T_STR_LIST, 1, eligible_roles),
    [MLR_S_ALLOW_CUSTOM_DEPLOY_PLAN] = BOOL("allow_custom_deployment_plan", "false"),
    [MLR_S_SAFE_DELETE_MODEL] = BOOL("safe_delete_model", "false"),
    [MLR_S_OFFLINE_BATCH_ENABLED] = BOOL("offline_batch_inference_enabled", "true"),
    [MLR_S_MAX_BATCH_TASKS] = INT("max_batch_inference_tasks", 0, 10000, "100"),
    [MLR_S_REMOTE_JOB_STATUS_FIELD] = LIST("remote_job.status_field", T_STR_LIST, 1, status_fields),
    [MLR_S_REMOTE_JOB_COMPLETED] =
        STATUS_REGEX("remote_job.status_regex.completed", "(complete|completed|partiallyCompleted)"),
    [MLR_S_REMOTE_JOB_CANCELLED] =
        STATUS_REGEX("remote_job.status_regex.cancelled", "(stopped|cancelled)"),
    [MLR_S_REMOTE_JOB_CANCELLING] =
        STATUS_REGEX("remote_job.status_regex.cancelling", "(stopping|cancelling)"),
    [MLR_S_REMOTE_JOB_EXPIRED] = STATUS_REGEX("remote_job.status_regex.expired", "(expired|timeout)"),
    [MLR_S_REMOTE_JOB_FAILED] = STATUS_REGEX("remote_job.status_regex.failed", "(failed)"),
    [MLR_S_MONITORING_REQUEST_COUNT] = INT("monitoring_request_count", 0, 10000000, "100"),
    [MLR_S_MASTER_KEY_CACHE_TTL] = {.key = ML_PREFIX "master_key_cache_ttl_minutes",
                                    .type = T_INT, .dynamic = 0, .min = 1, .max = 1440,
                                    .def = "5"},
    [MLR_S_MAX_JSON_SIZE] = INT("max_json_size", -1, 2147483647, "100000000"),
    [MLR_S_TASK_RETENTION] = {.key = "mlrelay.task_retention", .type = T_TIME, .dynamic = 1,
                              .def = "7d"},
    [MLR_S_BATCH_POLL_INTERVAL] = {.key = "mlrelay.batch_predict.poll_interval", .type = T_TIME,
                                   .dynamic = 1, .def = "60s"},
};

#undef BOOL
#undef INT
#undef REGEX
#undef STATUS_REGEX
#undef LIST

static const struct setting_def *lookup(const char *key)
{
    for (size_t i = 0; i < MLR_S__COUNT; i++) {
        if (strcmp(registry[i].key, key) == 0)
            return &registry[i];
    }
    return NULL;
}

const char *mlr_settings_key(enum mlr_setting_id id)
{
    assert((unsigned)id < MLR_S__COUNT);
    return registry[id].key;
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Where a reason goes: the caller's buffer (may be NULL/0, then reasons are dropped). */
struct errbuf {
    char *msg;
    size_t len;
};

static int fail(struct errbuf *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes a reason and returns MLR_EINVAL, so callers can `return fail(...)`. */
static int fail(struct errbuf *e, const char *fmt, ...)
{
    if (e->msg != NULL && e->len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, e->len, fmt, ap);
        va_end(ap);
    }
    return MLR_EINVAL;
}

/* Deep copy that treats OOM as fatal (house rule); NULL (JSON null) copies to NULL. */
static struct json_object *dup_json(struct json_object *src)
{
    struct json_object *dst = NULL;
    if (src == NULL)
        return NULL;
    if (json_object_deep_copy(src, &dst, NULL) != 0) {
        mlr_log(MLR_LOG_ERROR, "settings", "json_object_deep_copy failed");
        abort();
    }
    return dst;
}

/* Compact JSON text of @v for messages; valid until @v is freed or serialised again. */
static const char *json_text(struct json_object *v)
{
    return json_object_to_json_string_ext(v,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* Shortest text that reads back as @d, always with a '.' or exponent so it reads as a double
 * ("0.8", "1.0", "1e+20"); non-finite values are spelled the way Java spells them. */
static void format_double(double d, char out[40])
{
    if (isnan(d) || isinf(d)) {
        snprintf(out, 40, "%s", isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    if (strpbrk(out, ".e") == NULL)
        strcat(out, ".0");
}

/* Decimal text of a json-c integer, which may hold a value above INT64_MAX. */
static void format_int(struct json_object *v, char out[40])
{
    int64_t i = json_object_get_int64(v);
    if (i == INT64_MAX)
        snprintf(out, 40, "%" PRIu64, json_object_get_uint64(v));
    else
        snprintf(out, 40, "%" PRId64, i);
}

/* A strict decimal integer: optional sign, digits, nothing else, fits in int64_t. */
static int parse_int64(const char *s, int64_t *out)
{
    const char *p = s + (*s == '+' || *s == '-');
    if (*p == '\0')
        return MLR_EINVAL;
    for (const char *q = p; *q != '\0'; q++) {
        if (!isdigit((unsigned char)*q))
            return MLR_EINVAL;
    }
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return MLR_EINVAL;
    *out = v;
    return MLR_OK;
}

/* A finite double written without surrounding blanks. */
static int parse_finite(const char *s, double *out)
{
    char *end;
    if (*s == '\0' || isspace((unsigned char)*s))
        return MLR_EINVAL;
    double v = strtod(s, &end);
    if (*end != '\0' || !isfinite(v))
        return MLR_EINVAL;
    *out = v;
    return MLR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Regex checks: a single left-to-right scan over a pattern that PCRE2 already accepted.        */
/* ------------------------------------------------------------------------------------------ */

/*
 * The scan refuses back-references, recursion, the extended-syntax option (whose ignored
 * whitespace and comments would hide a quantifier from the scan) and nested quantifiers: a group
 * that holds a quantified item, directly or in a subgroup, and is itself followed by a quantifier
 * that can repeat it (max > 1). `(x+)?` is allowed because `?` cannot repeat; `(a+)+`, `(a*)*`,
 * `(a?)+` and `(a+){2}` are refused. Where the scan is unsure (exotic syntax inside character
 * classes) it errs towards seeing more structure, so it may refuse a safe pattern but should not
 * pass a nested quantifier; the match limit backs it up either way.
 */
struct rx_scan {
    const char *p, *end;                          /* cursor in the pattern */
    int depth;                                    /* groups open at the cursor */
    unsigned char inner[MAX_REGEX_CHARS + 1];     /* per open group: holds a quantified item */
    int atom;                                     /* the previous item can take a quantifier */
    int atom_inner;                               /* ...and is a group holding a quantified item */
};

/* The byte @i places after the cursor, or NUL past the end. */
static char at(const struct rx_scan *r, size_t i)
{
    if (r->p + i >= r->end)
        return '\0';
    return r->p[i];
}

/* The end of the escape sequence starting at the backslash @p. */
static const char *escape_end(const char *p, const char *end)
{
    if (end - p < 2)
        return end;
    if (p[1] == 'Q') {
        for (const char *q = p + 2; q + 1 < end; q++) {
            if (q[0] == '\\' && q[1] == 'E')
                return q + 2;
        }
        return end;
    }
    if (p[1] == 'c')
        return end - p < 3 ? end : p + 3;
    if (p[1] != '\0' && strchr("xoNpPu", p[1]) != NULL && end - p > 2 && p[2] == '{') {
        const char *close = memchr(p + 2, '}', (size_t)(end - p - 2));
        return close != NULL ? close + 1 : end;
    }
    return p + 2;
}

/* Length of a POSIX class name such as "[:alpha:]" at @q, or 0 when it is not one. */
static size_t posix_class_len(const char *q, const char *end)
{
    const char *s = q + 2;
    if (end - q < 2 || q[1] != ':')
        return 0;
    if (s < end && *s == '^')
        s++;
    while (s < end && islower((unsigned char)*s))
        s++;
    if (end - s >= 2 && s[0] == ':' && s[1] == ']')
        return (size_t)(s + 2 - q);
    return 0;
}

/* The end of the character class opening at @p. */
static const char *class_end(const char *p, const char *end)
{
    const char *q = p + 1;
    if (q < end && *q == '^')
        q++;
    if (q < end && *q == ']')
        q++;
    while (q < end && *q != ']') {
        size_t posix = *q == '[' ? posix_class_len(q, end) : 0;
        if (*q == '\\')
            q = escape_end(q, end);
        else
            q += posix > 0 ? posix : 1;
    }
    return q < end ? q + 1 : end;
}

/* Length of the quantifier at the cursor (0 when there is none); *max = -1 when unbounded. */
static size_t quantifier_len(const struct rx_scan *r, long *max)
{
    size_t i = 1;
    long lo = -1, hi = -1;
    int comma = 0;
    if (at(r, 0) == '*' || at(r, 0) == '+' || at(r, 0) == '?') {
        *max = at(r, 0) == '?' ? 1 : -1;
        return 1;
    }
    if (at(r, 0) != '{')
        return 0;
    for (; isdigit((unsigned char)at(r, i)) || (at(r, i) == ',' && !comma); i++) {
        long *n = comma ? &hi : &lo;
        if (at(r, i) == ',')
            comma = 1;
        else if (*n < 1000000) /* saturates: only "more than one" matters */
            *n = (*n < 0 ? 0 : *n) * 10 + (at(r, i) - '0');
    }
    if (at(r, i) != '}' || (lo < 0 && hi < 0))
        return 0;
    *max = comma ? hi : lo;
    return i + 1;
}

static const char *scan_quantifier(struct rx_scan *r, size_t len, long max)
{
    if (r->atom_inner && (max < 0 || max > 1))
        return "nested quantifiers are not allowed";
    r->inner[r->depth] = 1;
    r->p += len;
    if (r->p < r->end && (*r->p == '?' || *r->p == '+'))
        r->p++; /* lazy or possessive suffix */
    r->atom = 0;
    r->atom_inner = 0;
    return NULL;
}

/* "(?R)", "(?1)", "(?+1)", "(?-1)", "(?&name)", "(?P>name)": calls into a group. */
static int is_recursion(const struct rx_scan *r)
{
    char c = at(r, 2);
    if (at(r, 1) != '?')
        return 0;
    return c == 'R' || c == '&' || isdigit((unsigned char)c) ||
           ((c == '+' || c == '-') && isdigit((unsigned char)at(r, 3))) ||
           (c == 'P' && at(r, 3) == '>');
}

/* "(?x)", "(?xx)", "(?i-x:...)" and friends: option letters that include x. */
static int sets_extended(const struct rx_scan *r)
{
    if (at(r, 1) != '?')
        return 0;
    for (size_t i = 2;; i++) {
        char c = at(r, i);
        if (c == 'x')
            return 1;
        if (!isalpha((unsigned char)c) && c != '-' && c != '^')
            return 0;
    }
}

static const char *scan_open(struct rx_scan *r)
{
    if (at(r, 1) == '?' && at(r, 2) == '#') {
        const char *close = memchr(r->p, ')', (size_t)(r->end - r->p));
        r->p = close != NULL ? close + 1 : r->end; /* a comment */
        return NULL;
    }
    if (at(r, 1) == '?' && at(r, 2) == 'P' && at(r, 3) == '=')
        return "back-references are not allowed";
    if (is_recursion(r))
        return "recursive group calls are not allowed";
    if (sets_extended(r))
        return "the extended-syntax option (?x) is not allowed";
    if (r->depth >= MAX_REGEX_CHARS)
        return "groups are nested too deeply";
    r->inner[++r->depth] = 0;
    r->atom = 0;
    r->p++;
    return NULL;
}

static const char *scan_close(struct rx_scan *r)
{
    int inner = 0;
    if (r->depth > 0) {
        inner = r->inner[r->depth--];
        r->inner[r->depth] |= (unsigned char)inner;
    }
    r->atom = 1;
    r->atom_inner = inner;
    r->p++;
    return NULL;
}

/* Moves past one item of the pattern; returns why the pattern is refused, or NULL. */
static const char *scan_step(struct rx_scan *r)
{
    char c = at(r, 0);
    long max = 0;
    size_t qlen = r->atom ? quantifier_len(r, &max) : 0;
    if (qlen > 0)
        return scan_quantifier(r, qlen, max);
    if (c == '(')
        return scan_open(r);
    if (c == ')')
        return scan_close(r);
    if (c == '\\' && ((at(r, 1) >= '1' && at(r, 1) <= '9') || at(r, 1) == 'k' || at(r, 1) == 'g'))
        return "back-references are not allowed";
    if (c == '\\')
        r->p = escape_end(r->p, r->end);
    else if (c == '[')
        r->p = class_end(r->p, r->end);
    else
        r->p++;
    r->atom = !(c == '|' || c == '^' || c == '$');
    r->atom_inner = 0;
    return NULL;
}

static const char *regex_scan(const char *s, size_t len)
{
    struct rx_scan r;
    const char *why = NULL;
    memset(&r, 0, sizeof(r));
    r.p = s;
    r.end = s + len;
    while (why == NULL && r.p < r.end)
        why = scan_step(&r);
    return why;
}

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Typed values and the per-type parsers                                                      */
/* ------------------------------------------------------------------------------------------ */

struct value {
    int64_t num;          /* T_BOOL (0/1), T_INT, or T_TIME in milliseconds */
    double dbl;           /* T_DOUBLE */
    pcre2_code **re;      /* T_REGEX / T_REGEX_LIST: compiled patterns, owned */
    size_t nre;           /* entries used in re */
    struct json_object *list; /* T_STR_LIST: the effective list (one reference), else NULL */
};

static void value_cleanup(struct value *v)
{
    for (size_t i = 0; i < v->nre; i++)
        pcre2_code_free(v->re[i]);
    free(v->re);
    json_object_put(v->list);
    memset(v, 0, sizeof(*v));
}

static int parse_bool(const struct setting_def *d, const char *s, struct value *v,
                      struct errbuf *e)
{
    if (strcmp(s, "true") != 0 && strcmp(s, "false") != 0)
        return fail(e, "Failed to parse value [%s] for setting [%s] as only [true] or [false] "
                       "are allowed.",
                    s, d->key);
    v->num = s[0] == 't';
    return MLR_OK;
}

static int parse_int(const struct setting_def *d, const char *s, struct value *v, struct errbuf *e)
{
    int64_t n;
    if (parse_int64(s, &n) != MLR_OK)
        return fail(e, "Failed to parse value [%s] for setting [%s]", s, d->key);
    if (n < d->min)
        return fail(e, "Failed to parse value [%s] for setting [%s] must be >= %" PRId64, s,
                    d->key, d->min);
    if (n > d->max)
        return fail(e, "Failed to parse value [%s] for setting [%s] must be <= %" PRId64, s,
                    d->key, d->max);
    v->num = n;
    return MLR_OK;
}

static int parse_double(const struct setting_def *d, const char *s, struct value *v,
                        struct errbuf *e)
{
    double x;
    char bound[40];
    if (parse_finite(s, &x) != MLR_OK)
        return fail(e, "Failed to parse value [%s] for setting [%s]", s, d->key);
    if (x < d->dmin || x > d->dmax) {
        format_double(x < d->dmin ? d->dmin : d->dmax, bound);
        return fail(e, "Failed to parse value [%s] for setting [%s] must be %s %s", s, d->key,
                    x < d->dmin ? ">=" : "<=", bound);
    }
    v->dbl = x;
    return MLR_OK;
}

static int parse_time(const struct setting_def *d, const char *s, struct value *v,
                      struct errbuf *e)
{
    int64_t ms = 0;
    /* A bare "0" is the one unit-less time value OpenSearch accepts. */
    if (strcmp(s, "0") != 0 && mlr_parse_time_ms(s, 0, &ms) != MLR_OK)
        return fail(e,
                    "failed to parse setting [%s] with value [%s] as a time value: unit is "
                    "missing or unrecognized",
                    d->key, s);
    v->num = ms;
    return MLR_OK;
}

/* Compiles @s; on failure writes PCRE2's reason into @why and returns NULL. */
static pcre2_code *regex_compile(const char *s, size_t len, int find, char *why, size_t whylen)
{
    int code;
    PCRE2_SIZE offset;
    PCRE2_UCHAR msg[160];
    uint32_t opts = find ? (RX_OPTIONS & ~(uint32_t)(PCRE2_ANCHORED | PCRE2_ENDANCHORED)) |
                               PCRE2_CASELESS
                         : RX_OPTIONS;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)s, len, opts, &code, &offset, NULL);
    if (re == NULL) {
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        snprintf(why, whylen, "%s at offset %zu", (const char *)msg, (size_t)offset);
    }
    return re;
}

/* Checks and compiles one regex and appends it to v->re (sized by the caller). */
static int parse_regex(const struct setting_def *d, const char *s, struct value *v,
                       struct errbuf *e)
{
    char why[200];
    const char *reason = NULL;
    pcre2_code *re = NULL;
    size_t len = strlen(s);
    if (utf8_chars(s, len) > MAX_REGEX_CHARS) {
        snprintf(why, sizeof(why), "regex is longer than %d characters", MAX_REGEX_CHARS);
        reason = why;
    } else {
        re = regex_compile(s, len, d->find, why, sizeof(why));
        reason = re == NULL ? why : regex_scan(s, len);
    }
    if (reason != NULL) {
        pcre2_code_free(re);
        return fail(e, "Failed to parse value [%s] for setting [%s]: %s", s, d->key, reason);
    }
    /* JIT failure (e.g. no executable memory) just leaves the interpreter in charge. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    v->re[v->nre++] = re;
    return MLR_OK;
}

static int parse_string(const struct setting_def *d, const char *s, struct value *v,
                        struct errbuf *e)
{
    UNUSED(d);
    UNUSED(s);
    UNUSED(v);
    UNUSED(e);
    return MLR_OK;
}

/* Per type: whether values are lists, and how one scalar (or one list element) is parsed. */
static const struct type_ops {
    int is_list;
    int (*parse)(const struct setting_def *d, const char *s, struct value *v, struct errbuf *e);
} type_ops[] = {
    [T_BOOL] = {0, parse_bool},         [T_INT] = {0, parse_int},
    [T_DOUBLE] = {0, parse_double},     [T_TIME] = {0, parse_time},
    [T_REGEX] = {0, parse_regex},       [T_REGEX_LIST] = {1, parse_regex},
    [T_STR_LIST] = {1, parse_string},
};

/*
 * Parses the canonical value @canon (a string, or an array of strings for list types) of @d
 * into @v. On failure @v may hold partial results; the caller runs value_cleanup().
 */
static int parse_value(const struct setting_def *d, struct json_object *canon, struct value *v,
                       struct errbuf *e)
{
    const struct type_ops *ops = &type_ops[d->type];
    size_t n = ops->is_list ? json_object_array_length(canon) : 1;
    int rc = MLR_OK;
    assert(json_object_is_type(canon, ops->is_list ? json_type_array : json_type_string));
    memset(v, 0, sizeof(*v));
    if (d->type == T_REGEX || d->type == T_REGEX_LIST)
        v->re = mlr_xcalloc(n > 0 ? n : 1, sizeof(*v->re));
    if (d->type == T_STR_LIST)
        v->list = json_object_get(canon);
    if (!ops->is_list)
        return ops->parse(d, json_object_get_string(canon), v, e);
    for (size_t i = 0; i < n && rc == MLR_OK; i++)
        rc = ops->parse(d, json_object_get_string(json_object_array_get_idx(canon, i)), v, e);
    return rc;
}

/* The built-in default of @d in canonical form (new object). */
static struct json_object *default_json(const struct setting_def *d)
{
    if (!type_ops[d->type].is_list)
        return json_object_new_string(d->def);
    struct json_object *arr = json_object_new_array();
    for (const char *const *p = d->list; p != NULL && *p != NULL; p++)
        json_object_array_add(arr, json_object_new_string(*p)); /* consumes the string */
    return arr;
}

/* ------------------------------------------------------------------------------------------ */
/* Normalisation                                                                              */
/* ------------------------------------------------------------------------------------------ */

struct norm {
    const char *scope;        /* "persistent", "transient" or "config" (used in messages) */
    int config;               /* config-file layer: static keys allowed, node keys skipped */
    int drop_nulls;           /* building a layer: a null is "not set", not "reset" */
    struct json_object *out;  /* the flat result being built */
    struct errbuf err;
};

/* The canonical string of a JSON scalar (new object), or NULL when @v is not a scalar. */
static struct json_object *scalar_string(struct json_object *v)
{
    char num[40];
    switch (json_object_get_type(v)) {
    case json_type_boolean:
        return json_object_new_string(json_object_get_boolean(v) ? "true" : "false");
    case json_type_int:
        format_int(v, num);
        return json_object_new_string(num);
    case json_type_double:
        format_double(json_object_get_double(v), num);
        return json_object_new_string(num);
    case json_type_string:
        return json_object_new_string_len(json_object_get_string(v), json_object_get_string_len(v));
    default:
        return NULL;
    }
}

/* Canonicalises one scalar or list element; refuses objects, arrays, nulls and NUL bytes. */
static int canonical_scalar(struct norm *n, const char *key, struct json_object *v,
                            struct json_object **out)
{
    struct json_object *s = v != NULL ? scalar_string(v) : NULL;
    if (s == NULL)
        return fail(&n->err, "Failed to parse value [%s] for setting [%s]: list elements must "
                    "be strings, numbers or booleans", json_text(v), key);
    if (memchr(json_object_get_string(s), '\0', (size_t)json_object_get_string_len(s)) != NULL) {
        json_object_put(s);
        return fail(&n->err, "Failed to parse value for setting [%s]: values must not contain "
                    "NUL characters", key);
    }
    *out = s;
    return MLR_OK;
}

/* The canonical form of an input value: string, array of strings, or NULL for JSON null. */
static int canonical(struct norm *n, const char *key, struct json_object *v,
                     struct json_object **out)
{
    struct json_object *arr, *el = NULL;
    int rc = MLR_OK;
    *out = NULL;
    if (v == NULL)
        return MLR_OK;
    if (!json_object_is_type(v, json_type_array))
        return canonical_scalar(n, key, v, out);
    if (json_object_array_length(v) > MAX_LIST_LEN)
        return fail(&n->err, "Failed to parse value for setting [%s]: lists are limited to %d "
                    "elements", key, MAX_LIST_LEN);
    arr = json_object_new_array();
    for (size_t i = 0; i < json_object_array_length(v) && rc == MLR_OK; i++) {
        rc = canonical_scalar(n, key, json_object_array_get_idx(v, i), &el);
        if (rc == MLR_OK)
            json_object_array_add(arr, el); /* consumes el */
    }
    if (rc == MLR_OK)
        *out = arr;
    else
        json_object_put(arr);
    return rc;
}

/* Refuses "", ".a", "a." and "a..b", and keys already seen in this section. */
static int check_key(struct norm *n, const char *key)
{
    size_t len = strlen(key);
    if (len == 0 || key[0] == '.' || key[len - 1] == '.' || strstr(key, "..") != NULL)
        return fail(&n->err, "setting key [%s] must not be empty or contain empty segments",
                    key);
    if (json_object_object_get_ex(n->out, key, NULL))
        return fail(&n->err, "duplicate settings key [%s] found", key);
    return MLR_OK;
}

/* Finds @key's registry row (or NULL for an accepted unknown key); *skip for ignored keys. */
static int classify(struct norm *n, const char *key, const struct setting_def **def, int *skip)
{
    *def = lookup(key);
    *skip = 0;
    if (*def != NULL) {
        if (!(*def)->dynamic && !n->config)
            return fail(&n->err, "final %s setting [%s], not updateable", n->scope, key);
        return MLR_OK;
    }
    if (strncmp(key, ML_PREFIX, strlen(ML_PREFIX)) == 0)
        return MLR_OK;
    if (n->config && strncmp(key, "mlrelay.", strlen("mlrelay.")) != 0) {
        *skip = 1; /* a node setting (http.*, workers.*, tls.*): the config module owns it */
        return MLR_OK;
    }
    return fail(&n->err, "%s setting [%s], not recognized", n->scope, key);
}

/* Type-checks the canonical value *@canon of known setting @d (a string becomes a one-element
 * list for list settings). @raw is the input value, for messages. */
static int check_known(struct norm *n, const struct setting_def *d, struct json_object *raw,
                       struct json_object **canon)
{
    struct value v;
    int rc;
    int is_array = json_object_is_type(*canon, json_type_array);
    if (type_ops[d->type].is_list && !is_array) {
        struct json_object *arr = json_object_new_array();
        json_object_array_add(arr, *canon); /* consumes the string */
        *canon = arr;
    } else if (!type_ops[d->type].is_list && is_array) {
        return fail(&n->err, "Failed to parse value [%s] for setting [%s]", json_text(raw),
                    d->key);
    }
    rc = parse_value(d, *canon, &v, &n->err);
    value_cleanup(&v);
    return rc;
}

/* Checks one flattened key and its value and adds the canonical pair to n->out. */
static int add_entry(struct norm *n, const char *key, struct json_object *v)
{
    const struct setting_def *d = NULL;
    struct json_object *canon = NULL;
    int skip = 0;
    int rc = check_key(n, key);
    if (rc == MLR_OK)
        rc = classify(n, key, &d, &skip);
    if (rc != MLR_OK || skip || (v == NULL && n->drop_nulls))
        return rc;
    rc = canonical(n, key, v, &canon);
    if (rc == MLR_OK && d != NULL && canon != NULL)
        rc = check_known(n, d, v, &canon);
    if (rc == MLR_OK) {
        json_object_object_add(n->out, key, canon); /* consumes canon */
        canon = NULL;
    }
    json_object_put(canon);
    return rc;
}

/* Walks @obj (at nesting level @depth) appending each key to @path, joined with '.'. */
static int flatten(struct norm *n, struct json_object *obj, struct mlr_buf *path, int depth)
{
    struct json_object_iterator it = json_object_iter_begin(obj);
    struct json_object_iterator end = json_object_iter_end(obj);
    int rc = MLR_OK;
    for (; rc == MLR_OK && !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        struct json_object *v = json_object_iter_peek_value(&it);
        size_t mark = path->len;
        if (depth > 1)
            rc = mlr_buf_puts(path, ".");
        if (rc == MLR_OK)
            rc = mlr_buf_puts(path, json_object_iter_peek_name(&it));
        if (rc != MLR_OK)
            rc = fail(&n->err, "setting key [%.64s...] is longer than %d bytes",
                      path->data != NULL ? path->data : "", MAX_KEY_LEN);
        else if (json_object_is_type(v, json_type_object) && depth >= MAX_DEPTH)
            rc = fail(&n->err, "setting [%.64s] is nested more than %d levels deep", path->data,
                      MAX_DEPTH);
        else if (json_object_is_type(v, json_type_object))
            rc = flatten(n, v, path, depth + 1);
        else
            rc = add_entry(n, path->data, v);
        path->len = mark;
        if (path->data != NULL)
            path->data[mark] = '\0';
    }
    return rc;
}

/* Normalises @section into a new flat layer *@out (written only on success). */
static int normalize(struct norm *n, struct json_object *section, struct json_object **out)
{
    struct mlr_buf path;
    int rc = MLR_OK;
    mlr_buf_init(&path, MAX_KEY_LEN);
    n->out = json_object_new_object();
    if (section != NULL && !json_object_is_type(section, json_type_object))
        rc = fail(&n->err, "request body [%s] must be an object", n->scope);
    else if (section != NULL)
        rc = flatten(n, section, &path, 1);
    if (rc == MLR_OK) {
        *out = n->out;
        n->out = NULL; /* the caller owns the layer now */
    }
    json_object_put(n->out);
    mlr_buf_cleanup(&path);
    return rc;
}

int mlr_settings_normalize(struct json_object *section, const char *scope, struct json_object **out,
                           char *err, size_t errlen)
{
    struct norm n = {.scope = scope, .err = {err, errlen}};
    assert(scope != NULL);
    assert(out != NULL);
    n.config = strcmp(scope, "config") == 0; /* the config file may set static settings */
    return normalize(&n, section, out);
}

struct json_object *mlr_settings_layer_apply(struct json_object *layer, struct json_object *changes)
{
    struct json_object *out = layer != NULL ? dup_json(layer) : json_object_new_object();
    assert(json_object_is_type(out, json_type_object));
    assert(changes == NULL || json_object_is_type(changes, json_type_object));
    if (changes == NULL)
        return out;
    struct json_object_iterator it = json_object_iter_begin(changes);
    struct json_object_iterator end = json_object_iter_end(changes);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *key = json_object_iter_peek_name(&it);
        struct json_object *v = json_object_iter_peek_value(&it);
        if (v == NULL)
            json_object_object_del(out, key);
        else
            json_object_object_add(out, key, dup_json(v)); /* consumes the copy */
    }
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* Snapshots                                                                                  */
/* ------------------------------------------------------------------------------------------ */

struct mlr_settings {
    atomic_int refs;                  /* references; freed when it drops to zero */
    struct json_object *config;       /* normalised copies of the layers, never NULL */
    struct json_object *persistent;
    struct json_object *transient;
    pcre2_match_context *mctx;        /* match limit; read-only, shared by all matches */
    struct value v[MLR_S__COUNT];     /* effective typed value of every registry setting */
};

static void settings_free(struct mlr_settings *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < MLR_S__COUNT; i++)
        value_cleanup(&s->v[i]);
    json_object_put(s->config);
    json_object_put(s->persistent);
    json_object_put(s->transient);
    pcre2_match_context_free(s->mctx);
    free(s);
}

/* Validates @layer and stores its normalised copy in *@out. */
static int load_layer(struct json_object *layer, const char *scope, struct json_object **out,
                      struct errbuf *e)
{
    struct norm n = {.scope = scope, .drop_nulls = 1, .err = *e};
    n.config = strcmp(scope, "config") == 0;
    return normalize(&n, layer, out);
}

/* Resolves registry setting @id (transient > persistent > config > default) into s->v[id]. */
static int resolve(struct mlr_settings *s, size_t id, struct errbuf *e)
{
    const struct setting_def *d = &registry[id];
    struct json_object *layers[] = {s->transient, s->persistent, s->config};
    struct json_object *val = NULL, *def = NULL;
    int rc;
    for (size_t i = 0; i < sizeof(layers) / sizeof(layers[0]) && val == NULL; i++)
        json_object_object_get_ex(layers[i], d->key, &val);
    if (val == NULL)
        val = def = default_json(d);
    rc = parse_value(d, val, &s->v[id], e);
    json_object_put(def);
    return rc;
}

int mlr_settings_new(struct json_object *config, struct json_object *persistent,
                     struct json_object *transient, struct mlr_settings **out, char *err,
                     size_t errlen)
{
    struct errbuf e = {err, errlen};
    struct mlr_settings *s = mlr_xcalloc(1, sizeof(*s));
    int rc = MLR_ENOMEM;
    assert(out != NULL);
    atomic_init(&s->refs, 1);
    s->mctx = pcre2_match_context_create(NULL);
    if (s->mctx == NULL)
        goto out;
    pcre2_set_match_limit(s->mctx, MATCH_LIMIT);
    rc = load_layer(config, "config", &s->config, &e);
    if (rc == MLR_OK)
        rc = load_layer(persistent, "persistent", &s->persistent, &e);
    if (rc == MLR_OK)
        rc = load_layer(transient, "transient", &s->transient, &e);
    for (size_t id = 0; id < MLR_S__COUNT && rc == MLR_OK; id++)
        rc = resolve(s, id, &e);
    if (rc == MLR_OK) {
        *out = s;
        s = NULL; /* the caller owns the snapshot now */
    }
out:
    settings_free(s);
    return rc;
}

struct mlr_settings *mlr_settings_ref(struct mlr_settings *s)
{
    assert(s != NULL);
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void mlr_settings_unref(struct mlr_settings *s)
{
    if (s == NULL)
        return;
    /* acq_rel: every thread's reads happen before the free that the last release performs. */
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        settings_free(s);
}

struct json_object *mlr_settings_persistent(const struct mlr_settings *s)
{
    assert(s != NULL);
    return s->persistent;
}

struct json_object *mlr_settings_transient(const struct mlr_settings *s)
{
    assert(s != NULL);
    return s->transient;
}

struct json_object *mlr_settings_config(const struct mlr_settings *s)
{
    assert(s != NULL);
    return s->config;
}

/* The typed value of @id, which must be of type @t. */
static const struct value *typed(const struct mlr_settings *s, enum mlr_setting_id id,
                                 enum stype t)
{
    assert(s != NULL);
    assert((unsigned)id < MLR_S__COUNT);
    assert(registry[id].type == t);
    UNUSED(t);
    return &s->v[id];
}

int mlr_settings_bool(const struct mlr_settings *s, enum mlr_setting_id id)
{
    return typed(s, id, T_BOOL)->num != 0;
}

int64_t mlr_settings_int(const struct mlr_settings *s, enum mlr_setting_id id)
{
    return typed(s, id, T_INT)->num;
}

double mlr_settings_double(const struct mlr_settings *s, enum mlr_setting_id id)
{
    return typed(s, id, T_DOUBLE)->dbl;
}

int64_t mlr_settings_time_ms(const struct mlr_settings *s, enum mlr_setting_id id)
{
    return typed(s, id, T_TIME)->num;
}

int mlr_settings_match(const struct mlr_settings *s, enum mlr_setting_id id, const char *subject,
                       size_t len)
{
    const struct value *v;
    pcre2_match_data *md;
    int hit = 0;
    assert(s != NULL && (unsigned)id < MLR_S__COUNT);
    assert(registry[id].type == T_REGEX || registry[id].type == T_REGEX_LIST);
    assert(subject != NULL || len == 0);
    v = &s->v[id];
    if (v->nre == 0)
        return 0;
    md = pcre2_match_data_create(1, NULL);
    if (md == NULL)
        return 0; /* fail closed: no match data, no match */
    for (size_t i = 0; i < v->nre && !hit; i++)
        hit = pcre2_match(v->re[i], (PCRE2_SPTR)(subject != NULL ? subject : ""), len, 0, 0, md,
                          s->mctx) >= 0;
    pcre2_match_data_free(md);
    return hit;
}

struct json_object *mlr_settings_strings(const struct mlr_settings *s, enum mlr_setting_id id)
{
    return typed(s, id, T_STR_LIST)->list;
}

size_t mlr_settings_list_len(const struct mlr_settings *s, enum mlr_setting_id id)
{
    assert(s != NULL && (unsigned)id < MLR_S__COUNT);
    assert(registry[id].type == T_REGEX || registry[id].type == T_REGEX_LIST);
    return s->v[id].nre;
}

/* ------------------------------------------------------------------------------------------ */
/* Rendering                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Places @val under the dotted @key, creating objects per segment. When a segment is already a
 * leaf (the layer holds both "a.b" and "a.b.c"), the rest of the key stays flat at that level
 * ("b.c" inside "a"), so nothing is lost. Keys arrive sorted, so a leaf always comes before the
 * longer keys it prefixes and a leaf name never meets an object of the same name.
 */
static void render_insert(struct json_object *root, const char *key, struct json_object *val)
{
    struct json_object *cur = root, *child;
    const char *seg = key;
    for (const char *dot = strchr(seg, '.'); dot != NULL; dot = strchr(seg, '.')) {
        char *name = mlr_xstrndup(seg, (size_t)(dot - seg));
        child = NULL;
        if (!json_object_object_get_ex(cur, name, &child)) {
            child = json_object_new_object();
            json_object_object_add(cur, name, child); /* consumes child; cur keeps it */
        }
        free(name);
        if (!json_object_is_type(child, json_type_object))
            break; /* a leaf holds this prefix: keep the rest of the key flat here */
        cur = child;
        seg = dot + 1;
    }
    json_object_object_add(cur, seg, val); /* consumes val */
}

struct json_object *mlr_settings_render(struct json_object *layer, int flat)
{
    struct json_object *out = json_object_new_object();
    size_t n = layer != NULL ? (size_t)json_object_object_length(layer) : 0, i = 0;
    const char **keys = mlr_xcalloc(n > 0 ? n : 1, sizeof(*keys));
    assert(layer == NULL || json_object_is_type(layer, json_type_object));
    if (layer != NULL) {
        struct json_object_iterator it = json_object_iter_begin(layer);
        struct json_object_iterator end = json_object_iter_end(layer);
        for (; !json_object_iter_equal(&it, &end) && i < n; json_object_iter_next(&it))
            keys[i++] = json_object_iter_peek_name(&it);
    }
    qsort(keys, i, sizeof(*keys), cmp_keys);
    for (size_t k = 0; k < i; k++) {
        struct json_object *val = dup_json(json_object_object_get(layer, keys[k]));
        if (flat)
            json_object_object_add(out, keys[k], val); /* consumes val */
        else
            render_insert(out, keys[k], val); /* consumes val */
    }
    free(keys);
    return out;
}

struct json_object *mlr_settings_defaults(const struct mlr_settings *s)
{
    struct json_object *out = json_object_new_object();
    assert(s != NULL);
    for (size_t id = 0; id < MLR_S__COUNT; id++) {
        const struct setting_def *d = &registry[id];
        struct json_object *val = NULL;
        if (json_object_object_get_ex(s->persistent, d->key, NULL) ||
            json_object_object_get_ex(s->transient, d->key, NULL))
            continue;
        if (json_object_object_get_ex(s->config, d->key, &val))
            val = dup_json(val);
        else
            val = default_json(d);
        json_object_object_add(out, d->key, val); /* consumes val */
    }
    return out;
}
