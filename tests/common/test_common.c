/*
 * test_common.c — unit tests of common/: the error space, buffers (cap), the arena, IDs, the
 * byte-size and time-value parsers, and log formatting (captured through a pipe on stderr).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common.h"

static void err_names_and_messages(void **state)
{
    UNUSED(state);
    assert_string_equal(mlr_err_name(MLR_OK), "MLR_OK");
    assert_string_equal(mlr_err_name(MLR_ENOTFOUND), "MLR_ENOTFOUND");
    assert_string_equal(mlr_strerror(MLR_ETOONEW), "database is newer than this binary");
    assert_string_equal(mlr_err_name(12345), "MLR_UNKNOWN");
    assert_string_equal(mlr_strerror(-9999), "unknown error");
}

static void buf_appends_and_caps(void **state)
{
    UNUSED(state);
    struct mlr_buf b;
    mlr_buf_init(&b, 10);
    assert_int_equal(mlr_buf_puts(&b, "hello"), MLR_OK);
    assert_int_equal(mlr_buf_printf(&b, "%d", 1234), MLR_OK);
    assert_string_equal(b.data, "hello1234");
    assert_int_equal(mlr_buf_puts(&b, "xy"), MLR_ETOOBIG); /* 11 > 10: nothing appended */
    assert_string_equal(b.data, "hello1234");
    assert_int_equal(mlr_buf_puts(&b, "x"), MLR_OK);
    assert_int_equal(b.len, 10);
    mlr_buf_consume(&b, 5);
    assert_string_equal(b.data, "1234x");
    mlr_buf_reset(&b);
    assert_int_equal(b.len, 0);
    mlr_buf_cleanup(&b);
    mlr_buf_cleanup(&b); /* cleanup twice is safe */
}

static void buf_grows_unbounded_when_uncapped(void **state)
{
    UNUSED(state);
    struct mlr_buf b;
    mlr_buf_init(&b, 0);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(mlr_buf_append(&b, "abcdefghij", 10), MLR_OK);
    assert_int_equal(b.len, 1000000);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data + 999990, "abcdefghij", 10);
    mlr_buf_cleanup(&b);
}

static void pool_allocations_are_aligned_and_independent(void **state)
{
    UNUSED(state);
    struct mlr_pool p;
    mlr_pool_init(&p);
    char *strs[1000];
    for (int i = 0; i < 1000; i++) {
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "s%d", i);
        strs[i] = mlr_pool_strdup(&p, tmp);
        assert_int_equal((uintptr_t)strs[i] % 16, 0);
    }
    char *big = mlr_pool_alloc(&p, 100000); /* larger than a chunk */
    memset(big, 'x', 100000);
    for (int i = 0; i < 1000; i++) {
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "s%d", i);
        assert_string_equal(strs[i], tmp);
    }
    assert_string_equal(mlr_pool_strndup(&p, "abcdef", 3), "abc");
    mlr_pool_cleanup(&p);
    mlr_pool_cleanup(&p);
}

static void ids_are_url_safe_and_distinct(void **state)
{
    UNUSED(state);
    char seen[200][MLR_ID_LEN + 1];
    for (int i = 0; i < 200; i++) {
        assert_int_equal(mlr_id_new(seen[i]), MLR_OK);
        assert_int_equal(strlen(seen[i]), MLR_ID_LEN);
        assert_int_equal(strspn(seen[i], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                         "0123456789-_"),
                         MLR_ID_LEN);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(seen[i], seen[j]);
    }
}

static void parse_bytes_units(void **state)
{
    UNUSED(state);
    int64_t v = 0;
    assert_int_equal(mlr_parse_bytes("100mb", &v), MLR_OK);
    assert_int_equal(v, 100LL * 1024 * 1024);
    assert_int_equal(mlr_parse_bytes("16KB", &v), MLR_OK);
    assert_int_equal(v, 16384);
    assert_int_equal(mlr_parse_bytes("512", &v), MLR_OK);
    assert_int_equal(v, 512);
    assert_int_equal(mlr_parse_bytes("1g", &v), MLR_OK);
    assert_int_equal(v, 1LL << 30);
    assert_int_equal(mlr_parse_bytes("1.5kb", &v), MLR_OK);
    assert_int_equal(v, 1536);
    v = 7;
    assert_int_equal(mlr_parse_bytes("-1", &v), MLR_EINVAL);
    assert_int_equal(mlr_parse_bytes("10parsecs", &v), MLR_EINVAL);
    assert_int_equal(mlr_parse_bytes("", &v), MLR_EINVAL);
    assert_int_equal(mlr_parse_bytes("99999999999tb", &v), MLR_EINVAL);
    assert_int_equal(v, 7); /* untouched on failure */
}

