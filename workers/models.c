/*
 * models.c — model groups and remote models: validating register/update bodies and building the
 * documents we store, with ML Commons' field names, order and messages (reference §3, §6).
 *
 * The *_patch functions are store_patch_fn implementations: they run on the store's writer
 * thread inside the updating transaction, with the current document, so a read-modify-write is
 * atomic. They only read their argument and the document; the settings snapshot they use is an
 * immutable, reference-counted object, safe on any thread.
 */
#include "workers.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#define IAE "illegal_argument_exception"

#define fail workers_error_set

static struct json_object *get(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

/* A string member, or NULL when absent, null or not a scalar. */
static const char *get_str(struct json_object *o, const char *key)
{
    struct json_object *v = get(o, key);
    if (v == NULL || json_object_is_type(v, json_type_object) ||
        json_object_is_type(v, json_type_array))
        return NULL;
    return json_object_get_string(v);
}

static struct json_object *copy(struct json_object *v)
{
    struct json_object *out = NULL;
    json_object_deep_copy(v, &out, NULL);
    return out;
}

int workers_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 512 || !isalnum((unsigned char)id[0]))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!isalnum(c) && c != '_' && c != '-')
            return 0;
    }
    return 1;
}

/* ---------------------------------- model groups ---------------------------------- */

int workers_group_build(struct json_object *body, const struct workers_caller *who, int64_t now,
                        struct json_object **out, struct workers_error *e)
{
    const char *name = get_str(body, "name");
    if (name == NULL || *name == '\0')
        return fail(e, 400, IAE, "model group name must not be null");
    struct json_object *doc = json_object_new_object();
    json_object_object_add(doc, "name", json_object_new_string(name));
    json_object_object_add(doc, "latest_version", json_object_new_int(0));
    const char *desc = get_str(body, "description");
    if (desc)
        json_object_object_add(doc, "description", json_object_new_string(desc));
    if (workers_group_access_set(body, who, doc, e) != MLR_OK) {
        json_object_put(doc);
        return MLR_EINVAL;
    }
    json_object_object_add(doc, "created_time", json_object_new_int64(now));
    json_object_object_add(doc, "last_updated_time", json_object_new_int64(now));
    *out = doc;
    return MLR_OK;
}

int workers_group_patch(struct json_object *doc, char **credential, void *arg, char *err,
                        size_t errlen)
{
    struct workers_patch *p = arg;
    UNUSED(credential);
    if (workers_group_access_update(p->body, p->who, doc, &p->error) != MLR_OK) {
        snprintf(err, errlen, "%s", p->error.reason);
        return MLR_EINVAL;
    }
    /* Blank names and descriptions are ignored, as in ML Commons. */
    const char *name = get_str(p->body, "name"), *desc = get_str(p->body, "description");
    if (name && *name)
        json_object_object_add(doc, "name", json_object_new_string(name));
    if (desc && *desc)
        json_object_object_add(doc, "description", json_object_new_string(desc));
    json_object_object_add(doc, "last_updated_time", json_object_new_int64(p->now));
    return MLR_OK;
}

/* ---------------------------------- models ---------------------------------- */

static const char *const time_units[] = {"NANOSECONDS", "MICROSECONDS", "MILLISECONDS", "SECONDS",
                                         "MINUTES",     "HOURS",        "DAYS",         NULL};

/* rate_limiter: {"limit": "<positive number>", "unit": "<TimeUnit>"}, merged onto @base. */
static int check_rate_limiter(struct json_object *rl, struct json_object *base,
                              struct json_object **out, struct workers_error *e)
{
    if (!json_object_is_type(rl, json_type_object))
        return fail(e, 400, IAE, "rate_limiter must be an object");
    const char *limit = get_str(rl, "limit") ? get_str(rl, "limit") : get_str(base, "limit");
    const char *unit = get_str(rl, "unit") ? get_str(rl, "unit") : get_str(base, "unit");
    char *end = NULL;
    double v = limit ? strtod(limit, &end) : 0;
    if (limit && (end == limit || *end != '\0' || !(v > 0)))
        return fail(e, 400, IAE, "Limit field must be a positive number.");
    int known = unit == NULL;
    for (int i = 0; unit && time_units[i]; i++)
        known |= strcmp(unit, time_units[i]) == 0;
    if (!known)
        return fail(e, 400, IAE, "No enum constant java.util.concurrent.TimeUnit.%s", unit);
    struct json_object *o = json_object_new_object();
    if (limit)
        json_object_object_add(o, "limit", json_object_new_string(limit));
    if (unit)
        json_object_object_add(o, "unit", json_object_new_string(unit));
    *out = o;
    return MLR_OK;
}

