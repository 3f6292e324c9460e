/*
 * h_docs.c — the document endpoints of model groups, connectors, models and tasks: GET, DELETE,
 * _search (shared by all four, the kind comes from the route row), and the create/update
 * handlers of each resource.
 *
 * Each handler validates through workers/ (which knows ML Commons' rules and messages), calls one
 * store function, and maps the result to ML Commons' response. The store callback is where the
 * response is sent, so nothing is acknowledged before its transaction committed. Loop thread.
 */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

/* What ML Commons says about each kind of document. */
static const struct kind_text {
    const char *label;          /* "<label> id '<id>' already exists" */
    const char *missing;        /* unknown id: this text, then the id when with_id */
    int with_id;
    const char *index_missing;  /* no document of this kind exists yet */
    const char *delete_missing; /* NULL: a 404 write response with result "not_found" */
} texts[STORE__KINDS] = {
    [STORE_MODEL_GROUP] = {"model group",
                           "Failed to find model group with the provided model group id: ", 1,
                           "Failed to find model group index", NULL},
    [STORE_CONNECTOR] = {"connector", "Failed to find connector with the provided connector id: ",
                         1, "Failed to find connector", NULL},
    [STORE_MODEL] = {"model", "Failed to find model with the provided model id: ", 1,
                     "Fail to find model", "Failed to find model"},
    [STORE_TASK] = {"task", "Failed to find task", 0, "Failed to find task", "Failed to find task"},
};

static enum store_kind kind_of(const struct api_req *req)
{
    return (enum store_kind)req->route->kind;
}

static void send_missing(struct api_req *req, const char *id, int index_empty)
{
    const struct kind_text *t = &texts[kind_of(req)];
    if (index_empty)
        api_send_error(req, 404, "status_exception", t->index_missing);
    else
        api_send_errorf(req, 404, "status_exception", "%s%s", t->missing, t->with_id ? id : "");
}

/* ---------------------------------- GET ---------------------------------- */

static void on_get(int status, struct store_doc *d, void *data)
{
    struct api_req *req = data;
    if (status == MLR_ENOTFOUND) {
        send_missing(req, d->id, d->kind_empty);
    } else if (status != MLR_OK) {
        api_send_errorf(req, 500, "exception", "failed to read: %s", mlr_strerror(status));
    } else {
        api_send_json(req, 200, d->doc);
        d->doc = NULL; /* api_send_json consumed the document */
    }
}

void api_h_doc_get(struct api_req *req)
{
    const char *id = api_path_id(req, 0);
    if (id == NULL) {
        send_missing(req, "", 0);
        return;
    }
    int rc = store_doc_get(req->ctx->store, kind_of(req), id, 0, on_get, req);
    if (rc != MLR_OK)
        api_send_errorf(req, 500, "exception", "failed to read: %s", mlr_strerror(rc));
}

/* ---------------------------------- DELETE ---------------------------------- */

static void delete_refused(struct api_req *req, const struct store_write_result *r)
{
    switch (kind_of(req)) {
    case STORE_MODEL_GROUP:
        api_send_error(req, 409, "status_exception",
                       "Cannot delete the model group when it has associated model versions");
        return;
    case STORE_CONNECTOR:
        api_send_errorf(req, 409, "status_exception",
                        "%d models are still using this connector, please delete or update the "
                        "models first: %s",
                        r->count, r->detail);
        return;
    case STORE_MODEL:
        api_send_error(req, 400, "status_exception",
                       "Model cannot be deleted in deploying or deployed state. Try undeploy "
                       "model first then delete");
        return;
    default:
        api_send_error(req, 400, "exception",
                       "Task cannot be deleted in running state. Try after some time.");
    }
}

static void on_delete(const struct store_write_result *r, void *data)
{
    struct api_req *req = data;
    const struct kind_text *t = &texts[kind_of(req)];
    if (r->status == MLR_OK)
        api_send_write(req, 200, kind_of(req), r->id, r->version, r->seq_no, "deleted");
    else if (r->status == MLR_ENOTFOUND && t->delete_missing)
        api_send_error(req, 404, "status_exception", t->delete_missing);
    else if (r->status == MLR_ENOTFOUND)
        api_send_write(req, 404, kind_of(req), r->id, 1, -2, "not_found");
    else if (r->status == MLR_ECONFLICT || r->status == MLR_EBUSY)
        delete_refused(req, r);
    else
        api_send_errorf(req, api_status_from_err(r->status), "exception", "failed to delete: %s",
                        mlr_strerror(r->status));
}

