/*
 * conn.c — one HTTP/1.1 client connection: bytes in, http-parser, one request at a time to the
 * dispatcher, responses out in request order.
 *
 * Pipelining: when a request is complete the parser is paused and the request dispatched; bytes
 * that arrive meanwhile (the next pipelined requests) wait in `pending` and are parsed only after
 * the current response has been queued, so responses always leave in request order. Reading stops
 * while `pending` holds more than PENDING_MAX bytes, so a client that pipelines without reading
 * cannot make us buffer without bound.
 *
 * Limits, all checked while parsing so nothing oversized is ever buffered: the request line plus
 * headers (431), the body (413 — answered as soon as Content-Length exceeds the limit, before any
 * of the body is read; chunked bodies are counted as they arrive), the idle keep-alive timeout
 * (close quietly) and the time to receive a whole request (408). A connection-level error is
 * answered with `connection: close`, the write side is shut down and the rest of the input is
 * discarded for up to LINGER_MS, so the client reads the response instead of a reset.
 *
 * Lifetime: the connection owns two handles (tcp, timer) and is freed when both are closed. A
 * request being handled when the client goes away is detached (req->conn = NULL) and freed when
 * its handler responds, so handlers never see a dangling connection. Loop thread only.
 *
 * TLS (when the listener has a certificate): socket bytes go through the connection's TLS session
 * (tls.c) on the way into `pending` and on the way out of write_out(); everything between sees
 * plaintext. The handshake must finish within http.request_timeout (the first part of receiving a
 * request), after which the idle timeout applies; a connection over the cap is answered 429 once
 * its handshake is done. Plaintext connections only pay a NULL check at those two points.
 */
#include "api_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PENDING_MAX (1024 * 1024) /* bytes of unparsed input we hold before we stop reading */
#define WRITEQ_MAX (1024 * 1024)  /* queued response bytes past which we stop parsing */
#define LINGER_MS 2000            /* how long to drain input after an error response */

struct write_req {
    uv_write_t w;
    struct api_conn *c;
    struct mlr_buf head;          /* status line and headers */
    struct mlr_buf body;          /* response body */
};

static void conn_close(struct api_conn *c);
static void parse_pending(struct api_conn *c);
static void start_reading(struct api_conn *c);

/* ---------------------------------- helpers ---------------------------------- */

static void set_timer(struct api_conn *c, enum timer_mode mode, int64_t ms);

static const struct mlr_config *cfg_of(struct api_conn *c)
{
    return api__server_config(c->srv);
}

static void req_free(struct api_req *req)
{
    if (req == NULL)
        return;
    json_object_put(req->json);
    mlr_buf_cleanup(&req->body);
    mlr_pool_cleanup(&req->pool);
    free(req);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct api_conn *c = h->data;
    if (--c->handles > 0)
        return;
    api__server_conn_gone(c->srv, c);
    if (c->req && !c->dispatched)
        req_free(c->req);
    else if (c->req)
        c->req->conn = NULL; /* the handler still owns the request; it is freed on respond */
    api__tls_conn_free(c->tls);
    mlr_buf_cleanup(&c->pending);
    mlr_buf_cleanup(&c->url);
    mlr_buf_cleanup(&c->field);
    mlr_buf_cleanup(&c->value);
    free(c);
}