/* deploy_setting: {"is_auto_deploy_enabled": bool, "model_ttl_minutes": number}, merged. */
static int check_deploy_setting(struct json_object *ds, struct json_object *base,
                                struct json_object **out, struct workers_error *e)
{
    if (!json_object_is_type(ds, json_type_object))
        return fail(e, 400, IAE, "deploy_setting must be an object");
    struct json_object *o = base ? copy(base) : json_object_new_object();
    struct json_object *auto_d = get(ds, "is_auto_deploy_enabled"), *ttl = get(ds,
                                                                              "model_ttl_minutes");
    if (auto_d && !json_object_is_type(auto_d, json_type_boolean)) {
        json_object_put(o);
        return fail(e, 400, IAE, "is_auto_deploy_enabled must be a boolean");
    }
    if (ttl && !json_object_is_type(ttl, json_type_int) &&
        !json_object_is_type(ttl, json_type_double)) {
        json_object_put(o);
        return fail(e, 400, IAE, "model_ttl_minutes must be a number");
    }
    if (auto_d)
        json_object_object_add(o, "is_auto_deploy_enabled", json_object_get(auto_d));
    if (ttl)
        json_object_object_add(o, "model_ttl_minutes", json_object_get(ttl));
    *out = o;
    return MLR_OK;
}

/* The optional members that register and update share, in the stored order. */
static int apply_options(struct json_object *body, struct json_object *doc,
                         struct workers_error *e)
{
    struct json_object *v, *built = NULL;
    if ((v = get(body, "model_config")) && !json_object_is_type(v, json_type_null))
        json_object_object_add(doc, "model_config", copy(v));
    if ((v = get(body, "deploy_setting")) && !json_object_is_type(v, json_type_null)) {
        if (check_deploy_setting(v, get(doc, "deploy_setting"), &built, e) != MLR_OK)
            return MLR_EINVAL;
        json_object_object_add(doc, "deploy_setting", built); /* consumes built */
    }
    if ((v = get(body, "is_enabled")) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_boolean))
            return fail(e, 400, IAE, "is_enabled must be a boolean");
        json_object_object_add(doc, "is_enabled", json_object_get(v));
    }
    if ((v = get(body, "rate_limiter")) && !json_object_is_type(v, json_type_null)) {
        if (check_rate_limiter(v, get(doc, "rate_limiter"), &built, e) != MLR_OK)
            return MLR_EINVAL;
        json_object_object_add(doc, "rate_limiter", built); /* consumes built */
    }
    return MLR_OK;
}

static int check_function_name(struct json_object *body, struct workers_error *e)
{
    const char *fn = get_str(body, "function_name");
    if (fn == NULL || strcasecmp(fn, "remote") != 0)
        return fail(e, 400, IAE,
                    "mlrelay serves remote models only: function_name must be \"remote\" (got "
                    "[%s])",
                    fn ? fn : "TEXT_EMBEDDING");
    return MLR_OK;
}

