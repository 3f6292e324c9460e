/*
 * store.c — the SQLite store: one writer thread with group commit, a pool of read connections.
 *
 * Writes. Every mutation is a struct store__op queued to a single writer thread. The writer takes
 * everything pending (up to max_batch), runs it inside one BEGIN IMMEDIATE ... COMMIT, each op
 * under its own SAVEPOINT so one failing op (say, a unique-key clash) does not take its neighbours
 * down, and then hands the batch back to the loop thread through a uv_async_t. With
 * synchronous=FULL the COMMIT is the fsync, so N concurrent requests cost one fsync, not N: this
 * is what lets durability and throughput coexist. A callback (and therefore an HTTP response)
 * never runs before its op's transaction committed.
 *
 * Reads. store__read() runs a function on libuv's thread pool with a connection checked out of a
 * small pool, so the loop never waits on the disk and no connection is used by two threads at
 * once. WAL mode lets those readers proceed while the writer commits.
 *
 * Invariants: only the writer thread writes (start-up migrations aside, which run before it
 * starts); ops complete in submission order; store_close() drains the queue before returning.
 */
#include "store_int.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store {
    uv_loop_t *loop;               /* completions are delivered here */
    uv_async_t wake;               /* writer -> loop: a batch is done */
    struct store_options opts;     /* resolved tunables */
    char *path;                    /* database file, or the PostgreSQL URL */
    int pg;                        /* the PostgreSQL backend (path is a URL) */
    char node_id[64];              /* recorded on claimed tasks (opts.node_id) */
    struct store__listener *listener; /* LISTEN connection (cluster.c), or NULL */
    struct store__conn main;       /* loop thread: start-up reads only */
    struct store__conn writer;     /* writer thread only */
    struct store__conn *readers;   /* pool of opts.read_connections */
    int *reader_free;              /* stack of free reader indexes */
    int nreader_free;              /* entries in reader_free */
    pthread_mutex_t lock;          /* guards the queues, flags and reader pool */
    pthread_cond_t cond;           /* writer waits for work */
    pthread_cond_t reader_cond;    /* read workers wait for a free connection */
    pthread_t thread;              /* the writer */
    struct store__op *pending;     /* FIFO of submitted ops, head */
    struct store__op *pending_tail;
    struct store__op *done;        /* FIFO of finished ops, head */
    struct store__op *done_tail;
    int stopping;                  /* set by store_close(): writer drains and exits */
    int thread_started;            /* writer thread exists */
    int reads_inflight;            /* store__read() calls not yet done (loop thread only) */
    int closed;                    /* wake handle closed: free when reads_inflight hits 0 */
    int schema_version;            /* PRAGMA user_version after migrations */
    char cluster_uuid[32];         /* from the meta table */
    char errmsg[256];              /* last SQLite message seen on the loop thread */
    _Atomic uint64_t commits;      /* transactions committed */
    _Atomic uint64_t writes;       /* ops carried by those transactions */
    struct mlr_histogram commit_us;  /* writer thread: BEGIN..COMMIT per committed batch, µs */
    struct mlr_histogram batch_size; /* writer thread: ops per committed batch */
};

/* Writes per transaction: powers of two up to the default max_batch. */
static const uint64_t batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

int store__err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return MLR_OK;
    case SQLITE_CONSTRAINT:
        return MLR_EEXIST;
    case SQLITE_NOMEM:
        return MLR_ENOMEM;
    case SQLITE_FULL:
        return MLR_ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return MLR_EBUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return MLR_ECORRUPT;
    case SQLITE_TOOBIG:
        return MLR_ETOOBIG;
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
        return MLR_EPERM;
    case SQLITE_ERROR: /* SQL refused (malformed JSON in a row, a bug): no retry will pass */
        return MLR_EINTERNAL;
    default:
        return MLR_EIO;
    }
}

static void conn_close(struct store__conn *c)
{
    store__conn_close(c);
}

/*
 * Page cache per connection, KiB. The writer's is the largest so the hot index pages of every
 * table stay resident; readers get less, and there are several of them. Together they bound what
 * SQLite itself holds (16 + 4 x 8 + 8 MiB by default): the cache fills with every page touched
 * and is never given back, so a generous size per connection shows up as resident memory.
 */
#define CACHE_WRITER_KIB 16384
#define CACHE_OTHER_KIB 8192

