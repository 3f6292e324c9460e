/*
 * tasks.c — the durable side of the task queue and of model deployment state.
 *
 * Every state change of a task (claim, finish, cancel, recovery) is a write on the store's one
 * writer thread, so it is serialised with everything else and batched into the same group
 * commits: a claim of 64 tasks or the results of 64 tasks cost one op each, not 64 fsyncs. The
 * task document is the source of truth; the state/model_id/... columns are derived from it by
 * store__doc_write(), so the indexes always agree with what GET returns.
 *
 * A claimed task carries a lease (lease_until_ms): if its worker vanishes, a later claim takes it
 * again once the lease has ended. Within one process the queue module also re-runs everything
 * that was RUNNING at start-up (store_task_recover), because a restart means those workers are
 * gone. Handlers are idempotent, so running a task twice is safe.
 */
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static const char *str_member(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) && v ? json_object_get_string(v) : NULL;
}

/* Sets doc.state and doc.last_update_time. */
static void set_state(struct json_object *doc, const char *state, int64_t now)
{
    json_object_object_add(doc, "state", json_object_new_string(state));
    json_object_object_add(doc, "last_update_time", json_object_new_int64(now));
}

static void merge(struct json_object *dst, struct json_object *src)
{
    if (src == NULL)
        return;
    json_object_object_foreach(src, k, v)
    {
        if (v == NULL)
            json_object_object_del(dst, k);
        else
            json_object_object_add(dst, k, json_object_get(v));
    }
}

/* ---------------------------------- claim ---------------------------------- */

struct claim_op {
    struct store__op op;
    int max;
    int64_t now_ms;
    int64_t lease_until;
    char node_id[64];           /* recorded as claimed_by */
    store_claim_cb cb;
    void *data;
    struct store_task *tasks;   /* claimed, filled on the writer thread */
    char **strings;             /* owned id/type/model/input strings, 4 per task */
    int n;
};

/* Marks one candidate RUNNING with a lease and records it in @o. One statement edits the
 * document in place (json_set) and returns what the worker needs. */
