/*
 * cluster.c — what several nodes on one PostgreSQL database need from the store: heartbeats and
 * the live node list, the counters (epochs) that tell a node its mirror of deployments or
 * settings is stale, which node holds which model, and the LISTEN connection whose
 * notifications make nodes look at once instead of at their next heartbeat.
 *
 * The listener is the one connection the loop thread itself waits on: libpq's non-blocking input
 * (PQconsumeInput/PQnotifies) under a uv_poll_t on its socket, so it costs nothing while idle
 * and never blocks. Connecting it is blocking and runs on the thread pool.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* Rows of dead nodes are kept a while (for logs and worker_node history), then dropped. */
#define NODE_FORGET_MS (3600 * 1000)

static int64_t lease_floor(void)
{
    return mlr_now_ms() - STORE_NODE_LEASE_MS;
}

/* ---------------------------------- heartbeat ---------------------------------- */

struct beat_op {
    struct store__op op;
    char node_id[64];
    char **nodes;
    int nnodes;
    int64_t epochs[2];          /* models, settings */
    store_heartbeat_cb cb;
    void *data;
};

static int beat_run(struct store__conn *c, struct store__op *op)
{
    struct beat_op *b = container_of(op, struct beat_op, op);
    int64_t now = mlr_now_ms();
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "INSERT INTO nodes(id, started_ms, heartbeat_ms) VALUES(?1, ?2, ?2) "
                            "ON CONFLICT(id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
                         &st);
    if (rc == MLR_OK) {
        store__bind_text(st, 1, b->node_id);
        store__bind_int(st, 2, now);
        rc = store__err(store__step(st));
        store__reset(st);
    }
    if (rc == MLR_OK)
        rc = store__stmt(c, "DELETE FROM nodes WHERE heartbeat_ms < ?1", &st);
    if (rc == MLR_OK) {
        store__bind_int(st, 1, now - NODE_FORGET_MS);
        rc = store__err(store__step(st));
        store__reset(st);
    }
    if (rc == MLR_OK)
        rc = store__stmt(c, "SELECT id FROM nodes WHERE heartbeat_ms >= ?1 ORDER BY id", &st);
    if (rc == MLR_OK) {
        store__bind_int(st, 1, now - STORE_NODE_LEASE_MS);
        int step;
        while ((step = store__step(st)) == SQLITE_ROW) {
            b->nodes = mlr_xrealloc(b->nodes, (size_t)(b->nnodes + 1) * sizeof(char *));
            b->nodes[b->nnodes++] = mlr_xstrdup(store__col_text(st, 0));
        }
        rc = store__err(step);
        store__reset(st);
    }
    if (rc == MLR_OK)
        rc = store__stmt(c, "SELECT name, value FROM epochs", &st);
    if (rc == MLR_OK) {
        int step;
        while ((step = store__step(st)) == SQLITE_ROW) {
            const char *name = store__col_text(st, 0);
            if (strcmp(name, "models") == 0)
                b->epochs[0] = store__col_int(st, 1);
            else if (strcmp(name, "settings") == 0)
                b->epochs[1] = store__col_int(st, 1);
        }
        rc = store__err(step);
        store__reset(st);
    }
    return rc;
}

static void beat_done(struct store__op *op)
{
    struct beat_op *b = container_of(op, struct beat_op, op);
    struct store_cluster_view v = {.nodes = (const char **)b->nodes,
                                   .nnodes = op->status == MLR_OK ? b->nnodes : 0,
                                   .models_epoch = b->epochs[0],
                                   .settings_epoch = b->epochs[1]};
    b->cb(op->status, &v, b->data);
    for (int i = 0; i < b->nnodes; i++)
        free(b->nodes[i]);
    free(b->nodes);
    free(b);
}

int store_node_heartbeat(struct store *s, store_heartbeat_cb cb, void *data)
{
    struct beat_op *b = mlr_xcalloc(1, sizeof(*b));
    b->op.run = beat_run;
    b->op.done = beat_done;
    snprintf(b->node_id, sizeof(b->node_id), "%s", store__node_id(s));
    b->cb = cb;
    b->data = data;
    int rc = store__submit(s, &b->op);
    if (rc != MLR_OK)
        free(b);
    return rc;
}

