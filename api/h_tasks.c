/*
 * h_tasks.c — deploy, undeploy (single and bulk) and task cancel (spec §4, §5; reference §6.6,
 * §6.7, §8).
 *
 * Deploy writes the DEPLOYING state and a DEPLOY_MODEL task in one commit, kicks the queue, and
 * answers once the task has finished or after DEPLOY_WAIT_MS, whichever comes first: a remote
 * deploy takes about a millisecond, so clients that expect ML Commons' synchronous "COMPLETED"
 * get it, and a slow one still answers "CREATED" (spec §5). Undeploy of one model is a plain
 * state change answered after commit; bulk undeploy runs UNDEPLOY_MODEL tasks. Loop thread.
 */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#define DEPLOY_WAIT_MS 3000
#define BULK_MAX 1000

struct deploy_ctx {
    struct api_req *req;
    char task_id[MLR_ID_LEN + 1];
    char model_id[STORE_ID_MAX + 1];
    char register_task[MLR_ID_LEN + 1];  /* set when chained from _register?deploy=true */
};

static void send_deploy(struct api_req *req, const char *task_id, const char *state)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "task_id", json_object_new_string(task_id));
    json_object_object_add(o, "task_type", json_object_new_string("DEPLOY_MODEL"));
    json_object_object_add(o, "status", json_object_new_string(state));
    api_send_json(req, 200, o);
}

static void on_deploy_waited(const char *task_id, const char *state, void *data)
{
    struct deploy_ctx *d = data;
    send_deploy(d->req, task_id, state ? state : "CREATED");
    free(d);
}

static void on_deploy_committed(const struct store_write_result *r, void *data)
{
    struct deploy_ctx *d = data;
    struct api_req *req = d->req;
    if (r->status == MLR_ENOTFOUND) {
        api_send_error(req, 404, "status_exception", "Failed to find model");
    } else if (r->status != MLR_OK) {
        api_send_errorf(req, api_status_from_err(r->status), "exception",
                        "failed to start the deployment: %s", mlr_strerror(r->status));
    } else {
        workers_kick(req->ctx->workers);
        if (d->register_task[0]) {
            api_send_registered(req, d->register_task, d->model_id);
        } else {
            workers_wait(req->ctx->workers, d->task_id, DEPLOY_WAIT_MS, on_deploy_waited, d);
            return; /* d lives until the wait is answered */
        }
    }
    free(d);
}

/* Writes DEPLOYING + a DEPLOY_MODEL task for @model_id; answers @req when done. */
static void start_deploy(struct api_req *req, const char *model_id, const char *register_task)
{
    struct deploy_ctx *d = mlr_xcalloc(1, sizeof(*d));
    d->req = req;
    snprintf(d->model_id, sizeof(d->model_id), "%s", model_id);
    snprintf(d->register_task, sizeof(d->register_task), "%s", register_task ? register_task : "");
    if (mlr_id_new(d->task_id) != MLR_OK) {
        free(d);
        api_send_error(req, 500, "exception", "cannot generate an id");
        return;
    }
    struct json_object *task = queue_task_doc_new(QUEUE_TASK_DEPLOY_MODEL, model_id,
                                                  QUEUE_STATE_CREATED, req->ctx->node_id, 1,
                                                  mlr_now_ms());
    int rc = store_model_deploy(req->ctx->store, model_id, d->task_id, task, on_deploy_committed,
                                d);
    json_object_put(task);
    if (rc != MLR_OK) {
        free(d);
        api_send_errorf(req, 500, "exception", "failed to start the deployment: %s",
                        mlr_strerror(rc));
    }
}

void api_deploy_chain(struct api_req *req, const char *model_id, const char *register_task_id)
{
    start_deploy(req, model_id, register_task_id);
}

/* Settings that refuse a deploy before anything is written. Returns 0 or -1 after answering. */
static int deploy_allowed(struct api_req *req)
{
    struct mlr_settings *s = workers_settings_get(req->ctx->workers);
    int remote = mlr_settings_bool(s, MLR_S_REMOTE_INFERENCE_ENABLED);
    int custom_plan = mlr_settings_bool(s, MLR_S_ALLOW_CUSTOM_DEPLOY_PLAN);
    mlr_settings_unref(s);
    struct json_object *nodes = NULL;
    if (!remote) {
        api_send_error(req, 400, "status_exception",
                       "Remote Inference is currently disabled. To enable it, update the setting "
                       "\"plugins.ml_commons.remote_inference_enabled\" to true.");
        return -1;
    }
    if (!custom_plan && req->json && json_object_object_get_ex(req->json, "node_ids", &nodes) &&
        json_object_is_type(nodes, json_type_array) && json_object_array_length(nodes) > 0) {
        api_send_error(req, 400, "illegal_argument_exception", "Don't allow custom deployment plan");
        return -1;
    }
    return 0;
}

