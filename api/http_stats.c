/*
 * http_stats.c — HTTP request counters for /metrics: responses by route pattern, method and
 * status code, and a latency histogram per route pattern.
 *
 * Series are keyed by the route table's pattern ("/_plugins/_ml/models/{id}/_predict"), never by
 * the raw path, so ids never become label values; requests that matched no route count under
 * route="unmatched". Rows of the table that share a pattern (GET, PUT and DELETE of
 * /models/{id}) share one set of counters, which is why the row-to-pattern map is built when the
 * server opens. Each pattern keeps up to SLOTS distinct (method, status) pairs in the order they
 * first occur; pairs beyond that, which real traffic does not produce, count under code="other".
 * So the number of series is bounded by the route table, not by the traffic.
 *
 * Loop thread only. Recording costs a clock read, a short scan of the pattern's slots and a
 * histogram observation: tens of nanoseconds.
 */
#include "api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 24 /* distinct (method, status) pairs per pattern */

struct slot {
    int status;              /* 0 = unused; -1 = the overflow slot */
    int method;              /* enum http_method, or -1 when no request line was parsed */
    uint64_t count;
};

struct pattern_stats {
    const char *pattern;             /* the route table's pattern, or "unmatched" */
    struct slot slots[SLOTS];
    struct mlr_histogram latency_us; /* first byte received to response queued, µs */
};

struct api_http_stats {
    int npatterns;                   /* distinct patterns, plus one for "unmatched" */
    int *row_pattern;                /* route table row -> index into patterns */
    struct pattern_stats *patterns;
};

struct api_http_stats *api__http_stats_new(void)
{
    int rows = api__route_count();
    struct api_http_stats *st = mlr_xcalloc(1, sizeof(*st));
    st->row_pattern = mlr_xcalloc((size_t)rows, sizeof(int));
    st->patterns = mlr_xcalloc((size_t)rows + 1, sizeof(*st->patterns));
    for (int i = 0; i < rows; i++) {
        const char *pattern = api__route_at(i)->pattern;
        int p = 0;
        while (p < st->npatterns && strcmp(st->patterns[p].pattern, pattern) != 0)
            p++;
        if (p == st->npatterns)
            st->patterns[st->npatterns++].pattern = pattern;
        st->row_pattern[i] = p;
    }
    st->patterns[st->npatterns++].pattern = "unmatched";
    for (int p = 0; p < st->npatterns; p++)
        mlr_histogram_init(&st->patterns[p].latency_us, mlr_metrics_latency_us,
                           mlr_metrics_latency_us_count);
    return st;
}

void api__http_stats_free(struct api_http_stats *st)
{
    if (st == NULL)
        return;
    free(st->row_pattern);
    free(st->patterns);
    free(st);
}

void api__http_stats_record(struct api_http_stats *st, const struct api_route *route,
                            int method, int status, uint64_t start_ns)
{
    struct pattern_stats *p =
        &st->patterns[route ? st->row_pattern[api__route_index(route)] : st->npatterns - 1];
    int i = 0;
    while (i < SLOTS - 1 && p->slots[i].status != 0 &&
           (p->slots[i].status != status || p->slots[i].method != method))
        i++;
    if (p->slots[i].status == 0) {
        p->slots[i].status = i == SLOTS - 1 ? -1 : status;
        p->slots[i].method = method;
    }
    p->slots[i].count++;
    mlr_histogram_observe(&p->latency_us, (uv_hrtime() - start_ns) / 1000);
}

static void write_requests(const struct api_http_stats *st, struct mlr_buf *out)
{
    struct mlr_buf lab;
    mlr_buf_init(&lab, 0);
    mlr_metrics_family(out, "mlrelay_http_requests_total", "counter",
                       "HTTP responses by route pattern, method and status code.");
    for (int p = 0; p < st->npatterns; p++) {
        const struct pattern_stats *ps = &st->patterns[p];
        for (int i = 0; i < SLOTS && ps->slots[i].status != 0; i++) {
            char code[16];
            snprintf(code, sizeof(code), "%d", ps->slots[i].status);
            mlr_buf_reset(&lab);
            mlr_metrics_label(&lab, "route", ps->pattern);
            int m = ps->slots[i].method;
            mlr_metrics_label(&lab, "method",
                              ps->slots[i].status < 0 ? "other"
                              : m < 0                 ? "unknown"
                                                      : http_method_str((enum http_method)m));
            mlr_metrics_label(&lab, "code", ps->slots[i].status < 0 ? "other" : code);
            mlr_metrics_u64(out, "mlrelay_http_requests_total", lab.data, ps->slots[i].count);
        }
    }
    mlr_buf_cleanup(&lab);
}

void api__http_stats_write(const struct api_http_stats *st, int64_t conns, struct mlr_buf *out)
{
    write_requests(st, out);
    struct mlr_buf lab;
    mlr_buf_init(&lab, 0);
    mlr_metrics_family(out, "mlrelay_http_request_duration_seconds", "histogram",
                       "Time from a request's first byte to its response being queued, by "
                       "route pattern.");
    for (int p = 0; p < st->npatterns; p++) {
        if (mlr_histogram_count(&st->patterns[p].latency_us) == 0)
            continue; /* a route never requested has no series */
        mlr_buf_reset(&lab);
        mlr_metrics_label(&lab, "route", st->patterns[p].pattern);
        mlr_metrics_histogram(out, "mlrelay_http_request_duration_seconds", lab.data,
                              &st->patterns[p].latency_us, 1e6);
    }
    mlr_buf_cleanup(&lab);
    mlr_metrics_family(out, "mlrelay_http_open_connections", "gauge",
                       "Client connections open and served (not counting ones being refused).");
    mlr_metrics_u64(out, "mlrelay_http_open_connections", NULL,
                    (uint64_t)(conns > 0 ? conns : 0));
}