/* ---------------------------------- leaving ---------------------------------- */

struct leave_op {
    struct store__op op;
    char node_id[64];
    store_done_cb cb;
    void *data;
};

static int leave_run(struct store__conn *c, struct store__op *op)
{
    struct leave_op *l = container_of(op, struct leave_op, op);
    static const char *const sql[] = {"DELETE FROM model_nodes WHERE node_id = ?1",
                                      "DELETE FROM nodes WHERE id = ?1"};
    int rc = MLR_OK;
    for (int i = 0; i < 2 && rc == MLR_OK; i++) {
        struct store__stmt *st = NULL;
        rc = store__stmt(c, sql[i], &st);
        if (rc == MLR_OK) {
            store__bind_text(st, 1, l->node_id);
            rc = store__err(store__step(st));
            store__reset(st);
        }
    }
    return rc;
}

static void leave_done(struct store__op *op)
{
    struct leave_op *l = container_of(op, struct leave_op, op);
    if (l->cb)
        l->cb(op->status, l->data);
    free(l);
}

int store_node_leave(struct store *s, store_done_cb cb, void *data)
{
    struct leave_op *l = mlr_xcalloc(1, sizeof(*l));
    l->op.run = leave_run;
    l->op.done = leave_done;
    snprintf(l->node_id, sizeof(l->node_id), "%s", store__node_id(s));
    l->cb = cb;
    l->data = data;
    int rc = store__submit(s, &l->op);
    if (rc != MLR_OK)
        free(l);
    return rc;
}

/* ---------------------------------- deployed models ---------------------------------- */

struct deployed_read {
    struct store_deployed_model *m;
    int n;
    store_deployed_cb cb;
    void *data;
};

static int deployed_fn(struct store__conn *c, void *arg)
{
    struct deployed_read *r = arg;
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT m.id, m.version, coalesce(c.version, 0) FROM models m "
                            "LEFT JOIN connectors c ON c.id = m.connector_id "
                            "WHERE m.model_state IN ('DEPLOYED', 'PARTIALLY_DEPLOYED')", &st);
    if (rc != MLR_OK)
        return rc;
    int step, cap = 0;
    while ((step = store__step(st)) == SQLITE_ROW) {
        if (r->n == cap) {
            cap = cap ? cap * 2 : 64;
            r->m = mlr_xrealloc(r->m, (size_t)cap * sizeof(*r->m));
        }
        struct store_deployed_model *m = &r->m[r->n++];
        m->id = mlr_xstrdup(store__col_text(st, 0));
        m->version = store__col_int(st, 1);
        m->connector_version = store__col_int(st, 2);
    }
    store__reset(st);
    return store__err(step);
}

static void deployed_after(int status, void *arg)
{
    struct deployed_read *r = arg;
    r->cb(status, r->m, status == MLR_OK ? r->n : 0, r->data);
    for (int i = 0; i < r->n; i++)
        free((char *)r->m[i].id);
    free(r->m);
    free(r);
}

int store_models_deployed(struct store *s, store_deployed_cb cb, void *data)
{
    struct deployed_read *r = mlr_xcalloc(1, sizeof(*r));
    r->cb = cb;
    r->data = data;
    int rc = store__read(s, deployed_fn, r, deployed_after);
    if (rc != MLR_OK)
        free(r);
    return rc;
}

/* ---------------------------------- model_nodes ---------------------------------- */

struct nodes_op {
    struct store__op op;
    char node_id[64];
    char **ids;                 /* nadd ids to add, then nremove to remove */
    int nadd, nremove;
    store_done_cb cb;
    void *data;
};

static int nodes_run(struct store__conn *c, struct store__op *op)
{
    struct nodes_op *o = container_of(op, struct nodes_op, op);
    int rc = MLR_OK;
    for (int i = 0; i < o->nadd + o->nremove && rc == MLR_OK; i++) {
        struct store__stmt *st = NULL;
        rc = store__stmt(c, i < o->nadd ? "INSERT INTO model_nodes(model_id, node_id, deployed_ms) "
                                          "VALUES(?1, ?2, ?3) ON CONFLICT DO NOTHING"
                                        : "DELETE FROM model_nodes WHERE model_id = ?1 AND "
                                          "node_id = ?2",
                         &st);
        if (rc != MLR_OK)
            break;
        store__bind_text(st, 1, o->ids[i]);
        store__bind_text(st, 2, o->node_id);
        store__bind_int(st, 3, mlr_now_ms());
        rc = store__err(store__step(st));
        store__reset(st);
    }
    return rc;
}

