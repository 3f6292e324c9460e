/*
 * process.c — the built-in pre- and post-process functions of connectors (reference §5.6) and
 * the JSONPath subset that selects data from an upstream response (response_filter, §7.1).
 *
 * Pre-process: a neural-search input (text_docs, plus query_text for rerank) becomes one
 * parameter map per upstream request. Every value is a JSON string that the template engine
 * substitutes verbatim: strings are already escaped as JSON string contents and lists are compact
 * JSON text. The escaping follows the value's type, never whether a string happens to look like
 * JSON (the ml-commons#5070 bug). Non-ASCII text stays UTF-8, which is valid JSON.
 *
 * Post-process: a parsed upstream body becomes the model tensors of one inference result. The
 * built-ins select their data with a JSONPath (overridable by response_filter), validate it with
 * the checks and messages of ML Commons (400), and build tensors; any other surprise in the
 * upstream data is ML Commons' 500 "Fail to execute predict in aws connector". Without a
 * function, the (filtered) response goes into one "response" tensor's dataAsMap.
 *
 * JSONPath: a path is compiled into at most 64 steps held on the stack, then evaluated
 * iteratively, one step over the whole set of current matches at a time, so no input can make it
 * recurse. Semantics follow Jayway JsonPath, which ML Commons uses: a definite path names one
 * value or nothing; once a wildcard has appeared, a missing field or a type mismatch silently drops
 * that branch and the result is a flat list of the matches.
 *
 * Invariants: results may share reference-counted json-c values with the inputs (json_object_get)
 * and nothing here modifies a value after sharing it; out-params are written only on success.
 * Threading: pure functions over their arguments and const tables, so any thread, provided no
 * other thread uses the same input values meanwhile (json-c reference counts are not atomic).
 * Inputs are never serialised in place, since json-c caches that text inside the value. Numbers
 * are formatted with snprintf()/strtod(), which assume the "C" numeric locale (mlrelay never
 * calls setlocale()).
 * Costs: linear in the size of the inputs. Each path step visits each current match once, and a
 * parsed document (a tree) has no more matches at one step than it has values.
 */
#include "workers.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define IAE "illegal_argument_exception"
#define EXEC_FAILED "Fail to execute predict in aws connector" /* sic: "aws" even for http */
#define STEP_INVALID                                                                               \
    "Invalid parameter: input_docs_processed_step_size. It must be positive integer."
#define UNSUPPORTED                                                                                \
    "Unsupported %s [%s]: mlrelay runs only the built-in connector functions (Painless scripts "   \
    "are not supported)"
#define DEFAULT_PRE "connector.pre_process.default.embedding"
#define JSON_TEXT (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define PATH_MAX_BYTES 1024 /* longest JSONPath accepted */
#define PATH_MAX_STEPS 64   /* most steps (fields, indexes, wildcards) in one path */
#define TEXT_MAX_DEPTH 32   /* nesting cap when a string holding JSON is parsed */

/* ---------------------------------- errors ---------------------------------- */

