/*
 * store_int.h — internals shared by the files of store/. Nothing outside store/ includes this
 * (tests of store/ excepted).
 */
#ifndef MLR_STORE_INT_H
#define MLR_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "store.h"

/* One embedded migration (generated from migrations/NNNN_name.sql at build time). */
struct store__migration {
    int version;      /* NNNN: 1, 2, ... with no gaps */
    const char *name; /* file name without .sql */
    const char *sql;  /* whole file text */
};
extern const struct store__migration store__migrations[];
extern const size_t store__migrations_count;

/*
 * Applies @list[0..n) above the database's PRAGMA user_version, each in its own transaction.
 * Returns MLR_OK, MLR_ETOONEW when the database is newer than the list, or MLR_EIO/MLR_ECORRUPT
 * with a message in @err.
 */
int store__migrate(sqlite3 *db, const struct store__migration *list, size_t n, char *err,
                   size_t errlen);

/* Translates a SQLite result code into the project's error space. */
int store__err(int rc);

/* A cached prepared statement, keyed by the address of its static SQL text. */
#define STORE_STMT_CACHE 32
struct store__conn {
    sqlite3 *db;
    struct {
        const char *sql;   /* static string the statement was prepared from */
        sqlite3_stmt *st;
    } cache[STORE_STMT_CACHE];
    int ncache;            /* used entries of cache */
};

/* Returns the cached statement for @sql (reset, bindings cleared), preparing it on first use. */
int store__stmt(struct store__conn *c, const char *sql, sqlite3_stmt **out);

/*
 * A unit of work for the writer thread. run() executes inside the group transaction under its
 * own savepoint: returning non-MLR_OK rolls back only this op. done() runs on the loop thread with
 * op->status set (MLR_OK only if the transaction committed) and must free the op.
 */
struct store__op {
    struct store__op *next;                                  /* queue link */
    int (*run)(struct store__conn *c, struct store__op *op); /* writer thread */
    void (*done)(struct store__op *op);                      /* loop thread */
    int status;                                              /* result, set before done() */
};

/* Queues @op for the writer. Returns MLR_ECLOSED if the store is closing (op not queued). */
int store__submit(struct store *s, struct store__op *op);

/*
 * Runs @fn(conn, arg) on libuv's thread pool with a pooled read connection, then @done(status,
 * arg) on the loop thread (status = fn's result, or MLR_ECLOSED if the work was cancelled).
 */
typedef int (*store__read_fn)(struct store__conn *c, void *arg);
typedef void (*store__read_done)(int status, void *arg);
int store__read(struct store *s, store__read_fn fn, void *arg, store__read_done done);

/* The loop-thread connection used for synchronous start-up reads. */
struct store__conn *store__main_conn(struct store *s);

#endif /* MLR_STORE_INT_H */
