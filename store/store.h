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
    const char *node_id;   /* this node's id: recorded on the tasks it claims; default "" */
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
 * Statistics of the group-commit writer, for tests, benchmarks and /metrics: number of
 * transactions committed and number of writes they carried, and two live histograms the writer
 * thread keeps (read them only while the store is open; their fields are atomics, so any thread
 * may read them while the writer updates them).
 */
struct store_stats {
    uint64_t commits;                       /* transactions committed by the writer thread */
    uint64_t writes;                        /* writes carried by those transactions */
    const struct mlr_histogram *commit_us;  /* time from BEGIN to COMMIT done (the fsync
                                             * included) per committed transaction, µs */
    const struct mlr_histogram *batch_size; /* writes per committed transaction */
};
void store_stats_get(struct store *s, struct store_stats *out);

/* ------------------------------------------------------------------------------------------ */
/* Documents: model groups, connectors, models, tasks                                         */
/* ------------------------------------------------------------------------------------------ */

/*
 * Every resource is stored as its JSON document (what GET returns) plus derived, indexed columns
 * for the fields searches filter and sort on. Secrets never live in the document: a connector's
 * (or an inline connector's) encrypted credential map is kept beside it and only returned when
 * explicitly asked for.
 */
enum store_kind { STORE_MODEL_GROUP = 0, STORE_CONNECTOR, STORE_MODEL, STORE_TASK, STORE__KINDS };

/** The OpenSearch index name of @kind (".plugins-ml-model", ...), for write responses. */
const char *store_kind_index(enum store_kind kind);

/** How many documents exist, per kind (store_doc_counts_get()). */
struct store_doc_counts {
    int64_t docs[STORE__KINDS]; /* by kind; for STORE_TASK only 0 or 1 (does any task exist?) */
};
typedef void (*store_doc_counts_cb)(int status, const struct store_doc_counts *c, void *data);

/**
 * Counts the model groups, connectors and models, and checks whether any task exists, on the
 * read pool; @cb gets the counts (NULL unless @status is MLR_OK). Returns MLR_ECLOSED (and never
 * calls @cb) when the store is closing.
 */
int store_doc_counts_get(struct store *s, store_doc_counts_cb cb, void *data);

#define STORE_ID_MAX 512

/** The outcome of a document write, valid during the callback only. */
struct store_write_result {
    int status;                 /* MLR_OK or an mlr_err (see each function) */
    const char *id;             /* the document written (or, for a name clash, the holder) */
    int64_t version;            /* _version after the write */
    int64_t seq_no;             /* _seq_no of the write */
    const char *detail;         /* error detail: e.g. "[id1, id2]" of models using a connector */
    int count;                  /* e.g. how many models use the connector */
    const char *task_id;        /* model register: the REGISTER_MODEL task */
    const char *group_id;       /* model register: the group the model went into */
    const char *model_version;  /* model register: the model's version in its group */
};
typedef void (*store_write_cb)(const struct store_write_result *r, void *data);

/** A document as read, valid during the callback; the callback may take ownership of doc by
 * setting it to NULL. */
struct store_doc {
    const char *id;
    struct json_object *doc;    /* the stored document */
    const char *credential;     /* encrypted credential map (JSON text), when asked for */
    int64_t version;
    int64_t seq_no;
    int kind_empty;             /* with MLR_ENOTFOUND: no document of this kind exists at all
                                 * (ML Commons then says its index is missing) */
};
typedef void (*store_doc_cb)(int status, struct store_doc *d, void *data);

/**
 * Inserts a new document @doc (copied) with id @id (copied) and its side data @credential (may be
 * NULL; copied): for connectors and models the encrypted credential map (JSON text), for tasks
 * the task's input (an async predict's request body). Side data is never part of the document.
 * Derived columns are read from the document.
 * Errors: MLR_EEXIST (the id is taken); model groups: MLR_ECONFLICT when the name is taken (the
 * holder's id in r->id).
 */