void api_h_doc_delete(struct api_req *req)
{
    const char *id = api_path_id(req, 0);
    if (id == NULL) {
        send_missing(req, "", 0);
        return;
    }
    int rc = store_doc_delete(req->ctx->store, kind_of(req), id, on_delete, req);
    if (rc != MLR_OK)
        api_send_errorf(req, 500, "exception", "failed to delete: %s", mlr_strerror(rc));
}

/* ---------------------------------- _search ---------------------------------- */

static void on_search(int status, struct json_object *response, void *data)
{
    struct api_req *req = data;
    if (status != MLR_OK)
        api_send_errorf(req, 500, "exception", "search failed: %s", mlr_strerror(status));
    else
        api_send_json(req, 200, json_object_get(response));
}

void api_h_doc_search(struct api_req *req)
{
    const char *type = "parsing_exception";
    char err[1024] = "";
    int rc = store_doc_search(req->ctx->store, kind_of(req), req->json, api_req_access(req),
                              on_search, req, &type, err, sizeof(err));
    if (rc == MLR_EINVAL)
        api_send_error(req, 400, type, err);
    else if (rc != MLR_OK)
        api_send_errorf(req, 500, "exception", "search failed: %s", mlr_strerror(rc));
}

/* ---------------------------------- shared by creates ---------------------------------- */

/* The id a create uses: the body's custom id (validated) or a fresh one. Returns 0 or -1 after
 * answering the request. */
static int create_id(struct api_req *req, const char *field, char *out, size_t outlen)
{
    const char *custom = NULL;
    struct json_object *v = NULL;
    if (json_object_object_get_ex(req->json, field, &v) && v)
        custom = json_object_get_string(v);
    if (custom && !workers_id_valid(custom)) {
        api_send_errorf(req, 400, "illegal_argument_exception",
                        "Invalid %s [%.600s]: it must match ^[a-zA-Z0-9][a-zA-Z0-9_-]*$ and be at "
                        "most 512 bytes",
                        field, custom);
        return -1;
    }
    if (custom) {
        snprintf(out, outlen, "%s", custom);
        return 0;
    }
    char id[MLR_ID_LEN + 1];
    if (mlr_id_new(id) != MLR_OK) {
        api_send_error(req, 500, "exception", "cannot generate an id");
        return -1;
    }
    snprintf(out, outlen, "%s", id);
    return 0;
}

/* Answers a create that failed in the store; returns 1 when it did. */
static int create_failed(struct api_req *req, enum store_kind kind,
                         const struct store_write_result *r)
{
    if (r->status == MLR_OK)
        return 0;
    if (r->status == MLR_EEXIST)
        api_send_errorf(req, 409, "status_exception", "%s id '%s' already exists",
                        texts[kind].label, r->id);
    else
        api_send_errorf(req, api_status_from_err(r->status), "exception", "failed to store: %s",
                        mlr_strerror(r->status));
    return 1;
}

static int64_t now_ms(void)
{
    return mlr_now_ms();
}

/* ---------------------------------- updates (shared) ---------------------------------- */

struct update_ctx {
    struct api_req *req;
    struct workers_patch patch;   /* argument of the patch run by the store's writer */
    int64_t version;              /* of the committed update */
    int64_t seq_no;
};

static void update_free(struct update_ctx *u)
{
    mlr_settings_unref(u->patch.settings);
    free(u->patch.credential);
    json_object_put(u->patch.body);
    free(u);
}

static void on_reloaded(void *data)
{
    struct update_ctx *u = data;
    api_send_write(u->req, 200, kind_of(u->req), api_path_id(u->req, 0), u->version, u->seq_no,
                   "updated");
    update_free(u);
}

