/*
 * ttl.c — idle-time expiry of deployments (deploy_setting.model_ttl_minutes; spec §5,
 * reference §10) and the persistence of each model's last-use time.
 *
 * Expiry is a binary min-heap of deployments keyed by deadline, with one libuv timer armed for the
 * earliest. A predict does not touch the heap: it only stores the time (workers__ttl_touch). When
 * an entry comes due, its real deadline (last use + TTL) is recomputed; a model used meanwhile is
 * pushed back down with its new deadline, an idle one is undeployed through an UNDEPLOY_MODEL
 * task. So a sweep costs O(log n) per model that comes due, never a scan of all models, and a
 * model is undeployed soon after its deadline passes: the timer is exact to the millisecond, but
 * sweeps are at least SWEEP_GAP_MS apart so that models expiring together share one commit, and
 * the task then runs through the queue within milliseconds.
 *
 * Last-use times move to the store in one write per second (a list of the deployments touched
 * since the last flush), so that a restart recomputes deadlines from when each model was really
 * last used. Deadlines are wall-clock times because they survive restarts.
 *
 * Loop thread only. The heap holds no references: a deployment leaves it when it leaves the
 * registry (workers__ttl_untrack). The dirty list holds one reference per entry.
 */
#include "workers_int.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define FLUSH_MS 1000 /* how often last-use times are written */
#define SWEEP_GAP_MS 100 /* least time between two sweeps: models expiring close together share
                          * one sweep, and so one commit of their tasks, for at most this much
                          * lateness */

/* ---------------------------------- heap ---------------------------------- */

static void heap_set(struct workers_ttl *t, int i, struct deployment *d)
{
    t->heap[i] = d;
    d->heap_idx = i;
}

static void sift_up(struct workers_ttl *t, int i)
{
    struct deployment *d = t->heap[i];
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (t->heap[parent]->heap_key <= d->heap_key)
            break;
        heap_set(t, i, t->heap[parent]);
        i = parent;
    }
    heap_set(t, i, d);
}

static void sift_down(struct workers_ttl *t, int i)
{
    struct deployment *d = t->heap[i];
    for (;;) {
        int child = 2 * i + 1;
        if (child >= t->n)
            break;
        if (child + 1 < t->n && t->heap[child + 1]->heap_key < t->heap[child]->heap_key)
            child++;
        if (t->heap[child]->heap_key >= d->heap_key)
            break;
        heap_set(t, i, t->heap[child]);
        i = child;
    }
    heap_set(t, i, d);
}

static void heap_push(struct workers_ttl *t, struct deployment *d)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->heap = mlr_xrealloc(t->heap, (size_t)t->cap * sizeof(*t->heap));
    }
    t->heap[t->n++] = d;
    sift_up(t, t->n - 1);
}

static void heap_remove(struct workers_ttl *t, struct deployment *d)
{
    int i = d->heap_idx;
    assert(i >= 0 && i < t->n && t->heap[i] == d);
    d->heap_idx = -1;
    struct deployment *last = t->heap[--t->n];
    if (i == t->n)
        return;
    heap_set(t, i, last);
    sift_down(t, i);
    sift_up(t, last->heap_idx);
}

/* ---------------------------------- expiry ---------------------------------- */

static void on_expire_timer(uv_timer_t *timer);

/* Arms the timer for the earliest deadline (or stops it when nothing can expire). */
static void arm(struct workers_ttl *t)
{
    if (t->closing)
        return;
    if (t->n == 0) {
        uv_timer_stop(&t->expire_timer);
        return;
    }
    int64_t due = t->heap[0]->heap_key;
    if (due < t->last_sweep_ms + SWEEP_GAP_MS)
        due = t->last_sweep_ms + SWEEP_GAP_MS;
    int64_t wait = due - mlr_now_ms();
    uv_timer_start(&t->expire_timer, on_expire_timer, wait > 0 ? (uint64_t)wait : 0, 0);
}

#define RETRY_MS 1000 /* an expiry whose task could not be written is tried again this late */

struct expiry {
    struct workers *w;
    struct deployment *d; /* a reference: put back in the heap if the task is not written */
};

/* The undeploy task was not written (disk full, ...): while the same deployment is still
 * installed, it goes back in the heap to be tried again, rather than never expiring. */
static void expire_later(struct workers *w, struct deployment *d)
{
    struct workers_ttl *t = &w->ttl;
    if (!t->open || d->heap_idx >= 0 || workers_deployment_get(w, d->model_id) != d)
        return;
    d->heap_key = mlr_now_ms() + RETRY_MS;
    heap_push(t, d);
    if (d->heap_idx == 0)
        arm(t);
}

