/*
 * store_int.h — internals shared by the files of store/. Nothing outside store/ includes this
 * (tests of store/ excepted).
 */
#ifndef MLR_STORE_INT_H
#define MLR_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "store.h"

struct store__conn;

/* One embedded migration (generated from migrations/NNNN_name.sql at build time). */
struct store__migration {
    int version;      /* NNNN: 1, 2, ... with no gaps */
    const char *name; /* file name without .sql */
    const char *sql;  /* whole file text */
};
extern const struct store__migration store__migrations[];
extern const size_t store__migrations_count;
/* The same history in PostgreSQL's dialect (migrations/postgres/). */
extern const struct store__migration store__pg_migrations[];
extern const size_t store__pg_migrations_count;

/*
 * Applies @list[0..n) above the database's PRAGMA user_version, each in its own transaction.
 * Returns MLR_OK, MLR_ETOONEW when the database is newer than the list, or MLR_EIO/MLR_ECORRUPT
 * with a message in @err.
 */
int store__migrate(sqlite3 *db, const struct store__migration *list, size_t n, char *err,
                   size_t errlen);

/*
 * The part both backends share: checks that the database (at version @current) is not newer
 * than @list and that @list numbers 1..n with no gap, then calls @apply for each migration above
 * @current, in order, stopping at the first error. Same returns as store__migrate().
 */
typedef int (*store__apply_fn)(void *ctx, const struct store__migration *m, char *err,
                               size_t errlen);
int store__migrate_from(int current, const struct store__migration *list, size_t n,
                        store__apply_fn apply, void *ctx, char *err, size_t errlen);

/*
 * PostgreSQL (pg.c): applies @list above the version recorded in table mlr_schema, each with its
 * version bump in one transaction, holding an advisory lock so nodes starting together migrate
 * once. Same returns as store__migrate().
 */
int store__pg_migrate(struct store__conn *c, const struct store__migration *list, size_t n,
                      char *err, size_t errlen);
/* PostgreSQL: the schema version recorded in mlr_schema. */
int store__pg_schema_version(struct store__conn *c, int *out);

/*
 * The VFS every store connection opens with: "mlr-fault" in test builds (vfs.c, a shim whose disk
 * writes and syncs can be failed through mlr_fault_check(); it also arms the environment seam
 * once), NULL (SQLite's default) otherwise. Thread-safe.
 */
const char *store__vfs_name(void);

/* Translates a SQLite result code into the project's error space. */
int store__err(int rc);

/* ------------------------------------------------------------------------------------------ */
/* Statements (db.c): one API over SQLite and PostgreSQL                                      */
/* ------------------------------------------------------------------------------------------ */

struct pg_conn;     /* libpq's PGconn */
struct store__stmt; /* a prepared statement of either backend */

/* A connection of either backend, with its cache of prepared statements. */
#define STORE_STMT_CACHE 128
#define STORE_SEQ_POOL 64
struct store__conn {
    sqlite3 *db;           /* SQLite backend, or NULL */
    struct pg_conn *pg;    /* PostgreSQL backend, or NULL */
    struct {
        const char *sql;   /* static string the statement was prepared from */
        struct store__stmt *st;
    } cache[STORE_STMT_CACHE];
    int ncache;            /* used entries of cache */
    int changes;           /* PostgreSQL: rows changed by the last statement */
    char errmsg[256];      /* PostgreSQL: the last error */
    int64_t seq;           /* writer: last _seq_no handed out in this transaction */
    int seq_batched;       /* writer: seq is loaded; store it at commit */
    int seq_dirty;         /* writer: seq moved since it was loaded */
    int64_t seq_pool[STORE_SEQ_POOL]; /* PostgreSQL: _seq_no values taken from the sequence */
    int seq_pool_n;        /* entries of seq_pool */
    int seq_pool_next;     /* next unused entry */
};

/* The SQL text for @c's backend: both arguments are static strings (the statement cache is
 * keyed by their addresses). Used where the dialects differ. */
#define STORE_SQL(c, lite_sql, pg_sql) ((c)->pg ? (pg_sql) : (lite_sql))

/* Returns the cached statement for @sql (reset, bindings cleared), preparing it on first use. */
int store__stmt(struct store__conn *c, const char *sql, struct store__stmt **out);
/* Prepares @sql uncached (dynamic SQL); the caller store__finalize()s it. Returns an mlr_err. */
int store__prepare(struct store__conn *c, const char *sql, struct store__stmt **out);
void store__finalize(struct store__stmt *st);
/* Ends the current execution and clears the bindings. Accepts NULL. */
void store__reset(struct store__stmt *st);
/* Bindings, numbered from 1; values are copied. A NULL text binds SQL NULL. */
int store__bind_text(struct store__stmt *st, int i, const char *v);
int store__bind_int(struct store__stmt *st, int i, int64_t v);
int store__bind_real(struct store__stmt *st, int i, double v);
int store__bind_null(struct store__stmt *st, int i);
/* Runs or advances: SQLITE_ROW, SQLITE_DONE or a SQLite error code (PostgreSQL's translated). */
int store__step(struct store__stmt *st);
/* Columns of the current row, numbered from 0. Texts are NULL for SQL NULL and valid until the
 * next step or reset. Booleans read as 1 and 0. */
