/*
 * template.c — how a remote request is built from a connector action: the merged parameter map,
 * placeholder substitution, and the checks on what substitution produced (reference §5.1–§5.5).
 *
 * The parameter map. workers_params_merge() layers connector parameters (stored text), then the
 * parameters a pre-process function produced, then the request's parameters, so request values
 * always win. Request values are converted by their ORIGINAL JSON type, not by what their text
 * looks like (ML Commons escapes a string unless it parses as JSON, pain point 17): a string is
 * JSON-string-escaped as Apache Commons Text escapeJson() does, an object or array is inserted as
 * compact JSON, a number takes ML Commons' stored form (0.0001 -> "1.0E-4"), a boolean is
 * "true"/"false", and JSON null stays null (absent for substitution).
 *
 * Where the recursion happens, and why. ML Commons rescans every substituted value, so a request
 * string containing `${parameters.secret}` pulls another parameter into the payload (template
 * injection). mlrelay expands only text the connector's author wrote: at merge time every
 * connector parameter whose value holds a placeholder is resolved against the map, recursively
 * through other connector parameters, with request and pre-process values as inert leaves. So
 * every value in the merged map is final text, and workers_template_render() makes one pass over
 * the template and never rescans what it inserted. The same rule keeps `${credential.*}` out of
 * parameter values: credentials are only taken from the header template itself. Consequences:
 * a request value that contains a placeholder is sent literally (and then trips the leftover
 * check unless skip_validating_missing_parameters is "true"); a cycle or a too-deep chain among
 * connector parameters is reported when the map is merged, even if the template never uses it.
 *
 * Placeholder syntax follows Apache Commons StringSubstitutor with prefix `${parameters.`: the
 * first `}` closes a placeholder (no nesting), `:-` splits off a default, `$` before a prefix
 * escapes it (`$${parameters.x}` -> `${parameters.x}`; `$${other}` is not a placeholder and stays
 * as written), an unterminated placeholder is text, and an unresolved one stays literal. Two
 * additions of ML Commons: the quoted `"${parameters.NAME:-null}"` (NAME of \w+) becomes a bare
 * null when NAME is absent or null, and `${parameters.NAME.toString()}` inserts NAME's value
 * escaped as JSON string contents. ML Commons only finds `.toString()` inside parameter values;
 * here it works anywhere, including directly in a request_body.
 *
 * Invariants: every map the merge returns holds JSON strings or JSON nulls only; no substitution
 * produces more than WORKERS_TEMPLATE_MAX_BYTES (counted over everything a merge or a render
 * appends, so nested copies count too) or nests deeper than WORKERS_TEMPLATE_MAX_DEPTH; a value
 * holding a NUL byte is never substituted, so the C strings returned are the whole result.
 *
 * Threading: pure functions over borrowed json-c objects; any thread, as long as no other thread
 * uses those objects meanwhile (json-c caches a serialisation inside the object it prints). No
 * state outside the call's stack frame; the merged map shares no object with its inputs.
 *
 * Costs: a render is linear in the template plus the bytes it substitutes. A merge resolves each
 * connector parameter once (memoised), so it is linear in the connector text plus its output; a
 * lookup is a hash probe plus a short heap copy of the name. The checks parse the body once (and
 * each line once more for NDJSON) with json-c.
 */
#include "workers.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#define IAE "illegal_argument_exception"

/* Both placeholder prefixes are 13 bytes long. */
#define PREFIX_LEN 13
static const char param_prefix[] = "${parameters.";
static const char cred_prefix[] = "${credential.";
static const char to_string_suffix[] = ".toString()";
static const char quoted_null_tail[] = ":-null}\"";

enum kind { KIND_NONE = 0, KIND_PARAM, KIND_CRED };

/* One merge or render in progress. */
struct render {
    struct json_object *params;     /* key -> final text (JSON string) or JSON null; borrowed */
    struct json_object *pending;    /* merge only: connector keys still holding raw template text */
    struct json_object *credential; /* header mode: the decrypted credential map, else NULL */
    const char *stack[WORKERS_TEMPLATE_MAX_DEPTH]; /* keys being resolved, outermost first */
    int nstack;                                    /* entries used in stack */
    size_t produced;         /* bytes appended so far, over all buffers, <= limit */
    size_t limit;            /* WORKERS_TEMPLATE_MAX_BYTES */
    struct workers_error *e; /* where a refusal is described */
};