static void on_undeploy_task_written(const struct store_write_result *r, void *data)
{
    struct expiry *x = data;
    const char *kv[] = {"model_id", x->d->model_id, "task_id", r->id};
    if (r->status == MLR_OK) {
        mlr_log_kv(MLR_LOG_INFO, "workers", "model idle past its TTL: undeploying", kv, 2);
        workers_kick(x->w);
    } else {
        mlr_log_kv(MLR_LOG_ERROR, "workers", "cannot record the TTL undeploy task", kv, 2);
        expire_later(x->w, x->d);
    }
    workers_deployment_unref(x->d);
    free(x);
}

/* Writes the UNDEPLOY_MODEL task of an expired deployment; the queue runs it. */
static void expire_now(struct workers *w, struct deployment *d)
{
    char task_id[MLR_ID_LEN + 1];
    if (mlr_id_new(task_id) != MLR_OK) {
        expire_later(w, d);
        return;
    }
    struct expiry *x = mlr_xcalloc(1, sizeof(*x));
    x->w = w;
    x->d = workers_deployment_ref(d);
    struct json_object *task = queue_task_doc_new(QUEUE_TASK_UNDEPLOY_MODEL, d->model_id,
                                                  QUEUE_STATE_CREATED, w->node_id, 1,
                                                  mlr_now_ms());
    if (store_doc_insert(w->store, STORE_TASK, task_id, task, NULL, on_undeploy_task_written, x) !=
        MLR_OK) {
        workers_deployment_unref(x->d);
        free(x);
    }
    json_object_put(task);
}

/*
 * Several nodes: a model expires only when every node holding it has been idle. Each node
 * writes its last-use times once a second and the store keeps the latest of them, so before
 * undeploying, the stored time is read; if another node used the model since, the deadline
 * moves to that use. (A use less than a flush interval old may not be stored yet.)
 */
struct idle_check {
    uv_work_t work;
    struct workers *w;
    struct deployment *d;       /* a reference */
    int64_t stored_ms;
    int status;
};

static void idle_check_work(uv_work_t *work)
{
    struct idle_check *x = container_of(work, struct idle_check, work);
    x->status = store_model_usage_get(x->w->store, x->d->model_id, &x->stored_ms);
}

static void idle_check_after(uv_work_t *work, int status)
{
    struct idle_check *x = container_of(work, struct idle_check, work);
    struct workers *w = x->w;
    struct deployment *d = x->d;
    struct workers_ttl *t = &w->ttl;
    int current = t->open && d->heap_idx < 0 && workers_deployment_get(w, d->model_id) == d;
    if (current && status == 0 && x->status == MLR_OK &&
        x->stored_ms + d->ttl_ms > mlr_now_ms()) {
        if (x->stored_ms > d->last_used_ms)
            d->last_used_ms = x->stored_ms;
        d->heap_key = d->last_used_ms + d->ttl_ms;
        heap_push(t, d);
        if (d->heap_idx == 0)
            arm(t);
    } else if (current) {
        expire_now(w, d);
    }
    workers_deployment_unref(d);
    free(x);
}

static void expire(struct workers *w, struct deployment *d)
{
    if (!w->cluster.on) {
        expire_now(w, d);
        return;
    }
    struct idle_check *x = mlr_xcalloc(1, sizeof(*x));
    x->w = w;
    x->d = workers_deployment_ref(d);
    if (uv_queue_work(w->loop, &x->work, idle_check_work, idle_check_after) != 0) {
        workers_deployment_unref(d);
        free(x);
        expire_now(w, d);
    }
}

static void on_expire_timer(uv_timer_t *timer)
{
    struct workers_ttl *t = container_of(timer, struct workers_ttl, expire_timer);
    struct workers *w = container_of(t, struct workers, ttl);
    int64_t now = mlr_now_ms();
    t->last_sweep_ms = now;
    while (t->n > 0 && t->heap[0]->heap_key <= now) {
        struct deployment *d = t->heap[0];
        int64_t due = d->last_used_ms + d->ttl_ms;
        t->checks++;
        if (due > now) { /* used since it was queued: wait for the new deadline */
            d->heap_key = due;
            sift_down(t, 0);
            continue;
        }
        heap_remove(t, d);
        t->expired++;
        expire(w, d);
    }
    arm(t);
}

/* ---------------------------------- usage flush ---------------------------------- */

static void mark_dirty(struct workers_ttl *t, struct deployment *d)
{
    if (d->usage_dirty)
        return;
    d->usage_dirty = 1;
    d->dirty_next = t->dirty;
    t->dirty = workers_deployment_ref(d); /* the list holds a reference */
}

struct flush {
    struct workers_ttl *t;
    workers_stopped_cb cb; /* final flush at stop */
    void *data;
};

static void on_flushed(int status, void *data)
{
    struct flush *f = data;
    if (status != MLR_OK)
        mlr_log(MLR_LOG_WARN, "workers", "cannot record model last-use times: %s",
                mlr_strerror(status));
    if (f->cb)
        f->cb(f->data);
    free(f);
}