static void on_updated(const struct store_write_result *r, void *data)
{
    struct update_ctx *u = data;
    struct api_req *req = u->req;
    enum store_kind kind = kind_of(req);
    if (r->status == MLR_OK && kind == STORE_MODEL_GROUP) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "status", json_object_new_string("Updated"));
        api_send_json(req, 200, o);
    } else if (r->status == MLR_OK) {
        /* Deployments built from the old version are rebuilt before we answer, so calls
         * made after this response use the new one (in-flight calls keep the old). */
        u->version = r->version;
        u->seq_no = r->seq_no;
        workers_reload(req->ctx->workers, kind == STORE_CONNECTOR ? r->id : NULL,
                       kind == STORE_MODEL ? r->id : NULL, on_reloaded, u);
        return;
    } else if (r->status == MLR_ENOTFOUND && strncmp(r->detail, "connector:", 10) == 0) {
        api_send_errorf(req, 404, "status_exception", "Failed to find connector:%s",
                        r->detail + 10);
    } else if (r->status == MLR_ENOTFOUND && kind == STORE_MODEL) {
        api_send_errorf(req, 404, "status_exception",
                        "Failed to find model to update with the provided model id: %s", r->id);
    } else if (r->status == MLR_ENOTFOUND) {
        send_missing(req, r->id, 0);
    } else if (r->status == MLR_ECONFLICT) {
        api_send_errorf(req, 400, "illegal_argument_exception",
                        "The name you provided is already being used by another model with ID: "
                        "%s. Please provide a different name",
                        r->id);
    } else if (r->status == MLR_EINVAL) {
        api_send_workers_error(req, &u->patch.error);
    } else {
        api_send_errorf(req, api_status_from_err(r->status), "exception", "failed to update: %s",
                        mlr_strerror(r->status));
    }
    update_free(u);
}

/* Starts an update of the document named by the path with @patch; @credential (heap, may be
 * NULL) is the new encrypted credential map, owned from here on. */
static void start_update(struct api_req *req, store_patch_fn patch, char *credential)
{
    const char *id = api_path_id(req, 0);
    struct update_ctx *u = mlr_xcalloc(1, sizeof(*u));
    u->req = req;
    u->patch.id = id ? id : "";
    u->patch.body = json_object_get(req->json);
    u->patch.settings = workers_settings_get(req->ctx->workers);
    u->patch.credential = credential; /* the update context owns it now */
    u->patch.now = now_ms();
    u->patch.who = api_req_caller(req);
    struct store_write_result missing = {.status = MLR_ENOTFOUND, .id = u->patch.id, .detail = ""};
    if (id == NULL) {
        on_updated(&missing, u);
        return;
    }
    int rc = store_doc_update(req->ctx->store, kind_of(req), id, patch, &u->patch, on_updated, u);
    if (rc != MLR_OK) {
        struct store_write_result failed = {.status = rc, .id = id, .detail = ""};
        on_updated(&failed, u);
    }
}

/* Seals the "credential" member of @obj (when it is a non-empty object) for @owner. Returns 0
 * with *out (NULL when there is nothing to seal), or -1 after answering the request. */
static int seal_credential(struct api_req *req, struct json_object *obj, const char *owner,
                           char **out)
{
    struct json_object *cred = NULL;
    *out = NULL;
    if (!json_object_object_get_ex(obj, "credential", &cred) ||
        !json_object_is_type(cred, json_type_object) || json_object_object_length(cred) == 0)
        return 0;
    struct json_object *plain = workers_credential_strings(cred);
    int rc = workers_credential_encrypt(req->ctx->master_key, owner, plain, out);
    json_object_put(plain);
    if (rc != MLR_OK) {
        api_send_errorf(req, 500, "exception", "cannot encrypt the credential: %s",
                        mlr_strerror(rc));
        return -1;
    }
    return 0;
}

/* ---------------------------------- model groups ---------------------------------- */

static void on_group_registered(const struct store_write_result *r, void *data)
{
    struct api_req *req = data;
    if (r->status == MLR_ECONFLICT) {
        api_send_errorf(req, 400, "illegal_argument_exception",
                        "The name you provided is already being used by a model group with ID: "
                        "%s.",
                        r->id);
        return;
    }
    if (create_failed(req, STORE_MODEL_GROUP, r))
        return;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "model_group_id", json_object_new_string(r->id));
    json_object_object_add(o, "status", json_object_new_string("CREATED"));
    api_send_json(req, 200, o);
}

void api_h_group_register(struct api_req *req)
{
    struct workers_error e;
    struct json_object *doc = NULL;
    char id[STORE_ID_MAX + 1];
    if (workers_group_build(req->json, api_req_caller(req), now_ms(), &doc, &e) != MLR_OK) {
        api_send_workers_error(req, &e);
        return;
    }
    if (create_id(req, "model_group_id", id, sizeof(id)) == 0) {
        int rc = store_doc_insert(req->ctx->store, STORE_MODEL_GROUP, id, doc, NULL,
                                  on_group_registered, req);
        if (rc != MLR_OK)
            api_send_errorf(req, 500, "exception", "failed to store: %s", mlr_strerror(rc));
    }
    json_object_put(doc);
}

