/*
 * server.c — the listening socket, the connection cap and graceful stop.
 *
 * Connections beyond http.max_connections are still accepted (so the client is not left hanging
 * in the backlog) and answered 429 before being closed; at most REJECT_MAX of those are in flight,
 * beyond that a surplus connection is closed at once. Stop closes the listener, closes idle
 * connections, lets requests in progress answer, and force-closes the rest after
 * http.shutdown_timeout. With tls.cert/tls.key the server owns the TLS context (tls.c) that every
 * new connection takes its session from, and reloads it on request (SIGHUP in main.c).
 * Loop thread only.
 */
#include "api_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REJECT_MAX 1024

struct api_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t stop_timer;        /* force-close deadline during stop */
    const struct mlr_config *cfg; /* borrowed from main() */
    struct api_context ctx;       /* copy */
    struct api_conn *conns;       /* open connections (doubly linked) */
    int64_t nconns;               /* served connections */
    int64_t nrejects;             /* connections being answered 429 */
    struct api_tls_ctx *tls;      /* NULL: plaintext listener */
    int port;                     /* bound port */
    int loopback;                 /* bound to a loopback address */
    int stopping;
    int handles;                  /* listener + stop timer still open */
    int timer_closed;             /* stop_timer has been closed */
    api_server_stop_cb stop_cb;
    void *stop_data;
    struct api_http_stats *http_stats; /* request counters for /metrics */
};

const struct mlr_config *api__server_config(const struct api_server *srv)
{
    return srv->cfg;
}

const struct api_context *api__server_context(const struct api_server *srv)
{
    return &srv->ctx;
}

struct api_http_stats *api__server_http_stats(const struct api_server *srv)
{
    return srv->http_stats;
}

int64_t api__server_conn_count(const struct api_server *srv)
{
    return srv->nconns;
}

int api_server_port(const struct api_server *srv)
{
    return srv->port;
}

struct api_tls_ctx *api__server_tls(const struct api_server *srv)
{
    return srv->tls;
}

int api_server_tls_enabled(const struct api_server *srv)
{
    return srv->tls != NULL;
}

int api_server_is_loopback(const struct api_server *srv)
{
    return srv->loopback;
}

int api_server_tls_reload(struct api_server *srv)
{
    char err[1024];
    if (srv->tls == NULL) {
        mlr_log(MLR_LOG_INFO, "tls", "reload requested but TLS is not configured; nothing to do");
        return MLR_OK;
    }
    int rc = api__tls_ctx_reload(srv->tls, err, sizeof(err));
    if (rc != MLR_OK)
        mlr_log(MLR_LOG_ERROR, "tls", "reload failed, still serving the previous certificate: %s",
                err);
    return rc;
}

static void on_server_handle_closed(uv_handle_t *h);

static void close_stop_timer(struct api_server *srv)
{
    if (srv->timer_closed)
        return;
    srv->timer_closed = 1;
    uv_close((uv_handle_t *)&srv->stop_timer, on_server_handle_closed);
}

static void maybe_finish_stop(struct api_server *srv)
{
    if (srv->stopping && srv->conns == NULL)
        close_stop_timer(srv);
    if (!srv->stopping || srv->conns != NULL || srv->handles > 0)
        return;
    api_server_stop_cb cb = srv->stop_cb;
    void *data = srv->stop_data;
    api__tls_ctx_free(srv->tls);
    api__http_stats_free(srv->http_stats);
    free(srv);
    if (cb)
        cb(data);
}

void api__server_conn_gone(struct api_server *srv, struct api_conn *c)
{
    if (c->reject) {
        srv->nrejects--;
    } else {
        srv->nconns--;
    }
    if (c->prev)
        c->prev->next = c->next;
    else if (srv->conns == c)
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    maybe_finish_stop(srv);
}

int api_addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const unsigned char *a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        return a[0] == 127;
    }
    if (sa->sa_family != AF_INET6)
        return 0;
    static const unsigned char loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    return memcmp(a, loop6, 16) == 0 || (memcmp(a, mapped, 12) == 0 && a[12] == 127);
}

/*
 * Protected mode (spec §8): until users are configured, only clients on loopback addresses are
 * served; anyone else has the connection closed at once, before a byte is read. With users,
 * everyone may connect and every request must authenticate.
 */
