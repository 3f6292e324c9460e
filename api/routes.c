/*
 * routes.c — the route table and the central dispatcher.
 *
 * Every endpoint is one row: methods, path pattern, handler, body limit, flags. The dispatcher
 * does everything that is the same for all endpoints before a handler runs — unknown path (400,
 * OpenSearch's wording), wrong method (405 with Allow), Content-Type and JSON body checks — so
 * handlers stay a few lines long. Pattern matching is by path segment; a literal segment beats a
 * {param} segment, so `/models/_search` wins over `/models/{model_id}` as in OpenSearch's path
 * trie. Cost: O(routes × segments) per request, a few hundred comparisons. Loop thread only.
 */
#include "api_int.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#define M(x) (1u << HTTP_##x)
#define KB 1024
#define MB (1024 * 1024)

#define JSON API_BODY_JSON
#define REQ (API_BODY_JSON | API_BODY_REQUIRED)
#define ML "/_plugins/_ml"
#define GROUP STORE_MODEL_GROUP
#define CONN STORE_CONNECTOR
#define MODEL STORE_MODEL
#define TASK STORE_TASK

/* Access guards (access.c), with ML Commons' refusals (reference §12); where ML Commons answers
 * 500 for a refusal we answer 403 (spec §9). */
#define FORBIDDEN 403, "status_exception"
static const struct api_guard group_use = {
    GROUP, 0, FORBIDDEN,
    "User doesn't have privilege to perform this operation on this model group", 0};
static const struct api_guard group_delete = {
    GROUP, 0, FORBIDDEN, "User doesn't have privilege to delete this model group", 0};
static const struct api_guard connector_get = {
    CONN, 0, FORBIDDEN, "You don't have permission to access this connector", 0};
static const struct api_guard connector_update = {
    CONN, 0, 400, "illegal_argument_exception",
    "You don't have permission to update the connector, connector id: ", 1};
static const struct api_guard connector_delete = {
    CONN, 0, FORBIDDEN, "You are not allowed to delete this connector", 0};
static const struct api_guard model_use = {
    MODEL, 0, FORBIDDEN, "User doesn't have privilege to perform this operation on this model", 0};
static const struct api_guard model_update = {
    MODEL, 0, FORBIDDEN,
    "User Doesn't have privilege to perform this operation on this model, model ID", 1};
static const struct api_guard model_undeploy = {
    MODEL, 0, FORBIDDEN,
    "User doesn't have privilege to perform this operation on this model, model ID ", 1};
static const struct api_guard model_predict = {
    MODEL, 0, FORBIDDEN, "User Doesn't have privilege to perform this operation on this model", 0};
static const struct api_guard algo_predict = {
    MODEL, 1, FORBIDDEN, "User Doesn't have privilege to perform this operation on this model", 0};

/* method(s), path, handler, body limit (0 = http.max_content_length), flags, kind, empty body,
 * access guard */
