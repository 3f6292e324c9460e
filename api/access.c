/*
 * access.c — the caller of a request as the layers below need it, and the access guards of the
 * route table (reference §12).
 *
 * A route that names a document (GET/PUT/DELETE of a model group, connector or model, deploy,
 * undeploy, predict, ...) may carry a guard: when access control restricts the caller, the
 * dispatcher first asks the store whether the caller may use that document (one indexed read,
 * store_access_check()) and answers the route's refusal if not; otherwise, and whenever nothing
 * is restricted (no users, an admin, access control off), the handler runs as if there were no
 * guard. An unknown id passes the guard: the handler answers its usual 404.
 *
 * Loop thread.
 */
#include "api_int.h"

#include <string.h>

#include <json-c/json.h>

const struct workers_caller *api_req_caller(struct api_req *req)
{
    if (req->caller_ready)
        return &req->caller;
    req->caller_ready = 1;
    memset(&req->caller, 0, sizeof(req->caller));
    req->caller.user = req->user;
    if (req->user) {
        struct mlr_settings *s = workers_settings_get(req->ctx->workers);
        req->caller.model_ac = mlr_settings_bool(s, MLR_S_MODEL_ACCESS_CONTROL);
        req->caller.connector_ac = mlr_settings_bool(s, MLR_S_CONNECTOR_ACCESS_CONTROL);
        mlr_settings_unref(s);
    }
    return &req->caller;
}

const struct store_access *api_req_access(struct api_req *req)
{
    const struct workers_caller *who = api_req_caller(req);
    if (who->user == NULL || who->user->admin || (!who->model_ac && !who->connector_ac))
        return NULL;
    if (req->access.user == NULL) {
        struct json_object *roles = json_object_new_array();
        for (int i = 0; i < who->user->nbackend_roles; i++)
            json_object_array_add(roles, json_object_new_string(who->user->backend_roles[i]));
        req->access.user = who->user->name;
        req->access.backend_roles =
            mlr_pool_strdup(&req->pool, json_object_to_json_string_ext(roles,
                                                                       JSON_C_TO_STRING_PLAIN));
        json_object_put(roles);
        req->access.groups = who->model_ac;
        req->access.connectors = who->connector_ac;
    }
    return &req->access;
}

/* ---------------------------------- route guards ---------------------------------- */

static void guard_refuse(struct api_req *req, const struct api_guard *g, const char *id)
{
    if (g->append_id)
        api_send_errorf(req, g->status, g->type, "%s%s", g->reason, id);
    else
        api_send_error(req, g->status, g->type, g->reason);
}

static void on_guard_checked(int status, void *data)
{
    struct api_req *req = data;
    const struct api_guard *g = req->route->guard;
    if (status == MLR_EPERM) {
        guard_refuse(req, g, req->params[g->param]);
        return;
    }
    if (status != MLR_OK && status != MLR_ENOTFOUND) {
        api_send_errorf(req, 500, "exception", "cannot check access: %s", mlr_strerror(status));
        return;
    }
    req->route->handler(req);
}

void api__guard_then_handle(struct api_req *req)
{
    const struct api_guard *g = req->route->guard;
    const struct store_access *acc = g ? api_req_access(req) : NULL;
    const char *id = g && g->param < req->nparams ? req->params[g->param] : NULL;
    if (acc == NULL || id == NULL) {
        req->route->handler(req);
        return;
    }
    int rc = store_access_check(req->ctx->store, (enum store_kind)g->kind, id, acc,
                                on_guard_checked, req);
    if (rc != MLR_OK)
        api_send_errorf(req, 500, "exception", "cannot check access: %s", mlr_strerror(rc));
}

/* ---------------------------------- several documents ---------------------------------- */

struct multi_check {
    struct api_req *req;
    int pending;
    const char *denied;            /* the first id refused (request pool) */
    int failed;                    /* a check could not be made */
    api_checked_cb done;
};

static void multi_step(struct multi_check *m)
{
    if (--m->pending > 0)
        return;
    m->done(m->req, m->failed ? MLR_EIO : m->denied ? MLR_EPERM : MLR_OK, m->denied);
}

static void on_one_checked(int status, void *data)
{
    struct multi_check **slot = data, *m = *slot;
    if (status == MLR_EPERM && m->denied == NULL)
        m->denied = slot[1] ? (const char *)slot[1] : "";
    else if (status != MLR_OK && status != MLR_EPERM && status != MLR_ENOTFOUND)
        m->failed = 1;
    multi_step(m);
}

void api_access_check_all(struct api_req *req, enum store_kind kind, const char *const *ids,
                          int n, api_checked_cb done)
{
    const struct store_access *acc = api_req_access(req);
    struct multi_check *m = mlr_pool_alloc(&req->pool, sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->req = req;
    m->done = done;
    m->pending = 1;
    for (int i = 0; acc && i < n; i++) {
        /* Each check's data: the shared state and the id it is about. */
        void **slot = mlr_pool_alloc(&req->pool, 2 * sizeof(void *));
        slot[0] = m;
        slot[1] = (void *)ids[i];
        m->pending++;
        int rc = store_access_check(req->ctx->store, kind, ids[i], acc, on_one_checked, slot);
        if (rc != MLR_OK) {
            m->failed = 1;
            m->pending--;
        }
    }
    multi_step(m);
}
