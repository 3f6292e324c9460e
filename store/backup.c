/*
 * backup.c — an online, consistent copy of the database (`mlrelay backup DEST`).
 *
 * The copy uses SQLite's backup API on a connection of its own, so it works while a server has
 * the database open and keeps writing. Two things make it both consistent and kind to that
 * server:
 *
 *   - The source connection opens a read transaction before the first step and holds it until
 *     the last. Every step then copies pages of the same snapshot. Without it, each step opens
 *     its own read transaction, and a commit by another connection between two steps makes
 *     SQLite restart the copy from page 1: under a steady stream of writes the backup would never
 *     finish. In WAL mode (the server's mode) an open reader does not block the writer; it only
 *     stops checkpoints from getting past its snapshot, so the WAL grows for the length of the
 *     backup and shrinks at the next checkpoint after it.
 *   - Pages are copied in chunks with a short sleep in between, so the copy shares the disk with
 *     the server instead of saturating it.
 *
 * The destination is made atomically: the pages go to DEST.tmp (created 0600, since the copy
 * holds sealed credentials), the last step commits it with synchronous=FULL, the file is fsynced
 * once more after the connection closed, renamed over DEST, and the directory fsynced, so DEST
 * is always either what it was or the whole copy. Any thread; blocks on the disk.
 */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS 5000
#define BUSY_RETRIES 200 /* steps that found the source locked before we give up (×10 ms) */

/* Everything one backup holds; released by backup_cleanup(). */
struct backup {
    sqlite3 *src;               /* read-only connection to the live database */
    sqlite3 *dst;               /* connection to DEST.tmp */
    sqlite3_backup *b;          /* the backup object, between init and finish */
    char *tmp;                  /* "DEST.tmp" */
    int in_txn;                 /* the source read transaction is open */
    int tmp_made;               /* DEST.tmp exists and must go on failure */
};

static void resolve(struct store_backup_options *o, const struct store_backup_options *in)
{
    memset(o, 0, sizeof(*o));
    if (in)
        *o = *in;
    if (o->pages_per_step <= 0)
        o->pages_per_step = 256;
    if (o->pause_ms == 0)
        o->pause_ms = 2;
}

/* Maps errno after a failed file call to the project's errors. */
static int errno_err(int e)
{
    return e == ENOSPC ? MLR_ENOSPC : e == EACCES || e == EPERM || e == EROFS ? MLR_EPERM : MLR_EIO;
}

