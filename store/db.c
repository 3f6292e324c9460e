/*
 * db.c — the statement layer under every store file: one small API over SQLite and PostgreSQL.
 *
 * The store files were written against SQLite's prepare/bind/step/column shape, and that shape
 * fits libpq too, so rather than a second copy of every store function there is one set of
 * functions (store__stmt, store__bind_*, store__step, store__col_*) and two backends under it.
 * SQLite's result codes stay the common vocabulary: PostgreSQL's SQLSTATEs are translated into
 * them (a unique violation is SQLITE_CONSTRAINT, a deadlock SQLITE_BUSY, ...), so the callers'
 * error handling and store__err() are the same for both.
 *
 * PostgreSQL statements: `?` and `?N` placeholders are rewritten to `$N` once, when the statement
 * is prepared. Cached statements are server-side prepared statements (named s<slot>); uncached
 * ones (dynamic SQL: searches, access predicates) run with PQexecParams. Parameters travel as
 * text and PostgreSQL infers their types from the SQL, which is why PostgreSQL variants of some
 * statements carry casts. A statement's rows are all fetched on its first step; column texts stay
 * valid until the next reset, as SQLite's stay valid until the next step.
 */
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

struct store__stmt {
    struct store__conn *c;
    sqlite3_stmt *lite;      /* SQLite backend */
    /* PostgreSQL backend */
    char *sql;               /* the text with $N placeholders */
    char name[16];           /* server-side prepared statement; "" = run with PQexecParams */
    int nparams;             /* highest placeholder number */
    char **params;           /* nparams heap copies; NULL = SQL NULL */
    PGresult *res;           /* rows of the current execution, or NULL before the first step */
    int row;                 /* current row of res */
    int nrows;
};

static void pg_errmsg(struct store__conn *c, const char *msg)
{
    snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg ? msg : "");
    size_t n = strlen(c->errmsg);
    while (n && (c->errmsg[n - 1] == '\n' || c->errmsg[n - 1] == ' '))
        c->errmsg[--n] = '\0';
}

/* Translates a PostgreSQL failure into the SQLite result code that means the same to callers. */
static int pg_code(struct store__conn *c, const PGresult *res)
{
    pg_errmsg(c, res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg));
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state == NULL || PQstatus(c->pg) != CONNECTION_OK)
        return SQLITE_IOERR; /* no answer: the connection is gone */
    if (strncmp(state, "23", 2) == 0)
        return SQLITE_CONSTRAINT;
    if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03") ||
        !strcmp(state, "57014"))
        return SQLITE_BUSY;
    if (!strcmp(state, "53100"))
        return SQLITE_FULL;
    if (!strcmp(state, "53200"))
        return SQLITE_NOMEM;
    if (!strcmp(state, "54000"))
        return SQLITE_TOOBIG;
    if (!strcmp(state, "42501") || !strcmp(state, "25006"))
        return SQLITE_READONLY;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
        strncmp(state, "58", 2) == 0 || strncmp(state, "53", 2) == 0)
        return SQLITE_IOERR;
    return SQLITE_ERROR; /* SQL refused: a bug or a malformed value, no retry will pass */
}

/*
 * Rewrites ? and ?N (outside quoted text) to $N; *nparams gets the highest number used, and
 * used[n - 1] is set for each number that occurs (PostgreSQL cannot infer the type of a
 * parameter the text never mentions, so those are declared text).
 */
char *store__pg_translate(const char *sql, int *nparams, unsigned char *used, int maxused)
{
    struct mlr_buf b = {0};
    int last = 0, high = 0;
    char quote = 0;
    for (const char *p = sql; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
            mlr_buf_append(&b, p, 1);
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
            mlr_buf_append(&b, p, 1);
        } else if (*p == '?') {
            int n = 0;
            while (p[1] >= '0' && p[1] <= '9')
                n = n * 10 + (*++p - '0');
            if (n == 0)
                n = last + 1;
            last = n;
            if (n <= maxused)
                used[n - 1] = 1;
            if (n > high)
                high = n;
            mlr_buf_printf(&b, "$%d", n);
        } else {
            mlr_buf_append(&b, p, 1);
        }
    }
    *nparams = high;
    if (b.data == NULL)
        return mlr_xstrdup("");
    return b.data; /* the buffer's bytes become the caller's */
}

