/*
 * cluster.c — this node's part in a cluster of nodes sharing one PostgreSQL store.
 *
 * Tasks need nothing here: every node claims from the same table (store_task_claim). What each
 * node holds in memory does: deployments and settings. So every HEARTBEAT_MS this node beats
 * (store_node_heartbeat), which also returns the live node list and one counter per kind of
 * shared state. A moved counter means "your copy is stale": for models, the node lists what the
 * store says is deployed and builds, rebuilds or drops its own deployments to match; for
 * settings, it re-reads the persistent layer and swaps its snapshot. NOTIFY (store_listen) makes
 * a node beat at once instead of up to HEARTBEAT_MS later, and wakes the queue for new tasks;
 * it is a hint, never the only signal, so a lost notification costs latency, not correctness.
 *
 * The node then reports which models it holds (model_nodes), which is what undeploy answers
 * per node. Loop thread only, apart from deployment builds on the thread pool.
 */
#include "workers_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define HEARTBEAT_MS 500

/* ---------------------------------- live nodes ---------------------------------- */

struct json_object *workers__cluster_nodes(struct workers *w)
{
    struct json_object *arr = json_object_new_array();
    pthread_mutex_lock(&w->lock);
    if (w->cluster.nodes)
        for (size_t i = 0; i < json_object_array_length(w->cluster.nodes); i++)
            json_object_array_add(arr, json_object_get(json_object_array_get_idx(
                                           w->cluster.nodes, i)));
    pthread_mutex_unlock(&w->lock);
    if (json_object_array_length(arr) == 0) /* one node, or no heartbeat yet: just this one */
        json_object_array_add(arr, json_object_new_string(w->node_id));
    return arr;
}

static void set_nodes(struct workers *w, const struct store_cluster_view *v)
{
    struct json_object *arr = json_object_new_array();
    for (int i = 0; i < v->nnodes; i++)
        json_object_array_add(arr, json_object_new_string(v->nodes[i]));
    pthread_mutex_lock(&w->lock);
    struct json_object *old = w->cluster.nodes;
    w->cluster.nodes = arr;
    pthread_mutex_unlock(&w->lock);
    json_object_put(old);
}

/* ---------------------------------- settings ---------------------------------- */

static void on_settings_read(int status, struct json_object *persistent, void *data)
{
    struct workers *w = data;
    w->cluster.settings_reading = 0;
    /* A PUT through this node applied meanwhile may be newer than what was read: drop the
     * read and read again at the next heartbeat rather than go back in time. */
    if (status != MLR_OK || w->cluster.closing || w->settings_gen != w->cluster.settings_gen_read) {
        w->cluster.settings_epoch = -1; /* try again at the next heartbeat */
        json_object_put(persistent);
        return;
    }
    struct mlr_settings *cur = workers_settings_get(w), *next = NULL;
    char err[512];
    if (mlr_settings_new(mlr_settings_config(cur), persistent, mlr_settings_transient(cur), &next,
                         err, sizeof(err)) == MLR_OK) {
        workers__stats_window(w, mlr_settings_int(next, MLR_S_MONITORING_REQUEST_COUNT));
        workers_settings_set(w, next);
    } else {
        mlr_log(MLR_LOG_WARN, "workers", "settings written by another node not applied: %s", err);
    }
    mlr_settings_unref(cur);
    json_object_put(persistent);
}

/* ---------------------------------- deployments ---------------------------------- */

/* A deployment built on the pool for a model another node deployed or changed. */
struct build {
    uv_work_t work;
    struct workers *w;
    char model_id[STORE_ID_MAX + 1];
    char seen[64];              /* version key it was built from */
    struct deployment *d;
    int64_t last_used_ms;
    char err[512];
    int status;
    void (*done)(void *data);   /* workers__cluster_adopt(): called instead of a sync step */
    void *data;
};

static void sync_step_done(struct workers *w);

static void build_work(uv_work_t *work)
{
    struct build *b = container_of(work, struct build, work);
    b->status = workers__deployment_build(b->w, b->model_id, &b->d, b->err, sizeof(b->err));
    if (store_model_usage_get(b->w->store, b->model_id, &b->last_used_ms) != MLR_OK)
        b->last_used_ms = mlr_now_ms();
}

