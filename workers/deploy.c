/*
 * deploy.c — deployments (the in-memory side of a DEPLOYED remote model) and the task runner.
 *
 * A deployment holds what a predict needs without touching the database: the model document, the
 * connector document (standalone or inline) and the decrypted credentials. It is built on a
 * thread-pool thread by the DEPLOY_MODEL handler, and installed into the registry on the loop
 * thread only after the model's DEPLOYED state committed, so memory never claims a deployment
 * the database does not. Deployments are reference counted: replacing one (a redeploy or a
 * connector update) leaves calls in flight on the old one until they drop it.
 *
 * The registry is a small chained hash table keyed by model id, touched only on the loop thread.
 * Task handlers are idempotent: deploying twice builds the same object, undeploying twice leaves
 * the model UNDEPLOYED.
 */
#include "workers_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static const char *member(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return o && json_object_object_get_ex(o, k, &v) && v ? json_object_get_string(v) : NULL;
}

/* ---------------------------------- deployments ---------------------------------- */

static void wipe_credentials(struct json_object *cred)
{
    if (cred == NULL)
        return;
    json_object_object_foreach(cred, k, v)
    {
        UNUSED(k);
        const char *s = json_object_get_string(v);
        OPENSSL_cleanse((void *)s, strlen(s));
    }
}

struct deployment *workers_deployment_ref(struct deployment *d)
{
    atomic_fetch_add(&d->refs, 1);
    return d;
}

void workers_deployment_unref(struct deployment *d)
{
    if (d == NULL || atomic_fetch_sub(&d->refs, 1) != 1)
        return;
    json_object_put(d->model);
    json_object_put(d->connector);
    wipe_credentials(d->credential);
    json_object_put(d->credential);
    workers__upstream_stats_cleanup(&d->upstream);
    free(d);
}

/* Decrypts the sealed credential map @sealed (JSON text) bound to @owner. */
static int open_credentials(const unsigned char *key, const char *owner, const char *sealed,
                            struct json_object **out, char *err, size_t errlen)
{
    struct json_object *map = sealed ? json_tokener_parse(sealed) : json_object_new_object();
    if (map == NULL) {
        snprintf(err, errlen, "stored credential of %s is unreadable", owner);
        return MLR_ECORRUPT;
    }
    struct json_object *plain = json_object_new_object();
    int rc = MLR_OK;
    json_object_object_foreach(map, name, val)
    {
        char aad[STORE_ID_MAX + 300], *text = NULL;
        size_t len = 0;
        snprintf(aad, sizeof(aad), "%s:%s", owner, name);
        rc = mlr_secret_decrypt(key, aad, json_object_get_string(val), &text, &len);
        if (rc != MLR_OK) {
            snprintf(err, errlen,
                     "cannot decrypt credential [%s] of %s: %s (wrong master key, or the "
                     "database was copied without its master.key?)",
                     name, owner, rc == MLR_EPERM ? "authentication failed" : mlr_strerror(rc));
            break;
        }
        json_object_object_add(plain, name, json_object_new_string_len(text, (int)len));
        mlr_secret_free(text, len);
    }
    json_object_put(map);
    if (rc != MLR_OK) {
        wipe_credentials(plain);
        json_object_put(plain);
        return rc;
    }
    *out = plain;
    return MLR_OK;
}