void api_h_model_deploy(struct api_req *req)
{
    const char *id = api_path_id(req, 0);
    if (id == NULL) {
        api_send_error(req, 404, "status_exception", "Failed to find model");
        return;
    }
    if (deploy_allowed(req) == 0)
        start_deploy(req, id, NULL);
}

/* ---------------------------------- undeploy ---------------------------------- */

/* {"<node id>":{"stats":{"<model id>":"undeployed"|"not_found"}}} */
static struct json_object *undeploy_body(struct api_req *req, struct json_object *stats)
{
    struct json_object *node = json_object_new_object();
    json_object_object_add(node, "stats", stats); /* consumes stats */
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, req->ctx->node_id, node); /* consumes node */
    return o;
}

/*
 * With several nodes, the nodes that held the model (model_nodes, read before the undeploy)
 * each get their entry; they drop their deployment within a heartbeat of the commit. With one
 * node, or when no node reported holding it, the entry is this node's.
 */
static struct json_object *held_by(struct api_req *req)
{
    struct json_object *nodes = req->handler_data;
    req->handler_data = NULL;
    if (nodes && json_object_array_length(nodes) > 0)
        return nodes;
    json_object_put(nodes);
    nodes = json_object_new_array();
    json_object_array_add(nodes, json_object_new_string(req->ctx->node_id));
    return nodes;
}

static void on_undeployed(const struct store_write_result *r, void *data)
{
    struct api_req *req = data;
    struct json_object *nodes = held_by(req);
    workers_stats_add(req->ctx->workers, r->status == MLR_OK ? r->id : NULL,
                      WORKERS_ACTION_UNDEPLOY, 1, r->status != MLR_OK && r->status != MLR_ENOTFOUND);
    if (r->status != MLR_OK && r->status != MLR_ENOTFOUND) {
        json_object_put(nodes);
        api_send_errorf(req, api_status_from_err(r->status), "exception", "failed to undeploy: %s",
                        mlr_strerror(r->status));
        return;
    }
    if (r->status == MLR_OK)
        workers_undeploy_local(req->ctx->workers, r->id);
    struct json_object *body = json_object_new_object();
    for (size_t i = 0; i < json_object_array_length(nodes); i++) {
        struct json_object *stats = json_object_new_object();
        json_object_object_add(stats, r->id,
                               json_object_new_string(r->status == MLR_OK ? "undeployed"
                                                                          : "not_found"));
        struct json_object *node = json_object_new_object();
        json_object_object_add(node, "stats", stats); /* consumes stats */
        json_object_object_add(body, json_object_get_string(json_object_array_get_idx(nodes, i)),
                               node); /* consumes node */
    }
    json_object_put(nodes);
    api_send_json(req, 200, body);
}

static void on_holders_read(int status, const char *const *ids, int n, void *data)
{
    struct api_req *req = data;
    struct json_object *nodes = json_object_new_array();
    for (int i = 0; status == MLR_OK && i < n; i++)
        json_object_array_add(nodes, json_object_new_string(ids[i]));
    req->handler_data = nodes;
    const char *id = api_path_id(req, 0);
    int rc = store_model_undeploy(req->ctx->store, id, NULL, NULL, on_undeployed, req);
    if (rc != MLR_OK) {
        json_object_put(held_by(req));
        api_send_errorf(req, 500, "exception", "failed to undeploy: %s", mlr_strerror(rc));
    }
}

void api_h_model_undeploy(struct api_req *req)
{
    const char *id = api_path_id(req, 0);
    if (id == NULL) {
        struct json_object *stats = json_object_new_object();
        json_object_object_add(stats, "", json_object_new_string("not_found"));
        api_send_json(req, 200, undeploy_body(req, stats));
        return;
    }
    if (store_is_shared(req->ctx->store) &&
        store_model_nodes_get(req->ctx->store, id, on_holders_read, req) == MLR_OK)
        return;
    int rc = store_model_undeploy(req->ctx->store, id, NULL, NULL, on_undeployed, req);
    if (rc != MLR_OK)
        api_send_errorf(req, 500, "exception", "failed to undeploy: %s", mlr_strerror(rc));
}

/* Bulk undeploy: one UNDEPLOY_MODEL task per model, answered when all have finished. */
struct bulk_ctx {
    struct api_req *req;
    int pending;                  /* inserts or waits outstanding */
    int failed;                   /* a store error happened */
    struct json_object *stats;    /* model id -> status */
    struct json_object *tasks;    /* task id -> model id */
    struct json_object *holders;  /* several nodes: model id -> [node ids that held it] */
    int reads;                    /* holder reads outstanding */
};