static int fail(struct workers_error *e, int status, const char *type, int rc, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(struct workers_error *e, int status, const char *type, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    workers_error_vset(e, status, type, fmt, ap);
    va_end(ap);
    return rc;
}

/* The 400 of a validation failure. */
#define bad(e, ...) fail((e), 400, IAE, MLR_EINVAL, __VA_ARGS__)

/* Anything else that goes wrong with the upstream data: ML Commons' generic 500. */
static int exec_failed(struct workers_error *e)
{
    return fail(e, 500, "m_l_exception", MLR_EINTERNAL, "%s", EXEC_FAILED);
}

/* ---------------------------------- JSONPath: compiling ---------------------------------- */

enum step_kind { STEP_FIELD, STEP_INDEX, STEP_ALL };

struct path_step {
    enum step_kind kind;
    const char *name; /* STEP_FIELD: NUL-terminated, inside path.names */
    int64_t index;    /* STEP_INDEX: negative counts from the end */
};

struct path {
    struct path_step steps[PATH_MAX_STEPS];
    int n;                                       /* steps in use */
    int wild_at;                                 /* first STEP_ALL, or -1: the path is definite */
    char names[PATH_MAX_BYTES + PATH_MAX_STEPS]; /* decoded names; never longer than the text */
    size_t used;                                 /* bytes of names in use */
};

/* Parser state: @p walks the NUL-terminated @text. */
struct path_parser {
    const char *text;
    const char *p;
    struct path *out;
    struct workers_error *e;
};

static int syntax(struct path_parser *ps, const char *why)
{
    return bad(ps->e, "Invalid JSONPath [%.256s]: %s at position %d", ps->text, why,
               (int)(ps->p - ps->text));
}

/* Adds a step; the caller checked there is room (the main loop does before every token). */
static void add_step(struct path *pa, enum step_kind kind, const char *name, int64_t index)
{
    assert(pa->n < PATH_MAX_STEPS);
    struct path_step *s = &pa->steps[pa->n];
    s->kind = kind;
    s->name = name;
    s->index = index;
    if (kind == STEP_ALL && pa->wild_at < 0)
        pa->wild_at = pa->n;
    pa->n++;
}

/* Copies @len bytes into names[] and returns the NUL-terminated copy. */
static const char *add_name(struct path *pa, const char *s, size_t len)
{
    assert(pa->used + len < sizeof(pa->names));
    char *name = pa->names + pa->used;
    memcpy(name, s, len);
    name[len] = '\0';
    pa->used += len + 1;
    return name;
}

/* `.name`: everything up to the next '.' or '['. */
static int parse_name(struct path_parser *ps)
{
    size_t len = strcspn(ps->p, ".[]()'\" \t\r\n");
    char stop = ps->p[len];
    if (len == 0 && stop == '\0')
        return syntax(ps, "the path must not end with '.'");
    if (stop != '.' && stop != '[' && stop != '\0') {
        ps->p += len;
        return syntax(ps, stop == '(' ? "functions are not supported" : "unexpected character");
    }
    if (len == 0)
        return syntax(ps, "empty field name");
    add_step(ps->out, STEP_FIELD, add_name(ps->out, ps->p, len), 0);
    ps->p += len;
    return MLR_OK;
}

/* `'name'` or `"name"` inside brackets; a backslash escapes the next character. */
static int parse_quoted(struct path_parser *ps)
{
    struct path *pa = ps->out;
    char quote = *ps->p++;
    char *name = pa->names + pa->used;
    size_t len = 0;
    for (; *ps->p && *ps->p != quote; ps->p++) {
        if (*ps->p == '\\' && ps->p[1] != '\0')
            ps->p++;
        assert(pa->used + len + 1 < sizeof(pa->names)); /* decoded <= source bytes */
        name[len++] = *ps->p;
    }
    if (*ps->p != quote)
        return syntax(ps, "unterminated quoted field name");
    ps->p++;
    name[len] = '\0';
    pa->used += len + 1;
    add_step(pa, STEP_FIELD, name, 0);
    return MLR_OK;
}

/* `[n]` or `[-n]`, |n| < 2^31 as Jayway's int indexes. */
static int parse_index(struct path_parser *ps)
{
    int neg = *ps->p == '-';
    ps->p += neg;
    if (*ps->p < '0' || *ps->p > '9')
        return syntax(ps, "expected an array index");
    int64_t v = 0;
    for (; *ps->p >= '0' && *ps->p <= '9'; ps->p++) {
        v = v * 10 + (*ps->p - '0');
        if (v > INT_MAX)
            return syntax(ps, "array index out of range");
    }
    add_step(ps->out, STEP_INDEX, NULL, neg ? -v : v);
    return MLR_OK;
}

static void skip_spaces(struct path_parser *ps)
{
    while (*ps->p == ' ')
        ps->p++;
}

/* `[*]`, `['name']`, `[n]`; slices, unions and filters are refused. */
static int parse_bracket(struct path_parser *ps)
{
    ps->p++; /* the '[' */
    skip_spaces(ps);
    char c = *ps->p;
    int rc = MLR_OK;
    if (c == '*') {
        ps->p++;
        add_step(ps->out, STEP_ALL, NULL, 0);
    } else if (c == '\'' || c == '"') {
        rc = parse_quoted(ps);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        rc = parse_index(ps);
    } else {
        return syntax(ps, c == '?' ? "filters are not supported" : "unexpected character");
    }
    if (rc != MLR_OK)
        return rc;
    skip_spaces(ps);
    if (*ps->p == ':' || *ps->p == ',')
        return syntax(ps, "slices and unions are not supported");
    if (*ps->p != ']')
        return syntax(ps, "expected ']'");
    ps->p++;
    return MLR_OK;
}

/* What may follow a '.': a name, `*`, or (as in Jayway) a bracket. */
static int parse_after_dot(struct path_parser *ps)
{
    if (*ps->p == '.')
        return syntax(ps, "deep scan (..) is not supported");
    if (*ps->p == '[')
        return parse_bracket(ps);
    if (*ps->p == '*') {
        ps->p++;
        add_step(ps->out, STEP_ALL, NULL, 0);
        return MLR_OK;
    }
    return parse_name(ps);
}

static int path_compile(const char *text, struct path *pa, struct workers_error *e)
{
    struct path_parser ps = {text, text, pa, e};
    pa->n = 0;
    pa->wild_at = -1;
    pa->used = 0;
    if (strlen(text) > PATH_MAX_BYTES)
        return bad(e, "Invalid JSONPath: longer than %d bytes", PATH_MAX_BYTES);
    if (*text == '\0')
        return syntax(&ps, "the path is empty");
    int rc = MLR_OK;
    if (*ps.p == '$')
        ps.p++;
    else
        rc = parse_after_dot(&ps); /* Jayway reads "a.b" as "$.a.b" */
    while (rc == MLR_OK && *ps.p != '\0') {
        if (pa->n == PATH_MAX_STEPS) {
            rc = syntax(&ps, "more than 64 steps");
        } else if (*ps.p == '.') {
            ps.p++;
            rc = parse_after_dot(&ps);
        } else if (*ps.p == '[') {
            rc = parse_bracket(&ps);
        } else {
            rc = syntax(&ps, "unexpected character");
        }
    }
    return rc;
}

/* ---------------------------------- JSONPath: evaluating ---------------------------------- */

enum step_result { STEP_HIT, STEP_MISS, STEP_OUT_OF_RANGE };

/* One definite step (a field or an index) from @node; *@next is written on a hit. */
static enum step_result step_one(const struct path_step *s, struct json_object *node,
                                 struct json_object **next)
{
    if (s->kind == STEP_FIELD) {
        if (json_object_is_type(node, json_type_object) &&
            json_object_object_get_ex(node, s->name, next))
            return STEP_HIT;
        return STEP_MISS;
    }
    assert(s->kind == STEP_INDEX);
    if (!json_object_is_type(node, json_type_array))
        return STEP_MISS;
    int64_t len = (int64_t)json_object_array_length(node);
    int64_t i = s->index < 0 ? len + s->index : s->index;
    if (i < 0 || i >= len)
        return STEP_OUT_OF_RANGE;
    *next = json_object_array_get_idx(node, (size_t)i);
    return STEP_HIT;
}

/* One step after a wildcard: every match goes into @next (new references); misses drop out. */
static void step_many(const struct path_step *s, struct json_object *node, struct json_object *next)
{
    struct json_object *v = NULL;
    if (s->kind != STEP_ALL) {
        if (step_one(s, node, &v) == STEP_HIT)
            json_object_array_add(next, json_object_get(v)); /* consumes the new reference */
        return;
    }
    if (json_object_is_type(node, json_type_array)) {
        size_t len = json_object_array_length(node);
        for (size_t i = 0; i < len; i++)
            json_object_array_add(next, json_object_get(json_object_array_get_idx(node, i)));
    } else if (json_object_is_type(node, json_type_object)) {
        struct json_object_iterator it = json_object_iter_begin(node);
        struct json_object_iterator end = json_object_iter_end(node);
        for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
            json_object_array_add(next, json_object_get(json_object_iter_peek_value(&it)));
    }
}

static int not_found(struct workers_error *e, const char *path)
{
    return fail(e, 404, "resource_not_found_exception", MLR_ENOTFOUND,
                "No results for path: %.256s", path);
}

/* Walks steps [0, @n) from @root. Returns the step result and the node reached in *@node. */
static enum step_result walk_definite(const struct path *pa, int n, struct json_object *root,
                                      struct json_object **node)
{
    struct json_object *cur = root;
    for (int i = 0; i < n; i++) {
        struct json_object *next = NULL;
        enum step_result r = step_one(&pa->steps[i], cur, &next);
        if (r != STEP_HIT)
            return r;
        cur = next;
    }
    *node = cur;
    return STEP_HIT;
}

/*
 * An indefinite path. Jayway fails on a missing field before the first wildcard, skips an index
 * out of range there (empty result), and past the wildcard drops whatever does not match.
 */
static int eval_indefinite(const struct path *pa, const char *text, struct json_object *root,
                           struct json_object **out, struct workers_error *e)
{
    struct json_object *node = NULL;
    enum step_result r = walk_definite(pa, pa->wild_at, root, &node);
    if (r == STEP_MISS)
        return not_found(e, text);
    struct json_object *cur = json_object_new_array();
    if (r == STEP_HIT)
        json_object_array_add(cur, json_object_get(node)); /* consumes the new reference */
    for (int i = pa->wild_at; i < pa->n && r == STEP_HIT; i++) {
        struct json_object *next = json_object_new_array();
        size_t len = json_object_array_length(cur);
        for (size_t j = 0; j < len; j++)
            step_many(&pa->steps[i], json_object_array_get_idx(cur, j), next);
        json_object_put(cur);
        cur = next;
    }
    *out = cur;
    return MLR_OK;
}

int workers_jsonpath(struct json_object *root, const char *path, struct json_object **out,
                     struct workers_error *e)
{
    assert(path != NULL && out != NULL && e != NULL);
    struct path pa;
    int rc = path_compile(path, &pa, e);
    if (rc != MLR_OK)
        return rc;
    if (pa.wild_at >= 0)
        return eval_indefinite(&pa, path, root, out, e);
    struct json_object *node = NULL;
    if (walk_definite(&pa, pa.n, root, &node) != STEP_HIT)
        return not_found(e, path);
    *out = json_object_get(node);
    return MLR_OK;
}

/* ---------------------------------- pre-process ---------------------------------- */

/* Compact JSON text of @v, as a new JSON string. */
static struct json_object *json_text(struct json_object *v)
{
    size_t len = 0;
    const char *t = json_object_to_json_string_length(v, JSON_TEXT, &len);
    return json_object_new_string_len(t, (int)len);
}

/* The JSON string @s escaped as the contents of a JSON string (no quotes), as a new string.
 * A copy is serialised, so @s (the caller's) is left exactly as it was. */
static struct json_object *escaped(struct json_object *s)
{
    struct json_object *copy =
        json_object_new_string_len(json_object_get_string(s), json_object_get_string_len(s));
    size_t len = 0;
    const char *t = json_object_to_json_string_length(copy, JSON_TEXT, &len);
    assert(len >= 2 && t[0] == '"' && t[len - 1] == '"');
    struct json_object *out = json_object_new_string_len(t + 1, (int)(len - 2));
    json_object_put(copy);
    return out;
}

/* Compact JSON text of the docs [@from, @to) as a new string (a new array is serialised, not
 * the caller's). */
static struct json_object *docs_text(struct json_object *docs, size_t from, size_t to)
{
    struct json_object *part = json_object_new_array_ext((int)(to - from));
    for (size_t j = from; j < to; j++)
        json_object_array_add(part, json_object_get(json_object_array_get_idx(docs, j)));
    struct json_object *text = json_text(part);
    json_object_put(part);
    return text;
}

static struct json_object *count_text(size_t n)
{
    char num[32];
    snprintf(num, sizeof(num), "%zu", n);
    return json_object_new_string(num);
}

struct pre_fn {
    const char *name; /* connector.pre_process.<provider>.<kind> */
    const char *key;  /* embedding: the parameter that carries the docs */
    int rerank;       /* needs query_text; the docs go in one request */
    /* Appends the parameter maps to @requests. Input already validated; cannot fail. */
    void (*build)(const struct pre_fn *f, struct json_object *docs, struct json_object *query,
                  int step, struct json_object *requests);
};

/* Appends {key: value} to @requests; consumes @value. */
static void add_request(struct json_object *requests, const char *key, struct json_object *value)
{
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, key, value); /* consumes value */
    json_object_array_add(requests, req);    /* consumes req */
}