/* Worker thread: reads the model (and its connector) and builds the deployment. */
static int build(struct workers *w, const char *model_id, struct deployment **out, char *err,
                 size_t errlen)
{
    struct json_object *model = NULL, *conn = NULL, *plain = NULL;
    char *sealed = NULL, owner[STORE_ID_MAX + 16];
    int64_t model_version = 0, connector_version = 0;
    int rc = store_doc_read(w->store, STORE_MODEL, model_id, &model, &sealed, &model_version);
    if (rc == MLR_ENOTFOUND)
        snprintf(err, errlen, "Failed to find model");
    const char *cid = rc == MLR_OK ? member(model, "connector_id") : NULL;
    if (rc == MLR_OK && cid) {
        free(sealed);
        sealed = NULL;
        rc = store_doc_read(w->store, STORE_CONNECTOR, cid, &conn, &sealed, &connector_version);
        if (rc == MLR_ENOTFOUND)
            snprintf(err, errlen, "Failed to find connector:%s", cid);
        snprintf(owner, sizeof(owner), "connector:%s", cid);
    } else if (rc == MLR_OK) {
        struct json_object *inline_conn = NULL;
        json_object_object_get_ex(model, "connector", &inline_conn);
        conn = json_object_get(inline_conn);
        snprintf(owner, sizeof(owner), "model:%s", model_id);
    }
    if (rc == MLR_OK && conn == NULL) {
        snprintf(err, errlen, "model %s has no connector", model_id);
        rc = MLR_ECORRUPT;
    }
    if (rc == MLR_OK)
        rc = open_credentials(w->master_key, owner, sealed, &plain, err, errlen);
    free(sealed);
    if (rc != MLR_OK) {
        if (err[0] == '\0')
            snprintf(err, errlen, "cannot read model %s: %s", model_id, mlr_strerror(rc));
        json_object_put(model);
        json_object_put(conn);
        return rc;
    }
    struct deployment *d = mlr_xcalloc(1, sizeof(*d));
    atomic_init(&d->refs, 1);
    snprintf(d->model_id, sizeof(d->model_id), "%s", model_id);
    d->model = model;
    d->connector = conn;
    d->credential = plain;
    d->deployed_ms = mlr_now_ms();
    d->model_version = model_version;
    d->connector_version = connector_version;
    d->heap_idx = -1; /* not in the TTL heap until installed */
    d->ttl_ms = -1;
    workers__upstream_stats_init(&d->upstream);
    *out = d;
    return MLR_OK;
}

int workers__deployment_build(struct workers *w, const char *model_id, struct deployment **out,
                              char *err, size_t errlen)
{
    return build(w, model_id, out, err, errlen);
}

/* ---------------------------------- registry (loop thread) ---------------------------------- */

static unsigned bucket(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h & (WORKERS_BUCKETS - 1);
}

struct deployment *workers_deployment_get(struct workers *w, const char *model_id)
{
    for (struct deployment *d = w->buckets[bucket(model_id)]; d; d = d->next) {
        if (strcmp(d->model_id, model_id) == 0)
            return d;
    }
    return NULL;
}

/* Puts @d in the registry (the registry takes that reference), dropping any previous one. Its
 * TTL counts from @last_used_ms (wall clock). */
static void install(struct workers *w, struct deployment *d, int64_t last_used_ms)
{
    workers_undeploy_local(w, d->model_id);
    unsigned b = bucket(d->model_id);
    d->next = w->buckets[b];
    w->buckets[b] = d;
    w->ndeployed++;
    workers__ttl_track(w, d, last_used_ms);
}

void workers__deployment_install(struct workers *w, struct deployment *d, int64_t last_used_ms)
{
    install(w, d, last_used_ms);
}

void workers__deployments_foreach(struct workers *w, struct json_object *ids)
{
    for (int i = 0; i < WORKERS_BUCKETS; i++)
        for (struct deployment *d = w->buckets[i]; d; d = d->next)
            json_object_object_add(ids, d->model_id, NULL);
}

void workers_undeploy_local(struct workers *w, const char *model_id)
{
    for (struct deployment **pp = &w->buckets[bucket(model_id)]; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->model_id, model_id) == 0) {
            struct deployment *d = *pp;
            *pp = d->next;
            w->ndeployed--;
            workers__ttl_untrack(w, d);
            workers_deployment_unref(d);
            return;
        }
    }
}

int workers_deployed_count(const struct workers *w)
{
    return w->ndeployed;
}

void workers__registry_clear(struct workers *w)
{
    for (int i = 0; i < WORKERS_BUCKETS; i++) {
        while (w->buckets[i]) {
            struct deployment *d = w->buckets[i];
            w->buckets[i] = d->next;
            workers__ttl_untrack(w, d);
            workers_deployment_unref(d);
        }
    }
    w->ndeployed = 0;
}

