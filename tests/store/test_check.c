/*
 * test_check.c — unit tests of store/check.c: counts by state on a healthy database, a database
 * from a newer mlrelay (reported, not counted), a truncated copy and a file that is not a
 * database (failures, never a crash), and a missing file (not created).
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

#include "store_int.h"

struct fixture {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/mlr-check-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/mlrelay.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void exec_sql(const char *path, const char *sql)
{
    sqlite3 *db;
    char *msg = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* A database at the newest schema, made by the store itself, with a few rows. */
static void make_db(struct fixture *f)
{
    uv_loop_t loop;
    struct store *s = NULL;
    char err[256] = "";
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(store_open(&loop, f->path, NULL, &s, err, sizeof(err)), MLR_OK);
    store_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    exec_sql(f->path,
             "INSERT INTO model_groups(id, name, created_time, last_updated_time, doc) "
             "VALUES('g1', 'g', 1, 1, '{}');"
             "INSERT INTO connectors(id, name, created_time, last_updated_time, doc) "
             "VALUES('c1', 'c', 1, 1, '{}'), ('c2', 'c', 1, 1, '{}');"
             "INSERT INTO models(id, name, model_state, created_time, last_updated_time, doc) "
             "VALUES('m1', 'm', 'DEPLOYED', 1, 1, '{}'), ('m2', 'm', 'REGISTERED', 1, 1, '{}'),"
             "      ('m3', 'm', 'DEPLOYED', 1, 1, '{}');"
             "INSERT INTO tasks(id, task_type, state, create_time, last_update_time, doc) "
             "VALUES('t1', 'REGISTER_MODEL', 'COMPLETED', 1, 1, '{}'),"
             "      ('t2', 'DEPLOY_MODEL', 'FAILED', 1, 1, '{}'),"
             "      ('t3', 'DEPLOY_MODEL', 'COMPLETED', 1, 1, '{}');");
}

static void check_counts_by_state(void **state)
{
    struct fixture *f = *state;
    make_db(f);
    struct store_check_report r;
    char err[256] = "";
    int rc = store_check(f->path, &r, err, sizeof(err));
    if (rc != MLR_OK)
        fail_msg("store_check: %s (%s)", mlr_err_name(rc), err);
    assert_true(r.integrity_ok);
    assert_string_equal(r.integrity, "ok");
    assert_int_equal(r.schema_version, store_schema_version_max());
    assert_int_equal(r.schema_max, store_schema_version_max());
    assert_true(r.counted);
    assert_int_equal(r.model_groups, 1);
    assert_int_equal(r.connectors, 2);
    assert_int_equal(r.models, 3);
    assert_int_equal(r.tasks, 3);
    assert_int_equal(r.models_deployed, 2);
    assert_int_equal(r.nmodel_states, 2);
    assert_string_equal(r.model_states[0].state, "DEPLOYED");
    assert_int_equal(r.model_states[0].count, 2);
    assert_string_equal(r.model_states[1].state, "REGISTERED");
    assert_int_equal(r.ntask_states, 2);
    assert_string_equal(r.task_states[0].state, "COMPLETED");
    assert_int_equal(r.task_states[0].count, 2);
    assert_string_equal(r.task_states[1].state, "FAILED");
}

static void check_newer_schema_not_counted(void **state)
{
    struct fixture *f = *state;
    make_db(f);
    exec_sql(f->path, "PRAGMA user_version = 999");
    struct store_check_report r;
    char err[256] = "";
    assert_int_equal(store_check(f->path, &r, err, sizeof(err)), MLR_OK);
    assert_true(r.integrity_ok);
    assert_int_equal(r.schema_version, 999);
    assert_false(r.counted);
}

static void check_truncated_file_fails(void **state)
{
    struct fixture *f = *state;
    make_db(f);
    exec_sql(f->path, "PRAGMA journal_mode=DELETE"); /* everything in the main file */
    FILE *fp = fopen(f->path, "r+");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fclose(fp);
    assert_true(size > 8192);
    assert_int_equal(truncate(f->path, size / 2), 0);
    struct store_check_report r;
    char err[256] = "";
    int rc = store_check(f->path, &r, err, sizeof(err));
    /* Either the check ran and found damage, or the damage stopped it: never "healthy". */
    if (rc == MLR_OK)
        assert_false(r.integrity_ok);
    else
        assert_int_equal(rc, MLR_ECORRUPT);
}

static void check_not_a_database(void **state)
{
    struct fixture *f = *state;
    FILE *fp = fopen(f->path, "w");
    for (int i = 0; i < 1000; i++)
        fputs("not sqlite ", fp);
    fclose(fp);
    struct store_check_report r;
    char err[256] = "";
    assert_int_equal(store_check(f->path, &r, err, sizeof(err)), MLR_ECORRUPT);
    assert_non_null(strstr(err, f->path));
}

static void check_missing_file_not_created(void **state)
{
    struct fixture *f = *state;
    struct store_check_report r;
    char err[256] = "";
    assert_int_equal(store_check(f->path, &r, err, sizeof(err)), MLR_ENOTFOUND);
    assert_int_equal(access(f->path, F_OK), -1);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(check_counts_by_state, setup, teardown),
        cmocka_unit_test_setup_teardown(check_newer_schema_not_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(check_truncated_file_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(check_not_a_database, setup, teardown),
        cmocka_unit_test_setup_teardown(check_missing_file_not_created, setup, teardown),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