/* ---------------------------------- errors ---------------------------------- */

/* Fills @e as a 400 illegal_argument_exception and returns MLR_EINVAL. */
#define fail(e, ...) workers_error_set((e), 400, IAE, __VA_ARGS__)

static int size_error(struct render *r)
{
    return fail(r->e, "Parameter substitution produced more than %zu bytes", r->limit);
}

static int depth_error(struct render *r)
{
    return fail(r->e, "Parameter substitution is nested more than %d levels deep",
                WORKERS_TEMPLATE_MAX_DEPTH);
}

/* Reports the cycle that reached @name again: the path from its first visit back to it. */
static int cycle_error(struct render *r, const char *name)
{
    int first = 0;
    while (first < r->nstack && strcmp(r->stack[first], name) != 0)
        first++;
    assert(first < r->nstack);
    struct mlr_buf b;
    mlr_buf_init(&b, sizeof(r->e->reason));
    for (int i = first; i < r->nstack; i++) {
        mlr_buf_puts(&b, r->stack[i]); /* a failed append only shortens the message */
        mlr_buf_puts(&b, "->");
    }
    mlr_buf_puts(&b, name);
    fail(r->e, "Infinite loop in property interpolation of ${parameters.%s}: %s", name,
         b.data ? b.data : name);
    mlr_buf_cleanup(&b);
    return MLR_EINVAL;
}

/* ---------------------------------- escaping ---------------------------------- */

/* The two-character escapes of escapeJson(); NULL for a byte that has none. */
static const char *short_escape(unsigned char ch)
{
    switch (ch) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '/':
        return "\\/";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    default:
        return NULL;
    }
}

/*
 * Decodes the UTF-8 sequence at @s (@n bytes available) into *@cp and returns its length, or 0
 * when it is invalid: truncated, overlong, a surrogate, or above U+10FFFF.
 */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t min, c = s[0];
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, c &= 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, c &= 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0; /* ASCII never gets here; 0x80-0xC1 and 0xF5-0xFF never start a sequence */
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* Appends `\uXXXX` (upper-case hex, as Commons Text writes it). */
static int put_u(struct mlr_buf *b, uint32_t u)
{
    static const char hex[] = "0123456789ABCDEF";
    char t[6] = "\\u";
    for (int i = 0; i < 4; i++)
        t[2 + i] = hex[(u >> (12 - 4 * i)) & 15];
    return mlr_buf_append(b, t, sizeof(t));
}

/* Escapes the one character at @u that needs it; *@used receives the bytes it took. */
static int escape_one(struct mlr_buf *b, const unsigned char *u, size_t n, size_t *used)
{
    const char *rep = short_escape(u[0]);
    uint32_t cp = 0;
    *used = 1;
    if (rep != NULL)
        return mlr_buf_puts(b, rep);
    if (u[0] < 0x20)
        return put_u(b, u[0]);
    *used = utf8_decode(u, n, &cp);
    if (*used == 0)
        return MLR_EINVAL;
    if (cp < 0x10000)
        return put_u(b, cp);
    cp -= 0x10000; /* above the BMP: a UTF-16 surrogate pair, as Java strings hold it */
    int rc = put_u(b, 0xD800 | (cp >> 10));
    return rc == MLR_OK ? put_u(b, 0xDC00 | (cp & 0x3FF)) : rc;
}

/* Printable ASCII that escapeJson() copies as is (DEL included, as Commons Text does). */
static int plain(unsigned char ch)
{
    return ch >= 0x20 && ch < 0x80 && ch != '"' && ch != '\\' && ch != '/';
}

/*
 * Appends @s (@n bytes) as the contents of a JSON string, as Apache Commons Text escapeJson()
 * does. Returns MLR_OK, MLR_EINVAL (invalid UTF-8) or MLR_ETOOBIG (@b's cap); on failure @b may
 * hold part of the result.
 */
