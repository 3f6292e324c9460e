/*
 * batch.c — durable progress and results of batch ingestion jobs (BATCH_INGEST tasks).
 *
 * A finished batch is one writer op: its results row and its task's progress counters and lease
 * change in the same savepoint, and only while the task is RUNNING — a cancelled, timed-out or
 * deleted job records nothing more. Readers page through results by index without reading the
 * result texts of the batches they skip (see migrations/0002_batch_results.sql).
 */
#include "store_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* ---------------------------------- record a batch ---------------------------------- */

struct batch_op {
    struct store__op op;
    char task_id[STORE_ID_MAX + 1];
    int64_t first_index;
    int n_items, n_failed;
    char *results;
    int64_t lease_until_ms;
    int applied;
    store_batch_cb cb;
    void *data;
};

static int batch_task_running(struct store__conn *c, const char *task_id, int *running)
{
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT state = 'RUNNING' FROM tasks WHERE id = ?", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, task_id);
    int64_t v = 0;
    rc = store__step_int(st, &v);
    store__reset(st);
    *running = rc == MLR_OK && v == 1;
    return rc == MLR_ENOTFOUND ? MLR_OK : rc;
}

/* A batch recorded before (a retry after a crash or a lost acknowledgement) is skipped, not
 * counted twice. PostgreSQL names the one conflict it may skip, so any other constraint failure
 * is still an error, and nothing fails inside the op: a failed statement would abort the whole
 * transaction there, not just this statement. */
#define INSERT_LITE                                                                                \
    "INSERT OR IGNORE INTO batch_results(task_id, first_index, n_items, n_failed, results) "       \
    "VALUES(?, ?, ?, ?, ?)"
#define INSERT_PG                                                                                  \
    "INSERT INTO batch_results(task_id, first_index, n_items, n_failed, results) "                 \
    "VALUES(?, ?, ?, ?, ?) ON CONFLICT (task_id, first_index) DO NOTHING"

/* Adds a batch to the task's progress and renews its lease: ?1 lease_until_ms, ?2 now,
 * ?3 seq_no, ?4 items completed, ?5 items failed, ?6 task id. json_set creates a missing
 * "progress" object and jsonb_set would not, so PostgreSQL rebuilds the object and merges it in
 * whole (the document's key order is then jsonb's); its casts give jsonb_build_object's
 * arguments the types it cannot infer. */
#define PROGRESS_LITE                                                                              \
    "UPDATE tasks SET lease_until_ms = ?1, last_update_time = ?2, version = version + 1, "         \
    "seq_no = ?3, doc = json_set(doc, "                                                            \
    "'$.progress.completed', ifnull(json_extract(doc, '$.progress.completed'), 0) + ?4, "          \
    "'$.progress.failed', ifnull(json_extract(doc, '$.progress.failed'), 0) + ?5, "                \
    "'$.last_update_time', ?2) WHERE id = ?6"
#define PROGRESS_PG                                                                                \
    "UPDATE tasks SET lease_until_ms = ?1, last_update_time = ?2, version = version + 1, "         \
    "seq_no = ?3, doc = (doc::jsonb || jsonb_build_object("                                        \
    "'progress', COALESCE(doc::jsonb -> 'progress', '{}'::jsonb) || jsonb_build_object("           \
    "'completed', COALESCE((doc::jsonb #>> '{progress,completed}')::bigint, 0) + ?4::bigint, "     \
    "'failed', COALESCE((doc::jsonb #>> '{progress,failed}')::bigint, 0) + ?5::bigint), "          \
    "'last_update_time', ?2::bigint))::text WHERE id = ?6"