const char *store__col_text(struct store__stmt *st, int i);
int64_t store__col_int(struct store__stmt *st, int i);
double store__col_real(struct store__stmt *st, int i);
int store__col_null(struct store__stmt *st, int i);
/* SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT or SQLITE_NULL (PostgreSQL: from the column type). */
int store__col_type(struct store__stmt *st, int i);
/* Rows changed by the last INSERT/UPDATE/DELETE on @c. */
int store__changes(struct store__conn *c);
/* Runs @sql (one or more statements, no parameters): a SQLite result code. */
int store__exec(struct store__conn *c, const char *sql);
/* The message of @c's last error. */
const char *store__errmsg(struct store__conn *c);
/* 1 inside a transaction. */
int store__in_tx(struct store__conn *c);
/*
 * PostgreSQL: @sql with ? and ?N (outside quotes) rewritten to $N, as a heap string;
 * *nparams = the highest number, used[n - 1] = 1 for each number that occurs (n <= maxused).
 */
char *store__pg_translate(const char *sql, int *nparams, unsigned char *used, int maxused);
/* 1 when @path is a postgres:// or postgresql:// URL. */
int store__is_url(const char *path);
/* Closes either backend's connection and its statements; @c can be reopened. */
void store__conn_close(struct store__conn *c);
/* Opens a PostgreSQL connection to @url. */
int store__pg_connect(struct store__conn *c, const char *url, char *err, size_t errlen);
/* Re-establishes a PostgreSQL connection that broke (statements are re-prepared lazily). */
int store__pg_reconnect(struct store__conn *c);
/* PostgreSQL: the connection's socket, for waiting on notifications; -1 for SQLite. */
int store__pg_socket(struct store__conn *c);
/* PostgreSQL, never blocking: reads what the socket has and takes the next queued notification:
 * 1 with its payload in @payload, 0 when none is queued, -1 when the connection failed. */
int store__pg_notify_next(struct store__conn *c, char *payload, size_t len);

/* Hands out the next _seq_no on @c (from memory inside a writer batch, else from the row). */
int store__seq_next(struct store__conn *c, int64_t *out);

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

/* The table name of @kind. */
const char *store__kind_table(enum store_kind kind);

/* Document rows (docs.c), for other store files; all run on the writer or a reader thread. */
/* Reads @id's document, credential (heap, may be NULL) and version/seq_no (into @meta). */
int store__doc_load(struct store__conn *c, enum store_kind kind, const char *id,
                    struct json_object **doc, char **credential, struct store_doc *meta);
/* Inserts a new row; *seq_out gets its _seq_no. */
int store__doc_insert(struct store__conn *c, enum store_kind kind, const char *id,
                      struct json_object *doc, const char *credential, int64_t *seq_out);
/* Rewrites row @id (version + 1, new seq_no, derived columns from @doc). */
int store__doc_write(struct store__conn *c, enum store_kind kind, const char *id,
                     struct json_object *doc, const char *credential, int64_t *version,
                     int64_t *seq_no);
/* 1 when row @id exists. */
int store__doc_exists(struct store__conn *c, enum store_kind kind, const char *id);
/* Steps a statement returning one integer; MLR_ENOTFOUND when it returns no row. */
int store__step_int(struct store__stmt *st, int64_t *out);
/* Checks a read connection out of the pool (blocking) and back in. Not on the loop thread. */
struct store__conn *store__reader_acquire(struct store *s);
void store__reader_release(struct store *s, struct store__conn *c);

struct store__index;
/* The search description (columns, index name) of @kind. */
const struct store__index *store__kind_index(enum store_kind kind);

/* The loop-thread connection used for synchronous start-up reads. */
struct store__conn *store__main_conn(struct store *s);

/* Reads the stored settings on @c into a new flat layer (settings.c). */
int store__settings_layer(struct store__conn *c, struct json_object **out);

/* The store's loop, location (path or URL) and node id, for cluster.c. */
uv_loop_t *store__loop(struct store *s);
const char *store__location(const struct store *s);
const char *store__node_id(const struct store *s);

/* The store's listener (cluster.c), closed by store_close() before the store is freed. */
struct store__listener;
struct store__listener **store__listener_slot(struct store *s);
void store__listener_close(struct store *s);

/* ------------------------------------------------------------------------------------------ */
/* Search (store/search.c): the OpenSearch `_search` DSL subset compiled to SQL                */
/* ------------------------------------------------------------------------------------------ */

struct json_object;

/* How a search field maps to SQL for one index. */
struct store__field {
    const char *name; /* as clients write it: "model_state", "name.keyword", "_id" */
    const char *sql;  /* trusted column or expression: "model_state", "id" */
    int numeric;      /* values are numbers: term/range values are coerced, match is equality */
};

/* One searchable table and the OpenSearch index it stands for. All strings are static. */
struct store__index {
    const char *table;                /* SQL table name */
    const char *os_index;             /* hits' _index: ".plugins-ml-model", ... */
    const struct store__field *fields; /* indexed columns; other names read the doc JSON */
    size_t nfields;                   /* entries in fields */
    const char *default_order;        /* trusted ORDER BY fragment: "rowid", "create_time" */
};

