/*
 * migrate.c — schema migrations.
 *
 * The schema history is the ordered list of migrations/NNNN_description.sql files, embedded into
 * the binary at build time. PRAGMA user_version records the last one applied. At start-up every
 * migration above it is applied, each in its own IMMEDIATE transaction together with the
 * user_version bump, so a crash mid-upgrade leaves the database at the previous version, never
 * half-way. A database whose user_version is above the newest embedded migration was written by
 * a newer mlrelay and is refused: an old binary cannot know what the new columns mean.
 *
 * Procedure for changing the on-disk format:
 *   1. Never edit a migration that has been released; add migrations/NNNN+1_what.sql instead.
 *   2. Write it so it runs in one transaction (ALTER TABLE ADD COLUMN, CREATE TABLE/INDEX,
 *      UPDATE to backfill). For a change SQLite cannot ALTER, create the new table, copy, drop,
 *      rename — all in the same file.
 *   3. Update the typed accessors in store/ and the PostgreSQL dialect under
 *      migrations/postgres/ when that backend exists.
 *   4. Add a test that opens a database made by the previous version and checks the upgrade.
 * Downgrades are not supported: restore the backup taken before upgrading.
 */
#include "store_int.h"

#include <stdio.h>

static int user_version(sqlite3 *db, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        *out = sqlite3_column_int(st, 0);
    else if (rc == SQLITE_OK)
        rc = SQLITE_ERROR;
    sqlite3_finalize(st);
    return rc;
}

static int apply_one(sqlite3 *db, const struct store__migration *m, char *err, size_t errlen)
{
    char bump[64];
    snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", m->version);
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, m->sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, bump, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "migration %s failed: %s", m->name, sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return store__err(rc) == MLR_OK ? MLR_EIO : store__err(rc);
    }
    mlr_log(MLR_LOG_INFO, "store", "applied migration %s", m->name);
    return MLR_OK;
}

static int apply_sqlite(void *db, const struct store__migration *m, char *err, size_t errlen)
{
    return apply_one(db, m, err, errlen);
}

int store__migrate(sqlite3 *db, const struct store__migration *list, size_t n, char *err,
                   size_t errlen)
{
    int current = 0;
    if (user_version(db, &current) != SQLITE_OK) {
        snprintf(err, errlen, "cannot read schema version: %s", sqlite3_errmsg(db));
        return MLR_ECORRUPT;
    }
    return store__migrate_from(current, list, n, apply_sqlite, db, err, errlen);
}

int store__migrate_from(int current, const struct store__migration *list, size_t n,
                        store__apply_fn apply, void *ctx, char *err, size_t errlen)
{
    int newest = n ? list[n - 1].version : 0;
    if (current > newest) {
        snprintf(err, errlen,
                 "database schema version %d is newer than this mlrelay supports (%d); "
                 "run a newer mlrelay or restore a backup",
                 current, newest);
        return MLR_ETOONEW;
    }
    for (size_t i = 0; i < n; i++) {
        if (list[i].version != (int)i + 1) {
            snprintf(err, errlen, "migration %s is out of sequence", list[i].name);
            return MLR_EINTERNAL;
        }
        if (list[i].version <= current)
            continue;
        int rc = apply(ctx, &list[i], err, errlen);
        if (rc != MLR_OK)
            return rc;
    }
    return MLR_OK;
}