static const struct api_route routes[] = {
    {M(GET), "/", api_h_root, 0, API_BODY_NONE, 0, NULL, NULL},
    {M(GET), "/_cluster/settings", api_h_settings_get, 0, API_BODY_NONE, 0, NULL, NULL},
    {M(PUT), "/_cluster/settings", api_h_settings_put, 1 * MB, REQ, 0, NULL, NULL},

    {M(POST), ML "/model_groups/_register", api_h_group_register, 1 * MB, REQ, GROUP,
     "Model group request has empty body", NULL},
    {M(GET) | M(POST), ML "/model_groups/_search", api_h_doc_search, 1 * MB, JSON, GROUP,
     NULL, NULL},
    {M(GET), ML "/model_groups/{id}", api_h_doc_get, 0, API_BODY_NONE, GROUP, NULL, &group_use},
    {M(PUT), ML "/model_groups/{id}", api_h_group_update, 1 * MB, REQ, GROUP,
     "Update model group request has empty body", &group_use},
    {M(DELETE), ML "/model_groups/{id}", api_h_doc_delete, 0, API_BODY_NONE, GROUP, NULL,
     &group_delete},

    {M(POST), ML "/connectors/_create", api_h_connector_create, 10 * MB, REQ, CONN,
     "Create Connector request has empty body", NULL},
    {M(GET) | M(POST), ML "/connectors/_search", api_h_doc_search, 1 * MB, JSON, CONN, NULL, NULL},
    {M(GET), ML "/connectors/{id}", api_h_doc_get, 0, API_BODY_NONE, CONN, NULL, &connector_get},
    {M(PUT), ML "/connectors/{id}", api_h_connector_update, 10 * MB, REQ, CONN,
     "Failed to update connector: Request body is empty", &connector_update},
    {M(DELETE), ML "/connectors/{id}", api_h_doc_delete, 0, API_BODY_NONE, CONN, NULL,
     &connector_delete},

    {M(POST), ML "/models/_register", api_h_model_register, 10 * MB, REQ, MODEL,
     "Model register request has empty body", NULL},
    {M(POST), ML "/models/_upload", api_h_model_register, 10 * MB, REQ, MODEL,
     "Model register request has empty body", NULL},
    {M(GET) | M(POST), ML "/models/_search", api_h_doc_search, 1 * MB, JSON, MODEL, NULL, NULL},
    {M(GET), ML "/models/{id}", api_h_doc_get, 0, API_BODY_NONE, MODEL, NULL, &model_use},
    {M(PUT), ML "/models/{id}", api_h_model_update, 10 * MB, REQ, MODEL,
     "Update model request has empty body", &model_update},
    {M(DELETE), ML "/models/{id}", api_h_doc_delete, 0, API_BODY_NONE, MODEL, NULL, &model_use},

    {M(POST), ML "/models/{id}/_deploy", api_h_model_deploy, 1 * MB, JSON, MODEL, NULL, &model_use},
    {M(POST), ML "/models/{id}/_load", api_h_model_deploy, 1 * MB, JSON, MODEL, NULL, &model_use},
    {M(POST), ML "/models/{id}/_undeploy", api_h_model_undeploy, 1 * MB, API_BODY_NONE, MODEL,
     NULL, &model_undeploy},
    {M(POST), ML "/models/{id}/_unload", api_h_model_undeploy, 1 * MB, API_BODY_NONE, MODEL,
     NULL, &model_undeploy},
    {M(POST), ML "/models/{id}/_predict", api_h_model_predict, 0, REQ, MODEL,
     "Predict request has empty body", &model_predict},
    {M(POST), ML "/_predict/{algorithm}/{id}", api_h_algorithm_predict, 0, REQ, MODEL,
     "Predict request has empty body", &algo_predict},
    {M(POST), ML "/models/{id}/_batch_ingest", api_h_model_batch_ingest, 0, REQ, MODEL,
     "Batch ingest request has empty body", &model_predict},
    {M(POST), ML "/models/{id}/_batch_predict", api_h_model_batch_predict, 0, REQ, MODEL,
     "Batch predict request has empty body", &model_predict},
    {M(POST), ML "/models/_undeploy", api_h_models_undeploy, 1 * MB, JSON, MODEL, NULL, NULL},
    {M(POST), ML "/models/_unload", api_h_models_undeploy, 1 * MB, JSON, MODEL, NULL, NULL},

    {M(GET) | M(POST), ML "/tasks/_search", api_h_doc_search, 1 * MB, JSON, TASK, NULL, NULL},
    {M(POST), ML "/tasks/{id}/_cancel", api_h_task_cancel, 1 * MB, API_BODY_NONE, TASK, NULL, NULL},
    {M(GET), ML "/tasks/{id}/_results", api_h_task_results, 0, API_BODY_NONE, TASK, NULL, NULL},
    {M(GET), ML "/tasks/{id}", api_h_doc_get, 0, API_BODY_NONE, TASK, NULL, NULL},
    {M(DELETE), ML "/tasks/{id}", api_h_doc_delete, 0, API_BODY_NONE, TASK, NULL, NULL},

    /* Observability (reference §14; spec §7). GET with a body is allowed, as in OpenSearch. */
    {M(GET), ML "/stats", api_h_stats, 1 * MB, JSON, 0, NULL, NULL},
    {M(GET), ML "/stats/{stat}", api_h_stats, 1 * MB, JSON, 0, NULL, NULL},
    {M(GET), ML "/{node_id}/stats", api_h_stats, 1 * MB, JSON, 0, NULL, NULL},
    {M(GET), ML "/{node_id}/stats/{stat}", api_h_stats, 1 * MB, JSON, 0, NULL, NULL},
    {M(GET), ML "/profile", api_h_profile, 1 * MB, JSON, 0, NULL, NULL},
    {M(GET), ML "/profile/models", api_h_profile, 1 * MB, JSON, 0, NULL, NULL},
    {M(GET), ML "/profile/models/{model_id}", api_h_profile, 1 * MB, JSON, 0, NULL, NULL},
    {M(GET), ML "/profile/tasks", api_h_profile, 1 * MB, JSON, 0, NULL, NULL},
    {M(GET), ML "/profile/tasks/{task_id}", api_h_profile, 1 * MB, JSON, 0, NULL, NULL},
    {M(GET), "/metrics", api_h_metrics, 0, API_BODY_NONE, 0, NULL, NULL},
};

int api__route_count(void)
{
    return (int)(sizeof(routes) / sizeof(routes[0]));
}

const struct api_route *api__route_at(int i)
{
    return &routes[i];
}