static int claim_one(struct store__conn *c, struct claim_op *o, const char *id)
{
    struct store__stmt *st = NULL;
    int64_t seq = 0, now = mlr_now_ms();
    int rc = store__seq_next(c, &seq);
    if (rc == MLR_OK)
        rc = store__stmt(
            c, STORE_SQL(c,
                         "UPDATE tasks SET state = 'RUNNING', lease_until_ms = ?1, "
                         "last_update_time = ?2, version = version + 1, seq_no = ?3, "
                         "claimed_by = ?5, doc = json_set(doc, '$.state', 'RUNNING', "
                         "'$.last_update_time', ?2) "
                         "WHERE id = ?4 RETURNING doc, task_type, model_id, input",
                         "UPDATE tasks SET state = 'RUNNING', lease_until_ms = ?1, "
                         "last_update_time = ?2, version = version + 1, seq_no = ?3, "
                         "claimed_by = ?5, doc = jsonb_set(jsonb_set(doc::jsonb, '{state}', "
                         "'\"RUNNING\"'), '{last_update_time}', to_jsonb(?2::bigint))::text "
                         "WHERE id = ?4 RETURNING doc, task_type, model_id, input"),
            &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_int(st, 1, o->lease_until);
    store__bind_int(st, 2, now);
    store__bind_int(st, 3, seq);
    store__bind_text(st, 4, id);
    store__bind_text(st, 5, o->node_id);
    int step = store__step(st);
    if (step != SQLITE_ROW) {
        store__reset(st);
        return step == SQLITE_DONE ? MLR_OK : store__err(step); /* gone meanwhile: skip it */
    }
    struct store_task *t = &o->tasks[o->n];
    char **s = &o->strings[o->n * 4];
    const char *model = store__col_text(st, 2);
    const char *input = store__col_text(st, 3);
    s[3] = input ? mlr_xstrdup((const char *)input) : NULL;
    t->input = s[3];
    t->doc = json_tokener_parse(store__col_text(st, 0));
    s[0] = mlr_xstrdup(id);
    s[1] = mlr_xstrdup(store__col_text(st, 1) ? store__col_text(st, 1) : "");
    s[2] = model ? mlr_xstrdup((const char *)model) : NULL;
    store__reset(st);
    t->id = s[0];
    t->task_type = s[1];
    t->model_id = s[2];
    o->n++;
    return t->doc ? MLR_OK : MLR_ECORRUPT;
}

/* Appends up to @max - *n ids selected by @sql (?1 = limit, ?2 = now, ?3 = the oldest
 * heartbeat of a live node) to @ids. */
static int select_ids(struct store__conn *c, const char *sql, struct claim_op *o, char **ids,
                      int *n)
{
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, sql, &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_int(st, 1, o->max - *n);
    store__bind_int(st, 2, o->now_ms);
    store__bind_int(st, 3, o->now_ms - STORE_NODE_LEASE_MS);
    int step = SQLITE_DONE;
    while (*n < o->max && (step = store__step(st)) == SQLITE_ROW)
        ids[(*n)++] = mlr_xstrdup(store__col_text(st, 0));
    store__reset(st);
    /* A failed step is an error, not "nothing to claim": the op (and with PostgreSQL its
     * transaction) must not go on as if the select had run. */
    return step == SQLITE_ROW || step == SQLITE_DONE ? MLR_OK : store__err(step);
}

static int claim_run(struct store__conn *c, struct store__op *op)
{
    struct claim_op *o = container_of(op, struct claim_op, op);
    char **ids = mlr_xcalloc((size_t)o->max, sizeof(char *));
    int n = 0;
    /* Oldest CREATED first, then RUNNING tasks whose worker's lease ran out. BATCH_PREDICTION
     * tasks are never claimed: their work runs at the provider and a poller watches them
     * (store_task_watch_list). The filter rides on the tasks_queue index scan. */
    /* PostgreSQL: nodes claim side by side. SKIP LOCKED passes over rows another node's open
     * claim holds, so no two nodes take one task and none waits for another; a RUNNING task is
     * also free again once the node that claimed it stops beating (its lease in the nodes
     * table), which is sooner than the task's own lease after a node dies. */
    int rc = select_ids(c, STORE_SQL(c, "SELECT id FROM tasks WHERE state = 'CREATED' AND "
                                        "task_type <> 'BATCH_PREDICTION' ORDER BY create_time "
                                        "LIMIT ?1",
                                     "SELECT id FROM tasks WHERE state = 'CREATED' AND "
                                     "task_type <> 'BATCH_PREDICTION' ORDER BY create_time "
                                     "LIMIT ?1 FOR UPDATE SKIP LOCKED"),
                        o, ids, &n);
    if (rc == MLR_OK && n < o->max)
        rc = select_ids(c, STORE_SQL(c, "SELECT id FROM tasks WHERE state = 'RUNNING' AND "
                                        "lease_until_ms < ?2 AND task_type <> "
                                        "'BATCH_PREDICTION' LIMIT ?1",
                                     "SELECT id FROM tasks WHERE state = 'RUNNING' AND "
                                     "task_type <> 'BATCH_PREDICTION' AND (lease_until_ms < ?2 "
                                     "OR (claimed_by IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
                                     "nodes WHERE nodes.id = tasks.claimed_by AND "
                                     "heartbeat_ms >= ?3))) LIMIT ?1 FOR UPDATE SKIP LOCKED"),
                        o, ids, &n);
    for (int i = 0; i < n && rc == MLR_OK; i++)
        rc = claim_one(c, o, ids[i]);
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    return rc;
}

static void claim_free(struct claim_op *o)
{
    for (int i = 0; i < o->n; i++) {
        json_object_put(o->tasks[i].doc);
        for (int k = 0; k < 4; k++)
            free(o->strings[i * 4 + k]);
    }
    free(o->tasks);
    free(o->strings);
    free(o);
}

static void claim_done(struct store__op *op)
{
    struct claim_op *o = container_of(op, struct claim_op, op);
    /* A failed transaction claimed nothing, whatever the writer recorded. */
    o->cb(op->status, o->tasks, op->status == MLR_OK ? o->n : 0, o->data);
    claim_free(o);
}

int store_task_claim(struct store *s, int max, int64_t now_ms, int64_t lease_until_ms,
                     store_claim_cb cb, void *data)
{
    struct claim_op *o = mlr_xcalloc(1, sizeof(*o));
    o->op.run = claim_run;
    o->op.done = claim_done;
    o->max = max > 0 ? max : 1;
    o->now_ms = now_ms;
    o->lease_until = lease_until_ms;
    snprintf(o->node_id, sizeof(o->node_id), "%s", store__node_id(s));
    o->cb = cb;
    o->data = data;
    o->tasks = mlr_xcalloc((size_t)o->max, sizeof(*o->tasks));
    o->strings = mlr_xcalloc((size_t)o->max * 4, sizeof(char *));
    int rc = store__submit(s, &o->op);
    if (rc != MLR_OK)
        claim_free(o);
    return rc;
}

/* ---------------------------------- finish ---------------------------------- */

struct finish_op {
    struct store__op op;
    struct store_task_result *r;  /* deep copies */
    int *applied;                 /* per result, set on the writer thread */
    int n;
    store_finish_cb cb;
    void *data;
};

/* Whether @state is one of the '|'-separated states in @list. */
static int in_states(const char *state, const char *list)
{
    size_t n = state ? strlen(state) : 0;
    for (const char *p = list; state && *p;) {
        const char *end = strchr(p, '|');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, state, n) == 0)
            return 1;
        p = end ? end + 1 : p + len;
    }
    return 0;
}

