/*
 * check.c — a health report of a database file (`mlrelay check`).
 *
 * Opens the file read-only on a connection of its own (never creating or migrating it), so it
 * can run beside a live server, and reads everything inside one read transaction: the integrity
 * check and the counts describe the same snapshot. Counting needs the tables of a schema this
 * binary knows, so it is skipped for a damaged database or one written by a newer mlrelay.
 *
 * Costs: PRAGMA integrity_check reads every page; the counts scan the primary keys and the state
 * indexes. Any thread; blocks on the disk.
 */
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define BUSY_TIMEOUT_MS 5000
#define INTEGRITY_MAX_ERRORS 10 /* messages integrity_check returns at most */

static int fail(sqlite3 *db, int rc, const char *path, char *err, size_t errlen)
{
    snprintf(err, errlen, "cannot check %s: %s", path,
             db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    int e = store__err(rc);
    return e == MLR_OK ? MLR_EIO : e;
}

/* Runs a statement returning one integer. */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Collects integrity_check's rows: one "ok", or up to INTEGRITY_MAX_ERRORS problems. */
static int integrity(sqlite3 *db, struct store_check_report *r)
{
    sqlite3_stmt *st = NULL;
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA integrity_check(%d)", INTEGRITY_MAX_ERRORS);
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    size_t used = 0;
    r->integrity[0] = '\0';
    int step = rc == SQLITE_OK ? sqlite3_step(st) : rc;
    while (step == SQLITE_ROW) {
        const char *msg = (const char *)sqlite3_column_text(st, 0);
        int n = snprintf(r->integrity + used, sizeof(r->integrity) - used, "%s%s",
                         used ? "; " : "", msg ? msg : "");
        used = n > 0 && used + (size_t)n < sizeof(r->integrity) ? used + (size_t)n
                                                                  : sizeof(r->integrity) - 1;
        step = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (step != SQLITE_DONE)
        return step;
    r->integrity_ok = strcmp(r->integrity, "ok") == 0;
    return SQLITE_OK;
}

/* Fills @out with "state, count" rows of @sql (sorted by state); the rows past the array are
 * summed into the last entry, renamed "(other)". */
static int count_states(sqlite3 *db, const char *sql, struct store_state_count *out, int *n)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    *n = 0;
    int step = rc == SQLITE_OK ? sqlite3_step(st) : rc;
    for (; step == SQLITE_ROW; step = sqlite3_step(st)) {
        const char *state = (const char *)sqlite3_column_text(st, 0);
        int64_t count = sqlite3_column_int64(st, 1);
        if (*n == STORE_CHECK_STATES) {
            snprintf(out[*n - 1].state, sizeof(out[0].state), "(other)");
            out[*n - 1].count += count;
            continue;
        }
        snprintf(out[*n].state, sizeof(out[0].state), "%s", state ? state : "(null)");
        out[*n].count = count;
        (*n)++;
    }
    sqlite3_finalize(st);
    return step == SQLITE_DONE ? SQLITE_OK : step;
}

static int counts(sqlite3 *db, struct store_check_report *r)
{
    int rc = query_int(db, "SELECT count(*) FROM model_groups", &r->model_groups);
    if (rc == SQLITE_OK)
        rc = query_int(db, "SELECT count(*) FROM connectors", &r->connectors);
    if (rc == SQLITE_OK)
        rc = query_int(db, "SELECT count(*) FROM models", &r->models);
    if (rc == SQLITE_OK)
        rc = query_int(db, "SELECT count(*) FROM tasks", &r->tasks);
    if (rc == SQLITE_OK)
        rc = query_int(db, "SELECT count(*) FROM models WHERE model_state = 'DEPLOYED'",
                       &r->models_deployed);
    if (rc == SQLITE_OK)
        rc = count_states(db, "SELECT model_state, count(*) FROM models GROUP BY 1 ORDER BY 1",
                          r->model_states, &r->nmodel_states);
    if (rc == SQLITE_OK)
        rc = count_states(db, "SELECT state, count(*) FROM tasks GROUP BY 1 ORDER BY 1",
                          r->task_states, &r->ntask_states);
    if (rc == SQLITE_OK)
        r->counted = 1;
    return rc;
}

static int inspect(sqlite3 *db, struct store_check_report *r)
{
    int64_t v = 0;
    int rc = query_int(db, "PRAGMA user_version", &v);
    r->schema_version = (int)v;
    if (rc == SQLITE_OK)
        rc = integrity(db, r);
    if (rc == SQLITE_OK && r->integrity_ok && r->schema_version >= 1 &&
        r->schema_version <= r->schema_max)
        rc = counts(db, r);
    return rc;
}

int store_check(const char *path, struct store_check_report *out, char *err, size_t errlen)
{
    struct store_check_report r;
    struct stat sb;
    sqlite3 *db = NULL;
    int in_txn = 0;
    memset(&r, 0, sizeof(r));
    r.schema_max = store_schema_version_max();
    if (stat(path, &sb) != 0) {
        snprintf(err, errlen, "no database at %s: %s", path, strerror(errno));
        return errno == ENOENT ? MLR_ENOTFOUND : MLR_EIO;
    }
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    in_txn = rc == SQLITE_OK;
    if (rc == SQLITE_OK)
        rc = inspect(db, &r);
    int ret = rc == SQLITE_OK ? MLR_OK : fail(db, rc, path, err, errlen);
    if (in_txn)
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    if (ret == MLR_OK)
        *out = r;
    return ret;
}