static int conn_open(struct store__conn *c, const char *path, int flags, int busy_ms,
                     int cache_kib, char *err, size_t errlen)
{
    /* temp_store=MEMORY keeps the per-op savepoint journals off the disk: they only ever
     * protect an uncommitted transaction, and writing them to a temp file dominated the writer's
     * I/O. */
    char pragmas[256];
    snprintf(pragmas, sizeof(pragmas), "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                       "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;"
                                       "PRAGMA cache_size=-%d;", cache_kib);
    memset(c, 0, sizeof(*c));
    int rc = sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX, store__vfs_name());
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(c->db, busy_ms);
    if (rc == SQLITE_OK)
        rc = store__exec(c, pragmas);
    if (rc == SQLITE_OK && store__search_register(c->db) != MLR_OK)
        rc = SQLITE_ERROR;
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path,
                 c->db ? store__errmsg(c) : sqlite3_errstr(rc));
        conn_close(c);
        return store__err(rc) == MLR_OK ? MLR_EIO : store__err(rc);
    }
    return MLR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Writer thread                                                                              */
/* ------------------------------------------------------------------------------------------ */

static int exec(struct store__conn *c, const char *sql)
{
    return store__err(store__exec(c, sql));
}

/* Runs a cached statement without parameters (the per-op savepoint statements run thousands of
 * times a second; preparing them once saves the parse). */
static int run_cached(struct store__conn *c, const char *sql)
{
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, sql, &st);
    if (rc != MLR_OK)
        return rc;
    rc = store__err(store__step(st));
    store__reset(st);
    return rc;
}

static const char sql_savepoint[] = "SAVEPOINT op";
static const char sql_rollback_to[] = "ROLLBACK TO op";
static const char sql_release[] = "RELEASE op";

/*
 * _seq_no comes from one counter in the meta table. Bumping that row on every document write
 * cost a statement per write; instead the writer loads it once per transaction, hands numbers out
 * from memory (store__seq_next) and stores the last one just before COMMIT. A rolled-back
 * savepoint leaves a gap, which _seq_no allows.
 */
static int seq_load(struct store__conn *c)
{
    if (c->pg) {
        /* Several nodes write at once: numbers come from a sequence (store__seq_next). */
        c->seq_batched = 0;
        return MLR_OK;
    }
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'seq_no'", &st);
    if (rc == MLR_OK && store__step(st) == SQLITE_ROW)
        c->seq = store__col_int(st, 0);
    if (st)
        store__reset(st);
    c->seq_batched = rc == MLR_OK;
    c->seq_dirty = 0;
    return rc;
}

static int seq_save(struct store__conn *c)
{
    struct store__stmt *st = NULL;
    int rc = c->seq_dirty ? store__stmt(c, "UPDATE meta SET value = ? WHERE key = 'seq_no'", &st)
                          : MLR_OK;
    if (rc == MLR_OK && st) {
        store__bind_int(st, 1, c->seq);
        rc = store__err(store__step(st));
        store__reset(st);
    }
    c->seq_batched = 0;
    return rc;
}

/*
 * Whether the writer is still inside the batch's transaction. After some errors (SQLITE_FULL,
 * SQLITE_IOERR, SQLITE_NOMEM, ...) SQLite rolls the whole transaction back by itself; the ops
 * that ran before are then gone too, and a following "SAVEPOINT op" would open a new transaction
 * that its RELEASE commits on its own.
 */
static int in_transaction(struct store__conn *c)
{
    return store__in_tx(c);
}

/*
 * Runs @op under its own savepoint. Returns MLR_OK when the batch can go on (the op succeeded,
 * or failed and was rolled back alone), or the error that dooms the whole batch: the savepoint
 * statements failed, or the transaction is gone.
 */
static int run_op(struct store__conn *c, struct store__op *op)
{
    int rc = run_cached(c, sql_savepoint);
    if (rc != MLR_OK) {
        op->status = rc;
        return rc;
    }
    op->status = op->run(c, op);
    if (op->status != MLR_OK && in_transaction(c))
        rc = run_cached(c, sql_rollback_to);
    if (rc == MLR_OK && in_transaction(c))
        rc = run_cached(c, sql_release);
    if (rc == MLR_OK && !in_transaction(c))
        rc = op->status != MLR_OK ? op->status : MLR_EIO;
    return rc;
}

/*
 * Runs one batch in one transaction. Every op leaves with its final status: its own error, or,
 * when the transaction as a whole fails (BEGIN, a savepoint, the transaction rolled back under
 * us, COMMIT), that error for every op, so nothing reported as failed is on disk and nothing
 * reported as done is missing.
 */