/* ---------------------------------- task runner ---------------------------------- */

/*
 * The model's worker fields: every live node serves a deployed model (each deploys it within a
 * heartbeat of seeing it DEPLOYED, cluster.c), so the plan is the live node list.
 */
static struct json_object *deployed_fields(struct workers *w)
{
    struct json_object *f = json_object_new_object();
    struct json_object *nodes = workers__cluster_nodes(w);
    int n = (int)json_object_array_length(nodes);
    json_object_object_add(f, "planning_worker_node_count", json_object_new_int(n));
    json_object_object_add(f, "current_worker_node_count", json_object_new_int(n));
    json_object_object_add(f, "planning_worker_nodes", nodes); /* consumes nodes */
    json_object_object_add(f, "deploy_to_all_nodes", json_object_new_boolean(1));
    json_object_object_add(f, "last_deployed_time", json_object_new_int64(mlr_now_ms()));
    return f;
}

/* ML Commons reports deploy errors as a JSON object keyed by node, inside a string. */
static char *node_error(const char *node_id, const char *msg)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, node_id, json_object_new_string(msg));
    char *s = mlr_xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return s;
}

static void run_deploy(struct workers *w, struct queue_job *job)
{
    char err[1024] = "";
    struct deployment *d = NULL;
    /* An undeploy that committed meanwhile wins: only a deploying (or redeploying) model moves. */
    job->only_if_state = "DEPLOYING|DEPLOYED";
    if (build(w, job->model_id, &d, err, sizeof(err)) != MLR_OK) {
        job->state = QUEUE_STATE_FAILED;
        job->error = node_error(w->node_id, err);
        job->model_state = "DEPLOY_FAILED";
        return;
    }
    d->by_task = 1;
    job->model_state = "DEPLOYED";
    job->model_fields = deployed_fields(w);
    /* worker_node: the nodes this deployment reaches (ML Commons: every eligible node). */
    job->task_fields = json_object_new_object();
    json_object_object_add(job->task_fields, "worker_node", workers__cluster_nodes(w));
    job->payload = d;
}

static void run_undeploy(struct workers *w, struct queue_job *job)
{
    struct json_object *model = NULL;
    char *sealed = NULL;
    int rc = store_doc_read(w->store, STORE_MODEL, job->model_id, &model, &sealed, NULL);
    free(sealed);
    json_object_put(model);
    if (rc != MLR_OK) {
        job->state = QUEUE_STATE_FAILED;
        job->error = mlr_xstrdup(rc == MLR_ENOTFOUND ? "Failed to find model" : mlr_strerror(rc));
        return;
    }
    struct json_object *f = json_object_new_object();
    json_object_object_add(f, "planning_worker_node_count", json_object_new_int(0));
    json_object_object_add(f, "current_worker_node_count", json_object_new_int(0));
    json_object_object_add(f, "planning_worker_nodes", json_object_new_array());
    json_object_object_add(f, "last_undeployed_time", json_object_new_int64(mlr_now_ms()));
    job->model_state = "UNDEPLOYED";
    job->model_fields = f;
}

/* Thread-pool thread. REGISTER_MODEL has nothing left to do for a remote model: its rows were
 * written with the request; completing the task is the whole job. */
static void runner_run(struct queue_job *job, void *data)
{
    struct workers *w = data;
    switch (job->type) {
    case QUEUE_TASK_DEPLOY_MODEL:
        run_deploy(w, job);
        break;
    case QUEUE_TASK_UNDEPLOY_MODEL:
        run_undeploy(w, job);
        break;
    case QUEUE_TASK_REGISTER_MODEL:
        break;
    default:
        job->state = QUEUE_STATE_FAILED;
        job->error = mlr_xasprintf("task type [%s] is not supported by this node",
                                   queue_task_type_name(job->type));
    }
}

