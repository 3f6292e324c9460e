/*
 * http.c — the upstream HTTP client: libcurl's multi-socket interface driven by the libuv loop.
 *
 * No thread ever waits on the network. libcurl tells us which sockets it wants watched
 * (CURLMOPT_SOCKETFUNCTION → one uv_poll_t per socket) and when it next needs a call
 * (CURLMOPT_TIMERFUNCTION → one uv_timer_t); readiness and timer events go back into
 * curl_multi_socket_action(), and finished transfers are collected with curl_multi_info_read()
 * and reported through each request's callback. Thousands of transfers can be in flight on the
 * loop thread; the multi handle keeps a connection cache, so keep-alive connections (and HTTP/2
 * multiplexing, when offered over TLS) are reused across requests to the same host.
 *
 * Guards applied per transfer: TLS verification (unless the connector says otherwise), no
 * redirects, a hard cap on the response body, and — through CURLOPT_PREREQFUNCTION, which runs
 * before every request on new and reused connections alike — a check of the address actually
 * connected to against the private ranges, so a host name that resolves to 10.0.0.1 is caught
 * even though its text looks public.
 *
 * Loop thread only. CURLcode is translated here and nowhere else.
 */
#include "workers_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

struct workers_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;          /* libcurl's next timeout */
    uv_timer_t watchdog;       /* read_timeout checks, every WATCHDOG_MS */
    int handles;               /* open uv handles (timer, watchdog) */
    int closing;
    int inflight;              /* transfers added and not yet finished */
    struct workers_http_req *active; /* those transfers (for aborting them at close) */
    workers_http_closed_cb closed_cb;
    void *closed_data;
};

/* One socket libcurl asked us to watch. */
struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct workers_http *h;
};

/* ---------------------------------- private addresses ---------------------------------- */

int workers_ip_is_private(const char *ip)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, ip, a) == 1) {
        return a[0] == 127 || a[0] == 10 || a[0] == 0 || (a[0] == 172 && (a[1] & 0xf0) == 16) ||
               (a[0] == 192 && a[1] == 168) || (a[0] == 169 && a[1] == 254) ||
               (a[0] == 100 && (a[1] & 0xc0) == 64); /* carrier-grade NAT */
    }
    if (inet_pton(AF_INET6, ip, a) != 1)
        return 1; /* not an address we understand: refuse rather than guess */
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, 12) == 0) {
        char v4[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, a + 12, v4, sizeof(v4));
        return workers_ip_is_private(v4);
    }
    static const unsigned char zero[16] = {0};
    int loopback = memcmp(a, zero, 15) == 0 && a[15] == 1;
    int any = memcmp(a, zero, 16) == 0;
    return loopback || any || (a[0] & 0xfe) == 0xfc /* unique local */ ||
           (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) /* link local */ ||
           (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) /* site local */;
}