static void run_batch(struct store *s, struct store__op *batch)
{
    uint64_t t0 = uv_hrtime();
    struct store__conn *c = &s->writer;
    for (struct store__op *op = batch; op; op = op->next)
        op->status = MLR_OK;
    int rc = store__pg_reconnect(c);
    if (rc == MLR_OK)
        rc = exec(c, STORE_SQL(c, "BEGIN IMMEDIATE", "BEGIN"));
    if (rc == MLR_OK)
        rc = seq_load(c);
    for (struct store__op *op = batch; op && rc == MLR_OK; op = op->next)
        rc = run_op(c, op);
    if (rc == MLR_OK)
        rc = seq_save(c);
    if (rc == MLR_OK)
        rc = exec(c, "COMMIT");
    if (rc != MLR_OK) {
        mlr_log(MLR_LOG_ERROR, "store", "write transaction failed, %s: %s", mlr_strerror(rc),
                store__errmsg(c));
        if (in_transaction(c))
            exec(c, "ROLLBACK");
        c->seq_batched = 0;
    }
    uint64_t n = 0;
    for (struct store__op *op = batch; op; op = op->next, n++) {
        /* Ops that failed on their own keep their error; the others (done, or never run) share
         * the transaction's. */
        if (rc != MLR_OK && op->status == MLR_OK)
            op->status = rc;
    }
    if (rc == MLR_OK) {
        atomic_fetch_add(&s->commits, 1);
        atomic_fetch_add(&s->writes, n);
        /* Only this thread writes these two: plain-cost updates, readable from the loop. */
        mlr_histogram_observe(&s->commit_us, (uv_hrtime() - t0) / 1000);
        mlr_histogram_observe(&s->batch_size, n);
    }
}

/* Detaches up to max_batch pending ops. Called with the lock held. */
static struct store__op *take_batch(struct store *s)
{
    struct store__op *head = s->pending, *last = head;
    for (int i = 1; i < s->opts.max_batch && last->next; i++)
        last = last->next;
    s->pending = last->next;
    if (s->pending == NULL)
        s->pending_tail = NULL;
    last->next = NULL;
    return head;
}

static void *writer_main(void *arg)
{
    struct store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->pending == NULL && !s->stopping)
            pthread_cond_wait(&s->cond, &s->lock);
        if (s->pending == NULL)
            break; /* stopping and drained */
        struct store__op *batch = take_batch(s);
        pthread_mutex_unlock(&s->lock);

        run_batch(s, batch);

        pthread_mutex_lock(&s->lock);
        struct store__op *last = batch;
        while (last->next)
            last = last->next;
        if (s->done_tail)
            s->done_tail->next = batch;
        else
            s->done = batch;
        s->done_tail = last;
        uv_async_send(&s->wake);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Loop thread: run the callbacks of every finished op, in order. */
static void deliver(struct store *s)
{
    pthread_mutex_lock(&s->lock);
    struct store__op *op = s->done;
    s->done = s->done_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    while (op) {
        struct store__op *next = op->next;
        op->done(op); /* frees op */
        op = next;
    }
}

static void on_wake(uv_async_t *h)
{
    deliver(container_of(h, struct store, wake));
}

int store__submit(struct store *s, struct store__op *op)
{
    op->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        return MLR_ECLOSED;
    }
    if (s->pending_tail)
        s->pending_tail->next = op;
    else
        s->pending = op;
    s->pending_tail = op;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return MLR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Read pool                                                                                  */
/* ------------------------------------------------------------------------------------------ */

struct read_req {
    uv_work_t work;          /* libuv thread-pool request */
    struct store *s;
    store__read_fn fn;       /* runs on a pool thread */
    void *arg;
    store__read_done done;   /* runs on the loop thread */
    int status;
};

struct store__conn *store__reader_acquire(struct store *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->nreader_free == 0)
        pthread_cond_wait(&s->reader_cond, &s->lock);
    int idx = s->reader_free[--s->nreader_free];
    pthread_mutex_unlock(&s->lock);
    return &s->readers[idx];
}

void store__reader_release(struct store *s, struct store__conn *c)
{
    pthread_mutex_lock(&s->lock);
    s->reader_free[s->nreader_free++] = (int)(c - s->readers);
    pthread_cond_signal(&s->reader_cond);
    pthread_mutex_unlock(&s->lock);
}

static void read_work(uv_work_t *w)
{
    struct read_req *r = container_of(w, struct read_req, work);
    struct store__conn *c = store__reader_acquire(r->s);
    r->status = store__pg_reconnect(c);
    if (r->status == MLR_OK)
        r->status = r->fn(c, r->arg);
    store__reader_release(r->s, c);
}

static void free_store(struct store *s);

