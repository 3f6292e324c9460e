/*
 * usage.c — when each model was last used, for the model TTL (spec §5, reference §10).
 *
 * The workers keep the authoritative last-use time in memory (a predict only stores a number)
 * and flush the times that moved about once a second with store_models_usage_put(): one writer
 * op for every model used in that second, so a busy model costs one UPDATE per second, not one
 * per predict. The columns are not part of the model document (ML Commons has no such field) and
 * so do not bump _version or _seq_no. After a restart, store_model_usage_get() gives the time a
 * redeployed model's TTL counts from; at worst the last second of use is forgotten, which
 * expires a model up to a second early, never late.
 */
#include "store_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct usage_op {
    struct store__op op;
    struct store_model_usage *u; /* owned copies */
    int n;
    store_done_cb cb;
    void *data;
};

static int usage_run(struct store__conn *c, struct store__op *op)
{
    struct usage_op *o = container_of(op, struct usage_op, op);
    int rc = MLR_OK;
    for (int i = 0; i < o->n && rc == MLR_OK; i++) {
        struct store__stmt *st = NULL;
        /* Never backwards: with several nodes on one store each flushes its own last use, and
         * the stored time must be the latest of them (a model expires only when every node
         * has been idle, ttl.c). */
        rc = store__stmt(c, "UPDATE models SET last_used_ms = ?1, ttl_deadline_ms = ?2 "
                            "WHERE id = ?3 AND (last_used_ms IS NULL OR last_used_ms <= ?1)",
                         &st);
        if (rc != MLR_OK)
            break;
        store__bind_int(st, 1, o->u[i].last_used_ms);
        if (o->u[i].deadline_ms >= 0)
            store__bind_int(st, 2, o->u[i].deadline_ms);
        else
            store__bind_null(st, 2);
        store__bind_text(st, 3, o->u[i].model_id);
        rc = store__err(store__step(st));
        store__reset(st);
    }
    return rc;
}

static void usage_done(struct store__op *op)
{
    struct usage_op *o = container_of(op, struct usage_op, op);
    if (o->cb)
        o->cb(op->status, o->data);
    for (int i = 0; i < o->n; i++)
        free(o->u[i].model_id);
    free(o->u);
    free(o);
}

int store_models_usage_put(struct store *s, const struct store_model_usage *u, int n,
                           store_done_cb cb, void *data)
{
    assert(n >= 0);
    struct usage_op *o = mlr_xcalloc(1, sizeof(*o));
    o->op.run = usage_run;
    o->op.done = usage_done;
    o->u = mlr_xcalloc((size_t)(n > 0 ? n : 1), sizeof(*o->u));
    for (int i = 0; i < n; i++) {
        o->u[i] = u[i];
        o->u[i].model_id = mlr_xstrdup(u[i].model_id);
    }
    o->n = n;
    o->cb = cb;
    o->data = data;
    int rc = store__submit(s, &o->op);
    if (rc != MLR_OK) {
        o->cb = NULL;
        usage_done(&o->op);
    }
    return rc;
}

int store_model_usage_get(struct store *s, const char *model_id, int64_t *last_used_ms)
{
    struct store__conn *c = store__reader_acquire(s);
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT last_used_ms FROM models WHERE id = ? AND "
                            "last_used_ms IS NOT NULL", &st);
    if (rc == MLR_OK) {
        store__bind_text(st, 1, model_id);
        rc = store__step_int(st, last_used_ms);
        store__reset(st);
    }
    store__reader_release(s, c);
    return rc;
}