static struct store__stmt *stmt_new(struct store__conn *c)
{
    struct store__stmt *st = mlr_xcalloc(1, sizeof(*st));
    st->c = c;
    return st;
}

static int pg_prepare(struct store__conn *c, const char *sql, int slot, struct store__stmt **out)
{
    struct store__stmt *st = stmt_new(c);
    unsigned char used[64] = {0};
    Oid types[64] = {0};
    st->sql = store__pg_translate(sql, &st->nparams, used, 64);
    st->params = mlr_xcalloc((size_t)st->nparams + 1, sizeof(char *));
    for (int i = 0; i < st->nparams && i < 64; i++)
        types[i] = used[i] ? 0 : 25; /* 0: inferred; 25: text */
    if (slot >= 0) {
        snprintf(st->name, sizeof(st->name), "s%d", slot);
        PGresult *res = PQprepare(c->pg, st->name, st->sql, st->nparams < 64 ? st->nparams : 0,
                                  st->nparams < 64 ? types : NULL);
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        int code = ok ? SQLITE_OK : pg_code(c, res);
        PQclear(res);
        if (!ok) {
            mlr_log(MLR_LOG_ERROR, "store", "cannot prepare [%s]: %s", st->sql, c->errmsg);
            store__finalize(st);
            return code;
        }
    }
    *out = st;
    return SQLITE_OK;
}

int store__prepare(struct store__conn *c, const char *sql, struct store__stmt **out)
{
    *out = NULL;
    if (c->pg)
        return store__err(pg_prepare(c, sql, -1, out));
    sqlite3_stmt *lite = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &lite, NULL);
    if (rc != SQLITE_OK)
        return store__err(rc);
    *out = stmt_new(c);
    (*out)->lite = lite;
    return MLR_OK;
}

int store__stmt(struct store__conn *c, const char *sql, struct store__stmt **out)
{
    for (int i = 0; i < c->ncache; i++) {
        if (c->cache[i].sql == sql) {
            store__reset(c->cache[i].st);
            *out = c->cache[i].st;
            return MLR_OK;
        }
    }
    if (c->ncache >= STORE_STMT_CACHE) {
        /* The cache is sized above the number of distinct statements; finding it full is a bug. */
        mlr_log(MLR_LOG_ERROR, "store", "statement cache full");
        return MLR_EINTERNAL;
    }
    struct store__stmt *st = NULL;
    if (c->pg) {
        int rc = pg_prepare(c, sql, c->ncache, &st);
        if (rc != SQLITE_OK)
            return store__err(rc);
    } else {
        sqlite3_stmt *lite = NULL;
        int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &lite, NULL);
        if (rc != SQLITE_OK)
            return store__err(rc);
        st = stmt_new(c);
        st->lite = lite;
    }
    c->cache[c->ncache].sql = sql;
    c->cache[c->ncache].st = st;
    c->ncache++;
    *out = st;
    return MLR_OK;
}

void store__reset(struct store__stmt *st)
{
    if (st == NULL)
        return;
    if (st->lite) {
        sqlite3_reset(st->lite);
        sqlite3_clear_bindings(st->lite);
        return;
    }
    PQclear(st->res);
    st->res = NULL;
    for (int i = 0; i < st->nparams; i++) {
        free(st->params[i]);
        st->params[i] = NULL;
    }
}

void store__finalize(struct store__stmt *st)
{
    if (st == NULL)
        return;
    if (st->lite) {
        sqlite3_finalize(st->lite);
    } else {
        store__reset(st);
        if (st->name[0] && st->c->pg && PQstatus(st->c->pg) == CONNECTION_OK) {
            char sql[48];
            snprintf(sql, sizeof(sql), "DEALLOCATE %s", st->name);
            PQclear(PQexec(st->c->pg, sql));
        }
        free(st->params);
        free(st->sql);
    }
    free(st);
}

