/*
 * users.c — the users who may call the API once any exists (spec §8): name, password hash,
 * backend roles and roles.
 *
 * Every change bumps meta.users_version in the same transaction. The server keeps the users in
 * memory and polls that number (store_users_read() with the version it holds answers "unchanged"
 * without reading the table), so `mlrelay users add/delete`, run by another process against the
 * same database, takes effect within a poll interval without a restart.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static int version_bump(struct store__conn *c)
{
    struct store__stmt *st = NULL;
    /* meta.value is TEXT: PostgreSQL does not convert the sum back by itself. */
    int rc = store__stmt(c, STORE_SQL(c, "INSERT INTO meta(key, value) VALUES('users_version', "
                                         "'1') ON CONFLICT(key) DO UPDATE SET "
                                         "value = CAST(value AS INTEGER) + 1",
                                      "INSERT INTO meta(key, value) VALUES('users_version', "
                                      "'1') ON CONFLICT(key) DO UPDATE SET "
                                      "value = (CAST(meta.value AS BIGINT) + 1)::text"),
                         &st);
    if (rc != MLR_OK)
        return rc;
    rc = store__err(store__step(st));
    store__reset(st);
    return rc;
}

static int version_get(struct store__conn *c, int64_t *out)
{
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'users_version'",
                         &st);
    if (rc != MLR_OK)
        return rc;
    *out = 0;
    rc = store__step_int(st, out);
    store__reset(st);
    return rc == MLR_ENOTFOUND ? MLR_OK : rc;
}

/* ---------------------------------- writes ---------------------------------- */

struct user_op {
    struct store__op op;
    char name[STORE_USER_NAME_MAX + 1];
    char *password_hash;   /* NULL: delete */
    char *backend_roles;   /* JSON array text */
    char *roles;           /* JSON array text */
    int replace;           /* put over an existing user */
    store_done_cb cb;
    void *data;
};

/* The statement that puts a user; without @replace an existing user is left alone (no row
 * changes). PostgreSQL spells SQLite's OR REPLACE / OR IGNORE as ON CONFLICT clauses; the
 * replacement takes every column, created_time included, as SQLite's delete-and-insert does. */
static const char *user_put_sql(struct store__conn *c, int replace)
{
    if (replace)
        return STORE_SQL(c, "INSERT OR REPLACE INTO users(name, password_hash, backend_roles, "
                            "roles, created_time) VALUES(?,?,?,?,?)",
                         "INSERT INTO users(name, password_hash, backend_roles, roles, "
                         "created_time) VALUES(?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                         "password_hash = excluded.password_hash, backend_roles = "
                         "excluded.backend_roles, roles = excluded.roles, created_time = "
                         "excluded.created_time");
    return STORE_SQL(c, "INSERT OR IGNORE INTO users(name, password_hash, backend_roles, roles, "
                        "created_time) VALUES(?,?,?,?,?)",
                     "INSERT INTO users(name, password_hash, backend_roles, roles, created_time) "
                     "VALUES(?,?,?,?,?) ON CONFLICT(name) DO NOTHING");
}

static int user_put_run(struct store__conn *c, struct store__op *op)
{
    struct user_op *o = container_of(op, struct user_op, op);
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, user_put_sql(c, o->replace), &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, o->name);
    store__bind_text(st, 2, o->password_hash);
    store__bind_text(st, 3, o->backend_roles);
    store__bind_text(st, 4, o->roles);
    store__bind_int(st, 5, mlr_now_ms());
    rc = store__err(store__step(st));
    int changed = store__changes(c) > 0;
    store__reset(st);
    if (rc == MLR_OK && !changed)
        rc = MLR_EEXIST;
    return rc == MLR_OK ? version_bump(c) : rc;
}

static int user_delete_run(struct store__conn *c, struct store__op *op)
{
    struct user_op *o = container_of(op, struct user_op, op);
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "DELETE FROM users WHERE name = ?", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, o->name);
    rc = store__err(store__step(st));
    int changed = store__changes(c) > 0;
    store__reset(st);
    if (rc == MLR_OK && !changed)
        rc = MLR_ENOTFOUND;
    return rc == MLR_OK ? version_bump(c) : rc;
}

static void user_op_done(struct store__op *op)
{
    struct user_op *o = container_of(op, struct user_op, op);
    if (o->cb)
        o->cb(op->status, o->data);
    free(o->password_hash);
    free(o->backend_roles);
    free(o->roles);
    free(o);
}