/* {key: "[docs...]"}, @step docs per request (0 = all in one). */
static void pre_batched(const struct pre_fn *f, struct json_object *docs, struct json_object *query,
                        int step, struct json_object *requests)
{
    UNUSED(query);
    size_t n = json_object_array_length(docs);
    size_t chunk = step > 0 ? (size_t)step : n;
    for (size_t i = 0; i < n; i += chunk) {
        size_t end = n - i > chunk ? i + chunk : n;
        add_request(requests, f->key, docs_text(docs, i, end)); /* consumes the text */
    }
}

/* {key: "doc"} for each doc (Bedrock embeds one text per call). */
static void pre_each(const struct pre_fn *f, struct json_object *docs, struct json_object *query,
                     int step, struct json_object *requests)
{
    UNUSED(query);
    UNUSED(step);
    size_t n = json_object_array_length(docs);
    for (size_t i = 0; i < n; i++)
        add_request(requests, f->key, escaped(json_object_array_get_idx(docs, i)));
}

/* Cohere-style rerank: {"query": q, "documents": "[...]", "top_n": "<#docs>"}. */
static void pre_rerank(const struct pre_fn *f, struct json_object *docs, struct json_object *query,
                       int step, struct json_object *requests)
{
    UNUSED(f);
    UNUSED(step);
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "query", escaped(query)); /* consumes the new string */
    json_object_object_add(req, "documents", docs_text(docs, 0, json_object_array_length(docs)));
    json_object_object_add(req, "top_n", count_text(json_object_array_length(docs)));
    json_object_array_add(requests, req); /* consumes req */
}

