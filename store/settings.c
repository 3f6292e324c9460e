/*
 * settings.c — persistence of the persistent cluster settings (`PUT /_cluster/settings`).
 *
 * One row per key in the settings table; the value column holds the canonical JSON value (a JSON
 * string, or an array of strings for list settings). A PUT's whole change set is one store op, so
 * it commits atomically: either every key of the request is stored or none is.
 */
#include "store_int.h"

#include <stdlib.h>
#include <json-c/json.h>

int store_settings_load(struct store *s, struct json_object **out)
{
    return store__settings_layer(store__main_conn(s), out);
}

int store__settings_layer(struct store__conn *c, struct json_object **out)
{
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT key, value FROM settings ORDER BY key", &st);
    if (rc != MLR_OK)
        return rc;
    struct json_object *layer = json_object_new_object();
    int step;
    while ((step = store__step(st)) == SQLITE_ROW) {
        const char *key = store__col_text(st, 0);
        struct json_object *v = json_tokener_parse(store__col_text(st, 1));
        if (v == NULL) {
            mlr_log(MLR_LOG_WARN, "store", "ignoring unreadable stored setting [%s]", key);
            continue;
        }
        json_object_object_add(layer, key, v); /* consumes v */
    }
    store__reset(st);
    if (step != SQLITE_DONE) {
        json_object_put(layer);
        return store__err(step);
    }
    *out = layer;
    return MLR_OK;
}

struct settings_put {
    struct store__op op;
    struct json_object *changes; /* owned copy */
    store_done_cb cb;
    void *data;
};

static int settings_put_run(struct store__conn *c, struct store__op *op)
{
    struct settings_put *p = container_of(op, struct settings_put, op);
    static const char upsert[] = "INSERT INTO settings(key, value, updated_ms) VALUES(?, ?, ?) "
                                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                                 "updated_ms = excluded.updated_ms";
    static const char del[] = "DELETE FROM settings WHERE key = ?";
    int64_t now = mlr_now_ms();
    json_object_object_foreach(p->changes, key, val)
    {
        struct store__stmt *st = NULL;
        int rc = store__stmt(c, val ? upsert : del, &st);
        if (rc != MLR_OK)
            return rc;
        store__bind_text(st, 1, key);
        if (val) {
            store__bind_text(st, 2, json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN));
            store__bind_int(st, 3, now);
        }
        rc = store__err(store__step(st));
        store__reset(st);
        if (rc != MLR_OK)
            return rc;
    }
    return MLR_OK;
}

static void settings_put_done(struct store__op *op)
{
    struct settings_put *p = container_of(op, struct settings_put, op);
    p->cb(op->status, p->data);
    json_object_put(p->changes);
    free(p);
}

int store_settings_put(struct store *s, struct json_object *changes, store_done_cb cb, void *data)
{
    struct settings_put *p = mlr_xcalloc(1, sizeof(*p));
    p->op.run = settings_put_run;
    p->op.done = settings_put_done;
    p->changes = NULL;
    json_object_deep_copy(changes, &p->changes, NULL);
    p->cb = cb;
    p->data = data;
    int rc = store__submit(s, &p->op);
    if (rc != MLR_OK) {
        json_object_put(p->changes);
        free(p);
    }
    return rc;
}