static int on_prereq(void *data, char *conn_ip, char *local_ip, int conn_port, int local_port)
{
    struct workers_http_req *r = data;
    UNUSED(local_ip);
    UNUSED(conn_port);
    UNUSED(local_port);
    if (!r->allow_private && workers_ip_is_private(conn_ip)) {
        r->private_refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

/* ---------------------------------- per-transfer callbacks ---------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *data)
{
    struct workers_http_req *r = data;
    r->_silent_since = mlr_mono_ms();
    if (mlr_buf_append(&r->response, p, size * n) != MLR_OK) {
        r->too_big = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return size * n;
}

/* Keeps the few response headers the engine needs. */
static size_t on_header(char *p, size_t size, size_t n, void *data)
{
    struct workers_http_req *r = data;
    size_t len = size * n;
    r->_silent_since = mlr_mono_ms();
    static const struct {
        const char *name;
        size_t off;
    } keep[] = {
        {"retry-after:", offsetof(struct workers_http_req, retry_after)},
        {"x-amzn-errortype:", offsetof(struct workers_http_req, amzn_error)},
    };
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        size_t kl = strlen(keep[i].name);
        if (len > kl && strncasecmp(p, keep[i].name, kl) == 0) {
            char *dst = (char *)r + keep[i].off;
            size_t vl = len - kl;
            while (vl > 0 && (p[kl] == ' ' || p[kl] == '\t'))
                kl++, vl--;
            while (vl > 0 && (p[kl + vl - 1] == '\r' || p[kl + vl - 1] == '\n'))
                vl--;
            snprintf(dst, 64, "%.*s", (int)vl, p + kl);
        }
    }
    return len;
}

/* ---------------------------------- libuv <-> libcurl ---------------------------------- */

static void unlink_active(struct workers_http *h, struct workers_http_req *r)
{
    if (r->_prev)
        r->_prev->_next = r->_next;
    else
        h->active = r->_next;
    if (r->_next)
        r->_next->_prev = r->_prev;
    r->_prev = r->_next = NULL;
}

/* Detaches a finished (or aborted) transfer and reports it. */
static void finish(struct workers_http *h, struct workers_http_req *r)
{
    curl_multi_remove_handle(h->multi, r->_easy);
    curl_easy_cleanup(r->_easy);
    r->_easy = NULL;
    unlink_active(h, r);
    h->inflight--;
    r->done(r, r->data);
}

static void check_done(struct workers_http *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        struct workers_http_req *r = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
        r->curl_code = (int)msg->data.result;
        finish(h, r);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock *s = container_of(p, struct sock, poll);
    struct workers_http *h = s->h;
    int flags = status < 0 ? CURL_CSELECT_ERR : 0;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(h->multi, s->fd, flags, &running);
    check_done(h);
}

static void on_sock_closed(uv_handle_t *hd)
{
    free(container_of((uv_poll_t *)hd, struct sock, poll));
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
    struct workers_http *h = userp;
    struct sock *s = sockp;
    UNUSED(easy);
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_sock_closed);
            curl_multi_assign(h->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        s = mlr_xcalloc(1, sizeof(*s));
        s->fd = fd;
        s->h = h;
        uv_poll_init_socket(h->loop, &s->poll, fd);
        curl_multi_assign(h->multi, fd, s);
    }
    int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    struct workers_http *h = t->data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int on_timer(CURLM *multi, long ms, void *userp)
{
    struct workers_http *h = userp;
    UNUSED(multi);
    if (ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timeout, (uint64_t)ms, 0);
    return 0;
}

/* ---------------------------------- read timeout ---------------------------------- */

#define WATCHDOG_MS 100

/*
 * read_timeout is how long an upstream may stay silent (like a socket read timeout). libcurl has
 * no such option in multi-socket mode (it is not even called while a socket is quiet), so one
 * timer scans the transfers in flight and fails those silent for longer than their limit.
 * Every header or body byte received moves the mark. O(transfers) per tick.
 */
static void on_watchdog(uv_timer_t *t)
{
    struct workers_http *h = t->data;
    int64_t now = mlr_mono_ms();
    for (struct workers_http_req *r = h->active, *next; r; r = next) {
        next = r->_next;
        if (r->read_timeout_s > 0 && now - r->_silent_since >= r->read_timeout_s * 1000) {
            r->curl_code = CURLE_OPERATION_TIMEDOUT;
            snprintf(r->errbuf, sizeof(r->errbuf), "Read timed out after %ld seconds",
                     r->read_timeout_s);
            finish(h, r);
        }
    }
}

/* ---------------------------------- API ---------------------------------- */

struct workers_http *workers_http_new(uv_loop_t *loop)
{
    struct workers_http *h = mlr_xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->multi = curl_multi_init();
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* libcurl counts connections in use against this cache size and, once past it, scans the
     * whole cache on every finished transfer to evict the oldest: keep it above any realistic
     * number of connections so that never happens (descriptors are the real bound). Per-model
     * caps are enforced above us (client_config.max_connection). */
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 100000L);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    uv_timer_init(loop, &h->watchdog);
    h->watchdog.data = h;
    uv_timer_start(&h->watchdog, on_watchdog, WATCHDOG_MS, WATCHDOG_MS);
    h->handles = 2;
    return h;
}