int api__route_index(const struct api_route *route)
{
    return (int)(route - routes);
}

#define MAX_SEGMENTS 16

struct segments {
    const char *s[MAX_SEGMENTS]; /* start of each segment */
    size_t len[MAX_SEGMENTS];    /* its length */
    int n;                       /* count; -1 when there are too many */
};

/* Splits "/a/b/c" into segments, ignoring empty ones ("//a/" is "/a"). */
static void split(const char *path, struct segments *out)
{
    out->n = 0;
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        if (*p == '\0')
            break;
        const char *start = p;
        while (*p && *p != '/')
            p++;
        if (out->n == MAX_SEGMENTS) {
            out->n = -1;
            return;
        }
        out->s[out->n] = start;
        out->len[out->n] = (size_t)(p - start);
        out->n++;
    }
}

static int is_param(const char *s, size_t len)
{
    return len >= 2 && s[0] == '{' && s[len - 1] == '}';
}

/*
 * Returns a specificity score when @route's pattern matches @path (higher = more literal
 * segments early), or -1. Literal-before-param ordering is encoded as bits, most significant
 * first, which is exactly the "literal beats param at the first difference" rule.
 */
static long match_score(const struct segments *pat, const struct segments *path)
{
    if (pat->n != path->n)
        return -1;
    long score = 0;
    for (int i = 0; i < pat->n; i++) {
        score <<= 1;
        if (is_param(pat->s[i], pat->len[i]))
            continue;
        if (pat->len[i] != path->len[i] || memcmp(pat->s[i], path->s[i], pat->len[i]) != 0)
            return -1;
        score |= 1;
    }
    return score;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes @n bytes of @s into the pool; '+' becomes a space when @plus. NULs kept. */
static char *pct_decode(struct mlr_pool *pool, const char *s, size_t n, int plus, size_t *outlen)
{
    char *d = mlr_pool_alloc(pool, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 &&
            hexval((unsigned char)s[i + 2]) >= 0) {
            d[o++] = (char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
            i += 2;
        } else if (plus && s[i] == '+') {
            d[o++] = ' ';
        } else {
            d[o++] = s[i];
        }
    }
    d[o] = '\0';
    if (outlen)
        *outlen = o;
    return d;
}

static void capture_params(struct api_req *req, const struct segments *pat,
                           const struct segments *path)
{
    req->nparams = 0;
    for (int i = 0; i < pat->n && req->nparams < API_MAX_PARAMS; i++) {
        if (!is_param(pat->s[i], pat->len[i]))
            continue;
        size_t len;
        char *v = pct_decode(&req->pool, path->s[i], path->len[i], 0, &len);
        /* An embedded NUL would silently truncate the value: keep it visible as invalid. */
        req->params[req->nparams++] = strlen(v) == len ? v : NULL;
    }
}

void api_route_match(struct api_req *req)
{
    struct segments path, pat;
    split(req->path, &path);
    req->route = NULL;
    req->allow = 0;
    if (path.n < 0)
        return;
    unsigned method = req->method == HTTP_HEAD ? M(GET) : 1u << req->method;
    long best = -1;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        split(routes[i].pattern, &pat);
        long score = match_score(&pat, &path);
        if (score < 0)
            continue;
        req->allow |= routes[i].methods;
        if ((routes[i].methods & method) && score > best) {
            best = score;
            req->route = &routes[i];
        }
    }
    if (req->route) {
        split(req->route->pattern, &pat);
        capture_params(req, &pat, &path);
    }
}

const char *api_header(const struct api_req *req, const char *name)
{
    for (int i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    }
    return NULL;
}

const char *api_query(struct api_req *req, const char *name)
{
    const char *p = req->query;
    size_t nlen = strlen(name);
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        if (klen == nlen && memcmp(p, name, nlen) == 0)
            return eq ? pct_decode(&req->pool, eq + 1, len - klen - 1, 1, NULL) : "";
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

int api_query_bool(struct api_req *req, const char *name)
{
    const char *v = api_query(req, name);
    return v != NULL && strcmp(v, "false") != 0;
}

static void send_allow(struct api_req *req)
{
    char allow[128] = "", methods[128] = "";
    for (int m = 0; m < 32; m++) {
        if (!(req->allow & (1u << m)))
            continue;
        const char *name = http_method_str((enum http_method)m);
        snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
                 allow[0] ? "," : "", name);
        snprintf(methods + strlen(methods), sizeof(methods) - strlen(methods), "%s%s",
                 methods[0] ? ", " : "", name);
    }
    char header[160], reason[512];
    snprintf(header, sizeof(header), "allow: %s\r\n", allow);
    snprintf(reason, sizeof(reason), "Incorrect HTTP method for uri [%s] and method [%s], allowed: [%s]",
             req->path, http_method_str(req->method), methods);
    struct mlr_buf out;
    mlr_buf_init(&out, 0);
    struct json_object *env = api_error_body(405, "exception", reason);
    api_render(env, req->pretty, &out);
    json_object_put(env);
    api__conn_respond(req, 405, header, &out);
    mlr_buf_cleanup(&out);
}

