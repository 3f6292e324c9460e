/*
 * test_metrics.c — unit tests of common/metrics.c: histogram buckets and quantiles, the
 * Prometheus text rendering (cumulative buckets, +Inf, _sum/_count, label escaping), the sample
 * ring (wrap-around, resizing) and its percentiles, and the /proc readers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const uint64_t bounds[] = {10, 100, 1000};

static void metrics_histogram_buckets(void **state)
{
    UNUSED(state);
    struct mlr_histogram h;
    mlr_histogram_init(&h, bounds, 3);
    assert_int_equal(mlr_histogram_count(&h), 0);
    uint64_t values[] = {0, 10, 11, 100, 999, 1000, 1001, 5000000};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        mlr_histogram_observe(&h, values[i]);
    /* Bounds are inclusive upper limits, as Prometheus' "le" says. */
    assert_int_equal(h.buckets[0], 2);
    assert_int_equal(h.buckets[1], 2);
    assert_int_equal(h.buckets[2], 2);
    assert_int_equal(h.buckets[3], 2);
    assert_int_equal(mlr_histogram_count(&h), 8);
    assert_int_equal(h.sum, 0 + 10 + 11 + 100 + 999 + 1000 + 1001 + 5000000);
}

static void metrics_histogram_quantile(void **state)
{
    UNUSED(state);
    struct mlr_histogram h;
    mlr_histogram_init(&h, bounds, 3);
    assert_true(mlr_histogram_quantile(&h, 0.5) == 0);
    for (int i = 0; i < 100; i++)
        mlr_histogram_observe(&h, 50); /* all in (10, 100] */
    double q = mlr_histogram_quantile(&h, 0.5);
    assert_true(q > 10 && q <= 100);
    assert_true(fabs(q - 55) < 1e-9); /* halfway through the bucket */
    mlr_histogram_observe(&h, 1u << 30);
    assert_true(mlr_histogram_quantile(&h, 1.0) == 1000); /* above every bound: the last one */
}

static void metrics_histogram_merge(void **state)
{
    UNUSED(state);
    struct mlr_histogram a, b;
    mlr_histogram_init(&a, bounds, 3);
    mlr_histogram_init(&b, bounds, 3);
    mlr_histogram_observe(&a, 5);
    mlr_histogram_observe(&b, 50);
    mlr_histogram_observe(&b, 5000);
    mlr_histogram_merge(&a, &b);
    assert_int_equal(mlr_histogram_count(&a), 3);
    assert_int_equal(a.buckets[0], 1);
    assert_int_equal(a.buckets[1], 1);
    assert_int_equal(a.buckets[3], 1);
    assert_int_equal(a.sum, 5055);
}

struct shared_arg {
    struct mlr_histogram *h;
    int n;
};

static void *observe_many(void *p)
{
    struct shared_arg *a = p;
    for (int i = 0; i < a->n; i++)
        mlr_histogram_observe_shared(a->h, (uint64_t)(i % 2000));
    return NULL;
}

static void metrics_histogram_shared_writers_lose_nothing(void **state)
{
    UNUSED(state);
    struct mlr_histogram h;
    mlr_histogram_init(&h, bounds, 3);
    struct shared_arg a = {&h, 100000};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, observe_many, &a), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(mlr_histogram_count(&h), 400000);
    assert_int_equal(h.sum, 4ull * 50 * (1999ull * 2000 / 2));
}

static void metrics_render_histogram(void **state)
{
    UNUSED(state);
    struct mlr_histogram h;
    mlr_histogram_init(&h, bounds, 3);
    mlr_histogram_observe(&h, 5);
    mlr_histogram_observe(&h, 500);
    mlr_histogram_observe(&h, 50000);
    struct mlr_buf out, lab;
    mlr_buf_init(&out, 0);
    mlr_buf_init(&lab, 0);
    mlr_metrics_label(&lab, "route", "/a");
    mlr_metrics_family(&out, "x_seconds", "histogram", "Test.");
    mlr_metrics_histogram(&out, "x_seconds", lab.data, &h, 1e6);
    const char *want = "# HELP x_seconds Test.\n"
                       "# TYPE x_seconds histogram\n"
                       "x_seconds_bucket{route=\"/a\",le=\"1e-05\"} 1\n"
                       "x_seconds_bucket{route=\"/a\",le=\"0.0001\"} 1\n"
                       "x_seconds_bucket{route=\"/a\",le=\"0.001\"} 2\n"
                       "x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n"
                       "x_seconds_sum{route=\"/a\"} 0.050505\n"
                       "x_seconds_count{route=\"/a\"} 3\n";
    assert_string_equal(out.data, want);
    mlr_buf_reset(&out);
    mlr_metrics_histogram(&out, "y", NULL, &h, 1);
    assert_non_null(strstr(out.data, "y_bucket{le=\"+Inf\"} 3\ny_sum 50505\ny_count 3\n"));
    mlr_buf_cleanup(&out);
    mlr_buf_cleanup(&lab);
}