static void pg_bind(struct store__stmt *st, int i, char *v)
{
    if (i < 1 || i > st->nparams) {
        free(v);
        return;
    }
    free(st->params[i - 1]);
    st->params[i - 1] = v;
}

int store__bind_text(struct store__stmt *st, int i, const char *v)
{
    if (st->lite)
        return sqlite3_bind_text(st->lite, i, v, -1, SQLITE_TRANSIENT);
    pg_bind(st, i, v ? mlr_xstrdup(v) : NULL);
    return SQLITE_OK;
}

int store__bind_int(struct store__stmt *st, int i, int64_t v)
{
    if (st->lite)
        return sqlite3_bind_int64(st->lite, i, v);
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    pg_bind(st, i, mlr_xstrdup(buf));
    return SQLITE_OK;
}

int store__bind_real(struct store__stmt *st, int i, double v)
{
    if (st->lite)
        return sqlite3_bind_double(st->lite, i, v);
    char buf[40];
    snprintf(buf, sizeof(buf), "%.17g", v);
    pg_bind(st, i, mlr_xstrdup(buf));
    return SQLITE_OK;
}

int store__bind_null(struct store__stmt *st, int i)
{
    if (st->lite)
        return sqlite3_bind_null(st->lite, i);
    pg_bind(st, i, NULL);
    return SQLITE_OK;
}

