/*
 * store.h — durable state: the one place that knows about the database.
 *
 * The interface is deliberately narrow and typed (settings, metadata, and later model groups,
 * connectors, models, tasks, users): callers never see SQL or a sqlite3 handle, so a second backend
 * (PostgreSQL) can sit behind the same functions.
 *
 * Threading: store_open()/store_close() and every function taking a callback are called on the
 * loop thread, and every callback runs on the loop thread. Writes go to one writer thread that
 * batches whatever is pending into one transaction (group commit); a write's callback runs only
 * after its transaction committed (or failed). Reads run on libuv's thread pool, each with its
 * own connection, so the loop never blocks on the disk.
 */
#ifndef MLR_STORE_H
#define MLR_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common.h"

struct store;
struct json_object;

/** Completion of an asynchronous write: @status is MLR_OK once committed, else an mlr_err. */
typedef void (*store_done_cb)(int status, void *data);

/** Tunables; zeroed fields take the defaults noted. */
struct store_options {
    int read_connections;  /* connections for the read pool; default 4 */
    int busy_timeout_ms;   /* SQLite busy timeout; default 5000 */
    int max_batch;         /* most writes sharing one transaction; default 1024 */
};

/**
 * Opens (creating if needed) the SQLite database at @path in WAL mode with synchronous=FULL and
 * foreign keys on, applies the embedded migrations in order, and starts the writer thread, whose
 * completions are delivered on @loop. On failure returns an mlr_err (MLR_ETOONEW when the
 * database was written by a newer mlrelay) with a message in @err, and *@out is untouched.
 */
int store_open(uv_loop_t *loop, const char *path, const struct store_options *opts,
               struct store **out, char *err, size_t errlen);

/**
 * Finishes every write already submitted (their callbacks run before this returns), stops the
 * writer thread and closes the connections. The async handle is closed with uv_close(), so the
 * caller must run @loop once more for the memory to be released. Accepts NULL. Loop thread only.
 */
void store_close(struct store *s);

/** The message of the last foreign (SQLite) error seen by the loop-thread API, for logs. */
const char *store_errmsg(const struct store *s);

/** The schema version of the open database (PRAGMA user_version). */
int store_schema_version(const struct store *s);

/** The highest schema version this binary knows. */
int store_schema_version_max(void);

/**
 * The cluster UUID (22 URL-safe base64 characters), created with the database. Valid while the
 * store is open.
 */
const char *store_cluster_uuid(const struct store *s);

/* ------------------------------------------------------------------------------------------ */
/* Settings                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/**
 * Reads every stored (persistent) cluster setting into a new flat layer (see common.h) owned by
 * the caller. Synchronous; meant for start-up, before the loop runs.
 */
int store_settings_load(struct store *s, struct json_object **out);

/**
 * Persists a normalised change set (values: strings or arrays of strings to set, JSON null to
 * remove) atomically. @changes is copied; @cb runs on the loop thread after commit. Returns an
 * error (and never calls @cb) only if the store is closing.
 */
int store_settings_put(struct store *s, struct json_object *changes, store_done_cb cb, void *data);

/* ------------------------------------------------------------------------------------------ */
/* Statistics                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/**
 * Statistics of the group-commit writer, for tests and benchmarks: number of transactions
 * committed and number of writes they carried.
 */
struct store_stats {
    uint64_t commits;  /* transactions committed by the writer thread */
    uint64_t writes;   /* writes carried by those transactions */
};
void store_stats_get(struct store *s, struct store_stats *out);

#endif /* MLR_STORE_H */