static int escape_json(struct mlr_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    int rc = MLR_OK;
    while (i < n && rc == MLR_OK) {
        size_t run = i;
        while (run < n && plain(u[run]))
            run++;
        rc = mlr_buf_append(b, s + i, run - i);
        i = run;
        if (rc == MLR_OK && i < n) {
            size_t used = 0;
            rc = escape_one(b, u + i, n - i, &used);
            i += used;
        }
    }
    return rc;
}

/* ---------------------------------- output ---------------------------------- */

/* Appends @n bytes, charging them to the substitution limit. */
static int emit(struct render *r, struct mlr_buf *out, const char *p, size_t n)
{
    if (n > r->limit - r->produced || mlr_buf_append(out, p, n) != MLR_OK)
        return size_error(r);
    r->produced += n;
    return MLR_OK;
}

/* Appends @s escaped as JSON string contents (`.toString()`), charging the escaped size. */
static int emit_escaped(struct render *r, struct mlr_buf *out, const char *name, const char *s,
                        size_t n)
{
    size_t before = out->len;
    int rc = escape_json(out, s, n);
    if (rc == MLR_EINVAL)
        return fail(r->e, "Parameter [%s] is not valid UTF-8", name);
    if (rc != MLR_OK || out->len - before > r->limit - r->produced)
        return size_error(r);
    r->produced += out->len - before;
    return MLR_OK;
}

/* Appends the text of map value @v of @name (escaped when @escaped). */
static int emit_value(struct render *r, struct mlr_buf *out, const char *name,
                      struct json_object *v, int escaped)
{
    char *tmp = NULL;
    const char *s;
    size_t n;
    int rc;
    if (json_object_is_type(v, json_type_string)) {
        s = json_object_get_string(v);
        n = (size_t)json_object_get_string_len(v);
    } else { /* a hand-built map: use the stored form, as the merge would have */
        tmp = workers_param_string(v);
        s = tmp;
        n = strlen(tmp);
    }
    if (memchr(s, '\0', n) != NULL)
        rc = fail(r->e, "The value of [%s] contains a NUL character", name);
    else if (escaped)
        rc = emit_escaped(r, out, name, s, n);
    else
        rc = emit(r, out, s, n);
    free(tmp);
    return rc;
}

/* ---------------------------------- substitution ---------------------------------- */

static int render_text(struct render *r, const char *s, size_t n, struct mlr_buf *out, int depth);

/* Which placeholder prefix starts at @s (@n bytes left); credentials only in header mode. */
static enum kind prefix_at(const struct render *r, const char *s, size_t n)
{
    if (n < PREFIX_LEN || s[0] != '$' || s[1] != '{')
        return KIND_NONE;
    if (memcmp(s, param_prefix, PREFIX_LEN) == 0)
        return KIND_PARAM;
    if (r->credential != NULL && memcmp(s, cred_prefix, PREFIX_LEN) == 0)
        return KIND_CRED;
    return KIND_NONE;
}

/*
 * Resolves pending connector parameter @key: renders its raw text (recursively, through other
 * connector parameters) and stores the result in the map. @key must stay valid during the call.
 */
static int resolve(struct render *r, const char *key, int depth)
{
    struct json_object *raw = NULL;
    struct mlr_buf b;
    if (depth >= WORKERS_TEMPLATE_MAX_DEPTH)
        return depth_error(r);
    json_object_object_get_ex(r->pending, key, &raw);
    raw = json_object_get(raw); /* keep the text alive: the delete below drops pending's ref */
    json_object_object_del(r->pending, key); /* from now on a visit finds it on the stack */
    r->stack[r->nstack++] = key;
    mlr_buf_init(&b, r->limit);
    int rc = render_text(r, json_object_get_string(raw), (size_t)json_object_get_string_len(raw),
                         &b, depth + 1);
    r->nstack--;
    if (rc == MLR_OK) /* replaces the raw text; the add consumes the new string */
        json_object_object_add(r->params, key,
                               json_object_new_string_len(b.data ? b.data : "", (int)b.len));
    mlr_buf_cleanup(&b);
    json_object_put(raw);
    return rc;
}

