/*
 * loadgen.c — closed-loop load generator for bench/tasks.sh (one file, no dependencies beyond
 * libc; built by the script with `cc -O2`).
 *
 *   loadgen freeport
 *       Prints a free TCP port on 127.0.0.1.
 *
 *   loadgen http -p PORT -g GROUP_ID -k CONNECTOR_ID [-c CONNS] [-d SECONDS] [-i PROGRESS_MS]
 *                [-w MAX_WAIT_SECONDS]
 *       CONNS keep-alive connections to mlrelay on 127.0.0.1:PORT each POST
 *       /_plugins/_ml/models/_register back to back (one request in flight per connection) for
 *       SECONDS. A response counts as acknowledged when it is 200 and carries a task_id. When the
 *       load stops, the requests in flight are waited for; then the task backlog (tasks in state
 *       CREATED or RUNNING) is polled through POST /_plugins/_ml/tasks/_search until it is empty,
 *       and finally the COMPLETED and FAILED counts are read. Every PROGRESS_MS during the load
 *       (0 = never) the backlog is sampled on a separate connection, to show whether the workers
 *       keep up.
 *
 *   loadgen beanstalk -p PORT [-c CONNS] [-d SECONDS] [-s JOB_BYTES]
 *       CONNS connections to beanstalkd each run put → reserve-with-timeout → delete cycles back to
 *       back for SECONDS; a cycle counts once its DELETED arrives. Cycles in progress when the
 *       time is up are finished (not counted as started anew).
 *
 * Output: `key=value` lines on stdout (rates per second, latencies in milliseconds), progress and
 * diagnostics on stderr. Exit status 0 on success, 1 when something went wrong (the server
 * refused every request, a connection failed, the backlog never drained within MAX_WAIT_SECONDS).
 *
 * Only 127.0.0.1 is ever contacted. Every phase is bounded in time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_MAX 65536     /* bytes of one response we buffer */
#define OUT_MAX 2048     /* bytes of one request */
#define DRAIN_MAX_S 30.0 /* how long in-flight requests may take after the load stops */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* ---------------------------------- latency samples ---------------------------------- */

struct samples {
    double *v;
    size_t n, cap;
};

static void samples_add(struct samples *s, double x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof(double));
        if (s->v == NULL)
            die("out of memory");
    }
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the (sorted) samples, in milliseconds. */
static double pct_ms(const struct samples *s, double p)
{
    if (s->n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)s->n);
    if (i >= s->n)
        i = s->n - 1;
    return s->v[i] * 1000.0;
}

static void print_latency(const char *prefix, struct samples *s)
{
    qsort(s->v, s->n, sizeof(double), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    printf("%s_p50_ms=%.3f\n", prefix, pct_ms(s, 50));
    printf("%s_p90_ms=%.3f\n", prefix, pct_ms(s, 90));
    printf("%s_p99_ms=%.3f\n", prefix, pct_ms(s, 99));
    printf("%s_max_ms=%.3f\n", prefix, s->n ? s->v[s->n - 1] * 1000.0 : 0.0);
    printf("%s_mean_ms=%.3f\n", prefix, s->n ? sum / (double)s->n * 1000.0 : 0.0);
}

/* CPU seconds this process has used so far (the load generator shares the machine). */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------- sockets ---------------------------------- */

static int connect_local(int port, int nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        die("connect 127.0.0.1:%d: %s", port, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (nonblock)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

/* Writes all of @len bytes of @buf to the (possibly non-blocking) socket. Requests here are
 * tiny, so a short write only happens when the peer stopped reading: then we wait for it. */
static void write_all(int fd, const char *buf, size_t len)
{
    size_t off = 0;
    double deadline = now_s() + DRAIN_MAX_S;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (now_s() > deadline)
                die("peer stopped reading for %.0f s", DRAIN_MAX_S);
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        } else {
            die("write: %s", w < 0 ? strerror(errno) : "short write");
        }
    }
}

/* ---------------------------------- HTTP responses ---------------------------------- */

/* If @buf holds a whole HTTP response, returns its length and sets *status, *body and *blen;
 * returns 0 when more bytes are needed and -1 when the response cannot be parsed. */
static long http_parse(const char *buf, size_t len, int *status, const char **body, size_t *blen)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return len >= IN_MAX ? -1 : 0;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(buf + 9);
    long clen = -1;
    for (const char *p = buf; p < end;) {
        const char *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
        if (eol == NULL)
            break;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
            clen = atol(p + 15);
        p = eol + 2;
    }
    if (clen < 0)
        return -1; /* mlrelay always sends content-length; chunked is not expected */
    size_t hlen = (size_t)(end + 4 - buf);
    if (hlen + (size_t)clen > IN_MAX)
        return -1;
    if (len < hlen + (size_t)clen)
        return 0;
    *body = buf + hlen;
    *blen = (size_t)clen;
    return (long)(hlen + (size_t)clen);
}