static void build_after(uv_work_t *work, int status)
{
    struct build *b = container_of(work, struct build, work);
    struct workers *w = b->w;
    if (b->done) { /* adopt: install unless something newer got there first */
        if (status == 0 && b->status == MLR_OK && workers_deployment_get(w, b->model_id) == NULL)
            workers__deployment_install(w, b->d, b->last_used_ms);
        else
            workers_deployment_unref(b->d);
        b->done(b->data);
        free(b);
        return;
    }
    if (status == 0 && b->status == MLR_OK && !w->cluster.closing) {
        workers__deployment_install(w, b->d, b->last_used_ms);
        json_object_object_add(w->cluster.seen, b->model_id, json_object_new_string(b->seen));
        const char *kv[] = {"model_id", b->model_id};
        mlr_log_kv(MLR_LOG_INFO, "workers", "deployed as the cluster has it", kv, 1);
    } else {
        workers_deployment_unref(b->d);
        if (status == 0 && b->status != MLR_OK) {
            const char *kv[] = {"model_id", b->model_id, "error", b->err};
            mlr_log_kv(MLR_LOG_WARN, "workers", "cannot deploy a model the cluster has deployed",
                       kv, 2);
        }
    }
    free(b);
    sync_step_done(w);
}

void workers__cluster_adopt(struct workers *w, const char *model_id, void (*done)(void *data),
                            void *data)
{
    struct build *b = mlr_xcalloc(1, sizeof(*b));
    b->w = w;
    snprintf(b->model_id, sizeof(b->model_id), "%s", model_id);
    b->done = done;
    b->data = data;
    if (uv_queue_work(w->loop, &b->work, build_work, build_after) != 0) {
        free(b);
        done(data);
    }
}

/* Reports to model_nodes what this node holds now versus what it reported last. */
static void report_holdings(struct workers *w)
{
    struct workers_cluster *c = &w->cluster;
    const char **add = NULL, **del = NULL;
    int nadd = 0, ndel = 0;
    struct json_object *now = json_object_new_object();
    workers__deployments_foreach(w, now);
    json_object_object_foreach(now, id, v)
    {
        UNUSED(v);
        if (!json_object_object_get_ex(c->reported, id, NULL)) {
            add = mlr_xrealloc(add, (size_t)(nadd + 1) * sizeof(char *));
            add[nadd++] = id;
        }
    }
    json_object_object_foreach(c->reported, rid, rv)
    {
        UNUSED(rv);
        if (!json_object_object_get_ex(now, rid, NULL)) {
            del = mlr_xrealloc(del, (size_t)(ndel + 1) * sizeof(char *));
            del[ndel++] = rid;
        }
    }
    if (nadd + ndel > 0 &&
        store_model_nodes_update(w->store, add, nadd, del, ndel, NULL, NULL) == MLR_OK) {
        json_object_put(c->reported);
        c->reported = now;
        now = NULL;
    }
    json_object_put(now);
    free(add);
    free(del);
}

static void sync_step_done(struct workers *w)
{
    struct workers_cluster *c = &w->cluster;
    if (--c->sync_pending > 0)
        return;
    c->syncing = 0;
    if (!c->closing)
        report_holdings(w);
}

static void on_deployed_listed(int status, const struct store_deployed_model *m, int n,
                               void *data)
{
    struct workers *w = data;
    struct workers_cluster *c = &w->cluster;
    c->sync_pending = 1; /* this function's own step */
    if (status != MLR_OK || c->closing) {
        c->models_epoch = -1; /* try again at the next heartbeat */
        sync_step_done(w);
        return;
    }
    struct json_object *stored = json_object_new_object();
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof(key), "%lld:%lld", (long long)m[i].version,
                 (long long)m[i].connector_version);
        json_object_object_add(stored, m[i].id, NULL);
        struct json_object *seen = NULL;
        struct deployment *d = workers_deployment_get(w, m[i].id);
        int same = json_object_object_get_ex(c->seen, m[i].id, &seen) && seen &&
                   strcmp(json_object_get_string(seen), key) == 0;
        /* A deployment this node built itself (its DEPLOY_MODEL task, a redeploy at start) read
         * the model before the task's own DEPLOYED write, one _version later: the same model.
         * Rebuilding it would only reset its rate limiter and statistics. */
        int own = d && d->connector_version == m[i].connector_version &&
                  (m[i].version == d->model_version ||
                   (d->by_task && m[i].version == d->model_version + 1));
        if (d && (same || own || !c->primed)) {
            json_object_object_add(c->seen, m[i].id, json_object_new_string(key));
            continue;
        }
        struct build *b = mlr_xcalloc(1, sizeof(*b));
        b->w = w;
        snprintf(b->model_id, sizeof(b->model_id), "%s", m[i].id);
        snprintf(b->seen, sizeof(b->seen), "%s", key);
        c->sync_pending++;
        if (uv_queue_work(w->loop, &b->work, build_work, build_after) != 0) {
            c->sync_pending--;
            free(b);
        }
    }
    /* Deployed here but no longer in the store: undeployed (by a request, a task or a TTL
     * expiry on any node). */
    struct json_object *local = json_object_new_object();
    workers__deployments_foreach(w, local);
    json_object_object_foreach(local, id, v)
    {
        UNUSED(v);
        if (!json_object_object_get_ex(stored, id, NULL)) {
            const char *kv[] = {"model_id", id};
            mlr_log_kv(MLR_LOG_INFO, "workers", "undeployed as the cluster has it", kv, 1);
            workers_undeploy_local(w, id);
            json_object_object_del(c->seen, id);
        }
    }
    json_object_put(local);
    json_object_put(stored);
    c->primed = 1;
    sync_step_done(w);
}