static void read_after(uv_work_t *w, int status)
{
    struct read_req *r = container_of(w, struct read_req, work);
    struct store *s = r->s;
    r->done(status == UV_ECANCELED ? MLR_ECLOSED : r->status, r->arg);
    free(r);
    if (--s->reads_inflight == 0 && s->closed)
        free_store(s);
}

int store__read(struct store *s, store__read_fn fn, void *arg, store__read_done done)
{
    struct read_req *r = mlr_xcalloc(1, sizeof(*r));
    r->s = s;
    r->fn = fn;
    r->arg = arg;
    r->done = done;
    if (s->stopping || uv_queue_work(s->loop, &r->work, read_work, read_after) != 0) {
        free(r);
        return s->stopping ? MLR_ECLOSED : MLR_EIO;
    }
    s->reads_inflight++;
    return MLR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Open / close                                                                               */
/* ------------------------------------------------------------------------------------------ */

static void resolve_options(struct store_options *o, const struct store_options *in)
{
    memset(o, 0, sizeof(*o));
    if (in)
        *o = *in;
    if (o->read_connections <= 0)
        o->read_connections = 4;
    if (o->busy_timeout_ms <= 0)
        o->busy_timeout_ms = 5000;
    if (o->max_batch <= 0)
        o->max_batch = 1024;
}

/* Reads or creates the cluster UUID in the meta table (22 characters like OpenSearch's). */
static int load_cluster_uuid(struct store *s, char *err, size_t errlen)
{
    char id[MLR_ID_LEN + 1], uuid[32];
    struct store__stmt *st = NULL;
    int rc = mlr_id_new(id);
    if (rc == MLR_OK) {
        snprintf(uuid, sizeof(uuid), "%s%.2s", id, id + 3);
        rc = store__stmt(&s->main, "INSERT INTO meta(key, value) VALUES('cluster_uuid', ?) "
                                   "ON CONFLICT DO NOTHING", &st);
    }
    if (rc == MLR_OK) {
        store__bind_text(st, 1, uuid);
        rc = store__err(store__step(st));
    }
    if (rc == MLR_OK)
        rc = store__stmt(&s->main, "SELECT value FROM meta WHERE key = 'cluster_uuid'", &st);
    if (rc == MLR_OK && store__step(st) == SQLITE_ROW)
        snprintf(s->cluster_uuid, sizeof(s->cluster_uuid), "%s", store__col_text(st, 0));
    else if (rc == MLR_OK)
        rc = MLR_ECORRUPT;
    if (st)
        store__reset(st);
    if (rc != MLR_OK)
        snprintf(err, errlen, "cannot read cluster uuid: %s", store__errmsg(&s->main));
    return rc;
}

static int open_readers(struct store *s, char *err, size_t errlen)
{
    int n = s->opts.read_connections;
    s->readers = mlr_xcalloc((size_t)n, sizeof(*s->readers));
    s->reader_free = mlr_xcalloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) {
        int rc = s->pg ? store__pg_connect(&s->readers[i], s->path, err, errlen)
                       : conn_open(&s->readers[i], s->path, SQLITE_OPEN_READWRITE,
                                   s->opts.busy_timeout_ms, CACHE_OTHER_KIB, err, errlen);
        if (rc != MLR_OK)
            return rc;
        s->reader_free[s->nreader_free++] = i;
    }
    return MLR_OK;
}

/* PostgreSQL: the same connections, with the dialect's migrations; see pg.c. */
static int open_all_pg(struct store *s, char *err, size_t errlen)
{
    int rc = store__pg_connect(&s->main, s->path, err, errlen);
    if (rc == MLR_OK)
        rc = store__pg_migrate(&s->main, store__pg_migrations, store__pg_migrations_count, err,
                               errlen);
    if (rc == MLR_OK)
        rc = load_cluster_uuid(s, err, errlen);
    if (rc == MLR_OK)
        rc = store__pg_connect(&s->writer, s->path, err, errlen);
    if (rc == MLR_OK)
        rc = open_readers(s, err, errlen);
    if (rc == MLR_OK)
        rc = store__pg_schema_version(&s->main, &s->schema_version);
    return rc;
}