/* The ML Commons action a task of @type stands for, or -1 (counted elsewhere or not at all). */
static int action_of(enum queue_task_type type)
{
    switch (type) {
    case QUEUE_TASK_REGISTER_MODEL:
        return WORKERS_ACTION_REGISTER;
    case QUEUE_TASK_DEPLOY_MODEL:
        return WORKERS_ACTION_DEPLOY;
    case QUEUE_TASK_UNDEPLOY_MODEL:
        return WORKERS_ACTION_UNDEPLOY;
    default:
        return -1;
    }
}

/* Loop thread, after the outcome committed: make memory follow the database. */
static void runner_committed(struct queue_job *job, int status, void *data)
{
    struct workers *w = data;
    struct deployment *d = job->payload;
    job->payload = NULL;
    int action = action_of(job->type);
    if (action >= 0)
        workers_stats_add(w, job->model_id[0] && status == MLR_OK && job->applied ? job->model_id
                                                                                 : NULL,
                          (enum workers_action)action, 1,
                          status != MLR_OK || job->timed_out || job->state != QUEUE_STATE_COMPLETED);
    const char *kv[10] = {"task_id", job->id, "task_type", queue_task_type_name(job->type),
                          "state", queue_task_state_name(job->state)};
    size_t nkv = 3;
    if (job->model_id[0]) {
        kv[2 * nkv] = "model_id";
        kv[2 * nkv + 1] = job->model_id;
        nkv++;
    }
    if (job->error) { /* the same text the task document shows clients */
        kv[2 * nkv] = "error";
        kv[2 * nkv + 1] = job->error;
        nkv++;
    }
    mlr_log_kv(job->state == QUEUE_STATE_COMPLETED ? MLR_LOG_DEBUG : MLR_LOG_WARN, "workers",
               "task finished", kv, nkv);
    if (status == MLR_OK && job->applied && !job->timed_out) {
        if (job->type == QUEUE_TASK_DEPLOY_MODEL && d) {
            install(w, d, mlr_now_ms());
            d = NULL; /* the registry owns it now */
        } else if (job->type == QUEUE_TASK_DEPLOY_MODEL) {
            workers_undeploy_local(w, job->model_id); /* DEPLOY_FAILED: nothing serves it */
        } else if (job->type == QUEUE_TASK_UNDEPLOY_MODEL) {
            workers_undeploy_local(w, job->model_id);
        }
    }
    workers_deployment_unref(d);
}

static void runner_limits(void *data, int64_t *timeout_ms, int64_t *retention_ms)
{
    struct workers *w = data;
    struct mlr_settings *s = workers_settings_get(w);
    *timeout_ms = mlr_settings_int(s, MLR_S_TASK_TIMEOUT) * 1000;
    *retention_ms = mlr_settings_time_ms(s, MLR_S_TASK_RETENTION);
    mlr_settings_unref(s);
}

const struct queue_runner workers__runner = {
    .run = runner_run,
    .start = workers__runner_start,
    .committed = runner_committed,
    .limits = runner_limits,
};

/* ---------------------------------- start-up redeploy ---------------------------------- */

static void on_redeploy_failed_written(const struct store_write_result *r, void *data)
{
    UNUSED(data);
    if (r->status != MLR_OK) {
        const char *kv[] = {"model_id", r->id, "error", mlr_strerror(r->status)};
        mlr_log_kv(MLR_LOG_ERROR, "workers", "cannot mark the model DEPLOY_FAILED", kv, 2);
    }
}

static int mark_failed(struct json_object *doc, char **credential, void *arg, char *err,
                       size_t errlen)
{
    UNUSED(credential);
    UNUSED(arg);
    UNUSED(err);
    UNUSED(errlen);
    json_object_object_add(doc, "model_state", json_object_new_string("DEPLOY_FAILED"));
    json_object_object_add(doc, "current_worker_node_count", json_object_new_int(0));
    return MLR_OK;
}