static void conn_close(struct api_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_timer(uv_timer_t *t);

static void set_timer(struct api_conn *c, enum timer_mode mode, int64_t ms)
{
    c->mode = mode;
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

/* ---------------------------------- writing ---------------------------------- */

static void on_shutdown(uv_shutdown_t *sr, int status)
{
    struct api_conn *c = sr->data;
    free(sr);
    if (status != 0 || !c->linger || c->eof || c->closing) {
        conn_close(c);
        return;
    }
    /* Keep reading (and discarding) so the client sees our response, not a reset. */
    set_timer(c, TIMER_LINGER, LINGER_MS);
    start_reading(c);
}

static int tls_flush(struct api_conn *c);

static void shutdown_conn(struct api_conn *c)
{
    if (c->closing)
        return;
    if (c->tls != NULL && api__tls_conn_shutdown(c->tls) && tls_flush(c))
        return; /* on_write calls us again once close_notify has been written */
    uv_shutdown_t *sr = mlr_xmalloc(sizeof(*sr));
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(sr);
        conn_close(c);
    }
}

/* Parsing may go on while a request is still arriving, or once the previous response is queued
 * (unless the client is not reading its responses). */
static int can_parse_more(struct api_conn *c)
{
    return !c->closing && !c->close_after_write && !c->dispatched &&
           uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITEQ_MAX;
}

static void on_write(uv_write_t *w, int status)
{
    struct write_req *wr = container_of(w, struct write_req, w);
    struct api_conn *c = wr->c;
    mlr_buf_cleanup(&wr->head);
    mlr_buf_cleanup(&wr->body);
    free(wr);
    c->writes--;
    if (status != 0) {
        conn_close(c);
        return;
    }
    if (c->writes == 0 && c->close_after_write)
        shutdown_conn(c);
    else if (can_parse_more(c))
        parse_pending(c);
}

/* TLS: replaces the plaintext of @wr by its records (after any handshake bytes still queued). */
static int tls_seal(struct api_tls_conn *tls, struct write_req *wr)
{
    int rc = api__tls_conn_write(tls, wr->head.data, wr->head.len);
    if (rc == MLR_OK)
        rc = api__tls_conn_write(tls, wr->body.data, wr->body.len);
    mlr_buf_cleanup(&wr->head);
    mlr_buf_cleanup(&wr->body);
    api__tls_conn_output(tls, &wr->head);
    return rc;
}

/* Queues head+body on the socket; takes ownership of both buffers' contents. */
static void write_out(struct api_conn *c, struct mlr_buf *head, struct mlr_buf *body)
{
    struct write_req *wr = mlr_xcalloc(1, sizeof(*wr));
    wr->c = c;
    wr->head = *head;
    wr->body = *body;
    mlr_buf_init(head, 0); /* the write request owns these bytes now */
    mlr_buf_init(body, 0);
    if (c->tls != NULL) {
        int rc = tls_seal(c->tls, wr);
        if (rc != MLR_OK || wr->head.len == 0) {
            mlr_buf_cleanup(&wr->head); /* nothing to send (a flush found no output), or failed */
            free(wr);
            if (rc != MLR_OK)
                conn_close(c);
            return;
        }
    }
    uv_buf_t bufs[2] = {uv_buf_init(wr->head.data, (unsigned)wr->head.len),
                        uv_buf_init(wr->body.data, (unsigned)wr->body.len)};
    int n = wr->body.len > 0 ? 2 : 1;
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, bufs, (unsigned)n, on_write) != 0) {
        mlr_buf_cleanup(&wr->head);
        mlr_buf_cleanup(&wr->body);
        free(wr);
        conn_close(c);
        return;
    }
    c->writes++;
}

#define JSON_TYPE "application/json; charset=UTF-8"

static void build_head(struct mlr_buf *head, int status, const char *ctype, size_t len,
                       int keep_alive, const char *extra)
{
    mlr_buf_printf(head,
                   "HTTP/1.1 %d %s\r\n"
                   "content-type: %s\r\n"
                   "content-length: %zu\r\n"
                   "%s%s\r\n",
                   status, api_status_text(status), ctype, len,
                   keep_alive ? "" : "connection: close\r\n", extra ? extra : "");
}

/* A connection-level error (no handler involved): answer (with @extra header lines, or NULL)
 * and close the connection. */
static void conn_error_ex(struct api_conn *c, int status, const char *type, const char *reason,
                          const char *extra)
{
    struct json_object *root = api_error_body(status, type, reason);
    struct mlr_buf head, body;
    mlr_buf_init(&head, 0);
    mlr_buf_init(&body, 0);
    api_render(root, 0, &body);
    json_object_put(root);
    build_head(&head, status, JSON_TYPE, body.len, 0, extra);
    api__access_log(cfg_of(c), c->dispatched ? NULL : c->req, c->peer, status, body.len, 0);
    /* A request whose headers never completed has no method yet (on_headers_complete sets it;
     * it is a GET until then only because the struct was zeroed). */
    int method = c->req && c->req->path ? (int)c->req->method : -1;
    api__http_stats_record(api__server_http_stats(c->srv), c->req ? c->req->route : NULL, method,
                           status, c->req ? c->req->start_ns : uv_hrtime());
    uv_timer_stop(&c->timer);
    c->close_after_write = 1;
    c->linger = 1;
    write_out(c, &head, &body);
    if (c->req && !c->dispatched) {
        req_free(c->req);
        c->req = NULL;
    }
}