static struct user_op *user_op_new(const char *name, store_done_cb cb, void *data)
{
    struct user_op *o = mlr_xcalloc(1, sizeof(*o));
    o->op.done = user_op_done;
    snprintf(o->name, sizeof(o->name), "%s", name);
    o->cb = cb;
    o->data = data;
    return o;
}

static int user_op_submit(struct store *s, struct user_op *o)
{
    int rc = store__submit(s, &o->op);
    if (rc != MLR_OK) {
        o->cb = NULL;
        user_op_done(&o->op);
    }
    return rc;
}

int store_user_put(struct store *s, const struct store_user *u, int replace, store_done_cb cb,
                   void *data)
{
    if (strlen(u->name) > STORE_USER_NAME_MAX)
        return MLR_EINVAL;
    struct user_op *o = user_op_new(u->name, cb, data);
    o->op.run = user_put_run;
    o->password_hash = mlr_xstrdup(u->password_hash);
    o->backend_roles = mlr_xstrdup(u->backend_roles ? u->backend_roles : "[]");
    o->roles = mlr_xstrdup(u->roles ? u->roles : "[]");
    o->replace = replace;
    return user_op_submit(s, o);
}

int store_user_delete(struct store *s, const char *name, store_done_cb cb, void *data)
{
    if (strlen(name) > STORE_USER_NAME_MAX)
        return MLR_ENOTFOUND;
    struct user_op *o = user_op_new(name, cb, data);
    o->op.run = user_delete_run;
    return user_op_submit(s, o);
}

/* ---------------------------------- reads ---------------------------------- */

/* Reads every user into a new object {name: {password_hash, backend_roles, roles,
 * created_time}}, unless the version is still @known (then *out stays NULL). */
static int users_load(struct store__conn *c, int64_t known, struct json_object **out,
                      int64_t *version)
{
    struct store__stmt *st = NULL;
    int rc = version_get(c, version);
    if (rc != MLR_OK || (known >= 0 && *version == known))
        return rc;
    rc = store__stmt(c, "SELECT name, password_hash, backend_roles, roles, created_time "
                        "FROM users ORDER BY name", &st);
    if (rc != MLR_OK)
        return rc;
    struct json_object *all = json_object_new_object();
    int step;
    while ((step = store__step(st)) == SQLITE_ROW) {
        struct json_object *u = json_object_new_object();
        json_object_object_add(u, "password_hash",
                               json_object_new_string(store__col_text(st, 1)));
        struct json_object *br = json_tokener_parse(store__col_text(st, 2));
        struct json_object *ro = json_tokener_parse(store__col_text(st, 3));
        json_object_object_add(u, "backend_roles", br ? br : json_object_new_array());
        json_object_object_add(u, "roles", ro ? ro : json_object_new_array());
        json_object_object_add(u, "created_time", json_object_new_int64(
                                                      store__col_int(st, 4)));
        json_object_object_add(all, store__col_text(st, 0), u);
    }
    rc = step == SQLITE_DONE ? MLR_OK : store__err(step);
    store__reset(st);
    if (rc != MLR_OK) {
        json_object_put(all);
        return rc;
    }
    *out = all;
    return MLR_OK;
}

int store_users_load(struct store *s, struct json_object **users, int64_t *version)
{
    *users = NULL;
    return users_load(store__main_conn(s), -1, users, version);
}

struct users_read {
    int64_t known;
    int64_t version;
    struct json_object *users;
    store_users_cb cb;
    void *data;
};

static int users_read_run(struct store__conn *c, void *arg)
{
    struct users_read *r = arg;
    return users_load(c, r->known, &r->users, &r->version);
}

static void users_read_done(int status, void *arg)
{
    struct users_read *r = arg;
    r->cb(status, r->users, r->version, r->data);
    json_object_put(r->users);
    free(r);
}

int store_users_read(struct store *s, int64_t known_version, store_users_cb cb, void *data)
{
    struct users_read *r = mlr_xcalloc(1, sizeof(*r));
    r->known = known_version;
    r->cb = cb;
    r->data = data;
    int rc = store__read(s, users_read_run, r, users_read_done);
    if (rc != MLR_OK)
        free(r);
    return rc;
}
