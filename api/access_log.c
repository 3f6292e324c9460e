/*
 * access_log.c — the access log: one line per answered request (log.access, on by default).
 *
 * The line goes through mlr_log_kv() at info level under the component "access", so it follows
 * --log-format (fields become JSON members) and is written, like every log line, with a single
 * write(2) on stderr: lines never interleave and nothing is buffered in the process that a crash
 * could lose. That write happens on the loop thread; to stderr on a file, a pipe being read
 * (journald) or /dev/null it costs a few microseconds (README "Access log" has the figures), but
 * a stderr pipe that nobody drains would stall the loop once the pipe buffer fills.
 *
 * The path is logged without the query string: a query may carry tokens a client put there.
 * The duration runs from the first byte of the request to the response being handed to the
 * socket. Loop thread only.
 */
#include "api_int.h"

#include <stdio.h>

void api__access_log(const struct mlr_config *cfg, const struct api_req *req, const char *client,
                     int status, size_t bytes, int client_gone)
{
    if (!cfg->access_log || !mlr_log_enabled(MLR_LOG_INFO))
        return;
    int parsed = req != NULL && req->path != NULL;
    char st[16], len[32], dur[32];
    snprintf(st, sizeof(st), "%d", status);
    snprintf(len, sizeof(len), "%zu", bytes);
    if (req != NULL) {
        uint64_t ns = uv_hrtime() - req->start_ns;
        snprintf(dur, sizeof(dur), "%llu.%03llu", (unsigned long long)(ns / 1000000),
                 (unsigned long long)(ns / 1000 % 1000));
    } else {
        snprintf(dur, sizeof(dur), "0.000");
    }
    const char *opaque = parsed ? api_header(req, "x-opaque-id") : NULL;
    const char *kv[18] = {
        "method", parsed ? http_method_str(req->method) : "-",
        "path", parsed ? req->path : "-",
        "status", st,
        "bytes", len,
        "duration_ms", dur,
        "client", client && *client ? client : "-",
    };
    size_t n = 6;
    if (opaque) {
        kv[2 * n] = "opaque_id";
        kv[2 * n + 1] = opaque;
        n++;
    }
    if (client_gone) {
        kv[2 * n] = "client_gone";
        kv[2 * n + 1] = "true";
        n++;
    }
    mlr_log_kv(MLR_LOG_INFO, "access", "request", kv, n);
}