/* {"type": type, key: {"text": text}}; consumes @text. */
static struct json_object *typed_text(const char *type, const char *key, struct json_object *text)
{
    struct json_object *inner = json_object_new_object();
    json_object_object_add(inner, "text", text); /* consumes text */
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string(type));
    json_object_object_add(o, key, inner); /* consumes inner */
    return o;
}

/* Bedrock Rerank API: queries, sources and numberOfResults. */
static void pre_bedrock_rerank(const struct pre_fn *f, struct json_object *docs,
                               struct json_object *query, int step, struct json_object *requests)
{
    UNUSED(f);
    UNUSED(step);
    size_t n = json_object_array_length(docs);
    struct json_object *queries = json_object_new_array();
    json_object_array_add(queries, typed_text("TEXT", "textQuery", json_object_get(query)));
    struct json_object *sources = json_object_new_array_ext((int)n);
    for (size_t i = 0; i < n; i++) {
        struct json_object *doc = json_object_get(json_object_array_get_idx(docs, i));
        struct json_object *src = json_object_new_object();
        json_object_object_add(src, "type", json_object_new_string("INLINE"));
        json_object_object_add(src, "inlineDocumentSource",
                               typed_text("TEXT", "textDocument", doc)); /* consumes doc */
        json_object_array_add(sources, src);                             /* consumes src */
    }
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "queries", json_text(queries));
    json_object_object_add(req, "sources", json_text(sources));
    json_object_object_add(req, "numberOfResults", count_text(n));
    json_object_array_add(requests, req); /* consumes req */
    json_object_put(queries);
    json_object_put(sources);
}

