/*
 * test_db.c — unit tests of store/db.c that need no PostgreSQL server: placeholder rewriting
 * (`?` and `?N` to `$N`, never inside quoted text, with the numbers used reported) and URL
 * detection. The PostgreSQL backend itself is exercised by every pg.* black-box case.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "store_int.h"

static char *tr(const char *sql, int *n, unsigned char *used)
{
    memset(used, 0, 8);
    return store__pg_translate(sql, n, used, 8);
}

static void translate_positional(void **state)
{
    (void)state;
    unsigned char used[8];
    int n = -1;
    char *out = tr("SELECT a FROM t WHERE b = ? AND c = ? LIMIT ?", &n, used);
    assert_string_equal(out, "SELECT a FROM t WHERE b = $1 AND c = $2 LIMIT $3");
    assert_int_equal(n, 3);
    assert_true(used[0] && used[1] && used[2] && !used[3]);
    free(out);
}

static void translate_numbered_and_repeated(void **state)
{
    (void)state;
    unsigned char used[8];
    int n = -1;
    char *out = tr("UPDATE t SET a = ?2, b = ?12 WHERE id = ?2", &n, used);
    assert_string_equal(out, "UPDATE t SET a = $2, b = $12 WHERE id = $2");
    assert_int_equal(n, 12);
    /* $1 never occurs: it is reported unused so it can be declared text. */
    assert_false(used[0]);
    assert_true(used[1]);
    free(out);
}

static void translate_skips_quoted_text(void **state)
{
    (void)state;
    unsigned char used[8];
    int n = -1;
    char *out = tr("SELECT '?', \"a?b\", 'it''s ?' FROM t WHERE x = ?", &n, used);
    assert_string_equal(out, "SELECT '?', \"a?b\", 'it''s ?' FROM t WHERE x = $1");
    assert_int_equal(n, 1);
    free(out);
    out = tr("SELECT 1", &n, used);
    assert_string_equal(out, "SELECT 1");
    assert_int_equal(n, 0);
    free(out);
    out = tr("", &n, used);
    assert_string_equal(out, "");
    free(out);
}

static void url_detection(void **state)
{
    (void)state;
    assert_true(store__is_url("postgres://u@h/db"));
    assert_true(store__is_url("postgresql:///db?host=/tmp"));
    assert_false(store__is_url("./data/mlrelay.db"));
    assert_false(store__is_url("postgres:/x"));
    assert_false(store__is_url(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(translate_positional),
        cmocka_unit_test(translate_numbered_and_repeated),
        cmocka_unit_test(translate_skips_quoted_text),
        cmocka_unit_test(url_detection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