/* Finds parameter @name: *@val is borrowed, NULL when absent or JSON null. */
static int param_get(struct render *r, const char *name, int depth, struct json_object **val)
{
    struct json_object *v = NULL;
    int rc = MLR_OK;
    if (r->pending != NULL && json_object_object_get_ex(r->pending, name, NULL))
        rc = resolve(r, name, depth);
    else if (r->pending != NULL) {
        for (int i = 0; i < r->nstack && rc == MLR_OK; i++) {
            if (strcmp(r->stack[i], name) == 0)
                rc = cycle_error(r, name);
        }
    }
    if (rc != MLR_OK)
        return rc;
    if (r->params != NULL)
        json_object_object_get_ex(r->params, name, &v);
    *val = v; /* a JSON null is stored as a NULL pointer */
    return MLR_OK;
}

/* Appends parameter @name (or NAME's escaped value for NAME.toString()); *@found says if it was. */
static int param_emit(struct render *r, const char *name, struct mlr_buf *out, int depth,
                      int *found)
{
    size_t len = strlen(name), slen = sizeof(to_string_suffix) - 1;
    struct json_object *v = NULL;
    int rc = MLR_OK;
    if (len > slen && strcmp(name + len - slen, to_string_suffix) == 0) {
        char *base = mlr_xstrndup(name, len - slen);
        rc = param_get(r, base, depth, &v);
        if (rc == MLR_OK && v != NULL)
            rc = emit_value(r, out, base, v, 1);
        free(base);
    }
    if (rc == MLR_OK && v == NULL) { /* a literal key that happens to end in .toString() */
        rc = param_get(r, name, depth, &v);
        if (rc == MLR_OK && v != NULL)
            rc = emit_value(r, out, name, v, 0);
    }
    *found = v != NULL;
    return rc;
}

/* The length of the variable name in @expr: up to the first ":-" before any nested prefix. */
static size_t name_len(const struct render *r, const char *expr, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (prefix_at(r, expr + i, n - i) != KIND_NONE)
            break;
        if (expr[i] == ':' && expr[i + 1] == '-')
            return i;
    }
    return n;
}

/*
 * Substitutes one placeholder: @expr (@len bytes) is what stands between the prefix and the `}`,
 * @whole (@wlen bytes) the placeholder itself, which stays literal when nothing resolves it.
 */
static int expand(struct render *r, enum kind kind, const char *expr, size_t len, const char *whole,
                  size_t wlen, struct mlr_buf *out, int depth)
{
    size_t nlen = name_len(r, expr, len);
    char *name = mlr_xstrndup(expr, nlen);
    struct json_object *v = NULL;
    int found = 0, rc = MLR_OK;
    if (kind == KIND_PARAM) {
        rc = param_emit(r, name, out, depth, &found);
    } else if (json_object_object_get_ex(r->credential, name, &v) && v != NULL) {
        found = 1;
        rc = emit_value(r, out, name, v, 0);
    }
    if (rc == MLR_OK && !found && nlen < len) { /* the default is template text: rescan it */
        rc = depth >= WORKERS_TEMPLATE_MAX_DEPTH
                 ? depth_error(r)
                 : render_text(r, expr + nlen + 2, len - nlen - 2, out, depth + 1);
    } else if (rc == MLR_OK && !found) {
        rc = emit(r, out, whole, wlen);
    }
    free(name);
    return rc;
}

/* `"${parameters.NAME:-null}"` with NAME absent or null becomes a bare null (@s starts at '"'). */
static int quoted_null(struct render *r, const char *s, size_t n, struct mlr_buf *out, int depth,
                       size_t *used)
{
    size_t tail = sizeof(quoted_null_tail) - 1, p = 1 + PREFIX_LEN, q = p;
    if (n < p || memcmp(s + 1, param_prefix, PREFIX_LEN) != 0)
        return MLR_OK;
    while (q < n && (s[q] == '_' || (s[q] >= '0' && s[q] <= '9') || (s[q] >= 'a' && s[q] <= 'z') ||
                     (s[q] >= 'A' && s[q] <= 'Z')))
        q++;
    if (q == p || n - q < tail || memcmp(s + q, quoted_null_tail, tail) != 0)
        return MLR_OK;
    char *name = mlr_xstrndup(s + p, q - p);
    struct json_object *v = NULL;
    int rc = param_get(r, name, depth, &v);
    free(name);
    if (rc == MLR_OK && v == NULL) {
        *used = q + tail;
        rc = emit(r, out, "null", 4);
    }
    return rc;
}

