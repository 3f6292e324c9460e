/*
 * fuzz_http.c — libFuzzer target for the HTTP request path: raw client bytes through the
 * connection (api/conn.c: http-parser callbacks, header and body limits, pipelining, half-close,
 * connection-level errors), the route table and central dispatcher (api/routes.c: path split,
 * percent-decoding, 405/400, Content-Type and JSON body checks) and the response writer
 * (api/response.c), with no socket and no store.
 *
 * Seams: the server is made with api__server_new_detached() (no listener); the rest is
 * link-time:
 *  - every route handler (h_*.c) is replaced by a stub that runs the endpoint's pure body
 *    validator where there is one (connector/model/group build, settings normalisation, batch
 *    ingest, search compile) and answers synchronously, so no store is touched;
 *  - libuv's stream calls that touch a socket (uv_read_start/stop, uv_write, uv_shutdown) are
 *    defined here, so they override libuv's for this executable: reads are driven by the target,
 *    and writes and shutdowns are queued and completed later, as the loop would.
 * The connection's tcp handle is initialised but never opened; its timer is real.
 *
 * Input: one control byte (bits 0-5: read size, 0 = everything at once; bit 6: the connection is
 * over the cap and gets 429; bit 7: the client half-closes after its bytes), then the bytes the
 * client sends. Oracle: the sanitizers, and every response is "HTTP/1.1 <status>" whose body is
 * valid JSON.
 *
 * A handler added later without a stub here is linked as it is and, with no store in @ctx, would
 * crash the fuzzer on its route: give it a stub below.
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>

#include "api_int.h"
#include "store_int.h"

/* ---------------------------------- the server ---------------------------------- */

static uv_loop_t *loop;
static struct mlr_config cfg;
static struct api_context ctx;      /* no store, no workers: the handlers below need neither */
static struct mlr_settings *settings;
static struct api_server *server;   /* detached: no listener */

/* ---------------------------------- libuv stream overrides ---------------------------------- */

#define MAX_OPS 4096

struct op {
    uv_write_t *w;        /* a write, or */
    uv_shutdown_t *sr;    /* a shutdown */
    uv_write_cb wcb;
    uv_shutdown_cb scb;
    uv_stream_t *stream;
};

static struct op ops[MAX_OPS];
static size_t nops, opsdone;
static uv_alloc_cb alloc_cb;
static uv_read_cb read_cb;
static int reading;

static void check_response(const uv_buf_t bufs[], unsigned nbufs)
{
    if (nbufs < 1 || bufs[0].len < 12 || memcmp(bufs[0].base, "HTTP/1.1 ", 9) != 0)
        abort();
    if (nbufs == 2) {
        struct json_object *o = fuzz_json((const uint8_t *)bufs[1].base, bufs[1].len);
        if (o == NULL) {
            fprintf(stderr, "fuzz_http: response body is not JSON: %.*s\n", (int)bufs[1].len,
                    bufs[1].base);
            abort();
        }
        json_object_put(o);
    }
}

int uv_write(uv_write_t *req, uv_stream_t *handle, const uv_buf_t bufs[], unsigned int nbufs,
             uv_write_cb cb)
{
    if (nops == MAX_OPS)
        return UV_ENOBUFS;
    check_response(bufs, nbufs);
    ops[nops++] = (struct op){.w = req, .wcb = cb, .stream = handle};
    return 0;
}

int uv_shutdown(uv_shutdown_t *req, uv_stream_t *handle, uv_shutdown_cb cb)
{
    if (nops == MAX_OPS)
        return UV_ENOBUFS;
    ops[nops++] = (struct op){.sr = req, .scb = cb, .stream = handle};
    return 0;
}

int uv_read_start(uv_stream_t *stream, uv_alloc_cb acb, uv_read_cb rcb)
{
    UNUSED(stream);
    alloc_cb = acb;
    read_cb = rcb;
    reading = 1;
    return 0;
}

int uv_read_stop(uv_stream_t *stream)
{
    UNUSED(stream);
    reading = 0;
    return 0;
}

/* Completes queued writes and shutdowns in order (cancelled once their handle is closing). */
static void drain_ops(void)
{
    while (opsdone < nops) {
        struct op op = ops[opsdone++];
        int status = uv_is_closing((uv_handle_t *)op.stream) ? UV_ECANCELED : 0;
        if (op.w)
            op.wcb(op.w, status);
        else
            op.scb(op.sr, status);
    }
    nops = opsdone = 0;
}

/* ---------------------------------- handler stubs ---------------------------------- */

static void send_validation(struct api_req *req, int rc, const struct workers_error *e)
{
    if (rc != MLR_OK) {
        api_send_workers_error(req, e);
        return;
    }
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "route", json_object_new_string(req->route->pattern));
    const char *id = api_path_id(req, 0);
    if (id)
        json_object_object_add(o, "id", json_object_new_string(id));
    if (api_query(req, "q") != NULL)
        json_object_object_add(o, "q", json_object_new_boolean(1)); /* decoding ran */
    api_send_json(req, 200, o);
}

static void stub_plain(struct api_req *req)
{
    send_validation(req, MLR_OK, NULL);
}

static void stub_connector(struct api_req *req)
{
    struct workers_error e;
    struct json_object *cred = NULL, *doc = NULL;
    json_object_object_get_ex(req->json, "credential", &cred);
    struct json_object *keys = workers_credential_strings(cred);
    int rc = workers_connector_build(req->json, keys, settings, 1, 1, &doc, &e);
    json_object_put(keys);
    json_object_put(doc);
    send_validation(req, rc, &e);
}