int store_doc_insert(struct store *s, enum store_kind kind, const char *id, struct json_object *doc,
                     const char *credential, store_write_cb cb, void *data);

/**
 * An in-transaction edit: runs on the writer thread with the current document (which it edits in
 * place) and, for documents with secrets, the current encrypted credential (*credential may be
 * replaced with a heap string, freeing the old). Returns MLR_OK to write, or an error (with a
 * message in @err) to leave the document untouched. Must not touch loop-thread state.
 */
typedef int (*store_patch_fn)(struct json_object *doc, char **credential, void *arg, char *err,
                              size_t errlen);

/**
 * Atomically reads, patches and rewrites document @id. The callback receives MLR_ENOTFOUND,
 * the patch's error (message in r->detail) or MLR_OK with the new version. Model groups: a
 * renamed group whose new name is taken gives MLR_ECONFLICT with the holder's id in r->id.
 */
int store_doc_update(struct store *s, enum store_kind kind, const char *id, store_patch_fn patch,
                     void *arg, store_write_cb cb, void *data);

/**
 * Deletes document @id. Refusals, checked in the same transaction: a model group that still has
 * models (MLR_ECONFLICT); a connector used by models (MLR_ECONFLICT, count and "[ids]" in
 * r->count/r->detail); a model that is DEPLOYED, DEPLOYING or PARTIALLY_DEPLOYED
 * (MLR_EBUSY); a task that is RUNNING (MLR_EBUSY). Unknown id: MLR_ENOTFOUND.
 */
int store_doc_delete(struct store *s, enum store_kind kind, const char *id, store_write_cb cb,
                     void *data);

/** Reads document @id (MLR_ENOTFOUND when absent) on the read pool. */
int store_doc_get(struct store *s, enum store_kind kind, const char *id, int with_credential,
                  store_doc_cb cb, void *data);

/**
 * Who is asking, for access control (reference §12). Callers pass NULL when nothing is
 * restricted: no users are configured, the caller is an admin, or access control is off.
 */
struct store_access {
    const char *user;           /* the caller's name */
    const char *backend_roles;  /* JSON array text of the caller's backend roles */
    int groups;                 /* model access control: restricts model groups and models */
    int connectors;             /* connector access control: restricts connectors */
};

/**
 * Whether @acc may use document @id of @kind (reference §12.2/§12.3): @cb gets MLR_OK, MLR_EPERM
 * or MLR_ENOTFOUND. Calls @cb at once with MLR_OK when @kind is not restricted for @acc.
 */
int store_access_check(struct store *s, enum store_kind kind, const char *id,
                       const struct store_access *acc, store_done_cb cb, void *data);

/** What a search produced: the OpenSearch search response (owned by the store). */
typedef void (*store_search_cb)(int status, struct json_object *response, void *data);

/**
 * Runs an OpenSearch `_search` body (NULL = match_all) over @kind on the read pool, showing only
 * what @acc may see (NULL: everything; totals count only those). A malformed
 * body is refused synchronously: MLR_EINVAL with the error type in @err_type (static) and the
 * reason in @err; the callback is then not called.
 */
int store_doc_search(struct store *s, enum store_kind kind, struct json_object *body,
                     const struct store_access *acc, store_search_cb cb, void *data,
                     const char **err_type, char *err, size_t errlen);

/** A remote model registration: group resolution, version bump, model and task rows in one
 * transaction. All strings and documents are copied. */
struct store_model_register {
    const char *model_id;             /* the new model's id */
    const char *group_id;             /* NULL: use the group named like the model, or create it */
    const char *group_new_id;         /* id for an auto-created group */
    struct json_object *group_doc;    /* document for an auto-created group */
    const char *connector_id;         /* standalone connector that must exist, or NULL */
    struct json_object *model_doc;    /* model_group_id and model_version are filled in here */
    const char *credential;           /* inline connector's encrypted credential, or NULL */
    const char *task_id;              /* the REGISTER_MODEL task's id */
    struct json_object *task_doc;     /* its document (model_id is filled in here) */
};

