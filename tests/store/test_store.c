/*
 * test_store.c — unit tests of store/: migrations (empty, existing, newer, failing), the group
 * commit writer (batching, ordering, failure isolation, durability across reopen), the read pool
 * and settings persistence. Each case gets its own temporary directory and loop, and ends by
 * closing every handle and asserting uv_loop_close() == 0 so leaked handles fail the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_int.h"

struct fixture {
    char dir[64];
    char path[128];
    uv_loop_t loop;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/mlr-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/test.db", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static struct store *open_store(struct fixture *f)
{
    char err[256] = "";
    struct store *s = NULL;
    int rc = store_open(&f->loop, f->path, NULL, &s, err, sizeof(err));
    if (rc != MLR_OK)
        fail_msg("store_open: %s (%s)", mlr_err_name(rc), err);
    return s;
}

static int user_version(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int v = -1;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void exec_sql(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* ---------------------------------- migrations ---------------------------------- */

static void migrate_empty_database(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_store(f);
    assert_true(store_schema_version_max() >= 1);
    assert_int_equal(store_schema_version(s), store_schema_version_max());
    assert_int_equal((int)strlen(store_cluster_uuid(s)), 22);
    store_close(s);
    assert_int_equal(user_version(f->path), store_schema_version_max());
}

static void migrate_existing_database_keeps_data(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_store(f);
    char uuid[32];
    snprintf(uuid, sizeof(uuid), "%s", store_cluster_uuid(s));
    store_close(s);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    exec_sql(f->path, "INSERT INTO settings VALUES('plugins.ml_commons.x', '\"1\"', 1)");
    s = open_store(f);
    assert_string_equal(store_cluster_uuid(s), uuid); /* not recreated */
    struct json_object *layer = NULL;
    assert_int_equal(store_settings_load(s, &layer), MLR_OK);
    assert_string_equal(json_object_get_string(json_object_object_get(layer, "plugins.ml_commons.x")),
                        "1");
    json_object_put(layer);
    store_close(s);
}

/* A database made by the first release (schema 1) opens with today's binary: 0002 adds the batch
 * results table and every existing row stays. */