static int pg_run(struct store__stmt *st)
{
    struct store__conn *c = st->c;
    const char *const *params = (const char *const *)st->params;
    st->res = st->name[0] ? PQexecPrepared(c->pg, st->name, st->nparams, params, NULL, NULL, 0)
                          : PQexecParams(c->pg, st->sql, st->nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType t = PQresultStatus(st->res);
    if (t != PGRES_TUPLES_OK && t != PGRES_COMMAND_OK) {
        int code = pg_code(c, st->res);
        if (code == SQLITE_ERROR)
            mlr_log(MLR_LOG_ERROR, "store", "statement refused [%s]: %s", st->sql, c->errmsg);
        PQclear(st->res);
        st->res = NULL;
        return code;
    }
    const char *n = PQcmdTuples(st->res);
    c->changes = n && *n ? atoi(n) : 0;
    st->nrows = t == PGRES_TUPLES_OK ? PQntuples(st->res) : 0;
    st->row = -1;
    return SQLITE_OK;
}

int store__step(struct store__stmt *st)
{
    if (st->lite)
        return sqlite3_step(st->lite);
    if (st->res == NULL) {
        int rc = pg_run(st);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (st->row + 1 < st->nrows) {
        st->row++;
        return SQLITE_ROW;
    }
    st->row = st->nrows;
    return SQLITE_DONE;
}

int store__col_null(struct store__stmt *st, int i)
{
    if (st->lite)
        return sqlite3_column_type(st->lite, i) == SQLITE_NULL;
    return st->res == NULL || st->row >= st->nrows || PQgetisnull(st->res, st->row, i);
}

int store__col_type(struct store__stmt *st, int i)
{
    if (st->lite)
        return sqlite3_column_type(st->lite, i);
    if (store__col_null(st, i))
        return SQLITE_NULL;
    switch (PQftype(st->res, i)) {
    case 16: /* bool */
    case 20: /* int8 */
    case 21: /* int2 */
    case 23: /* int4 */
        return SQLITE_INTEGER;
    case 700:  /* float4 */
    case 701:  /* float8 */
    case 1700: /* numeric */
        return SQLITE_FLOAT;
    default:
        return SQLITE_TEXT;
    }
}

const char *store__col_text(struct store__stmt *st, int i)
{
    if (st->lite)
        return (const char *)sqlite3_column_text(st->lite, i);
    return store__col_null(st, i) ? NULL : PQgetvalue(st->res, st->row, i);
}

int64_t store__col_int(struct store__stmt *st, int i)
{
    if (st->lite)
        return sqlite3_column_int64(st->lite, i);
    const char *v = store__col_text(st, i);
    if (v == NULL)
        return 0;
    if (v[0] == 't' && v[1] == '\0') /* a boolean: SQLite gives comparisons as 1 and 0 */
        return 1;
    return strtoll(v, NULL, 10);
}

double store__col_real(struct store__stmt *st, int i)
{
    if (st->lite)
        return sqlite3_column_double(st->lite, i);
    const char *v = store__col_text(st, i);
    return v ? strtod(v, NULL) : 0.0;
}

int store__changes(struct store__conn *c)
{
    return c->pg ? c->changes : sqlite3_changes(c->db);
}

int store__exec(struct store__conn *c, const char *sql)
{
    if (c->pg == NULL)
        return sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    PGresult *res = PQexec(c->pg, sql);
    ExecStatusType t = PQresultStatus(res);
    int code = t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK ? SQLITE_OK : pg_code(c, res);
    PQclear(res);
    return code;
}

const char *store__errmsg(struct store__conn *c)
{
    if (c->pg)
        return c->errmsg;
    return c->db ? sqlite3_errmsg(c->db) : "not open";
}

int store__in_tx(struct store__conn *c)
{
    if (c->pg) {
        PGTransactionStatusType t = PQtransactionStatus(c->pg);
        return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
    }
    return !sqlite3_get_autocommit(c->db);
}

int store__is_url(const char *path)
{
    return path && (strncmp(path, "postgres://", 11) == 0 ||
                    strncmp(path, "postgresql://", 13) == 0);
}

void store__conn_close(struct store__conn *c)
{
    for (int i = 0; i < c->ncache; i++) {
        c->cache[i].st->name[0] = '\0'; /* the session ends: no DEALLOCATE round trips */
        store__finalize(c->cache[i].st);
    }
    c->ncache = 0;
    if (c->db)
        sqlite3_close(c->db);
    c->db = NULL;
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
}

/* Notices (e.g. "relation already exists, skipping") are for people at a psql prompt. */
static void quiet_notice(void *arg, const char *msg)
{
    UNUSED(arg);
    UNUSED(msg);
}

int store__pg_connect(struct store__conn *c, const char *url, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->pg = PQconnectdb(url);
    if (c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s",
                 c->pg ? PQerrorMessage(c->pg) : "out of memory");
        size_t n = strlen(err);
        while (n && err[n - 1] == '\n')
            err[--n] = '\0';
        store__conn_close(c);
        return MLR_EIO;
    }
    PQsetNoticeProcessor(c->pg, quiet_notice, NULL);
    /* Times and texts are compared as SQLite compares them (bytes, UTC), whatever the server's
     * defaults are. */
    int rc = store__exec(c, "SET TIME ZONE 'UTC'; SET client_encoding = 'UTF8'");
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot set up the PostgreSQL session: %s", c->errmsg);
        store__conn_close(c);
        return MLR_EIO;
    }
    return MLR_OK;
}

int store__pg_reconnect(struct store__conn *c)
{
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_OK)
        return MLR_OK;
    /* Server-side prepared statements died with the session. */
    for (int i = 0; i < c->ncache; i++) {
        c->cache[i].st->name[0] = '\0';
        store__finalize(c->cache[i].st);
    }
    c->ncache = 0;
    PQreset(c->pg);
    if (PQstatus(c->pg) != CONNECTION_OK)
        return MLR_EIO;
    PQsetNoticeProcessor(c->pg, quiet_notice, NULL);
    return store__exec(c, "SET TIME ZONE 'UTC'") == SQLITE_OK ? MLR_OK : MLR_EIO;
}

int store__pg_socket(struct store__conn *c)
{
    return c->pg ? PQsocket(c->pg) : -1;
}

int store__pg_notify_next(struct store__conn *c, char *payload, size_t len)
{
    if (c->pg == NULL || !PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK)
        return -1;
    PGnotify *note = PQnotifies(c->pg);
    if (note == NULL)
        return 0;
    snprintf(payload, len, "%s", note->extra ? note->extra : "");
    PQfreemem(note);
    return 1;
}