/* Writes the last-use times of every deployment touched since the last flush. */
static int flush(struct workers *w, workers_stopped_cb cb, void *data)
{
    struct workers_ttl *t = &w->ttl;
    int n = 0;
    for (struct deployment *d = t->dirty; d; d = d->dirty_next)
        n++;
    if (n == 0)
        return MLR_ENOTFOUND;
    struct store_model_usage *u = mlr_xcalloc((size_t)n, sizeof(*u));
    struct deployment **held = mlr_xcalloc((size_t)n, sizeof(*held));
    for (int i = 0; i < n; i++) {
        struct deployment *d = t->dirty;
        t->dirty = d->dirty_next;
        d->usage_dirty = 0;
        d->dirty_next = NULL;
        held[i] = d;
        u[i].model_id = d->model_id;
        u[i].last_used_ms = d->last_used_ms;
        u[i].deadline_ms = d->ttl_ms >= 0 ? d->last_used_ms + d->ttl_ms : -1;
    }
    struct flush *f = mlr_xcalloc(1, sizeof(*f));
    f->t = t;
    f->cb = cb;
    f->data = data;
    int rc = store_models_usage_put(w->store, u, n, on_flushed, f); /* copies the ids */
    if (rc != MLR_OK)
        free(f);
    for (int i = 0; i < n; i++) /* the ids were copied: the list's references can go */
        workers_deployment_unref(held[i]);
    free(held);
    free(u);
    return rc;
}

static void on_flush_timer(uv_timer_t *timer)
{
    struct workers_ttl *t = container_of(timer, struct workers_ttl, flush_timer);
    flush(container_of(t, struct workers, ttl), NULL, NULL);
}

/* ---------------------------------- interface ---------------------------------- */

void workers__ttl_init(struct workers *w)
{
    struct workers_ttl *t = &w->ttl;
    uv_timer_init(w->loop, &t->expire_timer);
    uv_timer_init(w->loop, &t->flush_timer);
    uv_timer_start(&t->flush_timer, on_flush_timer, FLUSH_MS, FLUSH_MS);
    t->open = 1;
}

/* deploy_setting.model_ttl_minutes in ms; -1 when the model never expires. */
static int64_t ttl_of(struct json_object *model)
{
    struct json_object *ds = NULL, *v = NULL;
    if (!json_object_object_get_ex(model, "deploy_setting", &ds) ||
        !json_object_object_get_ex(ds, "model_ttl_minutes", &v) || v == NULL)
        return -1;
    double minutes = json_object_get_double(v);
    if (!(minutes >= 0) || minutes > 1e9) /* negative (-1 = never), NaN, absurd */
        return -1;
    return (int64_t)llround(minutes * 60000.0);
}

void workers__ttl_track(struct workers *w, struct deployment *d, int64_t last_used_ms)
{
    struct workers_ttl *t = &w->ttl;
    d->ttl_ms = ttl_of(d->model);
    d->last_used_ms = last_used_ms;
    d->heap_idx = -1;
    if (!t->open)
        return;
    mark_dirty(t, d);
    if (d->ttl_ms < 0)
        return;
    d->heap_key = last_used_ms + d->ttl_ms;
    heap_push(t, d);
    if (d->heap_idx == 0)
        arm(t);
}

void workers__ttl_untrack(struct workers *w, struct deployment *d)
{
    if (d->heap_idx >= 0)
        heap_remove(&w->ttl, d);
}

void workers__ttl_touch(struct workers *w, struct deployment *d)
{
    d->last_used_ms = mlr_now_ms();
    if (w->ttl.open)
        mark_dirty(&w->ttl, d);
}

void workers__ttl_stats(const struct workers *w, uint64_t *checks, uint64_t *expired)
{
    *checks = w->ttl.checks;
    *expired = w->ttl.expired;
}

struct ttl_close {
    int pending;
    workers_stopped_cb cb;
    void *data;
};

static void ttl_close_step(void *data)
{
    struct ttl_close *c = data;
    if (--c->pending > 0)
        return;
    c->cb(c->data);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    ttl_close_step(h->data);
}

void workers__ttl_close(struct workers *w, workers_stopped_cb cb, void *data)
{
    struct workers_ttl *t = &w->ttl;
    if (!t->open) {
        cb(data);
        return;
    }
    t->open = 0;
    t->closing = 1;
    struct ttl_close *c = mlr_xcalloc(1, sizeof(*c));
    c->pending = 3;
    c->cb = cb;
    c->data = data;
    t->expire_timer.data = c;
    t->flush_timer.data = c;
    uv_close((uv_handle_t *)&t->expire_timer, on_timer_closed);
    uv_close((uv_handle_t *)&t->flush_timer, on_timer_closed);
    if (flush(w, ttl_close_step, c) != MLR_OK) /* the last second of use, before the store closes */
        ttl_close_step(c);
    /* The heap holds no references; the registry is cleared after this. */
    for (int i = 0; i < t->n; i++)
        t->heap[i]->heap_idx = -1;
    free(t->heap);
    t->heap = NULL;
    t->n = t->cap = 0;
}