static void migrate_upgrades_schema_1(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db;
    char err[256] = "";
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(store__migrate(db, store__migrations, 1, err, sizeof(err)), MLR_OK);
    sqlite3_close(db);
    assert_int_equal(user_version(f->path), 1);
    exec_sql(f->path, "INSERT INTO tasks(id, task_type, state, create_time, last_update_time, "
                      "doc) VALUES('t1', 'BATCH_INGEST', 'RUNNING', 1, 1, '{}')");
    struct store *s = open_store(f);
    assert_true(store_schema_version(s) >= 2);
    store_close(s);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    exec_sql(f->path, "INSERT INTO batch_results VALUES('t1', 0, 2, 0, '[{},{}]')");
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM tasks JOIN batch_results ON "
                                            "task_id = id", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static const struct store__migration fake_v1[] = {
    {1, "0001_a", "CREATE TABLE a(x INTEGER);"},
};
static const struct store__migration fake_v2[] = {
    {1, "0001_a", "CREATE TABLE a(x INTEGER);"},
    {2, "0002_b", "ALTER TABLE a ADD COLUMN y TEXT; INSERT INTO a VALUES(7, 'seven');"},
};
static const struct store__migration fake_bad[] = {
    {1, "0001_a", "CREATE TABLE a(x INTEGER);"},
    {2, "0002_b", "CREATE TABLE b(x); THIS IS NOT SQL;"},
};

static void migrate_applies_only_new_steps(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db;
    char err[256];
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(store__migrate(db, fake_v1, 1, err, sizeof(err)), MLR_OK);
    assert_int_equal(store__migrate(db, fake_v2, 2, err, sizeof(err)), MLR_OK);
    /* Running again is a no-op: 0001 must not run twice (CREATE TABLE would fail). */
    assert_int_equal(store__migrate(db, fake_v2, 2, err, sizeof(err)), MLR_OK);
    sqlite3_close(db);
    assert_int_equal(user_version(f->path), 2);
}

static void migrate_refuses_newer_database(void **state)
{
    struct fixture *f = *state;
    exec_sql(f->path, "PRAGMA user_version = 999");
    char err[256] = "";
    struct store *s = NULL;
    assert_int_equal(store_open(&f->loop, f->path, NULL, &s, err, sizeof(err)), MLR_ETOONEW);
    assert_null(s);
    assert_non_null(strstr(err, "newer than this mlrelay"));
    assert_int_equal(user_version(f->path), 999); /* untouched */
}

static void migrate_failure_rolls_back_that_step(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db;
    char err[256] = "";
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_not_equal(store__migrate(db, fake_bad, 2, err, sizeof(err)), MLR_OK);
    assert_non_null(strstr(err, "0002_b"));
    sqlite3_close(db);
    assert_int_equal(user_version(f->path), 1);
    /* Table b from the failed step must not exist: the step was one transaction. */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "SELECT * FROM b", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void migrate_rejects_gaps(void **state)
{
    struct fixture *f = *state;
    static const struct store__migration gap[] = {{2, "0002_x", "SELECT 1;"}};
    sqlite3 *db;
    char err[256] = "";
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(store__migrate(db, gap, 1, err, sizeof(err)), MLR_EINTERNAL);
    sqlite3_close(db);
}

/* ---------------------------------- group commit ---------------------------------- */

struct put_result {
    int done;       /* callbacks seen */
    int order[512]; /* index of each completion, in callback order */
    int status[512];
};

struct put_arg {
    struct put_result *r;
    int index;
};

static void on_put(int status, void *data)
{
    struct put_arg *a = data;
    a->r->order[a->r->done] = a->index;
    a->r->status[a->index] = status;
    a->r->done++;
}

static struct json_object *one_change(const char *key, const char *value)
{
    struct json_object *c = json_object_new_object();
    json_object_object_add(c, key, value ? json_object_new_string(value) : NULL);
    return c;
}

static void group_commit_batches_and_keeps_order(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_store(f);
    enum { N = 500 };
    struct put_result r = {0};
    static struct put_arg args[N];
    for (int i = 0; i < N; i++) {
        char key[64], val[16];
        snprintf(key, sizeof(key), "plugins.ml_commons.k%d", i);
        snprintf(val, sizeof(val), "%d", i);
        struct json_object *c = one_change(key, val);
        args[i].r = &r;
        args[i].index = i;
        assert_int_equal(store_settings_put(s, c, on_put, &args[i]), MLR_OK);
        json_object_put(c);
    }
    while (r.done < N)
        uv_run(&f->loop, UV_RUN_ONCE);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r.order[i], i); /* completions in submission order */
        assert_int_equal(r.status[i], MLR_OK);
    }
    struct store_stats st;
    store_stats_get(s, &st);
    assert_int_equal(st.writes, N);
    /* 500 writes submitted back to back cannot each have had their own fsync. */
    assert_true(st.commits < N / 2);
    store_close(s);
    uv_run(&f->loop, UV_RUN_DEFAULT);

    s = open_store(f); /* durable: all rows are there after reopening */
    struct json_object *layer = NULL;
    assert_int_equal(store_settings_load(s, &layer), MLR_OK);
    assert_int_equal(json_object_object_length(layer), N);
    json_object_put(layer);
    store_close(s);
}

/* A failing op rolls back alone; the others in the same batch commit. */
struct fail_op {
    struct store__op op;
    int fail;
    int *statuses;
    int index;
};

static int fail_run(struct store__conn *c, struct store__op *op)
{
    struct fail_op *fo = container_of(op, struct fail_op, op);
    char sql[128];
    snprintf(sql, sizeof(sql), "INSERT INTO meta VALUES('row%d', 'x')", fo->index);
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store__err(rc);
    return fo->fail ? MLR_EINVAL : MLR_OK; /* written, then refused: must be rolled back */
}