static void conn_error(struct api_conn *c, int status, const char *type, const char *reason)
{
    conn_error_ex(c, status, type, reason, NULL);
}

void api__conn_respond(struct api_req *req, int status, const char *extra_headers,
                       struct mlr_buf *body)
{
    api__conn_respond_typed(req, status, JSON_TYPE, extra_headers, body);
}

void api__conn_respond_typed(struct api_req *req, int status, const char *content_type,
                             const char *extra_headers, struct mlr_buf *body)
{
    struct api_conn *c = req->conn;
    assert(!req->responded);
    req->responded = 1;
    /* Only while the connection exists: a request whose client left may be answered after the
     * server (and its counters) is gone, during shutdown. */
    if (c != NULL)
        api__http_stats_record(api__server_http_stats(c->srv), req->route, (int)req->method,
                               status, req->start_ns);
    if (c == NULL || c->closing) {
        /* The server may be gone (a forced stop): only what the request holds is read. */
        api__access_log(req->cfg, req, req->client, status, 0, 1);
        req_free(req); /* the client is gone; nobody to answer */
        return;
    }
    assert(c->req == req);
    /* A half-closed client still gets answers to the requests it already pipelined. */
    int keep_alive = req->keep_alive && !c->stop_requested && !(c->eof && c->pending.len == 0);
    struct mlr_buf head;
    mlr_buf_init(&head, 0);
    /* OpenSearch echoes X-Opaque-Id so clients can match answers to requests; http-parser has
     * already refused CR and LF in header values, so it is copied as sent. */
    const char *opaque = api_header(req, "x-opaque-id");
    char *extra = opaque ? mlr_xasprintf("%sx-opaque-id: %s\r\n",
                                         extra_headers ? extra_headers : "", opaque)
                         : NULL;
    build_head(&head, status, content_type, body->len, keep_alive, extra ? extra : extra_headers);
    free(extra);
    if (req->head)
        mlr_buf_reset(body);
    api__access_log(cfg_of(c), req, req->client, status, body->len, 0);
    c->req = NULL;
    c->dispatched = 0;
    req_free(req);
    if (!keep_alive)
        c->close_after_write = 1;
    write_out(c, &head, body);
    if (c->closing || c->close_after_write)
        return;
    set_timer(c, TIMER_IDLE, cfg_of(c)->idle_timeout_ms);
    if (can_parse_more(c))
        parse_pending(c);
}

/* ---------------------------------- parser callbacks ---------------------------------- */

static struct api_conn *conn_of(http_parser *p)
{
    return container_of(p, struct api_conn, parser);
}

static int count_header_bytes(struct api_conn *c, size_t n)
{
    c->header_bytes += n;
    if ((int64_t)c->header_bytes > cfg_of(c)->max_header_size) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct api_conn *c = conn_of(p);
    assert(c->req == NULL);
    struct api_req *req = mlr_xcalloc(1, sizeof(*req));
    mlr_pool_init(&req->pool);
    mlr_buf_init(&req->body, 0);
    req->conn = c;
    req->srv = c->srv;
    req->ctx_copy = *api__server_context(c->srv);
    req->ctx = &req->ctx_copy;
    req->cfg = cfg_of(c);
    req->start_ms = mlr_mono_ms();
    req->start_ns = uv_hrtime();
    memcpy(req->client, c->peer, sizeof(req->client));
    req->loopback = c->loopback;
    c->req = req;
    c->header_bytes = 0;
    c->in_value = 0;
    mlr_buf_reset(&c->url);
    mlr_buf_reset(&c->field);
    mlr_buf_reset(&c->value);
    set_timer(c, TIMER_REQUEST, cfg_of(c)->request_timeout_ms);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct api_conn *c = conn_of(p);
    if (count_header_bytes(c, n) != 0)
        return -1;
    return mlr_buf_append(&c->url, at, n) == MLR_OK ? 0 : -1;
}

