/*
 * workers.c — the worker context: the current cluster-settings snapshot, and starting/stopping
 * the task queue with this module's runner.
 *
 * Settings change rarely (a PUT) and are read on every unit of work, from any thread. A mutex
 * guards only the pointer swap and the reference increment, so a reader holds it for a few
 * nanoseconds and then uses its own reference to an immutable snapshot without any lock.
 */
#include "workers_int.h"

#include <stdio.h>
#include <stdlib.h>

#include <json-c/json.h>

struct workers *workers_new(uv_loop_t *loop, struct mlr_settings *settings, int threads)
{
    struct workers *w = mlr_xcalloc(1, sizeof(*w));
    w->loop = loop;
    w->threads = threads;
    w->settings = settings; /* the context now owns this reference */
    pthread_mutex_init(&w->lock, NULL);
    return w;
}

void workers_free(struct workers *w)
{
    if (w == NULL)
        return;
    workers__poller_free(w);
    workers__cluster_free(w);
    workers__registry_clear(w);
    workers__stats_cleanup(&w->stats);
    mlr_settings_unref(w->settings);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

struct mlr_settings *workers_settings_get(struct workers *w)
{
    pthread_mutex_lock(&w->lock);
    struct mlr_settings *s = mlr_settings_ref(w->settings);
    pthread_mutex_unlock(&w->lock);
    return s;
}

void workers_settings_set(struct workers *w, struct mlr_settings *settings)
{
    pthread_mutex_lock(&w->lock);
    struct mlr_settings *old = w->settings;
    w->settings = settings; /* the context now owns this reference */
    pthread_mutex_unlock(&w->lock);
    mlr_settings_unref(old);
}

/* Builds the snapshot that results from applying the change sets to the current one. */
static int build(struct workers *w, struct json_object *persistent, struct json_object *transient,
                 struct mlr_settings **out, char *err, size_t errlen)
{
    struct mlr_settings *cur = workers_settings_get(w);
    struct json_object *p = mlr_settings_layer_apply(mlr_settings_persistent(cur), persistent);
    struct json_object *t = mlr_settings_layer_apply(mlr_settings_transient(cur), transient);
    int rc = mlr_settings_new(mlr_settings_config(cur), p, t, out, err, errlen);
    json_object_put(p);
    json_object_put(t);
    mlr_settings_unref(cur);
    return rc;
}

int workers_settings_check(struct workers *w, struct json_object *persistent,
                           struct json_object *transient, char *err, size_t errlen)
{
    struct mlr_settings *next = NULL;
    int rc = build(w, persistent, transient, &next, err, errlen);
    mlr_settings_unref(next);
    return rc;
}

int workers_settings_apply(struct workers *w, struct json_object *persistent,
                           struct json_object *transient, char *err, size_t errlen)
{
    struct mlr_settings *next = NULL;
    int rc = build(w, persistent, transient, &next, err, errlen);
    if (rc == MLR_OK)
        workers__stats_window(w, mlr_settings_int(next, MLR_S_MONITORING_REQUEST_COUNT));
    if (rc == MLR_OK) {
        workers_settings_set(w, next); /* the context now owns this reference */
        w->settings_gen++;
    }
    return rc;
}

int workers_start(struct workers *w, struct store *s, const unsigned char *master_key,
                  const char *node_id, char *err, size_t errlen)
{
    w->store = s;
    w->master_key = master_key;
    snprintf(w->node_id, sizeof(w->node_id), "%s", node_id);
    struct queue_runner runner = workers__runner;
    runner.data = w;
    /* Tasks in flight: far more than threads, so claims and finishes batch well; the pool
     * itself runs at most UV_THREADPOOL_SIZE of them at a time. */
    struct queue_options opts = {.concurrency = w->threads * 64, .batch = 256};
    int recovered = 0;
    struct mlr_settings *set = workers_settings_get(w);
    int redeploy = mlr_settings_bool(set, MLR_S_AUTO_REDEPLOY);
    mlr_settings_unref(set);
    w->http = workers_http_new(w->loop);
    int rc = queue_open(w->loop, s, &opts, &runner, &w->queue);
    if (rc == MLR_OK)
        workers__ttl_init(w);
    if (rc == MLR_OK)
        rc = workers__redeploy(w, redeploy);
    if (rc == MLR_OK)
        rc = queue_start(w->queue, &recovered);
    if (rc != MLR_OK) {
        snprintf(err, errlen, "cannot start the task queue: %s", mlr_strerror(rc));
        return rc;
    }
    workers__poller_start(w);
    workers__cluster_start(w);
    if (recovered > 0)
        mlr_log(MLR_LOG_INFO, "workers", "re-running %d tasks left running by the last process",
                recovered);
    return MLR_OK;
}

struct stop_ctx {
    struct workers *w;
    workers_stopped_cb cb;
    void *data;
};

static void on_ttl_closed(void *data)
{
    struct stop_ctx *sc = data;
    workers_stopped_cb cb = sc->cb;
    void *cb_data = sc->data;
    free(sc);
    cb(cb_data);
}

static void on_http_closed(void *data)
{
    struct stop_ctx *sc = data;
    workers__ttl_close(sc->w, on_ttl_closed, sc);
}

static void on_queue_closed(void *data)
{
    struct stop_ctx *sc = data;
    struct workers_http *h = sc->w->http;
    sc->w->http = NULL;
    if (h)
        workers_http_close(h, on_http_closed, sc);
    else
        on_http_closed(sc);
}

void workers_stop(struct workers *w, workers_stopped_cb cb, void *data)
{
    struct stop_ctx *sc = mlr_xcalloc(1, sizeof(*sc));
    sc->w = w;
    sc->cb = cb;
    sc->data = data;
    struct queue *q = w->queue;
    w->queue = NULL;
    workers__cluster_stop(w);
    workers__batch_stop_all(w);
    workers__poller_stop(w);
    workers__predict_abort_backoffs(w);
    queue_close(q, on_queue_closed, sc);
}

void workers_kick(struct workers *w)
{
    if (w->queue)
        queue_kick(w->queue);
}

void workers_wait(struct workers *w, const char *task_id, int64_t timeout_ms, queue_wait_cb cb,
                  void *data)
{
    if (w->queue == NULL) {
        cb(task_id, NULL, data);
        return;
    }
    queue_wait(w->queue, task_id, timeout_ms, cb, data);
}

const char *workers_node_id(const struct workers *w)
{
    return w->node_id;
}

int workers_error_vset(struct workers_error *e, int status, const char *type, const char *fmt,
                       va_list ap)
{
    vsnprintf(e->reason, sizeof(e->reason), fmt, ap);
    e->status = status;
    e->type = type;
    return MLR_EINVAL;
}

int workers_error_set(struct workers_error *e, int status, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    workers_error_vset(e, status, type, fmt, ap);
    va_end(ap);
    return MLR_EINVAL;
}