/*
 * Handles the construct at @s, which starts with '$' or '"': appends its replacement and sets
 * *@used to the bytes it consumed, or leaves *@used at 0 when @s[0] is a plain character.
 */
static int special(struct render *r, const char *s, size_t n, struct mlr_buf *out, int depth,
                   size_t *used)
{
    *used = 0;
    if (s[0] == '"')
        return quoted_null(r, s, n, out, depth, used);
    if (n > 1 && s[1] == '$' && prefix_at(r, s + 1, n - 1) != KIND_NONE) {
        *used = 2; /* "$${" -> "${": the rest of that placeholder is scanned as plain text */
        return emit(r, out, "$", 1);
    }
    enum kind kind = prefix_at(r, s, n);
    if (kind == KIND_NONE)
        return MLR_OK;
    const char *close = memchr(s + PREFIX_LEN, '}', n - PREFIX_LEN);
    if (close == NULL) { /* unterminated: the rest is text */
        *used = n;
        return emit(r, out, s, n);
    }
    size_t end = (size_t)(close - s);
    *used = end + 1;
    return expand(r, kind, s + PREFIX_LEN, end - PREFIX_LEN, s, end + 1, out, depth);
}

/* Renders template text @s (@n bytes) into @out; @depth counts the enclosing substitutions. */
static int render_text(struct render *r, const char *s, size_t n, struct mlr_buf *out, int depth)
{
    size_t i = 0;
    int rc = MLR_OK;
    while (i < n && rc == MLR_OK) {
        size_t j = i, used = 0;
        while (j < n && s[j] != '$' && s[j] != '"')
            j++;
        rc = emit(r, out, s + i, j - i);
        if (rc != MLR_OK || j == n)
            break;
        rc = special(r, s + j, n - j, out, depth, &used);
        if (rc == MLR_OK && used == 0) {
            used = 1;
            rc = emit(r, out, s + j, 1);
        }
        i = j + used;
    }
    return rc;
}

/* ---------------------------------- merge ---------------------------------- */