/* Applies the model half of a result (state and fields), if the model still exists and is in
 * the required state; *applied says whether it did. */
static int finish_model(struct store__conn *c, const struct store_task_result *r, int64_t now,
                        int *applied)
{
    struct json_object *doc = NULL;
    char *cred = NULL;
    int rc = store__doc_load(c, STORE_MODEL, r->model_id, &doc, &cred, NULL);
    *applied = 0;
    if (rc == MLR_ENOTFOUND)
        return MLR_OK; /* deleted meanwhile: nothing to update */
    const char *cur = rc == MLR_OK ? str_member(doc, "model_state") : NULL;
    if (rc == MLR_OK && (r->only_if_state == NULL || in_states(cur, r->only_if_state))) {
        *applied = 1;
        if (r->model_state)
            json_object_object_add(doc, "model_state", json_object_new_string(r->model_state));
        merge(doc, r->model_fields);
        json_object_object_add(doc, "last_updated_time", json_object_new_int64(now));
        rc = store__doc_write(c, STORE_MODEL, r->model_id, doc, cred, NULL, NULL);
    }
    json_object_put(doc);
    free(cred);
    return rc;
}

/* The common outcome (state and optional error, no other task members) in one statement:
 * ?1 state, ?2 now, ?3 seq_no, ?4 id, ?5 error or NULL. PostgreSQL edits the document as jsonb
 * (its key order is then jsonb's) and needs the casts: jsonb_build_object's arguments give it no
 * type to infer. */
#define FINISH_LITE                                                                                \
    "UPDATE tasks SET state = ?1, last_update_time = ?2, version = version + 1, seq_no = ?3, "     \
    "lease_until_ms = NULL, doc = CASE WHEN ?5 IS NULL "                                           \
    "THEN json_set(doc, '$.state', ?1, '$.last_update_time', ?2) "                                 \
    "ELSE json_set(doc, '$.state', ?1, '$.last_update_time', ?2, '$.error', ?5) END "              \
    "WHERE id = ?4 AND state = 'RUNNING'"
