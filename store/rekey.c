/*
 * rekey.c — master key rotation: every stored credential (connectors' and inline connectors')
 * re-sealed under a new key in one writer op, so one transaction: after a crash the database
 * holds either only old-key or only new-key ciphertexts, never a mix. The same op stores a
 * check value sealed under the new key (meta.master_key_check), which tells an interrupted
 * rotation's restart which key file is the right one.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

struct rekey_op {
    struct store__op op;
    store_rekey_fn fn;
    void *arg;
    char *check;      /* the new check value */
    int count;        /* credential maps re-sealed */
    store_write_cb cb;
    void *data;
};

/* Re-seals the credential column of every row of @table (owner prefix @kind). */
static int rekey_table(struct store__conn *c, struct rekey_op *o, const char *table,
                       const char *kind)
{
    char sql[128];
    /* PostgreSQL: the rows stay locked until commit, so a node writing a credential meanwhile
     * waits and cannot leave one sealed under the old key. */
    snprintf(sql, sizeof(sql), "SELECT id, credential FROM %s WHERE credential IS NOT NULL%s",
             table, c->pg ? " FOR UPDATE" : "");
    struct store__stmt *st = NULL, *up = NULL;
    int rc = store__prepare(c, sql, &st);
    snprintf(sql, sizeof(sql), "UPDATE %s SET credential = ? WHERE id = ?", table);
    if (rc == MLR_OK)
        rc = store__prepare(c, sql, &up);
    int step;
    while (rc == MLR_OK && (step = store__step(st)) == SQLITE_ROW) {
        const char *id = store__col_text(st, 0);
        char *owner = mlr_xasprintf("%s:%s", kind, id), *sealed = NULL;
        rc = o->fn(owner, store__col_text(st, 1), &sealed, o->arg);
        free(owner);
        if (rc != MLR_OK)
            break;
        store__bind_text(up, 1, sealed);
        store__bind_text(up, 2, id);
        rc = store__err(store__step(up));
        store__reset(up);
        free(sealed);
        o->count++;
    }
    if (rc == MLR_OK && step != SQLITE_DONE)
        rc = store__err(step);
    store__finalize(st);
    store__finalize(up);
    return rc;
}

static int rekey_run(struct store__conn *c, struct store__op *op)
{
    struct rekey_op *o = container_of(op, struct rekey_op, op);
    int rc = rekey_table(c, o, "connectors", "connector");
    if (rc == MLR_OK)
        rc = rekey_table(c, o, "models", "model");
    struct store__stmt *st = NULL;
    if (rc == MLR_OK)
        rc = store__stmt(c, STORE_SQL(c, "INSERT OR REPLACE INTO meta(key, value) "
                                         "VALUES('master_key_check', ?)",
                                      "INSERT INTO meta(key, value) VALUES('master_key_check', ?) "
                                      "ON CONFLICT(key) DO UPDATE SET value = excluded.value"),
                         &st);
    if (rc == MLR_OK) {
        store__bind_text(st, 1, o->check);
        rc = store__err(store__step(st));
        store__reset(st);
    }
    return rc;
}

static void rekey_done(struct store__op *op)
{
    struct rekey_op *o = container_of(op, struct rekey_op, op);
    struct store_write_result r = {.status = op->status, .id = "", .detail = "",
                                   .count = o->count};
    o->cb(&r, o->data);
    free(o->check);
    free(o);
}

int store_credentials_rekey(struct store *s, store_rekey_fn fn, void *arg, const char *check,
                            store_write_cb cb, void *data)
{
    struct rekey_op *o = mlr_xcalloc(1, sizeof(*o));
    o->op.run = rekey_run;
    o->op.done = rekey_done;
    o->fn = fn;
    o->arg = arg;
    o->check = mlr_xstrdup(check);
    o->cb = cb;
    o->data = data;
    int rc = store__submit(s, &o->op);
    if (rc != MLR_OK) {
        free(o->check);
        free(o);
    }
    return rc;
}

int store_meta_get(struct store *s, const char *key, char **value)
{
    struct store__stmt *st = NULL;
    int rc = store__stmt(store__main_conn(s), "SELECT value FROM meta WHERE key = ?", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, key);
    int step = store__step(st);
    if (step == SQLITE_ROW)
        *value = mlr_xstrdup(store__col_text(st, 0));
    rc = step == SQLITE_ROW ? MLR_OK : step == SQLITE_DONE ? MLR_ENOTFOUND : store__err(step);
    store__reset(st);
    return rc;
}