/* connector_id or an inline connector (validated like a standalone one). */
static int model_connector(struct json_object *body, struct mlr_settings *s, int64_t now,
                           struct workers_model *m, struct json_object *doc,
                           struct workers_error *e)
{
    const char *cid = get_str(body, "connector_id");
    struct json_object *conn = get(body, "connector");
    if (conn && json_object_is_type(conn, json_type_null))
        conn = NULL;
    if (cid && conn)
        return fail(e, 400, IAE, "Model cannot have both stand-alone connector and internal "
                                 "connector. Please check your input body.");
    if (cid) {
        m->connector_id = cid;
        json_object_object_add(doc, "connector_id", json_object_new_string(cid));
        return MLR_OK;
    }
    if (conn == NULL || !json_object_is_type(conn, json_type_object))
        return fail(e, 400, IAE, "You must provide connector content when creating a remote "
                                 "model without connector id!");
    /* An inline connector is governed by its model's group, never by its own access fields. */
    if (workers_access_fields_refuse(conn, 1, e) != MLR_OK)
        return MLR_EINVAL;
    struct json_object *cred = workers_credential_strings(get(conn, "credential"));
    struct json_object *built = NULL;
    if (workers_connector_build(conn, cred, s, now, now, &built, e) != MLR_OK) {
        json_object_put(cred);
        return MLR_EINVAL;
    }
    m->credential = cred;
    json_object_object_add(doc, "connector", built); /* consumes built */
    return MLR_OK;
}

static struct json_object *auto_group_doc(const char *name, const char *desc, int64_t now)
{
    struct json_object *g = json_object_new_object();
    json_object_object_add(g, "name", json_object_new_string(name));
    json_object_object_add(g, "latest_version", json_object_new_int(0));
    if (desc)
        json_object_object_add(g, "description", json_object_new_string(desc));
    json_object_object_add(g, "created_time", json_object_new_int64(now));
    json_object_object_add(g, "last_updated_time", json_object_new_int64(now));
    return g;
}

/* The fixed head of a model document; model_group_id/model_version are filled by the store. */
static struct json_object *model_head(const char *name, const char *desc)
{
    struct json_object *doc = json_object_new_object();
    json_object_object_add(doc, "name", json_object_new_string(name));
    json_object_object_add(doc, "model_group_id", json_object_new_string(""));
    json_object_object_add(doc, "algorithm", json_object_new_string("REMOTE"));
    json_object_object_add(doc, "model_version", json_object_new_string(""));
    if (desc)
        json_object_object_add(doc, "description", json_object_new_string(desc));
    json_object_object_add(doc, "model_state", json_object_new_string("REGISTERED"));
    return doc;
}

static int check_model_ids(struct json_object *body, struct workers_model *m,
                           struct workers_error *e)
{
    m->model_id = get_str(body, "model_id");
    if (m->model_id && !workers_id_valid(m->model_id))
        return fail(e, 400, IAE, "Invalid model id [%.600s]: it must match "
                                 "^[a-zA-Z0-9][a-zA-Z0-9_-]*$ and be at most 512 bytes",
                    m->model_id);
    m->group_id = get_str(body, "model_group_id");
    /* A reference only needs the id alphabet: ids made by other tools may start with '-'. */
    if (m->group_id && (strlen(m->group_id) > 512 || *m->group_id == '\0' ||
                        strspn(m->group_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                            "0123456789_-") != strlen(m->group_id)))
        return fail(e, 404, "status_exception", "Failed to find model group with the provided "
                                                "model group id: %.600s",
                    m->group_id);
    return MLR_OK;
}

