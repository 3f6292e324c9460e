/*
 * predict_load.c — helpers for bench/predict.sh (one file, libc only; the script builds it with
 * `cc -O2`).
 *
 *   predict_load freeport
 *       Prints a free TCP port on 127.0.0.1.
 *
 *   predict_load upstream -p PORT -f BODY_FILE [-d DELAY_MS]
 *       A slow model provider: an HTTP/1.1 keep-alive server on 127.0.0.1:PORT (0 = any; the
 *       port is printed as `port=N` on stdout) that answers every request with 200 and the JSON
 *       of BODY_FILE, DELAY_MS after the request arrived whole. One thread, epoll; the waiting
 *       requests sit in a FIFO (the delay is the same for all, so arrival order is due order), so
 *       tens of thousands of connections cost a few hundred bytes each. On SIGTERM/SIGINT it
 *       prints `requests=`, `accepted=`, `max_open=` (the most connections open at once) and the
 *       CLOCK_MONOTONIC times the first and the last request arrived (`first_req_mono=`,
 *       `last_req_mono=`), and exits 0. SIGUSR1 starts the request count and times afresh.
 *
 *   predict_load burst -p PORT -u PATH -b BODY [-n N] [-c PACE] [-s SETTLE_MS] [-t TIMEOUT_S]
 *       N concurrent requests fired at once: N connections are opened to 127.0.0.1:PORT (at most
 *       PACE handshakes in progress at a time, so the server's listen backlog does not overflow),
 *       then after SETTLE_MS the POST of BODY to PATH is written on every connection in one tight
 *       loop, and the answers are collected for at most TIMEOUT_S. Latencies are measured from the
 *       moment the first request was written (all were fired "at once"). Output: key=value lines.
 *
 * Only 127.0.0.1 is ever contacted. Every phase is bounded in time. Exit status 0 when the
 * measurement was made (whatever the server answered), 1 on a local failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REQ_MAX 65536 /* bytes of one request or response we are willing to buffer */

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
    fprintf(stderr, "predict_load: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        die("out of memory");
    return p;
}

/* Raises the soft open-files limit to the hard one and returns it. */
static long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(0);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

/* Value of header @name (with the colon, lower case) in the head [buf, end), or NULL. */
static const char *header(const char *buf, const char *end, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = memmem(buf, (size_t)(end - buf), "\r\n", 2);
    while (p != NULL && p < end) {
        p += 2;
        if ((size_t)(end - p) > nlen && strncasecmp(p, name, nlen) == 0) {
            p += nlen;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            return p;
        }
        p = memmem(p, (size_t)(end - p), "\r\n", 2);
    }
    return NULL;
}

/* ======================================== upstream ======================================== */

struct uconn {
    int fd;
    int closed;          /* closed while waiting in the FIFO: freed when it leaves it */
    int waiting;         /* in the FIFO */
    int close_after;     /* the client asked for Connection: close */
    double due;          /* when the answer is due */
    struct uconn *next;  /* FIFO */
    size_t inlen;
    size_t need;         /* bytes of the current request (head + body), 0 = head not complete */
    size_t outoff;       /* bytes of the response already written (short writes) */
    int writing;         /* a response is partly written, waiting for EPOLLOUT */
    char *in;
};

static volatile sig_atomic_t g_stop, g_reset;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        g_reset = 1;
    else
        g_stop = 1;
}

struct upstream {
    int ep;
    char *resp;
    size_t resp_len;
    double delay;
    struct uconn *head, *tail;
    long requests, accepted, open, max_open;
    double first_req, last_req; /* CLOCK_MONOTONIC of the first and last request arrival */
};

static void uconn_close(struct upstream *u, struct uconn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(u->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        u->open--;
    }
    if (c->waiting) {
        c->closed = 1; /* the FIFO still points at it */
        return;
    }
    free(c->in);
    free(c);
}

/* Looks at the buffered bytes of @c: when a whole request is there, queues its answer.
 * Returns -1 when the connection must be closed. */