static void metrics_label_escaping(void **state)
{
    UNUSED(state);
    struct mlr_buf lab, out;
    mlr_buf_init(&lab, 0);
    mlr_buf_init(&out, 0);
    mlr_metrics_label(&lab, "model", "a\"b\\c\nd");
    mlr_metrics_label(&lab, "class", "status");
    assert_string_equal(lab.data, "model=\"a\\\"b\\\\c\\nd\",class=\"status\"");
    mlr_metrics_u64(&out, "n_total", lab.data, 7);
    mlr_metrics_u64(&out, "m", "", 0);
    mlr_metrics_f64(&out, "g", NULL, 0.5);
    assert_string_equal(out.data, "n_total{model=\"a\\\"b\\\\c\\nd\",class=\"status\"} 7\nm 0\n"
                                  "g 0.5\n");
    mlr_buf_cleanup(&lab);
    mlr_buf_cleanup(&out);
}

static void metrics_percentile_interpolates(void **state)
{
    UNUSED(state);
    /* The figures of ML Commons' profile documentation: two samples 5.4 and 89.9. */
    double two[] = {5.4, 89.9};
    assert_true(fabs(mlr_percentile(two, 2, 50) - 47.65) < 1e-9);
    assert_true(fabs(mlr_percentile(two, 2, 90) - 81.45) < 1e-9);
    assert_true(fabs(mlr_percentile(two, 2, 99) - 89.055) < 1e-9);
    double one[] = {3};
    assert_true(mlr_percentile(one, 1, 50) == 3);
    assert_true(mlr_percentile(one, 1, 99) == 3);
    double five[] = {1, 2, 3, 4, 5};
    assert_true(mlr_percentile(five, 5, 0) == 1);
    assert_true(mlr_percentile(five, 5, 50) == 3);
    assert_true(fabs(mlr_percentile(five, 5, 90) - 4.6) < 1e-9);
    assert_true(mlr_percentile(five, 5, 100) == 5);
}

static void metrics_samples_ring_keeps_the_newest(void **state)
{
    UNUSED(state);
    struct mlr_samples s;
    struct mlr_sample_stats st;
    mlr_samples_init(&s);
    assert_int_equal(mlr_samples_stats(&s, SIZE_MAX, &st), -1);
    for (int i = 1; i <= 10; i++)
        mlr_samples_push(&s, i, 4); /* keeps 7, 8, 9, 10 */
    assert_int_equal(mlr_samples_stats(&s, SIZE_MAX, &st), 0);
    assert_int_equal(st.count, 4);
    assert_true(st.min == 7 && st.max == 10 && st.average == 8.5);
    assert_true(st.min <= st.p50 && st.p50 <= st.p90 && st.p90 <= st.p99 && st.p99 <= st.max);
    assert_true(st.p50 == 8.5);
    /* Shrinking keeps the newest values; growing keeps them all. */
    mlr_samples_push(&s, 11, 2); /* 10, 11 */
    assert_int_equal(mlr_samples_stats(&s, SIZE_MAX, &st), 0);
    assert_true(st.count == 2 && st.min == 10 && st.max == 11);
    mlr_samples_push(&s, 12, 100); /* 10, 11, 12 */
    assert_int_equal(mlr_samples_stats(&s, SIZE_MAX, &st), 0);
    assert_true(st.count == 3 && st.min == 10 && st.max == 12 && st.average == 11);
    /* Asking for the newest 2 of 3 reports what a window of 2 would hold. */
    assert_int_equal(mlr_samples_stats(&s, 2, &st), 0);
    assert_true(st.count == 2 && st.min == 11 && st.max == 12);
    assert_int_equal(mlr_samples_stats(&s, 0, &st), -1);
    mlr_samples_push(&s, 13, 0); /* monitoring_request_count 0: keep nothing */
    assert_int_equal(mlr_samples_stats(&s, SIZE_MAX, &st), -1);
    mlr_samples_push(&s, 1, MLR_SAMPLES_MAX + 10); /* clamped */
    assert_int_equal(s.cap, MLR_SAMPLES_MAX);
    mlr_samples_cleanup(&s);
    mlr_samples_cleanup(&s);
}

static void metrics_samples_unordered_input(void **state)
{
    UNUSED(state);
    struct mlr_samples s;
    struct mlr_sample_stats st;
    mlr_samples_init(&s);
    for (int i = 0; i < 1000; i++)
        mlr_samples_push(&s, (double)((i * 7919) % 1000), 100);
    assert_int_equal(mlr_samples_stats(&s, SIZE_MAX, &st), 0);
    assert_int_equal(st.count, 100);
    assert_true(st.min <= st.p50 && st.p50 <= st.p90 && st.p90 <= st.p99 && st.p99 <= st.max);
    mlr_samples_cleanup(&s);
}

static void metrics_process_figures(void **state)
{
    UNUSED(state);
    assert_true(mlr_process_rss_bytes() > 0);
    int64_t fds = mlr_process_open_fds();
    assert_true(fds >= 3); /* stdin, stdout, stderr at least */
    FILE *f = tmpfile();
    assert_int_equal(mlr_process_open_fds(), fds + 1);
    fclose(f);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(metrics_histogram_buckets),
        cmocka_unit_test(metrics_histogram_quantile),
        cmocka_unit_test(metrics_histogram_merge),
        cmocka_unit_test(metrics_histogram_shared_writers_lose_nothing),
        cmocka_unit_test(metrics_render_histogram),
        cmocka_unit_test(metrics_label_escaping),
        cmocka_unit_test(metrics_percentile_interpolates),
        cmocka_unit_test(metrics_samples_ring_keeps_the_newest),
        cmocka_unit_test(metrics_samples_unordered_input),
        cmocka_unit_test(metrics_process_figures),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