int workers_model_build(struct json_object *body, const struct workers_caller *who,
                        struct mlr_settings *s, int64_t now, struct workers_model *m,
                        struct workers_error *e)
{
    memset(m, 0, sizeof(*m));
    const char *name = get_str(body, "name"), *desc = get_str(body, "description");
    if (check_function_name(body, e) != MLR_OK)
        return MLR_EINVAL;
    if (!mlr_settings_bool(s, MLR_S_REMOTE_INFERENCE_ENABLED))
        return fail(e, 400, "status_exception",
                    "Remote Inference is currently disabled. To enable it, update the setting "
                    "\"plugins.ml_commons.remote_inference_enabled\" to true.");
    if (name == NULL || *name == '\0')
        return fail(e, 400, IAE, "model name is null");
    if (check_model_ids(body, m, e) != MLR_OK)
        return MLR_EINVAL;
    /* Access fields describe the group a register creates; with a given group (or with access
     * control off) they are refused, as ML Commons does when it cannot apply them. */
    if ((m->group_id || who == NULL || who->user == NULL || !who->model_ac) &&
        workers_access_fields_refuse(body, 0, e) != MLR_OK)
        return MLR_EINVAL;
    m->doc = model_head(name, desc);
    if (apply_options(body, m->doc, e) != MLR_OK ||
        model_connector(body, s, now, m, m->doc, e) != MLR_OK) {
        workers_model_cleanup(m);
        return MLR_EINVAL;
    }
    json_object_object_add(m->doc, "created_time", json_object_new_int64(now));
    json_object_object_add(m->doc, "last_updated_time", json_object_new_int64(now));
    json_object_object_add(m->doc, "last_registered_time", json_object_new_int64(now));
    struct json_object *v;
    if ((v = get(body, "interface")) && !json_object_is_type(v, json_type_null))
        json_object_object_add(m->doc, "interface", copy(v));
    if ((v = get(body, "guardrails")) && !json_object_is_type(v, json_type_null))
        json_object_object_add(m->doc, "guardrails", copy(v));
    if (m->group_id == NULL) {
        m->group_doc = auto_group_doc(name, desc, now);
        if (workers_group_access_set(body, who, m->group_doc, e) != MLR_OK) {
            workers_model_cleanup(m);
            return MLR_EINVAL;
        }
    }
    return MLR_OK;
}

void workers_model_cleanup(struct workers_model *m)
{
    json_object_put(m->doc);
    json_object_put(m->group_doc);
    json_object_put(m->credential);
    memset(m, 0, sizeof(*m));
}

/* ---------------------------------- updates ---------------------------------- */

/* Fields of a connector update that replace the stored value (reference §4.6). */
static const char *const connector_replaced[] = {
    "name", "description", "version", "protocol", "client_config", "actions",
    "access_mode", "backend_roles", "add_all_backend_roles", NULL,
};

/*
 * Merges an update @body onto a stored connector document @base and re-validates the result:
 * replaced fields replace, parameters merge key by key, a non-empty credential replaces the map
 * (@new_cred: the caller's encrypted text, so only its keys matter here).
 */
static int merge_connector(struct json_object *base, struct json_object *body,
                           const char *old_cred, struct workers_patch *p, int standalone,
                           struct json_object **out)
{
    if (!standalone && workers_access_fields_refuse(body, 1, &p->error) != MLR_OK)
        return MLR_EINVAL;
    struct json_object *merged = copy(base);
    for (int i = 0; connector_replaced[i]; i++) {
        struct json_object *v = get(body, connector_replaced[i]);
        if (v)
            json_object_object_add(merged, connector_replaced[i], copy(v));
    }
    struct json_object *params = get(body, "parameters"), *mp = get(merged, "parameters");
    if (params && json_object_is_type(params, json_type_object) && mp) {
        json_object_object_foreach(params, k, v)
        {
            json_object_object_add(mp, k, copy(v));
        }
    } else if (params) {
        json_object_object_add(merged, "parameters", copy(params));
    }
    const char *cred_text = p->credential ? p->credential : old_cred;
    struct json_object *cred_keys = cred_text ? json_tokener_parse(cred_text) : NULL;
    struct json_object *created = get(base, "created_time");
    int rc = workers_connector_build(merged, cred_keys, p->settings,
                                     created ? json_object_get_int64(created) : p->now, p->now,
                                     out, &p->error);
    json_object_put(cred_keys);
    json_object_put(merged);
    if (rc == MLR_OK && standalone &&
        workers_connector_access_update(body, p->who, base, *out, &p->error) != MLR_OK) {
        json_object_put(*out);
        *out = NULL;
        rc = MLR_EINVAL;
    }
    return rc;
}

/* Replaces the members of @doc by those of @src, keeping @doc's identity. */
static void replace_members(struct json_object *doc, struct json_object *src)
{
    while (json_object_object_length(doc) > 0) {
        struct json_object_iterator it = json_object_iter_begin(doc);
        json_object_object_del(doc, json_object_iter_peek_name(&it));
    }
    json_object_object_foreach(src, k, v)
    {
        json_object_object_add(doc, k, json_object_get(v));
    }
}