#define FINISH_PG                                                                                  \
    "UPDATE tasks SET state = ?1, last_update_time = ?2, version = version + 1, seq_no = ?3, "     \
    "lease_until_ms = NULL, doc = (doc::jsonb || jsonb_build_object('state', ?1::text, "           \
    "'last_update_time', ?2::bigint) || CASE WHEN ?5::text IS NULL THEN '{}'::jsonb "              \
    "ELSE jsonb_build_object('error', ?5::text) END)::text "                                       \
    "WHERE id = ?4 AND state = 'RUNNING'"
static int finish_fast(struct store__conn *c, const struct store_task_result *r, int64_t now,
                       int *applied)
{
    struct store__stmt *st = NULL;
    int64_t seq = 0;
    int rc = store__seq_next(c, &seq);
    if (rc == MLR_OK)
        rc = store__stmt(c, STORE_SQL(c, FINISH_LITE, FINISH_PG), &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, r->state);
    store__bind_int(st, 2, now);
    store__bind_int(st, 3, seq);
    store__bind_text(st, 4, r->id);
    if (r->error)
        store__bind_text(st, 5, r->error);
    rc = store__err(store__step(st));
    *applied = rc == MLR_OK && store__changes(c) > 0;
    store__reset(st);
    return rc;
}

static int finish_one(struct store__conn *c, const struct store_task_result *r, int64_t now,
                      int *applied)
{
    if (r->task_fields == NULL) {
        int rc = finish_fast(c, r, now, applied);
        if (rc == MLR_OK && *applied && r->model_id)
            rc = finish_model(c, r, now, applied);
        return rc;
    }
    struct json_object *doc = NULL;
    char *cred = NULL;
    int rc = store__doc_load(c, STORE_TASK, r->id, &doc, &cred, NULL);
    free(cred);
    if (rc == MLR_ENOTFOUND)
        return MLR_OK; /* purged or deleted meanwhile */
    const char *state = rc == MLR_OK ? str_member(doc, "state") : NULL;
    if (rc == MLR_OK && state && strcmp(state, "RUNNING") == 0) {
        set_state(doc, r->state, now);
        if (r->error)
            json_object_object_add(doc, "error", json_object_new_string(r->error));
        merge(doc, r->task_fields);
        rc = store__doc_write(c, STORE_TASK, r->id, doc, NULL, NULL, NULL);
        *applied = 1;
        if (rc == MLR_OK && r->model_id)
            rc = finish_model(c, r, now, applied);
    }
    json_object_put(doc);
    return rc;
}

static int finish_run(struct store__conn *c, struct store__op *op)
{
    struct finish_op *o = container_of(op, struct finish_op, op);
    int64_t now = mlr_now_ms();
    int rc = MLR_OK;
    for (int i = 0; i < o->n && rc == MLR_OK; i++) {
        o->applied[i] = 0;
        rc = finish_one(c, &o->r[i], now, &o->applied[i]);
    }
    return rc;
}

static char *dupstr(const char *s)
{
    return s ? mlr_xstrdup(s) : NULL;
}

static struct json_object *copy(struct json_object *o)
{
    struct json_object *out = NULL;
    if (o)
        json_object_deep_copy(o, &out, NULL);
    return out;
}

static void finish_free(struct finish_op *o)
{
    for (int i = 0; i < o->n; i++) {
        struct store_task_result *r = &o->r[i];
        free((char *)r->id);
        free((char *)r->state);
        free((char *)r->error);
        free((char *)r->model_id);
        free((char *)r->model_state);
        free((char *)r->only_if_state);
        json_object_put(r->task_fields);
        json_object_put(r->model_fields);
    }
    free(o->r);
    free(o->applied);
    free(o);
}

static void finish_done(struct store__op *op)
{
    struct finish_op *o = container_of(op, struct finish_op, op);
    if (op->status != MLR_OK)
        memset(o->applied, 0, (size_t)o->n * sizeof(int));
    if (o->cb)
        o->cb(op->status, o->applied, o->n, o->data);
    finish_free(o);
}