static int uconn_parse(struct upstream *u, struct uconn *c)
{
    if (c->waiting || c->writing)
        return 0; /* one request at a time; pipelined bytes wait in the buffer */
    if (c->need == 0) {
        const char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (end == NULL)
            return c->inlen >= REQ_MAX ? -1 : 0;
        const char *te = header(c->in, end, "transfer-encoding:");
        if (te != NULL && strncasecmp(te, "identity", 8) != 0)
            return -1; /* chunked uploads are not something the clients here send */
        const char *cl = header(c->in, end, "content-length:");
        long body = cl ? atol(cl) : 0;
        if (body < 0 || body > REQ_MAX)
            return -1;
        c->need = (size_t)(end + 4 - c->in) + (size_t)body;
        const char *conn = header(c->in, end, "connection:");
        c->close_after = conn != NULL && strncasecmp(conn, "close", 5) == 0;
        const char *expect = header(c->in, end, "expect:");
        if (expect != NULL && strncasecmp(expect, "100-continue", 12) == 0 && c->inlen < c->need) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (write(c->fd, cont, sizeof(cont) - 1) != (ssize_t)(sizeof(cont) - 1))
                return -1;
        }
    }
    if (c->inlen < c->need)
        return 0;
    memmove(c->in, c->in + c->need, c->inlen - c->need);
    c->inlen -= c->need;
    c->need = 0;
    u->requests++;
    double t = now_s();
    if (u->first_req == 0)
        u->first_req = t;
    u->last_req = t;
    c->due = t + u->delay;
    c->waiting = 1;
    c->next = NULL;
    if (u->tail)
        u->tail->next = c;
    else
        u->head = c;
    u->tail = c;
    return 0;
}

/* Writes (the rest of) the response on @c. Returns -1 when the connection must be closed. */
static int uconn_answer(struct upstream *u, struct uconn *c)
{
    while (c->outoff < u->resp_len) {
        ssize_t w = write(c->fd, u->resp + c->outoff, u->resp_len - c->outoff);
        if (w > 0) {
            c->outoff += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            if (!c->writing) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(u->ep, EPOLL_CTL_MOD, c->fd, &ev);
                c->writing = 1;
            }
            return 0;
        } else {
            return -1;
        }
    }
    c->outoff = 0;
    if (c->writing) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(u->ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->writing = 0;
    }
    if (c->close_after)
        return -1;
    return uconn_parse(u, c); /* a pipelined request may already be buffered */
}

static void uconn_read(struct upstream *u, struct uconn *c)
{
    for (;;) {
        if (c->inlen == REQ_MAX) {
            if (c->waiting || c->writing)
                return; /* the client pipelines more than we buffer: wait for our answer */
            uconn_close(u, c);
            return;
        }
        ssize_t r = read(c->fd, c->in + c->inlen, REQ_MAX - c->inlen);
        if (r > 0) {
            c->inlen += (size_t)r;
            if (uconn_parse(u, c) != 0) {
                uconn_close(u, c);
                return;
            }
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && errno == EAGAIN) {
            return;
        } else {
            uconn_close(u, c); /* EOF or error */
            return;
        }
    }
}