static int batch_put_run(struct store__conn *c, struct store__op *op)
{
    struct batch_op *o = container_of(op, struct batch_op, op);
    struct store__stmt *st = NULL;
    int running = 0;
    int rc = batch_task_running(c, o->task_id, &running);
    if (rc != MLR_OK || !running)
        return rc;
    rc = store__stmt(c, STORE_SQL(c, INSERT_LITE, INSERT_PG), &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, o->task_id);
    store__bind_int(st, 2, o->first_index);
    store__bind_int(st, 3, o->n_items);
    store__bind_int(st, 4, o->n_failed);
    store__bind_text(st, 5, o->results);
    rc = store__err(store__step(st));
    int inserted = rc == MLR_OK && store__changes(c) > 0;
    store__reset(st);
    if (rc == MLR_OK && !inserted)
        o->applied = STORE_BATCH_DUPLICATE; /* recorded before: counting it again would be wrong */
    if (rc != MLR_OK || !inserted)
        return rc;
    int64_t seq = 0, now = mlr_now_ms();
    rc = store__seq_next(c, &seq);
    if (rc == MLR_OK)
        rc = store__stmt(c, STORE_SQL(c, PROGRESS_LITE, PROGRESS_PG), &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_int(st, 1, o->lease_until_ms);
    store__bind_int(st, 2, now);
    store__bind_int(st, 3, seq);
    store__bind_int(st, 4, o->n_items - o->n_failed);
    store__bind_int(st, 5, o->n_failed);
    store__bind_text(st, 6, o->task_id);
    rc = store__err(store__step(st));
    store__reset(st);
    o->applied = rc == MLR_OK ? STORE_BATCH_RECORDED : STORE_BATCH_NOT_RUNNING;
    return rc;
}

static void batch_put_done(struct store__op *op)
{
    struct batch_op *o = container_of(op, struct batch_op, op);
    o->cb(op->status, op->status == MLR_OK ? o->applied : STORE_BATCH_NOT_RUNNING, o->data);
    free(o->results);
    free(o);
}

int store_batch_put(struct store *s, const struct store_batch_result *b, store_batch_cb cb,
                    void *data)
{
    assert(b->n_failed >= 0 && b->n_failed <= b->n_items);
    struct batch_op *o = mlr_xcalloc(1, sizeof(*o));
    o->op.run = batch_put_run;
    o->op.done = batch_put_done;
    snprintf(o->task_id, sizeof(o->task_id), "%s", b->task_id);
    o->first_index = b->first_index;
    o->n_items = b->n_items;
    o->n_failed = b->n_failed;
    o->results = mlr_xstrdup(b->results);
    o->lease_until_ms = b->lease_until_ms;
    o->cb = cb;
    o->data = data;
    int rc = store__submit(s, &o->op);
    if (rc != MLR_OK) {
        free(o->results);
        free(o);
    }
    return rc;
}

/* ---------------------------------- resume ---------------------------------- */

int store_batch_done(struct store *s, const char *task_id, struct store_batch_done *out)
{
    struct store__conn *c = store__reader_acquire(s);
    struct store__stmt *st = NULL;
    struct store_batch_done d = {0};
    int rc = store__stmt(c, "SELECT first_index, n_items, n_failed FROM batch_results "
                            "WHERE task_id = ? ORDER BY first_index", &st);
    if (rc == MLR_OK) {
        store__bind_text(st, 1, task_id);
        int step, cap = 0;
        while ((step = store__step(st)) == SQLITE_ROW) {
            if (d.n == cap) {
                cap = cap ? cap * 2 : 64;
                d.first_index = mlr_xrealloc(d.first_index, (size_t)cap * sizeof(int64_t));
            }
            d.first_index[d.n++] = store__col_int(st, 0);
            d.items += store__col_int(st, 1);
            d.failed += store__col_int(st, 2);
        }
        rc = step == SQLITE_DONE ? MLR_OK : store__err(step);
        store__reset(st);
    }
    store__reader_release(s, c);
    if (rc != MLR_OK) {
        free(d.first_index);
        return rc;
    }
    *out = d;
    return MLR_OK;
}

/* ---------------------------------- results page ---------------------------------- */

struct page_read {
    char task_id[STORE_ID_MAX + 1];
    int64_t from, size;
    struct json_object *out;
    store_search_cb cb;
    void *data;
};

/* Appends items [skip, skip + take) of batch row @first_index to @results. */
static int page_append(struct store__conn *c, const char *task_id, int64_t first_index,
                       int64_t skip, int64_t take, struct json_object *results)
{
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT results FROM batch_results WHERE task_id = ? AND "
                            "first_index = ?", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, task_id);
    store__bind_int(st, 2, first_index);
    if (store__step(st) == SQLITE_ROW) {
        struct json_object *items = json_tokener_parse(store__col_text(st, 0));
        size_t n = json_object_is_type(items, json_type_array) ? json_object_array_length(items)
                                                               : 0;
        for (int64_t i = skip; i < skip + take && (size_t)i < n; i++)
            json_object_array_add(results, json_object_get(json_object_array_get_idx(items,
                                                                                     (size_t)i)));
        json_object_put(items);
        if (n == 0)
            rc = MLR_ECORRUPT;
    }
    store__reset(st);
    return rc;
}

