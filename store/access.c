/*
 * access.c — model and connector access control in SQL (reference §12.2, §12.3).
 *
 * Who may see a model group, a model or a connector is one SQL predicate per kind over the row
 * (and, for a model, its group), so the same rule filters searches inside their WHERE (totals
 * stay right and pages stay full) and answers single-document checks with one indexed read:
 *
 *   allowed = no owner (made before users existed) OR no access mode OR access is public
 *             OR the caller owns it
 *             OR (access is restricted AND it shares a backend role with the caller)
 *
 * A private document is thus its owner's only. A model is allowed when it has no group or its
 * group is allowed. Admins (role all_access) are never restricted: callers pass no access.
 */
#include "store_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* The predicate on a group row named @g, binding the user then the roles. */
#define GROUP_ALLOWED(g)                                                                         \
    "(" g ".owner IS NULL OR " g ".access IS NULL OR " g ".access = 'public' OR " g              \
    ".owner = ? OR (" g ".access = 'restricted' AND EXISTS (SELECT 1 FROM json_each(" g          \
    ".doc, '$.backend_roles') AS r, json_each(?) AS u WHERE r.value = u.value)))"

/*
 * The same rule in PostgreSQL's dialect. The document's backend_roles are read with a lax
 * jsonpath, which yields an array's elements, or a lone scalar as itself, as SQLite's json_each()
 * does; the caller's roles arrive as a JSON array. Roles compare as jsonb, which is typed as
 * json_each()'s values are.
 */
#define GROUP_ALLOWED_PG(g)                                                                      \
    "(" g ".owner IS NULL OR " g ".access IS NULL OR " g ".access = 'public' OR " g              \
    ".owner = ? OR (" g ".access = 'restricted' AND EXISTS (SELECT 1 FROM "                      \
    "jsonb_path_query(" g ".doc::jsonb, 'lax $.\"backend_roles\"[*]') AS r(value), "             \
    "jsonb_array_elements(?::jsonb) AS u(value) WHERE r.value = u.value)))"

static const char group_pred[] = GROUP_ALLOWED("model_groups");
static const char group_pred_pg[] = GROUP_ALLOWED_PG("model_groups");

static const char model_pred[] =
    "(models.model_group_id IS NULL OR models.model_group_id = '' OR NOT EXISTS (SELECT 1 FROM "
    "model_groups AS g WHERE g.id = models.model_group_id AND NOT " GROUP_ALLOWED("g") "))";
static const char model_pred_pg[] =
    "(models.model_group_id IS NULL OR models.model_group_id = '' OR NOT EXISTS (SELECT 1 FROM "
    "model_groups AS g WHERE g.id = models.model_group_id AND NOT " GROUP_ALLOWED_PG("g") "))";

static const char connector_pred[] =
    "(connectors.owner IS NULL OR json_extract(connectors.doc, '$.access') IS NULL OR "
    "json_extract(connectors.doc, '$.access') = 'public' OR connectors.owner = ? OR "
    "(json_extract(connectors.doc, '$.access') = 'restricted' AND EXISTS (SELECT 1 FROM "
    "json_each(connectors.doc, '$.backend_roles') AS r, json_each(?) AS u "
    "WHERE r.value = u.value)))";
static const char connector_pred_pg[] =
    "(connectors.owner IS NULL OR (connectors.doc::jsonb ->> 'access') IS NULL OR "
    "(connectors.doc::jsonb ->> 'access') = 'public' OR connectors.owner = ? OR "
    "((connectors.doc::jsonb ->> 'access') = 'restricted' AND EXISTS (SELECT 1 FROM "
    "jsonb_path_query(connectors.doc::jsonb, 'lax $.\"backend_roles\"[*]') AS r(value), "
    "jsonb_array_elements(?::jsonb) AS u(value) WHERE r.value = u.value)))";

/* The predicate restricting @kind for @acc in the dialect @pg says, or NULL when nothing is
 * restricted. */
static const char *predicate(enum store_kind kind, const struct store_access *acc, int pg)
{
    if (acc == NULL)
        return NULL;
    switch (kind) {
    case STORE_MODEL_GROUP:
        return !acc->groups ? NULL : pg ? group_pred_pg : group_pred;
    case STORE_MODEL:
        return !acc->groups ? NULL : pg ? model_pred_pg : model_pred;
    case STORE_CONNECTOR:
        return !acc->connectors ? NULL : pg ? connector_pred_pg : connector_pred;
    default:
        return NULL;
    }
}

static void val_text(struct store__query *q, const char *s)
{
    if (q->nvals == q->capvals) {
        q->capvals = q->capvals ? q->capvals * 2 : 8;
        q->vals = mlr_xrealloc(q->vals, q->capvals * sizeof(*q->vals));
    }
    struct store__val *v = &q->vals[q->nvals++];
    memset(v, 0, sizeof(*v));
    v->kind = STORE__VAL_TEXT;
    v->text = mlr_xstrdup(s);
}

void store__query_restrict(struct store__query *q, enum store_kind kind,
                           const struct store_access *acc)
{
    const char *pred = predicate(kind, acc, q->pg);
    if (pred == NULL)
        return;
    struct mlr_buf w;
    mlr_buf_init(&w, 0);
    mlr_buf_printf(&w, "(%s) AND %s", q->where.data, pred);
    mlr_buf_cleanup(&q->where);
    q->where = w;
    val_text(q, acc->user);
    val_text(q, acc->backend_roles ? acc->backend_roles : "[]");
}

/* ---------------------------------- single documents ---------------------------------- */

struct check_read {
    enum store_kind kind;
    char id[STORE_ID_MAX + 1];
    char *user;
    char *roles;
    const char *pred;
    store_done_cb cb;
    void *data;
};

static int check_run(struct store__conn *c, void *arg)
{
    struct check_read *r = arg;
    char sql[2048];
    snprintf(sql, sizeof(sql), "SELECT %s FROM %s WHERE id = ?", r->pred,
             store__kind_table(r->kind));
    struct store__stmt *st = NULL;
    int rc = store__prepare(c, sql, &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, r->user);
    store__bind_text(st, 2, r->roles);
    store__bind_text(st, 3, r->id);
    int step = store__step(st);
    if (step == SQLITE_ROW)
        rc = store__col_int(st, 0) ? MLR_OK : MLR_EPERM;
    else
        rc = step == SQLITE_DONE ? MLR_ENOTFOUND : store__err(step);
    store__finalize(st);
    return rc;
}

static void check_done(int status, void *arg)
{
    struct check_read *r = arg;
    r->cb(status, r->data);
    free(r->user);
    free(r->roles);
    free(r);
}

int store_access_check(struct store *s, enum store_kind kind, const char *id,
                       const struct store_access *acc, store_done_cb cb, void *data)
{
    const char *pred = predicate(kind, acc, store__main_conn(s)->pg != NULL);
    if (id == NULL || strlen(id) > STORE_ID_MAX) {
        cb(MLR_ENOTFOUND, data);
        return MLR_OK;
    }
    if (pred == NULL) {
        cb(MLR_OK, data);
        return MLR_OK;
    }
    struct check_read *r = mlr_xcalloc(1, sizeof(*r));
    r->kind = kind;
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->user = mlr_xstrdup(acc->user);
    r->roles = mlr_xstrdup(acc->backend_roles ? acc->backend_roles : "[]");
    r->pred = pred;
    r->cb = cb;
    r->data = data;
    int rc = store__read(s, check_run, r, check_done);
    if (rc != MLR_OK) {
        free(r->user);
        free(r->roles);
        free(r);
    }
    return rc;
}