/**
 * Registers a model. Errors: MLR_EEXIST (model id taken), MLR_ENOTFOUND with r->detail "group"
 * (unknown model_group_id) or "connector" (unknown connector_id).
 */
int store_model_register(struct store *s, const struct store_model_register *req,
                         store_write_cb cb, void *data);

/* ------------------------------------------------------------------------------------------ */
/* Tasks and deployments (tasks.c)                                                            */
/* ------------------------------------------------------------------------------------------ */

/** A task handed to a worker by store_task_claim(); valid during the callback only. */
struct store_task {
    const char *id;
    const char *task_type;       /* "DEPLOY_MODEL", ... */
    const char *model_id;        /* may be NULL */
    struct json_object *doc;     /* the task document (state already RUNNING); callback may
                                  * take it by setting it to NULL */
    const char *input;           /* the task's input (side data), or NULL */
};
typedef void (*store_claim_cb)(int status, struct store_task *tasks, int n, void *data);

/**
 * Claims up to @max runnable tasks, oldest first: CREATED ones, and RUNNING ones whose lease
 * ended before @now_ms (their worker vanished). They become RUNNING with lease_until_ms
 * @lease_until_ms, in one transaction.
 */
int store_task_claim(struct store *s, int max, int64_t now_ms, int64_t lease_until_ms,
                     store_claim_cb cb, void *data);

/** The outcome of one task, applied by store_task_finish(). */
struct store_task_result {
    const char *id;                   /* the task */
    const char *state;                /* final state: "COMPLETED", "FAILED", ... */
    const char *error;                /* task "error" text, or NULL */
    struct json_object *task_fields;  /* extra members merged into the task doc, or NULL */
    const char *model_id;             /* a model to update with the task, or NULL */
    const char *model_state;          /* its new model_state, or NULL to keep it */
    struct json_object *model_fields; /* members merged into the model doc (NULL values
                                       * remove the member), or NULL */
    const char *only_if_state;        /* apply the model change only while the model is in
                                       * one of these '|'-separated states, or NULL */
};

/**
 * Completion of store_task_finish(): @applied[i] is 1 when result i changed its task (and its
 * model change, if any, was applied too), 0 when the task was no longer RUNNING or the model was
 * not in only_if_state.
 */
typedef void (*store_finish_cb)(int status, const int *applied, int n, void *data);

/**
 * Finishes @n tasks in one transaction. A task that is no longer RUNNING (cancelled, timed out
 * or purged) is left alone. @cb (may be NULL) runs after commit.
 */
int store_task_finish(struct store *s, const struct store_task_result *r, int n,
                      store_finish_cb cb, void *data);

/**
 * Start-up recovery (synchronous, before the loop runs): tasks left RUNNING by a previous process
 * become CREATED again so they are re-run; models left DEPLOYING are put back to the state they
 * are heading to by the re-run deploy. Returns how many tasks were reset in *@reset.
 */
int store_task_recover(struct store *s, int *reset);

/**
 * Cancels task @id: CREATED, and a RUNNING BATCH_INGEST (its job stops between batches), become
 * CANCELLED; a final task is MLR_ECONFLICT; another RUNNING task is MLR_EBUSY (callers decide).
 * Unknown: MLR_ENOTFOUND.
 */
int store_task_cancel(struct store *s, const char *id, store_write_cb cb, void *data);

/**
 * Reads up to @max tasks of type @task_type that are not final yet (CREATED, RUNNING or
 * CANCELLING), least recently updated first, on the read pool; @cb receives them as
 * store_task_claim() hands tasks over (states unchanged). For tasks that are watched, not run:
 * BATCH_PREDICTION. Returns MLR_ECLOSED (and never calls @cb) when the store is closing.
 */
int store_task_watch_list(struct store *s, const char *task_type, int max, store_claim_cb cb,
                          void *data);

/** Completion of a count: @count is valid when @status is MLR_OK. */
typedef void (*store_count_cb)(int status, int64_t count, void *data);