static void nodes_done(struct store__op *op)
{
    struct nodes_op *o = container_of(op, struct nodes_op, op);
    if (o->cb)
        o->cb(op->status, o->data);
    for (int i = 0; i < o->nadd + o->nremove; i++)
        free(o->ids[i]);
    free(o->ids);
    free(o);
}

int store_model_nodes_update(struct store *s, const char *const *add, int nadd,
                             const char *const *remove, int nremove, store_done_cb cb,
                             void *data)
{
    struct nodes_op *o = mlr_xcalloc(1, sizeof(*o));
    o->op.run = nodes_run;
    o->op.done = nodes_done;
    snprintf(o->node_id, sizeof(o->node_id), "%s", store__node_id(s));
    o->ids = mlr_xcalloc((size_t)(nadd + nremove) + 1, sizeof(char *));
    for (int i = 0; i < nadd; i++)
        o->ids[o->nadd++] = mlr_xstrdup(add[i]);
    for (int i = 0; i < nremove; i++)
        o->ids[o->nadd + o->nremove++] = mlr_xstrdup(remove[i]);
    o->cb = cb;
    o->data = data;
    int rc = store__submit(s, &o->op);
    if (rc != MLR_OK) {
        o->cb = NULL;
        o->op.status = rc;
        nodes_done(&o->op);
    }
    return rc;
}

struct nodes_read {
    char model_id[STORE_ID_MAX + 1];
    char **nodes;
    int n;
    store_nodes_cb cb;
    void *data;
};

static int nodes_fn(struct store__conn *c, void *arg)
{
    struct nodes_read *r = arg;
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT mn.node_id FROM model_nodes mn JOIN nodes n "
                            "ON n.id = mn.node_id WHERE mn.model_id = ?1 AND "
                            "n.heartbeat_ms >= ?2 ORDER BY 1", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, r->model_id);
    store__bind_int(st, 2, lease_floor());
    int step;
    while ((step = store__step(st)) == SQLITE_ROW) {
        r->nodes = mlr_xrealloc(r->nodes, (size_t)(r->n + 1) * sizeof(char *));
        r->nodes[r->n++] = mlr_xstrdup(store__col_text(st, 0));
    }
    store__reset(st);
    return store__err(step);
}

static void nodes_after(int status, void *arg)
{
    struct nodes_read *r = arg;
    r->cb(status, (const char *const *)r->nodes, status == MLR_OK ? r->n : 0, r->data);
    for (int i = 0; i < r->n; i++)
        free(r->nodes[i]);
    free(r->nodes);
    free(r);
}

int store_model_nodes_get(struct store *s, const char *model_id, store_nodes_cb cb, void *data)
{
    struct nodes_read *r = mlr_xcalloc(1, sizeof(*r));
    snprintf(r->model_id, sizeof(r->model_id), "%s", model_id);
    r->cb = cb;
    r->data = data;
    int rc = store__read(s, nodes_fn, r, nodes_after);
    if (rc != MLR_OK)
        free(r);
    return rc;
}

/* ---------------------------------- settings ---------------------------------- */

struct settings_read {
    struct json_object *layer;
    store_settings_cb cb;
    void *data;
};

static int settings_fn(struct store__conn *c, void *arg)
{
    struct settings_read *r = arg;
    return store__settings_layer(c, &r->layer);
}

static void settings_after(int status, void *arg)
{
    struct settings_read *r = arg;
    r->cb(status, status == MLR_OK ? r->layer : NULL, r->data);
    if (status != MLR_OK)
        json_object_put(r->layer);
    free(r);
}

int store_settings_read(struct store *s, store_settings_cb cb, void *data)
{
    struct settings_read *r = mlr_xcalloc(1, sizeof(*r));
    r->cb = cb;
    r->data = data;
    int rc = store__read(s, settings_fn, r, settings_after);
    if (rc != MLR_OK)
        free(r);
    return rc;
}