static void stub_model(struct api_req *req)
{
    struct workers_error e;
    struct workers_model m;
    memset(&m, 0, sizeof(m));
    int rc = workers_model_build(req->json, api_req_caller(req), settings, 1, &m, &e);
    workers_model_cleanup(&m);
    send_validation(req, rc, &e);
}

static void stub_group(struct api_req *req)
{
    struct workers_error e;
    struct json_object *doc = NULL;
    int rc = workers_group_build(req->json, api_req_caller(req), 1, &doc, &e);
    json_object_put(doc);
    send_validation(req, rc, &e);
}

static void stub_settings(struct api_req *req)
{
    struct json_object *section = NULL, *norm = NULL;
    char err[512];
    if (json_object_object_get_ex(req->json, "persistent", &section) &&
        mlr_settings_normalize(section, "persistent", &norm, err, sizeof(err)) != MLR_OK) {
        api_send_error(req, 400, "illegal_argument_exception", err);
        return;
    }
    json_object_put(norm);
    stub_plain(req);
}

static void stub_ingest(struct api_req *req)
{
    struct workers_error e;
    char *input = NULL;
    int64_t total;
    int rc = workers_batch_ingest_build(req->json, &input, &total, &e);
    free(input);
    send_validation(req, rc, &e);
}

static void stub_search(struct api_req *req)
{
    struct store__query q;
    char err[512];
    const struct store__index *ix = store__kind_index((enum store_kind)req->route->kind);
    int rc = store__search_compile(ix, req->json, &q, err, sizeof(err));
    store__query_cleanup(&q);
    if (rc != MLR_OK) {
        api_send_error(req, 400, q.err_type ? q.err_type : "parsing_exception", err);
        return;
    }
    stub_plain(req);
}

#define STUB(name, fn)                                                                             \
    void name(struct api_req *req)                                                                 \
    {                                                                                              \
        fn(req);                                                                                   \
    }
STUB(api_h_root, stub_plain)
STUB(api_h_settings_get, stub_plain)
STUB(api_h_settings_put, stub_settings)
STUB(api_h_doc_get, stub_plain)
STUB(api_h_doc_delete, stub_plain)
STUB(api_h_doc_search, stub_search)
STUB(api_h_group_register, stub_group)
STUB(api_h_group_update, stub_plain)
STUB(api_h_connector_create, stub_connector)
STUB(api_h_connector_update, stub_plain)
STUB(api_h_model_register, stub_model)
STUB(api_h_model_update, stub_plain)
STUB(api_h_model_deploy, stub_plain)
STUB(api_h_model_undeploy, stub_plain)
STUB(api_h_models_undeploy, stub_plain)
STUB(api_h_task_cancel, stub_plain)
STUB(api_h_model_predict, stub_plain)
STUB(api_h_algorithm_predict, stub_plain)
STUB(api_h_model_batch_ingest, stub_ingest)
STUB(api_h_task_results, stub_plain)
STUB(api_h_model_batch_predict, stub_plain)
STUB(api_h_stats, stub_plain)
STUB(api_h_profile, stub_plain)
STUB(api_h_metrics, stub_plain)

/* ---------------------------------- driver ---------------------------------- */

static void init(void)
{
    char err[256];
    if (loop)
        return;
    loop = mlr_xmalloc(sizeof(*loop));
    uv_loop_init(loop);
    cfg.max_content_length = 64 * 1024; /* small limits so inputs reach 413 and 431 */
    cfg.max_header_size = 2048;
    cfg.max_connections = 10;
    cfg.idle_timeout_ms = 60000;
    cfg.request_timeout_ms = 30000;
    cfg.shutdown_timeout_ms = 1000;
    if (mlr_settings_new(NULL, NULL, NULL, &settings, err, sizeof(err)) != MLR_OK)
        abort();
    server = api__server_new_detached(loop, &cfg, &ctx);
    mlr_log_setup((enum mlr_log_level)(MLR_LOG_ERROR + 1), MLR_LOG_TEXT); /* keep the fuzzer quiet */
}

/* Hands the client's next @n bytes to the connection's read callback. */
static void deliver(struct api_conn *c, const uint8_t *data, size_t n)
{
    uv_buf_t buf;
    alloc_cb((uv_handle_t *)&c->tcp, 65536, &buf);
    if (n > buf.len)
        n = buf.len;
    memcpy(buf.base, data, n);
    read_cb((uv_stream_t *)&c->tcp, (ssize_t)n, &buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    init();
    unsigned ctl = data[0];
    size_t step = (ctl & 63) ? (ctl & 63) : 65536;
    data++;
    size--;
    reading = 0;
    struct api_conn *c = api__conn_new(server, loop, (ctl >> 6) & 1);
    c->loopback = 1; /* as a local client: no users, so only loopback clients reach the routes */
    api__conn_start(c);
    while (size > 0 && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        if (!reading) {
            drain_ops(); /* the client reads our responses, which lets the server read again */
            if (!reading)
                break;
            continue;
        }
        size_t n = size < step ? size : step;
        deliver(c, data, n);
        data += n;
        size -= n;
        if (nops > 0 && (ctl & 1))
            drain_ops();
    }
    drain_ops();
    if ((ctl & 128) && reading && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_buf_t none = uv_buf_init(NULL, 0);
        read_cb((uv_stream_t *)&c->tcp, UV_EOF, &none);
        drain_ops();
    }
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        api__conn_close(c);
    drain_ops();
    uv_run(loop, UV_RUN_NOWAIT); /* close callbacks free the connection (and a detached req) */
    return 0;
}