/* Moves the header collected in field/value into the request. */
static int commit_header(struct api_conn *c)
{
    struct api_req *req = c->req;
    if (c->field.len == 0)
        return 0;
    if (req->nheaders == API_MAX_HEADERS) {
        c->error_status = 431;
        return -1;
    }
    struct api_header *h = &req->headers[req->nheaders++];
    h->name = mlr_pool_strndup(&req->pool, c->field.data, c->field.len);
    h->value = mlr_pool_strndup(&req->pool, c->value.data ? c->value.data : "", c->value.len);
    mlr_buf_reset(&c->field);
    mlr_buf_reset(&c->value);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct api_conn *c = conn_of(p);
    if (count_header_bytes(c, n + 4) != 0) /* ": " and CRLF count too */
        return -1;
    if (c->in_value && commit_header(c) != 0)
        return -1;
    c->in_value = 0;
    mlr_buf_append(&c->field, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct api_conn *c = conn_of(p);
    if (count_header_bytes(c, n) != 0)
        return -1;
    c->in_value = 1;
    mlr_buf_append(&c->value, at, n);
    return 0;
}

/* Splits the target into path and query; returns -1 for a malformed target. */
static int split_target(struct api_req *req, const char *url, size_t len)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
        return -1;
    req->target = mlr_pool_strndup(&req->pool, url, len);
    req->path = mlr_pool_strndup(&req->pool, url + u.field_data[UF_PATH].off,
                                 u.field_data[UF_PATH].len);
    if (u.field_set & (1 << UF_QUERY))
        req->query = mlr_pool_strndup(&req->pool, url + u.field_data[UF_QUERY].off,
                                      u.field_data[UF_QUERY].len);
    return 0;
}

static void send_continue(struct api_conn *c)
{
    struct mlr_buf head, body;
    mlr_buf_init(&head, 0);
    mlr_buf_init(&body, 0);
    mlr_buf_puts(&head, "HTTP/1.1 100 Continue\r\n\r\n");
    write_out(c, &head, &body);
}