void api_h_group_update(struct api_req *req)
{
    start_update(req, workers_group_patch, NULL);
}

/* ---------------------------------- connectors ---------------------------------- */

static void on_connector_created(const struct store_write_result *r, void *data)
{
    struct api_req *req = data;
    if (create_failed(req, STORE_CONNECTOR, r))
        return;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "connector_id", json_object_new_string(r->id));
    api_send_json(req, 200, o);
}

void api_h_connector_create(struct api_req *req)
{
    struct workers_error e;
    struct json_object *doc = NULL, *cred = NULL;
    char id[STORE_ID_MAX + 1], owner[STORE_ID_MAX + 16], *sealed = NULL;
    struct mlr_settings *s = workers_settings_get(req->ctx->workers);
    json_object_object_get_ex(req->json, "credential", &cred);
    struct json_object *keys = workers_credential_strings(cred);
    int rc = workers_connector_build(req->json, keys, s, now_ms(), now_ms(), &doc, &e);
    json_object_put(keys);
    mlr_settings_unref(s);
    if (rc == MLR_OK && workers_connector_access_set(req->json, api_req_caller(req), doc, &e) !=
                            MLR_OK) {
        json_object_put(doc);
        rc = MLR_EINVAL;
    }
    if (rc != MLR_OK) {
        api_send_workers_error(req, &e);
        return;
    }
    if (create_id(req, "connector_id", id, sizeof(id)) == 0) {
        snprintf(owner, sizeof(owner), "connector:%s", id);
        if (seal_credential(req, req->json, owner, &sealed) == 0) {
            rc = store_doc_insert(req->ctx->store, STORE_CONNECTOR, id, doc, sealed,
                                  on_connector_created, req);
            if (rc != MLR_OK)
                api_send_errorf(req, 500, "exception", "failed to store: %s", mlr_strerror(rc));
        }
    }
    free(sealed);
    json_object_put(doc);
}

void api_h_connector_update(struct api_req *req)
{
    char owner[STORE_ID_MAX + 16], *sealed = NULL;
    const char *id = api_path_id(req, 0);
    snprintf(owner, sizeof(owner), "connector:%s", id ? id : "");
    if (seal_credential(req, req->json, owner, &sealed) == 0)
        start_update(req, workers_connector_patch, sealed);
}

/* ---------------------------------- models ---------------------------------- */

static void on_model_registered(const struct store_write_result *r, void *data)
{
    struct api_req *req = data;
    struct json_object *v = NULL;
    if (r->status == MLR_ENOTFOUND && strcmp(r->detail, "connector") == 0) {
        json_object_object_get_ex(req->json, "connector_id", &v);
        api_send_errorf(req, 404, "status_exception", "Failed to find connector:%s",
                        json_object_get_string(v));
        return;
    }
    if (r->status == MLR_ENOTFOUND) {
        json_object_object_get_ex(req->json, "model_group_id", &v);
        api_send_errorf(req, 404, "m_l_resource_not_found_exception",
                        "Model Group Response is empty for %s", json_object_get_string(v));
        return;
    }
    if (create_failed(req, STORE_MODEL, r))
        return;
    workers_kick(req->ctx->workers);
    if (api_query_bool(req, "deploy")) {
        api_deploy_chain(req, r->id, r->task_id);
        return;
    }
    api_send_registered(req, r->task_id, r->id);
}

void api_send_registered(struct api_req *req, const char *task_id, const char *model_id)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "task_id", json_object_new_string(task_id));
    json_object_object_add(o, "status", json_object_new_string("CREATED"));
    json_object_object_add(o, "model_id", json_object_new_string(model_id));
    api_send_json(req, 200, o);
}

/* Fresh ids for everything a registration may create. Returns 0 or -1 after answering. */
static int register_ids(struct api_req *req, const struct workers_model *m, char *model_id,
                        char *group_id, char *task_id)
{
    if (mlr_id_new(group_id) != MLR_OK || mlr_id_new(task_id) != MLR_OK ||
        (m->model_id == NULL && mlr_id_new(model_id) != MLR_OK)) {
        api_send_error(req, 500, "exception", "cannot generate an id");
        return -1;
    }
    if (m->model_id)
        snprintf(model_id, STORE_ID_MAX + 1, "%s", m->model_id);
    return 0;
}

