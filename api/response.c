/*
 * response.c — rendering responses: JSON bodies (compact, or pretty for ?pretty), the OpenSearch
 * error envelope, and the one table that maps the project's errors to HTTP statuses.
 * Loop thread only.
 */
#include "api_int.h"

#include <stdio.h>
#include <string.h>

void api_render(struct json_object *body, int pretty, struct mlr_buf *out)
{
    int flags = JSON_C_TO_STRING_NOSLASHESCAPE |
                (pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED : JSON_C_TO_STRING_PLAIN);
    size_t len = 0;
    const char *text = json_object_to_json_string_length(body, flags, &len);
    mlr_buf_append(out, text, len);
    if (pretty)
        mlr_buf_puts(out, "\n");
}

void api_send_json(struct api_req *req, int status, struct json_object *body)
{
    struct mlr_buf out;
    mlr_buf_init(&out, 0);
    api_render(body, req->pretty, &out);
    json_object_put(body);
    api__conn_respond(req, status, NULL, &out);
    mlr_buf_cleanup(&out);
}

/* Length of the valid UTF-8 sequence at @s (1-4), or 0 when it is not one. */
static int utf8_len(const unsigned char *s)
{
    int n = *s < 0x80 ? 1 : (*s & 0xe0) == 0xc0 && *s >= 0xc2 ? 2 : (*s & 0xf0) == 0xe0 ? 3
            : (*s & 0xf8) == 0xf0 && *s <= 0xf4 ? 4 : 0;
    for (int k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    }
    return n;
}

/* A copy of @s in which every byte that is not part of valid UTF-8 became '?', so an echoed
 * hostile value can never make the response invalid JSON text. */
static struct json_object *safe_string(const char *s)
{
    struct mlr_buf b;
    mlr_buf_init(&b, 0);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = utf8_len(p);
        mlr_buf_append(&b, n ? (const char *)p : "?", n ? (size_t)n : 1);
        p += n ? n : 1;
    }
    struct json_object *o = json_object_new_string_len(b.data ? b.data : "", (int)b.len);
    mlr_buf_cleanup(&b);
    return o;
}

struct json_object *api_error_body(int status, const char *type, const char *reason)
{
    struct json_object *cause = json_object_new_object();
    json_object_object_add(cause, "type", json_object_new_string(type));
    json_object_object_add(cause, "reason", safe_string(reason));
    struct json_object *causes = json_object_new_array();
    json_object_array_add(causes, cause); /* consumes cause */
    struct json_object *err = json_object_new_object();
    json_object_object_add(err, "root_cause", causes); /* consumes causes */
    json_object_object_add(err, "type", json_object_new_string(type));
    json_object_object_add(err, "reason", safe_string(reason));
    struct json_object *root = json_object_new_object();
    json_object_object_add(root, "error", err); /* consumes err */
    json_object_object_add(root, "status", json_object_new_int(status));
    return root;
}

void api_send_error(struct api_req *req, int status, const char *type, const char *reason)
{
    if (status >= 500)
        mlr_log(MLR_LOG_ERROR, "http", "%s %s -> %d %s: %s",
                http_method_str(req->method), req->path, status, type, reason);
    api_send_json(req, status, api_error_body(status, type, reason));
}

void api_send_errorf(struct api_req *req, int status, const char *type, const char *fmt, ...)
{
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    api_send_error(req, status, type, reason);
}

int api_status_from_err(int err)
{
    static const struct {
        int err;
        int status;
    } map[] = {
        {MLR_OK, 200},          {MLR_EINVAL, 400},   {MLR_ENOTFOUND, 404},
        {MLR_EEXIST, 409},      {MLR_ECONFLICT, 409}, {MLR_EPERM, 403},
        {MLR_ETOOBIG, 413},     {MLR_EBUSY, 429},    {MLR_EAGAIN, 429},
        {MLR_ETIMEDOUT, 500},   {MLR_ENOSPC, 507},   {MLR_EIO, 500},
        {MLR_ECLOSED, 500},     {MLR_ENOMEM, 500},   {MLR_ECORRUPT, 500},
        {MLR_ETOONEW, 500},     {MLR_EINTERNAL, 500},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (map[i].err == err)
            return map[i].status;
    }
    return 500;
}

const char *api_status_text(int status)
{
    static const struct {
        int status;
        const char *text;
    } map[] = {
        {100, "Continue"},          {200, "OK"},
        {201, "Created"},           {202, "Accepted"},
        {400, "Bad Request"},       {401, "Unauthorized"},
        {403, "Forbidden"},         {404, "Not Found"},
        {405, "Method Not Allowed"}, {406, "Not Acceptable"},
        {408, "Request Timeout"},   {409, "Conflict"},
        {413, "Content Too Large"}, {415, "Unsupported Media Type"},
        {429, "Too Many Requests"}, {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"}, {502, "Bad Gateway"},
        {503, "Service Unavailable"}, {504, "Gateway Timeout"},
        {507, "Insufficient Storage"},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (map[i].status == status)
            return map[i].text;
    }
    return "Unknown";
}

void api_send_write(struct api_req *req, int status, enum store_kind kind, const char *id,
                    int64_t version, int64_t seq_no, const char *result)
{
    struct json_object *shards = json_object_new_object();
    json_object_object_add(shards, "total", json_object_new_int(1));
    json_object_object_add(shards, "successful", json_object_new_int(1));
    json_object_object_add(shards, "failed", json_object_new_int(0));
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "_index", json_object_new_string(store_kind_index(kind)));
    json_object_object_add(o, "_id", json_object_new_string(id));
    json_object_object_add(o, "_version", json_object_new_int64(version));
    json_object_object_add(o, "result", json_object_new_string(result));
    json_object_object_add(o, "_shards", shards); /* consumes shards */
    json_object_object_add(o, "_seq_no", json_object_new_int64(seq_no));
    json_object_object_add(o, "_primary_term", json_object_new_int(1));
    api_send_json(req, status, o);
}

void api_send_workers_error(struct api_req *req, const struct workers_error *e)
{
    api_send_error(req, e->status, e->type, e->reason);
}

/* 1 when @s is valid UTF-8 without control characters (so it may be echoed in JSON). */
static int printable_utf8(const unsigned char *s)
{
    while (*s) {
        int n = utf8_len(s);
        if (n == 0 || *s < 0x20 || *s == 0x7f)
            return 0;
        s += n;
    }
    return 1;
}

const char *api_path_id(const struct api_req *req, int i)
{
    const char *id = i < req->nparams ? req->params[i] : NULL;
    if (id == NULL || strlen(id) > STORE_ID_MAX || !printable_utf8((const unsigned char *)id))
        return NULL;
    return id;
}