/* The SQLite error of @db (or of @rc when @db has none) as an mlr_err with a message. */
static int sqlite_fail(sqlite3 *db, int rc, const char *what, const char *path, char *err,
                       size_t errlen)
{
    snprintf(err, errlen, "%s %s: %s", what, path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    int e = store__err(rc);
    return e == MLR_OK ? MLR_EIO : e;
}

/* Refuses a destination that is a directory or the live database itself (renaming over it
 * would replace the database under a running server). */
static int check_paths(const char *src, const char *dest, const char *tmp, char *err,
                       size_t errlen)
{
    struct stat ss, ds;
    if (stat(src, &ss) != 0) {
        snprintf(err, errlen, "no database at %s: %s", src, strerror(errno));
        return errno == ENOENT ? MLR_ENOTFOUND : errno_err(errno);
    }
    if (!S_ISREG(ss.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", src);
        return MLR_ECORRUPT;
    }
    const char *paths[] = {dest, tmp};
    for (int i = 0; i < 2; i++) {
        if (stat(paths[i], &ds) != 0)
            continue;
        if (S_ISDIR(ds.st_mode)) {
            snprintf(err, errlen, "destination %s is a directory; give a file name", paths[i]);
            return MLR_EINVAL;
        }
        if (ds.st_dev == ss.st_dev && ds.st_ino == ss.st_ino) {
            snprintf(err, errlen, "destination %s is the database itself", paths[i]);
            return MLR_EINVAL;
        }
    }
    return MLR_OK;
}

/* Removes DEST.tmp and any journal SQLite left beside it. A stale DEST.tmp-journal from a
 * crashed backup must go before we reuse the name: SQLite would take it for a hot journal and
 * "roll back" our fresh copy with it. */
static void remove_tmp(const char *tmp)
{
    static const char *const suffixes[] = {"", "-journal", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char *p = mlr_xasprintf("%s%s", tmp, suffixes[i]);
        unlink(p);
        free(p);
    }
}

/* Creates an empty DEST.tmp with mode 0600 whatever the umask; SQLite then opens it as an
 * empty database. */
static int create_tmp(struct backup *bk, char *err, size_t errlen)
{
    remove_tmp(bk->tmp);
    int fd = open(bk->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", bk->tmp, strerror(errno));
        return errno_err(errno);
    }
    close(fd);
    bk->tmp_made = 1;
    return MLR_OK;
}

/* Opens the source read-only and starts the read transaction that pins the snapshot. */
static int open_source(struct backup *bk, const char *src, int *schema, char *err, size_t errlen)
{
    int rc = sqlite3_open_v2(src, &bk->src, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(bk->src, BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(bk->src, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        bk->in_txn = 1;
    sqlite3_stmt *st = NULL;
    /* A read of the schema is what actually opens the read transaction (BEGIN is deferred). */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(bk->src, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(bk->src, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        *schema = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        return sqlite_fail(bk->src, rc, "cannot read database", src, err, errlen);
    return MLR_OK;
}

static int open_dest(struct backup *bk, char *err, size_t errlen)
{
    int rc = sqlite3_open_v2(bk->tmp, &bk->dst, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(bk->dst, BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(bk->dst, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        bk->b = sqlite3_backup_init(bk->dst, "main", bk->src, "main");
        if (bk->b == NULL)
            rc = sqlite3_errcode(bk->dst);
    }
    if (rc != SQLITE_OK)
        return sqlite_fail(bk->dst, rc, "cannot write", bk->tmp, err, errlen);
    return MLR_OK;
}

/* Copies every page, a chunk at a time. */
static int copy_pages(struct backup *bk, const struct store_backup_options *o,
                      struct store_backup_info *info, char *err, size_t errlen)
{
    int busy = 0;
    for (;;) {
        int rc = sqlite3_backup_step(bk->b, o->pages_per_step);
        info->steps++;
        if (rc == SQLITE_DONE)
            break;
        if ((rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && ++busy < BUSY_RETRIES) {
            sqlite3_sleep(10);
            continue;
        }
        if (rc != SQLITE_OK)
            return sqlite_fail(bk->dst, rc, "backup step failed for", bk->tmp, err, errlen);
        busy = 0;
        if (o->on_step)
            o->on_step(sqlite3_backup_remaining(bk->b), sqlite3_backup_pagecount(bk->b), o->data);
        if (o->pause_ms > 0)
            sqlite3_sleep(o->pause_ms);
    }
    info->pages = sqlite3_backup_pagecount(bk->b);
    return MLR_OK;
}

/* fsync of a file or directory by path. */
static int sync_path(const char *path, int dir, char *err, size_t errlen)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
    int rc = fd >= 0 && fsync(fd) == 0 ? MLR_OK : errno_err(errno);
    if (rc != MLR_OK)
        snprintf(err, errlen, "cannot fsync %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Closes the copy, makes it durable and puts it in place. */
static int publish(struct backup *bk, const char *dest, struct store_backup_info *info, char *err,
                   size_t errlen)
{
    int rc = store__err(sqlite3_backup_finish(bk->b));
    bk->b = NULL;
    if (rc != MLR_OK)
        return sqlite_fail(bk->dst, sqlite3_errcode(bk->dst), "cannot finish", bk->tmp, err,
                           errlen);
    info->page_size = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(bk->dst, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        info->page_size = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (sqlite3_close(bk->dst) != SQLITE_OK)
        return sqlite_fail(bk->dst, SQLITE_BUSY, "cannot close", bk->tmp, err, errlen);
    bk->dst = NULL;
    rc = sync_path(bk->tmp, 0, err, errlen);
    if (rc == MLR_OK && rename(bk->tmp, dest) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", bk->tmp, dest, strerror(errno));
        rc = errno_err(errno);
    }
    if (rc != MLR_OK)
        return rc;
    bk->tmp_made = 0;
    char *copy = mlr_xstrdup(dest);
    rc = sync_path(dirname(copy), 1, err, errlen);
    free(copy);
    return rc;
}

static void backup_cleanup(struct backup *bk)
{
    if (bk->b)
        sqlite3_backup_finish(bk->b);
    sqlite3_close(bk->dst);
    if (bk->in_txn)
        sqlite3_exec(bk->src, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(bk->src);
    if (bk->tmp_made)
        remove_tmp(bk->tmp);
    free(bk->tmp);
    memset(bk, 0, sizeof(*bk));
}

int store_backup(const char *src_path, const char *dest_path,
                 const struct store_backup_options *opts, struct store_backup_info *out,
                 char *err, size_t errlen)
{
    struct store_backup_options o;
    struct store_backup_info info = {0};
    struct backup bk = {0};
    resolve(&o, opts);
    bk.tmp = mlr_xasprintf("%s.tmp", dest_path);
    int rc = check_paths(src_path, dest_path, bk.tmp, err, errlen);
    if (rc == MLR_OK)
        rc = open_source(&bk, src_path, &info.schema_version, err, errlen);
    if (rc == MLR_OK)
        rc = create_tmp(&bk, err, errlen);
    if (rc == MLR_OK)
        rc = open_dest(&bk, err, errlen);
    if (rc == MLR_OK)
        rc = copy_pages(&bk, &o, &info, err, errlen);
    if (rc == MLR_OK)
        rc = publish(&bk, dest_path, &info, err, errlen);
    backup_cleanup(&bk);
    if (rc == MLR_OK && out)
        *out = info;
    return rc;
}