int store_task_finish(struct store *s, const struct store_task_result *r, int n,
                      store_finish_cb cb, void *data)
{
    struct finish_op *o = mlr_xcalloc(1, sizeof(*o));
    o->op.run = finish_run;
    o->op.done = finish_done;
    o->cb = cb;
    o->data = data;
    o->n = n;
    o->r = mlr_xcalloc((size_t)(n > 0 ? n : 1), sizeof(*o->r));
    o->applied = mlr_xcalloc((size_t)(n > 0 ? n : 1), sizeof(int));
    for (int i = 0; i < n; i++) {
        o->r[i] = (struct store_task_result){
            dupstr(r[i].id),       dupstr(r[i].state),          dupstr(r[i].error),
            copy(r[i].task_fields), dupstr(r[i].model_id),   dupstr(r[i].model_state),
            copy(r[i].model_fields), dupstr(r[i].only_if_state),
        };
    }
    int rc = store__submit(s, &o->op);
    if (rc != MLR_OK)
        finish_free(o);
    return rc;
}

/* ---------------------------------- recovery ---------------------------------- */

int store_task_recover(struct store *s, int *reset)
{
    struct store__conn *c = store__main_conn(s);
    struct store__stmt *st = NULL;
    /* SQLite has one node: whatever is RUNNING at start-up was ours. With PostgreSQL other
     * nodes may be running their tasks right now, so only what this node claimed before it
     * stopped is re-queued; a dead node's tasks are claimed again once its heartbeat is old. */
    int rc = store__stmt(c, STORE_SQL(c, "SELECT id FROM tasks WHERE state = 'RUNNING' AND "
                                         "?1 IS NOT NULL",
                                      "SELECT id FROM tasks WHERE state = 'RUNNING' AND "
                                      "claimed_by = ?1"),
                         &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, store__node_id(s));
    char **ids = NULL;
    int n = 0, cap = 0;
    while (store__step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            ids = mlr_xrealloc(ids, (size_t)cap * sizeof(char *));
        }
        ids[n++] = mlr_xstrdup(store__col_text(st, 0));
    }
    store__reset(st);
    rc = store__err(store__exec(c, STORE_SQL(c, "BEGIN IMMEDIATE", "BEGIN")));
    int64_t now = mlr_now_ms();
    for (int i = 0; i < n && rc == MLR_OK; i++) {
        struct json_object *doc = NULL;
        char *cred = NULL;
        rc = store__doc_load(c, STORE_TASK, ids[i], &doc, &cred, NULL);
        if (rc == MLR_OK) {
            const char *model = str_member(doc, "model_id");
            const char *kv[] = {"task_id", ids[i], "task_type", str_member(doc, "task_type"),
                                "model_id", model};
            mlr_log_kv(MLR_LOG_INFO, "store", "task left RUNNING by the last process is re-queued",
                       kv, model ? 3 : 2);
            set_state(doc, "CREATED", now);
            rc = store__doc_write(c, STORE_TASK, ids[i], doc, NULL, NULL, NULL);
        }
        json_object_put(doc);
        free(cred);
    }
    if (rc == MLR_OK)
        rc = store__err(store__exec(c, "COMMIT"));
    else
        store__exec(c, "ROLLBACK"); /* keeps the first error: recovery did not happen */
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    if (rc == MLR_OK)
        *reset = n;
    return rc;
}

/* ---------------------------------- single-row task and model writes ---------------------------------- */

/* A write on one task or model with a small result, shared by cancel/purge/deploy/undeploy. */
struct row_op {
    struct store__op op;
    char id[STORE_ID_MAX + 1];
    char task_id[STORE_ID_MAX + 1];
    struct json_object *task_doc;
    int64_t before_ms;
    int max;
    int count;
    int64_t version;
    int64_t seq_no;
    char detail[64];
    store_write_cb cb;
    void *data;
};

