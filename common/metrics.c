/*
 * metrics.c — the primitives behind `GET /metrics` and the ML Commons stats and profile APIs:
 * fixed-bucket histograms, the Prometheus text exposition format, a ring of recent samples with
 * percentiles, and a few process figures read from /proc.
 *
 * Histograms. Bounds are fixed when a histogram is initialised, so recording is a short scan and
 * two additions, with no allocation and no lock. Every field is a C11 atomic: a histogram with one
 * writing thread is updated with relaxed loads and stores (on x86 and ARM the same instructions as
 * plain increments), one with several writers (the store's) with relaxed fetch-adds, and either
 * may be read by the thread that renders /metrics without tearing. A reader may see a bucket
 * updated before the sum; the next scrape is consistent again, which is all Prometheus needs.
 *
 * Rendering appends to an mlr_buf; the caller owns the family layout (names, labels). Label
 * values are escaped as the format requires, so a hostile model id cannot break the text.
 *
 * Samples. A ring keeps the newest N values of a series for percentile queries, which sort a copy:
 * O(N log N) per query, nothing per observation beyond one store. Not thread-safe.
 */
#include "common.h"

#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 100 µs .. 60 s, roughly 1-2.5-5 per decade: fine enough for a local call and a slow model. */
const uint64_t mlr_metrics_latency_us[] = {
    100,    250,    500,     1000,    2500,    5000,     10000,    25000,    50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};
const int mlr_metrics_latency_us_count =
    (int)(sizeof(mlr_metrics_latency_us) / sizeof(mlr_metrics_latency_us[0]));

/* ---------------------------------- histograms ---------------------------------- */

void mlr_histogram_init(struct mlr_histogram *h, const uint64_t *bounds, int nbounds)
{
    if (nbounds > MLR_HIST_MAX_BOUNDS)
        nbounds = MLR_HIST_MAX_BOUNDS;
    h->bounds = bounds;
    h->nbounds = nbounds;
    for (int i = 0; i <= MLR_HIST_MAX_BOUNDS; i++)
        atomic_init(&h->buckets[i], 0);
    atomic_init(&h->sum, 0);
}

static int bucket_of(const struct mlr_histogram *h, uint64_t v)
{
    int i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    return i;
}