static int refuse(struct workers_patch *p, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s", p->error.reason);
    return MLR_EINVAL;
}

int workers_connector_patch(struct json_object *doc, char **credential, void *arg, char *err,
                            size_t errlen)
{
    struct workers_patch *p = arg;
    struct json_object *built = NULL;
    if (merge_connector(doc, p->body, *credential, p, 1, &built) != MLR_OK)
        return refuse(p, err, errlen);
    replace_members(doc, built);
    json_object_put(built);
    if (p->credential) {
        free(*credential);
        *credential = mlr_xstrdup(p->credential);
    }
    return MLR_OK;
}

/* The connector part of a model update: switch connector_id, or patch the inline connector. */
static int patch_model_connector(struct json_object *doc, char **credential,
                                 struct workers_patch *p)
{
    const char *cid = get_str(p->body, "connector_id");
    struct json_object *conn = get(p->body, "connector");
    if (cid && conn)
        return fail(&p->error, 400, IAE, "Model cannot have both stand-alone connector and "
                                         "internal connector. Please check your update input "
                                         "body.");
    if (cid) {
        if (get(doc, "connector_id") == NULL)
            return fail(&p->error, 400, IAE, "This remote does not have a connector_id field, "
                                             "maybe it uses an internal connector.");
        json_object_object_add(doc, "connector_id", json_object_new_string(cid));
    }
    if (conn == NULL)
        return MLR_OK;
    struct json_object *base = get(doc, "connector"), *built = NULL;
    if (base == NULL)
        return fail(&p->error, 400, IAE, "Cannot update connector settings for this model. The "
                                         "model was created with a connector_id and does not have "
                                         "an inline connector.");
    if (merge_connector(base, conn, *credential, p, 0, &built) != MLR_OK)
        return MLR_EINVAL;
    json_object_object_add(doc, "connector", built); /* consumes built */
    if (p->credential) {
        free(*credential);
        *credential = mlr_xstrdup(p->credential);
    }
    return MLR_OK;
}

static void patch_interface(struct json_object *doc, struct json_object *iface)
{
    if (iface == NULL)
        return;
    int cleared = json_object_is_type(iface, json_type_null) ||
                  (json_object_is_type(iface, json_type_object) &&
                   get(iface, "input") == NULL && get(iface, "output") == NULL);
    if (cleared)
        json_object_object_del(doc, "interface");
    else
        json_object_object_add(doc, "interface", copy(iface));
}

int workers_model_patch(struct json_object *doc, char **credential, void *arg, char *err,
                        size_t errlen)
{
    struct workers_patch *p = arg;
    const char *state = get_str(doc, "model_state");
    if (state && strcmp(state, "DEPLOYING") == 0) {
        fail(&p->error, 409, "status_exception", "Model is deploying. Please wait for the model "
                                                 "to complete deployment. model ID %s",
             p->id);
        return refuse(p, err, errlen);
    }
    const char *gid = get_str(p->body, "model_group_id");
    if (gid && strcmp(gid, get_str(doc, "model_group_id") ? get_str(doc, "model_group_id") : "")) {
        fail(&p->error, 400, IAE, "Moving a model to another model group is not supported by "
                                  "mlrelay yet");
        return refuse(p, err, errlen);
    }
    if (patch_model_connector(doc, credential, p) != MLR_OK ||
        apply_options(p->body, doc, &p->error) != MLR_OK)
        return refuse(p, err, errlen);
    const char *name = get_str(p->body, "name"), *desc = get_str(p->body, "description");
    if (name && *name)
        json_object_object_add(doc, "name", json_object_new_string(name));
    if (desc && *desc)
        json_object_object_add(doc, "description", json_object_new_string(desc));
    patch_interface(doc, get(p->body, "interface"));
    if (get(p->body, "guardrails"))
        json_object_object_add(doc, "guardrails", copy(get(p->body, "guardrails")));
    json_object_object_add(doc, "last_updated_time", json_object_new_int64(p->now));
    return MLR_OK;
}
