/*
 * h_settings.c — `GET/PUT /_cluster/settings` (reference §2.1).
 *
 * PUT validates both sections completely before anything changes; the persistent part is then
 * committed through the store's group commit and only after that commit is the new snapshot
 * installed and the request acknowledged. A transient-only PUT touches no disk.
 */
#include "api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_h_settings_get(struct api_req *req)
{
    struct mlr_settings *s = workers_settings_get(req->ctx->workers);
    int flat = api_query_bool(req, "flat_settings");
    struct json_object *root = json_object_new_object();
    json_object_object_add(root, "persistent", mlr_settings_render(mlr_settings_persistent(s), flat));
    json_object_object_add(root, "transient", mlr_settings_render(mlr_settings_transient(s), flat));
    if (api_query_bool(req, "include_defaults")) {
        struct json_object *d = mlr_settings_defaults(s);
        json_object_object_add(root, "defaults", mlr_settings_render(d, flat));
        json_object_put(d);
    }
    mlr_settings_unref(s);
    api_send_json(req, 200, root);
}

struct put_ctx {
    struct api_req *req;
    struct json_object *persistent; /* normalised changes, owned */
    struct json_object *transient;  /* normalised changes, owned */
};

static void put_free(struct put_ctx *pc)
{
    json_object_put(pc->persistent);
    json_object_put(pc->transient);
    free(pc);
}

/* The PUT echo: what this request set (resets are not echoed), as strings. */
static struct json_object *echo(struct json_object *changes, int flat)
{
    struct json_object *set = json_object_new_object();
    if (changes) {
        json_object_object_foreach(changes, k, v)
        {
            if (v)
                json_object_object_add(set, k, json_object_get(v)); /* consumes the new ref */
        }
    }
    struct json_object *out = mlr_settings_render(set, flat);
    json_object_put(set);
    return out;
}

static void put_finish(int status, void *data)
{
    struct put_ctx *pc = data;
    struct api_req *req = pc->req;
    char err[512];
    if (status != MLR_OK) {
        api_send_errorf(req, api_status_from_err(status), "exception",
                        "failed to store settings: %s", mlr_strerror(status));
    } else if (workers_settings_apply(req->ctx->workers, pc->persistent, pc->transient, err,
                                      sizeof(err)) != MLR_OK) {
        api_send_error(req, 400, "illegal_argument_exception", err);
    } else {
        int flat = api_query_bool(req, "flat_settings");
        struct json_object *root = json_object_new_object();
        json_object_object_add(root, "acknowledged", json_object_new_boolean(1));
        json_object_object_add(root, "persistent", echo(pc->persistent, flat));
        json_object_object_add(root, "transient", echo(pc->transient, flat));
        api_send_json(req, 200, root);
    }
    put_free(pc);
}

/*
 * Access control needs users (spec §8): without any, turning it on is refused with ML Commons'
 * "Security plugin" messages (reference §3.1, §12.3). Returns 1 when refused.
 */
static int access_control_refused(const struct api_req *req, struct json_object *changes,
                                  char *err, size_t errlen)
{
    if (api_auth_enabled(req->ctx->auth))
        return 0;
    static const struct {
        enum mlr_setting_id id;
        const char *reason;
    } keys[] = {
        {MLR_S_MODEL_ACCESS_CONTROL,
         "You cannot specify model access control parameters because the Security plugin or "
         "model access control is disabled on your cluster."},
        {MLR_S_CONNECTOR_ACCESS_CONTROL,
         "You cannot specify connector access control parameters because the Security plugin or "
         "connector access control is disabled on your cluster."},
    };
    for (size_t i = 0; changes && i < sizeof(keys) / sizeof(keys[0]); i++) {
        struct json_object *v = NULL;
        if (json_object_object_get_ex(changes, mlr_settings_key(keys[i].id), &v) && v &&
            strcmp(json_object_get_string(v), "true") == 0) {
            snprintf(err, errlen, "%s", keys[i].reason);
            return 1;
        }
    }
    return 0;
}

/* Validates the body into @pc. Returns 0, or -1 with the reason in @err. */
static int parse_put(struct api_req *req, struct put_ctx *pc, char *err, size_t errlen)
{
    json_object_object_foreach(req->json, key, val)
    {
        struct json_object **dst = strcmp(key, "persistent") == 0  ? &pc->persistent
                                   : strcmp(key, "transient") == 0 ? &pc->transient
                                                                   : NULL;
        if (dst == NULL) {
            snprintf(err, errlen, "[cluster_update_settings_request] unknown field [%s]", key);
            return -1;
        }
        if (val && mlr_settings_normalize(val, key, dst, err, errlen) != MLR_OK)
            return -1;
    }
    if (access_control_refused(req, pc->persistent, err, errlen) ||
        access_control_refused(req, pc->transient, err, errlen))
        return -1;
    return workers_settings_check(req->ctx->workers, pc->persistent, pc->transient, err, errlen);
}

void api_h_settings_put(struct api_req *req)
{
    char err[512];
    struct put_ctx *pc = mlr_xcalloc(1, sizeof(*pc));
    pc->req = req;
    if (parse_put(req, pc, err, sizeof(err)) != 0) {
        put_free(pc);
        api_send_error(req, 400, "illegal_argument_exception", err);
        return;
    }
    int np = pc->persistent ? json_object_object_length(pc->persistent) : 0;
    int nt = pc->transient ? json_object_object_length(pc->transient) : 0;
    if (np + nt == 0) {
        put_free(pc);
        api_send_error(req, 400, "action_request_validation_exception",
                       "Validation Failed: 1: no settings to update;");
        return;
    }
    if (np == 0) {
        put_finish(MLR_OK, pc); /* nothing to persist */
        return;
    }
    int rc = store_settings_put(req->ctx->store, pc->persistent, put_finish, pc);
    if (rc != MLR_OK)
        put_finish(rc, pc);
}