/* {"<node>":{"stats":{"<model>": status}}} for every node that held each model (this node for
 * a model nobody reported holding, and always with one node). */
static struct json_object *bulk_body(struct bulk_ctx *b)
{
    struct json_object *body = json_object_new_object();
    json_object_object_foreach(b->stats, model, status)
    {
        struct json_object *nodes = NULL;
        int n = b->holders && json_object_object_get_ex(b->holders, model, &nodes)
                    ? (int)json_object_array_length(nodes)
                    : 0;
        for (int i = 0; i < (n ? n : 1); i++) {
            const char *node = n ? json_object_get_string(json_object_array_get_idx(nodes, i))
                                 : b->req->ctx->node_id;
            struct json_object *entry = NULL, *st = NULL;
            if (!json_object_object_get_ex(body, node, &entry)) {
                entry = json_object_new_object();
                json_object_object_add(entry, "stats", json_object_new_object());
                json_object_object_add(body, node, entry); /* consumes entry */
            }
            json_object_object_get_ex(entry, "stats", &st);
            json_object_object_add(st, model, json_object_get(status));
        }
    }
    return body;
}

static void bulk_maybe_answer(struct bulk_ctx *b)
{
    if (--b->pending > 0)
        return;
    if (b->failed)
        api_send_error(b->req, 500, "exception", "failed to record the undeploy tasks");
    else
        api_send_json(b->req, 200, bulk_body(b));
    json_object_put(b->stats);
    json_object_put(b->tasks);
    json_object_put(b->holders);
    free(b);
}

static void on_bulk_done(const char *task_id, const char *state, void *data)
{
    struct bulk_ctx *b = data;
    const char *model = json_object_get_string(json_object_object_get(b->tasks, task_id));
    const char *status = state == NULL                       ? "undeploying"
                         : strcmp(state, "COMPLETED") == 0 ? "undeployed"
                                                           : "not_found";
    json_object_object_add(b->stats, model, json_object_new_string(status));
    bulk_maybe_answer(b);
}

static void on_bulk_inserted(const struct store_write_result *r, void *data)
{
    struct bulk_ctx *b = data;
    if (r->status != MLR_OK) {
        b->failed = 1;
        bulk_maybe_answer(b);
        return;
    }
    workers_kick(b->req->ctx->workers);
    workers_wait(b->req->ctx->workers, r->id, DEPLOY_WAIT_MS, on_bulk_done, b);
}

/* Validates {"model_ids": [...]}. Returns the array or NULL after answering. */
static struct json_object *bulk_ids(struct api_req *req)
{
    struct json_object *ids = NULL;
    if (req->json == NULL || !json_object_object_get_ex(req->json, "model_ids", &ids) ||
        !json_object_is_type(ids, json_type_array) || json_object_array_length(ids) == 0) {
        api_send_error(req, 400, "illegal_argument_exception",
                       "Must set specific model ids to undeploy");
        return NULL;
    }
    for (size_t i = 0; i < json_object_array_length(ids); i++) {
        if (!json_object_is_type(json_object_array_get_idx(ids, i), json_type_string)) {
            api_send_error(req, 400, "illegal_argument_exception",
                           "model_ids must be an array of strings");
            return NULL;
        }
    }
    if (json_object_array_length(ids) > BULK_MAX) {
        api_send_errorf(req, 400, "illegal_argument_exception",
                        "at most %d model ids can be undeployed at once", BULK_MAX);
        return NULL;
    }
    return ids;
}

static void bulk_checked(struct api_req *req, int status, const char *denied);
static void bulk_start(struct bulk_ctx *b);
static void on_bulk_holders(int status, const char *const *nodes, int n, void *data);

/* One model's holders being read for a bulk undeploy. */
struct holder_read {
    struct bulk_ctx *b;
    char model[STORE_ID_MAX + 1];
};

/* Access control: every model named must be one the caller may use. */
void api_h_models_undeploy(struct api_req *req)
{
    struct json_object *ids = bulk_ids(req);
    if (ids == NULL)
        return;
    int n = (int)json_object_array_length(ids);
    const char **v = mlr_pool_alloc(&req->pool, sizeof(char *) * (size_t)n);
    for (int i = 0; i < n; i++)
        v[i] = json_object_get_string(json_object_array_get_idx(ids, (size_t)i));
    api_access_check_all(req, STORE_MODEL, v, n, bulk_checked);
}

