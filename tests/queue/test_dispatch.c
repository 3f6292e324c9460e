/*
 * test_dispatch.c — unit tests of the task dispatcher with a fake runner over a real store:
 * every enqueued task runs exactly once and ends COMPLETED, runner failures are recorded, a task
 * running past the timeout is failed with ML Commons' message and its late result ignored, an
 * expired lease is re-claimed, waits are answered, and close drains in-flight jobs. Each case has
 * its own temporary database and loop, and ends with uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>
#include <sqlite3.h>

#include "queue.h"

struct fixture {
    char dir[64];
    char path[128];
    uv_loop_t loop;
    struct store *store;
    struct queue *queue;
    atomic_int runs;            /* run() calls */
    atomic_int disk_full_on_run; /* run() makes the disk "full" (fault seam) */
    int sleep_ms;               /* run() sleeps this long */
    int fail_every;             /* run() fails every n-th task (0 = never) */
    const char *corrupt_id;     /* run() makes this task's stored document unreadable */
    int64_t timeout_ms;         /* reported by limits() */
    int committed;              /* committed() calls */
    int closed;
};

static atomic_int disk_full; /* read by the fault seam on the store's writer thread */

static int disk_fault(enum mlr_fault_point point, void *data)
{
    UNUSED(point);
    UNUSED(data);
    return atomic_load(&disk_full) ? MLR_ENOSPC : MLR_OK;
}

static void fake_run(struct queue_job *job, void *data)
{
    struct fixture *f = data;
    int n = atomic_fetch_add(&f->runs, 1) + 1;
    if (atomic_load(&f->disk_full_on_run))
        atomic_store(&disk_full, 1);
    if (f->corrupt_id && strcmp(job->id, f->corrupt_id) == 0) {
        sqlite3 *db;
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        char sql[STORE_ID_MAX + 64];
        snprintf(sql, sizeof(sql), "UPDATE tasks SET doc = '{not json' WHERE id = '%s'", job->id);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
    }
    if (f->sleep_ms)
        usleep((useconds_t)f->sleep_ms * 1000);
    if (f->fail_every && n % f->fail_every == 0) {
        job->state = QUEUE_STATE_FAILED;
        job->error = mlr_xstrdup("synthetic failure");
    }
}

static void fake_committed(struct queue_job *job, int status, void *data)
{
    struct fixture *f = data;
    UNUSED(job);
    UNUSED(status);
    f->committed++;
}

static void fake_limits(void *data, int64_t *timeout_ms, int64_t *retention_ms)
{
    struct fixture *f = data;
    *timeout_ms = f->timeout_ms;
    *retention_ms = 7LL * 86400000;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/mlr-queue-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/q.db", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    char err[256];
    assert_int_equal(store_open(&f->loop, f->path, NULL, &f->store, err, sizeof(err)), MLR_OK);
    f->timeout_ms = 600000;
    *state = f;
    return 0;
}

static void on_queue_closed(void *data)
{
    struct fixture *f = data;
    f->closed = 1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    queue_close(f->queue, on_queue_closed, f);
    while (!f->closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    store_close(f->store);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void open_queue(struct fixture *f, int concurrency)
{
    struct queue_runner r = {.run = fake_run, .committed = fake_committed, .limits = fake_limits, .data = f};
    struct queue_options o = {.concurrency = concurrency, .batch = 16, .tick_ms = 50};
    assert_int_equal(queue_open(&f->loop, f->store, &o, &r, &f->queue), MLR_OK);
    int recovered = -1;
    assert_int_equal(queue_start(f->queue, &recovered), MLR_OK);
    assert_int_equal(recovered, 0);
}

static int inserted;

static void on_inserted(const struct store_write_result *r, void *data)
{
    UNUSED(data);
    assert_int_equal(r->status, MLR_OK);
    inserted++;
}

/* Inserts @n REGISTER_MODEL tasks named t0..t(n-1) and waits for their commit. */
static void enqueue(struct fixture *f, int n)
{
    inserted = 0;
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "t%d", i);
        struct json_object *doc = queue_task_doc_new(QUEUE_TASK_REGISTER_MODEL, NULL,
                                                     QUEUE_STATE_CREATED, "node", 0, 1000 + i);
        assert_int_equal(store_doc_insert(f->store, STORE_TASK, id, doc, NULL, on_inserted, NULL),
                         MLR_OK);
        json_object_put(doc);
    }
    while (inserted < n)
        uv_run(&f->loop, UV_RUN_ONCE);
}