/* The total hit count ("total":{"value":N) of a search response, or -1. */
static long hits_total(const char *body, size_t blen)
{
    const char *p = memmem(body, blen, "\"total\":{\"value\":", 17);
    return p ? atol(p + 17) : -1;
}

static const char BACKLOG_QUERY[] =
    "{\"query\":{\"terms\":{\"state\":[\"CREATED\",\"RUNNING\"]}},\"size\":0,"
    "\"track_total_hits\":true}";
static const char COMPLETED_QUERY[] =
    "{\"query\":{\"term\":{\"state\":\"COMPLETED\"}},\"size\":0,\"track_total_hits\":true}";
static const char FAILED_QUERY[] =
    "{\"query\":{\"term\":{\"state\":\"FAILED\"}},\"size\":0,\"track_total_hits\":true}";

static size_t build_post(char *out, size_t cap, const char *path, const char *body)
{
    int n = snprintf(out, cap,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     path, strlen(body), body);
    if (n < 0 || (size_t)n >= cap)
        die("request too long");
    return (size_t)n;
}

/* One blocking search on its own connection: the hit count for @query, or -1. */
static long search_count(int port, const char *query)
{
    static char req[OUT_MAX], in[IN_MAX];
    int fd = connect_local(port, 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t len = build_post(req, sizeof(req), "/_plugins/_ml/tasks/_search", query);
    write_all(fd, req, len);
    size_t got = 0;
    long total = -1;
    for (;;) {
        ssize_t r = read(fd, in + got, sizeof(in) - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        int status = 0;
        const char *body;
        size_t blen;
        long n = http_parse(in, got, &status, &body, &blen);
        if (n < 0)
            break;
        if (n > 0) {
            if (status == 200)
                total = hits_total(body, blen);
            else
                fprintf(stderr, "loadgen: search answered %d: %.*s\n", status, (int)blen, body);
            break;
        }
    }
    close(fd);
    return total;
}

/* ---------------------------------- connections ---------------------------------- */

enum { C_CLIENT, C_PROBE };

struct conn {
    int fd;
    int kind;      /* C_CLIENT or C_PROBE */
    int busy;      /* a request is in flight */
    double t_sent; /* when it was sent */
    char out[OUT_MAX];
    size_t outlen;
    char in[IN_MAX];
    size_t inlen;
    /* beanstalk */
    int step;       /* 0 put, 1 reserve, 2 delete */
    double t_cycle; /* when the cycle's put was sent */
    char jobid[32];
};

struct run {
    int port, nconn;
    double duration;
    int ep;
    struct conn *conns;
    double t0, t_end;
    int stopping; /* the load time is over: no new requests */
    int inflight; /* client connections with a request in flight */
    /* http */
    char group[128], connector[128];
    uint64_t seq;
    uint64_t acked, errors, other_status;
    struct samples lat; /* submit latency of acknowledged requests */
    char first_error[512];
    struct conn probe;
    int probe_ms;
    double probe_next;
    size_t body_bytes;
    /* beanstalk */
    int job_bytes;
    char *job;
    uint64_t cycles;
    struct samples put_lat, cycle_lat;
};

static void arm(struct run *r, struct conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void conn_send(struct conn *c)
{
    c->busy = 1;
    c->t_sent = now_s();
    write_all(c->fd, c->out, c->outlen);
}

/* Reads what is available on @c; returns 0 on EOF or error. */
static int conn_read(struct conn *c)
{
    for (;;) {
        if (c->inlen >= sizeof(c->in))
            die("response larger than %d bytes", IN_MAX);
        ssize_t n = read(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen);
        if (n > 0) {
            c->inlen += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 1;
        return 0;
    }
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->inlen - n);
    c->inlen -= n;
}

/* ---------------------------------- http mode ---------------------------------- */

static void http_next(struct run *r, struct conn *c)
{
    char body[512];
    /* Fixed-width names keep every body the same size. */
    int n =
        snprintf(body, sizeof(body),
                 "{\"name\":\"m%010llu\",\"function_name\":\"remote\",\"model_group_id\":\"%s\","
                 "\"connector_id\":\"%s\"}",
                 (unsigned long long)r->seq++, r->group, r->connector);
    r->body_bytes = (size_t)n;
    c->outlen = build_post(c->out, sizeof(c->out), "/_plugins/_ml/models/_register", body);
    conn_send(c);
    r->inflight++;
}

static void probe_send(struct run *r)
{
    struct conn *c = &r->probe;
    c->outlen = build_post(c->out, sizeof(c->out), "/_plugins/_ml/tasks/_search", BACKLOG_QUERY);
    conn_send(c);
    r->probe_next = c->t_sent + r->probe_ms / 1000.0;
}

static void http_response(struct run *r, struct conn *c, int status, const char *body, size_t blen)
{
    double t = now_s();
    c->busy = 0;
    if (c->kind == C_PROBE) {
        fprintf(stderr, "  t=%5.1fs acknowledged=%llu backlog=%ld\n", t - r->t0,
                (unsigned long long)r->acked, status == 200 ? hits_total(body, blen) : -1L);
        return;
    }
    r->inflight--;
    if (status == 200 && memmem(body, blen, "\"task_id\"", 9)) {
        r->acked++;
        samples_add(&r->lat, t - c->t_sent);
    } else {
        r->errors++;
        if (r->first_error[0] == 0)
            snprintf(r->first_error, sizeof(r->first_error), "%d %.*s", status,
                     (int)(blen > 400 ? 400 : blen), body);
    }
    if (!r->stopping)
        http_next(r, c);
}

static void http_readable(struct run *r, struct conn *c)
{
    int alive = conn_read(c);
    for (;;) {
        int status = 0;
        const char *body = NULL;
        size_t blen = 0;
        long n = http_parse(c->in, c->inlen, &status, &body, &blen);
        if (n < 0)
            die("unparsable HTTP response: %.200s", c->in);
        if (n == 0)
            break;
        http_response(r, c, status, body, blen);
        consume(c, (size_t)n);
    }
    if (!alive)
        die("the server closed a connection (%s)",
            r->first_error[0] ? r->first_error : "no error response seen");
}

static int run_http(struct run *r, double max_wait)
{
    r->conns = calloc((size_t)r->nconn, sizeof(struct conn));
    for (int i = 0; i < r->nconn; i++) {
        r->conns[i].fd = connect_local(r->port, 1);
        r->conns[i].kind = C_CLIENT;
        arm(r, &r->conns[i]);
    }
    if (r->probe_ms > 0) {
        r->probe.fd = connect_local(r->port, 1);
        r->probe.kind = C_PROBE;
        arm(r, &r->probe);
    }
    r->t0 = now_s();
    r->t_end = r->t0 + r->duration;
    r->probe_next = r->t0 + r->probe_ms / 1000.0;
    for (int i = 0; i < r->nconn; i++)
        http_next(r, &r->conns[i]);

    struct epoll_event evs[256];
    for (;;) {
        double t = now_s();
        if (!r->stopping && t >= r->t_end)
            r->stopping = 1;
        if (r->stopping && r->inflight == 0)
            break;
        if (t > r->t_end + DRAIN_MAX_S)
            die("%d requests still unanswered %.0f s after the load stopped", r->inflight,
                DRAIN_MAX_S);
        if (r->probe_ms > 0 && !r->stopping && !r->probe.busy && t >= r->probe_next)
            probe_send(r);
        double wake = r->stopping ? t + 0.1 : r->t_end;
        if (r->probe_ms > 0 && !r->stopping && r->probe_next < wake)
            wake = r->probe_next;
        int ms = (int)((wake - t) * 1000.0) + 1;
        int n = epoll_wait(r->ep, evs, 256, ms < 0 ? 0 : ms);
        for (int i = 0; i < n; i++)
            http_readable(r, evs[i].data.ptr);
    }
    double t_acked = now_s();
    double load_s = t_acked - r->t0;
    printf("connections=%d\n", r->nconn);
    printf("duration_s=%.3f\n", load_s);
    printf("body_bytes=%zu\n", r->body_bytes);
    printf("acknowledged=%llu\n", (unsigned long long)r->acked);
    printf("refused=%llu\n", (unsigned long long)r->errors);
    printf("ack_rate=%.1f\n", (double)r->acked / load_s);
    printf("client_cpu_s=%.2f\n", cpu_s());
    print_latency("submit", &r->lat);
    if (r->errors)
        fprintf(stderr, "loadgen: %llu requests not acknowledged, first: %s\n",
                (unsigned long long)r->errors, r->first_error);
    fflush(stdout);
    if (r->acked == 0)
        die("no request was acknowledged");

    /* Wait for the backlog to drain. The poll interval shrinks with the backlog so that polling
     * costs the server little while the backlog is large and the end is seen precisely. */
    double deadline = t_acked + max_wait, t_done = 0;
    long backlog = -1;
    long first_backlog = -1;
    for (;;) {
        backlog = search_count(r->port, BACKLOG_QUERY);
        double t = now_s();
        if (first_backlog < 0)
            first_backlog = backlog;
        if (backlog == 0) {
            t_done = t;
            break;
        }
        if (t > deadline)
            break;
        long us = backlog > 20000 ? 100000 : backlog > 2000 ? 20000 : backlog > 200 ? 5000 : 1000;
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
    long completed = search_count(r->port, COMPLETED_QUERY);
    long failed = search_count(r->port, FAILED_QUERY);
    printf("backlog_at_load_end=%ld\n", first_backlog);
    printf("completed=%ld\n", completed);
    printf("failed=%ld\n", failed);
    if (t_done == 0) {
        printf("e2e_s=nan\ne2e_rate=0\n");
        fprintf(stderr, "loadgen: backlog still %ld after %.0f s\n", backlog, max_wait);
        return 1;
    }
    printf("drain_s=%.3f\n", t_done - t_acked);
    printf("e2e_s=%.3f\n", t_done - r->t0);
    printf("e2e_rate=%.1f\n", (double)r->acked / (t_done - r->t0));
    if (completed != (long)r->acked)
        fprintf(stderr, "loadgen: %ld COMPLETED tasks for %llu acknowledged registers\n", completed,
                (unsigned long long)r->acked);
    return 0;
}

/* ---------------------------------- beanstalk mode ---------------------------------- */

static void bs_put(struct run *r, struct conn *c)
{
    int n = snprintf(c->out, sizeof(c->out), "put 1024 0 60 %d\r\n", r->job_bytes);
    if (n + r->job_bytes + 2 > (int)sizeof(c->out))
        die("job too large");
    memcpy(c->out + n, r->job, (size_t)r->job_bytes);
    memcpy(c->out + n + r->job_bytes, "\r\n", 2);
    c->outlen = (size_t)n + (size_t)r->job_bytes + 2;
    c->step = 0;
    conn_send(c);
    c->t_cycle = c->t_sent;
    r->inflight++;
}

static void bs_cmd(struct conn *c, int step, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->out, sizeof(c->out), fmt, ap);
    va_end(ap);
    c->outlen = (size_t)n;
    c->step = step;
    conn_send(c);
}

/* Handles one reply; returns its length, or 0 when more bytes are needed. */
static size_t bs_reply(struct run *r, struct conn *c)
{
    const char *eol = memmem(c->in, c->inlen, "\r\n", 2);
    if (eol == NULL)
        return 0;
    size_t line = (size_t)(eol - c->in) + 2;
    double t = now_s();
    switch (c->step) {
    case 0:
        if (strncmp(c->in, "INSERTED ", 9) != 0)
            die("put answered: %.*s", (int)line - 2, c->in);
        samples_add(&r->put_lat, t - c->t_sent);
        bs_cmd(c, 1, "reserve-with-timeout 10\r\n");
        return line;
    case 1: {
        unsigned long long id;
        int bytes;
        if (sscanf(c->in, "RESERVED %llu %d", &id, &bytes) != 2)
            die("reserve answered: %.*s", (int)line - 2, c->in);
        if (c->inlen < line + (size_t)bytes + 2)
            return 0; /* the job's data has not all arrived */
        bs_cmd(c, 2, "delete %llu\r\n", id);
        return line + (size_t)bytes + 2;
    }
    default:
        if (strncmp(c->in, "DELETED", 7) != 0)
            die("delete answered: %.*s", (int)line - 2, c->in);
        c->busy = 0;
        r->inflight--;
        r->cycles++;
        samples_add(&r->cycle_lat, t - c->t_cycle);
        if (!r->stopping)
            bs_put(r, c);
        return line;
    }
}

static int run_beanstalk(struct run *r)
{
    r->job = malloc((size_t)r->job_bytes);
    for (int i = 0; i < r->job_bytes; i++)
        r->job[i] = (char)('a' + i % 26);
    r->conns = calloc((size_t)r->nconn, sizeof(struct conn));
    for (int i = 0; i < r->nconn; i++) {
        r->conns[i].fd = connect_local(r->port, 1);
        arm(r, &r->conns[i]);
    }
    r->t0 = now_s();
    r->t_end = r->t0 + r->duration;
    for (int i = 0; i < r->nconn; i++)
        bs_put(r, &r->conns[i]);
    struct epoll_event evs[256];
    for (;;) {
        double t = now_s();
        if (!r->stopping && t >= r->t_end)
            r->stopping = 1;
        if (r->stopping && r->inflight == 0)
            break;
        if (t > r->t_end + DRAIN_MAX_S)
            die("%d cycles unfinished %.0f s after the load stopped", r->inflight, DRAIN_MAX_S);
        int ms = (int)(((r->stopping ? t + 0.1 : r->t_end) - t) * 1000.0) + 1;
        int n = epoll_wait(r->ep, evs, 256, ms);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            int alive = conn_read(c);
            size_t used;
            while (c->inlen > 0 && (used = bs_reply(r, c)) > 0)
                consume(c, used);
            if (!alive)
                die("beanstalkd closed a connection");
        }
    }
    double el = now_s() - r->t0;
    printf("connections=%d\n", r->nconn);
    printf("job_bytes=%d\n", r->job_bytes);
    printf("duration_s=%.3f\n", el);
    printf("cycles=%llu\n", (unsigned long long)r->cycles);
    printf("cycle_rate=%.1f\n", (double)r->cycles / el);
    printf("client_cpu_s=%.2f\n", cpu_s());
    print_latency("put", &r->put_lat);
    print_latency("cycle", &r->cycle_lat);
    return r->cycles > 0 ? 0 : 1;
}

/* ---------------------------------- main ---------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen freeport\n"
            "       loadgen http -p PORT -g GROUP_ID -k CONNECTOR_ID [-c CONNS] [-d SECONDS]\n"
            "                    [-i PROGRESS_MS] [-w MAX_WAIT_SECONDS]\n"
            "       loadgen beanstalk -p PORT [-c CONNS] [-d SECONDS] [-s JOB_BYTES]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    const char *mode = argv[1];
    if (strcmp(mode, "freeport") == 0) {
        printf("%d\n", free_port());
        return 0;
    }
    struct run *r = calloc(1, sizeof(*r));
    r->nconn = 64;
    r->duration = 10;
    r->job_bytes = 150;
    double max_wait = 300;
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "p:c:d:g:k:i:w:s:")) != -1) {
        switch (opt) {
        case 'p':
            r->port = atoi(optarg);
            break;
        case 'c':
            r->nconn = atoi(optarg);
            break;
        case 'd':
            r->duration = atof(optarg);
            break;
        case 'g':
            snprintf(r->group, sizeof(r->group), "%s", optarg);
            break;
        case 'k':
            snprintf(r->connector, sizeof(r->connector), "%s", optarg);
            break;
        case 'i':
            r->probe_ms = atoi(optarg);
            break;
        case 'w':
            max_wait = atof(optarg);
            break;
        case 's':
            r->job_bytes = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (r->port <= 0 || r->nconn <= 0 || r->duration <= 0 || r->job_bytes <= 0 ||
        r->job_bytes > 1024)
        usage();
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    if (r->ep < 0)
        die("epoll_create1: %s", strerror(errno));
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "http") == 0) {
        if (!r->group[0] || !r->connector[0])
            usage();
        return run_http(r, max_wait);
    }
    if (strcmp(mode, "beanstalk") == 0)
        return run_beanstalk(r);
    usage();
}