/* One writer: a relaxed load and store per field, no read-modify-write instruction. */
static void bump(_Atomic uint64_t *x, uint64_t by)
{
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

void mlr_histogram_observe(struct mlr_histogram *h, uint64_t v)
{
    bump(&h->buckets[bucket_of(h, v)], 1);
    bump(&h->sum, v);
}

void mlr_histogram_observe_shared(struct mlr_histogram *h, uint64_t v)
{
    atomic_fetch_add_explicit(&h->buckets[bucket_of(h, v)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

static uint64_t load(const _Atomic uint64_t *x)
{
    return atomic_load_explicit((_Atomic uint64_t *)x, memory_order_relaxed);
}

void mlr_histogram_merge(struct mlr_histogram *into, const struct mlr_histogram *from)
{
    for (int i = 0; i <= into->nbounds && i <= from->nbounds; i++)
        bump(&into->buckets[i], load(&from->buckets[i]));
    bump(&into->sum, load(&from->sum));
}

uint64_t mlr_histogram_count(const struct mlr_histogram *h)
{
    uint64_t n = 0;
    for (int i = 0; i <= h->nbounds; i++)
        n += load(&h->buckets[i]);
    return n;
}

double mlr_histogram_quantile(const struct mlr_histogram *h, double q)
{
    uint64_t total = mlr_histogram_count(h);
    if (total == 0 || h->nbounds == 0)
        return 0;
    double rank = q * (double)total, seen = 0;
    for (int i = 0; i < h->nbounds; i++) {
        double in = (double)load(&h->buckets[i]);
        if (seen + in >= rank && in > 0) {
            double lo = i == 0 ? 0 : (double)h->bounds[i - 1];
            return lo + ((double)h->bounds[i] - lo) * (rank - seen) / in;
        }
        seen += in;
    }
    return (double)h->bounds[h->nbounds - 1];
}

/* ---------------------------------- exposition format ---------------------------------- */

void mlr_metrics_family(struct mlr_buf *out, const char *name, const char *type,
                        const char *help)
{
    mlr_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void mlr_metrics_label(struct mlr_buf *labels, const char *key, const char *value)
{
    mlr_buf_printf(labels, "%s%s=\"", labels->len > 0 ? "," : "", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            mlr_buf_puts(labels, "\\\\");
        else if (*p == '"')
            mlr_buf_puts(labels, "\\\"");
        else if (*p == '\n')
            mlr_buf_puts(labels, "\\n");
        else
            mlr_buf_append(labels, p, 1);
    }
    mlr_buf_puts(labels, "\"");
}

static int has_labels(const char *labels)
{
    return labels != NULL && labels[0] != '\0';
}

void mlr_metrics_u64(struct mlr_buf *out, const char *name, const char *labels, uint64_t v)
{
    if (has_labels(labels))
        mlr_buf_printf(out, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
    else
        mlr_buf_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

void mlr_metrics_f64(struct mlr_buf *out, const char *name, const char *labels, double v)
{
    /* The shorter %.15g unless it loses precision (%.17g always round-trips); Prometheus reads
     * the exponent form too. */
    char num[32];
    snprintf(num, sizeof(num), "%.15g", v);
    if (strtod(num, NULL) != v)
        snprintf(num, sizeof(num), "%.17g", v);
    if (has_labels(labels))
        mlr_buf_printf(out, "%s{%s} %s\n", name, labels, num);
    else
        mlr_buf_printf(out, "%s %s\n", name, num);
}

void mlr_metrics_histogram(struct mlr_buf *out, const char *name, const char *labels,
                           const struct mlr_histogram *h, double divisor)
{
    const char *sep = has_labels(labels) ? "," : "";
    const char *lab = has_labels(labels) ? labels : "";
    uint64_t cumulative = 0;
    for (int i = 0; i < h->nbounds; i++) {
        cumulative += load(&h->buckets[i]);
        mlr_buf_printf(out, "%s_bucket{%s%sle=\"%.6g\"} %llu\n", name, lab, sep,
                       (double)h->bounds[i] / divisor, (unsigned long long)cumulative);
    }
    cumulative += load(&h->buckets[h->nbounds]);
    mlr_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, lab, sep,
                   (unsigned long long)cumulative);
    char sample[256];
    snprintf(sample, sizeof(sample), "%s_sum", name);
    mlr_metrics_f64(out, sample, labels, (double)load(&h->sum) / divisor);
    snprintf(sample, sizeof(sample), "%s_count", name);
    mlr_metrics_u64(out, sample, labels, cumulative);
}

/* ---------------------------------- samples ---------------------------------- */

void mlr_samples_init(struct mlr_samples *s)
{
    memset(s, 0, sizeof(*s));
}

void mlr_samples_cleanup(struct mlr_samples *s)
{
    free(s->v);
    mlr_samples_init(s);
}

/* The i-th oldest value held (0 = oldest). */
static double nth(const struct mlr_samples *s, size_t i)
{
    return s->v[(s->next + s->cap - s->n + i) % s->cap];
}

/* Reallocates the ring to @cap values, keeping the newest. */
static void resize(struct mlr_samples *s, size_t cap)
{
    size_t keep = s->n < cap ? s->n : cap;
    double *v = cap ? mlr_xcalloc(cap, sizeof(*v)) : NULL;
    for (size_t i = 0; i < keep; i++)
        v[i] = nth(s, s->n - keep + i);
    free(s->v);
    s->v = v;
    s->cap = cap;
    s->n = keep;
    s->next = cap ? keep % cap : 0;
}

void mlr_samples_resize(struct mlr_samples *s, size_t cap)
{
    if (cap > MLR_SAMPLES_MAX)
        cap = MLR_SAMPLES_MAX;
    if (cap != s->cap)
        resize(s, cap);
}

void mlr_samples_push(struct mlr_samples *s, double v, size_t cap)
{
    mlr_samples_resize(s, cap);
    if (cap > MLR_SAMPLES_MAX)
        cap = MLR_SAMPLES_MAX;
    if (cap == 0)
        return;
    s->v[s->next] = v;
    s->next = (s->next + 1) % s->cap;
    if (s->n < s->cap)
        s->n++;
}

double mlr_percentile(const double *sorted, size_t n, double p)
{
    double pos = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo + 1 >= n)
        return sorted[n - 1];
    return sorted[lo] + (pos - (double)lo) * (sorted[lo + 1] - sorted[lo]);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int mlr_samples_stats(const struct mlr_samples *s, size_t last, struct mlr_sample_stats *out)
{
    size_t n = s->n < last ? s->n : last;
    if (n == 0)
        return -1;
    double *v = mlr_xmalloc(n * sizeof(*v));
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        v[i] = nth(s, s->n - n + i);
        sum += v[i];
    }
    qsort(v, n, sizeof(*v), cmp_double);
    out->count = n;
    out->min = v[0];
    out->max = v[n - 1];
    out->average = sum / (double)n;
    out->p50 = mlr_percentile(v, n, 50);
    out->p90 = mlr_percentile(v, n, 90);
    out->p99 = mlr_percentile(v, n, 99);
    free(v);
    return 0;
}

/* ---------------------------------- process ---------------------------------- */

int64_t mlr_process_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    long long size = 0, resident = 0;
    int ok = fscanf(f, "%lld %lld", &size, &resident) == 2;
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return ok && page > 0 ? (int64_t)resident * page : -1;
}

int64_t mlr_process_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int64_t n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n - 1; /* the directory stream's own descriptor is listed too */
}