/* Synchronous, before the listener opens: models stored DEPLOYED serve again at once. */
int workers__redeploy(struct workers *w, int enabled)
{
    char **ids = NULL;
    int n = 0, ok = 0;
    int rc = store_models_in_state(w->store, "DEPLOYED", &ids, &n);
    if (rc != MLR_OK)
        return rc;
    for (int i = 0; i < n; i++) {
        char err[1024] = "";
        struct deployment *d = NULL;
        if (enabled && build(w, ids[i], &d, err, sizeof(err)) == MLR_OK) {
            /* The TTL goes on counting from the last use before the restart. */
            int64_t last_used = 0;
            if (store_model_usage_get(w->store, ids[i], &last_used) != MLR_OK)
                last_used = mlr_now_ms();
            install(w, d, last_used);
            ok++;
        } else {
            const char *kv[] = {"model_id", ids[i], "error",
                                enabled ? err : "plugins.ml_commons.model_auto_redeploy.enable "
                                                "is false"};
            mlr_log_kv(MLR_LOG_WARN, "workers", "model not redeployed", kv, 2);
            store_doc_update(w->store, STORE_MODEL, ids[i], mark_failed, NULL,
                             on_redeploy_failed_written, NULL);
        }
        free(ids[i]);
    }
    free(ids);
    if (n > 0)
        mlr_log(MLR_LOG_INFO, "workers", "redeployed %d of %d models", ok, n);
    return MLR_OK;
}

/* ---------------------------------- hot reload ---------------------------------- */

/*
 * Rebuilding the deployments that use a changed connector (or a model whose inline connector
 * changed) goes through ordinary DEPLOY_MODEL tasks: the new deployment replaces the old in the
 * registry when its task commits, and calls already holding the old one finish with it.
 */
struct reload {
    struct workers *w;
    int pending;                /* deploys not yet finished (+1 while starting) */
    workers_reloaded_cb cb;
    void *data;
};

static void reload_step(struct reload *r)
{
    if (--r->pending > 0)
        return;
    r->cb(r->data);
    free(r);
}

static void on_reload_done(const char *task_id, const char *state, void *data)
{
    UNUSED(task_id);
    UNUSED(state);
    reload_step(data);
}

static void on_reload_committed(const struct store_write_result *res, void *data)
{
    struct reload *r = data;
    if (res->status != MLR_OK) {
        const char *kv[] = {"model_id", res->id, "error", mlr_strerror(res->status), "task_id",
                            res->task_id};
        mlr_log_kv(MLR_LOG_ERROR, "workers", "cannot reload the model", kv,
                   res->task_id && res->task_id[0] ? 3 : 2);
        reload_step(r);
        return;
    }
    workers_kick(r->w);
    workers_wait(r->w, res->task_id, 3000, on_reload_done, r);
}

static void reload_model(struct reload *r, const char *model_id)
{
    char task_id[MLR_ID_LEN + 1];
    if (mlr_id_new(task_id) != MLR_OK)
        return;
    struct json_object *task = queue_task_doc_new(QUEUE_TASK_DEPLOY_MODEL, model_id,
                                                  QUEUE_STATE_CREATED, r->w->node_id, 1,
                                                  mlr_now_ms());
    r->pending++;
    if (store_model_deploy(r->w->store, model_id, task_id, task, on_reload_committed, r) != MLR_OK)
        r->pending--;
    json_object_put(task);
}

void workers_reload(struct workers *w, const char *connector_id, const char *model_id,
                    workers_reloaded_cb cb, void *data)
{
    struct reload *r = mlr_xcalloc(1, sizeof(*r));
    r->w = w;
    r->cb = cb;
    r->data = data;
    r->pending = 1;
    for (int i = 0; i < WORKERS_BUCKETS; i++) {
        for (struct deployment *d = w->buckets[i]; d; d = d->next) {
            const char *cid = member(d->model, "connector_id");
            int hit = (model_id && strcmp(d->model_id, model_id) == 0) ||
                      (connector_id && cid && strcmp(cid, connector_id) == 0);
            if (hit)
                reload_model(r, d->model_id);
        }
    }
    reload_step(r);
}