/* Keep in step with pre_functions[] in connector.c (workers_function_known()). */
static const struct pre_fn pre_fns[] = {
    {"connector.pre_process.openai.embedding", "input", 0, pre_batched},
    {"connector.pre_process.default.embedding", "input", 0, pre_batched},
    {"connector.pre_process.cohere.embedding", "texts", 0, pre_batched},
    {"connector.pre_process.bedrock.embedding", "inputText", 0, pre_each},
    {"connector.pre_process.cohere.rerank", NULL, 1, pre_rerank},
    {"connector.pre_process.default.rerank", NULL, 1, pre_rerank},
    {"connector.pre_process.bedrock.rerank", NULL, 1, pre_bedrock_rerank},
};

static const struct pre_fn *pre_find(const char *name)
{
    for (size_t i = 0; i < sizeof(pre_fns) / sizeof(pre_fns[0]); i++) {
        if (strcmp(pre_fns[i].name, name) == 0)
            return &pre_fns[i];
    }
    return NULL;
}

static int check_docs(const struct pre_fn *f, struct json_object *docs, const char *query,
                      struct workers_error *e)
{
    if (f->rerank && (query == NULL || !json_object_is_type(docs, json_type_array)))
        return bad(e, "pre_process_function [%s] needs \"query_text\" and \"text_docs\"", f->name);
    if (!json_object_is_type(docs, json_type_array))
        return bad(e, "pre_process_function [%s] needs \"text_docs\", a list of strings", f->name);
    size_t n = json_object_array_length(docs);
    if (n == 0)
        return bad(e, "Empty text docs");
    for (size_t i = 0; i < n; i++) {
        if (!json_object_is_type(json_object_array_get_idx(docs, i), json_type_string))
            return bad(e, "\"text_docs\" must be a list of strings");
    }
    return MLR_OK;
}

int workers_preprocess_step(const char *fn, struct json_object *text_docs, const char *query_text,
                            int step, struct json_object **requests, struct workers_error *e)
{
    assert(requests != NULL && e != NULL);
    const struct pre_fn *f = pre_find(fn ? fn : DEFAULT_PRE);
    if (f == NULL)
        return bad(e, UNSUPPORTED, "pre_process_function", fn);
    if (step < 0)
        return bad(e, "%s", STEP_INVALID);
    int rc = check_docs(f, text_docs, query_text, e);
    if (rc != MLR_OK)
        return rc;
    struct json_object *query = query_text ? json_object_new_string(query_text) : NULL;
    struct json_object *out = json_object_new_array();
    f->build(f, text_docs, query, step, out);
    json_object_put(query);
    *requests = out;
    return MLR_OK;
}

int workers_preprocess(const char *fn, struct json_object *text_docs, const char *query_text,
                       struct json_object **requests, struct workers_error *e)
{
    return workers_preprocess_step(fn, text_docs, query_text, 0, requests, e);
}

int workers_step_parse(const char *s, int *out, struct workers_error *e)
{
    assert(out != NULL && e != NULL);
    if (s == NULL) {
        *out = 0;
        return MLR_OK;
    }
    int neg = *s == '-';
    const char *p = s + (*s == '-' || *s == '+');
    int64_t v = 0;
    int ok = *p != '\0';
    for (; ok && *p; p++) {
        ok = *p >= '0' && *p <= '9';
        v = v * 10 + (*p - '0');
        ok = ok && v <= (int64_t)INT_MAX + neg;
    }
    if (!ok)
        return bad(e, "For input string: \"%.200s\"", s);
    if (neg || v == 0)
        return bad(e, "%s", STEP_INVALID);
    *out = (int)v;
    return MLR_OK;
}

/* ---------------------------------- post-process: tensors ---------------------------------- */