/* A value bound to one `?` of a compiled search, in order of appearance. */
enum store__val_kind { STORE__VAL_TEXT = 0, STORE__VAL_INT, STORE__VAL_REAL };
struct store__val {
    enum store__val_kind kind;
    char *text;  /* STORE__VAL_TEXT: heap copy */
    int64_t i;   /* STORE__VAL_INT */
    double d;    /* STORE__VAL_REAL */
};

/* A compiled `_search` body. Owns every pointer; released by store__query_cleanup(). */
struct store__query {
    struct mlr_buf where;     /* SQL boolean expression over the table; "1" for match_all */
    struct mlr_buf order;     /* ORDER BY list; always ends with the id as tiebreaker */
    struct store__val *vals;  /* values for the `?`s of where, in order */
    size_t nvals;             /* used entries of vals */
    size_t capvals;           /* allocated entries of vals */
    char **sort_exprs;        /* per client sort key: SQL expression for hits' "sort", NULL for
                               * _score */
    unsigned char *sort_json; /* per client sort key: 1 when its column is JSON text to parse
                               * (PostgreSQL's document paths are jsonb) */
    size_t nsort;             /* client sort keys; 0 = no "sort" array in hits */
    int64_t from;             /* hits to skip, 0..10000 */
    int64_t size;             /* hits to return, 0..10000, from + size <= 10000 */
    int64_t track_total;      /* count matches up to this many (10000 by default; INT64_MAX =
                               * exact); -1 = omit hits.total */
    double score;             /* every hit's _score: 1.0 scoring query, 0.0 filter-only */
    int source;               /* 0: `_source: false`, hits carry no _source */
    char **includes;          /* _source include patterns (dotted paths, `*` wildcards) */
    size_t nincludes;         /* 0 = everything */
    char **excludes;          /* _source exclude patterns */
    size_t nexcludes;
    const char *err_type;     /* after MLR_EINVAL only: static OpenSearch error type */
    int pg;                   /* the SQL is PostgreSQL's dialect (else SQLite's) */
};

/**
 * Compiles an OpenSearch search body @body (NULL or {} = match_all; borrowed) for @ix into @out,
 * which needs no prior initialisation. Every input value is bound, never interpolated; field
 * names not in @ix->fields must match ^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$ and read the
 * document at '$.<name>' (json_each() for queries, so any array element matches; json_extract()
 * for sorting); a trailing ".keyword" is dropped unless the map has the exact name. On bad input returns MLR_EINVAL with OpenSearch's reason in @err and its error type
 * ("parsing_exception", "x_content_parse_exception", "illegal_argument_exception",
 * "query_shard_exception", "too_many_clauses") in out->err_type; every such error is HTTP 400.
 * *@out then holds no resources (cleanup is still allowed). Pure: any thread.
 */
int store__search_compile(const struct store__index *ix, struct json_object *body,
                          struct store__query *out, char *err, size_t errlen);

/**
 * store__search_compile() for either backend: @pg nonzero emits PostgreSQL's dialect (document
 * paths read `doc::jsonb #> '{a,b}'` and expand it as json_each() does, values compare as jsonb,
 * full-text matching calls the mlr_match() that migrations/postgres/ defines, constants are
 * TRUE/FALSE), zero emits exactly what store__search_compile() does. The result must run on a
 * connection of the same backend.
 */
int store__search_compile_dialect(const struct store__index *ix, struct json_object *body, int pg,
                                  struct store__query *out, char *err, size_t errlen);

/** Narrows compiled query @q over @kind to what @acc may see (access.c); no-op for NULL. */
void store__query_restrict(struct store__query *q, enum store_kind kind,
                           const struct store_access *acc);

/** Frees what @q owns and leaves it empty and reusable. Accepts a zeroed struct. */
void store__query_cleanup(struct store__query *q);

/**
 * Runs @q over @ix on @c (a read-pool connection; needs store__search_register()) and builds the
 * whole OpenSearch response {"took","timed_out","_shards","hits":{"total","max_score","hits"}}
 * into a new object *@out owned by the caller. _source never carries a top-level "credential"
 * nor "connector.credential". Returns MLR_OK or the translated SQLite error. Costs: one count
 * (bounded by q->track_total) and one LIMIT/OFFSET select, both on the WHERE's indexes.
 */
int store__search_run(struct store__conn *c, const struct store__index *ix,
                      const struct store__query *q, struct json_object **out);

/**
 * Returns the hits SELECT that store__search_run() prepares for @q (parameters unbound: the
 * where's values, then LIMIT and OFFSET), as a heap string the caller frees. For EXPLAIN.
 */
char *store__search_sql(const struct store__index *ix, const struct store__query *q);

/**
 * Registers the SQL functions searches use (mlr_match(value, query, all): full-text token match)
 * on @db. The store must call it on every connection it opens. Returns MLR_OK or an mlr_err.
 */
int store__search_register(sqlite3 *db);

#endif /* MLR_STORE_INT_H */