static void fail_done(struct store__op *op)
{
    struct fail_op *fo = container_of(op, struct fail_op, op);
    fo->statuses[fo->index] = op->status;
    free(fo);
}

static int count_rows(const char *path, const char *where)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM meta WHERE %s", where);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void group_commit_isolates_failures(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_store(f);
    int statuses[10];
    for (int i = 0; i < 10; i++) {
        struct fail_op *fo = calloc(1, sizeof(*fo));
        fo->op.run = fail_run;
        fo->op.done = fail_done;
        fo->fail = i % 3 == 0;
        fo->statuses = statuses;
        fo->index = i;
        statuses[i] = 1;
        assert_int_equal(store__submit(s, &fo->op), MLR_OK);
    }
    store_close(s); /* drains: every callback has run when it returns */
    for (int i = 0; i < 10; i++)
        assert_int_equal(statuses[i], i % 3 == 0 ? MLR_EINVAL : MLR_OK);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(count_rows(f->path, "key LIKE 'row%'"), 6);
    assert_int_equal(count_rows(f->path, "key IN ('row0','row3','row6','row9')"), 0);
}

/*
 * SQLite rolls a whole transaction back by itself after SQLITE_FULL or SQLITE_IOERR. An op that
 * meets that must fail the batch: the ops before it were rolled back, and the ops after it must
 * not run in autocommit mode (each "SAVEPOINT op" would open and "RELEASE op" commit its own
 * transaction: written to disk, yet answered with an error). Simulated here by an op that rolls
 * the transaction back itself and reports a full disk.
 */
