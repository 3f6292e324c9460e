/*
 * watch.c — reads of the tasks that are watched rather than run: tasks whose work happens at a
 * provider (BATCH_PREDICTION) stay open (CREATED, RUNNING or CANCELLING) until a poller learns
 * that the provider finished. The dispatcher never claims them; these reads let the poller find
 * them and let the API count them against a limit.
 *
 * Both reads run on libuv's thread pool with a pooled read connection and filter on the
 * tasks(state, task_type) index, so their cost grows with the number of open tasks of the type,
 * not with the size of the tasks table. Callbacks run on the loop thread.
 */
#include "store_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* The states a watched task may still leave (see queue_task_state_is_final()). */
#define OPEN_STATES "('CREATED', 'RUNNING', 'CANCELLING')"

struct watch_req {
    char task_type[64];
    int max;
    store_claim_cb list_cb;     /* store_task_watch_list() */
    store_count_cb count_cb;    /* store_task_count_open() */
    void *data;
    int64_t count;
    struct store_task *tasks;   /* filled on the pool thread */
    char **strings;             /* owned id/type/model/input strings, 4 per task */
    int n;
};

static void watch_free(struct watch_req *r)
{
    for (int i = 0; i < r->n; i++) {
        json_object_put(r->tasks[i].doc);
        for (int k = 0; k < 4; k++)
            free(r->strings[i * 4 + k]);
    }
    free(r->tasks);
    free(r->strings);
    free(r);
}

static char *col_dup(struct store__stmt *st, int col)
{
    const char *t = store__col_text(st, col);
    return t ? mlr_xstrdup((const char *)t) : NULL;
}

/* Pool thread: the open tasks of the type, least recently updated first, so that when there are
 * more than @max every task still gets its turn. */
static int list_fn(struct store__conn *c, void *arg)
{
    struct watch_req *r = arg;
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT id, task_type, model_id, input, doc FROM tasks "
                            "WHERE state IN " OPEN_STATES " AND task_type = ?1 "
                            "ORDER BY last_update_time LIMIT ?2", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, r->task_type);
    store__bind_int(st, 2, r->max);
    int step = SQLITE_DONE;
    while (r->n < r->max) {
        step = store__step(st);
        if (step != SQLITE_ROW)
            break;
        struct json_object *doc = json_tokener_parse(store__col_text(st, 4));
        if (doc == NULL)
            continue; /* an unreadable row is skipped, not fatal to the others */
        char **s = &r->strings[r->n * 4];
        for (int k = 0; k < 4; k++)
            s[k] = col_dup(st, k);
        struct store_task *t = &r->tasks[r->n++];
        t->id = s[0];
        t->task_type = s[1];
        t->model_id = s[2];
        t->input = s[3];
        t->doc = doc;
    }
    store__reset(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? MLR_OK : store__err(step);
}

static void list_done(int status, void *arg)
{
    struct watch_req *r = arg;
    r->list_cb(status, r->tasks, status == MLR_OK ? r->n : 0, r->data);
    watch_free(r);
}

static struct watch_req *watch_new(const char *task_type, int max, void *data)
{
    struct watch_req *r = mlr_xcalloc(1, sizeof(*r));
    snprintf(r->task_type, sizeof(r->task_type), "%s", task_type);
    r->max = max > 0 ? max : 1;
    r->data = data;
    return r;
}

int store_task_watch_list(struct store *s, const char *task_type, int max, store_claim_cb cb,
                          void *data)
{
    assert(s != NULL && task_type != NULL && cb != NULL);
    struct watch_req *r = watch_new(task_type, max, data);
    r->list_cb = cb;
    r->tasks = mlr_xcalloc((size_t)r->max, sizeof(*r->tasks));
    r->strings = mlr_xcalloc((size_t)r->max * 4, sizeof(char *));
    int rc = store__read(s, list_fn, r, list_done);
    if (rc != MLR_OK)
        watch_free(r);
    return rc;
}

static int count_fn(struct store__conn *c, void *arg)
{
    struct watch_req *r = arg;
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT count(*) FROM tasks WHERE state IN " OPEN_STATES
                            " AND task_type = ?1", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, r->task_type);
    return store__step_int(st, &r->count);
}

static void count_done(int status, void *arg)
{
    struct watch_req *r = arg;
    r->count_cb(status, status == MLR_OK ? r->count : 0, r->data);
    watch_free(r);
}

int store_task_count_open(struct store *s, const char *task_type, store_count_cb cb, void *data)
{
    assert(s != NULL && task_type != NULL && cb != NULL);
    struct watch_req *r = watch_new(task_type, 1, data);
    r->count_cb = cb;
    int rc = store__read(s, count_fn, r, count_done);
    if (rc != MLR_OK)
        watch_free(r);
    return rc;
}