/* Bodies are JSON; clients send application/json (or OpenSearch's vendor type) or nothing. */
static int content_type_ok(const struct api_req *req)
{
    const char *ct = api_header(req, "content-type");
    if (ct == NULL)
        return 1;
    return strncasecmp(ct, "application/json", 16) == 0 ||
           strncasecmp(ct, "application/x-ndjson", 20) == 0 ||
           strncasecmp(ct, "application/vnd.opensearch+json", 31) == 0 ||
           strncasecmp(ct, "application/vnd.elasticsearch+json", 34) == 0;
}

/*
 * Whether any key or string in @o contains a NUL. C code reads strings up to their first NUL, so
 * "a\u0000b" would silently become "a" (a different id, a truncated name): refuse it up front.
 * The tokener already caps nesting at 64, which bounds the recursion.
 */
static int has_nul(struct json_object *o, int depth)
{
    if (depth > 64)
        return 1;
    switch (json_object_get_type(o)) {
    case json_type_string:
        return strlen(json_object_get_string(o)) != (size_t)json_object_get_string_len(o);
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(o); i++) {
            if (has_nul(json_object_array_get_idx(o, i), depth + 1))
                return 1;
        }
        return 0;
    case json_type_object: {
        json_object_object_foreach(o, k, v)
        {
            UNUSED(k); /* keys cannot hold a NUL: json-c stores them as C strings */
            if (v && has_nul(v, depth + 1))
                return 1;
        }
        return 0;
    }
    default:
        return 0;
    }
}

/* Parses the body into req->json. Returns 0, or -1 after sending the error. */
static int parse_body(struct api_req *req)
{
    unsigned flags = req->route->flags;
    if (!(flags & API_BODY_JSON) || req->body.len == 0) {
        if ((flags & API_BODY_REQUIRED) && req->body.len == 0) {
            api_send_error(req, 400, "parse_exception",
                           req->route->empty_body ? req->route->empty_body
                                                  : "request body is required");
            return -1;
        }
        return 0;
    }
    if (!content_type_ok(req)) {
        api_send_errorf(req, 406, "status_exception", "Content-Type header [%s] is not supported",
                        api_header(req, "content-type"));
        return -1;
    }
    struct json_tokener *tok = json_tokener_new_ex(64);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *obj = json_tokener_parse_ex(tok, req->body.data, (int)req->body.len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (obj == NULL || jerr != json_tokener_success || used != req->body.len) {
        json_object_put(obj);
        api_send_errorf(req, 400, "json_parse_exception", "Failed to parse request body: %s",
                        jerr != json_tokener_success ? json_tokener_error_desc(jerr)
                                                     : "unexpected data after the JSON value");
        return -1;
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        api_send_error(req, 400, "parse_exception", "request body must be a JSON object");
        return -1;
    }
    if (has_nul(obj, 0)) {
        json_object_put(obj);
        api_send_error(req, 400, "parse_exception",
                       "request body contains a NUL character (\\u0000) in a string");
        return -1;
    }
    req->json = obj;
    return 0;
}

void api_dispatch(struct api_req *req)
{
    /* Who is asking comes first: without valid credentials nothing else is revealed, not even
     * whether the path exists. */
    if (api_auth_enabled(req->ctx->auth) && req->user == NULL) {
        api_auth_check(req->ctx->auth, req);
        return;
    }
    if (req->user == NULL && !req->loopback) {
        /* A connection accepted while users existed outlived the last of them: protected mode
         * serves loopback clients only (spec §8), so it is answered and closed. */
        req->keep_alive = 0;
        api_send_error(req, 403, "security_exception",
                       "no users are configured: only loopback clients are served");
        return;
    }
    api__dispatch_authenticated(req);
}

void api__dispatch_authenticated(struct api_req *req)
{
    if (req->route == NULL) {
        if (req->allow) {
            send_allow(req);
            return;
        }
        api_send_errorf(req, 400, "illegal_argument_exception",
                        "no handler found for uri [%s] and method [%s]", req->path,
                        http_method_str(req->method));
        return;
    }
    for (int i = 0; i < req->nparams; i++) {
        if (req->params[i] == NULL) {
            api_send_error(req, 400, "illegal_argument_exception",
                           "path parameter contains a NUL byte");
            return;
        }
    }
    if (parse_body(req) != 0)
        return;
    api__guard_then_handle(req);
}