static int upstream_main(int argc, char **argv)
{
    int port = 0, opt;
    long delay_ms = 1000;
    const char *body_file = NULL;
    while ((opt = getopt(argc, argv, "p:d:f:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'd': delay_ms = atol(optarg); break;
        case 'f': body_file = optarg; break;
        default: return 2;
        }
    }
    if (body_file == NULL || delay_ms < 0)
        die("upstream: -f BODY_FILE is required and -d must be >= 0");
    FILE *f = fopen(body_file, "rb");
    if (f == NULL)
        die("%s: %s", body_file, strerror(errno));
    char body[REQ_MAX];
    size_t blen = fread(body, 1, sizeof(body) - 1, f);
    fclose(f);
    while (blen > 0 && (body[blen - 1] == '\n' || body[blen - 1] == '\r'))
        blen--;

    struct upstream u = {.delay = (double)delay_ms / 1000.0};
    u.resp = xcalloc(1, blen + 256);
    u.resp_len = (size_t)sprintf(u.resp,
                                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: %zu\r\n\r\n",
                                 blen);
    memcpy(u.resp + u.resp_len, body, blen);
    u.resp_len += blen;

    long nofile = raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = loopback(port);
    socklen_t alen = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 65535) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
        die("upstream: cannot listen on 127.0.0.1:%d: %s", port, strerror(errno));
    printf("port=%d\n", ntohs(a.sin_port));
    fflush(stdout);
    fprintf(stderr, "upstream: 127.0.0.1:%d, %ld ms per answer, %zu-byte body, nofile %ld\n",
            ntohs(a.sin_port), delay_ms, blen, nofile);

    u.ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(u.ep, EPOLL_CTL_ADD, lfd, &lev);
    int spare = open("/dev/null", O_RDONLY | O_CLOEXEC); /* given up to shed a connection on EMFILE */
    static struct epoll_event evs[1024];

    while (!g_stop) {
        int timeout = -1;
        if (u.head) {
            double wait = u.head->due - now_s();
            timeout = wait <= 0 ? 0 : (int)(wait * 1000.0) + 1;
        }
        int n = epoll_wait(u.ep, evs, 1024, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        if (g_reset) {
            g_reset = 0;
            u.requests = 0;
            u.first_req = u.last_req = 0;
        }
        for (int i = 0; i < n; i++) {
            struct uconn *c = evs[i].data.ptr;
            if (c == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        if ((errno == EMFILE || errno == ENFILE) && spare >= 0) {
                            fprintf(stderr, "upstream: out of file descriptors; shedding\n");
                            close(spare);
                            fd = accept(lfd, NULL, NULL);
                            if (fd >= 0)
                                close(fd);
                            spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
                            continue;
                        }
                        break;
                    }
                    set_nodelay(fd);
                    struct uconn *nc = xcalloc(1, sizeof(*nc));
                    nc->fd = fd;
                    nc->in = malloc(REQ_MAX);
                    if (nc->in == NULL)
                        die("out of memory");
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(u.ep, EPOLL_CTL_ADD, fd, &ev);
                    u.accepted++;
                    if (++u.open > u.max_open)
                        u.max_open = u.open;
                }
                continue;
            }
            if ((evs[i].events & EPOLLOUT) && c->writing) {
                if (uconn_answer(&u, c) != 0) {
                    uconn_close(&u, c);
                    continue;
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                uconn_read(&u, c);
        }
        double t = now_s();
        while (u.head && u.head->due <= t) {
            struct uconn *c = u.head;
            u.head = c->next;
            if (u.head == NULL)
                u.tail = NULL;
            c->waiting = 0;
            if (c->closed) {
                free(c->in);
                free(c);
            } else if (uconn_answer(&u, c) != 0) {
                uconn_close(&u, c);
            }
        }
    }
    printf("requests=%ld\naccepted=%ld\nmax_open=%ld\nfirst_req_mono=%.6f\nlast_req_mono=%.6f\n",
           u.requests, u.accepted, u.max_open, u.first_req, u.last_req);
    fflush(stdout);
    return 0;
}

/* ======================================== burst ======================================== */

/* TcpExt ListenOverflows of this network namespace (SYNs or handshakes dropped because some
 * listener's accept queue was full), or -1. */
static long listen_overflows(void)
{
    FILE *f = fopen("/proc/net/netstat", "r");
    if (f == NULL)
        return -1;
    static char names[8192], values[8192];
    long result = -1;
    while (fgets(names, sizeof(names), f) && fgets(values, sizeof(values), f)) {
        if (strncmp(names, "TcpExt:", 7) != 0)
            continue;
        char *sn, *sv;
        char *n = strtok_r(names, " \n", &sn), *v = strtok_r(values, " \n", &sv);
        while (n && v) {
            if (strcmp(n, "ListenOverflows") == 0)
                result = atol(v);
            n = strtok_r(NULL, " \n", &sn);
            v = strtok_r(NULL, " \n", &sv);
        }
    }
    fclose(f);
    return result;
}

enum { B_IDLE, B_CONNECTING, B_CONNECTED, B_SENT, B_DONE, B_FAILED };

struct bconn {
    int fd;
    int state;
    int status;     /* HTTP status of the answer, 0 = none */
    int ok;         /* 200 with inference_results */
    size_t outoff;
    size_t inlen;
    double done_at; /* seconds after the first request was written */
    char *in;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* If @c holds a whole HTTP response, records it and returns 1; 0 = more bytes needed,
 * -1 = not a response we can read. */
static int bconn_parse(struct bconn *c)
{
    const char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
    if (end == NULL)
        return c->inlen >= REQ_MAX ? -1 : 0;
    if (c->inlen < 12 || strncmp(c->in, "HTTP/1.", 7) != 0)
        return -1;
    const char *cl = header(c->in, end, "content-length:");
    if (cl == NULL)
        return -1; /* mlrelay always sends Content-Length */
    size_t total = (size_t)(end + 4 - c->in) + (size_t)atol(cl);
    if (c->inlen < total)
        return total > REQ_MAX ? -1 : 0;
    c->status = atoi(c->in + 9);
    c->ok = c->status == 200 && memmem(end, total - (size_t)(end - c->in), "\"inference_results\"",
                                       19) != NULL;
    return 1;
}

static int burst_main(int argc, char **argv)
{
    int port = 0, n = 10000, pace = 256, opt;
    long settle_ms = 500;
    double timeout_s = 30;
    const char *path = NULL, *body = NULL;
    while ((opt = getopt(argc, argv, "p:u:b:n:c:s:t:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'u': path = optarg; break;
        case 'b': body = optarg; break;
        case 'n': n = atoi(optarg); break;
        case 'c': pace = atoi(optarg); break;
        case 's': settle_ms = atol(optarg); break;
        case 't': timeout_s = atof(optarg); break;
        default: return 2;
        }
    }
    if (port <= 0 || path == NULL || body == NULL || n <= 0 || pace <= 0 || timeout_s <= 0)
        die("burst: -p PORT -u PATH -b BODY are required, numbers must be positive");
    long nofile = raise_nofile();
    if (nofile >= 0 && nofile < n + 16)
        die("burst: %d connections need %d file descriptors, the limit is %ld", n, n + 16, nofile);
    signal(SIGPIPE, SIG_IGN);

    char *req = xcalloc(1, strlen(path) + strlen(body) + 256);
    size_t req_len = (size_t)sprintf(req,
                                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                                     path, port, strlen(body), body);
    struct bconn *cs = xcalloc((size_t)n, sizeof(*cs));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event *evs = xcalloc(4096, sizeof(*evs));
    struct sockaddr_in a = loopback(port);
    int connecting = 0, connected = 0, failed_connect = 0, next = 0, early = 0;
    int first_errno = 0;

    /* 1. Connections, PACE handshakes at a time. */
    long ovf_start = listen_overflows();
    double t_conn = now_s(), conn_deadline = t_conn + 60;
    while (connected + failed_connect < n && now_s() < conn_deadline) {
        while (connecting < pace && next < n) {
            struct bconn *c = &cs[next++];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c->fd < 0)
                die("socket: %s", strerror(errno));
            set_nodelay(c->fd);
            int rc = connect(c->fd, (struct sockaddr *)&a, sizeof(a));
            struct epoll_event ev = {.data.ptr = c};
            if (rc == 0) {
                c->state = B_CONNECTED;
                connected++;
                ev.events = EPOLLIN;
            } else if (errno == EINPROGRESS) {
                c->state = B_CONNECTING;
                connecting++;
                ev.events = EPOLLOUT;
            } else {
                if (!first_errno)
                    first_errno = errno;
                close(c->fd);
                c->fd = -1;
                c->state = B_FAILED;
                failed_connect++;
                continue;
            }
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        }
        int k = epoll_wait(ep, evs, 4096, 100);
        for (int i = 0; i < k; i++) {
            struct bconn *c = evs[i].data.ptr;
            if (c->state == B_CONNECTING) {
                int err = 0;
                socklen_t elen = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
                connecting--;
                if (err == 0) {
                    c->state = B_CONNECTED;
                    connected++;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                } else {
                    if (!first_errno)
                        first_errno = err;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    c->fd = -1;
                    c->state = B_FAILED;
                    failed_connect++;
                }
            } else if (c->state == B_CONNECTED) {
                /* The server spoke (or closed) before we sent anything, e.g. a 429 for a
                 * connection over its cap: that connection is lost to the measurement. */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                c->state = B_FAILED;
                connected--;
                early++;
            }
        }
    }
    double connect_s = now_s() - t_conn;
    fprintf(stderr, "burst: %d of %d connections open in %.2f s (%d failed, %d closed by the server)\n",
            connected, n, connect_s, failed_connect, early);

    /* 2. Settle: let the server accept everything, still noticing connections it closes. */
    double settle_end = now_s() + (double)settle_ms / 1000.0;
    for (double t = now_s(); t < settle_end; t = now_s()) {
        int k = epoll_wait(ep, evs, 4096, (int)((settle_end - t) * 1000.0) + 1);
        for (int i = 0; i < k; i++) {
            struct bconn *c = evs[i].data.ptr;
            if (c->state == B_CONNECTING) {
                connecting--; /* gave up on it: the connect phase timed out */
            } else if (c->state == B_CONNECTED) {
                connected--;
                early++;
            } else {
                continue;
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
            c->state = B_FAILED;
        }
    }

    /* 3. Fire: one write per connection, back to back. */
    long ovf_fire = listen_overflows();
    int sent = 0, write_failed = 0;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        struct bconn *c = &cs[i];
        if (c->state != B_CONNECTED)
            continue;
        ssize_t w = write(c->fd, req, req_len);
        if (w >= 0 || errno == EAGAIN) {
            c->outoff = w > 0 ? (size_t)w : 0;
            c->state = B_SENT;
            c->in = malloc(REQ_MAX);
            if (c->in == NULL)
                die("out of memory");
            sent++;
            if (c->outoff < req_len) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        } else {
            write_failed++;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
            c->state = B_FAILED;
        }
    }
    double fire_s = now_s() - t0;

    /* 4. Answers. */
    int answered = 0, closed = 0, garbled = 0, pending = sent;
    double deadline = t0 + timeout_s;
    while (pending > 0 && now_s() < deadline) {
        int k = epoll_wait(ep, evs, 4096, 50);
        double t = now_s();
        for (int i = 0; i < k; i++) {
            struct bconn *c = evs[i].data.ptr;
            if (c->state != B_SENT)
                continue;
            if ((evs[i].events & EPOLLOUT) && c->outoff < req_len) {
                ssize_t w = write(c->fd, req + c->outoff, req_len - c->outoff);
                if (w > 0)
                    c->outoff += (size_t)w;
                if (c->outoff == req_len) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            int outcome = 0; /* 1 answered, -1 closed, -2 garbled */
            for (;;) {
                ssize_t r = read(c->fd, c->in + c->inlen, REQ_MAX - c->inlen);
                if (r > 0) {
                    c->inlen += (size_t)r;
                    int p = bconn_parse(c);
                    if (p != 0) {
                        outcome = p == 1 ? 1 : -2;
                        break;
                    }
                } else if (r < 0 && errno == EINTR) {
                    continue;
                } else if (r < 0 && errno == EAGAIN) {
                    break;
                } else {
                    outcome = -1;
                    break;
                }
            }
            if (outcome == 0)
                continue;
            pending--;
            c->done_at = t - t0;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            /* Keep answered connections open until the end, so the server sees no wave of
             * closes while other requests are still in flight. */
            if (outcome == 1) {
                c->state = B_DONE;
                answered++;
            } else {
                c->state = B_FAILED;
                if (outcome == -1)
                    closed++;
                else
                    garbled++;
                close(c->fd);
                c->fd = -1;
            }
        }
    }

    long ovf_end = listen_overflows();
    int ok = 0, s2xx = 0, s4xx = 0, s429 = 0, s5xx = 0, sother = 0, within3 = 0;
    double *lat = xcalloc((size_t)n, sizeof(double));
    size_t nlat = 0;
    double last_ok = 0;
    int first_bad_status = 0;
    for (int i = 0; i < n; i++) {
        struct bconn *c = &cs[i];
        if (c->state == B_DONE) {
            lat[nlat++] = c->done_at;
            if (c->ok) {
                ok++;
                if (c->done_at > last_ok)
                    last_ok = c->done_at;
                if (c->done_at <= 3.0)
                    within3++;
            }
            if (c->status == 429)
                s429++;
            if (c->status >= 200 && c->status < 300)
                s2xx++;
            else if (c->status >= 400 && c->status < 500)
                s4xx++;
            else if (c->status >= 500 && c->status < 600)
                s5xx++;
            else
                sother++;
            if (c->status != 200 && !first_bad_status) {
                first_bad_status = c->status;
                const char *b = memmem(c->in, c->inlen, "\r\n\r\n", 4);
                if (b != NULL)
                    fprintf(stderr, "burst: first non-200 answer (%d): %.*s\n", c->status,
                            (int)(c->inlen - (size_t)(b + 4 - c->in) > 300
                                      ? 300
                                      : c->inlen - (size_t)(b + 4 - c->in)),
                            b + 4);
            }
        }
        if (c->fd >= 0)
            close(c->fd);
        free(c->in);
    }
    qsort(lat, nlat, sizeof(double), cmp_double);
#define PCT(p) (nlat ? lat[(size_t)((p) / 100.0 * (double)(nlat - 1) + 0.5)] * 1000.0 : 0.0)
    printf("requested=%d\nconnected=%d\nconnect_failed=%d\nconnect_errno=%s\nclosed_before_send=%d\n",
           n, sent + write_failed, n - sent - write_failed - early,
           first_errno ? strerror(first_errno) : "-", early);
    printf("connect_s=%.3f\nsent=%d\nwrite_failed=%d\nfire_ms=%.3f\n", connect_s, sent, write_failed,
           fire_s * 1000.0);
    printf("answered=%d\nok=%d\ns2xx=%d\ns4xx=%d\ns429=%d\ns5xx=%d\nsother=%d\n", answered, ok, s2xx,
           s4xx, s429, s5xx, sother);
    printf("closed_without_answer=%d\nunreadable=%d\nno_answer_in_time=%d\n", closed, garbled, pending);
    printf("ok_within_3s=%d\n", within3);
    printf("first_ms=%.1f\np50_ms=%.1f\np90_ms=%.1f\np99_ms=%.1f\nlast_ms=%.1f\nlast_ok_ms=%.1f\n",
           nlat ? lat[0] * 1000.0 : 0.0, PCT(50), PCT(90), PCT(99),
           nlat ? lat[nlat - 1] * 1000.0 : 0.0, last_ok * 1000.0);
    printf("nofile=%ld\nt0_mono=%.6f\n", nofile, t0);
    printf("listen_overflows_connecting=%ld\nlisten_overflows_answering=%ld\n",
           ovf_start < 0 ? -1 : ovf_fire - ovf_start, ovf_start < 0 ? -1 : ovf_end - ovf_fire);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "freeport") == 0) {
        printf("%d\n", free_port());
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "upstream") == 0)
        return upstream_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "burst") == 0)
        return burst_main(argc - 1, argv + 1);
    fprintf(stderr, "usage: predict_load freeport\n"
                    "       predict_load upstream -p PORT -f BODY_FILE [-d DELAY_MS]\n"
                    "       predict_load burst -p PORT -u PATH -b BODY [-n N] [-c PACE] "
                    "[-s SETTLE_MS] [-t TIMEOUT_S]\n");
    return 2;
}