static void row_done(struct store__op *op)
{
    struct row_op *o = container_of(op, struct row_op, op);
    struct store_write_result r = {
        .status = op->status, .id = o->id, .version = o->version, .seq_no = o->seq_no,
        .detail = o->detail, .count = o->count, .task_id = o->task_id,
    };
    o->cb(&r, o->data);
    json_object_put(o->task_doc);
    free(o);
}

static struct row_op *row_new(int (*run)(struct store__conn *, struct store__op *),
                              const char *id, const char *task_id, struct json_object *task_doc,
                              store_write_cb cb, void *data)
{
    struct row_op *o = mlr_xcalloc(1, sizeof(*o));
    o->op.run = run;
    o->op.done = row_done;
    snprintf(o->id, sizeof(o->id), "%s", id ? id : "");
    snprintf(o->task_id, sizeof(o->task_id), "%s", task_id ? task_id : "");
    o->task_doc = copy(task_doc);
    o->cb = cb;
    o->data = data;
    return o;
}

/* Submits @o (fully initialised: the writer may run it at once); frees it on failure. */
static int row_submit(struct store *s, struct row_op *o)
{
    int rc = store__submit(s, &o->op);
    if (rc != MLR_OK) {
        json_object_put(o->task_doc);
        free(o);
    }
    return rc;
}

static int cancel_run(struct store__conn *c, struct store__op *op)
{
    struct row_op *o = container_of(op, struct row_op, op);
    struct json_object *doc = NULL;
    char *cred = NULL;
    int rc = store__doc_load(c, STORE_TASK, o->id, &doc, &cred, NULL);
    free(cred);
    const char *state = rc == MLR_OK ? str_member(doc, "state") : NULL;
    if (rc == MLR_OK && state) {
        snprintf(o->detail, sizeof(o->detail), "%s", state);
        /* A running batch ingestion job stops between batches; other running tasks finish. */
        const char *type = str_member(doc, "task_type");
        int stoppable = type && strcmp(type, "BATCH_INGEST") == 0;
        if (strcmp(state, "RUNNING") == 0 && !stoppable) {
            rc = MLR_EBUSY;
        } else if (strcmp(state, "RUNNING") == 0) {
            set_state(doc, "CANCELLED", mlr_now_ms());
            rc = store__doc_write(c, STORE_TASK, o->id, doc, NULL, &o->version, &o->seq_no);
        } else if (strcmp(state, "CREATED") != 0) {
            rc = MLR_ECONFLICT;
        } else {
            set_state(doc, "CANCELLED", mlr_now_ms());
            rc = store__doc_write(c, STORE_TASK, o->id, doc, NULL, &o->version, &o->seq_no);
        }
    }
    json_object_put(doc);
    return rc;
}

int store_task_cancel(struct store *s, const char *id, store_write_cb cb, void *data)
{
    return row_submit(s, row_new(cancel_run, id, NULL, NULL, cb, data));
}

static int purge_run(struct store__conn *c, struct store__op *op)
{
    struct row_op *o = container_of(op, struct row_op, op);
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE "
                            "last_update_time < ?1 AND state IN ('COMPLETED', 'FAILED', "
                            "'CANCELLED', 'COMPLETED_WITH_ERROR', 'EXPIRED', 'UNREACHABLE') "
                            "LIMIT ?2)", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_int(st, 1, o->before_ms);
    store__bind_int(st, 2, o->max);
    rc = store__err(store__step(st));
    o->count = store__changes(c);
    store__reset(st);
    return rc;
}

int store_task_purge(struct store *s, int64_t before_ms, int max, store_write_cb cb, void *data)
{
    struct row_op *o = row_new(purge_run, "", NULL, NULL, cb, data);
    o->before_ms = before_ms;
    o->max = max;
    return row_submit(s, o);
}

/* ---------------------------------- deploy / undeploy ---------------------------------- */