/* Counts tasks in @state by reading the database file directly. */
static int count_state(struct fixture *f, const char *state)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM tasks WHERE state = ? AND "
                                            "json_extract(doc, '$.state') = ?", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void run_until(struct fixture *f, const char *state, int want, int64_t budget_ms)
{
    int64_t deadline = mlr_mono_ms() + budget_ms;
    while (count_state(f, state) < want) {
        if (mlr_mono_ms() > deadline)
            fail_msg("only %d of %d tasks reached %s", count_state(f, state), want, state);
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

static void every_task_runs_once(void **state)
{
    struct fixture *f = *state;
    open_queue(f, 4);
    enqueue(f, 200);
    queue_kick(f->queue);
    run_until(f, "COMPLETED", 200, 30000); /* generous: sanitizer builds on a busy machine */
    assert_int_equal(atomic_load(&f->runs), 200);
    assert_int_equal(count_state(f, "RUNNING") + count_state(f, "CREATED"), 0);
    while (queue_inflight(f->queue) > 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(f->committed, 200);
}

static void failures_are_recorded(void **state)
{
    struct fixture *f = *state;
    f->fail_every = 4;
    open_queue(f, 2);
    enqueue(f, 40);
    queue_kick(f->queue);
    run_until(f, "FAILED", 10, 10000);
    run_until(f, "COMPLETED", 30, 10000);
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM tasks WHERE "
                                            "json_extract(doc, '$.error') = 'synthetic failure'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 10);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void slow_task_times_out(void **state)
{
    struct fixture *f = *state;
    f->timeout_ms = 1000;
    f->sleep_ms = 1600;
    open_queue(f, 1);
    enqueue(f, 1);
    queue_kick(f->queue);
    run_until(f, "FAILED", 1, 5000);
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT json_extract(doc, '$.error') FROM tasks",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "timeout after 1 seconds");
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* The late result (COMPLETED) must not overwrite the timeout. */
    while (queue_inflight(f->queue) > 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(count_state(f, "FAILED"), 1);
    assert_int_equal(count_state(f, "COMPLETED"), 0);
}

static void expired_lease_is_reclaimed(void **state)
{
    struct fixture *f = *state;
    enqueue(f, 1);
    /* A worker of a vanished process claimed it; its lease ended a second ago. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char sql[256];
    snprintf(sql, sizeof(sql), "UPDATE tasks SET state = 'RUNNING', doc = json_set(doc, "
                               "'$.state', 'RUNNING'), lease_until_ms = %lld",
             (long long)(mlr_now_ms() - 1000));
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct queue_runner r = {.run = fake_run, .committed = fake_committed, .limits = fake_limits, .data = f};
    struct queue_options o = {.concurrency = 2, .tick_ms = 50};
    assert_int_equal(queue_open(&f->loop, f->store, &o, &r, &f->queue), MLR_OK);
    /* No start-up recovery here (that would reset it anyway): a claim must take it. */
    queue_kick(f->queue);
    run_until(f, "COMPLETED", 1, 5000);
    assert_int_equal(atomic_load(&f->runs), 1);
}

static void recovery_reruns_running_tasks(void **state)
{
    struct fixture *f = *state;
    enqueue(f, 3);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, "UPDATE tasks SET state = 'RUNNING', doc = json_set(doc, "
                                      "'$.state', 'RUNNING'), lease_until_ms = 99999999999999",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    struct queue_runner r = {.run = fake_run, .committed = fake_committed, .limits = fake_limits, .data = f};
    assert_int_equal(queue_open(&f->loop, f->store, NULL, &r, &f->queue), MLR_OK);
    int recovered = 0;
    assert_int_equal(queue_start(f->queue, &recovered), MLR_OK);
    assert_int_equal(recovered, 3);
    run_until(f, "COMPLETED", 3, 5000);
}

struct wait_result {
    int called;
    char state[32];
};

static void on_wait(const char *task_id, const char *st, void *data)
{
    struct wait_result *w = data;
    UNUSED(task_id);
    w->called++;
    snprintf(w->state, sizeof(w->state), "%s", st ? st : "(timeout)");
}

static void waits_are_answered(void **state)
{
    struct fixture *f = *state;
    open_queue(f, 2);
    struct wait_result done = {0}, missing = {0};
    enqueue(f, 1);
    queue_wait(f->queue, "t0", 5000, on_wait, &done);
    queue_wait(f->queue, "no-such-task", 100, on_wait, &missing);
    queue_kick(f->queue);
    int64_t deadline = mlr_mono_ms() + 5000;
    while ((!done.called || !missing.called) && mlr_mono_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(done.called, 1);
    assert_string_equal(done.state, "COMPLETED");
    assert_int_equal(missing.called, 1);
    assert_string_equal(missing.state, "(timeout)");
}

/* The disk fills up while tasks run: their outcomes cannot be written. They must not be dropped
 * (the tasks would stay RUNNING until their lease ends, 10 minutes later) but written as soon
 * as the disk has room again, without running the tasks a second time. */
static void finish_refused_by_disk_is_retried(void **state)
{
    struct fixture *f = *state;
    if (!mlr_fault_enabled())
        skip();
    mlr_fault_set(disk_fault, NULL);
    atomic_store(&f->disk_full_on_run, 1);
    open_queue(f, 4);
    enqueue(f, 20);
    queue_kick(f->queue);
    int64_t deadline = mlr_mono_ms() + 5000;
    while (atomic_load(&f->runs) < 1 && mlr_mono_ms() < deadline) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_true(atomic_load(&f->runs) >= 1); /* claimed before the disk filled up, then ran */
    for (int i = 0; i < 300; i++) { /* several ticks of failing writes (and claims) */
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(count_state(f, "COMPLETED"), 0);
    atomic_store(&f->disk_full_on_run, 0);
    atomic_store(&disk_full, 0); /* space is back */
    run_until(f, "COMPLETED", 20, 3000);
    assert_int_equal(atomic_load(&f->runs), 20);
    mlr_fault_set(NULL, NULL);
}

/* One outcome that can never be written (its task's document is damaged) shares a finish op
 * with others: they must still be recorded, and the queue must keep its slots, instead of the
 * whole batch being retried forever. */
static void unwritable_outcome_does_not_block_others(void **state)
{
    struct fixture *f = *state;
    f->corrupt_id = "t3";
    f->sleep_ms = 20; /* the outcomes finish close together and share finish ops */
    open_queue(f, 20);
    enqueue(f, 20);
    queue_kick(f->queue);
    run_until(f, "COMPLETED", 19, 5000);
    int64_t deadline = mlr_mono_ms() + 5000;
    while (f->committed < 20 && mlr_mono_ms() < deadline) { /* the damaged one is given up */
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(f->committed, 20);
    assert_int_equal(queue_inflight(f->queue), 0);
    enqueue(f, 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_task_runs_once, setup, teardown),
        cmocka_unit_test_setup_teardown(failures_are_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(slow_task_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(expired_lease_is_reclaimed, setup, teardown),
        cmocka_unit_test_setup_teardown(recovery_reruns_running_tasks, setup, teardown),
        cmocka_unit_test_setup_teardown(waits_are_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(finish_refused_by_disk_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(unwritable_outcome_does_not_block_others, setup,
                                        teardown),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