/** Counts the tasks of type @task_type that are not final yet, on the read pool. */
int store_task_count_open(struct store *s, const char *task_type, store_count_cb cb, void *data);

/** Deletes up to @max final tasks last updated before @before_ms; *deleted in r->count. */
int store_task_purge(struct store *s, int64_t before_ms, int max, store_write_cb cb, void *data);

/**
 * Starts a deployment in one transaction: model @model_id becomes DEPLOYING (unless it is
 * DEPLOYED already) and the DEPLOY_MODEL task @task_doc is inserted under @task_id; r->detail is
 * the model's previous state. MLR_ENOTFOUND for an unknown model.
 */
int store_model_deploy(struct store *s, const char *model_id, const char *task_id,
                       struct json_object *task_doc, store_write_cb cb, void *data);

/**
 * Sets model @model_id to UNDEPLOYED (planning/current worker counts 0, last_undeployed_time)
 * and inserts the optional finished task @task_doc under @task_id (NULL: none). r->detail is
 * the previous state. MLR_ENOTFOUND for an unknown model.
 */
int store_model_undeploy(struct store *s, const char *model_id, const char *task_id,
                         struct json_object *task_doc, store_write_cb cb, void *data);

/**
 * Reads document @id with its credential synchronously on a pooled read connection. For worker
 * threads only (it blocks on the disk); never call it on the loop thread. The caller owns *doc
 * and *credential (NULL when none). @version (may be NULL) gets the document's _version.
 */
int store_doc_read(struct store *s, enum store_kind kind, const char *id,
                   struct json_object **doc, char **credential, int64_t *version);

/** Ids of models whose stored state is @state (synchronous; for start-up). The caller frees
 * each string and the array. */
int store_models_in_state(struct store *s, const char *state, char ***ids, int *n);

/* ------------------------------------------------------------------------------------------ */
/* Model usage, for the TTL (usage.c)                                                         */
/* ------------------------------------------------------------------------------------------ */

/** When a model was last used and when its deployment expires. */
struct store_model_usage {
    char *model_id;         /* borrowed by store_models_usage_put(), which copies it */
    int64_t last_used_ms;   /* wall clock, epoch ms: last predict or deploy */
    int64_t deadline_ms;    /* wall clock, epoch ms: TTL expiry; -1 = never */
};

/**
 * Records the usage of @n models (copied) in one write; unknown ids are skipped. @cb (may be
 * NULL) runs on the loop thread after commit. Does not change the model documents.
 */
int store_models_usage_put(struct store *s, const struct store_model_usage *u, int n,
                           store_done_cb cb, void *data);

/**
 * Reads the stored last-use time of @model_id synchronously (worker threads and start-up only).
 * MLR_ENOTFOUND when the model is unknown or was never used.
 */
int store_model_usage_get(struct store *s, const char *model_id, int64_t *last_used_ms);

/* ------------------------------------------------------------------------------------------ */
/* Batch ingestion jobs (batch.c)                                                             */
/* ------------------------------------------------------------------------------------------ */

/** One finished batch of a BATCH_INGEST task. */
struct store_batch_result {
    const char *task_id;
    int64_t first_index;        /* index in the job's input of the batch's first item */
    int n_items;                /* items in the batch */
    int n_failed;               /* of which failed */
    const char *results;        /* JSON array text of the items' results, in index order */
    int64_t lease_until_ms;     /* wall clock, epoch ms: the task's renewed lease */
};

/** What store_batch_put() did with a batch. */
enum store_batch_outcome {
    STORE_BATCH_NOT_RUNNING = 0, /* nothing: the task is no longer RUNNING (cancelled, ...) */
    STORE_BATCH_RECORDED = 1,    /* recorded, and counted in the task's progress */
    STORE_BATCH_DUPLICATE = 2,   /* nothing: the batch was recorded before (another claimer) */
};
/** @applied: an enum store_batch_outcome. */
typedef void (*store_batch_cb)(int status, int applied, void *data);