/* The shortest text that strtod() reads back as @d, with a '.' or an exponent: "0.1", "100.0",
 * "1e-5", "1.5e300". Java would print 1.0E-5; both are the same JSON number. */
static void shortest_double(double d, char *out, size_t len)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, len, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    char *ex = strchr(out, 'e');
    int x = ex != NULL ? atoi(ex + 1) : 0;
    if (ex != NULL && x >= 0 && x < 17) {
        snprintf(out, len, "%.*g", x + 1, d); /* 100 reads better than 1e+02: all digits */
        ex = NULL;
    }
    if (ex != NULL) {
        snprintf(ex, len - (size_t)(ex - out), "e%d", x); /* "1e-05" -> "1e-5" */
    } else if (strchr(out, '.') == NULL) {
        size_t n = strlen(out);
        snprintf(out + n, len - n, ".0");
    }
}

static int is_number(struct json_object *v)
{
    return json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double);
}

/*
 * A number for a tensor's data: integers are shared as they are (exact), doubles get a new value
 * whose text is their shortest round-trip form. MLR_EINVAL for a non-number, NaN or infinity.
 */
static int tensor_number(struct json_object *v, struct json_object **out)
{
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get(v);
        return MLR_OK;
    }
    if (!json_object_is_type(v, json_type_double) || !isfinite(json_object_get_double(v)))
        return MLR_EINVAL;
    char text[48];
    double d = json_object_get_double(v);
    shortest_double(d, text, sizeof(text));
    *out = json_object_new_double_s(d, text);
    return MLR_OK;
}

/* {"name", "data_type", "shape": [len(data)], "data"}; takes ownership of @data. */
static struct json_object *tensor_new(const char *name, const char *data_type,
                                      struct json_object *data)
{
    struct json_object *shape = json_object_new_array_ext(1);
    json_object_array_add(shape, json_object_new_int64((int64_t)json_object_array_length(data)));
    struct json_object *t = json_object_new_object();
    json_object_object_add(t, "name", json_object_new_string(name));
    json_object_object_add(t, "data_type", json_object_new_string(data_type));
    json_object_object_add(t, "shape", shape); /* consumes shape */
    json_object_object_add(t, "data", data);   /* consumes data */
    return t;
}

/* One sentence_embedding tensor from the vector @vec. MLR_EINVAL when it is not all numbers. */
static int vector_tensor(struct json_object *vec, const char *data_type, struct json_object *out)
{
    if (!json_object_is_type(vec, json_type_array))
        return MLR_EINVAL;
    size_t n = json_object_array_length(vec);
    struct json_object *data = json_object_new_array_ext((int)n);
    for (size_t i = 0; i < n; i++) {
        struct json_object *num = NULL;
        if (tensor_number(json_object_array_get_idx(vec, i), &num) != MLR_OK) {
            json_object_put(data);
            return MLR_EINVAL;
        }
        json_object_array_add(data, num); /* consumes num */
    }
    json_object_array_add(out, tensor_new("sentence_embedding", data_type, data));
    return MLR_OK;
}

/* The data type a response filter names, as ML Commons finds it: the first ".<TYPE>" contained
 * in the path, case-insensitively, in the order of MLResultDataType; else FLOAT32. */
static const char *const data_types[] = {
    ".FLOAT32", ".FLOAT64", ".FLOAT16", ".UINT8",  ".INT32",  ".INT8",
    ".INT64",   ".BOOLEAN", ".UNKNOWN", ".STRING", ".BINARY", ".UBINARY",
};

static const char *data_type_of(const char *path)
{
    for (size_t i = 0; i < sizeof(data_types) / sizeof(data_types[0]); i++) {
        if (strcasestr(path, data_types[i]) != NULL)
            return data_types[i] + 1;
    }
    return "FLOAT32";
}

/* ---------------------------------- post-process: functions ---------------------------------- */

struct post_fn {
    const char *name;      /* connector.post_process.<provider>.<kind> */
    const char *path;      /* default JSONPath, replaced by a non-blank response_filter */
    const char *score_key; /* rerank: the score field of each result */
    /* Turns the selected value @in (may be NULL) into tensors appended to @out. */
    int (*run)(const struct post_fn *f, struct json_object *in, const char *data_type, int ndocs,
               struct json_object *out, struct workers_error *e);
};

/* The checks every built-in starts with. */
static int check_list(struct json_object *in, struct workers_error *e)
{
    if (in == NULL)
        return bad(e, "Can't run post process function as model output is null");
    if (!json_object_is_type(in, json_type_array))
        return bad(e, "Post process function input is not a List.");
    return MLR_OK;
}

