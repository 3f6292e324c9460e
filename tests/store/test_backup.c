/*
 * test_backup.c — unit tests of store/backup.c: a copy holds every committed row and passes the
 * integrity check; it is one snapshot even when another connection commits between every two
 * steps (and it finishes: no restart from page 1); DEST is replaced atomically, is 0600, and a
 * stale DEST.tmp-journal cannot leak into it; refusals (missing source, not a database, a
 * directory or the source itself as DEST, a missing destination directory) leave nothing behind.
 * Each case gets its own temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_int.h"

struct fixture {
    char dir[64];
    char src[128];   /* the "live" database */
    char dest[128];  /* where the backup goes */
    char tmp[160];   /* dest + ".tmp" */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/mlr-backup-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->src, sizeof(f->src), "%s/live.db", f->dir);
    snprintf(f->dest, sizeof(f->dest), "%s/copy.db", f->dir);
    snprintf(f->tmp, sizeof(f->tmp), "%s.tmp", f->dest);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static sqlite3 *db_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_busy_timeout(db, 5000), SQLITE_OK);
    return db;
}

static void db_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static int64_t db_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* A WAL database like the server's, with @rows rows of 500 bytes (about 130 pages per 1000). */
static sqlite3 *make_source(const char *path, int rows)
{
    sqlite3 *db = db_open(path);
    db_exec(db, "PRAGMA journal_mode=WAL; PRAGMA user_version=7;"
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    db_exec(db, "BEGIN");
    char sql[128];
    snprintf(sql, sizeof(sql),
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
             "INSERT INTO t(v) SELECT randomblob(500) FROM n",
             rows);
    db_exec(db, sql);
    db_exec(db, "COMMIT");
    return db;
}

/* Opens the copy and returns its row count after asserting integrity_check says ok. */
static int64_t copy_rows(const char *path)
{
    sqlite3 *db = db_open(path);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    int64_t n = db_int(db, "SELECT count(*) FROM t");
    assert_int_equal(db_int(db, "PRAGMA user_version"), 7);
    sqlite3_close(db);
    return n;
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static void backup_copies_committed_rows(void **state)
{
    struct fixture *f = *state;
    sqlite3 *live = make_source(f->src, 2000);
    char err[256] = "";
    struct store_backup_info info;
    memset(&info, 0xff, sizeof(info));
    int rc = store_backup(f->src, f->dest, NULL, &info, err, sizeof(err));
    if (rc != MLR_OK)
        fail_msg("store_backup: %s (%s)", mlr_err_name(rc), err);
    assert_int_equal(info.schema_version, 7);
    assert_true(info.pages > 100);
    assert_int_equal(info.page_size, db_int(live, "PRAGMA page_size"));
    assert_true(info.steps >= 1);
    assert_int_equal(copy_rows(f->dest), 2000);
    struct stat sb;
    assert_int_equal(stat(f->dest, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600); /* it holds sealed credentials */
    assert_false(exists(f->tmp));
    sqlite3_close(live);
}

/* The writer of the "live" database: commits one more row after every backup step. */
struct writer {
    sqlite3 *db;
    int steps;               /* on_step calls */
    int64_t max_remaining;   /* the largest `remaining` seen after the first step */
    int64_t first_remaining;
    int restarted;           /* remaining went up: the copy started over */
};

static void on_step(int64_t remaining, int64_t total, void *data)
{
    struct writer *w = data;
    assert_true(remaining <= total);
    if (w->steps > 0 && remaining > w->max_remaining)
        w->restarted = 1;
    if (w->steps == 0)
        w->first_remaining = remaining;
    w->max_remaining = remaining;
    w->steps++;
    if (w->steps > 2000) /* ~80 steps suffice: a copy that keeps restarting never ends */
        fail_msg("the backup does not finish under writes (restarted: %d)", w->restarted);
    db_exec(w->db, "INSERT INTO t(v) VALUES(randomblob(500))"); /* its own committed txn */
}

static void backup_is_one_snapshot_under_writes(void **state)
{
    struct fixture *f = *state;
    struct writer w = {.db = make_source(f->src, 2000)};
    struct store_backup_options o = {.pages_per_step = 4, .pause_ms = -1, .on_step = on_step,
                                     .data = &w};
    char err[256] = "";
    struct store_backup_info info;
    int rc = store_backup(f->src, f->dest, &o, &info, err, sizeof(err));
    if (rc != MLR_OK)
        fail_msg("store_backup: %s (%s)", mlr_err_name(rc), err);
    /* Many steps, each followed by a commit elsewhere, and never a restart. */
    assert_true(w.steps > 20);
    assert_false(w.restarted);
    assert_int_equal(info.steps, w.steps + 1); /* the last step returns DONE, no callback */
    assert_true(info.pages <= 4 * (int64_t)info.steps);
    /* Exactly the rows committed before the backup began. */
    assert_int_equal(copy_rows(f->dest), 2000);
    assert_int_equal(db_int(w.db, "SELECT count(*) FROM t"), 2000 + w.steps);
    sqlite3_close(w.db);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void backup_replaces_dest_and_ignores_stale_journal(void **state)
{
    struct fixture *f = *state;
    sqlite3 *live = make_source(f->src, 300);
    write_file(f->dest, "an older backup");
    /* Leftovers of a backup that crashed: a partial DEST.tmp and its hot journal. */
    write_file(f->tmp, "partial");
    char journal[192];
    snprintf(journal, sizeof(journal), "%s-journal", f->tmp);
    write_file(journal, "not a journal SQLite should ever replay");
    char err[256] = "";
    int rc = store_backup(f->src, f->dest, NULL, NULL, err, sizeof(err));
    if (rc != MLR_OK)
        fail_msg("store_backup: %s (%s)", mlr_err_name(rc), err);
    assert_int_equal(copy_rows(f->dest), 300);
    assert_false(exists(f->tmp));
    assert_false(exists(journal));
    sqlite3_close(live);
}

static void backup_missing_source_creates_nothing(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    assert_int_equal(store_backup(f->src, f->dest, NULL, NULL, err, sizeof(err)), MLR_ENOTFOUND);
    assert_non_null(strstr(err, f->src));
    assert_false(exists(f->src)); /* never created by opening it */
    assert_false(exists(f->dest));
    assert_false(exists(f->tmp));
}

static void backup_not_a_database(void **state)
{
    struct fixture *f = *state;
    char garbage[8192];
    memset(garbage, 'x', sizeof(garbage) - 1);
    garbage[sizeof(garbage) - 1] = '\0';
    write_file(f->src, garbage);
    write_file(f->dest, "keep me");
    char err[256] = "";
    assert_int_equal(store_backup(f->src, f->dest, NULL, NULL, err, sizeof(err)), MLR_ECORRUPT);
    assert_non_null(strstr(err, "not a database"));
    assert_false(exists(f->tmp));
    FILE *fp = fopen(f->dest, "r");
    char buf[32] = "";
    assert_non_null(fgets(buf, sizeof(buf), fp));
    fclose(fp);
    assert_string_equal(buf, "keep me"); /* DEST untouched */
}

static void backup_refuses_directory_and_itself(void **state)
{
    struct fixture *f = *state;
    sqlite3 *live = make_source(f->src, 10);
    char err[256] = "";
    assert_int_equal(store_backup(f->src, f->dir, NULL, NULL, err, sizeof(err)), MLR_EINVAL);
    assert_non_null(strstr(err, "directory"));
    char same[160];
    snprintf(same, sizeof(same), "%s/./live.db", f->dir); /* another spelling of the source */
    assert_int_equal(store_backup(f->src, same, NULL, NULL, err, sizeof(err)), MLR_EINVAL);
    assert_non_null(strstr(err, "database itself"));
    assert_int_equal(db_int(live, "SELECT count(*) FROM t"), 10);
    sqlite3_close(live);
    assert_int_equal(copy_rows(f->src), 10);
}

static void backup_missing_dest_dir(void **state)
{
    struct fixture *f = *state;
    sqlite3 *live = make_source(f->src, 10);
    char dest[192], err[256] = "";
    snprintf(dest, sizeof(dest), "%s/no/such/dir/copy.db", f->dir);
    assert_int_equal(store_backup(f->src, dest, NULL, NULL, err, sizeof(err)), MLR_EIO);
    assert_non_null(strstr(err, "copy.db.tmp"));
    sqlite3_close(live);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(backup_copies_committed_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(backup_is_one_snapshot_under_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(backup_replaces_dest_and_ignores_stale_journal, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(backup_missing_source_creates_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(backup_not_a_database, setup, teardown),
        cmocka_unit_test_setup_teardown(backup_refuses_directory_and_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(backup_missing_dest_dir, setup, teardown),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