static int open_all(struct store *s, char *err, size_t errlen)
{
    if (s->pg)
        return open_all_pg(s, err, errlen);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = conn_open(&s->main, s->path, flags, s->opts.busy_timeout_ms, CACHE_OTHER_KIB, err,
                       errlen);
    if (rc == MLR_OK)
        rc = store__migrate(s->main.db, store__migrations, store__migrations_count, err, errlen);
    if (rc == MLR_OK)
        rc = load_cluster_uuid(s, err, errlen);
    if (rc == MLR_OK)
        rc = conn_open(&s->writer, s->path, SQLITE_OPEN_READWRITE, s->opts.busy_timeout_ms,
                       CACHE_WRITER_KIB, err, errlen);
    /* Checkpoint less often than SQLite's default (1000 pages): hot index pages rewritten by
     * many commits are then copied back once instead of many times. */
    if (rc == MLR_OK)
        rc = exec(&s->writer, "PRAGMA wal_autocheckpoint=8000");
    if (rc == MLR_OK)
        rc = open_readers(s, err, errlen);
    if (rc == MLR_OK) {
        struct store__stmt *st = NULL;
        rc = store__stmt(&s->main, "PRAGMA user_version", &st);
        if (rc == MLR_OK && store__step(st) == SQLITE_ROW)
            s->schema_version = store__col_int(st, 0);
        if (st)
            store__reset(st);
    }
    return rc;
}

static void free_store(struct store *s)
{
    conn_close(&s->main);
    conn_close(&s->writer);
    for (int i = 0; s->readers && i < s->opts.read_connections; i++)
        conn_close(&s->readers[i]);
    free(s->readers);
    free(s->reader_free);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->reader_cond);
    free(s->path);
    free(s);
}

/* SQLite's allocation statistics take a global mutex on every malloc; we never read them. */
static void sqlite_global_setup(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    sqlite3_initialize();
}

int store_open(uv_loop_t *loop, const char *path, const struct store_options *opts,
               struct store **out, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_global_setup);
    struct store *s = mlr_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->path = mlr_xstrdup(path);
    s->pg = store__is_url(path);
    /* libpq waits forever for an unreachable server unless told otherwise (a URL's own
     * connect_timeout still wins). Set here, before any store thread exists. */
    if (s->pg)
        setenv("PGCONNECT_TIMEOUT", "10", 0);
    resolve_options(&s->opts, opts);
    snprintf(s->node_id, sizeof(s->node_id), "%s", opts && opts->node_id ? opts->node_id : "");
    s->opts.node_id = s->node_id;
    mlr_histogram_init(&s->commit_us, mlr_metrics_latency_us, mlr_metrics_latency_us_count);
    mlr_histogram_init(&s->batch_size, batch_bounds,
                       (int)(sizeof(batch_bounds) / sizeof(batch_bounds[0])));
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_cond_init(&s->reader_cond, NULL);

    int rc = open_all(s, err, errlen);
    if (rc != MLR_OK) {
        free_store(s);
        return rc;
    }
    if (uv_async_init(loop, &s->wake, on_wake) != 0) {
        snprintf(err, errlen, "cannot create the store's wake-up handle");
        free_store(s);
        return MLR_EIO;
    }
    if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        snprintf(err, errlen, "cannot start the store writer thread");
        s->stopping = 1;
        uv_close((uv_handle_t *)&s->wake, NULL);
        free_store(s); /* the async handle is embedded: the loop must not run it again */
        return MLR_EIO;
    }
    s->thread_started = 1;
    *out = s;
    return MLR_OK;
}

/* Reads still running on the pool keep the store alive until the last one is delivered. */
static void on_store_closed(uv_handle_t *h)
{
    struct store *s = container_of((uv_async_t *)h, struct store, wake);
    s->closed = 1;
    if (s->reads_inflight == 0)
        free_store(s);
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    store__listener_close(s);
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->thread_started)
        pthread_join(s->thread, NULL);
    deliver(s); /* callbacks of the last batches run now, on this (the loop) thread */
    uv_close((uv_handle_t *)&s->wake, on_store_closed);
}

const char *store_errmsg(const struct store *s)
{
    return s->errmsg;
}

int store_schema_version(const struct store *s)
{
    return s->schema_version;
}

int store_schema_version_max(void)
{
    return store__migrations_count ? store__migrations[store__migrations_count - 1].version : 0;
}

const char *store_cluster_uuid(const struct store *s)
{
    return s->cluster_uuid;
}

struct store__conn *store__main_conn(struct store *s)
{
    return &s->main;
}

uv_loop_t *store__loop(struct store *s)
{
    return s->loop;
}

const char *store__location(const struct store *s)
{
    return s->path;
}

const char *store__node_id(const struct store *s)
{
    return s->node_id;
}

int store_is_shared(const struct store *s)
{
    return s->pg;
}

struct store__listener **store__listener_slot(struct store *s)
{
    return &s->listener;
}

void store_stats_get(struct store *s, struct store_stats *out)
{
    out->commits = atomic_load(&s->commits);
    out->writes = atomic_load(&s->writes);
    out->commit_us = &s->commit_us;
    out->batch_size = &s->batch_size;
}