/* Loads model o->id, records its state in o->detail, applies @state (NULL: keep) and @extra. */
static int model_transition(struct store__conn *c, struct row_op *o, const char *state,
                            struct json_object *extra, int keep_if_deployed)
{
    struct json_object *doc = NULL;
    char *cred = NULL;
    int rc = store__doc_load(c, STORE_MODEL, o->id, &doc, &cred, NULL);
    if (rc == MLR_OK) {
        const char *cur = str_member(doc, "model_state");
        snprintf(o->detail, sizeof(o->detail), "%s", cur ? cur : "");
        int keep = keep_if_deployed && cur && strcmp(cur, "DEPLOYED") == 0;
        if (state && !keep)
            json_object_object_add(doc, "model_state", json_object_new_string(state));
        merge(doc, extra);
        json_object_object_add(doc, "last_updated_time", json_object_new_int64(mlr_now_ms()));
        rc = store__doc_write(c, STORE_MODEL, o->id, doc, cred, &o->version, &o->seq_no);
    }
    json_object_put(doc);
    free(cred);
    return rc;
}

static int insert_task(struct store__conn *c, struct row_op *o)
{
    if (o->task_doc == NULL)
        return MLR_OK;
    if (store__doc_exists(c, STORE_TASK, o->task_id))
        return MLR_EEXIST;
    return store__doc_insert(c, STORE_TASK, o->task_id, o->task_doc, NULL, NULL);
}

static int deploy_run(struct store__conn *c, struct store__op *op)
{
    struct row_op *o = container_of(op, struct row_op, op);
    int rc = model_transition(c, o, "DEPLOYING", NULL, 1);
    return rc == MLR_OK ? insert_task(c, o) : rc;
}

int store_model_deploy(struct store *s, const char *model_id, const char *task_id,
                       struct json_object *task_doc, store_write_cb cb, void *data)
{
    return row_submit(s, row_new(deploy_run, model_id, task_id, task_doc, cb, data));
}

static int undeploy_run(struct store__conn *c, struct store__op *op)
{
    struct row_op *o = container_of(op, struct row_op, op);
    struct json_object *extra = json_object_new_object();
    json_object_object_add(extra, "planning_worker_node_count", json_object_new_int(0));
    json_object_object_add(extra, "current_worker_node_count", json_object_new_int(0));
    json_object_object_add(extra, "planning_worker_nodes", json_object_new_array());
    json_object_object_add(extra, "last_undeployed_time", json_object_new_int64(mlr_now_ms()));
    int rc = model_transition(c, o, "UNDEPLOYED", extra, 0);
    json_object_put(extra);
    return rc == MLR_OK ? insert_task(c, o) : rc;
}

int store_model_undeploy(struct store *s, const char *model_id, const char *task_id,
                         struct json_object *task_doc, store_write_cb cb, void *data)
{
    return row_submit(s, row_new(undeploy_run, model_id, task_id, task_doc, cb, data));
}

/* ---------------------------------- synchronous reads ---------------------------------- */

int store_doc_read(struct store *s, enum store_kind kind, const char *id,
                   struct json_object **doc, char **credential, int64_t *version)
{
    struct store_doc meta = {0};
    struct store__conn *c = store__reader_acquire(s);
    int rc = store__doc_load(c, kind, id, doc, credential, &meta);
    store__reader_release(s, c);
    if (rc == MLR_OK && version)
        *version = meta.version;
    return rc;
}

int store_models_in_state(struct store *s, const char *state, char ***ids, int *n)
{
    struct store__stmt *st = NULL;
    int rc = store__stmt(store__main_conn(s), "SELECT id FROM models WHERE model_state = ?", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, state);
    char **out = NULL;
    int count = 0, cap = 0;
    while (store__step(st) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            out = mlr_xrealloc(out, (size_t)cap * sizeof(char *));
        }
        out[count++] = mlr_xstrdup(store__col_text(st, 0));
    }
    store__reset(st);
    *ids = out;
    *n = count;
    return MLR_OK;
}