static int page_run(struct store__conn *c, void *arg)
{
    struct page_read *p = arg;
    struct store__stmt *st = NULL;
    int64_t type_ok = 0;
    int rc = store__stmt(c, "SELECT task_type = 'BATCH_INGEST' FROM tasks WHERE id = ?", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, p->task_id);
    rc = store__step_int(st, &type_ok);
    store__reset(st);
    if (rc == MLR_OK && !type_ok)
        rc = MLR_EINVAL;
    struct store_batch_done d = {0};
    if (rc == MLR_OK) /* reads only the small columns of every batch */
        rc = store__stmt(c, "SELECT first_index, n_items FROM batch_results WHERE task_id = ? "
                            "ORDER BY first_index", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, p->task_id);
    struct { int64_t first, n; } *rows = NULL;
    int nrows = 0, cap = 0, step;
    while ((step = store__step(st)) == SQLITE_ROW) {
        if (nrows == cap) {
            cap = cap ? cap * 2 : 64;
            rows = mlr_xrealloc(rows, (size_t)cap * sizeof(*rows));
        }
        rows[nrows].first = store__col_int(st, 0);
        rows[nrows].n = store__col_int(st, 1);
        d.items += rows[nrows++].n;
    }
    rc = step == SQLITE_DONE ? MLR_OK : store__err(step);
    store__reset(st);
    struct json_object *results = json_object_new_array();
    int64_t pos = 0; /* position (among recorded items) of the current row's first item */
    for (int i = 0; i < nrows && rc == MLR_OK && pos < p->from + p->size; i++) {
        int64_t lo = p->from > pos ? p->from - pos : 0;
        int64_t hi = p->from + p->size - pos < rows[i].n ? p->from + p->size - pos : rows[i].n;
        if (lo < hi)
            rc = page_append(c, p->task_id, rows[i].first, lo, hi - lo, results);
        pos += rows[i].n;
    }
    free(rows);
    if (rc != MLR_OK) {
        json_object_put(results);
        return rc;
    }
    p->out = json_object_new_object();
    json_object_object_add(p->out, "total", json_object_new_int64(d.items));
    json_object_object_add(p->out, "results", results); /* consumes results */
    return MLR_OK;
}

static void page_done(int status, void *arg)
{
    struct page_read *p = arg;
    p->cb(status, p->out, p->data);
    json_object_put(p->out);
    free(p);
}

int store_batch_results(struct store *s, const char *task_id, int64_t from, int64_t size,
                        store_search_cb cb, void *data)
{
    assert(from >= 0 && size >= 0);
    struct page_read *p = mlr_xcalloc(1, sizeof(*p));
    snprintf(p->task_id, sizeof(p->task_id), "%s", task_id);
    p->from = from;
    p->size = size;
    p->cb = cb;
    p->data = data;
    int rc = store__read(s, page_run, p, page_done);
    if (rc != MLR_OK)
        free(p);
    return rc;
}
