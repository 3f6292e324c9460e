/*
 * connector.c — validating a connector and building the document we store for it.
 *
 * A connector body (standalone `_create`, the merged result of an update, or a model's inline
 * connector) goes through the checks of ML Commons in its order (reference §4.1): required
 * fields, protocol, credential, actions, dangerous header placeholders, SigV4 fields, the trusted
 * endpoint allow-list, access-control fields. The output is the canonical document clients get
 * back (parameters as strings, `version` as a string, action types upper-case, client_config with
 * every default filled in) and, separately, the plaintext credential map, which the caller
 * encrypts and stores beside the document, never inside it.
 *
 * Pure functions over json-c objects and an immutable settings snapshot: safe on any thread (an
 * update re-runs them on the store's writer thread).
 */
#include "workers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

/* ---------------------------------- value to string ---------------------------------- */

/* Java's Double.toString(): plain decimal in [1e-3, 1e7), else d.dddE±n; always a '.digit'. */
static void java_double(double d, char *out, size_t len)
{
    char tmp[40];
    if (isnan(d) || isinf(d)) {
        snprintf(out, len, "%s", isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
        return;
    }
    double a = fabs(d);
    int prec = 1;
    int sci = a != 0 && (a < 1e-3 || a >= 1e7);
    for (; prec <= 17; prec++) { /* shortest representation that reads back exactly */
        snprintf(tmp, sizeof(tmp), sci ? "%.*e" : "%.*g", sci ? prec - 1 : prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    if (!sci) {
        snprintf(tmp, sizeof(tmp), "%.*f", 17, d); /* then trim to the shortest exact form */
        for (int dec = 1; dec <= 17; dec++) {
            snprintf(tmp, sizeof(tmp), "%.*f", dec, d);
            if (strtod(tmp, NULL) == d)
                break;
        }
        snprintf(out, len, "%s", tmp);
        return;
    }
    char *e = strchr(tmp, 'e');
    int exp = atoi(e + 1);
    *e = '\0';
    snprintf(out, len, "%s%sE%d", tmp, strchr(tmp, '.') ? "" : ".0", exp);
}

char *workers_param_string(struct json_object *v)
{
    char num[48];
    switch (json_object_get_type(v)) {
    case json_type_null:
        return mlr_xstrdup("null");
    case json_type_string:
        return mlr_xstrdup(json_object_get_string(v));
    case json_type_double:
        java_double(json_object_get_double(v), num, sizeof(num));
        return mlr_xstrdup(num);
    default:
        return mlr_xstrdup(json_object_to_json_string_ext(
            v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    }
}

/* ---------------------------------- tables ---------------------------------- */

/* Built-in functions mlrelay runs (spec §6). Painless scripts are refused. */
static const char *const pre_functions[] = {
    "connector.pre_process.openai.embedding",  "connector.pre_process.default.embedding",
    "connector.pre_process.cohere.embedding",  "connector.pre_process.bedrock.embedding",
    "connector.pre_process.cohere.rerank",     "connector.pre_process.default.rerank",
    "connector.pre_process.bedrock.rerank",    NULL,
};
static const char *const post_functions[] = {
    "connector.post_process.openai.embedding",
    "connector.post_process.cohere.embedding",
    "connector.post_process.cohere_v2.embedding.float",
    "connector.post_process.cohere_v2.embedding.int8",
    "connector.post_process.cohere_v2.embedding.uint8",
    "connector.post_process.cohere_v2.embedding.binary",
    "connector.post_process.cohere_v2.embedding.ubinary",
    "connector.post_process.default.embedding",
    "connector.post_process.bedrock.embedding",
    "connector.post_process.cohere.rerank",
    "connector.post_process.default.rerank",
    "connector.post_process.bedrock.rerank",
    NULL,
};
static const char *const action_types[] = {"PREDICT", "BATCH_PREDICT", "BATCH_PREDICT_STATUS",
                                           "CANCEL_BATCH_PREDICT", "EXECUTE", NULL};
/* Headers that must not take request-time ${parameters.*} values (reference §4.2). */
static const char *const sensitive_headers[] = {
    "Authorization", "Proxy-Authorization", "Cookie", "X-API-Key", "X-Auth-Token",
    "X-Auth-Header", "Host", "X-Forwarded-Host", "X-Forwarded-Server", "X-Forwarded-For",
    "Forwarded", "X-Real-IP", "X-Client-IP", "CF-Connecting-IP", "True-Client-IP",
    "X-Originating-IP", NULL,
};

static int in_list(const char *const *list, const char *s, int nocase)
{
    for (; *list; list++) {
        if ((nocase ? strcasecmp(*list, s) : strcmp(*list, s)) == 0)
            return 1;
    }
    return 0;
}

int workers_function_known(const char *name, int post)
{
    return in_list(post ? post_functions : pre_functions, name, 0);
}

/* ---------------------------------- checks ---------------------------------- */

/* An error that the API returns as 400 illegal_argument_exception with @msg. */
#define fail(e, type, ...) workers_error_set((e), 400, (type), __VA_ARGS__)

#define IAE "illegal_argument_exception"

static struct json_object *get(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *get_str(struct json_object *o, const char *key)
{
    struct json_object *v = get(o, key);
    return v && !json_object_is_type(v, json_type_object) &&
                   !json_object_is_type(v, json_type_array)
               ? json_object_get_string(v)
               : NULL;
}

/* Renders @url replacing ${parameters.k} for the keys @params has; the rest stays literal. */
static char *render_url(const char *url, struct json_object *params)
{
    struct mlr_buf b;
    mlr_buf_init(&b, 64 * 1024);
    const char *p = url;
    while (*p) {
        const char *start = strstr(p, "${parameters.");
        const char *end = start ? strchr(start, '}') : NULL;
        if (start == NULL || end == NULL) {
            mlr_buf_puts(&b, p);
            break;
        }
        mlr_buf_append(&b, p, (size_t)(start - p));
        char key[256];
        size_t klen = (size_t)(end - start) - 13;
        snprintf(key, sizeof(key), "%.*s", (int)(klen < 255 ? klen : 255), start + 13);
        const char *val = get_str(params, key);
        if (val)
            mlr_buf_puts(&b, val);
        else
            mlr_buf_append(&b, start, (size_t)(end - start) + 1);
        p = end + 1;
    }
    char *out = mlr_xstrdup(b.data ? b.data : "");
    mlr_buf_cleanup(&b);
    return out;
}

int workers_url_trusted(struct mlr_settings *s, const char *url, struct workers_error *e)
{
    if (mlr_settings_match(s, MLR_S_TRUSTED_ENDPOINTS, url, strlen(url)))
        return MLR_OK;
    if (mlr_settings_list_len(s, MLR_S_TRUSTED_ENDPOINTS) == 0)
        return fail(e, IAE, "Trusted connector endpoints regex is not configured. Please set "
                            "plugins.ml_commons.trusted_connector_endpoints_regex.");
    return fail(e, IAE, "Connector URL is not matching the trusted connector endpoint regex");
}

/* Copies @src's values into a new object of strings (connector parameters, credential). */
static struct json_object *strings_of(struct json_object *src)
{
    struct json_object *out = json_object_new_object();
    json_object_object_foreach(src, k, v)
    {
        char *str = workers_param_string(v);
        json_object_object_add(out, k, json_object_new_string(str));
        free(str);
    }
    return out;
}

static int check_headers(struct json_object *headers, struct json_object *out,
                         struct workers_error *e)
{
    if (!json_object_is_type(headers, json_type_object))
        return fail(e, IAE, "headers must be an object of strings");
    json_object_object_foreach(headers, name, val)
    {
        char *v = workers_param_string(val);
        int bad = in_list(sensitive_headers, name, 1) && strstr(v, "${parameters.") != NULL;
        json_object_object_add(out, name, json_object_new_string(v));
        free(v);
        if (bad)
            return fail(e, IAE,
                        "Header '%s' cannot use ${parameters.*} placeholders for security "
                        "reasons. Use ${credential.*} instead.",
                        name);
    }
    return MLR_OK;
}

static int check_function(struct json_object *action, const char *key, int post,
                          struct json_object *out, struct workers_error *e)
{
    const char *name = get_str(action, key);
    if (name == NULL)
        return MLR_OK;
    if (!workers_function_known(name, post))
        return fail(e, IAE,
                    "Unsupported %s [%s]: mlrelay runs only the built-in connector functions "
                    "(Painless scripts are not supported)",
                    key, name);
    json_object_object_add(out, key, json_object_new_string(name));
    return MLR_OK;
}

static int check_action_type(struct json_object *action, struct json_object *out,
                             struct workers_error *e)
{
    const char *type = get_str(action, "action_type");
    if (type == NULL)
        return fail(e, IAE, "action type can't be null");
    char upper[64];
    size_t i = 0;
    for (; type[i] && i < sizeof(upper) - 1; i++)
        upper[i] = (char)(type[i] >= 'a' && type[i] <= 'z' ? type[i] - 32 : type[i]);
    upper[i] = '\0';
    if (!in_list(action_types, upper, 0) || type[i] != '\0')
        return fail(e, IAE, "No enum constant org.opensearch.ml.common.connector.ConnectorAction."
                            "ActionType.%s", upper);
    json_object_object_add(out, "action_type", json_object_new_string(upper));
    return MLR_OK;
}

/* Validates one action and appends its canonical form to @out_actions. */
static int check_action(struct json_object *a, struct json_object *out_actions,
                        struct workers_error *e)
{
    if (!json_object_is_type(a, json_type_object))
        return fail(e, IAE, "each action must be an object");
    struct json_object *out = json_object_new_object();
    json_object_array_add(out_actions, out); /* consumes out; we keep filling it */
    int rc = check_action_type(a, out, e);
    if (rc != MLR_OK)
        return rc;
    const char *method = get_str(a, "method"), *url = get_str(a, "url");
    if (method == NULL)
        return fail(e, IAE, "method can't be null");
    if (url == NULL)
        return fail(e, IAE, "url can't be null");
    json_object_object_add(out, "method", json_object_new_string(method));
    json_object_object_add(out, "url", json_object_new_string(url));
    struct json_object *headers = get(a, "headers");
    if (headers) {
        struct json_object *h = json_object_new_object();
        json_object_object_add(out, "headers", h); /* consumes h */
        if ((rc = check_headers(headers, h, e)) != MLR_OK)
            return rc;
    }
    struct json_object *body = get(a, "request_body");
    if (body && !json_object_is_type(body, json_type_null)) {
        char *text = workers_param_string(body);
        json_object_object_add(out, "request_body", json_object_new_string(text));
        free(text);
    }
    if ((rc = check_function(a, "pre_process_function", 0, out, e)) != MLR_OK)
        return rc;
    if ((rc = check_function(a, "post_process_function", 1, out, e)) != MLR_OK)
        return rc;
    const char *name = get_str(a, "name");
    if (name)
        json_object_object_add(out, "name", json_object_new_string(name));
    return MLR_OK;
}

static int has_key(struct json_object *o, const char *k)
{
    return o && get(o, k) != NULL;
}

static int check_sigv4(const char *protocol, struct json_object *params, struct json_object *cred,
                       struct workers_error *e)
{
    if (strcmp(protocol, "aws_sigv4") != 0)
        return MLR_OK;
    if (!has_key(cred, "access_key") || !has_key(cred, "secret_key"))
        return fail(e, IAE, "Missing credential");
    if (!has_key(params, "service_name") && !has_key(cred, "service_name"))
        return fail(e, IAE, "Missing service name");
    if (!has_key(params, "region") && !has_key(cred, "region"))
        return fail(e, IAE, "Missing region");
    return MLR_OK;
}

static int check_urls(struct json_object *actions, struct json_object *params,
                      struct mlr_settings *s, struct workers_error *e)
{
    size_t n = actions ? json_object_array_length(actions) : 0;
    if (n == 0)
        return fail(e, IAE, "No actions configured for this connector");
    for (size_t i = 0; i < n; i++) {
        char *url = render_url(get_str(json_object_array_get_idx(actions, i), "url"), params);
        int rc = workers_url_trusted(s, url, e);
        free(url);
        if (rc != MLR_OK)
            return rc;
    }
    return MLR_OK;
}

/* client_config with every default filled in, in ML Commons' order. */
static int check_client_config(struct json_object *cc, struct json_object **out,
                               struct workers_error *e)
{
    static const struct {
        const char *key;
        int64_t def;
    } ints[] = {{"max_connection", 30},     {"connection_timeout", 30}, {"read_timeout", 30},
                {"retry_backoff_millis", 200}, {"retry_timeout_seconds", 30},
                {"max_retry_times", 0}};
    if (!json_object_is_type(cc, json_type_object))
        return fail(e, IAE, "client_config must be an object");
    struct json_object *o = json_object_new_object();
    *out = o;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        struct json_object *v = get(cc, ints[i].key);
        if (v && !json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
            return fail(e, IAE, "client_config.%s must be a number", ints[i].key);
        json_object_object_add(o, ints[i].key, json_object_new_int64(v ? json_object_get_int64(v)
                                                                       : ints[i].def));
    }
    const char *policy = get_str(cc, "retry_backoff_policy");
    static const char *const policies[] = {"constant", "exponential_equal_jitter",
                                           "exponential_full_jitter", NULL};
    if (policy && !in_list(policies, policy, 1))
        return fail(e, IAE, "Unsupported retry backoff policy");
    char lower[32] = "constant";
    for (size_t i = 0; policy && policy[i] && i < sizeof(lower) - 1; i++)
        lower[i] = (char)(policy[i] >= 'A' && policy[i] <= 'Z' ? policy[i] + 32 : policy[i]),
        lower[i + 1] = '\0';
    json_object_object_add(o, "retry_backoff_policy", json_object_new_string(lower));
    struct json_object *skip = get(cc, "skip_ssl_verification");
    json_object_object_add(o, "skip_ssl_verification",
                           json_object_new_boolean(skip && json_object_get_boolean(skip)));
    json_object_object_add(o, "mutual_tls_enabled", json_object_new_boolean(0));
    return MLR_OK;
}

/* Required scalar fields, protocol and credential (the first checks of reference §4.1). */
static int check_basics(struct json_object *body, struct json_object *cred_keys,
                        struct json_object *doc, struct workers_error *e)
{
    const char *name = get_str(body, "name");
    struct json_object *version = get(body, "version");
    const char *protocol = get_str(body, "protocol");
    if (name == NULL)
        return fail(e, IAE, "Connector name is null");
    if (version == NULL || json_object_is_type(version, json_type_null))
        return fail(e, IAE, "Connector version is null");
    if (protocol == NULL)
        return fail(e, IAE, "Connector protocol is null");
    if (strcmp(protocol, "http") != 0 && strcmp(protocol, "aws_sigv4") != 0)
        return fail(e, IAE, "Unsupported connector protocol. Please use one of [aws_sigv4, http]");
    if (cred_keys == NULL || !json_object_is_type(cred_keys, json_type_object) ||
        json_object_object_length(cred_keys) == 0)
        return fail(e, IAE, "Connector credential is null or empty list");
    char *v = workers_param_string(version);
    json_object_object_add(doc, "name", json_object_new_string(name));
    json_object_object_add(doc, "version", json_object_new_string(v));
    free(v);
    const char *desc = get_str(body, "description");
    if (desc)
        json_object_object_add(doc, "description", json_object_new_string(desc));
    json_object_object_add(doc, "protocol", json_object_new_string(protocol));
    return MLR_OK;
}

static int check_parts(struct json_object *body, struct json_object *cred_keys,
                       struct mlr_settings *s, struct json_object *doc, struct workers_error *e)
{
    struct json_object *params = get(body, "parameters"), *actions = get(body, "actions");
    if (params && !json_object_is_type(params, json_type_object))
        return fail(e, IAE, "parameters must be an object");
    if (actions && !json_object_is_type(actions, json_type_array))
        return fail(e, IAE, "actions must be an array");
    struct json_object *p = params ? strings_of(params) : json_object_new_object();
    json_object_object_add(doc, "parameters", p); /* consumes p */
    struct json_object *acts = json_object_new_array();
    json_object_object_add(doc, "actions", acts); /* consumes acts */
    int rc = MLR_OK;
    for (size_t i = 0; actions && rc == MLR_OK && i < json_object_array_length(actions); i++)
        rc = check_action(json_object_array_get_idx(actions, i), acts, e);
    if (rc == MLR_OK)
        rc = check_sigv4(get_str(doc, "protocol"), p, cred_keys, e);
    if (rc == MLR_OK)
        rc = check_urls(acts, p, s, e);
    return rc; /* access fields are the caller's (workers_connector_access_set/_update) */
}

int workers_connector_build(struct json_object *body, struct json_object *cred_keys,
                            struct mlr_settings *s, int64_t created, int64_t now,
                            struct json_object **out, struct workers_error *e)
{
    if (!mlr_settings_bool(s, MLR_S_REMOTE_INFERENCE_ENABLED))
        return fail(e, IAE, "Remote Inference is currently disabled. To enable it, update the "
                            "setting \"plugins.ml_commons.remote_inference_enabled\" to true.");
    struct json_object *doc = json_object_new_object();
    int rc = check_basics(body, cred_keys, doc, e);
    if (rc == MLR_OK)
        rc = check_parts(body, cred_keys, s, doc, e);
    struct json_object *cc = NULL;
    struct json_object *cc_in = get(body, "client_config");
    if (rc == MLR_OK && cc_in && !json_object_is_type(cc_in, json_type_null))
        rc = check_client_config(cc_in, &cc, e);
    if (rc != MLR_OK) {
        json_object_put(cc);
        json_object_put(doc);
        return rc;
    }
    json_object_object_add(doc, "created_time", json_object_new_int64(created));
    json_object_object_add(doc, "last_updated_time", json_object_new_int64(now));
    if (cc)
        json_object_object_add(doc, "client_config", cc); /* consumes cc */
    *out = doc;
    return MLR_OK;
}

struct json_object *workers_credential_strings(struct json_object *cred)
{
    return json_object_is_type(cred, json_type_object) ? strings_of(cred) : NULL;
}

int workers_credential_encrypt(const unsigned char *key, const char *owner,
                               struct json_object *plain, char **out)
{
    struct json_object *sealed = json_object_new_object();
    int rc = MLR_OK;
    json_object_object_foreach(plain, name, val)
    {
        char aad[1100], *text = NULL;
        const char *v = json_object_get_string(val);
        snprintf(aad, sizeof(aad), "%s:%s", owner, name);
        rc = mlr_secret_encrypt(key, aad, v, strlen(v), &text);
        if (rc != MLR_OK)
            break;
        json_object_object_add(sealed, name, json_object_new_string(text));
        free(text);
    }
    if (rc == MLR_OK)
        *out = mlr_xstrdup(json_object_to_json_string_ext(sealed, JSON_C_TO_STRING_PLAIN));
    json_object_put(sealed);
    return rc;
}