static void bulk_checked(struct api_req *req, int status, const char *denied)
{
    if (status == MLR_EPERM) {
        api_send_errorf(req, 403, "status_exception",
                        "User doesn't have privilege to perform this operation on this model, "
                        "model ID %s",
                        denied);
        return;
    }
    if (status != MLR_OK) {
        api_send_errorf(req, 500, "exception", "cannot check access: %s", mlr_strerror(status));
        return;
    }
    struct json_object *ids = NULL;
    json_object_object_get_ex(req->json, "model_ids", &ids);
    size_t n = json_object_array_length(ids);
    struct bulk_ctx *b = mlr_xcalloc(1, sizeof(*b));
    b->req = req;
    b->stats = json_object_new_object();
    b->tasks = json_object_new_object();
    if (!store_is_shared(req->ctx->store)) {
        bulk_start(b);
        return;
    }
    /* Several nodes: who holds each model is read before the undeploys commit. */
    b->holders = json_object_new_object();
    b->reads = 1; /* until the loop below is done */
    for (size_t i = 0; i < n; i++) {
        struct holder_read *h = mlr_xcalloc(1, sizeof(*h));
        h->b = b;
        snprintf(h->model, sizeof(h->model), "%s",
                 json_object_get_string(json_object_array_get_idx(ids, i)));
        b->reads++;
        if (store_model_nodes_get(req->ctx->store, h->model, on_bulk_holders, h) != MLR_OK) {
            b->reads--;
            free(h);
        }
    }
    if (--b->reads == 0)
        bulk_start(b);
}

static void on_bulk_holders(int status, const char *const *nodes, int n, void *data)
{
    struct holder_read *h = data;
    struct bulk_ctx *b = h->b;
    if (status == MLR_OK && n > 0) {
        struct json_object *arr = json_object_new_array();
        for (int i = 0; i < n; i++)
            json_object_array_add(arr, json_object_new_string(nodes[i]));
        json_object_object_add(b->holders, h->model, arr); /* consumes arr */
    }
    free(h);
    if (--b->reads == 0)
        bulk_start(b);
}

static void bulk_start(struct bulk_ctx *b)
{
    struct api_req *req = b->req;
    struct json_object *ids = NULL;
    json_object_object_get_ex(req->json, "model_ids", &ids);
    size_t n = json_object_array_length(ids);
    b->pending = (int)n + 1; /* +1 until the loop below is done */
    for (size_t i = 0; i < n; i++) {
        const char *model = json_object_get_string(json_object_array_get_idx(ids, i));
        char task_id[MLR_ID_LEN + 1];
        struct json_object *task = NULL;
        int rc = mlr_id_new(task_id);
        if (rc == MLR_OK) {
            task = queue_task_doc_new(QUEUE_TASK_UNDEPLOY_MODEL, model, QUEUE_STATE_CREATED,
                                      req->ctx->node_id, 1, mlr_now_ms());
            json_object_object_add(b->tasks, task_id, json_object_new_string(model));
            rc = store_doc_insert(req->ctx->store, STORE_TASK, task_id, task, NULL,
                                  on_bulk_inserted, b);
        }
        json_object_put(task);
        if (rc != MLR_OK) {
            b->failed = 1;
            b->pending--;
        }
    }
    bulk_maybe_answer(b);
}

/* ---------------------------------- cancel ---------------------------------- */

static void on_cancelled(const struct store_write_result *r, void *data)
{
    struct api_req *req = data;
    if (r->status == MLR_OK) {
        workers_batch_cancelled(req->ctx->workers, r->id); /* a running batch job stops */
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "status", json_object_new_string("OK"));
        api_send_json(req, 200, o);
    } else if (r->status == MLR_ENOTFOUND) {
        api_send_error(req, 404, "status_exception", "Failed to find task");
    } else if (r->status == MLR_EBUSY) {
        api_send_error(req, 400, "status_exception",
                       "Task cannot be cancelled in running state. Try after some time.");
    } else if (r->status == MLR_ECONFLICT) {
        api_send_errorf(req, 400, "status_exception", "Task is already in a final state [%s]",
                        r->detail);
    } else {
        api_send_errorf(req, api_status_from_err(r->status), "exception", "failed to cancel: %s",
                        mlr_strerror(r->status));
    }
}

/* A BATCH_PREDICTION task is cancelled at its provider; any other task as before. */
static void on_batch_cancelled(int handled, const struct workers_error *e, void *data)
{
    struct api_req *req = data;
    if (handled && e) {
        api_send_workers_error(req, e);
    } else if (handled) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "status", json_object_new_string("OK"));
        api_send_json(req, 200, o);
    } else {
        int rc = store_task_cancel(req->ctx->store, api_path_id(req, 0), on_cancelled, req);
        if (rc != MLR_OK)
            api_send_errorf(req, 500, "exception", "failed to cancel: %s", mlr_strerror(rc));
    }
}

void api_h_task_cancel(struct api_req *req)
{
    const char *id = api_path_id(req, 0);
    if (id == NULL) {
        api_send_error(req, 404, "status_exception", "Failed to find task");
        return;
    }
    workers_batch_cancel(req->ctx->workers, id, on_batch_cancelled, req);
}