static int on_headers_complete(http_parser *p)
{
    struct api_conn *c = conn_of(p);
    struct api_req *req = c->req;
    if (commit_header(c) != 0)
        return -1;
    if (split_target(req, c->url.data ? c->url.data : "", c->url.len) != 0) {
        c->error_status = 400;
        return -1;
    }
    req->method = (enum http_method)p->method;
    req->head = req->method == HTTP_HEAD;
    req->keep_alive = http_should_keep_alive(p);
    req->pretty = api_query_bool(req, "pretty");
    api_route_match(req);
    /* With users, a request that cannot be authenticated is refused before its body is read, and
     * before its size is judged: anyone may connect then, and bodies may be large (rule 12:
     * input cannot make us buffer without bound). Wrong passwords are found later, on the pool. */
    if (api_auth_enabled(req->ctx->auth)) {
        int refused = api_auth_precheck(req->ctx->auth, req);
        if (refused) {
            c->error_status = refused;
            return -1;
        }
    }
    int64_t limit = cfg_of(c)->max_content_length;
    if (req->route && req->route->max_body > 0 && req->route->max_body < limit)
        limit = req->route->max_body;
    c->max_body = limit;
    req->body.max = (size_t)limit;
    /* content_length is ULLONG_MAX when absent (chunked or no body). */
    if (p->content_length != ULLONG_MAX && p->content_length > (uint64_t)limit) {
        c->error_status = 413;
        return -1;
    }
    const char *expect = api_header(req, "expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && p->http_minor >= 1)
        send_continue(c);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct api_conn *c = conn_of(p);
    if (mlr_buf_append(&c->req->body, at, n) != MLR_OK) {
        c->error_status = 413;
        return -1;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_parser_pause(p, 1); /* the next pipelined request waits for this response */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---------------------------------- parsing driver ---------------------------------- */

static void parse_failed(struct api_conn *c, enum http_errno e)
{
    char reason[160];
    switch (c->error_status) {
    case 413:
        snprintf(reason, sizeof(reason), "request body is larger than the limit of [%lld] bytes",
                 (long long)c->max_body);
        conn_error(c, 413, "content_too_long_exception", reason);
        return;
    case 401:
        conn_error_ex(c, 401, "security_exception", "Unauthorized",
                      "www-authenticate: Basic realm=\"mlrelay\"\r\n");
        return;
    case 429:
        conn_error(c, 429, "security_exception",
                   "Too many failed logins from this address; try again later");
        return;
    case 431:
        snprintf(reason, sizeof(reason),
                 "request line and headers are larger than the limit of [%lld] bytes",
                 (long long)cfg_of(c)->max_header_size);
        conn_error(c, 431, "too_long_http_header_exception", reason);
        return;
    default:
        break;
    }
    if (e == HPE_HEADER_OVERFLOW) {
        conn_error(c, 431, "too_long_http_header_exception", "request headers are too large");
        return;
    }
    snprintf(reason, sizeof(reason), "malformed HTTP request: %s", http_errno_description(e));
    conn_error(c, 400, "illegal_argument_exception", reason);
}

/*
 * Feeds @len bytes at @data to the parser. Returns how many were consumed; stops early when a
 * request is complete (it is then dispatched) or on a parse error (the connection then closes).
 */
static size_t feed(struct api_conn *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        uv_timer_stop(&c->timer);
        c->dispatched = 1;
        api_dispatch(c->req); /* may respond synchronously, which resumes parsing */
        return n;
    }
    if (e != HPE_OK) {
        parse_failed(c, e);
        return len;
    }
    return n;
}

/* Parses buffered input until it runs out, a request is being handled, or the connection ends. */
static void parse_pending(struct api_conn *c)
{
    while (c->pending.len > 0 && can_parse_more(c)) {
        http_parser_pause(&c->parser, 0);
        /* feed() may re-enter parse_pending() through a synchronous response; it consumes
         * from the front of the buffer, so we copy the slice it works on first. */
        size_t len = c->pending.len;
        char *copy = mlr_xmalloc(len);
        memcpy(copy, c->pending.data, len);
        mlr_buf_consume(&c->pending, len);
        size_t n = feed(c, copy, len);
        if (n < len) {
            /* put the unconsumed tail back in front of anything that arrived meanwhile */
            struct mlr_buf rest;
            mlr_buf_init(&rest, 0);
            mlr_buf_append(&rest, copy + n, len - n);
            mlr_buf_append(&rest, c->pending.data, c->pending.len);
            mlr_buf_cleanup(&c->pending);
            c->pending = rest;
        }
        free(copy);
    }
    if (c->eof && c->pending.len == 0 && c->req == NULL && c->writes == 0 && !c->closing)
        conn_close(c);
    else if (!c->reading && !c->eof && !c->closing && c->pending.len < PENDING_MAX)
        start_reading(c);
}

/* ---------------------------------- TLS glue ---------------------------------- */

/* Queues whatever ciphertext the TLS session has produced; returns 1 when a write was queued. */
static int tls_flush(struct api_conn *c)
{
    struct mlr_buf none_head, none_body;
    mlr_buf_init(&none_head, 0);
    mlr_buf_init(&none_body, 0);
    int before = c->writes;
    write_out(c, &none_head, &none_body);
    return c->writes > before;
}

static void reject_conn(struct api_conn *c);

/* Plain HTTP on the TLS port: the client cannot read TLS, so it gets a plaintext 400 (as nginx
 * does) that tells the user what went wrong, then the connection closes. */
static void plain_http_on_tls(struct api_conn *c)
{
    api__tls_conn_free(c->tls);
    c->tls = NULL; /* from here on this connection writes in plaintext */
    conn_error(c, 400, "illegal_argument_exception",
               "this port speaks TLS: send the request with https://");
}

/*
 * Decrypts @n socket bytes into `pending` and sends what the handshake answers. Returns 1 when
 * the connection is ending (TLS failure, plain HTTP, or a rejected connection answered 429).
 */
static int tls_in(struct api_conn *c, const char *data, size_t n)
{
    char why[256];
    int rc = api__tls_conn_feed(c->tls, data, n);
    if (rc == MLR_EINVAL) {
        plain_http_on_tls(c);
        return 1;
    }
    if (rc == MLR_OK)
        rc = api__tls_conn_read(c->tls, &c->pending, why, sizeof(why));
    else
        snprintf(why, sizeof(why), "%s", mlr_strerror(rc));
    int queued = tls_flush(c);
    if (rc != MLR_OK) {
        mlr_log(MLR_LOG_DEBUG, "http", "closing a TLS connection: %s", why);
        c->close_after_write = 1; /* let an alert reach the client, then close */
        if (!queued)
            conn_close(c);
        return 1;
    }
    if (!c->tls_up && api__tls_conn_established(c->tls)) {
        c->tls_up = 1;
        if (c->reject) {
            reject_conn(c);
            return 1;
        }
        set_timer(c, TIMER_IDLE, cfg_of(c)->idle_timeout_ms);
    }
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    UNUSED(h);
    UNUSED(suggested);
    buf->base = mlr_xmalloc(65536);
    buf->len = 65536;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct api_conn *c = container_of((uv_tcp_t *)s, struct api_conn, tcp);
    if (nread < 0) {
        free(buf->base);
        c->eof = 1;
        uv_read_stop(s);
        c->reading = 0;
        /* Half-closed: a request being handled still gets its answer, then we close. */
        if (nread != UV_EOF || c->linger || (c->req == NULL && c->writes == 0) ||
            (c->req && !c->dispatched))
            conn_close(c);
        return;
    }
    if (c->linger || c->closing || c->close_after_write) {
        free(buf->base); /* draining after an error response */
        return;
    }
    if (c->tls != NULL) {
        int ended = tls_in(c, buf->base, (size_t)nread);
        free(buf->base);
        if (ended)
            return;
    } else {
        mlr_buf_append(&c->pending, buf->base, (size_t)nread);
        free(buf->base);
    }
    if (c->pending.len >= PENDING_MAX) {
        uv_read_stop(s);
        c->reading = 0;
    }
    if (can_parse_more(c))
        parse_pending(c);
}

static void start_reading(struct api_conn *c)
{
    if (c->reading || c->closing)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
}

static void on_timer(uv_timer_t *t)
{
    struct api_conn *c = container_of(t, struct api_conn, timer);
    if (c->mode == TIMER_REQUEST && c->req && !c->dispatched) {
        char reason[128];
        snprintf(reason, sizeof(reason), "request was not received within [%lld] ms",
                 (long long)cfg_of(c)->request_timeout_ms);
        conn_error(c, 408, "timeout_exception", reason);
        return;
    }
    conn_close(c); /* idle keep-alive, or the end of lingering */
}

/* ---------------------------------- accept / stop ---------------------------------- */

static void reject_conn(struct api_conn *c)
{
    conn_error(c, 429, "rejected_execution_exception",
               "too many open connections; try again later");
}

struct api_conn *api__conn_new(struct api_server *srv, uv_loop_t *loop, int reject)
{
    struct api_conn *c = mlr_xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->reject = reject;
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    http_parser_init(&c->parser, HTTP_REQUEST);
    mlr_buf_init(&c->pending, 0);
    mlr_buf_init(&c->url, 0);
    mlr_buf_init(&c->field, 0);
    mlr_buf_init(&c->value, 0);
    return c;
}

void api__conn_start(struct api_conn *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    struct api_tls_ctx *tls = api__server_tls(c->srv);
    if (tls != NULL)
        c->tls = api__tls_conn_new(tls);
    if (c->reject && c->tls == NULL) {
        reject_conn(c);
        return;
    }
    /* A TLS handshake must finish within the request timeout (tls_in then starts the idle one). */
    set_timer(c, TIMER_IDLE, c->tls ? cfg_of(c)->request_timeout_ms : cfg_of(c)->idle_timeout_ms);
    start_reading(c);
}

void api__conn_close(struct api_conn *c)
{
    conn_close(c);
}

void api__conn_stop(struct api_conn *c)
{
    c->stop_requested = 1;
    if (c->req == NULL && c->writes == 0)
        conn_close(c);
    else if (c->req && !c->dispatched)
        conn_close(c); /* a request still arriving is abandoned: the client retries it */
}
