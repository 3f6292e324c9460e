/*
 * counts.c — how many documents of each kind exist, for ML Commons' cluster-level stats
 * (ml_model_count, ml_connector_count and the *_index_status fields, reference §14).
 *
 * One read on libuv's thread pool with a pooled read connection. Model groups, connectors and
 * models are counted exactly (SQLite walks the primary-key index: microseconds per thousand
 * rows); tasks, which can number millions, are only checked for existence, which is all an index
 * status needs. The callback runs on the loop thread.
 */
#include "store_int.h"

#include <assert.h>
#include <stdlib.h>

struct counts_req {
    struct store_doc_counts counts; /* filled on the pool thread */
    store_doc_counts_cb cb;
    void *data;
};

/* Pool thread. The SQL texts are static so the statement cache keys on them. */
static int counts_fn(struct store__conn *c, void *arg)
{
    static const char *const sql[STORE__KINDS] = {
        [STORE_MODEL_GROUP] = "SELECT count(*) FROM model_groups",
        [STORE_CONNECTOR] = "SELECT count(*) FROM connectors",
        [STORE_MODEL] = "SELECT count(*) FROM models",
        [STORE_TASK] = "SELECT EXISTS (SELECT 1 FROM tasks)",
    };
    struct counts_req *r = arg;
    int rc = MLR_OK;
    for (int k = 0; k < STORE__KINDS && rc == MLR_OK; k++) {
        struct store__stmt *st = NULL;
        rc = store__stmt(c, sql[k], &st);
        if (rc == MLR_OK)
            rc = store__step_int(st, &r->counts.docs[k]); /* resets the statement */
    }
    return rc;
}

static void counts_done(int status, void *arg)
{
    struct counts_req *r = arg;
    r->cb(status, status == MLR_OK ? &r->counts : NULL, r->data);
    free(r);
}

int store_doc_counts_get(struct store *s, store_doc_counts_cb cb, void *data)
{
    assert(s != NULL && cb != NULL);
    struct counts_req *r = mlr_xcalloc(1, sizeof(*r));
    r->cb = cb;
    r->data = data;
    int rc = store__read(s, counts_fn, r, counts_done);
    if (rc != MLR_OK)
        free(r);
    return rc;
}