static void register_model(struct api_req *req, struct workers_model *m, const char *model_id,
                           const char *group_id, const char *task_id, const char *sealed)
{
    struct json_object *task = queue_task_doc_new(QUEUE_TASK_REGISTER_MODEL, model_id,
                                                  QUEUE_STATE_CREATED, req->ctx->node_id, 0,
                                                  now_ms());
    struct store_model_register r = {
        .model_id = model_id,
        .group_id = m->group_id,
        .group_new_id = group_id,
        .group_doc = m->group_doc,
        .connector_id = m->connector_id,
        .model_doc = m->doc,
        .credential = sealed,
        .task_id = task_id,
        .task_doc = task,
    };
    int rc = store_model_register(req->ctx->store, &r, on_model_registered, req);
    if (rc != MLR_OK)
        api_send_errorf(req, 500, "exception", "failed to store: %s", mlr_strerror(rc));
    json_object_put(task);
}

static void register_checked(struct api_req *req)
{
    struct workers_error e;
    struct workers_model m;
    char model_id[STORE_ID_MAX + 1], group_id[MLR_ID_LEN + 1], task_id[MLR_ID_LEN + 1];
    char owner[STORE_ID_MAX + 16], *sealed = NULL;
    struct mlr_settings *s = workers_settings_get(req->ctx->workers);
    int rc = workers_model_build(req->json, api_req_caller(req), s, now_ms(), &m, &e);
    mlr_settings_unref(s);
    if (rc != MLR_OK) {
        api_send_workers_error(req, &e);
        return;
    }
    if (register_ids(req, &m, model_id, group_id, task_id) == 0) {
        snprintf(owner, sizeof(owner), "model:%s", model_id);
        rc = m.credential ? workers_credential_encrypt(req->ctx->master_key, owner, m.credential,
                                                       &sealed)
                          : MLR_OK;
        if (rc != MLR_OK)
            api_send_errorf(req, 500, "exception", "cannot encrypt the credential: %s",
                            mlr_strerror(rc));
        else
            register_model(req, &m, model_id, group_id, task_id, sealed);
    }
    free(sealed);
    workers_model_cleanup(&m);
}

static const char *body_str(struct api_req *req, const char *key)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(req->json, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

static void on_connector_checked(int status, void *data)
{
    struct api_req *req = data;
    if (status == MLR_EPERM)
        api_send_errorf(req, 400, "illegal_argument_exception",
                        "You don't have permission to use the connector provided, connector id: %s",
                        body_str(req, "connector_id"));
    else if (status != MLR_OK && status != MLR_ENOTFOUND)
        api_send_errorf(req, 500, "exception", "cannot check access: %s", mlr_strerror(status));
    else
        register_checked(req);
}

/* Access control: registering needs the model group and the connector it names (§12). */
static void on_group_checked(int status, void *data)
{
    struct api_req *req = data;
    const char *cid = body_str(req, "connector_id");
    if (status == MLR_EPERM) {
        api_send_error(req, 400, "illegal_argument_exception",
                       "You don't have permissions to perform this operation on this model.");
        return;
    }
    if (status != MLR_OK && status != MLR_ENOTFOUND) {
        api_send_errorf(req, 500, "exception", "cannot check access: %s", mlr_strerror(status));
        return;
    }
    int rc = cid ? store_access_check(req->ctx->store, STORE_CONNECTOR, cid, api_req_access(req),
                                      on_connector_checked, req)
                 : MLR_OK;
    if (cid == NULL)
        register_checked(req);
    else if (rc != MLR_OK)
        on_connector_checked(rc, req);
}

void api_h_model_register(struct api_req *req)
{
    const char *gid = body_str(req, "model_group_id");
    int rc = gid ? store_access_check(req->ctx->store, STORE_MODEL_GROUP, gid,
                                      api_req_access(req), on_group_checked, req)
                 : MLR_OK;
    if (gid == NULL || rc != MLR_OK)
        on_group_checked(rc, req);
}

void api_h_model_update(struct api_req *req)
{
    char owner[STORE_ID_MAX + 16], *sealed = NULL;
    struct json_object *conn = NULL;
    const char *id = api_path_id(req, 0);
    snprintf(owner, sizeof(owner), "model:%s", id ? id : "");
    json_object_object_get_ex(req->json, "connector", &conn);
    if (conn == NULL || seal_credential(req, conn, owner, &sealed) == 0)
        start_update(req, workers_model_patch, sealed);
}