/* ---------------------------------- LISTEN ---------------------------------- */

struct store__listener {
    struct store *s;
    char *url;                  /* a copy: the store may be gone while a connect runs */
    struct store__conn conn;    /* the LISTEN session; conn.pg NULL while down */
    uv_poll_t poll;
    int polling;                /* poll is started */
    int connecting;             /* a connect runs on the pool */
    int closing;                /* store_close() began: free when the last callback is done */
    int refs;                   /* poll handle open + connect in flight */
    uv_work_t work;
    int work_status;
    store_notify_cb cb;
    void *data;
};

static void listener_unref(struct store__listener *l)
{
    if (--l->refs > 0)
        return;
    store__conn_close(&l->conn);
    free(l->url);
    free(l);
}

static void on_poll_closed(uv_handle_t *h)
{
    listener_unref(h->data);
}

static void stop_polling(struct store__listener *l)
{
    if (l->polling) {
        l->polling = 0;
        uv_close((uv_handle_t *)&l->poll, on_poll_closed);
    }
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    UNUSED(events);
    struct store__listener *l = p->data;
    char payload[64];
    int n = status < 0 ? -1 : 1;
    while (n > 0) {
        n = store__pg_notify_next(&l->conn, payload, sizeof(payload));
        if (n > 0 && !l->closing)
            l->cb(payload, l->data);
    }
    if (n < 0) {
        mlr_log(MLR_LOG_WARN, "store", "notification connection lost; polling goes on, "
                                       "reconnecting");
        stop_polling(l); /* store_listen_check() reconnects */
    }
}

static void connect_work(uv_work_t *w)
{
    struct store__listener *l = container_of(w, struct store__listener, work);
    char err[256];
    store__conn_close(&l->conn);
    l->work_status = store__pg_connect(&l->conn, l->url, err, sizeof(err));
    if (l->work_status == MLR_OK && store__exec(&l->conn, "LISTEN mlrelay") != SQLITE_OK)
        l->work_status = MLR_EIO;
}

static void connect_after(uv_work_t *w, int status)
{
    struct store__listener *l = container_of(w, struct store__listener, work);
    l->connecting = 0;
    if (status == 0 && l->work_status == MLR_OK && !l->closing &&
        uv_poll_init_socket(store__loop(l->s), &l->poll, store__pg_socket(&l->conn)) == 0) {
        l->poll.data = l;
        l->polling = 1;
        l->refs++;
        uv_poll_start(&l->poll, UV_READABLE, on_readable);
        /* Anything that happened while the connection was down is caught by the next
         * heartbeat's epochs; say "look now" once so it is not a heartbeat late. */
        l->cb("models", l->data);
        l->cb("settings", l->data);
        l->cb("tasks", l->data);
    }
    listener_unref(l);
}

static void start_connect(struct store__listener *l)
{
    if (l->connecting || l->polling || l->closing)
        return;
    l->connecting = 1;
    l->refs++;
    if (uv_queue_work(store__loop(l->s), &l->work, connect_work, connect_after) != 0) {
        l->connecting = 0;
        l->refs--;
    }
}

int store_listen(struct store *s, store_notify_cb cb, void *data)
{
    struct store__listener **slot = store__listener_slot(s);
    if (!store_is_shared(s) || *slot != NULL)
        return MLR_OK;
    struct store__listener *l = mlr_xcalloc(1, sizeof(*l));
    l->s = s;
    l->url = mlr_xstrdup(store__location(s));
    l->cb = cb;
    l->data = data;
    l->refs = 1; /* the store's */
    *slot = l;
    start_connect(l);
    return MLR_OK;
}

void store_listen_check(struct store *s)
{
    struct store__listener *l = *store__listener_slot(s);
    if (l)
        start_connect(l);
}

void store__listener_close(struct store *s)
{
    struct store__listener **slot = store__listener_slot(s);
    struct store__listener *l = *slot;
    if (l == NULL)
        return;
    *slot = NULL;
    l->closing = 1;
    stop_polling(l);
    listener_unref(l); /* the store's reference; a connect in flight holds its own */
}