/* ---------------------------------- heartbeat ---------------------------------- */

static void beat(struct workers *w);

static void on_beat(int status, const struct store_cluster_view *v, void *data)
{
    struct workers *w = data;
    struct workers_cluster *c = &w->cluster;
    c->beating = 0;
    if (c->closing)
        return;
    if (status != MLR_OK) {
        if (!c->beat_failing) /* once per outage, not twice a second */
            mlr_log(MLR_LOG_WARN, "workers", "heartbeat failed: %s", mlr_strerror(status));
        c->beat_failing = 1;
        return;
    }
    if (c->beat_failing)
        mlr_log(MLR_LOG_INFO, "workers", "heartbeat back");
    c->beat_failing = 0;
    set_nodes(w, v);
    if (v->models_epoch != c->models_epoch && !c->syncing) {
        c->models_epoch = v->models_epoch;
        c->syncing = 1;
        if (store_models_deployed(w->store, on_deployed_listed, w) != MLR_OK) {
            c->syncing = 0;
            c->models_epoch = -1;
        }
    }
    if (v->settings_epoch != c->settings_epoch && !c->settings_reading) {
        c->settings_epoch = v->settings_epoch;
        c->settings_reading = 1;
        c->settings_gen_read = w->settings_gen;
        if (store_settings_read(w->store, on_settings_read, w) != MLR_OK) {
            c->settings_reading = 0;
            c->settings_epoch = -1;
        }
    }
    store_listen_check(w->store);
    if (c->again) { /* a notification came while this heartbeat was in flight */
        c->again = 0;
        beat(w);
    }
}

static void beat(struct workers *w)
{
    struct workers_cluster *c = &w->cluster;
    if (c->beating) {
        c->again = 1;
        return;
    }
    if (store_node_heartbeat(w->store, on_beat, w) == MLR_OK)
        c->beating = 1;
}

static void on_timer(uv_timer_t *t)
{
    beat(container_of(container_of(t, struct workers_cluster, timer), struct workers, cluster));
}

static void on_notify(const char *payload, void *data)
{
    struct workers *w = data;
    if (strcmp(payload, "tasks") == 0)
        workers_kick(w); /* a claim now rather than at the queue's next tick */
    else if (strcmp(payload, "done") == 0) {
        if (w->queue) /* a waited-for task may have ended on another node */
            queue_tasks_finished(w->queue);
    } else {
        beat(w);
    }
}

/* ---------------------------------- lifecycle ---------------------------------- */

void workers__cluster_start(struct workers *w)
{
    struct workers_cluster *c = &w->cluster;
    c->on = store_is_shared(w->store);
    if (!c->on)
        return;
    c->models_epoch = c->settings_epoch = -1;
    c->seen = json_object_new_object();
    c->reported = json_object_new_object();
    uv_timer_init(w->loop, &c->timer);
    uv_timer_start(&c->timer, on_timer, 0, HEARTBEAT_MS);
    c->timer_open = 1;
    store_listen(w->store, on_notify, w);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct workers_cluster *c = container_of((uv_timer_t *)h, struct workers_cluster, timer);
    c->timer_open = 0;
}

void workers__cluster_stop(struct workers *w)
{
    struct workers_cluster *c = &w->cluster;
    if (!c->on || c->closing)
        return;
    c->closing = 1;
    if (c->timer_open)
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    /* Other nodes drop this one from worker_node lists and undeploy answers at once, instead of
     * after its heartbeat ages out. */
    store_node_leave(w->store, NULL, NULL);
}

void workers__cluster_free(struct workers *w)
{
    struct workers_cluster *c = &w->cluster;
    json_object_put(c->seen);
    json_object_put(c->reported);
    json_object_put(c->nodes);
    c->seen = c->reported = c->nodes = NULL;
}