static void parse_time_units(void **state)
{
    UNUSED(state);
    int64_t v = 0;
    assert_int_equal(mlr_parse_time_ms("60s", 0, &v), MLR_OK);
    assert_int_equal(v, 60000);
    assert_int_equal(mlr_parse_time_ms("7d", 0, &v), MLR_OK);
    assert_int_equal(v, 7LL * 86400000);
    assert_int_equal(mlr_parse_time_ms("250ms", 0, &v), MLR_OK);
    assert_int_equal(v, 250);
    assert_int_equal(mlr_parse_time_ms("1.5m", 0, &v), MLR_OK);
    assert_int_equal(v, 90000);
    assert_int_equal(mlr_parse_time_ms("30", 0, &v), MLR_EINVAL); /* bare number needs a unit */
    assert_int_equal(mlr_parse_time_ms("30", 1000, &v), MLR_OK);
    assert_int_equal(v, 30000);
    assert_int_equal(mlr_parse_time_ms("soon", 0, &v), MLR_EINVAL);
}

static void clocks_move_forward(void **state)
{
    UNUSED(state);
    int64_t w = mlr_now_ms(), m = mlr_mono_ms();
    assert_true(w > 1700000000000LL); /* after 2023 */
    usleep(20000);
    assert_true(mlr_mono_ms() - m >= 19);
    assert_true(mlr_now_ms() >= w);
}

/* Runs @fn with stderr redirected into a pipe and returns what it wrote. */
static char *capture_stderr(void (*fn)(void))
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    static char out[8192];
    ssize_t n = read(fds[0], out, sizeof(out) - 1);
    close(fds[0]);
    out[n > 0 ? n : 0] = '\0';
    return out;
}

static void log_text_lines(void)
{
    mlr_log_setup(MLR_LOG_INFO, MLR_LOG_TEXT);
    const char *kv[] = {"task_id", "abc", "note", "two words"};
    mlr_log_kv(MLR_LOG_INFO, "queue", "task done\nforged", kv, 2);
    mlr_log(MLR_LOG_DEBUG, "queue", "hidden %d", 1);
}

static void log_json_lines(void)
{
    mlr_log_setup(MLR_LOG_DEBUG, MLR_LOG_JSON);
    const char *kv[] = {"model_id", "m\"1"};
    mlr_log_kv(MLR_LOG_WARN, "workers", "deploy failed", kv, 1);
    mlr_log_setup(MLR_LOG_INFO, MLR_LOG_TEXT);
}

static void log_formats(void **state)
{
    UNUSED(state);
    char *text = capture_stderr(log_text_lines);
    assert_non_null(strstr(text, " INFO queue: task done\\u000aforged task_id=abc note=\"two words\"\n"));
    assert_null(strstr(text, "hidden")); /* below the threshold */
    assert_int_equal(strchr(text, '\n') - text + 1, (long)strlen(text)); /* exactly one line */

    char *json = capture_stderr(log_json_lines);
    struct json_object *o = json_tokener_parse(json);
    assert_non_null(o);
    assert_string_equal(json_object_get_string(json_object_object_get(o, "level")), "warn");
    assert_string_equal(json_object_get_string(json_object_object_get(o, "comp")), "workers");
    assert_string_equal(json_object_get_string(json_object_object_get(o, "msg")), "deploy failed");
    assert_string_equal(json_object_get_string(json_object_object_get(o, "model_id")), "m\"1");
    assert_non_null(json_object_object_get(o, "ts"));
    json_object_put(o);
}

static void log_level_and_format_parsing(void **state)
{
    UNUSED(state);
    enum mlr_log_level l = MLR_LOG_INFO;
    enum mlr_log_format f = MLR_LOG_TEXT;
    assert_int_equal(mlr_log_level_parse("warn", &l), MLR_OK);
    assert_int_equal(l, MLR_LOG_WARN);
    assert_int_equal(mlr_log_level_parse("loud", &l), MLR_EINVAL);
    assert_int_equal(l, MLR_LOG_WARN);
    assert_int_equal(mlr_log_format_parse("json", &f), MLR_OK);
    assert_int_equal(f, MLR_LOG_JSON);
    assert_int_equal(mlr_log_format_parse("xml", &f), MLR_EINVAL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(err_names_and_messages),
        cmocka_unit_test(buf_appends_and_caps),
        cmocka_unit_test(buf_grows_unbounded_when_uncapped),
        cmocka_unit_test(pool_allocations_are_aligned_and_independent),
        cmocka_unit_test(ids_are_url_safe_and_distinct),
        cmocka_unit_test(parse_bytes_units),
        cmocka_unit_test(parse_time_units),
        cmocka_unit_test(clocks_move_forward),
        cmocka_unit_test(log_formats),
        cmocka_unit_test(log_level_and_format_parsing),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