static int peer_allowed(struct api_server *srv, struct api_conn *c)
{
    struct sockaddr_storage peer;
    int len = sizeof(peer);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &len) != 0)
        return 0;
    if (uv_ip_name((struct sockaddr *)&peer, c->peer, sizeof(c->peer)) != 0)
        snprintf(c->peer, sizeof(c->peer), "-");
    c->loopback = api_addr_is_loopback((struct sockaddr *)&peer);
    if (api_auth_enabled(srv->ctx.auth) || c->loopback)
        return 1;
    mlr_log(MLR_LOG_WARN, "http", "closed a connection from a non-loopback address: no users "
                                  "are configured, so only loopback clients are served");
    return 0;
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct api_server *srv = container_of((uv_tcp_t *)listener, struct api_server, listener);
    if (status != 0 || srv->stopping) {
        mlr_log(MLR_LOG_WARN, "http", "accept failed: %s", uv_strerror(status));
        return;
    }
    int reject = srv->nconns >= srv->cfg->max_connections;
    struct api_conn *c = api__conn_new(srv, srv->loop, reject);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    if (reject)
        srv->nrejects++;
    else
        srv->nconns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || (reject && srv->nrejects > REJECT_MAX)) {
        api__conn_close(c);
        return;
    }
    if (!peer_allowed(srv, c)) {
        api__conn_close(c);
        return;
    }
    api__conn_start(c);
}

static int bind_listener(struct api_server *srv, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    int rc = uv_ip4_addr(srv->cfg->listen_host, srv->cfg->listen_port, (struct sockaddr_in *)&addr);
    if (rc != 0)
        rc = uv_ip6_addr(srv->cfg->listen_host, srv->cfg->listen_port,
                         (struct sockaddr_in6 *)&addr);
    if (rc != 0) {
        snprintf(err, errlen, "invalid listen address [%s]", srv->cfg->listen_host);
        return MLR_EINVAL;
    }
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 4096, on_connection); /* bursts of connects */
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", srv->cfg->listen_host,
                 srv->cfg->listen_port, uv_strerror(rc));
        return MLR_EIO;
    }
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len);
    srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    srv->loopback = api_addr_is_loopback((struct sockaddr *)&bound);
    return MLR_OK;
}

static void on_server_handle_closed(uv_handle_t *h)
{
    struct api_server *srv = h->data;
    srv->handles--;
    maybe_finish_stop(srv);
}

int api_server_open(uv_loop_t *loop, const struct mlr_config *cfg, const struct api_context *ctx,
                    struct api_server **out, char *err, size_t errlen)
{
    struct api_tls_ctx *tls = NULL;
    if (cfg->tls_cert != NULL) {
        int rc = api__tls_ctx_new(cfg->tls_cert, cfg->tls_key, &tls, err, errlen);
        if (rc != MLR_OK)
            return rc;
    }
    struct api_server *srv = mlr_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->ctx = *ctx;
    srv->tls = tls; /* the server owns the context now */
    srv->http_stats = api__http_stats_new();
    uv_tcp_init(loop, &srv->listener);
    uv_timer_init(loop, &srv->stop_timer);
    srv->listener.data = srv;
    srv->stop_timer.data = srv;
    srv->handles = 2;
    int rc = bind_listener(srv, err, errlen);
    if (rc != MLR_OK) {
        srv->stopping = 1; /* free once both handles are closed; no callback */
        uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
        close_stop_timer(srv);
        return rc;
    }
    *out = srv;
    return MLR_OK;
}

static void on_stop_deadline(uv_timer_t *t)
{
    struct api_server *srv = t->data;
    mlr_log(MLR_LOG_WARN, "http", "shutdown timeout: closing connections still busy");
    for (struct api_conn *c = srv->conns; c; c = c->next)
        api__conn_close(c);
}

void api_server_stop(struct api_server *srv, api_server_stop_cb cb, void *data)
{
    srv->stopping = 1;
    srv->stop_cb = cb;
    srv->stop_data = data;
    uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
    for (struct api_conn *c = srv->conns, *next; c; c = next) {
        next = c->next; /* api__conn_stop may unlink c later, never now */
        api__conn_stop(c);
    }
    if (srv->conns == NULL) {
        close_stop_timer(srv);
        return;
    }
    uv_timer_start(&srv->stop_timer, on_stop_deadline, (uint64_t)srv->cfg->shutdown_timeout_ms, 0);
}

struct api_server *api__server_new_detached(uv_loop_t *loop, const struct mlr_config *cfg,
                                            const struct api_context *ctx)
{
    struct api_server *srv = mlr_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->ctx = *ctx;
    srv->http_stats = api__http_stats_new();
    return srv;
}

void api__server_free_detached(struct api_server *srv)
{
    assert(srv == NULL || srv->conns == NULL);
    if (srv)
        api__http_stats_free(srv->http_stats);
    free(srv);
}