/**
 * Records batch @b (copied) and, in the same transaction, adds its counts to the task's
 * progress.completed/progress.failed and renews the task's lease. Nothing is written unless the
 * task is RUNNING. Loop thread; @cb on the loop thread after commit.
 */
int store_batch_put(struct store *s, const struct store_batch_result *b, store_batch_cb cb,
                    void *data);

/** What a job has recorded so far (store_batch_done()). */
struct store_batch_done {
    int64_t *first_index;       /* heap: first_index of every recorded batch, ascending */
    int n;                      /* entries of first_index */
    int64_t items;              /* items recorded */
    int64_t failed;             /* of which failed */
};

/**
 * Reads which batches of task @task_id are recorded, synchronously (worker threads only). On
 * MLR_OK *@out is filled; the caller frees out->first_index.
 */
int store_batch_done(struct store *s, const char *task_id, struct store_batch_done *out);

/**
 * Reads recorded results @from..@from+@size (by position among recorded items, in index order)
 * of BATCH_INGEST task @task_id on the read pool: {"total": recorded items, "results": [...]}.
 * Errors to @cb: MLR_ENOTFOUND (no such task), MLR_EINVAL (not a BATCH_INGEST task).
 */
int store_batch_results(struct store *s, const char *task_id, int64_t from, int64_t size,
                        store_search_cb cb, void *data);

/* ------------------------------------------------------------------------------------------ */
/* Users (users.c)                                                                            */
/* ------------------------------------------------------------------------------------------ */

#define STORE_USER_NAME_MAX 256

/** A user as written. All strings borrowed. */
struct store_user {
    const char *name;           /* at most STORE_USER_NAME_MAX bytes */
    const char *password_hash;  /* from mlr_password_hash() */
    const char *backend_roles;  /* JSON array text of strings; NULL = [] */
    const char *roles;          /* JSON array text of strings; NULL = [] */
};

/**
 * Adds user @u (MLR_EEXIST when the name is taken, unless @replace). Bumps the users version.
 * Loop thread; @cb (may be NULL) after commit.
 */
int store_user_put(struct store *s, const struct store_user *u, int replace, store_done_cb cb,
                   void *data);

/** Deletes user @name (MLR_ENOTFOUND when absent). Bumps the users version. */
int store_user_delete(struct store *s, const char *name, store_done_cb cb, void *data);

/**
 * The users and their version: @users is {name: {"password_hash", "backend_roles": [...],
 * "roles": [...], "created_time"}} (borrowed during the callback), or NULL when the version is
 * still the one the caller knew.
 */
typedef void (*store_users_cb)(int status, struct json_object *users, int64_t version,
                               void *data);

/** Reads the users on the read pool unless their version is still @known_version (-1: always). */
int store_users_read(struct store *s, int64_t known_version, store_users_cb cb, void *data);

/** store_users_read() synchronously, for start-up (before the loop runs). *@users is owned by
 * the caller. */
int store_users_load(struct store *s, struct json_object **users, int64_t *version);
/* Operations: online backup and integrity check (backup.c, check.c)                          */
/* ------------------------------------------------------------------------------------------ */

/*
 * These run in their own short-lived process (`mlrelay backup`, `mlrelay check`), possibly while
 * a server has the same database open. They open their own connections by path and need no
 * struct store, no loop and no writer thread. Both are synchronous and block on the disk.
 */

/** Called after each backup step with the pages still to copy and the total (tests, progress). */
typedef void (*store_backup_step_cb)(int64_t remaining, int64_t total, void *data);

/** Tunables of store_backup(); zeroed fields take the defaults noted. */
struct store_backup_options {
    int pages_per_step;          /* pages copied per step; default 256 (1 MiB at 4 KiB pages) */
    int pause_ms;                /* sleep between steps so a live server's I/O goes first;
                                  * default 2; negative = no pause */
    store_backup_step_cb on_step; /* NULL = none */
    void *data;                  /* passed to on_step */
};

/** What store_backup() copied. */
struct store_backup_info {
    int64_t pages;               /* pages in the copy */
    int64_t page_size;           /* bytes per page */
    int steps;                   /* backup steps taken */
    int schema_version;          /* PRAGMA user_version of the copy */
};