/* A list of vectors: one tensor per vector. Like ML Commons, only the first is validated. */
static int post_vectors(const struct post_fn *f, struct json_object *in, const char *data_type,
                        int ndocs, struct json_object *out, struct workers_error *e)
{
    UNUSED(f);
    UNUSED(ndocs);
    int rc = check_list(in, e);
    if (rc != MLR_OK)
        return rc;
    size_t n = json_object_array_length(in);
    struct json_object *first = n > 0 ? json_object_array_get_idx(in, 0) : NULL;
    if (n > 0 && !json_object_is_type(first, json_type_array))
        return bad(e, "The embedding should be a non-empty List containing List of Float values.");
    if (n > 0 &&
        (json_object_array_length(first) == 0 || !is_number(json_object_array_get_idx(first, 0))))
        return bad(e, "The embedding should be a non-empty List containing Float values.");
    for (size_t i = 0; i < n; i++) {
        if (vector_tensor(json_object_array_get_idx(in, i), data_type, out) != MLR_OK)
            return exec_failed(e);
    }
    return MLR_OK;
}

/* One vector (Bedrock Titan): one tensor. */
static int post_vector(const struct post_fn *f, struct json_object *in, const char *data_type,
                       int ndocs, struct json_object *out, struct workers_error *e)
{
    UNUSED(f);
    UNUSED(ndocs);
    int rc = check_list(in, e);
    if (rc != MLR_OK)
        return rc;
    if (json_object_array_length(in) > 0 && !is_number(json_object_array_get_idx(in, 0)))
        return bad(e, "The embedding should be a non-empty List containing Float values.");
    if (vector_tensor(in, data_type, out) != MLR_OK)
        return exec_failed(e);
    return MLR_OK;
}

/* Puts each result's score at its "index" in @scores (borrowed values). MLR_EINVAL on a result
 * that is not an object, an index that is not an int in [0, size), a score that is not a number. */
static int place_scores(struct json_object *in, const char *key, struct json_object **scores,
                        size_t size)
{
    size_t n = json_object_array_length(in);
    for (size_t i = 0; i < n; i++) {
        struct json_object *r = json_object_array_get_idx(in, i), *index = NULL, *score = NULL;
        if (!json_object_object_get_ex(r, "index", &index) ||
            !json_object_object_get_ex(r, key, &score))
            return MLR_EINVAL;
        int64_t at = json_object_get_int64(index);
        if (!json_object_is_type(index, json_type_int) || at < 0 || (uint64_t)at >= size ||
            !is_number(score) || !isfinite(json_object_get_double(score)))
            return MLR_EINVAL;
        scores[at] = score;
    }
    return MLR_OK;
}

/* Appends one similarity tensor per slot of @scores; an empty slot gets data [null]. */
static void similarity_tensors(struct json_object **scores, size_t size, struct json_object *out)
{
    for (size_t i = 0; i < size; i++) {
        struct json_object *data = json_object_new_array_ext(1), *num = NULL;
        if (scores[i] != NULL)
            (void)tensor_number(scores[i], &num); /* cannot fail: place_scores() checked it */
        json_object_array_add(data, num);         /* consumes num; NULL is JSON null */
        json_object_array_add(out, tensor_new("similarity", "FLOAT32", data));
    }
}

/* Rerank results [{"index": i, <score_key>: s}, ...]: one tensor per doc, in doc order. */
static int post_rerank(const struct post_fn *f, struct json_object *in, const char *data_type,
                       int ndocs, struct json_object *out, struct workers_error *e)
{
    UNUSED(data_type);
    int rc = check_list(in, e);
    if (rc != MLR_OK)
        return rc;
    size_t n = json_object_array_length(in);
    if (n == 0)
        return MLR_OK;
    struct json_object *first = json_object_array_get_idx(in, 0);
    if (!json_object_is_type(first, json_type_object))
        return bad(e, "Post process function input is not a List of Map.");
    if (!json_object_object_get_ex(first, "index", NULL) ||
        !json_object_object_get_ex(first, f->score_key, NULL))
        return bad(e, "The rerank result should contain index and %s.", f->score_key);
    size_t size = ndocs > 0 ? (size_t)ndocs : n;
    struct json_object **scores = mlr_xcalloc(size, sizeof(*scores));
    rc = place_scores(in, f->score_key, scores, size);
    if (rc == MLR_OK)
        similarity_tensors(scores, size, out);
    free(scores);
    return rc == MLR_OK ? MLR_OK : exec_failed(e);
}