static int rollback_run(struct store__conn *c, struct store__op *op)
{
    int rc = fail_run(c, op);
    assert_int_equal(rc, MLR_OK);
    assert_int_equal(sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    return MLR_ENOSPC;
}

static void submit_ops(struct store *s, int n, int *statuses, int rollback_at)
{
    for (int i = 0; i < n; i++) {
        struct fail_op *fo = calloc(1, sizeof(*fo));
        fo->op.run = i == rollback_at ? rollback_run : fail_run;
        fo->op.done = fail_done;
        fo->statuses = statuses;
        fo->index = i;
        statuses[i] = 1;
        assert_int_equal(store__submit(s, &fo->op), MLR_OK);
    }
}

static void group_commit_lost_transaction_fails_batch(void **state)
{
    struct fixture *f = *state;
    struct store_options o = {.max_batch = 64};
    char err[256];
    struct store *s = NULL;
    /* Queue everything before the writer can take any of it: one batch. */
    assert_int_equal(store_open(&f->loop, f->path, &o, &s, err, sizeof(err)), MLR_OK);
    int statuses[10];
    submit_ops(s, 10, statuses, 4);
    store_close(s);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int batched = count_rows(f->path, "key LIKE 'row%'");
    /* Batching is up to the writer; whatever shared op 4's batch failed with it, and no row
     * of a failed op is on disk. */
    int ok = 0;
    for (int i = 0; i < 10; i++) {
        assert_true(statuses[i] == MLR_OK || statuses[i] == MLR_ENOSPC);
        ok += statuses[i] == MLR_OK;
    }
    assert_int_equal(statuses[4], MLR_ENOSPC);
    assert_int_equal(batched, ok);
}

/* The disk fails (through the store's VFS shim): every write of the batch fails with it,
 * nothing is half-written, and writes succeed again once the disk is back. */
static int disk_fault(enum mlr_fault_point point, void *data)
{
    UNUSED(point);
    return *(int *)data;
}

static void group_commit_disk_full_then_recovers(void **state)
{
    struct fixture *f = *state;
    if (!mlr_fault_enabled())
        skip();
    struct store *s = open_store(f);
    static int fault;
    mlr_fault_set(disk_fault, &fault);
    fault = MLR_ENOSPC;
    int statuses[20];
    submit_ops(s, 10, statuses, -1);
    while (statuses[9] == 1)
        uv_run(&f->loop, UV_RUN_ONCE);
    for (int i = 0; i < 10; i++)
        assert_int_equal(statuses[i], MLR_ENOSPC);
    fault = MLR_EIO;
    submit_ops(s, 10, statuses, -1);
    while (statuses[9] == 1)
        uv_run(&f->loop, UV_RUN_ONCE);
    for (int i = 0; i < 10; i++)
        assert_int_equal(statuses[i], MLR_EIO);
    fault = MLR_OK; /* space is back: the same store writes again, no reopen */
    submit_ops(s, 10, statuses, -1);
    store_close(s);
    mlr_fault_set(NULL, NULL);
    for (int i = 0; i < 10; i++)
        assert_int_equal(statuses[i], MLR_OK);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(count_rows(f->path, "key LIKE 'row%'"), 10);
}

static void close_drains_pending_writes(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_store(f);
    struct put_result r = {0};
    struct put_arg a = {&r, 0};
    struct json_object *c = one_change("plugins.ml_commons.a", "1");
    assert_int_equal(store_settings_put(s, c, on_put, &a), MLR_OK);
    store_close(s);
    assert_int_equal(r.done, 1); /* the pending write completed during close */
    assert_int_equal(r.status[0], MLR_OK);
    json_object_put(c);
}

struct batch_arg {
    int done;
    int status;
    int applied;
};

static void on_batch(int status, int applied, void *data)
{
    struct batch_arg *a = data;
    a->status = status;
    a->applied = applied;
    a->done = 1;
}

static int put_batch(struct fixture *f, struct store *s, int64_t first)
{
    struct batch_arg a = {0};
    struct store_batch_result b = {.task_id = "job", .first_index = first, .n_items = 2,
                                   .n_failed = 1, .results = "[{},{}]", .lease_until_ms = 1};
    assert_int_equal(store_batch_put(s, &b, on_batch, &a), MLR_OK);
    while (!a.done)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(a.status, MLR_OK);
    return a.applied;
}

/* A batch is recorded once: a second claimer of the same job learns it was recorded before
 * (and goes on), which is not the same answer as "the job was cancelled" (stop). */
static void batch_recorded_once(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_store(f);
    exec_sql(f->path, "INSERT INTO tasks(id, task_type, state, create_time, last_update_time, "
                      "doc) VALUES('job', 'BATCH_INGEST', 'RUNNING', 1, 1, "
                      "'{\"progress\":{\"total\":4,\"completed\":0,\"failed\":0}}')");
    assert_int_equal(put_batch(f, s, 0), STORE_BATCH_RECORDED);
    assert_int_equal(put_batch(f, s, 0), STORE_BATCH_DUPLICATE);
    assert_int_equal(put_batch(f, s, 2), STORE_BATCH_RECORDED);
    exec_sql(f->path, "UPDATE tasks SET state = 'CANCELLED' WHERE id = 'job'");
    assert_int_equal(put_batch(f, s, 4), STORE_BATCH_NOT_RUNNING);
    store_close(s);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT json_extract(doc, '$.progress.completed'), "
                                            "json_extract(doc, '$.progress.failed'), (SELECT "
                                            "count(*) FROM batch_results) FROM tasks", -1, &st,
                                        NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 2); /* two batches of 1 ok + 1 failed */
    assert_int_equal(sqlite3_column_int(st, 1), 2);
    assert_int_equal(sqlite3_column_int(st, 2), 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void settings_put_null_deletes(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_store(f);
    struct put_result r = {0};
    struct put_arg a0 = {&r, 0}, a1 = {&r, 1};
    struct json_object *set = one_change("plugins.ml_commons.a", "x");
    struct json_object *del = one_change("plugins.ml_commons.a", NULL);
    assert_int_equal(store_settings_put(s, set, on_put, &a0), MLR_OK);
    assert_int_equal(store_settings_put(s, del, on_put, &a1), MLR_OK);
    while (r.done < 2)
        uv_run(&f->loop, UV_RUN_ONCE);
    struct json_object *layer = NULL;
    assert_int_equal(store_settings_load(s, &layer), MLR_OK);
    assert_int_equal(json_object_object_length(layer), 0);
    json_object_put(layer);
    json_object_put(set);
    json_object_put(del);
    store_close(s);
}

/* ---------------------------------- read pool ---------------------------------- */

struct read_arg {
    int count;   /* rows counted on the pool thread */
    int status;  /* delivered on the loop thread */
    int done;
};

static int read_count(struct store__conn *c, void *arg)
{
    struct read_arg *a = arg;
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT count(*) FROM settings", &st);
    if (rc == MLR_OK && store__step(st) == SQLITE_ROW)
        a->count = (int)store__col_int(st, 0);
    store__reset(st);
    return rc;
}

static void read_done(int status, void *arg)
{
    struct read_arg *a = arg;
    a->status = status;
    a->done = 1;
}

static void read_pool_sees_committed_writes(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_store(f);
    struct put_result r = {0};
    struct put_arg a0 = {&r, 0};
    struct json_object *set = one_change("plugins.ml_commons.a", "x");
    assert_int_equal(store_settings_put(s, set, on_put, &a0), MLR_OK);
    while (r.done < 1)
        uv_run(&f->loop, UV_RUN_ONCE);
    struct read_arg reads[16] = {{0}};
    for (int i = 0; i < 16; i++) /* more reads than pooled connections: they must queue */
        assert_int_equal(store__read(s, read_count, &reads[i], read_done), MLR_OK);
    for (int i = 0; i < 16; i++) {
        while (!reads[i].done)
            uv_run(&f->loop, UV_RUN_ONCE);
        assert_int_equal(reads[i].status, MLR_OK);
        assert_int_equal(reads[i].count, 1);
    }
    json_object_put(set);
    store_close(s);
}

static void error_translation(void **state)
{
    UNUSED(state);
    assert_int_equal(store__err(SQLITE_OK), MLR_OK);
    assert_int_equal(store__err(SQLITE_DONE), MLR_OK);
    assert_int_equal(store__err(SQLITE_CONSTRAINT_UNIQUE), MLR_EEXIST);
    assert_int_equal(store__err(SQLITE_FULL), MLR_ENOSPC);
    assert_int_equal(store__err(SQLITE_BUSY), MLR_EBUSY);
    assert_int_equal(store__err(SQLITE_CORRUPT), MLR_ECORRUPT);
    assert_int_equal(store__err(SQLITE_IOERR_FSYNC), MLR_EIO);
    assert_int_equal(store__err(SQLITE_ERROR), MLR_EINTERNAL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(migrate_empty_database, setup, teardown),
        cmocka_unit_test_setup_teardown(migrate_existing_database_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(migrate_upgrades_schema_1, setup, teardown),
        cmocka_unit_test_setup_teardown(batch_recorded_once, setup, teardown),
        cmocka_unit_test_setup_teardown(migrate_applies_only_new_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(migrate_refuses_newer_database, setup, teardown),
        cmocka_unit_test_setup_teardown(migrate_failure_rolls_back_that_step, setup, teardown),
        cmocka_unit_test_setup_teardown(migrate_rejects_gaps, setup, teardown),
        cmocka_unit_test_setup_teardown(group_commit_batches_and_keeps_order, setup, teardown),
        cmocka_unit_test_setup_teardown(group_commit_isolates_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(group_commit_lost_transaction_fails_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(group_commit_disk_full_then_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(close_drains_pending_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(settings_put_null_deletes, setup, teardown),
        cmocka_unit_test_setup_teardown(read_pool_sees_committed_writes, setup, teardown),
        cmocka_unit_test(error_translation),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
