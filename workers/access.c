/*
 * access.c — the access fields of model groups and connectors (reference §3.1, §3.4, §12.2,
 * §12.3): who owns a document, its access mode (public, private, restricted) and, for restricted
 * ones, the backend roles that open it. Decisions about *reading* a document live in store/
 * (one SQL predicate per kind); this file validates what callers write, with ML Commons' rules
 * and messages. Pure; any thread.
 */
#include "workers_int.h"

#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#define IAE "illegal_argument_exception"

static const char group_off_msg[] =
    "You cannot specify model access control parameters because the Security plugin or model "
    "access control is disabled on your cluster.";
static const char connector_off_msg[] =
    "You cannot specify connector access control parameters because the Security plugin or "
    "connector access control is disabled on your cluster.";

static struct json_object *member(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static int has_access_fields(struct json_object *body)
{
    return member(body, "access_mode") || member(body, "backend_roles") ||
           member(body, "add_all_backend_roles");
}

struct json_object *workers_owner_new(const struct workers_user *u)
{
    struct json_object *o = json_object_new_object(), *br = json_object_new_array(),
                       *ro = json_object_new_array();
    for (int i = 0; i < u->nbackend_roles; i++)
        json_object_array_add(br, json_object_new_string(u->backend_roles[i]));
    for (int i = 0; i < u->nroles; i++)
        json_object_array_add(ro, json_object_new_string(u->roles[i]));
    json_object_object_add(o, "name", json_object_new_string(u->name));
    json_object_object_add(o, "backend_roles", br);  /* consumes br */
    json_object_object_add(o, "roles", ro);          /* consumes ro */
    json_object_object_add(o, "custom_attribute_names", json_object_new_array());
    json_object_object_add(o, "user_requested_tenant", NULL);
    return o;
}

static int user_has_role(const struct workers_user *u, const char *role)
{
    for (int i = 0; i < u->nbackend_roles; i++) {
        if (strcmp(u->backend_roles[i], role) == 0)
            return 1;
    }
    return 0;
}

/* The caller's backend roles as a new JSON array. */
static struct json_object *user_roles(const struct workers_user *u)
{
    struct json_object *a = json_object_new_array();
    for (int i = 0; i < u->nbackend_roles; i++)
        json_object_array_add(a, json_object_new_string(u->backend_roles[i]));
    return a;
}

/* The access fields of a request, parsed. */
struct access_in {
    const char *mode;           /* "public", "private", "restricted" or NULL (absent/unknown) */
    struct json_object *roles;  /* the request's backend_roles array, or NULL */
    int nroles;                 /* its length */
    int add_all;                /* add_all_backend_roles: 1 true, 0 false, -1 absent */
};

/* Reads @body's access fields; @icase: access_mode is case-insensitive (groups). */
static int access_in_read(struct json_object *body, int icase, struct access_in *in,
                          struct workers_error *e)
{
    static const char *const modes[] = {"public", "private", "restricted"};
    memset(in, 0, sizeof(*in));
    in->add_all = -1;
    struct json_object *m = member(body, "access_mode"), *r = member(body, "backend_roles"),
                       *a = member(body, "add_all_backend_roles");
    for (size_t i = 0; m && json_object_is_type(m, json_type_string) && i < 3; i++) {
        const char *s = json_object_get_string(m);
        if (icase ? strcasecmp(s, modes[i]) == 0 : strcmp(s, modes[i]) == 0)
            in->mode = modes[i]; /* an unknown value counts as absent, as in ML Commons */
    }
    if (r && !json_object_is_type(r, json_type_null)) {
        if (!json_object_is_type(r, json_type_array))
            return workers_error_set(e, 400, IAE, "backend_roles must be an array of strings");
        for (size_t i = 0; i < json_object_array_length(r); i++) {
            if (!json_object_is_type(json_object_array_get_idx(r, i), json_type_string))
                return workers_error_set(e, 400, IAE, "backend_roles must be an array of strings");
        }
        in->roles = r;
        in->nroles = (int)json_object_array_length(r);
    }
    if (a && !json_object_is_type(a, json_type_null)) {
        if (!json_object_is_type(a, json_type_boolean))
            return workers_error_set(e, 400, IAE, "add_all_backend_roles must be a boolean");
        in->add_all = json_object_get_boolean(a);
    }
    return MLR_OK;
}

/* A non-admin may only name backend roles they hold. */
static int roles_held(const struct workers_user *u, const struct access_in *in)
{
    for (int i = 0; !u->admin && i < in->nroles; i++) {
        if (!user_has_role(u, json_object_get_string(json_object_array_get_idx(in->roles,
                                                                                (size_t)i))))
            return 0;
    }
    return 1;
}

/* Writes access, backend_roles (restricted only) and owner into @doc. */
static void access_write(struct json_object *doc, const char *mode, struct json_object *roles,
                         const struct workers_user *u)
{
    json_object_object_add(doc, "access", json_object_new_string(mode));
    if (strcmp(mode, "restricted") == 0)
        json_object_object_add(doc, "backend_roles", roles); /* consumes roles */
    else {
        json_object_put(roles);
        json_object_object_del(doc, "backend_roles");
    }
    if (u && member(doc, "owner") == NULL)
        json_object_object_add(doc, "owner", workers_owner_new(u));
}

/* ---------------------------------- model groups ---------------------------------- */

int workers_group_access_set(struct json_object *body, const struct workers_caller *who,
                             struct json_object *doc, struct workers_error *e)
{
    const struct workers_user *u = who ? who->user : NULL;
    if (u == NULL || !who->model_ac) {
        if (has_access_fields(body))
            return workers_error_set(e, 400, IAE, "%s", group_off_msg);
        access_write(doc, "public", NULL, u);
        return MLR_OK;
    }
    struct access_in in;
    if (access_in_read(body, 1, &in, e) != MLR_OK)
        return MLR_EINVAL;
    const char *mode = in.mode ? in.mode
                               : (in.nroles > 0 || in.add_all == 1) ? "restricted" : "private";
    if (strcmp(mode, "restricted") != 0) {
        if (in.nroles > 0 || in.add_all == 1)
            return workers_error_set(e, 400, IAE, "You can specify backend roles only for a "
                                                  "model group with the restricted access mode.");
        access_write(doc, mode, NULL, u);
        return MLR_OK;
    }
    if (u->admin && in.add_all == 1)
        return workers_error_set(e, 400, IAE,
                                 "Admin users cannot add all backend roles to a model group.");
    if (!u->admin && u->nbackend_roles == 0)
        return workers_error_set(e, 400, IAE, "You must have at least one backend role to "
                                              "register a restricted model group.");
    if (in.nroles == 0 && in.add_all != 1)
        return workers_error_set(e, 400, IAE, "You must specify one or more backend roles or add "
                                              "all backend roles to register a restricted model "
                                              "group.");
    if (in.nroles > 0 && in.add_all == 1)
        return workers_error_set(e, 400, IAE, "You cannot specify backend roles and add all "
                                              "backend roles at the same time.");
    if (!roles_held(u, &in))
        return workers_error_set(e, 400, IAE, "You don't have the backend roles specified.");
    access_write(doc, mode, in.add_all == 1 ? user_roles(u) : json_object_get(in.roles), u);
    return MLR_OK;
}

static int is_owner(struct json_object *doc, const struct workers_user *u)
{
    struct json_object *owner = member(doc, "owner");
    struct json_object *name = member(owner, "name");
    return owner == NULL || (name && strcmp(json_object_get_string(name), u->name) == 0);
}

int workers_group_access_update(struct json_object *body, const struct workers_caller *who,
                                struct json_object *doc, struct workers_error *e)
{
    const struct workers_user *u = who ? who->user : NULL;
    if (!has_access_fields(body))
        return MLR_OK;
    if (u == NULL || !who->model_ac)
        return workers_error_set(e, 400, IAE, "%s", group_off_msg);
    if (!u->admin && !is_owner(doc, u))
        return workers_error_set(e, 400, IAE, "Only owner or admin can update access control "
                                              "data.");
    struct access_in in;
    if (access_in_read(body, 1, &in, e) != MLR_OK)
        return MLR_EINVAL;
    struct json_object *cur = member(doc, "access");
    const char *mode = in.mode ? in.mode
                       : (in.nroles > 0 || in.add_all == 1) ? "restricted"
                       : cur ? json_object_get_string(cur)
                             : "private";
    if (strcmp(mode, "restricted") != 0) {
        if (in.nroles > 0 || in.add_all == 1)
            return workers_error_set(e, 400, IAE, "You can specify backend roles only for a "
                                                  "model group with the restricted access mode.");
        access_write(doc, mode, NULL, NULL);
        return MLR_OK;
    }
    if (u->admin && in.add_all == 1)
        return workers_error_set(e, 400, IAE,
                                 "Admin users cannot add all backend roles to a model group.");
    if (in.nroles > 0 && in.add_all == 1)
        return workers_error_set(e, 400, IAE, "You cannot specify backend roles and add all "
                                              "backend roles at the same time.");
    struct json_object *keep = member(doc, "backend_roles");
    if (in.nroles == 0 && in.add_all != 1 && (in.add_all == 0 || keep == NULL ||
                                              json_object_array_length(keep) == 0))
        return workers_error_set(e, 400, IAE, "You have to specify backend roles when add all "
                                              "backend roles is set to false.");
    if (!roles_held(u, &in))
        return workers_error_set(e, 400, IAE, "You don't have the specified backend role to "
                                              "update this model group. For more information, "
                                              "contact your administrator.");
    struct json_object *roles = in.add_all == 1 ? user_roles(u)
                                : in.nroles > 0 ? json_object_get(in.roles)
                                                : json_object_get(keep);
    access_write(doc, mode, roles, NULL);
    return MLR_OK;
}

/* ---------------------------------- connectors ---------------------------------- */

int workers_connector_access_set(struct json_object *body, const struct workers_caller *who,
                                 struct json_object *doc, struct workers_error *e)
{
    const struct workers_user *u = who ? who->user : NULL;
    if (u == NULL || !who->connector_ac) {
        if (has_access_fields(body))
            return workers_error_set(e, 400, IAE, "%s", connector_off_msg);
        if (u)
            json_object_object_add(doc, "owner", workers_owner_new(u));
        return MLR_OK;
    }
    struct access_in in;
    if (access_in_read(body, 0, &in, e) != MLR_OK)
        return MLR_EINVAL;
    if (u->admin && in.add_all == 1)
        return workers_error_set(e, 400, IAE, "Admin can't add all backend roles");
    const char *mode = in.mode ? in.mode
                               : (in.nroles > 0 || in.add_all == 1) ? "restricted" : "private";
    if (strcmp(mode, "restricted") != 0) {
        if (in.nroles > 0 || in.add_all == 1)
            return workers_error_set(e, 400, IAE, "You can specify backend roles only for a "
                                                  "connector with the restricted access mode.");
        access_write(doc, mode, NULL, u);
        return MLR_OK;
    }
    if (in.add_all == 1 && in.nroles > 0)
        return workers_error_set(e, 400, IAE, "You can't specify backend roles and add all "
                                              "backend roles to true at same time.");
    if (in.add_all == 1 && u->nbackend_roles == 0)
        return workers_error_set(e, 400, IAE,
                                 "You must have at least one backend role to create a connector.");
    if (in.add_all != 1 && in.nroles == 0)
        return workers_error_set(e, 400, IAE, "You must specify at least one backend role or make "
                                              "the connector public/private for registering it.");
    if (!roles_held(u, &in))
        return workers_error_set(e, 400, IAE, "You don't have the backend roles specified.");
    access_write(doc, mode, in.add_all == 1 ? user_roles(u) : json_object_get(in.roles), u);
    return MLR_OK;
}

int workers_connector_access_update(struct json_object *body, const struct workers_caller *who,
                                    struct json_object *base, struct json_object *doc,
                                    struct workers_error *e)
{
    static const char *const kept[] = {"owner", "access", "backend_roles", NULL};
    for (int i = 0; kept[i]; i++) { /* what the stored connector had, unless changed below */
        struct json_object *v = member(base, kept[i]);
        if (v)
            json_object_object_add(doc, kept[i], json_object_get(v));
    }
    if (!has_access_fields(body))
        return MLR_OK;
    const struct workers_user *u = who ? who->user : NULL;
    if (u == NULL || !who->connector_ac)
        return workers_error_set(e, 400, IAE, "%s", connector_off_msg);
    json_object_object_del(doc, "access");
    json_object_object_del(doc, "backend_roles");
    return workers_connector_access_set(body, who, doc, e);
}

int workers_access_fields_refuse(struct json_object *body, int connector,
                                 struct workers_error *e)
{
    if (!has_access_fields(body))
        return MLR_OK;
    return workers_error_set(e, 400, IAE, "%s", connector ? connector_off_msg : group_off_msg);
}