/**
 * Copies the database at @src_path into a new file at @dest_path with SQLite's online backup
 * API, safe while a server writes to @src_path. The copy is one consistent snapshot: everything
 * committed before the call started is in it, nothing committed later is. The source is read in
 * chunks of opts->pages_per_step pages inside one read transaction (in WAL mode a reader never
 * blocks the writer; the WAL only grows until the backup ends), with opts->pause_ms between
 * chunks. The copy is written to "@dest_path.tmp" (mode 0600), fsynced, renamed over
 * @dest_path and the directory fsynced, so @dest_path is either the old file or the whole new
 * copy. @opts may be NULL.
 *
 * Returns MLR_OK and fills *@out (may be NULL); or MLR_ENOTFOUND (no database at @src_path;
 * nothing is created), MLR_EINVAL (@dest_path is a directory or the source itself),
 * MLR_ECORRUPT (the source is not a database), MLR_EIO/MLR_ENOSPC/MLR_EPERM (file system),
 * MLR_EBUSY (the source stayed locked), each with a one-line message in @err. On failure the
 * temporary file is removed and @dest_path is untouched. Any thread; blocks on the disk.
 */
int store_backup(const char *src_path, const char *dest_path,
                 const struct store_backup_options *opts, struct store_backup_info *out,
                 char *err, size_t errlen);

#define STORE_CHECK_STATES 16
/** One state and how many rows are in it. */
struct store_state_count {
    char state[32];              /* "DEPLOYED", "COMPLETED", ... */
    int64_t count;               /* rows in that state */
};

/** What store_check() found. */
struct store_check_report {
    int integrity_ok;            /* PRAGMA integrity_check said "ok" */
    char integrity[1024];        /* "ok", or its first messages joined with "; " */
    int schema_version;          /* PRAGMA user_version */
    int schema_max;              /* the newest version this binary knows */
    int counted;                 /* the counts below were read (integrity ok, schema known) */
    int64_t model_groups;        /* rows */
    int64_t connectors;
    int64_t models;
    int64_t tasks;
    struct store_state_count model_states[STORE_CHECK_STATES]; /* by model_state, sorted */
    int nmodel_states;           /* used entries; states beyond the array are summed into
                                  * the last one as "(other)" */
    struct store_state_count task_states[STORE_CHECK_STATES];  /* by state, sorted */
    int ntask_states;
    int64_t models_deployed;     /* models stored DEPLOYED: redeployed at the next start */
};

/**
 * Opens the database at @path read-only (never creating it, never migrating it) and, inside one
 * read transaction, runs PRAGMA integrity_check and, when that passes and the schema version is
 * one this binary knows, counts model groups, connectors, models and tasks by state. Safe while
 * a server writes to @path (it reads one snapshot). Cost: reads the whole file.
 *
 * Returns MLR_OK with *@out filled (whether or not the database is healthy: see integrity_ok,
 * schema_version and counted); or MLR_ENOTFOUND (no file), MLR_ECORRUPT (not a database, or so
 * damaged the check itself cannot run), MLR_EIO/MLR_EPERM/MLR_EBUSY, with a message in @err.
 * Any thread; blocks on the disk.
 */
int store_check(const char *path, struct store_check_report *out, char *err, size_t errlen);

/* ------------------------------------------------------------------------------------------ */
/* Master key rotation (rekey.c)                                                              */
/* ------------------------------------------------------------------------------------------ */

/**
 * Re-seals one credential map: @sealed is the stored JSON text of owner @owner
 * ("connector:<id>" or "model:<id>"); writes the replacement to *@out (heap). Runs on the writer
 * thread. Returns MLR_OK or an error that aborts the whole rotation.
 */
typedef int (*store_rekey_fn)(const char *owner, const char *sealed, char **out, void *arg);

/**
 * Rewrites every stored credential map through @fn and stores @check as meta.master_key_check,
 * all in one transaction. r->count: the maps rewritten. Loop thread; @cb after commit.
 */
