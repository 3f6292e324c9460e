/*
 * pg.c — what only the PostgreSQL backend needs: its migrations.
 *
 * Several mlrelay nodes may start against one empty database at the same moment, so migrating
 * holds a session advisory lock: the first node applies the history, the others wait and then
 * find nothing left to do. The applied version lives in a one-row table (PostgreSQL has no
 * PRAGMA user_version), bumped in the same transaction as each migration.
 */
#include "store_int.h"

#include <stdio.h>

/* Any constant works, as long as every node uses the same one: "mlrelay" in ASCII. */
#define MIGRATE_LOCK "7171308091983737"

int store__pg_schema_version(struct store__conn *c, int *out)
{
    struct store__stmt *st = NULL;
    int rc = store__prepare(c, "SELECT version FROM mlr_schema", &st);
    if (rc == MLR_OK) {
        int step = store__step(st);
        if (step == SQLITE_ROW)
            *out = (int)store__col_int(st, 0);
        else
            rc = step == SQLITE_DONE ? MLR_ECORRUPT : store__err(step);
    }
    store__finalize(st);
    return rc;
}

static int apply_one(struct store__conn *c, const struct store__migration *m, char *err,
                     size_t errlen)
{
    char bump[64];
    snprintf(bump, sizeof(bump), "UPDATE mlr_schema SET version = %d", m->version);
    int rc = store__exec(c, "BEGIN");
    if (rc == SQLITE_OK)
        rc = store__exec(c, m->sql);
    if (rc == SQLITE_OK)
        rc = store__exec(c, bump);
    if (rc == SQLITE_OK)
        rc = store__exec(c, "COMMIT");
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "migration postgres/%s failed: %s", m->name, store__errmsg(c));
        store__exec(c, "ROLLBACK");
        return store__err(rc) == MLR_OK ? MLR_EIO : store__err(rc);
    }
    mlr_log(MLR_LOG_INFO, "store", "applied migration postgres/%s", m->name);
    return MLR_OK;
}

static int apply_pg(void *c, const struct store__migration *m, char *err, size_t errlen)
{
    return apply_one(c, m, err, errlen);
}

static int migrate_locked(struct store__conn *c, const struct store__migration *list, size_t n,
                          char *err, size_t errlen)
{
    int current = 0;
    int rc = store__exec(c, "CREATE TABLE IF NOT EXISTS mlr_schema (version INTEGER NOT NULL);"
                            "INSERT INTO mlr_schema SELECT 0 WHERE NOT EXISTS "
                            "(SELECT 1 FROM mlr_schema)");
    if (rc != SQLITE_OK || store__pg_schema_version(c, &current) != MLR_OK) {
        snprintf(err, errlen, "cannot read schema version: %s", store__errmsg(c));
        return MLR_EIO;
    }
    return store__migrate_from(current, list, n, apply_pg, c, err, errlen);
}

int store__pg_migrate(struct store__conn *c, const struct store__migration *list, size_t n,
                      char *err, size_t errlen)
{
    if (store__exec(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK ")") != SQLITE_OK) {
        snprintf(err, errlen, "cannot lock the database for migrations: %s", store__errmsg(c));
        return MLR_EIO;
    }
    int rc = migrate_locked(c, list, n, err, errlen);
    store__exec(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK ")");
    return rc;
}
