/*
 * search.c — the OpenSearch `_search` DSL subset, compiled to one parameterised SQL query.
 *
 * What. store__search_compile() turns a search body (query, from, size, sort, _source,
 * track_total_hits) into a WHERE expression, an ORDER BY list and an array of bound values, and
 * store__search_run() executes it on a read connection and renders the OpenSearch response.
 * Leaf queries on fields that the index map names become predicates on real, indexed columns
 * (`model_state = ?`, `id IN (SELECT value FROM json_each(?))`), so SQLite searches an index
 * instead of scanning JSON. Any other field is read from the document with
 * json_each(doc, '$.path'), which also makes a term match any element of an array, as it does in
 * OpenSearch. Supported queries: match_all, match_none, ids, term, terms, match, range, exists,
 * bool and constant_score; anything else is `unknown query [name]`.
 *
 * Dialects. A query is compiled for one backend (store__search_compile_dialect()). SQLite's text
 * is as described above. PostgreSQL's reads a document path as `doc::jsonb #> '{a,b}'` and
 * expands it into the same values json_each() gives (an array's elements, an object's member
 * values, a scalar itself) as jsonb, which compares typed as SQLite's values do: a string never
 * equals a number, 5 equals 5.0. Where the two differ the PostgreSQL text says so explicitly:
 * range bounds on document values only match values of the bound's JSON type (SQLite would
 * order every string above every number), text columns compare and sort with COLLATE "C" (SQLite's
 * BINARY), DESC sorts say NULLS LAST, and constants are TRUE/FALSE rather than 1/0.
 *
 * Invariants. Nothing from the request reaches the SQL text except field names that passed a
 * strict pattern (letters, digits, '_' and '.'), and those only inside a quoted path; every
 * value is a bound parameter. Every predicate yields true, false or NULL, where NULL means false;
 * must_not wraps its clause in coalesce() so that a missing field negates to true, not to NULL.
 * The id is always the last ORDER BY key, so pages are stable. Input is bounded: 20 levels of
 * nesting, 1024 clauses (OpenSearch's max_clause_count), 65,536 terms per terms or ids query,
 * 1 MiB of SQL text and a result window of 10,000.
 *
 * Threading. Compilation is pure and may run on any thread (normally the loop thread, so bad
 * input is refused before work is queued). The compiled query is read-only afterwards and runs on
 * a pool thread with that thread's connection; `match` needs the SQL function that
 * store__search_register() installs on each SQLite connection (PostgreSQL's mlr_match() is
 * created by migrations/postgres/0001_init.sql).
 *
 * Costs. Compilation is linear in the body. A run is one count bounded by track_total_hits
 * (10,000 by default, so a huge match set costs at most 10,001 index steps) plus one
 * LIMIT/OFFSET select; each returned hit's document is parsed once, stripped of credentials and
 * filtered. Statements are prepared per run because their text depends on the request.
 */
#include "store_int.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#define MAX_DEPTH 20        /* nesting levels of queries */
#define MAX_CLAUSES 1024    /* queries per body (indices.query.bool.max_clause_count) */
#define MAX_TERMS 65536     /* values of one terms or ids query (index.max_terms_count) */
#define MAX_WINDOW 10000    /* from + size (index.max_result_window) */
#define MAX_TRACK 10000     /* default track_total_hits */
#define MAX_SQL (1u << 20)  /* bytes of WHERE or ORDER BY text */
#define MAX_FIELD 256       /* bytes of a field name */
#define MAX_SORT 64         /* sort keys */
#define MAX_PATTERNS 1024   /* _source include plus exclude patterns */
#define AND_GROUP 64        /* clauses per parenthesised group, to keep SQLite's tree shallow */

/* OpenSearch error types (exception class names in snake_case). */
static const char PARSING[] = "parsing_exception";
static const char XCONTENT[] = "x_content_parse_exception";
static const char ILLEGAL[] = "illegal_argument_exception";
static const char SHARD[] = "query_shard_exception";
static const char CLAUSES[] = "too_many_clauses";

#define T(t) (1u << (t))
#define T_NUMBER (T(json_type_int) | T(json_type_double))
#define T_SCALAR (T_NUMBER | T(json_type_string) | T(json_type_boolean))

/* Compilation state for one body. */
struct cx {
    const struct store__index *ix;
    struct store__query *q; /* being filled */
    char *err;              /* reason out */
    size_t errlen;
    int depth;              /* current query nesting, 1 = the top-level query */
    int clauses;            /* queries compiled so far */
    int overflow;           /* some SQL text hit MAX_SQL */
};

/* A field resolved against the index map. */
struct fref {
    const char *col;          /* trusted SQL column or expression; NULL for a document path */
    char path[MAX_FIELD + 3]; /* "$.a.b" when col is NULL */
    int numeric;              /* values compare as numbers */
    int keyword;              /* exact-value field: "x.keyword" or _id */
};

static int fail(struct cx *cx, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct cx *cx, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cx->err, cx->errlen, fmt, ap);
    va_end(ap);
    cx->q->err_type = type;
    return MLR_EINVAL;
}

/* The name OpenSearch's parser gives the token that starts @v, for its error messages. */
static const char *token_name(struct json_object *v)
{
    static const char *const names[] = {
        [json_type_null] = "VALUE_NULL",     [json_type_boolean] = "VALUE_BOOLEAN",
        [json_type_double] = "VALUE_NUMBER", [json_type_int] = "VALUE_NUMBER",
        [json_type_object] = "START_OBJECT", [json_type_array] = "START_ARRAY",
        [json_type_string] = "VALUE_STRING",
    };
    return names[json_object_get_type(v)];
}

static int has_type(struct json_object *v, unsigned types)
{
    return (T(json_object_get_type(v)) & types) != 0;
}

static int one_of(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return 1;
    return 0;
}

static void put(struct cx *cx, const char *s)
{
    if (mlr_buf_puts(&cx->q->where, s) != MLR_OK)
        cx->overflow = 1;
}

static void put_order(struct cx *cx, const char *s)
{
    if (mlr_buf_puts(&cx->q->order, s) != MLR_OK)
        cx->overflow = 1;
}

/* Constant predicates: SQLite has no boolean type and takes 1 and 0; PostgreSQL wants booleans
 * wherever a condition goes. */
static void put_true(struct cx *cx)
{
    put(cx, cx->q->pg ? "TRUE" : "1");
}

static void put_false(struct cx *cx)
{
    put(cx, cx->q->pg ? "FALSE" : "0");
}

/* ------------------------------------------------------------------------------------------ */
/* Bound values                                                                               */
/* ------------------------------------------------------------------------------------------ */

static struct store__val *val_new(struct store__query *q, enum store__val_kind kind)
{
    assert(q->nvals <= q->capvals);
    if (q->nvals == q->capvals) {
        q->capvals = q->capvals ? q->capvals * 2 : 8;
        q->vals = mlr_xrealloc(q->vals, q->capvals * sizeof(*q->vals));
    }
    struct store__val *v = &q->vals[q->nvals++];
    memset(v, 0, sizeof(*v));
    v->kind = kind;
    return v;
}

static void bind_text(struct cx *cx, const char *s)
{
    val_new(cx->q, STORE__VAL_TEXT)->text = mlr_xstrdup(s);
}

/* Binds a scalar as SQLite sees the same JSON value: booleans are 1/0, as json_extract gives. */
static void bind_json(struct cx *cx, struct json_object *v)
{
    enum json_type t = json_object_get_type(v);
    if (t == json_type_string)
        bind_text(cx, json_object_get_string(v));
    else if (t == json_type_double)
        val_new(cx->q, STORE__VAL_REAL)->d = json_object_get_double(v);
    else
        val_new(cx->q, STORE__VAL_INT)->i = json_object_get_int64(v);
}

/* PostgreSQL, document paths: binds @v as JSON text, compared with `?::jsonb` (jsonb equality is
 * typed as SQLite's is: a string never equals a number, and 5 equals 5.0). */