int store_credentials_rekey(struct store *s, store_rekey_fn fn, void *arg, const char *check,
                            store_write_cb cb, void *data);

/** Reads meta value @key synchronously (start-up): MLR_OK with *@value (heap), or
 * MLR_ENOTFOUND. */
int store_meta_get(struct store *s, const char *key, char **value);

/* ------------------------------------------------------------------------------------------ */
/* Several nodes on one database (cluster.c; PostgreSQL only)                                 */
/* ------------------------------------------------------------------------------------------ */

/*
 * With the PostgreSQL backend any number of nodes share the store. Each beats about twice a
 * second (store_node_heartbeat); a node silent for STORE_NODE_LEASE_MS is dead, and the RUNNING
 * tasks it claimed are claimed again by the others (store_task_claim). Deployments and settings
 * live on every node, so each node mirrors them: the heartbeat returns a counter per kind of
 * shared state, and a node that sees one move re-reads that state. LISTEN/NOTIFY wakes nodes
 * early (store_listen) but is only a hint: the counters are what nothing can miss.
 */
#define STORE_NODE_LEASE_MS 5000

/** 1 when other nodes may share this store (the PostgreSQL backend). */
int store_is_shared(const struct store *s);

/** What a heartbeat saw, valid during the callback. */
struct store_cluster_view {
    const char **nodes;        /* live node ids (this one included), sorted */
    int nnodes;
    int64_t models_epoch;      /* moves with every change of a model's state or version, or of
                                * a connector's version */
    int64_t settings_epoch;    /* moves with every change of the persistent settings */
};
typedef void (*store_heartbeat_cb)(int status, const struct store_cluster_view *v, void *data);

/** Records that this node is alive now and reads the cluster view, in one write. */
int store_node_heartbeat(struct store *s, store_heartbeat_cb cb, void *data);

/** Removes this node's row and its model_nodes rows (graceful stop). */
int store_node_leave(struct store *s, store_done_cb cb, void *data);

/** A model stored as deployed, with what its deployment was built from. */
struct store_deployed_model {
    const char *id;
    int64_t version;           /* the model document's _version */
    int64_t connector_version; /* its standalone connector's _version; 0 = inline connector */
};
typedef void (*store_deployed_cb)(int status, const struct store_deployed_model *m, int n,
                                  void *data);

/** Lists the models stored DEPLOYED or PARTIALLY_DEPLOYED, on the read pool. */
int store_models_deployed(struct store *s, store_deployed_cb cb, void *data);

/**
 * Records which models this node now holds: @add (@nadd ids) gained, @remove (@nremove ids)
 * dropped. Ids are copied. @cb may be NULL.
 */
int store_model_nodes_update(struct store *s, const char *const *add, int nadd,
                             const char *const *remove, int nremove, store_done_cb cb,
                             void *data);

/** The nodes that hold model @model_id (ids, sorted), on the read pool; @nodes is borrowed. */
typedef void (*store_nodes_cb)(int status, const char *const *nodes, int n, void *data);
int store_model_nodes_get(struct store *s, const char *model_id, store_nodes_cb cb, void *data);

/** The stored persistent settings as a new flat layer (owned by the callback), on the pool. */
typedef void (*store_settings_cb)(int status, struct json_object *persistent, void *data);
int store_settings_read(struct store *s, store_settings_cb cb, void *data);

/**
 * Calls @cb(payload) on the loop thread for each notification on channel `mlrelay` ("models",
 * "settings", "tasks", "done"), from a dedicated connection watched by the loop. A lost
 * connection is re-opened by the next store_listen_check(). No-op for SQLite. One listener per
 * store.
 */
typedef void (*store_notify_cb)(const char *payload, void *data);
int store_listen(struct store *s, store_notify_cb cb, void *data);
/** Re-opens the listener if its connection broke (call it now and then, e.g. per heartbeat). */
void store_listen_check(struct store *s);

#endif /* MLR_STORE_H */