/* Applies the request's options to a new easy handle. */
static void setup_easy(CURL *e, struct workers_http_req *r)
{
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
    if (strcmp(r->method, "GET") == 0)
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    else if (r->body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    if (r->body && strcmp(r->method, "GET") != 0)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, r->skip_verify ? 0L : 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, r->skip_verify ? 0L : 2L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    /* A 4 KiB receive buffer instead of 16 KiB: model answers are small, and with 10,000 calls in
     * flight the buffers alone would otherwise take 160 MB. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 4096L);
    if (r->aws_sigv4[0]) {
        curl_easy_setopt(e, CURLOPT_AWS_SIGV4, r->aws_sigv4);
        curl_easy_setopt(e, CURLOPT_USERNAME, r->aws_key);
        curl_easy_setopt(e, CURLOPT_PASSWORD, r->aws_secret);
    }
}

int workers_http_start(struct workers_http *h, struct workers_http_req *r)
{
    if (h->closing)
        return MLR_ECLOSED;
    CURL *e = curl_easy_init();
    if (e == NULL)
        return MLR_ENOMEM;
    mlr_buf_init(&r->response, r->max_body > 0 ? r->max_body : 0);
    r->status = 0;
    r->curl_code = 0;
    r->errbuf[0] = '\0';
    r->retry_after[0] = r->amzn_error[0] = '\0';
    r->too_big = r->private_refused = 0;
    r->_silent_since = mlr_mono_ms();
    setup_easy(e, r);
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        return MLR_EIO;
    }
    r->_easy = e;
    r->_prev = NULL;
    r->_next = h->active;
    if (h->active)
        h->active->_prev = r;
    h->active = r;
    h->inflight++;
    return MLR_OK;
}

void workers_http_req_cleanup(struct workers_http_req *r)
{
    mlr_buf_cleanup(&r->response);
    curl_slist_free_all(r->headers);
    r->headers = NULL;
}

const char *workers_http_error(const struct workers_http_req *r)
{
    if (r->errbuf[0])
        return r->errbuf;
    return curl_easy_strerror((CURLcode)r->curl_code);
}

int workers_http_timed_out(const struct workers_http_req *r)
{
    return r->curl_code == CURLE_OPERATION_TIMEDOUT;
}

enum workers_http_class workers_http_class_of(const struct workers_http_req *r)
{
    if (r->private_refused)
        return WORKERS_HTTP_CONNECT; /* refused before a byte was sent, like a failed connect */
    switch ((CURLcode)r->curl_code) {
    case CURLE_OK:
        return r->status >= 200 && r->status < 300 ? WORKERS_HTTP_OK : WORKERS_HTTP_STATUS;
    case CURLE_OPERATION_TIMEDOUT:
        return WORKERS_HTTP_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return WORKERS_HTTP_CONNECT;
    default:
        return WORKERS_HTTP_OTHER;
    }
}

const char *workers_http_class_name(enum workers_http_class c)
{
    static const char *const names[WORKERS_HTTP__CLASSES] = {"ok", "timeout", "connect",
                                                             "status", "other"};
    return c < WORKERS_HTTP__CLASSES ? names[c] : "other";
}

int workers_http_inflight(const struct workers_http *h)
{
    return h ? h->inflight : 0;
}

void *workers_http_header_append(void *list, const char *line)
{
    return curl_slist_append(list, line);
}

static void on_timer_closed(uv_handle_t *hd)
{
    struct workers_http *h = hd->data;
    if (--h->handles > 0)
        return;
    curl_multi_cleanup(h->multi);
    workers_http_closed_cb cb = h->closed_cb;
    void *data = h->closed_data;
    free(h);
    if (cb)
        cb(data);
}

void workers_http_close(struct workers_http *h, workers_http_closed_cb cb, void *data)
{
    h->closing = 1;
    h->closed_cb = cb;
    h->closed_data = data;
    while (h->active) { /* shutting down: whatever is still in flight is abandoned */
        struct workers_http_req *r = h->active;
        r->curl_code = CURLE_ABORTED_BY_CALLBACK;
        snprintf(r->errbuf, sizeof(r->errbuf), "the server is shutting down");
        finish(h, r);
    }
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
    uv_close((uv_handle_t *)&h->watchdog, on_timer_closed);
}