/* Whether @key is one of the comma-separated names in @list (blanks around names ignored). */
static int in_csv(const char *list, const char *key)
{
    size_t klen = strlen(key);
    const char *p = list;
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *a = p;
        while (n > 0 && (*a == ' ' || *a == '\t'))
            a++, n--;
        while (n > 0 && (a[n - 1] == ' ' || a[n - 1] == '\t'))
            n--;
        if (n == klen && memcmp(a, key, n) == 0)
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

/* no_escape_params as the merged map will hold it (request > pre-process > connector). */
static char *no_escape_list(struct json_object *conn, struct json_object *req,
                            struct json_object *pre)
{
    struct json_object *layers[3] = {req, pre, conn};
    for (int i = 0; i < 3; i++) {
        struct json_object *v = NULL;
        if (layers[i] != NULL && json_object_object_get_ex(layers[i], "no_escape_params", &v))
            return v != NULL ? workers_param_string(v) : NULL;
    }
    return NULL;
}

/*
 * A stored (connector or pre-process) value as new map text: strings as is, null stays null.
 * Always a copy, so the map shares no object with the caller's documents.
 */
static struct json_object *stored_value(struct json_object *v)
{
    if (v == NULL)
        return NULL;
    if (json_object_is_type(v, json_type_string))
        return json_object_new_string_len(json_object_get_string(v), json_object_get_string_len(v));
    char *s = workers_param_string(v);
    struct json_object *out = json_object_new_string(s);
    free(s);
    return out;
}

/* Copies @src into the map; connector text holding a '$' is queued for resolution. */
static void overlay_stored(struct render *r, struct json_object *src, int connector)
{
    if (src == NULL)
        return;
    json_object_object_foreach(src, key, val)
    {
        struct json_object *v = stored_value(val);
        json_object_object_del(r->pending, key);
        if (connector && v != NULL && strchr(json_object_get_string(v), '$') != NULL)
            json_object_object_add(r->pending, key, json_object_get(v)); /* consumes that ref */
        json_object_object_add(r->params, key, v);                       /* consumes v */
    }
}

/* Converts request value @v of @key by its JSON type into *@out (NULL for JSON null). */
static int request_value(const char *key, struct json_object *v, const char *noesc,
                         struct json_object **out, struct workers_error *e)
{
    struct mlr_buf b;
    int rc = MLR_OK;
    if (v == NULL || !json_object_is_type(v, json_type_string) || in_csv(noesc, key)) {
        *out = stored_value(v); /* null, verbatim string, compact JSON, number, boolean */
        return MLR_OK;
    }
    mlr_buf_init(&b, WORKERS_TEMPLATE_MAX_BYTES);
    rc = escape_json(&b, json_object_get_string(v), (size_t)json_object_get_string_len(v));
    if (rc == MLR_EINVAL)
        rc = fail(e, "Parameter [%s] is not valid UTF-8", key);
    else if (rc != MLR_OK)
        rc = fail(e, "Parameter [%s] exceeds %zu bytes once escaped", key,
                  (size_t)WORKERS_TEMPLATE_MAX_BYTES);
    else
        *out = json_object_new_string_len(b.data ? b.data : "", (int)b.len);
    mlr_buf_cleanup(&b);
    return rc;
}

/* Puts the converted request parameters over the map; they are final text, never rescanned. */
static int overlay_request(struct render *r, struct json_object *req, const char *noesc)
{
    if (req == NULL)
        return MLR_OK;
    json_object_object_foreach(req, key, val)
    {
        struct json_object *v = NULL;
        int rc = request_value(key, val, noesc, &v, r->e);
        if (rc != MLR_OK)
            return rc;
        json_object_object_del(r->pending, key);
        json_object_object_add(r->params, key, v); /* consumes v */
    }
    return MLR_OK;
}

int workers_params_merge(struct json_object *connector_params, struct json_object *request_params,
                         struct json_object *preprocess_params, struct json_object **out,
                         struct workers_error *e)
{
    assert(out != NULL && e != NULL);
    assert(connector_params == NULL || json_object_is_type(connector_params, json_type_object));
    assert(preprocess_params == NULL || json_object_is_type(preprocess_params, json_type_object));
    struct render r = {.limit = WORKERS_TEMPLATE_MAX_BYTES, .e = e};
    char *noesc = NULL;
    int rc = MLR_EINVAL;
    if (request_params != NULL && !json_object_is_type(request_params, json_type_object)) {
        fail(e, "parameters must be a JSON object");
        goto out;
    }
    r.params = json_object_new_object();
    r.pending = json_object_new_object();
    noesc = no_escape_list(connector_params, request_params, preprocess_params);
    overlay_stored(&r, connector_params, 1);
    overlay_stored(&r, preprocess_params, 0);
    rc = overlay_request(&r, request_params, noesc);
    if (rc == MLR_OK && connector_params != NULL) {
        json_object_object_foreach(connector_params, key, val)
        {
            UNUSED(val);
            if (rc == MLR_OK && json_object_object_get_ex(r.pending, key, NULL))
                rc = resolve(&r, key, 0);
        }
    }
    if (rc == MLR_OK) {
        *out = r.params;
        r.params = NULL; /* the caller owns the map now */
    }
out:
    json_object_put(r.params);
    json_object_put(r.pending);
    free(noesc);
    return rc;
}

/* ---------------------------------- render ---------------------------------- */

int workers_template_render(const char *tmpl, struct json_object *params,
                            struct json_object *credential, char **out, struct workers_error *e)
{
    assert(tmpl != NULL && out != NULL && e != NULL);
    struct render r = {
        .params = params, .credential = credential, .limit = WORKERS_TEMPLATE_MAX_BYTES, .e = e};
    struct mlr_buf b;
    mlr_buf_init(&b, WORKERS_TEMPLATE_MAX_BYTES);
    int rc = render_text(&r, tmpl, strlen(tmpl), &b, 0);
    if (rc == MLR_OK)
        *out = b.data != NULL ? b.data : mlr_xstrdup(""); /* the buffer's bytes become *out */
    else
        mlr_buf_cleanup(&b);
    return rc;
}

/* ---------------------------------- checks ---------------------------------- */

/* Whether @s (@n bytes) is one JSON object or array, as ML Commons' isJson() requires. */
static int json_ok(const char *s, size_t n)
{
    if (n == 0 || n > (size_t)WORKERS_TEMPLATE_MAX_BYTES)
        return 0;
    struct json_tokener *tok = json_tokener_new_ex(256); /* API input nests 64; templates add */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *o = json_tokener_parse_ex(tok, s, (int)n);
    int ok = o != NULL && json_tokener_get_error(tok) == json_tokener_success &&
             json_tokener_get_parse_end(tok) == n &&
             (json_object_is_type(o, json_type_object) || json_object_is_type(o, json_type_array));
    json_object_put(o);
    json_tokener_free(tok);
    return ok;
}

/* Whether @s is NDJSON: at least one non-blank line, and every non-blank line is JSON. */
static int ndjson_ok(const char *s)
{
    int lines = 0;
    while (*s != '\0') {
        size_t n = strcspn(s, "\n");
        size_t blank = strspn(s, " \t\r");
        if (blank < n && !json_ok(s, n))
            return 0;
        lines += blank < n;
        s += n + (s[n] == '\n');
    }
    return lines > 0;
}

/* Appends to @b the names of leftover `${parameters.NAME}` in @body, in order, deduplicated. */
static void leftover_names(const char *body, struct mlr_buf *b)
{
    const char *seen[128]; /* names already listed (start of each in @body) */
    size_t seen_len[128], nseen = 0;
    const char *p = strstr(body, param_prefix);
    while (p != NULL && nseen < 128) {
        const char *name = p + PREFIX_LEN;
        size_t n = strcspn(name, "}\"\n");
        n = n > 128 ? 128 : n; /* keep one absurd name from crowding out the others */
        size_t i = 0;
        while (i < nseen && !(seen_len[i] == n && memcmp(seen[i], name, n) == 0))
            i++;
        if (i == nseen) {
            seen[nseen] = name, seen_len[nseen++] = n;
            if (mlr_buf_printf(b, "%s%.*s", nseen > 1 ? ", " : "", (int)n, name) != MLR_OK)
                break; /* the message is long enough */
        }
        p = strstr(name, param_prefix);
    }
}

int workers_body_check(const char *body, struct json_object *params, struct workers_error *e)
{
    assert(body != NULL && e != NULL);
    struct json_object *skip = NULL;
    struct mlr_buf b;
    if (!json_ok(body, strlen(body)) && !ndjson_ok(body))
        return fail(e, "Invalid payload: %s", body);
    if (strstr(body, param_prefix) == NULL)
        return MLR_OK;
    if (params != NULL &&
        json_object_object_get_ex(params, "skip_validating_missing_parameters", &skip) &&
        skip != NULL && strcasecmp(json_object_get_string(skip), "true") == 0)
        return MLR_OK;
    mlr_buf_init(&b, sizeof(e->reason));
    leftover_names(body, &b);
    fail(e, "Some parameter placeholder not filled in payload: %s", b.data ? b.data : "");
    mlr_buf_cleanup(&b);
    return MLR_EINVAL;
}

/* RFC 9110 token characters (header names). */
static int tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int workers_header_check(const char *name, const char *value, struct workers_error *e)
{
    assert(name != NULL && value != NULL && e != NULL);
    size_t nlen = strlen(name), vlen = strlen(value);
    if (nlen == 0)
        return fail(e, "Header name must not be empty");
    for (size_t i = 0; i < nlen; i++) {
        if (!tchar((unsigned char)name[i]))
            return fail(e, "Header name '%s' is not a valid HTTP token", name);
    }
    if (strstr(value, "${") != NULL)
        return fail(e,
                    "Header '%s' contains unresolved placeholder. Required parameter is "
                    "missing.",
                    name);
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7F)
            return fail(e, "Header value contains invalid control character");
    }
    if (nlen + vlen > WORKERS_HEADER_MAX_BYTES)
        return fail(e, "Header '%s' is too large: name and value take %zu bytes, the limit is %d",
                    name, nlen + vlen, WORKERS_HEADER_MAX_BYTES);
    return MLR_OK;
}