/* Keep in step with post_functions[] in connector.c (workers_function_known()). */
static const struct post_fn post_fns[] = {
    {"connector.post_process.openai.embedding", "$.data[*].embedding", NULL, post_vectors},
    {"connector.post_process.cohere.embedding", "$.embeddings", NULL, post_vectors},
    {"connector.post_process.cohere_v2.embedding.float", "$.embeddings.float", NULL, post_vectors},
    {"connector.post_process.cohere_v2.embedding.int8", "$.embeddings.int8", NULL, post_vectors},
    {"connector.post_process.cohere_v2.embedding.uint8", "$.embeddings.uint8", NULL, post_vectors},
    {"connector.post_process.cohere_v2.embedding.binary", "$.embeddings.binary", NULL,
     post_vectors},
    {"connector.post_process.cohere_v2.embedding.ubinary", "$.embeddings.ubinary", NULL,
     post_vectors},
    {"connector.post_process.default.embedding", "$[*]", NULL, post_vectors},
    {"connector.post_process.bedrock.embedding", "$.embedding", NULL, post_vector},
    {"connector.post_process.cohere.rerank", "$.results", "relevance_score", post_rerank},
    {"connector.post_process.default.rerank", "$[*]", "relevance_score", post_rerank},
    {"connector.post_process.bedrock.rerank", "$.results", "relevanceScore", post_rerank},
};

static const struct post_fn *post_find(const char *name)
{
    for (size_t i = 0; i < sizeof(post_fns) / sizeof(post_fns[0]); i++) {
        if (strcmp(post_fns[i].name, name) == 0)
            return &post_fns[i];
    }
    return NULL;
}

/* ---------------------------------- post-process: default ---------------------------------- */

/* The value a string holds when it is a JSON object or array (new reference), else NULL. */
static struct json_object *parse_json_text(struct json_object *s)
{
    const char *text = json_object_get_string(s);
    size_t len = (size_t)json_object_get_string_len(s);
    size_t skip = strspn(text, " \t\r\n");
    if (skip >= len || (text[skip] != '{' && text[skip] != '['))
        return NULL;
    struct json_tokener *tok = json_tokener_new_ex(TEXT_MAX_DEPTH);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *v = json_tokener_parse_ex(tok, text, (int)len);
    int ok = v != NULL && json_tokener_get_error(tok) == json_tokener_success;
    size_t end = ok ? json_tokener_get_parse_end(tok) : 0;
    json_tokener_free(tok);
    if (ok && end + strspn(text + end, " \t\r\n") == len)
        return v;
    json_object_put(v);
    return NULL;
}

/* dataAsMap of the value @x: an object as-is, else {"response": x}. Takes ownership of @x. */
static struct json_object *data_as_map(struct json_object *x)
{
    if (json_object_is_type(x, json_type_string)) {
        struct json_object *parsed = parse_json_text(x);
        if (parsed != NULL) {
            json_object_put(x);
            x = parsed; /* x now owns the parsed value */
        }
    }
    if (json_object_is_type(x, json_type_object))
        return x;
    struct json_object *map = json_object_new_object();
    json_object_object_add(map, "response", x); /* consumes x */
    return map;
}

/* No post-process function: one "response" tensor; a filter that names nothing means the whole
 * response (ML Commons 3.x). */
static int post_default(const char *filter, struct json_object *response,
                        struct json_object **output, struct workers_error *e)
{
    struct json_object *x = NULL;
    int rc = filter ? workers_jsonpath(response, filter, &x, e) : MLR_ENOTFOUND;
    if (rc == MLR_ENOTFOUND) {
        x = json_object_get(response);
        rc = MLR_OK;
    }
    if (rc != MLR_OK)
        return rc;
    struct json_object *t = json_object_new_object();
    json_object_object_add(t, "name", json_object_new_string("response"));
    json_object_object_add(t, "dataAsMap", data_as_map(x)); /* consumes x */
    struct json_object *out = json_object_new_array_ext(1);
    json_object_array_add(out, t); /* consumes t */
    *output = out;
    return MLR_OK;
}

int workers_postprocess(const char *fn, const char *filter, struct json_object *response, int ndocs,
                        struct json_object **output, struct workers_error *e)
{
    assert(output != NULL && e != NULL);
    if (filter != NULL && filter[strspn(filter, " \t\r\n")] == '\0')
        filter = NULL; /* blank = not set, as ML Commons' isBlank() */
    if (fn == NULL)
        return post_default(filter, response, output, e);
    const struct post_fn *f = post_find(fn);
    if (f == NULL)
        return bad(e, UNSUPPORTED, "post_process_function", fn);
    const char *path = filter ? filter : f->path;
    struct json_object *in = NULL;
    int rc = workers_jsonpath(response, path, &in, e);
    if (rc == MLR_ENOTFOUND)
        return exec_failed(e);
    if (rc != MLR_OK)
        return rc;
    struct json_object *out = json_object_new_array();
    rc = f->run(f, in, data_type_of(path), ndocs, out, e);
    json_object_put(in);
    if (rc != MLR_OK) {
        json_object_put(out);
        return rc;
    }
    *output = out;
    return MLR_OK;
}