static void bind_jsonb(struct cx *cx, struct json_object *v)
{
    bind_text(cx, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
}

/* Drops the values and SQL appended since a checkpoint (clauses parsed only to validate them). */
static void rollback(struct cx *cx, size_t where_len, size_t nvals)
{
    struct store__query *q = cx->q;
    while (q->nvals > nvals)
        free(q->vals[--q->nvals].text);
    if (q->where.data != NULL && where_len < q->where.len) {
        q->where.len = where_len;
        q->where.data[where_len] = '\0';
    }
}

/* Parses a whole string as an integer or a finite double; returns a new json-c number or NULL. */
static struct json_object *number_from_string(const char *s)
{
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (*s != '\0' && *end == '\0' && errno == 0)
        return json_object_new_int64(i);
    double d = strtod(s, &end);
    if (*s != '\0' && *end == '\0' && isfinite(d))
        return json_object_new_double(d);
    return NULL;
}

/*
 * The value @v as field @f compares it, as a new reference in *@out: numbers for numeric columns
 * (a numeric string is converted, anything else refused as OpenSearch does), text for the other
 * columns (whose TEXT affinity would convert numbers anyway, and booleans read "true"), and the
 * JSON value unchanged for document paths.
 */
static int value_for(struct cx *cx, const struct fref *f, struct json_object *v,
                     struct json_object **out)
{
    struct json_object *r = NULL;
    if (f->numeric && has_type(v, T_NUMBER))
        r = json_object_get(v);
    else if (f->numeric && json_object_is_type(v, json_type_string))
        r = number_from_string(json_object_get_string(v));
    else if (f->col != NULL && !f->numeric)
        r = json_object_new_string(json_object_get_string(v));
    else if (f->col == NULL)
        r = json_object_get(v);
    if (r == NULL)
        return fail(cx, SHARD, "failed to create query: For input string: \"%.200s\"",
                    json_object_get_string(v));
    *out = r;
    return MLR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Fields                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static int is_alpha_(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static int is_alnum_(int ch)
{
    return is_alpha_(ch) || (ch >= '0' && ch <= '9');
}

/* ^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$, at most MAX_FIELD bytes: safe inside '$.<name>'. */
static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_FIELD || !is_alpha_((unsigned char)s[0]) || s[n - 1] == '.')
        return 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i] == '.' && s[i - 1] == '.')
            return 0;
        if (s[i] != '.' && !is_alnum_((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

static const struct store__field *field_lookup(const struct store__index *ix, const char *name,
                                               size_t len)
{
    for (size_t i = 0; i < ix->nfields; i++) {
        const char *fn = ix->fields[i].name;
        if (strlen(fn) == len && memcmp(fn, name, len) == 0)
            return &ix->fields[i];
    }
    return NULL;
}

/*
 * Resolves @name: the exact name in the map, else the name without ".keyword" in the map, else
 * _id, else the document path '$.<name without .keyword>'.
 */
static int resolve(struct cx *cx, const char *name, struct fref *out)
{
    assert(name != NULL && out != NULL);
    static const char kw[] = ".keyword";
    struct fref f = {0};
    size_t n = strlen(name);
    if (!valid_name(name))
        return fail(cx, ILLEGAL, "field name [%.200s] is not supported: use letters, digits, "
                                 "'_' and '.'", name);
    f.keyword = n > sizeof(kw) - 1 && strcmp(name + n - (sizeof(kw) - 1), kw) == 0;
    const struct store__field *m = field_lookup(cx->ix, name, n);
    if (m == NULL && f.keyword) {
        n -= sizeof(kw) - 1;
        m = field_lookup(cx->ix, name, n);
    }
    if (m != NULL) {
        f.col = m->sql;
        f.numeric = m->numeric;
    } else if (n == 3 && memcmp(name, "_id", 3) == 0) {
        f.col = "id";
        f.keyword = 1;
    } else {
        snprintf(f.path, sizeof(f.path), "$.%.*s", (int)n, name);
    }
    *out = f;
    return MLR_OK;
}

/* PostgreSQL: @f's document path as a text[] literal for #>: '{a,b}' for "$.a.b". Names are
 * letters, digits, '_' and '.' only (valid_name()), so nothing needs quoting. */
static void put_pgpath(struct cx *cx, const struct fref *f)
{
    char buf[sizeof(f->path) + 4];
    size_t n = 0;
    buf[n++] = '\'';
    buf[n++] = '{';
    for (const char *p = f->path + 2; *p != '\0'; p++) /* after "$.", dots become commas */
        buf[n++] = *p == '.' ? ',' : *p;
    buf[n++] = '}';
    buf[n++] = '\'';
    buf[n] = '\0';
    put(cx, buf);
}

/* Opens a predicate over @f and returns the SQL expression for the field's value in it. */
static const char *pred_begin(struct cx *cx, const struct fref *f)
{
    if (f->col != NULL)
        return f->col;
    if (cx->q->pg) {
        /* The values json_each() gives SQLite: an array's elements, an object's member values,
         * a scalar itself, nothing for a missing path; as jsonb. */
        put(cx, "EXISTS(SELECT 1 FROM (SELECT doc::jsonb #> ");
        put_pgpath(cx, f);
        put(cx, " AS x) AS p, jsonb_array_elements(CASE jsonb_typeof(p.x) WHEN 'array' THEN p.x "
                "WHEN 'object' THEN (SELECT coalesce(jsonb_agg(e.value), '[]') FROM "
                "jsonb_each(p.x) AS e) ELSE jsonb_build_array(p.x) END) AS j(value) "
                "WHERE p.x IS NOT NULL AND ");
        return "j.value"; /* jsonb */
    }
    put(cx, "EXISTS(SELECT 1 FROM json_each(doc, '");
    put(cx, f->path);
    put(cx, "') AS j WHERE ");
    return "j.value";
}

static void pred_end(struct cx *cx, const struct fref *f)
{
    if (f->col == NULL)
        put(cx, ")");
}

/* PostgreSQL: a JSON scalar's jsonb_typeof() name. */
static const char *jsonb_type(struct json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_string:
        return "string";
    case json_type_boolean:
        return "boolean";
    default:
        return "number";
    }
}

/*
 * PostgreSQL: <e> <op> ?, where @e is @f's value in the predicate and @b the value as @f compares
 * it (bound here). Document values are jsonb: equality is typed by itself, but jsonb orders
 * strings below numbers where SQLite orders them above, so an ordering comparison only matches
 * values of the bound's JSON type. The backends then answer differently across types: for
 * SQLite every string is above every number (a "gt": 0 matches any string value), here no
 * string is comparable with a number. (Likewise SQLite's JSON true is the integer 1, so a term
 * true also matches a 1 there, not here.) Text columns order bytewise (COLLATE "C"), as SQLite's
 * BINARY collation does.
 */
static void pg_compare(struct cx *cx, const struct fref *f, const char *e, const char *op,
                       struct json_object *b, int nocase)
{
    int eq = strcmp(op, " = ") == 0;
    int text = json_object_is_type(b, json_type_string);
    if (f->col == NULL && nocase && text) {
        put(cx, "(jsonb_typeof(");
        put(cx, e);
        put(cx, ") = 'string' AND lower(");
        put(cx, e);
        put(cx, " #>> '{}')");
        put(cx, op);
        put(cx, "lower(?::text))");
        bind_text(cx, json_object_get_string(b));
        return;
    }
    if (f->col == NULL) {
        if (!eq) {
            put(cx, "(jsonb_typeof(");
            put(cx, e);
            put(cx, ") = '");
            put(cx, jsonb_type(b));
            put(cx, "' AND ");
        }
        put(cx, e);
        put(cx, op);
        put(cx, eq ? "?::jsonb" : "?::jsonb)");
        bind_jsonb(cx, b);
        return;
    }
    put(cx, nocase && text ? "lower(" : "");
    put(cx, e);
    put(cx, nocase && text ? ")" : "");
    put(cx, op);
    if (nocase && text)
        put(cx, "lower(?::text)");
    else if (json_object_is_type(b, json_type_double))
        put(cx, "?::float8");
    else
        put(cx, !eq && text ? "? COLLATE \"C\"" : "?");
    bind_json(cx, b);
}

/* <field> = ?, with @v bound as @f compares it; @nocase compares text ignoring ASCII case. */
static int emit_cmp(struct cx *cx, const struct fref *f, struct json_object *v, int nocase)
{
    struct json_object *b = NULL;
    int rc = value_for(cx, f, v, &b);
    if (rc != MLR_OK)
        return rc;
    const char *e = pred_begin(cx, f);
    if (cx->q->pg) {
        pg_compare(cx, f, e, " = ", b, nocase);
    } else {
        put(cx, e);
        put(cx, " = ?");
        put(cx, nocase ? " COLLATE NOCASE" : "");
        bind_json(cx, b);
    }
    pred_end(cx, f);
    json_object_put(b);
    return MLR_OK;
}

/* The IN list of emit_in() for @f: the elements of the one bound JSON array. */
static const char *in_list(struct cx *cx, const struct fref *f)
{
    if (!cx->q->pg)
        return " IN (SELECT value FROM json_each(?))";
    if (f->col == NULL)
        return " IN (SELECT jsonb_array_elements(?::jsonb))";
    return f->numeric ? " IN (SELECT jsonb_array_elements_text(?::jsonb)::numeric)"
                      : " IN (SELECT jsonb_array_elements_text(?::jsonb))";
}

/* <field> IN (the values of @list), bound as one JSON array so any count is one parameter. */
static int emit_in(struct cx *cx, const char *qname, const struct fref *f, struct json_object *list)
{
    size_t n = json_object_array_length(list);
    if (n > MAX_TERMS)
        return fail(cx, ILLEGAL, "The number of terms [%zu] used in the Terms Query request has "
                                 "exceeded the allowed maximum of [%d]. This maximum can be set "
                                 "by changing the [index.max_terms_count] index level setting.",
                    n, MAX_TERMS);
    if (n == 0) {
        put_false(cx);
        return MLR_OK;
    }
    struct json_object *arr = json_object_new_array_ext((int)n);
    int rc = MLR_OK;
    for (size_t i = 0; i < n && rc == MLR_OK; i++) {
        struct json_object *el = json_object_array_get_idx(list, i), *b = NULL;
        if (!has_type(el, T_SCALAR))
            rc = fail(cx, PARSING, "[%s] query does not support values of type [%s]", qname,
                      token_name(el));
        if (rc == MLR_OK)
            rc = value_for(cx, f, el, &b);
        if (rc == MLR_OK)
            json_object_array_add(arr, b); /* consumes b */
    }
    if (rc == MLR_OK) {
        put(cx, pred_begin(cx, f));
        put(cx, in_list(cx, f));
        pred_end(cx, f);
        bind_text(cx, json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
    }
    json_object_put(arr);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Full-text matching: the tokenizer shared by compilation and the mlr_match() SQL function    */
/* ------------------------------------------------------------------------------------------ */

/* Token bytes: ASCII letters, digits and '_' (which joins words, as in Unicode word breaking),
 * and every non-ASCII byte, so UTF-8 words stay whole. Comparison ignores ASCII case. */
static int tok_char(unsigned char ch)
{
    return is_alnum_(ch) || ch >= 0x80;
}

/* Returns the first token at or after @s with its length in *len, or NULL when there is none. */
static const char *next_token(const char *s, size_t *len)
{
    while (*s != '\0' && !tok_char((unsigned char)*s))
        s++;
    if (*s == '\0')
        return NULL;
    const char *e = s;
    while (*e != '\0' && tok_char((unsigned char)*e))
        e++;
    *len = (size_t)(e - s);
    return s;
}

static int has_token(const char *text, const char *tok, size_t len)
{
    size_t n = 0;
    for (const char *t = next_token(text, &n); t != NULL; t = next_token(t + n, &n))
        if (n == len && strncasecmp(t, tok, len) == 0)
            return 1;
    return 0;
}

static size_t count_tokens(const char *text)
{
    size_t n = 0, count = 0;
    for (const char *t = next_token(text, &n); t != NULL; t = next_token(t + n, &n))
        count++;
    return count;
}

/*
 * mlr_match(value, query, all): 1 when any (all = 0) or every (all = 1) token of query occurs
 * among the tokens of value; 0 when query has no token or value is NULL.
 */
static void match_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    UNUSED(argc);
    const char *value = (const char *)sqlite3_value_text(argv[0]);
    const char *query = (const char *)sqlite3_value_text(argv[1]);
    int all = sqlite3_value_int(argv[2]) != 0;
    int hit = 0;
    size_t n = 0;
    if (value != NULL && query != NULL) {
        for (const char *t = next_token(query, &n); t != NULL; t = next_token(t + n, &n)) {
            hit = has_token(value, t, n);
            if (hit != all)
                break; /* "or" found one, or "and" missed one: the answer is known */
        }
    }
    sqlite3_result_int(ctx, hit);
}

int store__search_register(sqlite3 *db)
{
    int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
    return store__err(
        sqlite3_create_function_v2(db, "mlr_match", 3, flags, NULL, match_fn, NULL, NULL, NULL));
}

/* ------------------------------------------------------------------------------------------ */
/* Leaf queries                                                                               */
/* ------------------------------------------------------------------------------------------ */

static const char *const common_opts[] = {"boost", "_name", NULL};

/* Rejects every key of @body but the ignorable ones (boost, _name). */
static int no_options(struct cx *cx, const char *qname, struct json_object *body)
{
    json_object_object_foreach(body, key, val)
    {
        UNUSED(val);
        if (!one_of(key, common_opts))
            return fail(cx, PARSING, "[%s] query does not support [%s]", qname, key);
    }
    return MLR_OK;
}

static int q_match_all(struct cx *cx, struct json_object *body)
{
    int rc = no_options(cx, "match_all", body);
    put_true(cx);
    return rc;
}

static int q_match_none(struct cx *cx, struct json_object *body)
{
    int rc = no_options(cx, "match_none", body);
    put_false(cx);
    return rc;
}

/* The single {"field": value} of a term, match or range query. */
static int one_field(struct cx *cx, const char *qname, struct json_object *body, const char **name,
                     struct json_object **val)
{
    const char *found = NULL;
    struct json_object *v = NULL;
    json_object_object_foreach(body, key, kv)
    {
        if (found != NULL)
            return fail(cx, PARSING, "[%s] query doesn't support multiple fields, found [%s] "
                                     "and [%s]", qname, found, key);
        found = key;
        v = kv;
    }
    if (found == NULL)
        return fail(cx, ILLEGAL, "[%s] requires a field name", qname);
    *name = found;
    *val = v;
    return MLR_OK;
}

/* {"value": v, "case_insensitive": bool, "boost": n} */
static int term_options(struct cx *cx, struct json_object *opts, struct json_object **value,
                        int *nocase)
{
    struct json_object *v = NULL;
    int ci = 0;
    json_object_object_foreach(opts, key, kv)
    {
        if (strcmp(key, "value") == 0)
            v = kv;
        else if (strcmp(key, "case_insensitive") == 0 && json_object_is_type(kv, json_type_boolean))
            ci = json_object_get_boolean(kv);
        else if (!one_of(key, common_opts))
            return fail(cx, PARSING, "[term] query does not support [%s]", key);
    }
    *value = v;
    *nocase = ci;
    return MLR_OK;
}

static int q_term(struct cx *cx, struct json_object *body)
{
    const char *name = NULL;
    struct json_object *v = NULL;
    struct fref f;
    int nocase = 0;
    int rc = one_field(cx, "term", body, &name, &v);
    if (rc == MLR_OK && json_object_is_type(v, json_type_object))
        rc = term_options(cx, v, &v, &nocase);
    if (rc == MLR_OK && json_object_is_type(v, json_type_array))
        rc = fail(cx, PARSING, "[term] query does not support array of values");
    if (rc == MLR_OK && !has_type(v, T_SCALAR))
        rc = fail(cx, ILLEGAL, "value cannot be null");
    if (rc == MLR_OK)
        rc = resolve(cx, name, &f);
    if (rc == MLR_OK)
        rc = emit_cmp(cx, &f, v, nocase);
    return rc;
}

static int q_terms(struct cx *cx, struct json_object *body)
{
    const char *name = NULL;
    struct json_object *list = NULL;
    struct fref f;
    json_object_object_foreach(body, key, val)
    {
        if (one_of(key, common_opts))
            continue;
        if (name != NULL)
            return fail(cx, PARSING, "[terms] query does not support multiple fields");
        name = key;
        list = val;
    }
    if (name == NULL)
        return fail(cx, ILLEGAL, "[terms] requires a field name");
    if (json_object_is_type(list, json_type_object))
        return fail(cx, PARSING, "[terms] query lookup is not supported");
    if (!json_object_is_type(list, json_type_array))
        return fail(cx, PARSING, "[terms] query does not support [%s]", name);
    int rc = resolve(cx, name, &f);
    if (rc == MLR_OK)
        rc = emit_in(cx, "terms", &f, list);
    return rc;
}

static int q_ids(struct cx *cx, struct json_object *body)
{
    static const char *const ignored[] = {"type", "boost", "_name", NULL};
    static const struct fref id = {.col = "id", .keyword = 1};
    struct json_object *values = NULL;
    json_object_object_foreach(body, key, val)
    {
        if (strcmp(key, "values") == 0 && json_object_is_type(val, json_type_array))
            values = val;
        else if (strcmp(key, "values") == 0)
            return fail(cx, XCONTENT, "[ids] failed to parse field [values]");
        else if (!one_of(key, ignored))
            return fail(cx, XCONTENT, "[ids] unknown field [%s]", key);
    }
    if (values == NULL) {
        put_false(cx);
        return MLR_OK;
    }
    return emit_in(cx, "ids", &id, values);
}

/* {"query": text, "operator": "or"|"and", ...}; fuzziness and the like are accepted, ignored. */
static int match_options(struct cx *cx, struct json_object *opts, struct json_object **query,
                         int *all)
{
    static const char *const ignored[] = {
        "boost", "_name", "analyzer", "fuzziness", "prefix_length", "max_expansions",
        "fuzzy_transpositions", "fuzzy_rewrite", "lenient", "zero_terms_query",
        "auto_generate_synonyms_phrase_query", "minimum_should_match", "cutoff_frequency", NULL};
    struct json_object *v = NULL;
    int a = 0;
    json_object_object_foreach(opts, key, kv)
    {
        const char *op = json_object_get_string(kv);
        if (strcmp(key, "query") == 0)
            v = kv;
        else if (strcmp(key, "operator") == 0 && op != NULL && strcasecmp(op, "and") == 0)
            a = 1;
        else if (strcmp(key, "operator") == 0 && (op == NULL || strcasecmp(op, "or") != 0))
            return fail(cx, ILLEGAL, "[match] unknown operator [%.50s]", op ? op : "null");
        else if (strcmp(key, "operator") != 0 && !one_of(key, ignored))
            return fail(cx, PARSING, "[match] query does not support [%s]", key);
    }
    *query = v;
    *all = a;
    return MLR_OK;
}

/* Full-text predicate: mlr_match(<field>, ?, all). */
static int emit_match(struct cx *cx, const struct fref *f, struct json_object *v, int all)
{
    const char *text = json_object_get_string(v);
    size_t n = count_tokens(text);
    if (n > MAX_CLAUSES)
        return fail(cx, CLAUSES, "maxClauseCount is set to %d", MAX_CLAUSES);
    if (n == 0) {
        put_false(cx); /* zero_terms_query "none": nothing to look for matches nothing */
        return MLR_OK;
    }
    const char *e = pred_begin(cx, f);
    put(cx, "mlr_match(");
    put(cx, e);
    put(cx, cx->q->pg && f->col == NULL ? " #>> '{}'" : ""); /* jsonb to its text */
    put(cx, all ? ", ?, 1)" : ", ?, 0)");
    pred_end(cx, f);
    bind_text(cx, text);
    return MLR_OK;
}

static int q_match(struct cx *cx, struct json_object *body)
{
    const char *name = NULL;
    struct json_object *v = NULL;
    struct fref f;
    int all = 0;
    int rc = one_field(cx, "match", body, &name, &v);
    if (rc == MLR_OK && json_object_is_type(v, json_type_object))
        rc = match_options(cx, v, &v, &all);
    if (rc == MLR_OK && json_object_is_type(v, json_type_null))
        rc = fail(cx, ILLEGAL, "[match] requires query value");
    if (rc == MLR_OK && !has_type(v, T_SCALAR))
        rc = fail(cx, PARSING, "[match] unknown token [%s] after [%s]", token_name(v), name);
    if (rc == MLR_OK)
        rc = resolve(cx, name, &f);
    if (rc != MLR_OK)
        return rc;
    /* Keyword and numeric fields are not analysed: match is an exact comparison there. */
    if (f.keyword || f.numeric)
        return emit_cmp(cx, &f, v, 0);
    return emit_match(cx, &f, v, all);
}

/* One end of a range: the value (NULL = unbounded) and whether it is included. */
struct bound {
    struct json_object *v;
    int inclusive;
};

/* How each key of a range body sets the bounds; what: 0 value, 1 include flag, 2 ignored. */
static const struct range_key {
    const char *name;
    int upper;     /* sets the upper bound */
    int inclusive; /* for values: -1 keeps the include flag (from/to) */
    int what;
} range_keys[] = {
    {"gt", 0, 0, 0},   {"gte", 0, 1, 0},  {"from", 0, -1, 0},          {"lt", 1, 0, 0},
    {"lte", 1, 1, 0},  {"to", 1, -1, 0},  {"include_lower", 0, -1, 1}, {"include_upper", 1, -1, 1},
    {"boost", 0, 0, 2}, {"_name", 0, 0, 2}, {"format", 0, 0, 2},       {"time_zone", 0, 0, 2},
    {"relation", 0, 0, 2},
};

/* Applies the keys of @opts in order, as OpenSearch's parser does (gt then include_lower...). */
static int range_options(struct cx *cx, struct json_object *opts, struct bound b[2])
{
    json_object_object_foreach(opts, key, kv)
    {
        const struct range_key *k = NULL;
        for (size_t i = 0; i < sizeof(range_keys) / sizeof(range_keys[0]) && k == NULL; i++)
            if (strcmp(range_keys[i].name, key) == 0)
                k = &range_keys[i];
        if (k == NULL || (k->what == 0 && !has_type(kv, T_SCALAR | T(json_type_null))) ||
            (k->what == 1 && !json_object_is_type(kv, json_type_boolean)))
            return fail(cx, PARSING, "[range] query does not support [%s]", key);
        if (k->what == 0) {
            b[k->upper].v = kv;
            if (k->inclusive >= 0)
                b[k->upper].inclusive = k->inclusive;
        } else if (k->what == 1) {
            b[k->upper].inclusive = json_object_get_boolean(kv);
        }
    }
    return MLR_OK;
}

/* "<e> IS NOT NULL" for a field's value: in PostgreSQL a document's JSON null is a jsonb value,
 * not SQL NULL (SQLite's json_each() gives NULL for it). */
static void put_not_null(struct cx *cx, const struct fref *f, const char *e)
{
    put(cx, e);
    put(cx, cx->q->pg && f->col == NULL ? " <> 'null'::jsonb" : " IS NOT NULL");
}

static int emit_range(struct cx *cx, const struct fref *f, const struct bound b[2])
{
    static const char *const ops[2][2] = {{" > ?", " >= ?"}, {" < ?", " <= ?"}};
    static const char *const pg_ops[2][2] = {{" > ", " >= "}, {" < ", " <= "}};
    struct json_object *vals[2] = {NULL, NULL};
    int rc = MLR_OK;
    for (int i = 0; i < 2 && rc == MLR_OK; i++)
        if (b[i].v != NULL)
            rc = value_for(cx, f, b[i].v, &vals[i]);
    if (rc == MLR_OK) {
        const char *e = pred_begin(cx, f);
        put(cx, "(");
        if (b[0].v == NULL && b[1].v == NULL)
            put_not_null(cx, f, e); /* no bound at all: documents that have the field */
        for (int i = 0; i < 2; i++) {
            if (b[i].v == NULL)
                continue;
            put(cx, i == 1 && b[0].v != NULL ? " AND " : "");
            if (cx->q->pg) {
                pg_compare(cx, f, e, pg_ops[i][b[i].inclusive], vals[i], 0);
                continue;
            }
            put(cx, e);
            put(cx, ops[i][b[i].inclusive]);
            bind_json(cx, vals[i]);
        }
        put(cx, ")");
        pred_end(cx, f);
    }
    json_object_put(vals[0]);
    json_object_put(vals[1]);
    return rc;
}

static int q_range(struct cx *cx, struct json_object *body)
{
    const char *name = NULL;
    struct json_object *v = NULL;
    struct bound b[2] = {{NULL, 1}, {NULL, 1}};
    struct fref f;
    int rc = one_field(cx, "range", body, &name, &v);
    if (rc == MLR_OK && !json_object_is_type(v, json_type_object))
        rc = fail(cx, PARSING, "[range] query does not support [%s]", name);
    if (rc == MLR_OK)
        rc = range_options(cx, v, b);
    if (rc == MLR_OK)
        rc = resolve(cx, name, &f);
    if (rc == MLR_OK)
        rc = emit_range(cx, &f, b);
    return rc;
}

static int q_exists(struct cx *cx, struct json_object *body)
{
    const char *name = NULL;
    struct fref f;
    json_object_object_foreach(body, key, val)
    {
        if (strcmp(key, "field") == 0 && json_object_is_type(val, json_type_string))
            name = json_object_get_string(val);
        else if (!one_of(key, common_opts))
            return fail(cx, PARSING, "[exists] query does not support [%s]", key);
    }
    if (name == NULL)
        return fail(cx, PARSING, "[exists] must be provided with a [field]");
    int rc = resolve(cx, name, &f);
    if (rc == MLR_OK) {
        put_not_null(cx, &f, pred_begin(cx, &f));
        pred_end(cx, &f);
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Compound queries                                                                           */
/* ------------------------------------------------------------------------------------------ */

static int compile_query(struct cx *cx, struct json_object *v);

/*
 * Emits each clause of @v (one query object or an array of them) as pre<clause>post, joined by
 * @sep. Every AND_GROUP clauses are parenthesised, because SQLite parses a flat chain into a tree
 * as deep as the chain is long and refuses trees deeper than 1000.
 */
static int emit_clauses(struct cx *cx, struct json_object *v, const char *pre, const char *post,
                        const char *sep, int *first)
{
    int array = json_object_is_type(v, json_type_array);
    size_t n = v == NULL ? 0 : array ? json_object_array_length(v) : 1;
    for (size_t i = 0; i < n; i++) {
        put(cx, *first ? "" : sep);
        put(cx, i % AND_GROUP == 0 ? "(" : "");
        *first = 0;
        put(cx, pre);
        int rc = compile_query(cx, array ? json_object_array_get_idx(v, i) : v);
        if (rc != MLR_OK)
            return rc;
        put(cx, post);
        put(cx, i % AND_GROUP == AND_GROUP - 1 || i == n - 1 ? ")" : "");
    }
    return MLR_OK;
}

enum occur { MUST = 0, FILTER, SHOULD, MUST_NOT, NOCCUR };

/* The clauses of a bool query. */
struct bool_parts {
    struct json_object *occ[NOCCUR]; /* a query object or an array of them; NULL when absent */
    int n[NOCCUR];                   /* clauses in each */
    struct json_object *msm;         /* minimum_should_match, NULL when absent */
};

static int bool_parse(struct cx *cx, struct json_object *body, struct bool_parts *p)
{
    static const char *const occ_names[NOCCUR + 1] = {"must", "filter", "should", "must_not",
                                                       NULL};
    static const char *const ignored[] = {"boost", "_name", "adjust_pure_negative", NULL};
    memset(p, 0, sizeof(*p));
    json_object_object_foreach(body, key, val)
    {
        int o = 0;
        while (o < NOCCUR && strcmp(occ_names[o], key) != 0)
            o++;
        if (o < NOCCUR && has_type(val, T(json_type_object) | T(json_type_array))) {
            p->occ[o] = val;
            p->n[o] = json_object_is_type(val, json_type_array)
                          ? (int)json_object_array_length(val) : 1;
        } else if (strcmp(key, "minimum_should_match") == 0 &&
                   has_type(val, T(json_type_int) | T(json_type_string))) {
            p->msm = val;
        } else if (!one_of(key, ignored)) {
            return fail(cx, PARSING, "[bool] query does not support [%s]", key);
        }
    }
    return MLR_OK;
}

/*
 * minimum_should_match: an integer or "N", negative meaning "all but N", or a percentage "P%"
 * of the should clauses (rounded down; negative as above), as OpenSearch's
 * Queries.calculateMinShouldMatch computes it.
 */
static int parse_msm(struct cx *cx, struct json_object *v, int nshould, int *out)
{
    const char *s = json_object_get_string(v);
    char *end;
    errno = 0;
    long long k = strtoll(s, &end, 10);
    int pct = *end == '%' && end[1] == '\0';
    if (end == s || errno != 0 || (*end != '\0' && !pct) || k > MAX_CLAUSES * 100LL ||
        k < -MAX_CLAUSES * 100LL)
        return fail(cx, ILLEGAL, "[bool] unsupported minimum_should_match [%.50s]", s);
    long long calc = pct ? nshould * k / 100 : k;
    long long r = calc < 0 ? nshould + calc : calc;
    *out = r < 0 ? 0 : (int)r;
    return MLR_OK;
}

/* Parses should clauses only to refuse bad ones, then drops them: they do not filter. */
static int validate_only(struct cx *cx, struct json_object *v)
{
    size_t len = cx->q->where.len, nvals = cx->q->nvals;
    int first = 1;
    int rc = emit_clauses(cx, v, "", "", " ", &first);
    rollback(cx, len, nvals);
    return rc;
}

static int emit_should(struct cx *cx, const struct bool_parts *p, int msm, int *first)
{
    int n = p->n[SHOULD], inner = 1, rc;
    if (msm == 0)
        return validate_only(cx, p->occ[SHOULD]);
    put(cx, *first ? "(" : " AND (");
    *first = 0;
    if (msm > n) {
        put_false(cx); /* more required than there are: nothing matches */
        rc = validate_only(cx, p->occ[SHOULD]);
    } else if (msm == 1 || msm == n) {
        rc = emit_clauses(cx, p->occ[SHOULD], "(", ")", msm == 1 ? " OR " : " AND ", &inner);
    } else {
        char tail[32];
        put(cx, "(");
        /* Each clause counts 1 when true; PostgreSQL casts its boolean to do so. */
        rc = emit_clauses(cx, p->occ[SHOULD], "coalesce((",
                          cx->q->pg ? ")::int, 0)" : "), 0)", " + ", &inner);
        snprintf(tail, sizeof(tail), ") >= %d", msm);
        put(cx, tail);
    }
    put(cx, ")");
    return rc;
}

static int q_bool(struct cx *cx, struct json_object *body)
{
    struct bool_parts p;
    int msm = 0, first = 1;
    int rc = bool_parse(cx, body, &p);
    if (rc == MLR_OK && p.msm != NULL)
        rc = parse_msm(cx, p.msm, p.n[SHOULD], &msm);
    if (rc != MLR_OK)
        return rc;
    /* Without a required clause, a bool needs at least one should to match (Lucene). */
    if (p.n[MUST] + p.n[FILTER] == 0 && p.n[SHOULD] > 0 && msm < 1)
        msm = 1;
    /* A top-level bool of filter and must_not clauses only does not score: _score 0.0. */
    if (cx->depth == 1 && p.n[MUST] + p.n[SHOULD] == 0 && p.n[FILTER] + p.n[MUST_NOT] > 0)
        cx->q->score = 0.0;
    put(cx, "(");
    rc = emit_clauses(cx, p.occ[MUST], "(", ")", " AND ", &first);
    if (rc == MLR_OK)
        rc = emit_clauses(cx, p.occ[FILTER], "(", ")", " AND ", &first);
    if (rc == MLR_OK)
        rc = emit_clauses(cx, p.occ[MUST_NOT], "NOT coalesce((",
                          cx->q->pg ? "), FALSE)" : "), 0)", " AND ", &first);
    if (rc == MLR_OK)
        rc = emit_should(cx, &p, msm, &first);
    if (first)
        put_true(cx);
    put(cx, ")");
    return rc;
}

static int q_constant_score(struct cx *cx, struct json_object *body)
{
    struct json_object *filter = NULL;
    json_object_object_foreach(body, key, val)
    {
        if (strcmp(key, "filter") == 0)
            filter = val;
        else if (!one_of(key, common_opts))
            return fail(cx, PARSING, "[constant_score] query does not support [%s]", key);
    }
    if (filter == NULL)
        return fail(cx, PARSING, "[constant_score] requires a 'filter' element");
    put(cx, "(");
    int rc = compile_query(cx, filter);
    put(cx, ")");
    return rc;
}

static const struct query_kind {
    const char *name;
    int (*compile)(struct cx *cx, struct json_object *body); /* appends one predicate */
} query_kinds[] = {
    {"match_all", q_match_all}, {"match_none", q_match_none},
    {"ids", q_ids},             {"term", q_term},
    {"terms", q_terms},         {"match", q_match},
    {"range", q_range},         {"exists", q_exists},
    {"bool", q_bool},           {"constant_score", q_constant_score},
};

/* Compiles one query object {"<name>": {...}} into a predicate appended to the WHERE text. */
static int compile_query(struct cx *cx, struct json_object *v)
{
    const struct query_kind *k = NULL;
    assert(cx->depth >= 0 && cx->depth <= MAX_DEPTH);
    if (!json_object_is_type(v, json_type_object))
        return fail(cx, PARSING, "[_na] query malformed, must start with start_object");
    struct json_object_iterator it = json_object_iter_begin(v), end = json_object_iter_end(v);
    if (json_object_iter_equal(&it, &end))
        return fail(cx, PARSING, "query malformed, empty clause found");
    const char *name = json_object_iter_peek_name(&it);
    struct json_object *body = json_object_iter_peek_value(&it);
    for (size_t i = 0; i < sizeof(query_kinds) / sizeof(query_kinds[0]) && k == NULL; i++)
        if (strcmp(query_kinds[i].name, name) == 0)
            k = &query_kinds[i];
    if (k == NULL)
        return fail(cx, PARSING, "unknown query [%.200s]", name);
    if (json_object_object_length(v) > 1)
        return fail(cx, PARSING, "[%s] malformed query, expected [END_OBJECT] but found "
                                 "[FIELD_NAME]", name);
    if (!json_object_is_type(body, json_type_object))
        return fail(cx, PARSING, "[%s] query malformed, no start_object after query name", name);
    if (cx->depth >= MAX_DEPTH)
        return fail(cx, ILLEGAL, "query is nested too deeply: more than [%d] levels", MAX_DEPTH);
    if (++cx->clauses > MAX_CLAUSES)
        return fail(cx, CLAUSES, "maxClauseCount is set to %d", MAX_CLAUSES);
    cx->depth++;
    int rc = k->compile(cx, body);
    cx->depth--;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Sort                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* "asc" | "desc", any case. */
static int order_string(struct cx *cx, struct json_object *v, int *desc)
{
    const char *s = json_object_get_string(v);
    if (!json_object_is_type(v, json_type_string) ||
        (strcasecmp(s, "asc") != 0 && strcasecmp(s, "desc") != 0))
        return fail(cx, ILLEGAL, "Unknown SortOrder [%.50s]", s ? s : "null");
    *desc = strcasecmp(s, "desc") == 0;
    return MLR_OK;
}

/* "asc" | "desc" | {"order": "asc"|"desc", "missing": ..., ...} (the extras are ignored). */
static int sort_order(struct cx *cx, struct json_object *spec, int *desc)
{
    static const char *const ignored[] = {"missing", "unmapped_type", "mode", "numeric_type",
                                          "format", NULL};
    if (!json_object_is_type(spec, json_type_object))
        return order_string(cx, spec, desc);
    json_object_object_foreach(spec, key, val)
    {
        int rc = MLR_OK;
        if (strcmp(key, "order") == 0)
            rc = order_string(cx, val, desc);
        else if (!one_of(key, ignored))
            rc = fail(cx, XCONTENT, "[field_sort] unknown field [%s]", key);
        if (rc != MLR_OK)
            return rc;
    }
    return MLR_OK;
}

/*
 * PostgreSQL: the sort expression of @f, as a new string. Text columns sort bytewise as in
 * SQLite. A document path sorts by its jsonb value (a JSON null counts as missing); jsonb has no
 * single SQL type to hand back, so the hit's "sort" value is read from its JSON text (*@json).
 */
static char *pg_sort_expr(const struct fref *f, unsigned char *json)
{
    *json = f->col == NULL;
    if (f->col != NULL)
        return f->numeric || strcmp(f->col, "rowid") == 0
                   ? mlr_xstrdup(f->col)
                   : mlr_xasprintf("%s COLLATE \"C\"", f->col);
    struct mlr_buf b;
    mlr_buf_init(&b, 0);
    mlr_buf_puts(&b, "nullif(doc::jsonb #> '{");
    for (const char *p = f->path + 2; *p != '\0'; p++) /* after "$.", dots become commas */
        mlr_buf_append(&b, *p == '.' ? "," : p, 1);
    mlr_buf_puts(&b, "}', 'null'::jsonb)");
    return b.data; /* the buffer's bytes become the caller's */
}

/* Adds one client sort key: to ORDER BY and to the expressions of each hit's "sort" array. */
static int sort_key(struct cx *cx, const char *name, struct json_object *spec)
{
    struct store__query *q = cx->q;
    int score = strcmp(name, "_score") == 0, desc = score;
    struct fref f;
    int rc = spec != NULL ? sort_order(cx, spec, &desc) : MLR_OK;
    if (rc == MLR_OK && q->nsort == MAX_SORT)
        rc = fail(cx, ILLEGAL, "too many sort keys: at most [%d] are supported", MAX_SORT);
    if (rc == MLR_OK && !score && !valid_name(name))
        rc = fail(cx, SHARD, "No mapping found for [%.200s] in order to sort on", name);
    if (rc != MLR_OK || score) {
        if (rc == MLR_OK) /* every hit scores the same: nothing to order by */
            q->sort_exprs[q->nsort++] = NULL;
        return rc;
    }
    if (strcmp(name, "_doc") == 0)
        f = (struct fref){.col = "rowid"};
    else
        rc = resolve(cx, name, &f);
    if (rc != MLR_OK)
        return rc;
    char *expr = q->pg ? pg_sort_expr(&f, &q->sort_json[q->nsort])
                 : f.col != NULL ? mlr_xstrdup(f.col)
                                 : mlr_xasprintf("json_extract(doc, '%s')", f.path);
    q->sort_exprs[q->nsort++] = expr; /* the query owns it */
    put_order(cx, q->order.len ? ", " : "");
    put_order(cx, expr);
    /* Missing values last, either way: SQLite's NULL sorts lowest, PostgreSQL's highest. */
    put_order(cx, desc ? q->pg ? " DESC NULLS LAST" : " DESC" : " ASC NULLS LAST");
    return MLR_OK;
}

static int sort_one(struct cx *cx, struct json_object *el)
{
    if (json_object_is_type(el, json_type_string))
        return sort_key(cx, json_object_get_string(el), NULL);
    if (!json_object_is_type(el, json_type_object))
        return fail(cx, PARSING, "malformed sort format, within the sort array, an object, or an "
                                 "actual string are allowed");
    json_object_object_foreach(el, key, val)
    {
        int rc = sort_key(cx, key, val);
        if (rc != MLR_OK)
            return rc;
    }
    return MLR_OK;
}

static int parse_sort(struct cx *cx, struct json_object *v)
{
    cx->q->sort_exprs = mlr_xcalloc(MAX_SORT, sizeof(char *));
    cx->q->sort_json = mlr_xcalloc(MAX_SORT, 1);
    if (!json_object_is_type(v, json_type_array))
        return sort_one(cx, v);
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        int rc = sort_one(cx, json_object_array_get_idx(v, i));
        if (rc != MLR_OK)
            return rc;
    }
    return MLR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* _source, paging, totals: the top-level keys of a body                                      */
/* ------------------------------------------------------------------------------------------ */

/* Appends a pattern, or each pattern of an array, to @list. */
static int source_list(struct cx *cx, const char *key, struct json_object *v, char ***list,
                       size_t *n)
{
    int array = json_object_is_type(v, json_type_array);
    size_t count = array ? json_object_array_length(v) : 1;
    for (size_t i = 0; i < count; i++) {
        struct json_object *el = array ? json_object_array_get_idx(v, i) : v;
        if (!json_object_is_type(el, json_type_string))
            return fail(cx, PARSING, "Unknown key for a %s in [%s].", token_name(el), key);
        if (cx->q->nincludes + cx->q->nexcludes >= MAX_PATTERNS)
            return fail(cx, ILLEGAL, "too many _source patterns: at most [%d] are supported",
                        MAX_PATTERNS);
        *list = mlr_xrealloc(*list, (*n + 1) * sizeof(char *));
        (*list)[(*n)++] = mlr_xstrdup(json_object_get_string(el));
    }
    return MLR_OK;
}

static int parse_source(struct cx *cx, struct json_object *v)
{
    struct store__query *q = cx->q;
    if (json_object_is_type(v, json_type_boolean)) {
        q->source = json_object_get_boolean(v);
        return MLR_OK;
    }
    if (!json_object_is_type(v, json_type_object))
        return source_list(cx, "_source", v, &q->includes, &q->nincludes);
    json_object_object_foreach(v, key, val)
    {
        int rc;
        if (strcmp(key, "includes") == 0 || strcmp(key, "include") == 0)
            rc = source_list(cx, key, val, &q->includes, &q->nincludes);
        else if (strcmp(key, "excludes") == 0 || strcmp(key, "exclude") == 0)
            rc = source_list(cx, key, val, &q->excludes, &q->nexcludes);
        else
            rc = fail(cx, PARSING, "Unknown key for a %s in [%s].", token_name(val), key);
        if (rc != MLR_OK)
            return rc;
    }
    return MLR_OK;
}

/* An int as OpenSearch's parser reads one: numbers (truncated) or numeric strings. */
static int parse_int(struct cx *cx, const char *key, struct json_object *v, int64_t *out)
{
    int64_t x = 0;
    int ok = 1;
    if (json_object_is_type(v, json_type_string)) {
        char *end;
        const char *s = json_object_get_string(v);
        errno = 0;
        x = strtoll(s, &end, 10);
        ok = *s != '\0' && *end == '\0' && errno == 0;
    } else if (json_object_is_type(v, json_type_double)) {
        double d = json_object_get_double(v);
        ok = isfinite(d) && fabs(d) < 1e15;
        x = ok ? (int64_t)d : 0;
    } else {
        x = json_object_get_int64(v);
    }
    if (!ok)
        return fail(cx, XCONTENT, "[search_source] failed to parse field [%s]", key);
    if (x < INT32_MIN || x > INT32_MAX)
        return fail(cx, XCONTENT, "Numeric value (%.50s) out of range of int",
                    json_object_get_string(v));
    *out = x;
    return MLR_OK;
}

static int parse_from(struct cx *cx, struct json_object *v)
{
    int rc = parse_int(cx, "from", v, &cx->q->from);
    if (rc == MLR_OK && cx->q->from < 0)
        rc = fail(cx, ILLEGAL, "[from] parameter cannot be negative, found [%lld]",
                  (long long)cx->q->from);
    return rc;
}

static int parse_size(struct cx *cx, struct json_object *v)
{
    int rc = parse_int(cx, "size", v, &cx->q->size);
    if (rc == MLR_OK && cx->q->size < 0)
        rc = fail(cx, ILLEGAL, "[size] parameter cannot be negative, found [%lld]",
                  (long long)cx->q->size);
    return rc;
}

static int parse_track_total(struct cx *cx, struct json_object *v)
{
    int64_t n = 0;
    if (json_object_is_type(v, json_type_boolean)) {
        cx->q->track_total = json_object_get_boolean(v) ? INT64_MAX : -1;
        return MLR_OK;
    }
    int rc = parse_int(cx, "track_total_hits", v, &n);
    if (rc == MLR_OK && n < -1)
        rc = fail(cx, ILLEGAL, "[track_total_hits] parameter must be positive or equals to -1, "
                               "got %lld", (long long)n);
    if (rc == MLR_OK)
        cx->q->track_total = n;
    return rc;
}

static int parse_query(struct cx *cx, struct json_object *v)
{
    return compile_query(cx, v);
}

static const struct body_key {
    const char *name;
    unsigned types;                                     /* accepted JSON types, T() bits */
    int (*parse)(struct cx *cx, struct json_object *v); /* NULL: accepted and ignored */
} body_keys[] = {
    {"query", T(json_type_object), parse_query},
    {"from", T_NUMBER | T(json_type_string), parse_from},
    {"size", T_NUMBER | T(json_type_string), parse_size},
    {"sort", T(json_type_object) | T(json_type_array) | T(json_type_string), parse_sort},
    {"_source", T_SCALAR | T(json_type_object) | T(json_type_array), parse_source},
    {"track_total_hits", T(json_type_boolean) | T(json_type_int), parse_track_total},
    {"version", T(json_type_boolean), NULL},
    {"seq_no_primary_term", T(json_type_boolean), NULL},
    {"explain", T(json_type_boolean), NULL},
    {"track_scores", T(json_type_boolean), NULL},
    {"profile", T(json_type_boolean), NULL},
    {"timeout", T(json_type_string), NULL},
};

/* Search features OpenSearch has and this service does not: refused rather than ignored. */
static const char *const unsupported_keys[] = {
    "aggs", "aggregations", "post_filter", "search_after", "highlight", "collapse", "suggest",
    "rescore", "script_fields", "stored_fields", "docvalue_fields", "fields", "min_score",
    "terminate_after", "indices_boost", "slice", "pit", "ext", "stats", NULL};

static int parse_body_key(struct cx *cx, const char *key, struct json_object *v)
{
    for (size_t i = 0; i < sizeof(body_keys) / sizeof(body_keys[0]); i++) {
        const struct body_key *k = &body_keys[i];
        if (strcmp(k->name, key) != 0 || !has_type(v, k->types))
            continue;
        return k->parse != NULL ? k->parse(cx, v) : MLR_OK;
    }
    if (one_of(key, unsupported_keys))
        return fail(cx, ILLEGAL, "[%s] is not supported by this service's _search", key);
    return fail(cx, PARSING, "Unknown key for a %s in [%.200s].", token_name(v), key);
}

static void query_init(struct store__query *q)
{
    memset(q, 0, sizeof(*q));
    mlr_buf_init(&q->where, MAX_SQL);
    mlr_buf_init(&q->order, MAX_SQL);
    q->size = 10;
    q->track_total = MAX_TRACK;
    q->score = 1.0;
    q->source = 1;
}

void store__query_cleanup(struct store__query *q)
{
    for (size_t i = 0; i < q->nvals; i++)
        free(q->vals[i].text);
    free(q->vals);
    for (size_t i = 0; q->sort_exprs != NULL && i < q->nsort; i++)
        free(q->sort_exprs[i]);
    free(q->sort_exprs);
    free(q->sort_json);
    for (size_t i = 0; i < q->nincludes; i++)
        free(q->includes[i]);
    free(q->includes);
    for (size_t i = 0; i < q->nexcludes; i++)
        free(q->excludes[i]);
    free(q->excludes);
    mlr_buf_cleanup(&q->where);
    mlr_buf_cleanup(&q->order);
    query_init(q);
}

/* After the body: the result window, the default query and order, the id tiebreaker. */
static int finish(struct cx *cx)
{
    struct store__query *q = cx->q;
    if (q->from + q->size > MAX_WINDOW)
        return fail(cx, ILLEGAL, "Result window is too large, from + size must be less than or "
                                 "equal to: [%d] but was [%lld]. See the scroll api for a more "
                                 "efficient way to request large data sets. This limit can be set "
                                 "by changing the [index.max_result_window] index level setting.",
                    MAX_WINDOW, (long long)(q->from + q->size));
    if (q->where.len == 0)
        put_true(cx);
    put_order(cx, q->order.len ? ", " : "");
    put_order(cx, cx->ix->default_order ? cx->ix->default_order : "rowid");
    put_order(cx, ", id");
    if (cx->overflow)
        return fail(cx, ILLEGAL, "the query is too large: its SQL exceeds [%u] bytes", MAX_SQL);
    return MLR_OK;
}

int store__search_compile(const struct store__index *ix, struct json_object *body,
                          struct store__query *out, char *err, size_t errlen)
{
    return store__search_compile_dialect(ix, body, 0, out, err, errlen);
}

int store__search_compile_dialect(const struct store__index *ix, struct json_object *body, int pg,
                                  struct store__query *out, char *err, size_t errlen)
{
    struct cx cx = {.ix = ix, .q = out, .err = err, .errlen = errlen};
    int rc = MLR_OK;
    assert(ix != NULL && ix->table != NULL && out != NULL && err != NULL && errlen > 0);
    query_init(out);
    out->pg = pg != 0;
    if (body != NULL && !json_object_is_type(body, json_type_object))
        rc = fail(&cx, PARSING, "Expected [START_OBJECT] but found [%s]", token_name(body));
    if (rc == MLR_OK && body != NULL) {
        json_object_object_foreach(body, key, val)
        {
            rc = parse_body_key(&cx, key, val);
            if (rc != MLR_OK)
                break;
        }
    }
    if (rc == MLR_OK)
        rc = finish(&cx);
    if (rc != MLR_OK) {
        const char *type = out->err_type;
        store__query_cleanup(out);
        out->err_type = type;
        out->pg = pg != 0;
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Running                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* The hits SELECT: id, doc, _version, _seq_no, then one column per client sort key. */
static void build_select(const struct store__index *ix, const struct store__query *q, int meta,
                         struct mlr_buf *b)
{
    mlr_buf_printf(b, "SELECT id, doc, %s", meta ? "version, seq_no" : "1, 0");
    /* PostgreSQL resolves a bare ORDER BY name against the select list first, and two select
     * columns of one name (id and a sort key on _id, or one column sorted twice) make it
     * ambiguous: its sort columns get names of their own. */
    for (size_t i = 0; i < q->nsort; i++)
        if (q->sort_exprs[i] != NULL && q->pg)
            mlr_buf_printf(b, ", %s AS sort%zu", q->sort_exprs[i], i);
        else if (q->sort_exprs[i] != NULL)
            mlr_buf_printf(b, ", %s", q->sort_exprs[i]);
    mlr_buf_printf(b, " FROM %s WHERE %s ORDER BY %s LIMIT ? OFFSET ?", ix->table, q->where.data,
                   q->order.data);
}

char *store__search_sql(const struct store__index *ix, const struct store__query *q)
{
    struct mlr_buf b;
    assert(q->where.data != NULL && q->order.data != NULL);
    mlr_buf_init(&b, 0);
    build_select(ix, q, 1, &b);
    return b.data; /* the caller now owns the bytes */
}

static int bind_vals(struct store__stmt *st, const struct store__query *q)
{
    int rc = SQLITE_OK;
    for (size_t i = 0; i < q->nvals && rc == SQLITE_OK; i++) {
        const struct store__val *v = &q->vals[i];
        int idx = (int)i + 1;
        if (v->kind == STORE__VAL_TEXT)
            rc = store__bind_text(st, idx, v->text);
        else if (v->kind == STORE__VAL_INT)
            rc = store__bind_int(st, idx, v->i);
        else
            rc = store__bind_real(st, idx, v->d);
    }
    return store__err(rc);
}

static int prepare(struct store__conn *c, const char *sql, const struct store__query *q,
                   struct store__stmt **out)
{
    struct store__stmt *st = NULL;
    int rc = store__prepare(c, sql, &st);
    if (rc == MLR_OK)
        rc = bind_vals(st, q);
    if (rc != MLR_OK) {
        if (st == NULL)
            mlr_log(MLR_LOG_ERROR, "store", "search: %s", store__errmsg(c));
        store__finalize(st);
        return rc;
    }
    *out = st;
    return MLR_OK;
}

/* Counts matches up to q->track_total (+1, to tell "exactly" from "at least"). */
static int count_hits(struct store__conn *c, const struct store__index *ix,
                      const struct store__query *q, int64_t *total, int *gte)
{
    int exact = q->track_total == INT64_MAX;
    assert(q->track_total >= 0);
    char *sql = exact ? mlr_xasprintf("SELECT count(*) FROM %s WHERE %s", ix->table,
                                      q->where.data)
                      : mlr_xasprintf("SELECT count(*) FROM (SELECT 1 FROM %s WHERE %s LIMIT ?)%s",
                                      ix->table, q->where.data, q->pg ? " AS m" : "");
    struct store__stmt *st = NULL;
    int rc = prepare(c, sql, q, &st);
    if (rc == MLR_OK && !exact)
        rc = store__err(store__bind_int(st, (int)q->nvals + 1, q->track_total + 1));
    int step = rc == MLR_OK ? store__step(st) : SQLITE_ERROR;
    if (rc == MLR_OK && step != SQLITE_ROW)
        rc = store__err(step) == MLR_OK ? MLR_EIO : store__err(step);
    if (rc == MLR_OK) {
        int64_t n = store__col_int(st, 0);
        *gte = n > q->track_total;
        *total = *gte ? q->track_total : n;
    }
    store__finalize(st);
    free(sql);
    return rc;
}

/* Prepares the hits SELECT, reading _version/_seq_no when the table has them, else 1 and 0. */
static int prepare_hits(struct store__conn *c, const struct store__index *ix,
                        const struct store__query *q, struct store__stmt **out)
{
    struct mlr_buf sql;
    struct store__stmt *st = NULL;
    int prc = SQLITE_ERROR;
    mlr_buf_init(&sql, 0);
    for (int meta = 1; meta >= 0; meta--) {
        mlr_buf_reset(&sql);
        build_select(ix, q, meta, &sql);
        prc = store__prepare(c, sql.data, &st);
        if (prc == MLR_OK || strstr(store__errmsg(c), "no such column") == NULL)
            break;
    }
    mlr_buf_cleanup(&sql);
    if (prc != MLR_OK) {
        mlr_log(MLR_LOG_ERROR, "store", "search: %s", store__errmsg(c));
        return prc;
    }
    int rc = bind_vals(st, q);
    if (rc == MLR_OK)
        rc = store__err(store__bind_int(st, (int)q->nvals + 1, q->size));
    if (rc == MLR_OK)
        rc = store__err(store__bind_int(st, (int)q->nvals + 2, q->from));
    if (rc != MLR_OK) {
        store__finalize(st);
        return rc;
    }
    *out = st;
    return MLR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Hits: _source with credentials removed and include/exclude filtering                       */
/* ------------------------------------------------------------------------------------------ */

/* Glob match of the whole of @s against @p, where '*' matches any run of bytes (dots too).
 * Linear backtracking over the last star only, so hostile patterns cannot make it exponential. */
static int glob(const char *p, const char *s)
{
    const char *star = NULL, *retry = NULL;
    while (*s != '\0') {
        if (*p == '*') {
            star = p++;
            retry = s;
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star != NULL) {
            p = star + 1;
            s = ++retry;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

static int glob_any(char *const *patterns, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (glob(patterns[i], path))
            return 1;
    return 0;
}

static int filter_value(const struct store__query *q, struct json_object *v, struct mlr_buf *path,
                        int inc, struct json_object **out);

/* Keeps the members of @obj whose dotted path is included and not excluded. */
static struct json_object *filter_object(const struct store__query *q, struct json_object *obj,
                                         struct mlr_buf *path, int inc)
{
    struct json_object *out = json_object_new_object();
    size_t base = path->len;
    assert(json_object_is_type(obj, json_type_object));
    json_object_object_foreach(obj, key, val)
    {
        struct json_object *kept = NULL;
        mlr_buf_puts(path, base ? "." : "");
        mlr_buf_puts(path, key);
        if (!glob_any(q->excludes, q->nexcludes, path->data) &&
            filter_value(q, val, path, inc || glob_any(q->includes, q->nincludes, path->data),
                         &kept))
            json_object_object_add(out, key, kept); /* consumes kept */
        path->len = base;
        path->data[base] = '\0';
    }
    return out;
}

/* Elements of an array share the array's path, as in OpenSearch. */
static struct json_object *filter_array(const struct store__query *q, struct json_object *arr,
                                        struct mlr_buf *path, int inc)
{
    size_t n = json_object_array_length(arr);
    struct json_object *out = json_object_new_array_ext((int)n);
    for (size_t i = 0; i < n; i++) {
        struct json_object *kept = NULL;
        if (filter_value(q, json_object_array_get_idx(arr, i), path, inc, &kept))
            json_object_array_add(out, kept); /* consumes kept */
    }
    return out;
}

/*
 * Filters @v found at @path, @inc telling whether an include pattern already covers it. Returns 1
 * with the kept value (a new reference; NULL is JSON null) in *@out, or 0 to drop it: a scalar not
 * included, or a container that nothing inside it was included from.
 */
static int filter_value(const struct store__query *q, struct json_object *v, struct mlr_buf *path,
                        int inc, struct json_object **out)
{
    struct json_object *r = NULL;
    int keep = inc;
    if (json_object_is_type(v, json_type_object)) {
        r = filter_object(q, v, path, inc);
        keep = inc || json_object_object_length(r) > 0;
    } else if (json_object_is_type(v, json_type_array)) {
        r = filter_array(q, v, path, inc);
        keep = inc || json_object_array_length(r) > 0;
    } else if (inc) {
        r = json_object_get(v); /* scalars are shared with the parsed document */
    }
    if (!keep) {
        json_object_put(r);
        return 0;
    }
    *out = r;
    return 1;
}

/* The hit's _source: the stored document without secrets, then the request's filtering. */
static struct json_object *source_new(const struct store__query *q, const char *text)
{
    struct json_object *doc = text != NULL ? json_tokener_parse(text) : NULL;
    if (!json_object_is_type(doc, json_type_object)) {
        mlr_log(MLR_LOG_WARN, "store", "search: skipping an unreadable stored document");
        json_object_put(doc);
        return json_object_new_object();
    }
    json_object_object_del(doc, "credential");
    struct json_object *conn = json_object_object_get(doc, "connector");
    if (json_object_is_type(conn, json_type_object))
        json_object_object_del(conn, "credential");
    if (q->nincludes == 0 && q->nexcludes == 0)
        return doc;
    struct mlr_buf path;
    mlr_buf_init(&path, 0);
    struct json_object *out = filter_object(q, doc, &path, q->nincludes == 0);
    mlr_buf_cleanup(&path);
    json_object_put(doc);
    return out;
}

static struct json_object *column_json(struct store__stmt *st, int i)
{
    switch (store__col_type(st, i)) {
    case SQLITE_INTEGER:
        return json_object_new_int64(store__col_int(st, i));
    case SQLITE_FLOAT:
        return json_object_new_double(store__col_real(st, i));
    case SQLITE_NULL:
        return NULL;
    default:
        return json_object_new_string(store__col_text(st, i));
    }
}

/* PostgreSQL: a jsonb sort value as SQLite's json_extract() gives it: a scalar as itself, an
 * object or array as its JSON text (compact, though in jsonb's key order). */
static struct json_object *json_sort_value(const char *text)
{
    struct json_object *v = json_tokener_parse(text);
    if (json_object_is_type(v, json_type_object) || json_object_is_type(v, json_type_array)) {
        struct json_object *s =
            json_object_new_string(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
        json_object_put(v);
        return s;
    }
    return v;
}

/* The values a hit was sorted by, in the order of the client's sort keys. */
static struct json_object *sort_values(const struct store__query *q, struct store__stmt *st)
{
    struct json_object *arr = json_object_new_array();
    int col = 4; /* after id, doc, version, seq_no */
    for (size_t i = 0; i < q->nsort; i++) {
        struct json_object *v = NULL;
        if (q->sort_exprs[i] == NULL)
            v = json_object_new_double(q->score);
        else if (q->sort_json[i] && !store__col_null(st, col))
            v = json_sort_value(store__col_text(st, col++));
        else
            v = column_json(st, col++);
        json_object_array_add(arr, v); /* consumes v */
    }
    return arr;
}

static struct json_object *hit_new(const struct store__index *ix, const struct store__query *q,
                                   struct store__stmt *st)
{
    struct json_object *h = json_object_new_object();
    /* Every json_object_object_add() below consumes its value. */
    json_object_object_add(h, "_index", json_object_new_string(ix->os_index));
    json_object_object_add(h, "_id", json_object_new_string(store__col_text(st, 0)));
    json_object_object_add(h, "_version", json_object_new_int64(store__col_int(st, 2)));
    json_object_object_add(h, "_seq_no", json_object_new_int64(store__col_int(st, 3)));
    json_object_object_add(h, "_primary_term", json_object_new_int(1));
    json_object_object_add(h, "_score", json_object_new_double(q->score));
    if (q->source)
        json_object_object_add(h, "_source",
                               source_new(q, store__col_text(st, 1)));
    if (q->nsort > 0)
        json_object_object_add(h, "sort", sort_values(q, st));
    return h;
}

static int fetch_hits(struct store__conn *c, const struct store__index *ix,
                      const struct store__query *q, struct json_object *hits)
{
    struct store__stmt *st = NULL;
    int rc = prepare_hits(c, ix, q, &st);
    if (rc != MLR_OK)
        return rc;
    int step;
    while ((step = store__step(st)) == SQLITE_ROW)
        json_object_array_add(hits, hit_new(ix, q, st)); /* consumes the hit */
    if (step != SQLITE_DONE) {
        mlr_log(MLR_LOG_ERROR, "store", "search: %s", store__errmsg(c));
        rc = store__err(step) == MLR_OK ? MLR_EIO : store__err(step);
    }
    store__finalize(st);
    return rc;
}

static struct json_object *shards_new(void)
{
    struct json_object *s = json_object_new_object();
    /* Each add consumes its value. */
    json_object_object_add(s, "total", json_object_new_int(1));
    json_object_object_add(s, "successful", json_object_new_int(1));
    json_object_object_add(s, "skipped", json_object_new_int(0));
    json_object_object_add(s, "failed", json_object_new_int(0));
    return s;
}

/* Wraps @hits (taken over) into the response; @total < 0 omits hits.total. */
static struct json_object *response_new(const struct store__query *q, int64_t took_ms,
                                        struct json_object *hits, int64_t total, int gte)
{
    struct json_object *r = json_object_new_object(), *h = json_object_new_object();
    /* Each add consumes its value. */
    json_object_object_add(r, "took", json_object_new_int64(took_ms));
    json_object_object_add(r, "timed_out", json_object_new_boolean(0));
    json_object_object_add(r, "_shards", shards_new());
    if (total >= 0) {
        struct json_object *t = json_object_new_object();
        json_object_object_add(t, "value", json_object_new_int64(total));
        json_object_object_add(t, "relation", json_object_new_string(gte ? "gte" : "eq"));
        json_object_object_add(h, "total", t);
    }
    json_object_object_add(h, "max_score", json_object_array_length(hits) > 0
                                               ? json_object_new_double(q->score) : NULL);
    json_object_object_add(h, "hits", hits);
    json_object_object_add(r, "hits", h);
    return r;
}

int store__search_run(struct store__conn *c, const struct store__index *ix,
                      const struct store__query *q, struct json_object **out)
{
    assert(c != NULL && ix != NULL && q != NULL && q->where.data != NULL);
    int64_t start = mlr_mono_ms(), total = -1;
    int gte = 0, rc = MLR_OK;
    struct json_object *hits = json_object_new_array();
    if (q->track_total >= 0)
        rc = count_hits(c, ix, q, &total, &gte);
    if (rc == MLR_OK && q->size > 0)
        rc = fetch_hits(c, ix, q, hits);
    if (rc != MLR_OK)
        goto out;
    *out = response_new(q, mlr_mono_ms() - start, hits, total, gte);
    hits = NULL; /* the response owns the hits now */
out:
    json_object_put(hits);
    return rc;
}
